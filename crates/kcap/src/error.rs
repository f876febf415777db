//! Typed errors of the library. Every message names the culprit (area,
//! stimulus, parameter and value) so a user can act on it without a debugger.

use thiserror::Error;

/// Everything that can go wrong in the library. The CLI adds file and line.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KcapError {
    #[error("unknown area {0:?}")]
    UnknownArea(String),
    #[error("unknown stimulus {0:?}")]
    UnknownStimulus(String),
    #[error("unknown area or stimulus {0:?}")]
    UnknownName(String),
    #[error("name {0:?} is already used by another area or stimulus")]
    DuplicateName(String),
    #[error("area {area:?}: k = {k} must be at least 1 and smaller than n = {n}")]
    BadK { area: String, n: u64, k: u64 },
    #[error("invalid parameter {what} = {value}: {why}")]
    InvalidParameter {
        what: String,
        value: String,
        why: String,
    },
    #[error("cannot project from area {0:?}: it has no winners (project a stimulus into it first, or activate an assembly)")]
    NoWinners(String),
    #[error("area {area:?} is too small to sample {k} new winners: n = {n}, {w} neurons have already fired, and the lazy engine needs n - w > k")]
    AreaTooSmall {
        area: String,
        n: u64,
        w: u64,
        k: u64,
    },
    #[error("invalid winners for area {area:?}: {why}")]
    BadWinners { area: String, why: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("checkpoint {path}: {why}")]
    Checkpoint { path: String, why: String },
    #[error("{path}: {why}")]
    Io { path: String, why: String },
    #[error("not enough memory for {what}: needs about {} but only {} are available", human(*need), human(*avail))]
    OutOfMemory { what: String, need: u64, avail: u64 },
}

/// Result alias of the library.
pub type Result<T, E = KcapError> = std::result::Result<T, E>;

pub(crate) fn invalid(
    what: impl Into<String>,
    value: impl ToString,
    why: impl Into<String>,
) -> KcapError {
    KcapError::InvalidParameter {
        what: what.into(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// Bytes in a readable unit (e.g. "1.23 GB").
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}
