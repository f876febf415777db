//! The library half of the `kcap` command-line tool: the experiment-file
//! schema ([`config`]), its validation into a runnable [`plan::Experiment`]
//! ([`plan`]), the compute device choice ([`device`]), the runner
//! ([`runner`]) and its progress display ([`progress`]). The binary (`src/main.rs`) adds
//! argument parsing, output files, plots and benchmarks on top.
//!
//! Design decision: these modules are a library so that the fuzz
//! targets (`fuzz/`) and the property tests drive exactly the code path of
//! `kcap run` and `kcap check`, not a copy of it.

pub mod config;
pub mod device;
pub mod plan;
pub mod progress;
pub mod runner;
