//! Potentiated synapses: the only connectivity the procedural engine stores.
//!
//! **Key decision: learned weights are grouped by target block**, because
//! that is how they are read: a step processes one target block at a time
//! and needs the learned weights of the firing rows landing in it. Per fiber
//! one arena holds every block's run of two parallel sorted arrays — the key
//! `row << 16 | local target` (u64; rows < 2⁴⁸) and the weight (f32) — in
//! block order, with a sorted list of the blocks and where their runs lie;
//! a synapse costs 12 bytes, and an update is a merge of sorted lists
//! (deterministic, no hashing order anywhere).
//!
//! An update merges every block, in parallel, from the arena into a second
//! one kept from the previous update, and the two swap: a step allocates
//! nothing once the arenas have grown (per-block vectors grown by every
//! step cost reallocation, fresh pages and allocator contention, and did
//! not scale past a few threads). The saved form is the block map
//! `{block: {keys, weights}}`, unchanged.

use super::rows::{BLOCK, BLOCK_BITS};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::ops::Range;

/// The potentiated synapses of one target block of one fiber, as saved.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LearnedBlock {
    /// `row << 16 | local target`, strictly increasing.
    pub keys: Vec<u64>,
    /// Weight of each key (never 1.0).
    pub weights: Vec<f32>,
}

/// Packs a synapse `row → local target` into a learned key.
#[inline(always)]
pub fn pack(row: u64, local: u32) -> u64 {
    (row << BLOCK_BITS) | local as u64
}

/// `(row, local target)` of a learned key.
#[inline(always)]
pub fn unpack(key: u64) -> (u64, u32) {
    (key >> BLOCK_BITS, (key & (BLOCK - 1)) as u32)
}

/// Potentiated synapses of one fiber, by target block.
#[derive(Default, serde::Deserialize)]
#[serde(try_from = "Saved")]
pub struct FiberLearned {
    /// Blocks holding synapses, increasing.
    ids: Vec<u64>,
    /// Block `ids[i]` owns `keys[start[i]..start[i] + len[i]]` and the same
    /// range of `weights`; runs lie in block order, possibly with gaps.
    start: Vec<usize>,
    len: Vec<usize>,
    keys: Vec<u64>,
    weights: Vec<f32>,
    /// The arena of the previous update, kept for its capacity only.
    spare_keys: Vec<u64>,
    spare_weights: Vec<f32>,
}

/// The saved form of a [`FiberLearned`] (the block map).
#[derive(serde::Deserialize)]
#[serde(rename = "FiberLearned")]
struct Saved {
    blocks: BTreeMap<u64, LearnedBlock>,
}

#[derive(serde::Serialize)]
#[serde(rename = "FiberLearned")]
struct SavedRef<'a> {
    blocks: BlocksRef<'a>,
}

struct BlocksRef<'a>(&'a FiberLearned);

#[derive(serde::Serialize)]
#[serde(rename = "LearnedBlock")]
struct BlockRef<'a> {
    keys: &'a [u64],
    weights: &'a [f32],
}

impl serde::Serialize for BlocksRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map((0..self.0.ids.len()).map(|i| {
            let (keys, weights) = self.0.run(i);
            (self.0.ids[i], BlockRef { keys, weights })
        }))
    }
}

impl serde::Serialize for FiberLearned {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SavedRef {
            blocks: BlocksRef(self),
        }
        .serialize(s)
    }
}

impl TryFrom<Saved> for FiberLearned {
    type Error = String;

    /// Blocks as read (empty ones too: [`FiberLearned::check`] reports
    /// them); a block with more or fewer weights than keys is an error.
    fn try_from(saved: Saved) -> Result<Self, String> {
        let mut f = FiberLearned::default();
        for (b, blk) in saved.blocks {
            if blk.keys.len() != blk.weights.len() {
                return Err(format!(
                    "block {b}: {} keys but {} weights",
                    blk.keys.len(),
                    blk.weights.len()
                ));
            }
            f.ids.push(b);
            f.start.push(f.keys.len());
            f.len.push(blk.keys.len());
            f.keys.extend_from_slice(&blk.keys);
            f.weights.extend_from_slice(&blk.weights);
        }
        Ok(f)
    }
}

