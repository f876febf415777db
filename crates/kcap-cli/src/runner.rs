//! Runs a validated [`Experiment`] on a [`kcap::Brain`] and collects what
//! happened, step by step.
//!
//! Design decision: the runner keeps its own per-step records (support and
//! first-time winners from the brain's history entry of that step, the
//! winner list only where the file asks for it) and, for every area, a copy
//! of the winners of its last two target steps — an O(k) copy per target per
//! step, negligible next to the step itself — so the last-two-step overlap
//! is always available without switching the library's winner recording on
//! and off. Errors while building the brain are config errors (exit 2) that
//! point at the line of the item; errors while stepping are runtime errors
//! (exit 1) that name the step.
//!
//! Checkpoints: the brain goes into `checkpoint.kcap` (library format) and
//! the runner's own state — step number, per-step records, last-two winners
//! — into the JSON sidecar `checkpoint.json`, both written atomically, brain
//! first. A resumed run skips the schedule by the brain's step counter: an
//! entry with steps before that point already applied its actions (they live
//! in the brain's state), so only its remaining repetitions run.

use crate::config::ConfigError;
use crate::plan::{Action, Experiment, ScheduleEntry};
use crate::progress::Ticker;
use anyhow::{anyhow, Result};
use indicatif::ProgressBar;
use kcap::backend::Backend;
use kcap::{Brain, BrainOptions};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// What one area did in one step in which it was a target.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AreaRecord {
    /// Index into [`Experiment::areas`].
    pub area: usize,
    /// Neurons that ever fired, after the step.
    pub support: u64,
    /// Winners of this step that never fired before.
    pub first_winners: u64,
    /// The winners (sorted ids; u64, as procedural areas have up to 10¹²
    /// neurons), when the area's `save_winners` is on.
    pub winners: Option<Vec<u64>>,
}

/// One projection step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// Global step number, 1-based.
    pub step: u64,
    /// Index of the schedule entry it belongs to.
    pub entry: usize,
    /// 1-based repetition within that entry.
    pub repetition: u64,
    /// Wall time of the projection step.
    pub seconds: f64,
    /// Synaptic events of the step in BENCH.md's unit: Σ over the step's
    /// non-fixed targets and their sources of (firing neurons × p × n of
    /// the target) — the work a step of the explicit or procedural engine does.
    #[serde(default)]
    pub events: f64,
    /// The step's target areas.
    pub areas: Vec<AreaRecord>,
}

/// Summary of one area over the whole run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AreaSummary {
    pub name: String,
    pub n: u64,
    pub k: u64,
    /// Final support (neurons that ever fired).
    pub support: u64,
    /// Size of the final winner set.
    pub winners: usize,
    /// Steps in which the area was a target.
    pub target_steps: u64,
    /// The last step with first-time winners when the area had none after
    /// it (0: never had any); `None` when the last step still had some
    /// (not converged) or the area was never a target.
    pub converged_after: Option<u64>,
    /// Winners shared by the area's last two target steps.
    pub last_overlap: Option<u64>,
    /// Wall time of the steps in which the area was a target.
    pub seconds: f64,
}

/// Connectivity stored by the brain at the end of the run.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    pub area_synapses: usize,
    pub stimulus_entries: usize,
    pub bytes: usize,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub steps: Vec<StepRecord>,
    pub summary: Vec<AreaSummary>,
    /// Building the brain.
    pub setup_seconds: f64,
    /// Sum of the projection steps' wall times.
    pub step_seconds: f64,
    /// From the start of `build_brain` to the end of the last step.
    pub total_seconds: f64,
    pub threads: usize,
    /// The backend the run computed on ("cpu", "cuda:0").
    pub device: String,
    pub memory: Memory,
    /// Format and memory of every stored (explicit ↔ explicit) fiber.
    pub fibers: Vec<kcap::FiberMemory>,
    /// Whether the run stopped early (Ctrl-C) after the last recorded step.
    pub interrupted: bool,
}

/// The runner's own progress, saved next to the brain checkpoint as
/// `checkpoint.json` (same folder and stem as the `.kcap` file).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Format marker of the sidecar.
    pub format: String,
    /// Experiment name (informational).
    pub experiment: String,
    /// Global steps done; equals the brain's step counter.
    pub step: u64,
    /// Areas of the experiment, in file order (checked on resume).
    pub areas: Vec<String>,
    /// Sum of the recorded steps' wall times.
    pub step_seconds: f64,
    /// Per-step records so far.
    pub steps: Vec<StepRecord>,
    /// Winners of each area's last two target steps.
    pub last_two: Vec<LastTwo>,
}

pub const PROGRESS_FORMAT: &str = "kcap run progress 1";

