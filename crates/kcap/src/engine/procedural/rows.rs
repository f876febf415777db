//! The procedural graph itself: which synapses exist, as a pure function of
//! `(seed, fiber, source row, target block)`.
//!
//! **Key decision: targets are cut into fixed blocks of [`BLOCK`] = 2¹⁶ ids,
//! and each (row, block) pair has its own random stream.** A row is never
//! walked from its start: any block of any row can be regenerated alone, so
//! the engine (or a GPU thread block) generates one block of targets for all
//! firing rows at once and accumulates it in a 2¹⁶-entry on-chip buffer, and
//! Hebbian plasticity regenerates only the blocks that contain winners.
//! 2¹⁶ makes block-local ids u16 (SPEC §4) and a block's u16/u32 counters
//! 128/256 KiB (L2 on a CPU, shared memory on an H100 for u16); it is part
//! of the graph's definition — changing it changes every procedural run.
//!
//! # The recipe (bit for bit; a CUDA kernel must follow it exactly)
//!
//! All integer arithmetic wraps mod 2⁶⁴; `mix64`, `derive`, `word`,
//! `unit_open` are those of [`crate::rng`], `ln_fast` that of
//! [`crate::stats::ln_fast`]; f64 operations are IEEE round-to-nearest with
//! **no fused multiply-add** (compile kernels with `--fmad=false`).
//!
//! ```text
//! fiber key   F = derive(seed, [FIBER_TAG, kind, src, tgt])     kind: 0 stimulus, 1 area
//! row key     R = derive(F, [i])                                 i: source neuron id
//! block key   K = word(R, b) = mix64(R + b·GOLDEN)               b: target block, ids [b·2¹⁶, …)
//! c = 1 / log1p(−p)         (f64, computed once on the host with the portable `libm::log1p`
//!                            and passed to kernels as a value; p = 1 gives c = −0: every target)
//! len = min(2¹⁶, n − b·2¹⁶); pos = 0; t = 0
//! loop:
//!     g = ln_fast(unit_open(word(K, t))) · c;  t += 1        // g ≥ 0: the geometric skip
//!     if g ≥ (len − pos) as f64: stop
//!     pos += trunc(g);  emit target b·2¹⁶ + pos;  pos += 1
//!     if pos ≥ len: stop
//! ```
//!
//! Each target in the block is thus a synapse independently with
//! probability p (up to ln_fast's 2·10⁻¹³ relative error), in increasing
//! order. The fast path ([`SkipTable`]) gives the same bits without the
//! logarithm for ~95 % of draws; it is an optimisation, not part of the
//! definition.

use crate::model::Source;
use crate::rng::{derive, mix64, word, GOLDEN};
use crate::stats::ln_fast;

/// log₂ of the block width.
pub const BLOCK_BITS: u32 = 16;
/// Width of a target block: the unit of regeneration (part of the graph).
pub const BLOCK: u64 = 1 << BLOCK_BITS;
/// First word of every procedural fiber key ("proc"), so procedural graphs
/// share no stream with any other draw of the brain.
pub const FIBER_TAG: u64 = 0x7072_6f63;

/// The key of fiber `src → tgt` of a brain with `seed`.
pub fn fiber_key(seed: u64, src: Source, tgt: usize) -> u64 {
    let (kind, idx) = match src {
        Source::Stim(s) => (0, s as u64),
        Source::Area(a) => (1, a as u64),
    };
    derive(seed, &[FIBER_TAG, kind, idx, tgt as u64])
}

/// The key of source row `i` in the fiber with key `fiber`.
#[inline]
pub fn row_key(fiber: u64, i: u64) -> u64 {
    derive(fiber, &[i])
}

/// The key of block `b` of a row.
#[inline(always)]
pub fn block_key(row: u64, b: u64) -> u64 {
    word(row, b)
}

/// `c = 1 / ln(1 − p)` by the portable `libm::log1p` (−0 for p = 1).
pub fn skip_scale(p: f64) -> f64 {
    1.0 / libm::log1p(-p)
}

/// Number of target blocks of an area of `n` neurons.
#[inline]
pub fn block_count(n: u64) -> u64 {
    n.div_ceil(BLOCK)
}

/// Width of block `b` of an area of `n` neurons.
#[inline]
pub fn block_len(n: u64, b: u64) -> u32 {
    (n - b * BLOCK).min(BLOCK) as u32
}

