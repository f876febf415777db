//! The Python module `kcap`: kcap's simulator behind the reference
//! assembly-calculus `brain.Brain` API, so an existing script runs after
//! replacing `import brain` with `import kcap as brain`.
//!
//! Design decision: **the bindings hold no simulation logic.** Every step,
//! operation and validation is the library's (`kcap` crate); this crate only
//! translates Python values into library calls ([`convert`]), library errors
//! into the exceptions the reference raises ([`errors`]), and library state
//! into the reference's attributes ([`brain`], [`area`]). Anything that would
//! change the dynamics belongs in the library, where the CLI and the Rust
//! API get it too.
//!
//! Layout: [`brain`] — the `Brain` class; [`area`] — live area views and the
//! `area_by_name` mapping; [`ops`] — operations as single Rust calls and
//! `run`; [`convert`] — argument conversion; [`errors`] — exceptions;
//! [`persist`] — checkpoints and pickling.

use pyo3::prelude::*;

pub mod area;
pub mod brain;
pub mod convert;
pub mod errors;
pub mod ops;
pub mod persist;

/// Loads a brain saved by ``Brain.save`` (or a CLI checkpoint) onto
/// ``device`` (the CPU unless given): the same as
/// ``kcap.Brain.load(path, device)``.
#[pyfunction]
#[pyo3(signature = (path, device="cpu"))]
fn load<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    device: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let bytes = persist::read(py, &path)?;
    brain::PyBrain::load_into(&py.get_type::<brain::PyBrain>(), &bytes, &path, device)
}

/// kcap — a fast simulator of the assembly calculus (NEMO).
///
/// ``import kcap as brain`` runs scripts written for the reference
/// ``brain.py``: ``brain.Brain(p)``, ``add_stimulus``, ``add_area``,
/// ``project``, ``area_by_name[...]`` with ``winners``, ``saved_w``,
/// ``saved_winners``, ``fix_assembly()``. kcap's own API adds the
/// operations as single calls (``project_rounds``, ``reciprocal_project``,
/// ``associate``, ``merge``, ``pattern_completion``), overlap measures,
/// NumPy results, ``run(experiment_file)``, checkpoints (``Brain.save``,
/// ``kcap.load``, pickling) and the device (``Brain(p, device="cuda")``,
/// ``brain.to("cuda:1")``).
#[pymodule]
#[pyo3(name = "kcap")]
fn kcap_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<brain::PyBrain>()?;
    m.add_class::<area::PyArea>()?;
    m.add_class::<area::AreaMap>()?;
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(ops::project_rounds, m)?)?;
    m.add_function(wrap_pyfunction!(ops::reciprocal_project, m)?)?;
    m.add_function(wrap_pyfunction!(ops::associate, m)?)?;
    m.add_function(wrap_pyfunction!(ops::merge, m)?)?;
    m.add_function(wrap_pyfunction!(ops::pattern_completion, m)?)?;
    m.add_function(wrap_pyfunction!(ops::overlap, m)?)?;
    m.add_function(wrap_pyfunction!(ops::best_match, m)?)?;
    m.add_function(wrap_pyfunction!(ops::run, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add("DEVICES", brain::DEVICES.to_vec())?;
    m.add(
        "ENGINES",
        brain::ENGINES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
    )?;
    m.add("AVAILABLE_ENGINES", brain::available_engines())?;
    Ok(())
}
