//! The [`Brain`]: the public face of the library. It owns the model, the
//! engine state, the winners and the per-step history, and runs synchronous
//! projection steps (SPEC §2).

use crate::backend::{cpu::Cpu, Backend};
use crate::engine::explicit::connect_explicit_area;
use crate::engine::lazy::{Growth, LazyState, View};
use crate::engine::procedural::{
    self, check_memory, ProceduralState, StepProgress, View as ProceduralView,
};
use crate::engine::TargetPlan;
use crate::error::{KcapError, Result};
use crate::format::plan::{plan as plan_format, FiberShape};
use crate::format::FiberFormat;
use crate::model::{AreaSpec, EngineKind, Model, Source, StimSpec};
use crate::rng::{purpose, Stream};
use crate::stats::TailSampler;
use std::collections::{BTreeMap, HashMap, HashSet};
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
    pub fn fire<S: Into<String>>(
        mut self,
        source: impl Into<String>,
        targets: impl IntoIterator<Item = S>,
    ) -> Self {
        self.edges
            .push((source.into(), targets.into_iter().map(Into::into).collect()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.edges.iter().all(|(_, t)| t.is_empty())
    }
}

/// What happened to one area in one step in which it was a target.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AreaStep {
    /// Global step number (1-based).
    pub step: u64,
    /// Support w after the step: neurons of the area that ever fired.
    pub support: u64,
    /// Winners that fired for the first time in this step.
    pub first_winners: u64,
    /// The winner ids after the step, when winner recording is on (ids
    /// that fit in u32: every area but a procedural one of n > 2³²).
    pub winners: Option<Vec<u32>>,
    /// The winner ids of a procedural area of n > 2³², when recording.
    pub winners_u64: Option<Vec<u64>>,
}

impl AreaStep {
    /// The recorded winners as u64 ids, whichever field holds them.
    pub fn winner_ids(&self) -> Option<Vec<u64>> {
        match (&self.winners, &self.winners_u64) {
            (Some(w), _) => Some(w.iter().map(|&i| i as u64).collect()),
            (None, Some(w)) => Some(w.clone()),
            (None, None) => None,
        }
    }
}

/// Dynamic state of one area.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AreaState {
    /// Current winners, sorted ids, for every area whose ids fit in u32:
    /// lazy and explicit areas, and procedural areas of n ≤ 2³². Empty for
    /// a larger procedural area (its winners are in `winners_u64`).
    pub winners: Vec<u32>,
    /// Current winners (sorted) of a procedural area of n > 2³²; empty
    /// for every other area. [`AreaState::winner_ids`] reads either field.
    pub winners_u64: Vec<u64>,
    /// Fixed areas keep their winners when projected into.
    pub fixed: bool,
    /// Support w: distinct neurons that ever fired.
    pub support: u64,
    /// Explicit areas: bit set of neurons that ever fired.
    pub ever: Option<Vec<u64>>,
    /// Procedural areas: the neurons that ever fired (at most steps·k ids;
    /// saved sorted, so equal states give equal checkpoints).
    #[serde(with = "sorted_set")]
    pub fired: Option<HashSet<u64>>,
    /// Record the winner list in the history at every step.
    pub save_winners: bool,
    /// One entry per step in which this area was a projection target.
    pub history: Vec<AreaStep>,
}

impl AreaState {
    /// The current winners as u64 ids (sorted), whichever field holds them.
    pub fn winner_ids(&self) -> Vec<u64> {
        if self.winners_u64.is_empty() {
            self.winners.iter().map(|&i| i as u64).collect()
        } else {
            self.winners_u64.clone()
        }
    }

    /// Number of current winners.
    pub fn winner_count(&self) -> usize {
        self.winners.len().max(self.winners_u64.len())
    }

    /// Stores sorted winners in the field that fits (`wide`: ids may not fit in u32).
    fn store_winners(&mut self, wide: bool, ids: Vec<u64>) {
        if wide {
            self.winners.clear();
            self.winners_u64 = ids;
        } else {
            self.winners = ids.into_iter().map(|i| i as u32).collect();
            self.winners_u64.clear();
        }
    }

    /// Makes `ids` (sorted, distinct, existing) the winners, counting them
    /// in the support of an explicit or procedural area.
    fn take_winners(&mut self, engine: EngineKind, wide: bool, ids: Vec<u64>) {
        match engine {
            EngineKind::Explicit => {
                let ever = self
                    .ever
                    .as_mut()
                    .expect("explicit area has an ever-fired set");
                self.support += mark_ever(ever, ids.iter().copied());
            }
            EngineKind::Procedural => {
                self.mark_fired(&ids);
            }
            EngineKind::Lazy => {}
        }
        self.store_winners(wide, ids);
    }

    /// Records `ids` as fired (procedural areas); returns how many were new.
    fn mark_fired(&mut self, ids: &[u64]) -> u64 {
        let set = self
            .fired
            .as_mut()
            .expect("procedural area has a fired set");
        let new = ids.iter().filter(|&&i| set.insert(i)).count() as u64;
        self.support += new;
        new
    }
}

/// Serde of the fired set as a sorted list.
mod sorted_set {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashSet;

    pub fn serialize<S: Serializer>(v: &Option<HashSet<u64>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref()
            .map(|set| {
                let mut ids: Vec<u64> = set.iter().copied().collect();
                ids.sort_unstable();
                ids
            })
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HashSet<u64>>, D::Error> {
        Ok(Option::<Vec<u64>>::deserialize(d)?.map(|v| v.into_iter().collect()))
    }
}

/// Bytes per stored potentiated synapse of a procedural fiber: u64 key +
/// f32 weight, in each of the two arenas an update merges between.
const LEARNED_BYTES: u64 = 24;

/// True when the neuron ids of an area may not fit in u32.
fn is_wide(spec: &AreaSpec) -> bool {
    spec.engine == EngineKind::Procedural && spec.n > 1 << 32
}

/// Options of a brain beyond p.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BrainOptions {
    pub seed: u64,
    pub tail: TailSampler,
    /// Default winner recording for areas added later.
    pub save_winners: bool,
    pub w_max: Option<f64>,
    /// Default storage format of fibers between explicit areas.
    pub format: FormatChoice,
    /// Expected run length (steps), used by the `auto` format planner.
    pub planned_steps: Option<u64>,
}

