//! The lazy (statistical) engine, SPEC §3.1.
//!
//! Only neurons that have fired exist, numbered 0, 1, … in order of first
//! firing. Per ordered pair of areas a [`Fiber`] stores, for each existing
//! source neuron, its out-synapses to existing target neurons (sorted by
//! target id, because ids only grow). A stimulus → area fiber stores, per
//! target neuron, the *number* of synapses from the stimulus and their common
//! weight: stimulus neurons always fire together, so their synapses onto one
//! neuron are potentiated together and one (count, weight) pair is exact.
//!
//! A step runs in four phases so that areas growing in the same step get
//! their mutual synapses (which the reference implementation omits):
//! 1. per target: known inputs, candidate inputs from the tail above α, k-cap;
//! 2. per new neuron (in parallel, each from its own random stream): split its
//!    input over the firing sources, draw every other incoming synapse
//!    Bernoulli(p) over all neurons of every area *including the new ones*,
//!    and outgoing synapses to every *old* neuron of every area — so each
//!    new/new pair is drawn exactly once, as the incoming synapse of its target;
//! 3. install the new synapses (transposing incoming lists into rows);
//! 4. Hebbian update of synapses from firing sources into the new winners.

use super::explicit::PackedFiber;
use super::procedural::SkipTable;
use super::TargetPlan;
use crate::backend::{Backend, Syn};
use crate::error::{KcapError, Result};
use crate::model::{EngineKind, Model, Source};
use crate::rng::{purpose, Stream};
use crate::stats::{binomial, sample_distinct, sample_tail, Pmf, TailSampler};
use rayon::prelude::*;

/// Out-synapses of every existing source neuron into one target area:
/// growable f32 rows, or — between two explicit areas, where neither side
/// ever grows — a [`PackedFiber`] in its storage format.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Fiber {
    pub rows: Vec<Vec<Syn>>,
    pub packed: Option<PackedFiber>,
}

impl Fiber {
    pub fn synapses(&self) -> usize {
        match &self.packed {
            Some(p) => p.synapses() as usize,
            None => self.rows.iter().map(Vec::len).sum(),
        }
    }

    /// Bytes held by this fiber's storage.
    pub fn bytes(&self) -> usize {
        match &self.packed {
            Some(p) => p.bytes(),
            None => {
                self.rows.capacity() * 24
                    + self.rows.iter().map(|r| r.capacity() * 8).sum::<usize>()
            }
        }
    }
}

/// Synapses from one stimulus into each existing neuron of one area.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StimFiber {
    /// Number of synapses from the stimulus onto neuron j.
    pub count: Vec<u32>,
    /// Their common weight.
    pub weight: Vec<f32>,
}

/// Connectivity of a brain whose areas are all lazy.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LazyState {
    /// `fibers[src][tgt]`.
    pub fibers: Vec<Vec<Fiber>>,
    /// `stim[s][tgt]`.
    pub stim: Vec<Vec<StimFiber>>,
}

/// Outcome of phase 1 for one target.
pub struct Selection {
    pub target: usize,
    /// New winner set, sorted ids (new neurons numbered from the old support).
    pub winners: Vec<u32>,
    /// Input of each new neuron, in id order.
    pub new_inputs: Vec<u64>,
}

/// The synapses of a run of consecutive new neurons of one target, in flat
/// buffers (one allocation per buffer, not per neuron): for neuron `r` of the
/// batch, area `a`'s incoming ids are `inc[a][inc_off[a][r]..inc_off[a][r+1]]`.
struct Batch {
    count: usize,
    /// `count × n_stims` synapse counts from each stimulus.
    stim_counts: Vec<u32>,
    inc_off: Vec<Vec<u32>>,
    /// Incoming source ids per area (sorted per neuron).
    inc: Vec<Vec<u32>>,
    out_off: Vec<Vec<u32>>,
    /// Outgoing synapses per area (targets among old neurons, sorted).
    out: Vec<Vec<Syn>>,
}

impl Batch {
    fn new(n_areas: usize) -> Batch {
        Batch {
            count: 0,
            stim_counts: Vec::new(),
            inc_off: vec![vec![0]; n_areas],
            inc: vec![Vec::new(); n_areas],
            out_off: vec![vec![0]; n_areas],
            out: vec![Vec::new(); n_areas],
        }
    }

