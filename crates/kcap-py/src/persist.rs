//! Checkpoints from Python: `Brain.save(path)`, `Brain.load(path)` /
//! `kcap.load(path)`, and pickling (`copy.deepcopy` included).
//!
//! Design decisions:
//! - **One format for files and pickles: the library's checkpoint**
//!   (`kcap::checkpoint`: versioned, checksummed, validated before decoding),
//!   so a CLI checkpoint (`--checkpoint-every`) loads in Python, and a
//!   corrupt pickle is caught by the same checks as a corrupt file.
//! - **The binding's own bookkeeping travels in the header's notes** (key
//!   `"python"`): `save_size`, the default `save_winners`, and the steps run
//!   while `save_size` was off (as inclusive runs `[first, last]`), which
//!   `saved_w` needs. A checkpoint without them (e.g. written by the CLI)
//!   loads with the constructor's defaults.
//! - **File errors keep their kind**: reading and writing report the
//!   operating system's error as the matching `OSError` subclass
//!   (`FileNotFoundError`, ...); what is wrong *inside* a file is a
//!   `kcap.CheckpointError`.

use crate::errors::{new_err, os_error, Kind, PyResultExt};
use kcap::{checkpoint, Brain};
use pyo3::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

/// A decoded checkpoint: the library brain and the binding's bookkeeping.
pub struct Restored {
    pub brain: Brain,
    pub save_size: bool,
    pub save_winners: bool,
    pub unsized_steps: Vec<u64>,
}

/// Checkpoint bytes of `brain` with the binding's bookkeeping as notes.
pub fn encode(
    py: Python<'_>,
    brain: &Brain,
    save_size: bool,
    save_winners: bool,
    unsized_steps: &[u64],
) -> PyResult<Vec<u8>> {
    let notes = json!({ "python": {
        "save_size": save_size,
        "save_winners": save_winners,
        "unsized_steps": runs(unsized_steps),
    }});
    py.detach(|| checkpoint::to_bytes_with_notes(brain, notes))
        .py_err()
}

/// Decodes checkpoint bytes; `origin` names the file (or pickle) in errors.
pub fn decode(py: Python<'_>, bytes: &[u8], origin: &Path) -> PyResult<Restored> {
    let (brain, header) = py
        .detach(|| checkpoint::from_bytes_with_header(bytes, origin))
        .py_err()?;
    let bad = |why: String| {
        new_err(
            Kind::Checkpoint,
            format!("checkpoint {}: {why}", origin.display()),
        )
    };
    let mut r = Restored {
        brain,
        save_size: true,
        save_winners: false,
        unsized_steps: Vec::new(),
    };
    let Some(notes) = header.get("notes").and_then(|n| n.get("python")) else {
        return Ok(r);
    };
    let flag = |key: &str| match notes.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        other => Err(bad(format!(
            "malformed notes: \"python\".{key:?} must be true or false, found {}",
            other.map_or("nothing".into(), Value::to_string)
        ))),
    };
    r.save_size = flag("save_size")?;
    r.save_winners = flag("save_winners")?;
    r.unsized_steps = steps(notes.get("unsized_steps"), r.brain.steps()).map_err(bad)?;
    Ok(r)
}

/// Reads a whole file; errors are the operating system's (`OSError`).
pub fn read(py: Python<'_>, path: &Path) -> PyResult<Vec<u8>> {
    py.detach(|| std::fs::read(path))
        .map_err(|e| os_error(&e, path))
}

/// Writes a file atomically (temporary file, fsync, rename).
pub fn write(py: Python<'_>, path: &Path, bytes: &[u8]) -> PyResult<()> {
    py.detach(|| checkpoint::write_atomic_io(path, bytes))
        .map_err(|e| os_error(&e, path))
}

/// Sorted step numbers as inclusive runs `[first, last]`.
fn runs(steps: &[u64]) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for &s in steps {
        match out.last_mut() {
            Some(r) if r[1] + 1 == s => r[1] = s,
            _ => out.push([s, s]),
        }
    }
    out
}

/// Expands the runs of the notes, checking that they are increasing,
/// disjoint and within the `done` steps run so far (so a hostile header
/// cannot ask for an absurd allocation).
fn steps(v: Option<&Value>, done: u64) -> Result<Vec<u64>, String> {
    let malformed = || {
        "malformed notes: \"python\".\"unsized_steps\" must be increasing runs [first, last] of steps run so far"
            .to_string()
    };
    let Some(v) = v else { return Ok(Vec::new()) };
    let list = v.as_array().ok_or_else(malformed)?;
    let mut out = Vec::new();
    let mut next = 1u64; // steps are numbered from 1
    for r in list {
        let pair = r
            .as_array()
            .filter(|p| p.len() == 2)
            .ok_or_else(malformed)?;
        let (Some(a), Some(b)) = (pair[0].as_u64(), pair[1].as_u64()) else {
            return Err(malformed());
        };
        if a < next || b < a || b > done {
            return Err(malformed());
        }
        out.extend(a..=b);
        next = b + 1;
    }
    Ok(out)
}
