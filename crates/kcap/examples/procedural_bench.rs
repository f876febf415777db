//! Bench of the procedural engine (BENCH.md scenarios `procedural-1e7`,
//! `procedural-1e9`, `procedural-1e11`): stimulus → A for one step, then
//! stimulus → A plus A → A, with Hebbian plasticity. Prints per step the
//! wall time, synaptic events and events/s, and at the end the median and
//! best events/s and the peak resident memory (VmHWM).
//!
//! ```text
//! cargo run --release -p kcap --example procedural_bench -- [SCENARIO…] [--steps N]
//!     [--threads T] [--seed S] [--fraction F] [--repeat R] [--no-record]
//! ```
//! `--fraction F` (0 < F ≤ 1) scans only the first F of the target blocks of
//! every step (no k-cap, no plasticity; the winners are then a fixed random
//! set) and extrapolates the full step's time — for `procedural-1e11`, whose
//! 10¹² events per step take about an hour on two cores. `--no-record`
//! makes the Hebbian update regenerate the winners' blocks instead of
//! using the synapses recorded during the selection.
//!
//! Runs driven directly through `engine::procedural` (not `Brain`), so the
//! numbers are the engine's own.

use kcap::engine::procedural::{block_count, check_memory, ProceduralState, View};
use kcap::engine::TargetPlan;
use kcap::model::{AreaSpec, EngineKind, Model, StimSpec};
use std::collections::HashSet;
use std::time::Instant;

struct Scenario {
    name: &'static str,
    n: u64,
    k: usize,
    p: f64,
    steps: usize,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "procedural-1e7",
        n: 10_000_000,
        k: 1000,
        p: 0.01,
        steps: 25,
    },
    Scenario {
        name: "procedural-1e9",
        n: 1_000_000_000,
        k: 10_000,
        p: 1e-3,
        steps: 2,
    },
    Scenario {
        name: "procedural-1e11",
        n: 100_000_000_000,
        k: 10_000,
        p: 1e-3,
        steps: 1,
    },
];

