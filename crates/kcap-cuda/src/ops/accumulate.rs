//! Input accumulation along the rows of the firing neurons, on the GPU,
//! deterministic by fixed-point sums.
//!
//! `inputs[to] += w` for every synapse `(to, w)` of every firing row of a CSR
//! matrix. Each weight is rounded to a fixed-point integer `round(w · 2^s)`
//! and the integers are summed with 64-bit atomics: integer addition is
//! associative, so the result is the same whatever order the atomics land in
//! (bitwise reproducible on any GPU and launch shape). The scale `2^s` is
//! chosen per call from a bound on the sums, `s = min(32, 62 − ⌈log2 B⌉)`
//! where `B ≥ Σ|w|` over the call's synapses, so no sum can overflow; with
//! `B ≤ 2^30` (every kcap run so far) `s = 32`, i.e. Q31.32.
//!
//! **Tolerance vs the CPU backend** (which adds in f32, in row order): for
//! an input j that receives `m_j` weights of absolute sum `A_j` and held
//! `x_j` before the call, the GPU result is `f32(x_j + Σ round(w·2^s)/2^s)`,
//! off from the exact sum by at most `m_j·2^-(s+1)` plus half an f32 ulp; the
//! CPU's f32 sum is off by at most `m_j·2^-24·(|x_j| + A_j)` (first order).
//! So `|gpu − cpu| ≤ (m_j + 1)·2^-24·(|x_j| + A_j) + m_j·2^-s`, which the
//! tests check. Sums of small integers (unit weights) are exact on both
//! (while below 2^24), hence equal.

use super::{cfg, grid_for};
use crate::device::CudaDevice;
use crate::error::{DriverResultExt, Error, Result};
use crate::kernels;
use cudarc::driver::{CudaSlice, PushKernelArg};

/// The largest fixed-point exponent (Q31.32).
pub const MAX_SCALE_BITS: i32 = 32;

/// The fixed-point exponent `s` for sums bounded by `bound` (≥ Σ|w|), or
/// `None` when no exponent keeps both precision and range (bound not finite
/// or above 2^52, where the weights' fractions would all round away).
pub fn scale_bits(bound: f64) -> Option<i32> {
    if !bound.is_finite() || bound < 0.0 {
        return None;
    }
    let need = bound.max(1.0).log2().ceil() as i32;
    let s = (62 - need).min(MAX_SCALE_BITS);
    (s >= 10).then_some(s)
}

/// A CSR matrix on the device: row `r`'s synapses are `to[e], w[e]` for `e`
/// in `row_ptr[r]..row_ptr[r+1]`.
pub struct DeviceCsr {
    pub row_ptr: CudaSlice<u64>,
    pub to: CudaSlice<u32>,
    pub w: CudaSlice<f32>,
}

impl DeviceCsr {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.row_ptr.len().saturating_sub(1)
    }
}

/// `inputs[to] += w` over the rows `firing` of `csr`, with fixed-point
/// exponent `scale_bits` (see [`scale_bits`]; the caller guarantees that the
/// absolute sum of the weights involved is below `2^(62 - scale_bits)`).
/// `acc` is scratch of `inputs.len()` 64-bit words. Rows, ids and offsets
/// out of range are skipped by the kernel (never read or written out of
/// bounds); the CPU backend would panic on them instead. Asynchronous.
pub fn accumulate_rows_f32(
    dev: &CudaDevice,
    csr: &DeviceCsr,
    firing: &CudaSlice<u32>,
    scale_bits: i32,
    acc: &mut CudaSlice<u64>,
    inputs: &mut CudaSlice<f32>,
) -> Result<()> {
    let op = "accumulate_rows_f32";
    if csr.row_ptr.is_empty() {
        return Err(Error::invalid(
            op,
            "row_ptr is empty (it needs rows + 1 entries)",
        ));
    }
    if csr.to.len() != csr.w.len() {
        return Err(Error::invalid(
            op,
            format!("{} targets but {} weights", csr.to.len(), csr.w.len()),
        ));
    }
    if acc.len() != inputs.len() {
        return Err(Error::invalid(
            op,
            format!(
                "accumulator holds {} words for {} inputs",
                acc.len(),
                inputs.len()
            ),
        ));
    }
    if inputs.len() > u32::MAX as usize
        || firing.len() > u32::MAX as usize
        || csr.rows() > u32::MAX as usize
    {
        return Err(Error::invalid(
            op,
            "more than 2^32 - 1 inputs, rows or firing rows",
        ));
    }
    if !(0..=MAX_SCALE_BITS).contains(&scale_bits) {
        return Err(Error::invalid(
            op,
            format!("scale_bits = {scale_bits} outside 0..={MAX_SCALE_BITS}"),
        ));
    }
    let m = kernels::ACCUMULATE_ROWS_F32;
    let add = dev.function(&m, "accumulate_rows_f32")?;
    let finish = dev.function(&m, "accumulate_rows_f32_finish")?;
    let s = dev.stream();
    let (n, nrows, nfiring, nnz) = (
        inputs.len() as u32,
        csr.rows() as u32,
        firing.len() as u32,
        csr.to.len() as u64,
    );
    let scale = (2.0f64).powi(scale_bits);
    let inv = (2.0f64).powi(-scale_bits);
    s.memset_zeros(acc).what("zero accumulator")?;
    let warps_per_block = 8u32;
    let add_grid = grid_for(nfiring as u64, warps_per_block, dev.sm_count(), 16);
    let fin_grid = grid_for(n as u64, 256, dev.sm_count(), 8);
    // SAFETY: argument types and order match the kernels' signatures
    // (accumulate_rows_f32.cu); the kernels bound every access: rows by
    // nrows (row_ptr holds nrows + 1 entries), offsets by nnz (= to.len() =
    // w.len()), targets by n (= acc.len() = inputs.len()), firing by nfiring.
    unsafe {
        if nfiring > 0 {
            s.launch_builder(&add)
                .arg(&csr.row_ptr)
                .arg(&nrows)
                .arg(firing)
                .arg(&nfiring)
                .arg(&csr.to)
                .arg(&csr.w)
                .arg(&nnz)
                .arg(&scale)
                .arg(&mut *acc)
                .arg(&n)
                .launch(cfg(add_grid, warps_per_block * 32))
                .what("launch accumulate_rows_f32")?;
        }
        if n > 0 {
            s.launch_builder(&finish)
                .arg(&*acc)
                .arg(&inv)
                .arg(&mut *inputs)
                .arg(&n)
                .launch(cfg(fin_grid, 256))
                .what("launch accumulate_rows_f32_finish")?;
        }
    }
    Ok(())
}