/// `unit_open` with the conversion through i64 (the value is < 2⁵³, so the
/// result is bitwise that of [`crate::rng::unit_open`], one instruction cheaper).
#[inline(always)]
fn unit_open_i(bits: u64) -> f64 {
    ((bits >> 11) as i64 as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Calls `f(local)` for every target of block `b` (width `len`) of the row
/// with key `row`, in increasing order: the reference recipe, written
/// plainly (see the module header).
pub fn block_targets_ref(row: u64, b: u64, len: u32, c: f64, mut f: impl FnMut(u32)) {
    let k = block_key(row, b);
    let len = len as u64;
    let mut pos = 0u64;
    let mut t = 0u64;
    loop {
        let g = ln_fast(crate::rng::unit_open(word(k, t))) * c;
        t += 1;
        if g >= (len - pos) as f64 {
            return;
        }
        pos += g as u64;
        f(pos as u32);
        pos += 1;
        if pos >= len {
            return;
        }
    }
}

/// Regenerates the out-synapses of source neuron `i` of fiber `src → tgt`
/// (connection probability `p`, target area of `n_tgt` neurons) that land in
/// target block `block`, calling `f(target id)` in increasing order. The
/// whole row is the concatenation over `block in 0..block_count(n_tgt)`.
#[allow(clippy::too_many_arguments)]
pub fn row_targets(
    seed: u64,
    src: Source,
    tgt: usize,
    i: u64,
    n_tgt: u64,
    p: f64,
    block: u64,
    mut f: impl FnMut(u64),
) {
    assert!(
        block < block_count(n_tgt),
        "block {block} out of range for n = {n_tgt}"
    );
    let rk = row_key(fiber_key(seed, src, tgt), i);
    let base = block * BLOCK;
    block_targets_ref(rk, block, block_len(n_tgt, block), skip_scale(p), |l| {
        f(base + l as u64)
    });
}

/// Bits of the table index of a [`SkipTable`].
const MAX_TABLE_BITS: u32 = 16;
/// Table entry meaning "compute the logarithm".
const SLOW: u16 = u16::MAX;

/// The geometric skip for most draws without a logarithm.
///
/// The skip `floor(ln_fast(u)·c)` is a non-increasing step function of the
/// draw's top bits. The table has one entry per bin of the top `bits` bits
/// of the 64-bit word; where the skip is the same at both ends of a bin (so,
/// by monotonicity, everywhere inside) the entry holds it, else a "slow" mark.
/// Bins that contain a √2·2⁻ᵉ point — where `ln_fast` switches branches and
/// could be off monotone by an ulp — are always slow, as are skips ≥ 65535.
/// Exactness against [`block_targets_ref`] is tested.
#[derive(Clone, Debug)]
pub struct SkipTable {
    bits: u32,
    table: Vec<u16>,
    c: f64,
}

impl SkipTable {
    /// The table for connection probability `p` ∈ (0, 1].
    pub fn new(p: f64) -> SkipTable {
        // Bins much narrower than the skip's step (≈ p·u wide near u): 2¹⁵
        // bins leave ~2 % of draws slow at p = 0.01, 2¹⁶ ~8 % at p = 10⁻³.
        SkipTable::with_bits(p, SkipTable::bits_for(p))
    }

    /// The table over the top `bits` (1..=16) bits of the draw: fewer bits,
    /// a smaller table (a GPU keeps it in shared memory) and more slow draws;
    /// exact for any `bits`.
    pub fn with_bits(p: f64, bits: u32) -> SkipTable {
        SkipTable::with_scale(skip_scale(p), bits)
    }

    /// Index bits [`SkipTable::new`] uses for connection probability `p`.
    pub fn bits_for(p: f64) -> u32 {
        if p >= 0.004 {
            15
        } else {
            MAX_TABLE_BITS
        }
    }

    /// The table of the skips `floor(ln_fast(u)·c)` for a scale `c` < 0
    /// given as a value: a recipe that computes 1/ln(1−p) another way
    /// (e.g. with `f64::ln_1p`, possibly an ulp away from [`skip_scale`])
    /// gets a table exact for its own `c`.
    pub fn with_scale(c: f64, bits: u32) -> SkipTable {
        assert!(
            (1..=MAX_TABLE_BITS).contains(&bits),
            "table bits {bits} not in 1..=16"
        );
        let n = 1usize << bits;
        let sh = 64 - bits;
        let skip = |w: u64| (ln_fast(crate::rng::unit_open(w)) * c).floor();
        let mut table = vec![SLOW; n];
        // The points √2·2⁻ᵉ where ln_fast halves its mantissa, increasing
        // (e ≤ 60 covers every bin j ≥ 1: unit_open(lo) ≥ 2⁻¹⁶ there).
        let switches: Vec<f64> = (0..=60)
            .rev()
            .map(|e| std::f64::consts::SQRT_2 * 0.5f64.powi(e))
            .collect();
        let mut next = 0;
        for (j, entry) in table.iter_mut().enumerate().skip(1) {
            let lo = (j as u64) << sh;
            let hi = lo | ((1u64 << sh) - 1);
            let (ulo, uhi) = (crate::rng::unit_open(lo), crate::rng::unit_open(hi));
            // Is a switch point inside the bin? (Bins increase with j, so
            // one cursor walks the points once.)
            while next < switches.len() && switches[next] < ulo {
                next += 1;
            }
            if next < switches.len() && switches[next] <= uhi {
                continue;
            }
            let (a, b) = (skip(lo), skip(hi));
            if a == b && a < SLOW as f64 {
                *entry = a as u16;
            }
        }
        SkipTable { bits, table, c }
    }

    /// The scale `c = 1/ln(1−p)` of this table.
    pub fn scale(&self) -> f64 {
        self.c
    }

    /// Index bits and entries (a skip, or `u16::MAX`: take the logarithm),
    /// for a device that walks rows with the same table.
    pub fn entries(&self) -> (u32, &[u16]) {
        (self.bits, &self.table)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.table.len() * 2
    }

    /// Share of table bins resolved without a logarithm.
    pub fn resolved(&self) -> f64 {
        self.table.iter().filter(|&&e| e != SLOW).count() as f64 / self.table.len() as f64
    }

    /// The skip of the draw with 64 random bits `w` (uniform
    /// `unit_open(w)`) when `rem` ≥ 1 positions remain: `floor(ln_fast(u)·c)`
    /// if that is below `rem`, else a value ≥ `rem` (the walk ends).
    #[inline(always)]
    pub fn skip(&self, w: u64, rem: u64) -> u64 {
        skip(&self.table, 64 - self.bits, self.c, w, rem)
    }

    /// Starts the walk of a block (key `block_key(row, b)`, width `len`):
    /// returns the cursor `(counter, next target)`, where next = [`DONE`]
    /// if the row has no target in the block.
    #[inline(always)]
    pub fn start(&self, key: u64, len: u32) -> (u64, u32) {
        let s = skip(&self.table, 64 - self.bits, self.c, mix64(key), len as u64);
        if s < len as u64 {
            (key.wrapping_add(GOLDEN), s as u32)
        } else {
            (key, DONE)
        }
    }

    /// Emits the targets of a started walk that lie below `end` (≤ len), in
    /// increasing order, and leaves the cursor on the first target ≥ `end`
    /// (or [`DONE`]). Resuming with a larger `end` continues the same
    /// sequence, so a block can be swept in sub-ranges.
    #[inline(always)]
    pub fn advance(
        &self,
        ctr: &mut u64,
        next: &mut u32,
        len: u32,
        end: u32,
        mut f: impl FnMut(u32),
    ) {
        // Locals, so that the stores of `f` cannot alias them (kept in registers).
        let (table, sh, c) = (&self.table[..], 64 - self.bits, self.c);
        let len = len as u64;
        let (mut k, mut nx) = (*ctr, *next);
        while nx < end {
            f(nx);
            let pos = nx as u64 + 1;
            // (At pos = len the recipe stops without a draw; drawing anyway
            // gives a skip ≥ 0 = rem, the same stop: only the dead counter differs.)
            let w = mix64(k);
            k = k.wrapping_add(GOLDEN);
            let np = pos + skip(table, sh, c, w, len - pos);
            if np >= len {
                nx = DONE;
                break;
            }
            nx = np as u32;
        }
        *ctr = k;
        *next = nx;
    }

    /// [`block_targets_ref`] for the block with key `key` (= `block_key(row, b)`),
    /// bitwise the same targets, faster. Returns the number of targets.
    #[inline(always)]
    pub fn walk(&self, key: u64, len: u32, mut f: impl FnMut(u32)) -> u32 {
        let (mut c, mut nx) = self.start(key, len);
        let mut count = 0;
        self.advance(&mut c, &mut nx, len, len, |l| {
            count += 1;
            f(l)
        });
        count
    }
}

/// Cursor value of a walk that has no further target.
pub const DONE: u32 = u32::MAX;

/// The skip `floor(ln_fast(u)·c)` of draw `w` from `table` (index: the top
/// `64 − sh` bits), or `rem` when the walk ends (skip ≥ rem). Table skips
/// are < 2¹⁶, so `pos + skip` never overflows.
#[inline(always)]
fn skip(table: &[u16], sh: u32, c: f64, w: u64, rem: u64) -> u64 {
    // SAFETY: w >> sh < 2^(64−sh) = table.len().
    let e = unsafe { *table.get_unchecked((w >> sh) as usize) };
    if e != SLOW {
        return e as u64;
    }
    let g = ln_fast(unit_open_i(w)) * c;
    if g >= rem as i64 as f64 {
        return rem;
    }
    g as i64 as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn unit_open_through_i64_is_bitwise() {
        let mut r = Stream::new(5);
        for _ in 0..100_000 {
            let w = rand::RngCore::next_u64(&mut r);
            assert_eq!(unit_open_i(w).to_bits(), crate::rng::unit_open(w).to_bits());
        }
        for w in [0, u64::MAX, 1 << 63, (1 << 11) - 1] {
            assert_eq!(unit_open_i(w).to_bits(), crate::rng::unit_open(w).to_bits());
        }
    }

    /// The table walk must reproduce the reference recipe exactly, for many
    /// rows, p values (both table sizes, p = 1, tiny p) and block widths.
    #[test]
    fn table_walk_matches_reference_recipe() {
        for &p in &[1.0, 0.3, 0.05, 0.01, 0.004, 0.0039, 1e-3, 1e-4, 2e-5] {
            let tab = SkipTable::new(p);
            let c = skip_scale(p);
            for row in 0..300u64 {
                let rk = row_key(fiber_key(9, Source::Area(1), 2), row);
                for (b, len) in [(0u64, BLOCK as u32), (7, BLOCK as u32), (3, 1000), (11, 1)] {
                    let mut want = Vec::new();
                    block_targets_ref(rk, b, len, c, |l| want.push(l));
                    let mut got = Vec::new();
                    let n = tab.walk(block_key(rk, b), len, |l| got.push(l));
                    assert_eq!(got, want, "p {p} row {row} block {b} len {len}");
                    assert_eq!(n as usize, got.len());
                }
            }
        }
    }

    /// Narrower tables (as a GPU keeps in shared memory) are exact too.
    #[test]
    fn narrow_tables_match_reference_recipe() {
        for &p in &[0.01, 1e-3, 1e-4] {
            let c = skip_scale(p);
            for bits in [8, 12, 14, 15] {
                let tab = SkipTable::with_bits(p, bits);
                assert_eq!(tab.entries().1.len(), 1 << bits);
                for row in 0..60u64 {
                    let rk = row_key(fiber_key(4, Source::Stim(0), 1), row);
                    let mut want = Vec::new();
                    block_targets_ref(rk, 5, BLOCK as u32, c, |l| want.push(l));
                    let mut got = Vec::new();
                    tab.walk(block_key(rk, 5), BLOCK as u32, |l| got.push(l));
                    assert_eq!(got, want, "p {p} bits {bits} row {row}");
                }
            }
        }
    }

    /// Sweeping a block in sub-ranges (resuming cursors) gives the same targets.
    #[test]
    fn resumed_sweeps_match_whole_walk() {
        for &p in &[0.5, 0.01, 1e-3] {
            let tab = SkipTable::new(p);
            for row in 0..200u64 {
                let key = block_key(row_key(3, row), 1);
                for len in [BLOCK as u32, 5000] {
                    let mut want = Vec::new();
                    tab.walk(key, len, |l| want.push(l));
                    let (mut c, mut nx) = tab.start(key, len);
                    let mut got = Vec::new();
                    let mut end = 0;
                    while end < len {
                        end = (end + 777).min(len);
                        tab.advance(&mut c, &mut nx, len, end, |l| {
                            assert!(l < end);
                            got.push(l)
                        });
                    }
                    assert_eq!(nx, DONE);
                    assert_eq!(got, want, "p {p} row {row} len {len}");
                }
            }
        }
    }

    #[test]
    fn p_one_is_complete() {
        let mut got = Vec::new();
        row_targets(1, Source::Stim(0), 0, 5, 70_000, 1.0, 1, |j| got.push(j));
        assert_eq!(got, (BLOCK..70_000).collect::<Vec<_>>());
    }

    #[test]
    fn table_resolves_most_draws() {
        for (p, want) in [(0.01, 0.95), (0.001, 0.85)] {
            let r = SkipTable::new(p).resolved();
            eprintln!("p = {p}: {:.1} % of draws without a logarithm", r * 100.0);
            assert!(r > want, "p {p}: {r}");
        }
    }
}
