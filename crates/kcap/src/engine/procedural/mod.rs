//! The procedural engine (SPEC §3.3): areas of up to 10¹² neurons whose
//! connectivity is never stored but regenerated, every time it is needed,
//! from the counter-based generator.
//!
//! **Key decision: everything is organised by target block** (2¹⁶ ids, see
//! [`rows`]). The synapses of (source row, target block) come from their own
//! random stream, so a step walks the target blocks — in parallel, one
//! block per task — and in each generates the events of all firing rows,
//! accumulates integer counts in a block-sized buffer, adds the learned
//! corrections of that block and keeps a running top-k (`aggregate.rs`).
//! Work per step is proportional to the synaptic events (firing rows × n·p,
//! plus one stream start per (row, block)); memory is one block buffer and
//! O(k) candidates per thread, whatever n. Only potentiated synapses are
//! stored ([`learned`]), grouped by target block because that is how a step
//! reads them.
//!
//! Contracts of a step, for the integrator ([`crate::brain`]):
//! - neuron ids are u64; winners are sorted, distinct, `< n`;
//! - `firing[a]` is the current winner list of area `a` (read for every `a`
//!   in `plan.areas`); stimulus `s` fires its rows `0..size`;
//! - k-cap order: input descending, then **lowest id** (as [`crate::cap`]);
//!   only neurons with input (count > 0) compete; if fewer than k received
//!   any, the lowest-id neurons without input fill the cap;
//! - [`ProceduralState::select`] reads, [`ProceduralState::hebbian_selected`]
//!   (or [`ProceduralState::hebbian`]) writes: run every target's selection
//!   first, then the Hebbian updates, then swap winners (SPEC §2);
//! - results are identical for any rayon thread count.

mod aggregate;
pub mod device;
pub mod learned;
pub mod rows;

pub use learned::FiberLearned;
pub use rows::{
    block_count, block_key, fiber_key, row_key, row_targets, skip_scale, SkipTable, BLOCK,
    BLOCK_BITS,
};

use super::TargetPlan;
use crate::error::{invalid, KcapError, Result};
use crate::model::{Model, Source, MAX_N};
use aggregate::{
    key_value, scan_block, sub_width, with_scratch, FiringFiber, RowsOf, Scratch, TopK,
};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

/// What the engine reads of the brain.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub model: &'a Model,
    pub seed: u64,
}

/// New winners of one target, as chosen by [`ProceduralState::select`].
#[derive(Clone, Debug)]
pub struct Selection {
    pub target: usize,
    /// The k winners, sorted by id.
    pub winners: Vec<u64>,
    /// `inputs[i]`: the summed input of `winners[i]` (0 for filled-in neurons).
    pub inputs: Vec<f32>,
    /// Neurons of the target that received any input.
    pub received: u64,
    /// Synaptic events generated (the step's work).
    pub events: u64,
    /// Candidates offered to the running top-k (diagnostics).
    pub offered: u64,
    /// `(winner, slot)` for every synapse from a firing row into a winner,
    /// when the scan could record them; slots number the firing rows in
    /// plan order (stimuli, then areas; rows in increasing id).
    synapses: Option<Vec<(u64, u32)>>,
    slots: u64,
}

impl Selection {
    /// Takes the recorded synapses out (a selection whose update was
    /// applied already need not carry them).
    pub fn take_synapses(&mut self) -> Option<Vec<(u64, u32)>> {
        self.synapses.take()
    }

    /// True when the synapses onto the winners were recorded, so that
    /// [`ProceduralState::hebbian_selected`] regenerates nothing.
    pub fn has_synapses(&self) -> bool {
        self.synapses.is_some()
    }
}

/// Outcome of a Hebbian update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HebbianReport {
    /// Synapses potentiated (each once).
    pub potentiated: u64,
    /// Events regenerated to find them (0 when the selection recorded them).
    pub regenerated_events: u64,
}

/// Outcome of [`ProceduralState::scan_blocks`] (benchmarks, extrapolation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub blocks: u64,
    pub events: u64,
    pub received: u64,
    /// Candidates offered to the running top-k (diagnostics).
    pub offered: u64,
    /// Recorded synapses onto offered candidates (diagnostics).
    pub hits: u64,
}

/// Estimated peak memory of one procedural step, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Buffers of one worker thread (block counters, event list, candidates).
    pub per_thread: u64,
    pub threads: u64,
    /// Row keys, skip tables, selection output.
    pub shared: u64,
    /// Learned synapses held now plus what one step can add (with merge copies).
    pub learned: u64,
    pub total: u64,
}

/// Steps whose expected event count per block sub-range exceeds this are
/// scanned without recording sources (the event list costs 2 bytes per
/// event); the Hebbian update then regenerates the winners' blocks.
pub const DEFAULT_RECORD_LIMIT: u64 = 1 << 22;

/// A potentiation to apply: (fiber index in plan order, target block, learned key).
type Update = (usize, u64, u64);

/// A slice's elements written from several threads at distinct indices.
struct SharedSlice<T>(*mut T);

// SAFETY: only `write` touches the pointer, and its callers guarantee that
// no two threads write the same index.
unsafe impl<T: Send> Send for SharedSlice<T> {}
unsafe impl<T: Send> Sync for SharedSlice<T> {}

