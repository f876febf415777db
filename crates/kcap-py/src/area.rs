//! Live views of areas: `brain.area_by_name` (a read-only mapping) and the
//! `Area` objects it hands out.
//!
//! Design decision: **a view holds the brain and the area's name, never a
//! copy of its state.** Every attribute read goes to the library brain, and
//! every write (`winners = ...`, `fix_assembly()`, `beta = ...`) goes through
//! the library's validated setters, so the simulation and what the script
//! sees cannot drift apart. Views are created on each lookup and hold a
//! strong reference to the brain, but the brain holds none to them: no
//! reference cycle, so a brain's memory is freed as soon as the script drops
//! it (important in parameter sweeps that build thousands of brains).

use crate::brain::{winners_array, PyBrain};
use crate::convert;
use crate::errors::{new_err, unknown, Kind, PyResultExt};
use kcap::{EngineKind, Source};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Read-only mapping ``{area name: Area}`` of a brain; lookups of unknown
/// names raise :class:`kcap.UnknownNameError` (a ``KeyError``).
#[pyclass(name = "AreaMap", module = "kcap", mapping, frozen)]
pub struct AreaMap {
    brain: Py<PyBrain>,
}

impl AreaMap {
    pub fn new(brain: Py<PyBrain>) -> Self {
        AreaMap { brain }
    }

    fn names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(self.brain.bind(py).borrow().inner()?.area_names())
    }
}

#[pymethods]
impl AreaMap {
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<PyArea> {
        PyArea::new(self.brain.bind(py), name)
    }

    fn __contains__(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(name) = name.extract::<&str>() else {
            return Ok(false);
        };
        Ok(self
            .brain
            .bind(py)
            .borrow()
            .inner()?
            .model()
            .area_id(name)
            .is_ok())
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.brain.bind(py).borrow().inner()?.model().areas.len())
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyList::new(py, self.names(py)?)?
            .into_any()
            .try_iter()?
            .into_any())
    }

    /// Area names, in the order the areas were added.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.names(py)
    }

    fn values(&self, py: Python<'_>) -> PyResult<Vec<PyArea>> {
        let b = self.brain.bind(py);
        self.names(py)?.iter().map(|n| PyArea::new(b, n)).collect()
    }

    fn items(&self, py: Python<'_>) -> PyResult<Vec<(String, PyArea)>> {
        let b = self.brain.bind(py);
        self.names(py)?
            .into_iter()
            .map(|n| PyArea::new(b, &n).map(|a| (n, a)))
            .collect()
    }

    #[pyo3(signature = (name, default=None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match PyArea::new(self.brain.bind(py), name) {
            Ok(a) => Ok(Py::new(py, a)?.into_any()),
            Err(_) => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("<kcap.AreaMap {:?}>", self.names(py)?))
    }
}

/// Live view of one area of a brain, with the reference ``Area``'s
/// attributes. Reading an attribute reads the simulation; assigning
/// ``winners``, ``fixed_assembly`` or ``beta`` changes it.
#[pyclass(name = "Area", module = "kcap", frozen)]
pub struct PyArea {
    brain: Py<PyBrain>,
    name: String,
    index: usize,
}

impl PyArea {
    pub fn new(brain: &Bound<'_, PyBrain>, name: &str) -> PyResult<Self> {
        let index = brain
            .borrow()
            .inner()?
            .model()
            .area_id(name)
            .map_err(|_| unknown("area", name))?;
        Ok(PyArea {
            brain: brain.clone().unbind(),
            name: name.into(),
            index,
        })
    }

    /// Reads the library brain and this area's state.
    fn with<R>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&kcap::Brain, &kcap::AreaState) -> R,
    ) -> PyResult<R> {
        let b = self.brain.bind(py).borrow();
        let inner = b.inner()?;
        let st = inner.area(&self.name).map_err(|_| stale(&self.name))?;
        Ok(f(inner, st))
    }

    fn spec<R>(&self, py: Python<'_>, f: impl FnOnce(&kcap::model::AreaSpec) -> R) -> PyResult<R> {
        let b = self.brain.bind(py).borrow();
        let spec = b
            .inner()?
            .area_spec(&self.name)
            .map_err(|_| stale(&self.name))?;
        Ok(f(spec))
    }

    /// `{source name: beta}` over one kind of source.
    fn betas<'py>(&self, py: Python<'py>, stimuli: bool) -> PyResult<Bound<'py, PyDict>> {
        let mut b = self.brain.bind(py).borrow_mut();
        let (names, n) = {
            let m = b.inner()?.model();
            if stimuli {
                (
                    m.stimuli.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                    m.stimuli.len(),
                )
            } else {
                (
                    m.areas.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                    m.areas.len(),
                )
            }
        };
        let d = PyDict::new(py);
        for (i, name) in names.iter().enumerate().take(n) {
            let src = if stimuli {
                Source::Stim(i)
            } else {
                Source::Area(i)
            };
            d.set_item(name, b.raw_beta(src, self.index)?)?;
        }
        Ok(d)
    }
}

