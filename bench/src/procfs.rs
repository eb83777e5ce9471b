//! Reading `/proc`: peak RSS and CPU time of a process, per thread name.

use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on Linux for every architecture's
/// user-space ABI).
const USER_HZ: f64 = 100.0;

/// Peak resident set size (`VmHWM`) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM")
}

/// Resident set size now (`VmRSS`) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path} has no {key} line"))
}

/// User + system CPU seconds of a `stat` file's text.
fn cpu_secs_of(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the comm: state is field 3, utime field 14, stime field 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / USER_HZ))
}

/// CPU seconds used so far by a process (`self` or a pid), all threads including exited ones.
pub fn cpu_secs(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| cpu_secs_of(&s))
        .map(|(_, s)| s)
        .unwrap_or(0.0)
}

/// CPU seconds used so far by each live thread of a process, summed by thread name.
pub fn cpu_secs_by_thread(pid: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        if let Some((comm, secs)) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| cpu_secs_of(&s))
        {
            *out.entry(comm).or_insert(0.0) += secs;
        }
    }
    out
}

/// A CPU-time snapshot of one process.
pub struct CpuSnapshot {
    pid: String,
    total: f64,
    threads: BTreeMap<String, f64>,
}

impl CpuSnapshot {
    /// Takes a snapshot of `pid` (`"self"` for this process).
    pub fn take(pid: &str) -> Self {
        Self {
            pid: pid.to_string(),
            total: cpu_secs(pid),
            threads: cpu_secs_by_thread(pid),
        }
    }

    /// CPU seconds since the snapshot: total, and per thread name (largest first).
    pub fn since(&self) -> (f64, Vec<(String, f64)>) {
        let total = cpu_secs(&self.pid) - self.total;
        let now = cpu_secs_by_thread(&self.pid);
        let mut per: Vec<(String, f64)> = now
            .into_iter()
            .map(|(k, v)| {
                let before = self.threads.get(&k).copied().unwrap_or(0.0);
                (k, v - before)
            })
            .filter(|(_, v)| *v > 0.0)
            .collect();
        per.sort_by(|a, b| b.1.total_cmp(&a.1));
        (total, per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let s = "42 (tokio-runtime (w)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        let (comm, secs) = cpu_secs_of(s).expect("parse");
        assert_eq!(comm, "tokio-runtime (w)");
        assert!((secs - 3.0).abs() < 1e-9, "{secs}");
    }
}