impl Clone for FiberLearned {
    /// The stored synapses, compacted (no spare arena).
    fn clone(&self) -> Self {
        let mut f = FiberLearned {
            ids: self.ids.clone(),
            ..Default::default()
        };
        for i in 0..self.ids.len() {
            let (k, w) = self.run(i);
            f.start.push(f.keys.len());
            f.len.push(k.len());
            f.keys.extend_from_slice(k);
            f.weights.extend_from_slice(w);
        }
        f
    }
}

impl PartialEq for FiberLearned {
    /// Same blocks with the same runs (weights compared as f32).
    fn eq(&self, o: &Self) -> bool {
        self.ids == o.ids && (0..self.ids.len()).all(|i| self.run(i) == o.run(i))
    }
}

impl std::fmt::Debug for FiberLearned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries((0..self.ids.len()).map(|i| (self.ids[i], self.run(i))))
            .finish()
    }
}

/// Ranges of consecutive items whose sizes (`ends[i]` − `ends[i − 1]`, from
/// 0) add up to about `target` each: the parallel work units of an update
/// or of a step's corrections, so that no thread waits on a few big ones.
pub(crate) fn chunks(ends: &[usize], target: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut first, mut base) = (0, 0);
    for (i, &e) in ends.iter().enumerate() {
        if e - base >= target {
            out.push(first..i + 1);
            (first, base) = (i + 1, e);
        }
    }
    if first < ends.len() {
        out.push(first..ends.len());
    }
    out
}

/// Fewest elements in a parallel work unit (a few in unit tests, so that
/// they cover the splitting).
pub(crate) const MIN_UNIT: usize = if cfg!(test) { 16 } else { 1 << 14 };

/// Elements per parallel work unit for `total` elements: a few units per
/// thread, none too small to pay for itself.
pub(crate) fn chunk_target(total: usize) -> usize {
    (total / (4 * rayon::current_num_threads())).max(MIN_UNIT)
}

/// Splits `data` into consecutive pieces of the given lengths.
pub(crate) fn split_lens<T>(
    mut data: &mut [T],
    lens: impl IntoIterator<Item = usize>,
) -> Vec<&mut [T]> {
    lens.into_iter()
        .map(|l| {
            let (head, tail) = std::mem::take(&mut data).split_at_mut(l);
            data = tail;
            head
        })
        .collect()
}

/// Grows `v` to at least `len` elements (zeros where new). The capacity
/// grows with slack, so that a steadily growing map reallocates rarely,
/// and in place (`realloc` moves a large allocation by remapping its pages,
/// not by copying them); only the elements needed now are written, in
/// parallel (the first touch of a fresh page costs a page fault), so that
/// memory never used is never touched. Never shrinks; what it held stays.
pub(crate) fn grow<T: Copy + Default + Send + Sync>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        if v.capacity() < len {
            v.reserve_exact(len + len / 2 - v.len());
        }
        let extra = len - v.len();
        v.par_extend(rayon::iter::repeat_n(T::default(), extra));
    }
}

impl FiberLearned {
    /// Keys and weights of the `i`-th block (in block order).
    #[inline]
    fn run(&self, i: usize) -> (&[u64], &[f32]) {
        let r = self.start[i]..self.start[i] + self.len[i];
        (&self.keys[r.clone()], &self.weights[r])
    }

