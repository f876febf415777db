//! Fuzz targets for hostile input (issue 7), shared by the libFuzzer
//! binaries (`fuzz_targets/`, run with `cargo fuzz`) and the stable
//! `replay` driver (`src/bin/replay.rs`), which runs the same bodies over
//! the corpus and mutations of it without libFuzzer or a nightly compiler.
//!
//! Each target feeds bytes through the code path of the `kcap` binary and
//! treats an error as a correct answer: only a panic (or an abort, e.g. an
//! absurd allocation) is a finding.
//!
//! - [`experiment`]: bytes → experiment file text → `Experiment::from_source`
//!   (TOML, schema, every semantic check) → for experiments small enough to
//!   simulate in milliseconds, `runner::run` on the first [`MAX_STEPS`] steps
//!   (builds the brain, as `kcap run` and `kcap check` do, then steps).
//! - [`checkpoint`]: the first byte picks what the rest is: a whole
//!   checkpoint file (even) or only its payload (odd), which is then framed
//!   with a valid checksum so that the payload decoder and the state
//!   validation are reached; a brain that loads is saved and loaded again,
//!   and stepped.

use kcap::{Brain, EngineKind, FormatChoice, Projection};
use kcap_cli::config::SourceFile;
use kcap_cli::plan::Experiment;
use kcap_cli::runner;
use std::path::Path;

/// Projection steps simulated per experiment input.
pub const MAX_STEPS: u64 = 6;

/// What a target made of an input (the replay driver keeps inputs that got
/// further than a refusal as material for more mutations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Refused with an error (the expected answer to most hostile input).
    Refused,
    /// Accepted, but too large to simulate here.
    Accepted,
    /// Accepted and simulated (the simulation may still end in an error).
    Simulated,
}

/// The experiment-file target.
pub fn experiment(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Refused;
    };
    let source = SourceFile {
        display: "fuzz.toml".into(),
        text: text.to_string(),
    };
    let exp = match Experiment::from_source(source, "fuzz") {
        Ok(e) => e,
        Err(e) => {
            // Rendering the diagnostics (positions, source lines) is part of the path.
            let _ = e.to_string();
            return Outcome::Refused;
        }
    };
    if !cheap(&exp) {
        return Outcome::Accepted;
    }
    let exp = first_steps(exp, MAX_STEPS);
    if let Err(e) = runner::run(&exp, None) {
        let _ = format!("{e:#}");
    }
    Outcome::Simulated
}

