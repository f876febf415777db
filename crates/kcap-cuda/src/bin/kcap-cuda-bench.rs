//! kcap-cuda-bench — GPU kernel benchmarks of kcap, printed as a table.
//!
//! Scenarios (BENCH.md names): `topk-1e9-f16` (k = 31 623), `topk-1e9-f32`,
//! `topk-1e8-f16` / `-f32` (k = 10 000), and `dense-step-1e9` (zero the
//! inputs, accumulate 31 623 firing rows × 1000 random targets with
//! `accumulate_rows_f32`, k-cap with `topk_f32`: the dense PyTorch step of
//! BENCH.md). Values are uniform (0, 1] from the counter-based generator,
//! rounded to the dtype (like `torch.rand(n).to(dtype)`). Each timing is the
//! host wall time of one call with the stream synchronized before and after
//! (the sync is inside the timed region); the table gives the median of
//! `--reps` repetitions after one warm-up call, and GB/s = bytes of input
//! read once / time. Every k-cap result is verified exactly (O(n) check,
//! `ops::topk::check_topk`) on the first call.
//!
//! Usage: kcap-cuda-bench [--reps N] [--only NAME[,NAME…]] [--no-check]

use kcap_cuda::ops::{accumulate, rng, topk};
use kcap_cuda::CudaDevice;
use std::time::Instant;

