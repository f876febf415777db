use kcap::{ops, Brain};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map_or(1_000_000, |s| s.parse().unwrap());
    let k: usize = args.get(2).map_or(1000, |s| s.parse().unwrap());
    let p: f64 = args.get(3).map_or(0.001, |s| s.parse().unwrap());
    for seed in 0..args.get(4).map_or(3, |s| s.parse().unwrap()) {
        let t = std::time::Instant::now();
        let mut b = Brain::new(p, seed).unwrap();
        b.add_stimulus("s", k as u64).unwrap();
        b.add_area("A", n, k, 0.05).unwrap();
        b.record_winners("A", true).unwrap();
        ops::project_rounds(&mut b, "s", "A", 25).unwrap();
        let el = t.elapsed();
        let h = &b.area("A").unwrap().history;
        let last = h[h.len() - 1].winners.as_ref().unwrap();
        let prev = h[h.len() - 2].winners.as_ref().unwrap();
        println!(
            "seed {seed}: {:?} support {} overlap {} supports {:?} mem {:?}",
            el,
            h.last().unwrap().support,
            ops::overlap(last, prev),
            h.iter().map(|s| s.support).collect::<Vec<_>>(),
            b.memory()
        );
    }
}
