//! The k-cap on the GPU: radix select (AIR-style) over a dense vector or a
//! sparse (id, value) list, for f32 and f16 values.
//!
//! Result: the ids of the k largest values, ties to the LOWEST id — exactly
//! the set [`kcap::cap::top_k`] returns (tested on random and tie-heavy
//! inputs). The ids are left on the device, unordered
//! ([`TopkWorkspace::ids`]); [`TopkWorkspace::fetch_sorted`] copies them back
//! sorted and checks the kernels' own consistency flags.
//!
//! How (kernels/topk.cuh has the details): each element gets the unique key
//! `(value key << ib) | (base - id)`; the k-th largest key is found digit by
//! digit (≤ 11 bits a pass) from histograms of the still-undecided elements,
//! which move into a candidate buffer as soon as they fit. Dense inputs of
//! at least [`PREFILTER_MIN_N`] elements are first cut by a threshold taken
//! from a 65 536-element strided sample, so a large top-k reads its input
//! once (then works on a few hundred thousand candidates); when the sample
//! misleads (heavy ties, adversarial order) the passes fall back to reading
//! the input, with the same result.

use crate::device::CudaDevice;
use crate::error::{DriverResultExt, Error, Result};
use crate::kernels::{self, Module};
use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

/// Value types the k-cap accepts on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    /// IEEE binary16, stored as its bit pattern (`u16`, e.g. `half::f16::to_bits`).
    F16,
    /// Unsigned 16-bit integers (the procedural engine's stored counts).
    U16,
}

impl Dtype {
    fn vbits(self) -> u32 {
        match self {
            Dtype::F32 => 32,
            Dtype::F16 | Dtype::U16 => 16,
        }
    }
    fn module(self) -> Module {
        match self {
            Dtype::F32 => kernels::TOPK_F32,
            Dtype::F16 => kernels::TOPK_F16,
            Dtype::U16 => kernels::TOPK_U16,
        }
    }
}

/// A device element type the k-cap reads: `f32`, or `u16` holding f16 bits.
pub trait TopkValue: DeviceRepr {
    const DTYPE: Dtype;
}
impl TopkValue for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl TopkValue for u16 {
    const DTYPE: Dtype = Dtype::F16;
}

/// Dense inputs at least this long are prefiltered by a sampled threshold.
pub const PREFILTER_MIN_N: u64 = 1 << 22;
/// Sample size of the prefilter.
pub const SAMPLE: u32 = 1 << 16;
/// Smallest candidate-buffer capacity (elements, 8 bytes each, two buffers).
const MIN_CAP: u64 = 1 << 20;
/// Largest candidate-buffer capacity (elements).
const MAX_CAP: u64 = 1 << 26;
/// Threads per block of the top-k kernels: must equal KCAP_BLOCK in topk.cuh.
const BLOCK: u32 = 256;
const MAX_DIGIT: u32 = 11;

/// Launch arguments shared by every top-k kernel (`TopkArgs` in topk.cuh;
/// the layout is checked there by `static_assert`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct TopkArgs {
    values: u64,
    ids: u64,
    n: u64,
    base: u64,
    ib: u32,
    k: u32,
    cap: u32,
    aligned: u32,
    buf0: u64,
    buf1: u64,
    out: u64,
    sample: u64,
    nsample: u32,
    target: u32,
    st: u64,
}
// SAFETY: plain `repr(C)` data (integers and device addresses) with the same
// layout as the C struct (checked by static_assert in topk.cuh).
unsafe impl DeviceRepr for TopkArgs {}
const _: () = assert!(std::mem::size_of::<TopkArgs>() == 96);

/// Words of `TopkState` (topk.cuh): 80 bytes of fields, then the pass
/// histogram and the sample histogram (which must start zeroed).
const STATE_WORDS: usize = 20 + 2 * 2048;
const ST_FINISHED: usize = 10;
const ST_OUT_COUNT: usize = 14;
const ST_PREFILTER_OK: usize = 16;
const ST_OVERFLOW: usize = 17;

