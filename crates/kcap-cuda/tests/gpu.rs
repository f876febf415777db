//! GPU tests: the CUDA kernels against the CPU code they must reproduce.
//! Each test prints `SKIPPED: <test>: <reason>` and returns when no CUDA
//! driver or device is present (CI); on a GPU machine every check runs.
//!
//! - k-cap: the same id set as `kcap::cap::top_k` (ties to the lowest index)
//!   for f32 and f16, dense (n from 1 to 1e8) and sparse, on random and
//!   tie-heavy inputs, including inputs built to defeat the sampled
//!   prefilter (the fallback must give the same answer).
//! - accumulation: within the tolerance stated in `ops::accumulate` of the
//!   CPU backend's f32 sums, and equal for unit weights.
//! - generator and `ln_fast`: bit-identical to `kcap::rng` / `kcap::stats`.

use half::f16;
use kcap::backend::{cpu::Cpu, Backend, Syn};
use kcap::rng::{self, Stream};
use kcap_cuda::ops::{rng as grng, topk};
use kcap_cuda::{Cuda, CudaDevice, Error};
use std::sync::{Arc, OnceLock};

/// Prints a skip notice straight to the process's stderr, which the test
/// harness does not capture, so a skipped check is visible in every run.
fn skip(test: &str, why: &str) {
    use std::io::Write;
    // One write, so the line is not interleaved with the harness's output.
    let _ = std::io::stderr().write_all(format!("SKIPPED: {test}: {why}\n").as_bytes());
}

/// The device shared by all tests of this binary (or why there is none).
fn device(test: &str) -> Option<Arc<CudaDevice>> {
    static DEV: OnceLock<Result<Arc<CudaDevice>, Error>> = OnceLock::new();
    match DEV.get_or_init(|| CudaDevice::new(0)) {
        Ok(d) => Some(d.clone()),
        Err(e) => {
            skip(test, &e.to_string());
            None
        }
    }
}

fn cuda(test: &str) -> Option<Cuda> {
    device(test).map(|d| Cuda::on(d).expect("kernels compile and load"))
}

fn upload<T: cudarc::driver::DeviceRepr>(d: &CudaDevice, v: &[T]) -> cudarc::driver::CudaSlice<T> {
    d.stream().clone_htod(v).expect("upload")
}

/// Device k-cap of a dense f32 vector, sorted ids.
fn gpu_topk_f32(
    d: &CudaDevice,
    ws: &mut topk::TopkWorkspace,
    v: &[f32],
    k: usize,
) -> (Vec<u32>, bool) {
    let dv = upload(d, v);
    topk::topk(d, ws, &dv, k).expect("topk_f32");
    let o = ws.fetch_sorted(d).expect("topk_f32 result");
    (o.ids, o.prefiltered)
}

fn gpu_topk_f16(
    d: &CudaDevice,
    ws: &mut topk::TopkWorkspace,
    v: &[f16],
    k: usize,
) -> (Vec<u32>, bool) {
    let bits: Vec<u16> = v.iter().map(|h| h.to_bits()).collect();
    let dv = upload(d, &bits);
    topk::topk(d, ws, &dv, k).expect("topk_f16");
    let o = ws.fetch_sorted(d).expect("topk_f16 result");
    (o.ids, o.prefiltered)
}

fn ks_for(n: usize) -> Vec<usize> {
    let mut ks = vec![1, 2, 31, 1000, (n as f64).sqrt() as usize, n / 2, n - 1];
    ks.retain(|&k| k >= 1 && k < n);
    ks.sort_unstable();
    ks.dedup();
    if n > 10_000_000 {
        ks.retain(|&k| k == (n as f64).sqrt() as usize || k == 1000);
    }
    ks
}

fn sizes() -> Vec<usize> {
    vec![
        2,
        3,
        31,
        32,
        33,
        1000,
        4097,
        65_539,
        1_000_000,
        (1 << 22) + 5,
        10_000_000,
        100_000_000,
    ]
}

#[test]
fn no_driver_or_device_is_an_error_not_a_panic() {
    match CudaDevice::new(0) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("no CUDA driver/device found"), "{msg}");
            println!("no GPU here, as expected of CI: {msg}");
        }
        Ok(_) => {
            let e = CudaDevice::new(1 << 20).expect_err("no such device");
            assert!(matches!(e, Error::NoDevice { .. }), "{e}");
            let k: kcap::KcapError = e.into();
            assert!(k.to_string().contains("no CUDA driver/device found"), "{k}");
        }
    }
}

#[test]
fn topk_f32_random_matches_cpu() {
    let Some(d) = device("topk_f32_random_matches_cpu") else {
        return;
    };
    let mut ws = topk::TopkWorkspace::new(&d).unwrap();
    for n in sizes() {
        let mut s = Stream::keyed(1, &[n as u64]);
        let v: Vec<f32> = (0..n).map(|_| s.uniform() as f32).collect();
        for k in ks_for(n) {
            let (ids, pre) = gpu_topk_f32(&d, &mut ws, &v, k);
            assert_eq!(ids, kcap::cap::top_k(&v, k), "n={n} k={k}");
            println!("topk_f32 n={n} k={k}: ok (prefilter {pre})");
        }
    }
}

#[test]
fn topk_f16_random_matches_cpu() {
    let Some(d) = device("topk_f16_random_matches_cpu") else {
        return;
    };
    let mut ws = topk::TopkWorkspace::new(&d).unwrap();
    for n in sizes() {
        let mut s = Stream::keyed(2, &[n as u64]);
        // Uniform f32 rounded to f16: every value repeats (heavy ties near 1).
        let v: Vec<f16> = (0..n).map(|_| f16::from_f32(s.uniform() as f32)).collect();
        let vf: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
        for k in ks_for(n) {
            let (ids, pre) = gpu_topk_f16(&d, &mut ws, &v, k);
            assert_eq!(ids, kcap::cap::top_k(&vf, k), "n={n} k={k}");
            println!("topk_f16 n={n} k={k}: ok (prefilter {pre})");
        }
    }
}

/// The u16 k-cap (the procedural engine's stored counts): small counts with
/// heavy ties, a few up to 65 535 (above 2^15, where an f16 reading would
/// order them wrongly), from an offset into the buffer as for a chunk.
#[test]
fn topk_u16_counts_match_cpu() {
    let Some(d) = device("topk_u16_counts_match_cpu") else {
        return;
    };
    let mut ws = topk::TopkWorkspace::new(&d).unwrap();
    for (i, n) in sizes().into_iter().enumerate() {
        let mut s = Stream::keyed(3, &[n as u64]);
        let v: Vec<u16> = (0..n)
            .map(|_| {
                let u = s.uniform();
                if u < 1e-3 {
                    (u * 6.5e7) as u16
                } else {
                    (u * 40.0) as u16
                }
            })
            .collect();
        let vf: Vec<f32> = v.iter().map(|&c| c as f32).collect();
        let off = if i % 2 == 0 { 0 } else { 64 };
        let mut buf = vec![u16::MAX; off];
        buf.extend_from_slice(&v);
        buf.extend_from_slice(&[u16::MAX; 8]);
        let dv = upload(&d, &buf);
        for k in ks_for(n) {
            topk::topk_u16(&d, &mut ws, &dv, off, n, k).expect("topk_u16");
            let o = ws.fetch_sorted(&d).expect("topk_u16 result");
            assert_eq!(o.ids, kcap::cap::top_k(&vf, k), "n={n} k={k} offset={off}");
            println!(
                "topk_u16 n={n} k={k} offset={off}: ok (prefilter {})",
                o.prefiltered
            );
        }
    }
    let dv = upload(&d, &[0u16; 16]);
    assert!(
        topk::topk_u16(&d, &mut ws, &dv, 4, 8, 2).is_err(),
        "unaligned offset"
    );
    assert!(
        topk::topk_u16(&d, &mut ws, &dv, 8, 9, 2).is_err(),
        "past the end"
    );
}

