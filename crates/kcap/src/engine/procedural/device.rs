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

/// Firing rows of one fiber, for membership tests.
enum Firing {
    All(u64),
    Set(RowSet),
}

impl Firing {
    #[inline]
    fn contains(&self, row: u64) -> bool {
        match self {
            Firing::All(n) => row < *n,
            Firing::Set(s) => s.contains(row),
        }
    }
}

/// A set of row ids (< 2⁴⁸) by open addressing with a multiplicative hash,
/// at most 1/4 full: a probe costs about one cache-resident load, several
/// times cheaper than a binary search of the sorted winner list.
struct RowSet {
    slots: Vec<u64>,
    shift: u32,
}

impl RowSet {
    const EMPTY: u64 = u64::MAX;

    fn new(rows: &[u64]) -> RowSet {
        let cap = (rows.len() * 4).next_power_of_two().max(16);
        let mut s = RowSet {
            slots: vec![Self::EMPTY; cap],
            shift: 64 - cap.trailing_zeros(),
        };
        for &r in rows {
            let mut i = s.home(r);
            while s.slots[i] != Self::EMPTY && s.slots[i] != r {
                i = (i + 1) & (cap - 1);
            }
            s.slots[i] = r;
        }
        s
    }

    #[inline]
    fn home(&self, r: u64) -> usize {
        (r.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn contains(&self, r: u64) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = self.home(r);
        loop {
            let x = self.slots[i];
            if x == r {
                return true;
            }
            if x == Self::EMPTY {
                return false;
            }
            i = (i + 1) & mask;
        }
    }
}

/// One fiber into the target, prepared for a device.
#[derive(Clone, Debug)]
pub struct DeviceFiber {
    pub src: Source,
    /// The fiber key ([`fiber_key`]): `row_key(key, id)` is the key of row `id`.
    pub key: u64,
    /// `row_key` of every firing row, in slot order (ids increasing).
    pub row_keys: Vec<u64>,
    /// Connection probability and `c = 1 / ln(1 − p)` ([`skip_scale`]).
    pub p: f64,
    pub scale: f64,
    /// True when the fiber's synapses are potentiated (β > 0).
    pub plastic: bool,
}

/// Learned corrections of one step, grouped by target block: `blocks`
/// increasing, block `blocks[i]` owns entries `off[i]..off[i + 1]` of
/// `local` / `delta`, sorted by local target with ties in (fiber, row)
/// order — the order in which the CPU adds them (`w − 1`, summed in f64
/// after the count).
#[derive(Clone, Debug, Default)]
pub struct DeviceCorrections {
    pub blocks: Vec<u64>,
    pub off: Vec<u32>,
    pub local: Vec<u32>,
    pub delta: Vec<f32>,
}

impl DeviceCorrections {
    /// Number of corrections.
    pub fn len(&self) -> usize {
        self.local.len()
    }

    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }

