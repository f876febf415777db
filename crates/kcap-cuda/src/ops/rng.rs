//! The counter-based generator and `ln_fast` on the device.
//!
//! The device functions (kernels/common.cuh) are bit-identical to
//! [`kcap::rng`] and [`kcap::stats::ln_fast`]: these launchers exist so tests
//! can compare them word for word, and so benchmarks can fill device vectors
//! with reproducible random data without a host round trip.

use super::{cfg, grid_for};
use crate::device::CudaDevice;
use crate::error::{DriverResultExt, Error, Result};
use crate::kernels;
use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};

const BLOCK: u32 = 256;

/// `word(key, counter0 + i)` for `i < n`, computed on the device.
pub fn words(dev: &CudaDevice, key: u64, counter0: u64, n: usize) -> Result<Vec<u64>> {
    check_len("rng_word_u64", n)?;
    let f = dev.function(&kernels::RNG, "rng_word_u64")?;
    let s = dev.stream();
    let mut out = s.alloc_zeros::<u64>(n.max(1)).what("alloc")?;
    let n32 = n as u32;
    // SAFETY: out holds max(n, 1) u64s and the kernel writes indices < n;
    // argument types match `rng_word_u64(u64, u64, u64*, u32)`.
    unsafe {
        s.launch_builder(&f)
            .arg(&key)
            .arg(&counter0)
            .arg(&mut out)
            .arg(&n32)
            .launch(cfg(grid_for(n as u64, BLOCK, dev.sm_count(), 8), BLOCK))
            .what("launch rng_word_u64")?;
    }
    let mut v = s.clone_dtoh(&out).what("copy words")?;
    v.truncate(n);
    Ok(v)
}

/// `derive(parents[i], words)` for every parent, computed on the device.
pub fn derive(dev: &CudaDevice, parents: &[u64], words: &[u64]) -> Result<Vec<u64>> {
    check_len("rng_derive_u64", parents.len())?;
    check_len("rng_derive_u64", words.len())?;
    let f = dev.function(&kernels::RNG, "rng_derive_u64")?;
    let s = dev.stream();
    let p = s.clone_htod(&pad(parents)).what("upload parents")?;
    let w = s.clone_htod(&pad(words)).what("upload words")?;
    let mut out = s.alloc_zeros::<u64>(parents.len().max(1)).what("alloc")?;
    let (nw, n) = (words.len() as u32, parents.len() as u32);
    // SAFETY: p and out hold max(n, 1) u64s, w holds max(nw, 1); the kernel
    // reads parents[i], out[i] for i < n and words[j] for j < nw; argument
    // types match `rng_derive_u64(const u64*, const u64*, u32, u64*, u32)`.
    unsafe {
        s.launch_builder(&f)
            .arg(&p)
            .arg(&w)
            .arg(&nw)
            .arg(&mut out)
            .arg(&n)
            .launch(cfg(grid_for(n as u64, BLOCK, dev.sm_count(), 8), BLOCK))
            .what("launch rng_derive_u64")?;
    }
    let mut v = s.clone_dtoh(&out).what("copy derived keys")?;
    v.truncate(parents.len());
    Ok(v)
}

/// `(unit_open(word(key, i)), ln_fast(unit_open(word(key, i))))` for `i < n`.
pub fn uniform_ln(dev: &CudaDevice, key: u64, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    check_len("rng_uniform_ln_f64", n)?;
    let f = dev.function(&kernels::RNG, "rng_uniform_ln_f64")?;
    let s = dev.stream();
    let mut u = s.alloc_zeros::<f64>(n.max(1)).what("alloc")?;
    let mut l = s.alloc_zeros::<f64>(n.max(1)).what("alloc")?;
    let n32 = n as u32;
    // SAFETY: u and l hold max(n, 1) f64s, written at indices < n; argument
    // types match `rng_uniform_ln_f64(u64, double*, double*, u32)`.
    unsafe {
        s.launch_builder(&f)
            .arg(&key)
            .arg(&mut u)
            .arg(&mut l)
            .arg(&n32)
            .launch(cfg(grid_for(n as u64, BLOCK, dev.sm_count(), 8), BLOCK))
            .what("launch rng_uniform_ln_f64")?;
    }
    let (mut u, mut l) = (
        s.clone_dtoh(&u).what("copy")?,
        s.clone_dtoh(&l).what("copy")?,
    );
    u.truncate(n);
    l.truncate(n);
    Ok((u, l))
}

