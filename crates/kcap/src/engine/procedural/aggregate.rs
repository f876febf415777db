//! One target block at a time: regenerate the events of every firing row
//! into the block, add learned-weight corrections, and keep a running top-k.
//!
//! **Key decision: a dense per-thread counter for one block (2¹⁶ u32) plus
//! integer counts.** Every synapse weighs 1 unless it is potentiated, so the
//! input of a neuron is `count + Σ(w − 1)` over its potentiated synapses from
//! firing rows. Counts are integers (any summation order gives the same
//! bits); corrections are few and summed in a fixed (fiber, row, target)
//! order; a block is processed by one thread. The k-cap set under
//! (input desc, id asc) is unique, so the running per-thread top-k lists
//! can be merged in any order: the winners do not depend on the thread
//! count or on how rayon splits the blocks. Memory is one block buffer and
//! O(k) candidates per thread — independent of n.
//!
//! When the event volume per block allows it, each block also keeps the
//! list of its events (u16 local targets, by firing row) long enough to
//! record which firing rows hit each surviving candidate. Hebbian
//! plasticity then needs no second regeneration.

use super::learned::FiberLearned;
use super::rows::{block_key, block_len, SkipTable, BLOCK};

use crate::cap::order_key;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The firing rows of one fiber into the target, prepared for a step.
pub(crate) struct FiringFiber<'a> {
    /// Firing source neuron ids, strictly increasing.
    pub rows: RowsOf<'a>,
    /// `row_key` of each firing row, same order.
    pub row_keys: Vec<u64>,
    pub table: &'a SkipTable,
    pub learned: Option<&'a FiberLearned>,
}

/// Firing rows: all `0..size` of a stimulus, or an area's winner list.
#[derive(Clone, Copy)]
pub(crate) enum RowsOf<'a> {
    All(u64),
    List(&'a [u64]),
}

impl RowsOf<'_> {
    pub fn len(&self) -> usize {
        match self {
            RowsOf::All(n) => *n as usize,
            RowsOf::List(l) => l.len(),
        }
    }

    #[inline]
    pub fn get(&self, idx: usize) -> u64 {
        match self {
            RowsOf::All(_) => idx as u64,
            RowsOf::List(l) => l[idx],
        }
    }

    #[inline]
    pub fn contains(&self, row: u64) -> bool {
        match self {
            RowsOf::All(n) => row < *n,
            RowsOf::List(l) => l.binary_search(&row).is_ok(),
        }
    }
}

/// Packed k-cap key: ascending order is (input desc, id asc).
#[inline(always)]
pub(crate) fn cap_key(value: f32, id: u64) -> u128 {
    ((!order_key(value) as u128) << 64) | id as u128
}

/// A 64-bit threshold no smaller than `key` in the order of keys: value
/// bits and the id saturated to 32 bits (monotone, so `narrow(a) > narrow(t)`
/// implies `a > t`). Workers share thresholds in this form through an
/// `AtomicU64` (no stable 128-bit atomics).
#[inline]
pub(crate) fn narrow(key: u128) -> u64 {
    (((key >> 64) as u64) << 32) | (key as u64).min(u32::MAX as u64)
}

/// The smallest 128-bit key `t` with `narrow(t) = x`'s upper bound: every
/// key `a` with `narrow(a) > x` is `> widen(x)`, and `widen(narrow(t)) ≥ t`.
#[inline]
pub(crate) fn widen(x: u64) -> u128 {
    if x == u64::MAX {
        return u128::MAX;
    }
    let id = x as u32 as u64;
    let id = if id == u32::MAX as u64 { u64::MAX } else { id };
    (((x >> 32) as u128) << 64) | id as u128
}

/// Input value of a packed key.
#[inline]
pub(crate) fn key_value(key: u128) -> f32 {
    let ok = !((key >> 64) as u32);
    f32::from_bits(if ok >> 31 == 1 { ok & 0x7fff_ffff } else { !ok })
}

