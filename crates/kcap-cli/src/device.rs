//! Where a run computes: `cpu` (default) or `cuda[:N]`, from the experiment
//! file's `[brain] device` or the `--device` option of `kcap run` / `kcap
//! bench` (the option wins).
//!
//! The names, their parsing and the opening of the device are the CUDA
//! crate's ([`kcap_cuda::Device`]), shared with the Python module. The CUDA
//! backend loads the NVIDIA driver and NVRTC at run time, so this binary runs
//! everywhere; asking for `cuda` on a machine without a driver or GPU is a
//! clear error, never a panic. Results do not depend on the device: the GPU
//! returns the CPU's winners (see docs/cuda.md for what runs on the GPU).

pub use kcap_cuda::Device;
