//! Explicit fibers held in a backend's memory (a GPU): the interface such a
//! backend implements ([`DeviceFiber`]), the flat layout fibers move in
//! ([`FiberParts`]), and the host half of generating a fiber on the device
//! ([`generation_plan`]).
//!
//! Key decisions:
//! - **Same graph, split work.** A row-block's synapse count is a
//!   Binomial draw (BTPE, `rand_distr`) whose floating point the device
//!   cannot reproduce bit for bit, so the host draws the counts (about one
//!   per 650 synapses at p = 0.01) and records where each block's stream
//!   stands afterwards; the device continues every stream from there and
//!   draws the distinct offsets — the bulk of the work — exactly as
//!   [`RowGen::block`] does. The stored graph is the host's, bit for bit.
//! - **One flat layout** ([`FiberParts`]): per (row, column block) segment
//!   offsets into one index array and one weight array, for both u32 and
//!   block-local u16 indices, or the rows' bitmap words. The host's chunked
//!   layout converts to and from it ([`PackedFiber::to_parts`],
//!   [`PackedFiber::to_host`]), which is how checkpoints download device
//!   fibers and how a host fiber moves onto a device.
//! - A device fiber keeps its metadata (format, sizes, key, log-u8 code,
//!   synapse count) in the [`PackedFiber`]; everything else is behind the
//!   trait object, which does its own accumulation and Hebbian update
//!   whatever the brain's backend is.
//! - **Bit weights keep their side table on the host.** The device holds
//!   the unit-weight structure (CSR or bitmap rows); a step hands it the
//!   firing rows' learned entries ([`PackedFiber::side_rows`]), which it adds
//!   after each row as the host engine does, and the Hebbian update asks it
//!   for the synapses from firing rows onto winners ([`DeviceFiber::hits`]),
//!   which the host applies to the table exactly as the host engine does.
//!   Learned weights are few (synapses that once joined firing rows to
//!   winners), so this moves little data.

use super::*;
use crate::backend::Backend;
use std::sync::Arc;

/// Storage of one explicit fiber in a backend's memory. Implementations
/// must give exactly the host's results ([`PackedFiber::accumulate`] and
/// [`PackedFiber::hebbian`]), including the f32 summation order.
pub trait DeviceFiber: Send + Sync + std::fmt::Debug {
    /// `inputs += Σ rows of firing` (host buffer in and out), in firing
    /// order, each row followed by its learned side-table entries `side`
    /// ([`PackedFiber::side_rows`], bit weights only).
    fn accumulate(&self, firing: &[u32], side: Option<&[u64]>, inputs: &mut [f32]) -> Result<()>;
    /// Bit weights: every synapse from a row of `firing` onto a target set
    /// in `is_winner`, as `row << 32 | target`, in any order.
    fn hits(&self, firing: &[u32], is_winner: &[u64]) -> Result<Vec<u64>>;
    /// The Hebbian update of [`PackedFiber::hebbian`] (stored weights), with
    /// its stochastic rounding key `sr_key` (already derived for the step).
    fn hebbian(
        &self,
        firing: &[u32],
        is_winner: &[u64],
        u: Update,
        stochastic: bool,
        sr_key: u64,
    ) -> Result<()>;
    /// Copies the synapses back to the host.
    fn download(&self) -> Result<FiberParts>;
    /// Device bytes held.
    fn bytes(&self) -> usize;
    /// For backends to recognise their own fibers.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Stored targets in the flat layout.
#[derive(Clone, Debug, PartialEq)]
pub enum PartIdx {
    /// Absolute target ids.
    U32(Vec<u32>),
    /// Offsets inside the segment's column block.
    U16(Vec<u16>),
    /// Bitmap rows: ⌈n_tgt / 64⌉ words per row, bit j of row r is bit
    /// j mod 64 of word `r·words + j / 64`.
    Bitmap(Vec<u64>),
}

/// Stored weights in the flat layout (f16 and bf16 as bit patterns).
#[derive(Clone, Debug, PartialEq)]
pub enum PartWeights {
    F32(Vec<f32>),
    F16(Vec<u16>),
    Bf16(Vec<u16>),
    LogU8(Vec<u8>),
    /// Bit weights: none stored (learned ones are in the host's side table).
    None,
}

/// A fiber in one flat layout. CSR rows: row r's synapses in column block b
/// (nb = ⌈n_tgt / 65 536⌉ blocks) are entries `seg[r·nb + b]..seg[r·nb + b + 1]`
/// of `idx` and `weights`, in the host's storage order. Bitmap rows: `seg`
/// is empty and `idx` holds the words.
#[derive(Clone, Debug, PartialEq)]
pub struct FiberParts {
    pub seg: Vec<u64>,
    pub idx: PartIdx,
    pub weights: PartWeights,
}

/// What a backend needs to generate a fiber on its device: the fiber's
/// shape and stream key, and [`generation_plan`]'s output.
#[derive(Clone, Copy, Debug)]
pub struct GenSpec<'a> {
    pub key: u64,
    pub n_src: u64,
    pub n_tgt: u64,
    pub format: FiberFormat,
    pub log: Option<&'a LogU8>,
    /// Segment offsets (`n_src·nb + 1`, as in [`FiberParts::seg`]).
    pub seg: &'a [u64],
    /// Per (row, block): the stream counter after the count was drawn.
    pub pos: &'a [u32],
    /// p > 1/2: the drawn offsets are the targets left out (p ≥ 1: none drawn).
    pub complement: bool,
}

