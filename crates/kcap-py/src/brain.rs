//! `kcap.Brain`: the reference `brain.Brain` API over [`kcap::Brain`], plus
//! kcap's own methods (NumPy results, per-fiber parameters, memory).
//!
//! Design decisions:
//! - **Construction happens in `__init__`, not `__new__`.** Existing tools
//!   subclass the reference `Brain` with their own constructor signature and
//!   call `Brain.__init__(self, p)`; `__new__` therefore accepts any arguments
//!   and leaves the object empty, and every method checks that `__init__`
//!   ran (a clear error instead of a crash if a subclass forgot it).
//! - **No copies on the hot path.** `project` converts the two dicts into a
//!   [`kcap::Projection`] (a few short strings), releases the GIL and steps;
//!   winners and history stay in Rust until asked for.
//! - **Reference bookkeeping is reproduced, not stored twice**: `saved_w`
//!   and `saved_winners` are read from the library's per-step history; the
//!   binding only remembers the steps during which `save_size` was off.

use crate::area::{AreaMap, PyArea};
use crate::convert;
use crate::errors::{check_choice, device_error, invalid, not_available, unknown, PyResultExt};
use crate::persist;
use kcap::backend::Backend;
use kcap::{Brain, BrainOptions, EngineKind, Source, TailSampler};
use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The device kinds of `device=` (`kcap.DEVICES`); `"cuda:N"` picks GPU N.
pub const DEVICES: &[&str] = &["cpu", "cuda"];

/// The backend of a device name (`"cpu"`, `"cuda"`, `"cuda:N"`; parsing and
/// opening are the CUDA crate's, shared with the CLI). An unknown name is an
/// `InvalidParameterError` (a `ValueError`); a CUDA device that cannot be
/// opened (no driver, no such GPU, no NVRTC) a `DeviceError`. The GIL is
/// released while the GPU opens and its kernels compile.
pub fn open_device(py: Python<'_>, device: &str) -> PyResult<Arc<dyn Backend>> {
    let d: kcap_cuda::Device = device.parse().map_err(invalid)?;
    py.detach(|| d.backend()).map_err(device_error)
}
/// The engines by their Python names (`engine=` values, `Area.engine`).
pub const ENGINES: [(&str, EngineKind); 3] = [
    ("lazy", EngineKind::Lazy),
    ("explicit", EngineKind::Explicit),
    ("procedural", EngineKind::Procedural),
];

/// The Python name of an engine.
pub fn engine_name(kind: EngineKind) -> &'static str {
    ENGINES
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or("unknown", |(name, _)| name)
}

/// Current winners of an area as a NumPy array: `uint64` for procedural
/// areas (ids up to 10¹²), `uint32` (no conversion) for the others.
pub fn winners_array<'py>(py: Python<'py>, b: &Brain, area: &str) -> PyResult<Bound<'py, PyAny>> {
    if b.area_spec(area).py_err()?.engine == EngineKind::Procedural {
        Ok(b.winners_u64(area).py_err()?.into_pyarray(py).into_any())
    } else {
        Ok(PyArray1::from_slice(py, b.winners(area).py_err()?).into_any())
    }
}

/// Engines this build of the library implements, found by asking it (so
/// the bindings follow the library as engines land, without a change here).
pub fn available_engines() -> Vec<&'static str> {
    ENGINES
        .into_iter()
        .filter(|(_, kind)| {
            let Ok(mut b) = Brain::new(0.5, 0) else {
                return false;
            };
            !matches!(
                b.add_area_with("probe", 64, 8, 0.0, *kind),
                Err(kcap::KcapError::Unsupported(_))
            )
        })
        .map(|(name, _)| name)
        .collect()
}

/// Accepted values of the storage-format keywords (SPEC §4; the first of
/// each is the reference's). `weights="auto"` lets the planner choose.
const WEIGHTS: &[&str] = &["f32", "f16", "bf16", "log-u8", "bit", "auto"];
const INDICES: &[&str] = &["u32", "u16"];
const LAYOUTS: &[&str] = &["csr", "bitmap"];
const ROUNDING: &[&str] = &["nearest", "stochastic"];
const ACCUMULATORS: &[&str] = &["f32", "fixed"];

/// The storage-format keywords of `add_area` and `set_fiber_format`, as
/// given (`None`: not given).
#[derive(Clone, Copy, Default)]
pub struct FormatArgs<'a> {
    pub weights: Option<&'a str>,
    pub indices: Option<&'a str>,
    pub layout: Option<&'a str>,
    pub rounding: Option<&'a str>,
    pub accumulator: Option<&'a str>,
}