fn stale(name: &str) -> PyErr {
    new_err(
        Kind::UnknownName,
        format!("area {name:?} no longer exists in this brain (it was re-initialised)"),
    )
}

#[pymethods]
impl PyArea {
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Number of neurons.
    #[getter]
    fn n(&self, py: Python<'_>) -> PyResult<u64> {
        self.spec(py, |s| s.n)
    }

    /// Winners per step (the cap).
    #[getter]
    fn k(&self, py: Python<'_>) -> PyResult<usize> {
        self.spec(py, |s| s.k)
    }

    /// Default plasticity of synapses into this area. As in the reference,
    /// assigning it changes the default for stimuli and areas added later;
    /// fibers that exist keep their beta (use ``update_plasticity`` or
    /// ``Brain.set_area_beta`` for those).
    #[getter]
    fn get_beta(&self, py: Python<'_>) -> PyResult<f64> {
        self.spec(py, |s| s.beta)
    }

    #[setter]
    fn set_beta(&self, py: Python<'_>, beta: f64) -> PyResult<()> {
        let mut b = self.brain.bind(py).borrow_mut();
        let (n_stim, n_area) = {
            let m = b.inner()?.model();
            (m.stimuli.len(), m.areas.len())
        };
        let sources = (0..n_stim)
            .map(Source::Stim)
            .chain((0..n_area).map(Source::Area));
        let mut pinned = Vec::new();
        for src in sources {
            pinned.push((src, b.raw_beta(src, self.index)?));
        }
        if !(beta >= 0.0 && beta.is_finite()) {
            return Err(crate::errors::invalid(format!(
                "beta of area {:?} must be finite and >= 0, got {beta}",
                self.name
            )));
        }
        let inner = b.inner_mut()?;
        for (src, old) in pinned {
            let from = inner.model().source_name(src).to_owned();
            inner.set_beta(&from, &self.name, old).py_err()?;
        }
        inner.set_area_beta(&self.name, beta).py_err()
    }