/// `ln_fast(x)` for every x (positive, finite, normal), on the device.
pub fn ln_fast(dev: &CudaDevice, xs: &[f64]) -> Result<Vec<f64>> {
    check_len("ln_fast_f64", xs.len())?;
    let f = dev.function(&kernels::RNG, "ln_fast_f64")?;
    let s = dev.stream();
    let x = s.clone_htod(&pad(xs)).what("upload")?;
    let mut out = s.alloc_zeros::<f64>(xs.len().max(1)).what("alloc")?;
    let n = xs.len() as u32;
    // SAFETY: x and out hold max(n, 1) f64s, accessed at indices < n;
    // argument types match `ln_fast_f64(const double*, double*, u32)`.
    unsafe {
        s.launch_builder(&f)
            .arg(&x)
            .arg(&mut out)
            .arg(&n)
            .launch(cfg(grid_for(n as u64, BLOCK, dev.sm_count(), 8), BLOCK))
            .what("launch ln_fast_f64")?;
    }
    let mut v = s.clone_dtoh(&out).what("copy")?;
    v.truncate(xs.len());
    Ok(v)
}

/// Fills `out` with `f32(unit_open(word(key, i)))` (uniform in (0, 1],
/// like `torch.rand`). Asynchronous.
pub fn fill_uniform_f32(dev: &CudaDevice, key: u64, out: &mut CudaSlice<f32>) -> Result<()> {
    fill_keyed(dev, "rng_uniform_f32", key, out)
}

/// Fills `out` with the f16 bits of `fill_uniform_f32`'s values rounded to
/// half precision (nearest even). Asynchronous.
pub fn fill_uniform_f16(dev: &CudaDevice, key: u64, out: &mut CudaSlice<u16>) -> Result<()> {
    fill_keyed(dev, "rng_uniform_f16", key, out)
}

/// Launches the RNG kernel `name(u64 key, T* out, u64 n)` over all of `out`.
fn fill_keyed<T: DeviceRepr>(
    dev: &CudaDevice,
    name: &'static str,
    key: u64,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let f = dev.function(&kernels::RNG, name)?;
    let n = out.len() as u64;
    let s = dev.stream();
    // SAFETY: the kernels named here write out[i] for i < n = out.len(); their
    // signature is `(u64 key, T* out, u64 n)` with T the element type of `out`.
    unsafe {
        s.launch_builder(&f)
            .arg(&key)
            .arg(out)
            .arg(&n)
            .launch(cfg(grid_for(n, BLOCK, dev.sm_count(), 8), BLOCK))
            .what(&format!("launch {name}"))?;
    }
    Ok(())
}

/// Fills `out` with `Stream::below`-style draws `(word(key, i) · bound) >> 64`,
/// uniform in `[0, bound)`. Asynchronous.
pub fn fill_below_u32(
    dev: &CudaDevice,
    key: u64,
    bound: u64,
    out: &mut CudaSlice<u32>,
) -> Result<()> {
    if bound == 0 || bound > 1 << 32 {
        return Err(Error::invalid(
            "rng_below_u32",
            format!("bound = {bound} outside 1..=2^32"),
        ));
    }
    let f = dev.function(&kernels::RNG, "rng_below_u32")?;
    let n = out.len() as u64;
    let s = dev.stream();
    // SAFETY: the kernel writes out[i] for i < n = out.len(); argument types
    // match `rng_below_u32(u64, u64, u32*, u64)`.
    unsafe {
        s.launch_builder(&f)
            .arg(&key)
            .arg(&bound)
            .arg(out)
            .arg(&n)
            .launch(cfg(grid_for(n, BLOCK, dev.sm_count(), 8), BLOCK))
            .what("launch rng_below_u32")?;
    }
    Ok(())
}

fn check_len(op: &'static str, n: usize) -> Result<()> {
    if n > u32::MAX as usize {
        return Err(Error::invalid(op, format!("{n} elements exceed 2^32 - 1")));
    }
    Ok(())
}

/// A copy with at least one element (zero-length device buffers are avoided).
fn pad<T: Copy + Default>(v: &[T]) -> Vec<T> {
    if v.is_empty() {
        vec![T::default()]
    } else {
        v.to_vec()
    }
}
