//! The procedural engine (SPEC §3.3): the regenerated graph's statistics,
//! determinism, the k-cap rules, learned weights, and assembly dynamics.
//!
//! Statistical tests use chi-square statistics with a stated p-value of
//! 0.001 per (test, seed); the quantile comes from the Wilson–Hilferty
//! approximation (within 1% of the exact value for ≥ 10 degrees of freedom).
//! Seeds are fixed, so a run either always passes or always fails.

use kcap::engine::procedural::{
    block_count, fiber_key, row_targets, ProceduralState, Selection, View, BLOCK,
};
use kcap::engine::TargetPlan;
use kcap::model::{AreaSpec, EngineKind, Model, Source, StimSpec};
use kcap::stats::Pmf;
use kcap::KcapError;
use std::collections::HashSet;

/// Upper 0.1% quantile of chi-square with `dof` degrees of freedom.
fn chi2_999(dof: usize) -> f64 {
    let (d, z) = (dof as f64, 3.0902);
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}

/// Chi-square of `observed` counts against `probs` (same length, sum 1).
fn chi2(observed: &[f64], probs: &[f64]) -> f64 {
    let total: f64 = observed.iter().sum();
    observed
        .iter()
        .zip(probs)
        .map(|(&o, &q)| (o - total * q).powi(2) / (total * q))
        .sum()
}

/// Groups the integer law `pmf` (values `lo…`) into `bins` cells of
/// roughly equal probability: returns each value's cell and the cells' mass.
fn cells(pmf: &Pmf, bins: usize) -> (Vec<usize>, Vec<f64>) {
    let mut cell_of = Vec::with_capacity(pmf.pmf.len());
    let mut mass = vec![0.0; bins];
    let mut cum = 0.0;
    for &q in &pmf.pmf {
        let c = ((cum + q / 2.0) * bins as f64)
            .floor()
            .min(bins as f64 - 1.0) as usize;
        cell_of.push(c);
        mass[c] += q;
        cum += q;
    }
    (cell_of, mass)
}

/// Every target of row `i` of fiber `src → 0` of an area of `n` neurons.
fn row(seed: u64, src: Source, i: u64, n: u64, p: f64) -> Vec<u64> {
    let mut out = Vec::new();
    for b in 0..block_count(n) {
        row_targets(seed, src, 0, i, n, p, b, |j| out.push(j));
    }
    out
}

/// Out-degrees of regenerated rows follow Binomial(n, p): chi-square over
/// 20 cells of equal probability (19 d.o.f., p-value 0.001), 4 seeds, for a
/// single partial block, several blocks with a partial last one, and a
/// sparse fiber.
#[test]
fn out_degree_is_binomial() {
    for &(n, p, rows) in &[
        (5_000u64, 0.05, 3000u64),
        (200_000, 0.01, 2000),
        (1_000_000, 1e-3, 2000),
    ] {
        let law = Pmf::binomial(n, p);
        let (cell_of, mass) = cells(&law, 20);
        for seed in 0..4 {
            let mut obs = vec![0.0; 20];
            for i in 0..rows {
                let d = row(seed, Source::Area(0), i, n, p).len() as u64;
                let idx = d.saturating_sub(law.lo).min(law.pmf.len() as u64 - 1) as usize;
                obs[cell_of[idx]] += 1.0;
            }
            let x = chi2(&obs, &mass);
            assert!(
                x < chi2_999(19),
                "n {n} p {p} seed {seed}: chi-square {x:.1} (limit {:.1}), cells {obs:?}",
                chi2_999(19)
            );
        }
    }
}

