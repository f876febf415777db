//! Stored connectivity between explicit areas (SPEC §3.2) in the formats of
//! SPEC §4: a [`PackedFiber`].
//!
//! Key decisions:
//! - **The graph does not depend on the format.** Row i's synapses inside
//!   column block b (65 536 targets wide) are drawn (a binomial count, then
//!   a uniform subset: [`RowGen`]) from the stream keyed
//!   (seed, GRAPH, fiber, i, b); every layout stores that
//!   same set, so every format can be compared with the f32 reference on the
//!   same graph, and any thread count builds the same graph.
//! - **Rows are stored in chunks** of [`ROWS`] rows, generated in parallel,
//!   each chunk with its own offsets — no global concatenation, no 2× peak.
//! - One generic body per operation; the weight format is dispatched once per
//!   row by the `with_weights!` macro (monomorphised loops).

use crate::error::{KcapError, Result};
use crate::format::weights::{potentiate_half, LogU8, Update};
use crate::format::{Accumulator, FiberFormat, IndexFormat, Layout, WeightFormat, FIXED_FRAC_BITS};
use crate::rng::{derive, purpose, word, Stream};
use half::{bf16, f16};
use rayon::prelude::*;

mod device;
pub use device::{generation_plan, DeviceFiber, FiberParts, GenSpec, PartIdx, PartWeights};

/// Rows per chunk.
pub const ROWS: usize = 1024;
/// Width of a column block (the unit of generation and of u16 indices).
pub const BLOCK: u64 = 1 << 16;

/// Stored weights of one chunk.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Weights {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    LogU8(Vec<u8>),
    /// No per-synapse weight (bit format): learned weights in the side table.
    None,
}

/// Stored targets of one chunk.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Targets {
    /// `ptr[r]..ptr[r+1]` are row r's synapses (absolute target ids).
    U32 { ptr: Vec<u32>, idx: Vec<u32> },
    /// `seg[r·nb + b]..seg[r·nb + b + 1]`: row r's synapses in block b, as
    /// offsets within the block.
    U16 { seg: Vec<u32>, idx: Vec<u16> },
    /// `words` u64 per row, one bit per target.
    Bitmap { words: usize, bits: Vec<u64> },
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Chunk {
    targets: Targets,
    weights: Weights,
}

/// A fiber between two explicit areas in a chosen [`FiberFormat`].
///
/// Its synapses live either in host memory (`chunks`) or, when a backend
/// holds them (`device`, see [`DeviceFiber`]), in that backend's memory;
/// then `chunks` is empty and every operation goes to the device. Saving
/// (serde) downloads a device fiber; a clone of one shares its storage.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct PackedFiber {
    pub format: FiberFormat,
    pub n_src: u64,
    pub n_tgt: u64,
    pub p: f64,
    /// Key of the fiber's streams (graph and stochastic rounding).
    pub key: u64,
    chunks: Vec<Chunk>,
    /// Learned weights of the bit format: per row, sorted (target, weight).
    side: std::collections::HashMap<u32, Vec<(u32, f32)>>,
    /// The log-u8 code (for β fixed at creation).
    log: Option<LogU8>,
    synapses: u64,
    /// The fiber's storage when a backend holds it (then `chunks` is empty).
    #[serde(skip)]
    device: Option<std::sync::Arc<dyn DeviceFiber>>,
}

macro_rules! with_weights {
    ($w:expr, |$get:ident| $body:expr) => {
        match $w {
            Weights::F32(v) => {
                let $get = |s: usize| v[s];
                $body
            }
            Weights::F16(v) => {
                let $get = |s: usize| v[s].to_f32();
                $body
            }
            Weights::Bf16(v) => {
                let $get = |s: usize| v[s].to_f32();
                $body
            }
            Weights::LogU8(_) => unreachable!("log-u8 weights are decoded through their table"),
            Weights::None => {
                let $get = |_s: usize| 1.0f32;
                $body
            }
        }
    };
}

impl PackedFiber {
    /// Generates the fiber `n_src → n_tgt` with connection probability `p`.
    /// `beta` and `w_max` fix the log-u8 code. Errors on an invalid format.
    pub fn generate(
        seed: u64,
        fiber: u64,
        n_src: u64,
        n_tgt: u64,
        p: f64,
        format: FiberFormat,
        beta: f64,
        w_max: Option<f64>,
    ) -> Result<PackedFiber> {
        format.validate(n_tgt)?;
        if n_src > u32::MAX as u64 || n_tgt > u32::MAX as u64 {
            return Err(KcapError::Unsupported(format!(
                "explicit fibers hold at most 2^32 neurons per side ({n_src} -> {n_tgt}); use the lazy or procedural engine"
            )));
        }
        let key = derive(seed, &[purpose::GRAPH, fiber]);
        let n_chunks = (n_src as usize).div_ceil(ROWS);
        let chunks: Vec<Chunk> = (0..n_chunks)
            .into_par_iter()
            .map_init(
                || RowGen::new(key, n_tgt, p),
                |gen, c| {
                    let r0 = c * ROWS;
                    let targets = gen.chunk(r0, ROWS.min(n_src as usize - r0), format);
                    let count = match &targets {
                        Targets::U32 { idx, .. } => idx.len(),
                        Targets::U16 { idx, .. } => idx.len(),
                        Targets::Bitmap { .. } => 0,
                    };
                    let weights = match format.weights {
                        WeightFormat::F32 => Weights::F32(vec![1.0; count]),
                        WeightFormat::F16 => Weights::F16(vec![f16::ONE; count]),
                        WeightFormat::Bf16 => Weights::Bf16(vec![bf16::ONE; count]),
                        WeightFormat::LogU8 => Weights::LogU8(vec![0; count]),
                        WeightFormat::Bit => Weights::None,
                    };
                    Chunk { targets, weights }
                },
            )
            .collect();
        let synapses = chunks
            .iter()
            .map(|c| match &c.targets {
                Targets::U32 { idx, .. } => idx.len() as u64,
                Targets::U16 { idx, .. } => idx.len() as u64,
                Targets::Bitmap { bits, .. } => bits.iter().map(|w| w.count_ones() as u64).sum(),
            })
            .sum();
        let log = (format.weights == WeightFormat::LogU8).then(|| LogU8::new(beta, w_max));
        Ok(PackedFiber {
            format,
            n_src,
            n_tgt,
            p,
            key,
            chunks,
            side: Default::default(),
            log,
            synapses,
            device: None,
        })
    }

