//! Semantic validation: from a parsed file to a checked, resolved
//! [`Experiment`].
//!
//! Design decision: everything that can be known without simulating is
//! checked here, *before* any brain exists — names, ranges, and a static
//! walk through the schedule that tracks which areas have winners and which
//! are fixed at each step (an area gets winners by being a non-fixed target
//! of `fire`, or by `activate`), so "fires from an area with no winners"
//! is a config error with a line, not a failure halfway through a long run.
//! All errors of a file are collected and reported together. What only the
//! library knows (e.g. an engine that does not exist yet) is caught when
//! the brain is built ([`crate::runner::build_brain`]), still with a line.

use crate::config::{ConfigError, Diagnostic, RawExperiment, RawFormat, SourceFile};
use crate::device::Device;
use kcap::format::{Accumulator, IndexFormat, Layout, Rounding, WeightFormat};
use kcap::{EngineKind, FiberFormat, FormatChoice, Projection};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use toml::Spanned;

fn engine_of(a: &crate::config::RawArea) -> EngineKind {
    a.engine.as_ref().map(|e| *e.get_ref()).unwrap_or_default()
}

/// Largest n the library accepts per area.
const MAX_N: u64 = kcap::model::MAX_N;

/// Most projection steps one experiment may run: the results keep a record
/// of every step (about 100 bytes and more per step in memory), and at the
/// fastest rates 10^8 steps take a day.
pub const MAX_TOTAL_STEPS: u64 = 100_000_000;

/// One action of a schedule entry, executed before its projection steps,
/// in the order of this enum's variants.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Brain-wide plasticity switch.
    Plasticity(bool),
    /// Beta of the fiber `from → to`.
    SetBeta {
        from: String,
        to: String,
        beta: f64,
    },
    Unfix(String),
    Fix(String),
    /// Winners := assembly `index` (neurons `[index·k, (index+1)·k)`), fixed.
    Activate {
        area: String,
        index: u64,
    },
    /// Keep `round(fraction · |winners|)` (at least 1) random winners.
    Subsample {
        area: String,
        fraction: f64,
    },
}

/// One resolved `[[step]]` entry.
#[derive(Debug, Clone)]
pub struct ScheduleEntry {
    /// 0-based position in the file.
    pub index: usize,
    pub label: Option<String>,
    /// Line of the `[[step]]` entry in the file.
    pub line: usize,
    pub actions: Vec<Action>,
    /// What fires in each projection step (None: actions only).
    pub fire: Option<Projection>,
    /// Target areas of `fire`, sorted by area order.
    pub targets: Vec<usize>,
    /// Number of projection steps (0 when there is no `fire`).
    pub repeat: u64,
}

impl ScheduleEntry {
    /// "schedule entry 3 ("label", line 12)" — for messages.
    pub fn describe(&self) -> String {
        match &self.label {
            Some(l) => format!(
                "schedule entry {} ({l:?}, line {})",
                self.index + 1,
                self.line
            ),
            None => format!("schedule entry {} (line {})", self.index + 1, self.line),
        }
    }
}

/// A validated experiment, ready to run.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub source: SourceFile,
    pub raw: RawExperiment,
    /// Area names in declaration order (index = library area id).
    pub areas: Vec<String>,
    pub schedule: Vec<ScheduleEntry>,
    /// Total number of projection steps.
    pub total_steps: u64,
    /// `[brain].format`, resolved.
    pub brain_format: Option<FormatChoice>,
    /// `format` of each `[[fiber]]` (same order as the file), resolved.
    pub fiber_formats: Vec<Option<FormatChoice>>,
    /// `[brain] device` (or the `--device` option, which overrides it).
    pub device: Device,
}

impl Experiment {
    /// True when no area is explicit: building the brain then allocates
    /// nothing (lazy and procedural areas store only what fires), while
    /// explicit areas generate their connectivity up front.
    pub fn cheap_to_build(&self) -> bool {
        self.raw
            .area
            .iter()
            .all(|a| engine_of(a.get_ref()) != EngineKind::Explicit)
    }

    /// Keeps only the first `steps` projection steps of the schedule (and
    /// the actions before them): entries past that point are dropped, the
    /// last one kept runs fewer repetitions.
    pub fn truncate(&mut self, steps: u64) {
        let mut left = steps;
        self.schedule.retain_mut(|e| {
            if left == 0 {
                return false;
            }
            if e.fire.is_some() {
                e.repeat = e.repeat.min(left);
                left -= e.repeat;
            }
            true
        });
        self.total_steps = self.total_steps.min(steps);
    }

