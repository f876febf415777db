//! Same seed ⇒ same winners at every step, on 1 thread and on many (SPEC §5).
//! The scenario is sized so that every parallel path of the CPU backend runs
//! (row accumulation over 2^18 synapses, batches of newborns, parallel
//! Hebbian update).

mod common;
use common::*;
use kcap::{ops, Brain, Projection};

fn run(threads: usize, seed: u64) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut b = Brain::new(0.05, seed).unwrap();
        b.add_stimulus("s", 2000).unwrap();
        b.add_stimulus("t", 500).unwrap();
        b.add_area("A", 1_000_000, 2000, 0.05).unwrap();
        b.add_area("B", 200_000, 500, 0.1).unwrap();
        b.record_winners("A", true).unwrap();
        b.record_winners("B", true).unwrap();
        b.project(&Projection::new().fire("s", ["A"]).fire("t", ["B"]))
            .unwrap();
        let p = Projection::new()
            .fire("s", ["A"])
            .fire("A", ["A", "B"])
            .fire("B", ["A", "B"]);
        for _ in 0..5 {
            b.project(&p).unwrap();
        }
        (winner_trace(&b, "A"), winner_trace(&b, "B"))
    })
}

#[test]
fn same_winners_on_any_thread_count() {
    let one = run(1, 3);
    for threads in [2, 3, 8] {
        assert_eq!(
            run(threads, 3),
            one,
            "{threads} threads differ from 1 thread"
        );
    }
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let mk = |seed| {
        let mut b = one_area(100_000, 317, 0.01, 0.05, seed);
        ops::project_rounds(&mut b, "s", "A", 10).unwrap();
        winner_trace(&b, "A")
    };
    assert_eq!(mk(5), mk(5));
    assert_ne!(mk(5), mk(6));
}
