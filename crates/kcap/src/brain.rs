//! The [`Brain`]: the public face of the library. It owns the model, the
//! engine state, the winners and the per-step history, and runs synchronous
//! projection steps (SPEC §2).

use crate::backend::{cpu::Cpu, Backend};
use crate::engine::lazy::{Growth, LazyState, View};
use crate::engine::TargetPlan;
use crate::error::{KcapError, Result};
use crate::model::{AreaSpec, EngineKind, Model, Source, StimSpec};
use crate::rng::{purpose, Stream};
use crate::stats::TailSampler;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One projection step's wiring: which sources fire into which areas.
///
/// Sources are named stimuli or areas; targets are areas. Built with
/// [`Projection::fire`]; the order of calls does not matter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Projection {
    pub edges: Vec<(String, Vec<String>)>,
}

impl Projection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `source → targets` (source: stimulus or area name).
    pub fn fire<S: Into<String>>(mut self, source: impl Into<String>, targets: impl IntoIterator<Item = S>) -> Self {
        self.edges.push((source.into(), targets.into_iter().map(Into::into).collect()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.edges.iter().all(|(_, t)| t.is_empty())
    }
}

/// What happened to one area in one step in which it was a target.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AreaStep {
    /// Global step number (1-based).
    pub step: u64,
    /// Support w after the step: neurons of the area that ever fired.
    pub support: u64,
    /// Winners that fired for the first time in this step.
    pub first_winners: u64,
    /// The winner ids after the step, when winner recording is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winners: Option<Vec<u32>>,
}

/// Dynamic state of one area.
#[derive(Clone, Debug)]
pub struct AreaState {
    /// Current winners, sorted ids.
    pub winners: Vec<u32>,
    /// Fixed areas keep their winners when projected into.
    pub fixed: bool,
    /// Support w.
    pub support: u64,
    /// Record the winner list in the history at every step.
    pub save_winners: bool,
    /// One entry per step in which this area was a projection target.
    pub history: Vec<AreaStep>,
}

/// Options of a brain beyond p.
#[derive(Clone, Debug)]
pub struct BrainOptions {
    pub seed: u64,
    pub tail: TailSampler,
    /// Default winner recording for areas added later.
    pub save_winners: bool,
    pub w_max: Option<f64>,
}

impl Default for BrainOptions {
    fn default() -> Self {
        BrainOptions { seed: 0, tail: TailSampler::Normal, save_winners: false, w_max: None }
    }
}

/// A simulated brain of lazy areas and stimuli.
pub struct Brain {
    model: Model,
    opts: BrainOptions,
    step: u64,
    areas: Vec<AreaState>,
    lazy: LazyState,
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Brain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brain").field("p", &self.model.p).field("step", &self.step).finish_non_exhaustive()
    }
}

impl Brain {
    /// A brain with global connection probability `p` ∈ (0, 1] and `seed`.
    pub fn new(p: f64, seed: u64) -> Result<Brain> {
        Brain::with_options(p, BrainOptions { seed, ..Default::default() })
    }

    pub fn with_options(p: f64, opts: BrainOptions) -> Result<Brain> {
        let mut model = Model::new(p)?;
        model.set_w_max(opts.w_max)?;
        Ok(Brain { model, opts, step: 0, areas: Vec::new(), lazy: LazyState::default(), backend: Arc::new(Cpu) })
    }

    /// Replaces the backend (results do not depend on it).
    pub fn set_backend(&mut self, backend: Arc<dyn Backend>) {
        self.backend = backend;
    }

    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn seed(&self) -> u64 {
        self.opts.seed
    }

    /// Number of steps run so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Adds a lazy area. Errors: duplicate name, k ∉ [1, n), beta < 0.
    pub fn add_area(&mut self, name: &str, n: u64, k: usize, beta: f64) -> Result<usize> {
        self.add_area_with(name, n, k, beta, EngineKind::Lazy)
    }