    /// Parses and validates an experiment file's text. `default_name` is
    /// used when the file has no `name` key.
    pub fn from_source(source: SourceFile, default_name: &str) -> Result<Experiment, ConfigError> {
        let raw = source.parse()?;
        Checker::new(&source).check(raw, default_name, source.clone())
    }
}

struct Checker<'a> {
    src: &'a SourceFile,
    errors: Vec<Diagnostic>,
    areas: HashMap<String, usize>,
    area_k: Vec<u64>,
    area_n: Vec<u64>,
    stimuli: HashSet<String>,
}

fn check_name(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("must not be empty")
    } else if s.chars().any(|c| c.is_control()) {
        Some("must not contain control characters")
    } else {
        None
    }
}

impl<'a> Checker<'a> {
    fn new(src: &'a SourceFile) -> Self {
        Checker {
            src,
            errors: Vec::new(),
            areas: HashMap::new(),
            area_k: vec![],
            area_n: vec![],
            stimuli: HashSet::new(),
        }
    }

    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errors.push(self.src.error_at(span, msg));
    }

    fn p(&mut self, what: &str, p: &Spanned<f64>) {
        let v = *p.get_ref();
        if !(v > 0.0 && v <= 1.0) {
            self.err(
                p.span(),
                format!(
                    "{what} = {v} is outside (0, 1]: a connection probability must be > 0 and <= 1"
                ),
            );
        }
    }

    fn beta(&mut self, what: &str, b: &Spanned<f64>) {
        let v = *b.get_ref();
        if !(v >= 0.0 && v.is_finite()) {
            self.err(
                b.span(),
                format!("{what} = {v} is invalid: plasticity beta must be finite and >= 0"),
            );
        }
    }

    /// Resolves a storage format; errors point at the offending part.
    fn format(&mut self, f: &Spanned<RawFormat>) -> Option<FormatChoice> {
        fn part<T: std::str::FromStr<Err = kcap::KcapError>>(
            c: &mut Checker,
            v: &Option<Spanned<String>>,
            into: &mut T,
        ) -> bool {
            match v {
                None => true,
                Some(s) => match s.get_ref().parse::<T>() {
                    Ok(x) => {
                        *into = x;
                        true
                    }
                    Err(e) => {
                        c.err(s.span(), format!("format: {e}"));
                        false
                    }
                },
            }
        }
        match f.get_ref() {
            RawFormat::Named(s) if s == "auto" => Some(FormatChoice::Auto),
            RawFormat::Named(s) if s == "reference" => {
                Some(FormatChoice::Fixed(FiberFormat::REFERENCE))
            }
            RawFormat::Named(s) => {
                self.err(f.span(), format!("unknown format {s:?}: expected \"auto\", \"reference\" or a table {{ weights, indices, layout, rounding, accumulator }}"));
                None
            }
            RawFormat::Parts(p) => {
                let mut ff = FiberFormat::REFERENCE;
                let ok = part::<WeightFormat>(self, &p.weights, &mut ff.weights)
                    & part::<IndexFormat>(self, &p.indices, &mut ff.indices)
                    & part::<Layout>(self, &p.layout, &mut ff.layout)
                    & part::<Rounding>(self, &p.rounding, &mut ff.rounding)
                    & part::<Accumulator>(self, &p.accumulator, &mut ff.accumulator);
                ok.then_some(FormatChoice::Fixed(ff))
            }
        }
    }

    fn area(&mut self, name: &Spanned<String>, role: &str) -> Option<usize> {
        let n = name.get_ref();
        if let Some(&a) = self.areas.get(n) {
            return Some(a);
        }
        let why = if self.stimuli.contains(n) {
            format!("{n:?} is a stimulus, but {role} must be an area")
        } else {
            format!("unknown area {n:?} ({role}); {}", self.known_areas())
        };
        self.err(name.span(), why);
        None
    }

    fn source(&mut self, name: &Spanned<String>, role: &str) -> bool {
        let n = name.get_ref();
        if self.areas.contains_key(n) || self.stimuli.contains(n) {
            return true;
        }
        let msg = format!(
            "unknown area or stimulus {n:?} ({role}); {}, stimuli: {}",
            self.known_areas(),
            self.list(self.stimuli.iter())
        );
        self.err(name.span(), msg);
        false
    }

    fn known_areas(&self) -> String {
        format!("areas: {}", self.list(self.areas.keys()))
    }

    fn list<'s>(&self, it: impl Iterator<Item = &'s String>) -> String {
        let mut v: Vec<&String> = it.collect();
        v.sort();
        if v.is_empty() {
            "none".into()
        } else {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    fn declare(&mut self, name: &Spanned<String>, seen: &mut HashMap<String, usize>) -> bool {
        let n = name.get_ref();
        if let Some(why) = check_name(n) {
            self.err(name.span(), format!("name {n:?} {why}"));
            return false;
        }
        if let Some(&line) = seen.get(n) {
            self.err(
                name.span(),
                format!("name {n:?} is already used by another area or stimulus (line {line})"),
            );
            return false;
        }
        seen.insert(n.clone(), self.src.line_col(name.span().start).0);
        true
    }

    fn check(
        mut self,
        raw: RawExperiment,
        default_name: &str,
        source: SourceFile,
    ) -> Result<Experiment, ConfigError> {
        let name = match &raw.name {
            Some(n) => {
                let s = n.get_ref();
                if s.is_empty()
                    || s.contains(['/', '\\'])
                    || s == "."
                    || s == ".."
                    || s.chars().any(|c| c.is_control())
                {
                    self.err(n.span(), format!("experiment name {s:?} must be a plain file name (it names the default output folder)"));
                }
                s.clone()
            }
            None => default_name.to_string(),
        };
        // [brain]
        let brain = raw.brain.get_ref();
        self.p("p", &brain.p);
        if let Some(w) = &brain.w_max {
            let v = *w.get_ref();
            if v.is_nan() || v < 1.0 {
                self.err(w.span(), format!("w_max = {v} is invalid: the weight cap must be >= 1 (synapses start at weight 1)"));
            }
        }
        let brain_format = brain.format.as_ref().and_then(|f| self.format(f));
        let device = match &brain.device {
            None => Device::Cpu,
            Some(d) => d.get_ref().parse::<Device>().unwrap_or_else(|e| {
                self.err(d.span(), format!("device: {e}"));
                Device::Cpu
            }),
        };
        // Names first, so that references can be resolved in any order.
        // Declared in file order, so a duplicate is reported at its second use.
        let mut decls: Vec<(&Spanned<String>, Option<usize>)> = raw
            .area
            .iter()
            .enumerate()
            .map(|(i, a)| (&a.get_ref().name, Some(i)))
            .collect();
        decls.extend(raw.stimulus.iter().map(|s| (&s.get_ref().name, None)));
        decls.sort_by_key(|(n, _)| n.span().start);
        let mut seen = HashMap::new();
        for (name, area) in decls {
            if self.declare(name, &mut seen) {
                match area {
                    Some(i) => self.areas.insert(name.get_ref().clone(), i),
                    None => self.stimuli.insert(name.get_ref().clone()).then_some(0),
                };
            }
        }
        let areas: Vec<String> = raw
            .area
            .iter()
            .map(|a| a.get_ref().name.get_ref().clone())
            .collect();
        self.area_n = raw.area.iter().map(|a| *a.get_ref().n.get_ref()).collect();
        self.area_k = raw.area.iter().map(|a| *a.get_ref().k.get_ref()).collect();
        for a in &raw.area {
            let a = a.get_ref();
            let (nm, n, k) = (a.name.get_ref(), *a.n.get_ref(), *a.k.get_ref());
            if n > MAX_N {
                self.err(
                    a.n.span(),
                    format!("area {nm:?}: n = {n} is too large (at most {MAX_N} neurons per area)"),
                );
            }
            if k == 0 || k >= n {
                self.err(
                    a.k.span(),
                    format!("area {nm:?}: k = {k} must be at least 1 and smaller than n = {n}"),
                );
            } else if k > (u32::MAX / 4) as u64 {
                self.err(
                    a.k.span(),
                    format!("area {nm:?}: k = {k} is too large (at most 2^30)"),
                );
            }
            self.beta(&format!("beta of area {nm:?}"), &a.beta);
        }
        for s in &raw.stimulus {
            let s = s.get_ref();
            let size = *s.size.get_ref();
            if size == 0 || size > u32::MAX as u64 {
                self.err(
                    s.size.span(),
                    format!(
                        "stimulus {:?}: size = {size} must be between 1 and 2^32 - 1",
                        s.name.get_ref()
                    ),
                );
            }
        }
        let mut fibers: HashMap<(String, String), usize> = HashMap::new();
        let mut fiber_formats = Vec::new();
        for f in &raw.fiber {
            let fr = f.get_ref();
            let ok = self.source(&fr.from, "`from` of a fiber")
                & self.area(&fr.to, "`to` of a fiber").is_some();
            let what = format!("fiber {} -> {}", fr.from.get_ref(), fr.to.get_ref());
            if let Some(p) = &fr.p {
                self.p(&format!("p of {what}"), p);
            }
            if let Some(b) = &fr.beta {
                self.beta(&format!("beta of {what}"), b);
            }
            if fr.p.is_none() && fr.beta.is_none() && fr.format.is_none() {
                self.err(
                    f.span(),
                    format!("{what} sets nothing: give p, beta or format"),
                );
            }
            fiber_formats.push(fr.format.as_ref().and_then(|fmt| {
                let explicit = |c: &Self, n: &Spanned<String>| {
                    c.areas.get(n.get_ref()).is_some_and(|&i| {
                        raw.area[i].get_ref().engine.as_ref().is_some_and(|e| *e.get_ref() == EngineKind::Explicit)
                    })
                };
                if ok && !(explicit(&self, &fr.from) && explicit(&self, &fr.to)) {
                    self.err(fmt.span(), format!("{what}: a storage format applies only to fibers between two explicit areas (engine = \"explicit\")"));
                }
                self.format(fmt)
            }));
            let key = (fr.from.get_ref().clone(), fr.to.get_ref().clone());
            let line = self.src.line_col(fr.from.span().start).0;
            if let Some(prev) = fibers.insert(key, line).filter(|_| ok) {
                self.err(
                    fr.from.span(),
                    format!("{what} is already configured at line {prev}"),
                );
            }
        }
        let schedule = self.schedule(&raw);
        if raw.step.is_empty() {
            let span = raw.brain.span();
            self.err(
                span.start..span.start,
                "the experiment has no [[step]] entries: nothing would run",
            );
        }
        if !self.errors.is_empty() {
            self.errors.sort_by_key(|d| (d.line, d.col));
            return Err(ConfigError(self.errors));
        }
        let total_steps = schedule
            .iter()
            .fold(0u64, |t, e| t.saturating_add(e.repeat));
        Ok(Experiment {
            name,
            source,
            raw,
            areas,
            schedule,
            total_steps,
            brain_format,
            fiber_formats,
            device,
        })
    }

    /// Resolves the schedule while tracking, statically, which areas have
    /// winners and which are fixed.
    fn schedule(&mut self, raw: &RawExperiment) -> Vec<ScheduleEntry> {
        let n_areas = raw.area.len();
        let mut has_winners = vec![false; n_areas];
        let mut fixed = vec![false; n_areas];
        let mut out = Vec::new();
        let mut total_steps = 0u64;
        for (index, st) in raw.step.iter().enumerate() {
            let line = self.src.line_col(st.span().start).0;
            let s = st.get_ref();
            let mut actions = Vec::new();
            if let Some(on) = s.plasticity {
                actions.push(Action::Plasticity(on));
            }
            for sb in &s.set_beta.0 {
                let ok = self.source(&sb.from, "`from` of set_beta")
                    & self.area(&sb.to, "`to` of set_beta").is_some();
                self.beta(
                    &format!("set_beta {} -> {}", sb.from.get_ref(), sb.to.get_ref()),
                    &sb.beta,
                );
                if ok {
                    actions.push(Action::SetBeta {
                        from: sb.from.get_ref().clone(),
                        to: sb.to.get_ref().clone(),
                        beta: *sb.beta.get_ref(),
                    });
                }
            }
            for a in &s.unfix {
                if let Some(i) = self.area(a, "unfix") {
                    fixed[i] = false;
                    actions.push(Action::Unfix(a.get_ref().clone()));
                }
            }
            for a in &s.fix {
                if let Some(i) = self.area(a, "fix") {
                    fixed[i] = true;
                    actions.push(Action::Fix(a.get_ref().clone()));
                }
            }
            for act in &s.activate.0 {
                if let Some(i) = self.area(&act.area, "activate") {
                    let (idx, k, n) = (*act.index.get_ref(), self.area_k[i], self.area_n[i]);
                    if (idx as u128 + 1) * k as u128 > n as u128 {
                        self.err(act.index.span(), format!("activate index {idx} of area {:?} is too large: (index + 1) * k = {} exceeds n = {n}", act.area.get_ref(), (idx as u128 + 1) * k as u128));
                    }
                    has_winners[i] = true;
                    fixed[i] = true;
                    actions.push(Action::Activate {
                        area: act.area.get_ref().clone(),
                        index: idx,
                    });
                }
            }
            for sub in &s.subsample.0 {
                let fr = *sub.fraction.get_ref();
                if !(fr > 0.0 && fr <= 1.0) {
                    self.err(
                        sub.fraction.span(),
                        format!("subsample fraction = {fr} must lie in (0, 1]"),
                    );
                }
                if let Some(i) = self.area(&sub.area, "subsample") {
                    if !has_winners[i] {
                        self.err(sub.area.span(), format!("cannot subsample area {:?}: it has no winners at this point of the schedule (make it a target of `fire` or `activate` it in an earlier step)", sub.area.get_ref()));
                    }
                    actions.push(Action::Subsample {
                        area: sub.area.get_ref().clone(),
                        fraction: fr,
                    });
                }
            }
            let repeat = match &s.repeat {
                Some(r) if *r.get_ref() == 0 => {
                    self.err(
                        r.span(),
                        "repeat = 0: a step must run at least once (remove the entry instead)",
                    );
                    0
                }
                Some(r) if s.fire.is_none() => {
                    self.err(
                        r.span(),
                        "repeat needs `fire`: actions alone are performed once",
                    );
                    0
                }
                Some(r) => *r.get_ref(),
                None => 1,
            };
            let mut targets = Vec::new();
            let fire = s.fire.as_ref().map(|f| {
                let mut proj = Projection::new();
                if f.get_ref().is_empty() {
                    self.err(f.span(), "`fire` is empty: name at least one source and its targets");
                }
                // Sources fire with the winners they have before the step.
                let before = has_winners.clone();
                for (src, tgts) in f.get_ref() {
                    let known = self.source(src, "a source in `fire`");
                    if known {
                        if let Some(&a) = self.areas.get(src.get_ref()) {
                            if !before[a] {
                                self.err(src.span(), format!("area {:?} fires, but it has no winners at this point of the schedule: make it a target of `fire` in an earlier step, or `activate` it", src.get_ref()));
                            }
                        }
                    }
                    if tgts.is_empty() {
                        self.err(src.span(), format!("{:?} fires into no area: give at least one target", src.get_ref()));
                    }
                    let from_procedural = self
                        .areas
                        .get(src.get_ref())
                        .is_some_and(|&a| engine_of(raw.area[a].get_ref()) == EngineKind::Procedural);
                    for t in tgts {
                        if let Some(ti) = self.area(t, "a target in `fire`") {
                            let engine = engine_of(raw.area[ti].get_ref());
                            if from_procedural && engine != EngineKind::Procedural {
                                self.err(t.span(), format!(
                                    "fiber {} -> {}: a procedural area cannot fire into a{} area (its synapses are regenerated on demand, while that engine keeps its own stored wiring); make area {:?} procedural too",
                                    src.get_ref(), t.get_ref(),
                                    if engine == EngineKind::Lazy { " lazy" } else { "n explicit" },
                                    t.get_ref()
                                ));
                            }
                            if !targets.contains(&ti) {
                                targets.push(ti);
                            }
                            if !fixed[ti] {
                                has_winners[ti] = true;
                            }
                        }
                    }
                    proj = proj.fire(src.get_ref().clone(), tgts.iter().map(|t| t.get_ref().clone()));
                }
                proj
            });
            targets.sort_unstable();
            let no_action = s.plasticity.is_none()
                && s.set_beta.0.is_empty()
                && s.fix.is_empty()
                && s.unfix.is_empty()
                && s.activate.0.is_empty()
                && s.subsample.0.is_empty();
            if no_action && s.fire.is_none() {
                self.err(st.span(), "this [[step]] does nothing: give `fire` and/or an action (fix, unfix, plasticity, set_beta, activate, subsample)");
            }
            let repeat = if fire.is_some() { repeat } else { 0 };
            let before = total_steps;
            total_steps = total_steps.saturating_add(repeat);
            if before <= MAX_TOTAL_STEPS && total_steps > MAX_TOTAL_STEPS {
                let span = s.repeat.as_ref().map_or(st.span(), |r| r.span());
                self.err(span, format!("the schedule runs {total_steps} projection steps up to this entry; at most {MAX_TOTAL_STEPS} are allowed (the results keep a record of every step)"));
            }
            out.push(ScheduleEntry {
                index,
                label: s.label.clone(),
                line,
                actions,
                fire,
                targets,
                repeat,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Experiment, ConfigError> {
        Experiment::from_source(
            SourceFile {
                display: "x.toml".into(),
                text: text.into(),
            },
            "x",
        )
    }

    const HEAD: &str = "[brain]\np = 0.01\n[[stimulus]]\nname = \"s\"\nsize = 10\n[[area]]\nname = \"A\"\nn = 1000\nk = 10\nbeta = 0.05\n";

    #[test]
    fn a_plain_projection_resolves() {
        let e = check(&format!("{HEAD}[[step]]\nfire = {{ s = [\"A\"] }}\n[[step]]\nrepeat = 4\nfire = {{ s = [\"A\"], A = [\"A\"] }}\n")).unwrap();
        assert_eq!(e.total_steps, 5);
        assert_eq!(e.schedule[1].line, 13);
        assert_eq!(e.schedule[1].targets, vec![0]);
    }

    #[test]
    fn firing_from_an_area_without_winners_is_an_error_with_its_line() {
        let e = check(&format!("{HEAD}[[step]]\nfire = {{ A = [\"A\"] }}\n")).unwrap_err();
        assert_eq!(e.0[0].line, Some(12), "{e}");
        assert!(e.0[0].message.contains("no winners"), "{e}");
        // A fixed target gets no winners.
        let e = check(&format!("{HEAD}[[step]]\nfix = [\"A\"]\nfire = {{ s = [\"A\"] }}\n[[step]]\nfire = {{ A = [\"A\"] }}\n")).unwrap_err();
        assert_eq!(e.0[0].line, Some(15), "{e}");
        // Activation gives winners.
        check(&format!(
            "{HEAD}[[step]]\nactivate = {{ area = \"A\", index = 2 }}\nfire = {{ A = [\"A\"] }}\n"
        ))
        .unwrap();
    }

    #[test]
    fn procedural_into_lazy_is_an_error_at_the_target() {
        let text = format!("{HEAD}[[area]]\nname = \"P\"\nn = 100000\nk = 10\nbeta = 0.05\nengine = \"procedural\"\n[[step]]\nfire = {{ s = [\"P\"] }}\n[[step]]\nfire = {{ P = [\"P\", \"A\"] }}\n");
        let e = check(&text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, Some(20), "{e}");
        assert!(
            e.0[0].message.contains("fiber P -> A") && e.0[0].message.contains("lazy"),
            "{e}"
        );
        let ok = text.replace("P = [\"P\", \"A\"]", "P = [\"P\"], s = [\"A\"]");
        assert!(check(&ok).unwrap().cheap_to_build());
    }

    #[test]
    fn truncate_keeps_the_first_steps() {
        let mut e = check(&format!("{HEAD}[[step]]\nfire = {{ s = [\"A\"] }}\n[[step]]\nfix = [\"A\"]\n[[step]]\nrepeat = 4\nfire = {{ s = [\"A\"], A = [\"A\"] }}\n[[step]]\nfire = {{ s = [\"A\"] }}\n")).unwrap();
        assert_eq!(e.total_steps, 6);
        e.truncate(3);
        assert_eq!(e.total_steps, 3);
        let reps: Vec<u64> = e.schedule.iter().map(|s| s.repeat).collect();
        assert_eq!(reps, vec![1, 0, 2]);
        e.truncate(1);
        assert_eq!(e.schedule.len(), 1);
        assert_eq!(e.total_steps, 1);
    }

    #[test]
    fn all_errors_are_collected() {
        let text = "[brain]\np = 1.5\n[[area]]\nname = \"A\"\nn = 10\nk = 10\nbeta = -1\n[[step]]\nrepeat = 0\nfire = { B = [\"A\"] }\n";
        let e = check(text).unwrap_err();
        let lines: Vec<_> = e.0.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(lines, vec![2, 6, 7, 9, 10], "{e}");
    }
}
