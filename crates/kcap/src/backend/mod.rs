//! Backends: where the hot loops of an engine run.
//!
//! The trait is deliberately narrow — the two operations that dominate a step
//! (summing the rows of the firing neurons, and the k-cap) — so that a new
//! backend (CUDA) implements two kernels, not an engine. Every backend must
//! return the same result as [`cpu::Cpu`] for the same input: sums are
//! accumulated in a fixed order that does not depend on thread count.

pub mod cpu;

use crate::engine::procedural::{ProceduralState, Selection, View};
use crate::engine::TargetPlan;

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
}
