//! The explicit engine's stored fibers on the GPU (kernels/explicit.cu):
//! generation, input accumulation, Hebbian update, and the device memory
//! guard.
//!
//! A fiber lives in the flat layout of [`kcap::engine::explicit::FiberParts`]
//! (per (row, column block) segment offsets, one index array, one weight
//! array; or bitmap rows); [`ExplicitFiber`] owns the device copies. Results
//! equal the host engine's bit for bit in every format of SPEC §4 (CSR or
//! bitmap rows; f32, f16, bf16, log-u8 and bit weights; u32 and block-local
//! u16 indices; nearest and stochastic rounding; f32 and fixed-point
//! accumulators) — including the f32 sums, because each accumulation CTA
//! adds the firing rows in firing order, exactly as the host does. Bit
//! weights keep their learned weights in the host's side table: a step
//! passes the firing rows' entries to the accumulation kernel, which adds
//! each row's after the row (as the host does), and the Hebbian update
//! lists the synapses onto winners ([`ExplicitFiber::hits`]) for the host
//! to apply. Bitmap fibers are generated as u32 rows (the same kernel, in
//! batches of rows) whose bits are then set.
//!
//! Memory guard: [`ExplicitFiber::generate`] and [`ExplicitFiber::upload`]
//! estimate the device bytes first ([`estimate_bytes`]) and refuse, with the
//! estimate and the free memory, a fiber that would not fit
//! ([`check_memory`]); the device's memory limit
//! ([`CudaDevice::set_memory_limit`], `KCAP_DEVICE_MEMORY_LIMIT` in bytes)
//! caps what counts as available, so the refusal can be tested on any GPU.

use super::{cfg, grid_for};
use crate::device::CudaDevice;
use crate::error::{DriverResultExt, Error, Result};
use crate::kernels;
use cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use kcap::engine::explicit::{FiberParts, GenSpec, PartIdx, PartWeights};
use kcap::format::weights::LogU8;
use kcap::format::{Accumulator, FiberFormat, IndexFormat, Layout, WeightFormat};
use std::sync::Arc;

/// Column block width (kcap::engine::explicit::BLOCK).
const BLOCK_W: u64 = 1 << 16;
/// Targets per accumulation CTA (KCAP_TILE in explicit.cu).
const TILE: u64 = 4096;
/// Warps per generation CTA (KCAP_GEN_WARPS in explicit.cu).
const GEN_WARPS: u32 = 4;
/// Bitmap generation draws at most this many u32 targets per batch of rows.
const BITMAP_BATCH: u64 = 1 << 26;

/// Whether the device path keeps fibers of `format`: every valid format
/// (bitmap rows go with bit weights).
pub fn supports(format: &FiberFormat) -> bool {
    format.layout == Layout::Csr || format.weights == WeightFormat::Bit
}

enum DIdx {
    U32(CudaSlice<u32>),
    U16(CudaSlice<u16>),
    /// Bitmap rows, ⌈n_tgt / 64⌉ words each.
    Bitmap(CudaSlice<u64>),
}

enum DW {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
    Bf16(CudaSlice<u16>),
    Log(CudaSlice<u8>),
    /// Bit weights: none stored.
    None,
}

/// One explicit fiber in device memory.
pub struct ExplicitFiber {
    dev: Arc<CudaDevice>,
    format: FiberFormat,
    n_src: u64,
    n_tgt: u64,
    nb: u32,
    nnz: u64,
    seg: CudaSlice<u64>,
    idx: DIdx,
    w: DW,
    /// The log-u8 decode table (256 entries; one unused entry otherwise).
    table: CudaSlice<f32>,
    max_code: u32,
    has_cap: u32,
    /// The Hebbian pair list of bit weights, kept between steps, and its
    /// pair count.
    hits: Option<(CudaSlice<u64>, CudaSlice<u64>)>,
}

impl std::fmt::Debug for ExplicitFiber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExplicitFiber")
            .field("format", &self.format.label())
            .field("n_src", &self.n_src)
            .field("n_tgt", &self.n_tgt)
            .field("synapses", &self.nnz)
            .finish_non_exhaustive()
    }
}