/// How one top-k call runs (computed on the host from n, k and the dtype).
#[derive(Clone, Debug, PartialEq)]
pub struct TopkPlan {
    pub n: u64,
    pub k: u32,
    pub dtype: Dtype,
    pub sparse: bool,
    /// Index bits of the composite key.
    pub ib: u32,
    /// Low bit of each radix digit, most significant digit first.
    pub digit_lo: Vec<u32>,
    /// `Some(target)`: prefilter at the target-th largest of SAMPLE samples.
    pub prefilter: Option<u32>,
    /// Capacity of each candidate buffer (elements).
    pub cap: u64,
    /// Blocks of the prefilter (and of every pass without a prefilter).
    pub grid: u32,
    /// Blocks of the digit passes.
    pub pass_grid: u32,
}

/// Blocks per multiprocessor of the digit passes that run on the
/// prefiltered candidates (a few hundred thousand elements): fewer blocks
/// mean fewer histogram flushes. `KCAP_TOPK_PASS_BLOCKS_PER_SM` overrides it
/// (read once; a tuning knob for benchmarks, not an interface).
fn pass_blocks_per_sm() -> u32 {
    static V: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("KCAP_TOPK_PASS_BLOCKS_PER_SM")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v| v >= 1)
            .unwrap_or(4)
    })
}

impl TopkPlan {
    /// The plan for k of n values (`1 <= k < n`).
    pub fn new(n: u64, k: u32, dtype: Dtype, sparse: bool, sm_count: u32) -> TopkPlan {
        let ib = if sparse {
            32
        } else {
            (64 - (n - 1).leading_zeros()).max(1)
        };
        let bits = dtype.vbits() + ib;
        let nd = bits.div_ceil(MAX_DIGIT);
        // Widths as even as possible, the wider ones first.
        let mut digit_lo = Vec::with_capacity(nd as usize);
        let mut hi = bits;
        for d in 0..nd {
            hi -= bits / nd + u32::from(d < bits % nd);
            digit_lo.push(hi);
        }
        debug_assert_eq!(hi, 0);
        let mut cap = MIN_CAP.max(2 * k as u64);
        let mut prefilter = None;
        if !sparse && n >= PREFILTER_MIN_N {
            // Samples expected above the k-th value, plus 6 sigma and a floor.
            let m = k as f64 * SAMPLE as f64 / n as f64;
            let target = (m + 6.0 * m.sqrt() + 16.0).ceil() as u64;
            let expected = target as f64 * n as f64 / SAMPLE as f64;
            if target <= SAMPLE as u64 / 4 {
                cap = cap.max((4.0 * expected) as u64);
                prefilter = Some(target as u32);
            }
        }
        // Buffers hold at most MAX_CAP (512 MB each); a bigger live set is
        // re-read from the input until it fits.
        let cap = cap.min(MAX_CAP).min(n).max(1);
        let per_block = (BLOCK as u64) * 8;
        let grid = (n.div_ceil(per_block)).clamp(1, 4 * sm_count.max(1) as u64) as u32;
        let pass_grid = match prefilter {
            Some(_) => grid.min(pass_blocks_per_sm() * sm_count.max(1)),
            None => grid,
        };
        TopkPlan {
            n,
            k,
            dtype,
            sparse,
            ib,
            digit_lo,
            prefilter,
            cap,
            grid,
            pass_grid,
        }
    }
}

/// Device buffers of the k-cap, reused across calls (grown when a call needs
/// more). Holds the result of the last call.
pub struct TopkWorkspace {
    buf0: CudaSlice<u64>,
    buf1: CudaSlice<u64>,
    out: CudaSlice<u32>,
    sample: CudaSlice<u32>,
    state: CudaSlice<u32>,
    last_k: usize,
}

impl TopkWorkspace {
    pub fn new(dev: &CudaDevice) -> Result<TopkWorkspace> {
        let s = dev.stream();
        Ok(TopkWorkspace {
            buf0: s.alloc_zeros(1).what("alloc")?,
            buf1: s.alloc_zeros(1).what("alloc")?,
            out: s.alloc_zeros(1).what("alloc")?,
            sample: s.alloc_zeros(SAMPLE as usize).what("alloc")?,
            state: s.alloc_zeros(STATE_WORDS).what("alloc")?,
            last_k: 0,
        })
    }

