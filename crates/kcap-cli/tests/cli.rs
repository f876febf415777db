//! End-to-end tests of the `kcap` binary: every config error path (message,
//! line, exit code, no result file left behind), a runtime error, a small
//! real run, the example files, help texts and the bench subcommand.
//!
//! Design decision: the tests drive the real executable
//! (`CARGO_BIN_EXE_kcap`) through `std::process::Command` with piped
//! output, exactly as a user or a script would, each in its own temporary
//! folder, so they check what a user sees — including that nothing is
//! written when a run is refused.

use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;
use common::{kcap, Dir, PROCEDURAL};

/// Files under `dir` (recursively), as names.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                v.extend(files_in(&e.path()));
            } else {
                v.push(e.path().display().to_string());
            }
        }
    }
    v
}

const HEAD: &str = r#"[brain]
p = 0.05
seed = 7

[[stimulus]]
name = "s"
size = 100

[[area]]
name = "A"
n = 10_000
k = 100
beta = 0.05
"#;

const STEPS: &str = r#"
[[step]]
fire = { s = ["A"] }

[[step]]
repeat = 9
fire = { s = ["A"], A = ["A"] }
"#;

/// `kcap run FILE --out D/out EXTRA…` in `d`.
fn run_into(d: &Dir, f: &Path, extra: &[&str]) -> common::Output {
    let out = d.out();
    let mut args = vec!["run", f.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    kcap(&args, &d.0)
}

/// Runs a bad file and checks: exit code 2, the message names `file:line:`
/// and contains `needle`, and no result file was written.
fn refused(name: &str, text: &str, line: usize, needle: &str) {
    let d = Dir::new(name);
    let (f, out) = (d.write("exp.toml", text), d.out());
    let o = run_into(&d, &f, &["--quiet"]);
    assert_eq!(o.code, 2, "{name}: exit code; stderr:\n{}", o.stderr);
    let place = format!("exp.toml:{line}:");
    assert!(
        o.stderr.contains(&place),
        "{name}: expected {place:?} in:\n{}",
        o.stderr
    );
    assert!(
        o.stderr.contains(needle),
        "{name}: expected {needle:?} in:\n{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked"),
        "{name}: panic:\n{}",
        o.stderr
    );
    assert!(
        files_in(&out).is_empty(),
        "{name}: files left: {:?}",
        files_in(&out)
    );
    // `check` agrees.
    let c = kcap(&["check", f.to_str().unwrap()], &d.0);
    assert_eq!(c.code, 2, "{name}: check exit code");
    assert!(c.stderr.contains(&place), "{name}: check: {}", c.stderr);
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    refused(
        "unknown-key",
        &format!("{HEAD}colour = \"red\"\n{STEPS}"),
        14,
        "unknown field `colour`",
    );
    let text = HEAD.replace("seed = 7", "seed = 7\nseeed = 8");
    refused(
        "unknown-brain-key",
        &format!("{text}{STEPS}"),
        4,
        "unknown field `seeed`",
    );
    let steps = STEPS.replace("repeat = 9", "repeats = 9");
    refused(
        "unknown-step-key",
        &format!("{HEAD}{steps}"),
        19,
        "unknown field `repeats`",
    );
}

#[test]
fn unknown_area_and_stimulus_are_refused() {
    let steps = STEPS.replace("A = [\"A\"] }", "A = [\"B\"] }");
    refused(
        "unknown-target",
        &format!("{HEAD}{steps}"),
        20,
        "unknown area \"B\"",
    );
    let steps = STEPS.replace("fire = { s = [\"A\"] }", "fire = { t = [\"A\"] }");
    refused(
        "unknown-source",
        &format!("{HEAD}{steps}"),
        16,
        "unknown area or stimulus \"t\"",
    );
    let text = format!("{HEAD}[[fiber]]\nfrom = \"s\"\nto = \"Z\"\np = 0.1\n{STEPS}");
    refused("unknown-fiber-target", &text, 16, "unknown area \"Z\"");
    let text = format!("{HEAD}[[step]]\nfix = [\"X\"]\n{STEPS}");
    refused("unknown-fixed", &text, 15, "unknown area \"X\"");
}