    /// Support: how many neurons of the area have ever fired.
    #[getter]
    fn w(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |_, st| st.support)
    }

    /// Current winners as a list of neuron ids. Assign any iterable of ids
    /// (list, set, NumPy array) of neurons that have fired before — e.g. a
    /// random half of the assembly — to fire exactly those next (in an
    /// explicit or procedural area, any ids below n).
    #[getter]
    fn get_winners(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.with(py, |_, st| st.winner_ids())
    }

    #[setter]
    fn set_winners(&self, py: Python<'_>, winners: &Bound<'_, PyAny>) -> PyResult<()> {
        let ids = convert::neuron_ids(winners, "winners")?;
        self.brain
            .bind(py)
            .borrow_mut()
            .inner_mut()?
            .set_winners_u64(&self.name, ids)
            .py_err()
    }

    /// Current winners as a NumPy array (kcap extension): ``uint32``, or
    /// ``uint64`` for a procedural area.
    fn winners_array<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.brain.bind(py).borrow();
        winners_array(py, b.inner()?, &self.name)
    }

    /// Support after each step in which this area was a target (while the
    /// brain's ``save_size`` was on).
    #[getter]
    fn saved_w(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        let b = self.brain.bind(py).borrow();
        let st = b.inner()?.area(&self.name).map_err(|_| stale(&self.name))?;
        Ok(st
            .history
            .iter()
            .filter(|s| b.size_saved(s.step))
            .map(|s| s.support)
            .collect())
    }

    /// Winners after each step in which this area was a target (while the
    /// brain's ``save_winners`` was on), as lists.
    #[getter]
    fn saved_winners(&self, py: Python<'_>) -> PyResult<Vec<Vec<u64>>> {
        self.with(py, |_, st| {
            st.history.iter().filter_map(|s| s.winner_ids()).collect()
        })
    }

    /// Neurons that fired for the first time in the last step into this
    /// area (``-1`` before the first one).
    #[getter]
    fn num_first_winners(&self, py: Python<'_>) -> PyResult<i64> {
        self.with(py, |_, st| {
            st.history.last().map_or(-1, |s| s.first_winners as i64)
        })
    }

    /// Whether the area keeps its winners when projected into.
    #[getter]
    fn get_fixed_assembly(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |_, st| st.fixed)
    }

    #[setter]
    fn set_fixed_assembly(&self, py: Python<'_>, fixed: bool) -> PyResult<()> {
        let mut b = self.brain.bind(py).borrow_mut();
        let inner = b.inner_mut()?;
        if fixed {
            inner.fix(&self.name)
        } else {
            inner.unfix(&self.name)
        }
        .py_err()
    }

    /// Freezes the current assembly: the area keeps its winners when
    /// projected into (plasticity still applies). An error if it has none.
    fn fix_assembly(&self, py: Python<'_>) -> PyResult<()> {
        let mut b = self.brain.bind(py).borrow_mut();
        let inner = b.inner_mut()?;
        if inner.area(&self.name).py_err()?.winner_count() == 0 {
            return Err(new_err(
                Kind::NoAssembly,
                format!(
                    "area {:?} has no assembly to fix: project into it first or use activate()",
                    self.name
                ),
            ));
        }
        inner.fix(&self.name).py_err()
    }

    fn unfix_assembly(&self, py: Python<'_>) -> PyResult<()> {
        self.brain
            .bind(py)
            .borrow_mut()
            .inner_mut()?
            .unfix(&self.name)
            .py_err()
    }

    /// ``True`` for an area of the explicit engine (stored connectivity).
    #[getter]
    fn explicit(&self, py: Python<'_>) -> PyResult<bool> {
        self.spec(py, |s| s.engine == EngineKind::Explicit)
    }

    /// The engine of the area: ``"lazy"``, ``"explicit"`` or ``"procedural"``.
    #[getter]
    fn engine(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.spec(py, |s| crate::brain::engine_name(s.engine))
    }

    /// ``{stimulus name: beta}`` of the fibers into this area (a snapshot).
    #[getter]
    fn beta_by_stimulus<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.betas(py, true)
    }

    /// ``{area name: beta}`` of the fibers into this area (a snapshot).
    #[getter]
    fn beta_by_area<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.betas(py, false)
    }

    /// Older name of :attr:`beta_by_stimulus`.
    #[getter]
    fn stimulus_beta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.betas(py, true)
    }

    /// Older name of :attr:`beta_by_area`.
    #[getter]
    fn area_beta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.betas(py, false)
    }

    /// Plasticity of the synapses from area ``name`` into this area.
    fn update_area_beta(&self, py: Python<'_>, name: &str, new_beta: f64) -> PyResult<()> {
        let mut b = self.brain.bind(py).borrow_mut();
        let inner = b.inner_mut()?;
        inner
            .model()
            .area_id(name)
            .map_err(|_| unknown("area", name))?;
        inner.set_beta(name, &self.name, new_beta).py_err()
    }

    /// Plasticity of the synapses from stimulus ``name`` into this area.
    fn update_beta_by_stimulus(&self, py: Python<'_>, name: &str, new_beta: f64) -> PyResult<()> {
        let mut b = self.brain.bind(py).borrow_mut();
        let inner = b.inner_mut()?;
        inner
            .model()
            .stim_id(name)
            .map_err(|_| unknown("stimulus", name))?;
        inner.set_beta(name, &self.name, new_beta).py_err()
    }

    /// Same as :attr:`w`.
    fn get_num_ever_fired(&self, py: Python<'_>) -> PyResult<u64> {
        self.w(py)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PyArea>() {
            Ok(o) => {
                let o = o.get();
                o.brain.is(&self.brain) && o.index == self.index
            }
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> u64 {
        (self.brain.as_ptr() as u64)
            .wrapping_mul(31)
            .wrapping_add(self.index as u64)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = self.name.clone();
        self.with(py, |b, st| {
            let spec = b.area_spec(&name).expect("area exists");
            format!(
                "<kcap.Area {name:?} n={} k={} beta={} w={} winners={}{}>",
                spec.n,
                spec.k,
                spec.beta,
                st.support,
                st.winner_count(),
                if st.fixed { " fixed" } else { "" }
            )
        })
    }
}
