//! Property test (issue 7): random *valid* experiment files — random areas
//! (lazy, explicit and procedural, n from 40 to 10¹²), stimuli, fibers with p, beta and
//! storage-format overrides, brain-wide formats, and schedules of every
//! action — are accepted by the validator and then either run to completion
//! or stop with an error; never a panic. They go through the code path of
//! `kcap run` (`Experiment::from_source`, then `runner::run`).
//!
//! Sizes are kept small (k ≤ 40, explicit n ≤ 600, procedural n ≤ 20 000,
//! at most 15 steps) so the
//! test takes seconds; the case count is fixed (`CASES`).

use kcap_cli::config::SourceFile;
use kcap_cli::plan::Experiment;
use kcap_cli::runner;
use proptest::prelude::*;
use std::fmt::Write;

/// Random experiments per run.
const CASES: u32 = 256;

#[derive(Debug, Clone)]
struct AreaGen {
    /// 0, 1: lazy; 2: explicit; 3: procedural.
    engine: u8,
    n_pick: usize,
    k_frac: f64,
    beta: f64,
    save: Option<bool>,
}

#[derive(Debug, Clone)]
struct FormatGen {
    named: Option<bool>,
    parts: [usize; 5],
    omit: [bool; 5],
}

#[derive(Debug, Clone)]
struct FiberGen {
    from: usize,
    to: usize,
    p: Option<f64>,
    beta: Option<f64>,
    format: Option<FormatGen>,
}

/// One action: (kind, which area or fiber, index or value).
type ActionGen = (u8, usize, u64, f64);

#[derive(Debug, Clone)]
struct StepGen {
    actions: Vec<ActionGen>,
    fire: Vec<(usize, Vec<usize>)>,
    repeat: Option<u64>,
}

#[derive(Debug, Clone)]
struct ExperimentGen {
    p: f64,
    seed: u64,
    w_max: Option<f64>,
    exact_tail: bool,
    plasticity: Option<bool>,
    format: Option<FormatGen>,
    stimuli: Vec<u64>,
    areas: Vec<AreaGen>,
    fibers: Vec<FiberGen>,
    steps: Vec<StepGen>,
}

fn format_gen() -> impl Strategy<Value = FormatGen> {
    (
        prop::option::of(any::<bool>()),
        prop::array::uniform5(0usize..5),
        prop::array::uniform5(any::<bool>()),
    )
        .prop_map(|(named, parts, omit)| FormatGen { named, parts, omit })
}

fn experiment_gen() -> impl Strategy<Value = ExperimentGen> {
    let p = prop_oneof![Just(1.0), Just(0.05), 0.001f64..=1.0];
    let beta = prop_oneof![Just(0.0), 0.0f64..0.5];
    let area = (
        0u8..4,
        0usize..5,
        0.0f64..1.0,
        beta.clone(),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(engine, n_pick, k_frac, beta, save)| AreaGen {
            engine,
            n_pick,
            k_frac,
            beta,
            save,
        });
    let fiber = (
        0usize..8,
        0usize..8,
        prop::option::of(0.001f64..=1.0),
        prop::option::of(beta.clone()),
        prop::option::of(format_gen()),
    )
        .prop_map(|(from, to, p, beta, format)| FiberGen {
            from,
            to,
            p,
            beta,
            format,
        });
    let action = (0u8..6, 0usize..8, 0u64..6, 0.01f64..=1.0);
    let step = (
        prop::collection::vec(action, 0..3),
        prop::collection::vec((0usize..8, prop::collection::vec(0usize..8, 0..3)), 0..3),
        prop::option::of(1u64..=3),
    )
        .prop_map(|(actions, fire, repeat)| StepGen {
            actions,
            fire,
            repeat,
        });
    (
        (
            p,
            any::<u64>(),
            prop::option::of(1.0f64..20.0),
            any::<bool>(),
        ),
        (
            prop::option::of(any::<bool>()),
            prop::option::of(format_gen()),
        ),
        prop::collection::vec(1u64..=300, 1..=3),
        prop::collection::vec(area, 1..=4),
        prop::collection::vec(fiber, 0..=3),
        prop::collection::vec(step, 1..=5),
    )
        .prop_map(
            |(
                (p, seed, w_max, exact_tail),
                (plasticity, format),
                stimuli,
                areas,
                fibers,
                steps,
            )| ExperimentGen {
                p,
                seed,
                w_max,
                exact_tail,
                plasticity,
                format,
                stimuli,
                areas,
                fibers,
                steps,
            },
        )
}