/// The host half of generating the fiber (key, n_src → n_tgt, p) on a
/// device: segment offsets, the stream counter of every (row, block) after
/// its count, and whether offsets are drawn for the complement (p > 1/2).
/// Parallel over row chunks; the result does not depend on the thread count.
pub fn generation_plan(key: u64, n_src: u64, n_tgt: u64, p: f64) -> (Vec<u64>, Vec<u32>, bool) {
    let nb = n_tgt.div_ceil(BLOCK) as usize;
    let items = n_src as usize * nb;
    let mut counts = vec![0u64; items];
    let mut pos = vec![0u32; items];
    counts
        .par_chunks_mut(nb * ROWS)
        .zip(pos.par_chunks_mut(nb * ROWS))
        .enumerate()
        .for_each(|(c, (cnt, at))| {
            let gen = RowGen::new(key, n_tgt, p);
            for (l, (cr, ar)) in cnt.chunks_mut(nb).zip(at.chunks_mut(nb)).enumerate() {
                let i = (c * ROWS + l) as u64;
                for b in 0..nb {
                    let d = gen.count(i, b as u64);
                    cr[b] = d.count as u64;
                    ar[b] =
                        u32::try_from(d.rng.counter()).expect("binomial draw used < 2^32 words");
                }
            }
        });
    let mut seg = Vec::with_capacity(items + 1);
    let mut total = 0u64;
    seg.push(0);
    for c in counts {
        total += c;
        seg.push(total);
    }
    (seg, pos, p > 0.5)
}

/// The serialised form of a [`PackedFiber`] (field order = the struct's).
#[derive(serde::Serialize)]
struct Stored<'a> {
    format: &'a FiberFormat,
    n_src: u64,
    n_tgt: u64,
    p: f64,
    key: u64,
    chunks: &'a [Chunk],
    side: &'a std::collections::HashMap<u32, Vec<(u32, f32)>>,
    log: &'a Option<LogU8>,
    synapses: u64,
}

impl PackedFiber {
    fn stored(&self) -> Stored<'_> {
        Stored {
            format: &self.format,
            n_src: self.n_src,
            n_tgt: self.n_tgt,
            p: self.p,
            key: self.key,
            chunks: &self.chunks,
            side: &self.side,
            log: &self.log,
            synapses: self.synapses,
        }
    }
}

/// A device fiber is downloaded and saved like a host one.
impl serde::Serialize for PackedFiber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.device.is_some() {
            let host = self.to_host().map_err(serde::ser::Error::custom)?;
            return host.stored().serialize(s);
        }
        self.stored().serialize(s)
    }
}

impl PackedFiber {
    /// The device storage, when a backend holds the fiber.
    pub fn device(&self) -> Option<&Arc<dyn DeviceFiber>> {
        self.device.as_ref()
    }