/// Checkpointing and interruption options of a run.
#[derive(Default)]
pub struct RunControl<'a> {
    /// The checkpoint file (`DIR/checkpoint.kcap`); the sidecar is the
    /// same path with extension `json`. Written every `every` steps and on
    /// interruption.
    pub checkpoint: Option<std::path::PathBuf>,
    /// Write a checkpoint after every `every` global steps (0: never).
    pub every: u64,
    /// Checked after every step: when set, write a checkpoint and stop.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
    /// Progress restored from a checkpoint (the brain passed to
    /// [`run_brain`] must be the checkpoint's brain).
    pub resume: Option<Progress>,
}

/// Path of the sidecar of checkpoint `ckpt`.
pub fn sidecar_path(ckpt: &std::path::Path) -> std::path::PathBuf {
    ckpt.with_extension("json")
}

/// Writes the brain checkpoint and then its progress sidecar, both atomically.
pub fn write_checkpoint(
    path: &std::path::Path,
    exp: &Experiment,
    brain: &Brain,
    step_seconds: f64,
    steps: &[StepRecord],
    last_two: &[LastTwo],
) -> Result<()> {
    let prog = Progress {
        format: PROGRESS_FORMAT.into(),
        experiment: exp.name.clone(),
        step: brain.steps(),
        areas: exp.areas.clone(),
        step_seconds,
        steps: steps.to_vec(),
        last_two: last_two.to_vec(),
    };
    let json = serde_json::to_vec(&prog)?;
    kcap::checkpoint::save(brain, path)
        .map_err(|e| anyhow!("writing checkpoint {}: {e}", path.display()))?;
    let side = sidecar_path(path);
    kcap::checkpoint::write_atomic(&side, &json)
        .map_err(|e| anyhow!("writing checkpoint {}: {e}", side.display()))?;
    Ok(())
}

fn at(exp: &Experiment, span: Range<usize>, e: impl std::fmt::Display) -> ConfigError {
    ConfigError(vec![exp.source.error_at(span, e.to_string())])
}

/// Builds the brain the file declares. A library error becomes a config
/// error at the line of the item that caused it.
pub fn build_brain(exp: &Experiment) -> Result<Brain, ConfigError> {
    build_brain_on(exp, Arc::new(kcap::backend::cpu::Cpu))
}

/// [`build_brain`] with `backend` attached before any area is added, so
/// that explicit areas generate their fibers in its memory (a GPU's).
pub fn build_brain_on(exp: &Experiment, backend: Arc<dyn Backend>) -> Result<Brain, ConfigError> {
    let raw = &exp.raw;
    let b = raw.brain.get_ref();
    let opts = BrainOptions {
        seed: b.seed,
        tail: b.tail.unwrap_or_default(),
        save_winners: false,
        w_max: b.w_max.as_ref().map(|w| *w.get_ref()),
        // Options the file does not set keep the library's defaults.
        ..BrainOptions::default()
    };
    let mut brain =
        Brain::with_options(*b.p.get_ref(), opts).map_err(|e| at(exp, raw.brain.span(), e))?;
    brain
        .set_backend(backend)
        .map_err(|e| at(exp, raw.brain.span(), e))?;
    brain.set_plasticity(b.plasticity.unwrap_or(true));
    // Before any area exists: explicit areas generate their fibers when added.
    brain.set_planned_steps(Some(exp.total_steps));
    if let Some(f) = exp.brain_format {
        brain.set_default_format(f);
    }
    // Stimuli first, so an explicit area generates its stimulus fibers once,
    // when it is added; ids (and so every random draw) do not depend on the
    // order in which areas and stimuli are added.
    for s in &raw.stimulus {
        let sr = s.get_ref();
        brain
            .add_stimulus(sr.name.get_ref(), *sr.size.get_ref())
            .map_err(|e| at(exp, sr.name.span(), e))?;
    }
    for a in &raw.area {
        let ar = a.get_ref();
        let engine = ar.engine.as_ref().map(|e| *e.get_ref()).unwrap_or_default();
        let span = ar.engine.as_ref().map_or(ar.name.span(), |e| e.span());
        brain
            .add_area_with(
                ar.name.get_ref(),
                *ar.n.get_ref(),
                *ar.k.get_ref() as usize,
                *ar.beta.get_ref(),
                engine,
            )
            .map_err(|e| at(exp, span, e))?;
    }
    for (f, format) in raw.fiber.iter().zip(&exp.fiber_formats) {
        let fr = f.get_ref();
        if let (Some(fmt), Some(choice)) = (&fr.format, format) {
            brain
                .set_fiber_format(fr.from.get_ref(), fr.to.get_ref(), *choice)
                .map_err(|e| at(exp, fmt.span(), e))?;
        }
        if let Some(p) = &fr.p {
            brain
                .set_fiber_p(fr.from.get_ref(), fr.to.get_ref(), *p.get_ref())
                .map_err(|e| at(exp, p.span(), e))?;
        }
        if let Some(beta) = &fr.beta {
            brain
                .set_beta(fr.from.get_ref(), fr.to.get_ref(), *beta.get_ref())
                .map_err(|e| at(exp, beta.span(), e))?;
        }
    }
    Ok(brain)
}

