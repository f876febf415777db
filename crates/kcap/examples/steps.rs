//! Times each step of a one-area projection: steps N K P STEPS.
use kcap::{Brain, Projection};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: u64 = a[1].parse().unwrap();
    let k: usize = a[2].parse().unwrap();
    let p: f64 = a[3].parse().unwrap();
    let steps: usize = a[4].parse().unwrap();
    let mut b = Brain::new(p, 0).unwrap();
    b.add_stimulus("s", k as u64).unwrap();
    b.add_area("A", n, k, 0.05).unwrap();
    let t0 = std::time::Instant::now();
    for i in 0..steps {
        let t = std::time::Instant::now();
        let pr = if i == 0 {
            Projection::new().fire("s", ["A"])
        } else {
            Projection::new().fire("s", ["A"]).fire("A", ["A"])
        };
        b.project(&pr).unwrap();
        eprintln!(
            "step {i}: {:?} support {}",
            t.elapsed(),
            b.area("A").unwrap().support
        );
    }
    eprintln!("total {:?}", t0.elapsed());
}