/// A candidate: its key and the range of its firing sources (slots) in the
/// owning [`TopK`]'s arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    pub key: u128,
    pub src_start: u32,
    pub src_len: u32,
}

/// The running k-cap over the blocks seen by one worker: at most ~2k
/// candidates, none of which is beaten by k others already seen.
pub(crate) struct TopK {
    pub k: usize,
    pub items: Vec<Cand>,
    pub srcs: Vec<u32>,
    /// Keys above this cannot win (the k-th best key seen so far).
    pub thr: u128,
    /// Neurons that received any input (count > 0) in the blocks seen.
    pub touched: u64,
    /// Synaptic events generated.
    pub events: u64,
    /// False once some block could not record its sources.
    pub recorded: bool,
    /// Candidates offered (diagnostics: how well the running threshold prunes).
    pub offered: u64,
    /// Synapses onto offered candidates found in event lists (diagnostics).
    pub hits: u64,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            items: Vec::new(),
            srcs: Vec::new(),
            thr: u128::MAX,
            touched: 0,
            events: 0,
            recorded: true,
            offered: 0,
            hits: 0,
        }
    }

    /// Items held before a prune: k plus a quarter, so the threshold keeps
    /// up (each prune is O(items), so this costs O(1) per offered item).
    #[inline]
    pub fn limit(&self) -> usize {
        self.k + self.k / 4 + 16
    }

    /// Keeps the k best items (and their sources) when more than `limit` are held.
    pub fn prune(&mut self, limit: usize) -> bool {
        if self.items.len() <= limit || self.items.len() <= self.k {
            return false;
        }
        let k = self.k;
        self.items.select_nth_unstable_by_key(k - 1, |c| c.key);
        self.items.truncate(k);
        self.thr = self.items.iter().map(|c| c.key).max().unwrap_or(u128::MAX);
        if !self.srcs.is_empty() {
            let mut srcs = Vec::with_capacity(self.items.iter().map(|c| c.src_len as usize).sum());
            for c in &mut self.items {
                let s = c.src_start as usize;
                let start = srcs.len() as u32;
                srcs.extend_from_slice(&self.srcs[s..s + c.src_len as usize]);
                c.src_start = start;
            }
            self.srcs = srcs;
        }
        true
    }

    /// Absorbs another worker's list.
    pub fn merge(mut self, other: TopK) -> TopK {
        let off = self.srcs.len() as u32;
        self.srcs.extend_from_slice(&other.srcs);
        self.items.extend(other.items.iter().map(|c| Cand {
            src_start: c.src_start + off,
            ..*c
        }));
        self.thr = self.thr.min(other.thr);
        self.touched += other.touched;
        self.events += other.events;
        self.recorded &= other.recorded;
        self.offered += other.offered;
        self.hits += other.hits;
        self.prune(self.limit());
        self
    }
}

/// Per-thread reusable buffers of the block scan.
pub(crate) struct Scratch {
    counts: Vec<u32>,
    ctr: Vec<u64>,
    next: Vec<u32>,
    ev: Vec<u16>,
    ev_off: Vec<u32>,
    corr: Vec<(u32, f32)>,
    marks: Vec<u8>,
    cands: Vec<(u128, u32)>,
    hits: Vec<(u32, u32)>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            counts: vec![0; BLOCK as usize],
            ctr: Vec::new(),
            next: Vec::new(),
            ev: Vec::new(),
            ev_off: Vec::new(),
            corr: Vec::new(),
            marks: vec![0; BLOCK as usize],
            cands: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// Bytes of one thread's scratch: `slots` firing rows, `ev_cap` events
    /// recorded per sub-range, at most `k` candidates per sub-range.
    pub fn bytes_for(ev_cap: u64, slots: u64, k: u64) -> u64 {
        BLOCK * 5 + slots * 16 + ev_cap * 2 + k.min(BLOCK) * 32 + BLOCK * 8
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's scratch buffers.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        f(s.get_or_insert_with(Scratch::new))
    })
}

