//! Host share of a procedural-1e9 GPU step, with synthetic device answers
//! (random winners, 40 % from the support, ~21 synapses per winner and fiber):
//! `device_step` (row keys + learned corrections) and `hebbian_selected`
//! (apply) over 10 steps, in wall time and in CPU time of all threads (the
//! process's threads' run times from /proc on Linux, so a shared machine's
//! load does not inflate it). `cargo run --release -p kcap --example procedural_host_bench`
use kcap::engine::procedural::{ProceduralState, View};
use kcap::engine::TargetPlan;
use kcap::model::{AreaSpec, EngineKind, Model, StimSpec};
use std::time::Instant;

/// CPU time (s) used so far by all threads of this process (Linux; 0 elsewhere).
fn cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        * 1e-9
}

fn main() {
    let (n, k, p) = (1_000_000_000u64, 10_000usize, 1e-3);
    let mut model = Model::new(p).unwrap();
    model
        .add_stimulus(StimSpec {
            name: "s".into(),
            size: k as u64,
        })
        .unwrap();
    model
        .add_area(AreaSpec {
            name: "A".into(),
            n,
            k,
            beta: 0.05,
            engine: EngineKind::Procedural,
        })
        .unwrap();
    let v = View {
        model: &model,
        seed: 1,
    };
    let mut st = ProceduralState::new();
    let mut r = kcap::rng::Stream::new(7);
    let mut winners: Vec<u64> = Vec::new();
    let mut support: Vec<u64> = Vec::new();
    for step in 0..10 {
        let plan = TargetPlan {
            target: 0,
            stims: vec![0],
            areas: if step == 0 { vec![] } else { vec![0] },
        };
        let firing: Vec<&[u64]> = vec![&winners];
        let (t0, c0) = (Instant::now(), cpu_s());
        let ds = st.device_step(&v, &plan, &firing).unwrap();
        let (prep, prep_cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
        // New winners: 40 % from the support, the rest fresh.
        let mut w: Vec<u64> = (0..k)
            .map(|_| {
                if !support.is_empty() && r.below(10) < 4 {
                    support[r.below(support.len() as u64) as usize]
                } else {
                    r.below(n)
                }
            })
            .collect();
        w.sort_unstable();
        w.dedup();
        while w.len() < k {
            w.push(r.below(n));
            w.sort_unstable();
            w.dedup();
        }
        let slots = ds.slots();
        let mut syn = Vec::new();
        for &x in &w {
            let mut s: Vec<u32> = (0..(21 * slots / k as u64))
                .map(|_| r.below(slots) as u32)
                .collect();
            s.sort_unstable();
            s.dedup();
            syn.extend(s.into_iter().map(|s| (x, s)));
        }
        let nsyn = syn.len();
        let inputs = vec![1.0f32; k];
        let sel = ProceduralState::device_selection(&ds, w.clone(), inputs, 0, 0, syn).unwrap();
        let (t1, c1) = (Instant::now(), cpu_s());
        st.hebbian_selected(&v, &plan, &firing, &sel).unwrap();
        let (heb, heb_cpu) = (t1.elapsed().as_secs_f64(), cpu_s() - c1);
        println!(
            "step {}: prepare {:.1} ms, CPU {:.1} ms ({} corrections in {} blocks), hebbian {:.1} ms, CPU {:.1} ms ({} synapses), learned {}",
            step + 1,
            prep * 1e3,
            prep_cpu * 1e3,
            ds.corr.len(),
            ds.corr.blocks.len(),
            heb * 1e3,
            heb_cpu * 1e3,
            nsyn,
            st.learned_synapses()
        );
        support.extend(w.iter().copied());
        support.sort_unstable();
        support.dedup();
        winners = w;
    }
}
