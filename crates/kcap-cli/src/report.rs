//! Results: the JSON document, the summary table, and safe file writing.
//!
//! Design decision: a result file is never half-written. Every file is
//! written to a hidden temporary file in the destination folder, synced,
//! then renamed over the final name (atomic on POSIX), and the folder is
//! probed for writability *before* the simulation starts, so a long run
//! cannot end in "permission denied". The JSON layout is documented in
//! `docs/experiment-format.md` ("Results").

use crate::config::UsageError;
use crate::plan::Experiment;
use crate::runner::{AreaSummary, RunOutcome};
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Creates `dir` (and parents) and checks that a file can be written in it.
/// Errors are usage errors (exit 2), raised before anything runs.
pub fn prepare_out_dir(dir: &Path) -> Result<(), UsageError> {
    let fail = |why: String| {
        UsageError(format!(
            "cannot write to output folder {}: {why}",
            dir.display()
        ))
    };
    if dir.exists() && !dir.is_dir() {
        return Err(fail("it exists and is not a folder".into()));
    }
    fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let probe = dir.join(format!(".kcap-write-test-{}", std::process::id()));
    let res = fs::File::create(&probe).and_then(|mut f| f.write_all(b"ok"));
    let _ = fs::remove_file(&probe);
    res.map_err(|e| fail(e.to_string()))
}

/// Writes a file atomically: `write` fills a temporary path in the same
/// folder (with the same extension, since some writers choose the format
/// by it), which is then synced and renamed to `path`. On any error the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
    let tmp = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => dir.join(format!(".{stem}.tmp-{}.{ext}", std::process::id())),
        None => dir.join(format!(".{stem}.tmp-{}", std::process::id())),
    };
    let res = write(&tmp)
        .and_then(|_| {
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .context("syncing the temporary file")
        })
        .and_then(|_| fs::rename(&tmp, path).context("renaming the temporary file"));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

/// Writes a JSON value atomically, pretty-printed.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    write_atomic(path, |tmp| {
        let mut f = std::io::BufWriter::new(fs::File::create(tmp)?);
        serde_json::to_writer_pretty(&mut f, value)?;
        f.write_all(b"\n")?;
        f.into_inner().map_err(|e| e.into_error())?.flush()?;
        Ok(())
    })
}

/// The experiment file as JSON (its TOML, converted value by value).
pub fn config_json(exp: &Experiment) -> Value {
    toml::from_str::<toml::Table>(&exp.source.text)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(Value::Null)
}

/// The results document (`results.json`).
pub fn results_json(exp: &Experiment, out: &RunOutcome) -> Value {
    let steps: Vec<Value> = out
        .steps
        .iter()
        .map(|s| {
            let entry = &exp.schedule[s.entry];
            let mut areas = Map::new();
            for r in &s.areas {
                let mut a = Map::new();
                a.insert("support".into(), json!(r.support));
                a.insert("first_winners".into(), json!(r.first_winners));
                if let Some(w) = &r.winners {
                    a.insert("winners".into(), json!(w));
                }
                areas.insert(exp.areas[r.area].clone(), Value::Object(a));
            }
            json!({
                "step": s.step,
                "entry": s.entry + 1,
                "label": entry.label,
                "repetition": s.repetition,
                "seconds": s.seconds,
                "events": s.events,
                "areas": areas,
            })
        })
        .collect();
    json!({
        "kcap_version": env!("CARGO_PKG_VERSION"),
        "experiment": {
            "name": exp.name,
            "file": exp.source.display,
            "description": exp.raw.description,
            "config": config_json(exp),
        },
        "steps": steps,
        "summary": { "areas": out.summary },
        "timing": timing_json(out),
        "memory": out.memory,
        "fibers": out.fibers,
    })
}

/// The `timing` object shared by `results.json` and the bench report.
pub fn timing_json(out: &RunOutcome) -> Value {
    let n = out.steps.len() as f64;
    let events: f64 = out.steps.iter().map(|s| s.events).sum();
    json!({
        "steps": out.steps.len(),
        "setup_seconds": out.setup_seconds,
        "step_seconds": out.step_seconds,
        "total_seconds": out.total_seconds,
        "seconds_per_step": if n > 0.0 { out.step_seconds / n } else { 0.0 },
        "steps_per_second": if out.step_seconds > 0.0 { n / out.step_seconds } else { 0.0 },
        "synaptic_events": events,
        "events_per_second": if out.step_seconds > 0.0 { events / out.step_seconds } else { 0.0 },
        "threads": out.threads,
        "device": out.device,
    })
}