#[test]
fn topk_tie_heavy_and_special_values_match_cpu() {
    let Some(d) = device("topk_tie_heavy_and_special_values_match_cpu") else {
        return;
    };
    let mut ws = topk::TopkWorkspace::new(&d).unwrap();
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        1e-40,
        f32::MAX,
    ];
    for n in [5usize, 100, 10_000, 1_000_000, (1 << 22) + 1, 10_000_000] {
        let mut s = Stream::keyed(3, &[n as u64]);
        let few: Vec<f32> = (0..n).map(|_| s.below(7) as f32).collect();
        let equal = vec![0.25f32; n];
        let special: Vec<f32> = (0..n)
            .map(|_| specials[s.below(specials.len() as u64) as usize])
            .collect();
        for (label, v) in [
            ("seven values", &few),
            ("all equal", &equal),
            ("specials", &special),
        ] {
            for k in ks_for(n) {
                let (ids, pre) = gpu_topk_f32(&d, &mut ws, v, k);
                assert_eq!(ids, kcap::cap::top_k(v, k), "{label} f32 n={n} k={k}");
                let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                let hf: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
                let (ids16, _) = gpu_topk_f16(&d, &mut ws, &h, k);
                assert_eq!(ids16, kcap::cap::top_k(&hf, k), "{label} f16 n={n} k={k}");
                println!("ties {label} n={n} k={k}: ok (f32 prefilter {pre})");
            }
        }
    }
}

#[test]
fn topk_prefilter_fallback_gives_the_same_answer() {
    let Some(d) = device("topk_prefilter_fallback_gives_the_same_answer") else {
        return;
    };
    let mut ws = topk::TopkWorkspace::new(&d).unwrap();
    let n = 1usize << 23;
    // Every sampled position holds the maximum and nothing else does: the
    // sampled threshold passes only 65 536 elements, fewer than k.
    let sampled: Vec<usize> = (0..topk::SAMPLE as u64)
        .map(|s| (s * n as u64 / topk::SAMPLE as u64) as usize)
        .collect();
    let mut v = vec![0.5f32; n];
    for &j in &sampled {
        v[j] = 1.0;
    }
    let mut s = Stream::keyed(4, &[]);
    for x in v.iter_mut().filter(|x| **x == 0.5) {
        *x = 0.5 * s.uniform() as f32;
    }
    for k in [100_000usize, 70_000] {
        let (ids, pre) = gpu_topk_f32(&d, &mut ws, &v, k);
        assert!(!pre, "the prefilter should have fallen back");
        assert_eq!(ids, kcap::cap::top_k(&v, k), "k={k}");
    }
    // All equal: the threshold passes all n, more than the buffer holds.
    let eq = vec![3.0f32; n];
    let (ids, pre) = gpu_topk_f32(&d, &mut ws, &eq, 5000);
    assert!(!pre);
    assert_eq!(ids, (0..5000).collect::<Vec<u32>>());
}

#[test]
fn topk_sparse_matches_sorted_reference() {
    let Some(d) = device("topk_sparse_matches_sorted_reference") else {
        return;
    };
    let mut ws = topk::TopkWorkspace::new(&d).unwrap();
    for m in [2usize, 50, 5000, 300_000, 3_000_000] {
        let mut s = Stream::keyed(5, &[m as u64]);
        // Distinct ids in random order (a random stride walk of a permutation).
        let ids: Vec<u32> = (0..m as u64)
            .map(|j| ((j * 2_654_435_761 + 12_345) % (4 * m as u64 + 1)) as u32)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), m, "ids must be distinct");
        let vals: Vec<f32> = (0..m).map(|_| s.below(50) as f32 * 0.5).collect();
        let di = upload(&d, &ids);
        let dv = upload(&d, &vals);
        let hb: Vec<u16> = vals.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
        let dh = upload(&d, &hb);
        for k in ks_for(m) {
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]).then(ids[a].cmp(&ids[b])));
            let mut want: Vec<u32> = order[..k].iter().map(|&j| ids[j]).collect();
            want.sort_unstable();
            topk::topk_sparse(&d, &mut ws, &di, &dv, k).unwrap();
            assert_eq!(
                ws.fetch_sorted(&d).unwrap().ids,
                want,
                "sparse f32 m={m} k={k}"
            );
            topk::topk_sparse(&d, &mut ws, &di, &dh, k).unwrap();
            assert_eq!(
                ws.fetch_sorted(&d).unwrap().ids,
                want,
                "sparse f16 m={m} k={k}"
            );
        }
        println!("sparse m={m}: ok");
    }
}