impl<T> SharedSlice<T> {
    /// Writes `x` at index `i`.
    ///
    /// # Safety
    /// `i` lies inside the slice, and no other thread reads or writes
    /// index `i` while the slice is shared.
    #[inline]
    unsafe fn write(&self, i: usize, x: T) {
        unsafe { self.0.add(i).write(x) }
    }
}

/// Regeneration share (of a full step) above which recording pays: the
/// measured cost of recording relative to generating, about 0.3.
pub const RECORD_BREAK_EVEN: f64 = 0.3;

/// Expected share of a step's events that the regenerating Hebbian update
/// walks for `k` winners spread uniformly over `blocks` target blocks: per
/// block with m ≥ 1 winners, up to the last, m/(m+1) of it on average;
/// m ~ Poisson(k/blocks).
pub fn regen_fraction(k: u64, blocks: u64) -> f64 {
    let lambda = k as f64 / blocks.max(1) as f64;
    if lambda > 50.0 {
        return 1.0 - 1.0 / lambda;
    }
    let (mut pm, mut f) = ((-lambda).exp(), 0.0);
    for m in 1..400 {
        pm *= lambda / m as f64;
        f += pm * m as f64 / (m as f64 + 1.0);
    }
    f
}

/// Live progress of the procedural work of a step, updated by the worker
/// threads (one relaxed atomic add per target block) and readable from any
/// thread — e.g. by a progress bar while a 10¹⁰-event step runs.
#[derive(Debug, Default)]
pub struct StepProgress {
    /// Target blocks the selections of the step scan (all targets).
    pub blocks_total: AtomicU64,
    /// Target blocks scanned so far.
    pub blocks_done: AtomicU64,
    /// Synaptic events generated so far by the selections.
    pub events: AtomicU64,
    /// Winner blocks the regenerating Hebbian updates walk, and those done.
    pub hebbian_total: AtomicU64,
    pub hebbian_done: AtomicU64,
}

impl StepProgress {
    /// Starts a step that scans `blocks` target blocks.
    pub fn reset(&self, blocks: u64) {
        self.blocks_total.store(blocks, Relaxed);
        self.blocks_done.store(0, Relaxed);
        self.events.store(0, Relaxed);
        self.hebbian_total.store(0, Relaxed);
        self.hebbian_done.store(0, Relaxed);
    }
}

/// Learned weights of every procedural fiber, and cached skip tables.
pub struct ProceduralState {
    learned: HashMap<(Source, usize), FiberLearned>,
    tables: Mutex<HashMap<u64, Arc<SkipTable>>>,
    /// Event-list budget per block and thread (see [`DEFAULT_RECORD_LIMIT`]).
    pub record_limit: u64,
    /// Progress of the step in flight (see [`StepProgress`]).
    progress: Arc<StepProgress>,
    /// Buffers kept from step to step, not part of the state's value: the
    /// Hebbian update's, and the device corrections' (large; allocating
    /// them afresh every step cost page faults on every thread).
    scratch: HebbScratch,
    corr_scratch: Mutex<Vec<u64>>,
}

/// Buffers of the Hebbian update (see [`ProceduralState::apply`]).
#[derive(Default)]
struct HebbScratch {
    ups: Vec<Update>,
    keys: Vec<u64>,
    hist: Vec<u32>,
}

impl Default for ProceduralState {
    fn default() -> Self {
        ProceduralState {
            learned: HashMap::new(),
            tables: Mutex::new(HashMap::new()),
            record_limit: DEFAULT_RECORD_LIMIT,
            progress: Arc::default(),
            scratch: HebbScratch::default(),
            corr_scratch: Mutex::default(),
        }
    }
}

impl Clone for ProceduralState {
    fn clone(&self) -> Self {
        ProceduralState {
            learned: self.learned.clone(),
            tables: Mutex::new(HashMap::new()),
            record_limit: self.record_limit,
            progress: Arc::default(),
            scratch: HebbScratch::default(),
            corr_scratch: Mutex::default(),
        }
    }
}

/// The saved form of a [`ProceduralState`]: its learned weights, fibers
/// sorted by (source, target) so that equal states give equal bytes.
#[derive(serde::Serialize)]
struct SavedRef<'a> {
    learned: Vec<(&'a (Source, usize), &'a FiberLearned)>,
}

#[derive(serde::Deserialize)]
struct Saved {
    learned: Vec<((Source, usize), FiberLearned)>,
}

impl serde::Serialize for ProceduralState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut learned: Vec<_> = self.learned.iter().collect();
        learned.sort_unstable_by_key(|e| *e.0);
        SavedRef { learned }.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ProceduralState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let saved = Saved::deserialize(d)?;
        Ok(ProceduralState {
            learned: saved.learned.into_iter().collect(),
            ..Default::default()
        })
    }
}

impl std::fmt::Debug for ProceduralState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProceduralState")
            .field("fibers", &self.learned.len())
            .field("learned_synapses", &self.learned_synapses())
            .finish_non_exhaustive()
    }
}

/// Expected synapses per neuron must be at least one: p·n ≥ 1.
fn check_fiber_p(model: &Model, src: Source, t: usize) -> Result<()> {
    let (p, n) = (model.p(src, t), model.areas[t].n);
    if p * (n as f64) < 1.0 {
        return Err(invalid(
            format!("p of fiber {} -> {}", model.source_name(src), model.areas[t].name),
            p,
            format!("the procedural engine needs p·n >= 1 (at least one expected synapse per neuron); here p·n = {:.3e} with n = {n}", p * n as f64),
        ));
    }
    Ok(())
}

