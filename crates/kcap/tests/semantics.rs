//! Exact and statistical checks of step semantics (SPEC §2, §3.1).

mod common;
use common::*;
use kcap::{ops, Brain, Projection};

/// Two areas that both grow in one step get synapses between their new
/// neurons with probability p (the reference omits these). After one step
/// `s → A`, `t → B`, A's k new neurons and B's k new neurons are all new:
/// the A → B fiber must hold ≈ k²p synapses. k = 1000, p = 0.01: mean
/// 10 000, sd ≈ 99.5; we accept ±5 sd, for both directions and 3 seeds.
#[test]
fn areas_growing_together_are_connected() {
    for seed in 0..3 {
        let mut b = Brain::new(0.01, seed).unwrap();
        b.add_stimulus("s", 1000).unwrap();
        b.add_stimulus("t", 1000).unwrap();
        b.add_area("A", 1_000_000, 1000, 0.05).unwrap();
        b.add_area("B", 1_000_000, 1000, 0.05).unwrap();
        b.project(&Projection::new().fire("s", ["A"]).fire("t", ["B"]))
            .unwrap();
        let st = b.lazy_state();
        for (from, to) in [(0, 1), (1, 0), (0, 0), (1, 1)] {
            let syn = st.fibers[from][to].synapses() as f64;
            assert!(
                (syn - 10_000.0).abs() < 5.0 * 99.5,
                "seed {seed}: fiber {from}->{to} has {syn} synapses"
            );
        }
        // Each new neuron got Binomial(1000, 0.01) synapses from the stimulus
        // that did not fire into it: total over 1000 neurons ≈ 10 000.
        let cross: u64 = st.stim[1][0].count.iter().map(|&c| c as u64).sum();
        assert!(
            (cross as f64 - 10_000.0).abs() < 5.0 * 99.5,
            "seed {seed}: t->A stimulus synapses {cross}"
        );
    }
}

/// The input of a new winner equals the number of synapses it received from
/// the firing sources (its split), and each such synapse was potentiated
/// once: after step 1 (s → A only), winner j's stimulus weight sum is
/// count_j · (1 + beta) and count_j ≥ alpha = 9 (n=1e5, k=317, p=0.01, T=317).
#[test]
fn new_winner_inputs_are_split_and_potentiated() {
    let mut b = one_area(100_000, 317, 0.01, 0.05, 4);
    b.project(&Projection::new().fire("s", ["A"])).unwrap();
    let f = &b.lazy_state().stim[0][0];
    assert_eq!(f.count.len(), 317);
    for (&c, &w) in f.count.iter().zip(&f.weight) {
        assert!(c >= 9, "a new winner with input {c} below alpha");
        assert_eq!(w, 1.05f32);
    }
}

/// Plasticity off: weights stay exactly 1; w_max caps every weight.
#[test]
fn plasticity_switch_and_weight_cap() {
    let mut b = one_area(100_000, 317, 0.01, 0.5, 1);
    b.set_plasticity(false);
    ops::project_rounds(&mut b, "s", "A", 5).unwrap();
    let st = b.lazy_state();
    assert!(st.fibers[0][0].rows.iter().flatten().all(|s| s.w == 1.0));
    assert!(st.stim[0][0].weight.iter().all(|&w| w == 1.0));

    let mut b = one_area(100_000, 317, 0.01, 0.5, 1);
    b.set_w_max(Some(2.0)).unwrap();
    ops::project_rounds(&mut b, "s", "A", 10).unwrap();
    let st = b.lazy_state();
    let max = st.fibers[0][0]
        .rows
        .iter()
        .flatten()
        .map(|s| s.w)
        .fold(0f32, f32::max);
    assert_eq!(max, 2.0);
    assert!(st.stim[0][0].weight.iter().all(|&w| w <= 2.0));
}