    /// Number of stored synapses.
    pub fn len(&self) -> usize {
        self.len.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Blocks holding synapses, increasing.
    pub fn block_ids(&self) -> &[u64] {
        &self.ids
    }

    /// Keys (`row << 16 | local`, increasing) and weights of the `i`-th
    /// block of [`Self::block_ids`].
    pub fn block_at(&self, i: usize) -> (&[u64], &[f32]) {
        self.run(i)
    }

    /// Keys and weights of block `b`, if it holds synapses.
    pub fn block(&self, b: u64) -> Option<(&[u64], &[f32])> {
        self.ids.binary_search(&b).ok().map(|i| self.run(i))
    }

    /// Bytes held (both arenas' capacities and the block lists).
    pub fn bytes(&self) -> usize {
        (self.keys.capacity() + self.spare_keys.capacity()) * 8
            + (self.weights.capacity() + self.spare_weights.capacity()) * 4
            + self.ids.capacity() * 8
            + (self.start.capacity() + self.len.capacity()) * 8
    }

    /// Checks what a step relies on, for data read from a file: every
    /// block inside an area of `n` neurons and not empty, keys strictly
    /// increasing, local targets inside the block, source rows below
    /// `rows`, weights finite and not 1.
    pub fn check(&self, n: u64, rows: u64) -> Result<(), String> {
        for (i, &b) in self.ids.iter().enumerate() {
            let len = n.saturating_sub(b.saturating_mul(BLOCK)).min(BLOCK);
            if len == 0 {
                return Err(format!("block {b} lies beyond n = {n}"));
            }
            let (keys, weights) = self.run(i);
            if keys.is_empty() {
                return Err(format!("block {b}: no synapses"));
            }
            if keys.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("block {b}: keys not strictly increasing"));
            }
            for (&k, &w) in keys.iter().zip(weights) {
                let (row, local) = unpack(k);
                if row >= rows || local as u64 >= len || !w.is_finite() || w == 1.0 {
                    return Err(format!(
                        "block {b}: bad synapse {row} -> {} (weight {w})",
                        b * BLOCK + local as u64
                    ));
                }
            }
        }
        Ok(())
    }

    /// Weight of synapse `row → target` if it is potentiated (1.0 otherwise;
    /// whether the synapse exists at all is the graph's business).
    pub fn weight(&self, row: u64, target: u64) -> f32 {
        let (b, local) = (target >> BLOCK_BITS, (target & (BLOCK - 1)) as u32);
        self.block(b)
            .and_then(|(k, w)| k.binary_search(&pack(row, local)).ok().map(|i| w[i]))
            .unwrap_or(1.0)
    }

    /// Every stored synapse as `(row, target, weight)`, in (block, row, target) order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, f32)> + '_ {
        (0..self.ids.len()).flat_map(move |i| {
            let (b, (keys, weights)) = (self.ids[i], self.run(i));
            keys.iter().zip(weights).map(move |(&k, &w)| {
                let (row, local) = unpack(k);
                (row, b * BLOCK + local as u64, w)
            })
        })
    }

    /// Potentiates each synapse of `keys` (sorted, distinct; all in block
    /// `b`): `w ← min(w·m, cap)` in f32, from w = 1 for synapses not stored
    /// yet. Weights that end at exactly 1.0 are not stored. (Rewrites the
    /// whole arena: for many blocks at once use [`Self::potentiate_many`].)
    pub fn potentiate(&mut self, b: u64, keys: &[u64], m: f32, cap: f32) {
        self.potentiate_many(&[(b, keys)], m, cap);
    }

    /// [`Self::potentiate`] for many blocks at once: `groups` holds
    /// `(block, keys)` sorted by block, distinct blocks. Every block is
    /// merged, in parallel, from the arena into the spare one (a block
    /// reserves its stored run plus its updates there), and the two swap.
    /// Same result as potentiating the groups one by one.
    pub fn potentiate_many<K: AsRef<[u64]> + Sync>(
        &mut self,
        groups: &[(u64, K)],
        m: f32,
        cap: f32,
    ) {
        debug_assert!(groups.windows(2).all(|g| g[0].0 < g[1].0));
        if groups.is_empty() {
            return;
        }
        // The new block list (stored blocks and updated ones, merged), each
        // block's stored run and update group, and its reserved range.
        const NONE: usize = usize::MAX;
        let cap_blocks = self.ids.len() + groups.len();
        let mut ids = Vec::with_capacity(cap_blocks);
        let mut from = Vec::with_capacity(cap_blocks);
        let mut ends = Vec::with_capacity(cap_blocks);
        let (mut i, mut g, mut end) = (0, 0, 0);
        while i < self.ids.len() || g < groups.len() {
            let (a, u) = (
                self.ids.get(i).copied().unwrap_or(u64::MAX),
                groups.get(g).map_or(u64::MAX, |x| x.0),
            );
            let (b, o, gi) = if a < u {
                i += 1;
                (a, i - 1, NONE)
            } else if u < a {
                g += 1;
                (u, NONE, g - 1)
            } else {
                (i, g) = (i + 1, g + 1);
                (a, i - 1, g - 1)
            };
            end += if o == NONE { 0 } else { self.len[o] };
            end += if gi == NONE {
                0
            } else {
                groups[gi].1.as_ref().len()
            };
            ids.push(b);
            from.push((o, gi));
            ends.push(end);
        }
        let mut keys = std::mem::take(&mut self.spare_keys);
        let mut weights = std::mem::take(&mut self.spare_weights);
        grow(&mut keys, end);
        grow(&mut weights, end);
        let mut len = vec![0usize; ids.len()];
        // Work units of whole blocks, each with its own slices of the output.
        let units = chunks(&ends, chunk_target(end));
        let unit_len =
            |r: &Range<usize>| ends[r.end - 1] - r.start.checked_sub(1).map_or(0, |s| ends[s]);
        let ks = split_lens(&mut keys[..end], units.iter().map(unit_len));
        let ws = split_lens(&mut weights[..end], units.iter().map(unit_len));
        let ls = split_lens(&mut len, units.iter().map(|r| r.len()));
        let this = &*self;
        units
            .into_par_iter()
            .zip(ks)
            .zip(ws)
            .zip(ls)
            .for_each(|(((r, ks), ws), ls)| {
                let mut o = 0;
                for (bi, l) in r.zip(ls) {
                    let (old_k, old_w) = match from[bi].0 {
                        NONE => (&[][..], &[][..]),
                        s => this.run(s),
                    };
                    let upd = match from[bi].1 {
                        NONE => &[][..],
                        s => groups[s].1.as_ref(),
                    };
                    let reserved = old_k.len() + upd.len();
                    *l = merge_run(
                        old_k,
                        old_w,
                        upd,
                        m,
                        cap,
                        &mut ks[o..o + reserved],
                        &mut ws[o..o + reserved],
                    );
                    o += reserved;
                }
            });
        self.spare_keys = std::mem::replace(&mut self.keys, keys);
        self.spare_weights = std::mem::replace(&mut self.weights, weights);
        self.start.clear();
        self.start.push(0);
        self.start.extend_from_slice(&ends[..ends.len() - 1]);
        self.ids = ids;
        self.len = len;
        if self.len.contains(&0) {
            let keep: Vec<usize> = (0..self.ids.len()).filter(|&i| self.len[i] > 0).collect();
            self.ids = keep.iter().map(|&i| self.ids[i]).collect();
            self.start = keep.iter().map(|&i| self.start[i]).collect();
            self.len = keep.iter().map(|&i| self.len[i]).collect();
        }
    }

    /// Calls `f(local, w − 1)` for each stored synapse of block `b` whose
    /// row satisfies `firing`, in key order (row, then target).
    #[inline]
    pub fn corrections(&self, b: u64, firing: impl FnMut(u64) -> bool, f: impl FnMut(u32, f32)) {
        if let Some((keys, weights)) = self.block(b) {
            run_corrections(keys, weights, firing, f);
        }
    }
}

