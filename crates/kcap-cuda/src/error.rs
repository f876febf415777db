//! Typed errors of the CUDA backend. Each message says what failed and what
//! to do about it; [`Error`](enum@Error) converts into [`kcap::KcapError`] for callers
//! that speak the library's error type.

use thiserror::Error;

/// Everything that can go wrong on the CUDA backend.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// The NVIDIA driver library (libcuda.so) could not be loaded.
    #[error("no CUDA driver/device found: {0} (install an NVIDIA driver, or use the CPU backend)")]
    NoDriver(String),
    /// The driver is there but the requested device is not.
    #[error("no CUDA driver/device found: CUDA device {ordinal} is not available: {why}")]
    NoDevice { ordinal: usize, why: String },
    /// NVRTC (libnvrtc.so.13) could not be loaded, so kernels cannot be compiled.
    #[error("NVRTC not found: libnvrtc.so.13 could not be loaded (run scripts/nvrtc-setup.sh and put the folder it prints on LD_LIBRARY_PATH)")]
    NoNvrtc,
    /// A kernel failed to compile; `log` is NVRTC's log.
    #[error(
        "kernel module {module} failed to compile for {arch} (include dirs: {includes}): {log}"
    )]
    Compile {
        module: String,
        arch: String,
        includes: String,
        log: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error in {what}: {err}")]
    Driver { what: String, err: String },
    /// A launcher refused its arguments before launching anything.
    #[error("invalid argument to {op}: {why}")]
    Invalid { op: &'static str, why: String },
    /// A kernel's self-check failed (a bug: please report it with the input).
    #[error("internal error in {op}: {why}")]
    Internal { op: &'static str, why: String },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn driver(what: impl Into<String>, err: cudarc::driver::DriverError) -> Error {
        Error::Driver {
            what: what.into(),
            err: format!("{err:?}"),
        }
    }

    pub(crate) fn invalid(op: &'static str, why: impl Into<String>) -> Error {
        Error::Invalid {
            op,
            why: why.into(),
        }
    }
}

impl From<Error> for kcap::KcapError {
    fn from(e: Error) -> Self {
        kcap::KcapError::Unsupported(e.to_string())
    }
}

/// Attaches a description to a driver result: `ctx.synchronize().what("synchronize")?`.
pub(crate) trait DriverResultExt<T> {
    fn what(self, what: &str) -> Result<T>;
}

impl<T> DriverResultExt<T> for std::result::Result<T, cudarc::driver::DriverError> {
    fn what(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::driver(what, e))
    }
}
