//! The procedural engine's step on the device (kernels/procedural.cu): the
//! k-cap of one target from a [`DeviceStep`] prepared by the host, with the
//! synapses onto the winners for the Hebbian update.
//!
//! **Key decision: chunks of at most 2³⁰ target ids, dense inside a chunk.**
//! `proc_count` writes the input of every id of a chunk (0 for ids without
//! input) into one f32 buffer; the dense radix top-k of [`super::topk`] then
//! takes the chunk's k best, and the host merges chunks. Ties go to the
//! lowest id and ids without input have input 0, so the dense k-cap is the
//! CPU's rule exactly, including "fewer than k received input: the lowest
//! ids without input fill the cap". Device memory is one chunk (4 GiB at
//! most), whatever n: an area of 10¹¹ neurons runs in 94 chunks.
//!
//! The Hebbian synapses are found by `proc_hits`, which regenerates the
//! plastic fibers' rows in the blocks holding winners, up to the last
//! winner of each block (as the CPU's `ProceduralState::hebbian`).

use super::topk::{self, TopkWorkspace};
use crate::device::CudaDevice;
use crate::error::{DriverResultExt, Error, Result};
use crate::kernels;
use cudarc::driver::{
    sys::CUfunction_attribute, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use kcap::engine::procedural::device::DeviceStep;
use kcap::engine::procedural::{ProceduralState, Selection, SkipTable, BLOCK, BLOCK_BITS};
use std::time::Instant;

/// Target blocks per chunk: 2¹⁴ blocks = 2³⁰ ids = 4 GiB of f32 inputs.
pub const MAX_CHUNK_BLOCKS: u64 = 1 << 14;
/// Threads per block of both kernels (must match `__launch_bounds__`).
const THREADS: u32 = 1024;
/// Fibers into one target per step (KCAP_MAX_FIBERS in procedural.cu).
pub const MAX_FIBERS: usize = 32;
/// Firing rows per step the 16-bit shared counters allow.
pub const MAX_SLOTS: u64 = u16::MAX as u64;

/// `ProcArgs` of procedural.cu (layout checked there by static_assert).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct ProcArgs {
    row_keys: u64,
    fiber_end: u64,
    scale: u64,
    plastic: u64,
    table: u64,
    n: u64,
    block0: u64,
    nf: u32,
    slots: u32,
    tbits: u32,
    nblocks: u32,
    corr_blocks: u64,
    corr_off: u64,
    corr_local: u64,
    corr_delta: u64,
    ncorr: u32,
    pad0: u32,
    values: u64,
    stats: u64,
    wblocks: u64,
    woff: u64,
    wlocal: u64,
    hits: u64,
    hits_cap: u32,
    pad1: u32,
    hits_count: u64,
    log2_err: f64,
}
// SAFETY: plain repr(C) integers and device addresses, laid out as the C struct.
unsafe impl DeviceRepr for ProcArgs {}
const _: () = assert!(std::mem::size_of::<ProcArgs>() == 184);

/// How a step runs (tuning knobs; the result does not depend on them).
#[derive(Clone, Copy, Debug)]
pub struct ProcOptions {
    /// Skip-table index bits in shared memory (0: always the logarithm).
    pub table_bits: u32,
    /// Target blocks per chunk (≤ [`MAX_CHUNK_BLOCKS`]).
    pub chunk_blocks: u64,
    /// Decide most skips from the hardware's approximate log2 with a
    /// measured error bound, falling back to the exact recipe where the
    /// bound leaves the skip undecided (same result either way).
    pub fast_log: bool,
}

impl Default for ProcOptions {
    fn default() -> Self {
        ProcOptions {
            table_bits: 0,
            chunk_blocks: MAX_CHUNK_BLOCKS,
            fast_log: true,
        }
    }
}