/// [`FiberLearned::corrections`] of one run.
#[inline]
pub(crate) fn run_corrections(
    keys: &[u64],
    weights: &[f32],
    mut firing: impl FnMut(u64) -> bool,
    mut f: impl FnMut(u32, f32),
) {
    let mut last_row = u64::MAX;
    let mut fires = false;
    for (&k, &w) in keys.iter().zip(weights) {
        let (row, local) = unpack(k);
        if row != last_row {
            last_row = row;
            fires = firing(row);
        }
        if fires {
            f(local, w - 1.0);
        }
    }
}

/// Writes the run (`keys`, `weights`) with each synapse of `upd` (sorted,
/// distinct) potentiated — `w ← min(w·m, cap)` in f32, from w = 1 for
/// synapses not stored yet, dropped where it ends at exactly 1.0 — into
/// the front of `out_k`/`out_w` (room for both lists); returns its length.
/// Stored weights are never 1.0, so the stored synapses between two
/// updates are copied as a whole.
fn merge_run(
    keys: &[u64],
    weights: &[f32],
    upd: &[u64],
    m: f32,
    cap: f32,
    out_k: &mut [u64],
    out_w: &mut [f32],
) -> usize {
    debug_assert!(upd.windows(2).all(|w| w[0] < w[1]));
    let w_new = (1.0f32 * m).min(cap);
    let (mut i, mut o) = (0, 0);
    for &u in upd {
        let p = i + keys[i..].partition_point(|&k| k < u);
        out_k[o..o + p - i].copy_from_slice(&keys[i..p]);
        out_w[o..o + p - i].copy_from_slice(&weights[i..p]);
        o += p - i;
        let w = if p < keys.len() && keys[p] == u {
            i = p + 1;
            (weights[p] * m).min(cap)
        } else {
            i = p;
            w_new
        };
        if w != 1.0 {
            out_k[o] = u;
            out_w[o] = w;
            o += 1;
        }
    }
    let rest = keys.len() - i;
    out_k[o..o + rest].copy_from_slice(&keys[i..]);
    out_w[o..o + rest].copy_from_slice(&weights[i..]);
    o + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn potentiate_merges_and_caps() {
        let mut f = FiberLearned::default();
        f.potentiate(3, &[pack(1, 5), pack(2, 0)], 1.5, 2.0);
        assert_eq!(f.weight(1, 3 * BLOCK + 5), 1.5);
        assert_eq!(f.weight(2, 3 * BLOCK), 1.5);
        assert_eq!(f.weight(2, 3 * BLOCK + 1), 1.0);
        f.potentiate(3, &[pack(0, 9), pack(1, 5)], 1.5, 2.0);
        assert_eq!(f.weight(1, 3 * BLOCK + 5), 2.0, "capped at w_max");
        assert_eq!(f.weight(0, 3 * BLOCK + 9), 1.5);
        assert_eq!(f.len(), 3);
        let all: Vec<_> = f.iter().collect();
        assert_eq!(
            all,
            vec![
                (0, 3 * BLOCK + 9, 1.5),
                (1, 3 * BLOCK + 5, 2.0),
                (2, 3 * BLOCK, 1.5)
            ]
        );
        // w_max = 1: nothing is stored.
        let mut g = FiberLearned::default();
        g.potentiate(0, &[pack(1, 1)], 1.5, 1.0);
        assert!(g.is_empty());
    }

    #[test]
    fn corrections_only_for_firing_rows() {
        let mut f = FiberLearned::default();
        f.potentiate(
            0,
            &[pack(1, 5), pack(2, 5), pack(2, 7)],
            1.25,
            f32::INFINITY,
        );
        let mut got = Vec::new();
        f.corrections(0, |r| r == 2, |l, d| got.push((l, d)));
        assert_eq!(got, vec![(5, 0.25), (7, 0.25)]);
    }

    /// The definition: synapse → weight, potentiated one by one.
    fn reference(map: &mut BTreeMap<(u64, u64), f32>, b: u64, keys: &[u64], m: f32, cap: f32) {
        for &k in keys {
            let w = (map.get(&(b, k)).copied().unwrap_or(1.0) * m).min(cap);
            if w == 1.0 {
                map.remove(&(b, k));
            } else {
                map.insert((b, k), w);
            }
        }
    }

    /// Random update groups (sorted by block, keys sorted and distinct).
    fn random_groups(r: &mut crate::rng::Stream, blocks: u64) -> Vec<(u64, Vec<u64>)> {
        let mut groups = Vec::new();
        for b in 0..blocks {
            if r.below(3) == 0 {
                continue;
            }
            let mut keys: Vec<u64> = (0..r.below(40))
                .map(|_| pack(r.below(30), r.below(64) as u32))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            groups.push((b, keys));
        }
        groups
    }

    /// The parallel arena merge equals block-by-block `potentiate` and the
    /// definition (weights bit for bit), over rounds of random updates (new
    /// and stored synapses, caps, weights that return to 1, w_max = 1),
    /// with many small work units, and survives a clone.
    #[test]
    fn potentiate_many_equals_the_definition() {
        let mut r = crate::rng::Stream::new(42);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // (multipliers, cycled by round; cap): ×2 then ×0.5 brings weights back to 1.
        for (ms, cap) in [
            (&[1.25f32][..], f32::INFINITY),
            (&[1.5], 2.0),
            (&[1.1], 1.0),
            (&[2.0, 0.5], 4.0),
        ] {
            let (mut one, mut many) = (FiberLearned::default(), FiberLearned::default());
            let mut def = BTreeMap::new();
            for round in 0..12 {
                let m = ms[round % ms.len()];
                let groups = random_groups(&mut r, 20);
                for (b, keys) in &groups {
                    one.potentiate(*b, keys, m, cap);
                    reference(&mut def, *b, keys, m, cap);
                }
                pool.install(|| many.potentiate_many(&groups, m, cap));
                assert_eq!(one, many, "m {m} cap {cap} round {round}");
                let got: Vec<_> = many
                    .iter()
                    .map(|(row, t, w)| ((t / BLOCK, pack(row, (t % BLOCK) as u32)), w.to_bits()))
                    .collect();
                let want: Vec<_> = def.iter().map(|(&k, w)| (k, w.to_bits())).collect();
                assert_eq!(got, want, "m {m} cap {cap} round {round}");
                assert_eq!(many.len(), def.len());
                assert!(many.ids.iter().enumerate().all(|(i, _)| many.len[i] > 0));
                assert_eq!(many.clone(), many);
            }
        }
        // Work units of a few blocks each.
        let ends: Vec<usize> = (1..=10).map(|i| i * 7).collect();
        let units = chunks(&ends, 20);
        assert_eq!(units, vec![0..3, 3..6, 6..9, 9..10]);
        assert_eq!(chunks(&[], 5), vec![]);
    }

    /// The saved form is the block map `{block: {keys, weights}}` the
    /// checkpoints have always held (same bincode and JSON bytes), and it
    /// reads back; a block with more weights than keys is an error.
    #[test]
    fn saved_form_is_the_block_map() {
        #[derive(serde::Serialize)]
        struct Old {
            blocks: BTreeMap<u64, LearnedBlock>,
        }
        let mut r = crate::rng::Stream::new(5);
        let mut f = FiberLearned::default();
        for _ in 0..3 {
            f.potentiate_many(&random_groups(&mut r, 9), 1.5, 3.0);
        }
        let mut old = Old {
            blocks: BTreeMap::new(),
        };
        for (row, t, w) in f.iter() {
            let blk = old.blocks.entry(t / BLOCK).or_default();
            blk.keys.push(pack(row, (t % BLOCK) as u32));
            blk.weights.push(w);
        }
        assert!(old.blocks.len() > 3);
        use bincode::Options;
        let opts = bincode::DefaultOptions::new();
        let bytes = opts.serialize(&f).unwrap();
        assert_eq!(bytes, opts.serialize(&old).unwrap());
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            serde_json::to_string(&old).unwrap()
        );
        let back: FiberLearned = opts.deserialize(&bytes).unwrap();
        assert_eq!(back, f);
        back.check(20 * BLOCK, 30).unwrap();
        old.blocks.values_mut().next().unwrap().weights.push(2.0);
        let bad = serde_json::to_string(&old).unwrap();
        let e = serde_json::from_str::<FiberLearned>(&bad).unwrap_err();
        assert!(e.to_string().contains("keys but"), "{e}");
    }
}