#[test]
fn k_not_below_n_is_refused() {
    refused(
        "k-eq-n",
        &format!("{}{STEPS}", HEAD.replace("k = 100", "k = 10000")),
        12,
        "k = 10000 must be at least 1 and smaller than n = 10000",
    );
    refused(
        "k-zero",
        &format!("{}{STEPS}", HEAD.replace("k = 100", "k = 0")),
        12,
        "k = 0 must be at least 1",
    );
}

#[test]
fn absurd_sizes_are_refused_before_running() {
    refused(
        "k-above-n",
        &format!("{}{STEPS}", HEAD.replace("k = 100", "k = 1_000_000")),
        12,
        "k = 1000000 must be at least 1 and smaller than n = 10000",
    );
    refused(
        "n-1e15",
        &format!(
            "{}{STEPS}",
            HEAD.replace("n = 10_000", "n = 1_000_000_000_000_000")
        ),
        11,
        "n = 1000000000000000 is too large (at most 1000000000000 neurons per area)",
    );
    refused(
        "n-beyond-u64",
        &format!(
            "{}{STEPS}",
            HEAD.replace("n = 10_000", "n = 100_000_000_000_000_000_000")
        ),
        11,
        "integer `100000000000000000000` as i128, expected u64",
    );
    refused(
        "k-2^31",
        &format!(
            "{}{STEPS}",
            HEAD.replace("n = 10_000", "n = 1_000_000_000_000")
                .replace("k = 100", "k = 2_147_483_648")
        ),
        12,
        "k = 2147483648 is too large (at most 2^30)",
    );
    refused(
        "steps-1e18",
        &format!("{HEAD}{}", STEPS.replace("repeat = 9", "repeat = 1_000_000_000_000_000_000")),
        19,
        "the schedule runs 1000000000000000001 projection steps up to this entry; at most 100000000 are allowed",
    );
    refused(
        "steps-sum",
        &format!(
            "{HEAD}{}{}",
            STEPS.replace("repeat = 9", "repeat = 60_000_000"),
            STEPS.replace("repeat = 9", "repeat = 50_000_000")
        ),
        26,
        "the schedule runs 110000002 projection steps",
    );
    refused(
        "stimulus-2^32",
        &format!(
            "{}{STEPS}",
            HEAD.replace("size = 100", "size = 4_294_967_296")
        ),
        7,
        "size = 4294967296 must be between 1 and 2^32 - 1",
    );
    refused(
        "activate-beyond-n",
        &format!(
            "{HEAD}[[step]]\nactivate = {{ area = \"A\", index = 18_446_744_073_709_551_615 }}\n"
        ),
        15,
        "activate index 18446744073709551615 of area \"A\" is too large",
    );
}