impl Default for BrainOptions {
    fn default() -> Self {
        BrainOptions {
            seed: 0,
            tail: TailSampler::Normal,
            save_winners: false,
            w_max: None,
            format: FormatChoice::Fixed(FiberFormat::REFERENCE),
            planned_steps: None,
        }
    }
}

/// A fiber format, or `Auto` for the planner's choice ([`crate::format::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FormatChoice {
    Fixed(FiberFormat),
    Auto,
}

/// Memory of one stored fiber (see [`Brain::memory_report`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FiberMemory {
    pub from: String,
    pub to: String,
    pub format: String,
    pub synapses: u64,
    /// Bytes actually held.
    pub bytes: u64,
    /// Bytes predicted by the format's cost model.
    pub predicted_bytes: u64,
    /// Bytes the f32 / u32 / CSR reference would hold.
    pub reference_bytes: u64,
    /// Why the planner chose this format (empty for fixed formats).
    pub reasons: Vec<String>,
}

/// The complete state of a brain, as saved in a checkpoint (field order is
/// part of the checkpoint format: see `checkpoint::VERSION`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct BrainState {
    pub(crate) model: Model,
    pub(crate) opts: BrainOptions,
    pub(crate) step: u64,
    pub(crate) areas: Vec<AreaState>,
    pub(crate) lazy: LazyState,
    pub(crate) fiber_formats: HashMap<(usize, usize), FormatChoice>,
    pub(crate) procedural: ProceduralState,
}

/// Largest step counter a checkpoint may carry (far beyond any real run;
/// keeps `step + 1` and per-step keys away from overflow).
const MAX_STEP: u64 = 1 << 62;

impl BrainState {
    /// Every invariant that [`Brain`]'s methods maintain and its engines rely
    /// on, checked on a decoded checkpoint so that a damaged or hand-made
    /// file (the checksum is no defence against that) gives an error, never
    /// a brain that panics or allocates absurdly later: a valid model
    /// ([`Model::validate`]); per area, the record of fired neurons its
    /// engine keeps (support, ever-fired bit set, fired set) and winners that
    /// are a sorted set of at most k neurons that exist and have fired;
    /// valid formats; stored connectivity that matches the existing neurons
    /// ([`LazyState::validate`]); learned weights of procedural fibers.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        self.model.validate().map_err(|e| e.to_string())?;
        let m = &self.model;
        if self.areas.len() != m.areas.len() {
            return Err(format!(
                "{} area states for {} areas",
                self.areas.len(),
                m.areas.len()
            ));
        }
        if self.step > MAX_STEP {
            return Err(format!("step counter {} is out of range", self.step));
        }
        let check_format = |f: &FormatChoice, n_tgt: u64| match f {
            FormatChoice::Fixed(ff) => ff.validate(n_tgt).map_err(|e| e.to_string()),
            FormatChoice::Auto => Ok(()),
        };
        check_format(&self.opts.format, 0)?;
        if self.opts.w_max.is_some_and(|w| !(w >= 1.0)) {
            return Err("bad w_max option".into());
        }
        for (i, (spec, st)) in m.areas.iter().zip(&self.areas).enumerate() {
            let bad = |why: &str| Err(format!("area {:?}: {why}", spec.name));
            let ids = st.winner_ids();
            // Neurons that exist: the lazy support, all n otherwise.
            let exist = match (spec.engine, &st.ever, &st.fired) {
                (EngineKind::Lazy, None, None) => {
                    if st.support > spec.n.min(u32::MAX as u64) {
                        return Err(format!(
                            "area {:?}: support {} does not fit the area",
                            spec.name, st.support
                        ));
                    }
                    st.support
                }
                (EngineKind::Explicit, Some(ever), None) if spec.n <= u32::MAX as u64 => {
                    let words = (spec.n as usize).div_ceil(64);
                    let tail = spec.n % 64;
                    if ever.len() != words || (tail != 0 && ever[words - 1] >> tail != 0) {
                        return bad("bad ever-fired set");
                    }
                    let fired: u64 = ever.iter().map(|w| w.count_ones() as u64).sum();
                    if fired != st.support {
                        return bad("support does not match the ever-fired set");
                    }
                    let fired = |&j: &u64| j < spec.n && ever[j as usize >> 6] >> (j & 63) & 1 == 1;
                    if !ids.iter().all(fired) {
                        return bad("a winner has not fired");
                    }
                    spec.n
                }
                (EngineKind::Procedural, None, Some(fired)) => {
                    ProceduralState::check_area(m, i).map_err(|e| e.to_string())?;
                    if fired.len() as u64 != st.support || fired.iter().any(|&j| j >= spec.n) {
                        return bad("fired set does not match its support");
                    }
                    if ids.iter().any(|j| !fired.contains(j)) {
                        return bad("a winner has not fired");
                    }
                    spec.n
                }
                _ => return bad("its fired set (or ever-fired set) does not match its engine"),
            };
            let one_list = if is_wide(spec) {
                st.winners.is_empty()
            } else {
                st.winners_u64.is_empty()
            };
            let sorted = ids.windows(2).all(|p| p[0] < p[1]);
            if !one_list || !sorted || ids.len() > spec.k || ids.last().is_some_and(|&j| j >= exist)
            {
                return bad("winners are not a sorted set of at most k existing neurons");
            }
        }
        for (&(a, b), f) in &self.fiber_formats {
            if a >= m.areas.len() || b >= m.areas.len() {
                return Err(format!(
                    "format for a fiber {a} -> {b} between unknown areas"
                ));
            }
            check_format(f, m.areas[b].n)?;
        }
        let exist: Vec<u64> = m
            .areas
            .iter()
            .zip(&self.areas)
            .map(|(spec, st)| materialised(spec, st))
            .collect();
        self.lazy.validate(m, &exist)?;
        self.procedural.check_loaded(m)
    }
}