/// Device bytes of a fiber of `nnz` synapses (plus the generation's
/// transient counter table, and for bitmap rows its batch of u32 targets,
/// when `generating`).
pub fn estimate_bytes(
    format: &FiberFormat,
    n_src: u64,
    n_tgt: u64,
    nnz: u64,
    generating: bool,
) -> u64 {
    let items = n_src * n_tgt.div_ceil(BLOCK_W);
    if format.layout == Layout::Bitmap {
        let rows = n_src * n_tgt.div_ceil(64) * 8;
        let gen = if generating {
            (items + 1) * 8 + items * 4 + nnz.min(BITMAP_BATCH.max(n_tgt)) * 4
        } else {
            0
        };
        return rows + gen + 1024;
    }
    let idx = match format.indices {
        IndexFormat::U32 => 4,
        IndexFormat::U16 => 2,
    };
    let w = format.weights.bytes() as u64;
    (items + 1) * 8 + if generating { items * 4 } else { 0 } + nnz * (idx + w) + 1024
}

/// The guard: `Ok` if `need` bytes fit in what the device can give
/// ([`CudaDevice::available_memory`]: free memory, lowered to the memory
/// limit when one is set), else the library's out-of-memory error naming
/// `what`, the estimate and what is available.
pub fn check_memory(
    dev: &CudaDevice,
    need: u64,
    what: impl FnOnce() -> String,
) -> kcap::Result<()> {
    let avail = dev.available_memory()?;
    if need > avail {
        let capped = match dev.memory_limit() {
            Some(l) if l <= avail => " under the memory limit",
            _ => " free",
        };
        return Err(kcap::KcapError::OutOfMemory {
            what: format!(
                "{} in the memory of GPU {} (available{capped})",
                what(),
                dev.name()
            ),
            need,
            avail,
        });
    }
    Ok(())
}

fn log_table(dev: &CudaDevice, log: Option<&LogU8>) -> Result<(CudaSlice<f32>, u32, u32)> {
    let s = dev.stream();
    Ok(match log {
        Some(l) => (
            s.clone_htod(&l.table).what("upload log-u8 table")?,
            l.max_code as u32,
            l.w_max.is_some() as u32,
        ),
        None => (s.alloc_zeros::<f32>(1).what("alloc")?, 0, 0),
    })
}