/// One format keyword's value (`accepted[0]` if not given), checked.
fn part<'a>(keyword: &str, value: Option<&'a str>, accepted: &[&'a str]) -> PyResult<&'a str> {
    let v = value.unwrap_or(accepted[0]);
    check_choice(keyword, v, accepted)?;
    Ok(v)
}

impl<'a> FormatArgs<'a> {
    /// The keywords in their Python order.
    pub fn new(
        weights: Option<&'a str>,
        indices: Option<&'a str>,
        layout: Option<&'a str>,
        rounding: Option<&'a str>,
        accumulator: Option<&'a str>,
    ) -> Self {
        FormatArgs {
            weights,
            indices,
            layout,
            rounding,
            accumulator,
        }
    }

    fn given(&self) -> bool {
        self.weights.is_some()
            || self.indices.is_some()
            || self.layout.is_some()
            || self.rounding.is_some()
            || self.accumulator.is_some()
    }

    /// The format these keywords name: parts not given are the reference's;
    /// `weights="auto"` is the planner's choice and takes no other part.
    /// Unknown values and impossible combinations are `InvalidParameterError`s.
    fn choice(&self) -> PyResult<kcap::FormatChoice> {
        let weights = part("weights", self.weights, WEIGHTS)?;
        let f = kcap::FiberFormat {
            weights: if weights == "auto" {
                Default::default()
            } else {
                weights.parse().py_err()?
            },
            indices: part("indices", self.indices, INDICES)?.parse().py_err()?,
            layout: part("layout", self.layout, LAYOUTS)?.parse().py_err()?,
            rounding: part("rounding", self.rounding, ROUNDING)?
                .parse()
                .py_err()?,
            accumulator: part("accumulator", self.accumulator, ACCUMULATORS)?
                .parse()
                .py_err()?,
        };
        if weights == "auto" {
            let others = FormatArgs {
                weights: None,
                ..*self
            };
            if others.given() {
                return Err(invalid(
                    "weights=\"auto\" lets the planner choose every part of the format: \
                     do not combine it with indices=, layout=, rounding= or accumulator=",
                ));
            }
            return Ok(kcap::FormatChoice::Auto);
        }
        // Combination rules (the size rules are checked against the fiber).
        f.validate(1).map_err(|e| invalid(e.to_string()))?;
        Ok(kcap::FormatChoice::Fixed(f))
    }
}

/// A simulated brain: areas of n neurons of which k fire per step, stimuli,
/// random connectivity of probability p and Hebbian plasticity.
///
/// Drop-in for the reference ``brain.Brain``: ``Brain(p, save_size=True,
/// save_winners=False, seed=0)``. kcap's keywords: ``device="cpu"``
/// (``"cuda"`` or ``"cuda:N"``: GPU N; the same winners as on the CPU;
/// :class:`DeviceError` where it cannot be opened), ``w_max=None`` (weight
/// cap), ``tail="normal"`` (how the top-k inputs of never-fired neurons are
/// sampled: ``"normal"`` as the reference, or ``"exact"``). Subclass it freely; a subclass's ``__init__`` must call
/// ``Brain.__init__(self, p, ...)`` (or ``super().__init__(p, ...)``).
#[pyclass(subclass, dict, weakref, name = "Brain", module = "kcap")]
pub struct PyBrain {
    inner: Option<Brain>,
    p: f64,
    save_size: bool,
    save_winners: bool,
    /// Global step numbers run while `save_size` was off (sorted).
    unsized_steps: Vec<u64>,
}

impl PyBrain {
    /// The library brain; an error if `__init__` never ran.
    pub fn inner(&self) -> PyResult<&Brain> {
        self.inner.as_ref().ok_or_else(not_initialised)
    }

    pub fn inner_mut(&mut self) -> PyResult<&mut Brain> {
        self.inner.as_mut().ok_or_else(not_initialised)
    }

    /// Replaces everything by a decoded checkpoint (a decoded brain runs
    /// on the CPU).
    fn restore(&mut self, r: persist::Restored) {
        self.p = r.brain.model().p;
        self.inner = Some(r.brain);
        self.save_size = r.save_size;
        self.save_winners = r.save_winners;
        self.unsized_steps = r.unsized_steps;
    }

    /// This brain's checkpoint bytes (library state and the binding's bookkeeping).
    fn checkpoint_bytes(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        persist::encode(
            py,
            self.inner()?,
            self.save_size,
            self.save_winners,
            &self.unsized_steps,
        )
    }

    /// A new, uninitialised instance of `cls` (a subclass's `__init__` is
    /// not run, as when unpickling), restored from checkpoint bytes onto
    /// `device` (opened before anything is decoded).
    pub fn load_into<'py>(
        cls: &Bound<'py, PyType>,
        bytes: &[u8],
        origin: &Path,
        device: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let backend = open_device(cls.py(), device)?;
        let mut restored = persist::decode(cls.py(), bytes, origin)?;
        restored.brain.set_backend(backend).py_err()?;
        let obj = cls.call_method1("__new__", (cls,))?;
        obj.cast::<PyBrain>()?.borrow_mut().restore(restored);
        Ok(obj)
    }

    /// Whether the size after `step` belongs in the reference's `saved_w`.
    pub fn size_saved(&self, step: u64) -> bool {
        self.unsized_steps.binary_search(&step).is_err()
    }

    /// Beta of the fiber `src → target` regardless of the plasticity switch
    /// (the reference keeps the betas and zeroes them only while stepping).
    pub fn raw_beta(&mut self, src: Source, target: usize) -> PyResult<f64> {
        let b = self.inner_mut()?;
        let on = b.plasticity();
        b.set_plasticity(true);
        let beta = b.model().beta(src, target);
        b.set_plasticity(on);
        Ok(beta)
    }

    /// One step; the GIL is released while the library works.
    pub fn step(&mut self, py: Python<'_>, proj: &kcap::Projection) -> PyResult<()> {
        self.run_steps(py, |b| b.project(proj))
    }

    /// Runs `f` (any number of steps) with the GIL released, keeping the
    /// `save_size` bookkeeping of the steps it ran, even if it fails midway.
    pub fn run_steps<R: Send>(
        &mut self,
        py: Python<'_>,
        f: impl FnOnce(&mut Brain) -> kcap::Result<R> + Send,
    ) -> PyResult<R> {
        let b = self.inner.as_mut().ok_or_else(not_initialised)?;
        let before = b.steps();
        let out = py.detach(|| f(b));
        if !self.save_size {
            self.unsized_steps.extend(before + 1..=b.steps());
        }
        out.py_err()
    }
}

