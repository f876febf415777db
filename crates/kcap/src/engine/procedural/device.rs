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
        let tables = self.fiber_list(v, plan);
        let fibers = self.prepare(v, plan, firing, &tables, false);
        let plastic = Self::plastic(v, plan);
        let mut step = DeviceStep {
            target: t,
            n: v.model.areas[t].n,
            k: v.model.areas[t].k,
            fibers: Vec::with_capacity(fibers.len()),
            corr: DeviceCorrections {
                off: vec![0],
                ..Default::default()
            },
        };
        for (i, ((src, _), f)) in tables.iter().zip(fibers).enumerate() {
            let p = v.model.p(*src, t);
            let key = fiber_key(v.seed, *src, t);
            debug_assert!(f.row_keys.is_empty() || row_key(key, f.rows.get(0)) == f.row_keys[0]);
            step.fibers.push(DeviceFiber {
                src: *src,
                key,
                row_keys: f.row_keys,
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
        // Block by block in parallel: every fiber's corrections in plan
        // order, then sorted by target with ties in that order (the
        // sequence number in the low bits of the sort key). One allocation
        // per block, sized from the stored synapses, and an in-place sort:
        // a step handles millions of corrections, and growing vectors from
        // many threads at once costs more than the work itself.
        let mut blocks: Vec<u64> = fibers
            .iter()
            .flat_map(|(l, _)| l.blocks.keys().copied())
            .collect();
        blocks.par_sort_unstable();
        blocks.dedup();
        let per: Vec<Vec<(u64, f32)>> = blocks
            .par_iter()
            .map(|&b| {
                let cap = fibers
                    .iter()
                    .map(|(l, _)| l.blocks.get(&b).map_or(0, |x| x.keys.len()))
                    .sum();
                let mut out: Vec<(u64, f32)> = Vec::with_capacity(cap);
                for (l, f) in &fibers {
                    l.corrections(
                        b,
                        |row| f.contains(row),
                        |local, d| out.push(((local as u64) << 32 | out.len() as u64, d)),
                    );
                }
                out.sort_unstable_by_key(|c| c.0);
                out
            })
            .collect();
        let mut c = DeviceCorrections::default();
        for (&b, v) in blocks.iter().zip(&per) {
            if !v.is_empty() {
                c.blocks.push(b);
                c.off.push(c.local.len() as u32);
                c.local.resize(c.local.len() + v.len(), 0);
            }
        }
        c.off.push(c.local.len() as u32);
        c.delta = vec![0.0; c.local.len()];
        // Each block fills its own slice of the output, in parallel.
        let mut slots = Vec::with_capacity(c.blocks.len());
        let (mut rest_l, mut rest_d) = (&mut c.local[..], &mut c.delta[..]);
        for v in per.iter().filter(|v| !v.is_empty()) {
            let (l, tl) = std::mem::take(&mut rest_l).split_at_mut(v.len());
            let (d, td) = std::mem::take(&mut rest_d).split_at_mut(v.len());
            slots.push((v, l, d));
            (rest_l, rest_d) = (tl, td);
        }
        slots.into_par_iter().for_each(|(v, l, d)| {
            for ((&(key, delta), lo), de) in v.iter().zip(l).zip(d) {
                *lo = (key >> 32) as u32;
                *de = delta;
            }
        });
        Ok(c)
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
