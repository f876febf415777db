//! The storage-format accuracy report (issue 4): every format against the
//! f32 reference on the same seed and graph.
//! Usage: accuracy_report [small|small-beta|explicit-250k] [SEEDS]
use kcap::accuracy::{report, standard_formats, Scenario};
fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "small".into());
    let seeds: u64 = std::env::args().nth(2).map_or(3, |s| s.parse().unwrap());
    let sc = match which.as_str() {
        "small" => Scenario {
            name: which.clone(),
            n: 20_000,
            k: 200,
            p: 0.02,
            beta: 0.05,
            steps: 25,
        },
        "small-beta" => Scenario {
            name: which.clone(),
            n: 20_000,
            k: 200,
            p: 0.02,
            beta: 0.001,
            steps: 50,
        },
        "explicit-250k" => Scenario {
            name: which.clone(),
            n: 250_000,
            k: 500,
            p: 0.01,
            beta: 0.05,
            steps: 25,
        },
        other => panic!("unknown scenario {other}"),
    };
    let seeds: Vec<u64> = (1..=seeds).collect();
    let rows = report(&sc, &standard_formats(), &seeds).expect("report");
    println!(
        "scenario {} (n={}, k={}, p={}, beta={}, {} steps), seeds {:?}",
        sc.name, sc.n, sc.k, sc.p, sc.beta, sc.steps, seeds
    );
    println!(
        "{:<18} {:>9} {:>13} {:>16} {:>15} {:>10}",
        "format", "B/synapse", "agreement", "support (ref)", "final overlap", "learning"
    );
    for f in standard_formats() {
        let r: Vec<_> = rows.iter().filter(|r| r.format == f.0).collect();
        let n = r.len() as f64;
        let mean =
            |g: &dyn Fn(&kcap::accuracy::Row) -> f64| r.iter().map(|x| g(x)).sum::<f64>() / n;
        println!(
            "{:<18} {:>9.3} {:>12.1}% {:>8.0} ({:>5.0}) {:>14.1}% {:>10.3}",
            f.0,
            mean(&|x| x.bytes_per_synapse),
            100.0 * mean(&|x| x.mean_agreement),
            mean(&|x| x.final_support as f64),
            mean(&|x| x.reference_support as f64),
            100.0 * mean(&|x| x.final_overlap as f64) / sc.k as f64,
            mean(&|x| x.learning_ratio),
        );
    }
}