impl ProceduralState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The progress counters that [`Self::select`] and [`Self::hebbian`]
    /// advance; reset by the caller at the start of a step.
    pub fn progress(&self) -> Arc<StepProgress> {
        self.progress.clone()
    }

    /// Checks learned weights read from a file against `model`: every fiber
    /// ends in a procedural area, its source exists, and its synapses lie
    /// inside both areas (see [`FiberLearned::check`]).
    pub fn check_loaded(&self, model: &Model) -> std::result::Result<(), String> {
        for (&(src, t), fl) in &self.learned {
            let target = model
                .areas
                .get(t)
                .filter(|a| a.engine == crate::model::EngineKind::Procedural)
                .ok_or_else(|| {
                    format!("learned weights into #{t}, which is not a procedural area")
                })?;
            let rows = match src {
                Source::Stim(s) => model.stimuli.get(s).map(|x| x.size),
                Source::Area(a) => model.areas.get(a).map(|x| x.n),
            }
            .ok_or_else(|| format!("learned weights from unknown source {src:?}"))?;
            fl.check(target.n, rows).map_err(|e| {
                format!(
                    "learned weights of fiber {} -> {}: {e}",
                    model.source_name(src),
                    target.name
                )
            })?;
        }
        Ok(())
    }

    /// Checks that area `t` can be procedural: n ≤ 10¹², 1 ≤ k < n, and the
    /// brain's p gives p·n ≥ 1 (for the fiber A → A). Call when the area is
    /// added; each step checks the p of its own fibers again.
    pub fn check_area(model: &Model, t: usize) -> Result<()> {
        Self::check_shape(model, t)?;
        check_fiber_p(model, Source::Area(t), t)
    }

    /// Checks that the fiber `src → t` has p·n ≥ 1 (at least one expected
    /// synapse per neuron of `t`).
    pub fn check_fiber(model: &Model, src: Source, t: usize) -> Result<()> {
        check_fiber_p(model, src, t)
    }

    /// n ≤ 10¹² and 1 ≤ k < n.
    fn check_shape(model: &Model, t: usize) -> Result<()> {
        let a = model
            .areas
            .get(t)
            .ok_or_else(|| KcapError::UnknownArea(format!("#{t}")))?;
        if a.k == 0 || a.k as u64 >= a.n {
            return Err(KcapError::BadK {
                area: a.name.clone(),
                n: a.n,
                k: a.k as u64,
            });
        }
        if a.n > MAX_N {
            return Err(invalid(
                format!("n of area {:?}", a.name),
                a.n,
                format!("at most {MAX_N} neurons per area"),
            ));
        }
        Ok(())
    }

    /// Validates one step into `plan.target` (errors name the culprit):
    /// every fiber has p·n ≥ 1, every source area has winners, sorted,
    /// distinct and below its n, and the firing rows number < 2³².
    pub fn validate(model: &Model, plan: &TargetPlan, firing: &[&[u64]]) -> Result<()> {
        let t = plan.target;
        Self::check_shape(model, t)?;
        let mut slots = 0u64;
        for &s in &plan.stims {
            let st = model
                .stimuli
                .get(s)
                .ok_or_else(|| KcapError::UnknownStimulus(format!("#{s}")))?;
            check_fiber_p(model, Source::Stim(s), t)?;
            slots += st.size;
        }
        for &a in &plan.areas {
            let area = model
                .areas
                .get(a)
                .ok_or_else(|| KcapError::UnknownArea(format!("#{a}")))?;
            check_fiber_p(model, Source::Area(a), t)?;
            let w = firing.get(a).copied().unwrap_or(&[]);
            if w.is_empty() {
                return Err(KcapError::NoWinners(area.name.clone()));
            }
            if w.windows(2).any(|p| p[0] >= p[1]) {
                return Err(KcapError::BadWinners {
                    area: area.name.clone(),
                    why: "winner ids must be sorted and distinct".into(),
                });
            }
            if *w.last().unwrap() >= area.n {
                return Err(KcapError::BadWinners {
                    area: area.name.clone(),
                    why: format!("neuron {} is not below n = {}", w.last().unwrap(), area.n),
                });
            }
            slots += w.len() as u64;
        }
        if slots >= u32::MAX as u64 {
            return Err(invalid(
                format!("firing rows into area {:?}", model.areas[t].name),
                slots,
                "at most 2^32 - 1 firing neurons per step",
            ));
        }
        Ok(())
    }

    fn table(&self, p: f64) -> Arc<SkipTable> {
        let mut m = self.tables.lock().expect("skip table cache poisoned");
        m.entry(p.to_bits())
            .or_insert_with(|| Arc::new(SkipTable::new(p)))
            .clone()
    }

    /// The fibers of `plan` with their tables (one per fiber, same order).
    fn fiber_list(&self, v: &View, plan: &TargetPlan) -> Vec<(Source, Arc<SkipTable>)> {
        let t = plan.target;
        let srcs = plan
            .stims
            .iter()
            .map(|&s| Source::Stim(s))
            .chain(plan.areas.iter().map(|&a| Source::Area(a)));
        srcs.map(|src| (src, self.table(v.model.p(src, t))))
            .collect()
    }

    /// Firing fibers of a step, slots assigned in plan order.
    fn prepare<'a>(
        &'a self,
        v: &View,
        plan: &TargetPlan,
        firing: &'a [&'a [u64]],
        tables: &'a [(Source, Arc<SkipTable>)],
        with_learned: bool,
    ) -> Vec<FiringFiber<'a>> {
        let t = plan.target;
        tables
            .iter()
            .map(|(src, table)| {
                let rows = match *src {
                    Source::Stim(s) => RowsOf::All(v.model.stimuli[s].size),
                    Source::Area(a) => RowsOf::List(firing[a]),
                };
                let fk = fiber_key(v.seed, *src, t);
                let row_keys: Vec<u64> =
                    (0..rows.len()).map(|i| row_key(fk, rows.get(i))).collect();
                let learned = if with_learned {
                    self.learned.get(&(*src, t)).filter(|l| !l.is_empty())
                } else {
                    None
                };
                FiringFiber {
                    rows,
                    row_keys,
                    table,
                    learned,
                }
            })
            .collect()
    }

    /// Expected events per target block of a step (all fibers), and the
    /// event-weighted mean p.
    fn events_per_block(v: &View, plan: &TargetPlan, fibers: &[FiringFiber]) -> (f64, f64) {
        let n = v.model.areas[plan.target].n;
        let width = BLOCK.min(n) as f64;
        let srcs = plan
            .stims
            .iter()
            .map(|&s| Source::Stim(s))
            .chain(plan.areas.iter().map(|&a| Source::Area(a)));
        let (mut ev, mut rows) = (0.0, 0.0);
        for (src, f) in srcs.zip(fibers) {
            ev += f.rows.len() as f64 * v.model.p(src, plan.target) * width;
            rows += f.rows.len() as f64;
        }
        (ev, ev / (rows * width).max(1.0))
    }

    /// Whether a scan records the sources of its candidates. Recording
    /// costs about a third of generating (an event list per sub-range, one
    /// pass over it); not recording makes the Hebbian update regenerate, per
    /// firing row, each block that holds winners up to its last winner —
    /// [`regen_fraction`] of the step. Record when that is the dearer, and
    /// when the event list of a sub-range fits [`Self::record_limit`].
    fn record(&self, ev_per_block: f64, mean_p: f64, n: u64, k: usize) -> bool {
        let per_sub = ev_per_block * (sub_width(mean_p) as f64 / BLOCK as f64).min(1.0);
        per_sub * 1.25 <= self.record_limit as f64
            && regen_fraction(k as u64, block_count(n)) > RECORD_BREAK_EVEN
    }

    fn scan(
        &self,
        fibers: &[FiringFiber],
        n: u64,
        k: usize,
        blocks: Range<u64>,
        record: bool,
        mean_p: f64,
    ) -> TopK {
        let global = AtomicU64::new(u64::MAX);
        let sub = sub_width(mean_p);
        let progress = &self.progress;
        blocks
            .into_par_iter()
            .fold(
                || TopK::new(k),
                |mut acc, b| {
                    let before = acc.events;
                    with_scratch(|sc| scan_block(fibers, n, b, sub, record, &global, &mut acc, sc));
                    progress.events.fetch_add(acc.events - before, Relaxed);
                    progress.blocks_done.fetch_add(1, Relaxed);
                    acc
                },
            )
            .reduce(|| TopK::new(k), TopK::merge)
    }

    /// The k-cap of one target (SPEC §2 steps 1–2): the inputs of every
    /// neuron of `plan.target` from the firing stimuli and the winners
    /// `firing[a]` of the source areas, regenerated block by block. Reads
    /// only; deterministic for any thread count.
    pub fn select(&self, v: &View, plan: &TargetPlan, firing: &[&[u64]]) -> Result<Selection> {
        Self::validate(v.model, plan, firing)?;
        let t = plan.target;
        let (n, k) = (v.model.areas[t].n, v.model.areas[t].k);
        let tables = self.fiber_list(v, plan);
        let fibers = self.prepare(v, plan, firing, &tables, true);
        let slots: u64 = fibers.iter().map(|f| f.rows.len() as u64).sum();
        let (ev, mean_p) = Self::events_per_block(v, plan, &fibers);
        let mut acc = self.scan(
            &fibers,
            n,
            k,
            0..block_count(n),
            self.record(ev, mean_p, n, k),
            mean_p,
        );
        acc.prune(k);
        let mut items = acc.items;
        items.sort_unstable_by_key(|c| c.key as u64);
        let mut winners: Vec<u64> = items.iter().map(|c| c.key as u64).collect();
        let mut inputs: Vec<f32> = items.iter().map(|c| key_value(c.key)).collect();
        let synapses = acc.recorded.then(|| {
            let mut s = Vec::with_capacity(acc.srcs.len());
            for c in &items {
                let id = c.key as u64;
                s.extend(
                    acc.srcs[c.src_start as usize..(c.src_start + c.src_len) as usize]
                        .iter()
                        .map(|&slot| (id, slot)),
                );
            }
            s
        });
        if winners.len() < k {
            // Fewer than k neurons received input: every one of them wins,
            // and the lowest ids without input fill the cap.
            debug_assert_eq!(winners.len() as u64, acc.touched);
            let touched: Vec<(u64, f32)> = winners
                .iter()
                .copied()
                .zip(inputs.iter().copied())
                .collect();
            let mut fill = Vec::new();
            let mut ti = 0;
            let mut id = 0u64;
            while touched.len() + fill.len() < k {
                while ti < touched.len() && touched[ti].0 < id {
                    ti += 1;
                }
                if ti >= touched.len() || touched[ti].0 != id {
                    fill.push(id);
                }
                id += 1;
            }
            let mut all: Vec<(u64, f32)> = touched;
            all.extend(fill.into_iter().map(|i| (i, 0.0)));
            all.sort_unstable_by_key(|x| x.0);
            winners = all.iter().map(|x| x.0).collect();
            inputs = all.iter().map(|x| x.1).collect();
        }
        Ok(Selection {
            target: t,
            winners,
            inputs,
            received: acc.touched,
            events: acc.events,
            offered: acc.offered,
            synapses,
            slots,
        })
    }

    /// Scans only `blocks` of the target (no k-cap output): for benchmarks
    /// and for extrapolating the cost of a huge step from a partial one.
    pub fn scan_blocks(
        &self,
        v: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
        blocks: Range<u64>,
    ) -> Result<ScanReport> {
        Self::validate(v.model, plan, firing)?;
        let t = plan.target;
        let (n, k) = (v.model.areas[t].n, v.model.areas[t].k);
        let blocks = blocks.start.min(block_count(n))..blocks.end.min(block_count(n));
        let tables = self.fiber_list(v, plan);
        let fibers = self.prepare(v, plan, firing, &tables, true);
        let (ev, mean_p) = Self::events_per_block(v, plan, &fibers);
        let acc = self.scan(
            &fibers,
            n,
            k,
            blocks.clone(),
            self.record(ev, mean_p, n, k),
            mean_p,
        );
        Ok(ScanReport {
            blocks: blocks.end - blocks.start,
            events: acc.events,
            received: acc.touched,
            offered: acc.offered,
            hits: acc.hits,
        })
    }

    /// Fibers of `plan` that learn: (index in plan order, source, ×(1+β), cap).
    fn plastic(v: &View, plan: &TargetPlan) -> Vec<(usize, Source, f32, f32)> {
        let t = plan.target;
        let cap = v.model.w_max.map_or(f32::INFINITY, |w| w as f32);
        let srcs = plan
            .stims
            .iter()
            .map(|&s| Source::Stim(s))
            .chain(plan.areas.iter().map(|&a| Source::Area(a)));
        srcs.enumerate()
            .filter_map(|(i, src)| {
                let beta = v.model.beta(src, t);
                (beta > 0.0).then_some((i, src, (1.0 + beta) as f32, cap))
            })
            .collect()
    }

    /// Applies `w ← min(w·(1+β), w_max)` to synapses given as
    /// `(fiber index, block, key)`, any order, repeats counted once.
    ///
    /// The updates are bucketed by (fiber, block) with a counting sort — a
    /// step brings ~2·10⁵ updates per fiber over ~10⁴ blocks, where a
    /// comparison sort of the whole list cost most of the update — done in
    /// parallel: each piece of the list counts its updates per bucket, the
    /// counts give every piece its own slots in each bucket, and the pieces
    /// place their keys at once. Then each bucket is sorted and deduplicated
    /// on its own and the blocks are merged in parallel. Same result as one
    /// sort: the buckets come out in (fiber, block) order with their keys
    /// sorted and distinct. The buffers are kept from step to step.
    fn apply(
        &mut self,
        v: &View,
        plan: &TargetPlan,
        plastic: &[(usize, Source, f32, f32)],
        ups: &[Update],
    ) -> u64 {
        let t = plan.target;
        let nb = v.model.areas[t].n.div_ceil(BLOCK);
        // Plastic fibers in plan order; an update names its fiber's index.
        let pos = |fi: usize| {
            plastic
                .iter()
                .position(|p| p.0 == fi)
                .expect("update of a plastic fiber")
        };
        let buckets = plastic.len() as u64 * nb;
        let mut scratch = std::mem::take(&mut self.scratch);
        let HebbScratch { keys, hist, .. } = &mut scratch;
        let mut bucketed: Vec<(u64, &mut [u64])> = Vec::new();
        let mut sorted: Vec<(usize, u64, u64)>;
        let mut sorted_keys: Vec<u64>;
        if buckets <= 4 * ups.len() as u64 + 4096 && buckets < u32::MAX as u64 {
            let nbk = buckets as usize;
            let bucket = |u: &Update| pos(u.0) * nb as usize + u.1 as usize;
            let piece = ups
                .len()
                .div_ceil(rayon::current_num_threads())
                .max(learned::MIN_UNIT);
            let pieces = ups.len().div_ceil(piece);
            learned::grow(hist, pieces * nbk);
            let hist = &mut hist[..pieces * nbk];
            hist.par_chunks_mut(nbk)
                .zip(ups.par_chunks(piece))
                .for_each(|(h, u)| {
                    h.fill(0);
                    for x in u {
                        h[bucket(x)] += 1;
                    }
                });
            // Bucket b holds keys[start[b]..start[b + 1]]; piece c writes
            // its updates of bucket b from hist[c][b] on.
            let mut start = vec![0u32; nbk + 1];
            for h in hist.chunks(nbk) {
                for (s, &c) in start[1..].iter_mut().zip(h) {
                    *s += c;
                }
            }
            for i in 1..start.len() {
                start[i] += start[i - 1];
            }
            let mut next = start[..nbk].to_vec();
            for h in hist.chunks_mut(nbk) {
                for (n, c) in next.iter_mut().zip(h) {
                    (*c, *n) = (*n, *n + *c);
                }
            }
            learned::grow(keys, ups.len());
            let keys = &mut keys[..ups.len()];
            let dst = SharedSlice(keys.as_mut_ptr());
            hist.par_chunks_mut(nbk)
                .zip(ups.par_chunks(piece))
                .for_each(|(h, u)| {
                    for x in u {
                        let b = bucket(x);
                        // SAFETY: slots hist[c][b]..+count(c, b) lie inside
                        // `keys` (the counts add up to its length) and are
                        // this piece's alone: pieces own disjoint ranges of
                        // every bucket, buckets disjoint ranges of `keys`.
                        unsafe { dst.write(h[b] as usize, x.2) };
                        h[b] += 1;
                    }
                });
            let mut rest = &mut keys[..];
            for (b, w) in start.windows(2).enumerate() {
                let len = (w[1] - w[0]) as usize;
                if len > 0 {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
                    bucketed.push((b as u64, head));
                    rest = tail;
                }
            }
        } else {
            // Few updates over many blocks: sort them instead.
            sorted = ups.to_vec();
            sorted.par_sort_unstable();
            sorted_keys = sorted.iter().map(|u| u.2).collect();
            let mut rest = &mut sorted_keys[..];
            let mut i = 0;
            while i < sorted.len() {
                let (fi, b) = (sorted[i].0, sorted[i].1);
                let j = i + sorted[i..].partition_point(|u| (u.0, u.1) == (fi, b));
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(j - i);
                bucketed.push((pos(fi) as u64 * nb + b, head));
                rest = tail;
                i = j;
            }
        }
        // Each bucket sorted and deduplicated in place, in parallel.
        let groups: Vec<(u64, &[u64])> = bucketed
            .into_par_iter()
            .map(|(b, s)| {
                s.sort_unstable();
                let mut len = 1;
                for i in 1..s.len() {
                    if s[i] != s[len - 1] {
                        s[len] = s[i];
                        len += 1;
                    }
                }
                (b, &s[..len])
            })
            .collect();
        let n = groups.iter().map(|g| g.1.len() as u64).sum();
        for (pi, &(_, src, m, cap)) in plastic.iter().enumerate() {
            let lo = groups.partition_point(|g| g.0 < pi as u64 * nb);
            let hi = groups.partition_point(|g| g.0 < (pi as u64 + 1) * nb);
            if lo == hi {
                continue;
            }
            let fiber: Vec<(u64, &[u64])> = groups[lo..hi]
                .iter()
                .map(|&(b, k)| (b - pi as u64 * nb, k))
                .collect();
            self.learned
                .entry((src, t))
                .or_default()
                .potentiate_many(&fiber, m, cap);
        }
        self.learned.retain(|_, l| !l.is_empty());
        self.scratch = scratch;
        n
    }

    /// Hebbian update (SPEC §2 step 3) for `winners` of `plan.target`: every
    /// synapse from a firing row of a plastic fiber into a winner is
    /// potentiated once. Finds the synapses by regenerating, for every
    /// firing row, only the target blocks that contain winners (and only up
    /// to the last winner in each). Use for fixed areas, or after a
    /// selection that could not record its synapses.
    pub fn hebbian(
        &mut self,
        v: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
        winners: &[u64],
    ) -> Result<HebbianReport> {
        Self::validate(v.model, plan, firing)?;
        let t = plan.target;
        let n = v.model.areas[t].n;
        if winners.windows(2).any(|w| w[0] >= w[1]) || winners.last().is_some_and(|&w| w >= n) {
            return Err(KcapError::BadWinners {
                area: v.model.areas[t].name.clone(),
                why: "winners must be sorted, distinct and below n".into(),
            });
        }
        let plastic = Self::plastic(v, plan);
        if plastic.is_empty() || winners.is_empty() {
            return Ok(HebbianReport::default());
        }
        let tables = self.fiber_list(v, plan);
        let fibers = self.prepare(v, plan, firing, &tables, false);
        let mut groups: Vec<(u64, Vec<u32>)> = Vec::new();
        for &w in winners {
            let (b, l) = (w / BLOCK, (w % BLOCK) as u32);
            match groups.last_mut() {
                Some((gb, ls)) if *gb == b => ls.push(l),
                _ => groups.push((b, vec![l])),
            }
        }
        let progress = &self.progress;
        progress
            .hebbian_total
            .fetch_add(groups.len() as u64, Relaxed);
        let found: Vec<(Vec<Update>, u64)> = groups
            .par_iter()
            .map(|(b, locals)| {
                let mut bits = vec![0u64; BLOCK as usize / 64];
                for &l in locals {
                    bits[l as usize >> 6] |= 1 << (l & 63);
                }
                // Walking a shorter block yields exactly the prefix of its targets.
                let upto = locals.last().unwrap() + 1;
                let mut ups = Vec::new();
                let mut events = 0u64;
                for &(fi, ..) in &plastic {
                    let f = &fibers[fi];
                    for (r, &rk) in f.row_keys.iter().enumerate() {
                        let row = f.rows.get(r);
                        events += f.table.walk(block_key(rk, *b), upto, |l| {
                            if bits[l as usize >> 6] >> (l & 63) & 1 == 1 {
                                ups.push((fi, *b, learned::pack(row, l)));
                            }
                        }) as u64;
                    }
                }
                progress.hebbian_done.fetch_add(1, Relaxed);
                (ups, events)
            })
            .collect();
        let events = found.iter().map(|f| f.1).sum();
        let ups: Vec<(usize, u64, u64)> = found.into_iter().flat_map(|f| f.0).collect();
        drop(fibers);
        let potentiated = self.apply(v, plan, &plastic, &ups);
        Ok(HebbianReport {
            potentiated,
            regenerated_events: events,
        })
    }

    /// Hebbian update for the winners of `sel`, which must come from
    /// [`Self::select`] with the same `plan` and `firing` in this step. Uses
    /// the synapses the selection recorded (no regeneration) when it could
    /// record them, else falls back to [`Self::hebbian`]. Same result either way.
    pub fn hebbian_selected(
        &mut self,
        v: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
        sel: &Selection,
    ) -> Result<HebbianReport> {
        let Some(syn) = &sel.synapses else {
            return self.hebbian(v, plan, firing, &sel.winners);
        };
        Self::validate(v.model, plan, firing)?;
        let plastic = Self::plastic(v, plan);
        if plastic.is_empty() {
            return Ok(HebbianReport::default());
        }
        // Slot ranges of the fibers, in plan order.
        let t = plan.target;
        let mut starts = Vec::new();
        let mut rows = Vec::new();
        let mut slot = 0u64;
        for src in plan
            .stims
            .iter()
            .map(|&s| Source::Stim(s))
            .chain(plan.areas.iter().map(|&a| Source::Area(a)))
        {
            let r = match src {
                Source::Stim(s) => RowsOf::All(v.model.stimuli[s].size),
                Source::Area(a) => RowsOf::List(firing[a]),
            };
            starts.push(slot);
            slot += r.len() as u64;
            rows.push(r);
        }
        if slot != sel.slots || sel.target != t {
            return Err(invalid(
                "hebbian_selected",
                format!("target {}", sel.target),
                "the selection was made with another plan or other firing sets",
            ));
        }
        // One update per synapse, written in place in parallel (an indexed
        // collect; a filtered one grows its list and cost ~15 ms a step on
        // ~4·10⁵ synapses); synapses of fibers that do not learn are marked
        // and dropped after.
        // The list is kept from step to step (collect_into_vec reuses it).
        const NOT_PLASTIC: usize = usize::MAX;
        let mut ups = std::mem::take(&mut self.scratch.ups);
        syn.par_iter()
            .map(|&(j, s)| {
                let fi = starts.partition_point(|&st| st <= s as u64) - 1;
                if plastic.iter().any(|p| p.0 == fi) {
                    let row = rows[fi].get((s as u64 - starts[fi]) as usize);
                    (fi, j / BLOCK, learned::pack(row, (j % BLOCK) as u32))
                } else {
                    (NOT_PLASTIC, 0, 0)
                }
            })
            .collect_into_vec(&mut ups);
        if ups.iter().any(|u| u.0 == NOT_PLASTIC) {
            ups.retain(|u| u.0 != NOT_PLASTIC);
        }
        let potentiated = self.apply(v, plan, &plastic, &ups);
        self.scratch.ups = ups;
        Ok(HebbianReport {
            potentiated,
            regenerated_events: 0,
        })
    }

    /// Potentiated synapses of fiber `src → tgt`, if any.
    pub fn learned(&self, src: Source, tgt: usize) -> Option<&FiberLearned> {
        self.learned.get(&(src, tgt))
    }

    /// Every fiber with potentiated synapses, sorted by (source, target).
    pub fn fibers(&self) -> Vec<(Source, usize, &FiberLearned)> {
        let mut v: Vec<_> = self.learned.iter().map(|(&(s, t), l)| (s, t, l)).collect();
        v.sort_unstable_by_key(|e| (e.0, e.1));
        v
    }

    /// Stored (potentiated) synapses, all fibers.
    pub fn learned_synapses(&self) -> usize {
        self.learned.values().map(FiberLearned::len).sum()
    }

    /// Bytes held by stored synapses and cached tables.
    pub fn bytes(&self) -> usize {
        let tables: usize = self
            .tables
            .lock()
            .map(|m| m.values().map(|t| t.bytes()).sum())
            .unwrap_or(0);
        self.learned
            .values()
            .map(FiberLearned::bytes)
            .sum::<usize>()
            + tables
    }

    /// Estimated peak memory of one step into `plan.target` on `threads`
    /// worker threads — independent of n. Compare with what the machine
    /// has ([`check_memory`]) before running.
    pub fn memory_estimate(
        &self,
        model: &Model,
        plan: &TargetPlan,
        firing: &[&[u64]],
        threads: usize,
    ) -> MemoryEstimate {
        let t = plan.target;
        let (n, k) = (model.areas[t].n, model.areas[t].k as u64);
        let width = BLOCK.min(n) as f64;
        let mut slots = 0u64;
        let (mut ev, mut syn_per_target) = (0f64, 0f64);
        let srcs = plan
            .stims
            .iter()
            .map(|&s| Source::Stim(s))
            .chain(plan.areas.iter().map(|&a| Source::Area(a)));
        for src in srcs {
            let rows = match src {
                Source::Stim(s) => model.stimuli[s].size,
                Source::Area(a) => firing
                    .get(a)
                    .map_or(model.areas[a].k as u64, |w| w.len() as u64),
            };
            let p = model.p(src, t);
            slots += rows;
            ev += rows as f64 * p * width;
            syn_per_target += rows as f64 * p;
        }
        let mean_p = ev / (slots as f64 * width).max(1.0);
        let per_sub = ev * (aggregate::sub_width(mean_p) as f64 / BLOCK as f64).min(1.0);
        let ev_cap = if per_sub * 1.25 <= self.record_limit as f64 {
            (per_sub * 1.25 + 6.0 * per_sub.sqrt() + 64.0) as u64 + BLOCK
        } else {
            0
        };
        // Winners receive more than average input: budget 3× the mean in-degree.
        let src_per_cand = (3.0 * syn_per_target + 16.0) as u64;
        let topk = 2 * k * (32 + 4 * src_per_cand) + BLOCK * 24;
        let per_thread = Scratch::bytes_for(ev_cap, slots, k) + 2 * topk;
        let threads = threads.max(1) as u64;
        let shared = slots * 8 + 2 * 128 * 1024 + k * (8 + 4 + 12 * src_per_cand) + topk;
        let learned = self.bytes() as u64 + 3 * 12 * k * src_per_cand;
        let total = per_thread * threads + shared + learned;
        MemoryEstimate {
            per_thread,
            threads,
            shared,
            learned,
            total,
        }
    }
}