fn vm_hwm_mib() -> f64 {
    kcap::memory::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

/// CPU seconds (user + system) used by this process so far, all threads.
fn cpu_seconds() -> f64 {
    kcap::memory::cpu_seconds().unwrap_or(f64::NAN)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn run(sc: &Scenario, steps: usize, seed: u64, fraction: f64, record: bool) {
    let mut model = Model::new(sc.p).unwrap();
    model
        .add_stimulus(StimSpec {
            name: "s".into(),
            size: sc.k as u64,
        })
        .unwrap();
    model
        .add_area(AreaSpec {
            name: "A".into(),
            n: sc.n,
            k: sc.k,
            beta: 0.05,
            engine: EngineKind::Procedural,
        })
        .unwrap();
    ProceduralState::check_area(&model, 0).unwrap();
    let mut st = ProceduralState::new();
    if !record {
        st.record_limit = 0;
    }
    let mut winners: Vec<u64> = Vec::new();
    let mut support: HashSet<u64> = HashSet::new();
    let mut rates = Vec::new();
    let mut cpu_rates = Vec::new();
    let nb = block_count(sc.n);
    println!(
        "# {}: n={} k={} p={} beta=0.05, {} blocks of 65536, {} threads, seed {seed}{}",
        sc.name,
        sc.n,
        sc.k,
        sc.p,
        nb,
        rayon::current_num_threads(),
        if fraction < 1.0 {
            format!(", scanning {:.3}% of the blocks", fraction * 100.0)
        } else {
            String::new()
        }
    );
    let t_all = Instant::now();
    for step in 0..steps {
        let plan = if step == 0 {
            TargetPlan {
                target: 0,
                stims: vec![0],
                areas: vec![],
            }
        } else {
            TargetPlan {
                target: 0,
                stims: vec![0],
                areas: vec![0],
            }
        };
        let firing: Vec<&[u64]> = vec![&winners];
        let v = View {
            model: &model,
            seed,
        };
        let est = st.memory_estimate(&model, &plan, &firing, rayon::current_num_threads());
        if let Err(e) = check_memory("A", &est) {
            eprintln!("refused: {e}");
            return;
        }
        let t0 = Instant::now();
        let c0 = cpu_seconds();
        if fraction < 1.0 {
            let upto = ((nb as f64 * fraction).ceil() as u64).max(1);
            let r = st.scan_blocks(&v, &plan, &firing, 0..upto).unwrap();
            let dt = t0.elapsed().as_secs_f64();
            let rate = r.events as f64 / dt;
            rates.push(rate);
            cpu_rates.push(r.events as f64 / (cpu_seconds() - c0));
            let full = dt * nb as f64 / upto as f64;
            println!(
                "step {:>2}: scanned {} of {} blocks in {:.2} s: {:.3e} events, {:.3e} events/s -> full step ≈ {:.0} s ({:.2e} events); est. memory {:.0} MiB",
                step + 1,
                upto,
                nb,
                dt,
                r.events as f64,
                rate,
                full,
                r.events as f64 * nb as f64 / upto as f64,
                est.total as f64 / 1048576.0
            );
            // A random winner set (ids spread over the area) for the next step.
            let mut s = kcap::rng::Stream::keyed(seed, &[99, step as u64]);
            let mut w: Vec<u64> = (0..sc.k).map(|_| s.below(sc.n)).collect();
            w.sort_unstable();
            w.dedup();
            winners = w;
            continue;
        }
        let sel = st.select(&v, &plan, &firing).unwrap();
        let t1 = Instant::now();
        let h = st.hebbian_selected(&v, &plan, &firing, &sel).unwrap();
        let t2 = Instant::now();
        let prev: HashSet<u64> = winners.iter().copied().collect();
        let overlap = sel.winners.iter().filter(|w| prev.contains(w)).count();
        let new = sel.winners.iter().filter(|&&w| support.insert(w)).count();
        winners = sel.winners.clone();
        let dt = (t2 - t0).as_secs_f64();
        let cpu = cpu_seconds() - c0;
        // Synaptic events of the step (firing rows × n·p), the BENCH.md unit;
        // events regenerated by the Hebbian update are work, not events.
        let ev = sel.events as f64;
        let rate = ev / dt;
        rates.push(rate);
        cpu_rates.push(ev / cpu);
        println!(
            "step {:>2}: {:>8.3} s (select {:.3}, hebbian {:.3}, {}) {:.3e} events {:.3e} events/s ({:.2} CPU-ns per event) received {} offered {} support {} new {} overlap {}/{} learned {}",
            step + 1,
            dt,
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            if sel.has_synapses() { "recorded".to_string() } else { format!("regenerated {:.2e}", h.regenerated_events as f64) },
            sel.events as f64,
            rate,
            cpu * 1e9 / ev,
            sel.received,
            sel.offered,
            support.len(),
            new,
            overlap,
            sc.k,
            st.learned_synapses()
        );
    }
    let total = t_all.elapsed().as_secs_f64();
    let best = rates.iter().cloned().fold(0.0, f64::max);
    println!(
        "# {}: {} steps in {:.2} s; events/s median {:.3e} best {:.3e}; per CPU-second: median {:.3e}; peak RSS (VmHWM) {:.1} MiB; learned synapses {} ({:.1} MiB)",
        sc.name,
        steps,
        total,
        median(&mut rates.clone()),
        best,
        median(&mut cpu_rates.clone()),
        vm_hwm_mib(),
        st.learned_synapses(),
        st.bytes() as f64 / 1048576.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut names = Vec::new();
    let (mut steps, mut threads, mut seed, mut fraction, mut repeat, mut record) =
        (None, 0usize, 1u64, 1.0f64, 1usize, true);
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{} needs a value", args[i]))
                .clone()
        };
        match args[i].as_str() {
            "--steps" => steps = Some(val(i).parse::<usize>().expect("--steps N")),
            "--threads" => threads = val(i).parse().expect("--threads T"),
            "--seed" => seed = val(i).parse().expect("--seed S"),
            "--fraction" => fraction = val(i).parse().expect("--fraction F"),
            "--repeat" => repeat = val(i).parse().expect("--repeat R"),
            "--no-record" => {
                record = false;
                i += 1;
                continue;
            }
            s => {
                names.push(s.to_string());
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(
        fraction > 0.0 && fraction <= 1.0,
        "--fraction must lie in (0, 1]"
    );
    if names.is_empty() {
        names.push("procedural-1e7".into());
    }
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .expect("thread pool");
    }
    for name in &names {
        let sc = SCENARIOS
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "unknown scenario {name:?}; known: {:?}",
                    SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>()
                )
            });
        for _ in 0..repeat {
            run(sc, steps.unwrap_or(sc.steps), seed, fraction, record);
        }
    }
}