/// Borrowed twin of [`BrainState`] (same fields, same order), for saving
/// without copying.
#[derive(serde::Serialize)]
pub(crate) struct BrainStateRef<'a> {
    model: &'a Model,
    opts: &'a BrainOptions,
    step: u64,
    areas: &'a Vec<AreaState>,
    lazy: &'a LazyState,
    fiber_formats: &'a HashMap<(usize, usize), FormatChoice>,
    procedural: &'a ProceduralState,
}

/// A simulated brain: stimuli, and lazy, explicit and procedural areas.
pub struct Brain {
    model: Model,
    opts: BrainOptions,
    step: u64,
    areas: Vec<AreaState>,
    lazy: LazyState,
    backend: Arc<dyn Backend>,
    fiber_formats: HashMap<(usize, usize), FormatChoice>,
    /// Learned weights of the fibers into procedural areas.
    procedural: ProceduralState,
}

impl std::fmt::Debug for Brain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brain")
            .field("p", &self.model.p)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Brain {
    /// A brain with global connection probability `p` ∈ (0, 1] and `seed`.
    pub fn new(p: f64, seed: u64) -> Result<Brain> {
        Brain::with_options(
            p,
            BrainOptions {
                seed,
                ..Default::default()
            },
        )
    }

    pub fn with_options(p: f64, opts: BrainOptions) -> Result<Brain> {
        let mut model = Model::new(p)?;
        model.set_w_max(opts.w_max)?;
        Ok(Brain {
            model,
            opts,
            step: 0,
            areas: Vec::new(),
            lazy: LazyState::default(),
            backend: Arc::new(Cpu),
            fiber_formats: HashMap::new(),
            procedural: ProceduralState::new(),
        })
    }

    /// Borrows the brain's whole state (for checkpoints).
    pub(crate) fn state(&self) -> BrainStateRef<'_> {
        BrainStateRef {
            model: &self.model,
            opts: &self.opts,
            step: self.step,
            areas: &self.areas,
            lazy: &self.lazy,
            fiber_formats: &self.fiber_formats,
            procedural: &self.procedural,
        }
    }

    /// Rebuilds a brain from a checkpointed state (CPU backend).
    pub(crate) fn from_state(s: BrainState) -> Brain {
        Brain {
            model: s.model,
            opts: s.opts,
            step: s.step,
            areas: s.areas,
            lazy: s.lazy,
            backend: Arc::new(Cpu),
            fiber_formats: s.fiber_formats,
            procedural: s.procedural,
        }
    }

    /// Replaces the backend (results do not depend on it). Stored fibers of
    /// explicit areas move into the new backend's memory when it keeps
    /// their format (a GPU), else onto the host. Errors (a device out of
    /// memory) leave the old backend in place; every fiber stays usable
    /// wherever it is.
    pub fn set_backend(&mut self, backend: Arc<dyn Backend>) -> Result<()> {
        for f in self.lazy.fibers.iter_mut().flatten() {
            if let Some(pf) = &mut f.packed {
                pf.move_to(backend.as_ref())?;
            }
        }
        self.backend = backend;
        for (t, a) in self.model.areas.iter().enumerate() {
            if a.engine == EngineKind::Procedural {
                self.backend.procedural_prepare(&self.model, t);
            }
        }
        Ok(())
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

    /// Adds an area with the given engine. Explicit areas generate all their
    /// fibers now (memory is estimated first; a run that would not fit is
    /// refused with the estimate). Procedural areas store nothing up front;
    /// they need p·n ≥ 1 (at least one expected synapse per neuron) and
    /// n ≤ 10¹², checked here.
    pub fn add_area_with(
        &mut self,
        name: &str,
        n: u64,
        k: usize,
        beta: f64,
        engine: EngineKind,
    ) -> Result<usize> {
        let mut model = self.model.clone();
        let id = model.add_area(AreaSpec {
            name: name.into(),
            n,
            k,
            beta,
            engine,
        })?;
        if engine == EngineKind::Procedural {
            // Every fiber into the new area has the brain's p for now.
            ProceduralState::check_area(&model, id)?;
        }
        if engine == EngineKind::Explicit {
            if n > u32::MAX as u64 {
                return Err(crate::error::invalid(
                    format!("n of explicit area {name:?}"),
                    n,
                    "explicit areas hold at most 2^32 neurons",
                ));
            }
            let need = self.explicit_memory_estimate(&model, id);
            let avail = crate::memory::available_bytes();
            if let Some(avail) = avail {
                if need > avail {
                    return Err(KcapError::OutOfMemory {
                        what: format!(
                            "explicit area {name:?} (n = {n}, its fibers at p = {})",
                            model.p
                        ),
                        need,
                        avail,
                    });
                }
            }
        }
        self.model = model;
        self.lazy.add_area();
        // Every existing neuron of every other area gets one (empty) row in
        // its fiber into the new area, which has no neurons yet.
        let exist = self.exist_with(id);
        for (s, &m) in exist.iter().enumerate().take(id) {
            self.lazy.fibers[s][id].rows = vec![Vec::new(); m as usize];
        }
        self.areas.push(AreaState {
            winners: Vec::new(),
            winners_u64: Vec::new(),
            fixed: false,
            support: 0,
            ever: (engine == EngineKind::Explicit).then(|| vec![0u64; (n as usize).div_ceil(64)]),
            fired: (engine == EngineKind::Procedural).then(HashSet::new),
            save_winners: self.opts.save_winners,
            history: Vec::new(),
        });
        if engine == EngineKind::Explicit {
            let exist = self.exist();
            let formats = self.fiber_formats.clone();
            let (opts, model) = (&self.opts, &self.model);
            let format_of = |a: usize, b: usize| resolve_format(model, opts, &formats, a, b).0;
            let backend = self.backend.as_ref();
            if let Err(e) = connect_explicit_area(
                &mut self.lazy,
                model,
                opts.seed,
                id,
                &exist,
                &format_of,
                backend,
            ) {
                // Leave no half-added area behind.
                self.model.remove_last_area();
                self.lazy.remove_last_area();
                self.areas.pop();
                return Err(e);
            }
        }
        if engine == EngineKind::Procedural {
            self.backend.procedural_prepare(&self.model, id);
        }
        Ok(id)
    }

    /// Bytes the fibers of a new explicit area `e` will take.
    fn explicit_memory_estimate(&self, model: &Model, e: usize) -> u64 {
        let n = model.areas[e].n as f64;
        let mut bytes = 0.0;
        for (s, area) in model.areas.iter().enumerate() {
            let m = match area.engine {
                EngineKind::Explicit => area.n as f64,
                EngineKind::Procedural => 0.0,
                EngineKind::Lazy => self.areas.get(s).map_or(0, |a| a.support) as f64,
            };
            let pairs = if s == e {
                vec![(s, e)]
            } else {
                vec![(s, e), (e, s)]
            };
            for (a, b) in pairs {
                let p = model.p(Source::Area(a), b);
                let both = model.areas[a].engine == EngineKind::Explicit
                    && model.areas[b].engine == EngineKind::Explicit;
                let (rows, cols) = if a == e {
                    (n, if b == e { n } else { m })
                } else {
                    (m, n)
                };
                let format = resolve_format(model, &self.opts, &self.fiber_formats, a, b).0;
                if both && self.backend.explicit_supports(&format) {
                    // Generated on the device (which checks its own memory):
                    // the host holds the counts plan, 12 bytes a row block.
                    bytes += rows * (cols / 65_536.0).ceil() * 12.0;
                    continue;
                }
                let per = if both {
                    format.bytes_per_synapse(cols as u64, p)
                } else {
                    8.0
                };
                bytes += rows * cols * p * per + rows * 24.0;
            }
        }
        bytes += n * 8.0 * model.stimuli.len() as f64;
        bytes as u64
    }

    /// Bytes that `new` new neurons of lazy area `t` add to the brain: their
    /// synapses to and from every existing neuron (8 bytes each, one per
    /// pair with probability p), a row in every fiber, stimulus entries, and
    /// the step's input buffer — all that growth allocates.
    fn growth_bytes(&self, t: usize, new: u64) -> u64 {
        let exist = self.exist();
        let n = new as f64;
        let synapses: f64 = exist
            .iter()
            .enumerate()
            .map(|(a, &m)| {
                let m = m as f64 + if a == t { n } else { 0.0 };
                m * (self.model.p(Source::Area(a), t) + self.model.p(Source::Area(t), a))
            })
            .sum();
        let rows = 2.0 * 24.0 * exist.len() as f64 + 8.0 * self.model.stimuli.len() as f64;
        (n * (synapses * 8.0 + rows) + (exist[t] as f64 + n) * 4.0) as u64
    }

    /// Refuses growth of `need` bytes ([`Brain::growth_bytes`]) that would
    /// not fit in the memory available now (the memory guard of lazy areas;
    /// `what` names the growth). Growth below 64 MB is not checked.
    fn check_growth(need: u64, what: impl FnOnce() -> String) -> Result<()> {
        if need < 64 << 20 {
            return Ok(());
        }
        match crate::memory::available_bytes() {
            Some(avail) if need > avail => Err(KcapError::OutOfMemory {
                what: what(),
                need,
                avail,
            }),
            _ => Ok(()),
        }
    }

    /// Existing neurons and current winners of every area, as the engine reads them.
    fn snapshot(&self) -> (Vec<u64>, Vec<Vec<u32>>) {
        (
            self.exist(),
            self.areas.iter().map(|s| s.winners.clone()).collect(),
        )
    }

    /// `exist()` while area `id` is being added (its state not pushed yet).
    fn exist_with(&self, id: usize) -> Vec<u64> {
        (0..id)
            .map(|a| materialised(&self.model.areas[a], &self.areas[a]))
            .collect()
    }

    /// Existing (materialised) neurons per area, as the lazy and explicit
    /// engines see them.
    fn exist(&self) -> Vec<u64> {
        self.model
            .areas
            .iter()
            .zip(&self.areas)
            .map(|(spec, st)| materialised(spec, st))
            .collect()
    }

    /// The default storage format of fibers between explicit areas.
    pub fn default_format(&self) -> FormatChoice {
        self.opts.format
    }

    /// Sets the default storage format of fibers between explicit areas
    /// created from now on.
    pub fn set_default_format(&mut self, f: FormatChoice) {
        self.opts.format = f;
    }

    /// Tells the `auto` planner how many steps the run will take.
    pub fn set_planned_steps(&mut self, steps: Option<u64>) {
        self.opts.planned_steps = steps;
    }

    /// Sets the format of the fiber `from → to` between explicit areas. If
    /// the fiber exists already (both areas added), it is regenerated in the
    /// new format — the same graph, since the graph does not depend on the
    /// format; allowed only before the first step.
    pub fn set_fiber_format(&mut self, from: &str, to: &str, f: FormatChoice) -> Result<()> {
        let (a, b) = (self.model.area_id(from)?, self.model.area_id(to)?);
        if let FormatChoice::Fixed(ff) = f {
            ff.validate(self.model.areas[b].n)?;
        }
        if self.lazy.fibers[a][b].packed.is_some() {
            if self.step > 0 {
                return Err(KcapError::Unsupported(format!(
                    "cannot change the format of fiber {from} -> {to} after the first step"
                )));
            }
            self.fiber_formats.insert((a, b), f);
            let (format, _) = resolve_format(&self.model, &self.opts, &self.fiber_formats, a, b);
            let spec = (&self.model.areas[a], &self.model.areas[b]);
            let p = self.model.p(Source::Area(a), b);
            let beta = self.model.beta(Source::Area(a), b);
            let fib = crate::engine::explicit::PackedFiber::generate_on(
                self.backend.as_ref(),
                self.opts.seed,
                crate::engine::explicit::fiber_id(a, b),
                spec.0.n,
                spec.1.n,
                p,
                format,
                beta,
                self.model.w_max,
            )?;
            self.lazy.fibers[a][b].packed = Some(fib);
            return Ok(());
        }
        self.fiber_formats.insert((a, b), f);
        Ok(())
    }

    /// Per stored (explicit ↔ explicit) fiber: format, synapses, bytes held,
    /// predicted and reference bytes, and the planner's reasons; then per
    /// fiber into a procedural area with potentiated synapses: their count
    /// and bytes (the reference being the whole fiber stored explicitly).
    pub fn memory_report(&self) -> Vec<FiberMemory> {
        let mut out = Vec::new();
        for (a, row) in self.lazy.fibers.iter().enumerate() {
            for (b, f) in row.iter().enumerate() {
                if let Some(pf) = &f.packed {
                    let (_, reasons) =
                        resolve_format(&self.model, &self.opts, &self.fiber_formats, a, b);
                    let syn = pf.synapses();
                    out.push(FiberMemory {
                        from: self.model.areas[a].name.clone(),
                        to: self.model.areas[b].name.clone(),
                        format: pf.format.label(),
                        synapses: syn,
                        bytes: pf.bytes() as u64,
                        predicted_bytes: (syn as f64 * pf.format.bytes_per_synapse(pf.n_tgt, pf.p))
                            as u64,
                        reference_bytes: syn * 8,
                        reasons,
                    });
                }
            }
        }
        for (src, t, learned) in self.procedural.fibers() {
            let rows = match src {
                Source::Stim(s) => self.model.stimuli[s].size,
                Source::Area(a) => self.model.areas[a].n,
            } as f64;
            let syn = learned.len() as u64;
            let stored = rows * self.model.areas[t].n as f64 * self.model.p(src, t);
            out.push(FiberMemory {
                from: self.model.source_name(src).to_string(),
                to: self.model.areas[t].name.clone(),
                format: "procedural (learned f32 weights)".into(),
                synapses: syn,
                bytes: learned.bytes() as u64,
                predicted_bytes: syn * LEARNED_BYTES,
                // What the explicit f32/u32 CSR would hold for the whole fiber
                // (saturates at u64::MAX).
                reference_bytes: (stored * 8.0) as u64,
                reasons: vec![format!(
                    "the graph is regenerated on demand; only potentiated synapses are stored ({LEARNED_BYTES} bytes each, 12 in each of two arenas, plus slack and block overhead)"
                )],
            });
        }
        out
    }

    /// Adds a stimulus of `size` neurons (1 ≤ size < 2³²).
    pub fn add_stimulus(&mut self, name: &str, size: u64) -> Result<usize> {
        let id = self.model.add_stimulus(StimSpec {
            name: name.into(),
            size,
        })?;
        // Every existing neuron (all n of an explicit area) gets its synapses.
        let exist = self.exist();
        self.lazy
            .add_stimulus(&self.model, self.opts.seed, id, &exist);
        Ok(id)
    }

    /// Overrides p of the fiber `from → to`. Only before the first step:
    /// synapses drawn with the old p would otherwise disagree with the new.
    pub fn set_fiber_p(&mut self, from: &str, to: &str, p: f64) -> Result<()> {
        let (s, t) = (self.model.source(from)?, self.model.area_id(to)?);
        if self.step > 0 || self.areas.iter().any(|a| a.support > 0) {
            return Err(KcapError::Unsupported(format!(
                "cannot change p of fiber {from} -> {to} after neurons have fired; set it before the first step"
            )));
        }
        if self.model.areas[t].engine == EngineKind::Procedural {
            let mut m = self.model.clone();
            m.set_p(s, t, p)?;
            ProceduralState::check_fiber(&m, s, t)?;
        }
        self.model.set_p(s, t, p)?;
        // Stored connectivity into an explicit area is redrawn with the new p.
        if self.model.areas[t].engine == EngineKind::Explicit {
            match s {
                Source::Area(a) if self.lazy.fibers[a][t].packed.is_some() => {
                    let choice = self
                        .fiber_formats
                        .get(&(a, t))
                        .copied()
                        .unwrap_or(self.opts.format);
                    self.set_fiber_format(from, to, choice)?;
                }
                Source::Stim(i) => {
                    let mut rng = Stream::keyed(
                        self.opts.seed,
                        &[purpose::GRAPH, u64::MAX, i as u64, t as u64],
                    );
                    let size = self.model.stimuli[i].size;
                    let f = &mut self.lazy.stim[i][t];
                    for c in f.count.iter_mut() {
                        *c = crate::stats::binomial(size, p, &mut rng) as u32;
                    }
                }
                _ => {}
            }
        }
        Ok(())
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

    /// Current winners of an area (sorted ids). A procedural area of
    /// n > 2³² numbers its neurons in u64: read it with [`Brain::winners_u64`].
    pub fn winners(&self, area: &str) -> Result<&[u32]> {
        let a = self.model.area_id(area)?;
        let spec = &self.model.areas[a];
        if is_wide(spec) {
            return Err(KcapError::Unsupported(format!(
                "area {area:?} has n = {} > 2^32 neurons, so its neuron ids do not fit in u32: read its winners with winners_u64",
                spec.n
            )));
        }
        Ok(&self.areas[a].winners)
    }

    /// Current winners of any area as u64 ids (sorted).
    pub fn winners_u64(&self, area: &str) -> Result<Vec<u64>> {
        Ok(self.area(area)?.winner_ids())
    }

    /// Replaces the winners of an area (see [`Brain::set_winners_u64`]).
    pub fn set_winners(&mut self, area: &str, winners: Vec<u32>) -> Result<()> {
        self.set_winners_u64(area, winners.into_iter().map(u64::from).collect())
    }

    /// Replaces the winners of an area by at most k neurons that exist:
    /// in a lazy area neurons that have fired (ids < support), e.g. a random
    /// half for pattern completion; in an explicit or procedural area any
    /// ids < n (they count towards the support).
    pub fn set_winners_u64(&mut self, area: &str, winners: Vec<u64>) -> Result<()> {
        let a = self.model.area_id(area)?;
        let spec = &self.model.areas[a];
        let (k, engine, wide) = (spec.k, spec.engine, is_wide(spec));
        let w = match engine {
            EngineKind::Lazy => self.areas[a].support,
            _ => spec.n,
        };
        let mut sorted = winners;
        sorted.sort_unstable();
        let bad = |why: String| KcapError::BadWinners {
            area: area.into(),
            why,
        };
        if sorted.windows(2).any(|p| p[0] == p[1]) {
            return Err(bad("the list repeats a neuron".into()));
        }
        if let Some(&m) = sorted.last() {
            if m >= w {
                return Err(bad(if engine == EngineKind::Lazy {
                    format!("neuron {m} has never fired (support is {w}); lazy areas can only fire known neurons")
                } else {
                    format!("neuron {m} does not exist (n = {w})")
                }));
            }
        }
        if sorted.len() > k {
            return Err(bad(format!(
                "{} winners given, at most k = {k}",
                sorted.len()
            )));
        }
        self.areas[a].take_winners(engine, wide, sorted);
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
        let (n, k, engine, wide) = (spec.n, spec.k as u64, spec.engine, is_wide(spec));
        let end = (index + 1)
            .checked_mul(k)
            .filter(|&e| e <= n)
            .ok_or_else(|| {
                crate::error::invalid(
                    format!("activate index for area {area:?}"),
                    index,
                    format!("(index+1)*k must be <= n = {n}"),
                )
            })?;
        if end > u32::MAX as u64 && !wide {
            return Err(crate::error::invalid(
                "activate index",
                index,
                "lazy areas number at most 2^32 neurons",
            ));
        }
        let w = self.areas[a].support;
        if engine == EngineKind::Lazy && end > w {
            Self::check_growth(self.growth_bytes(a, end - w), || {
                format!(
                    "activating assembly {index} of area {area:?}: {} new neurons with their synapses",
                    end - w
                )
            })?;
            let plan = TargetPlan {
                target: a,
                stims: vec![],
                areas: vec![],
            };
            let zeros = vec![0u64; (end - w) as usize];
            let (support, winners) = self.snapshot();
            let view = view_of(&self.model, &self.opts, self.step, &support, &winners);
            let g = Growth {
                target: a,
                plan: &plan,
                new_inputs: &zeros,
                purpose: purpose::ACTIVATE,
            };
            self.lazy.grow(&view, std::slice::from_ref(&g));
            self.areas[a].support = end;
        }
        let st = &mut self.areas[a];
        st.take_winners(engine, wide, (index * k..end).collect());
        st.fixed = true;
        Ok(())
    }

    /// Resolves and validates a projection into per-target plans.
    fn plan(&self, proj: &Projection) -> Result<Vec<TargetPlan>> {
        let mut by_target: BTreeMap<usize, TargetPlan> = BTreeMap::new();
        for (src, targets) in &proj.edges {
            let s = self.model.source(src)?;
            if let Source::Area(a) = s {
                if self.areas[a].winner_count() == 0 && !targets.is_empty() {
                    return Err(KcapError::NoWinners(src.clone()));
                }
            }
            for t in targets {
                let ti = self.model.area_id(t)?;
                let plan = by_target.entry(ti).or_insert_with(|| TargetPlan {
                    target: ti,
                    ..Default::default()
                });
                match s {
                    Source::Stim(i) => plan.stims.push(i),
                    Source::Area(i) => plan.areas.push(i),
                }
            }
        }
        let mut plans: Vec<TargetPlan> = by_target.into_values().collect();
        let areas = &self.model.areas;
        for p in &plans {
            let target = &areas[p.target];
            if target.engine != EngineKind::Procedural {
                if let Some(&a) = p
                    .areas
                    .iter()
                    .find(|&&a| areas[a].engine == EngineKind::Procedural)
                {
                    let engine = if target.engine == EngineKind::Lazy {
                        "lazy"
                    } else {
                        "explicit"
                    };
                    return Err(KcapError::Unsupported(format!(
                        "fiber {} -> {}: a procedural area cannot fire into a {engine} area (its synapses are regenerated \
                         on demand, while the {engine} engine keeps its own stored wiring); make area {:?} procedural too",
                        areas[a].name, target.name, target.name
                    )));
                }
            }
            for &a in &p.areas {
                if let Some(pf) = &self.lazy.fibers[a][p.target].packed {
                    let beta = self.model.beta(Source::Area(a), p.target);
                    if let Some(b0) = pf.log_beta() {
                        if beta != 0.0 && beta != b0 {
                            return Err(KcapError::Unsupported(format!(
                                "fiber {} -> {} stores log-u8 weights for beta = {b0} but its beta is now {beta}; \
                                 use weights = \"f32\", \"f16\" or \"bf16\" for fibers whose beta changes",
                                areas[a].name, target.name
                            )));
                        }
                    }
                }
            }
        }
        for p in &mut plans {
            p.stims.sort_unstable();
            p.stims.dedup();
            p.areas.sort_unstable();
            p.areas.dedup();
        }
        Ok(plans)
    }

    /// One synchronous projection step (SPEC §2). On error nothing changes.
    ///
    /// Lazy and explicit targets are selected by the lazy engine (explicit
    /// fibers included), procedural targets by the procedural engine — each
    /// one's selection first refused, before anything is allocated, when
    /// its memory estimate exceeds what the machine has. Then lazy growth,
    /// the Hebbian updates of every target, and the synchronous swap.
    pub fn project(&mut self, proj: &Projection) -> Result<()> {
        let plans = self.plan(proj)?;
        let procedural: Vec<bool> = self
            .model
            .areas
            .iter()
            .map(|a| a.engine == EngineKind::Procedural)
            .collect();
        // Firing ids as the procedural engine reads them (only when needed).
        let firing: Vec<Vec<u64>> = if plans.iter().any(|p| procedural[p.target]) {
            self.areas.iter().map(AreaState::winner_ids).collect()
        } else {
            Vec::new()
        };
        let firing_refs: Vec<&[u64]> = firing.iter().map(Vec::as_slice).collect();
        let proc_active: Vec<&TargetPlan> = plans
            .iter()
            .filter(|p| procedural[p.target] && !self.areas[p.target].fixed)
            .collect();
        let threads = rayon::current_num_threads();
        for p in &proc_active {
            let est = self
                .procedural
                .memory_estimate(&self.model, p, &firing_refs, threads);
            check_memory(&self.model.areas[p.target].name, &est)?;
        }
        // Memory guard of lazy targets: each non-fixed one may grow by k neurons.
        let growing: Vec<usize> = plans
            .iter()
            .map(|p| p.target)
            .filter(|&t| !self.areas[t].fixed && self.model.areas[t].engine == EngineKind::Lazy)
            .collect();
        let need = growing
            .iter()
            .map(|&t| self.growth_bytes(t, self.model.areas[t].k as u64))
            .sum();
        Self::check_growth(need, || {
            let names: Vec<String> = growing
                .iter()
                .map(|&t| {
                    format!(
                        "{:?} (k = {})",
                        self.model.areas[t].name, self.model.areas[t].k
                    )
                })
                .collect();
            format!(
                "step {}: up to k new neurons, with their synapses, in area {}",
                self.step + 1,
                names.join(", ")
            )
        })?;
        self.step += 1;
        let (support, winners) = self.snapshot();
        let view = view_of(&self.model, &self.opts, self.step, &support, &winners);
        let trace = std::env::var_os("KCAP_TRACE").is_some();
        let t0 = std::time::Instant::now();
        // Phase 1: selection for every non-fixed target (lazy targets in
        // parallel over targets; a procedural target is parallel inside).
        let backend = self.backend.clone();
        let lazy = &self.lazy;
        let active: Vec<&TargetPlan> = plans
            .iter()
            .filter(|p| !procedural[p.target] && !self.areas[p.target].fixed)
            .collect();
        let selections: Result<Vec<_>> = if active.len() > 1 {
            use rayon::prelude::*;
            active
                .par_iter()
                .map(|p| lazy.select(&view, p, backend.as_ref()))
                .collect()
        } else {
            active
                .iter()
                .map(|p| lazy.select(&view, p, backend.as_ref()))
                .collect()
        };
        let pview = ProceduralView {
            model: &self.model,
            seed: self.opts.seed,
        };
        let progress = self.procedural.progress();
        progress.reset(
            proc_active
                .iter()
                .map(|p| procedural::block_count(self.model.areas[p.target].n))
                .sum(),
        );
        let proc_selections = selections.and_then(|lazy_sel| {
            // (selection, whether its Hebbian update is applied already)
            let proc_sel = proc_active
                .iter()
                .map(|p| {
                    if let Some(r) = backend.procedural_select_learn(
                        &mut self.procedural,
                        &pview,
                        p,
                        &firing_refs,
                    ) {
                        return r.map(|s| (s, true));
                    }
                    backend
                        .procedural_select(&self.procedural, &pview, p, &firing_refs)
                        .unwrap_or_else(|| self.procedural.select(&pview, p, &firing_refs))
                        .map(|s| (s, false))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((lazy_sel, proc_sel))
        });
        let (selections, proc_sel) = match proc_selections {
            Ok(s) => s,
            Err(e) => {
                self.step -= 1;
                return Err(e);
            }
        };
        let t1 = std::time::Instant::now();
        // Phases 2–3: growth of every lazy target, together.
        let growth: Vec<Growth> = selections
            .iter()
            .filter(|s| !s.new_inputs.is_empty())
            .map(|s| Growth {
                target: s.target,
                plan: active
                    .iter()
                    .find(|p| p.target == s.target)
                    .expect("plan of selection"),
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
        for plan in plans.iter().filter(|p| !procedural[p.target]) {
            let t = plan.target;
            let w = match &new_winners[t] {
                Some((w, _)) => w.as_slice(),
                None => self.areas[t].winners.as_slice(),
            };
            self.lazy
                .hebbian(&self.model, plan, &winners, w, self.step)?;
        }
        let mut new_ids: Vec<Option<Vec<u64>>> = vec![None; self.areas.len()];
        for plan in plans.iter().filter(|p| procedural[p.target]) {
            let t = plan.target;
            match proc_sel.iter().find(|s| s.0.target == t) {
                Some((_, true)) => Default::default(),
                Some((sel, false)) => {
                    self.procedural
                        .hebbian_selected(&pview, plan, &firing_refs, sel)?
                }
                None => self
                    .procedural
                    .hebbian(&pview, plan, &firing_refs, &firing[t])?,
            };
        }
        for (s, _) in proc_sel {
            new_ids[s.target] = Some(s.winners);
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
            let wide = is_wide(&self.model.areas[t]);
            let st = &mut self.areas[t];
            let first = if let Some(ids) = new_ids[t].take() {
                let new = st.mark_fired(&ids);
                st.store_winners(wide, ids);
                new
            } else if let Some((w, new)) = new_winners[t].take() {
                let new = match st.ever.as_mut() {
                    Some(ever) => mark_ever(ever, w.iter().map(|&i| i as u64)),
                    None => new,
                };
                st.winners = w;
                st.support += new;
                new
            } else {
                0
            };
            let record = st.save_winners;
            st.history.push(AreaStep {
                step: self.step,
                support: st.support,
                first_winners: first,
                winners: (record && !wide).then(|| st.winners.clone()),
                winners_u64: (record && wide).then(|| st.winners_u64.clone()),
            });
        }
        Ok(())
    }

    /// Fires a uniformly random subset of `count` current winners of `area`
    /// (drawn from the brain's generator) — set as the area's winners.
    pub fn subsample_winners(&mut self, area: &str, count: usize) -> Result<()> {
        let a = self.model.area_id(area)?;
        let cur = self.areas[a].winner_ids();
        if count > cur.len() {
            return Err(KcapError::BadWinners {
                area: area.into(),
                why: format!("cannot keep {count} of {} winners", cur.len()),
            });
        }
        let mut rng = Stream::keyed(self.opts.seed, &[purpose::SUBSAMPLE, self.step, a as u64]);
        let pick = crate::stats::sample_distinct(
            cur.len() as u64,
            count as u64,
            &mut rng,
            &mut Vec::new(),
        );
        let chosen = pick.into_iter().map(|i| cur[i as usize]).collect();
        let wide = is_wide(&self.model.areas[a]);
        self.areas[a].store_winners(wide, chosen);
        Ok(())
    }

    /// Stored connectivity: (synapses — of lazy and explicit fibers between
    /// areas, plus the potentiated synapses of every fiber into a procedural
    /// area —, stimulus entries of lazy and explicit areas, bytes of all of it).
    pub fn memory(&self) -> (usize, usize, usize) {
        let (a, s) = self.lazy.synapse_count();
        (
            a + self.procedural.learned_synapses(),
            s,
            self.lazy.bytes() + self.procedural.bytes(),
        )
    }

    /// Internal connectivity, for tests and reports.
    pub fn lazy_state(&self) -> &LazyState {
        &self.lazy
    }

    /// Learned weights of the fibers into procedural areas.
    pub fn procedural_state(&self) -> &ProceduralState {
        &self.procedural
    }

    /// Tuning of the procedural engine (e.g. its `record_limit`; results
    /// do not depend on it).
    pub fn procedural_state_mut(&mut self) -> &mut ProceduralState {
        &mut self.procedural
    }

    /// Live progress of the procedural work of the step in flight, readable
    /// from another thread while [`Brain::project`] runs (reset at the
    /// start of each step).
    pub fn step_progress(&self) -> Arc<StepProgress> {
        self.procedural.progress()
    }
}

/// Neurons of an area that the lazy and explicit engines hold synapses of:
/// all n of an explicit area, the support of a lazy one, none of a
/// procedural one (its graph is regenerated, never stored).
fn materialised(spec: &AreaSpec, st: &AreaState) -> u64 {
    match spec.engine {
        EngineKind::Explicit => spec.n,
        EngineKind::Lazy => st.support,
        EngineKind::Procedural => 0,
    }
}

/// Marks `ids` in the ever-fired bit set; returns how many were new.
fn mark_ever(ever: &mut [u64], ids: impl IntoIterator<Item = u64>) -> u64 {
    let mut new = 0;
    for i in ids {
        let (w, b) = (i as usize >> 6, i & 63);
        if ever[w] >> b & 1 == 0 {
            ever[w] |= 1 << b;
            new += 1;
        }
    }
    new
}

/// The format of the explicit fiber `a → b` and, for `auto`, the planner's reasons.
fn resolve_format(
    model: &Model,
    opts: &BrainOptions,
    overrides: &HashMap<(usize, usize), FormatChoice>,
    a: usize,
    b: usize,
) -> (FiberFormat, Vec<String>) {
    match overrides.get(&(a, b)).copied().unwrap_or(opts.format) {
        FormatChoice::Fixed(f) => (f, Vec::new()),
        FormatChoice::Auto => {
            let shape = FiberShape {
                n_src: model.areas[a].n,
                n_tgt: model.areas[b].n,
                p: model.p(Source::Area(a), b),
                beta: model.beta(Source::Area(a), b),
                w_max: model.w_max,
                k: model.areas[b].k as u64,
                steps: opts.planned_steps,
            };
            let pl = plan_format(&shape);
            (pl.format, pl.reasons)
        }
    }
}

/// The engine's view of a brain at a step.
fn view_of<'a>(
    model: &'a Model,
    opts: &BrainOptions,
    step: u64,
    support: &'a [u64],
    winners: &'a [Vec<u32>],
) -> View<'a> {
    View {
        model,
        seed: opts.seed,
        step,
        tail: opts.tail,
        support,
        winners,
    }
}
