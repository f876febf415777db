//! The `kcap run` progress bar, which also moves *within* a step.
//!
//! Design decision: the bar counts thousandths of a step ([`SUB`] per
//! step), and a ticker thread advances it while a step runs from the
//! brain's live step progress ([`kcap::Brain::step_progress`]: target blocks
//! scanned and events generated, atomics the procedural engine's workers
//! advance once per block) — so a 10¹⁰-event step of a billion-neuron
//! procedural area, a minute on two cores, shows a moving bar and its
//! events/s instead of a frozen line. Steps of lazy and explicit areas
//! report no block progress: the bar then moves once per step, as before.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kcap::engine::procedural::StepProgress;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bar units per step.
pub const SUB: u64 = 1000;

/// A progress bar over `total` steps (in units of 1/[`SUB`] step).
pub fn bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(total.saturating_mul(SUB)),
        ProgressDrawTarget::stderr_with_hz(10),
    );
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {steps} steps  {rate}  ETA {eta}  {msg}",
    )
    .expect("valid progress template")
    .with_key("steps", |s: &ProgressState, w: &mut dyn Write| {
        let _ = write!(w, "{}/{}", s.pos() / SUB, s.len().unwrap_or(0) / SUB);
    })
    .with_key("rate", |s: &ProgressState, w: &mut dyn Write| {
        let r = s.per_sec() / SUB as f64;
        let _ = if r >= 10.0 {
            write!(w, "{r:.0} steps/s")
        } else {
            write!(w, "{r:.2} steps/s")
        };
    })
    .progress_chars("=> ");
    pb.set_style(style);
    pb
}

struct Shared {
    /// Steps completed.
    done: AtomicU64,
    label: Mutex<String>,
    /// Serialises position updates of the main thread and the ticker.
    lock: Mutex<()>,
    stop: AtomicBool,
}

/// Drives a [`bar`]: whole steps from the runner, fractions of the step in
/// flight from a ticker thread (stopped when dropped).
pub struct Ticker {
    pb: ProgressBar,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    /// Starts ticking `pb` from `live` every 200 ms; `done` steps are complete.
    pub fn start(pb: &ProgressBar, live: Arc<StepProgress>, done: u64) -> Ticker {
        let shared = Arc::new(Shared {
            done: AtomicU64::new(done),
            label: Mutex::new(String::new()),
            lock: Mutex::new(()),
            stop: AtomicBool::new(false),
        });
        pb.set_position(done * SUB);
        let (pb2, sh) = (pb.clone(), shared.clone());
        let thread = std::thread::spawn(move || {
            let mut last: Option<(u64, Instant)> = None;
            let mut rate = 0.0;
            while !sh.stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let (total, blocks) = (
                    live.blocks_total.load(Relaxed),
                    live.blocks_done.load(Relaxed),
                );
                let events = live.events.load(Relaxed);
                let label = sh.label.lock().map(|l| l.clone()).unwrap_or_default();
                // A finished scan (blocks == total) is either the Hebbian phase
                // or a step whose counters are not reset yet: no fraction then.
                if total == 0 || blocks >= total {
                    last = None;
                    pb2.set_message(label);
                    continue;
                }
                let now = Instant::now();
                if let Some((e0, t0)) = last.filter(|l| events >= l.0) {
                    let dt = now.duration_since(t0).as_secs_f64();
                    if dt > 0.0 {
                        rate = (events - e0) as f64 / dt;
                    }
                }
                last = Some((events, now));
                let frac = blocks as f64 / total as f64;
                let _guard = sh.lock.lock();
                let pos = sh.done.load(Relaxed) * SUB + (frac * (SUB - 1) as f64) as u64;
                if pos > pb2.position() {
                    pb2.set_position(pos);
                }
                let rate = if rate > 0.0 {
                    format!(", {rate:.1e} ev/s")
                } else {
                    String::new()
                };
                pb2.set_message(format!("{label} · {:.0}% of step{rate}", 100.0 * frac));
            }
        });
        Ticker {
            pb: pb.clone(),
            shared,
            thread: Some(thread),
        }
    }

    /// Label of the schedule entry that runs now.
    pub fn set_label(&self, label: String) {
        self.pb.set_message(label.clone());
        if let Ok(mut l) = self.shared.label.lock() {
            *l = label;
        }
    }

    /// `steps` steps are complete.
    pub fn step_done(&self, steps: u64) {
        let _guard = self.shared.lock.lock();
        self.shared.done.store(steps, Relaxed);
        self.pb.set_position(steps * SUB);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