    /// Adds an area with the given engine (only `Lazy` exists so far).
    pub fn add_area_with(&mut self, name: &str, n: u64, k: usize, beta: f64, engine: EngineKind) -> Result<usize> {
        if engine != EngineKind::Lazy {
            return Err(KcapError::Unsupported(format!(
                "area {name:?}: the {engine:?} engine is not available yet; use engine = \"lazy\""
            )));
        }
        let id = self.model.add_area(AreaSpec { name: name.into(), n, k, beta, engine })?;
        self.lazy.add_area();
        self.areas.push(AreaState {
            winners: Vec::new(),
            fixed: false,
            support: 0,
            save_winners: self.opts.save_winners,
            history: Vec::new(),
        });
        Ok(id)
    }

    /// Adds a stimulus of `size` neurons (1 ≤ size < 2³²).
    pub fn add_stimulus(&mut self, name: &str, size: u64) -> Result<usize> {
        let id = self.model.add_stimulus(StimSpec { name: name.into(), size })?;
        let support: Vec<u64> = self.areas.iter().map(|a| a.support).collect();
        self.lazy.add_stimulus(&self.model, self.opts.seed, id, &support);
        Ok(id)
    }

    /// Overrides p of the fiber `from → to`. Only before the first step:
    /// synapses drawn with the old p would otherwise disagree with the new.
    pub fn set_fiber_p(&mut self, from: &str, to: &str, p: f64) -> Result<()> {
        let (s, t) = (self.model.source(from)?, self.model.area_id(to)?);
        if self.areas.iter().any(|a| a.support > 0) {
            return Err(KcapError::Unsupported(format!(
                "cannot change p of fiber {from} -> {to} after neurons have fired; set it before the first step"
            )));
        }
        self.model.set_p(s, t, p)
    }

    /// Sets beta of the fiber `from → to` (any time).
    pub fn set_beta(&mut self, from: &str, to: &str, beta: f64) -> Result<()> {
        let (s, t) = (self.model.source(from)?, self.model.area_id(to)?);
        self.model.set_beta(s, t, beta)
    }

    /// Sets the default beta of an area.
    pub fn set_area_beta(&mut self, area: &str, beta: f64) -> Result<()> {
        let a = self.model.area_id(area)?;
        self.model.set_area_beta(a, beta)
    }

    /// Brain-wide plasticity switch.
    pub fn set_plasticity(&mut self, on: bool) {
        self.model.plasticity = on;
    }

    pub fn plasticity(&self) -> bool {
        self.model.plasticity
    }

    pub fn set_w_max(&mut self, w_max: Option<f64>) -> Result<()> {
        self.model.set_w_max(w_max)
    }

    fn area_mut(&mut self, name: &str) -> Result<&mut AreaState> {
        let a = self.model.area_id(name)?;
        Ok(&mut self.areas[a])
    }

    /// State of an area (winners, support, history).
    pub fn area(&self, name: &str) -> Result<&AreaState> {
        Ok(&self.areas[self.model.area_id(name)?])
    }

    pub fn area_spec(&self, name: &str) -> Result<&AreaSpec> {
        Ok(&self.model.areas[self.model.area_id(name)?])
    }

    pub fn area_names(&self) -> Vec<String> {
        self.model.areas.iter().map(|a| a.name.clone()).collect()
    }

    pub fn stimulus_names(&self) -> Vec<String> {
        self.model.stimuli.iter().map(|s| s.name.clone()).collect()
    }

    /// Current winners of an area (sorted ids).
    pub fn winners(&self, area: &str) -> Result<&[u32]> {
        Ok(&self.area(area)?.winners)
    }

    /// Replaces the winners of an area by a set of neurons that already
    /// exist (ids < support), e.g. a random half for pattern completion.
    pub fn set_winners(&mut self, area: &str, winners: Vec<u32>) -> Result<()> {
        let a = self.model.area_id(area)?;
        let (w, k) = (self.areas[a].support, self.model.areas[a].k);
        let mut sorted = winners;
        sorted.sort_unstable();
        let bad = |why: String| KcapError::BadWinners { area: area.into(), why };
        if sorted.windows(2).any(|p| p[0] == p[1]) {
            return Err(bad("the list repeats a neuron".into()));
        }
        if let Some(&m) = sorted.last() {
            if m as u64 >= w {
                return Err(bad(format!("neuron {m} has never fired (support is {w}); lazy areas can only fire known neurons")));
            }
        }
        if sorted.len() > k {
            return Err(bad(format!("{} winners given, at most k = {k}", sorted.len())));
        }
        self.areas[a].winners = sorted;
        Ok(())
    }

