//! `--device` and `[brain] device`: unknown names are usage/config errors;
//! `cuda` runs on a GPU where there is one and, where there is none (CI),
//! fails before anything is written, with a message naming the problem.

mod common;
use common::{kcap, Dir};

const SMALL: &str = r#"
name = "tiny"
[brain]
p = 0.05
seed = 3
[[stimulus]]
name = "s"
size = 30
[[area]]
name = "A"
n = 3000
k = 30
beta = 0.1
[[step]]
fire = { s = ["A"] }
[[step]]
fire = { s = ["A"], A = ["A"] }
repeat = 4
"#;

#[test]
fn unknown_device_option_is_a_usage_error() {
    let d = Dir::new("dev-opt");
    let f = d.write("e.toml", SMALL);
    let o = kcap(
        &[
            "run",
            f.to_str().unwrap(),
            "--device",
            "gpu0",
            "--out",
            "out",
        ],
        &d.0,
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("unknown device \"gpu0\"") && o.stderr.contains("cuda:N"),
        "{}",
        o.stderr
    );
    assert!(!d.out().exists());
}

#[test]
fn unknown_device_in_the_file_is_a_config_error_with_its_line() {
    let d = Dir::new("dev-file");
    let f = d.write(
        "e.toml",
        &SMALL.replace("seed = 3", "seed = 3\ndevice = \"tpu\""),
    );
    let o = kcap(&["check", f.to_str().unwrap()], &d.0);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains(":6:") && o.stderr.contains("device: unknown device \"tpu\""),
        "{}",
        o.stderr
    );
}

#[test]
fn cpu_device_runs_and_is_recorded() {
    let d = Dir::new("dev-cpu");
    let f = d.write(
        "e.toml",
        &SMALL.replace("seed = 3", "seed = 3\ndevice = \"cpu\""),
    );
    let o = kcap(&["run", f.to_str().unwrap(), "-q", "--out", "out"], &d.0);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.out().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(r["timing"]["device"], "cpu");
}

/// With a GPU: the run succeeds on cuda:0 with the CPU's winners. Without
/// one: exit 1, "no CUDA driver/device found", and no output folder.
#[test]
fn cuda_device_runs_on_a_gpu_or_fails_cleanly() {
    let d = Dir::new("dev-cuda");
    let f = d.write(
        "e.toml",
        &SMALL.replace("seed = 3", "seed = 3\nsave_winners = true"),
    );
    let o = kcap(
        &[
            "run",
            f.to_str().unwrap(),
            "-q",
            "--device",
            "cuda",
            "--out",
            "out",
        ],
        &d.0,
    );
    if o.code == 0 {
        let read = |p: &std::path::Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p.join("results.json")).unwrap()).unwrap()
        };
        let gpu = read(&d.out());
        assert_eq!(gpu["timing"]["device"], "cuda:0");
        // (Lazy areas sum inputs in fixed point on the GPU, so winners may
        // differ from the CPU's by ties; exactness per engine is tested in
        // crates/kcap-cuda/tests/gpu.rs.)
        let o = kcap(&["run", f.to_str().unwrap(), "-q", "--out", "cpu"], &d.0);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let cpu = read(&d.0.join("cpu"));
        assert_eq!(gpu["timing"]["steps"], cpu["timing"]["steps"]);
    } else {
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(
            o.stderr
                .contains("device cuda:0: no CUDA driver/device found"),
            "{}",
            o.stderr
        );
        assert!(
            !d.out().exists(),
            "nothing is written when the device is missing"
        );
    }
}