impl ExplicitFiber {
    /// Generates the fiber of `spec` on the device: the same synapses, in
    /// the same order, as the host's `PackedFiber::generate`.
    pub fn generate(dev: &Arc<CudaDevice>, spec: &GenSpec) -> kcap::Result<ExplicitFiber> {
        let op = "explicit_generate";
        let nb = spec.n_tgt.div_ceil(BLOCK_W);
        let items = spec.n_src * nb;
        if !supports(&spec.format) {
            return Err(Error::invalid(
                op,
                format!("format {} stays on the host", spec.format.label()),
            )
            .into());
        }
        if spec.seg.len() as u64 != items + 1 || spec.pos.len() as u64 != items || spec.seg[0] != 0
        {
            return Err(Error::invalid(
                op,
                format!(
                    "{} segment offsets and {} counters for {items} row blocks",
                    spec.seg.len(),
                    spec.pos.len()
                ),
            )
            .into());
        }
        if spec.n_tgt == 0 || spec.n_tgt > u32::MAX as u64 || nb > u32::MAX as u64 {
            return Err(Error::invalid(op, format!("n_tgt = {}", spec.n_tgt)).into());
        }
        // Every segment no longer than its block (the kernel writes
        // exactly seg[i+1] - seg[i] targets at seg[i]).
        for (i, w) in spec.seg.windows(2).enumerate() {
            let len = BLOCK_W.min(spec.n_tgt - (i as u64 % nb) * BLOCK_W);
            if w[1] < w[0] || w[1] - w[0] > len {
                return Err(
                    Error::invalid(op, format!("segment {i} holds {} - {}", w[1], w[0])).into(),
                );
            }
        }
        let nnz = spec.seg[items as usize];
        let need = estimate_bytes(&spec.format, spec.n_src, spec.n_tgt, nnz, true);
        check_memory(dev, need, || {
            format!(
                "explicit fiber of {} x {} neurons ({}, {nnz} synapses)",
                spec.n_src,
                spec.n_tgt,
                spec.format.label()
            )
        })?;
        let s = dev.stream();
        let seg = s.clone_htod(spec.seg).what("upload segment offsets")?;
        let pos = s.clone_htod(spec.pos).what("upload stream counters")?;
        let len = (nnz as usize).max(1);
        let gen_cfg = LaunchConfig {
            grid_dim: (
                (items.div_ceil(GEN_WARPS as u64)).clamp(1, dev.sm_count() as u64 * 6) as u32,
                1,
                1,
            ),
            block_dim: (32 * GEN_WARPS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (nb32, comp) = (nb as u32, spec.complement as u32);
        let gen = |name: &'static str| GenArgs {
            dev,
            name,
            cfg: gen_cfg,
            spec,
            nb: nb32,
            item0: 0,
            items,
            seg: seg.as_view(),
            pos: pos.as_view(),
            complement: comp,
            nnz,
            len,
        };
        let idx = match (spec.format.layout, spec.format.indices) {
            (Layout::Bitmap, _) => {
                let mut bits = s
                    .alloc_zeros::<u64>((spec.n_src * spec.n_tgt.div_ceil(64)).max(1) as usize)
                    .what("alloc bitmap rows")?;
                // Batches of rows of at most BITMAP_BATCH targets (or one row).
                let mut r0 = 0u64;
                while r0 < spec.n_src {
                    let at = |r: u64| spec.seg[(r * nb) as usize];
                    let fit = spec.seg[(r0 * nb) as usize..]
                        .partition_point(|&o| o - at(r0) <= BITMAP_BATCH)
                        as u64;
                    let r1 = (r0 + fit.saturating_sub(1) / nb).clamp(r0 + 1, spec.n_src);
                    let (i0, i1) = ((r0 * nb) as usize, (r1 * nb) as usize);
                    let batch = GenArgs {
                        item0: i0 as u64,
                        items: (i1 - i0) as u64,
                        seg: seg.slice(i0..=i1),
                        pos: pos.slice(i0..i1),
                        nnz: at(r1) - at(r0),
                        len: ((at(r1) - at(r0)) as usize).max(1),
                        ..gen("explicit_gen_u32")
                    };
                    let (bitems, bnnz) = (batch.items, batch.nnz);
                    let idx: CudaSlice<u32> = batch.run()?;
                    set_bits(
                        dev,
                        &seg.slice(i0..=i1),
                        &idx,
                        nb32,
                        bitems,
                        bnnz,
                        spec,
                        r0,
                        r1,
                        &mut bits,
                    )?;
                    r0 = r1;
                }
                DIdx::Bitmap(bits)
            }
            (Layout::Csr, IndexFormat::U32) => DIdx::U32(gen("explicit_gen_u32").run()?),
            (Layout::Csr, IndexFormat::U16) => DIdx::U16(gen("explicit_gen_u16").run()?),
        };
        drop(pos);
        let w = match spec.format.weights {
            WeightFormat::F32 => DW::F32(fill(dev, "explicit_fill_u32", len, 1.0f32.to_bits())?),
            WeightFormat::F16 => DW::F16(fill(
                dev,
                "explicit_fill_u16",
                len,
                half::f16::ONE.to_bits() as u32,
            )?),
            WeightFormat::Bf16 => DW::Bf16(fill(
                dev,
                "explicit_fill_u16",
                len,
                half::bf16::ONE.to_bits() as u32,
            )?),
            WeightFormat::LogU8 => DW::Log(s.alloc_zeros::<u8>(len).what("alloc weights")?),
            WeightFormat::Bit => DW::None,
        };
        let (table, max_code, has_cap) = log_table(dev, spec.log)?;
        let seg = match idx {
            // Bitmap rows need no offsets once generated.
            DIdx::Bitmap(_) => s.alloc_zeros::<u64>(1).what("alloc")?,
            _ => seg,
        };
        Ok(ExplicitFiber {
            dev: dev.clone(),
            format: spec.format,
            n_src: spec.n_src,
            n_tgt: spec.n_tgt,
            nb: nb as u32,
            nnz,
            seg,
            idx,
            w,
            table,
            max_code,
            has_cap,
            hits: None,
        })
    }

    /// Copies a host fiber (its flat layout) to the device.
    pub fn upload(
        dev: &Arc<CudaDevice>,
        format: FiberFormat,
        n_src: u64,
        n_tgt: u64,
        log: Option<&LogU8>,
        parts: &FiberParts,
    ) -> kcap::Result<ExplicitFiber> {
        let op = "explicit_upload";
        let nb = n_tgt.div_ceil(BLOCK_W);
        let bitmap = format.layout == Layout::Bitmap;
        let nnz = match &parts.idx {
            PartIdx::Bitmap(b) => b.iter().map(|w| w.count_ones() as u64).sum(),
            _ => parts.seg.last().copied().unwrap_or(0),
        };
        let (ilen, wlen) = (
            match &parts.idx {
                PartIdx::U32(v) => v.len(),
                PartIdx::U16(v) => v.len(),
                PartIdx::Bitmap(v) => v.len(),
            },
            match &parts.weights {
                PartWeights::F32(v) => v.len(),
                PartWeights::F16(v) | PartWeights::Bf16(v) => v.len(),
                PartWeights::LogU8(v) => v.len(),
                PartWeights::None => nnz as usize,
            },
        );
        let shape_ok = if bitmap {
            parts.seg.is_empty() && ilen as u64 == n_src * n_tgt.div_ceil(64)
        } else {
            parts.seg.len() as u64 == n_src * nb + 1 && ilen as u64 == nnz
        };
        if !supports(&format)
            || !shape_ok
            || wlen as u64 != nnz
            || n_tgt == 0
            || n_tgt > u32::MAX as u64
        {
            return Err(Error::invalid(
                op,
                format!(
                    "{} offsets, {ilen} targets, {wlen} weights for {n_src} x {n_tgt} ({})",
                    parts.seg.len(),
                    format.label()
                ),
            )
            .into());
        }
        check_memory(
            dev,
            estimate_bytes(&format, n_src, n_tgt, nnz, false),
            || {
                format!(
                    "explicit fiber of {n_src} x {n_tgt} neurons ({}, {nnz} synapses)",
                    format.label()
                )
            },
        )?;
        let s = dev.stream();
        let pad = |n: usize| n.max(1);
        let up16 = |v: &[u16]| -> Result<CudaSlice<u16>> {
            let mut d = s.alloc_zeros::<u16>(pad(v.len())).what("alloc")?;
            s.memcpy_htod(v, &mut d.slice_mut(..v.len()))
                .what("upload")?;
            Ok(d)
        };
        let idx = match &parts.idx {
            PartIdx::U32(v) if format.indices == IndexFormat::U32 && !bitmap => {
                let mut d = s.alloc_zeros::<u32>(pad(v.len())).what("alloc")?;
                s.memcpy_htod(v, &mut d.slice_mut(..v.len()))
                    .what("upload targets")?;
                DIdx::U32(d)
            }
            PartIdx::U16(v) if format.indices == IndexFormat::U16 && !bitmap => DIdx::U16(up16(v)?),
            PartIdx::Bitmap(v) if bitmap => {
                let mut d = s.alloc_zeros::<u64>(pad(v.len())).what("alloc")?;
                s.memcpy_htod(v, &mut d.slice_mut(..v.len()))
                    .what("upload bitmap rows")?;
                DIdx::Bitmap(d)
            }
            _ => return Err(Error::invalid(op, "indices do not match the format").into()),
        };
        let w = match (&parts.weights, format.weights) {
            (PartWeights::F32(v), WeightFormat::F32) => {
                let mut d = s.alloc_zeros::<f32>(pad(v.len())).what("alloc")?;
                s.memcpy_htod(v, &mut d.slice_mut(..v.len()))
                    .what("upload weights")?;
                DW::F32(d)
            }
            (PartWeights::F16(v), WeightFormat::F16) => DW::F16(up16(v)?),
            (PartWeights::Bf16(v), WeightFormat::Bf16) => DW::Bf16(up16(v)?),
            (PartWeights::LogU8(v), WeightFormat::LogU8) => {
                let mut d = s.alloc_zeros::<u8>(pad(v.len())).what("alloc")?;
                s.memcpy_htod(v, &mut d.slice_mut(..v.len()))
                    .what("upload weights")?;
                DW::Log(d)
            }
            (PartWeights::None, WeightFormat::Bit) => DW::None,
            _ => return Err(Error::invalid(op, "weights do not match the format").into()),
        };
        let seg: &[u64] = if bitmap { &[0] } else { &parts.seg };
        let (table, max_code, has_cap) = log_table(dev, log)?;
        Ok(ExplicitFiber {
            dev: dev.clone(),
            format,
            n_src,
            n_tgt,
            nb: nb as u32,
            nnz,
            seg: s.clone_htod(seg).what("upload segment offsets")?,
            idx,
            w,
            table,
            max_code,
            has_cap,
            hits: None,
        })
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    pub fn n_tgt(&self) -> u64 {
        self.n_tgt
    }

    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        estimate_bytes(&self.format, self.n_src, self.n_tgt, self.nnz, false) as usize
    }

    /// Copies the fiber back to the host (synchronizes).
    pub fn download(&self) -> Result<FiberParts> {
        let s = self.dev.stream();
        let n = self.nnz as usize;
        let seg = match &self.idx {
            DIdx::Bitmap(_) => Vec::new(),
            _ => s.clone_dtoh(&self.seg).what("download segment offsets")?,
        };
        let idx = match &self.idx {
            DIdx::U32(d) => PartIdx::U32(s.clone_dtoh(&d.slice(..n)).what("download targets")?),
            DIdx::U16(d) => PartIdx::U16(s.clone_dtoh(&d.slice(..n)).what("download targets")?),
            DIdx::Bitmap(d) => {
                let words = (self.n_src * self.n_tgt.div_ceil(64)) as usize;
                PartIdx::Bitmap(
                    s.clone_dtoh(&d.slice(..words))
                        .what("download bitmap rows")?,
                )
            }
        };
        let weights = match &self.w {
            DW::F32(d) => PartWeights::F32(s.clone_dtoh(&d.slice(..n)).what("download weights")?),
            DW::F16(d) => PartWeights::F16(s.clone_dtoh(&d.slice(..n)).what("download weights")?),
            DW::Bf16(d) => PartWeights::Bf16(s.clone_dtoh(&d.slice(..n)).what("download weights")?),
            DW::Log(d) => PartWeights::LogU8(s.clone_dtoh(&d.slice(..n)).what("download weights")?),
            DW::None => PartWeights::None,
        };
        s.synchronize().what("synchronize")?;
        Ok(FiberParts { seg, idx, weights })
    }

    /// The arguments every CSR accumulate / Hebbian kernel starts with:
    /// [`ExplicitFiber::push_rows`]'s, then the weights.
    fn push_fiber<'a>(
        &'a self,
        b: &mut cudarc::driver::LaunchArgs<'a>,
        firing: &'a CudaSlice<u32>,
        nf: &'a u32,
    ) {
        self.push_rows(b, firing, nf);
        match &self.w {
            DW::F32(d) => b.arg(d),
            DW::F16(d) | DW::Bf16(d) => b.arg(d),
            DW::Log(d) => b.arg(d),
            // Never read (WBIT): any f32 array.
            DW::None => b.arg(&self.table),
        };
    }