    fn ensure(&mut self, dev: &CudaDevice, cap: usize, k: usize) -> Result<()> {
        let s = dev.stream();
        if self.buf0.len() < cap {
            self.buf0 = s.alloc_zeros(cap).what("alloc candidate buffer")?;
            self.buf1 = s.alloc_zeros(cap).what("alloc candidate buffer")?;
        }
        if self.out.len() < k {
            self.out = s.alloc_zeros(k).what("alloc top-k output")?;
        }
        Ok(())
    }

    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        (self.buf0.len() + self.buf1.len()) * 8
            + (self.out.len() + self.sample.len() + self.state.len()) * 4
    }

    /// The ids chosen by the last call, unordered, on the device.
    pub fn ids(&self) -> CudaView<'_, u32> {
        self.out.slice(..self.last_k)
    }

    /// Copies the last call's ids back, sorted increasingly, after checking
    /// that the kernels emitted exactly k of them. Synchronizes.
    pub fn fetch_sorted(&self, dev: &CudaDevice) -> Result<TopkOutcome> {
        let mut out = self.fetch(dev)?;
        out.ids.sort_unstable();
        Ok(out)
    }

    /// [`fetch_sorted`](Self::fetch_sorted) without the sort: the ids in
    /// the device's order (that of [`ids`](Self::ids)).
    pub fn fetch(&self, dev: &CudaDevice) -> Result<TopkOutcome> {
        let k = self.last_k;
        let st = dev
            .stream()
            .clone_dtoh(&self.state.slice(..20))
            .what("copy top-k state")?;
        let ids = if k > 0 {
            dev.stream()
                .clone_dtoh(&self.out.slice(..k))
                .what("copy top-k ids")?
        } else {
            vec![]
        };
        if st[ST_FINISHED] != 1 || st[ST_OVERFLOW] != 0 || st[ST_OUT_COUNT] as usize != k {
            return Err(Error::Internal {
                op: "topk",
                why: format!(
                    "selection did not converge: finished={} overflow={} emitted {} of k={} (duplicate ids in a sparse list?)",
                    st[ST_FINISHED], st[ST_OVERFLOW], st[ST_OUT_COUNT], k
                ),
            });
        }
        Ok(TopkOutcome {
            ids,
            prefiltered: st[ST_PREFILTER_OK] == 1,
        })
    }
}

/// What [`TopkWorkspace::fetch_sorted`] returns.
#[derive(Clone, Debug)]
pub struct TopkOutcome {
    /// The k ids (increasing from `fetch_sorted`).
    pub ids: Vec<u32>,
    /// The one-pass prefilter held (false: no prefilter, or it fell back).
    pub prefiltered: bool,
}

/// The k-cap over a dense device vector: ids `0..values.len()` of its `k`
/// largest values, ties to the lowest id. Requires `1 <= k < len <= 2^32`.
/// Asynchronous: the ids are in `ws` ([`TopkWorkspace::ids`]) once the
/// stream reaches them.
pub fn topk<T: TopkValue>(
    dev: &CudaDevice,
    ws: &mut TopkWorkspace,
    values: &CudaSlice<T>,
    k: usize,
) -> Result<TopkPlan> {
    let (ptr, _g) = values.device_ptr(dev.stream());
    launch(dev, ws, T::DTYPE, ptr, None, values.len(), k)
}

/// [`topk`] over the first `len` elements of `values`.
pub fn topk_prefix<T: TopkValue>(
    dev: &CudaDevice,
    ws: &mut TopkWorkspace,
    values: &CudaSlice<T>,
    len: usize,
    k: usize,
) -> Result<TopkPlan> {
    if len > values.len() {
        return Err(Error::invalid(
            "topk",
            format!("prefix of {len} elements of a vector of {}", values.len()),
        ));
    }
    let (ptr, _g) = values.device_ptr(dev.stream());
    launch(dev, ws, T::DTYPE, ptr, None, len, k)
}

/// The k-cap over the unsigned 16-bit values `counts[offset..offset + len]`
/// (ids `0..len`, relative to `offset`), as [`topk`]: the `k` largest, ties
/// to the lowest id. `offset` must be a multiple of 8 (16-byte loads).
pub fn topk_u16(
    dev: &CudaDevice,
    ws: &mut TopkWorkspace,
    counts: &CudaSlice<u16>,
    offset: usize,
    len: usize,
    k: usize,
) -> Result<TopkPlan> {
    if offset % 8 != 0 || offset.checked_add(len).is_none_or(|e| e > counts.len()) {
        return Err(Error::invalid(
            "topk",
            format!(
                "{len} elements from offset {offset} of a vector of {} (the offset must be a multiple of 8)",
                counts.len()
            ),
        ));
    }
    let (ptr, _g) = counts.device_ptr(dev.stream());
    launch(dev, ws, Dtype::U16, ptr + 2 * offset as u64, None, len, k)
}