/// The error bound of the fast skip path, in log2 units: twice the sum of
/// the device's worst `__log2f` error over all of [1, 2) (measured by
/// `proc_log2_error`, every float), the truncation of a draw to 24
/// significant bits (< 2^-22.4) and the offset of `unit_open` from
/// w / 2^64 for draws ≥ 2^-21 (< 2^-32). `None` when the measured error is
/// implausibly large (> 2^-20): the fast path is then not used.
pub fn log2_bound(dev: &CudaDevice) -> Result<Option<f64>> {
    let s = dev.stream();
    let f = dev.function(&kernels::PROCEDURAL, "proc_log2_error")?;
    let mut out = s.alloc_zeros::<u32>(1).what("alloc")?;
    // SAFETY: the kernel writes one u32 through `out` (one element).
    unsafe {
        s.launch_builder(&f)
            .arg(&mut out)
            .launch(super::cfg(dev.sm_count() * 4, 256))
            .what("launch proc_log2_error")?;
    }
    let worst = f32::from_bits(s.clone_dtoh(&out).what("copy log2 error")?[0]) as f64;
    if !(worst.is_finite() && worst <= 2f64.powi(-20)) {
        return Ok(None);
    }
    Ok(Some(2.0 * (worst + 2f64.powf(-22.4) + 2f64.powi(-32))))
}

/// The device's answer for one target.
#[derive(Clone, Debug, Default)]
pub struct ProcOutcome {
    /// The k winners, increasing, and their inputs.
    pub winners: Vec<u64>,
    pub inputs: Vec<f32>,
    pub received: u64,
    pub events: u64,
    /// (winner, slot) for every synapse of a plastic fiber onto a winner.
    pub synapses: Vec<(u64, u32)>,
    /// Seconds spent counting (all chunks, incl. top-k) and finding synapses.
    pub count_s: f64,
    pub hits_s: f64,
}

impl ProcOutcome {
    /// The [`Selection`] of `step` this outcome answers (validated), for
    /// `ProceduralState::hebbian_selected`.
    pub fn into_selection(self, step: &DeviceStep) -> kcap::Result<Selection> {
        ProceduralState::device_selection(
            step,
            self.winners,
            self.inputs,
            self.received,
            self.events,
            self.synapses,
        )
    }
}

/// Device buffers reused across steps.
pub struct ProcWorkspace {
    values: Option<CudaSlice<f32>>,
    stats: CudaSlice<u64>,
    hits: CudaSlice<u64>,
    hits_count: CudaSlice<u32>,
    table: Option<(u64, u32, CudaSlice<u16>)>,
    topk: TopkWorkspace,
    gathered: CudaSlice<f32>,
    log2_err: Option<f64>,
}

impl ProcWorkspace {
    pub fn new(dev: &CudaDevice) -> Result<ProcWorkspace> {
        let s = dev.stream();
        Ok(ProcWorkspace {
            values: None,
            stats: s.alloc_zeros(2).what("alloc")?,
            hits: s.alloc_zeros(1 << 16).what("alloc")?,
            hits_count: s.alloc_zeros(1).what("alloc")?,
            table: None,
            topk: TopkWorkspace::new(dev)?,
            gathered: s.alloc_zeros(1).what("alloc")?,
            log2_err: log2_bound(dev)?,
        })
    }

    /// The fast path's error bound (log2 units) on this device, if usable.
    pub fn log2_err(&self) -> Option<f64> {
        self.log2_err
    }

    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        self.values.as_ref().map_or(0, |v| v.len() * 4)
            + self.hits.len() * 8
            + self.table.as_ref().map_or(0, |t| t.2.len() * 2)
            + self.gathered.len() * 4
            + self.topk.bytes()
    }

    /// Device bytes a step of an area of `n` neurons will hold (for the
    /// memory guard): the chunk buffer plus the top-k and hit buffers.
    pub fn bytes_for(n: u64, k: usize, opts: &ProcOptions) -> u64 {
        let chunk = n.div_ceil(BLOCK).min(opts.chunk_blocks.max(1)) * BLOCK;
        chunk * 4 + (1 << 26) * 16 + (k as u64) * 64 + (1 << 20)
    }
}

fn upload<T: DeviceRepr + Clone + Default>(dev: &CudaDevice, v: &[T]) -> Result<CudaSlice<T>> {
    // Never a zero-length buffer: kernels get a valid address either way.
    if v.is_empty() {
        return dev.stream().clone_htod(&[T::default()]).what("upload");
    }
    dev.stream().clone_htod(v).what("upload")
}

