//! Stable driver of the fuzz targets: runs a target over its corpus, then
//! over random mutations of it for a bounded time or count, as an ordinary
//! program (no libFuzzer, no sanitizer, any toolchain). Not coverage-guided:
//! inputs that get past the first refusal are kept as material for further
//! mutation, and the mutations know the targets' vocabulary (TOML keys and
//! extreme numbers; little-endian lengths for checkpoints).
//!
//! ```text
//! replay TARGET [--seconds S] [--iterations N] [--seed X] [--timeout S]
//!        [--artifacts DIR] [--emit-seeds DIR] [CORPUS_DIR_OR_FILE...]
//! ```
//! TARGET is `experiment` or `checkpoint`. A panic writes the input to
//! `DIR/TARGET/crash-HASH` (default `fuzz/artifacts`), prints the panic and
//! exits with 1; so does an input that runs longer than `--timeout`
//! seconds (default 20; `timeout-HASH`). `cargo fuzz run TARGET FILE` (or
//! `replay TARGET FILE`) reproduces it. `--emit-seeds DIR` only writes the
//! generated seeds (the checkpoint target's) into DIR, as a corpus for
//! `cargo fuzz`.

use kcap_fuzz::Outcome;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The last panic's message and place, kept by the panic hook.
static PANIC: Mutex<Option<String>> = Mutex::new(None);
/// The input being run and since when, watched for timeouts.
static CURRENT: Mutex<Option<(Instant, Vec<u8>)>> = Mutex::new(None);

/// Longest input made by mutation.
const MAX_LEN: usize = 1 << 16;
/// Inputs kept for mutation, at most.
const MAX_POOL: usize = 4_000;

/// splitmix64: a small, seedable generator (reproducible runs).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Words of the experiment format and values at the edges of every range.
const TOML_WORDS: &[&str] = &[
    "[brain]\n",
    "[[area]]\n",
    "[[stimulus]]\n",
    "[[fiber]]\n",
    "[[step]]\n",
    "p = ",
    "seed = ",
    "w_max = ",
    "n = ",
    "k = ",
    "beta = ",
    "size = ",
    "repeat = ",
    "name = \"A\"\n",
    "name = \"s\"\n",
    "engine = \"explicit\"\n",
    "engine = \"lazy\"\n",
    "engine = \"procedural\"\n",
    "format = \"auto\"\n",
    "format = \"reference\"\n",
    "format = { weights = \"bit\", layout = \"bitmap\" }\n",
    "format = { weights = \"log-u8\", indices = \"u16\", rounding = \"stochastic\", accumulator = \"fixed\" }\n",
    "format = { weights = \"bf16\", indices = \"u16\" }\n",
    "tail = \"exact\"\n",
    "save_winners = true\n",
    "plasticity = false\n",
    "fire = { s = [\"A\"] }\n",
    "fire = { A = [\"A\", \"B\"], s = [\"B\"] }\n",
    "fix = [\"A\"]\n",
    "unfix = [\"A\"]\n",
    "activate = { area = \"A\", index = 3 }\n",
    "subsample = { area = \"A\", fraction = 0.5 }\n",
    "set_beta = { from = \"s\", to = \"A\", beta = 0.0 }\n",
    "from = \"A\"\nto = \"B\"\n",
    "label = \"x\"\n",
    "\"\"",
    "\"\\u0000\"",
    "é",
    "\n",
    "=",
    "{",
    "}",
    "[",
    "]",
    ",",
    "#",
];

/// Numbers to put where numbers are.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "0.5",
    "1.0",
    "1e-300",
    "1e15",
    "1e18",
    "1_000_000_000_000",
    "1_000_000_000_000_000",
    "4294967295",
    "4294967296",
    "1073741824",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "nan",
    "inf",
    "-inf",
    "-0.0",
];

