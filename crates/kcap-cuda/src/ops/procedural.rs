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
    sys::CUfunction_attribute, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PinnedHostSlice, PushKernelArg, ValidAsZeroBits,
};
use kcap::engine::procedural::device::{DeviceCorrections, DeviceFiber, DeviceStep};
use kcap::engine::procedural::{ProceduralState, Selection, SkipTable, BLOCK, BLOCK_BITS};
use std::sync::Arc;
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
    hits_part: u32,
    hits_count: u64,
    log2_err: f64,
    base: u64,
    counts: u64,
    marks: u64,
    marks1: u64,
    mark_split: u32,
    seg_bits: u32,
    f32_abs: f32,
    f32_rel: f32,
}
// SAFETY: plain repr(C) integers and device addresses, laid out as the C struct.
unsafe impl DeviceRepr for ProcArgs {}
const _: () = assert!(std::mem::size_of::<ProcArgs>() == 232);

/// Every kernel of procedural.cu the launchers name (the NVRTC test checks
/// each is compiled).
pub const KERNEL_NAMES: &[&str] = &[
    "proc_count",
    "proc_count_f32",
    "proc_count_f32k",
    "proc_count_marks",
    "proc_count_marks_f32",
    "proc_count_marks_f32k",
    "proc_corrected",
    "proc_hits",
    "proc_hits_f32",
    "proc_hits_f32k",
    "proc_hits_f32_rest",
    "proc_hits_f32k_rest",
    "proc_gather",
    "proc_gather_u16",
    "proc_min_f32",
    "proc_log2_error",
    "proc_log2_error_f32",
];

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
    /// With `fast_log`: decide in single precision (fewer, cheaper
    /// instructions; bound measured like the double-precision one, see
    /// [`log2_bound_f32`]) rather than from a double-precision estimate.
    pub fast_f32: bool,
    /// Keep dense per-target u16 counts on the device between steps when
    /// they fit ([`Resident`]): the stimuli's counts are computed once and
    /// reused, and the counting of the other fibers overlaps the host's
    /// corrections. Off, or when they do not fit, every step streams.
    pub resident: bool,
    /// With `resident`: after a step whose only non-stimulus fiber is the
    /// target's own (A → A), count that fiber for the next step from the
    /// new winners while the host applies the Hebbian update; the next step
    /// uses the counts only if its firing rows turn out to be exactly those.
    pub speculate: bool,
    /// With `resident`: while counting, record where each row's stream
    /// stands at every 2^`seg_bits` targets of each block (4 bytes per
    /// row, block and segment, kept where they fit), so that finding the
    /// synapses onto the winners walks each row only inside the segments
    /// holding winners, from the segment's start. 0: off (walk from each
    /// block's start); else 12..=15. Same result either way.
    pub seg_bits: u32,
    /// With `seg_bits`: record marks also for the area fibers counted every
    /// step (A → A), not only for the stimuli (whose counts, and marks, are
    /// computed once). Costs the count a shared-memory store per event.
    pub mark_areas: bool,
    /// Threads per thread block of `proc_hits` (32..=1024, a multiple of
    /// 32): smaller blocks let several share a multiprocessor, so one
    /// block's tail (its longest walks) overlaps the others' work.
    pub hits_threads: u32,
    /// Keep the firing rows' block keys in shared memory where they fit
    /// (`proc_count_f32k`, `proc_hits_f32k`); false: hash each row's key
    /// when a thread switches to it (`proc_count_f32`, `proc_hits_f32`),
    /// as always happens with more rows than fit. Same result either way.
    pub shared_keys: bool,
}

impl Default for ProcOptions {
    fn default() -> Self {
        ProcOptions {
            table_bits: 0,
            chunk_blocks: MAX_CHUNK_BLOCKS,
            fast_log: true,
            fast_f32: true,
            resident: true,
            speculate: true,
            seg_bits: 13,
            mark_areas: false,
            hits_threads: 1024,
            shared_keys: true,
        }
    }
}

/// Dense per-target counts kept on the device between steps, for one
/// target area (see docs/cuda.md).
///
/// **Key decision: what a buffer holds is named by the exact inputs that
/// made it**, not by a step number: `base_id` / `tot_id` list n, each
/// fiber's p, scale and row count, and every row key. A buffer is used only
/// when the step's own identity is equal, so a different seed, stimulus,
/// p, target, or a resumed checkpoint (a new workspace) rebuilds it, and
/// nothing of it is ever saved.
struct Resident {
    n: u64,
    /// Counts of the step's leading stimulus fibers (all rows fire every step).
    base: Option<CudaSlice<u16>>,
    base_id: Vec<u64>,
    /// Counts of the base plus the other fibers of one step.
    tot: Option<CudaSlice<u16>>,
    tot_id: Vec<u64>,
    /// (ids with a count, events) of `base` and of `tot`, written by the
    /// count that stored them: the statistics of a step that uses them.
    base_stats: CudaSlice<u64>,
    tot_stats: CudaSlice<u64>,
    /// Inputs of a speculative count, kept alive until it has run.
    spec_bufs: Vec<CudaSlice<u64>>,
    spec_meta: Vec<CudaSlice<u32>>,
    spec_scale: Option<CudaSlice<f64>>,
    /// Resume marks of the base's rows and of the total's other rows (see
    /// procedural.cu, "Marks"), valid with base_id / tot_id when recorded
    /// with `marks_bits`.
    base_marks: Option<CudaSlice<u32>>,
    tot_marks: Option<CudaSlice<u32>>,
    /// seg_bits the marks were recorded with (0: none).
    base_marked: u32,
    tot_marked: u32,
}

impl Resident {
    /// The counts a step takes its inputs from (`tot`, else `base`) and
    /// their statistics.
    fn step_counts(&self, from_tot: bool) -> (&CudaSlice<u16>, &CudaSlice<u64>) {
        match from_tot {
            true => (self.tot.as_ref().expect("total buffer"), &self.tot_stats),
            false => (self.base.as_ref().expect("base buffer"), &self.base_stats),
        }
    }
}