fn ptr<T>(dev: &CudaDevice, s: &CudaSlice<T>) -> u64 {
    let (p, _g) = s.device_ptr(dev.stream());
    p
}

/// Runs `step` on the device.
pub fn select(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    step: &DeviceStep,
    opts: &ProcOptions,
) -> Result<ProcOutcome> {
    let op = "procedural select";
    let slots = step.slots();
    if slots > MAX_SLOTS {
        return Err(Error::invalid(
            op,
            format!(
                "{slots} firing rows; the GPU step takes at most {MAX_SLOTS} (16-bit counters)"
            ),
        ));
    }
    if step.fibers.len() > MAX_FIBERS {
        return Err(Error::invalid(
            op,
            format!(
                "{} fibers into one target; the GPU step takes at most {MAX_FIBERS}",
                step.fibers.len()
            ),
        ));
    }
    let (n, k) = (step.n, step.k);
    if k == 0 || k as u64 >= n {
        return Err(Error::invalid(
            op,
            format!("k = {k} must be in 1..n (n = {n})"),
        ));
    }
    if opts.table_bits > 15 || opts.chunk_blocks == 0 || opts.chunk_blocks > MAX_CHUNK_BLOCKS {
        return Err(Error::invalid(op, format!("bad options {opts:?}")));
    }
    let s = dev.stream();
    let t0 = Instant::now();
    // Per-step inputs.
    let mut keys = Vec::with_capacity(slots as usize);
    let mut ends = Vec::new();
    for f in &step.fibers {
        keys.extend_from_slice(&f.row_keys);
        ends.push(keys.len() as u32);
    }
    let scale: Vec<f64> = step.fibers.iter().map(|f| f.scale).collect();
    let plastic: Vec<u32> = step.fibers.iter().map(|f| f.plastic as u32).collect();
    let d_keys = upload(dev, &keys)?;
    let d_ends = upload(dev, &ends)?;
    let d_scale = upload(dev, &scale)?;
    let d_plastic = upload(dev, &plastic)?;
    let d_cb = upload(dev, &step.corr_blocks)?;
    let d_co = upload(dev, &step.corr_off)?;
    let d_cl = upload(dev, &step.corr_local)?;
    let d_cd = upload(dev, &step.corr_delta)?;
    // The skip table: only when every fiber has the same p.
    let p0 = step.fibers.first().map(|f| f.p);
    let same_p = p0.is_some_and(|p| step.fibers.iter().all(|f| f.p == p));
    let tbits = if same_p { opts.table_bits } else { 0 };
    if tbits > 0 {
        let p = p0.unwrap();
        let fresh = !matches!(&ws.table, Some((q, b, _)) if *q == p.to_bits() && *b == tbits);
        if fresh {
            let t = SkipTable::with_bits(p, tbits);
            ws.table = Some((p.to_bits(), tbits, upload(dev, t.entries().1)?));
        }
    }
    let table_ptr = match (&ws.table, tbits) {
        (Some((_, _, t)), b) if b > 0 => ptr(dev, t),
        _ => 0,
    };
    let nblocks = n.div_ceil(BLOCK);
    let chunk = opts.chunk_blocks.min(nblocks);
    let need = (chunk * BLOCK) as usize;
    if ws.values.as_ref().is_none_or(|v| v.len() < need) {
        // Memory guard: the chunk buffer is the step's one large
        // allocation; refuse it, with the estimate and what the device has
        // free, rather than fail inside the driver.
        let held = ws.values.as_ref().map_or(0, |v| v.len() * 4) as u64;
        let est = ProcWorkspace::bytes_for(n, k, opts);
        let free = dev.available_memory()?;
        if est > free + held {
            return Err(Error::invalid(
                op,
                format!(
                    "not enough GPU memory: the step needs about {:.2} GiB, {:.2} GiB are available on {}{} (use fewer chunk blocks, or the CPU)",
                    est as f64 / 1073741824.0,
                    (free + held) as f64 / 1073741824.0,
                    dev.name(),
                    if dev.memory_limit().is_some() { " under the memory limit" } else { "" }
                ),
            ));
        }
        ws.values = None;
        ws.values = Some(s.alloc_zeros::<f32>(need).what("alloc procedural inputs")?);
    }
    s.memset_zeros(&mut ws.stats).what("zero stats")?;
    let mut a = ProcArgs {
        row_keys: ptr(dev, &d_keys),
        fiber_end: ptr(dev, &d_ends),
        scale: ptr(dev, &d_scale),
        plastic: ptr(dev, &d_plastic),
        table: table_ptr,
        n,
        nf: step.fibers.len() as u32,
        slots: slots as u32,
        tbits,
        corr_blocks: ptr(dev, &d_cb),
        corr_off: ptr(dev, &d_co),
        corr_local: ptr(dev, &d_cl),
        corr_delta: ptr(dev, &d_cd),
        ncorr: step.corr_blocks.len() as u32,
        values: ptr(dev, ws.values.as_ref().unwrap()),
        stats: ptr(dev, &ws.stats),
        log2_err: if opts.fast_log {
            ws.log2_err.unwrap_or(0.0)
        } else {
            0.0
        },
        ..Default::default()
    };
    let count = dev.function(&kernels::PROCEDURAL, "proc_count")?;
    let smem = (BLOCK / 2) as u32 * 4 + if tbits > 0 { 2u32 << tbits } else { 0 };
    count
        .set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .what("proc_count shared memory")?;
    // Running k-cap over the chunks: (id, input), merged on the host.
    let mut best: Vec<(u64, f32)> = Vec::new();
    let mut b0 = 0u64;
    while b0 < nblocks {
        let nb = chunk.min(nblocks - b0);
        a.block0 = b0;
        a.nblocks = nb as u32;
        let cfg = LaunchConfig {
            grid_dim: (nb as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        // SAFETY: every address in `a` is a live device buffer of the sizes
        // the kernel reads (checked above: values holds nb·2^16 f32, the
        // per-fiber arrays nf entries, row_keys `slots`); the kernel's only
        // parameter is a ProcArgs by value.
        unsafe {
            s.launch_builder(&count)
                .arg(&a)
                .launch(cfg)
                .what("launch proc_count")?;
        }
        let len = (n - b0 * BLOCK).min(nb * BLOCK) as usize;
        let values = ws.values.as_ref().unwrap();
        let chunk_best: Vec<(u64, f32)> = if k >= len {
            let v = s
                .clone_dtoh(&values.slice(..len))
                .what("copy chunk inputs")?;
            v.into_iter()
                .enumerate()
                .map(|(i, x)| (b0 * BLOCK + i as u64, x))
                .collect()
        } else {
            topk::topk_prefix(dev, &mut ws.topk, values, len, k)?;
            // Checks the kernels' own consistency flags.
            ws.topk.fetch_sorted(dev)?;
            let vals = gather(dev, values, &ws.topk, &mut ws.gathered, k)?;
            ws_ids_pairs(dev, &ws.topk, vals)?
                .into_iter()
                .map(|(i, x)| (b0 * BLOCK + i, x))
                .collect()
        };
        best = merge_best(best, chunk_best, k);
        b0 += nb;
    }
    best.sort_unstable_by_key(|p| p.0);
    let stats = s.clone_dtoh(&ws.stats).what("copy stats")?;
    let t1 = Instant::now();
    let winners: Vec<u64> = best.iter().map(|p| p.0).collect();
    let inputs: Vec<f32> = best.iter().map(|p| p.1).collect();
    let synapses = if step.fibers.iter().any(|f| f.plastic) && slots > 0 {
        hits(dev, ws, &mut a, &winners, tbits)?
    } else {
        Vec::new()
    };
    Ok(ProcOutcome {
        winners,
        inputs,
        received: stats[0],
        events: stats[1],
        synapses,
        count_s: (t1 - t0).as_secs_f64(),
        hits_s: t1.elapsed().as_secs_f64(),
    })
}

/// The (chunk id, input) pairs of the last top-k, in the device's order.
fn ws_ids_pairs(dev: &CudaDevice, ws: &TopkWorkspace, vals: Vec<f32>) -> Result<Vec<(u64, f32)>> {
    let ids = dev.stream().clone_dtoh(&ws.ids()).what("copy top-k ids")?;
    Ok(ids.into_iter().map(|i| i as u64).zip(vals).collect())
}

/// Inputs of the last top-k's ids, in the device's order of the ids.
fn gather(
    dev: &CudaDevice,
    values: &CudaSlice<f32>,
    ws: &TopkWorkspace,
    out: &mut CudaSlice<f32>,
    k: usize,
) -> Result<Vec<f32>> {
    let s = dev.stream();
    if out.len() < k {
        *out = s.alloc_zeros(k).what("alloc gathered inputs")?;
    }
    let f = dev.function(&kernels::PROCEDURAL, "proc_gather")?;
    let ids = ws.ids();
    let k32 = k as u32;
    // SAFETY: ids holds k chunk ids < values.len(); out holds ≥ k f32;
    // argument types match proc_gather(const float*, const u32*, float*, u32).
    unsafe {
        s.launch_builder(&f)
            .arg(values)
            .arg(&ids)
            .arg(&mut *out)
            .arg(&k32)
            .launch(super::cfg(k.div_ceil(256).clamp(1, 1024) as u32, 256))
            .what("launch proc_gather")?;
    }
    s.clone_dtoh(&out.slice(..k)).what("copy gathered inputs")
}

/// The k best of two candidate lists under (input desc, id asc).
fn merge_best(mut a: Vec<(u64, f32)>, b: Vec<(u64, f32)>, k: usize) -> Vec<(u64, f32)> {
    a.extend(b);
    let key = |p: &(u64, f32)| (std::cmp::Reverse(kcap::cap::order_key(p.1)), p.0);
    if a.len() > k {
        a.select_nth_unstable_by_key(k - 1, key);
        a.truncate(k);
    }
    a
}

/// Every (winner, slot) synapse of a plastic fiber onto a winner.
fn hits(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    a: &mut ProcArgs,
    winners: &[u64],
    tbits: u32,
) -> Result<Vec<(u64, u32)>> {
    let s = dev.stream();
    let (mut wb, mut wo, mut wl) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &w) in winners.iter().enumerate() {
        let (b, l) = (w >> BLOCK_BITS, (w & (BLOCK - 1)) as u32);
        if wb.last() != Some(&b) {
            wb.push(b);
            wo.push(i as u32);
        }
        wl.push(l);
    }
    wo.push(winners.len() as u32);
    let d_wb = upload(dev, &wb)?;
    let d_wo = upload(dev, &wo)?;
    let d_wl = upload(dev, &wl)?;
    let f = dev.function(&kernels::PROCEDURAL, "proc_hits")?;
    let smem = (BLOCK / 32) as u32 * 4 + if tbits > 0 { 2u32 << tbits } else { 0 };
    f.set_attribute(
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        smem as i32,
    )
    .what("proc_hits shared memory")?;
    a.wblocks = ptr(dev, &d_wb);
    a.woff = ptr(dev, &d_wo);
    a.wlocal = ptr(dev, &d_wl);
    loop {
        s.memset_zeros(&mut ws.hits_count).what("zero hit count")?;
        a.hits = ptr(dev, &ws.hits);
        a.hits_cap = ws.hits.len().min(u32::MAX as usize) as u32;
        a.hits_count = ptr(dev, &ws.hits_count);
        let cfg = LaunchConfig {
            grid_dim: (wb.len() as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        // SAFETY: as in `select`, plus: wblocks/woff/wlocal describe the
        // winners (woff has wb.len() + 1 entries), and the kernel writes at
        // most hits_cap entries of `hits`.
        unsafe {
            s.launch_builder(&f)
                .arg(&*a)
                .launch(cfg)
                .what("launch proc_hits")?;
        }
        let found = s.clone_dtoh(&ws.hits_count).what("copy hit count")?[0] as usize;
        if found <= ws.hits.len() {
            let h = s.clone_dtoh(&ws.hits.slice(..found)).what("copy hits")?;
            return Ok(h
                .into_iter()
                .map(|x| (x >> 16, (x & 0xFFFF) as u32))
                .collect());
        }
        ws.hits = s
            .alloc_zeros(found.next_power_of_two())
            .what("alloc hit buffer")?;
    }
}
