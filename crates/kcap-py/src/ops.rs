//! kcap's operations as module functions (`kcap.project_rounds`,
//! `kcap.merge`, ...), the overlap measures, and `kcap.run`.
//!
//! Design decision: **one Python call, one Rust call.** Each operation runs
//! its whole schedule inside the library with the GIL released, so a
//! 25-step projection costs one argument conversion instead of 25 — the
//! fast path next to the step-by-step drop-in API. Results come back as
//! NumPy arrays built from the library's vectors. `run` does not duplicate
//! the experiment-file parser: it runs the `kcap` command-line tool (found
//! through `KCAP_BIN` or `PATH`) and returns the `results.json` it wrote.

use crate::brain::{winners_array, PyBrain};
use crate::convert::neuron_ids;
use crate::errors::{invalid, not_available};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::path::{Path, PathBuf};

fn check_rounds(rounds: usize) -> PyResult<()> {
    if rounds == 0 {
        return Err(invalid("rounds must be at least 1"));
    }
    Ok(())
}

/// Projects a stimulus into an area with recurrence: one step
/// ``stim → area``, then ``rounds - 1`` steps ``stim → area, area → area``.
/// Returns the final winners (as :meth:`Brain.winners`).
#[pyfunction]
#[pyo3(signature = (brain, stim, area, rounds=25))]
pub fn project_rounds<'py>(
    py: Python<'py>,
    brain: &Bound<'py, PyBrain>,
    stim: &str,
    area: &str,
    rounds: usize,
) -> PyResult<Bound<'py, PyAny>> {
    check_rounds(rounds)?;
    brain
        .borrow_mut()
        .run_steps(py, |b| kcap::ops::run_project_rounds(b, stim, area, rounds))?;
    winners_array(py, brain.borrow().inner()?, area)
}

/// Reciprocal projection: area ``a`` holds an assembly; for ``rounds``
/// steps ``stim → a``, ``a → {a, b}``, ``b → {a, b}`` (the first step
/// without ``b → …``). Returns the winners of ``b``.
#[pyfunction]
#[pyo3(signature = (brain, stim, a, b, rounds=25))]
pub fn reciprocal_project<'py>(
    py: Python<'py>,
    brain: &Bound<'py, PyBrain>,
    stim: &str,
    a: &str,
    b: &str,
    rounds: usize,
) -> PyResult<Bound<'py, PyAny>> {
    check_rounds(rounds)?;
    brain.borrow_mut().run_steps(py, |br| {
        kcap::ops::run_reciprocal_project(br, stim, a, b, rounds)
    })?;
    winners_array(py, brain.borrow().inner()?, b)
}

/// Association: for ``rounds`` steps ``stim_a → a``, ``stim_b → b``,
/// ``a → {a, c}``, ``b → {b, c}``, ``c → c``. Pass ``(stim_a, a)`` and
/// ``(stim_b, b)`` as pairs.
#[pyfunction]
#[pyo3(signature = (brain, first, second, c, rounds=10))]
pub fn associate(
    py: Python<'_>,
    brain: &Bound<'_, PyBrain>,
    first: (String, String),
    second: (String, String),
    c: &str,
    rounds: usize,
) -> PyResult<()> {
    check_rounds(rounds)?;
    brain.borrow_mut().run_steps(py, |b| {
        kcap::ops::associate(b, (&first.0, &first.1), (&second.0, &second.1), c, rounds)
    })
}

/// Merge: ``stim_a → a``, ``stim_b → b`` for one step, then one step adding
/// ``a → {a, c}``, ``b → {b, c}``, then ``rounds`` steps adding
/// ``c → {c, a, b}``. Pass ``(stim_a, a)`` and ``(stim_b, b)`` as pairs.
/// Returns the winners of ``c``.
#[pyfunction]
#[pyo3(signature = (brain, first, second, c, rounds=49))]
pub fn merge<'py>(
    py: Python<'py>,
    brain: &Bound<'py, PyBrain>,
    first: (String, String),
    second: (String, String),
    c: &str,
    rounds: usize,
) -> PyResult<Bound<'py, PyAny>> {
    brain.borrow_mut().run_steps(py, |b| {
        kcap::ops::run_merge(b, (&first.0, &first.1), (&second.0, &second.1), c, rounds)
    })?;
    winners_array(py, brain.borrow().inner()?, c)
}

