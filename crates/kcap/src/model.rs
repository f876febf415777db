//! What is simulated: areas, stimuli, fibers and their parameters
//! (SPEC §1), with validation. No connectivity lives here.

use crate::error::{invalid, KcapError, Result};
use std::collections::HashMap;

/// How an area's connectivity is represented (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Only neurons that have fired exist; the rest are statistical (any n).
    #[default]
    Lazy,
    /// Every synapse stored (n up to ~10⁶).
    Explicit,
    /// Synapses regenerated on demand from the counter-based generator.
    Procedural,
}

impl std::str::FromStr for EngineKind {
    type Err = KcapError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lazy" => Ok(Self::Lazy),
            "explicit" => Ok(Self::Explicit),
            "procedural" => Ok(Self::Procedural),
            _ => Err(invalid(
                "engine",
                format!("{s:?}"),
                "expected one of \"lazy\", \"explicit\", \"procedural\"",
            )),
        }
    }
}

/// A source of firing into an area: a stimulus or another (or the same) area.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Source {
    Stim(usize),
    Area(usize),
}

/// Static description of an area.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AreaSpec {
    pub name: String,
    /// Number of neurons, 2 ≤ n ≤ 10¹².
    pub n: u64,
    /// Winners per step, 1 ≤ k < n.
    pub k: usize,
    /// Default plasticity of synapses into this area (≥ 0).
    pub beta: f64,
    pub engine: EngineKind,
}

/// Static description of a stimulus: `size` neurons that fire together.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StimSpec {
    pub name: String,
    pub size: u64,
}

/// Largest area the library accepts (neuron ids of the procedural engine
/// are u64; the lazy engine numbers only fired neurons, in u32).
pub const MAX_N: u64 = 1_000_000_000_000;

/// Areas, stimuli and per-fiber parameters, validated on entry.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Model {
    pub p: f64,
    pub areas: Vec<AreaSpec>,
    pub stimuli: Vec<StimSpec>,
    names: HashMap<String, Source>,
    p_override: HashMap<(Source, usize), f64>,
    beta_override: HashMap<(Source, usize), f64>,
    /// Brain-wide plasticity switch.
    pub plasticity: bool,
    /// Optional cap on every weight (≥ 1).
    pub w_max: Option<f64>,
}

pub(crate) fn check_p(what: &str, p: f64) -> Result<()> {
    if !(p > 0.0 && p <= 1.0) {
        return Err(invalid(
            what,
            p,
            "a connection probability must lie in (0, 1]",
        ));
    }
    Ok(())
}

pub(crate) fn check_beta(what: &str, beta: f64) -> Result<()> {
    if !(beta >= 0.0 && beta.is_finite()) {
        return Err(invalid(
            what,
            beta,
            "plasticity beta must be finite and >= 0",
        ));
    }
    Ok(())
}

impl Model {
    pub fn new(p: f64) -> Result<Model> {
        check_p("p", p)?;
        Ok(Model {
            p,
            areas: Vec::new(),
            stimuli: Vec::new(),
            names: HashMap::new(),
            p_override: HashMap::new(),
            beta_override: HashMap::new(),
            plasticity: true,
            w_max: None,
        })
    }

    fn claim(&mut self, name: &str, src: Source) -> Result<()> {
        if name.is_empty() {
            return Err(invalid("name", "\"\"", "names must not be empty"));
        }
        if self.names.contains_key(name) {
            return Err(KcapError::DuplicateName(name.into()));
        }
        self.names.insert(name.into(), src);
        Ok(())
    }

    pub fn add_area(&mut self, spec: AreaSpec) -> Result<usize> {
        if spec.k == 0 || spec.k as u64 >= spec.n {
            return Err(KcapError::BadK {
                area: spec.name.clone(),
                n: spec.n,
                k: spec.k as u64,
            });
        }
        if spec.n > MAX_N {
            return Err(invalid(
                format!("n of area {:?}", spec.name),
                spec.n,
                format!("at most {MAX_N} neurons per area"),
            ));
        }
        if spec.k > u32::MAX as usize / 4 {
            return Err(invalid(
                format!("k of area {:?}", spec.name),
                spec.k,
                "k must be below 2^30",
            ));
        }
        check_beta(&format!("beta of area {:?}", spec.name), spec.beta)?;
        let id = self.areas.len();
        self.claim(&spec.name, Source::Area(id))?;
        self.areas.push(spec);
        Ok(id)
    }

    /// Undoes the last `add_area` (used when wiring a new area fails).
    pub fn remove_last_area(&mut self) {
        if let Some(a) = self.areas.pop() {
            self.names.remove(&a.name);
        }
    }

