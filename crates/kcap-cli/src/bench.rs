//! `kcap bench`: the BENCH.md scenarios, timed.
//!
//! Design decision: each scenario runs in a *fresh child process* (this
//! same executable, hidden subcommand `__bench-child`), which runs all the
//! scenario's repetitions and reports its timings and its own peak resident
//! memory (`VmHWM` from `/proc/self/status`) as JSON on stdout. So each
//! scenario's peak memory is its own, not the maximum of everything run
//! before it, and no allocator state leaks from one scenario into the next.
//! The scenario files are the ones in `examples/`, embedded with
//! `include_str!`, so a scenario is defined exactly once and `kcap run
//! examples/NAME.toml` reproduces it.

use crate::config::{SourceFile, UsageError};
use crate::device::Device;
use crate::plan::Experiment;
use crate::report::{self, bytes, duration, table, thousands};
use crate::runner::{self, AreaSummary, Memory};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A built-in benchmark scenario.
pub struct Scenario {
    /// Name, as in BENCH.md.
    pub name: &'static str,
    /// Where the file lives in the repository.
    pub file: &'static str,
    /// The experiment file's text.
    pub text: &'static str,
    /// Repetitions when `--repeat` is not given.
    pub default_repeat: usize,
    /// The reference C++ implementation's whole-scenario time recorded in
    /// BENCH.md (seconds), on the project's 2-core development machine,
    /// where it has one.
    pub reference_seconds: Option<f64>,
    /// Run by `kcap bench` without scenario names.
    pub in_default_set: bool,
}

/// The scenarios, in the order they run by default.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "project-1e6",
        file: "examples/project-1e6.toml",
        text: include_str!("../../../examples/project-1e6.toml"),
        default_repeat: 5,
        reference_seconds: Some(0.023),
        in_default_set: true,
    },
    Scenario {
        name: "completion-1e5",
        file: "examples/completion-1e5.toml",
        text: include_str!("../../../examples/completion-1e5.toml"),
        default_repeat: 5,
        reference_seconds: Some(0.010),
        in_default_set: true,
    },
    Scenario {
        name: "merge-1e5",
        file: "examples/merge-1e5.toml",
        text: include_str!("../../../examples/merge-1e5.toml"),
        default_repeat: 5,
        reference_seconds: Some(0.104),
        in_default_set: true,
    },
    Scenario {
        name: "lazy-1e9",
        file: "examples/lazy-1e9.toml",
        text: include_str!("../../../examples/lazy-1e9.toml"),
        default_repeat: 3,
        reference_seconds: Some(27.2),
        in_default_set: true,
    },
    Scenario {
        name: "explicit-250k",
        file: "examples/explicit-250k.toml",
        text: include_str!("../../../examples/explicit-250k.toml"),
        default_repeat: 3,
        reference_seconds: Some(19.7),
        in_default_set: false,
    },
    Scenario {
        name: "procedural-1e7",
        file: "examples/procedural-1e7.toml",
        text: include_str!("../../../examples/procedural-1e7.toml"),
        default_repeat: 3,
        reference_seconds: None,
        in_default_set: true,
    },
    Scenario {
        name: "procedural-1e9",
        file: "examples/procedural-1e9.toml",
        text: include_str!("../../../examples/procedural-1e9.toml"),
        default_repeat: 1,
        reference_seconds: None,
        in_default_set: false,
    },
    Scenario {
        name: "procedural-1e11",
        file: "examples/procedural-1e11.toml",
        text: include_str!("../../../examples/procedural-1e11.toml"),
        default_repeat: 1,
        reference_seconds: None,
        in_default_set: false,
    },
    Scenario {
        name: "compare-explicit-1e5",
        file: "examples/compare-explicit-1e5.toml",
        text: include_str!("../../../examples/compare-explicit-1e5.toml"),
        default_repeat: 3,
        reference_seconds: None,
        in_default_set: false,
    },
    Scenario {
        name: "compare-procedural-1e5",
        file: "examples/compare-procedural-1e5.toml",
        text: include_str!("../../../examples/compare-procedural-1e5.toml"),
        default_repeat: 3,
        reference_seconds: None,
        in_default_set: false,
    },
];

