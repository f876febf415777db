//! `kcap` — the command-line front of the kcap assembly-calculus simulator.
//!
//! Design decision: a strict pipeline `arguments → parsed file → validated
//! experiment → built brain → output folder checked → run → atomic writes`,
//! in which everything that can be wrong with the *input* is found before
//! the first step and exits with code 2 (config or usage error), while
//! failures during the simulation exit with code 1. Errors are typed
//! ([`config::ConfigError`], [`config::UsageError`]) only to pick the exit
//! code; everything else travels as `anyhow` errors with context.

mod bench;
mod plot;
mod report;

use kcap_cli::{config, device, plan, progress, runner};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use config::{ConfigError, SourceFile, UsageError};
use plan::Experiment;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const ABOUT: &str = "Simulate the assembly calculus (NEMO): brain areas whose k most excited neurons fire, with Hebbian plasticity";

const LONG_ABOUT: &str = "\
kcap simulates the assembly calculus (NEMO): brain areas of randomly connected
neurons in which, at every step, only the k neurons with the largest input fire
(the k-cap), and synapses from firing neurons to the next winners are
strengthened. Experiments are TOML files that declare the brain (areas,
stimuli, connection probabilities) and a schedule of projection steps; see
docs/experiment-format.md for the format and examples/ for ready files.

Exit codes: 0 success, 2 invalid experiment file, usage or checkpoint, 1
failure while running, 130 interrupted (Ctrl-C).";

