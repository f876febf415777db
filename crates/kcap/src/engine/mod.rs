//! Engines: how connectivity is represented. Each engine is written once,
//! against the narrow [`crate::backend::Backend`] trait.
//! The lazy engine (SPEC §3.1) also runs explicit areas' stored fibers
//! (§3.2, [`explicit`]); procedural areas (§3.3, [`procedural`]) have their
//! own state, driven by [`crate::brain::Brain`] alongside.

pub mod explicit;
pub mod lazy;
pub mod procedural;

/// What one target area receives in a step: the firing stimuli and areas,
/// in increasing id order (so every random draw has a fixed meaning).
#[derive(Clone, Debug, Default)]
pub struct TargetPlan {
    pub target: usize,
    pub stims: Vec<usize>,
    pub areas: Vec<usize>,
}