/// The pair run by `--compare-engines`: the same brain on two engines.
const COMPARE: [&str; 2] = ["compare-explicit-1e5", "compare-procedural-1e5"];

pub const LONG: &str = "\
Time the built-in benchmark scenarios of BENCH.md: project-1e6,
completion-1e5, merge-1e5, lazy-1e9 and procedural-1e7 by default, and
explicit-250k, procedural-1e9, procedural-1e11, compare-explicit-1e5 and
compare-procedural-1e5 when named (the files in examples/, built into the
binary). Each scenario runs in its own child process, repeated (default 5
times; lazy-1e9, explicit-250k, procedural-1e7 and the compare pair 3 times;
procedural-1e9 and procedural-1e11 once); the table shows the median wall
time of the whole scenario (brain setup and all steps), of the setup alone,
per step and steps/s (steps alone), synaptic events per second (BENCH.md's
unit: firing neurons x p x n of each target, summed over the steps, over the
median step time) and process CPU time per event (what a busy machine
distorts least), the final support and last-two-step winner overlap of the
scenario's output area (its last declared area), the child process's peak
resident memory, and the reference C++ implementation's time recorded in
BENCH.md with the speed-up against it, where there is one.

--steps N runs only the first N projection steps of each scenario (one step
of procedural-1e9 takes a minute or more on two cores, of procedural-1e11
an hour or more). --compare-engines runs compare-explicit-1e5 and
compare-procedural-1e5 — the same brain (n=1e5, k=317, p=0.01) on the
explicit and the procedural engine — and prints their per-event throughput
side by side. Build with --release: a debug build is 10-50 times slower.";

pub const EXAMPLES: &str = "\
Examples:
  kcap bench                                  all scenarios
  kcap bench project-1e6 merge-1e5 --repeat 9
  kcap bench --repeat 3 --json bench.json     also write the results as JSON
  kcap bench --list                           list the scenarios
  kcap bench procedural-1e9 --steps 1         one step of the billion-neuron procedural scenario
  kcap bench --compare-engines                explicit vs procedural, events/s on this machine";

/// Arguments of `kcap bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run [default: project-1e6 completion-1e5 merge-1e5 lazy-1e9 procedural-1e7]
    #[arg(value_name = "SCENARIO")]
    scenarios: Vec<String>,
    /// Run only the first N projection steps of each scenario
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Run compare-explicit-1e5 and compare-procedural-1e5 (same brain, two
    /// engines) and print their per-event throughput side by side
    #[arg(long)]
    compare_engines: bool,
    /// Repetitions per scenario [default: 5; lazy-1e9, explicit-250k, procedural-1e7: 3; procedural-1e9, -1e11: 1]
    #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: Option<u32>,
    /// Also write the results as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Worker threads [default: one per core]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Compute on DEVICE: cpu (default), cuda or cuda:N
    #[arg(long, value_name = "DEVICE")]
    device: Option<Device>,
    /// List the scenarios and exit
    #[arg(long)]
    list: bool,
    /// Instead of timing: the storage-format accuracy report — every format
    /// against the f32 reference on the same seeds and graph, in the named
    /// scenario (small, small-beta, explicit-250k)
    #[arg(long, value_name = "SCENARIO")]
    accuracy: Option<String>,
    /// Seeds of the accuracy report
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
}

/// Arguments of the hidden `__bench-child` subcommand.
#[derive(Args, Debug)]
pub struct ChildArgs {
    scenario: String,
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    #[arg(long)]
    threads: Option<u16>,
    #[arg(long)]
    device: Option<Device>,
    #[arg(long)]
    steps: Option<u64>,
}

/// What a child process reports for one scenario.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildReport {
    pub scenario: String,
    pub steps: usize,
    pub threads: usize,
    /// The backend the scenario ran on ("cpu", "cuda:0").
    #[serde(default)]
    pub device: String,
    /// Whole-scenario wall time of each repetition (setup + steps).
    pub total_seconds: Vec<f64>,
    /// Sum of the step times of each repetition.
    pub step_seconds: Vec<f64>,
    /// Wall time of every single step of every repetition.
    #[serde(default)]
    pub step_times: Vec<f64>,
    /// Process CPU time (all threads) of the steps of each repetition.
    #[serde(default)]
    pub step_cpu_seconds: Vec<f64>,
    /// Synaptic events of one repetition's steps ([`runner::StepRecord::events`]).
    #[serde(default)]
    pub events: f64,
    /// Per-area summary of the last repetition.
    pub areas: Vec<AreaSummary>,
    pub memory: Memory,
    /// Stored fibers of explicit areas: format and bytes.
    #[serde(default)]
    pub fibers: serde_json::Value,
    /// VmHWM of the child process, if /proc is available.
    pub peak_rss_bytes: Option<u64>,
}