/// Targets are uniform over the area (20 equal bins, 19 d.o.f.) and over
/// positions inside a block (16 bins of 4096, 15 d.o.f. — a block-edge bias
/// would show here), p-value 0.001, 4 seeds.
#[test]
fn targets_are_uniform() {
    let (n, p) = (4 * BLOCK, 0.01);
    for seed in 0..4 {
        let mut area = vec![0.0; 20];
        let mut local = vec![0.0; 16];
        for i in 0..1500 {
            for j in row(seed, Source::Stim(0), i, n, p) {
                area[(j * 20 / n) as usize] += 1.0;
                local[((j % BLOCK) / 4096) as usize] += 1.0;
            }
        }
        let x = chi2(&area, &[0.05; 20]);
        assert!(x < chi2_999(19), "seed {seed}: area chi-square {x:.1}");
        let y = chi2(&local, &[1.0 / 16.0; 16]);
        assert!(y < chi2_999(15), "seed {seed}: in-block chi-square {y:.1}");
    }
}

/// Different rows are independent: the in-degree of each target over 2000
/// rows follows Binomial(2000, p) (chi-square over 12 cells, 11 d.o.f.,
/// p-value 0.001; the approximation is within 2% there), 3 seeds.
#[test]
fn in_degree_is_binomial() {
    let (n, p, rows) = (2 * BLOCK, 0.01, 2000u64);
    let law = Pmf::binomial(rows, p);
    let (cell_of, mass) = cells(&law, 12);
    for seed in 0..3 {
        let mut indeg = vec![0u64; n as usize];
        for i in 0..rows {
            for j in row(seed, Source::Area(1), i, n, p) {
                indeg[j as usize] += 1;
            }
        }
        let mut obs = vec![0.0; 12];
        for &d in &indeg {
            let idx = d.saturating_sub(law.lo).min(law.pmf.len() as u64 - 1) as usize;
            obs[cell_of[idx]] += 1.0;
        }
        let x = chi2(&obs, &mass);
        assert!(
            x < chi2_999(11),
            "seed {seed}: chi-square {x:.1}, cells {obs:?}"
        );
    }
}

/// The same (seed, fiber, row, block) gives the same targets whatever the
/// order blocks are generated in; other seeds, rows and fibers differ.
#[test]
fn regeneration_is_deterministic() {
    let (n, p) = (3 * BLOCK + 1234, 0.02);
    for i in [0u64, 7, 999_999] {
        let forward = row(5, Source::Area(2), i, n, p);
        let mut backward = Vec::new();
        for b in (0..block_count(n)).rev() {
            let mut part = Vec::new();
            row_targets(5, Source::Area(2), 0, i, n, p, b, |j| part.push(j));
            backward.splice(0..0, part);
        }
        assert_eq!(forward, backward);
        assert!(forward.windows(2).all(|w| w[0] < w[1]) && *forward.last().unwrap() < n);
        assert_ne!(forward, row(6, Source::Area(2), i, n, p));
        assert_ne!(forward, row(5, Source::Area(2), i + 1, n, p));
        assert_ne!(forward, row(5, Source::Stim(2), i, n, p));
    }
    assert_ne!(
        fiber_key(1, Source::Area(0), 1),
        fiber_key(1, Source::Area(1), 0)
    );
}

/// A one-area model: stimulus `s` (size k) and area `A`, all procedural.
fn model(n: u64, k: usize, p: f64, beta: f64) -> Model {
    let mut m = Model::new(p).unwrap();
    m.add_stimulus(StimSpec {
        name: "s".into(),
        size: k as u64,
    })
    .unwrap();
    m.add_area(AreaSpec {
        name: "A".into(),
        n,
        k,
        beta,
        engine: EngineKind::Procedural,
    })
    .unwrap();
    m
}

/// Drives the engine as `Brain` will: select, Hebbian, synchronous swap.
struct Sim {
    model: Model,
    seed: u64,
    state: ProceduralState,
    winners: Vec<u64>,
    support: HashSet<u64>,
    history: Vec<Vec<u64>>,
}

impl Sim {
    fn new(model: Model, seed: u64) -> Sim {
        Sim {
            model,
            seed,
            state: ProceduralState::new(),
            winners: Vec::new(),
            support: HashSet::new(),
            history: Vec::new(),
        }
    }

