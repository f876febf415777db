//! What another device (the CUDA backend) needs to run a procedural step
//! bit for bit like [`ProceduralState::select`], and the way back.
//!
//! **Key decision: the host prepares, the device counts.** Everything that
//! is small and per step — firing row keys, the skip scale of each fiber,
//! the learned corrections of the step grouped by target block — is built
//! here, on the host, by the same code and in the same order as the CPU
//! scan. A device then only regenerates events (the recipe of [`super::rows`]),
//! counts them, adds the corrections in the given order (f64, then f32) and
//! takes the k-cap; it returns the winners and the synapses onto them, and
//! [`ProceduralState::device_selection`] turns them into a [`Selection`]
//! that [`ProceduralState::hebbian_selected`] applies like a recorded CPU
//! selection. The result is the CPU's exactly (tested on the GPU).

use super::rows::{fiber_key, row_key, skip_scale, BLOCK};
use super::{ProceduralState, Selection, View};
use crate::engine::TargetPlan;
use crate::error::{invalid, Result};
use crate::model::Source;
use rayon::prelude::*;

/// One fiber into the target, prepared for a device.
#[derive(Clone, Debug)]
pub struct DeviceFiber {
    pub src: Source,
    /// `row_key` of every firing row, in slot order (ids increasing).
    pub row_keys: Vec<u64>,
    /// Connection probability and `c = 1 / ln(1 − p)` ([`skip_scale`]).
    pub p: f64,
    pub scale: f64,
    /// True when the fiber's synapses are potentiated (β > 0).
    pub plastic: bool,
}

/// Everything a device needs for one target's k-cap in one step.
#[derive(Clone, Debug)]
pub struct DeviceStep {
    pub target: usize,
    pub n: u64,
    pub k: usize,
    /// Fibers in plan order (stimuli, then areas); slots number their rows
    /// consecutively in that order.
    pub fibers: Vec<DeviceFiber>,
    /// Learned corrections of this step, grouped by target block:
    /// `corr_blocks` increasing, block `corr_blocks[i]` owns entries
    /// `corr_off[i]..corr_off[i + 1]` of `corr_local` / `corr_delta`,
    /// sorted by local target with ties in (fiber, row) order — the order
    /// in which the CPU adds them (`w − 1`, summed in f64 after the count).
    pub corr_blocks: Vec<u64>,
    pub corr_off: Vec<u32>,
    pub corr_local: Vec<u32>,
    pub corr_delta: Vec<f32>,
}

impl DeviceStep {
    /// Firing rows of the step (all fibers).
    pub fn slots(&self) -> u64 {
        self.fibers.iter().map(|f| f.row_keys.len() as u64).sum()
    }

    /// Expected synaptic events of the step (rows × n·p).
    pub fn expected_events(&self) -> f64 {
        self.fibers
            .iter()
            .map(|f| f.row_keys.len() as f64 * f.p * self.n as f64)
            .sum()
    }
}

impl ProceduralState {
    /// The inputs of one step into `plan.target` for a device (validated
    /// like [`ProceduralState::select`]).
    pub fn device_step(
        &self,
        v: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> Result<DeviceStep> {
        Self::validate(v.model, plan, firing)?;
        let t = plan.target;
        let tables = self.fiber_list(v, plan);
        let fibers = self.prepare(v, plan, firing, &tables, true);
        let plastic = Self::plastic(v, plan);
        // Block by block in parallel: every fiber's corrections in plan
        // order, then a stable sort by target keeps (fiber, row) order.
        let mut blocks: Vec<u64> = fibers
            .iter()
            .filter_map(|f| f.learned)
            .flat_map(|l| l.blocks.keys().copied())
            .collect();
        blocks.par_sort_unstable();
        blocks.dedup();
        let per: Vec<Vec<(u32, f32)>> = blocks
            .par_iter()
            .map(|&b| {
                let mut v = Vec::new();
                for f in fibers.iter() {
                    if let Some(l) = f.learned {
                        l.corrections(b, |row| f.rows.contains(row), |local, d| v.push((local, d)));
                    }
                }
                v.sort_by_key(|c| c.0);
                v
            })
            .collect();
        let mut step = DeviceStep {
            target: t,
            n: v.model.areas[t].n,
            k: v.model.areas[t].k,
            fibers: Vec::with_capacity(fibers.len()),
            corr_blocks: Vec::new(),
            corr_off: Vec::new(),
            corr_local: Vec::new(),
            corr_delta: Vec::new(),
        };
        for (i, ((src, _), f)) in tables.iter().zip(&fibers).enumerate() {
            let p = v.model.p(*src, t);
            debug_assert_eq!(
                row_key(fiber_key(v.seed, *src, t), f.rows.get(0)),
                f.row_keys[0]
            );
            step.fibers.push(DeviceFiber {
                src: *src,
                row_keys: f.row_keys.clone(),
                p,
                scale: skip_scale(p),
                plastic: plastic.iter().any(|q| q.0 == i),
            });
        }
        for (&b, v) in blocks.iter().zip(&per) {
            if v.is_empty() {
                continue;
            }
            step.corr_blocks.push(b);
            step.corr_off.push(step.corr_local.len() as u32);
            for &(local, d) in v {
                step.corr_local.push(local);
                step.corr_delta.push(d);
            }
        }
        step.corr_off.push(step.corr_local.len() as u32);
        Ok(step)
    }

    /// A [`Selection`] from a device's answer to `step`: the k winners
    /// (sorted by id) with their inputs, the neurons that received input,
    /// the events generated, and every (winner, slot) synapse from a firing
    /// row of a plastic fiber onto a winner (any order).
    #[allow(clippy::too_many_arguments)]
    pub fn device_selection(
        step: &DeviceStep,
        winners: Vec<u64>,
        inputs: Vec<f32>,
        received: u64,
        events: u64,
        synapses: Vec<(u64, u32)>,
    ) -> Result<Selection> {
        let bad = |why: &str| invalid("device selection", step.target, why.to_string());
        if winners.len() != step.k.min(step.n as usize) || inputs.len() != winners.len() {
            return Err(bad("wrong number of winners or inputs"));
        }
        if winners.windows(2).any(|w| w[0] >= w[1]) || winners.last().is_some_and(|&w| w >= step.n)
        {
            return Err(bad("winners must be sorted, distinct and below n"));
        }
        let slots = step.slots();
        if synapses.iter().any(|&(_, s)| s as u64 >= slots) {
            return Err(bad("synapse slot out of range"));
        }
        Ok(Selection {
            target: step.target,
            winners,
            inputs,
            received,
            events,
            offered: 0,
            synapses: Some(synapses),
            slots,
        })
    }
}

/// Block of a neuron id and its offset in the block.
#[inline]
pub fn split_id(id: u64) -> (u64, u32) {
    (id / BLOCK, (id % BLOCK) as u32)
}