    /// Checks a fiber read from outside (a checkpoint) for everything the
    /// engine relies on without checking: sizes and format as expected by
    /// the brain, chunk shapes, monotone offsets, targets below `n_tgt`,
    /// one weight per stored synapse, a log-u8 code as [`LogU8::new`] makes
    /// it, and side-table entries inside the fiber. `Err` says what is wrong.
    pub(crate) fn validate(&self, n_src: u64, n_tgt: u64) -> std::result::Result<(), String> {
        if (self.n_src, self.n_tgt) != (n_src, n_tgt) {
            return Err(format!(
                "fiber of {} x {} neurons between areas of {n_src} and {n_tgt}",
                self.n_src, self.n_tgt
            ));
        }
        self.format.validate(n_tgt).map_err(|e| e.to_string())?;
        if n_src > u32::MAX as u64 || n_tgt > u32::MAX as u64 || !(self.p > 0.0 && self.p <= 1.0) {
            return Err(format!("bad fiber parameters (p = {})", self.p));
        }
        let nb = n_tgt.div_ceil(BLOCK) as usize;
        if self.chunks.len() != (n_src as usize).div_ceil(ROWS) {
            return Err(format!("{} row chunks for {n_src} rows", self.chunks.len()));
        }
        let offsets_ok = |off: &[u32], len: usize, end: usize| {
            off.len() == len
                && off.first() == Some(&0)
                && off.windows(2).all(|w| w[0] <= w[1])
                && off.last().map(|&e| e as usize) == Some(end)
        };
        let mut synapses = 0u64;
        for (c, chunk) in self.chunks.iter().enumerate() {
            let rows = ROWS.min(n_src as usize - c * ROWS);
            let count = match (&chunk.targets, self.format.layout, self.format.indices) {
                (Targets::U32 { ptr, idx }, Layout::Csr, IndexFormat::U32) => {
                    if !offsets_ok(ptr, rows + 1, idx.len())
                        || idx.iter().any(|&j| j as u64 >= n_tgt)
                    {
                        return Err(format!("chunk {c}: bad u32 rows"));
                    }
                    idx.len()
                }
                (Targets::U16 { seg, idx }, Layout::Csr, IndexFormat::U16) => {
                    if !offsets_ok(seg, rows * nb + 1, idx.len()) {
                        return Err(format!("chunk {c}: bad u16 segments"));
                    }
                    // Only the last block of a row is narrower than BLOCK.
                    let last = n_tgt - (nb as u64 - 1) * BLOCK;
                    for l in 0..rows {
                        let s = seg[l * nb + nb - 1] as usize..seg[l * nb + nb] as usize;
                        if idx[s].iter().any(|&o| o as u64 >= last) {
                            return Err(format!("chunk {c}: u16 target beyond the area"));
                        }
                    }
                    idx.len()
                }
                (Targets::Bitmap { words, bits }, Layout::Bitmap, _) => {
                    let w = (n_tgt as usize).div_ceil(64);
                    if *words != w || bits.len() != w * rows {
                        return Err(format!("chunk {c}: bad bitmap shape"));
                    }
                    let tail = n_tgt % 64;
                    if tail != 0 && bits.chunks(w).any(|r| r[w - 1] >> tail != 0) {
                        return Err(format!("chunk {c}: bitmap target beyond the area"));
                    }
                    synapses += bits.iter().map(|b| b.count_ones() as u64).sum::<u64>();
                    0
                }
                _ => return Err(format!("chunk {c}: targets do not match the format")),
            };
            synapses += count as u64;
            let weights_ok = match (&chunk.weights, self.format.weights) {
                (Weights::F32(v), WeightFormat::F32) => v.len() == count,
                (Weights::F16(v), WeightFormat::F16) => v.len() == count,
                (Weights::Bf16(v), WeightFormat::Bf16) => v.len() == count,
                (Weights::LogU8(v), WeightFormat::LogU8) => v.len() == count,
                (Weights::None, WeightFormat::Bit) => true,
                _ => false,
            };
            if !weights_ok {
                return Err(format!(
                    "chunk {c}: weights do not match the format or the synapses"
                ));
            }
        }
        if synapses != self.synapses {
            return Err(format!(
                "{} synapses recorded, {synapses} stored",
                self.synapses
            ));
        }
        match (&self.log, self.format.weights) {
            (None, w) if w != WeightFormat::LogU8 => {}
            (Some(l), WeightFormat::LogU8) => {
                let beta_ok = l.beta >= 0.0 && l.beta.is_finite();
                let w_ok = l.w_max.is_none_or(|w| w >= 1.0);
                if !(beta_ok && w_ok) {
                    return Err("bad log-u8 parameters".into());
                }
                let fresh = LogU8::new(l.beta, l.w_max);
                let same = fresh.max_code == l.max_code
                    && fresh.table.len() == l.table.len()
                    && fresh
                        .table
                        .iter()
                        .zip(&l.table)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                if !same {
                    return Err("log-u8 table does not match its beta".into());
                }
            }
            _ => return Err("log-u8 code does not match the format".into()),
        }
        for (&r, entries) in &self.side {
            let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0);
            if r as u64 >= n_src || !sorted || entries.iter().any(|e| e.0 as u64 >= n_tgt) {
                return Err(format!("bad learned-weight entries of row {r}"));
            }
        }
        Ok(())
    }

    /// Number of stored synapses.
    pub fn synapses(&self) -> u64 {
        self.synapses
    }

    /// Bytes held (targets, weights, segment tables, side table).
    pub fn bytes(&self) -> usize {
        let side = self
            .side
            .values()
            .map(|v| 24 + v.capacity() * 8)
            .sum::<usize>();
        if let Some(d) = &self.device {
            return d.bytes() + side;
        }
        let chunks: usize = self
            .chunks
            .iter()
            .map(|c| {
                let t = match &c.targets {
                    Targets::U32 { ptr, idx } => ptr.capacity() * 4 + idx.capacity() * 4,
                    Targets::U16 { seg, idx } => seg.capacity() * 4 + idx.capacity() * 2,
                    Targets::Bitmap { bits, .. } => bits.capacity() * 8,
                };
                let w = match &c.weights {
                    Weights::F32(v) => v.capacity() * 4,
                    Weights::F16(v) => v.capacity() * 2,
                    Weights::Bf16(v) => v.capacity() * 2,
                    Weights::LogU8(v) => v.capacity(),
                    Weights::None => 0,
                };
                t + w
            })
            .sum();
        chunks + side
    }

    /// The learned weights of bit-weight rows: row → sorted (target, weight).
    pub fn side(&self) -> &std::collections::HashMap<u32, Vec<(u32, f32)>> {
        &self.side
    }

    /// The side-table entries of the rows of `firing`, for a device fiber's
    /// accumulation ([`DeviceFiber::accumulate`]): `None` when there are
    /// none; else `firing.len() + 1` offsets (row f's entries are
    /// `off[f]..off[f + 1]` of what follows), then the entries as
    /// `target << 32 | bits of (w - 1)` — the correction the host adds.
    pub fn side_rows(&self, firing: &[u32]) -> Option<Vec<u64>> {
        if self.side.is_empty() {
            return None;
        }
        let rows: Vec<&[(u32, f32)]> = firing
            .iter()
            .map(|i| self.side.get(i).map_or(&[][..], |v| v.as_slice()))
            .collect();
        let total: usize = rows.iter().map(|r| r.len()).sum();
        if total == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(firing.len() + 1 + total);
        let mut at = 0u64;
        out.push(0);
        for r in &rows {
            at += r.len() as u64;
            out.push(at);
        }
        for r in &rows {
            out.extend(
                r.iter()
                    .map(|&(j, w)| (j as u64) << 32 | (w - 1.0).to_bits() as u64),
            );
        }
        Some(out)
    }

    /// The log-u8 base β, when the fiber stores log codes.
    pub fn log_beta(&self) -> Option<f64> {
        self.log.as_ref().map(|l| l.beta)
    }

    /// Calls `f(slot, target)` for each synapse of row `r` (slot = position
    /// in the chunk's weight array; `usize::MAX` for bitmap rows).
    #[inline]
    fn for_row(&self, r: usize, mut f: impl FnMut(usize, u64)) {
        let c = &self.chunks[r / ROWS];
        let l = r % ROWS;
        match &c.targets {
            Targets::U32 { ptr, idx } => {
                for s in ptr[l] as usize..ptr[l + 1] as usize {
                    f(s, idx[s] as u64);
                }
            }
            Targets::U16 { seg, idx } => {
                let nb = self.n_tgt.div_ceil(BLOCK) as usize;
                for b in 0..nb {
                    let base = b as u64 * BLOCK;
                    for s in seg[l * nb + b] as usize..seg[l * nb + b + 1] as usize {
                        f(s, base + idx[s] as u64);
                    }
                }
            }
            Targets::Bitmap { words, bits } => {
                for (wi, &w) in bits[l * words..(l + 1) * words].iter().enumerate() {
                    let mut w = w;
                    while w != 0 {
                        f(usize::MAX, ((wi as u64) << 6) | w.trailing_zeros() as u64);
                        w &= w - 1;
                    }
                }
            }
        }
    }

    /// Adds the weighted rows of `firing` into `inputs` (len n_tgt), in
    /// firing order, with the fiber's accumulator. Errors only from a device
    /// that holds the fiber.
    pub fn accumulate(&self, firing: &[u32], inputs: &mut [f32]) -> Result<()> {
        assert_eq!(inputs.len() as u64, self.n_tgt, "input buffer length");
        if let Some(d) = &self.device {
            return d.accumulate(firing, self.side_rows(firing).as_deref(), inputs);
        }
        match self.format.accumulator {
            Accumulator::F32 => {
                for &i in firing {
                    self.add_row(i as usize, |j, w| inputs[j as usize] += w);
                }
            }
            Accumulator::Fixed => {
                let scale = (1u64 << FIXED_FRAC_BITS) as f32;
                let mut acc = vec![0i64; inputs.len()];
                for &i in firing {
                    // Weights are positive, so saturating at i64::MAX keeps the
                    // sum independent of the order (huge weights: no wrap).
                    self.add_row(i as usize, |j, w| {
                        let a = &mut acc[j as usize];
                        *a = a.saturating_add((w * scale).round() as i64)
                    });
                }
                for (x, a) in inputs.iter_mut().zip(acc) {
                    *x += (a as f64 / (1u64 << FIXED_FRAC_BITS) as f64) as f32;
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn add_row(&self, r: usize, mut add: impl FnMut(u64, f32)) {
        let c = &self.chunks[r / ROWS];
        match (&c.weights, &self.log) {
            (Weights::LogU8(v), Some(log)) => self.for_row(r, |s, j| add(j, log.decode(v[s]))),
            (w, _) => with_weights!(w, |get| self
                .for_row(r, |s, j| add(j, if s == usize::MAX { 1.0 } else { get(s) }))),
        }
        if let Some(side) = self.side.get(&(r as u32)) {
            for &(j, w) in side {
                add(j as u64, w - 1.0);
            }
        }
    }

    /// Hebbian update of every synapse from a row in `firing` into a target
    /// in `is_winner` (bit set over targets). `step` keys stochastic rounding.
    /// Errors if a log-u8 fiber is asked to use a β other than its own.
    pub fn hebbian(
        &mut self,
        firing: &[u32],
        is_winner: &[u64],
        beta: f64,
        w_max: Option<f64>,
        step: u64,
    ) -> Result<()> {
        if beta == 0.0 {
            return Ok(());
        }
        if let Some(log) = &self.log {
            if log.beta != beta {
                return Err(KcapError::Unsupported(format!(
                    "this fiber stores log-u8 weights for beta = {} and cannot apply beta = {beta}: \
                     choose weights = \"f32\", \"f16\" or \"bf16\" for fibers whose beta changes",
                    log.beta
                )));
            }
        }
        let u = Update {
            mult: (1.0 + beta) as f32,
            cap: w_max.map_or(f32::INFINITY, |c| c as f32),
        };
        let hit = |j: u64| is_winner[(j >> 6) as usize] >> (j & 63) & 1 == 1;
        let stochastic = self.format.rounding == crate::format::Rounding::Stochastic;
        let sr_key = derive(self.key, &[purpose::STOCHASTIC_ROUNDING, step]);
        let bit_weights = self.format.weights == WeightFormat::Bit;
        if let Some(d) = &self.device {
            if !bit_weights {
                return d.hebbian(firing, is_winner, u, stochastic, sr_key);
            }
            // The device lists the synapses onto winners; the side table
            // learns them here, row by row in firing order as below.
            let mut hits = d.hits(firing, is_winner)?;
            // A row that fires twice is listed twice: once per occurrence.
            hits.sort_unstable();
            hits.dedup();
            for &i in firing {
                let lo = hits.partition_point(|&h| h >> 32 < i as u64);
                let hi = hits.partition_point(|&h| h >> 32 <= i as u64);
                let targets = hits[lo..hi].iter().map(|&h| h as u32 as u64);
                learn(self.side.entry(i).or_default(), targets, u);
            }
            return Ok(());
        }
        for &i in firing {
            let r = i as usize;
            // Collect slots (or targets, for bit weights) to update.
            let mut slots: Vec<(usize, u64)> = Vec::new();
            self.for_row(r, |s, j| {
                if hit(j) {
                    slots.push((s, j));
                }
            });
            if bit_weights {
                learn(
                    self.side.entry(i).or_default(),
                    slots.iter().map(|s| s.1),
                    u,
                );
                continue;
            }
            let row_key = derive(sr_key, &[i as u64]);
            let chunk = &mut self.chunks[r / ROWS];
            for (n, &(s, _)) in slots.iter().enumerate() {
                let bits = word(row_key, n as u64);
                match &mut chunk.weights {
                    Weights::F32(v) => v[s] = (v[s] * u.mult).min(u.cap),
                    Weights::F16(v) => v[s] = potentiate_half(v[s], u, stochastic, bits),
                    Weights::Bf16(v) => v[s] = potentiate_half(v[s], u, stochastic, bits),
                    Weights::LogU8(v) => {
                        v[s] = self.log.as_ref().expect("log code").potentiate(v[s])
                    }
                    Weights::None => {}
                }
            }
        }
        Ok(())
    }

    /// All (target, weight) of row `r` (tests and reports).
    /// A device fiber is downloaded first (slow: tests and reports only).
    pub fn row(&self, r: usize) -> Vec<(u64, f32)> {
        if self.device.is_some() {
            return self.to_host().expect("downloading a device fiber").row(r);
        }
        let mut out = Vec::new();
        self.add_row(r, |j, w| out.push((j, w)));
        // Merge side-table corrections into the base weights.
        out.sort_by_key(|e| e.0);
        let mut merged: Vec<(u64, f32)> = Vec::with_capacity(out.len());
        for (j, w) in out {
            match merged.last_mut() {
                Some(last) if last.0 == j => last.1 += w,
                _ => merged.push((j, w)),
            }
        }
        merged
    }
}

/// Potentiates the synapses onto `targets` of one bit-weight row whose
/// learned weights are `side` (sorted by target; a synapse not in it has
/// weight 1).
fn learn(side: &mut Vec<(u32, f32)>, targets: impl Iterator<Item = u64>, u: Update) {
    for j in targets {
        match side.binary_search_by_key(&(j as u32), |e| e.0) {
            Ok(pos) => side[pos].1 = (side[pos].1 * u.mult).min(u.cap),
            Err(pos) => side.insert(pos, (j as u32, u.mult.min(u.cap))),
        }
    }
}

/// Regenerates rows of one fiber, block by block.
///
/// Recipe for row i, block b (len = min(65 536, n_tgt − 65 536·b) targets):
/// with the stream keyed (fiber key, i, b), draw the synapse count
/// c ~ Binomial(len, p) (exact, BTPE), then c distinct offsets uniformly:
/// each 32-bit half of a stream word gives the offset ⌊h·len / 2³²⌋,
/// duplicates are redrawn (for p > 1/2 the complement is drawn instead).
/// Count-then-subset is exactly Bernoulli(p) per target, and costs about a
/// quarter of a generator call per synapse — no logarithm per synapse.
/// Offsets come out in draw order, not sorted; that order is part of the
/// definition (it keys stochastic rounding), and a test pins it.
///
/// Generation takes two passes so that storage is written once, in its
/// final format: [`RowGen::count`] draws a block's size (the first draws of
/// its stream), which sizes a chunk's buffers exactly; [`RowGen::fill`]
/// then writes the block's offsets straight into them.
pub struct RowGen {
    key: u64,
    n_tgt: u64,
    p: f64,
    full: Option<rand_distr::Binomial>,
    last: Option<rand_distr::Binomial>,
    /// One bit per offset of a block; all zero between blocks.
    seen: Vec<u64>,
    /// The drawn offsets of a complement block (p > 1/2).
    picked: Vec<u32>,
    /// The offsets of one block, for [`RowGen::block`].
    out: Vec<u32>,
    /// The drawn blocks of one chunk.
    draws: Vec<Drawn>,
}

/// A block whose size is drawn: its stream, positioned after the count.
#[derive(Clone, Debug)]
pub struct Drawn {
    rng: Stream,
    len: u32,
    /// Offsets to draw (the complement's, for p > 1/2).
    drawn: u32,
    /// Synapses of the block.
    pub count: u32,
}

/// Draws `out.len()` distinct offsets in `[0, len)` from `rng` in the
/// recipe's order (low then high half of each word, duplicates skipped) and
/// writes `enc(offset)` into `out`; `dec` inverts `enc`. `bits` (one bit per
/// offset, zero on entry) is left with the drawn offsets set.
///
/// Candidates are made in batches, as many as are still missing (words
/// from [`Stream::fill_words`], which vectorises), then tested against
/// `bits`; a duplicate (about c²/2·len per block: a few) is removed by
/// shifting the later candidates over it, so the hot loops carry no
/// per-candidate bookkeeping. A batch of odd size leaves the high half of
/// its last word for the next batch, which the sequential recipe would
/// reach next too.
#[inline(always)]
fn pick<T: Copy>(
    rng: &mut Stream,
    len: u32,
    bits: &mut [u64],
    out: &mut [T],
    enc: impl Fn(u32) -> T,
    dec: impl Fn(T) -> u32,
) {
    let c = out.len();
    assert!(len as usize <= bits.len() * 64, "seen bits too short");
    let len = len as u64;
    let off = |h: u64| ((h * len) >> 32) as u32;
    let mut carry: Option<u32> = None;
    let mut words = [0u64; 64];
    let mut n = 0;
    while n < c {
        let mut j = n;
        if let Some(o) = carry.take() {
            out[j] = enc(o);
            j += 1;
        }
        let mut pairs = (c - j) / 2;
        while pairs > 0 {
            let m = pairs.min(words.len());
            rng.fill_words(&mut words[..m]);
            for (pair, &w) in out[j..j + 2 * m].chunks_exact_mut(2).zip(&words[..m]) {
                pair[0] = enc(off(w & 0xffff_ffff));
                pair[1] = enc(off(w >> 32));
            }
            j += 2 * m;
            pairs -= m;
        }
        if j < c {
            let w = rng.next_u64_pub();
            out[j] = enc(off(w & 0xffff_ffff));
            carry = Some(off(w >> 32));
        }
        // Keep the first occurrence of each offset, in order: test-and-set,
        // and on a duplicate shift the later candidates over it.
        let mut end = c;
        let mut r = n;
        while let Some(k) = first_repeat(bits, &out[r..end], &dec) {
            r += k;
            out.copy_within(r + 1..end, r);
            end -= 1;
        }
        n = end;
    }
}

/// Sets the bit of each of `vals` (decoded by `dec`) in `bits`, in order,
/// up to the first whose bit is already set: returns its position, or
/// `None` when all were new.
#[inline(always)]
fn first_repeat<T: Copy>(bits: &mut [u64], vals: &[T], dec: impl Fn(T) -> u32) -> Option<usize> {
    for (k, &v) in vals.iter().enumerate() {
        let o = dec(v);
        let (wi, m) = ((o >> 6) as usize, 1u64 << (o & 63));
        // SAFETY: offsets are < len ≤ 64·bits.len() (asserted by `pick`).
        let s = unsafe { bits.get_unchecked_mut(wi) };
        if *s & m != 0 {
            return Some(k);
        }
        *s |= m;
    }
    None
}

impl RowGen {
    pub fn new(key: u64, n_tgt: u64, p: f64) -> RowGen {
        let q = if p > 0.5 { 1.0 - p } else { p };
        let binom = |len: u64| {
            (len > 0 && q > 0.0).then(|| rand_distr::Binomial::new(len, q).expect("p in [0, 1]"))
        };
        let tail = n_tgt % BLOCK;
        RowGen {
            key,
            n_tgt,
            p,
            full: binom(BLOCK.min(n_tgt)),
            last: if tail == 0 { None } else { binom(tail) },
            seen: vec![0; (BLOCK / 64) as usize],
            picked: Vec::new(),
            out: Vec::new(),
            draws: Vec::new(),
        }
    }

    /// Draws the size of block `b` of row `i`.
    #[inline]
    pub fn count(&self, i: u64, b: u64) -> Drawn {
        use rand_distr::Distribution;
        let len = BLOCK.min(self.n_tgt - b * BLOCK) as u32;
        let mut rng = Stream::new(derive(self.key, &[i, b]));
        let (drawn, count) = if self.p >= 1.0 {
            (0, len)
        } else {
            let dist = if len as u64 == BLOCK || self.n_tgt < BLOCK {
                &self.full
            } else {
                &self.last
            };
            let c = dist.as_ref().map_or(0, |d| d.sample(&mut rng) as u32);
            (c, if self.p > 0.5 { len - c } else { c })
        };
        Drawn {
            rng,
            len,
            drawn,
            count,
        }
    }

    /// Writes `enc(offset)` for each synapse of the drawn block into `out`
    /// (`out.len()` = `d.count`), in the recipe's order; `dec` inverts `enc`.
    #[inline(always)]
    pub fn fill<T: Copy>(
        &mut self,
        mut d: Drawn,
        out: &mut [T],
        enc: impl Fn(u32) -> T,
        dec: impl Fn(T) -> u32,
    ) {
        debug_assert_eq!(out.len(), d.count as usize);
        let words = (d.len as usize).div_ceil(64);
        if self.p >= 1.0 {
            for (o, x) in out.iter_mut().enumerate() {
                *x = enc(o as u32);
            }
        } else if self.p > 0.5 {
            // The drawn offsets are the absent targets: emit the rest, in order.
            let mut picked = std::mem::take(&mut self.picked);
            picked.resize(d.drawn as usize, 0);
            pick(&mut d.rng, d.len, &mut self.seen, &mut picked, |o| o, |o| o);
            self.picked = picked;
            let mut s = 0;
            for (wi, &w) in self.seen[..words].iter().enumerate() {
                let mut free = !w;
                if wi == words - 1 && d.len % 64 != 0 {
                    free &= (1u64 << (d.len % 64)) - 1;
                }
                while free != 0 {
                    out[s] = enc((wi as u32) << 6 | free.trailing_zeros());
                    s += 1;
                    free &= free - 1;
                }
            }
            self.seen[..words].fill(0);
        } else {
            pick(&mut d.rng, d.len, &mut self.seen, out, &enc, &dec);
            // Clearing all words costs about a quarter of a store per word.
            if out.len() * 4 > words {
                self.seen[..words].fill(0);
            } else {
                for &v in out.iter() {
                    // SAFETY: offsets are < len ≤ 64·seen.len().
                    unsafe { *self.seen.get_unchecked_mut((dec(v) >> 6) as usize) = 0 };
                }
            }
        }
    }

    /// Sets the bits of the drawn block's synapses in `bits` (the block's
    /// `⌈len/64⌉` words of a bitmap row, zero on entry).
    pub fn fill_bits(&mut self, mut d: Drawn, bits: &mut [u64]) {
        let len = d.len as usize;
        if self.p <= 0.5 {
            let mut picked = std::mem::take(&mut self.picked);
            picked.resize(d.drawn as usize, 0);
            pick(&mut d.rng, d.len, bits, &mut picked, |o| o, |o| o);
            self.picked = picked;
            return;
        }
        if self.p < 1.0 {
            let mut picked = std::mem::take(&mut self.picked);
            picked.resize(d.drawn as usize, 0);
            pick(&mut d.rng, d.len, bits, &mut picked, |o| o, |o| o);
            self.picked = picked;
        }
        for (wi, w) in bits.iter_mut().enumerate() {
            let valid = if (wi + 1) * 64 <= len {
                u64::MAX
            } else {
                (1u64 << (len % 64)) - 1
            };
            *w = !*w & valid;
        }
    }

    /// Calls `f(offset)` for each target of row `i` in block `b`, in the
    /// recipe's order.
    pub fn block(&mut self, i: u64, b: u64, mut f: impl FnMut(u64)) {
        let d = self.count(i, b);
        let mut out = std::mem::take(&mut self.out);
        out.resize(d.count as usize, 0);
        self.fill(d, &mut out, |o| o, |o| o);
        out.iter().for_each(|&o| f(o as u64));
        self.out = out;
    }

    /// All targets of row `i` (absolute ids, in increasing block order,
    /// unsorted within a block).
    pub fn row(&mut self, i: u64, mut f: impl FnMut(u64)) {
        for b in 0..self.n_tgt.div_ceil(BLOCK) {
            let base = b * BLOCK;
            self.block(i, b, |o| f(base + o));
        }
    }

    /// Rows `r0..r0 + rows` in `format`'s layout and indices (weights not
    /// included), every buffer allocated once at its final size.
    fn chunk(&mut self, r0: usize, rows: usize, format: FiberFormat) -> Targets {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { self.chunk_avx2(r0, rows, format) };
        }
        self.chunk_any(r0, rows, format)
    }

    /// [`RowGen::chunk`] compiled for AVX2 (the word generator vectorises).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn chunk_avx2(&mut self, r0: usize, rows: usize, format: FiberFormat) -> Targets {
        self.chunk_any(r0, rows, format)
    }

    #[inline(always)]
    fn chunk_any(&mut self, r0: usize, rows: usize, format: FiberFormat) -> Targets {
        let nb = self.n_tgt.div_ceil(BLOCK);
        // The sizes of every block of the chunk, in a buffer kept across chunks.
        let draws = |gen: &mut RowGen| -> Vec<Drawn> {
            let mut d = std::mem::take(&mut gen.draws);
            d.clear();
            let gen = &*gen;
            d.extend((r0..r0 + rows).flat_map(|i| (0..nb).map(move |b| gen.count(i as u64, b))));
            d
        };
        match (format.layout, format.indices) {
            (Layout::Bitmap, _) => {
                let words = (self.n_tgt as usize).div_ceil(64);
                let mut bits = vec![0u64; words * rows];
                for (r, row) in bits.chunks_exact_mut(words).enumerate() {
                    for b in 0..nb {
                        let d = self.count((r0 + r) as u64, b);
                        let w0 = (b * BLOCK / 64) as usize;
                        let w1 = w0 + (d.len as usize).div_ceil(64);
                        self.fill_bits(d, &mut row[w0..w1]);
                    }
                }
                Targets::Bitmap { words, bits }
            }
            (Layout::Csr, IndexFormat::U32) => {
                let draws = draws(&mut *self);
                let mut ptr = Vec::with_capacity(rows + 1);
                ptr.push(0u32);
                for row in draws.chunks_exact(nb as usize) {
                    let n: u32 = row.iter().map(|d| d.count).sum();
                    ptr.push(ptr.last().unwrap() + n);
                }
                let mut idx = vec![0u32; *ptr.last().unwrap() as usize];
                let mut s = 0;
                let mut draws = draws;
                for (k, d) in draws.drain(..).enumerate() {
                    let base = ((k as u64 % nb) * BLOCK) as u32;
                    let n = d.count as usize;
                    self.fill(d, &mut idx[s..s + n], |o| base + o, |v| v - base);
                    s += n;
                }
                self.draws = draws;
                Targets::U32 { ptr, idx }
            }
            (Layout::Csr, IndexFormat::U16) => {
                let draws = draws(&mut *self);
                let mut seg = Vec::with_capacity(draws.len() + 1);
                seg.push(0u32);
                for d in &draws {
                    seg.push(seg.last().unwrap() + d.count);
                }
                let mut idx = vec![0u16; *seg.last().unwrap() as usize];
                let mut s = 0;
                let mut draws = draws;
                for d in draws.drain(..) {
                    let n = d.count as usize;
                    self.fill(d, &mut idx[s..s + n], |o| o as u16, |v| v as u32);
                    s += n;
                }
                self.draws = draws;
                Targets::U16 { seg, idx }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::*;

    fn fmt(weights: WeightFormat, indices: IndexFormat, layout: Layout) -> FiberFormat {
        FiberFormat {
            weights,
            indices,
            layout,
            ..Default::default()
        }
    }

    /// The generator as first written (commit e34bb05), one block at a time,
    /// kept verbatim as the definition the faster generator must reproduce:
    /// the offsets of row `i`, block `b`, in draw order.
    fn recipe_block(key: u64, n_tgt: u64, p: f64, i: u64, b: u64) -> Vec<u64> {
        use rand_distr::Distribution;
        let start = b * BLOCK;
        let len = BLOCK.min(n_tgt - start);
        let mut rng = Stream::new(derive(key, &[i, b]));
        if p >= 1.0 {
            return (0..len).collect();
        }
        let q = if p > 0.5 { 1.0 - p } else { p };
        if q == 0.0 {
            return vec![];
        }
        let c = rand_distr::Binomial::new(len, q).unwrap().sample(&mut rng);
        let mut seen = vec![0u64; 1024];
        let mut picked = Vec::new();
        let mut need = c;
        while need > 0 {
            let w = rng.next_u64_pub();
            for h in [w & 0xffff_ffff, w >> 32] {
                let o = ((h * len) >> 32) as u32;
                let (wi, bi) = ((o >> 6) as usize, o & 63);
                if seen[wi] >> bi & 1 == 0 {
                    seen[wi] |= 1 << bi;
                    picked.push(o as u64);
                    need -= 1;
                    if need == 0 {
                        break;
                    }
                }
            }
        }
        if p > 0.5 {
            (0..len)
                .filter(|&o| seen[(o >> 6) as usize] >> (o & 63) & 1 == 0)
                .collect()
        } else {
            picked
        }
    }

    /// Same seed ⇒ the same synapses, stored in the same order (the order
    /// keys stochastic rounding), as the recipe: every layout, several seeds,
    /// p on both sides of 1/2, p = 1, narrow last blocks, areas narrower than
    /// a block, rows across chunk boundaries; and the rows of lazy areas.
    #[test]
    fn generated_graph_is_pinned_to_the_recipe() {
        let cases: [(u64, u64, f64); 6] = [
            (1100, 140_000, 0.01),
            (300, 70_000, 0.3),
            (300, 66_000, 0.7),
            (40, 5_000, 1.0),
            (1100, 5_000, 0.05),
            (200, 65_536, 0.001),
        ];
        let formats = [
            FiberFormat::REFERENCE,
            fmt(WeightFormat::LogU8, IndexFormat::U16, Layout::Csr),
            fmt(WeightFormat::Bit, IndexFormat::U32, Layout::Bitmap),
        ];
        for seed in [1u64, 7, 1234] {
            for &(n_src, n_tgt, p) in &cases {
                let key = derive(seed, &[purpose::GRAPH, 3]);
                let nb = n_tgt.div_ceil(BLOCK);
                let want: Vec<Vec<u64>> = (0..n_src)
                    .map(|i| {
                        (0..nb)
                            .flat_map(|b| {
                                recipe_block(key, n_tgt, p, i, b)
                                    .into_iter()
                                    .map(move |o| b * BLOCK + o)
                            })
                            .collect()
                    })
                    .collect();
                let total: usize = want.iter().map(Vec::len).sum();
                for f in formats {
                    let x = PackedFiber::generate(seed, 3, n_src, n_tgt, p, f, 0.05, None).unwrap();
                    let what = format!("seed {seed} {n_src}x{n_tgt} p {p} {}", f.label());
                    assert_eq!(x.synapses() as usize, total, "{what}");
                    assert_eq!(x.validate(n_src, n_tgt), Ok(()), "{what}");
                    for (r, want) in want.iter().enumerate() {
                        let mut got = Vec::new();
                        x.for_row(r, |_, j| got.push(j));
                        if f.layout == Layout::Bitmap {
                            let mut w = want.clone();
                            w.sort_unstable();
                            assert_eq!(got, w, "{what} row {r}");
                        } else {
                            assert_eq!(&got, want, "{what} row {r}");
                        }
                    }
                }
                let mut gen = RowGen::new(key, n_tgt, p);
                for r in [0, n_src / 2, n_src - 1] {
                    let mut got = Vec::new();
                    gen.row(r, |j| got.push(j));
                    assert_eq!(got, want[r as usize], "seed {seed} p {p} lazy row {r}");
                }
            }
        }
    }

    #[test]
    fn every_layout_stores_the_same_graph() {
        let reference =
            PackedFiber::generate(5, 1, 300, 140_000, 0.01, FiberFormat::REFERENCE, 0.05, None)
                .unwrap();
        for f in [
            fmt(WeightFormat::F16, IndexFormat::U16, Layout::Csr),
            fmt(WeightFormat::LogU8, IndexFormat::U16, Layout::Csr),
            fmt(WeightFormat::Bit, IndexFormat::U32, Layout::Bitmap),
            fmt(WeightFormat::Bf16, IndexFormat::U32, Layout::Csr),
        ] {
            let other = PackedFiber::generate(5, 1, 300, 140_000, 0.01, f, 0.05, None).unwrap();
            assert_eq!(other.synapses(), reference.synapses(), "{}", f.label());
            for r in [0, 17, 299] {
                assert_eq!(other.row(r), reference.row(r), "{} row {r}", f.label());
            }
        }
    }

    #[test]
    fn degree_distribution_chi_square() {
        // Out-degrees of 4000 rows over 2000 targets at p = 0.01 follow
        // Binomial(2000, 0.01) (mean 20, sd 4.45): chi-square over 6 bins
        // (<=14, 15-17, 18-20, 21-23, 24-26, >=27), 5 d.o.f., 99.9%: 20.5.
        for seed in 0..3 {
            let f =
                PackedFiber::generate(seed, 2, 4000, 2000, 0.01, FiberFormat::REFERENCE, 0.0, None)
                    .unwrap();
            let d = crate::stats::Pmf::binomial(2000, 0.01);
            let edges = [14u64, 17, 20, 23, 26, u64::MAX];
            let mut expect = [0f64; 6];
            for (i, &q) in d.pmf.iter().enumerate() {
                let x = d.lo + i as u64;
                expect[edges.iter().position(|&e| x <= e).unwrap()] += q * 4000.0;
            }
            let mut got = [0f64; 6];
            for r in 0..4000 {
                let deg = f.row(r).len() as u64;
                got[edges.iter().position(|&e| deg <= e).unwrap()] += 1.0;
            }
            let chi: f64 = (0..6)
                .map(|i| (got[i] - expect[i]).powi(2) / expect[i])
                .sum();
            assert!(
                chi < 20.5,
                "seed {seed}: chi {chi} got {got:?} expect {expect:?}"
            );
        }
    }

    #[test]
    fn validate_accepts_generated_fibers_and_names_each_damage() {
        let gen = |f: FiberFormat| {
            PackedFiber::generate(4, 1, 1500, 70_000, 0.01, f, 0.05, Some(3.0)).unwrap()
        };
        let u32f = FiberFormat::REFERENCE;
        let u16f = fmt(WeightFormat::F16, IndexFormat::U16, Layout::Csr);
        let bitmap = fmt(WeightFormat::Bit, IndexFormat::U32, Layout::Bitmap);
        let logf = fmt(WeightFormat::LogU8, IndexFormat::U32, Layout::Csr);
        for f in [u32f, u16f, bitmap, logf] {
            assert_eq!(gen(f).validate(1500, 70_000), Ok(()), "{}", f.label());
        }
        let damaged = |f: FiberFormat, hurt: &dyn Fn(&mut PackedFiber), want: &str| {
            let mut x = gen(f);
            hurt(&mut x);
            let e = x.validate(1500, 70_000).unwrap_err();
            assert!(e.contains(want), "{}: want {want:?}, got {e:?}", f.label());
        };
        damaged(u32f, &|x| x.n_tgt += 1, "between areas of 1500 and 70000");
        damaged(
            u32f,
            &|x| x.chunks.pop().map(drop).unwrap(),
            "1 row chunks for 1500 rows",
        );
        damaged(u32f, &|x| x.p = 2.0, "bad fiber parameters");
        damaged(u32f, &|x| x.synapses += 1, "synapses recorded");
        damaged(
            u32f,
            &|x| x.format.weights = WeightFormat::F16,
            "weights do not match",
        );
        damaged(
            u32f,
            &|x| x.format.indices = IndexFormat::U16,
            "targets do not match the format",
        );
        let set = |x: &mut PackedFiber, t: Targets| x.chunks[1].targets = t;
        damaged(
            u32f,
            &|x| {
                set(
                    x,
                    Targets::U32 {
                        ptr: vec![0; ROWS + 1],
                        idx: vec![],
                    },
                )
            },
            "bad u32 rows",
        );
        damaged(
            u32f,
            &|x| {
                if let Targets::U32 { idx, .. } = &mut x.chunks[0].targets {
                    idx[5] = 70_000
                }
            },
            "bad u32 rows",
        );
        damaged(
            u32f,
            &|x| {
                if let Targets::U32 { ptr, .. } = &mut x.chunks[0].targets {
                    ptr.swap(3, 4)
                }
            },
            "bad u32 rows",
        );
        damaged(
            u16f,
            &|x| {
                if let Targets::U16 { seg, .. } = &mut x.chunks[0].targets {
                    seg.pop();
                }
            },
            "bad u16 segments",
        );
        // Row 0's second (last, 4464 wide) block: an offset past the area.
        damaged(
            u16f,
            &|x| {
                if let Targets::U16 { seg, idx } = &mut x.chunks[0].targets {
                    idx[seg[1] as usize] = 5000
                }
            },
            "u16 target beyond the area",
        );
        damaged(
            bitmap,
            &|x| {
                if let Targets::Bitmap { bits, words } = &mut x.chunks[0].targets {
                    bits[*words - 1] |= 1 << 63
                }
            },
            "bitmap target beyond the area",
        );
        damaged(
            bitmap,
            &|x| {
                if let Targets::Bitmap { words, .. } = &mut x.chunks[0].targets {
                    *words += 1
                }
            },
            "bad bitmap shape",
        );
        damaged(
            bitmap,
            &|x| {
                x.side.insert(7, vec![(70_000, 2.0)]);
            },
            "row 7",
        );
        damaged(
            bitmap,
            &|x| {
                x.side.insert(1500, vec![]);
            },
            "row 1500",
        );
        damaged(
            logf,
            &|x| x.log.as_mut().unwrap().table[3] = 9.0,
            "log-u8 table does not match",
        );
        damaged(
            logf,
            &|x| x.log.as_mut().unwrap().beta = f64::NAN,
            "bad log-u8 parameters",
        );
        damaged(logf, &|x| x.log = None, "log-u8 code does not match");
        damaged(
            u32f,
            &|x| x.log = Some(LogU8::new(0.1, None)),
            "log-u8 code does not match",
        );
    }

    #[test]
    fn fixed_accumulator_saturates_huge_weights_in_any_order() {
        // Found by fuzzing: beta = 1e18 made the i64 sum overflow.
        let f = FiberFormat {
            accumulator: Accumulator::Fixed,
            ..FiberFormat::REFERENCE
        };
        let mut x = PackedFiber::generate(2, 1, 50, 80, 1.0, f, 1e18, None).unwrap();
        let all = vec![u64::MAX; 2];
        let firing: Vec<u32> = (0..50).collect();
        for step in 0..3 {
            x.hebbian(&firing, &all, 1e18, None, step).unwrap();
        }
        let mut forward = vec![0f32; 80];
        x.accumulate(&firing, &mut forward).unwrap();
        let mut backward = vec![0f32; 80];
        let reversed: Vec<u32> = firing.iter().rev().copied().collect();
        x.accumulate(&reversed, &mut backward).unwrap();
        let cap = (i64::MAX as f64 / (1u64 << FIXED_FRAC_BITS) as f64) as f32;
        assert!(forward.iter().all(|&v| v == cap), "{forward:?}");
        assert_eq!(forward, backward);
    }

    #[test]
    fn log_u8_rejects_a_changed_beta() {
        let mut f = PackedFiber::generate(
            1,
            1,
            10,
            100,
            0.5,
            fmt(WeightFormat::LogU8, IndexFormat::U32, Layout::Csr),
            0.05,
            None,
        )
        .unwrap();
        let bits = vec![u64::MAX; 2];
        assert!(f.hebbian(&[0], &bits, 0.05, None, 1).is_ok());
        let e = f
            .hebbian(&[0], &bits, 0.1, None, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("log-u8") && e.contains("0.05"), "{e}");
    }

    #[test]
    fn accumulate_and_hebbian_agree_across_formats() {
        // Exact formats (f32, log-u8, bit-side-table, fixed accumulator) give
        // identical inputs after a few updates on the same graph.
        let winners: Vec<u64> = {
            let mut b = vec![0u64; 2000usize.div_ceil(64)];
            for j in (0..2000).step_by(3) {
                b[j >> 6] |= 1 << (j & 63);
            }
            b
        };
        let firing: Vec<u32> = (0..200).step_by(2).collect();
        let run = |f: FiberFormat| {
            let mut x = PackedFiber::generate(9, 3, 200, 2000, 0.05, f, 0.05, None).unwrap();
            for step in 0..3 {
                x.hebbian(&firing, &winners, 0.05, None, step).unwrap();
            }
            let mut inp = vec![0f32; 2000];
            x.accumulate(&firing, &mut inp).unwrap();
            inp
        };
        let reference = run(FiberFormat::REFERENCE);
        for f in [
            fmt(WeightFormat::LogU8, IndexFormat::U16, Layout::Csr),
            fmt(WeightFormat::Bit, IndexFormat::U32, Layout::Bitmap),
            FiberFormat {
                accumulator: Accumulator::Fixed,
                ..FiberFormat::REFERENCE
            },
        ] {
            let got = run(f);
            for (a, b) in got.iter().zip(&reference) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{}: {a} vs {b}",
                    f.label()
                );
            }
        }
    }
}

/// Stable id of the fiber `src → tgt` between areas, for stream keys.
pub fn fiber_id(src: usize, tgt: usize) -> u64 {
    (1 << 40) | ((src as u64) << 20) | tgt as u64
}

/// Wires a newly added explicit area `e` (all n neurons exist) to the rest
/// of the brain: packed fibers to and from every explicit area (itself
/// included) in the format chosen by `format_of(src, tgt)`, growable rows to
/// and from every lazy area's existing neurons, and Binomial(size, p)
/// synapse counts from every stimulus. Packed fibers go into `backend`'s
/// memory when it keeps their format ([`PackedFiber::generate_on`]).
pub fn connect_explicit_area(
    state: &mut super::lazy::LazyState,
    model: &crate::model::Model,
    seed: u64,
    e: usize,
    exist: &[u64],
    format_of: &dyn Fn(usize, usize) -> FiberFormat,
    backend: &dyn crate::backend::Backend,
) -> Result<()> {
    use crate::backend::Syn;
    use crate::model::{EngineKind, Source};
    let n = model.areas[e].n;
    for s in 0..model.areas.len() {
        let pairs: Vec<(usize, usize)> = if s == e {
            vec![(e, e)]
        } else {
            vec![(s, e), (e, s)]
        };
        for (a, b) in pairs {
            let p = model.p(Source::Area(a), b);
            let both_explicit = model.areas[a].engine == EngineKind::Explicit
                && model.areas[b].engine == EngineKind::Explicit;
            let key = derive(seed, &[purpose::GRAPH, fiber_id(a, b)]);
            let fiber = &mut state.fibers[a][b];
            if both_explicit {
                let beta = model.beta(Source::Area(a), b);
                fiber.packed = Some(PackedFiber::generate_on(
                    backend,
                    seed,
                    fiber_id(a, b),
                    model.areas[a].n,
                    model.areas[b].n,
                    p,
                    format_of(a, b),
                    beta,
                    model.w_max,
                )?);
            } else {
                let (n_src, n_tgt) = (exist[a], exist[b]);
                fiber.rows = (0..n_src)
                    .into_par_iter()
                    .map_init(
                        || RowGen::new(key, n_tgt, p),
                        |gen, i| {
                            let mut row = Vec::new();
                            gen.row(i, |j| {
                                row.push(Syn {
                                    to: j as u32,
                                    w: 1.0,
                                })
                            });
                            // Growable rows are kept sorted by target.
                            row.sort_unstable_by_key(|s| s.to);
                            row
                        },
                    )
                    .collect();
            }
        }
    }
    for (s, fibers) in state.stim.iter_mut().enumerate() {
        let p = model.p(Source::Stim(s), e);
        let size = model.stimuli[s].size;
        let mut rng = Stream::keyed(seed, &[purpose::GRAPH, u64::MAX, s as u64, e as u64]);
        let count: Vec<u32> = (0..n)
            .map(|_| crate::stats::binomial(size, p, &mut rng) as u32)
            .collect();
        fibers[e] = super::lazy::StimFiber {
            weight: vec![1.0; count.len()],
            count,
        };
    }
    Ok(())
}