/// Looks a scenario up by name.
pub fn scenario(name: &str) -> Result<&'static Scenario, UsageError> {
    SCENARIOS.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        UsageError(format!(
            "unknown scenario {name:?}; known scenarios: {}",
            known.join(", ")
        ))
    })
}

/// Parses and validates a built-in scenario's file.
pub fn experiment(s: &Scenario) -> Result<Experiment> {
    let src = SourceFile {
        display: format!("{} (built in)", s.file),
        text: s.text.to_string(),
    };
    Ok(Experiment::from_source(src, s.name)?)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `kcap __bench-child`: runs one scenario `repeat` times, prints JSON.
pub fn cmd_child(args: ChildArgs) -> Result<()> {
    let sc = scenario(&args.scenario)?;
    crate::set_threads(args.threads)?;
    let mut exp = experiment(sc)?;
    if let Some(d) = args.device {
        exp.device = d;
    }
    if let Some(n) = args.steps {
        exp.truncate(n);
    }
    let mut report = ChildReport {
        scenario: sc.name.into(),
        steps: 0,
        threads: rayon::current_num_threads(),
        device: exp.device.to_string(),
        total_seconds: vec![],
        step_seconds: vec![],
        step_times: vec![],
        step_cpu_seconds: vec![],
        events: 0.0,
        areas: vec![],
        memory: Memory {
            area_synapses: 0,
            stimulus_entries: 0,
            bytes: 0,
        },
        fibers: serde_json::Value::Null,
        peak_rss_bytes: None,
    };
    let cpu = || kcap::memory::cpu_seconds().unwrap_or(f64::NAN);
    for _ in 0..args.repeat {
        let start = std::time::Instant::now();
        let brain = runner::build_brain_on_device(&exp)?;
        let c0 = cpu();
        let out = runner::run_brain(&exp, brain, start, None, runner::RunControl::default())?;
        report.step_cpu_seconds.push(cpu() - c0);
        report.steps = out.steps.len();
        report.device = out.device.clone();
        report.events = out.steps.iter().map(|s| s.events).sum();
        report.total_seconds.push(out.total_seconds);
        report.step_seconds.push(out.step_seconds);
        report
            .step_times
            .extend(out.steps.iter().map(|s| s.seconds));
        report.areas = out.summary;
        report.memory = out.memory;
        report.fibers = serde_json::to_value(&out.fibers)?;
    }
    report.peak_rss_bytes = kcap::memory::peak_rss_bytes();
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn run_child(
    sc: &Scenario,
    repeat: u32,
    threads: Option<u16>,
    device: Option<Device>,
    steps: Option<u64>,
) -> Result<ChildReport> {
    let exe = std::env::current_exe().context("finding the kcap executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__bench-child")
        .arg(sc.name)
        .arg("--repeat")
        .arg(repeat.to_string());
    if let Some(t) = threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    if let Some(d) = device {
        cmd.arg("--device").arg(d.to_string());
    }
    if let Some(n) = steps {
        cmd.arg("--steps").arg(n.to_string());
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting the child process for {}", sc.name))?;
    if !out.status.success() {
        bail!(
            "scenario {} failed in its child process ({})",
            sc.name,
            out.status
        );
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow!(
            "scenario {}: unreadable report from the child process: {e}",
            sc.name
        )
    })
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// `kcap bench`.
pub fn cmd_bench(args: BenchArgs) -> Result<()> {
    if let Some(name) = &args.accuracy {
        let sc = kcap::accuracy::scenario(name).ok_or_else(|| {
            UsageError(format!(
                "unknown accuracy scenario {name:?}; known: {}",
                kcap::accuracy::SCENARIOS.join(", ")
            ))
        })?;
        let formats = kcap::accuracy::standard_formats();
        let seeds: Vec<u64> = (1..=args.seeds).collect();
        let rows = kcap::accuracy::report(&sc, &formats, &seeds)?;
        print!("{}", kcap::accuracy::table(&sc, &formats, &rows));
        if let Some(path) = &args.json {
            crate::report::write_json(path, &serde_json::json!({ "scenario": sc, "rows": rows }))?;
        }
        return Ok(());
    }
    if args.list {
        for s in SCENARIOS {
            let set = if s.in_default_set {
                ""
            } else {
                ", run only when named"
            };
            println!(
                "{:<24} {}  (default {} repetitions{set})",
                s.name, s.file, s.default_repeat
            );
        }
        return Ok(());
    }
    let mut names: Vec<&str> = args.scenarios.iter().map(String::as_str).collect();
    if args.compare_engines {
        for c in COMPARE {
            if !names.contains(&c) {
                names.push(c);
            }
        }
    }
    let chosen: Vec<&Scenario> = if names.is_empty() {
        SCENARIOS.iter().filter(|s| s.in_default_set).collect()
    } else {
        names
            .iter()
            .map(|n| scenario(n))
            .collect::<Result<_, _>>()?
    };
    if let Some(json) = &args.json {
        let dir = json
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        report::prepare_out_dir(dir)?;
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; timings are not representative (build with --release)"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = format!("{}, {cores} cores", cpu_name());
    let mut rows = vec![[
        "scenario",
        "steps",
        "reps",
        "median",
        "setup",
        "per step",
        "median step",
        "steps/s",
        "events/s",
        "CPU-ns/ev",
        "support",
        "overlap",
        "peak RSS",
        "C++ ref",
        "speed-up",
    ]
    .map(String::from)
    .to_vec()];
    let mut results = Vec::new();
    for sc in chosen {
        let repeat = args.repeat.unwrap_or(sc.default_repeat as u32);
        eprintln!("running {} ({repeat} repetitions)...", sc.name);
        let rep = run_child(sc, repeat, args.threads, args.device, args.steps)?;
        let med = median(&rep.total_seconds);
        let med_steps = median(&rep.step_seconds);
        let setup: Vec<f64> = rep
            .total_seconds
            .iter()
            .zip(&rep.step_seconds)
            .map(|(t, s)| t - s)
            .collect();
        let med_setup = median(&setup);
        let steps = rep.steps.max(1) as f64;
        let main = rep.areas.last().cloned();
        let events_per_s = rep.events / med_steps;
        let cpu_ns = median(&rep.step_cpu_seconds) * 1e9 / rep.events;
        let per_event = |x: f64, f: &dyn Fn(f64) -> String| {
            if rep.events > 0.0 && x.is_finite() {
                f(x)
            } else {
                "—".into()
            }
        };
        rows.push(vec![
            sc.name.to_string(),
            rep.steps.to_string(),
            repeat.to_string(),
            duration(med),
            duration(med_setup),
            duration(med_steps / steps),
            if rep.step_times.is_empty() {
                "—".into()
            } else {
                duration(median(&rep.step_times))
            },
            format!("{:.1}", steps / med_steps),
            per_event(events_per_s, &|x| format!("{x:.3e}")),
            per_event(cpu_ns, &|x| format!("{x:.2}")),
            main.as_ref().map_or("—".into(), |a| {
                format!("{} {}", a.name, thousands(a.support))
            }),
            main.as_ref().map_or("—".into(), report::overlap_cell),
            rep.peak_rss_bytes.map_or("—".into(), bytes),
            sc.reference_seconds.map_or("—".into(), duration),
            sc.reference_seconds
                .map_or("—".into(), |r| format!("{:.2}x", r / med)),
        ]);
        results.push(json!({
            "scenario": sc.name,
            "file": sc.file,
            "steps": rep.steps,
            "repetitions": repeat,
            "threads": rep.threads,
            "device": rep.device,
            "total_seconds": rep.total_seconds,
            "step_seconds": rep.step_seconds,
            "median_seconds": med,
            "median_setup_seconds": med_setup,
            "median_step_seconds": med_steps,
            "median_seconds_per_step": med_steps / steps,
            "step_times": rep.step_times,
            "median_single_step_seconds": (!rep.step_times.is_empty()).then(|| median(&rep.step_times)),
            "steps_per_second": steps / med_steps,
            "synaptic_events": rep.events,
            "events_per_second": events_per_s,
            "step_cpu_seconds": rep.step_cpu_seconds,
            "cpu_ns_per_event": cpu_ns,
            "output_area": main.as_ref().map(|a| a.name.clone()),
            "support": main.as_ref().map(|a| a.support),
            "last_overlap": main.as_ref().and_then(|a| a.last_overlap),
            "k": main.as_ref().map(|a| a.k),
            "areas": rep.areas,
            "memory": rep.memory,
            "fibers": rep.fibers,
            "peak_rss_bytes": rep.peak_rss_bytes,
            "reference_seconds": sc.reference_seconds,
            "speedup_vs_reference": sc.reference_seconds.map(|r| r / med),
        }));
    }
    let threads = results
        .first()
        .and_then(|r| r["threads"].as_u64())
        .unwrap_or(0);
    let device = results
        .first()
        .and_then(|r| r["device"].as_str())
        .unwrap_or("cpu")
        .to_string();
    println!(
        "machine: {machine}; device {device}; {threads} worker threads; kcap {}",
        env!("CARGO_PKG_VERSION")
    );
    print!(
        "{}",
        table(&rows, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    );
    println!("median: whole scenario (setup + all steps), the figure compared with C++ ref; setup: building the brain (generating");
    println!("stored connectivity); per step and steps/s: the projection steps alone (their total over the number of steps, first");
    println!("steps included); median step: the median of the single steps' wall times (all repetitions); support, overlap: last declared area.");
    println!("events/s: synaptic events (firing neurons x p x n per target) over the median step time; CPU-ns/ev: process CPU time");
    println!("of the steps per event (all threads). C++ ref: the reference implementation's time recorded in BENCH.md on the");
    println!("2-core dev machine, not measured in this run.");
    if args.compare_engines {
        print!("{}", compare_text(&results));
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "kcap_version": env!("CARGO_PKG_VERSION"),
            "machine": { "cpu": cpu_name(), "cores": cores, "threads": threads },
            "scenarios": results,
        });
        report::write_json(path, &doc)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The `--compare-engines` lines: per-event throughput of the two engines
/// measured in this run.
fn compare_text(results: &[serde_json::Value]) -> String {
    let get = |name: &str| results.iter().find(|r| r["scenario"] == name);
    let (Some(e), Some(p)) = (get(COMPARE[0]), get(COMPARE[1])) else {
        return String::new();
    };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "\nexplicit vs procedural engine, same brain (n=1e5, k=317, p=0.01), this run on this machine:\n\
         \x20 explicit   {:.3e} events/s, {:.2} CPU-ns/event\n\
         \x20 procedural {:.3e} events/s, {:.2} CPU-ns/event\n\
         \x20 procedural / explicit: {:.2}x events/s, {:.2}x CPU time per event\n",
        f(e, "events_per_second"),
        f(e, "cpu_ns_per_event"),
        f(p, "events_per_second"),
        f(p, "cpu_ns_per_event"),
        f(p, "events_per_second") / f(e, "events_per_second"),
        f(p, "cpu_ns_per_event") / f(e, "cpu_ns_per_event"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_file_is_valid() {
        for s in SCENARIOS {
            let e = experiment(s).unwrap_or_else(|e| panic!("{}: {e:#}", s.name));
            if e.cheap_to_build() {
                runner::build_brain(&e).unwrap();
            }
            assert_eq!(e.name, s.name);
        }
    }

    #[test]
    fn the_compare_pair_differs_only_in_engine() {
        let [a, b] = COMPARE.map(|n| scenario(n).unwrap().text);
        let strip = |t: &str| -> String {
            t.lines()
                .filter(|l| {
                    !l.starts_with('#') && !l.starts_with("name") && !l.starts_with("description")
                })
                .map(|l| {
                    l.replace("explicit", "ENGINE")
                        .replace("procedural", "ENGINE")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(a), strip(b));
        assert!(a.contains("engine = \"explicit\"") && b.contains("engine = \"procedural\""));
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