/// `1234567` → `1,234,567`.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds, in the unit that reads best.
pub fn duration(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// Bytes, in the unit that reads best (powers of 1024).
pub fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[u])
    }
}

/// Lays out rows as a table: first row is the header; columns listed in
/// `right` are right-aligned.
pub fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if right.contains(&c) {
                    format!("{s:>w$}", w = width[c])
                } else {
                    format!("{s:<w$}", w = width[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

/// "999/1000 (99.9%)" or "—".
pub fn overlap_cell(a: &AreaSummary) -> String {
    match a.last_overlap {
        Some(o) if a.winners > 0 => format!(
            "{o}/{} ({:.1}%)",
            a.winners,
            100.0 * o as f64 / a.winners as f64
        ),
        Some(o) => o.to_string(),
        None => "—".into(),
    }
}

/// "after step 19", "still growing", or "—" (never a target).
pub fn convergence_cell(a: &AreaSummary) -> String {
    match (a.target_steps, a.converged_after) {
        (0, _) => "—".into(),
        (_, Some(0)) => "no new winners".into(),
        (_, Some(s)) => format!("after step {s}"),
        (_, None) => "still growing".into(),
    }
}

/// The human-readable summary printed at the end of `kcap run`.
pub fn summary_text(exp: &Experiment, out: &RunOutcome) -> String {
    let mut rows = vec![vec![
        "area".to_string(),
        "n".into(),
        "k".into(),
        "support".into(),
        "converged".into(),
        "last-two overlap".into(),
        "steps".into(),
        "time".into(),
    ]];
    for a in &out.summary {
        rows.push(vec![
            a.name.clone(),
            thousands(a.n),
            thousands(a.k),
            thousands(a.support),
            convergence_cell(a),
            overlap_cell(a),
            a.target_steps.to_string(),
            duration(a.seconds),
        ]);
    }
    let n = out.steps.len();
    let mut s = format!("experiment {:?}: {} steps\n\n", exp.name, n);
    s.push_str(&table(&rows, &[1, 2, 3, 5, 6, 7]));
    if !out.fibers.is_empty() {
        let mut rows = vec![[
            "fiber",
            "format",
            "synapses",
            "memory",
            "bytes/synapse",
            "f32/u32 reference",
        ]
        .map(String::from)
        .to_vec()];
        for f in &out.fibers {
            rows.push(vec![
                format!("{} -> {}", f.from, f.to),
                f.format.clone(),
                thousands(f.synapses),
                bytes(f.bytes),
                format!("{:.2}", f.bytes as f64 / f.synapses.max(1) as f64),
                bytes(f.reference_bytes),
            ]);
        }
        s.push('\n');
        s.push_str(&table(&rows, &[2, 3, 4, 5]));
    }
    let per = if n > 0 {
        out.step_seconds / n as f64
    } else {
        0.0
    };
    let rate = if out.step_seconds > 0.0 {
        n as f64 / out.step_seconds
    } else {
        0.0
    };
    let events: f64 = out.steps.iter().map(|s| s.events).sum();
    let ev_rate = if out.step_seconds > 0.0 {
        format!(", {:.3e} synaptic events/s", events / out.step_seconds)
    } else {
        String::new()
    };
    s.push_str(&format!(
        "\n{n} steps in {} ({} per step, {rate:.1} steps/s{ev_rate}) on {} threads, device {}; setup {}; stored connectivity {}\n",
        duration(out.step_seconds),
        duration(per),
        out.threads,
        out.device,
        duration(out.setup_seconds),
        bytes(out.memory.bytes as u64),
    ));
    s
}

/// Default output folder of an experiment: `out/<name>`.
pub fn default_out_dir(exp: &Experiment) -> PathBuf {
    Path::new("out").join(&exp.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000_000), "1,000,000,000");
        assert_eq!(duration(0.0123), "12.30 ms");
        assert_eq!(bytes(1536), "1.5 KiB");
        let t = table(
            &[
                vec!["a".into(), "n".into()],
                vec!["xyz".into(), "10".into()],
            ],
            &[1],
        );
        assert_eq!(t, "a     n\n-------\nxyz  10\n");
    }

    #[test]
    fn atomic_write_leaves_nothing_on_failure() {
        let dir = std::env::temp_dir().join(format!("kcap-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        let err = write_atomic(&path, |tmp| {
            fs::write(tmp, "half")?;
            anyhow::bail!("boom")
        });
        assert!(err.is_err());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        write_json(&path, &json!({"a": 1})).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
