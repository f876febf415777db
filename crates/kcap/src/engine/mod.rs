//! Engines: how connectivity is represented. Each engine is written once,
//! against the narrow [`crate::backend::Backend`] trait.
//!
//! Only the lazy engine (SPEC §3.1) exists so far; explicit and procedural
//! areas are refused with a clear error until their engines land.

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
