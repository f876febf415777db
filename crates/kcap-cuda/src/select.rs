//! Device selection by name — `"cpu"`, `"cuda"` (GPU 0) or `"cuda:N"` —
//! shared by every front end (the CLI's `--device` and `[brain] device`,
//! Python's `Brain(device=...)`), so they accept the same names and report
//! the same errors.
//!
//! Opening a CUDA device ([`Device::backend`]) loads the driver, opens the
//! GPU and compiles the kernels with NVRTC at once, so a missing driver,
//! device or NVRTC is an [`OpenError`] before anything runs — never a panic.
//! Results do not depend on the device.

use crate::{Cuda, Error};
use kcap::backend::{cpu::Cpu, Backend};
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
    /// `"cpu"`, `"cuda"` (= `"cuda:0"`) or `"cuda:N"`; anything else is an
    /// error message listing the accepted forms.
    fn from_str(s: &str) -> Result<Device, String> {
        let bad = || {
            format!("unknown device {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\" (N = GPU number, from 0)")
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<usize>().ok())
                .map(Device::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl std::fmt::Display for Device {
    /// The canonical name, equal to the backend's name (`"cpu"`, `"cuda:N"`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A device that could not be opened: `"device cuda:0: no CUDA
/// driver/device found: ..."`.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenError {
    pub device: Device,
    pub error: Error,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device {}: {}", self.device, self.error)
    }
}

impl std::error::Error for OpenError {}

impl Device {
    /// The backend of this device, for [`kcap::Brain::set_backend`]. A CUDA
    /// device is opened and its kernels compiled now, so a missing driver,
    /// device or NVRTC is reported here.
    pub fn backend(self) -> Result<Arc<dyn Backend>, OpenError> {
        match self {
            Device::Cpu => Ok(Arc::new(Cpu)),
            Device::Cuda(n) => match Cuda::new(n) {
                Ok(c) => Ok(Arc::new(c)),
                Err(error) => Err(OpenError {
                    device: self,
                    error,
                }),
            },
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
        for bad in [
            "gpu", "cuda:", "cuda:x", "CUDA", "cuda:-1", "cuda:+1", " cpu", "",
        ] {
            let e = bad.parse::<Device>().unwrap_err();
            assert_eq!(
                e,
                format!("unknown device {bad:?}: expected \"cpu\", \"cuda\" or \"cuda:N\" (N = GPU number, from 0)")
            );
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        assert_eq!(Device::Cpu.to_string(), "cpu");
    }

    #[test]
    fn cpu_backend_and_open_errors() {
        assert_eq!(Device::Cpu.backend().unwrap().name(), "cpu");
        let e = OpenError {
            device: Device::Cuda(1),
            error: Error::NoDriver("libcuda.so: not found".into()),
        };
        assert_eq!(
            e.to_string(),
            "device cuda:1: no CUDA driver/device found: libcuda.so: not found \
             (install an NVIDIA driver, or use the CPU backend)"
        );
    }
}