/// Little-endian values for lengths, counts and ids in binary input.
const WORDS64: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0xff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>], text: bool) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(if text { 11 } else { 9 }) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff, b'"', b'\n', b'9']);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(16)).min(len - i);
                v.drain(i..i + n);
            }
            3 => {
                let i = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let piece = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, piece);
            }
            5 => {
                let other = rng.pick(pool);
                let a = rng.below(len + 1);
                let b = rng.below(other.len() + 1);
                v.truncate(a);
                v.extend_from_slice(&other[b..]);
            }
            6 if len >= 8 => {
                let i = rng.below(len - 7);
                let w = *rng.pick(WORDS64);
                if rng.below(2) == 0 {
                    v[i..i + 8].copy_from_slice(&w.to_le_bytes());
                } else {
                    v[i..i + 4].copy_from_slice(&(w as u32).to_le_bytes());
                }
            }
            7 if len > 0 => {
                // Off by a little: lengths and counts just past their bounds.
                let i = rng.below(len);
                v[i] = v[i].wrapping_add(*rng.pick(&[1u8, 2, 0xff, 0xfe]));
            }
            8 => {
                let i = rng.below(len + 1);
                let w = rng.pick(TOML_WORDS).as_bytes();
                v.splice(i..i, w.iter().copied());
            }
            9 => {
                // Replace a run of digits by an extreme number.
                let digits: Vec<usize> = (0..len).filter(|&i| v[i].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    let s = *rng.pick(&digits);
                    let mut e = s;
                    while e < len && (v[e].is_ascii_alphanumeric() || b"._-+".contains(&v[e])) {
                        e += 1;
                    }
                    v.splice(s..e, rng.pick(NUMBERS).bytes());
                }
            }
            10 => {
                // Delete, duplicate or move a line.
                let lines: Vec<usize> = std::iter::once(0)
                    .chain((0..len).filter(|&i| v[i] == b'\n').map(|i| i + 1))
                    .collect();
                let s = *rng.pick(&lines);
                let e = v[s..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(len, |p| s + p + 1);
                let line = v[s..e].to_vec();
                match rng.below(3) {
                    0 => {
                        v.drain(s..e);
                    }
                    1 => {
                        v.splice(s..s, line);
                    }
                    _ => {
                        v.drain(s..e);
                        let at = *rng.pick(&lines);
                        let at = at.min(v.len());
                        v.splice(at..at, line);
                    }
                }
            }
            _ => {}
        }
    }
    v.truncate(MAX_LEN);
    v
}

fn hash(data: &[u8]) -> u64 {
    // FNV-1a: names crash files.
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn read_corpus(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("cannot read corpus folder {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(p.clone());
        }
    }
    files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display())))
        .collect()
}