    /// seg, nb, n_src, n_tgt, firing, nfiring, idx.
    fn push_rows<'a>(
        &'a self,
        b: &mut cudarc::driver::LaunchArgs<'a>,
        firing: &'a CudaSlice<u32>,
        nf: &'a u32,
    ) {
        b.arg(&self.seg)
            .arg(&self.nb)
            .arg(&self.n_src)
            .arg(&self.n_tgt)
            .arg(firing)
            .arg(nf);
        match &self.idx {
            DIdx::U32(d) => b.arg(d),
            DIdx::U16(d) => b.arg(d),
            DIdx::Bitmap(d) => b.arg(d),
        };
    }

    fn wname(&self) -> &'static str {
        match self.w {
            DW::F32(_) => "f32",
            DW::F16(_) => "f16",
            DW::Bf16(_) => "bf16",
            DW::Log(_) => "log",
            DW::None => "bit",
        }
    }

    fn iname(&self) -> &'static str {
        match self.idx {
            DIdx::U32(_) => "u32",
            DIdx::U16(_) => "u16",
            DIdx::Bitmap(_) => "bitmap",
        }
    }

    /// `inputs += the rows firing[..nfiring]` on the device, rows in firing
    /// order (see the module docs), each followed by its entries of `side`
    /// (bit weights: [`kcap::engine::explicit::PackedFiber::side_rows`] of
    /// the same firing rows, uploaded). Ids ≥ n_src are skipped. Asynchronous.
    pub fn accumulate(
        &self,
        firing: &CudaSlice<u32>,
        nfiring: usize,
        side: Option<&CudaSlice<u64>>,
        inputs: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let op = "explicit_accumulate";
        if inputs.len() as u64 != self.n_tgt
            || nfiring > firing.len()
            || nfiring > u32::MAX as usize
            || side.is_some_and(|s| s.len() < nfiring + 1)
        {
            return Err(Error::invalid(
                op,
                format!(
                    "{} inputs for {} targets, {nfiring} of {} firing ids, {} side entries",
                    inputs.len(),
                    self.n_tgt,
                    firing.len(),
                    side.map_or(0, |s| s.len())
                ),
            ));
        }
        let acc = match self.format.accumulator {
            Accumulator::F32 => "f32",
            Accumulator::Fixed => "fixed",
        };
        // No side entries: any u64 array stands in (never read).
        let (side_d, has_side) = match side {
            Some(d) => (d, 1u32),
            None => (&self.seg, 0),
        };
        let nside = side_d.len() as u64;
        let nf = nfiring as u32;
        let s = self.dev.stream();
        if let DIdx::Bitmap(bits) = &self.idx {
            let name = if acc == "f32" {
                "explicit_acc_bitmap_f32"
            } else {
                "explicit_acc_bitmap_fixed"
            };
            let f = self.dev.function(&kernels::EXPLICIT, name)?;
            let words = self.n_tgt.div_ceil(64);
            let grid = self.n_tgt.div_ceil(TILE) as u32;
            // SAFETY: arguments match KCAP_ACC_BITMAP's signature; rows are
            // bounded by n_src (bits holds n_src·words words), side reads by
            // nside, targets by the CTA's tile inside n_tgt = inputs.len();
            // TILE / 8 threads, as the kernel's target ownership needs.
            unsafe {
                s.launch_builder(&f)
                    .arg(bits)
                    .arg(&words)
                    .arg(&self.n_src)
                    .arg(&self.n_tgt)
                    .arg(firing)
                    .arg(&nf)
                    .arg(side_d)
                    .arg(&nside)
                    .arg(&has_side)
                    .arg(&mut *inputs)
                    .launch(cfg(grid, (TILE / 8) as u32))
            }
            .what("launch explicit accumulate")?;
            return Ok(());
        }
        let name = kernel_name("explicit_acc", self.wname(), self.iname(), Some(acc));
        let f = self.dev.function(&kernels::EXPLICIT, name)?;
        let grid = (self.nb as u64 * (BLOCK_W / TILE)) as u32;
        let mut b = s.launch_builder(&f);
        self.push_fiber(&mut b, firing, &nf);
        b.arg(&self.table)
            .arg(&self.nnz)
            .arg(side_d)
            .arg(&nside)
            .arg(&has_side)
            .arg(&mut *inputs);
        // SAFETY: arguments match KCAP_ACC's signature; every read is
        // bounded in the kernel (rows by n_src, entries by nnz, side
        // entries by nside, targets by the CTA's tile inside n_tgt =
        // inputs.len()).
        unsafe { b.launch(cfg(grid, 512)) }.what("launch explicit accumulate")?;
        Ok(())
    }

    /// Bit weights: every synapse from a row of `firing[..nfiring]` onto a
    /// target set in `is_winner`, as `row << 32 | target`, in no particular
    /// order (synchronizes). The pair buffer is kept and grows as needed.
    pub fn hits(
        &mut self,
        firing: &CudaSlice<u32>,
        nfiring: usize,
        is_winner: &CudaSlice<u64>,
    ) -> Result<Vec<u64>> {
        let op = "explicit_hits";
        if nfiring > firing.len() || nfiring > u32::MAX as usize {
            return Err(Error::invalid(
                op,
                format!("{nfiring} of {} firing ids", firing.len()),
            ));
        }
        let s = self.dev.stream().clone();
        let (nf, nwords) = (nfiring as u32, is_winner.len() as u64);
        let mut cap = self.hits.as_ref().map_or(1 << 16, |h| h.0.len());
        loop {
            if self.hits.as_ref().is_none_or(|h| h.0.len() < cap) {
                self.hits = Some((
                    s.alloc_zeros::<u64>(cap).what("alloc hebbian pairs")?,
                    s.alloc_zeros::<u64>(1).what("alloc")?,
                ));
            }
            let (mut out, mut count) = self.hits.take().expect("just set");
            s.memset_zeros(&mut count).what("clear pair count")?;
            let capu = out.len() as u64;
            let (name, grid) = match self.idx {
                DIdx::Bitmap(_) => {
                    let items = nfiring as u64 * self.n_tgt.div_ceil(64);
                    (
                        "explicit_hits_bitmap",
                        grid_for(items, 256, self.dev.sm_count(), 8),
                    )
                }
                DIdx::U16(_) => (
                    "explicit_hits_u16",
                    grid_for(nfiring as u64, 8, self.dev.sm_count(), 16),
                ),
                DIdx::U32(_) => (
                    "explicit_hits_u32",
                    grid_for(nfiring as u64, 8, self.dev.sm_count(), 16),
                ),
            };
            let f = self.dev.function(&kernels::EXPLICIT, name)?;
            let words = self.n_tgt.div_ceil(64);
            let mut b = s.launch_builder(&f);
            match &self.idx {
                DIdx::Bitmap(bits) => {
                    b.arg(bits)
                        .arg(&words)
                        .arg(&self.n_src)
                        .arg(firing)
                        .arg(&nf);
                }
                _ => {
                    self.push_rows(&mut b, firing, &nf);
                    b.arg(&self.nnz);
                }
            }
            b.arg(is_winner)
                .arg(&nwords)
                .arg(&mut out)
                .arg(&capu)
                .arg(&mut count);
            // SAFETY: arguments match explicit_hits_bitmap (bits, words,
            // n_src, firing, nfiring, ...) or KCAP_HITS (push_rows, nnz,
            // ...); rows are bounded by n_src, entries by nnz, winner words
            // by nwords, writes by cap.
            unsafe { b.launch(cfg(grid, 256)) }.what("launch explicit hits")?;
            let n = s.clone_dtoh(&count).what("download pair count")?[0];
            s.synchronize().what("synchronize")?;
            if n == 0 {
                self.hits = Some((out, count));
                return Ok(Vec::new());
            }
            if n <= capu {
                let pairs = s
                    .clone_dtoh(&out.slice(..n as usize))
                    .what("download pairs")?;
                s.synchronize().what("synchronize")?;
                self.hits = Some((out, count));
                return Ok(pairs);
            }
            // Too many pairs for the buffer: again, with room for all.
            cap = n.next_power_of_two() as usize;
            self.hits = Some((out, count));
        }
    }

    /// The Hebbian update on the device: synapses from `firing[..nfiring]`
    /// (distinct ids) onto targets whose bit is set in `is_winner`.
    /// Asynchronous.
    #[allow(clippy::too_many_arguments)]
    pub fn hebbian(
        &mut self,
        firing: &CudaSlice<u32>,
        nfiring: usize,
        is_winner: &CudaSlice<u64>,
        mult: f32,
        cap: f32,
        stochastic: bool,
        sr_key: u64,
    ) -> Result<()> {
        let op = "explicit_hebbian";
        if nfiring > firing.len() || nfiring > u32::MAX as usize {
            return Err(Error::invalid(
                op,
                format!("{nfiring} of {} firing ids", firing.len()),
            ));
        }
        if matches!(self.w, DW::None) {
            return Err(Error::invalid(
                op,
                "bit weights learn in the host's side table (see hits)",
            ));
        }
        let name = kernel_name("explicit_hebb", self.wname(), self.iname(), None);
        let f = self.dev.function(&kernels::EXPLICIT, name)?;
        let (nf, nwords, st) = (nfiring as u32, is_winner.len() as u64, stochastic as u32);
        let grid = grid_for(nfiring as u64, 8, self.dev.sm_count(), 16);
        let s = self.dev.stream();
        let mut b = s.launch_builder(&f);
        self.push_fiber(&mut b, firing, &nf);
        b.arg(&self.nnz)
            .arg(is_winner)
            .arg(&nwords)
            .arg(&mult)
            .arg(&cap)
            .arg(&st)
            .arg(&sr_key)
            .arg(&self.max_code)
            .arg(&self.has_cap);
        // SAFETY: arguments match KCAP_HEBB's signature; reads and writes
        // are bounded in the kernel (entries by nnz, winner words by nwords).
        // The weights are written through the pointer pushed by push_fiber;
        // `&mut self` keeps every other use of them out meanwhile.
        unsafe { b.launch(cfg(grid, 256)) }.what("launch explicit hebbian")?;
        Ok(())
    }
}