/// Refuses a step whose estimate exceeds the available memory
/// ([`crate::memory::available_bytes`]: `MemAvailable`, or
/// `KCAP_MEMORY_LIMIT` when smaller), with both numbers in the message.
pub fn check_memory(area: &str, est: &MemoryEstimate) -> Result<()> {
    if let Some(avail) = crate::memory::available_bytes() {
        if est.total > avail {
            return Err(KcapError::OutOfMemory {
                what: format!(
                    "a procedural step into area {area:?} (estimate: {} per worker thread × {} threads, {} shared, {} learned synapses)",
                    crate::error::human(est.per_thread),
                    est.threads,
                    crate::error::human(est.shared),
                    crate::error::human(est.learned)
                ),
                need: est.total,
                avail,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AreaSpec, EngineKind, StimSpec};

    /// `apply` (bucketed by counting, or sorted when there are few updates
    /// over many blocks) equals the definition: per fiber and block, the
    /// distinct keys potentiated once, over rounds of random updates with
    /// repeats, for both bucketing paths.
    #[test]
    fn apply_equals_potentiating_each_group() {
        let mut r = crate::rng::Stream::new(11);
        // (n, updates per round): the first takes the counting sort, the
        // second (2·15 259 buckets for 300 updates) the comparison sort.
        for (n, len) in [(3 * BLOCK + 5, 3000u64), (1_000_000_000, 300)] {
            let mut m = Model::new(0.01).unwrap();
            m.add_stimulus(StimSpec {
                name: "s".into(),
                size: 50,
            })
            .unwrap();
            m.add_area(AreaSpec {
                name: "A".into(),
                n,
                k: 10,
                beta: 0.25,
                engine: EngineKind::Procedural,
            })
            .unwrap();
            m.w_max = Some(2.0);
            let v = View { model: &m, seed: 3 };
            let plan = TargetPlan {
                target: 0,
                stims: vec![0],
                areas: vec![0],
            };
            let plastic = ProceduralState::plastic(&v, &plan);
            assert_eq!(plastic.len(), 2);
            let (mut got, mut want) = (ProceduralState::new(), ProceduralState::new());
            // Three threads: the counting sort splits the list into pieces.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            for _round in 0..5 {
                let ups: Vec<Update> = (0..len)
                    .map(|_| {
                        let fi = r.below(2) as usize;
                        let t = r.below(n);
                        let row = r.below(40);
                        (fi, t / BLOCK, learned::pack(row, (t % BLOCK) as u32))
                    })
                    .chain((0..len / 10).map(|_| (1, 0, learned::pack(1, 2))))
                    .collect();
                let mut def = ups.clone();
                def.sort_unstable();
                def.dedup();
                for &(fi, src, mul, cap) in &plastic {
                    let l = want.learned.entry((src, 0)).or_default();
                    let mine: Vec<_> = def.iter().filter(|u| u.0 == fi).collect();
                    for g in mine.chunk_by(|a, b| a.1 == b.1) {
                        let keys: Vec<u64> = g.iter().map(|u| u.2).collect();
                        l.potentiate(g[0].1, &keys, mul, cap);
                    }
                }
                assert_eq!(
                    pool.install(|| got.apply(&v, &plan, &plastic, &ups)),
                    def.len() as u64
                );
                for &(_, src, _, _) in &plastic {
                    assert_eq!(
                        got.learned.get(&(src, 0)),
                        want.learned.get(&(src, 0)),
                        "n {n}"
                    );
                }
            }
        }
    }
}
