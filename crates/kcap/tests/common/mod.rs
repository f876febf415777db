//! Helpers shared by the integration tests.
#![allow(dead_code)]

use kcap::{ops, Brain, Projection};

/// A brain with one stimulus `s` of size k and one area `A`, winners recorded.
pub fn one_area(n: u64, k: usize, p: f64, beta: f64, seed: u64) -> Brain {
    let mut b = Brain::new(p, seed).unwrap();
    b.add_stimulus("s", k as u64).unwrap();
    b.add_area("A", n, k, beta).unwrap();
    b.record_winners("A", true).unwrap();
    b
}

/// Winners of `area` at every recorded step.
pub fn winner_trace(b: &Brain, area: &str) -> Vec<Vec<u32>> {
    b.area(area)
        .unwrap()
        .history
        .iter()
        .map(|s| s.winners.clone().unwrap())
        .collect()
}

/// (final support, overlap of the last two winner sets, last step with a first-time winner).
pub fn convergence(b: &Brain, area: &str) -> (u64, usize, u64) {
    let h = &b.area(area).unwrap().history;
    let n = h.len();
    let last = h[n - 1].winners.as_ref().unwrap();
    let prev = h[n - 2].winners.as_ref().unwrap();
    let settled = h
        .iter()
        .filter(|s| s.first_winners > 0)
        .map(|s| s.step)
        .max()
        .unwrap_or(0);
    (h[n - 1].support, ops::overlap(last, prev), settled)
}

pub fn recurrent(stim: &str, area: &str) -> Projection {
    Projection::new().fire(stim, [area]).fire(area, [area])
}