/// One launch of `explicit_gen_u32` / `explicit_gen_u16`: items
/// `item0..item0 + items` (`seg`, `pos`: theirs only), `nnz` targets.
struct GenArgs<'a> {
    dev: &'a CudaDevice,
    name: &'static str,
    cfg: LaunchConfig,
    spec: &'a GenSpec<'a>,
    nb: u32,
    item0: u64,
    items: u64,
    seg: CudaView<'a, u64>,
    pos: CudaView<'a, u32>,
    complement: u32,
    nnz: u64,
    len: usize,
}

impl GenArgs<'_> {
    /// Allocates the `len` targets and draws them (index type `T`).
    fn run<T: DeviceRepr + ValidAsZeroBits>(self) -> Result<CudaSlice<T>> {
        let s = self.dev.stream();
        let mut idx = s.alloc_zeros::<T>(self.len).what("alloc targets")?;
        let f = self.dev.function(&kernels::EXPLICIT, self.name)?;
        // SAFETY: argument list matches explicit_gen_*; seg has items + 1
        // entries, pos items, idx len >= nnz (writes are bounded by nnz);
        // T is the kernel's index type (the caller pairs name and T).
        unsafe {
            s.launch_builder(&f)
                .arg(&self.spec.key)
                .arg(&self.spec.n_tgt)
                .arg(&self.nb)
                .arg(&self.item0)
                .arg(&self.items)
                .arg(&self.seg)
                .arg(&self.pos)
                .arg(&self.complement)
                .arg(&mut idx)
                .arg(&self.nnz)
                .launch(self.cfg)
                .what("launch explicit generation")?;
        }
        Ok(idx)
    }
}