/// The k-cap over a sparse candidate list: the `k` ids of `ids` with the
/// largest `values` (entry `j` is `(ids[j], values[j])`), ties to the lowest
/// id. Ids must be distinct. Requires `1 <= k < len`, equal lengths.
pub fn topk_sparse<T: TopkValue>(
    dev: &CudaDevice,
    ws: &mut TopkWorkspace,
    ids: &CudaSlice<u32>,
    values: &CudaSlice<T>,
    k: usize,
) -> Result<TopkPlan> {
    if ids.len() != values.len() {
        return Err(Error::invalid(
            "topk_sparse",
            format!("{} ids but {} values", ids.len(), values.len()),
        ));
    }
    let (vp, _g) = values.device_ptr(dev.stream());
    let (ip, _h) = ids.device_ptr(dev.stream());
    launch(dev, ws, T::DTYPE, vp, Some(ip), values.len(), k)
}

/// The one launcher of the top-k kernels: checks sizes, plans, launches
/// init → [sample → threshold → prefilter] → digit passes → final pass.
fn launch(
    dev: &CudaDevice,
    ws: &mut TopkWorkspace,
    dtype: Dtype,
    values: u64,
    ids: Option<u64>,
    n: usize,
    k: usize,
) -> Result<TopkPlan> {
    let op = "topk";
    if n == 0 || k == 0 || k >= n {
        return Err(Error::invalid(
            op,
            format!("need 1 <= k < n, got k = {k}, n = {n}"),
        ));
    }
    if ids.is_none() && n as u64 > 1u64 << 32 {
        return Err(Error::invalid(
            op,
            format!("n = {n} exceeds 2^32 (ids are u32)"),
        ));
    }
    if ids.is_some() && n as u64 > u32::MAX as u64 {
        return Err(Error::invalid(
            op,
            format!("a sparse list of {n} entries exceeds 2^32 - 1"),
        ));
    }
    let plan = TopkPlan::new(n as u64, k as u32, dtype, ids.is_some(), dev.sm_count());
    ws.ensure(dev, plan.cap as usize, k)?;
    ws.last_k = k;
    let m = dtype.module();
    let s = dev.stream();
    let a = TopkArgs {
        values,
        ids: ids.unwrap_or(0),
        n: n as u64,
        base: if ids.is_some() {
            u32::MAX as u64
        } else {
            n as u64 - 1
        },
        ib: plan.ib,
        k: k as u32,
        cap: plan.cap as u32,
        aligned: u32::from(ids.is_none() && values & 15 == 0),
        buf0: ws.buf0.device_ptr(s).0,
        buf1: ws.buf1.device_ptr(s).0,
        out: ws.out.device_ptr(s).0,
        sample: ws.sample.device_ptr(s).0,
        nsample: SAMPLE,
        target: plan.prefilter.unwrap_or(0),
        st: ws.state.device_ptr(s).0,
    };
    let cfg = |grid: u32, block: u32| LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    };
    let names = match dtype {
        Dtype::F32 => [
            "topk_init_f32",
            "topk_sample_f32",
            "topk_threshold_f32",
            "topk_prefilter_f32",
            "topk_pass_f32",
        ],
        Dtype::F16 => [
            "topk_init_f16",
            "topk_sample_f16",
            "topk_threshold_f16",
            "topk_prefilter_f16",
            "topk_pass_f16",
        ],
        Dtype::U16 => [
            "topk_init_u16",
            "topk_sample_u16",
            "topk_threshold_u16",
            "topk_prefilter_u16",
            "topk_pass_u16",
        ],
    };
    let [init, sample, threshold, prefilter, pass] = names.map(|name| dev.function(&m, name));
    let (init, pass) = (init?, pass?);
    // SAFETY (all launches below): every pointer in `a` is a live device
    // allocation of at least the size the kernels index — values/ids hold n
    // elements (the caller's slices, borrowed for this call and freed only in
    // stream order), buf0/buf1 hold plan.cap and out holds k (ensured above),
    // sample holds SAMPLE and state STATE_WORDS words; the kernels bound
    // every index by n, cap, k or nsample. Argument types match the kernels'
    // signatures `(TopkArgs)` and `(TopkArgs, u32)`.
    unsafe {
        if plan.prefilter.is_none() {
            s.launch_builder(&init)
                .arg(&a)
                .launch(cfg(1, BLOCK))
                .what("launch topk_init")?;
        } else {
            // topk_sample's block 0 initialises the state.
            s.launch_builder(&sample?)
                .arg(&a)
                .launch(cfg(SAMPLE / BLOCK, BLOCK))
                .what("launch topk_sample")?;
            s.launch_builder(&threshold?)
                .arg(&a)
                .launch(cfg(1, 1024))
                .what("launch topk_threshold")?;
            s.launch_builder(&prefilter?)
                .arg(&a)
                .launch(cfg(plan.grid, BLOCK))
                .what("launch topk_prefilter")?;
        }
        for &lo in plan.digit_lo.iter().chain(std::iter::once(&0u32)) {
            s.launch_builder(&pass)
                .arg(&a)
                .arg(&lo)
                .launch(cfg(plan.pass_grid, BLOCK))
                .what("launch topk_pass")?;
        }
    }
    Ok(plan)
}