    fn plan(&self) -> TargetPlan {
        let areas = if self.winners.is_empty() {
            vec![]
        } else {
            vec![0]
        };
        TargetPlan {
            target: 0,
            stims: vec![0],
            areas,
        }
    }

    fn step(&mut self) -> Selection {
        let plan = self.plan();
        let v = View {
            model: &self.model,
            seed: self.seed,
        };
        let firing: Vec<&[u64]> = vec![&self.winners];
        let sel = self.state.select(&v, &plan, &firing).unwrap();
        self.state
            .hebbian_selected(&v, &plan, &firing, &sel)
            .unwrap();
        self.winners = sel.winners.clone();
        self.support.extend(self.winners.iter().copied());
        self.history.push(self.winners.clone());
        sel
    }
}

fn overlap(a: &[u64], b: &[u64]) -> usize {
    let s: HashSet<u64> = a.iter().copied().collect();
    b.iter().filter(|x| s.contains(x)).count()
}

/// Same winners at every step on rayon pools of 1 and 4 threads, and with
/// the Hebbian update from recorded synapses or by regeneration; the
/// learned weights end identical too.
#[test]
fn thread_count_and_hebbian_path_do_not_change_results() {
    let run = |threads: usize, record: bool| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut sim = Sim::new(model(1_000_000, 400, 0.01, 0.1), 3);
            if !record {
                sim.state.record_limit = 0;
            }
            let mut recorded = Vec::new();
            for _ in 0..6 {
                recorded.push(sim.step().has_synapses());
            }
            let learned: Vec<(u64, u64, f32)> = sim
                .state
                .learned(Source::Area(0), 0)
                .unwrap()
                .iter()
                .collect();
            (sim.history, learned, sim.state.learned_synapses(), recorded)
        })
    };
    let base = run(1, true);
    assert!(
        base.3.iter().all(|&r| r),
        "selections at n = 1e6, k = 400 record their synapses"
    );
    assert!(base.2 > 0);
    for (threads, record) in [(4, true), (1, false), (4, false), (2, true)] {
        let other = run(threads, record);
        assert_eq!(
            base.0, other.0,
            "winners differ with {threads} threads, record {record}"
        );
        assert_eq!(
            base.1, other.1,
            "learned weights differ with {threads} threads, record {record}"
        );
        assert_eq!(base.2, other.2);
    }
}

/// Brute-force inputs of target `j`: Σ over firing rows i with a synapse
/// i → j of w(i, j), straight from `row_targets` and the learned map.
fn brute_input(sim: &Sim, firing: &[(Source, Vec<u64>)], j: u64) -> f64 {
    let n = sim.model.areas[0].n;
    let b = j / BLOCK;
    let mut x = 0.0;
    for (src, rows) in firing {
        let p = sim.model.p(*src, 0);
        let learned = sim.state.learned(*src, 0);
        for &i in rows {
            let mut hit = false;
            row_targets(sim.seed, *src, 0, i, n, p, b, |t| hit |= t == j);
            if hit {
                x += learned.map_or(1.0, |l| l.weight(i, j)) as f64;
            }
        }
    }
    x
}