#[test]
fn topk_rejects_bad_sizes_before_launching() {
    let Some(d) = device("topk_rejects_bad_sizes_before_launching") else {
        return;
    };
    let mut ws = topk::TopkWorkspace::new(&d).unwrap();
    let v = upload(&d, &[1.0f32, 2.0, 3.0]);
    for k in [0usize, 3, 4] {
        assert!(
            matches!(topk::topk(&d, &mut ws, &v, k), Err(Error::Invalid { .. })),
            "k={k}"
        );
    }
    let ids = upload(&d, &[1u32, 2]);
    assert!(matches!(
        topk::topk_sparse(&d, &mut ws, &ids, &v, 1),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn backend_top_k_matches_cpu_including_edge_k() {
    let Some(c) = cuda("backend_top_k_matches_cpu_including_edge_k") else {
        return;
    };
    let mut s = Stream::keyed(6, &[]);
    for n in [0usize, 1, 2, 10, 1000] {
        let v: Vec<f32> = (0..n).map(|_| s.below(5) as f32).collect();
        for k in [0, 1, n / 2, n, n + 3] {
            assert_eq!(c.top_k(&v, k), Cpu.top_k(&v, k), "n={n} k={k}");
        }
    }
}

/// Random rows with weights (1 + beta)^m, as the lazy engine stores them.
fn random_rows(seed: u64, nrows: usize, n: usize, deg: usize) -> Vec<Vec<Syn>> {
    let mut s = Stream::keyed(seed, &[]);
    (0..nrows)
        .map(|_| {
            let len = s.below(2 * deg as u64 + 1) as usize;
            (0..len)
                .map(|_| Syn {
                    to: s.below(n as u64) as u32,
                    w: 1.05f32.powi(s.below(40) as i32),
                })
                .collect()
        })
        .collect()
}

#[test]
fn accumulate_matches_cpu_within_tolerance() {
    let Some(c) = cuda("accumulate_matches_cpu_within_tolerance") else {
        return;
    };
    for (nrows, n, deg, nf) in [
        (10usize, 50usize, 5usize, 4usize),
        (2000, 10_000, 100, 1000),
        (20_000, 1_000_000, 500, 3000),
    ] {
        let rows = random_rows(7 + nrows as u64, nrows, n, deg);
        let mut s = Stream::keyed(8, &[nrows as u64]);
        let firing: Vec<u32> = (0..nf).map(|_| s.below(nrows as u64) as u32).collect();
        let init: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.5 } else { 0.0 }).collect();
        let (mut g, mut cpu) = (init.clone(), init.clone());
        c.accumulate_rows(&rows, &firing, &mut g);
        Cpu.accumulate_rows(&rows, &firing, &mut cpu);
        // Per-input term count and absolute sum, for the stated bound.
        let (mut cnt, mut abs) = (vec![0f64; n], vec![0f64; n]);
        for &r in &firing {
            for syn in &rows[r as usize] {
                cnt[syn.to as usize] += 1.0;
                abs[syn.to as usize] += syn.w.abs() as f64;
            }
        }
        let eps = 2f64.powi(-24);
        let mut worst = 0f64;
        for j in 0..n {
            let tol =
                (cnt[j] + 1.0) * eps * (init[j].abs() as f64 + abs[j]) + cnt[j] * 2f64.powi(-32);
            let diff = (g[j] as f64 - cpu[j] as f64).abs();
            assert!(
                diff <= tol,
                "input {j}: gpu {} cpu {} diff {diff:e} > tol {tol:e}",
                g[j],
                cpu[j]
            );
            if tol > 0.0 {
                worst = worst.max(diff / tol);
            }
        }
        println!("accumulate rows={nrows} n={n} firing={nf}: ok, worst diff/tol = {worst:.3}");
    }
}

#[test]
fn accumulate_unit_weights_equal_cpu_exactly() {
    let Some(c) = cuda("accumulate_unit_weights_equal_cpu_exactly") else {
        return;
    };
    let mut rows = random_rows(9, 5000, 100_000, 200);
    rows.iter_mut().flatten().for_each(|s| s.w = 1.0);
    let firing: Vec<u32> = (0..5000).step_by(3).collect();
    let (mut g, mut cpu) = (vec![0f32; 100_000], vec![0f32; 100_000]);
    c.accumulate_rows(&rows, &firing, &mut g);
    Cpu.accumulate_rows(&rows, &firing, &mut cpu);
    assert_eq!(g, cpu);
    // Deterministic: a second run gives the same bits.
    let mut g2 = vec![0f32; 100_000];
    c.accumulate_rows(&rows, &firing, &mut g2);
    assert_eq!(g, g2);
}

#[test]
fn generator_words_and_keys_are_bit_identical() {
    let Some(d) = device("generator_words_and_keys_are_bit_identical") else {
        return;
    };
    for (key, c0) in [
        (0u64, 0u64),
        (rng::derive(42, &[1, 2, 3]), 7),
        (u64::MAX, u64::MAX - 500),
    ] {
        let g = grng::words(&d, key, c0, 100_000).unwrap();
        for (i, w) in g.iter().enumerate() {
            assert_eq!(
                *w,
                rng::word(key, c0.wrapping_add(i as u64)),
                "key {key:#x} counter {}",
                c0.wrapping_add(i as u64)
            );
        }
    }
    let parents: Vec<u64> = (0..10_000u64).map(|i| rng::word(5, i)).collect();
    for words in [
        vec![],
        vec![0u64],
        vec![1, 2, 3, u64::MAX],
        (0..17).collect::<Vec<u64>>(),
    ] {
        let g = grng::derive(&d, &parents, &words).unwrap();
        for (p, h) in parents.iter().zip(&g) {
            assert_eq!(*h, rng::derive(*p, &words), "words {words:?}");
        }
    }
}

#[test]
fn uniform_and_ln_fast_are_bit_identical() {
    let Some(d) = device("uniform_and_ln_fast_are_bit_identical") else {
        return;
    };
    let key = rng::derive(11, &[rng::purpose::WIRING, 3]);
    let (u, l) = grng::uniform_ln(&d, key, 1_000_000).unwrap();
    for i in 0..u.len() {
        let cu = rng::unit_open(rng::word(key, i as u64));
        assert_eq!(u[i].to_bits(), cu.to_bits(), "uniform {i}");
        assert_eq!(
            l[i].to_bits(),
            kcap::stats::ln_fast(cu).to_bits(),
            "ln_fast(uniform {i} = {cu})"
        );
    }
    let mut xs = vec![
        1.0,
        2.0,
        0.5,
        1e-300,
        1e300,
        std::f64::consts::SQRT_2,
        std::f64::consts::FRAC_1_SQRT_2,
        f64::MIN_POSITIVE,
        f64::MAX,
    ];
    let mut s = Stream::keyed(12, &[]);
    xs.extend((0..200_000).map(|_| {
        let e = s.below(2000) as i32 - 1000;
        (1.0 + s.uniform()) * 2f64.powi(e)
    }));
    let g = grng::ln_fast(&d, &xs).unwrap();
    for (x, y) in xs.iter().zip(&g) {
        assert_eq!(
            y.to_bits(),
            kcap::stats::ln_fast(*x).to_bits(),
            "ln_fast({x:e})"
        );
    }
}

#[test]
fn device_fills_match_the_cpu_generator() {
    let Some(d) = device("device_fills_match_the_cpu_generator") else {
        return;
    };
    let n = 100_003usize;
    let mut f = d.stream().alloc_zeros::<f32>(n).unwrap();
    let mut h = d.stream().alloc_zeros::<u16>(n).unwrap();
    let mut b = d.stream().alloc_zeros::<u32>(n).unwrap();
    grng::fill_uniform_f32(&d, 77, &mut f).unwrap();
    grng::fill_uniform_f16(&d, 77, &mut h).unwrap();
    grng::fill_below_u32(&d, 78, 1_000_000_007, &mut b).unwrap();
    let (f, h, b) = (
        d.stream().clone_dtoh(&f).unwrap(),
        d.stream().clone_dtoh(&h).unwrap(),
        d.stream().clone_dtoh(&b).unwrap(),
    );
    let mut s = Stream::new(78);
    for i in 0..n {
        let u = rng::unit_open(rng::word(77, i as u64)) as f32;
        assert_eq!(f[i].to_bits(), u.to_bits());
        assert_eq!(h[i], f16::from_f32(u).to_bits());
        assert_eq!(b[i] as u64, s.below(1_000_000_007));
    }
}

#[test]
fn lazy_brain_runs_on_the_cuda_backend() {
    let Some(c) = cuda("lazy_brain_runs_on_the_cuda_backend") else {
        return;
    };
    let run = |backend: Option<Arc<dyn Backend>>| {
        let mut b = kcap::Brain::new(0.01, 7).unwrap();
        if let Some(be) = backend {
            b.set_backend(be).unwrap();
        }
        b.add_stimulus("s", 317).unwrap();
        b.add_area("A", 100_000, 317, 0.05).unwrap();
        b.project(&kcap::Projection::new().fire("s", ["A"]))
            .unwrap();
        for _ in 0..15 {
            b.project(&kcap::Projection::new().fire("s", ["A"]).fire("A", ["A"]))
                .unwrap();
        }
        (b.winners("A").unwrap().to_vec(), b.backend_name())
    };
    let mut c = c;
    c.set_offload_min(0); // every call on the GPU, however small
    let (gpu, name) = run(Some(Arc::new(c)));
    let (cpu, _) = run(None);
    assert_eq!(name, "cuda:0");
    assert_eq!(gpu.len(), 317);
    let same = gpu.iter().filter(|w| cpu.contains(w)).count();
    println!("lazy brain, 16 steps: {same} of 317 final winners equal to the CPU run's");
}

/// A procedural brain model: stimuli of the given sizes into one area.
fn proc_model(n: u64, k: usize, p: f64, stims: &[u64], beta: f64) -> kcap::model::Model {
    use kcap::model::{AreaSpec, EngineKind, Model, StimSpec};
    let mut m = Model::new(p).unwrap();
    for (i, &size) in stims.iter().enumerate() {
        m.add_stimulus(StimSpec {
            name: format!("s{i}"),
            size,
        })
        .unwrap();
    }
    m.add_area(AreaSpec {
        name: "A".into(),
        n,
        k,
        beta,
        engine: EngineKind::Procedural,
    })
    .unwrap();
    m
}

/// Runs `steps` steps of stimuli → A (and A → A from step 2) on the CPU
/// engine and on the GPU (with `opts`), and requires identical winners,
/// inputs (bitwise), received counts, event counts and learned synapses at
/// every step. Returns how the GPU obtained its counts at each step.
fn proc_gpu_equals_cpu(
    dev: &Arc<CudaDevice>,
    model: &kcap::model::Model,
    steps: usize,
    opts: &kcap_cuda::ops::procedural::ProcOptions,
    what: &str,
) -> Vec<&'static str> {
    let mut ws = kcap_cuda::ops::procedural::ProcWorkspace::new(dev).unwrap();
    let plans: Vec<Vec<usize>> = (0..steps)
        .map(|s| if s == 0 { vec![] } else { vec![0] })
        .collect();
    proc_run_equal(dev, &mut ws, model, 11, &plans, opts, false, what)
}

