//! Every error of SPEC §2 and of parameter validation: the right variant,
//! a message naming the culprit, and a brain left unchanged.

use kcap::{Brain, KcapError, Projection};

fn brain() -> Brain {
    let mut b = Brain::new(0.01, 1).unwrap();
    b.add_stimulus("s", 100).unwrap();
    b.add_area("A", 10_000, 100, 0.05).unwrap();
    b.add_area("B", 10_000, 100, 0.05).unwrap();
    b
}

fn msg(e: KcapError) -> String {
    e.to_string()
}

#[test]
fn unknown_target_area() {
    let mut b = brain();
    let e = b.project(&Projection::new().fire("s", ["Z"])).unwrap_err();
    assert_eq!(e, KcapError::UnknownArea("Z".into()));
    assert!(msg(e).contains("\"Z\""));
    assert_eq!(b.steps(), 0);
}

#[test]
fn unknown_source() {
    let mut b = brain();
    let e = b
        .project(&Projection::new().fire("nope", ["A"]))
        .unwrap_err();
    assert!(msg(e).contains("unknown area or stimulus \"nope\""));
}

#[test]
fn stimulus_as_target_is_unknown_area() {
    let mut b = brain();
    let e = b.project(&Projection::new().fire("A", ["s"])).unwrap_err();
    // A has no winners yet: that is reported first, naming A.
    assert_eq!(e, KcapError::NoWinners("A".into()));
    b.project(&Projection::new().fire("s", ["A"])).unwrap();
    let e = b.project(&Projection::new().fire("A", ["s"])).unwrap_err();
    assert_eq!(e, KcapError::UnknownArea("s".into()));
}

#[test]
fn projecting_from_area_without_winners() {
    let mut b = brain();
    let e = b
        .project(&Projection::new().fire("s", ["A"]).fire("B", ["A"]))
        .unwrap_err();
    assert!(msg(e).contains("cannot project from area \"B\": it has no winners"));
    assert_eq!(b.steps(), 0);
    assert_eq!(
        b.area("A").unwrap().support,
        0,
        "a failed step must change nothing"
    );
}

#[test]
fn k_not_below_n() {
    let mut b = Brain::new(0.1, 0).unwrap();
    let e = b.add_area("A", 100, 100, 0.1).unwrap_err();
    assert!(msg(e).contains("area \"A\": k = 100 must be at least 1 and smaller than n = 100"));
    assert!(b.add_area("A", 100, 0, 0.1).is_err());
}

#[test]
fn p_out_of_range() {
    for p in [0.0, -0.1, 1.5, f64::NAN] {
        let e = Brain::new(p, 0).unwrap_err();
        assert!(
            msg(e).contains("connection probability must lie in (0, 1]"),
            "p = {p}"
        );
    }
    assert!(Brain::new(1.0, 0).is_ok());
    let mut b = brain();
    let e = b.set_fiber_p("s", "A", 2.0).unwrap_err();
    assert!(msg(e).contains("p of fiber s -> A"));
}

#[test]
fn negative_beta() {
    let mut b = Brain::new(0.1, 0).unwrap();
    let e = b.add_area("A", 1000, 10, -0.5).unwrap_err();
    assert!(msg(e).contains("beta of area \"A\" = -0.5"));
    let mut b = brain();
    let e = b.set_beta("s", "A", -1.0).unwrap_err();
    assert!(msg(e).contains("beta of fiber s -> A = -1"));
}

#[test]
fn duplicate_names() {
    let mut b = brain();
    assert_eq!(
        b.add_area("s", 100, 10, 0.1).unwrap_err(),
        KcapError::DuplicateName("s".into())
    );
    assert_eq!(
        b.add_stimulus("A", 10).unwrap_err(),
        KcapError::DuplicateName("A".into())
    );
}

#[test]
fn area_too_small_for_new_winners() {
    // n = 250, k = 100: after two steps of fresh winners n - w <= k.
    let mut b = Brain::new(0.5, 0).unwrap();
    b.add_stimulus("s", 100).unwrap();
    b.add_area("A", 250, 100, 0.0).unwrap();
    let mut err = None;
    for _ in 0..10 {
        if let Err(e) = b.project(&Projection::new().fire("s", ["A"])) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("the area must run out of never-fired neurons");
    let text = msg(e.clone());
    assert!(matches!(e, KcapError::AreaTooSmall { .. }));
    assert!(
        text.contains("area \"A\" is too small to sample 100 new winners"),
        "{text}"
    );
}

#[test]
fn bad_winner_lists() {
    let mut b = brain();
    b.project(&Projection::new().fire("s", ["A"])).unwrap();
    let e = b.set_winners("A", vec![1, 1]).unwrap_err();
    assert!(msg(e).contains("repeats"));
    let e = b.set_winners("A", vec![100_000]).unwrap_err();
    assert!(msg(e).contains("neuron 100000 has never fired"));
    assert!(b.set_winners("A", vec![3, 1, 2]).is_ok());
    assert_eq!(b.winners("A").unwrap(), &[1, 2, 3]);
}

#[test]
fn bad_activate_index_and_w_max() {
    let mut b = brain();
    let e = b.activate("A", 100).unwrap_err();
    assert!(msg(e).contains("activate index for area \"A\""));
    assert!(msg(b.set_w_max(Some(0.5)).unwrap_err()).contains("w_max"));
}

#[test]
fn explicit_area_too_big_for_memory_is_refused_before_allocating() {
    let mut b = Brain::new(0.5, 0).unwrap();
    // 2·10^5 neurons at p = 0.5: 2·10^10 synapses, ~160 GB in f32/u32.
    let e = b
        .add_area_with("E", 200_000, 100, 0.1, kcap::EngineKind::Explicit)
        .unwrap_err();
    let text = msg(e.clone());
    assert!(matches!(e, KcapError::OutOfMemory { .. }), "{text}");
    assert!(
        text.contains("explicit area \"E\"") && text.contains("GB"),
        "{text}"
    );
    assert!(b.area("E").is_err(), "no half-added area");
}