struct Args {
    target: String,
    seconds: f64,
    iterations: u64,
    seed: u64,
    timeout: f64,
    artifacts: PathBuf,
    emit_seeds: Option<PathBuf>,
    corpus: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        target: String::new(),
        seconds: 10.0,
        iterations: u64::MAX,
        seed: 1,
        timeout: 20.0,
        artifacts: PathBuf::from("fuzz/artifacts"),
        emit_seeds: None,
        corpus: Vec::new(),
    };
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match x.as_str() {
            "--seconds" => {
                a.seconds = val("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--iterations" => {
                a.iterations = val("--iterations")?
                    .parse()
                    .map_err(|e| format!("--iterations: {e}"))?
            }
            "--timeout" => {
                a.timeout = val("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?
            }
            "--seed" => a.seed = val("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--artifacts" => a.artifacts = val("--artifacts")?.into(),
            "--emit-seeds" => a.emit_seeds = Some(val("--emit-seeds")?.into()),
            _ if a.target.is_empty() && !x.starts_with('-') => a.target = x,
            _ if !x.starts_with('-') => a.corpus.push(x.into()),
            _ => return Err(format!("unknown option {x}")),
        }
    }
    if a.target != "experiment" && a.target != "checkpoint" {
        return Err("usage: replay experiment|checkpoint [--seconds S] [--iterations N] [--seed X] [--timeout S] [--artifacts DIR] [--emit-seeds DIR] [CORPUS...]".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Some(dir) = &args.emit_seeds {
        // The generated checkpoint seeds, as files (a corpus for `cargo fuzz`).
        let seeds = if args.target == "checkpoint" {
            kcap_fuzz::checkpoint_seeds()
        } else {
            Vec::new()
        };
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            seeds
                .iter()
                .try_for_each(|s| std::fs::write(dir.join(format!("seed-{:016x}", hash(s))), s))
        });
        if let Err(e) = written {
            eprintln!("error: writing seeds into {}: {e}", dir.display());
            std::process::exit(2);
        }
        println!(
            "replay {}: wrote {} seeds into {}",
            args.target,
            seeds.len(),
            dir.display()
        );
        return;
    }
    let mut pool = match read_corpus(&args.corpus) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    std::panic::set_hook(Box::new(|info| {
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let text = args.target == "experiment";
    let target: fn(&[u8]) -> Outcome = if text {
        kcap_fuzz::experiment
    } else {
        kcap_fuzz::checkpoint
    };
    let generated = if text {
        Vec::new()
    } else {
        kcap_fuzz::checkpoint_seeds()
    };
    {
        // Watchdog: an input that runs too long is a finding too.
        let (dir, name, timeout) = (
            args.artifacts.join(&args.target),
            args.target.clone(),
            Duration::from_secs_f64(args.timeout),
        );
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((t, input)) = cur.as_ref().filter(|(t, _)| t.elapsed() > timeout) {
                let file = dir.join(format!("timeout-{:016x}", hash(input)));
                let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, input));
                eprintln!(
                    "replay {name}: TIMEOUT: an input of {} bytes has run for {:.1} s; saved to {} (reproduce: replay {name} {})",
                    input.len(),
                    t.elapsed().as_secs_f64(),
                    file.display(),
                    file.display()
                );
                std::process::exit(1);
            }
        });
    }
    let run = |input: &[u8]| -> Result<(Outcome, Duration), String> {
        let t = Instant::now();
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((t, input.to_vec()));
        let result = catch_unwind(AssertUnwindSafe(|| target(input)));
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match result {
            Ok(o) => Ok((o, t.elapsed())),
            Err(_) => Err(PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "panic".into())),
        }
    };
    let crash = |input: &[u8], why: String| -> ! {
        let dir = args.artifacts.join(&args.target);
        let file = dir.join(format!("crash-{:016x}", hash(input)));
        let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, input));
        eprintln!(
            "replay {}: PANIC on an input of {} bytes: {why}",
            args.target,
            input.len()
        );
        match saved {
            Ok(()) => eprintln!(
                "input saved to {} (reproduce: replay {} {})",
                file.display(),
                args.target,
                file.display()
            ),
            Err(e) => eprintln!("could not save the input to {}: {e}", file.display()),
        }
        std::process::exit(1);
    };
    let start = Instant::now();
    let mut counts = [0u64; 3];
    let mut slowest = (Duration::ZERO, 0usize);
    let mut note = |o: Outcome, d: Duration, len: usize| {
        counts[o as usize] += 1;
        if d > slowest.0 {
            slowest = (d, len);
        }
    };
    for input in &generated {
        // This build's own checkpoints must load.
        match run(input) {
            Ok((Outcome::Refused, _)) => {
                eprintln!(
                    "replay {}: a checkpoint saved by this build was refused",
                    args.target
                );
                std::process::exit(1);
            }
            Ok((o, d)) => note(o, d, input.len()),
            Err(why) => crash(input, why),
        }
    }
    for input in pool.clone() {
        match run(&input) {
            Ok((o, d)) => note(o, d, input.len()),
            Err(why) => crash(&input, why),
        }
    }
    pool.extend(generated);
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let seeds = pool.len();
    let mut rng = Rng(args.seed);
    let limit = Duration::from_secs_f64(args.seconds);
    let mut mutations = 0u64;
    while mutations < args.iterations && start.elapsed() < limit {
        let parent = rng.pick(&pool).clone();
        let child = mutate(&mut rng, &parent, &pool, text);
        mutations += 1;
        match run(&child) {
            Ok((o, d)) => {
                note(o, d, child.len());
                if o != Outcome::Refused {
                    if pool.len() < MAX_POOL {
                        pool.push(child);
                    } else {
                        let i = seeds + rng.below(MAX_POOL - seeds);
                        pool[i] = child;
                    }
                }
            }
            Err(why) => crash(&child, why),
        }
    }
    println!(
        "replay {}: {seeds} corpus inputs and {mutations} mutations in {:.1} s (seed {}): {} refused, {} accepted, {} simulated; slowest input {:.3} s ({} bytes); no panic",
        args.target,
        start.elapsed().as_secs_f64(),
        args.seed,
        counts[0],
        counts[1],
        counts[2],
        slowest.0.as_secs_f64(),
        slowest.1,
    );
}
