//! kcap-cuda-proc — the procedural scenarios of BENCH.md on the GPU.
//!
//! `procedural-1e7` (n = 10⁷, k = 1000, p = 0.01, 25 steps),
//! `procedural-1e9` (n = 10⁹, k = 10⁴, p = 10⁻³, 10 steps) and
//! `procedural-1e11` (n = 10¹¹, k = 10⁴, p = 10⁻³, 3 steps): stimulus → A and
//! A → A, β = 0.05. Each step: the k-cap of A on the GPU
//! ([`kcap_cuda::ops::procedural::select`]), the Hebbian update on the host
//! from the synapses the GPU found (`hebbian_selected`), then the winners
//! swap. Timing per step is host wall time of the whole step (prepare,
//! upload, kernels, k-cap, synapses, Hebbian update).
//!
//! `--check N`: also runs the first N steps on the CPU engine and requires
//! identical winners and inputs (exact); use at 1e7 (the CPU takes ~1 s a step).
//!
//! Usage: kcap-cuda-proc SCENARIO [--steps N] [--table-bits B] [--fast-log 0|1] [--fast-f32 0|1] [--chunk-blocks N] [--resident 0|1] [--speculate 0|1] [--seg-bits B] [--mark-areas 0|1] [--hits-threads T] [--shared-keys 0|1] [--check N] [--seed S]