/// Width of the sub-ranges in which a block is swept: all firing rows
/// advance through one sub-range before the next, so the counters of a
/// sub-range stay in L1 and its event list in L2. Wider for sparse fibers,
/// so that each (row, sub-range) visit still emits several events.
pub(crate) fn sub_width(mean_p: f64) -> u32 {
    let want = (12.0 / mean_p.max(1e-9)).min(BLOCK as f64);
    (want as u32).next_power_of_two().clamp(2048, 16384)
}

/// Advances every row cursor through `[start, end)`, counting events in
/// `counts` (indexed from `start`).
#[inline(never)]
fn sweep_count(
    fibers: &[FiringFiber],
    ctr: &mut [u64],
    next: &mut [u32],
    len: u32,
    start: u32,
    end: u32,
    counts: &mut [u32],
) {
    let mut slot = 0;
    for f in fibers {
        let rows = f.row_keys.len();
        for (c, nx) in ctr[slot..slot + rows]
            .iter_mut()
            .zip(&mut next[slot..slot + rows])
        {
            // SAFETY: start ≤ l < end, and counts.len() = end − start.
            f.table.advance(c, nx, len, end, |l| unsafe {
                *counts.get_unchecked_mut((l - start) as usize) += 1
            });
        }
        slot += rows;
    }
}

/// [`sweep_count`] that also lists the events: `ev` gets each event's
/// offset from `start` (u16), row after row in slot order, and `ev_off[r]`
/// where row r's events begin (`ev_off` ends with the total).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn sweep_record(
    fibers: &[FiringFiber],
    ctr: &mut [u64],
    next: &mut [u32],
    len: u32,
    start: u32,
    end: u32,
    counts: &mut [u32],
    ev: &mut Vec<u16>,
    ev_off: &mut Vec<u32>,
) {
    let width = (end - start) as usize;
    ev.clear();
    ev_off.clear();
    ev_off.resize(ctr.len() + 1, 0);
    let mut i = 0usize;
    let mut slot = 0;
    for f in fibers {
        let rows = f.row_keys.len();
        for (c, nx) in ctr[slot..slot + rows]
            .iter_mut()
            .zip(&mut next[slot..slot + rows])
        {
            ev_off[slot] = i as u32;
            slot += 1;
            if *nx >= end {
                continue;
            }
            // A row emits at most `width` events here: make room once per
            // row, then write through a raw cursor.
            if ev.capacity() - i < width {
                // SAFETY: the first i entries were written.
                unsafe { ev.set_len(i) };
                ev.reserve(width.max(ev.capacity()));
            }
            let p = ev.as_mut_ptr();
            // SAFETY: start ≤ l < end; at most `width` writes past i, within capacity.
            f.table.advance(c, nx, len, end, |l| unsafe {
                *counts.get_unchecked_mut((l - start) as usize) += 1;
                p.add(i).write((l - start) as u16);
                i += 1;
            });
        }
    }
    ev_off[slot] = i as u32;
    // SAFETY: entries 0..i were written.
    unsafe { ev.set_len(i) };
}

/// Candidates per sub-range up to which events are matched by vector
/// compares against the candidate list rather than by a marks lookup.
const FEW_CANDS: usize = 16;

/// Appends `(target, event index)` for every event of `ev` (offsets from
/// `start`) that lands on a candidate (`marks[offset] != 0`). With few
/// candidates, 16 events at a time are compared with each candidate (the
/// compiler vectorises this), and only chunks with a match are looked at
/// one by one.
#[inline(never)]
fn find_hits(
    ev: &[u16],
    cands: &[(u128, u32)],
    start: u32,
    marks: &[u8],
    hits: &mut Vec<(u32, u32)>,
) {
    match cands.len() {
        0 => {}
        1 => find_hits_few::<1>(ev, cands, start, marks, hits),
        2 => find_hits_few::<2>(ev, cands, start, marks, hits),
        3..=4 => find_hits_few::<4>(ev, cands, start, marks, hits),
        5..=8 => find_hits_few::<8>(ev, cands, start, marks, hits),
        9..=FEW_CANDS => find_hits_few::<FEW_CANDS>(ev, cands, start, marks, hits),
        _ => hits_by_marks(0, ev, start, marks, hits),
    }
}

