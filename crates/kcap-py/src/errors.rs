//! Exceptions of the `kcap` module and the mapping from the library's typed
//! errors to them.
//!
//! Design decision: every kcap exception **is also the builtin exception the
//! reference `brain.py` raises for the same mistake** (multiple inheritance),
//! so `except IndexError:` in an existing script keeps working while new code
//! can catch the precise `kcap.UnknownNameError` or the common base
//! `kcap.KcapError`. Unknown names are both `KeyError` (what a lookup in the
//! reference's `area_by_name` dict raises) and `IndexError` (what its
//! `project` raises). The classes are declared in a few lines of Python
//! (multiple inheritance from builtins is not expressible with PyO3's
//! `create_exception!`), compiled once at module initialisation.

use kcap::KcapError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyType};

/// Python source of the exception hierarchy (declarations only, no logic).
const ERRORS_PY: &std::ffi::CStr = c"
class KcapError(Exception):
    '''Base class of every error raised by kcap.'''
    __module__ = 'kcap'
    __str__ = BaseException.__str__

class UnknownNameError(KcapError, KeyError, IndexError):
    '''An area or stimulus name that the brain does not know.

    Also a KeyError (dict-style lookups such as ``brain.area_by_name[name]``)
    and an IndexError (what the reference ``Brain.project`` raises).'''
    __module__ = 'kcap'

class NoAssemblyError(KcapError, ValueError):
    '''Projecting from (or fixing) an area that has no winners yet.'''
    __module__ = 'kcap'

class AreaTooSmallError(KcapError, RuntimeError):
    '''A lazy area has too few never-fired neurons left to sample k new winners.'''
    __module__ = 'kcap'

class InvalidParameterError(KcapError, ValueError):
    '''A parameter outside its range: p, beta, k, n, a winner list, an engine
    or device name, a duplicate name.'''
    __module__ = 'kcap'

class CheckpointError(KcapError, ValueError):
    '''A checkpoint (file or pickle) that cannot be loaded: not a kcap
    checkpoint, truncated, corrupt (checksum mismatch), or written by a newer
    kcap.'''
    __module__ = 'kcap'

class NotAvailableError(KcapError, NotImplementedError):
    '''A feature that exists in the API but not (yet) in this build or
    combination: another engine, a storage format, a procedural area firing
    into a lazy one.'''
    __module__ = 'kcap'

class DeviceError(KcapError, RuntimeError):
    '''A device that cannot be opened: ``device='cuda'`` on a machine without
    an NVIDIA driver or GPU, a GPU number that does not exist, NVRTC missing.
    The message is the CLI's (``device cuda:0: no CUDA driver/device found:
    ...``).'''
    __module__ = 'kcap'
";

/// The exception classes, created once per process.
pub struct Errors {
    pub base: Py<PyType>,
    pub unknown_name: Py<PyType>,
    pub no_assembly: Py<PyType>,
    pub area_too_small: Py<PyType>,
    pub invalid: Py<PyType>,
    pub checkpoint: Py<PyType>,
    pub not_available: Py<PyType>,
    pub device: Py<PyType>,
}

static ERRORS: PyOnceLock<Errors> = PyOnceLock::new();

fn create(py: Python<'_>) -> PyResult<Errors> {
    let m = PyModule::from_code(py, ERRORS_PY, c"kcap/errors.py", c"kcap._errors")?;
    let get = |name: &str| -> PyResult<Py<PyType>> {
        Ok(m.getattr(name)?.cast_into::<PyType>()?.unbind())
    };
    Ok(Errors {
        base: get("KcapError")?,
        unknown_name: get("UnknownNameError")?,
        no_assembly: get("NoAssemblyError")?,
        area_too_small: get("AreaTooSmallError")?,
        invalid: get("InvalidParameterError")?,
        checkpoint: get("CheckpointError")?,
        not_available: get("NotAvailableError")?,
        device: get("DeviceError")?,
    })
}