/// Checks in O(n) that `ids` is exactly the k-cap of the values whose
/// order keys are `key(0..n)` (larger key first, ties to the lowest index),
/// without sorting: the ids must be k distinct indices, every key above the
/// smallest chosen key K must be chosen, and the chosen ties at K must be the
/// lowest-indexed ones. For tests and benchmarks on inputs too large for
/// [`kcap::cap::top_k`].
pub fn check_topk(
    n: usize,
    key: impl Fn(usize) -> u32,
    ids: &[u32],
    k: usize,
) -> std::result::Result<(), String> {
    if ids.len() != k.min(n) {
        return Err(format!("{} ids for k = {k}, n = {n}", ids.len()));
    }
    let mut chosen = vec![0u64; n.div_ceil(64)];
    let mut kmin = u32::MAX;
    for &i in ids {
        let i = i as usize;
        if i >= n {
            return Err(format!("id {i} out of range {n}"));
        }
        if chosen[i / 64] >> (i % 64) & 1 == 1 {
            return Err(format!("id {i} chosen twice"));
        }
        chosen[i / 64] |= 1 << (i % 64);
        kmin = kmin.min(key(i));
    }
    let mut skipped_tie: Option<usize> = None;
    for i in 0..n {
        let (kv, c) = (key(i), chosen[i / 64] >> (i % 64) & 1 == 1);
        if kv > kmin && !c {
            return Err(format!(
                "index {i} (key {kv:#x}) beats the smallest chosen key {kmin:#x} but is not chosen"
            ));
        }
        if kv == kmin {
            match (c, skipped_tie) {
                (false, None) => skipped_tie = Some(i),
                (true, Some(j)) => {
                    return Err(format!(
                        "tie at key {kmin:#x}: index {i} chosen over lower index {j}"
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The order key of an f32 (as in [`kcap::cap::order_key`]).
pub fn key_f32(v: f32) -> u32 {
    kcap::cap::order_key(v)
}

/// The order key of f16 bits: the same order as the f32 conversion.
pub fn key_f16(h: u16) -> u32 {
    let h = h as u32;
    if h & 0x8000 != 0 {
        !h & 0xffff
    } else {
        h | 0x8000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_cover_the_key() {
        for (n, dt, sparse) in [
            (2u64, Dtype::F16, false),
            (1_000_000_000, Dtype::F16, false),
            (100, Dtype::F32, true),
            (1 << 32, Dtype::F32, false),
        ] {
            let p = TopkPlan::new(n, 1, dt, sparse, 132);
            let bits = dt.vbits() + p.ib;
            let mut hi = bits;
            for &lo in &p.digit_lo {
                assert!(lo < hi && hi - lo <= MAX_DIGIT, "{p:?}");
                hi = lo;
            }
            assert_eq!(hi, 0);
            assert!(bits <= 64);
        }
    }

    #[test]
    fn prefilter_plan_for_topk_1e9() {
        let p = TopkPlan::new(1_000_000_000, 31_623, Dtype::F16, false, 132);
        assert_eq!(p.ib, 30);
        assert_eq!(p.digit_lo.len(), 5);
        let t = p.prefilter.expect("prefiltered");
        assert!(t > 16 && t < 64, "{t}");
        assert!(p.cap >= 1 << 20 && p.cap < 1 << 23, "{}", p.cap);
    }
}