/// The k-cap's inputs are the sums of regenerated weights with the learned
/// ones applied; winners beat every other neuron (checked by brute force
/// on a small area); Hebbian updates multiply exactly the synapses from
/// firing rows into winners by 1 + β, capped at w_max.
#[test]
fn learned_weights_are_applied_and_capped() {
    let mut m = model(3 * BLOCK, 60, 0.05, 0.5);
    m.set_w_max(Some(2.0)).unwrap();
    let mut sim = Sim::new(m, 11);
    let first = sim.step();
    // After step 1 every synapse stimulus → winner has weight 1.5.
    let stim_rows: Vec<u64> = (0..60).collect();
    let l = sim.state.learned(Source::Stim(0), 0).unwrap();
    let mut count = 0;
    for &j in &first.winners {
        for &i in &stim_rows {
            let mut hit = false;
            row_targets(11, Source::Stim(0), 0, i, 3 * BLOCK, 0.05, j / BLOCK, |t| {
                hit |= t == j
            });
            assert_eq!(
                l.weight(i, j),
                if hit { 1.5 } else { 1.0 },
                "synapse {i} -> {j}"
            );
            count += hit as usize;
        }
    }
    assert_eq!(l.len(), count, "only synapses into winners are stored");
    for _ in 0..4 {
        let prev = sim.winners.clone();
        let firing = vec![
            (Source::Stim(0), stim_rows.clone()),
            (Source::Area(0), prev),
        ];
        let before = Sim {
            state: sim.state.clone(),
            ..Sim::new(sim.model.clone(), 11)
        };
        let sel = sim.step();
        // Inputs of the winners, and of a sample of other neurons, by brute force.
        for (&j, &x) in sel.winners.iter().zip(&sel.inputs).step_by(7) {
            let want = brute_input(&before, &firing, j);
            assert!(
                (x as f64 - want).abs() < 1e-4 * want.max(1.0),
                "winner {j}: engine {x}, brute force {want}"
            );
        }
        let kth = sel.inputs.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
        let winners: HashSet<u64> = sel.winners.iter().copied().collect();
        for j in (0..3 * BLOCK)
            .step_by(1499)
            .filter(|j| !winners.contains(j))
        {
            let x = brute_input(&before, &firing, j);
            assert!(
                x <= kth + 1e-4,
                "loser {j} has input {x} above the k-th winner's {kth}"
            );
        }
    }
    for (_, _, w) in sim.state.learned(Source::Area(0), 0).unwrap().iter() {
        assert!(w > 1.0 && w <= 2.0, "weight {w} outside (1, w_max]");
    }
    let capped = sim
        .state
        .learned(Source::Stim(0), 0)
        .unwrap()
        .iter()
        .filter(|s| s.2 == 2.0)
        .count();
    assert!(
        capped > 0,
        "five steps at beta 0.5 reach the cap 2.0 for persistent winners"
    );
}

/// SPEC §3.3: when fewer than k neurons receive any input, all of them
/// win and the lowest ids without input fill the cap.
#[test]
fn fewer_than_k_with_input_fills_lowest_ids() {
    // p·n = 1: three stimulus rows give about three synapses in all.
    let (n, k) = (1_000_000u64, 50usize);
    let mut m = Model::new(1e-6).unwrap();
    m.add_stimulus(StimSpec {
        name: "s".into(),
        size: 3,
    })
    .unwrap();
    m.add_area(AreaSpec {
        name: "A".into(),
        n,
        k,
        beta: 0.0,
        engine: EngineKind::Procedural,
    })
    .unwrap();
    for seed in 0..5 {
        let st = ProceduralState::new();
        let v = View { model: &m, seed };
        let plan = TargetPlan {
            target: 0,
            stims: vec![0],
            areas: vec![],
        };
        let sel = st.select(&v, &plan, &[]).unwrap();
        let mut touched: Vec<u64> = (0..3)
            .flat_map(|i| row(seed, Source::Stim(0), i, n, 1e-6))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        assert_eq!(sel.received, touched.len() as u64);
        let mut want: Vec<u64> = touched.clone();
        want.extend(
            (0..)
                .filter(|j| !touched.contains(j))
                .take(k - touched.len()),
        );
        want.sort_unstable();
        assert_eq!(sel.winners, want, "seed {seed}");
        for (j, x) in sel.winners.iter().zip(&sel.inputs) {
            assert_eq!(*x > 0.0, touched.contains(j));
        }
    }
}