/// The identity of counts over `fibers` of an area of `n` neurons.
fn ident(n: u64, fibers: &[DeviceFiber]) -> Vec<u64> {
    let mut v = vec![n, fibers.len() as u64];
    for f in fibers {
        v.extend([f.p.to_bits(), f.scale.to_bits(), f.row_keys.len() as u64]);
        v.extend_from_slice(&f.row_keys);
    }
    v
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

/// The error bounds of the single-precision fast skip path (procedural.cu,
/// `kcap_skip_f32`): (absolute, in log2 units; relative to the skip). From
/// `proc_log2_error_f32`, which measures the device's `lg2.approx` on every
/// float of [2^-21, 1]: the largest absolute error on [1/2, 1] and the
/// largest error relative to |log2 x| below 1/2. Absolute part: that error
/// plus the draw's conversion (w rounded to 24 bits: a relative 2^-24, and
/// unit_open's offset, < 2^-33 for draws ≥ 2^43; < 2^-23.4 in log2).
/// Relative part: the measured one plus two float roundings of the product
/// (< 2^-22.9) and the recipe's own error (< 10^-12). Both with a margin of
/// 1/4 (the measured parts are exact maxima over every argument). `None`
/// when a measured error is implausible (> 2^-19): the path is then not used.
pub fn log2_bound_f32(dev: &CudaDevice) -> Result<Option<(f32, f32)>> {
    let s = dev.stream();
    let f = dev.function(&kernels::PROCEDURAL, "proc_log2_error_f32")?;
    let mut out = s.alloc_zeros::<u32>(2).what("alloc")?;
    // SAFETY: the kernel writes two u32 through `out` (two elements).
    unsafe {
        s.launch_builder(&f)
            .arg(&mut out)
            .launch(super::cfg(dev.sm_count() * 4, 256))
            .what("launch proc_log2_error_f32")?;
    }
    let v = s.clone_dtoh(&out).what("copy log2 error")?;
    let (wa, wr) = (f32::from_bits(v[0]) as f64, f32::from_bits(v[1]) as f64);
    let ok = |x: f64| x.is_finite() && x <= 2f64.powi(-19);
    if !(ok(wa) && ok(wr)) {
        return Ok(None);
    }
    let abs = 1.25 * (wa + 2f64.powf(-23.4));
    let rel = 1.25 * (wr + 2f64.powf(-22.9) + 1e-12);
    // Rounded up to f32.
    let up = |x: f64| {
        let f = x as f32;
        if (f as f64) < x {
            f32::from_bits(f.to_bits() + 1)
        } else {
            f
        }
    };
    Ok(Some((up(abs), up(rel))))
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
    /// Seconds spent counting (all chunks, incl. top-k and, when deferred,
    /// the host's corrections) and finding synapses.
    pub count_s: f64,
    pub hits_s: f64,
    /// Seconds the host spent on deferred corrections (inside `count_s`).
    pub corr_s: f64,
    /// How the counts were obtained: "stream" (fused, every fiber walked),
    /// "resident" (stimulus counts reused or built, the rest counted now),
    /// "speculated" (all counts from the previous step's speculation).
    pub path: &'static str,
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
    /// The second part's synapses of a split search (see `hits`).
    hits2: CudaSlice<u64>,
    /// Page-locked host copy of the synapses (a pageable copy of the
    /// ~3.4 MB a step at procedural-1e9 is several times slower).
    hits_host: Option<PinnedHostSlice<u64>>,
    table: Option<(u64, u32, CudaSlice<u16>)>,
    topk: TopkWorkspace,
    gathered: CudaSlice<f32>,
    /// The corrected ids' inputs of a resident step (proc_corrected).
    fixed: Fixed,
    /// Deferred corrections' buffers, kept from step to step (fresh pages
    /// for ~10⁷ bytes a step at procedural-1e9 cost milliseconds).
    corr: DeviceCorrections,
    /// Their device copies, kept too, with page-locked staging (see
    /// `Kept::upload`).
    corr_dev: CorrBufs,
    log2_err: Option<f64>,
    log2_f32: Option<(f32, f32)>,
    res: Option<Resident>,
    /// A second stream that only fetches the synapse search's results
    /// (waiting on an event after the search), so the work queued behind
    /// the search on the device's stream does not delay them. Its copies
    /// are synchronous: it never holds pending work.
    side: Arc<CudaStream>,
}

impl ProcWorkspace {
    pub fn new(dev: &CudaDevice) -> Result<ProcWorkspace> {
        // Both modules of a step loaded now, not inside the first step.
        dev.module(&kernels::PROCEDURAL)?;
        dev.module(&kernels::TOPK_U16)?;
        let s = dev.stream();
        Ok(ProcWorkspace {
            values: None,
            stats: s.alloc_zeros(2).what("alloc")?,
            hits: s.alloc_zeros(1 << 16).what("alloc")?,
            hits_count: s.alloc_zeros(2).what("alloc")?,
            hits2: s.alloc_zeros(1).what("alloc")?,
            hits_host: None,
            table: None,
            topk: TopkWorkspace::new(dev)?,
            gathered: s.alloc_zeros(1).what("alloc")?,
            corr: DeviceCorrections::default(),
            corr_dev: CorrBufs::default(),
            fixed: Fixed {
                ids: s.alloc_zeros(1).what("alloc")?,
                vals: s.alloc_zeros(1).what("alloc")?,
                n: s.alloc_zeros(1).what("alloc")?,
                thresh: s.alloc_zeros(1).what("alloc")?,
            },
            log2_err: log2_bound(dev)?,
            log2_f32: log2_bound_f32(dev)?,
            res: None,
            side: s.fork().what("create side stream")?,
        })
    }

    /// The fast path's error bound (log2 units) on this device, if usable.
    pub fn log2_err(&self) -> Option<f64> {
        self.log2_err
    }

    /// The single-precision fast path's bounds (absolute, relative), if usable.
    pub fn log2_f32(&self) -> Option<(f32, f32)> {
        self.log2_f32
    }

    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        self.values.as_ref().map_or(0, |v| v.len() * 4)
            + (self.hits.len() + self.hits2.len()) * 8
            + self.table.as_ref().map_or(0, |t| t.2.len() * 2)
            + self.gathered.len() * 4
            + self.fixed.ids.len() * 12
            + self.topk.bytes()
            + self.corr_dev.bytes()
            + self.res.as_ref().map_or(0, |r| {
                r.base.as_ref().map_or(0, |b| b.len() * 2)
                    + r.tot.as_ref().map_or(0, |b| b.len() * 2)
                    + r.base_marks.as_ref().map_or(0, |b| b.len() * 4)
                    + r.tot_marks.as_ref().map_or(0, |b| b.len() * 4)
            })
    }

    /// Drops the dense counts kept between steps (they are rebuilt when needed).
    pub fn drop_resident(&mut self) {
        self.res = None;
    }

    /// Device bytes a step of an area of `n` neurons will hold (for the
    /// memory guard): the chunk buffer plus the top-k and hit buffers.
    pub fn bytes_for(n: u64, k: usize, opts: &ProcOptions) -> u64 {
        let chunk = n.div_ceil(BLOCK).min(opts.chunk_blocks.max(1)) * BLOCK;
        chunk * 4 + (1 << 26) * 16 + (k as u64) * 64 + (1 << 20)
    }
}

fn upload<T: DeviceRepr + Clone + Default>(dev: &CudaDevice, v: &[T]) -> Result<CudaSlice<T>> {
    let s = dev.stream();
    // Never a zero-length buffer: kernels get a valid address either way.
    if v.is_empty() {
        return s.clone_htod(&[T::default()]).what("upload");
    }
    s.clone_htod(v).what("upload")
}

/// Device copies of a step's corrections, kept from step to step.
#[derive(Default)]
struct CorrBufs {
    blocks: Kept<u64>,
    off: Kept<u32>,
    local: Kept<u32>,
    delta: Kept<f32>,
}

/// A device buffer and its page-locked staging copy, both grown when short.
struct Kept<T> {
    dev: Option<CudaSlice<T>>,
    pin: Option<PinnedHostSlice<T>>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            dev: None,
            pin: None,
        }
    }
}

impl<T: DeviceRepr + ValidAsZeroBits + Default + Clone + Copy> Kept<T> {
    /// Grows both buffers to at least `len` entries: to 4·`len` (rounded up
    /// to a power of two) when short, as a page-locked allocation costs
    /// milliseconds per megabyte and the corrections grow step by step.
    fn grow(&mut self, side: &Arc<CudaStream>, len: usize) -> Result<()> {
        let len = len.max(1);
        let want = (4 * len).next_power_of_two();
        if self.dev.as_ref().is_none_or(|b| b.len() < len) {
            self.dev = None;
            self.dev = Some(side.alloc_zeros::<T>(want).what("alloc corrections")?);
        }
        if self.pin.as_ref().is_none_or(|p| p.len() < len) {
            self.pin = None;
            // SAFETY: only entries `upload` has written are read.
            self.pin = Some(
                unsafe { side.context().alloc_pinned_with_flags::<T>(want, 0) }
                    .what("alloc page-locked corrections")?,
            );
        }
        Ok(())
    }

    /// Copies `v` through `side` into the device buffer (grown when
    /// short), staged through the page-locked one, and returns the device
    /// buffer's address. A copy from pageable memory would wait for the
    /// kernel running on the main stream (measured: it ended ~1 ms after
    /// the count); from page-locked memory it overlaps it. Reusing both
    /// buffers is safe: the previous step's copy is done (the main stream
    /// waited for it before the kernels that read it, and the host waited
    /// for those before this step).
    fn upload(&mut self, side: &Arc<CudaStream>, v: &[T]) -> Result<u64> {
        self.grow(side, v.len())?;
        let d = self.dev.as_mut().expect("grown");
        if !v.is_empty() {
            let p = self.pin.as_mut().expect("grown");
            p.as_mut_slice().what("stage corrections")?[..v.len()].copy_from_slice(v);
            let src = &p.as_slice().what("stage corrections")?[..v.len()];
            side.memcpy_htod(src, &mut d.slice_mut(..v.len()))
                .what("upload corrections")?;
        }
        let (p, _g) = d.device_ptr(side);
        Ok(p)
    }
}

impl CorrBufs {
    /// Device bytes held.
    fn bytes(&self) -> usize {
        let len = |d: Option<usize>| d.unwrap_or(0);
        len(self.blocks.dev.as_ref().map(|b| b.len() * 8))
            + len(self.off.dev.as_ref().map(|b| b.len() * 4))
            + len(self.local.dev.as_ref().map(|b| b.len() * 4))
            + len(self.delta.dev.as_ref().map(|b| b.len() * 4))
    }

    /// Room for `entries` corrections over `blocks` target blocks.
    fn grow(&mut self, side: &Arc<CudaStream>, entries: usize, blocks: usize) -> Result<()> {
        self.blocks.grow(side, blocks)?;
        self.off.grow(side, blocks + 1)?;
        self.local.grow(side, entries)?;
        self.delta.grow(side, entries)
    }
}

fn ptr<T>(dev: &CudaDevice, s: &CudaSlice<T>) -> u64 {
    let (p, _g) = s.device_ptr(dev.stream());
    p
}

thread_local! {
    static TRACE_LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

fn trace_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KCAP_PROC_TRACE").is_some())
}

/// `KCAP_PROC_TRACE=1`: prints the host time since the previous phase's
/// end to stderr (a diagnostic for benchmarks, not an interface). The
/// clock is per thread, so the step's helpers and the backend mark their
/// own phases.
pub(crate) fn trace_point(what: &str) {
    if !trace_on() {
        return;
    }
    if let Some(t) = TRACE_LAST.with(|c| c.get()) {
        eprintln!(
            "  [trace] {what}: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    TRACE_LAST.with(|c| c.set(Some(Instant::now())));
}

/// `KCAP_PROC_TRACE=2`: also the device's timeline. Events (with timing)
/// are recorded on the main stream before and after each piece of a step's
/// work; at the end of a step the time from each to the next is printed,
/// so a gap between one piece's end and the next one's start is the
/// device waiting for the host. The last event is kept as the next
/// step's reference.
mod timeline {
    use cudarc::driver::{sys::CUevent_flags, CudaEvent, CudaStream};
    use std::cell::RefCell;
    use std::sync::Arc;

    thread_local! {
        static EVS: RefCell<Vec<(&'static str, CudaEvent)>> = const { RefCell::new(Vec::new()) };
    }

    fn on() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var("KCAP_PROC_TRACE").is_ok_and(|v| v == "2"))
    }

    /// Records an event named `what` on `s`.
    pub fn mark(s: &Arc<CudaStream>, what: &'static str) {
        if !on() {
            return;
        }
        if let Ok(e) = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)) {
            EVS.with(|v| v.borrow_mut().push((what, e)));
        }
    }

    /// Prints the recorded events up to the last one named `upto` (time
    /// from the previous one, ms), which the host has waited for already
    /// (so the report does not wait for work queued after it), and keeps
    /// that one and the later ones for the next report.
    pub fn report(upto: &str) {
        if !on() {
            return;
        }
        EVS.with(|v| {
            let mut v = v.borrow_mut();
            let Some(end) = v.iter().rposition(|e| e.0 == upto) else {
                return;
            };
            let mut line = String::from("  [device]");
            for w in v[..=end].windows(2) {
                if let Ok(ms) = w[0].1.elapsed_ms(&w[1].1) {
                    line += &format!(" {} +{ms:.2}", w[1].0);
                }
            }
            eprintln!("{line}");
            v.drain(..end);
        });
    }
}