/// Growth a lazy area cannot hold: refused by the library's memory guard
/// with the estimate, before anything is allocated, exit 1, no results.
#[test]
fn growth_beyond_memory_is_refused_with_the_estimate() {
    let huge = HEAD
        .replace("n = 10_000", "n = 1_000_000_000_000")
        .replace("size = 100", "size = 10");
    for (name, text, needle) in [
        (
            "activate-4e9",
            format!("{huge}[[step]]\nactivate = {{ area = \"A\", index = 40_000_000 }}\n"),
            "not enough memory for activating assembly 40000000 of area \"A\": 4000000100 new neurons",
        ),
        (
            "k-1e9",
            format!("{}{STEPS}", huge.replace("k = 100", "k = 1_000_000_000")),
            "not enough memory for step 1: up to k new neurons, with their synapses, in area \"A\" (k = 1000000000): needs about",
        ),
    ] {
        let d = Dir::new(name);
        let f = d.write("exp.toml", &text);
        let out = d.out();
        let o = kcap(&["run", f.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"], &d.0);
        assert_eq!(o.code, 1, "{name}: {}", o.stderr);
        assert!(o.stderr.contains(needle), "{name}: expected {needle:?} in:\n{}", o.stderr);
        assert!(o.stderr.contains("GB are available"), "{name}: {}", o.stderr);
        assert!(!o.stderr.contains("panicked"), "{name}: {}", o.stderr);
        assert!(files_in(&out).is_empty(), "{name}: {:?}", files_in(&out));
    }
}

#[test]
fn p_out_of_range_is_refused() {
    refused(
        "p-big",
        &format!("{}{STEPS}", HEAD.replace("p = 0.05", "p = 1.5")),
        2,
        "p = 1.5 is outside (0, 1]",
    );
    refused(
        "p-zero",
        &format!("{}{STEPS}", HEAD.replace("p = 0.05", "p = 0")),
        2,
        "p = 0 is outside (0, 1]",
    );
    let text = format!("{HEAD}[[fiber]]\nfrom = \"s\"\nto = \"A\"\np = -0.1\n{STEPS}");
    refused(
        "fiber-p",
        &text,
        17,
        "p of fiber s -> A = -0.1 is outside (0, 1]",
    );
}

#[test]
fn negative_beta_is_refused() {
    refused(
        "beta-area",
        &format!("{}{STEPS}", HEAD.replace("beta = 0.05", "beta = -0.05")),
        13,
        "beta of area \"A\" = -0.05",
    );
    let text = format!("{HEAD}{STEPS}[[step]]\nset_beta = {{ from = \"A\", to = \"A\", beta = -1 }}\nfire = {{ A = [\"A\"] }}\n");
    refused("beta-set", &text, 22, "set_beta A -> A = -1 is invalid");
}

#[test]
fn firing_from_an_area_without_winners_is_refused() {
    let text = format!("{HEAD}\n[[step]]\nfire = {{ s = [\"A\"], A = [\"A\"] }}\n");
    refused(
        "no-winners",
        &text,
        16,
        "area \"A\" fires, but it has no winners",
    );
    // A fixed area does not get winners by being a target.
    let text = format!("{HEAD}[[step]]\nfix = [\"A\"]\nfire = {{ s = [\"A\"] }}\n[[step]]\nfire = {{ A = [\"A\"] }}\n");
    refused("fixed-no-winners", &text, 18, "has no winners");
    let text = format!("{HEAD}[[step]]\nsubsample = {{ area = \"A\", fraction = 0.5 }}\nfire = {{ s = [\"A\"] }}\n");
    refused(
        "subsample-no-winners",
        &text,
        15,
        "cannot subsample area \"A\"",
    );
}

#[test]
fn other_impossible_schedules_are_refused() {
    refused(
        "repeat-zero",
        &format!("{HEAD}{}", STEPS.replace("repeat = 9", "repeat = 0")),
        19,
        "repeat = 0",
    );
    refused(
        "empty-step",
        &format!("{HEAD}{STEPS}[[step]]\nlabel = \"nothing\"\n"),
        21,
        "does nothing",
    );
    refused("no-steps", HEAD, 1, "no [[step]] entries");
    let text = format!(
        "{}[[area]]\nname = \"s\"\nn = 100\nk = 10\nbeta = 0.1\n{STEPS}",
        HEAD
    );
    refused("duplicate-name", &text, 15, "already used");
    refused(
        "bad-engine",
        &format!(
            "{}{STEPS}",
            HEAD.replace("beta = 0.05", "beta = 0.05\nengine = \"magic\"")
        ),
        14,
        "unknown variant `magic`",
    );
    let text = format!("{HEAD}{STEPS}[[step]]\nactivate = {{ area = \"A\", index = 100 }}\n");
    refused("activate-too-far", &text, 22, "activate index 100");
}

#[test]
fn bad_storage_formats_are_refused() {
    let text = HEAD.replace("seed = 7", "seed = 7\nformat = \"fast\"");
    refused(
        "format-name",
        &format!("{text}{STEPS}"),
        4,
        "unknown format \"fast\"",
    );
    let text = HEAD.replace("seed = 7", "seed = 7\nformat = { weights = \"f8\" }");
    refused(
        "format-weights",
        &format!("{text}{STEPS}"),
        4,
        "format: invalid parameter weights = \"f8\"",
    );
    let text = HEAD.replace("seed = 7", "seed = 7\nformat = { weight = \"f16\" }");
    refused(
        "format-key",
        &format!("{text}{STEPS}"),
        4,
        "unknown field `weight`",
    );
    let text = format!("{HEAD}[[fiber]]\nfrom = \"A\"\nto = \"A\"\nformat = \"auto\"\n{STEPS}");
    refused(
        "format-lazy-fiber",
        &text,
        17,
        "applies only to fibers between two explicit areas",
    );
}

#[test]
fn an_explicit_area_reports_its_storage_format() {
    let d = Dir::new("explicit");
    let text = HEAD
        .replace("beta = 0.05", "beta = 0.05\nengine = \"explicit\"")
        .replace("n = 10_000", "n = 4_000");
    let text = format!("{text}[[fiber]]\nfrom = \"A\"\nto = \"A\"\nformat = {{ weights = \"log-u8\", indices = \"u16\" }}\n{STEPS}");
    let f = d.write("exp.toml", &text);
    let out = d.out();
    let o = kcap(
        &[
            "run",
            f.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--report-memory",
        ],
        &d.0,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("A -> A") && o.stdout.contains("log-u8"),
        "{}",
        o.stdout
    );
    // --report-memory: predicted and measured bytes per synapse, and the saving.
    assert!(
        o.stdout.contains("memory report (stored fibers)"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("predicted 3.") && o.stdout.contains("measured 3."),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("f32/u32 reference") && o.stdout.contains("saved"),
        "{}",
        o.stdout
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let fib = &r["fibers"][0];
    assert!(
        fib["format"].as_str().unwrap().starts_with("log-u8/u16"),
        "{fib}"
    );
    assert!(fib["synapses"].as_u64().unwrap() > 100_000, "{fib}");
    assert_eq!(r["steps"].as_array().unwrap().len(), 10);
}

#[test]
fn malformed_toml_is_refused_with_its_line() {
    refused(
        "malformed",
        &format!("{HEAD}[[step]\nfire = {{ s = [\"A\"] }}\n"),
        14,
        "",
    );
    refused(
        "wrong-type",
        &format!("{}{STEPS}", HEAD.replace("n = 10_000", "n = \"many\"")),
        11,
        "invalid type",
    );
    refused(
        "missing-field",
        &format!("{}{STEPS}", HEAD.replace("size = 100\n", "")),
        5,
        "missing field `size`",
    );
}

#[test]
fn unwritable_output_folder_is_refused_before_running() {
    let d = Dir::new("unwritable");
    let f = d.write("exp.toml", &format!("{HEAD}{STEPS}"));
    let blocker = d.write("blocker", "a file, not a folder");
    let out = blocker.join("out");
    let o = kcap(
        &["run", f.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &d.0,
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("cannot write to output folder"),
        "{}",
        o.stderr
    );
    assert!(o.stdout.is_empty(), "nothing should run: {}", o.stdout);
}

#[test]
fn runtime_errors_name_the_step_and_exit_1() {
    let d = Dir::new("runtime");
    let text = "[brain]\np = 0.1\n[[area]]\nname = \"A\"\nn = 21\nk = 10\nbeta = 0.1\n[[stimulus]]\nname = \"s\"\nsize = 10\n\
                [[step]]\nfire = { s = [\"A\"] }\n[[step]]\nlabel = \"grow\"\nrepeat = 5\nfire = { s = [\"A\"], A = [\"A\"] }\n";
    let f = d.write("small.toml", text);
    let out = d.out();
    let o = kcap(
        &["run", f.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &d.0,
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("too small"), "{}", o.stderr);
    assert!(
        o.stderr.contains("(\"grow\", line 13)") && o.stderr.contains("step "),
        "{}",
        o.stderr
    );
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}

#[test]
fn a_small_run_writes_json_and_png() {
    let d = Dir::new("small-run");
    let text = format!(
        "name = \"tiny\"\n{}{STEPS}",
        HEAD.replace("beta = 0.05", "beta = 0.05\nsave_winners = true")
    );
    let f = d.write("exp.toml", &text);
    // Default output folder: out/<name>, relative to the working folder.
    let o = kcap(&["run", f.to_str().unwrap()], &d.0);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.is_empty(),
        "no progress bar when stdout is not a terminal: {}",
        o.stderr
    );
    assert!(
        o.stdout.contains("support") && o.stdout.contains("last-two overlap"),
        "{}",
        o.stdout
    );
    let out = d.0.join("out/tiny");
    let mut files = files_in(&out);
    files.sort();
    assert_eq!(
        files.len(),
        2,
        "only the two result files, no temporaries: {files:?}"
    );
    let png = std::fs::read(out.join("support.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000);
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["experiment"]["name"], "tiny");
    assert_eq!(r["experiment"]["config"]["area"][0]["k"], 100);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 10);
    assert_eq!(steps[0]["areas"]["A"]["support"], 100);
    assert_eq!(steps[0]["areas"]["A"]["first_winners"], 100);
    assert_eq!(
        steps[9]["areas"]["A"]["winners"].as_array().unwrap().len(),
        100
    );
    assert_eq!(steps[9]["entry"], 2);
    assert_eq!(steps[9]["repetition"], 9);
    let a = &r["summary"]["areas"][0];
    assert_eq!(a["name"], "A");
    assert_eq!(a["target_steps"], 10);
    assert!(a["support"].as_u64().unwrap() >= 100);
    assert!(a["last_overlap"].as_u64().unwrap() <= 100);
    assert_eq!(r["timing"]["steps"], 10);
    assert!(r["timing"]["total_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn same_seed_same_winners_with_any_thread_count() {
    let d = Dir::new("determinism");
    let text = format!(
        "{}{STEPS}",
        HEAD.replace("seed = 7", "seed = 7\nsave_winners = true")
    );
    let f = d.write("exp.toml", &text);
    let mut runs = Vec::new();
    for (i, threads) in ["1", "2", "1"].iter().enumerate() {
        let out = d.0.join(format!("o{i}"));
        let o = kcap(
            &[
                "run",
                f.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "-j",
                threads,
                "-q",
            ],
            &d.0,
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(o.stdout.is_empty(), "--quiet prints nothing: {}", o.stdout);
        let r: Value =
            serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
        let w: Vec<Value> = r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["areas"].clone())
            .collect();
        runs.push(w);
    }
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_example_file_is_valid() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for needed in [
        "project-1e6",
        "completion-1e5",
        "merge-1e5",
        "lazy-1e9",
        "explicit-250k",
        "association",
        "procedural-1e7",
        "procedural-1e9",
        "procedural-1e11",
        "compare-explicit-1e5",
        "compare-procedural-1e5",
    ] {
        assert!(
            files.iter().any(|f| f.file_stem().unwrap() == needed),
            "examples/{needed}.toml missing"
        );
    }
    let mut args = vec!["check".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = kcap(&args, &examples_dir());
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout.lines().filter(|l| l.contains(": ok")).count(),
        files.len(),
        "{}",
        o.stdout
    );
    for (name, steps) in [
        ("project-1e6", 25),
        ("completion-1e5", 30),
        ("merge-1e5", 51),
        ("lazy-1e9", 25),
        ("procedural-1e7", 25),
        ("procedural-1e9", 10),
        ("procedural-1e11", 3),
    ] {
        let line = o
            .stdout
            .lines()
            .find(|l| l.contains(&format!("{name}.toml")))
            .unwrap();
        assert!(line.ends_with(&format!(" {steps} steps")), "{line}");
    }
}

#[test]
fn help_is_complete() {
    let here = std::env::temp_dir();
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["bench", "--help"],
    ] {
        let o = kcap(&args, &here);
        assert_eq!(o.code, 0, "{args:?}");
        assert!(o.stdout.contains("Examples:"), "{args:?}: {}", o.stdout);
        assert!(o.stdout.contains("Usage: kcap"), "{args:?}");
    }
    let o = kcap(&["--help"], &here);
    for cmd in ["run", "check", "bench", "Exit codes"] {
        assert!(o.stdout.contains(cmd), "{cmd}");
    }
    assert!(!o.stdout.contains("__bench-child"));
    let o = kcap(&["frobnicate"], &here);
    assert_eq!(o.code, 2);
}

/// Runs `kcap bench ARGS --json FILE` in `d`; returns the output and the JSON.
fn bench_json(d: &Dir, args: &[&str]) -> (common::Output, Value) {
    let json = d.0.join("bench.json");
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let o = kcap(&all, &d.0);
    assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
    let r = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (o, r)
}

#[test]
fn bench_runs_a_scenario_and_refuses_unknown_ones() {
    let d = Dir::new("bench");
    let o = kcap(&["bench", "nope", "project-1e6"], &d.0);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("unknown scenario \"nope\"")
            && o.stderr.contains("completion-1e5, merge-1e5, lazy-1e9"),
        "{}",
        o.stderr
    );
    let (o, r) = bench_json(&d, &["completion-1e5", "--repeat", "2"]);
    assert!(
        o.stdout.contains("completion-1e5") && o.stdout.contains("peak RSS"),
        "{}",
        o.stdout
    );
    let s = &r["scenarios"][0];
    assert_eq!(s["scenario"], "completion-1e5");
    assert_eq!(s["steps"], 30);
    assert_eq!(s["total_seconds"].as_array().unwrap().len(), 2);
    assert_eq!(s["k"], 317);
    assert!(s["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(
        s["last_overlap"].as_u64().unwrap() > 250,
        "pattern completion recovers the assembly: {s}"
    );
}

#[test]
fn bench_accuracy_reports_every_format_against_the_reference() {
    let d = Dir::new("accuracy");
    let (o, r) = bench_json(&d, &["--accuracy", "small", "--seeds", "1"]);
    for label in [
        "f16/stochastic",
        "bf16/nearest",
        "log-u8",
        "bit/bitmap",
        "auto",
    ] {
        assert!(o.stdout.contains(label), "{label} missing:\n{}", o.stdout);
    }
    assert_eq!(r["rows"].as_array().unwrap().len(), 9);
    let o = kcap(&["bench", "--accuracy", "huge"], &d.0);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("unknown accuracy scenario \"huge\""),
        "{}",
        o.stderr
    );
}

/// `kcap run` of a procedural area of n > 2³²: results.json holds the u64
/// winner ids exactly as the library computes them, the summary reports the
/// synaptic events, and the memory report lists the learned fibers.
#[test]
fn a_procedural_run_writes_u64_winners() {
    let d = Dir::new("procedural-run");
    let (f, out) = (d.write("exp.toml", PROCEDURAL), d.out());
    let o = run_into(&d, &f, &["--report-memory"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("synaptic events/s"), "{}", o.stdout);
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let got: Vec<Vec<u64>> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["areas"]["P"]["winners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().expect("winner ids are integers"))
                .collect()
        })
        .collect();
    // The same brain through the library.
    let mut b = kcap::Brain::new(1e-6, 4).unwrap();
    b.add_stimulus("s", 20).unwrap();
    b.add_area("L", 100_000_000, 10, 0.05).unwrap();
    b.add_area_with("P", 5_000_000_000, 10, 0.1, kcap::EngineKind::Procedural)
        .unwrap();
    let first = kcap::Projection::new().fire("s", ["P", "L"]);
    let rest = first.clone().fire("P", ["P"]).fire("L", ["P", "L"]);
    let mut want = Vec::new();
    b.project(&first).unwrap();
    want.push(b.winners_u64("P").unwrap());
    b.activate("P", 499_999_998).unwrap();
    b.project(&kcap::Projection::new().fire("s", ["P"]))
        .unwrap();
    want.push(b.winners_u64("P").unwrap());
    b.unfix("P").unwrap();
    b.project(&rest).unwrap();
    want.push(b.winners_u64("P").unwrap());
    assert_eq!(got, want);
    assert_eq!(got[1], (4_999_999_980..4_999_999_990).collect::<Vec<u64>>());
    // Events: step 1 fires the stimulus into P (20 × n·p) and into L.
    let ev = r["steps"][0]["events"].as_f64().unwrap();
    let expect = 20.0 * 5e9 * 1e-6 + 20.0 * 1e8 * 1e-6;
    assert!((ev - expect).abs() < 1e-6 * expect, "{ev} vs {expect}");
    assert!(r["timing"]["events_per_second"].as_f64().unwrap() > 0.0);
    assert!(
        o.stdout.contains("procedural (learned f32 weights)"),
        "{}",
        o.stdout
    );
}

/// A procedural area firing into a lazy one is a config error at the target.
#[test]
fn procedural_into_lazy_is_refused() {
    let text = PROCEDURAL.replace(
        "fire = { s = [\"P\", \"L\"], P = [\"P\"], L = [\"P\", \"L\"] }",
        "fire = { s = [\"P\", \"L\"], P = [\"P\", \"L\"] }",
    );
    refused(
        "proc-into-lazy",
        &text,
        32,
        "fiber P -> L: a procedural area cannot fire into a lazy area",
    );
}

/// p·n < 1 for a procedural area is refused at its `engine` line.
#[test]
fn procedural_p_too_small_is_refused() {
    let text = PROCEDURAL.replace("p = 0.000001", "p = 0.0000000001");
    refused("proc-pn", &text, 21, "p·n >= 1");
}

/// A step whose memory estimate exceeds the limit is refused before it
/// runs, with the estimate and the limit, and leaves no result file.
#[test]
fn procedural_memory_guard_refuses_the_step() {
    let d = Dir::new("proc-memory");
    let f = d.write("exp.toml", PROCEDURAL);
    let out = d.out();
    let o = std::process::Command::new(common::KCAP)
        .args([
            "run",
            f.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ])
        .env("KCAP_MEMORY_LIMIT", "200000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("step 1")
            && err.contains("not enough memory for a procedural step into area \"P\"")
            && err.contains("200 kB are available"),
        "{err}"
    );
    assert!(!out.join("results.json").exists());
}

/// `kcap bench --compare-engines`: the explicit and procedural engines on
/// the same brain, their events/s and CPU time per event side by side.
#[test]
fn bench_compares_the_explicit_and_procedural_engines() {
    let d = Dir::new("bench-compare");
    let (o, r) = bench_json(&d, &["--compare-engines", "--steps", "3", "--repeat", "1"]);
    assert!(o.stdout.contains("procedural / explicit"), "{}", o.stdout);
    let sc = r["scenarios"].as_array().unwrap();
    assert_eq!(sc.len(), 2);
    for (s, name) in sc
        .iter()
        .zip(["compare-explicit-1e5", "compare-procedural-1e5"])
    {
        assert_eq!(s["scenario"], name);
        assert_eq!(s["steps"], 3, "--steps 3");
        // 317 + 2 × 317 + 2 × 317 firing neurons × n·p = 1000.
        let ev = s["synaptic_events"].as_f64().unwrap();
        assert!((ev / (5.0 * 317.0 * 1000.0) - 1.0).abs() < 1e-9, "{ev}");
        assert!(s["events_per_second"].as_f64().unwrap() > 0.0, "{s}");
    }
}