/// Whether simulating a few steps of `exp` takes milliseconds: a lazy area
/// costs about k per step whatever n is, an explicit one n² (stored), a
/// procedural one (firing neurons) · n · p (regenerated), stimuli their size.
fn cheap(exp: &Experiment) -> bool {
    let areas = &exp.raw.area;
    let explicit = |a: &kcap_cli::config::RawArea| {
        a.engine
            .as_ref()
            .is_some_and(|e| *e.get_ref() == EngineKind::Explicit)
    };
    let activated_max = exp
        .schedule
        .iter()
        .flat_map(|e| &e.actions)
        .filter_map(|a| match a {
            kcap_cli::plan::Action::Activate { area, index } => {
                let k = areas
                    .iter()
                    .find(|x| x.get_ref().name.get_ref() == area)
                    .map_or(0, |x| *x.get_ref().k.get_ref());
                Some(index.saturating_add(1).saturating_mul(k))
            }
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let procedural = |a: &kcap_cli::config::RawArea| {
        a.engine
            .as_ref()
            .is_some_and(|e| *e.get_ref() == EngineKind::Procedural)
    };
    areas.len() <= 6
        && activated_max <= 20_000
        && areas.iter().all(|a| {
            let a = a.get_ref();
            let n = *a.n.get_ref();
            *a.k.get_ref() <= 1_000
                && (!explicit(a) || n <= 3_000)
                && (!procedural(a) || n <= 20_000)
        })
        && exp
            .raw
            .stimulus
            .iter()
            .all(|s| *s.get_ref().size.get_ref() <= 2_000)
}

/// `exp` cut to its first `max` projection steps (a prefix of a valid
/// schedule is valid: every area keeps the winners it had).
pub fn first_steps(mut exp: Experiment, max: u64) -> Experiment {
    let mut left = max;
    let mut keep = 0;
    for e in &mut exp.schedule {
        if left == 0 {
            break;
        }
        keep += 1;
        if e.fire.is_some() {
            e.repeat = e.repeat.min(left);
            left -= e.repeat;
        }
    }
    exp.schedule.truncate(keep);
    exp.total_steps = max - left;
    exp
}

/// The checkpoint target.
pub fn checkpoint(data: &[u8]) -> Outcome {
    let Some((&mode, rest)) = data.split_first() else {
        return Outcome::Refused;
    };
    let framed;
    let bytes = if mode & 1 == 0 {
        rest
    } else {
        framed = kcap::checkpoint::assemble(b"{}", rest);
        &framed
    };
    let path = Path::new("fuzz.kcap");
    let _ = kcap::checkpoint::header(bytes, path);
    match kcap::checkpoint::from_bytes(bytes, path) {
        Ok(brain) => exercise(brain),
        Err(e) => {
            let _ = e.to_string();
            Outcome::Refused
        }
    }
}

/// What a loaded brain must survive: saving and loading again, the
/// reports, activation of areas without winners, and two steps in which
/// every stimulus and every area with winners fires into every area it may.
fn exercise(mut brain: Brain) -> Outcome {
    let again = kcap::checkpoint::to_bytes(&brain).expect("a loaded brain saves");
    let reloaded = kcap::checkpoint::from_bytes(&again, Path::new("again"))
        .expect("a saved brain loads again");
    assert_eq!(reloaded.steps(), brain.steps());
    let _ = (brain.memory_report(), brain.memory());
    let areas = brain.area_names();
    // Work per step grows with k, the n of explicit and procedural areas,
    // and stimulus sizes (as in `cheap`).
    let model = brain.model();
    let big = model.areas.iter().any(|s| {
        s.k > 2_000
            || (s.engine == EngineKind::Explicit && s.n > 50_000)
            || (s.engine == EngineKind::Procedural && s.n > 20_000)
    }) || model.stimuli.iter().any(|s| s.size > 2_000);
    if big {
        return Outcome::Accepted;
    }
    for a in &areas {
        if brain.winners_u64(a).expect("listed area").is_empty() {
            let _ = brain.activate(a, 0);
        }
    }
    // A procedural area fires only into procedural areas.
    let procedural: Vec<String> = areas
        .iter()
        .filter(|a| brain.area_spec(a).expect("listed area").engine == EngineKind::Procedural)
        .cloned()
        .collect();
    for _ in 0..2 {
        let mut p = Projection::new();
        for s in brain.stimulus_names() {
            p = p.fire(s, areas.clone());
        }
        for a in &areas {
            if !brain.winners_u64(a).expect("listed area").is_empty() {
                let into = if procedural.contains(a) {
                    &procedural
                } else {
                    &areas
                };
                p = p.fire(a.clone(), into.clone());
            }
        }
        if brain.project(&p).is_err() {
            break;
        }
    }
    Outcome::Simulated
}

/// Small checkpoints of every kind of state (lazy, explicit and procedural
/// areas, stimuli, overrides, packed formats, learned weights), each as a whole
/// file (mode byte 0) and as a bare payload (mode byte 1): the seed corpus
/// of [`checkpoint`], made by this build so it always matches its format.
pub fn checkpoint_seeds() -> Vec<Vec<u8>> {
    use kcap::format::{FiberFormat, IndexFormat, Layout, Rounding, WeightFormat};
    let mut brains = Vec::new();
    // Lazy areas, one of them huge, overrides, winners recorded.
    let mut b = Brain::new(0.1, 1).unwrap();
    b.add_stimulus("s", 40).unwrap();
    b.add_area("A", 1_000, 20, 0.05).unwrap();
    b.add_area("B", 1_000_000_000, 10, 0.1).unwrap();
    b.set_fiber_p("s", "B", 0.2).unwrap();
    b.set_beta("A", "B", 0.3).unwrap();
    b.record_winners("A", true).unwrap();
    b.project(&Projection::new().fire("s", ["A"])).unwrap();
    b.project(&Projection::new().fire("s", ["A"]).fire("A", ["A", "B"]))
        .unwrap();
    b.fix("B").unwrap();
    brains.push(b);
    // Explicit areas in packed formats, mixed with a lazy one.
    for (i, f) in [
        FiberFormat {
            weights: WeightFormat::Bf16,
            indices: IndexFormat::U16,
            rounding: Rounding::Stochastic,
            ..Default::default()
        },
        FiberFormat {
            weights: WeightFormat::Bit,
            layout: Layout::Bitmap,
            ..Default::default()
        },
        FiberFormat {
            weights: WeightFormat::LogU8,
            ..Default::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = Brain::new(0.05, 2 + i as u64).unwrap();
        b.set_default_format(FormatChoice::Fixed(f));
        b.add_stimulus("s", 30).unwrap();
        b.add_area_with("E", 200, 10, 0.05, EngineKind::Explicit)
            .unwrap();
        b.add_area_with("F", 130, 8, 0.05, EngineKind::Explicit)
            .unwrap();
        b.add_area("L", 10_000, 10, 0.05).unwrap();
        b.project(&Projection::new().fire("s", ["E", "L"])).unwrap();
        b.project(
            &Projection::new()
                .fire("E", ["E", "F", "L"])
                .fire("L", ["E"]),
        )
        .unwrap();
        brains.push(b);
    }
    // Procedural areas beside a lazy one, learned weights; one with n > 2^32
    // (u64 winners), activated only: a step of it scans 2^16 blocks, too
    // slow here, so that seed is loaded and saved but not stepped.
    let procedural = || {
        let mut b = Brain::new(0.01, 9).unwrap();
        b.add_stimulus("s", 50).unwrap();
        b.add_area_with("P", 20_000, 30, 0.1, EngineKind::Procedural)
            .unwrap();
        b.add_area("L", 5_000, 20, 0.1).unwrap();
        b.project(&Projection::new().fire("s", ["P", "L"])).unwrap();
        b.project(&Projection::new().fire("P", ["P"]).fire("L", ["P", "L"]))
            .unwrap();
        b
    };
    brains.push(procedural());
    let mut b = procedural();
    b.add_area_with("W", (1 << 32) + 1, 20, 0.1, EngineKind::Procedural)
        .unwrap();
    b.activate("W", 200_000_000).unwrap();
    brains.push(b);
    let mut out = Vec::new();
    for b in &brains {
        let bytes = kcap::checkpoint::to_bytes(b).unwrap();
        let (_, payload) = kcap::checkpoint::parts(&bytes, Path::new("seed")).unwrap();
        out.push([&[1u8][..], payload].concat());
        out.push([&[0u8][..], &bytes].concat());
    }
    out
}
