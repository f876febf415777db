//! Potentiated synapses: the only connectivity the procedural engine stores.
//!
//! **Key decision: learned weights are grouped by target block**, because
//! that is how they are read: a step processes one target block at a time
//! and needs the learned weights of the firing rows landing in it. Per fiber
//! a `BTreeMap` maps a block to two parallel sorted vectors — the key
//! `row << 16 | local target` (u64; rows < 2⁴⁸) and the weight (f32) — so a
//! synapse costs 12 bytes plus the vectors' slack, and an update is a merge
//! of sorted lists (deterministic, no hashing order anywhere).

use super::rows::{BLOCK, BLOCK_BITS};
use std::collections::BTreeMap;

/// The potentiated synapses of one target block of one fiber.
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
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FiberLearned {
    pub blocks: BTreeMap<u64, LearnedBlock>,
}

impl FiberLearned {
    /// Number of stored synapses.
    pub fn len(&self) -> usize {
        self.blocks.values().map(|b| b.keys.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Bytes held (capacities, plus ~64 bytes of tree node per block).
    pub fn bytes(&self) -> usize {
        self.blocks
            .values()
            .map(|b| b.keys.capacity() * 8 + b.weights.capacity() * 4 + 64 + 48)
            .sum()
    }

    /// Checks what a step relies on, for data read from a file: every
    /// block inside an area of `n` neurons, as many weights as keys, keys
    /// strictly increasing, local targets inside the block, source rows
    /// below `rows`, weights finite and not 1.
    pub fn check(&self, n: u64, rows: u64) -> Result<(), String> {
        for (&b, blk) in &self.blocks {
            let len = n.saturating_sub(b.saturating_mul(BLOCK)).min(BLOCK);
            if len == 0 {
                return Err(format!("block {b} lies beyond n = {n}"));
            }
            if blk.keys.len() != blk.weights.len() || blk.keys.is_empty() {
                return Err(format!(
                    "block {b}: {} keys but {} weights",
                    blk.keys.len(),
                    blk.weights.len()
                ));
            }
            if blk.keys.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("block {b}: keys not strictly increasing"));
            }
            for (&k, &w) in blk.keys.iter().zip(&blk.weights) {
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
        self.blocks
            .get(&b)
            .and_then(|blk| {
                blk.keys
                    .binary_search(&pack(row, local))
                    .ok()
                    .map(|i| blk.weights[i])
            })
            .unwrap_or(1.0)
    }

    /// Every stored synapse as `(row, target, weight)`, in (block, row, target) order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, f32)> + '_ {
        self.blocks.iter().flat_map(|(&b, blk)| {
            blk.keys.iter().zip(&blk.weights).map(move |(&k, &w)| {
                let (row, local) = unpack(k);
                (row, b * BLOCK + local as u64, w)
            })
        })
    }

    /// Potentiates each synapse of `keys` (sorted, distinct; all in block
    /// `b`): `w ← min(w·m, cap)` in f32, from w = 1 for synapses not stored
    /// yet. Weights that end at exactly 1.0 are not stored.
    pub fn potentiate(&mut self, b: u64, keys: &[u64], m: f32, cap: f32) {
        if keys.is_empty() {
            return;
        }
        let out = merge(self.blocks.get(&b), keys, m, cap);
        if out.keys.is_empty() {
            self.blocks.remove(&b);
        } else {
            self.blocks.insert(b, out);
        }
    }

    /// [`Self::potentiate`] for many blocks at once, merged in place and in
    /// parallel: `groups` holds `(block, keys)` sorted by block, distinct
    /// blocks. Same result as potentiating the groups one by one.
    pub fn potentiate_many<K: AsRef<[u64]> + Sync>(
        &mut self,
        groups: &[(u64, K)],
        m: f32,
        cap: f32,
    ) {
        use rayon::prelude::*;
        debug_assert!(groups.windows(2).all(|g| g[0].0 < g[1].0));
        let find = |b: &u64| groups.binary_search_by_key(b, |g| g.0).ok();
        self.blocks.par_iter_mut().for_each(|(b, blk)| {
            if let Some(g) = find(b) {
                merge_in_place(blk, groups[g].1.as_ref(), m, cap);
            }
        });
        for (b, keys) in groups {
            if !self.blocks.contains_key(b) {
                self.blocks.insert(*b, merge(None, keys.as_ref(), m, cap));
            }
        }
        self.blocks.retain(|_, blk| !blk.keys.is_empty());
    }

    /// Calls `f(local, w − 1)` for each stored synapse of block `b` whose
    /// row satisfies `firing`, in key order (row, then target).
    #[inline]
    pub fn corrections(
        &self,
        b: u64,
        mut firing: impl FnMut(u64) -> bool,
        mut f: impl FnMut(u32, f32),
    ) {
        if let Some(blk) = self.blocks.get(&b) {
            let mut last_row = u64::MAX;
            let mut fires = false;
            for (&k, &w) in blk.keys.iter().zip(&blk.weights) {
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
    }
}

/// `blk` (or an empty block) with each synapse of `keys` (sorted, distinct)
/// potentiated: `w ← min(w·m, cap)` in f32, from w = 1 for synapses not
/// stored yet; weights that end at exactly 1.0 are dropped.
fn merge(blk: Option<&LearnedBlock>, keys: &[u64], m: f32, cap: f32) -> LearnedBlock {
    debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let empty = LearnedBlock::default();
    let blk = blk.unwrap_or(&empty);
    let mut out = LearnedBlock {
        keys: Vec::with_capacity(blk.keys.len() + keys.len()),
        weights: Vec::with_capacity(blk.keys.len() + keys.len()),
    };
    let (mut i, mut j) = (0, 0);
    let mut push = |k: u64, w: f32| {
        if w != 1.0 {
            out.keys.push(k);
            out.weights.push(w);
        }
    };
    while i < blk.keys.len() || j < keys.len() {
        let (a, u) = (
            blk.keys.get(i).copied().unwrap_or(u64::MAX),
            keys.get(j).copied().unwrap_or(u64::MAX),
        );
        if a < u {
            push(a, blk.weights[i]);
            i += 1;
        } else if u < a {
            push(u, (1.0f32 * m).min(cap));
            j += 1;
        } else {
            push(a, (blk.weights[i] * m).min(cap));
            i += 1;
            j += 1;
        }
    }
    out.keys.shrink_to_fit();
    out.weights.shrink_to_fit();
    out
}

/// [`merge`] into `blk` itself: existing weights are updated where they
/// stand and new synapses are placed by a merge from the back, so a block
/// that gains a few synapses is not copied.
fn merge_in_place(blk: &mut LearnedBlock, keys: &[u64], m: f32, cap: f32) {
    debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let old = blk.keys.len();
    // Update the synapses already stored; count the new ones.
    let (mut i, mut fresh) = (0, 0);
    for &k in keys {
        while i < old && blk.keys[i] < k {
            i += 1;
        }
        if i < old && blk.keys[i] == k {
            blk.weights[i] = (blk.weights[i] * m).min(cap);
        } else {
            fresh += 1;
        }
    }
    if fresh > 0 {
        let w_new = (1.0f32 * m).min(cap);
        blk.keys.resize(old + fresh, 0);
        blk.weights.resize(old + fresh, 0.0);
        // From the back: stored entries (ia) and new keys (jb) into slot o.
        let (mut ia, mut jb, mut o) = (old, keys.len(), old + fresh);
        while jb > 0 {
            let k = keys[jb - 1];
            if ia > 0 && blk.keys[ia - 1] > k {
                o -= 1;
                ia -= 1;
                blk.keys[o] = blk.keys[ia];
                blk.weights[o] = blk.weights[ia];
            } else if ia > 0 && blk.keys[ia - 1] == k {
                // Already stored (updated above): it moves with the stored run.
                o -= 1;
                ia -= 1;
                blk.keys[o] = blk.keys[ia];
                blk.weights[o] = blk.weights[ia];
                jb -= 1;
            } else {
                o -= 1;
                blk.keys[o] = k;
                blk.weights[o] = w_new;
                jb -= 1;
            }
        }
        debug_assert_eq!(o, ia);
    }
    // Weights that end at exactly 1.0 are not stored.
    if blk.weights.contains(&1.0) {
        let (keys, weights): (Vec<u64>, Vec<f32>) = blk
            .keys
            .iter()
            .zip(&blk.weights)
            .filter(|(_, &w)| w != 1.0)
            .map(|(&k, &w)| (k, w))
            .unzip();
        blk.keys = keys;
        blk.weights = weights;
    }
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

    /// The parallel in-place merge equals block-by-block `potentiate`, over
    /// rounds of random updates (new and stored synapses, caps, w_max = 1).
    #[test]
    fn potentiate_many_equals_potentiate() {
        let mut r = crate::rng::Stream::new(42);
        for (m, cap) in [(1.25f32, f32::INFINITY), (1.5, 2.0), (1.1, 1.0)] {
            let (mut one, mut many) = (FiberLearned::default(), FiberLearned::default());
            for _round in 0..12 {
                let mut groups: Vec<(u64, Vec<u64>)> = Vec::new();
                for b in 0..20u64 {
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
                for (b, keys) in &groups {
                    one.potentiate(*b, keys, m, cap);
                }
                many.potentiate_many(&groups, m, cap);
                assert_eq!(one, many, "m {m} cap {cap}");
            }
        }
    }
}
