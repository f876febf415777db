//! Backends: where the hot loops of an engine run.
//!
//! The trait is deliberately narrow — the two operations that dominate a step
//! (summing the rows of the firing neurons, and the k-cap) — so that a new
//! backend (CUDA) implements two kernels, not an engine. Every backend must
//! return the same result as [`cpu::Cpu`] for the same input: sums are
//! accumulated in a fixed order that does not depend on thread count.

pub mod cpu;

use crate::engine::explicit::{DeviceFiber, FiberParts, GenSpec, PackedFiber};
use crate::engine::procedural::{ProceduralState, Selection, View};
use crate::engine::TargetPlan;
use crate::error::{KcapError, Result};
use crate::format::FiberFormat;
use std::sync::Arc;

/// One stored synapse: target neuron id and weight.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct Syn {
    pub to: u32,
    pub w: f32,
}

/// The operations an engine asks of a backend.
pub trait Backend: Send + Sync {
    /// Short name for reports ("cpu", "cuda:0").
    fn name(&self) -> String;

    /// `inputs[s.to] += s.w` for every synapse `s` of `rows[i]`, `i` in
    /// `firing`. Every `s.to` is `< inputs.len()`. The summation order is a
    /// function of the arguments only (deterministic on any thread count).
    fn accumulate_rows(&self, rows: &[Vec<Syn>], firing: &[u32], inputs: &mut [f32]);

    /// The k-cap over `values`: indices of the `k` largest, ties to the lowest
    /// index, returned in increasing order (see [`crate::cap`]).
    fn top_k(&self, values: &[f32], k: usize) -> Vec<u32> {
        crate::cap::top_k(values, k)
    }

    /// The selection of a procedural target (what
    /// [`ProceduralState::select`] computes), when this backend runs it
    /// itself; `None` (the default) leaves it to the CPU engine. An
    /// implementation must return the CPU's winners exactly, with the
    /// synapses onto them recorded (see [`crate::engine::procedural::device`]).
    fn procedural_select(
        &self,
        state: &ProceduralState,
        view: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> Option<crate::error::Result<Selection>> {
        let _ = (state, view, plan, firing);
        None
    }

    /// [`Backend::procedural_select`] that also applies the step's Hebbian
    /// update to `state` itself ([`ProceduralState::hebbian_selected`] with
    /// the selection's synapses, possibly in parts while it still searches
    /// for the rest), so that the caller must not apply it again. The
    /// returned selection carries no synapses. Same state afterwards as
    /// the selection followed by the update. An error may come after part
    /// of the update was applied (the caller reports it; a checkpoint from
    /// before the step resumes cleanly). Default: `None` (the caller
    /// selects, then updates).
    fn procedural_select_learn(
        &self,
        state: &mut ProceduralState,
        view: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> Option<crate::error::Result<Selection>> {
        let _ = (state, view, plan, firing);
        None
    }

    /// Called when procedural area `target` joins a brain on this backend
    /// (or the brain moves onto it): a backend may reserve what the area's
    /// steps will need, so that building the brain, not its first step,
    /// pays for it. Best effort (a reservation that does not fit is simply
    /// not made); the default does nothing.
    fn procedural_prepare(&self, model: &crate::model::Model, target: usize) {
        let _ = (model, target);
    }

    /// Whether this backend keeps explicit fibers of `format` in its own
    /// memory (a GPU); then [`Backend::explicit_generate`] and
    /// [`Backend::explicit_upload`] must work for it. Default: no.
    fn explicit_supports(&self, format: &FiberFormat) -> bool {
        let _ = format;
        false
    }

    /// Generates a fiber in this backend's memory (see
    /// [`crate::engine::explicit::generation_plan`]); the same graph as the
    /// host's [`PackedFiber::generate`]. Refuses, with the estimate and what
    /// is free, a fiber that would not fit.
    fn explicit_generate(&self, spec: &GenSpec) -> Result<Arc<dyn DeviceFiber>> {
        let _ = spec;
        Err(KcapError::Unsupported(format!(
            "backend {} keeps no explicit fibers",
            self.name()
        )))
    }

    /// Copies a host fiber (`parts` = [`PackedFiber::to_parts`]) into this
    /// backend's memory.
    fn explicit_upload(
        &self,
        fiber: &PackedFiber,
        parts: &FiberParts,
    ) -> Result<Arc<dyn DeviceFiber>> {
        let _ = (fiber, parts);
        Err(KcapError::Unsupported(format!(
            "backend {} keeps no explicit fibers",
            self.name()
        )))
    }

    /// Whether `fiber` lives in this backend's memory.
    fn explicit_owns(&self, fiber: &dyn DeviceFiber) -> bool {
        let _ = fiber;
        false
    }

    /// The k-cap of an explicit target whose `inputs` (stimulus part, len n)
    /// still lack the rows of `sources` (fiber, firing rows), when this
    /// backend runs the whole of it (`None`: the engine does, with
    /// [`PackedFiber::accumulate`] and [`Backend::top_k`]). Must return the
    /// engine's winners exactly, increasing.
    fn explicit_select(
        &self,
        sources: &[(&PackedFiber, &[u32])],
        inputs: &[f32],
        k: usize,
    ) -> Option<Result<Vec<u32>>> {
        let _ = (sources, inputs, k);
        None
    }
}