struct Row {
    name: String,
    n: u64,
    k: usize,
    what: String,
    ms: f64,
    gbs: f64,
    note: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time_it(
    dev: &CudaDevice,
    reps: usize,
    mut f: impl FnMut() -> kcap_cuda::Result<()>,
) -> kcap_cuda::Result<Vec<f64>> {
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        dev.synchronize()?;
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ts)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("kcap-cuda-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut reps = 20usize;
    let mut only: Option<Vec<String>> = None;
    let mut check = true;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--reps" => {
                reps = args.get(i + 1).ok_or("--reps needs a number")?.parse()?;
                i += 1;
            }
            "--only" => {
                only = Some(
                    args.get(i + 1)
                        .ok_or("--only needs names")?
                        .split(',')
                        .map(String::from)
                        .collect(),
                );
                i += 1;
            }
            "--no-check" => check = false,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
        i += 1;
    }
    let want = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let dev = CudaDevice::new(0)?;
    let (dmaj, dmin) = dev.driver_version()?;
    let (free, total) = dev.mem_info()?;
    println!(
        "device: {} (sm_{}{}, {} SMs, {:.1} GiB, {:.1} GiB free), driver CUDA {dmaj}.{dmin}",
        dev.name(),
        dev.compute_capability().0,
        dev.compute_capability().1,
        dev.sm_count(),
        total as f64 / (1u64 << 30) as f64,
        free as f64 / (1u64 << 30) as f64
    );
    let t0 = Instant::now();
    dev.warm_up()?;
    println!(
        "kernels compiled and loaded in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let mut ws = topk::TopkWorkspace::new(&dev)?;
    let mut rows: Vec<Row> = Vec::new();
    let s = dev.stream().clone();

    for (name, n, k, f16) in [
        ("topk-1e9-f16", 1_000_000_000u64, 31_623usize, true),
        ("topk-1e9-f32", 1_000_000_000, 31_623, false),
        ("topk-1e8-f16", 100_000_000, 10_000, true),
        ("topk-1e8-f32", 100_000_000, 10_000, false),
    ] {
        if !want(name) {
            continue;
        }
        let (ts, note) = if f16 {
            let mut v = s.alloc_zeros::<u16>(n as usize)?;
            rng::fill_uniform_f16(&dev, 0x5eed_0001, &mut v)?;
            topk::topk(&dev, &mut ws, &v, k)?;
            let out = ws.fetch_sorted(&dev)?;
            let mut note = format!(
                "prefilter {}",
                if out.prefiltered { "held" } else { "fell back" }
            );
            if check {
                let host = s.clone_dtoh(&v)?;
                topk::check_topk(n as usize, |i| topk::key_f16(host[i]), &out.ids, k)?;
                note.push_str(", exact check ok");
            }
            (
                time_it(&dev, reps, || topk::topk(&dev, &mut ws, &v, k).map(|_| ()))?,
                note,
            )
        } else {
            let mut v = s.alloc_zeros::<f32>(n as usize)?;
            rng::fill_uniform_f32(&dev, 0x5eed_0002, &mut v)?;
            topk::topk(&dev, &mut ws, &v, k)?;
            let out = ws.fetch_sorted(&dev)?;
            let mut note = format!(
                "prefilter {}",
                if out.prefiltered { "held" } else { "fell back" }
            );
            if check {
                let host = s.clone_dtoh(&v)?;
                topk::check_topk(n as usize, |i| topk::key_f32(host[i]), &out.ids, k)?;
                note.push_str(", exact check ok");
            }
            (
                time_it(&dev, reps, || topk::topk(&dev, &mut ws, &v, k).map(|_| ()))?,
                note,
            )
        };
        let ms = median(ts);
        let bytes = n as f64 * if f16 { 2.0 } else { 4.0 };
        rows.push(Row {
            name: name.into(),
            n,
            k,
            what: format!("kcap topk_{}", if f16 { "f16" } else { "f32" }),
            ms,
            gbs: bytes / (ms * 1e-3) / 1e9,
            note,
        });
        eprintln!("{name}: {ms:.3} ms");
    }

    if want("dense-step-1e9") {
        // 31 623 firing rows x 1000 random targets into n = 1e9, unit weights.
        let (n, k, d) = (1_000_000_000usize, 31_623usize, 1000usize);
        let m = k * d;
        let row_ptr: Vec<u64> = (0..=k as u64).map(|r| r * d as u64).collect();
        let mut to = s.alloc_zeros::<u32>(m)?;
        rng::fill_below_u32(&dev, 0x5eed_0003, n as u64, &mut to)?;
        let csr = accumulate::DeviceCsr {
            row_ptr: s.clone_htod(&row_ptr)?,
            to,
            w: s.clone_htod(&vec![1.0f32; m])?,
        };
        let firing = s.clone_htod(&(0..k as u32).collect::<Vec<u32>>())?;
        let mut inputs = s.alloc_zeros::<f32>(n)?;
        let mut acc = s.alloc_zeros::<u64>(n)?;
        let scale = accumulate::scale_bits(m as f64).expect("in range");
        let step = |ws: &mut topk::TopkWorkspace,
                    inputs: &mut cudarc::driver::CudaSlice<f32>,
                    acc: &mut cudarc::driver::CudaSlice<u64>|
         -> kcap_cuda::Result<()> {
            s.memset_zeros(inputs)
                .map_err(|e| kcap_cuda::Error::Driver {
                    what: "memset".into(),
                    err: format!("{e:?}"),
                })?;
            accumulate::accumulate_rows_f32(&dev, &csr, &firing, scale, acc, inputs)?;
            topk::topk(&dev, ws, inputs, k)?;
            Ok(())
        };
        step(&mut ws, &mut inputs, &mut acc)?;
        let out = ws.fetch_sorted(&dev)?;
        let mut note = format!(
            "{m} events; prefilter {}",
            if out.prefiltered { "held" } else { "fell back" }
        );
        if check {
            let host = s.clone_dtoh(&inputs)?;
            let total: f64 = host.iter().map(|&x| x as f64).sum();
            if total != m as f64 {
                return Err(format!("dense step: inputs sum to {total}, expected {m}").into());
            }
            topk::check_topk(n, |i| topk::key_f32(host[i]), &out.ids, k)?;
            note.push_str(", sum and k-cap checked");
        }
        let ts = time_it(&dev, reps.min(10), || step(&mut ws, &mut inputs, &mut acc))?;
        let ms = median(ts);
        rows.push(Row {
            name: "dense-step-1e9".into(),
            n: n as u64,
            k,
            what: "kcap zero+accumulate_rows_f32+topk_f32".into(),
            ms,
            gbs: m as f64 / (ms * 1e-3) / 1e9,
            note: format!("{note}; rate column = G events/s"),
        });
    }

    println!();
    println!("| scenario | n | k | implementation | median ms | GB/s (input read once) | notes |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0e} | {} | {} | {:.3} | {:.0} | {} |",
            r.name, r.n as f64, r.k, r.what, r.ms, r.gbs, r.note
        );
    }
    Ok(())
}