/// A `format = ...` value. Only the combination the format refuses by
/// design (a bitmap layout with per-synapse weights) is avoided.
fn render_format(f: &FormatGen) -> String {
    match f.named {
        Some(true) => return "\"auto\"".into(),
        Some(false) if f.omit[0] => return "\"reference\"".into(),
        _ => {}
    }
    let weights = ["f32", "f16", "bf16", "log-u8", "bit"];
    let layout = ["csr", "bitmap"][f.parts[2] % 2];
    let mut parts = Vec::new();
    if layout == "bitmap" {
        parts.push("weights = \"bit\"".to_string());
        parts.push("layout = \"bitmap\"".to_string());
    } else if !f.omit[1] {
        parts.push(format!("weights = \"{}\"", weights[f.parts[0]]));
    }
    if !f.omit[2] {
        parts.push(format!("indices = \"{}\"", ["u32", "u16"][f.parts[1] % 2]));
    }
    if !f.omit[3] {
        parts.push(format!(
            "rounding = \"{}\"",
            ["nearest", "stochastic"][f.parts[3] % 2]
        ));
    }
    if !f.omit[4] {
        parts.push(format!(
            "accumulator = \"{}\"",
            ["f32", "fixed"][f.parts[4] % 2]
        ));
    }
    format!("{{ {} }}", parts.join(", "))
}