    /// Whether target `id` (of an area with blocks of 2^16 ids) has corrections.
    pub fn has(&self, id: u64) -> bool {
        let (b, l) = split_id(id);
        let Ok(j) = self.blocks.binary_search(&b) else {
            return false;
        };
        self.local[self.off[j] as usize..self.off[j + 1] as usize]
            .binary_search(&l)
            .is_ok()
    }
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
    /// The target's own fiber (A → A) without rows, when the model has one
    /// (p > 0), whether or not this step's plan includes it: a device may
    /// count it ahead for the next step from this step's winners.
    pub own: Option<DeviceFiber>,
    /// The step's learned corrections ([`ProceduralState::device_step`]
    /// fills them; [`ProceduralState::device_step_rows`] leaves them empty
    /// for [`ProceduralState::device_corrections`] to compute later, e.g.
    /// while the device counts).
    pub corr: DeviceCorrections,
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
    /// like [`ProceduralState::select`]): rows and corrections.
    pub fn device_step(
        &self,
        v: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> Result<DeviceStep> {
        let mut step = self.device_step_rows(v, plan, firing)?;
        step.corr = self.device_corrections(v, plan, firing)?;
        Ok(step)
    }

    /// [`Self::device_step`] without the learned corrections (validated).
    pub fn device_step_rows(
        &self,
        v: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> Result<DeviceStep> {
        Self::validate(v.model, plan, firing)?;
        let t = plan.target;
        // The rows' keys only: the device has no use for the CPU's skip
        // tables (building one costs milliseconds at the first step).
        let srcs: Vec<Source> = plan
            .stims
            .iter()
            .map(|&s| Source::Stim(s))
            .chain(plan.areas.iter().map(|&a| Source::Area(a)))
            .collect();
        let plastic = Self::plastic(v, plan);
        let mut step = DeviceStep {
            target: t,
            n: v.model.areas[t].n,
            k: v.model.areas[t].k,
            fibers: Vec::with_capacity(srcs.len()),
            own: None,
            corr: DeviceCorrections {
                off: vec![0],
                ..Default::default()
            },
        };
        let own = Source::Area(t);
        let p = v.model.p(own, t);
        if p > 0.0 {
            step.own = Some(DeviceFiber {
                src: own,
                key: fiber_key(v.seed, own, t),
                row_keys: Vec::new(),
                p,
                scale: skip_scale(p),
                plastic: v.model.beta(own, t) > 0.0,
            });
        }
        for (i, src) in srcs.iter().enumerate() {
            let p = v.model.p(*src, t);
            let key = fiber_key(v.seed, *src, t);
            let rows = match *src {
                Source::Stim(s) => super::aggregate::RowsOf::All(v.model.stimuli[s].size),
                Source::Area(a) => super::aggregate::RowsOf::List(firing[a]),
            };
            step.fibers.push(DeviceFiber {
                src: *src,
                key,
                row_keys: (0..rows.len()).map(|j| row_key(key, rows.get(j))).collect(),
                p,
                scale: skip_scale(p),
                plastic: plastic.iter().any(|q| q.0 == i),
            });
        }
        Ok(step)
    }

    /// The learned corrections of one step into `plan.target` (validated):
    /// for every block holding potentiated synapses from firing rows, their
    /// `w − 1` in the CPU's summation order.
    pub fn device_corrections(
        &self,
        v: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
    ) -> Result<DeviceCorrections> {
        let mut c = DeviceCorrections::default();
        self.device_corrections_into(v, plan, firing, &mut c)?;
        Ok(c)
    }

    /// [`Self::device_corrections`] into `c`, whose buffers are reused
    /// (keeping one from step to step spares the fresh pages of ~10⁷ bytes
    /// of corrections a step at procedural-1e9).
    pub fn device_corrections_into(
        &self,
        v: &View,
        plan: &TargetPlan,
        firing: &[&[u64]],
        c: &mut DeviceCorrections,
    ) -> Result<()> {
        Self::validate(v.model, plan, firing)?;
        let t = plan.target;
        // Per fiber in plan order: its learned map and its firing rows
        // (every row of a stimulus; an area's winners through a hash set:
        // a step probes one row per (block, stored row), millions of times).
        let fibers: Vec<(&super::FiberLearned, Firing)> = plan
            .stims
            .iter()
            .map(|&s| (Source::Stim(s), Firing::All(v.model.stimuli[s].size)))
            .chain(
                plan.areas
                    .iter()
                    .map(|&a| (Source::Area(a), Firing::Set(RowSet::new(firing[a])))),
            )
            .filter_map(|(src, f)| {
                self.learned
                    .get(&(src, t))
                    .filter(|l| !l.is_empty())
                    .map(|l| (l, f))
            })
            .collect();
        // The blocks of every fiber, merged, with each fiber's run index
        // (NONE where it has no synapses there) and an upper bound on the
        // block's corrections: all its stored synapses.
        const NONE: usize = usize::MAX;
        let nf = fibers.len();
        let mut blocks: Vec<u64> = Vec::new();
        let mut runs: Vec<usize> = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        let mut at = vec![0usize; nf];
        let mut end = 0;
        loop {
            let ids = |f: usize, at: &[usize]| fibers[f].0.block_ids().get(at[f]).copied();
            let Some(b) = (0..nf).filter_map(|f| ids(f, &at)).min() else {
                break;
            };
            blocks.push(b);
            for (f, (l, _)) in fibers.iter().enumerate() {
                if ids(f, &at) == Some(b) {
                    runs.push(at[f]);
                    end += l.block_at(at[f]).0.len();
                    at[f] += 1;
                } else {
                    runs.push(NONE);
                }
            }
            ends.push(end);
        }
        // 1. Block by block in parallel, each into its own range of one
        // buffer kept from step to step (no allocation, no growing vector):
        // every fiber's corrections in plan order, packed as
        // `local << 32 | bits of w − 1`.
        let mut kept = self.corr_scratch.try_lock();
        let mut own = Vec::new();
        let buf = kept.as_deref_mut().unwrap_or(&mut own);
        super::learned::grow(buf, end);
        let mut count = vec![0usize; blocks.len()];
        let units = super::learned::chunks(&ends, super::learned::chunk_target(end));
        let first = |r: &std::ops::Range<usize>| r.start.checked_sub(1).map_or(0, |s| ends[s]);
        let bufs = super::learned::split_lens(
            &mut buf[..end],
            units.iter().map(|r| ends[r.end - 1] - first(r)),
        );
        let counts = super::learned::split_lens(&mut count, units.iter().map(|r| r.len()));
        units
            .par_iter()
            .zip(bufs)
            .zip(counts)
            .for_each(|((r, out), counts)| {
                let mut o = 0;
                for (bi, c) in r.clone().zip(counts) {
                    let base = o;
                    for ((l, firing), &run) in fibers.iter().zip(&runs[bi * nf..(bi + 1) * nf]) {
                        if run == NONE {
                            continue;
                        }
                        let (keys, weights) = l.block_at(run);
                        super::learned::run_corrections(
                            keys,
                            weights,
                            |row| firing.contains(row),
                            |local, d| {
                                out[o] = (local as u64) << 32 | d.to_bits() as u64;
                                o += 1;
                            },
                        );
                    }
                    *c = o - base;
                    o = base + ends[bi] - if bi == 0 { 0 } else { ends[bi - 1] };
                }
            });
        // 2. The output: exact sizes, then each block sorted by local target
        // (stable, so ties stay in (fiber, row) order) into its own slices.
        c.blocks.clear();
        c.off.clear();
        let mut filled = Vec::new();
        let mut total = 0;
        for (bi, &n) in count.iter().enumerate() {
            if n > 0 {
                c.blocks.push(blocks[bi]);
                c.off.push(total as u32);
                filled.push(bi);
                total += n;
            }
        }
        c.off.push(total as u32);
        // Every element is written below: only a longer buffer is filled.
        c.local.truncate(total);
        c.delta.truncate(total);
        super::learned::grow(&mut c.local, total);
        super::learned::grow(&mut c.delta, total);
        let out_ends: Vec<usize> = c.off[1..].iter().map(|&o| o as usize).collect();
        let units = super::learned::chunks(&out_ends, super::learned::chunk_target(total));
        let span = |r: &std::ops::Range<usize>| (c.off[r.end] - c.off[r.start]) as usize;
        let locals = super::learned::split_lens(&mut c.local, units.iter().map(span));
        let deltas = super::learned::split_lens(&mut c.delta, units.iter().map(span));
        let buf = &*buf;
        units
            .par_iter()
            .zip(locals)
            .zip(deltas)
            .for_each_init(Vec::new, |tmp, ((r, ls), ds)| {
                let mut o = 0;
                for &bi in &filled[r.clone()] {
                    let from = if bi == 0 { 0 } else { ends[bi - 1] };
                    let n = count[bi];
                    sort_by_local(
                        &buf[from..from + n],
                        tmp,
                        &mut ls[o..o + n],
                        &mut ds[o..o + n],
                    );
                    o += n;
                }
            });
        Ok(())
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

/// Unpacks `src` (`local << 32 | bits of delta`) into `local`/`delta`
/// sorted by local target, ties in their order: a stable LSD radix sort on
/// the two bytes of the local target (a block holds a few hundred
/// corrections; a comparison sort of them cost most of the step's
/// corrections).
fn sort_by_local(src: &[u64], tmp: &mut Vec<u64>, local: &mut [u32], delta: &mut [f32]) {
    let mut hist = [[0u32; 256]; 2];
    for &x in src {
        hist[0][(x >> 32) as u8 as usize] += 1;
        hist[1][(x >> 40) as u8 as usize] += 1;
    }
    for h in &mut hist {
        let mut acc = 0;
        for c in h.iter_mut() {
            (*c, acc) = (acc, acc + *c);
        }
    }
    tmp.clear();
    tmp.resize(src.len(), 0);
    for &x in src {
        let c = &mut hist[0][(x >> 32) as u8 as usize];
        tmp[*c as usize] = x;
        *c += 1;
    }
    for &x in tmp.iter() {
        let c = &mut hist[1][(x >> 40) as u8 as usize];
        local[*c as usize] = (x >> 32) as u32;
        delta[*c as usize] = f32::from_bits(x as u32);
        *c += 1;
    }
}

/// Block of a neuron id and its offset in the block.
#[inline]
pub fn split_id(id: u64) -> (u64, u32) {
    (id / BLOCK, (id % BLOCK) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AreaSpec, EngineKind, Model, StimSpec};

    /// `device_corrections` equals the plain definition: per block, every
    /// fiber's stored synapses from firing rows in (fiber, row, target)
    /// order, stably sorted by target — over random learned maps, firing
    /// sets and plans, including blocks of one fiber only and empty ones.
    #[test]
    fn corrections_equal_the_definition() {
        let mut r = crate::rng::Stream::new(9);
        for round in 0..6 {
            let n = 4 * BLOCK + 17;
            let mut m = Model::new(0.01).unwrap();
            for s in 0..2 {
                m.add_stimulus(StimSpec {
                    name: format!("s{s}"),
                    size: 40 + 10 * s,
                })
                .unwrap();
            }
            m.add_area(AreaSpec {
                name: "A".into(),
                n,
                k: 50,
                beta: 0.1,
                engine: EngineKind::Procedural,
            })
            .unwrap();
            let mut st = ProceduralState::new();
            let srcs = [Source::Stim(0), Source::Stim(1), Source::Area(0)];
            for (i, &src) in srcs.iter().enumerate() {
                if round % 3 == i {
                    continue; // one fiber without learned weights
                }
                let rows = match src {
                    Source::Stim(s) => m.stimuli[s].size,
                    Source::Area(_) => 300,
                };
                let l = st.learned.entry((src, 0)).or_default();
                for _ in 0..3 {
                    let b = r.below(5);
                    let len = (n - b * BLOCK).min(BLOCK);
                    let mut keys: Vec<u64> = (0..r.below(200))
                        .map(|_| super::super::learned::pack(r.below(rows), r.below(len) as u32))
                        .collect();
                    keys.sort_unstable();
                    keys.dedup();
                    l.potentiate(b, &keys, 1.0 + r.below(5) as f32 / 8.0, 4.0);
                }
            }
            let mut winners: Vec<u64> = (0..60).map(|_| r.below(300)).collect();
            winners.sort_unstable();
            winners.dedup();
            let plan = TargetPlan {
                target: 0,
                stims: if round % 2 == 0 { vec![0, 1] } else { vec![1] },
                areas: vec![0],
            };
            let firing: Vec<&[u64]> = vec![&winners];
            let v = View { model: &m, seed: 1 };
            let got = st.device_corrections(&v, &plan, &firing).unwrap();
            // The definition.
            let fibers: Vec<(Source, RowsCheck)> = plan
                .stims
                .iter()
                .map(|&s| (Source::Stim(s), RowsCheck::All))
                .chain([(Source::Area(0), RowsCheck::List(&winners))])
                .collect();
            let mut want = DeviceCorrections::default();
            for b in 0..5u64 {
                let mut v: Vec<(u32, f32)> = Vec::new();
                for (src, rows) in &fibers {
                    if let Some(l) = st.learned.get(&(*src, 0)) {
                        for (row, tgt, w) in l.iter() {
                            if tgt / BLOCK == b && rows.fires(row) {
                                v.push(((tgt % BLOCK) as u32, w - 1.0));
                            }
                        }
                    }
                }
                v.sort_by_key(|c| c.0);
                if !v.is_empty() {
                    want.blocks.push(b);
                    want.off.push(want.local.len() as u32);
                    want.local.extend(v.iter().map(|c| c.0));
                    want.delta.extend(v.iter().map(|c| c.1));
                }
            }
            want.off.push(want.local.len() as u32);
            assert!(!want.is_empty());
            assert_eq!(got.blocks, want.blocks, "round {round}");
            assert_eq!(got.off, want.off, "round {round}");
            assert_eq!(got.local, want.local, "round {round}");
            let bits = |d: &[f32]| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.delta), bits(&want.delta), "round {round}");
        }
    }

    enum RowsCheck<'a> {
        All,
        List(&'a [u64]),
    }

    impl RowsCheck<'_> {
        fn fires(&self, row: u64) -> bool {
            match self {
                RowsCheck::All => true,
                RowsCheck::List(l) => l.contains(&row),
            }
        }
    }

    /// The hash set of firing rows answers like a linear search.
    #[test]
    fn corrections_know_their_ids() {
        let c = DeviceCorrections {
            blocks: vec![0, 3],
            off: vec![0, 2, 5],
            local: vec![7, 9, 0, 0, 65535],
            delta: vec![0.5; 5],
        };
        for id in [7, 9, 3 * BLOCK, 3 * BLOCK + 65535] {
            assert!(c.has(id), "{id}");
        }
        for id in [0, 8, 10, BLOCK + 7, 3 * BLOCK + 1, 4 * BLOCK, u64::MAX] {
            assert!(!c.has(id), "{id}");
        }
        assert!(!DeviceCorrections::default().has(0));
    }

    #[test]
    fn row_set_membership() {
        let mut r = crate::rng::Stream::new(4);
        for len in [0usize, 1, 7, 1000] {
            let rows: Vec<u64> = (0..len).map(|_| r.below(1 << 40)).collect();
            let set = RowSet::new(&rows);
            for &x in &rows {
                assert!(set.contains(x));
            }
            for _ in 0..2000 {
                let x = r.below(1 << 40);
                assert_eq!(set.contains(x), rows.contains(&x));
            }
        }
    }
}
