//! kcap-cuda — the CUDA backend of kcap.
//!
//! Key design decision: **kernels are CUDA C++ source compiled at run time by
//! NVRTC, and the driver is loaded dynamically** (cudarc with
//! `dynamic-loading`). The crate therefore builds on any machine — no nvcc,
//! no CUDA toolkit, no GPU — and a machine without an NVIDIA driver gets a
//! typed [`Error::NoDriver`] from [`CudaDevice::new`], never a panic. The
//! `.cu` files in `kernels/` are embedded with `include_str!`, compiled once
//! per device for its compute capability, and cached ([`device`]). CI
//! compiles every kernel for `sm_90` on a CPU-only machine with NVRTC from
//! PyPI wheels (`scripts/nvrtc-setup.sh`, `tests/nvrtc.rs`).
//!
//! Every kernel has one Rust launcher that checks lengths before launching:
//!
//! | kernels (`<op>_<dtype>`) | launcher | what |
//! |---|---|---|
//! | `topk_*_f32`, `topk_*_f16` | [`ops::topk`] | k-cap by radix select, ties to the lowest id, dense vectors or sparse (id, value) lists |
//! | `accumulate_rows_f32` | [`ops::accumulate`] | `inputs[to] += w` over firing CSR rows, fixed-point (deterministic) |
//! | `rng_*_u64`, `ln_fast_f64` | [`ops::rng`] | the counter-based generator and `ln_fast`, bit-identical to `kcap::rng` / `kcap::stats` |
//! | `explicit_gen_*`, `explicit_acc_*`, `explicit_hebb_*` | [`ops::explicit`] | explicit fibers kept on the device: generation, accumulation in firing order, Hebbian update — all bit-identical to the host engine |
//!
//! [`Cuda`] implements [`kcap::backend::Backend`], so a brain runs on the GPU
//! with `brain.set_backend(Arc::new(Cuda::new(0)?))`; [`Device`] does the same
//! from a device name (`"cpu"`, `"cuda"`, `"cuda:N"`) for the CLI and Python.
//! Explicit areas keep their stored fibers in device memory (generated
//! there when the backend is attached before the area is added) and run
//! their whole selection on the device; the lazy engine's calls upload
//! their inputs, so they only pay off on large steps.

pub mod backend;
pub mod device;
pub mod error;
pub mod kernels;
pub mod ops;
pub mod select;

pub use backend::Cuda;
pub use device::CudaDevice;
pub use error::{Error, Result};
pub use select::{Device, OpenError};