    pub fn fix(&mut self, area: &str) -> Result<()> {
        self.area_mut(area)?.fixed = true;
        Ok(())
    }

    pub fn unfix(&mut self, area: &str) -> Result<()> {
        self.area_mut(area)?.fixed = false;
        Ok(())
    }

    /// Turns winner recording of an area on or off.
    pub fn record_winners(&mut self, area: &str, on: bool) -> Result<()> {
        self.area_mut(area)?.save_winners = on;
        Ok(())
    }

    /// Sets the winners to neurons `[index·k, (index+1)·k)` and fixes them.
    /// In a lazy area, neurons up to `(index+1)·k` that do not exist yet are
    /// created (with random synapses to and from everything, as never-fired
    /// neurons have), and count towards the support from now on.
    pub fn activate(&mut self, area: &str, index: u64) -> Result<()> {
        let a = self.model.area_id(area)?;
        let spec = &self.model.areas[a];
        let (n, k) = (spec.n, spec.k as u64);
        let end = (index + 1).checked_mul(k).filter(|&e| e <= n).ok_or_else(|| {
            crate::error::invalid(format!("activate index for area {area:?}"), index, format!("(index+1)*k must be <= n = {n}"))
        })?;
        if end > u32::MAX as u64 {
            return Err(crate::error::invalid("activate index", index, "lazy areas number at most 2^32 neurons"));
        }
        let w = self.areas[a].support;
        if end > w {
            let plan = TargetPlan { target: a, stims: vec![], areas: vec![] };
            let zeros = vec![0u64; (end - w) as usize];
            let support: Vec<u64> = self.areas.iter().map(|s| s.support).collect();
            let winners: Vec<Vec<u32>> = self.areas.iter().map(|s| s.winners.clone()).collect();
            let view = View { model: &self.model, seed: self.opts.seed, step: self.step, tail: self.opts.tail, support: &support, winners: &winners };
            let g = Growth { target: a, plan: &plan, new_inputs: &zeros, purpose: purpose::ACTIVATE };
            self.lazy.grow(&view, std::slice::from_ref(&g));
            self.areas[a].support = end;
        }
        self.areas[a].winners = (index * k..end).map(|i| i as u32).collect();
        self.areas[a].fixed = true;
        Ok(())
    }

    /// Resolves and validates a projection into per-target plans.
    fn plan(&self, proj: &Projection) -> Result<Vec<TargetPlan>> {
        let mut by_target: BTreeMap<usize, TargetPlan> = BTreeMap::new();
        for (src, targets) in &proj.edges {
            let s = self.model.source(src)?;
            if let Source::Area(a) = s {
                if self.areas[a].winners.is_empty() && !targets.is_empty() {
                    return Err(KcapError::NoWinners(src.clone()));
                }
            }
            for t in targets {
                let ti = self.model.area_id(t)?;
                let plan = by_target.entry(ti).or_insert_with(|| TargetPlan { target: ti, ..Default::default() });
                match s {
                    Source::Stim(i) => plan.stims.push(i),
                    Source::Area(i) => plan.areas.push(i),
                }
            }
        }
        let mut plans: Vec<TargetPlan> = by_target.into_values().collect();
        for p in &mut plans {
            p.stims.sort_unstable();
            p.stims.dedup();
            p.areas.sort_unstable();
            p.areas.dedup();
        }
        Ok(plans)
    }