/// Where the step's corrections come from.
enum Corr<'a> {
    /// Already in the step.
    Ready,
    /// Computed by the host when needed, while the device counts.
    Later(Box<dyn FnOnce(&mut DeviceCorrections) -> std::result::Result<(), String> + 'a>),
}

/// Runs `step` (with its corrections) on the device.
pub fn select(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    step: &DeviceStep,
    opts: &ProcOptions,
) -> Result<ProcOutcome> {
    run(dev, ws, step, opts, Corr::Ready, None)
}

/// Runs `step`, whose corrections are still empty, on the device; `corr`
/// computes them on the host while the device counts (the counts do not
/// depend on them), into the buffers it is given (the workspace keeps them
/// from step to step: e.g. `ProceduralState::device_corrections_into`).
/// Same result as [`select`] with the corrections in the step.
pub fn select_deferred<'a>(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    step: &DeviceStep,
    opts: &ProcOptions,
    corr: impl FnOnce(&mut DeviceCorrections) -> std::result::Result<(), String> + 'a,
) -> Result<ProcOutcome> {
    if !step.corr.is_empty() {
        return Err(Error::invalid(
            "procedural select",
            "select_deferred takes a step without corrections",
        ));
    }
    run(dev, ws, step, opts, Corr::Later(Box::new(corr)), None)
}

/// Called with the winners, their inputs and the synapses of the resumed
/// (stimulus) rows while the device still searches the others'.
pub type First<'a> =
    &'a mut dyn FnMut(&[u64], &[f32], Vec<(u64, u32)>) -> std::result::Result<(), String>;

/// [`select_deferred`] that hands the synapses of the rows with resume
/// marks (the stimuli's) to `first` as soon as they are found, while the
/// device searches the other rows' (a second launch), so the host can
/// apply their Hebbian update meanwhile; the outcome then holds only the
/// other synapses. Where the step has no such split (no marks, or marks
/// for every row), `first` is not called and the outcome holds them all.
pub fn select_deferred_split<'a>(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    step: &DeviceStep,
    opts: &ProcOptions,
    corr: impl FnOnce(&mut DeviceCorrections) -> std::result::Result<(), String> + 'a,
    first: First<'_>,
) -> Result<ProcOutcome> {
    if !step.corr.is_empty() {
        return Err(Error::invalid(
            "procedural select",
            "select_deferred_split takes a step without corrections",
        ));
    }
    run(
        dev,
        ws,
        step,
        opts,
        Corr::Later(Box::new(corr)),
        Some(first),
    )
}

/// Work queued on the main stream right after the synapse search is
/// launched (the speculative count), before its results are fetched.
type Then<'a> = Box<dyn FnOnce(&mut ProcWorkspace) -> Result<()> + 'a>;

/// Per-fiber launch inputs: concatenated row keys, end slots, scales, plastic flags.
struct FiberArrays {
    keys: CudaSlice<u64>,
    ends: CudaSlice<u32>,
    scale: CudaSlice<f64>,
    plastic: CudaSlice<u32>,
}

fn fiber_arrays(dev: &CudaDevice, fibers: &[DeviceFiber]) -> Result<FiberArrays> {
    let mut keys = Vec::with_capacity(fibers.iter().map(|f| f.row_keys.len()).sum());
    let mut ends = Vec::new();
    for f in fibers {
        keys.extend_from_slice(&f.row_keys);
        ends.push(keys.len() as u32);
    }
    let scale: Vec<f64> = fibers.iter().map(|f| f.scale).collect();
    let plastic: Vec<u32> = fibers.iter().map(|f| f.plastic as u32).collect();
    Ok(FiberArrays {
        keys: upload(dev, &keys)?,
        ends: upload(dev, &ends)?,
        scale: upload(dev, &scale)?,
        plastic: upload(dev, &plastic)?,
    })
}

/// Whether a launch with `a` may use the kernel variants specialised for
/// the single-precision skip (`KCAP_F32` in procedural.cu): no table, and
/// the bounds set (`run` leaves them 0 when a fiber has p = 1).
fn f32_variant(a: &ProcArgs) -> bool {
    a.table == 0 && a.f32_abs > 0.0
}

/// The counting kernel (without marks) for a launch with `a` over `slots`
/// rows, and the shared memory it needs beyond `smem`: the single-precision
/// variant keeps the rows' block keys in shared memory (8 bytes a row)
/// where they fit next to the counters.
fn count_kernel(
    dev: &CudaDevice,
    a: &ProcArgs,
    slots: u64,
    smem: u32,
    shared_keys: bool,
) -> (&'static str, u32) {
    match f32_variant(a) {
        true if shared_keys && keys_fit(dev, slots, smem) => ("proc_count_f32k", slots as u32 * 8),
        true => ("proc_count_f32", 0),
        false => ("proc_count", 0),
    }
}

/// Whether the block keys of `slots` rows (8 bytes each) fit in shared
/// memory beside `smem` bytes, with 1 KiB of the opt-in limit left for
/// the kernel's static shared memory.
fn keys_fit(dev: &CudaDevice, slots: u64, smem: u32) -> bool {
    smem as u64 + slots * 8 <= dev.max_shared_per_block().saturating_sub(1024) as u64
}

/// u32 words of one (row, block) record of marks (kcap_mark_rec in procedural.cu).
fn mark_rec(seg_bits: u32) -> u32 {
    (1u32 << (BLOCK_BITS - seg_bits)).next_multiple_of(4)
}

/// Marks of `rows` rows over every block of an area of `n` neurons with
/// segments of 2^`seg_bits` targets, in `buf` (reused when large enough,
/// else reallocated if it fits with 1 GiB to spare): the buffer's address,
/// or 0 when there is no room (the marks are then not recorded).
fn marks_buffer(
    dev: &CudaDevice,
    buf: &mut Option<CudaSlice<u32>>,
    n: u64,
    rows: u64,
    seg_bits: u32,
) -> Result<u64> {
    let len = (rows * n.div_ceil(BLOCK) * mark_rec(seg_bits) as u64).max(1) as usize;
    if buf.as_ref().is_none_or(|b| b.len() < len) {
        let held = buf.as_ref().map_or(0, |b| b.len() as u64 * 4);
        *buf = None;
        if dev.available_memory()? + held < len as u64 * 4 + (1 << 30) {
            return Ok(0);
        }
        // SAFETY: left uninitialised: the count that records the marks
        // writes every (row, block) record whole (each row is walked in
        // every block) before proc_hits reads any.
        *buf = Some(unsafe { dev.stream().alloc::<u32>(len) }.what("alloc resume marks")?);
    }
    Ok(ptr(dev, buf.as_ref().unwrap()))
}