/// Whether area `i` saves its winners into the results.
pub fn saves_winners(exp: &Experiment, i: usize) -> bool {
    let a = exp.raw.area[i].get_ref();
    a.save_winners
        .or(exp.raw.brain.get_ref().save_winners)
        .unwrap_or(false)
}

fn apply(brain: &mut Brain, action: &Action) -> kcap::Result<()> {
    match action {
        Action::Plasticity(on) => {
            brain.set_plasticity(*on);
            Ok(())
        }
        Action::SetBeta { from, to, beta } => brain.set_beta(from, to, *beta),
        Action::Unfix(a) => brain.unfix(a),
        Action::Fix(a) => brain.fix(a),
        Action::Activate { area, index } => brain.activate(area, *index),
        Action::Subsample { area, fraction } => {
            let have = brain.area(area)?.winner_count();
            let keep = ((have as f64 * fraction).round() as usize).clamp(1, have.max(1));
            brain.subsample_winners(area, keep)
        }
    }
}

fn step_context(entry: &ScheduleEntry, global: u64, rep: u64) -> String {
    format!(
        "step {global} ({}, repetition {rep} of {})",
        entry.describe(),
        entry.repeat
    )
}

/// Puts `brain` on the experiment's device (opening the GPU and compiling
/// its kernels now, so that a missing driver or device is reported before
/// anything runs or is written).
pub fn attach_device(exp: &Experiment, brain: &mut Brain) -> Result<()> {
    brain.set_backend(exp.device.backend()?)?;
    Ok(())
}

/// Opens the experiment's device and builds the brain on it
/// ([`build_brain_on`]): explicit fibers are generated on the GPU directly.
pub fn build_brain_on_device(exp: &Experiment) -> Result<Brain> {
    let backend = exp.device.backend()?;
    Ok(build_brain_on(exp, backend)?)
}

/// `kcap run` without output files or checkpoints: builds the brain,
/// attaches the experiment's device and runs the whole schedule (used by
/// the fuzz targets and the property tests).
pub fn run(exp: &Experiment, progress: Option<&ProgressBar>) -> Result<RunOutcome> {
    let start = Instant::now();
    let brain = build_brain_on_device(exp)?;
    run_brain(exp, brain, start, progress, RunControl::default())
}