use kcap::engine::procedural::{ProceduralState, View};
use kcap::engine::TargetPlan;
use kcap::model::{AreaSpec, EngineKind, Model, StimSpec};
use kcap_cuda::ops::procedural::{self, ProcOptions, ProcWorkspace};
use kcap_cuda::CudaDevice;
use std::collections::HashSet;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("kcap-cuda-proc: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().ok_or(
        "usage: kcap-cuda-proc SCENARIO [--steps N] [--table-bits B] [--check N] [--seed S]",
    )?;
    let (n, k, p, mut steps) = match name.as_str() {
        "procedural-1e7" => (10_000_000u64, 1000usize, 0.01, 25usize),
        "procedural-1e9" => (1_000_000_000, 10_000, 1e-3, 10),
        "procedural-1e11" => (100_000_000_000, 10_000, 1e-3, 3),
        other => return Err(format!("unknown scenario {other:?}").into()),
    };
    let mut opts = ProcOptions::default();
    let (mut check, mut seed) = (0usize, 1u64);
    let mut i = 1;
    while i < args.len() {
        let val = || args.get(i + 1).ok_or(format!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--steps" => steps = val()?.parse()?,
            "--table-bits" => opts.table_bits = val()?.parse()?,
            "--check" => check = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "--chunk-blocks" => opts.chunk_blocks = val()?.parse()?,
            "--fast-log" => opts.fast_log = val()?.parse::<u8>()? != 0,
            "--resident" => opts.resident = val()?.parse::<u8>()? != 0,
            "--speculate" => opts.speculate = val()?.parse::<u8>()? != 0,
            "--fast-f32" => opts.fast_f32 = val()?.parse::<u8>()? != 0,
            "--seg-bits" => opts.seg_bits = val()?.parse()?,
            "--mark-areas" => opts.mark_areas = val()?.parse::<u8>()? != 0,
            "--hits-threads" => opts.hits_threads = val()?.parse()?,
            "--shared-keys" => opts.shared_keys = val()?.parse::<u8>()? != 0,
            o => return Err(format!("unknown option {o}").into()),
        }
        i += 2;
    }
    let dev = CudaDevice::new(0)?;
    let (maj, min) = dev.driver_version()?;
    let mut ws = ProcWorkspace::new(&dev)?;
    println!(
        "# {name} on {} (sm_{}{}, driver CUDA {maj}.{min}): n={n} k={k} p={p} beta=0.05 seed={seed} table_bits={} chunk_blocks={} fast_log={} (bound {:?}) fast_f32={} (bounds {:?}) resident={} speculate={} seg_bits={} mark_areas={}",
        dev.name(),
        dev.compute_capability().0,
        dev.compute_capability().1,
        opts.table_bits,
        opts.chunk_blocks,
        opts.fast_log,
        ws.log2_err(),
        opts.fast_f32,
        ws.log2_f32(),
        opts.resident,
        opts.speculate,
        opts.seg_bits,
        opts.mark_areas
    );
    let mut model = Model::new(p)?;
    model.add_stimulus(StimSpec {
        name: "s".into(),
        size: k as u64,
    })?;
    model.add_area(AreaSpec {
        name: "A".into(),
        n,
        k,
        beta: 0.05,
        engine: EngineKind::Procedural,
    })?;
    ProceduralState::check_area(&model, 0)?;
    let mut st = ProceduralState::new();
    let mut cpu = ProceduralState::new();
    dev.module(&kcap_cuda::kernels::PROCEDURAL)?;
    let (free0, total) = dev.mem_info()?;
    let mut winners: Vec<u64> = Vec::new();
    let mut support: HashSet<u64> = HashSet::new();
    let mut times = Vec::new();
    let mut prev: Vec<u64> = Vec::new();
    let t_all = Instant::now();
    for step in 0..steps {
        let plan = TargetPlan {
            target: 0,
            stims: vec![0],
            areas: if step == 0 { vec![] } else { vec![0] },
        };
        let firing: Vec<&[u64]> = vec![&winners];
        let v = View {
            model: &model,
            seed,
        };
        let t0 = Instant::now();
        let ds = st.device_step_rows(&v, &plan, &firing)?;
        let prep_s = t0.elapsed().as_secs_f64();
        let out = procedural::select_deferred(&dev, &mut ws, &ds, &opts, |c| {
            st.device_corrections_into(&v, &plan, &firing, c)
                .map_err(|e| e.to_string())
        })?;
        let (events, received, count_s, hits_s, corr_s, path) = (
            out.events,
            out.received,
            out.count_s,
            out.hits_s,
            out.corr_s,
            out.path,
        );
        let nsyn = out.synapses.len();
        let sel = out.into_selection(&ds)?;
        let th = Instant::now();
        let rep = st.hebbian_selected(&v, &plan, &firing, &sel)?;
        let heb_s = th.elapsed().as_secs_f64();
        let dt = t0.elapsed().as_secs_f64();
        times.push(dt);
        let mut verdict = String::new();
        if step < check {
            let tc = Instant::now();
            let want = cpu.select(&v, &plan, &firing)?;
            cpu.hebbian_selected(&v, &plan, &firing, &want)?;
            let same = want.winners == sel.winners
                && want
                    .inputs
                    .iter()
                    .map(|x| x.to_bits())
                    .eq(sel.inputs.iter().map(|x| x.to_bits()))
                && want.received == sel.received
                && want.events == sel.events;
            verdict = format!(
                " | CPU check ({:.2} s): {}",
                tc.elapsed().as_secs_f64(),
                if same { "identical" } else { "DIFFERENT" }
            );
            if !same {
                return Err(format!("step {}: GPU and CPU disagree", step + 1).into());
            }
            if cpu.learned_synapses() != st.learned_synapses() {
                return Err(format!("step {}: learned synapses differ", step + 1).into());
            }
        }
        let overlap = prev
            .iter()
            .filter(|w| sel.winners.binary_search(w).is_ok())
            .count();
        support.extend(sel.winners.iter().copied());
        prev = sel.winners.clone();
        winners = sel.winners;
        println!(
            "step {:>2}: {:8.1} ms ({:.3e} events, {:.3e} events/s; rows {:.1} ms, count+cap {:.1} ms [{path}; host corrections {:.1} ms inside], synapses {:.1} ms, hebbian {:.1} ms) received {} overlap {} support {} learned {} (+{} of {} found){verdict}",
            step + 1,
            dt * 1e3,
            events as f64,
            events as f64 / dt,
            prep_s * 1e3,
            count_s * 1e3,
            corr_s * 1e3,
            hits_s * 1e3,
            heb_s * 1e3,
            received,
            overlap,
            support.len(),
            st.learned_synapses(),
            rep.potentiated,
            nsyn
        );
    }
    let (free1, _) = dev.mem_info()?;
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let med = sorted[sorted.len() / 2];
    let later: Vec<f64> = times.iter().skip(1).copied().collect();
    let med_later = if later.is_empty() {
        med
    } else {
        let mut l = later;
        l.sort_by(|a, b| a.total_cmp(b));
        l[l.len() / 2]
    };
    println!(
        "# {name}: {} steps in {:.2} s; median step {:.1} ms ({:.2} steps/s), median of steps 2.. {:.1} ms ({:.2} steps/s); device memory used by the run {:.0} MiB of {:.0} GiB (workspace {:.0} MiB); host learned {:.1} MiB",
        times.len(),
        t_all.elapsed().as_secs_f64(),
        med * 1e3,
        1.0 / med,
        med_later * 1e3,
        1.0 / med_later,
        (free0.saturating_sub(free1)) as f64 / 1048576.0,
        total as f64 / 1073741824.0,
        ws.bytes() as f64 / 1048576.0,
        st.bytes() as f64 / 1048576.0
    );
    Ok(())
}