    fn incoming(&self, a: usize, r: usize) -> &[u32] {
        &self.inc[a][self.inc_off[a][r] as usize..self.inc_off[a][r + 1] as usize]
    }

    fn outgoing(&self, u: usize, r: usize) -> &[Syn] {
        &self.out[u][self.out_off[u][r] as usize..self.out_off[u][r + 1] as usize]
    }
}

/// Newborns per batch: the unit of parallel work in phase 2.
const BATCH: usize = 64;

/// A target that grows in this step, with the plan that fed it.
pub struct Growth<'a> {
    pub target: usize,
    pub plan: &'a TargetPlan,
    /// Input of each new neuron (0 for neurons created by `activate`).
    pub new_inputs: &'a [u64],
    /// Distinguishes streams of `project` growth and `activate` growth.
    pub purpose: u64,
}

/// Snapshot of the quantities of the brain that the engine reads.
pub struct View<'a> {
    pub model: &'a Model,
    pub seed: u64,
    pub step: u64,
    pub tail: TailSampler,
    /// Existing (materialised) neurons per area: the support of a lazy
    /// area, n for an explicit one.
    pub support: &'a [u64],
    /// Current winners per area.
    pub winners: &'a [Vec<u32>],
}

impl LazyState {
    /// Registers a new area (no neurons yet).
    pub fn add_area(&mut self) {
        let n_areas = self.fibers.len() + 1;
        for row in &mut self.fibers {
            row.push(Fiber::default());
        }
        self.fibers.push(vec![Fiber::default(); n_areas]);
        for s in &mut self.stim {
            s.push(StimFiber::default());
        }
    }

    /// Undoes the last `add_area`.
    pub fn remove_last_area(&mut self) {
        self.fibers.pop();
        for row in &mut self.fibers {
            row.pop();
        }
        for s in &mut self.stim {
            s.pop();
        }
    }

    /// Registers a new stimulus; neurons that already exist get
    /// Binomial(size, p) synapses from it.
    pub fn add_stimulus(&mut self, model: &Model, seed: u64, stim: usize, support: &[u64]) {
        let size = model.stimuli[stim].size;
        let fibers = (0..support.len())
            .map(|t| {
                let p = model.p(Source::Stim(stim), t);
                let mut rng =
                    Stream::keyed(seed, &[purpose::WIRING, u64::MAX, stim as u64, t as u64]);
                let count: Vec<u32> = (0..support[t])
                    .map(|_| binomial(size, p, &mut rng) as u32)
                    .collect();
                StimFiber {
                    weight: vec![1.0; count.len()],
                    count,
                }
            })
            .collect();
        self.stim.push(fibers);
    }