/// Sets the bits of rows `r0..r1` of `bits` from the batch's drawn u32
/// targets `idx` (`items` row blocks, `nnz` targets, offsets `seg`).
#[allow(clippy::too_many_arguments)]
fn set_bits(
    dev: &CudaDevice,
    seg: &CudaView<u64>,
    idx: &CudaSlice<u32>,
    nb: u32,
    items: u64,
    nnz: u64,
    spec: &GenSpec,
    r0: u64,
    r1: u64,
    bits: &mut CudaSlice<u64>,
) -> Result<()> {
    let words = spec.n_tgt.div_ceil(64);
    let (w0, w1) = ((r0 * words) as usize, (r1 * words) as usize);
    let mut rows = bits.slice_mut(w0..w1);
    let nbits = (w1 - w0) as u64;
    let f = dev.function(&kernels::EXPLICIT, "explicit_set_bits")?;
    let grid = grid_for(items * 32, 256, dev.sm_count(), 8);
    // SAFETY: explicit_set_bits(seg, idx, nb, nitems, nidx, words, bits,
    // nbits): seg has items + 1 entries, idx nnz (reads bounded by nidx),
    // writes bounded by nbits = the rows' words.
    unsafe {
        dev.stream()
            .launch_builder(&f)
            .arg(seg)
            .arg(idx)
            .arg(&nb)
            .arg(&items)
            .arg(&nnz)
            .arg(&words)
            .arg(&mut rows)
            .arg(&nbits)
            .launch(cfg(grid, 256))
            .what("launch explicit set bits")?;
    }
    Ok(())
}

