//! explicit-250k (BENCH.md): stimulus → A, A → A; n = 250 000, k = 500,
//! p = 0.01, beta = 0.05, 25 steps, in a given format (default: auto).
//! Usage: explicit_bench [auto|reference|WEIGHTS/INDICES]
use kcap::format::{FiberFormat, IndexFormat, WeightFormat};
use kcap::{ops, Brain, EngineKind, FormatChoice};
fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "auto".into());
    let choice = match arg.as_str() {
        "auto" => FormatChoice::Auto,
        "reference" => FormatChoice::Fixed(FiberFormat::REFERENCE),
        s => {
            let (w, i) = s.split_once('/').expect("WEIGHTS/INDICES");
            FormatChoice::Fixed(FiberFormat {
                weights: w.parse::<WeightFormat>().unwrap(),
                indices: i.parse::<IndexFormat>().unwrap(),
                ..Default::default()
            })
        }
    };
    let t0 = std::time::Instant::now();
    let mut b = Brain::new(0.01, 1).unwrap();
    b.set_default_format(choice);
    b.set_planned_steps(Some(25));
    b.add_stimulus("s", 500).unwrap();
    b.add_area_with("A", 250_000, 500, 0.05, EngineKind::Explicit)
        .unwrap();
    b.record_winners("A", true).unwrap();
    let gen = t0.elapsed();
    ops::project_rounds(&mut b, "s", "A", 25).unwrap();
    let total = t0.elapsed();
    let h = &b.area("A").unwrap().history;
    let ov = ops::overlap(
        h[23].winners.as_ref().unwrap(),
        h[24].winners.as_ref().unwrap(),
    );
    let rep = &b.memory_report()[0];
    println!(
        "{arg}: format {} | generate {:.2?} | 25 steps {:.2?} | total {:.2?} | {:.3} B/synapse ({} synapses) | support {} overlap {ov} | peak RSS {:.2} GB",
        rep.format,
        gen,
        total - gen,
        total,
        rep.bytes as f64 / rep.synapses as f64,
        rep.synapses,
        h[24].support,
        kcap::memory::peak_rss_bytes().unwrap_or(0) as f64 / 1e9
    );
}