    /// Checks connectivity read from outside (a checkpoint) against the
    /// model and the existing neurons `exist` of every area: one fiber per
    /// ordered pair of areas, packed exactly between two explicit areas
    /// ([`PackedFiber::validate`]; unused growable rows there are empty),
    /// otherwise one row per existing source
    /// neuron with targets that exist; one stimulus entry per existing
    /// neuron. `Err` says which fiber is wrong.
    pub(crate) fn validate(&self, model: &Model, exist: &[u64]) -> std::result::Result<(), String> {
        let n = model.areas.len();
        if self.fibers.len() != n || self.fibers.iter().any(|r| r.len() != n) {
            return Err(format!("expected {n} x {n} area fibers"));
        }
        let name = |a: usize| &model.areas[a].name;
        for (a, row) in self.fibers.iter().enumerate() {
            for (b, f) in row.iter().enumerate() {
                let explicit = |i: usize| model.areas[i].engine == EngineKind::Explicit;
                let both = explicit(a) && explicit(b);
                let bad = |why: String| format!("fiber {} -> {}: {why}", name(a), name(b));
                match (&f.packed, both) {
                    (Some(p), true) if f.rows.iter().all(Vec::is_empty) => {
                        p.validate(exist[a], exist[b]).map_err(bad)?
                    }
                    (None, false) => {
                        if f.rows.len() as u64 != exist[a] {
                            return Err(bad(format!(
                                "{} rows for {} neurons",
                                f.rows.len(),
                                exist[a]
                            )));
                        }
                        if f.rows.iter().flatten().any(|s| s.to as u64 >= exist[b]) {
                            return Err(bad("a synapse to a neuron that does not exist".into()));
                        }
                    }
                    _ => return Err(bad("stored in the wrong form for its engines".into())),
                }
            }
        }
        if self.stim.len() != model.stimuli.len() || self.stim.iter().any(|r| r.len() != n) {
            return Err(format!(
                "expected {} x {n} stimulus fibers",
                model.stimuli.len()
            ));
        }
        for (s, row) in self.stim.iter().enumerate() {
            for (t, f) in row.iter().enumerate() {
                if f.count.len() as u64 != exist[t] || f.weight.len() != f.count.len() {
                    return Err(format!(
                        "fiber {} -> {}: {} entries for {} neurons",
                        model.stimuli[s].name,
                        name(t),
                        f.count.len(),
                        exist[t]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Total stored synapses (area fibers) and stimulus entries.
    pub fn synapse_count(&self) -> (usize, usize) {
        let a = self.fibers.iter().flatten().map(Fiber::synapses).sum();
        let s = self.stim.iter().flatten().map(|f| f.count.len()).sum();
        (a, s)
    }

    /// Bytes held by stored connectivity (capacity, not length).
    pub fn bytes(&self) -> usize {
        let rows: usize = self.fibers.iter().flatten().map(Fiber::bytes).sum();
        let stim: usize = self
            .stim
            .iter()
            .flatten()
            .map(|f| f.count.capacity() * 8)
            .sum();
        rows + stim
    }

    /// Phase 1: inputs of known neurons, candidates, k-cap.
    pub fn select(&self, v: &View, plan: &TargetPlan, backend: &dyn Backend) -> Result<Selection> {
        let t = plan.target;
        let area = &v.model.areas[t];
        let w = v.support[t];
        let k = area.k;
        let explicit = area.engine == EngineKind::Explicit;
        if !explicit && area.n - w <= k as u64 {
            return Err(KcapError::AreaTooSmall {
                area: area.name.clone(),
                n: area.n,
                w,
                k: k as u64,
            });
        }
        let n_cand = if explicit { 0 } else { k };
        let mut inputs = vec![0f32; w as usize + n_cand];
        let known = &mut inputs[..w as usize];
        let mut parts: Vec<(u64, f64)> = Vec::new();
        for &s in &plan.stims {
            let f = &self.stim[s][t];
            for ((x, &c), &wt) in known.iter_mut().zip(&f.count).zip(&f.weight) {
                *x += c as f32 * wt;
            }
            parts.push((v.model.stimuli[s].size, v.model.p(Source::Stim(s), t)));
        }
        if explicit {
            // Fibers held by the backend: the rest of the step runs there.
            let sources: Vec<(&PackedFiber, &[u32])> = plan
                .areas
                .iter()
                .filter_map(|&a| {
                    let pf = self.fibers[a][t].packed.as_ref()?;
                    Some((pf, v.winners[a].as_slice()))
                })
                .collect();
            if sources.len() == plan.areas.len() {
                if let Some(winners) = backend.explicit_select(&sources, known, k) {
                    return Ok(Selection {
                        target: t,
                        winners: winners?,
                        new_inputs: Vec::new(),
                    });
                }
            }
        }
        for &a in &plan.areas {
            match &self.fibers[a][t].packed {
                Some(pf) => pf.accumulate(&v.winners[a], known)?,
                None => backend.accumulate_rows(&self.fibers[a][t].rows, &v.winners[a], known),
            }
            parts.push((v.winners[a].len() as u64, v.model.p(Source::Area(a), t)));
        }
        if explicit {
            let winners = backend.top_k(&inputs, k);
            return Ok(Selection {
                target: t,
                winners,
                new_inputs: Vec::new(),
            });
        }
        let t_total: u64 = parts.iter().map(|p| p.0).sum();
        let dist = Pmf::sum_of_binomials(&parts);
        let alpha = dist.upper_quantile(k as f64 / (area.n - w) as f64);
        let mut rng = Stream::keyed(v.seed, &[purpose::CANDIDATES, v.step, t as u64]);
        let cands = sample_tail(&dist, alpha, t_total, k, v.tail, &mut rng);
        inputs[w as usize..].copy_from_slice(&cands);
        let picked = backend.top_k(&inputs, k);
        let mut winners = Vec::with_capacity(k);
        let mut new_inputs = Vec::new();
        for &i in &picked {
            if (i as u64) < w {
                winners.push(i);
            } else {
                winners.push((w + new_inputs.len() as u64) as u32);
                new_inputs.push(cands[i as usize - w as usize] as u64);
            }
        }
        Ok(Selection {
            target: t,
            winners,
            new_inputs,
        })
    }

    /// Phases 2 and 3: creates the new neurons of every growing target with
    /// all their synapses. `v.support` is the support *before* growth.
    pub fn grow(&mut self, v: &View, growth: &[Growth]) {
        let n_areas = v.support.len();
        let w_old = v.support;
        let mut w_new = w_old.to_vec();
        for g in growth {
            w_new[g.target] += g.new_inputs.len() as u64;
        }
        // Phase 2: draw every newborn's synapses, in parallel batches.
        let born: Vec<Vec<Batch>> = growth
            .par_iter()
            .map(|g| {
                let firing_bits: Vec<Option<Vec<u64>>> = (0..n_areas)
                    .map(|a| {
                        g.plan.areas.contains(&a).then(|| {
                            let mut bits = vec![0u64; (w_new[a] as usize).div_ceil(64)];
                            for &i in &v.winners[a] {
                                bits[i as usize >> 6] |= 1 << (i & 63);
                            }
                            bits
                        })
                    })
                    .collect();
                let ctx = NewbornCtx {
                    v,
                    g,
                    w_old,
                    w_new: &w_new,
                    firing_bits: &firing_bits,
                };
                let count = g.new_inputs.len();
                let batches = count.div_ceil(BATCH);
                let run = |b: usize| {
                    let mut batch = Batch::new(n_areas);
                    let mut scratch = Scratch::default();
                    for r in b * BATCH..((b + 1) * BATCH).min(count) {
                        ctx.draw(r, &mut batch, &mut scratch);
                    }
                    batch
                };
                if batches > 1 {
                    (0..batches).into_par_iter().map(run).collect()
                } else {
                    (0..batches).map(run).collect()
                }
            })
            .collect();

        // Phase 3a: rows of new source neurons (their outgoing synapses to old neurons).
        for (g, batches) in growth.iter().zip(&born) {
            let s = g.target;
            for u in 0..n_areas {
                let rows = &mut self.fibers[s][u].rows;
                rows.reserve_exact(g.new_inputs.len());
                for b in batches {
                    rows.extend((0..b.count).map(|r| b.outgoing(u, r).to_vec()));
                }
            }
        }
        // Phase 3b: incoming synapses of new target neurons, appended to rows.
        for (g, batches) in growth.iter().zip(&born) {
            let t = g.target;
            let base = w_old[t] as u32;
            for s in 0..n_areas {
                let lists: Vec<&[u32]> = batches
                    .iter()
                    .flat_map(|b| (0..b.count).map(move |r| b.incoming(s, r)))
                    .collect();
                append_transposed(&mut self.fibers[s][t].rows, &lists, base);
            }
            let n_stims = self.stim.len();
            for (si, fibers) in self.stim.iter_mut().enumerate() {
                let f = &mut fibers[t];
                for b in batches {
                    f.count.extend(b.stim_counts.chunks(n_stims).map(|c| c[si]));
                }
                f.weight.resize(f.count.len(), 1.0);
            }
        }
    }

    /// Phase 4: `w ← min(w·(1+β), w_max)` for every synapse from a firing
    /// source of `plan` into a neuron of `winners`.
    pub fn hebbian(
        &mut self,
        model: &Model,
        plan: &TargetPlan,
        firing: &[Vec<u32>],
        winners: &[u32],
        step: u64,
    ) -> Result<()> {
        let t = plan.target;
        let cap = model.w_max.map_or(f32::INFINITY, |w| w as f32);
        for &s in &plan.stims {
            let beta = model.beta(Source::Stim(s), t);
            if beta == 0.0 {
                continue;
            }
            let f = &mut self.stim[s][t];
            let m = (1.0 + beta) as f32;
            for &j in winners {
                let w = &mut f.weight[j as usize];
                *w = (*w * m).min(cap);
            }
        }
        let packed_len = self
            .fibers
            .iter()
            .filter_map(|row| row[t].packed.as_ref())
            .map(|p| p.n_tgt as usize)
            .max();
        let len = winners
            .last()
            .map_or(0, |&j| j as usize + 1)
            .max(packed_len.unwrap_or(0));
        let mut is_winner = vec![0u64; len.div_ceil(64).max(1)];
        for &j in winners {
            is_winner[j as usize >> 6] |= 1 << (j & 63);
        }
        for &a in &plan.areas {
            let beta = model.beta(Source::Area(a), t);
            if beta == 0.0 {
                continue;
            }
            let m = (1.0 + beta) as f32;
            if let Some(pf) = &mut self.fibers[a][t].packed {
                pf.hebbian(&firing[a], &is_winner, beta, model.w_max, step)?;
                continue;
            }
            let rows = &mut self.fibers[a][t].rows;
            let bits = &is_winner;
            let update = |row: &mut Vec<Syn>| {
                for s in row.iter_mut() {
                    let j = s.to as usize;
                    if j >> 6 < bits.len() && bits[j >> 6] >> (j & 63) & 1 == 1 {
                        s.w = (s.w * m).min(cap);
                    }
                }
            };
            let work: usize = firing[a].iter().map(|&i| rows[i as usize].len()).sum();
            if work < 1 << 17 {
                for &i in &firing[a] {
                    update(&mut rows[i as usize]);
                }
            } else {
                let mut fire = vec![false; rows.len()];
                for &i in &firing[a] {
                    fire[i as usize] = true;
                }
                rows.par_iter_mut()
                    .with_min_len(256)
                    .zip(fire.par_iter())
                    .for_each(|(row, &f)| {
                        if f {
                            update(row)
                        }
                    });
            }
        }
        Ok(())
    }
}

struct NewbornCtx<'a> {
    v: &'a View<'a>,
    g: &'a Growth<'a>,
    w_old: &'a [u64],
    w_new: &'a [u64],
    firing_bits: &'a [Option<Vec<u64>>],
}

impl NewbornCtx<'_> {
    /// Draws all synapses of the r-th new neuron of the growing target and
    /// appends them to `batch`.
    fn draw(&self, r: usize, batch: &mut Batch, sc: &mut Scratch) {
        let v = self.v;
        let g = self.g;
        let t = g.target;
        let model = v.model;
        let mut rng = Stream::keyed(v.seed, &[g.purpose, v.step, t as u64, r as u64]);
        let n_areas = self.w_old.len();
        let n_stims = model.stimuli.len();
        // Split the input x over the firing inputs: x distinct of T positions,
        // stimuli first, then areas, in plan order.
        let n_plan = g.plan.stims.len() + g.plan.areas.len();
        let size = |i: usize| -> u64 {
            if i < g.plan.stims.len() {
                model.stimuli[g.plan.stims[i]].size
            } else {
                v.winners[g.plan.areas[i - g.plan.stims.len()]].len() as u64
            }
        };
        let t_total: u64 = (0..n_plan).map(size).sum();
        let x = g.new_inputs[r].min(t_total);
        let positions = sample_distinct(t_total, x, &mut rng, &mut sc.bits);
        let counts_at = batch.stim_counts.len();
        batch.stim_counts.resize(counts_at + n_stims, 0);
        let counts = &mut batch.stim_counts[counts_at..];
        for c in sc.chosen.iter_mut() {
            c.clear();
        }
        sc.chosen.resize_with(n_areas, Vec::new);
        let (mut src, mut offset, mut cur) = (0usize, 0u64, if n_plan > 0 { size(0) } else { 0 });
        for pos in positions {
            while pos >= offset + cur {
                offset += cur;
                src += 1;
                cur = size(src);
            }
            let local = pos - offset;
            if src < g.plan.stims.len() {
                counts[g.plan.stims[src]] += 1;
            } else {
                let a = g.plan.areas[src - g.plan.stims.len()];
                sc.chosen[a].push(v.winners[a][local as usize]);
            }
        }
        for (s, count) in counts.iter_mut().enumerate() {
            if !g.plan.stims.contains(&s) {
                *count =
                    binomial(model.stimuli[s].size, model.p(Source::Stim(s), t), &mut rng) as u32;
            }
        }
        for a in 0..n_areas {
            let p = model.p(Source::Area(a), t);
            let inc = &mut batch.inc[a];
            let chosen = &sc.chosen[a];
            match &self.firing_bits[a] {
                Some(bits) => {
                    // Merge the chosen firing inputs (sorted) with Bernoulli
                    // draws over the non-firing neurons (sorted).
                    let mut ci = 0;
                    bernoulli_positions(self.w_new[a], p, &mut rng, |i| {
                        if bits[i as usize >> 6] >> (i & 63) & 1 == 0 {
                            while ci < chosen.len() && (chosen[ci] as u64) < i {
                                inc.push(chosen[ci]);
                                ci += 1;
                            }
                            inc.push(i as u32);
                        }
                    });
                    inc.extend_from_slice(&chosen[ci..]);
                }
                None => bernoulli_positions(self.w_new[a], p, &mut rng, |i| inc.push(i as u32)),
            }
            batch.inc_off[a].push(inc.len() as u32);
        }
        for u in 0..n_areas {
            let p = model.p(Source::Area(t), u);
            let out = &mut batch.out[u];
            bernoulli_positions(self.w_old[u], p, &mut rng, |j| {
                out.push(Syn {
                    to: j as u32,
                    w: 1.0,
                })
            });
            batch.out_off[u].push(out.len() as u32);
        }
        batch.count += 1;
    }
}

/// Per-thread reusable buffers of phase 2.
#[derive(Default)]
struct Scratch {
    bits: Vec<u64>,
    chosen: Vec<Vec<u32>>,
}

/// [`crate::stats::bernoulli_positions`], bit for bit — the same positions
/// from the same draws, leaving `rng` at the same counter — with most
/// logarithms replaced by a [`SkipTable`] lookup where this thread holds a
/// table for `p` (see [`skip_table`]).
fn bernoulli_positions(len: u64, p: f64, rng: &mut Stream, f: impl FnMut(u64)) {
    match skip_table(p, len) {
        Some(table) => bernoulli_positions_in(&table, len, rng, f),
        None => crate::stats::bernoulli_positions(len, p, rng, f),
    }
}

/// [`crate::stats::bernoulli_positions`] through `table` (built for
/// [`crate::stats::geometric_scale`]`(p)`, 0 < p < 1).
#[inline]
fn bernoulli_positions_in(table: &SkipTable, len: u64, rng: &mut Stream, mut f: impl FnMut(u64)) {
    let mut i = 0u64;
    while i < len {
        let rem = len - i;
        let s = table.skip(rng.next_u64_pub(), rem);
        if s >= rem {
            return;
        }
        i += s;
        f(i);
        i += 1;
    }
}

/// Draws at one p after which a thread builds its table: about what the
/// table costs to build (two logarithms per entry, 2¹⁵–2¹⁶ entries; a draw
/// through the table saves about one), so short or one-off runs never pay
/// for one and the rest pay at most about twice the best choice.
const TABLE_AFTER_DRAWS: f64 = (1 << 17) as f64;
/// Tables (64–128 KiB each) a thread keeps; the oldest p goes first.
const MAX_TABLES: usize = 16;

thread_local! {
    /// Per p (bits): the draws made so far without a table, and the table.
    static SKIP_TABLES: std::cell::RefCell<Vec<(u64, f64, Option<std::rc::Rc<SkipTable>>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's skip table for `p` (0 < p < 1), built once the calls at
/// this p would have taken [`TABLE_AFTER_DRAWS`] logarithms; `None` before.
fn skip_table(p: f64, len: u64) -> Option<std::rc::Rc<SkipTable>> {
    if !(p > 0.0 && p < 1.0) || len == 0 {
        return None;
    }
    SKIP_TABLES.with(|tables| {
        let mut tables = tables.borrow_mut();
        let at = match tables.iter().position(|e| e.0 == p.to_bits()) {
            Some(at) => at,
            None => {
                if tables.len() == MAX_TABLES {
                    tables.remove(0);
                }
                tables.push((p.to_bits(), 0.0, None));
                tables.len() - 1
            }
        };
        let (_, draws, table) = &mut tables[at];
        if table.is_none() {
            *draws += len as f64 * p + 1.0;
            if *draws >= TABLE_AFTER_DRAWS {
                let c = crate::stats::geometric_scale(p);
                *table = Some(std::rc::Rc::new(SkipTable::with_scale(
                    c,
                    SkipTable::bits_for(p),
                )));
            }
        }
        table.clone()
    })
}

/// Appends `Syn { to: base + j, w: 1 }` to `rows[i]` for each `i` in
/// `lists[j]`, in increasing j (so rows stay sorted by target).
fn append_transposed(rows: &mut [Vec<Syn>], lists: &[&[u32]], base: u32) {
    const CHUNK: usize = 2048;
    let total: usize = lists.iter().map(|l| l.len()).sum();
    if total == 0 {
        return;
    }
    let work = |c: usize, chunk: &mut [Vec<Syn>]| {
        let r0 = (c * CHUNK) as u32;
        let r1 = r0 + chunk.len() as u32;
        let mut counts = vec![0u32; chunk.len()];
        let starts: Vec<usize> = lists
            .iter()
            .map(|l| l.partition_point(|&i| i < r0))
            .collect();
        for (l, &st) in lists.iter().zip(&starts) {
            for &i in l[st..].iter().take_while(|&&i| i < r1) {
                counts[(i - r0) as usize] += 1;
            }
        }
        for (row, &c) in chunk.iter_mut().zip(&counts) {
            // Short rows grow geometrically (few reallocations); long rows
            // exactly (no slack in the memory that dominates big runs).
            if row.len() + (c as usize) < 256 {
                row.reserve(c as usize);
            } else {
                row.reserve_exact(c as usize);
            }
        }
        for (j, (l, &st)) in lists.iter().zip(&starts).enumerate() {
            for &i in l[st..].iter().take_while(|&&i| i < r1) {
                chunk[(i - r0) as usize].push(Syn {
                    to: base + j as u32,
                    w: 1.0,
                });
            }
        }
    };
    if total < 1 << 13 {
        rows.chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, ch)| work(c, ch));
    } else {
        rows.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, ch)| work(c, ch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table walk gives the reference's positions and leaves the
    /// stream where the reference leaves it, for p on both table sizes,
    /// near 1, tiny, and lengths from 1 up.
    #[test]
    fn table_positions_match_the_reference() {
        for &p in &[0.5, 0.3, 0.05, 0.01, 0.004, 0.0039, 1e-3, 1e-5, 0.99] {
            let table =
                SkipTable::with_scale(crate::stats::geometric_scale(p), SkipTable::bits_for(p));
            for seed in 0..40u64 {
                for len in [1u64, 2, 7, 100, 5_000, 300_000] {
                    let mut a = Stream::keyed(seed, &[len]);
                    let mut b = a.clone();
                    let mut want = Vec::new();
                    crate::stats::bernoulli_positions(len, p, &mut a, |i| want.push(i));
                    let mut got = Vec::new();
                    bernoulli_positions_in(&table, len, &mut b, |i| got.push(i));
                    assert_eq!(got, want, "p {p} seed {seed} len {len}");
                    assert_eq!(
                        b.next_u64_pub(),
                        a.next_u64_pub(),
                        "p {p} seed {seed} len {len}"
                    );
                }
            }
        }
    }

    /// The cached path: no table before enough draws, the same positions
    /// before and after it is built, and edge values of p and len.
    #[test]
    fn cached_tables_keep_the_positions() {
        let p = 0.0123;
        assert!(skip_table(p, 10).is_none());
        let mut built = false;
        for call in 0..800u64 {
            let mut a = Stream::keyed(call, &[1]);
            let mut b = a.clone();
            let mut want = Vec::new();
            crate::stats::bernoulli_positions(20_000, p, &mut a, |i| want.push(i));
            let mut got = Vec::new();
            bernoulli_positions(20_000, p, &mut b, |i| got.push(i));
            assert_eq!(got, want, "call {call}");
            assert_eq!(b.next_u64_pub(), a.next_u64_pub());
            built |= skip_table(p, 0).is_some() || skip_table(p, 1).is_some();
        }
        assert!(built, "no table after 800 calls of ~250 draws");
        for (len, p) in [(0, 0.5), (10, 0.0), (10, 1.0), (1, 0.999)] {
            let (mut a, mut b) = (Stream::new(3), Stream::new(3));
            let (mut want, mut got) = (Vec::new(), Vec::new());
            crate::stats::bernoulli_positions(len, p, &mut a, |i| want.push(i));
            bernoulli_positions(len, p, &mut b, |i| got.push(i));
            assert_eq!(got, want, "len {len} p {p}");
        }
    }
}