/// Pattern completion: keeps a random ``fraction`` of the area's current
/// assembly (drawn from the brain's seeded generator), fires it into the
/// area for ``rounds`` steps (``area → area``) and returns how many neurons
/// of the original assembly are among the final winners.
#[pyfunction]
#[pyo3(signature = (brain, area, fraction=0.5, rounds=5))]
pub fn pattern_completion(
    py: Python<'_>,
    brain: &Bound<'_, PyBrain>,
    area: &str,
    fraction: f64,
    rounds: usize,
) -> PyResult<usize> {
    brain.borrow_mut().run_steps(py, |b| {
        kcap::ops::pattern_completion(b, area, fraction, rounds)
    })
}

/// Number of neurons two winner sets share (any iterables of ids).
#[pyfunction]
pub fn overlap(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<usize> {
    Ok(kcap::ops::overlap(
        &neuron_ids(a, "a")?,
        &neuron_ids(b, "b")?,
    ))
}

/// Which of ``assemblies`` the winner set matches best: ``(index, overlap)``
/// of the largest overlap (ties: lowest index), ``None`` for no assemblies.
#[pyfunction]
pub fn best_match(
    winners: &Bound<'_, PyAny>,
    assemblies: &Bound<'_, PyAny>,
) -> PyResult<Option<(usize, usize)>> {
    let w = neuron_ids(winners, "winners")?;
    let mut list = Vec::new();
    for a in assemblies.try_iter()? {
        list.push(neuron_ids(&a?, "assemblies")?);
    }
    Ok(kcap::ops::best_match(&w, &list))
}

/// The `kcap` executable: `KCAP_BIN`, else `kcap` on `PATH`.
fn find_kcap(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("KCAP_BIN").map(PathBuf::from)) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kcap"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs an experiment file exactly as ``kcap run FILE`` does (same parser,
/// same checks, same outputs under ``out``, default ``out/<name>``) and
/// returns the parsed ``results.json``. Needs the ``kcap`` command-line tool:
/// ``kcap_bin``, else the ``KCAP_BIN`` environment variable, else ``kcap`` on
/// ``PATH``. An invalid experiment file is a ``ValueError``, a failure while
/// simulating a ``RuntimeError``, both with the tool's message.
#[pyfunction]
#[pyo3(signature = (experiment_file, out=None, threads=None, kcap_bin=None))]
pub fn run<'py>(
    py: Python<'py>,
    experiment_file: PathBuf,
    out: Option<PathBuf>,
    threads: Option<u16>,
    kcap_bin: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    let bin = find_kcap(kcap_bin).ok_or_else(|| {
        not_available(
            "kcap.run needs the kcap command-line tool: build it (cargo build --release -p kcap-cli) and put it on \
             PATH, or set KCAP_BIN to its path",
        )
    })?;
    let out_dir = match &out {
        Some(o) => o.clone(),
        None => {
            let stem = experiment_file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("experiment");
            PathBuf::from("out").join(stem)
        }
    };
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("run")
        .arg(&experiment_file)
        .arg("--out")
        .arg(&out_dir)
        .arg("--quiet");
    if let Some(t) = threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    let output = py
        .detach(|| cmd.output())
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start {}: {e}", bin.display())))?;
    if !output.status.success() {
        let msg = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let msg = format!(
            "kcap run {} failed ({}): {msg}",
            experiment_file.display(),
            output.status
        );
        // The tool exits with 2 for an invalid file or usage, 1 for a
        // failure during the simulation.
        return Err(if output.status.code() == Some(2) {
            invalid(msg)
        } else {
            PyRuntimeError::new_err(msg)
        });
    }
    let results = out_dir.join("results.json");
    let text = std::fs::read_to_string(&results).map_err(|e| {
        PyRuntimeError::new_err(format!(
            "kcap run succeeded but {} is unreadable: {e}",
            results.display()
        ))
    })?;
    py.import("json")?.call_method1("loads", (text,))
}
