//! The storage-format accuracy report (issue 4); the same as
//! `kcap bench --accuracy SCENARIO`.
//! Usage: accuracy_report [small|small-beta|explicit-250k] [SEEDS]
use kcap::accuracy::{report, scenario, standard_formats, table};
fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "small".into());
    let seeds: u64 = std::env::args()
        .nth(2)
        .map_or(3, |s| s.parse().expect("SEEDS"));
    let sc = scenario(&which).unwrap_or_else(|| panic!("unknown scenario {which:?}"));
    let formats = standard_formats();
    let rows = report(&sc, &formats, &(1..=seeds).collect::<Vec<_>>()).expect("report");
    print!("{}", table(&sc, &formats, &rows));
}
