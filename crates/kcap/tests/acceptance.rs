//! Statistical acceptance tests of the lazy engine against the published
//! behaviour of the model (SPEC §7), over several seeds each.

mod common;
use common::*;
use kcap::{ops, Brain, Projection};

/// Projection converges: n=1e5, k=317, p=0.01, beta=0.05, within 50 steps.
/// Convergence = no first-time winners in the last 10 of 50 steps and the
/// last two winner sets share >= 95% (301 of 317).
///
/// Support after 25 steps: SPEC §7 quotes 3.5k–3.9k, but the reference
/// implementations themselves, run on this machine for seeds 1–5 with this
/// exact schedule, end at 1.20k–1.30k (Python `brain.py`, mean 1250) and
/// 1.23k–1.34k (C++ `brain.cc`, mean 1279); see BENCHMARKS.md. We accept
/// 1.1k–1.45k per seed.
#[test]
fn projection_converges_1e5() {
    for seed in 0..5 {
        let mut b = one_area(100_000, 317, 0.01, 0.05, seed);
        ops::project_rounds(&mut b, "s", "A", 25).unwrap();
        let w25 = b.area("A").unwrap().support;
        assert!(
            (1100..=1450).contains(&w25),
            "seed {seed}: support after 25 steps {w25}"
        );
        for _ in 25..50 {
            b.project(&recurrent("s", "A")).unwrap();
        }
        let (w, ov, settled) = convergence(&b, "A");
        assert!(
            settled <= 40,
            "seed {seed}: still growing at step {settled} (support {w})"
        );
        assert!(ov >= 301, "seed {seed}: last-two overlap {ov}/317");
    }
}

/// SPEC §7: n=1e6, k=1000, p=0.001, beta=0.05, 25 steps: support ≈ 5.75k–6.05k
/// in the reference (measured here: Python 5.68k–6.06k, C++ 5.83k–6.33k over
/// five seeds), growth stopping near step 20, last two sets sharing >= 999.
/// Per seed we accept 5.3k–6.5k and a 5-seed mean in 5.5k–6.3k.
#[test]
fn projection_1e6_matches_reference_range() {
    let mut total = 0;
    for seed in 0..5 {
        let mut b = one_area(1_000_000, 1000, 0.001, 0.05, seed);
        ops::project_rounds(&mut b, "s", "A", 25).unwrap();
        let (w, ov, settled) = convergence(&b, "A");
        assert!((5300..=6500).contains(&w), "seed {seed}: support {w}");
        assert!(ov >= 990, "seed {seed}: overlap {ov}");
        assert!(settled <= 24, "seed {seed}: growth until step {settled}");
        total += w;
    }
    let mean = total / 5;
    assert!((5500..=6300).contains(&mean), "mean support {mean}");
}

/// Pattern completion (SPEC §7): p=0.05, train 25 steps, fire a random half
/// of the assembly into itself for 5 steps: >= 90% (286 of 317) recovered.
#[test]
fn pattern_completion_recovers() {
    for seed in 0..5 {
        let mut b = one_area(100_000, 317, 0.05, 0.05, seed);
        ops::project_rounds(&mut b, "s", "A", 25).unwrap();
        let got = ops::pattern_completion(&mut b, "A", 0.5, 5).unwrap();
        assert!(got >= 286, "seed {seed}: recovered {got}/317");
    }
}

/// Association (PNAS 2020, Fig. 3): assemblies x (from stimulus a via A) and
/// y (from b via B) are projected into C separately; their overlap in C is
/// then near chance. After firing together into C they share a large part of
/// their neurons. Thresholds: before <= 10% (chance is k²/n ≈ 0.3%; shared
/// stimuli none), after >= 20% of k — the paper reports 15–60% by beta.
#[test]
fn association_increases_overlap() {
    let (n, k, p, beta) = (100_000u64, 317usize, 0.05, 0.1);
    for seed in 0..4 {
        let mut b = Brain::new(p, seed).unwrap();
        for s in ["sa", "sb"] {
            b.add_stimulus(s, k as u64).unwrap();
        }
        for a in ["A", "B", "C"] {
            b.add_area(a, n, k, beta).unwrap();
        }
        ops::project_rounds(&mut b, "sa", "A", 10).unwrap();
        ops::project_rounds(&mut b, "sb", "B", 10).unwrap();
        // x: A → C with recurrence.
        let pa = Projection::new().fire("sa", ["A"]).fire("A", ["A", "C"]);
        b.project(&pa).unwrap();
        let pac = pa.clone().fire("C", ["C"]);
        for _ in 0..10 {
            b.project(&pac).unwrap();
        }
        let x = b.winners("C").unwrap().to_vec();
        let pb = Projection::new().fire("sb", ["B"]).fire("B", ["B", "C"]);
        b.project(&pb).unwrap();
        let pbc = pb.clone().fire("C", ["C"]);
        for _ in 0..10 {
            b.project(&pbc).unwrap();
        }
        let y = b.winners("C").unwrap().to_vec();
        let before = ops::overlap(&x, &y);
        ops::associate(&mut b, ("sa", "A"), ("sb", "B"), "C", 10).unwrap();
        // Fire a alone again: the new x' now overlaps the new y'.
        for _ in 0..5 {
            b.project(&pac).unwrap();
        }
        let x2 = b.winners("C").unwrap().to_vec();
        for _ in 0..5 {
            b.project(&pbc).unwrap();
        }
        let y2 = b.winners("C").unwrap().to_vec();
        let after = ops::overlap(&x2, &y2);
        assert!(before <= k / 10, "seed {seed}: overlap before {before}");
        assert!(
            after >= k / 5,
            "seed {seed}: overlap after {after} (before {before})"
        );
    }
}

/// Merge (merge-1e5 parameters): after the merge schedule C holds a stable
/// assembly (last two sets share >= 90%), and firing A alone (with its
/// stimulus) into C recalls most of it (>= 50%): C's assembly is linked to
/// both parents. Same for B.
#[test]
fn merge_forms_a_stable_linked_assembly() {
    let (n, k, p, beta) = (100_000u64, 317usize, 0.01, 0.05);
    for seed in 0..4 {
        let mut b = Brain::new(p, seed).unwrap();
        b.add_stimulus("sa", k as u64).unwrap();
        b.add_stimulus("sb", k as u64).unwrap();
        for a in ["A", "B", "C"] {
            b.add_area(a, n, k, beta).unwrap();
            b.record_winners(a, true).unwrap();
        }
        let c = ops::merge(&mut b, ("sa", "A"), ("sb", "B"), "C", 49).unwrap();
        let (_, ov, _) = convergence(&b, "C");
        assert!(ov >= 285, "seed {seed}: C not stable, overlap {ov}");
        for (stim, parent) in [("sa", "A"), ("sb", "B")] {
            b.set_plasticity(false);
            b.project(
                &Projection::new()
                    .fire(stim, [parent])
                    .fire(parent, [parent, "C"]),
            )
            .unwrap();
            let recall = ops::overlap(&c, b.winners("C").unwrap());
            assert!(
                recall >= k / 2,
                "seed {seed}: {parent} alone recalls {recall} of C"
            );
        }
    }
}
