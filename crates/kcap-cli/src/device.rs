//! Where a run computes: `cpu` (default) or `cuda[:N]`, from the experiment
//! file's `[brain] device` or the `--device` option of `kcap run` / `kcap
//! bench` (the option wins).
//!
//! The CUDA backend (crate `kcap-cuda`) loads the NVIDIA driver and NVRTC at
//! run time, so this binary runs everywhere; asking for `cuda` on a machine
//! without a driver or GPU is a clear error, never a panic. Results do not
//! depend on the device: the GPU returns the CPU's winners (see docs/cuda.md
//! for what runs on the GPU).

use anyhow::{anyhow, Result};
use kcap::backend::Backend;
use std::sync::Arc;

/// A compute device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA device ordinal.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        let bad = || {
            format!("unknown device {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\" (N = GPU number, from 0)")
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(Device::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Device {
    /// The backend of this device (`None`: the brain's default CPU backend).
    /// Opens the GPU and compiles its kernels now, so a missing driver,
    /// device or NVRTC is reported before the run starts.
    pub fn backend(self) -> Result<Option<Arc<dyn Backend>>> {
        match self {
            Device::Cpu => Ok(None),
            Device::Cuda(n) => {
                let c = kcap_cuda::Cuda::new(n).map_err(|e| anyhow!("device {self}: {e}"))?;
                Ok(Some(Arc::new(c)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA", "cuda:-1", ""] {
            let e = bad.parse::<Device>().unwrap_err();
            assert!(
                e.contains("unknown device") && e.contains("cuda:N"),
                "{bad}: {e}"
            );
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }
}