/// A fixed area keeps its winners when projected into, still learns, and
/// records no first-time winners; activate() fixes [i·k, (i+1)·k).
#[test]
fn fixed_assemblies_and_activate() {
    let mut b = one_area(100_000, 317, 0.01, 0.05, 2);
    ops::project_rounds(&mut b, "s", "A", 5).unwrap();
    let before = b.winners("A").unwrap().to_vec();
    b.fix("A").unwrap();
    b.project(&recurrent("s", "A")).unwrap();
    assert_eq!(b.winners("A").unwrap(), before.as_slice());
    assert_eq!(
        b.area("A").unwrap().history.last().unwrap().first_winners,
        0
    );
    b.unfix("A").unwrap();

    let mut c = Brain::new(0.01, 0).unwrap();
    c.add_area("X", 100_000, 100, 0.05).unwrap();
    c.add_area("Y", 100_000, 100, 0.05).unwrap();
    c.activate("X", 2).unwrap();
    assert_eq!(
        c.winners("X").unwrap(),
        (200..300).collect::<Vec<u32>>().as_slice()
    );
    assert_eq!(c.area("X").unwrap().support, 300);
    assert!(c.area("X").unwrap().fixed);
    // X → Y works from the activated assembly, and X keeps its winners.
    c.project(&Projection::new().fire("X", ["X", "Y"])).unwrap();
    assert_eq!(
        c.winners("X").unwrap(),
        (200..300).collect::<Vec<u32>>().as_slice()
    );
    assert_eq!(c.winners("Y").unwrap().len(), 100);
}

/// Per-fiber p overrides: new neurons' synapses from a non-firing stimulus
/// follow the override. s2 (size 1000) never fires; with p(s2 → A) = 0.05
/// each of A's new neurons gets Binomial(1000, 0.05): mean 50.
#[test]
fn per_fiber_p_override() {
    let mut b = Brain::new(0.01, 9).unwrap();
    b.add_stimulus("s", 1000).unwrap();
    b.add_stimulus("s2", 1000).unwrap();
    b.add_area("A", 1_000_000, 1000, 0.05).unwrap();
    b.set_fiber_p("s2", "A", 0.05).unwrap();
    b.set_fiber_p("s", "A", 0.02).unwrap();
    ops::project_rounds(&mut b, "s", "A", 3).unwrap();
    let f = &b.lazy_state().stim[1][0];
    let mean = f.count.iter().map(|&c| c as f64).sum::<f64>() / f.count.len() as f64;
    // sd of one draw 6.9; of the mean over >= 1000 draws < 0.22: allow 1.5.
    assert!((mean - 50.0).abs() < 1.5, "mean {mean}");
    assert!(
        b.set_fiber_p("s", "A", 0.03).is_err(),
        "p cannot change after neurons exist"
    );
}

/// Winner-set bookkeeping: support counts distinct neurons that fired.
#[test]
fn support_counts_distinct_winners() {
    let mut b = one_area(100_000, 317, 0.01, 0.05, 8);
    ops::project_rounds(&mut b, "s", "A", 12).unwrap();
    let mut seen = std::collections::HashSet::new();
    for (i, w) in winner_trace(&b, "A").iter().enumerate() {
        let before = seen.len();
        seen.extend(w.iter().copied());
        let h = &b.area("A").unwrap().history[i];
        assert_eq!(h.support as usize, seen.len());
        assert_eq!(h.first_winners as usize, seen.len() - before);
    }
}

/// Regression: an area added after neurons have fired must get rows for the
/// existing neurons of older areas (it used to panic when projected into).
#[test]
fn area_added_after_steps_can_be_projected_into() {
    let mut b = one_area(100_000, 317, 0.01, 0.05, 1);
    ops::project_rounds(&mut b, "s", "A", 25).unwrap();
    b.add_area("B", 100_000, 317, 0.05).unwrap();
    b.record_winners("B", true).unwrap();
    b.project(&Projection::new().fire("A", ["B"])).unwrap();
    for _ in 0..10 {
        b.project(
            &Projection::new()
                .fire("s", ["A"])
                .fire("A", ["A", "B"])
                .fire("B", ["B"]),
        )
        .unwrap();
    }
    let (_, ov, _) = convergence(&b, "B");
    assert!(ov >= 290, "B did not settle: {ov}");
}