/// Launches `proc_count` over every block of the area, walking the rows of
/// `arr` (a fiber subset) from `base` (or 0) and storing the counts into
/// `out` (whole blocks, ids from 0) and their (ids with a count, events)
/// into `stats`, and the rows' resume marks into
/// `marks.0` (segments of 2^`marks.1` targets) unless it is 0.
#[allow(clippy::too_many_arguments)]
fn count_into(
    dev: &CudaDevice,
    a: &ProcArgs,
    arr: &FiberArrays,
    nf: usize,
    slots: u64,
    base: u64,
    out: &CudaSlice<u16>,
    stats: &mut CudaSlice<u64>,
    smem: u32,
    marks: (u64, u32),
    shared_keys: bool,
) -> Result<()> {
    let nblocks = a.n.div_ceil(BLOCK);
    dev.stream().memset_zeros(stats).what("zero count stats")?;
    let b = ProcArgs {
        row_keys: ptr(dev, &arr.keys),
        fiber_end: ptr(dev, &arr.ends),
        scale: ptr(dev, &arr.scale),
        plastic: ptr(dev, &arr.plastic),
        nf: nf as u32,
        slots: slots as u32,
        block0: 0,
        nblocks: nblocks as u32,
        base,
        counts: ptr(dev, out),
        stats: ptr(dev, stats),
        values: 0,
        ncorr: 0,
        marks: marks.0,
        seg_bits: if marks.0 != 0 { marks.1 } else { 0 },
        ..*a
    };
    let (name, extra) = if marks.0 != 0 {
        // The staged records; the single-precision variants keep the block
        // keys after them where they fit.
        let staged = THREADS * mark_rec(marks.1) * 4;
        match f32_variant(a) {
            true if shared_keys && keys_fit(dev, slots, smem + staged) => {
                ("proc_count_marks_f32k", staged + slots as u32 * 8)
            }
            true => ("proc_count_marks_f32", staged),
            false => ("proc_count_marks", staged),
        }
    } else {
        count_kernel(dev, a, slots, smem, shared_keys)
    };
    let f = dev.function(&kernels::PROCEDURAL, name)?;
    let cfg = LaunchConfig {
        grid_dim: (nblocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: smem + extra,
    };
    // SAFETY: the per-fiber arrays hold nf entries and `slots` keys; `base`
    // (if not 0) and `out` hold nblocks·2^16 u16 (checked by the caller);
    // `marks` (if not 0) holds slots·nblocks·mark_rec u32 (marks_buffer),
    // and the shared memory (≤ the device's opt-in limit, checked by the
    // caller or by count_kernel) includes one staged record per thread or
    // the `slots` block keys of proc_count_f32k; values is unused when
    // counts is set.
    timeline::mark(dev.stream(), "count start");
    unsafe {
        dev.stream()
            .launch_builder(&f)
            .arg(&b)
            .launch(cfg)
            .what("launch proc_count (store counts)")?;
    }
    timeline::mark(dev.stream(), "count end");
    Ok(())
}

fn run(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    step: &DeviceStep,
    opts: &ProcOptions,
    corr: Corr,
    first: Option<First<'_>>,
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
    if opts.table_bits > 15
        || opts.chunk_blocks == 0
        || opts.chunk_blocks > MAX_CHUNK_BLOCKS
        || (opts.seg_bits != 0 && !(12..=15).contains(&opts.seg_bits))
        || !(32..=THREADS).contains(&opts.hits_threads)
        || opts.hits_threads % 32 != 0
    {
        return Err(Error::invalid(op, format!("bad options {opts:?}")));
    }
    let s = dev.stream();
    let t0 = Instant::now();
    trace_point("host between steps");
    timeline::mark(s, "host step");
    // Per-step inputs.
    let all = fiber_arrays(dev, &step.fibers)?;
    // The skip table: only when every fiber has the same p.
    let p0 = step.fibers.first().map(|f| f.p);
    let same_p = p0.is_some_and(|p| step.fibers.iter().all(|f| f.p == p));
    trace_point("fiber arrays");
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
    let mut a = ProcArgs {
        row_keys: ptr(dev, &all.keys),
        fiber_end: ptr(dev, &all.ends),
        scale: ptr(dev, &all.scale),
        plastic: ptr(dev, &all.plastic),
        table: table_ptr,
        n,
        nf: step.fibers.len() as u32,
        slots: slots as u32,
        tbits,
        stats: ptr(dev, &ws.stats),
        log2_err: if opts.fast_log {
            ws.log2_err.unwrap_or(0.0)
        } else {
            0.0
        },
        f32_abs: match (opts.fast_log && opts.fast_f32, ws.log2_f32) {
            (true, Some((abs, _))) if step.fibers.iter().all(|f| f.p < 1.0) => abs,
            _ => 0.0,
        },
        f32_rel: ws.log2_f32.map_or(0.0, |b| b.1),
        ..Default::default()
    };
    let smem = (BLOCK / 2) as u32 * 4 + if tbits > 0 { 2u32 << tbits } else { 0 };
    let (count_name, count_extra) = count_kernel(dev, &a, slots, smem, opts.shared_keys);
    let count = dev.function(&kernels::PROCEDURAL, count_name)?;
    // The most dynamic shared memory the device allows next to the
    // kernel's static shared memory (so that threads sharing the device
    // never lower it under each other).
    let count_marks = dev.function(&kernels::PROCEDURAL, "proc_count_marks")?;
    let count_any = dev.function(&kernels::PROCEDURAL, "proc_count")?;
    let count_f32 = dev.function(&kernels::PROCEDURAL, "proc_count_f32")?;
    let count_keys = dev.function(&kernels::PROCEDURAL, "proc_count_f32k")?;
    let marks_f32 = dev.function(&kernels::PROCEDURAL, "proc_count_marks_f32")?;
    let marks_keys = dev.function(&kernels::PROCEDURAL, "proc_count_marks_f32k")?;
    let all = [
        &count,
        &count_marks,
        &count_any,
        &count_f32,
        &count_keys,
        &marks_f32,
        &marks_keys,
    ];
    let mut smem_max = dev.max_shared_per_block();
    for f in all {
        let fixed = f
            .shared_size_bytes()
            .what("proc_count static shared memory")? as u32;
        smem_max = smem_max.min(dev.max_shared_per_block() - fixed);
    }
    for f in all {
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem_max as i32,
        )
        .what("proc_count shared memory")?;
    }
    trace_point("functions");
    // Resume marks only where their staging fits in shared memory too.
    let seg_bits = match opts.seg_bits {
        0 => 0,
        sb if smem + THREADS * mark_rec(sb) * 4 <= smem_max => sb,
        _ => 0,
    };
    // Dense counts on the device: the stimuli's reused, the rest counted
    // now (or by the previous step's speculation), corrections meanwhile.
    let nstim = step
        .fibers
        .iter()
        .take_while(|f| matches!(f.src, kcap::Source::Stim(_)))
        .count();
    let resident = opts.resident && {
        // A total buffer too when a later step's count of the target's
        // own fiber can be speculated.
        let want_tot = nstim < step.fibers.len() || (opts.speculate && step.own.is_some());
        prepare_resident(dev, ws, n, nstim > 0, want_tot)?
    };
    trace_point("resident buffers");
    let mut path = "stream";
    // Resident: the step's counts are `tot` (else `base`).
    let mut from_tot = false;
    let stim_slots: u64 = step.fibers[..nstim]
        .iter()
        .map(|f| f.row_keys.len() as u64)
        .sum();
    if resident {
        let res = ws.res.as_mut().expect("resident counts");
        let base_id = ident(n, &step.fibers[..nstim]);
        if nstim > 0 && res.base_id != base_id {
            let sub = fiber_arrays(dev, &step.fibers[..nstim])?;
            let mp = match seg_bits {
                0 => 0,
                sb => marks_buffer(dev, &mut res.base_marks, n, stim_slots, sb)?,
            };
            let base = res.base.as_ref().expect("base buffer");
            count_into(
                dev,
                &a,
                &sub,
                nstim,
                stim_slots,
                0,
                base,
                &mut res.base_stats,
                smem,
                (mp, seg_bits),
                opts.shared_keys,
            )?;
            res.base_marked = if mp != 0 { seg_bits } else { 0 };
            res.base_id = base_id.clone();
            res.tot_id.clear();
        }
        let base_ptr = res.base.as_ref().map_or(0, |b| ptr(dev, b));
        if nstim == step.fibers.len() {
            path = "resident";
        } else {
            let rest = &step.fibers[nstim..];
            let mut tot_id = base_id;
            tot_id.extend(ident(n, rest));
            if res.tot_id != tot_id {
                // Device arrays of the fibers after the stimuli: their keys
                // start at slot stim_slots; ends relative to it.
                let sub = fiber_arrays(dev, rest)?;
                let mp = match seg_bits {
                    0 => 0,
                    _ if !opts.mark_areas => 0,
                    sb => marks_buffer(dev, &mut res.tot_marks, n, slots - stim_slots, sb)?,
                };
                let tot = res.tot.as_ref().expect("total buffer");
                count_into(
                    dev,
                    &a,
                    &sub,
                    rest.len(),
                    slots - stim_slots,
                    base_ptr,
                    tot,
                    &mut res.tot_stats,
                    smem,
                    (mp, seg_bits),
                    opts.shared_keys,
                )?;
                res.tot_marked = if mp != 0 { seg_bits } else { 0 };
                res.tot_id = tot_id;
                path = "resident";
            } else {
                path = "speculated";
            }
            from_tot = true;
        }
    }
    // The first chunk's k-cap of the counts does not depend on the
    // corrections: queued now, it runs right behind the count while the
    // host computes them (resident_best).
    let first_len = n.min(chunk * BLOCK) as usize;
    let queued = resident && k < first_len && {
        let (counts, _) = ws
            .res
            .as_ref()
            .expect("resident counts")
            .step_counts(from_tot);
        topk_u16_launch(dev, &mut ws.topk, counts, 0, first_len, k, &mut ws.gathered)?;
        true
    };
    trace_point("counts queued");
    // The corrections (computed now if deferred: the device is counting).
    let tc = Instant::now();
    let mut later = std::mem::take(&mut ws.corr);
    let c: &DeviceCorrections = match corr {
        Corr::Ready => &step.corr,
        Corr::Later(f) => {
            f(&mut later).map_err(|why| Error::Invalid {
                op: "procedural corrections",
                why,
            })?;
            &later
        }
    };
    let corr_s = tc.elapsed().as_secs_f64();
    trace_point("corrections computed");
    // Uploaded through the side stream, which holds no work, from
    // page-locked staging buffers kept in the workspace: a copy from
    // pageable memory (on either stream) waits for the count and then
    // takes 1–2 ms (~10⁷ bytes a step at procedural-1e9); this way it
    // overlaps the count, and the main stream waits for it only where the
    // corrections are read.
    let side = ws.side.clone();
    let cb = &mut ws.corr_dev;
    a.corr_blocks = cb.blocks.upload(&side, &c.blocks)?;
    a.corr_off = cb.off.upload(&side, &c.off)?;
    a.corr_local = cb.local.upload(&side, &c.local)?;
    a.corr_delta = cb.delta.upload(&side, &c.delta)?;
    let uploaded = side.record_event(None).what("record upload event")?;
    timeline::mark(&side, "upload done (side)");
    s.wait(&uploaded).what("wait for the corrections")?;
    timeline::mark(s, "upload waited");
    a.ncorr = c.blocks.len() as u32;
    trace_point("corrections uploaded");
    let (mut best, stats) = if resident {
        let (counts, stats) = ws
            .res
            .as_ref()
            .expect("resident counts")
            .step_counts(from_tot);
        let best = resident_best(
            dev,
            &mut ws.topk,
            &mut ws.gathered,
            &mut ws.fixed,
            &a,
            counts,
            c,
            k,
            chunk,
            queued,
        )?;
        (best, s.clone_dtoh(stats).what("copy stats")?)
    } else {
        chunk_values(dev, ws, (chunk * BLOCK) as usize, n, k, opts)?;
        a.values = ptr(dev, ws.values.as_ref().expect("chunk buffer"));
        s.memset_zeros(&mut ws.stats).what("zero stats")?;
        // Running k-cap over the chunks: (id, input), merged on the host.
        let mut best: Vec<(u64, f32)> = Vec::new();
        let mut b0 = 0u64;
        while b0 < nblocks {
            let nb = chunk.min(nblocks - b0);
            a.block0 = b0;
            a.nblocks = nb as u32;
            // SAFETY: every address in `a` is a live device buffer of the
            // sizes the kernel reads (values holds chunk·2^16 f32, the
            // per-fiber arrays nf entries, row_keys `slots`, the
            // corrections their lengths); the kernel's only parameter is a
            // ProcArgs by value.
            unsafe {
                s.launch_builder(&count)
                    .arg(&a)
                    .launch(LaunchConfig {
                        grid_dim: (nb as u32, 1, 1),
                        block_dim: (THREADS, 1, 1),
                        shared_mem_bytes: smem + count_extra,
                    })
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
                let vals = gather(dev, values, &ws.topk, &mut ws.gathered, k)?;
                ws_ids_pairs(dev, &ws.topk, vals, b0 * BLOCK)?
            };
            best = merge_best(best, chunk_best, k);
            b0 += nb;
        }
        (best, s.clone_dtoh(&ws.stats).what("copy stats")?)
    };
    ws.corr = later;
    if !best.is_sorted_by_key(|p| p.0) {
        radix_sort_by_id(&mut best);
    }
    trace_point("k-cap");
    let t1 = Instant::now();
    let winners: Vec<u64> = best.iter().map(|p| p.0).collect();
    let inputs: Vec<f32> = best.iter().map(|p| p.1).collect();
    // Resume marks of every row, if this step's counts recorded them.
    // (The stimuli's with the base counts, the others' with the total.)
    if let (true, Some(res)) = (resident && seg_bits > 0, ws.res.as_ref()) {
        let p = |m: &Option<CudaSlice<u32>>| m.as_ref().map_or(0, |m| ptr(dev, m));
        if nstim > 0 && res.base_marked == seg_bits {
            a.marks = p(&res.base_marks);
        }
        if nstim < step.fibers.len() && res.tot_marked == seg_bits {
            a.marks1 = p(&res.tot_marks);
        }
        if a.marks != 0 || a.marks1 != 0 {
            a.mark_split = stim_slots as u32;
            a.seg_bits = seg_bits;
        }
    }
    // The next step's A -> A count is queued on the main stream right
    // behind the synapse search, whose results come back through the side
    // stream meanwhile: the device goes from one to the other without
    // waiting for the host, and the host applies the Hebbian update while
    // the device counts.
    let spec_bits = if opts.mark_areas { seg_bits } else { 0 };
    let spec = resident && opts.speculate;
    let a_spec = a;
    let winners_ref = &winners;
    let shared_keys = opts.shared_keys;
    let speculate_now = move |ws: &mut ProcWorkspace| -> Result<()> {
        speculate(
            dev,
            ws,
            step,
            nstim,
            winners_ref,
            &a_spec,
            smem,
            spec_bits,
            shared_keys,
        )
    };
    let synapses = if step.fibers.iter().any(|f| f.plastic) && slots > 0 {
        // The hit buffer sized so that a rerun for a larger one stays the
        // exception: the winners' synapses from firing rows number at most
        // their summed counts, and each input is its count plus
        // corrections w - 1 >= 0, so at most the summed inputs.
        let want = inputs
            .iter()
            .map(|&x| x.max(0.0) as f64)
            .sum::<f64>()
            .ceil() as usize
            + 4096;
        if ws.hits.len() < want {
            ws.hits = dev
                .stream()
                .alloc_zeros(want.next_power_of_two())
                .what("alloc hit buffer")?;
        }
        let then: Option<Then<'_>> = spec.then(|| Box::new(speculate_now) as Then<'_>);
        hits(
            dev,
            ws,
            &mut a,
            (&winners, &inputs),
            tbits,
            opts,
            then,
            first,
        )?
    } else {
        if spec {
            speculate_now(ws)?;
        }
        Vec::new()
    };
    trace_point("synapses");
    timeline::report("search end");
    let hits_s = t1.elapsed().as_secs_f64();
    Ok(ProcOutcome {
        winners,
        inputs,
        received: stats[0],
        events: stats[1],
        synapses,
        count_s: (t1 - t0).as_secs_f64(),
        hits_s,
        corr_s,
        path,
    })
}