/// One GPU workspace, CPU and GPU engines side by side: step i fires every
/// stimulus and the areas `plans[i]` into A; the corrections are given with
/// the step, or computed while the device counts (`deferred`, every other
/// step). Asserts equality as [`proc_gpu_equals_cpu`]; returns the paths.
#[allow(clippy::too_many_arguments)]
fn proc_run_equal(
    dev: &Arc<CudaDevice>,
    ws: &mut kcap_cuda::ops::procedural::ProcWorkspace,
    model: &kcap::model::Model,
    seed: u64,
    plans: &[Vec<usize>],
    opts: &kcap_cuda::ops::procedural::ProcOptions,
    deferred: bool,
    what: &str,
) -> Vec<&'static str> {
    use kcap::engine::procedural::{ProceduralState, View};
    use kcap::engine::TargetPlan;
    use kcap_cuda::ops::procedural::{select, select_deferred};
    let (mut cpu, mut gpu) = (ProceduralState::new(), ProceduralState::new());
    let mut winners: Vec<u64> = Vec::new();
    let v = View { model, seed };
    let mut paths = Vec::new();
    for (step, areas) in plans.iter().enumerate() {
        let plan = TargetPlan {
            target: 0,
            stims: (0..model.stimuli.len()).collect(),
            areas: areas.clone(),
        };
        let firing: Vec<&[u64]> = vec![&winners];
        let want = cpu.select(&v, &plan, &firing).unwrap();
        let out = if deferred && step % 2 == 1 {
            let ds = gpu.device_step_rows(&v, &plan, &firing).unwrap();
            let o = select_deferred(dev, ws, &ds, opts, |c| {
                gpu.device_corrections_into(&v, &plan, &firing, c)
                    .map_err(|e| e.to_string())
            })
            .unwrap();
            (o, ds)
        } else {
            let ds = gpu.device_step(&v, &plan, &firing).unwrap();
            (select(dev, ws, &ds, opts).unwrap(), ds)
        };
        paths.push(out.0.path);
        let got = out.0.into_selection(&out.1).unwrap();
        assert_eq!(
            got.winners,
            want.winners,
            "{what}: winners differ at step {}",
            step + 1
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&got.inputs),
            bits(&want.inputs),
            "{what}: inputs differ at step {}",
            step + 1
        );
        assert_eq!(
            got.received,
            want.received,
            "{what}: received, step {}",
            step + 1
        );
        assert_eq!(got.events, want.events, "{what}: events, step {}", step + 1);
        cpu.hebbian_selected(&v, &plan, &firing, &want).unwrap();
        gpu.hebbian_selected(&v, &plan, &firing, &got).unwrap();
        assert_eq!(
            cpu.learned_synapses(),
            gpu.learned_synapses(),
            "{what}: learned, step {}",
            step + 1
        );
        winners = got.winners;
    }
    for src in (0..model.stimuli.len())
        .map(kcap::Source::Stim)
        .chain([kcap::Source::Area(0)])
    {
        assert_eq!(
            cpu.learned(src, 0),
            gpu.learned(src, 0),
            "{what}: learned weights of {src:?}"
        );
    }
    println!(
        "procedural GPU == CPU ({what}): {} steps identical, paths {paths:?}",
        plans.len()
    );
    paths
}