/// Renders a generated experiment as a valid file: choices that would be
/// invalid where they fall (a source without winners, a duplicate fiber, a
/// format on a fiber that stores nothing, ...) are dropped or redirected,
/// tracking winners and fixed areas as the validator does.
fn render(g: &ExperimentGen) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "[brain]\np = {:?}\nseed = {}", g.p, g.seed);
    if let Some(w) = g.w_max {
        let _ = writeln!(t, "w_max = {w:?}");
    }
    if g.exact_tail {
        t.push_str("tail = \"exact\"\n");
    }
    if let Some(on) = g.plasticity {
        let _ = writeln!(t, "plasticity = {on}");
    }
    if let Some(f) = &g.format {
        let _ = writeln!(t, "format = {}", render_format(f));
    }
    for (i, size) in g.stimuli.iter().enumerate() {
        let _ = writeln!(t, "\n[[stimulus]]\nname = \"s{i}\"\nsize = {size}");
    }
    const LAZY_N: [u64; 5] = [40, 1_000, 100_000, 1_000_000_000, 1_000_000_000_000];
    const EXPLICIT_N: [u64; 5] = [40, 150, 300, 450, 600];
    // A procedural step costs (firing neurons) · n · p generated synapses,
    // whatever is stored: small n here (n > 2^32 is covered by the fuzz seeds).
    const PROCEDURAL_N: [u64; 5] = [200, 500, 2_000, 5_000, 20_000];
    let explicit = |a: &AreaGen| a.engine == 2;
    let mut k = Vec::new();
    let mut n = Vec::new();
    for (i, a) in g.areas.iter().enumerate() {
        let (an, engine) = match a.engine {
            2 => (EXPLICIT_N[a.n_pick], "explicit"),
            3 => (PROCEDURAL_N[a.n_pick], "procedural"),
            _ => (LAZY_N[a.n_pick], "lazy"),
        };
        let ak = ((a.k_frac * 40f64.min(an as f64 - 1.0)).round() as u64).max(1);
        n.push(an);
        k.push(ak);
        let _ = writeln!(
            t,
            "\n[[area]]\nname = \"A{i}\"\nn = {an}\nk = {ak}\nbeta = {:?}\nengine = \"{engine}\"",
            a.beta,
        );
        if let Some(s) = a.save {
            let _ = writeln!(t, "save_winners = {s}");
        }
    }
    let (n_stims, n_areas) = (g.stimuli.len(), g.areas.len());
    // Sources: stimuli 0..n_stims, then areas.
    let source = |i: usize| -> String {
        let i = i % (n_stims + n_areas);
        if i < n_stims {
            format!("s{i}")
        } else {
            format!("A{}", i - n_stims)
        }
    };
    let mut seen = std::collections::HashSet::new();
    for f in &g.fibers {
        let (from, to) = (f.from % (n_stims + n_areas), f.to % n_areas);
        if !seen.insert((from, to)) {
            continue;
        }
        let _ = writeln!(
            t,
            "\n[[fiber]]\nfrom = \"{}\"\nto = \"A{to}\"",
            source(from)
        );
        let both_explicit =
            from >= n_stims && explicit(&g.areas[from - n_stims]) && explicit(&g.areas[to]);
        let mut set = false;
        if let Some(p) = f.p {
            let _ = writeln!(t, "p = {p:?}");
            set = true;
        }
        if let (Some(fmt), true) = (&f.format, both_explicit) {
            let _ = writeln!(t, "format = {}", render_format(fmt));
            set = true;
        }
        if f.beta.is_some() || !set {
            let _ = writeln!(t, "beta = {:?}", f.beta.unwrap_or(0.1));
        }
    }
    let mut has_winners = vec![false; n_areas];
    let mut fixed = vec![false; n_areas];
    for s in &g.steps {
        t.push_str("\n[[step]]\n");
        let mut did = false;
        for &(kind, which, idx, val) in &s.actions {
            let a = which % n_areas;
            match kind {
                0 => {
                    let _ = writeln!(t, "plasticity = {}", idx % 2 == 0);
                }
                1 => {
                    let _ = writeln!(
                        t,
                        "set_beta = {{ from = \"{}\", to = \"A{a}\", beta = {:?} }}",
                        source(idx as usize),
                        val / 4.0
                    );
                }
                2 => {
                    let _ = writeln!(t, "unfix = [\"A{a}\"]");
                    fixed[a] = false;
                }
                3 => {
                    let _ = writeln!(t, "fix = [\"A{a}\"]");
                    fixed[a] = true;
                }
                4 => {
                    let index = idx.min(n[a] / k[a] - 1);
                    let _ = writeln!(t, "activate = {{ area = \"A{a}\", index = {index} }}");
                    has_winners[a] = true;
                    fixed[a] = true;
                }
                _ if has_winners[a] => {
                    let _ = writeln!(t, "subsample = {{ area = \"A{a}\", fraction = {val:?} }}");
                }
                _ => continue,
            }
            did = true;
            // One action of each kind per entry (a key appears once in a table).
            break;
        }
        let before = has_winners.clone();
        let mut fire = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (src, targets) in &s.fire {
            let src = src % (n_stims + n_areas);
            if src >= n_stims && !before[src - n_stims] {
                continue;
            }
            let mut names = Vec::new();
            // A procedural area fires only into procedural areas.
            let procedural = |a: usize| g.areas[a].engine == 3;
            for &tg in targets {
                let tg = tg % n_areas;
                if src >= n_stims && procedural(src - n_stims) && !procedural(tg) {
                    continue;
                }
                let name = format!("\"A{tg}\"");
                if !names.contains(&name) {
                    names.push(name);
                    if !fixed[tg] {
                        has_winners[tg] = true;
                    }
                }
            }
            if !names.is_empty() {
                fire.entry(source(src)).or_default().extend(names);
            }
        }
        if fire.is_empty() && !did {
            fire.insert("s0".into(), vec!["\"A0\"".into()]);
            if !fixed[0] {
                has_winners[0] = true;
            }
        }
        if !fire.is_empty() {
            if let Some(r) = s.repeat {
                let _ = writeln!(t, "repeat = {r}");
            }
            let body: Vec<String> = fire
                .iter()
                .map(|(src, tg)| {
                    let mut tg = tg.clone();
                    tg.dedup();
                    format!("{src} = [{}]", tg.join(", "))
                })
                .collect();
            let _ = writeln!(t, "fire = {{ {} }}", body.join(", "));
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_valid_experiments_run_or_fail_with_an_error(g in experiment_gen()) {
        let text = render(&g);
        let source = SourceFile { display: "random.toml".into(), text: text.clone() };
        let exp = Experiment::from_source(source, "random");
        // The generator writes valid files only: a refusal is a disagreement
        // between it and the validator, reported with the file.
        let exp = match exp {
            Ok(e) => e,
            Err(e) => return Err(TestCaseError::fail(format!("valid file refused: {e}\n{text}"))),
        };
        match runner::run(&exp, None) {
            Ok(out) => {
                prop_assert_eq!(out.steps.len() as u64, exp.total_steps);
                prop_assert_eq!(out.summary.len(), exp.areas.len());
            }
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(!msg.is_empty() && !msg.contains("internal error"), "{msg}\n{text}");
            }
        }
    }
}