#[inline(always)]
fn hits_by_marks(from: usize, ev: &[u16], start: u32, marks: &[u8], hits: &mut Vec<(u32, u32)>) {
    for (i, &e) in ev.iter().enumerate() {
        // SAFETY: events are offsets below end − start ≤ marks.len().
        if unsafe { *marks.get_unchecked(e as usize) } != 0 {
            hits.push((start + e as u32, (from + i) as u32));
        }
    }
}

fn find_hits_few<const N: usize>(
    ev: &[u16],
    cands: &[(u128, u32)],
    start: u32,
    marks: &[u8],
    hits: &mut Vec<(u32, u32)>,
) {
    // Offsets never reach u16::MAX (sub-ranges are at most 2^14 wide): padding.
    let mut want = [u16::MAX; N];
    for (w, c) in want.iter_mut().zip(cands) {
        *w = (c.1 - start) as u16;
    }
    let chunks = ev.chunks_exact(16);
    let tail = chunks.remainder();
    for (ci, chunk) in chunks.enumerate() {
        let chunk: &[u16; 16] = chunk.try_into().expect("16 events");
        let mut acc = [0u16; 16];
        for &w in &want {
            for i in 0..16 {
                acc[i] |= (chunk[i] == w) as u16;
            }
        }
        if acc.iter().fold(0, |a, &b| a | b) != 0 {
            hits_by_marks(ci * 16, chunk, start, marks, hits);
        }
    }
    hits_by_marks(ev.len() - tail.len(), tail, start, marks, hits);
}