    pub fn add_stimulus(&mut self, spec: StimSpec) -> Result<usize> {
        if spec.size == 0 || spec.size > u32::MAX as u64 {
            return Err(invalid(
                format!("size of stimulus {:?}", spec.name),
                spec.size,
                "must be between 1 and 2^32 - 1",
            ));
        }
        let id = self.stimuli.len();
        self.claim(&spec.name, Source::Stim(id))?;
        self.stimuli.push(spec);
        Ok(id)
    }

    /// Resolves a name to an area or a stimulus.
    pub fn source(&self, name: &str) -> Result<Source> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| KcapError::UnknownName(name.into()))
    }

    pub fn area_id(&self, name: &str) -> Result<usize> {
        match self.names.get(name) {
            Some(Source::Area(a)) => Ok(*a),
            _ => Err(KcapError::UnknownArea(name.into())),
        }
    }

    pub fn stim_id(&self, name: &str) -> Result<usize> {
        match self.names.get(name) {
            Some(Source::Stim(s)) => Ok(*s),
            _ => Err(KcapError::UnknownStimulus(name.into())),
        }
    }

    pub fn source_name(&self, s: Source) -> &str {
        match s {
            Source::Stim(i) => &self.stimuli[i].name,
            Source::Area(i) => &self.areas[i].name,
        }
    }

    /// Connection probability of the fiber `src → target`.
    pub fn p(&self, src: Source, target: usize) -> f64 {
        self.p_override
            .get(&(src, target))
            .copied()
            .unwrap_or(self.p)
    }

    /// Plasticity of the fiber `src → target` (0 when plasticity is off).
    pub fn beta(&self, src: Source, target: usize) -> f64 {
        if !self.plasticity {
            return 0.0;
        }
        self.beta_override
            .get(&(src, target))
            .copied()
            .unwrap_or(self.areas[target].beta)
    }

    pub fn set_p(&mut self, src: Source, target: usize, p: f64) -> Result<()> {
        check_p(
            &format!(
                "p of fiber {} -> {}",
                self.source_name(src),
                self.areas[target].name
            ),
            p,
        )?;
        self.p_override.insert((src, target), p);
        Ok(())
    }

    pub fn set_beta(&mut self, src: Source, target: usize, beta: f64) -> Result<()> {
        check_beta(
            &format!(
                "beta of fiber {} -> {}",
                self.source_name(src),
                self.areas[target].name
            ),
            beta,
        )?;
        self.beta_override.insert((src, target), beta);
        Ok(())
    }

    /// Sets the default beta of an area (synapses into it without override).
    pub fn set_area_beta(&mut self, target: usize, beta: f64) -> Result<()> {
        check_beta(&format!("beta of area {:?}", self.areas[target].name), beta)?;
        self.areas[target].beta = beta;
        Ok(())
    }

    pub fn set_w_max(&mut self, w_max: Option<f64>) -> Result<()> {
        if let Some(w) = w_max {
            if !(w >= 1.0) {
                return Err(invalid(
                    "w_max",
                    w,
                    "the weight cap must be >= 1 (synapses start at weight 1)",
                ));
            }
        }
        self.w_max = w_max;
        Ok(())
    }

    /// True when any fiber has a p override (the brain's p is then not uniform).
    pub fn has_p_overrides(&self) -> bool {
        !self.p_override.is_empty()
    }

    /// Checks a model read from outside (a checkpoint) against every rule
    /// that [`Model::new`], [`Model::add_area`], [`Model::add_stimulus`] and
    /// the setters enforce, plus the consistency of the name table.
    pub(crate) fn validate(&self) -> Result<()> {
        check_p("p", self.p)?;
        if let Some(w) = self.w_max {
            if !(w >= 1.0) {
                return Err(invalid("w_max", w, "the weight cap must be >= 1"));
            }
        }
        let mut fresh = Model::new(self.p)?;
        for a in &self.areas {
            fresh.add_area(a.clone())?;
        }
        for s in &self.stimuli {
            fresh.add_stimulus(s.clone())?;
        }
        if fresh.names != self.names {
            return Err(invalid(
                "name table",
                self.names.len(),
                "it does not list exactly the areas and stimuli",
            ));
        }
        let n_areas = self.areas.len();
        let source_ok = |s: &Source| match *s {
            Source::Stim(i) => i < self.stimuli.len(),
            Source::Area(i) => i < n_areas,
        };
        type Check = fn(&str, f64) -> Result<()>;
        for (what, map, check) in [
            ("p override", &self.p_override, check_p as Check),
            ("beta override", &self.beta_override, check_beta as Check),
        ] {
            for (&(s, t), &v) in map {
                if !source_ok(&s) || t >= n_areas {
                    return Err(invalid(what, format!("{s:?} -> {t}"), "no such fiber"));
                }
                check(what, v)?;
            }
        }
        Ok(())
    }
}