/// Runs the schedule on a brain built by [`build_brain`] at `start` (the
/// instant timing starts from; setup time is measured up to now).
/// `progress`, when given (a [`crate::progress::bar`]), is advanced through
/// every projection step. Errors name the step.
pub fn run_brain(
    exp: &Experiment,
    mut brain: Brain,
    start: Instant,
    progress: Option<&ProgressBar>,
    control: RunControl,
) -> Result<RunOutcome> {
    let setup_seconds = start.elapsed().as_secs_f64();
    let n_areas = exp.areas.len();
    let save: Vec<bool> = (0..n_areas).map(|i| saves_winners(exp, i)).collect();
    // Winners of each area's last two target steps: (previous, current).
    let mut last_two: Vec<LastTwo> = vec![(None, None); n_areas];
    let mut steps = Vec::with_capacity(exp.total_steps.min(1 << 16) as usize);
    let mut step_seconds = 0.0;
    // Steps already done (resumed run): the brain's step counter.
    let done = brain.steps();
    if let Some(p) = control.resume {
        steps = p.steps;
        last_two = p.last_two;
        step_seconds = p.step_seconds;
    }
    let ticker = progress.map(|pb| Ticker::start(pb, brain.step_progress(), done));
    let mut interrupted = false;
    // Global steps before the current entry.
    let mut before: u64 = 0;
    'schedule: for entry in &exp.schedule {
        let entry_before = before;
        before += if entry.fire.is_some() {
            entry.repeat
        } else {
            0
        };
        // An entry with steps done before the checkpoint was started: its
        // actions are already in the brain's state; continue its repetitions.
        let first_rep = if entry_before < done {
            if entry.fire.is_none() {
                continue;
            }
            done - entry_before + 1
        } else {
            1
        };
        if first_rep > 1 && first_rep > entry.repeat {
            continue;
        }
        for action in entry.actions.iter().filter(|_| first_rep == 1) {
            apply(&mut brain, action).map_err(|e| {
                anyhow!(
                    "{}: {}: before step {}: {e}",
                    exp.source.display,
                    entry.describe(),
                    brain.steps() + 1
                )
            })?;
        }
        let Some(proj) = &entry.fire else { continue };
        if let Some(t) = &ticker {
            t.set_label(
                entry
                    .label
                    .clone()
                    .unwrap_or_else(|| format!("entry {}", entry.index + 1)),
            );
        }
        for rep in first_rep..=entry.repeat {
            let global = brain.steps() + 1;
            let events = step_events(&brain, proj).unwrap_or(0.0);
            let t0 = Instant::now();
            brain.project(proj).map_err(|e| {
                anyhow!(
                    "{}: {}: {e}",
                    exp.source.display,
                    step_context(entry, global, rep)
                )
            })?;
            let seconds = t0.elapsed().as_secs_f64();
            step_seconds += seconds;
            let mut areas = Vec::with_capacity(entry.targets.len());
            for &a in &entry.targets {
                let name = &exp.areas[a];
                let st = brain.area(name)?;
                let h = st
                    .history
                    .last()
                    .filter(|h| h.step == global)
                    .ok_or_else(|| {
                        anyhow!(
                            "internal error: no history entry for area {name:?} at step {global}"
                        )
                    })?;
                let ids = st.winner_ids();
                areas.push(AreaRecord {
                    area: a,
                    support: h.support,
                    first_winners: h.first_winners,
                    winners: save[a].then(|| ids.clone()),
                });
                let slot = &mut last_two[a];
                slot.0 = slot.1.take();
                slot.1 = Some(ids);
            }
            steps.push(StepRecord {
                step: global,
                entry: entry.index,
                repetition: rep,
                seconds,
                events,
                areas,
            });
            if let Some(t) = &ticker {
                t.step_done(global);
            }
            let stop = control
                .stop
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
            let periodic = control.every > 0 && global.is_multiple_of(control.every);
            if let Some(path) = &control.checkpoint {
                if stop || periodic {
                    write_checkpoint(path, exp, &brain, step_seconds, &steps, &last_two)?;
                }
            }
            if stop {
                interrupted = true;
                break 'schedule;
            }
        }
    }
    drop(ticker);
    let total_seconds = start.elapsed().as_secs_f64();
    let summary = summarize(exp, &brain, &steps, &last_two)?;
    let (area_synapses, stimulus_entries, bytes) = brain.memory();
    Ok(RunOutcome {
        steps,
        summary,
        setup_seconds,
        step_seconds,
        total_seconds,
        threads: rayon::current_num_threads(),
        device: brain.backend_name(),
        memory: Memory {
            area_synapses,
            stimulus_entries,
            bytes,
        },
        fibers: brain.memory_report(),
        interrupted,
    })
}

pub type LastTwo = (Option<Vec<u64>>, Option<Vec<u64>>);

/// Expected synaptic events of one projection step (see [`StepRecord::events`]).
pub fn step_events(brain: &Brain, proj: &kcap::Projection) -> kcap::Result<f64> {
    let model = brain.model();
    let mut events = 0.0;
    for (src, targets) in &proj.edges {
        let s = model.source(src)?;
        let rows = match s {
            kcap::Source::Stim(i) => model.stimuli[i].size,
            kcap::Source::Area(a) => brain.area(&model.areas[a].name)?.winner_count() as u64,
        } as f64;
        for t in targets {
            let ti = model.area_id(t)?;
            if !brain.area(t)?.fixed {
                events += rows * model.p(s, ti) * model.areas[ti].n as f64;
            }
        }
    }
    Ok(events)
}

fn summarize(
    exp: &Experiment,
    brain: &Brain,
    steps: &[StepRecord],
    last_two: &[LastTwo],
) -> Result<Vec<AreaSummary>> {
    let mut out = Vec::with_capacity(exp.areas.len());
    for (i, name) in exp.areas.iter().enumerate() {
        let spec = brain.area_spec(name)?;
        let state = brain.area(name)?;
        let mut target_steps = 0;
        let mut seconds = 0.0;
        let mut last_new: Option<u64> = None;
        let mut last_step: Option<u64> = None;
        for s in steps {
            if let Some(r) = s.areas.iter().find(|r| r.area == i) {
                target_steps += 1;
                seconds += s.seconds;
                last_step = Some(s.step);
                if r.first_winners > 0 {
                    last_new = Some(s.step);
                }
            }
        }
        let converged_after = match (last_step, last_new) {
            (None, _) => None,
            (Some(_), None) => Some(0),
            (Some(l), Some(n)) if n < l => Some(n),
            _ => None,
        };
        let last_overlap = match &last_two[i] {
            (Some(a), Some(b)) => Some(kcap::ops::overlap(a, b) as u64),
            _ => None,
        };
        out.push(AreaSummary {
            name: name.clone(),
            n: spec.n,
            k: spec.k as u64,
            support: state.support,
            winners: state.winner_count(),
            target_steps,
            converged_after,
            last_overlap,
            seconds,
        });
    }
    Ok(out)
}