#[test]
fn procedural_step_on_gpu_equals_cpu() {
    let Some(dev) = device("procedural_step_on_gpu_equals_cpu") else {
        return;
    };
    use kcap_cuda::ops::procedural::ProcOptions;
    let def = ProcOptions::default();
    // A last block shorter than 2^16, β > 0 so corrections and learned weights matter.
    let m = proc_model(2_000_003, 400, 0.01, &[400], 0.1);
    proc_gpu_equals_cpu(&dev, &m, 6, &def, "n=2e6 p=0.01 default");
    // Several chunks, the exact logarithm only, a narrow shared-memory
    // table, and the streaming path (no counts kept on the device).
    for (opts, what) in [
        (
            ProcOptions {
                chunk_blocks: 3,
                ..def
            },
            "chunks of 3 blocks",
        ),
        (
            ProcOptions {
                fast_log: false,
                ..def
            },
            "exact logarithm only",
        ),
        (
            ProcOptions {
                fast_f32: false,
                ..def
            },
            "double-precision fast path",
        ),
        (ProcOptions { seg_bits: 0, ..def }, "no resume marks"),
        (
            ProcOptions {
                seg_bits: 12,
                ..def
            },
            "resume marks every 4096 targets",
        ),
        (
            ProcOptions {
                mark_areas: true,
                ..def
            },
            "resume marks for the area's own rows too",
        ),
        (
            ProcOptions {
                shared_keys: false,
                ..def
            },
            "block keys hashed at each row switch",
        ),
        (
            ProcOptions {
                seg_bits: 15,
                ..def
            },
            "resume marks every 32768 targets",
        ),
        (
            ProcOptions {
                hits_threads: 96,
                ..def
            },
            "synapses found by blocks of 96 threads",
        ),
        (
            ProcOptions {
                table_bits: 12,
                fast_log: false,
                ..def
            },
            "12-bit table",
        ),
        (
            ProcOptions {
                table_bits: 15,
                ..def
            },
            "15-bit table + fast log (+ resume marks if they fit)",
        ),
        (
            ProcOptions {
                resident: false,
                ..def
            },
            "streaming",
        ),
        (
            ProcOptions {
                resident: false,
                chunk_blocks: 5,
                ..def
            },
            "streaming, chunks of 5 blocks",
        ),
    ] {
        proc_gpu_equals_cpu(&dev, &m, 4, &opts, what);
    }
    // p = 10^-3 (BENCH.md's 1e9 regime, where the fast path decides less).
    let m = proc_model(3_000_000, 1000, 1e-3, &[1000], 0.05);
    proc_gpu_equals_cpu(&dev, &m, 4, &def, "n=3e6 p=1e-3");
    // Dense rows (p = 0.5: skips of 0, many events per row and block).
    let m = proc_model(300_000, 100, 0.5, &[100], 0.05);
    proc_gpu_equals_cpu(&dev, &m, 3, &def, "p=0.5");
    // Two stimuli with different p (no shared table), and a fixed fiber.
    let mut m = proc_model(1_500_000, 300, 0.01, &[300, 200], 0.1);
    m.set_p(kcap::Source::Stim(1), 0, 0.02).unwrap();
    m.set_beta(kcap::Source::Stim(1), 0, 0.0).unwrap();
    proc_gpu_equals_cpu(&dev, &m, 4, &def, "two stimuli, different p, one fixed");
    // Fewer than k neurons receive input: the lowest ids fill the cap.
    let m = proc_model(1_000_000, 1000, 2e-5, &[5], 0.1);
    proc_gpu_equals_cpu(&dev, &m, 3, &def, "fewer than k receive input");
}

/// The dense counts kept on the device between steps: the stimulus counts
/// are built once and reused, the A → A counts come from the previous
/// step's speculation when the rows match, and every change of what they
/// were computed from (seed, stimulus, p, area size, plan) rebuilds them —
/// each step equal to the CPU engine, with corrections given or deferred.
#[test]
fn procedural_resident_counts_follow_their_inputs() {
    let Some(dev) = device("procedural_resident_counts_follow_their_inputs") else {
        return;
    };
    use kcap_cuda::ops::procedural::{ProcOptions, ProcWorkspace};
    let def = ProcOptions::default();
    let mut ws = ProcWorkspace::new(&dev).unwrap();
    let a = |n: usize| {
        vec![vec![]; 1]
            .into_iter()
            .chain(vec![vec![0]; n - 1])
            .collect::<Vec<_>>()
    };
    let m = proc_model(1_300_001, 300, 0.01, &[300], 0.1);
    let paths = proc_run_equal(
        &dev,
        &mut ws,
        &m,
        5,
        &a(5),
        &def,
        true,
        "resident, speculated",
    );
    assert_eq!(
        paths,
        [
            "resident",
            "speculated",
            "speculated",
            "speculated",
            "speculated"
        ],
        "stimulus counts built at step 1, A → A speculated from step 2 (the target's own fiber, counted ahead from step 1's winners)"
    );
    // The same workspace, another seed: nothing may be reused.
    let paths = proc_run_equal(&dev, &mut ws, &m, 6, &a(3), &def, false, "another seed");
    assert_eq!(paths, ["resident", "speculated", "speculated"]);
    // Another stimulus size, then another p, then another n.
    let m2 = proc_model(1_300_001, 300, 0.01, &[250], 0.1);
    proc_run_equal(&dev, &mut ws, &m2, 6, &a(3), &def, true, "another stimulus");
    let m3 = proc_model(1_300_001, 300, 0.012, &[250], 0.1);
    proc_run_equal(&dev, &mut ws, &m3, 6, &a(3), &def, false, "another p");
    let m4 = proc_model(900_000, 300, 0.01, &[250], 0.1);
    proc_run_equal(&dev, &mut ws, &m4, 6, &a(3), &def, true, "another n");
    // Speculation misses: the plan drops A → A for a step, so the
    // speculated counts (for A → A) must not be used there; every step
    // counts A → A ahead, also a step whose plan leaves it out.
    let plans = vec![vec![], vec![0], vec![], vec![0], vec![0], vec![]];
    let paths = proc_run_equal(&dev, &mut ws, &m4, 7, &plans, &def, true, "plan changes");
    assert_eq!(
        paths,
        [
            "resident",
            "speculated",
            "resident",
            "speculated",
            "speculated",
            "resident"
        ]
    );
    // Resident without speculation; two stimuli (a two-fiber base) with a fixed one.
    let nospec = ProcOptions {
        speculate: false,
        ..def
    };
    let paths = proc_run_equal(
        &dev,
        &mut ws,
        &m4,
        8,
        &a(4),
        &nospec,
        true,
        "no speculation",
    );
    assert!(paths.iter().all(|p| *p == "resident"), "{paths:?}");
    let mut m5 = proc_model(1_000_000, 300, 0.01, &[300, 200], 0.1);
    m5.set_p(kcap::Source::Stim(1), 0, 0.02).unwrap();
    m5.set_beta(kcap::Source::Stim(1), 0, 0.0).unwrap();
    proc_run_equal(&dev, &mut ws, &m5, 9, &a(4), &def, true, "two stimuli");
    // Streaming after resident steps on the same workspace, and back.
    let stream = ProcOptions {
        resident: false,
        ..def
    };
    let paths = proc_run_equal(&dev, &mut ws, &m5, 9, &a(3), &stream, true, "streaming");
    assert!(paths.iter().all(|p| *p == "stream"), "{paths:?}");
    proc_run_equal(&dev, &mut ws, &m5, 10, &a(3), &def, false, "resident again");
}