/// `len` elements of type `T` (4 bytes for `explicit_fill_u32`, 2 for
/// `explicit_fill_u16`), each set to the bit pattern `v`.
fn fill<T: DeviceRepr + ValidAsZeroBits>(
    dev: &CudaDevice,
    name: &'static str,
    len: usize,
    v: u32,
) -> Result<CudaSlice<T>> {
    let s = dev.stream();
    let mut w = s.alloc_zeros::<T>(len).what("alloc weights")?;
    let f = dev.function(&kernels::EXPLICIT, name)?;
    let n = len as u64;
    let grid = grid_for(n, 256, dev.sm_count(), 8);
    // SAFETY: explicit_fill_u32/u16(x, n, v) write x[0..n], n = w.len(); the
    // caller pairs the kernel with a T of its element size.
    unsafe {
        s.launch_builder(&f)
            .arg(&mut w)
            .arg(&n)
            .arg(&v)
            .launch(cfg(grid, 256))
            .what("launch explicit fill")?;
    }
    Ok(w)
}

/// `explicit_acc_<w>_<i>_<acc>` / `explicit_hebb_<w>_<i>` as a static name.
fn kernel_name(op: &str, w: &str, i: &str, acc: Option<&str>) -> &'static str {
    let name = match acc {
        Some(a) => format!("{op}_{w}_{i}_{a}"),
        None => format!("{op}_{w}_{i}"),
    };
    KERNEL_NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .expect("every format combination has a kernel")
}