const EXAMPLES: &str = "\
Examples:
  kcap run examples/project-1e6.toml              run, plot, write out/project-1e6/
  kcap run my.toml --out results/my --threads 1   choose the folder and thread count
  kcap check examples/*.toml                      validate files without running
  kcap bench                                      time the built-in scenarios
  kcap bench project-1e6 --repeat 10 --json b.json";

#[derive(Parser, Debug)]
#[command(name = "kcap", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an experiment file: progress bar, summary table, results.json and support.png
    #[command(after_help = RUN_EXAMPLES, long_about = RUN_LONG)]
    Run(RunArgs),
    /// Parse and validate experiment files without running them
    #[command(after_help = CHECK_EXAMPLES, long_about = CHECK_LONG)]
    Check(CheckArgs),
    /// Time the built-in benchmark scenarios (median of repeated runs, peak memory)
    #[command(after_help = bench::EXAMPLES, long_about = bench::LONG)]
    Bench(bench::BenchArgs),
    /// Internal: run one scenario in a fresh process and report timings and peak memory as JSON
    #[command(name = "__bench-child", hide = true)]
    BenchChild(bench::ChildArgs),
}

const RUN_LONG: &str = "\
Run an experiment file.

The file is parsed and fully validated first (unknown keys, unknown names,
k >= n, p outside (0, 1], negative beta, firing from an area that has no
winners yet, ...): any problem is reported with file and line, and nothing
runs. Then the output folder is created and checked for writability, the
schedule runs (with a progress bar when standard output is a terminal), a
summary table is printed, and two files are written into the output folder:

  results.json   the experiment, per step and area: support, first-time
                 winners (and winners where save_winners is on), a per-area
                 summary and timings
  support.png    support per step, one line per area

Files are written to a temporary name and renamed, so a result file is never
half-written.

With --checkpoint-every N, DIR/checkpoint.kcap and DIR/checkpoint.json are
(over)written after every N steps; --resume DIR/checkpoint.kcap continues
such a run with the same experiment file and gives the same results as an
uninterrupted run. Ctrl-C stops after the current step, writes results.json
and a checkpoint, prints how to resume and exits with code 130.";

const RUN_EXAMPLES: &str = "\
Examples:
  kcap run examples/project-1e6.toml
  kcap run examples/completion-1e5.toml --out /tmp/completion --quiet
  kcap run examples/lazy-1e9.toml --threads 2
  kcap run examples/project-1e6.toml --out out/p --checkpoint-every 10
  kcap run examples/project-1e6.toml --resume out/p/checkpoint.kcap --out out/p";

const CHECK_LONG: &str = "\
Parse and validate experiment files without running them: every check that
`kcap run` makes before the first step, including building the (empty)
brain when no area is explicit (explicit areas generate their
connectivity up front, which is left to `kcap run`). Prints one line per valid file; exits with code 2 and the errors, with
file and line, if any file is invalid.";

const CHECK_EXAMPLES: &str = "\
Examples:
  kcap check examples/association.toml
  kcap check examples/*.toml";

#[derive(Args, Debug)]
struct RunArgs {
    /// The experiment file (TOML; format in docs/experiment-format.md)
    experiment: PathBuf,
    /// Output folder [default: out/<experiment name>]
    #[arg(long, short, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Worker threads [default: one per core]; results do not depend on it
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// No progress bar and no summary table (errors are still printed)
    #[arg(long, short)]
    quiet: bool,
    /// Write DIR/checkpoint.kcap (+ checkpoint.json) after every N steps, overwriting the previous one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: Option<u64>,
    /// Continue from a checkpoint written by --checkpoint-every or Ctrl-C (same experiment file)
    #[arg(long, value_name = "CHECKPOINT")]
    resume: Option<PathBuf>,
    /// Compute on DEVICE: cpu, cuda or cuda:N [default: the file's `[brain] device`, else cpu];
    /// results do not depend on it
    #[arg(long, value_name = "DEVICE")]
    device: Option<device::Device>,
    /// Print the memory report of every stored fiber: format, predicted and
    /// measured bytes per synapse, saving against f32/u32 CSR, and the
    /// `auto` planner's reasons
    #[arg(long)]
    report_memory: bool,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Experiment files to validate
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Reads an experiment file; failure to read is a usage error.
fn load(path: &Path) -> Result<Experiment> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "cannot read experiment file {}: {e}",
            path.display()
        ))
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("experiment")
        .to_string();
    Ok(Experiment::from_source(
        SourceFile {
            display: path.display().to_string(),
            text,
        },
        &stem,
    )?)
}

/// Sets the size of the global thread pool (once, before any work).
pub fn set_threads(threads: Option<u16>) -> Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
            .context("setting up the thread pool")?;
    }
    Ok(())
}

/// Loads a checkpoint and its progress sidecar and checks them against the
/// experiment. Every problem is a usage error (exit 2).
fn load_resume(exp: &Experiment, path: &Path) -> Result<(kcap::Brain, runner::Progress)> {
    let bytes = std::fs::read(path)
        .map_err(|e| UsageError(format!("cannot read checkpoint {}: {e}", path.display())))?;
    let brain = kcap::checkpoint::from_bytes(&bytes, path)
        .map_err(|e| UsageError(format!("cannot resume: {e}")))?;
    let mut have = brain
        .area_names()
        .into_iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let mut want = exp.areas.clone();
    have.sort();
    want.sort();
    if have != want {
        return Err(UsageError(format!(
            "checkpoint {} does not match experiment {}: checkpoint areas {have:?}, experiment areas {want:?}",
            path.display(),
            exp.source.display
        ))
        .into());
    }
    let side = runner::sidecar_path(path);
    let text = std::fs::read(&side).map_err(|e| {
        UsageError(format!(
            "cannot read the run progress {} that belongs to checkpoint {}: {e}",
            side.display(),
            path.display()
        ))
    })?;
    let prog: runner::Progress = serde_json::from_slice(&text)
        .map_err(|e| UsageError(format!("corrupt run progress file {}: {e}", side.display())))?;
    if prog.format != runner::PROGRESS_FORMAT {
        return Err(UsageError(format!(
            "{}: unknown run progress format {:?} (expected {:?})",
            side.display(),
            prog.format,
            runner::PROGRESS_FORMAT
        ))
        .into());
    }
    if prog.step != brain.steps() || prog.steps.len() as u64 > prog.step {
        return Err(UsageError(format!(
            "{} (step {}) does not belong to checkpoint {} (step {})",
            side.display(),
            prog.step,
            path.display(),
            brain.steps()
        ))
        .into());
    }
    if prog.areas != exp.areas || prog.last_two.len() != exp.areas.len() {
        return Err(UsageError(format!(
            "checkpoint {} does not match experiment {}: it was written for areas {:?}",
            path.display(),
            exp.source.display,
            prog.areas
        ))
        .into());
    }
    if brain.steps() > exp.total_steps {
        return Err(UsageError(format!(
            "checkpoint {} is at step {}, but experiment {} has only {} steps",
            path.display(),
            brain.steps(),
            exp.source.display,
            exp.total_steps
        ))
        .into());
    }
    if prog
        .steps
        .iter()
        .any(|s| s.entry >= exp.schedule.len() || s.areas.iter().any(|a| a.area >= exp.areas.len()))
    {
        return Err(UsageError(format!(
            "checkpoint {} does not match the schedule of experiment {}",
            path.display(),
            exp.source.display
        ))
        .into());
    }
    Ok((brain, prog))
}

/// Exit code of a run stopped with Ctrl-C.
const INTERRUPTED: u8 = 130;

fn cmd_run(args: RunArgs) -> Result<ExitCode> {
    let mut exp = load(&args.experiment)?;
    if let Some(d) = args.device {
        exp.device = d;
    }
    set_threads(args.threads)?;
    let start = Instant::now();
    let (brain, resume) = match &args.resume {
        Some(p) => {
            let (mut b, prog) = load_resume(&exp, p)?;
            runner::attach_device(&exp, &mut b)?;
            (b, Some(prog))
        }
        None => (runner::build_brain_on_device(&exp)?, None),
    };
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_out_dir(&exp));
    report::prepare_out_dir(&out_dir)?;
    let stop: &'static std::sync::atomic::AtomicBool =
        Box::leak(Box::new(std::sync::atomic::AtomicBool::new(false)));
    ctrlc::set_handler(move || {
        if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Second Ctrl-C: give up at once.
            std::process::exit(INTERRUPTED as i32);
        }
    })
    .context("installing the Ctrl-C handler")?;
    let ckpt = out_dir.join("checkpoint.kcap");
    let control = runner::RunControl {
        checkpoint: Some(ckpt.clone()),
        every: args.checkpoint_every.unwrap_or(0),
        stop: Some(stop),
        resume,
    };
    let show = !args.quiet && std::io::stdout().is_terminal();
    let pb = show.then(|| progress::bar(exp.total_steps));
    let outcome = runner::run_brain(&exp, brain, start, pb.as_ref(), control);
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let outcome = outcome?;
    let results = out_dir.join("results.json");
    let mut json = report::results_json(&exp, &outcome);
    if outcome.interrupted {
        json["interrupted"] = serde_json::Value::Bool(true);
    }
    report::write_json(&results, &json)?;
    let png = out_dir.join("support.png");
    report::write_atomic(&png, |tmp| plot::draw_support(tmp, &exp, &outcome))?;
    if !args.quiet {
        print!("{}", report::summary_text(&exp, &outcome));
        println!("wrote {} and {}", results.display(), png.display());
    }
    if args.report_memory {
        print!("{}", memory_report_text(&outcome.fibers));
    }
    if outcome.interrupted {
        let done = outcome.steps.last().map_or(0, |s| s.step);
        eprintln!(
            "interrupted after step {done} of {}: wrote {} and checkpoint {}\nresume with: kcap run {} --resume {} --out {}",
            exp.total_steps,
            results.display(),
            ckpt.display(),
            args.experiment.display(),
            ckpt.display(),
            out_dir.display()
        );
        return Ok(ExitCode::from(INTERRUPTED));
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(args: CheckArgs) -> Result<()> {
    let mut errors = Vec::new();
    for f in &args.files {
        // Lazy and procedural areas cost nothing until they fire, so the
        // brain is built (catching what only the library can check);
        // explicit areas allocate their connectivity up front: `run`'s job.
        let checked = load(f).and_then(|e| {
            let cheap = e.cheap_to_build();
            if cheap {
                runner::build_brain(&e)?;
            }
            Ok((e, cheap))
        });
        match checked {
            Ok((e, built)) => println!(
                "{}: ok — experiment {:?}: {} areas, {} stimuli, {} schedule entries, {} steps{}",
                f.display(),
                e.name,
                e.areas.len(),
                e.raw.stimulus.len(),
                e.schedule.len(),
                e.total_steps,
                if built {
                    ""
                } else {
                    " (brain not built: explicit areas are generated by `kcap run`)"
                }
            ),
            Err(e) => errors.push(e),
        }
    }
    let n = errors.len();
    match errors.pop() {
        None => Ok(()),
        Some(last) if n == 1 => Err(last),
        Some(last) => {
            for e in errors.iter().chain(std::iter::once(&last)) {
                eprintln!("error: {e:#}");
            }
            Err(UsageError(format!("{n} of {} files are invalid", args.files.len())).into())
        }
    }
}

/// Exit code of an error: 2 for config and usage errors, 1 otherwise.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// A panic is a bug, not a user error: one clear line (the full report
/// only with RUST_BACKTRACE set) and exit code 1 instead of Rust's 101.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("error: internal error (a bug in kcap, please report it with the experiment file): {info}");
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_panic_hook();
    let res = std::panic::catch_unwind(|| match cli.command {
        Command::Run(a) => cmd_run(a),
        Command::Check(a) => cmd_check(a).map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => bench::cmd_bench(a).map(|()| ExitCode::SUCCESS),
        Command::BenchChild(a) => bench::cmd_child(a).map(|()| ExitCode::SUCCESS),
    });
    match res {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
        Err(_) => ExitCode::from(1),
    }
}

/// The `--report-memory` text: per stored fiber, predicted and measured
/// memory, the saving against the f32/u32 reference, and the planner's reasons.
fn memory_report_text(fibers: &[kcap::FiberMemory]) -> String {
    use std::fmt::Write;
    let mut s = String::from("\nmemory report (stored fibers)\n");
    if fibers.is_empty() {
        s.push_str("  no stored fibers: lazy areas keep only the synapses of neurons that fired\n");
        return s;
    }
    for f in fibers {
        let syn = f.synapses.max(1) as f64;
        let _ = writeln!(
            s,
            "  {} -> {}: {} | {} synapses | predicted {:.3} B/synapse ({:.1} MB), measured {:.3} B/synapse ({:.1} MB) | f32/u32 reference {:.1} MB, saved {:.1} MB ({:.0}%)",
            f.from,
            f.to,
            f.format,
            f.synapses,
            f.predicted_bytes as f64 / syn,
            f.predicted_bytes as f64 / 1e6,
            f.bytes as f64 / syn,
            f.bytes as f64 / 1e6,
            f.reference_bytes as f64 / 1e6,
            (f.reference_bytes as f64 - f.bytes as f64) / 1e6,
            100.0 * (1.0 - f.bytes as f64 / f.reference_bytes.max(1) as f64),
        );
        for r in &f.reasons {
            let _ = writeln!(s, "      planner: {r}");
        }
    }
    s
}