/// The streaming path's chunk buffer of `need` inputs in `ws.values`
/// (allocated if smaller). Memory guard: it is that path's one large
/// allocation; refused, with the estimate and what the device has free,
/// rather than failing inside the driver.
fn chunk_values(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    need: usize,
    n: u64,
    k: usize,
    opts: &ProcOptions,
) -> Result<()> {
    if ws.values.as_ref().is_some_and(|v| v.len() >= need) {
        return Ok(());
    }
    let held = ws.values.as_ref().map_or(0, |v| v.len() * 4) as u64;
    let est = ProcWorkspace::bytes_for(n, k, opts);
    let free = dev.available_memory()?;
    if est > free + held {
        return Err(Error::invalid(
            "procedural select",
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
    // SAFETY: left uninitialised: proc_count writes every input of a
    // chunk's ids before the k-cap reads them.
    ws.values = Some(unsafe { dev.stream().alloc::<f32>(need) }.what("alloc procedural inputs")?);
    Ok(())
}

/// Reserves, ahead of the first step, what the resident steps of an area
/// of `n` neurons and cap `k` with `stim_rows` stimulus rows will hold:
/// the dense counts (base and total) and the stimuli's resume marks, where
/// they fit (the same checks as a step's). Does nothing when the workspace
/// already keeps counts (of this or another area), or `k` ≥ `n`.
pub fn reserve(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    n: u64,
    k: usize,
    stim_rows: u64,
    opts: &ProcOptions,
) -> Result<()> {
    if !opts.resident || ws.res.is_some() || k as u64 >= n || n == 0 {
        return Ok(());
    }
    // The synapse buffers (device and page-locked host) for ~64 synapses
    // per winner (procedural-1e9 finds ~42).
    let syn = (k * 64).next_power_of_two();
    if ws.hits.len() < syn {
        ws.hits = dev.stream().alloc_zeros(syn).what("alloc hit buffer")?;
    }
    if ws.hits_host.as_ref().is_none_or(|h| h.len() < syn) {
        ws.hits_host = None;
        // SAFETY: only entries a copy has written are read (see `hits`).
        ws.hits_host = Some(
            unsafe { ws.side.context().alloc_pinned_with_flags::<u64>(syn, 0) }
                .what("alloc pinned hit buffer")?,
        );
    }
    // The corrections' buffers (device and page-locked): asked for 32 per
    // winner, `grow` gives ≥ 128 (procedural-1e9 reaches ~1.2·10⁶
    // corrections at step 10), as a page-locked allocation inside a step
    // costs ~10 ms. Blocks with corrections are at most as many as the
    // corrections, so what is reserved does not grow with n.
    let entries = (k * 32).next_power_of_two();
    let side = ws.side.clone();
    ws.corr_dev
        .grow(&side, entries, entries.min(n.div_ceil(BLOCK) as usize))?;
    if !prepare_resident(dev, ws, n, stim_rows > 0, true)? {
        return Ok(());
    }
    if opts.seg_bits != 0 && stim_rows > 0 && stim_rows <= MAX_SLOTS {
        let res = ws.res.as_mut().expect("resident counts");
        marks_buffer(dev, &mut res.base_marks, n, stim_rows, opts.seg_bits)?;
    }
    Ok(())
}

/// Whether the dense counts of an area of `n` neurons fit on the device
/// next to the step's other buffers (allocating them if so): a base buffer
/// when the step has stimuli, a total buffer when it has other fibers,
/// 2 bytes per neuron each, with 1 GiB left available
/// ([`CudaDevice::available_memory`], which honours the memory limit). An area that does not fit
/// (n = 10¹¹ needs 400 GB) streams, with device memory independent of n.
fn prepare_resident(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    n: u64,
    want_base: bool,
    want_tot: bool,
) -> Result<bool> {
    let len = (n.div_ceil(BLOCK) * BLOCK) as usize;
    if ws.res.as_ref().is_some_and(|r| r.n != n) {
        ws.res = None;
    }
    if ws.res.is_none() {
        let s = dev.stream();
        ws.res = Some(Resident {
            n,
            base: None,
            base_id: Vec::new(),
            tot: None,
            tot_id: Vec::new(),
            base_stats: s.alloc_zeros(2).what("alloc")?,
            tot_stats: s.alloc_zeros(2).what("alloc")?,
            spec_bufs: Vec::new(),
            spec_meta: Vec::new(),
            spec_scale: None,
            base_marks: None,
            tot_marks: None,
            base_marked: 0,
            tot_marked: 0,
        });
    }
    let res = ws.res.as_mut().expect("just set");
    let missing = (want_base && res.base.is_none()) as u64 + (want_tot && res.tot.is_none()) as u64;
    if missing > 0 {
        if dev.available_memory()? < missing * len as u64 * 2 + (1 << 30) {
            ws.res = None;
            return Ok(false);
        }
        let s = dev.stream();
        // SAFETY (both): left uninitialised, as a count stores every entry
        // (whole blocks) before any read: a buffer is read only under an
        // identity, set when its count is queued (cleared here).
        if want_base && res.base.is_none() {
            res.base = Some(unsafe { s.alloc::<u16>(len) }.what("alloc resident base counts")?);
            res.base_id.clear();
        }
        if want_tot && res.tot.is_none() {
            res.tot = Some(unsafe { s.alloc::<u16>(len) }.what("alloc resident counts")?);
            res.tot_id.clear();
        }
    }
    Ok(true)
}

/// After a resident step whose fibers are stimuli plus the target's own
/// area (A → A), or stimuli alone where the target has an own fiber
/// ([`DeviceStep::own`]): queues the count of the next step's A → A rows —
/// the winners just chosen — on top of the base, into the total buffer, to
/// run while the host applies the Hebbian update. The next step uses them only if its
/// identity (every row key) is equal.
#[allow(clippy::too_many_arguments)]
fn speculate(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    step: &DeviceStep,
    nstim: usize,
    winners: &[u64],
    a: &ProcArgs,
    smem: u32,
    seg_bits: u32,
    shared_keys: bool,
) -> Result<()> {
    // The one fiber after the stimuli, or (none this step) the target's own.
    let me = match (&step.fibers[nstim..], &step.own) {
        ([me], _) => me,
        ([], Some(own)) => own,
        _ => return Ok(()),
    };
    if me.src != kcap::Source::Area(step.target) {
        return Ok(());
    }
    let stim_slots: u64 = step.fibers[..nstim]
        .iter()
        .map(|f| f.row_keys.len() as u64)
        .sum();
    if stim_slots + winners.len() as u64 > MAX_SLOTS {
        return Ok(());
    }
    let Some(res) = ws.res.as_mut() else {
        return Ok(());
    };
    if res.tot.is_none() || (nstim > 0 && res.base.is_none()) {
        return Ok(());
    }
    let next = DeviceFiber {
        row_keys: winners
            .iter()
            .map(|&w| kcap::engine::procedural::row_key(me.key, w))
            .collect(),
        ..me.clone()
    };
    let arr = fiber_arrays(dev, std::slice::from_ref(&next))?;
    let base_ptr = res
        .base
        .as_ref()
        .filter(|_| nstim > 0)
        .map_or(0, |b| ptr(dev, b));
    let mp = match seg_bits {
        0 => 0,
        sb => marks_buffer(dev, &mut res.tot_marks, step.n, winners.len() as u64, sb)?,
    };
    let tot = res.tot.as_ref().expect("total buffer");
    count_into(
        dev,
        a,
        &arr,
        1,
        winners.len() as u64,
        base_ptr,
        tot,
        &mut res.tot_stats,
        smem,
        (mp, seg_bits),
        shared_keys,
    )?;
    res.tot_marked = if mp != 0 { seg_bits } else { 0 };
    let mut id = res.base_id.clone();
    if nstim == 0 {
        id = ident(step.n, &[]);
    }
    id.extend(ident(step.n, std::slice::from_ref(&next)));
    res.tot_id = id;
    // The launch reads these until it has run.
    res.spec_bufs = vec![arr.keys];
    res.spec_meta = vec![arr.ends, arr.plastic];
    res.spec_scale = Some(arr.scale);
    Ok(())
}

/// Output of `proc_corrected`: (id, input) of corrected ids, and their number.
struct Fixed {
    ids: CudaSlice<u64>,
    vals: CudaSlice<f32>,
    n: CudaSlice<u32>,
    /// The threshold T it compares with (the k-th count).
    thresh: CudaSlice<f32>,
}

/// The k-cap of a resident step from its stored counts `counts` (ids from
/// 0) and corrections `c` (in `a`'s corr_* arrays too), chunk by chunk of
/// `chunk` blocks, without writing the inputs out: an id's input is its
/// count unless it has corrections (inputs only grow: every correction
/// w − 1 ≥ 0), so
/// 1. the k largest counts D (the u16 k-cap of each chunk, merged) hold
///    every winner without corrections: an id outside D has k ids at least
///    as large by count, hence by input, and ahead of it in the tie order;
/// 2. the k-th of them, T, is at most the k-th input, so only corrected
///    ids with input ≥ T can win (`proc_corrected` lists those);
/// 3. the winners are the k best of D without its corrected ids (with a
///    count) and that list, under the CPU's order (input desc, id asc).
///
/// Same winners and inputs as writing every input and capping them.
/// `queued`: the first chunk's k-cap is already queued (by
/// [`topk_u16_launch`], before the corrections were computed).
#[allow(clippy::too_many_arguments)]
fn resident_best(
    dev: &CudaDevice,
    topk_ws: &mut TopkWorkspace,
    gathered: &mut CudaSlice<f32>,
    fixed: &mut Fixed,
    a: &ProcArgs,
    counts: &CudaSlice<u16>,
    c: &DeviceCorrections,
    k: usize,
    chunk: u64,
    queued: bool,
) -> Result<Vec<(u64, f32)>> {
    let s = dev.stream();
    let n = a.n;
    let nblocks = n.div_ceil(BLOCK);
    // One chunk whose k-cap is queued already: T is the least of its
    // gathered counts, found on the device, so the corrected inputs are
    // queued right behind the k-cap, with no round trip to the host.
    let early = queued && nblocks <= chunk && !c.is_empty();
    if early {
        let f = dev.function(&kernels::PROCEDURAL, "proc_min_f32")?;
        let k32 = k as u32;
        // SAFETY: gathered holds ≥ k f32 (topk_u16_launch); thresh one;
        // argument types match proc_min_f32(const float*, u32, float*).
        unsafe {
            s.launch_builder(&f)
                .arg(&*gathered)
                .arg(&k32)
                .arg(&mut fixed.thresh)
                .launch(LaunchConfig {
                    grid_dim: (1, 1, 1),
                    block_dim: (1024, 1, 1),
                    shared_mem_bytes: 0,
                })
                .what("launch proc_min_f32")?;
        }
        corrected_launch(dev, fixed, a, counts, c.len())?;
    }
    let mut best: Vec<(u64, f32)> = Vec::new();
    let mut b0 = 0u64;
    while b0 < nblocks {
        let nb = chunk.min(nblocks - b0);
        let off = (b0 * BLOCK) as usize;
        let len = (n - b0 * BLOCK).min(nb * BLOCK) as usize;
        let chunk_best: Vec<(u64, f32)> = if k >= len {
            let v = s
                .clone_dtoh(&counts.slice(off..off + len))
                .what("copy chunk counts")?;
            v.into_iter()
                .enumerate()
                .map(|(i, x)| (b0 * BLOCK + i as u64, x as f32))
                .collect()
        } else {
            if !(queued && b0 == 0) {
                topk_u16_launch(dev, topk_ws, counts, off, len, k, gathered)?;
            }
            let vals = s
                .clone_dtoh(&gathered.slice(..k))
                .what("copy gathered counts")?;
            ws_ids_pairs(dev, topk_ws, vals, b0 * BLOCK)?
        };
        best = merge_best(best, chunk_best, k);
        b0 += nb;
    }
    trace_point("k-cap of the counts fetched");
    if c.is_empty() {
        return Ok(best);
    }
    if !early {
        let thresh = best.iter().map(|p| p.1).fold(f32::INFINITY, f32::min);
        s.memcpy_htod(&[thresh], &mut fixed.thresh)
            .what("upload threshold")?;
        corrected_launch(dev, fixed, a, counts, c.len())?;
    }
    let cap = c.len();
    let m = s.clone_dtoh(&fixed.n).what("copy corrected count")?[0] as usize;
    trace_point("corrected count fetched");
    if m > cap {
        return Err(Error::Internal {
            op: "procedural select",
            why: format!("{m} corrected inputs listed, at most {cap} expected"),
        });
    }
    let mut list = Vec::with_capacity(best.len() + m);
    if m > 0 {
        let ids = s
            .clone_dtoh(&fixed.ids.slice(..m))
            .what("copy corrected ids")?;
        let vals = s
            .clone_dtoh(&fixed.vals.slice(..m))
            .what("copy corrected inputs")?;
        list.extend(ids.into_iter().zip(vals));
    }
    trace_point(&format!("{m} corrected inputs fetched"));
    // An id of D with a count and corrections has input ≥ its count ≥ T,
    // so it is in the list: the listed ids are exactly D's corrected ids
    // with a count (an id without a count has no corrections either). Both
    // sorted by id and merged, D's listed ids dropped (looking each id of
    // D up in the corrections took ~3 ms at procedural-1e9, cache misses
    // over ~10⁷ bytes; sorting and binary searches ~0.5 ms).
    let mut d = best;
    radix_sort_by_id(&mut d);
    radix_sort_by_id(&mut list);
    let mut merged = Vec::with_capacity(d.len() + list.len());
    let mut j = 0;
    for (id, x) in d {
        while j < list.len() && list[j].0 < id {
            merged.push(list[j]);
            j += 1;
        }
        let listed = j < list.len() && list[j].0 == id;
        debug_assert!(
            listed == (x != 0.0 && c.has(id)),
            "id {id} (count {x}): listed {listed}"
        );
        if !listed {
            merged.push((id, x));
        }
    }
    merged.extend_from_slice(&list[j..]);
    let out = best_sorted(merged, k);
    trace_point("merged");
    Ok(out)
}

/// Queues `proc_corrected` for the `cap` corrections in `a` against the
/// threshold in `fixed.thresh`, listing into `fixed` (grown to `cap`).
fn corrected_launch(
    dev: &CudaDevice,
    fixed: &mut Fixed,
    a: &ProcArgs,
    counts: &CudaSlice<u16>,
    cap: usize,
) -> Result<()> {
    let s = dev.stream();
    if fixed.ids.len() < cap {
        fixed.ids = s
            .alloc_zeros(cap.next_power_of_two())
            .what("alloc corrected ids")?;
        fixed.vals = s
            .alloc_zeros(cap.next_power_of_two())
            .what("alloc corrected inputs")?;
    }
    timeline::mark(s, "corrected start");
    s.memset_zeros(&mut fixed.n).what("zero corrected count")?;
    let f = dev.function(&kernels::PROCEDURAL, "proc_corrected")?;
    let b = ProcArgs {
        counts: ptr(dev, counts),
        ..*a
    };
    let cap32 = cap as u32;
    // SAFETY: `b` holds the step's correction arrays (ncorr blocks, ncorr
    // + 1 offsets, `cap` entries) and `counts` (nblocks·2^16 u16, every
    // corrected id below n); ids / vals hold ≥ cap entries, n and thresh
    // one; the argument types match proc_corrected(ProcArgs, const float*,
    // u64*, float*, u32*, u32).
    unsafe {
        s.launch_builder(&f)
            .arg(&b)
            .arg(&fixed.thresh)
            .arg(&mut fixed.ids)
            .arg(&mut fixed.vals)
            .arg(&mut fixed.n)
            .arg(&cap32)
            .launch(super::cfg(b.ncorr, 256))
            .what("launch proc_corrected")?;
    }
    timeline::mark(s, "corrected end");
    Ok(())
}

/// Queues the u16 k-cap of `counts[off..off + len]` and the gather of its
/// winners' counts into `out` (as f32, in the device's order of the ids).
fn topk_u16_launch(
    dev: &CudaDevice,
    topk_ws: &mut TopkWorkspace,
    counts: &CudaSlice<u16>,
    off: usize,
    len: usize,
    k: usize,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    timeline::mark(dev.stream(), "topk start");
    topk::topk_u16(dev, topk_ws, counts, off, len, k)?;
    gather_u16(dev, counts, off, topk_ws, out, k)?;
    timeline::mark(dev.stream(), "topk end");
    Ok(())
}

/// Queues `out[i] = counts[off + ids[i]]` (as f32) for the last top-k's ids.
fn gather_u16(
    dev: &CudaDevice,
    counts: &CudaSlice<u16>,
    off: usize,
    ws: &TopkWorkspace,
    out: &mut CudaSlice<f32>,
    k: usize,
) -> Result<()> {
    let s = dev.stream();
    if out.len() < k {
        *out = s.alloc_zeros(k).what("alloc gathered inputs")?;
    }
    let f = dev.function(&kernels::PROCEDURAL, "proc_gather_u16")?;
    let ids = ws.ids();
    let k32 = k as u32;
    let from = counts.slice(off..);
    // SAFETY: ids holds k ids < the chunk's length ≤ from.len(); out holds
    // ≥ k f32; argument types match proc_gather_u16(const u16*, const u32*,
    // float*, u32).
    unsafe {
        s.launch_builder(&f)
            .arg(&from)
            .arg(&ids)
            .arg(&mut *out)
            .arg(&k32)
            .launch(super::cfg(k.div_ceil(256).clamp(1, 1024) as u32, 256))
            .what("launch proc_gather_u16")?;
    }
    Ok(())
}

/// The (id, input) pairs of the last top-k, ids offset by `base`, given
/// its inputs in the device's order of the ids, after checking the
/// kernels' own consistency flags.
fn ws_ids_pairs(
    dev: &CudaDevice,
    ws: &TopkWorkspace,
    vals: Vec<f32>,
    base: u64,
) -> Result<Vec<(u64, f32)>> {
    let ids = ws.fetch(dev)?.ids;
    Ok(ids
        .into_iter()
        .zip(vals)
        .map(|(i, x)| (base + i as u64, x))
        .collect())
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

/// The `k` best of `v` (input desc, then id asc: the CPU's k-cap order;
/// all of them if fewer), sorted by id, from `v` sorted by id: the k-th
/// input's order key from a selection, then one pass in id order takes
/// every id above it and the first (lowest) ids at it. (A comparison sort
/// of the ~10⁴ winners took ~0.3 ms of a step's critical path.)
fn best_sorted(v: Vec<(u64, f32)>, k: usize) -> Vec<(u64, f32)> {
    debug_assert!(v.is_sorted_by_key(|p| p.0));
    if v.len() <= k {
        return v;
    }
    if k == 0 {
        return Vec::new();
    }
    let key = |x: f32| kcap::cap::order_key(x);
    let mut keys: Vec<u32> = v.iter().map(|p| key(p.1)).collect();
    let kth = *keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a)).1;
    let mut ties = k - keys.iter().filter(|&&x| x > kth).count();
    let mut out = Vec::with_capacity(k);
    for p in v {
        let kp = key(p.1);
        if kp > kth {
            out.push(p);
        } else if kp == kth && ties > 0 {
            ties -= 1;
            out.push(p);
        }
    }
    debug_assert_eq!(out.len(), k);
    out
}

/// Sorts (id, value) pairs by id: least significant digit first, 11 bits a
/// pass, skipping the digits that every id shares.
fn radix_sort_by_id(v: &mut Vec<(u64, f32)>) {
    const BITS: u32 = 11;
    const B: usize = 1 << BITS;
    let (mut or, mut and) = (0u64, u64::MAX);
    for p in v.iter() {
        or |= p.0;
        and &= p.0;
    }
    let differ = or ^ and;
    let mut tmp = vec![(0u64, 0f32); v.len()];
    let mut shift = 0;
    while shift < 64 && (differ >> shift) != 0 {
        if (differ >> shift) & (B as u64 - 1) != 0 {
            let mut count = vec![0usize; B + 1];
            for p in v.iter() {
                count[((p.0 >> shift) as usize & (B - 1)) + 1] += 1;
            }
            for d in 1..=B {
                count[d] += count[d - 1];
            }
            for &p in v.iter() {
                let d = (p.0 >> shift) as usize & (B - 1);
                tmp[count[d]] = p;
                count[d] += 1;
            }
            std::mem::swap(v, &mut tmp);
        }
        shift += BITS;
    }
}

/// Every (winner, slot) synapse of a plastic fiber onto a winner.
fn hits(
    dev: &CudaDevice,
    ws: &mut ProcWorkspace,
    a: &mut ProcArgs,
    (winners, inputs): (&[u64], &[f32]),
    tbits: u32,
    opts: &ProcOptions,
    mut then: Option<Then<'_>>,
    first: Option<First<'_>>,
) -> Result<Vec<(u64, u32)>> {
    let threads = opts.hits_threads;
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
    trace_point("winner blocks");
    let d_wb = upload(dev, &wb)?;
    let d_wo = upload(dev, &wo)?;
    let d_wl = upload(dev, &wl)?;
    trace_point("winner blocks uploaded");
    let mut smem = (BLOCK / 32) as u32 * 4 + if tbits > 0 { 2u32 << tbits } else { 0 };
    // As count_kernel: the single-precision variant keeps the rows' block
    // keys in shared memory where they fit.
    let room = dev.max_shared_per_block().saturating_sub(1024) as u64;
    // The second part of a split search (rows without marks) has variants
    // of its own for the single-precision kernels (REST in procedural.cu).
    let (name, rest) = match f32_variant(a) {
        true if opts.shared_keys && keys_fit(dev, a.slots as u64, smem) => {
            smem += a.slots * 8;
            ("proc_hits_f32k", "proc_hits_f32k_rest")
        }
        true => ("proc_hits_f32", "proc_hits_f32_rest"),
        false => ("proc_hits", "proc_hits"),
    };
    let f = dev.function(&kernels::PROCEDURAL, name)?;
    let f_rest = dev.function(&kernels::PROCEDURAL, rest)?;
    for f in [&f, &f_rest] {
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            room as i32,
        )
        .what("proc_hits shared memory")?;
    }
    a.wblocks = ptr(dev, &d_wb);
    a.woff = ptr(dev, &d_wo);
    a.wlocal = ptr(dev, &d_wl);
    let cfg = LaunchConfig {
        grid_dim: (wb.len() as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem,
    };
    // SAFETY (every launch below): as in `select`, plus: wblocks/woff/wlocal
    // describe the winners (woff has wb.len() + 1 entries), the kernel
    // writes at most hits_cap entries of `hits` and counts them in
    // *hits_count, and with seg_bits set, marks / marks1 (where not 0) hold
    // the mark records of the mark_split / slots − mark_split rows over
    // every block, recorded with this seg_bits by the counts of this step
    // (see `run`); the shared memory holds the bitmap and the table or the
    // `slots` block keys (≤ the opt-in limit less 1 KiB, the attribute set
    // above).
    let launch = |a: &ProcArgs| -> Result<()> {
        // The REST variants take only the second part.
        let f = if a.hits_part == 2 { &f_rest } else { &f };
        unsafe { s.launch_builder(f).arg(a).launch(cfg) }
            .map(|_| ())
            .what("launch proc_hits")
    };
    let side = ws.side.clone();
    let count_at = |ws: &ProcWorkspace, i: usize| -> Result<usize> {
        Ok(side
            .clone_dtoh(&ws.hits_count.slice(i..i + 1))
            .what("copy hit count")?[0] as usize)
    };
    // Split: the marked (stimulus) rows first, into `hits` (count 0), then
    // the others into `hits2` (count 1); the first part comes back and goes
    // to `first` while the device searches the second.
    let split = first.is_some()
        && a.seg_bits != 0
        && a.marks != 0
        && a.marks1 == 0
        && a.mark_split > 0
        && a.mark_split < a.slots;
    if let (true, Some(first)) = (split, first) {
        if ws.hits2.len() < ws.hits.len() {
            ws.hits2 = s.alloc_zeros(ws.hits.len()).what("alloc hit buffer")?;
        }
        s.memset_zeros(&mut ws.hits_count).what("zero hit count")?;
        let counts = ptr(dev, &ws.hits_count);
        a.hits = ptr(dev, &ws.hits);
        a.hits_cap = ws.hits.len().min(u32::MAX as usize) as u32;
        a.hits_count = counts;
        a.hits_part = 1;
        trace_point("search launch");
        timeline::mark(s, "search start");
        launch(a)?;
        timeline::mark(s, "search part 1 end");
        let part1 = s.record_event(None).what("record hits event")?;
        a.hits = ptr(dev, &ws.hits2);
        a.hits_cap = ws.hits2.len().min(u32::MAX as usize) as u32;
        a.hits_count = counts + 4;
        a.hits_part = 2;
        launch(a)?;
        timeline::mark(s, "search end");
        let done = s.record_event(None).what("record hits event")?;
        if let Some(t) = then.take() {
            t(ws)?;
        }
        side.wait(&part1).what("wait for hits")?;
        let n1 = count_at(ws, 0)?;
        if n1 <= ws.hits.len() {
            let h1 = fetch_hits(&side, &ws.hits, n1, &mut ws.hits_host)?;
            first(winners, inputs, h1).map_err(|why| Error::Invalid {
                op: "procedural Hebbian update",
                why,
            })?;
            side.wait(&done).what("wait for hits")?;
            loop {
                let n2 = count_at(ws, 1)?;
                if n2 <= ws.hits2.len() {
                    a.hits_part = 0;
                    return fetch_hits(&side, &ws.hits2, n2, &mut ws.hits_host);
                }
                // Not expected (the buffers hold an upper bound of the
                // synapses): the second part again, with room.
                ws.hits2 = s
                    .alloc_zeros(n2.next_power_of_two())
                    .what("alloc hit buffer")?;
                s.memset_zeros(&mut ws.hits_count).what("zero hit count")?;
                a.hits = ptr(dev, &ws.hits2);
                a.hits_cap = ws.hits2.len().min(u32::MAX as usize) as u32;
                launch(a)?;
                let again = s.record_event(None).what("record hits event")?;
                side.wait(&again).what("wait for hits")?;
            }
        }
        // The first part overflowed (not expected either): everything in
        // one launch below, with room, and `first` never called.
        ws.hits = s
            .alloc_zeros(n1.next_power_of_two())
            .what("alloc hit buffer")?;
        a.hits_count = counts;
        a.hits_part = 0;
    }
    loop {
        s.memset_zeros(&mut ws.hits_count).what("zero hit count")?;
        a.hits = ptr(dev, &ws.hits);
        a.hits_cap = ws.hits.len().min(u32::MAX as usize) as u32;
        a.hits_count = ptr(dev, &ws.hits_count);
        timeline::mark(s, "search start");
        launch(a)?;
        timeline::mark(s, "search end");
        // `then` queues its work behind the search on the main stream; the
        // results come back through the side stream, which waits for the
        // search alone.
        let done = s.record_event(None).what("record hits event")?;
        if let Some(t) = then.take() {
            t(ws)?;
        }
        side.wait(&done).what("wait for hits")?;
        let found = count_at(ws, 0)?;
        if found <= ws.hits.len() {
            return fetch_hits(&side, &ws.hits, found, &mut ws.hits_host);
        }
        ws.hits = s
            .alloc_zeros(found.next_power_of_two())
            .what("alloc hit buffer")?;
    }
}

/// The first `found` synapses of `hits` (winner id << 16 | slot), copied
/// by `side` through the page-locked buffer `host` (grown if needed).
fn fetch_hits(
    side: &Arc<CudaStream>,
    hits: &CudaSlice<u64>,
    found: usize,
    host: &mut Option<PinnedHostSlice<u64>>,
) -> Result<Vec<(u64, u32)>> {
    if found == 0 {
        return Ok(Vec::new());
    }
    if host.as_ref().is_none_or(|h| h.len() < found) {
        *host = None;
        // SAFETY: only the first `found` entries are read, after the copy
        // below has written them.
        *host = Some(
            unsafe {
                side.context()
                    .alloc_pinned_with_flags::<u64>(found.next_power_of_two(), 0)
            }
            .what("alloc pinned hit buffer")?,
        );
    }
    let h = host.as_mut().expect("just set");
    side.memcpy_dtoh(&hits.slice(..found), h)
        .what("copy hits")?;
    // The copy is asynchronous (and the context does not track events, so
    // the slice's own event is not recorded): wait here.
    side.synchronize().what("wait for the hits")?;
    Ok(h.as_slice().what("read the hits")?[..found]
        .iter()
        .map(|&x| (x >> 16, (x & 0xFFFF) as u32))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{best_sorted, merge_best, radix_sort_by_id};
    use kcap::rng::Stream;

    /// The definition: the k best under (input desc, id asc), then by id.
    fn reference(v: &[(u64, f32)], k: usize) -> Vec<(u64, f32)> {
        let mut r = merge_best(Vec::new(), v.to_vec(), k);
        r.sort_unstable_by_key(|p| p.0);
        r
    }

    #[test]
    fn best_sorted_equals_the_definition() {
        let mut rng = Stream::new(7);
        for case in 0..200u64 {
            let len = rng.below(3000) as usize;
            // Few distinct inputs (ties at the k-th), zeros, and ids from
            // small to beyond 2^40, distinct.
            let levels = 1 + rng.below(40);
            let spread = [1u64 << 16, 1 << 30, 1 << 44][case as usize % 3];
            let mut ids: Vec<u64> = (0..len).map(|_| rng.below(spread)).collect();
            ids.sort_unstable();
            ids.dedup();
            let v: Vec<(u64, f32)> = ids
                .iter()
                .map(|&i| (i, rng.below(levels) as f32 * 0.5))
                .collect();
            assert!(best_sorted(v.clone(), 0).is_empty());
            for k in [
                1,
                2,
                17,
                v.len().saturating_sub(1).max(1),
                v.len().max(1),
                v.len() + 5,
            ] {
                assert_eq!(
                    best_sorted(v.clone(), k),
                    reference(&v, k),
                    "case {case}, k {k}"
                );
            }
        }
    }

    #[test]
    fn radix_sort_sorts_by_id_keeping_pairs() {
        let mut rng = Stream::new(11);
        for bits in [0u32, 5, 16, 33, 63] {
            let mut v: Vec<(u64, f32)> = (0..5000)
                .map(|i| (rng.below(1u64 << bits.max(1)) | (1u64 << bits), i as f32))
                .collect();
            let mut want = v.clone();
            want.sort_by_key(|p| p.0); // stable, like an LSD radix sort
            radix_sort_by_id(&mut v);
            assert_eq!(v, want, "bits {bits}");
        }
        let mut empty: Vec<(u64, f32)> = Vec::new();
        radix_sort_by_id(&mut empty);
        assert!(empty.is_empty());
    }
}