/// Every kernel of explicit.cu (the NVRTC test checks each is compiled).
pub const KERNEL_NAMES: &[&str] = &[
    "explicit_acc_f32_u32_f32",
    "explicit_acc_f32_u16_f32",
    "explicit_acc_f16_u32_f32",
    "explicit_acc_f16_u16_f32",
    "explicit_acc_bf16_u32_f32",
    "explicit_acc_bf16_u16_f32",
    "explicit_acc_log_u32_f32",
    "explicit_acc_log_u16_f32",
    "explicit_acc_bit_u32_f32",
    "explicit_acc_bit_u16_f32",
    "explicit_acc_f32_u32_fixed",
    "explicit_acc_f32_u16_fixed",
    "explicit_acc_f16_u32_fixed",
    "explicit_acc_f16_u16_fixed",
    "explicit_acc_bf16_u32_fixed",
    "explicit_acc_bf16_u16_fixed",
    "explicit_acc_log_u32_fixed",
    "explicit_acc_log_u16_fixed",
    "explicit_acc_bit_u32_fixed",
    "explicit_acc_bit_u16_fixed",
    "explicit_hebb_f32_u32",
    "explicit_hebb_f32_u16",
    "explicit_hebb_f16_u32",
    "explicit_hebb_f16_u16",
    "explicit_hebb_bf16_u32",
    "explicit_hebb_bf16_u16",
    "explicit_hebb_log_u32",
    "explicit_hebb_log_u16",
    "explicit_acc_bitmap_f32",
    "explicit_acc_bitmap_fixed",
    "explicit_hits_u32",
    "explicit_hits_u16",
    "explicit_hits_bitmap",
    "explicit_set_bits",
    "explicit_gen_u32",
    "explicit_gen_u16",
    "explicit_fill_u32",
    "explicit_fill_u16",
];
