//! Host memory facts used to refuse, before allocating, a run that would not
//! fit (Linux `/proc`; elsewhere the check is skipped), and the process's
//! peak memory and CPU time for benchmarks.

/// Memory the system can still give this process (`MemAvailable`), or
/// `KCAP_MEMORY_LIMIT` (bytes) when set — the smaller of the two.
pub fn available_bytes() -> Option<u64> {
    let limit = std::env::var("KCAP_MEMORY_LIMIT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (limit, meminfo) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Peak resident memory of this process so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        })
}

/// CPU time (user + system, all threads) this process has used so far, in
/// seconds (`/proc/self/stat`, clock ticks of 1/100 s), if known.
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (in parentheses): utime and stime are
    // the 14th and 15th fields of the line.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((tick(11)? + tick(12)?) / 100.0)
}