/// Parameters are validated with errors that name the culprit.
#[test]
fn bad_parameters_are_refused() {
    let m = model(1_000_000, 100, 1e-7, 0.05);
    let st = ProceduralState::new();
    let v = View { model: &m, seed: 0 };
    let plan = TargetPlan {
        target: 0,
        stims: vec![0],
        areas: vec![],
    };
    match st.select(&v, &plan, &[]) {
        Err(KcapError::InvalidParameter { what, why, .. }) => {
            assert!(
                what.contains("s -> A") && why.contains("p·n"),
                "{what}: {why}"
            )
        }
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
    let m = model(100_000, 100, 0.01, 0.05);
    let v = View { model: &m, seed: 0 };
    let plan = TargetPlan {
        target: 0,
        stims: vec![0],
        areas: vec![0],
    };
    let (none, unsorted, too_big): (&[u64], &[u64], &[u64]) = (&[], &[5, 3], &[100_000]);
    assert!(matches!(st.select(&v, &plan, &[none]), Err(KcapError::NoWinners(a)) if a == "A"));
    assert!(matches!(
        st.select(&v, &plan, &[unsorted]),
        Err(KcapError::BadWinners { .. })
    ));
    assert!(matches!(
        st.select(&v, &plan, &[too_big]),
        Err(KcapError::BadWinners { .. })
    ));
    let mut big = Model::new(0.5).unwrap();
    assert!(big
        .add_area(AreaSpec {
            name: "B".into(),
            n: 10,
            k: 10,
            beta: 0.0,
            engine: EngineKind::Procedural
        })
        .is_err());
    big.add_area(AreaSpec {
        name: "B".into(),
        n: 10,
        k: 3,
        beta: 0.0,
        engine: EngineKind::Procedural,
    })
    .unwrap();
    assert!(ProceduralState::check_area(&big, 0).is_ok());
    // Memory does not grow with n.
    let small = model(10_000_000, 1000, 0.01, 0.05);
    let huge = model(1_000_000_000_000, 1000, 0.01, 0.05);
    let w: Vec<u64> = (0..1000).collect();
    let plan = TargetPlan {
        target: 0,
        stims: vec![0],
        areas: vec![0],
    };
    let a = st.memory_estimate(&small, &plan, &[w.as_slice()], 2);
    let b = st.memory_estimate(&huge, &plan, &[w.as_slice()], 2);
    assert_eq!(a.total, b.total);
    assert!(a.total < 256 << 20, "estimate {} bytes", a.total);
}

/// Assembly formation (SPEC §7 parameters at n = 10⁵): stimulus → A once,
/// then stimulus → A plus A → A, 25 steps in all, 5 seeds. Converges: the
/// last two winner sets share ≥ 95% (302 of 317). Support after 25 steps:
/// the explicit C++ reference gives ≈ 1.05k–1.25k on this machine and the
/// lazy engine 1.2k–1.3k (both graphs are Bernoulli(p) like this one); we
/// accept 1.0k–1.45k per seed and a 5-seed mean within 1.05k–1.35k (the
/// union of both ranges with a margin of about two seed-to-seed standard
/// deviations, ≈ 40 each).
#[test]
fn assembly_converges_like_the_references_1e5() {
    let mut total = 0;
    for seed in 0..5 {
        let mut sim = Sim::new(model(100_000, 317, 0.01, 0.05), seed);
        for _ in 0..25 {
            sim.step();
        }
        let h = &sim.history;
        let ov = overlap(&h[h.len() - 1], &h[h.len() - 2]);
        let w = sim.support.len();
        eprintln!("seed {seed}: support {w}, last-two overlap {ov}/317");
        assert!(ov >= 302, "seed {seed}: last-two overlap {ov}/317");
        assert!((1000..=1450).contains(&w), "seed {seed}: support {w}");
        total += w;
    }
    let mean = total / 5;
    assert!((1050..=1350).contains(&mean), "mean support {mean}");
}
