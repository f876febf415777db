//! Conversions from the loose Python values reference scripts pass (dicts of
//! lists, sets or any iterable of names; winner lists, sets, NumPy arrays or
//! generators) into the library's types.
//!
//! Design decision: **validate while converting, in the reference's terms**.
//! A projection is checked against the brain's names before the library
//! sees it, so a mistake is reported as the reference reports it (an unknown
//! stimulus key, an unknown target, an area used as a stimulus key) with a
//! message that says which dict held the culprit. The checks are hash
//! lookups over a handful of names: microseconds, well below one step.

use crate::errors::{invalid, new_err, unknown, Kind};
use kcap::{Brain, Projection, Source};
use numpy::{PyArrayDescrMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString};

/// One name, or an iterable of names. A plain string is one name (the
/// reference would iterate its characters; treating it as one name is what
/// the writer meant).
pub fn names(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.to_str()?.to_owned()]);
    }
    let iter = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a name or an iterable of names, got {}",
            type_name(obj)
        ))
    })?;
    let mut out = Vec::new();
    for item in iter {
        let item = item?;
        match item.cast::<PyString>() {
            Ok(s) => out.push(s.to_str()?.to_owned()),
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "{what} must contain names (str), got {}",
                    type_name(&item)
                )));
            }
        }
    }
    Ok(out)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}

/// `(key, value)` pairs of a dict or of any mapping with `.items()`.
fn items<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    if let Ok(d) = obj.cast::<PyDict>() {
        return Ok(d.iter().collect());
    }
    if obj.is_none() {
        return Ok(Vec::new());
    }
    let items = obj.call_method0("items").map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a dict (or mapping), got {}",
            type_name(obj)
        ))
    })?;
    let mut out = Vec::new();
    for pair in items.try_iter()? {
        let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair?.extract()?;
        out.push((k, v));
    }
    Ok(out)
}

fn key_str(k: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    match k.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?.to_owned()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "keys of {what} must be names (str), got {}",
            type_name(k)
        ))),
    }
}

/// Builds and validates one step from the reference's two dicts:
/// `areas_by_stim = {stim: [area, ...]}` and
/// `dst_areas_by_src_area = {area: [area, ...]}`.
pub fn projection(
    brain: &Brain,
    areas_by_stim: &Bound<'_, PyAny>,
    dst_by_src: &Bound<'_, PyAny>,
) -> PyResult<Projection> {
    let model = brain.model();
    let mut proj = Projection::new();
    for (k, v) in items(areas_by_stim, "areas_by_stim")? {
        let stim = key_str(&k, "areas_by_stim")?;
        match model.source(&stim) {
            Ok(Source::Stim(_)) => {}
            Ok(Source::Area(_)) => {
                return Err(new_err(
                    Kind::UnknownName,
                    format!("{stim:?} is an area, not a stimulus: list it in dst_areas_by_src_area, not in areas_by_stim"),
                ))
            }
            Err(_) => return Err(unknown("stimulus", &stim)),
        }
        let targets = names(&v, "the targets of a stimulus")?;
        check_targets(brain, &targets)?;
        proj.edges.push((stim, targets));
    }
    for (k, v) in items(dst_by_src, "dst_areas_by_src_area")? {
        let src = key_str(&k, "dst_areas_by_src_area")?;
        match model.source(&src) {
            Ok(Source::Area(_)) => {}
            Ok(Source::Stim(_)) => {
                return Err(new_err(
                    Kind::UnknownName,
                    format!("{src:?} is a stimulus, not an area: list it in areas_by_stim, not in dst_areas_by_src_area"),
                ))
            }
            Err(_) => return Err(unknown("area", &src)),
        }
        let targets = names(&v, "the targets of an area")?;
        check_targets(brain, &targets)?;
        proj.edges.push((src, targets));
    }
    Ok(proj)
}

fn check_targets(brain: &Brain, targets: &[String]) -> PyResult<()> {
    for t in targets {
        if brain.model().area_id(t).is_err() {
            return Err(unknown("area", t));
        }
    }
    Ok(())
}

/// Neuron ids (u64: procedural areas may have more than 2³² neurons) from a
/// NumPy integer array, a list, a set, a range or any iterable of integers
/// (Python or NumPy scalars). Negative, too large or non-integer values are
/// errors, never silently cast; whether an id exists in an area is the
/// library's check.
pub fn neuron_ids(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u64>> {
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        if arr.ndim() != 1 {
            return Err(invalid(format!(
                "{what} must be one-dimensional, got an array of shape {:?}",
                arr.shape()
            )));
        }
        let dtype = arr.dtype();
        if dtype.is_equiv_to(&numpy::dtype::<u32>(obj.py())) {
            let a: PyReadonlyArray1<u32> = obj.extract()?;
            return Ok(a.as_array().iter().map(|&v| v as u64).collect());
        }
        if dtype.is_equiv_to(&numpy::dtype::<u64>(obj.py())) {
            let a: PyReadonlyArray1<u64> = obj.extract()?;
            return Ok(a.as_array().to_vec());
        }
        if dtype.is_equiv_to(&numpy::dtype::<i64>(obj.py())) {
            let a: PyReadonlyArray1<i64> = obj.extract()?;
            return a.as_array().iter().map(|&v| id(v, what)).collect();
        }
        // Other dtypes take the generic path (bool and float items are
        // rejected there, other integer widths converted one by one).
    }
    let iter = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be an iterable of neuron ids, got {}",
            type_name(obj)
        ))
    })?;
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    for item in iter {
        let item = item?;
        if item.is_instance_of::<pyo3::types::PyBool>()
            || item.is_instance_of::<pyo3::types::PyFloat>()
        {
            return Err(PyTypeError::new_err(format!(
                "{what} must contain integers, got {}",
                type_name(&item)
            )));
        }
        if !item.is_instance_of::<PyInt>() && !item.hasattr("__index__")? {
            return Err(PyTypeError::new_err(format!(
                "{what} must contain integers, got {}",
                type_name(&item)
            )));
        }
        match item.extract::<u64>() {
            Ok(v) => out.push(v),
            // Negative or beyond u64: report the value.
            Err(_) => {
                return Err(invalid(format!(
                    "{what}: neuron id {} is out of range (ids are 0 <= id < 2^64)",
                    item.repr()?
                )))
            }
        }
    }
    Ok(out)
}

fn id(v: i64, what: &str) -> PyResult<u64> {
    u64::try_from(v).map_err(|_| {
        invalid(format!(
            "{what}: neuron id {v} is out of range (ids are 0 <= id < 2^64)"
        ))
    })
}