/// The backend's selection with its own Hebbian update (the stimulus's
/// synapses applied while the device searches the area's own): winners,
/// inputs and every learned weight equal the CPU engine's select + update,
/// step by step, stimulus plus A → A.
#[test]
fn procedural_select_learn_equals_select_then_update() {
    let Some(c) = cuda("procedural_select_learn_equals_select_then_update") else {
        return;
    };
    use kcap::backend::Backend;
    use kcap::engine::procedural::{ProceduralState, View};
    use kcap::engine::TargetPlan;
    let m = proc_model(1_300_001, 300, 0.01, &[300], 0.1);
    let v = View {
        model: &m,
        seed: 21,
    };
    let (mut cpu, mut gpu) = (ProceduralState::new(), ProceduralState::new());
    let mut winners: Vec<u64> = Vec::new();
    for step in 0..5 {
        let plan = TargetPlan {
            target: 0,
            stims: vec![0],
            areas: if step == 0 { vec![] } else { vec![0] },
        };
        let firing: Vec<&[u64]> = vec![&winners];
        let want = cpu.select(&v, &plan, &firing).unwrap();
        let got = c
            .procedural_select_learn(&mut gpu, &v, &plan, &firing)
            .expect("the CUDA backend runs procedural steps")
            .unwrap();
        cpu.hebbian_selected(&v, &plan, &firing, &want).unwrap();
        assert_eq!(got.winners, want.winners, "step {}", step + 1);
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.inputs), bits(&want.inputs), "step {}", step + 1);
        assert!(!got.has_synapses(), "the update is applied already");
        assert_eq!(
            cpu.learned_synapses(),
            gpu.learned_synapses(),
            "step {}",
            step + 1
        );
        for src in [kcap::Source::Stim(0), kcap::Source::Area(0)] {
            assert_eq!(
                cpu.learned(src, 0),
                gpu.learned(src, 0),
                "{src:?}, step {}",
                step + 1
            );
        }
        winners = got.winners;
    }
    println!("select + learn on the GPU == CPU select + update: 5 steps");
}