    /// One synchronous projection step (SPEC §2). On error nothing changes.
    pub fn project(&mut self, proj: &Projection) -> Result<()> {
        let plans = self.plan(proj)?;
        self.step += 1;
        let support: Vec<u64> = self.areas.iter().map(|s| s.support).collect();
        let winners: Vec<Vec<u32>> = self.areas.iter().map(|s| s.winners.clone()).collect();
        let view = View { model: &self.model, seed: self.opts.seed, step: self.step, tail: self.opts.tail, support: &support, winners: &winners };
        let trace = std::env::var_os("KCAP_TRACE").is_some();
        let t0 = std::time::Instant::now();
        // Phase 1: selection for every non-fixed target (parallel over targets).
        let backend = self.backend.clone();
        let lazy = &self.lazy;
        let active: Vec<&TargetPlan> = plans.iter().filter(|p| !self.areas[p.target].fixed).collect();
        let selections: Result<Vec<_>> = if active.len() > 1 {
            use rayon::prelude::*;
            active.par_iter().map(|p| lazy.select(&view, p, backend.as_ref())).collect()
        } else {
            active.iter().map(|p| lazy.select(&view, p, backend.as_ref())).collect()
        };
        let selections = match selections {
            Ok(s) => s,
            Err(e) => {
                self.step -= 1;
                return Err(e);
            }
        };
        let t1 = std::time::Instant::now();
        // Phases 2–3: growth of every target, together.
        let growth: Vec<Growth> = selections
            .iter()
            .filter(|s| !s.new_inputs.is_empty())
            .map(|s| Growth {
                target: s.target,
                plan: active.iter().find(|p| p.target == s.target).expect("plan of selection"),
                new_inputs: &s.new_inputs,
                purpose: purpose::WIRING,
            })
            .collect();
        if !growth.is_empty() {
            self.lazy.grow(&view, &growth);
        }
        let t2 = std::time::Instant::now();
        // Phase 4: plasticity, then the synchronous update.
        let mut new_winners: Vec<Option<(Vec<u32>, u64)>> = vec![None; self.areas.len()];
        for s in selections {
            new_winners[s.target] = Some((s.winners, s.new_inputs.len() as u64));
        }
        for plan in &plans {
            let t = plan.target;
            let w = match &new_winners[t] {
                Some((w, _)) => w.as_slice(),
                None => self.areas[t].winners.as_slice(),
            };
            self.lazy.hebbian(&self.model, plan, &winners, w);
        }
        if trace {
            eprintln!(
                "[kcap] step {}: select {:?}, grow {:?}, hebbian {:?}",
                self.step,
                t1 - t0,
                t2 - t1,
                t2.elapsed()
            );
        }
        for plan in &plans {
            let t = plan.target;
            let st = &mut self.areas[t];
            let first = match new_winners[t].take() {
                Some((w, new)) => {
                    st.winners = w;
                    st.support += new;
                    new
                }
                None => 0,
            };
            st.history.push(AreaStep {
                step: self.step,
                support: st.support,
                first_winners: first,
                winners: st.save_winners.then(|| st.winners.clone()),
            });
        }
        Ok(())
    }

    /// Fires a uniformly random subset of `count` current winners of `area`
    /// (drawn from the brain's generator) — set as the area's winners.
    pub fn subsample_winners(&mut self, area: &str, count: usize) -> Result<()> {
        let a = self.model.area_id(area)?;
        let cur = &self.areas[a].winners;
        if count > cur.len() {
            return Err(KcapError::BadWinners { area: area.into(), why: format!("cannot keep {count} of {} winners", cur.len()) });
        }
        let mut rng = Stream::keyed(self.opts.seed, &[purpose::SUBSAMPLE, self.step, a as u64]);
        let pick = crate::stats::sample_distinct(cur.len() as u64, count as u64, &mut rng, &mut Vec::new());
        let chosen = pick.into_iter().map(|i| cur[i as usize]).collect();
        self.areas[a].winners = chosen;
        Ok(())
    }

    /// Stored connectivity: (area-to-area synapses, stimulus entries, bytes).
    pub fn memory(&self) -> (usize, usize, usize) {
        let (a, s) = self.lazy.synapse_count();
        (a, s, self.lazy.bytes())
    }

    /// Internal connectivity, for tests and reports.
    pub fn lazy_state(&self) -> &LazyState {
        &self.lazy
    }
}