    /// The log-u8 code (log-u8 fibers).
    pub fn log_code(&self) -> Option<&LogU8> {
        self.log.as_ref()
    }

    /// Generates the fiber like [`PackedFiber::generate`], in `backend`'s
    /// memory when it keeps fibers of this format ([`Backend::explicit_supports`]),
    /// else on the host. Same graph either way.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_on(
        backend: &dyn Backend,
        seed: u64,
        fiber: u64,
        n_src: u64,
        n_tgt: u64,
        p: f64,
        format: FiberFormat,
        beta: f64,
        w_max: Option<f64>,
    ) -> Result<PackedFiber> {
        if !backend.explicit_supports(&format) {
            return PackedFiber::generate(seed, fiber, n_src, n_tgt, p, format, beta, w_max);
        }
        // The tiny host fiber carries the checks and the metadata.
        let mut meta = PackedFiber::generate(seed, fiber, 0, n_tgt, p, format, beta, w_max)?;
        if n_src > u32::MAX as u64 {
            return PackedFiber::generate(seed, fiber, n_src, n_tgt, p, format, beta, w_max);
        }
        let (seg, pos, complement) = generation_plan(meta.key, n_src, n_tgt, p);
        let spec = GenSpec {
            key: meta.key,
            n_src,
            n_tgt,
            format,
            log: meta.log.as_ref(),
            seg: &seg,
            pos: &pos,
            complement,
        };
        let dev = backend.explicit_generate(&spec)?;
        meta.n_src = n_src;
        meta.synapses = *seg.last().expect("seg has n_src·nb + 1 entries");
        meta.chunks = Vec::new();
        meta.device = Some(dev);
        Ok(meta)
    }

    /// Moves the fiber into `backend`'s memory if it keeps fibers of this
    /// format, else onto the host (downloading it from any other device).
    pub fn move_to(&mut self, backend: &dyn Backend) -> Result<()> {
        if let Some(d) = &self.device {
            if backend.explicit_owns(d.as_ref()) {
                return Ok(());
            }
            *self = self.to_host()?;
        }
        if backend.explicit_supports(&self.format) {
            // The side table of bit weights stays here.
            let parts = self.to_parts().expect("a host fiber has parts");
            let d = backend.explicit_upload(self, &parts)?;
            self.chunks = Vec::new();
            self.device = Some(d);
        }
        Ok(())
    }

    /// A host copy of the fiber (downloading a device fiber).
    pub fn to_host(&self) -> Result<PackedFiber> {
        let Some(d) = &self.device else {
            return Ok(self.clone());
        };
        let parts = d.download()?;
        let nb = self.n_tgt.div_ceil(BLOCK) as usize;
        let n_src = self.n_src as usize;
        if let PartIdx::Bitmap(bits) = &parts.idx {
            return self.host_bitmap(bits);
        }
        if parts.seg.len() != n_src * nb + 1 {
            return Err(KcapError::Unsupported(format!(
                "device fiber returned {} segment offsets for {n_src} rows",
                parts.seg.len()
            )));
        }
        let chunks = (0..n_src.div_ceil(ROWS))
            .map(|c| {
                let (r0, r1) = (c * ROWS, ((c + 1) * ROWS).min(n_src));
                let seg = &parts.seg[r0 * nb..=r1 * nb];
                let (lo, hi) = (seg[0] as usize, seg[seg.len() - 1] as usize);
                let local = |o: &u64| (*o - lo as u64) as u32;
                let targets = match &parts.idx {
                    PartIdx::U32(idx) => Targets::U32 {
                        ptr: seg.iter().step_by(nb).map(local).collect(),
                        idx: idx[lo..hi].to_vec(),
                    },
                    PartIdx::U16(idx) => Targets::U16 {
                        seg: seg.iter().map(local).collect(),
                        idx: idx[lo..hi].to_vec(),
                    },
                    PartIdx::Bitmap(_) => unreachable!("handled above"),
                };
                let weights = match &parts.weights {
                    PartWeights::F32(w) => Weights::F32(w[lo..hi].to_vec()),
                    PartWeights::F16(w) => {
                        Weights::F16(w[lo..hi].iter().map(|&b| f16::from_bits(b)).collect())
                    }
                    PartWeights::Bf16(w) => {
                        Weights::Bf16(w[lo..hi].iter().map(|&b| bf16::from_bits(b)).collect())
                    }
                    PartWeights::LogU8(w) => Weights::LogU8(w[lo..hi].to_vec()),
                    PartWeights::None => Weights::None,
                };
                Chunk { targets, weights }
            })
            .collect();
        self.host_with(chunks)
    }

    /// The host fiber of downloaded bitmap rows.
    fn host_bitmap(&self, bits: &[u64]) -> Result<PackedFiber> {
        let words = (self.n_tgt as usize).div_ceil(64);
        let n_src = self.n_src as usize;
        if bits.len() != n_src * words {
            return Err(KcapError::Unsupported(format!(
                "device fiber returned {} bitmap words for {n_src} rows of {words}",
                bits.len()
            )));
        }
        let chunks = bits
            .chunks(ROWS * words.max(1))
            .map(|b| Chunk {
                targets: Targets::Bitmap {
                    words,
                    bits: b.to_vec(),
                },
                weights: Weights::None,
            })
            .collect();
        self.host_with(chunks)
    }

    /// This fiber on the host with `chunks` (checked like a checkpoint).
    fn host_with(&self, chunks: Vec<Chunk>) -> Result<PackedFiber> {
        let host = PackedFiber {
            chunks,
            device: None,
            ..self.clone()
        };
        host.validate(self.n_src, self.n_tgt)
            .map_err(|e| KcapError::Unsupported(format!("downloaded fiber is damaged: {e}")))?;
        Ok(host)
    }

    /// The host fiber in the flat layout (`None` for a device fiber). The
    /// side table of bit weights is not part of it ([`PackedFiber::side`]).
    pub fn to_parts(&self) -> Option<FiberParts> {
        if self.device.is_some() {
            return None;
        }
        if self.format.layout == Layout::Bitmap {
            let mut bits = Vec::new();
            for c in &self.chunks {
                match &c.targets {
                    Targets::Bitmap { bits: b, .. } => bits.extend_from_slice(b),
                    _ => return None,
                }
            }
            return Some(FiberParts {
                seg: Vec::new(),
                idx: PartIdx::Bitmap(bits),
                weights: PartWeights::None,
            });
        }
        let nb = self.n_tgt.div_ceil(BLOCK) as usize;
        let mut seg = Vec::with_capacity(self.n_src as usize * nb + 1);
        seg.push(0u64);
        let mut idx = match self.format.indices {
            IndexFormat::U32 => PartIdx::U32(Vec::with_capacity(self.synapses as usize)),
            IndexFormat::U16 => PartIdx::U16(Vec::with_capacity(self.synapses as usize)),
        };
        let mut weights = match self.format.weights {
            WeightFormat::F32 => PartWeights::F32(Vec::new()),
            WeightFormat::F16 => PartWeights::F16(Vec::new()),
            WeightFormat::Bf16 => PartWeights::Bf16(Vec::new()),
            WeightFormat::LogU8 => PartWeights::LogU8(Vec::new()),
            WeightFormat::Bit => PartWeights::None,
        };
        for c in &self.chunks {
            let base = *seg.last().expect("seg starts with 0");
            match (&c.targets, &mut idx) {
                (Targets::U32 { ptr, idx: src }, PartIdx::U32(dst)) => {
                    for r in 0..ptr.len() - 1 {
                        let row = &src[ptr[r] as usize..ptr[r + 1] as usize];
                        // Blocks come in increasing order within a row.
                        let mut at = ptr[r] as u64;
                        for b in 0..nb as u64 {
                            at += row.iter().filter(|&&j| j as u64 / BLOCK == b).count() as u64;
                            seg.push(base + at);
                        }
                    }
                    dst.extend_from_slice(src);
                }
                (Targets::U16 { seg: s, idx: src }, PartIdx::U16(dst)) => {
                    seg.extend(s[1..].iter().map(|&o| base + o as u64));
                    dst.extend_from_slice(src);
                }
                _ => return None,
            }
            match (&c.weights, &mut weights) {
                (Weights::F32(v), PartWeights::F32(w)) => w.extend_from_slice(v),
                (Weights::F16(v), PartWeights::F16(w)) => w.extend(v.iter().map(|x| x.to_bits())),
                (Weights::Bf16(v), PartWeights::Bf16(w)) => w.extend(v.iter().map(|x| x.to_bits())),
                (Weights::LogU8(v), PartWeights::LogU8(w)) => w.extend_from_slice(v),
                (Weights::None, PartWeights::None) => {}
                _ => return None,
            }
        }
        Some(FiberParts { seg, idx, weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(weights: WeightFormat, indices: IndexFormat) -> FiberFormat {
        FiberFormat {
            weights,
            indices,
            ..Default::default()
        }
    }

    #[test]
    fn generation_plan_matches_the_host_graph() {
        // Segment offsets from the counts alone equal the stored fiber's,
        // for sparse, complement (p > 1/2) and full (p = 1) fibers, with a
        // narrow last block.
        for (n_tgt, p) in [(140_000u64, 0.01), (70_000, 0.7), (3000, 1.0), (1000, 0.05)] {
            let f = fmt(WeightFormat::F16, IndexFormat::U16);
            let host = PackedFiber::generate(3, 2, 1100, n_tgt, p, f, 0.05, None).unwrap();
            let (seg, pos, complement) = generation_plan(host.key, 1100, n_tgt, p);
            let parts = host.to_parts().unwrap();
            assert_eq!(seg, parts.seg, "n_tgt {n_tgt} p {p}");
            assert_eq!(complement, p > 0.5);
            assert_eq!(pos.len(), seg.len() - 1);
            assert_eq!(*seg.last().unwrap(), host.synapses());
        }
    }

    #[test]
    fn parts_round_trip_every_format() {
        let mut formats = Vec::new();
        for w in [
            WeightFormat::F32,
            WeightFormat::F16,
            WeightFormat::Bf16,
            WeightFormat::LogU8,
            WeightFormat::Bit,
        ] {
            for i in [IndexFormat::U32, IndexFormat::U16] {
                formats.push(fmt(w, i));
            }
        }
        formats.push(FiberFormat {
            layout: Layout::Bitmap,
            ..fmt(WeightFormat::Bit, IndexFormat::U32)
        });
        for f in formats {
            let mut x = PackedFiber::generate(7, 1, 1500, 70_000, 0.01, f, 0.05, None).unwrap();
            let bits = vec![u64::MAX; 70_000usize.div_ceil(64)];
            x.hebbian(&[3, 1200], &bits, 0.05, None, 1).unwrap();
            let parts = x.to_parts().unwrap();
            match f.layout {
                Layout::Csr => assert_eq!(parts.seg.len(), 1500 * 2 + 1),
                Layout::Bitmap => {
                    assert!(parts.seg.is_empty());
                    assert!(matches!(&parts.idx, PartIdx::Bitmap(b) if b.len() == 1500 * 1094));
                }
            }
            assert_eq!(
                x.side().len(),
                (f.weights == WeightFormat::Bit) as usize * 2
            );
            let back = PackedFiber {
                device: Some(Arc::new(Fake(parts.clone()))),
                chunks: Vec::new(),
                ..x.clone()
            }
            .to_host()
            .unwrap();
            assert_eq!(back.to_parts().unwrap(), parts, "{}", x.format.label());
            for r in [0, 3, 1024, 1200, 1499] {
                assert_eq!(back.row(r), x.row(r));
            }
        }
    }

    /// A "device" that only holds parts (for the layout round trip).
    #[derive(Debug)]
    struct Fake(FiberParts);

    impl DeviceFiber for Fake {
        fn accumulate(&self, _: &[u32], _: Option<&[u64]>, _: &mut [f32]) -> Result<()> {
            unimplemented!("layout tests only")
        }
        fn hits(&self, _: &[u32], _: &[u64]) -> Result<Vec<u64>> {
            unimplemented!("layout tests only")
        }
        fn hebbian(&self, _: &[u32], _: &[u64], _: Update, _: bool, _: u64) -> Result<()> {
            unimplemented!("layout tests only")
        }
        fn download(&self) -> Result<FiberParts> {
            Ok(self.0.clone())
        }
        fn bytes(&self) -> usize {
            0
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
