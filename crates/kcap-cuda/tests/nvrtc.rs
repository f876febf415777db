//! CI check: every kernel module compiles with NVRTC for sm_90 (Hopper) and
//! sm_80, on a machine without a GPU. NVRTC comes from the PyPI wheels that
//! `scripts/nvrtc-setup.sh` installs (`scripts/test-cuda.sh` sets the paths).
//! Skipped, visibly, only when libnvrtc cannot be loaded.

use kcap_cuda::kernels::{self, MODULES};

/// Prints a skip notice straight to the process's stderr, which the test
/// harness does not capture, so a skipped check is visible in every run.
fn skip(test: &str, why: &str) {
    use std::io::Write;
    // One write, so the line is not interleaved with the harness's output.
    let _ = std::io::stderr().write_all(format!("SKIPPED: {test}: {why}\n").as_bytes());
}

fn nvrtc_or_skip(test: &str) -> bool {
    if kernels::nvrtc_available() {
        return true;
    }
    skip(test, "libnvrtc.so.13 not found on LD_LIBRARY_PATH (run scripts/test-cuda.sh, or eval \"$(scripts/nvrtc-setup.sh)\")");
    false
}

#[test]
fn every_kernel_compiles_for_sm_90() {
    if !nvrtc_or_skip("every_kernel_compiles_for_sm_90") {
        return;
    }
    println!("include dirs: {:?}", kernels::include_dirs());
    let mut failures = Vec::new();
    for m in MODULES {
        match kernels::compile(m, "sm_90") {
            Ok(c) => {
                println!("{}: {} bytes of sm_90 CUBIN", m.name, c.cubin.len());
                // ptxas' resource report: registers, shared memory, spills.
                for line in c.log.lines().filter(|l| !l.trim().is_empty()) {
                    println!("  {line}");
                }
                // No kernel may spill registers to local memory.
                for line in c.log.lines().filter(|l| l.contains("bytes spill stores")) {
                    let spilled = line.split(',').any(|part| {
                        let part = part.trim();
                        part.ends_with("bytes spill stores") && !part.starts_with("0 ")
                    });
                    assert!(!spilled, "{}: register spills: {line}\n{}", m.name, c.log);
                }
            }
            Err(e) => failures.push(format!("{}: {e}", m.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "kernels that do not compile:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_kernel_compiles_for_sm_80() {
    if !nvrtc_or_skip("every_kernel_compiles_for_sm_80") {
        return;
    }
    for m in MODULES {
        if let Err(e) = kernels::compile(m, "sm_80") {
            panic!("{}: {e}", m.name);
        }
    }
}

#[test]
fn every_kernel_the_launchers_name_is_compiled() {
    if !nvrtc_or_skip("every_kernel_the_launchers_name_is_compiled") {
        return;
    }
    for (module, names) in [
        (&kernels::EXPLICIT, kcap_cuda::ops::explicit::KERNEL_NAMES),
        (
            &kernels::PROCEDURAL,
            kcap_cuda::ops::procedural::KERNEL_NAMES,
        ),
    ] {
        let c = kernels::compile(module, "sm_90").unwrap();
        for name in names {
            let sym = name.as_bytes();
            assert!(
                c.cubin
                    .windows(sym.len() + 1)
                    .any(|w| &w[..sym.len()] == sym && w[sym.len()] == 0),
                "{name} is not in the {} module's CUBIN",
                module.name
            );
        }
    }
}

#[test]
fn a_broken_kernel_is_reported_with_the_log() {
    if !nvrtc_or_skip("a_broken_kernel_is_reported_with_the_log") {
        return;
    }
    let bad = kernels::Module {
        name: "broken",
        src: "extern \"C\" __global__ void f() { undefined_thing(); }",
    };
    let e = kernels::compile(&bad, "sm_90").unwrap_err().to_string();
    assert!(e.contains("broken") && e.contains("undefined_thing"), "{e}");
}

#[test]
fn includes_are_expanded_once() {
    let src = kernels::expanded_source(&kernels::TOPK_F16);
    assert_eq!(src.matches("// ---- begin common.cuh ----").count(), 1);
    assert_eq!(src.matches("// ---- begin topk.cuh ----").count(), 1);
    assert!(src.contains("#include <cuda_fp16.h>"));
    assert!(!src.contains("#include \"common.cuh\""));
}

#[test]
fn the_kernel_cache_returns_what_nvrtc_compiled() {
    if !nvrtc_or_skip("the_kernel_cache_returns_what_nvrtc_compiled") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kcap-kernel-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let m = &kernels::RNG;
    // First call compiles and writes the file; it is not a cache hit.
    let (fresh, hit) = kernels::compile_cached_in(Some(&dir), m, "sm_90").unwrap();
    assert!(hit.is_none(), "an empty cache cannot hit");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(
        files.len(),
        1,
        "one CUBIN written, no temporary left: {files:?}"
    );
    // Second call reads the same bytes back from that file.
    let (again, hit) = kernels::compile_cached_in(Some(&dir), m, "sm_90").unwrap();
    assert_eq!(hit.as_deref(), Some(files[0].path().as_path()));
    assert_eq!(again, fresh);
    // Another target or module is another entry.
    let (other, hit) = kernels::compile_cached_in(Some(&dir), m, "sm_80").unwrap();
    assert!(hit.is_none());
    assert_ne!(other, fresh);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    // Without a folder nothing is cached.
    let (plain, hit) = kernels::compile_cached_in(None, m, "sm_90").unwrap();
    assert!(hit.is_none());
    assert_eq!(plain.len(), fresh.len());
    let _ = std::fs::remove_dir_all(&dir);
}