fn not_initialised() -> PyErr {
    PyRuntimeError::new_err(
        "this Brain was not initialised: a subclass's __init__ must call Brain.__init__(self, p, ...) (or super().__init__(p, ...))",
    )
}

/// A non-negative integer count that may arrive as an integral float
/// (reference scripts often write `n = 1e6`).
pub fn count(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    if let Ok(v) = obj.extract::<u64>() {
        return Ok(v);
    }
    if let Ok(f) = obj.extract::<f64>() {
        if f >= 0.0
            && f.fract() == 0.0
            && f < 2f64.powi(63)
            && !obj.is_instance_of::<pyo3::types::PyBool>()
        {
            return Ok(f as u64);
        }
    }
    Err(invalid(format!(
        "{what} must be a non-negative integer, got {}",
        obj.repr()?
    )))
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t as u64) ^ ((std::process::id() as u64) << 32)
}

#[pymethods]
impl PyBrain {
    /// Allocates an empty brain; `__init__` builds it. Any arguments are
    /// accepted so that subclasses may have their own signatures.
    #[new]
    #[pyo3(
        signature = (*_args, **_kwargs),
        text_signature = "(p, save_size=True, save_winners=False, seed=0, device='cpu', *, w_max=None, tail='normal')"
    )]
    fn __new__(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        PyBrain {
            inner: None,
            p: 0.0,
            save_size: true,
            save_winners: false,
            unsized_steps: Vec::new(),
        }
    }

    #[pyo3(signature = (p, save_size=true, save_winners=false, seed=Some(0), device="cpu", *, w_max=None, tail="normal"))]
    #[allow(clippy::too_many_arguments)]
    fn __init__(
        &mut self,
        py: Python<'_>,
        p: f64,
        save_size: bool,
        save_winners: bool,
        seed: Option<u64>,
        device: &str,
        w_max: Option<f64>,
        tail: &str,
    ) -> PyResult<()> {
        let device: kcap_cuda::Device = device.parse().map_err(invalid)?;
        let tail: TailSampler = tail.parse().map_err(|_| {
            invalid(format!(
                "unknown tail {tail:?}: accepted values are \"normal\", \"exact\""
            ))
        })?;
        let seed = seed.unwrap_or_else(random_seed);
        let opts = BrainOptions {
            seed,
            tail,
            save_winners,
            w_max,
            ..Default::default()
        };
        let mut brain = Brain::with_options(p, opts).py_err()?;
        // Last, once every argument is known to be valid: opening a GPU
        // compiles its kernels.
        brain
            .set_backend(open_device(py, &device.to_string())?)
            .py_err()?;
        self.inner = Some(brain);
        self.p = p;
        self.save_size = save_size;
        self.save_winners = save_winners;
        self.unsized_steps.clear();
        Ok(())
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            None => "<kcap.Brain (not initialised)>".into(),
            Some(b) => format!(
                "<kcap.Brain p={} areas={:?} stimuli={:?} steps={}>",
                self.p,
                b.area_names(),
                b.stimulus_names(),
                b.steps()
            ),
        }
    }

    // ----- the reference API -------------------------------------------

    /// Global connection probability.
    #[getter]
    fn p(&self) -> f64 {
        self.p
    }

    /// Record each target area's support after every step (``saved_w``).
    #[getter]
    fn get_save_size(&self) -> bool {
        self.save_size
    }

    #[setter]
    fn set_save_size(&mut self, on: bool) {
        self.save_size = on;
    }

    /// Record each target area's winners after every step (``saved_winners``).
    #[getter]
    fn get_save_winners(&self) -> bool {
        self.save_winners
    }

    #[setter]
    fn set_save_winners(&mut self, on: bool) -> PyResult<()> {
        let b = self.inner_mut()?;
        for name in b.area_names() {
            b.record_winners(&name, on).py_err()?;
        }
        self.save_winners = on;
        Ok(())
    }

    /// Brain-wide switch: ``True`` turns every Hebbian update off.
    #[getter]
    fn get_disable_plasticity(&self) -> PyResult<bool> {
        Ok(!self.inner()?.plasticity())
    }

    #[setter]
    fn set_disable_plasticity(&mut self, off: bool) -> PyResult<()> {
        self.inner_mut()?.set_plasticity(!off);
        Ok(())
    }

    /// Live mapping from area name to its :class:`Area` view.
    #[getter]
    fn area_by_name(slf: Bound<'_, Self>) -> PyResult<AreaMap> {
        slf.borrow().inner()?;
        Ok(AreaMap::new(slf.unbind()))
    }

    /// Older name of :attr:`area_by_name`.
    #[getter]
    fn areas(slf: Bound<'_, Self>) -> PyResult<AreaMap> {
        Self::area_by_name(slf)
    }

    /// ``{stimulus name: size}`` (a new dict on each access).
    #[getter]
    fn stimulus_size_by_name<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for s in &self.inner()?.model().stimuli {
            d.set_item(&s.name, s.size)?;
        }
        Ok(d)
    }

    /// Adds a stimulus: ``size`` neurons that all fire when it is projected.
    fn add_stimulus(&mut self, stimulus_name: &str, size: &Bound<'_, PyAny>) -> PyResult<()> {
        let size = count(size, "stimulus size")?;
        self.inner_mut()?
            .add_stimulus(stimulus_name, size)
            .py_err()?;
        Ok(())
    }

    /// Adds an area of ``n`` neurons, ``k`` winners per step and default
    /// plasticity ``beta`` for synapses into it. kcap keywords: ``engine``
    /// (``"lazy"``, ``"explicit"``, ``"procedural"``: synapses regenerated
    /// on demand, n up to 10¹², ``uint64`` winners) and, for explicit areas, the storage format of the fibers created with
    /// the area (``weights``, ``indices``, ``layout``, ``rounding``,
    /// ``accumulator``; see :meth:`set_fiber_format`).
    #[pyo3(signature = (area_name, n, k, beta, *, engine="lazy", weights=None, indices=None, layout=None, rounding=None, accumulator=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_area(
        &mut self,
        area_name: &str,
        n: &Bound<'_, PyAny>,
        k: usize,
        beta: f64,
        engine: &str,
        weights: Option<&str>,
        indices: Option<&str>,
        layout: Option<&str>,
        rounding: Option<&str>,
        accumulator: Option<&str>,
    ) -> PyResult<()> {
        let engine: EngineKind = engine.parse().py_err()?;
        let args = FormatArgs::new(weights, indices, layout, rounding, accumulator);
        let choice = args.choice()?;
        let n = count(n, "n")?;
        let save = self.save_winners;
        let given = args.given();
        if given && engine != EngineKind::Explicit {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "add_area({area_name:?}): storage formats (weights=, indices=, layout=, rounding=, accumulator=) \
                 apply to explicit areas (engine=\"explicit\"), not to {} areas",
                engine_name(engine)
            )));
        }
        let b = self.inner_mut()?;
        let previous = b.default_format();
        if given {
            b.set_default_format(choice);
        }
        let added = b.add_area_with(area_name, n, k, beta, engine);
        b.set_default_format(previous);
        added.py_err()?;
        b.record_winners(area_name, save).py_err()?;
        Ok(())
    }

    /// Storage format of the stored fiber ``source → area`` between two
    /// explicit areas (SPEC §4), e.g.
    /// ``set_fiber_format("A", "B", weights="log-u8", indices="u16")``.
    /// Parts not given are the reference's (``weights="f32"``,
    /// ``indices="u32"``, ``layout="csr"``, ``rounding="nearest"``,
    /// ``accumulator="f32"``); ``weights="auto"`` alone lets the planner
    /// choose. If both areas exist the fiber is rebuilt in the new format
    /// (the same synapses; before the first step only). See
    /// :meth:`memory_report`.
    #[pyo3(signature = (source, area, *, weights=None, indices=None, layout=None, rounding=None, accumulator=None))]
    #[allow(clippy::too_many_arguments)]
    fn set_fiber_format(
        &mut self,
        source: &str,
        area: &str,
        weights: Option<&str>,
        indices: Option<&str>,
        layout: Option<&str>,
        rounding: Option<&str>,
        accumulator: Option<&str>,
    ) -> PyResult<()> {
        let choice = FormatArgs::new(weights, indices, layout, rounding, accumulator).choice()?;
        let b = self.inner_mut()?;
        for (name, role) in [(source, "source"), (area, "target")] {
            let engine = match b.model().source(name) {
                Ok(Source::Area(i)) => b.model().areas[i].engine,
                Ok(Source::Stim(_)) => {
                    return Err(invalid(format!(
                        "set_fiber_format({source:?}, {area:?}): {name:?} is a stimulus; storage formats apply to \
                         fibers between two explicit areas"
                    )))
                }
                Err(_) => return Err(unknown(&format!("area ({role})"), name)),
            };
            if engine != EngineKind::Explicit {
                return Err(invalid(format!(
                    "set_fiber_format({source:?}, {area:?}): {name:?} is a {} area; storage formats apply to \
                     fibers between two explicit areas (add_area(..., engine=\"explicit\"))",
                    engine_name(engine)
                )));
            }
        }
        if let kcap::FormatChoice::Fixed(f) = choice {
            f.validate(b.area_spec(area).py_err()?.n).py_err()?;
        }
        b.set_fiber_format(source, area, choice)
            .map_err(|e| match e {
                kcap::KcapError::Unsupported(m) => PyRuntimeError::new_err(m),
                e => crate::errors::to_py(e),
            })
    }

    /// Per stored fiber: format, synapses, bytes held, predicted and
    /// reference bytes, and the planner's reasons (list of dicts).
    fn memory_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        let out = pyo3::types::PyList::empty(py);
        for f in self.inner()?.memory_report() {
            let d = PyDict::new(py);
            d.set_item("from", &f.from)?;
            d.set_item("to", &f.to)?;
            d.set_item("format", &f.format)?;
            d.set_item("synapses", f.synapses)?;
            d.set_item("bytes", f.bytes)?;
            d.set_item("predicted_bytes", f.predicted_bytes)?;
            d.set_item("reference_bytes", f.reference_bytes)?;
            d.set_item("reasons", f.reasons.clone())?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// An area whose connectivity is stored explicitly (the reference's
    /// non-lazy area), with optional connection probabilities inside it,
    /// out of it and into it. Needs the explicit engine.
    #[pyo3(signature = (area_name, n, k, beta, custom_inner_p=None, custom_out_p=None, custom_in_p=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_explicit_area(
        &mut self,
        area_name: &str,
        n: &Bound<'_, PyAny>,
        k: usize,
        beta: f64,
        custom_inner_p: Option<f64>,
        custom_out_p: Option<f64>,
        custom_in_p: Option<f64>,
    ) -> PyResult<()> {
        let n = count(n, "n")?;
        let save = self.save_winners;
        let b = self.inner_mut()?;
        if let Err(e) = b.add_area_with(area_name, n, k, beta, EngineKind::Explicit) {
            return Err(match e {
                kcap::KcapError::Unsupported(_) => not_available(format!(
                    "add_explicit_area({area_name:?}): explicit areas arrive with the explicit engine, which this build \
                     does not have yet; add_area({area_name:?}, n, k, beta) gives a lazy area with the same dynamics"
                )),
                e => crate::errors::to_py(e),
            });
        }
        b.record_winners(area_name, save).py_err()?;
        let others = b.area_names();
        if let Some(p) = custom_inner_p {
            b.set_fiber_p(area_name, area_name, p).py_err()?;
        }
        for other in others.iter().filter(|o| o.as_str() != area_name) {
            if let Some(p) = custom_out_p {
                b.set_fiber_p(area_name, other, p).py_err()?;
            }
            if let Some(p) = custom_in_p {
                b.set_fiber_p(other, area_name, p).py_err()?;
            }
        }
        Ok(())
    }

    /// Plasticity of the synapses from area ``from_area`` into ``to_area``.
    fn update_plasticity(&mut self, from_area: &str, to_area: &str, new_beta: f64) -> PyResult<()> {
        self.inner_mut()?
            .set_beta(from_area, to_area, new_beta)
            .py_err()
    }

    /// Several plasticities at once, in the reference's format:
    /// ``area_update_map = {to_area: [(from_area, beta), ...]}`` and
    /// ``stim_update_map = {to_area: [(stimulus, beta), ...]}``. Everything is
    /// validated before anything changes.
    #[pyo3(signature = (area_update_map=None, stim_update_map=None))]
    fn update_plasticities(
        &mut self,
        area_update_map: Option<&Bound<'_, PyAny>>,
        stim_update_map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let mut updates: Vec<(String, String, f64)> = Vec::new();
        let b = self.inner()?;
        for (map, from_kind) in [(area_update_map, "area"), (stim_update_map, "stimulus")] {
            let Some(map) = map else { continue };
            for (to_area, rules) in map_items(map)? {
                b.model()
                    .area_id(&to_area)
                    .map_err(|_| unknown("area", &to_area))?;
                for rule in rules.try_iter()? {
                    let (from, beta): (String, f64) = rule?.extract().map_err(|_| {
                        pyo3::exceptions::PyTypeError::new_err(
                            "update rules must be (name, new_beta) pairs",
                        )
                    })?;
                    let ok = match b.model().source(&from) {
                        Ok(Source::Area(_)) => from_kind == "area",
                        Ok(Source::Stim(_)) => from_kind == "stimulus",
                        Err(_) => false,
                    };
                    if !ok {
                        return Err(unknown(from_kind, &from));
                    }
                    updates.push((from, to_area.clone(), beta));
                }
            }
        }
        for (_, _, beta) in &updates {
            if !(*beta >= 0.0 && beta.is_finite()) {
                return Err(invalid(format!(
                    "plasticity beta must be finite and >= 0, got {beta}"
                )));
            }
        }
        let b = self.inner_mut()?;
        for (from, to, beta) in updates {
            b.set_beta(&from, &to, beta).py_err()?;
        }
        Ok(())
    }

    /// Fires assembly number ``index`` of an area: winners become neurons
    /// ``[index*k, (index+1)*k)`` and the area is fixed.
    fn activate(&mut self, area_name: &str, index: u64) -> PyResult<()> {
        self.inner_mut()?.activate(area_name, index).py_err()
    }

    /// One synchronous step: every stimulus in ``areas_by_stim`` fires into
    /// its listed areas and every area in ``dst_areas_by_src_area`` fires its
    /// current winners into its listed areas, e.g.
    /// ``project({"stim": ["A"]}, {"A": ["A", "B"]})``. Values may be lists,
    /// sets, tuples or any iterable of names. ``verbose`` is accepted for
    /// compatibility and ignored.
    #[pyo3(signature = (areas_by_stim, dst_areas_by_src_area, verbose=0))]
    fn project(
        &mut self,
        py: Python<'_>,
        areas_by_stim: &Bound<'_, PyAny>,
        dst_areas_by_src_area: &Bound<'_, PyAny>,
        verbose: i64,
    ) -> PyResult<()> {
        let _ = verbose;
        let proj = convert::projection(self.inner()?, areas_by_stim, dst_areas_by_src_area)?;
        self.step(py, &proj)
    }

    // ----- kcap's own API ----------------------------------------------

    /// Current winners of an area as a NumPy array of sorted ids:
    /// ``uint32``, or ``uint64`` for a procedural area (n up to 10¹²).
    fn winners<'py>(&self, py: Python<'py>, area: &str) -> PyResult<Bound<'py, PyAny>> {
        winners_array(py, self.inner()?, area)
    }

    /// Replaces the winners of an area (any iterable of ints or a NumPy
    /// array), at most k of them: in a lazy area neurons that have fired
    /// before, in an explicit or procedural area any ids below n.
    fn set_winners(&mut self, area: &str, winners: &Bound<'_, PyAny>) -> PyResult<()> {
        let ids = convert::neuron_ids(winners, "winners")?;
        self.inner_mut()?.set_winners_u64(area, ids).py_err()
    }

    /// Support of an area: how many of its neurons have ever fired.
    fn support(&self, area: &str) -> PyResult<u64> {
        Ok(self.inner()?.area(area).py_err()?.support)
    }

    /// Per-step record of an area (one entry per step in which it was a
    /// target): ``{"step", "support", "first_winners"}`` as NumPy arrays.
    fn history<'py>(&self, py: Python<'py>, area: &str) -> PyResult<Bound<'py, PyDict>> {
        let h = &self.inner()?.area(area).py_err()?.history;
        let d = PyDict::new(py);
        d.set_item(
            "step",
            h.iter()
                .map(|s| s.step)
                .collect::<Vec<_>>()
                .into_pyarray(py),
        )?;
        d.set_item(
            "support",
            h.iter()
                .map(|s| s.support)
                .collect::<Vec<_>>()
                .into_pyarray(py),
        )?;
        d.set_item(
            "first_winners",
            h.iter()
                .map(|s| s.first_winners)
                .collect::<Vec<_>>()
                .into_pyarray(py),
        )?;
        Ok(d)
    }

    /// Recorded winner sets of an area, one array per recorded step
    /// (``uint64`` for a procedural area, else ``uint32``; recording:
    /// ``save_winners`` or :meth:`record_winners`).
    fn winner_history<'py>(&self, py: Python<'py>, area: &str) -> PyResult<Bound<'py, PyList>> {
        let b = self.inner()?;
        let wide = b.area_spec(area).py_err()?.engine == EngineKind::Procedural;
        let h = &b.area(area).py_err()?.history;
        PyList::new(
            py,
            h.iter().filter_map(|s| {
                if wide {
                    s.winner_ids().map(|w| w.into_pyarray(py).into_any())
                } else {
                    s.winners
                        .as_deref()
                        .map(|w| PyArray1::from_slice(py, w).into_any())
                }
            }),
        )
    }

    /// Turns winner recording of one area on or off.
    #[pyo3(signature = (area, on=true))]
    fn record_winners(&mut self, area: &str, on: bool) -> PyResult<()> {
        self.inner_mut()?.record_winners(area, on).py_err()
    }

    /// Fixes an area: it keeps its winners when projected into.
    fn fix(&mut self, area: &str) -> PyResult<()> {
        self.inner_mut()?.fix(area).py_err()
    }

    fn unfix(&mut self, area: &str) -> PyResult<()> {
        self.inner_mut()?.unfix(area).py_err()
    }

    /// Keeps a uniformly random subset of ``count`` current winners of an
    /// area, drawn from the brain's seeded generator (reproducible).
    fn subsample_winners(&mut self, area: &str, count: usize) -> PyResult<()> {
        self.inner_mut()?.subsample_winners(area, count).py_err()
    }

    /// Connection probability of the fiber ``source → area`` (before the
    /// first step only).
    fn set_fiber_p(&mut self, source: &str, area: &str, p: f64) -> PyResult<()> {
        self.inner_mut()?
            .set_fiber_p(source, area, p)
            .map_err(|e| match e {
                kcap::KcapError::Unsupported(m) => PyRuntimeError::new_err(m),
                e => crate::errors::to_py(e),
            })
    }

    /// Plasticity of the fiber ``source → area`` (stimulus or area source).
    fn set_beta(&mut self, source: &str, area: &str, beta: f64) -> PyResult<()> {
        self.inner_mut()?.set_beta(source, area, beta).py_err()
    }

    /// Default plasticity of every fiber into an area that has no override.
    fn set_area_beta(&mut self, area: &str, beta: f64) -> PyResult<()> {
        self.inner_mut()?.set_area_beta(area, beta).py_err()
    }

    /// Brain-wide plasticity switch (the opposite of ``disable_plasticity``).
    #[getter]
    fn get_plasticity(&self) -> PyResult<bool> {
        Ok(self.inner()?.plasticity())
    }

    #[setter]
    fn set_plasticity(&mut self, on: bool) -> PyResult<()> {
        self.inner_mut()?.set_plasticity(on);
        Ok(())
    }

    /// Cap on every weight (``None``: no cap).
    #[getter]
    fn get_w_max(&self) -> PyResult<Option<f64>> {
        Ok(self.inner()?.model().w_max)
    }

    #[setter]
    fn set_w_max(&mut self, w_max: Option<f64>) -> PyResult<()> {
        self.inner_mut()?.set_w_max(w_max).py_err()
    }

    /// Seed of the brain's random generator.
    #[getter]
    fn seed(&self) -> PyResult<u64> {
        Ok(self.inner()?.seed())
    }

    /// Number of steps run so far.
    #[getter]
    fn steps(&self) -> PyResult<u64> {
        Ok(self.inner()?.steps())
    }

    /// The device doing the work: ``"cpu"`` or ``"cuda:N"`` (``device="cuda"``
    /// reads back as ``"cuda:0"``). Read-only; :meth:`to` moves the brain.
    #[getter]
    fn device(&self) -> PyResult<String> {
        Ok(self.inner()?.backend_name())
    }

    /// Name of the backend doing the work (the same as :attr:`device`).
    #[getter]
    fn backend(&self) -> PyResult<String> {
        Ok(self.inner()?.backend_name())
    }

    /// Moves the brain onto ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``)
    /// and returns it (the same object). Results do not depend on the device:
    /// later steps give the same winners wherever they run. An unknown name
    /// raises ``ValueError``, a device that cannot be opened
    /// :class:`DeviceError`; the brain then stays where it was.
    fn to<'py>(slf: Bound<'py, Self>, device: &str) -> PyResult<Bound<'py, Self>> {
        slf.borrow().inner()?;
        let backend = open_device(slf.py(), device)?;
        slf.borrow_mut()
            .inner_mut()?
            .set_backend(backend)
            .py_err()?;
        Ok(slf)
    }

    fn area_names(&self) -> PyResult<Vec<String>> {
        Ok(self.inner()?.area_names())
    }

    fn stimulus_names(&self) -> PyResult<Vec<String>> {
        Ok(self.inner()?.stimulus_names())
    }

    /// Stored connectivity: ``{"area_synapses", "stimulus_entries", "bytes"}``.
    fn memory<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (a, s, bytes) = self.inner()?.memory();
        let d = PyDict::new(py);
        d.set_item("area_synapses", a)?;
        d.set_item("stimulus_entries", s)?;
        d.set_item("bytes", bytes)?;
        Ok(d)
    }

    /// The live view of one area (same as ``area_by_name[name]``).
    fn area(slf: Bound<'_, Self>, name: &str) -> PyResult<PyArea> {
        PyArea::new(&slf, name)
    }

    // ----- checkpoints and pickling ------------------------------------

    /// Saves the brain's complete state (areas, stimuli, learned weights,
    /// winners, history, formats, the ``save_size``/``save_winners``
    /// bookkeeping) to ``path``, atomically: a crash mid-write leaves any
    /// previous file intact. The file is a kcap checkpoint, the format the
    /// CLI writes with ``--checkpoint-every``. Errors of the file system are
    /// ``OSError`` (e.g. ``FileNotFoundError`` for a missing folder).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let bytes = self.checkpoint_bytes(py)?;
        persist::write(py, &path, &bytes)
    }

    /// Loads a brain saved by :meth:`save` (or a CLI checkpoint); it
    /// continues exactly as the saved brain would have. It runs on
    /// ``device`` (the CPU unless given; a checkpoint does not record the
    /// device). Called on a subclass it returns an instance of that
    /// subclass, restored without running its ``__init__``. A missing file
    /// raises ``FileNotFoundError``; a file that is not a valid checkpoint
    /// (corrupt, truncated, from a newer kcap) raises
    /// :class:`kcap.CheckpointError`; a device that cannot be opened
    /// :class:`kcap.DeviceError`.
    #[classmethod]
    #[pyo3(signature = (path, device="cpu"))]
    fn load<'py>(
        cls: &Bound<'py, PyType>,
        path: PathBuf,
        device: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bytes = persist::read(cls.py(), &path)?;
        Self::load_into(cls, &bytes, &path, device)
    }

    /// Pickle state: ``(checkpoint bytes, instance __dict__)``.
    fn __getstate__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let bytes = slf.borrow().checkpoint_bytes(py)?;
        let dict = slf.getattr("__dict__")?.call_method0("copy")?;
        PyTuple::new(py, [PyBytes::new(py, &bytes).into_any(), dict])
    }

    /// Restores a pickled brain (the state of :meth:`__getstate__`) onto the
    /// CPU, whatever device the original ran on (``brain.to(device)`` moves it).
    fn __setstate__(slf: &Bound<'_, Self>, state: &Bound<'_, PyAny>) -> PyResult<()> {
        let (bytes, dict): (Vec<u8>, Bound<'_, PyDict>) = state.extract().map_err(|_| {
            PyTypeError::new_err(
                "Brain.__setstate__ expects (checkpoint bytes, dict), the state of Brain.__getstate__",
            )
        })?;
        let restored = persist::decode(slf.py(), &bytes, Path::new("<pickled Brain>"))?;
        slf.borrow_mut().restore(restored);
        slf.getattr("__dict__")?.call_method1("update", (dict,))?;
        Ok(())
    }

    /// Pickling (any protocol) and ``copy``: rebuilds through
    /// ``cls.__new__(cls)`` and :meth:`__setstate__`, so subclasses with
    /// their own constructor signature pickle too; a subclass may override
    /// ``__getstate__``/``__setstate__``.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let newobj = py.import("copyreg")?.getattr("__newobj__")?;
        let state = slf.call_method0("__getstate__")?;
        PyTuple::new(
            py,
            [
                newobj,
                PyTuple::new(py, [slf.get_type()])?.into_any(),
                state,
            ],
        )
    }
}

/// `(name, value)` pairs of a dict or mapping keyed by names.
fn map_items<'py>(map: &Bound<'py, PyAny>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    let items = if let Ok(d) = map.cast::<PyDict>() {
        d.items().into_any()
    } else {
        map.call_method0("items")?
    };
    let mut out = Vec::new();
    for pair in items.try_iter()? {
        let (k, v): (String, Bound<'py, PyAny>) = pair?.extract()?;
        out.push((k, v));
    }
    Ok(out)
}