/// The exception classes (created on first use).
pub fn errors(py: Python<'_>) -> PyResult<&'static Errors> {
    ERRORS.get_or_try_init(py, || create(py))
}

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let e = errors(py)?;
    for (name, ty) in [
        ("KcapError", &e.base),
        ("UnknownNameError", &e.unknown_name),
        ("NoAssemblyError", &e.no_assembly),
        ("AreaTooSmallError", &e.area_too_small),
        ("InvalidParameterError", &e.invalid),
        ("CheckpointError", &e.checkpoint),
        ("NotAvailableError", &e.not_available),
        ("DeviceError", &e.device),
    ] {
        m.add(name, ty.clone_ref(py))?;
    }
    Ok(())
}

/// Which kcap exception a library error becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    UnknownName,
    NoAssembly,
    AreaTooSmall,
    Invalid,
    Checkpoint,
    NotAvailable,
    Device,
}

/// Builds a kcap exception of `kind` with `msg`.
pub fn new_err(kind: Kind, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match errors(py) {
        Ok(e) => {
            let ty = match kind {
                Kind::UnknownName => &e.unknown_name,
                Kind::NoAssembly => &e.no_assembly,
                Kind::AreaTooSmall => &e.area_too_small,
                Kind::Invalid => &e.invalid,
                Kind::Checkpoint => &e.checkpoint,
                Kind::NotAvailable => &e.not_available,
                Kind::Device => &e.device,
            };
            PyErr::from_type(ty.bind(py).clone(), msg)
        }
        // Only if the interpreter cannot compile eight class statements.
        Err(err) => err,
    })
}

/// The exception kind of a library error.
pub fn kind_of(e: &KcapError) -> Kind {
    match e {
        KcapError::UnknownArea(_) | KcapError::UnknownStimulus(_) | KcapError::UnknownName(_) => {
            Kind::UnknownName
        }
        KcapError::NoWinners(_) => Kind::NoAssembly,
        KcapError::AreaTooSmall { .. } => Kind::AreaTooSmall,
        KcapError::Unsupported(_) => Kind::NotAvailable,
        KcapError::Checkpoint { .. } => Kind::Checkpoint,
        _ => Kind::Invalid,
    }
}

/// Converts a library error into the matching Python exception (file
/// errors become `OSError`).
pub fn to_py(e: KcapError) -> PyErr {
    if let KcapError::Io { .. } = e {
        return pyo3::exceptions::PyOSError::new_err(e.to_string());
    }
    new_err(kind_of(&e), e.to_string())
}

/// An operating-system error on `path` as the matching `OSError` subclass
/// (`FileNotFoundError`, `PermissionError`, `IsADirectoryError`, ...), with
/// `errno`, `strerror` and `filename` set as Python's own file functions do.
pub fn os_error(e: &std::io::Error, path: &std::path::Path) -> PyErr {
    let text = e.to_string();
    let strerror = match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let errno = e.raw_os_error().unwrap_or(0);
    // OSError(errno, strerror, filename) picks the subclass from errno.
    pyo3::exceptions::PyOSError::new_err((errno, strerror, path.display().to_string()))
}

/// `Result` adapter: `brain.project(..).py_err()?` converts library errors.
pub trait PyResultExt<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> PyResultExt<T> for Result<T, KcapError> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Shorthands for the errors the bindings raise themselves.
pub fn unknown(what: &str, name: &str) -> PyErr {
    new_err(Kind::UnknownName, format!("unknown {what} {name:?}"))
}

pub fn invalid(msg: impl Into<String>) -> PyErr {
    new_err(Kind::Invalid, msg)
}

pub fn not_available(msg: impl Into<String>) -> PyErr {
    new_err(Kind::NotAvailable, msg)
}

/// A device that could not be opened, as a `DeviceError` with the CLI's message.
pub fn device_error(e: kcap_cuda::OpenError) -> PyErr {
    new_err(Kind::Device, e.to_string())
}

/// Checks `value` against a keyword's accepted values: unknown values are an
/// `InvalidParameterError` (a `ValueError`) listing them all.
pub fn check_choice(keyword: &str, value: &str, accepted: &[&str]) -> PyResult<()> {
    if accepted.contains(&value) {
        return Ok(());
    }
    let list = accepted
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(invalid(format!(
        "unknown {keyword} {value:?}: accepted values are {list}"
    )))
}
