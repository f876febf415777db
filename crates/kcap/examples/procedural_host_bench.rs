//! Host share of a procedural-1e9 GPU step, with synthetic device answers
//! (random winners, 40 % from the support, ~21 synapses per winner and fiber):
//! `device_step_rows` (row keys), `device_corrections` (the learned
//! corrections, which the GPU step computes while the device counts) and
//! `hebbian_selected` (apply) over 10 steps, in wall time and in CPU time
//! of all threads (the
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

/// A digest of 64-bit words (to compare builds: same synapses, same bits).
fn digest(words: impl Iterator<Item = u64>) -> u64 {
    words.fold(0xcbf2_9ce4_8422_2325, |h, w| {
        (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17)
    })
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
    // KCAP_BENCH_REUSE=1: the corrections' buffers are kept from step to step.
    let reuse = std::env::var("KCAP_BENCH_REUSE").is_ok_and(|v| v == "1");
    let mut corr_buf = kcap::engine::procedural::device::DeviceCorrections::default();
    for step in 0..10 {
        let plan = TargetPlan {
            target: 0,
            stims: vec![0],
            areas: if step == 0 { vec![] } else { vec![0] },
        };
        let firing: Vec<&[u64]> = vec![&winners];
        let (t0, c0) = (Instant::now(), cpu_s());
        let mut ds = st.device_step_rows(&v, &plan, &firing).unwrap();
        let (prep, prep_cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
        let (t0, c0) = (Instant::now(), cpu_s());
        if reuse {
            // Buffers kept from step to step.
            st.device_corrections_into(&v, &plan, &firing, &mut corr_buf)
                .unwrap();
            ds.corr = std::mem::take(&mut corr_buf);
        } else {
            ds.corr = st.device_corrections(&v, &plan, &firing).unwrap();
        }
        let (corr, corr_cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
        let c = &ds.corr;
        let corr_digest = digest(
            c.blocks
                .iter()
                .copied()
                .chain(c.off.iter().map(|&x| x as u64))
                .chain(c.local.iter().map(|&x| x as u64))
                .chain(c.delta.iter().map(|&x| x.to_bits() as u64)),
        );
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
            "step {}: rows {:.1} ms, CPU {:.1} ms; corrections {:.1} ms, CPU {:.1} ms ({} in {} blocks); hebbian {:.1} ms, CPU {:.1} ms ({} synapses), learned {}",
            step + 1,
            prep * 1e3,
            prep_cpu * 1e3,
            corr * 1e3,
            corr_cpu * 1e3,
            ds.corr.len(),
            ds.corr.blocks.len(),
            heb * 1e3,
            heb_cpu * 1e3,
            nsyn,
            st.learned_synapses()
        );
        let learned_digest = digest(
            st.fibers()
                .into_iter()
                .flat_map(|(_, _, l)| l.iter().flat_map(|(r, t, w)| [r, t, w.to_bits() as u64])),
        );
        println!("  digests: corrections {corr_digest:016x}, learned {learned_digest:016x}");
        corr_buf = std::mem::take(&mut ds.corr);
        support.extend(w.iter().copied());
        support.sort_unstable();
        support.dedup();
        winners = w;
    }
}