#[test]
fn procedural_step_refuses_what_the_device_memory_cannot_hold() {
    if device("procedural_step_refuses_what_the_device_memory_cannot_hold").is_none() {
        return;
    }
    use kcap::engine::procedural::{ProceduralState, View};
    use kcap::engine::TargetPlan;
    use kcap_cuda::ops::procedural::{select, ProcOptions, ProcWorkspace};
    // A device of its own, so the cap does not reach the other tests.
    let dev = CudaDevice::new(0).unwrap();
    let opts = ProcOptions::default();
    let m = proc_model(2_000_003, 400, 0.01, &[400], 0.1);
    let need = ProcWorkspace::bytes_for(2_000_003, 400, &opts);
    let v = View { model: &m, seed: 5 };
    let plan = TargetPlan {
        target: 0,
        stims: vec![0],
        areas: vec![],
    };
    let none: Vec<u64> = Vec::new();
    let firing: Vec<&[u64]> = vec![&none];
    let step = ProceduralState::new()
        .device_step(&v, &plan, &firing)
        .unwrap();
    let mut ws = ProcWorkspace::new(&dev).unwrap();
    dev.set_memory_limit(Some(need / 2));
    let e = select(&dev, &mut ws, &step, &opts).expect_err("over the limit");
    let msg = e.to_string();
    assert!(
        msg.contains("not enough GPU memory") && msg.contains("under the memory limit"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{:.2} GiB", need as f64 / 1073741824.0)),
        "{msg}"
    );
    // With room, the same workspace takes the step.
    dev.set_memory_limit(Some(need + (64 << 20)));
    select(&dev, &mut ws, &step, &opts).expect("fits");
    dev.set_memory_limit(None);
}

#[test]
fn procedural_fast_log_bound_is_measured() {
    let Some(dev) = device("procedural_fast_log_bound_is_measured") else {
        return;
    };
    let b = kcap_cuda::ops::procedural::log2_bound(&dev).unwrap();
    println!("fast log2 error bound on {}: {b:?}", dev.name());
    // The hardware log2 is accurate to ~2^-22; the bound adds the
    // truncation to 24 bits and a factor 2 of margin.
    let b = b.expect("the device's __log2f error is within 2^-20");
    assert!(b > 2f64.powf(-22.4) && b < 2f64.powi(-18), "bound {b}");
    // Single precision: the conversion's share alone is 1.25 * 2^-23.4.
    let (abs, rel) = kcap_cuda::ops::procedural::log2_bound_f32(&dev)
        .unwrap()
        .expect("the device's lg2 error on [2^-21, 1] is within 2^-19");
    println!(
        "single-precision bounds on {}: abs {abs:e}, rel {rel:e}",
        dev.name()
    );
    assert!(
        abs as f64 > 1.25 * 2f64.powf(-23.4) && (abs as f64) < 2f64.powi(-17),
        "abs {abs}"
    );
    assert!(
        rel as f64 > 1.25 * 2f64.powf(-22.9) && (rel as f64) < 2f64.powi(-17),
        "rel {rel}"
    );
}

#[test]
fn procedural_brain_uses_the_gpu_through_the_backend() {
    let Some(c) = cuda("procedural_brain_uses_the_gpu_through_the_backend") else {
        return;
    };
    use kcap::engine::procedural::{ProceduralState, View};
    use kcap::engine::TargetPlan;
    let m = proc_model(1_000_000, 200, 0.01, &[200], 0.05);
    let v = View { model: &m, seed: 3 };
    let st = ProceduralState::new();
    let plan = TargetPlan {
        target: 0,
        stims: vec![0],
        areas: vec![],
    };
    let firing: Vec<&[u64]> = vec![&[]];
    let got = c
        .procedural_select(&st, &v, &plan, &firing)
        .expect("the CUDA backend runs procedural steps")
        .unwrap();
    let want = st.select(&v, &plan, &firing).unwrap();
    assert_eq!(got.winners, want.winners);
    assert!(got.has_synapses());
}

/// A procedural brain on the CUDA backend (dense counts kept on the device,
/// speculation on) gives the CPU brain's winners at every step, also when
/// it is checkpointed and resumed mid-run — on the same backend, whose
/// device counts must then be checked rather than trusted, and on a fresh
/// one, which rebuilds them.
#[test]
fn procedural_brain_on_gpu_resumes_from_checkpoint() {
    let Some(c) = cuda("procedural_brain_on_gpu_resumes_from_checkpoint") else {
        return;
    };
    let c: Arc<dyn Backend> = Arc::new(c);
    let new_brain = |seed: u64| {
        let mut b = kcap::Brain::new(0.01, seed).unwrap();
        b.add_stimulus("s", 300).unwrap();
        b.add_area_with("A", 1_200_000, 300, 0.1, kcap::EngineKind::Procedural)
            .unwrap();
        b
    };
    let step = |b: &mut kcap::Brain, i: usize| {
        let p = kcap::Projection::new().fire("s", ["A"]);
        let p = if i == 0 { p } else { p.fire("A", ["A"]) };
        b.project(&p).unwrap();
        b.winners("A").unwrap().to_vec()
    };
    let mut cpu = new_brain(21);
    let want: Vec<Vec<u32>> = (0..7).map(|i| step(&mut cpu, i)).collect();
    let mut gpu = new_brain(21);
    gpu.set_backend(c.clone()).unwrap();
    for (i, w) in want.iter().enumerate().take(3) {
        assert_eq!(&step(&mut gpu, i), w, "step {}", i + 1);
    }
    // Another brain (other seed) on the same backend in between.
    let mut other = new_brain(22);
    other.set_backend(c.clone()).unwrap();
    for i in 0..2 {
        step(&mut other, i);
    }
    let bytes = kcap::checkpoint::to_bytes(&gpu).unwrap();
    let mut resumed = kcap::checkpoint::from_bytes(&bytes, std::path::Path::new("mem")).unwrap();
    resumed.set_backend(c.clone()).unwrap();
    for (i, w) in want.iter().enumerate().skip(3).take(2) {
        assert_eq!(&step(&mut resumed, i), w, "resumed, step {}", i + 1);
    }
    let bytes = kcap::checkpoint::to_bytes(&resumed).unwrap();
    let mut fresh = kcap::checkpoint::from_bytes(&bytes, std::path::Path::new("mem")).unwrap();
    fresh.set_backend(Arc::new(Cuda::new(0).unwrap())).unwrap();
    for (i, w) in want.iter().enumerate().skip(5) {
        assert_eq!(&step(&mut fresh, i), w, "fresh backend, step {}", i + 1);
    }
    assert_eq!(
        fresh.procedural_state().fibers(),
        cpu.procedural_state().fibers(),
        "learned weights equal to the CPU run's"
    );
}

// ---- explicit engine on the device (ops::explicit) ----------------------------

use kcap::engine::explicit::{fiber_id, PackedFiber};
use kcap::format::{Accumulator, FiberFormat, IndexFormat, Layout, Rounding, WeightFormat};
use kcap::model::EngineKind;
use kcap::FormatChoice;

/// Every format of SPEC §4: CSR rows, weights × indices × rounding
/// (narrow floats only) × accumulator, then bit weights in CSR (u32, u16)
/// and bitmap rows × accumulator.
fn device_formats() -> Vec<FiberFormat> {
    let mut out = Vec::new();
    for weights in [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Bf16,
        WeightFormat::LogU8,
    ] {
        let roundings: &[Rounding] = match weights {
            WeightFormat::F16 | WeightFormat::Bf16 => &[Rounding::Nearest, Rounding::Stochastic],
            _ => &[Rounding::Nearest],
        };
        for indices in [IndexFormat::U32, IndexFormat::U16] {
            for &rounding in roundings {
                for accumulator in [Accumulator::F32, Accumulator::Fixed] {
                    out.push(FiberFormat {
                        weights,
                        indices,
                        layout: Layout::Csr,
                        rounding,
                        accumulator,
                    });
                }
            }
        }
    }
    for (indices, layout) in [
        (IndexFormat::U32, Layout::Csr),
        (IndexFormat::U16, Layout::Csr),
        (IndexFormat::U32, Layout::Bitmap),
    ] {
        for accumulator in [Accumulator::F32, Accumulator::Fixed] {
            out.push(FiberFormat {
                weights: WeightFormat::Bit,
                indices,
                layout,
                rounding: Rounding::Nearest,
                accumulator,
            });
        }
    }
    out
}

/// Bit-weight bitmap rows.
const BITMAP: FiberFormat = FiberFormat {
    weights: WeightFormat::Bit,
    indices: IndexFormat::U32,
    layout: Layout::Bitmap,
    rounding: Rounding::Nearest,
    accumulator: Accumulator::F32,
};

/// Asserts that two fibers hold the same synapses and learned weights, bit
/// for bit (a device fiber is downloaded).
fn assert_same_fiber(g: &PackedFiber, h: &PackedFiber, what: &str) {
    let (g, h) = (g.to_host().unwrap(), h.to_host().unwrap());
    assert_eq!(g.to_parts().unwrap(), h.to_parts().unwrap(), "{what}");
    let bits = |x: &PackedFiber| {
        let mut v: Vec<(u32, Vec<(u32, u32)>)> = x
            .side()
            .iter()
            .map(|(&r, e)| (r, e.iter().map(|&(j, w)| (j, w.to_bits())).collect()))
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(bits(&g), bits(&h), "{what}: learned side-table weights");
}

#[test]
fn explicit_fibers_generated_on_the_gpu_equal_the_hosts() {
    let Some(c) = cuda("explicit_fibers_generated_on_the_gpu_equal_the_hosts") else {
        return;
    };
    // Two column blocks (narrow last one), a complement fiber (p > 1/2),
    // a full one (p = 1), and a small sparse one.
    for (n_src, n_tgt, p) in [
        (2100u64, 140_000u64, 0.01),
        (300, 70_000, 0.7),
        (50, 3000, 1.0),
        (1500, 1000, 0.03),
    ] {
        for f in [
            FiberFormat::REFERENCE,
            FiberFormat {
                weights: WeightFormat::LogU8,
                indices: IndexFormat::U16,
                ..FiberFormat::REFERENCE
            },
            FiberFormat {
                weights: WeightFormat::Bf16,
                indices: IndexFormat::U16,
                ..FiberFormat::REFERENCE
            },
            FiberFormat {
                weights: WeightFormat::Bit,
                indices: IndexFormat::U16,
                ..FiberFormat::REFERENCE
            },
            BITMAP,
        ] {
            let host = PackedFiber::generate(11, 3, n_src, n_tgt, p, f, 0.05, None).unwrap();
            let dev = PackedFiber::generate_on(&c, 11, 3, n_src, n_tgt, p, f, 0.05, None).unwrap();
            assert!(dev.device().is_some(), "{} stays on the host", f.label());
            assert_eq!(dev.synapses(), host.synapses());
            let back = dev.to_host().unwrap();
            assert_eq!(
                back.to_parts().unwrap(),
                host.to_parts().unwrap(),
                "{n_src}x{n_tgt} p={p} {}",
                f.label()
            );
        }
    }
    // Bitmap rows in batches: 1200 rows of 70 000 at p = 0.9 are 75.6 M
    // targets, more than one batch of drawn u32 targets (2^26).
    let host =
        PackedFiber::generate(5, fiber_id(0, 0), 1200, 70_000, 0.9, BITMAP, 0.0, None).unwrap();
    let dev = PackedFiber::generate_on(&c, 5, fiber_id(0, 0), 1200, 70_000, 0.9, BITMAP, 0.0, None)
        .unwrap();
    assert!(dev.device().is_some());
    assert!(dev.synapses() > 1 << 26, "{} synapses", dev.synapses());
    assert_same_fiber(&dev, &host, "bitmap in batches");
}

/// Runs the two-area explicit scenario (stimulus → A, A ↔ B, recurrence)
/// with format `f` on `backend`, returning every step's winners of A and B
/// and the brain.
fn explicit_run(
    f: FiberFormat,
    backend: Option<Arc<dyn Backend>>,
    steps: usize,
) -> (Vec<(Vec<u32>, Vec<u32>)>, kcap::Brain) {
    let mut b = kcap::Brain::new(0.01, 21).unwrap();
    if let Some(be) = backend {
        b.set_backend(be).unwrap();
    }
    b.set_default_format(FormatChoice::Fixed(f));
    b.add_stimulus("s", 150).unwrap();
    b.add_area_with("A", 70_000, 150, 0.05, EngineKind::Explicit)
        .unwrap();
    b.add_area_with("B", 20_000, 100, 0.1, EngineKind::Explicit)
        .unwrap();
    let mut out = Vec::new();
    let record = |b: &kcap::Brain| {
        (
            b.winners("A").unwrap().to_vec(),
            b.winners("B").unwrap().to_vec(),
        )
    };
    b.project(&kcap::Projection::new().fire("s", ["A"]))
        .unwrap();
    out.push(record(&b));
    for i in 1..steps {
        let mut p = kcap::Projection::new()
            .fire("s", ["A"])
            .fire("A", ["A", "B"]);
        if i > 1 {
            p = p.fire("B", ["B", "A"]);
        }
        b.project(&p).unwrap();
        out.push(record(&b));
    }
    (out, b)
}

#[test]
fn explicit_brain_gives_the_cpu_winners_at_every_step_in_every_format() {
    let Some(d) = device("explicit_brain_gives_the_cpu_winners_at_every_step_in_every_format")
    else {
        return;
    };
    let gpu: Arc<dyn Backend> = Arc::new(Cuda::on(d).unwrap());
    for f in device_formats() {
        let (cpu_w, cpu_b) = explicit_run(f, None, 12);
        let (gpu_w, gpu_b) = explicit_run(f, Some(gpu.clone()), 12);
        let fibers = gpu_b.lazy_state().fibers.iter().flatten();
        assert!(
            fibers
                .filter_map(|x| x.packed.as_ref())
                .all(|p| p.device().is_some()),
            "{}: every packed fiber on the GPU",
            f.label()
        );
        for (step, (c, g)) in cpu_w.iter().zip(&gpu_w).enumerate() {
            assert_eq!(c, g, "{}: winners differ at step {}", f.label(), step + 1);
        }
        // The learned weights too, bit for bit (downloaded; bit weights:
        // the side tables).
        let mut learned = 0;
        for (a, row) in cpu_b.lazy_state().fibers.iter().enumerate() {
            for (t, fib) in row.iter().enumerate() {
                let (Some(h), Some(g)) = (&fib.packed, &gpu_b.lazy_state().fibers[a][t].packed)
                else {
                    continue;
                };
                let what = format!("{}: fiber {a}->{t} after the run", f.label());
                assert_same_fiber(g, h, &what);
                learned += h.side().values().map(Vec::len).sum::<usize>();
            }
        }
        if f.weights == WeightFormat::Bit {
            assert!(learned > 1000, "{}: {learned} learned weights", f.label());
        }
        println!("{}: 12 steps, same winners and weights", f.label());
    }
}

#[test]
fn explicit_checkpoint_from_the_gpu_resumes_on_either_backend() {
    let Some(d) = device("explicit_checkpoint_from_the_gpu_resumes_on_either_backend") else {
        return;
    };
    let gpu: Arc<dyn Backend> = Arc::new(Cuda::on(d).unwrap());
    let f16 = FiberFormat {
        weights: WeightFormat::F16,
        indices: IndexFormat::U16,
        rounding: Rounding::Stochastic,
        ..FiberFormat::REFERENCE
    };
    for f in [f16, BITMAP] {
        explicit_checkpoint_resumes(f, &gpu);
    }
}

fn explicit_checkpoint_resumes(f: FiberFormat, gpu: &Arc<dyn Backend>) {
    let (_, mut straight) = explicit_run(f, Some(gpu.clone()), 6);
    let (_, saved) = explicit_run(f, Some(gpu.clone()), 6);
    let bytes = kcap::checkpoint::to_bytes(&saved).unwrap();
    let path = std::path::Path::new("mem.kcap");
    let mut on_cpu = kcap::checkpoint::from_bytes(&bytes, path).unwrap();
    let mut on_gpu = kcap::checkpoint::from_bytes(&bytes, path).unwrap();
    on_gpu.set_backend(gpu.clone()).unwrap();
    let step = kcap::Projection::new()
        .fire("s", ["A"])
        .fire("A", ["A", "B"])
        .fire("B", ["B", "A"]);
    for _ in 0..4 {
        for b in [&mut straight, &mut on_cpu, &mut on_gpu] {
            b.project(&step).unwrap();
        }
        assert_eq!(on_cpu.winners("A").unwrap(), straight.winners("A").unwrap());
        assert_eq!(on_gpu.winners("A").unwrap(), straight.winners("A").unwrap());
        assert_eq!(on_gpu.winners("B").unwrap(), straight.winners("B").unwrap());
    }
    // Moving back to the CPU downloads the fibers.
    on_gpu.set_backend(Arc::new(Cpu)).unwrap();
    let fibers = on_gpu.lazy_state().fibers.iter().flatten();
    assert!(fibers
        .filter_map(|x| x.packed.as_ref())
        .all(|p| p.device().is_none()));
    on_gpu.project(&step).unwrap();
    straight.project(&step).unwrap();
    assert_eq!(on_gpu.winners("B").unwrap(), straight.winners("B").unwrap());
    // And the learned weights (bit weights: the side tables) are the same.
    on_cpu.project(&step).unwrap();
    let fibers = |b: &kcap::Brain| -> Vec<PackedFiber> {
        let l = b.lazy_state();
        l.fibers
            .iter()
            .flatten()
            .filter_map(|x| x.packed.clone())
            .collect()
    };
    for (i, ((a, b), c)) in fibers(&straight)
        .iter()
        .zip(&fibers(&on_gpu))
        .zip(&fibers(&on_cpu))
        .enumerate()
    {
        assert_same_fiber(
            b,
            a,
            &format!("{}: fiber {i}, resumed on the GPU", f.label()),
        );
        assert_same_fiber(
            c,
            a,
            &format!("{}: fiber {i}, resumed on the CPU", f.label()),
        );
    }
}

#[test]
fn explicit_memory_guard_refuses_with_the_estimate_and_the_free_memory() {
    let Some(d) = device("explicit_memory_guard_refuses_with_the_estimate_and_the_free_memory")
    else {
        return;
    };
    drop(d);
    // A device of its own, so the cap does not reach the other tests.
    let dev = CudaDevice::new(0).unwrap();
    // 50 000 x 50 000 at p = 0.01: 25 M synapses, 200 MB in f32/u32.
    dev.set_memory_limit(Some(64 << 20));
    let c = Cuda::on(dev).unwrap();
    let mut b = kcap::Brain::new(0.01, 3).unwrap();
    b.set_backend(Arc::new(c)).unwrap();
    let e = b
        .add_area_with("A", 50_000, 100, 0.05, EngineKind::Explicit)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, kcap::KcapError::OutOfMemory { need, avail, .. }
            if need > 190_000_000 && avail == 64 << 20),
        "{msg}"
    );
    assert!(
        msg.contains("GPU")
            && msg.contains("under the memory limit")
            && msg.contains("50000 x 50000"),
        "{msg}"
    );
    // Nothing half-added: a smaller area still fits and runs.
    b.add_area_with("A", 5_000, 50, 0.05, EngineKind::Explicit)
        .unwrap();
    b.add_stimulus("s", 50).unwrap();
    b.project(&kcap::Projection::new().fire("s", ["A"]))
        .unwrap();
    assert_eq!(b.winners("A").unwrap().len(), 50);
}