/// Scans target block `b` of an area of `n` neurons: generates the events
/// of every firing row of `fibers`, sub-range by sub-range of width `sub`,
/// applies learned corrections, and offers each sub-range's best candidates
/// to `acc`. With `record`, the firing sources (slots) of every offered
/// candidate are stored with it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_block(
    fibers: &[FiringFiber],
    n: u64,
    b: u64,
    sub: u32,
    record: bool,
    global: &AtomicU64,
    acc: &mut TopK,
    sc: &mut Scratch,
) {
    let len = block_len(n, b);
    let Scratch {
        counts,
        ctr,
        next,
        ev,
        ev_off,
        corr,
        marks,
        cands,
        hits,
    } = sc;
    // Cursors of every firing row, in slot order.
    ctr.clear();
    next.clear();
    for f in fibers {
        for &rk in &f.row_keys {
            let (c, nx) = f.table.start(block_key(rk, b), len);
            ctr.push(c);
            next.push(nx);
        }
    }
    // Learned corrections, in (fiber, row, target) order, summed per target
    // in that order (a stable sort keeps it).
    corr.clear();
    for f in fibers {
        if let Some(l) = f.learned {
            l.corrections(
                b,
                |row| f.rows.contains(row),
                |local, d| corr.push((local, d)),
            );
        }
    }
    corr.sort_by_key(|c| c.0);
    let base = b * BLOCK;
    let mut ci = 0;
    let mut events = 0u64;
    let mut touched = 0u64;
    let mut start = 0u32;
    while start < len {
        let end = (start + sub).min(len);
        let counts = &mut counts[..(end - start) as usize];
        // 1. Events: integer counts (and, when recording, the event list).
        if record {
            sweep_record(fibers, ctr, next, len, start, end, counts, ev, ev_off);
        } else {
            sweep_count(fibers, ctr, next, len, start, end, counts);
        }
        // 2. Candidates: inputs of touched neurons that can still win; counters reset.
        // Keys above this worker's threshold, or above the coarser one all
        // workers publish, cannot win (conservative: exact winners).
        let thr = acc.thr.min(widen(global.load(Ordering::Relaxed)));
        cands.clear();
        for (i, c) in counts.iter_mut().enumerate() {
            if *c == 0 {
                continue;
            }
            touched += 1;
            events += *c as u64;
            let l = start + i as u32;
            let mut v = *c as f64;
            *c = 0;
            while ci < corr.len() && corr[ci].0 < l {
                ci += 1;
            }
            while ci < corr.len() && corr[ci].0 == l {
                v += corr[ci].1 as f64;
                ci += 1;
            }
            let key = cap_key(v as f32, base + l as u64);
            if key < thr {
                cands.push((key, l));
            }
        }
        if cands.len() > acc.k {
            cands.select_nth_unstable_by_key(acc.k - 1, |c| c.0);
            cands.truncate(acc.k);
        }
        acc.offered += cands.len() as u64;
        // 3. Sources of the surviving candidates, from the event list: rows
        //    are walked in slot order, so the r-th row is slot r.
        if record && !cands.is_empty() {
            for &(_, l) in cands.iter() {
                marks[(l - start) as usize] = 1;
            }
            // One flat pass over the events (hits are rare); the row of a
            // hit is found from the row offsets afterwards.
            hits.clear();
            find_hits(ev, cands, start, marks, hits);
            for h in hits.iter_mut() {
                h.1 = (ev_off.partition_point(|&o| o <= h.1) - 1) as u32;
            }
            for &(_, l) in cands.iter() {
                marks[(l - start) as usize] = 0;
            }
            // A stable sort by target keeps each candidate's sources in slot order.
            hits.sort_by_key(|h| h.0);
            cands.sort_unstable_by_key(|c| c.1);
            acc.hits += hits.len() as u64;
            let mut hi = 0;
            for &(key, l) in cands.iter() {
                let s0 = acc.srcs.len() as u32;
                while hi < hits.len() && hits[hi].0 < l {
                    hi += 1;
                }
                while hi < hits.len() && hits[hi].0 == l {
                    acc.srcs.push(hits[hi].1);
                    hi += 1;
                }
                acc.items.push(Cand {
                    key,
                    src_start: s0,
                    src_len: acc.srcs.len() as u32 - s0,
                });
            }
        } else {
            acc.items.extend(cands.iter().map(|&(key, _)| Cand {
                key,
                src_start: 0,
                src_len: 0,
            }));
        }
        ev.clear();
        if acc.prune(acc.limit()) {
            global.fetch_min(narrow(acc.thr), Ordering::Relaxed);
        }
        start = end;
    }
    if !record {
        acc.recorded = false;
    }
    acc.touched += touched;
    acc.events += events;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_key_order_and_value_roundtrip() {
        let a = cap_key(3.0, 10);
        let b = cap_key(3.0, 11);
        let c = cap_key(2.5, 0);
        assert!(a < b && b < c);
        for v in [0.0f32, 1.0, 2.5, 1e6, 3.25] {
            assert_eq!(key_value(cap_key(v, 77)), v);
        }
    }

    #[test]
    fn topk_prune_keeps_best_and_sources() {
        let mut t = TopK::new(2);
        for (i, v) in [1.0f32, 5.0, 3.0, 5.0, 0.5].iter().enumerate() {
            let s = t.srcs.len() as u32;
            t.srcs.push(i as u32 * 10);
            t.items.push(Cand {
                key: cap_key(*v, i as u64),
                src_start: s,
                src_len: 1,
            });
        }
        t.prune(2);
        let mut got: Vec<(u64, u32)> = t
            .items
            .iter()
            .map(|c| (c.key as u64, t.srcs[c.src_start as usize]))
            .collect();
        got.sort();
        assert_eq!(got, vec![(1, 10), (3, 30)]);
        assert_eq!(t.thr, cap_key(5.0, 3));
    }
}
