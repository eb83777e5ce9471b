//! `bench audit`: durable audit appends with 1, 8 and 64 concurrent writers (throughput and
//! latency percentiles), and offline verification of a large export, each beside raw SHA-256
//! on the same machine (the limit of any verifier that hashes every entry).

use crate::median;
use anyhow::{Context, Result};
use gateway::audit::entry::{Action, Actor, Counts, Decision, Entry};
use gateway::audit::export::ExportWriter;
use gateway::audit::log::AuditLog;
use gateway::audit::verify::{Mode, verify_with};
use sha2::{Digest, Sha256};
use skp_core::checkpoint::{self, Checkpoint, SigningKey};
use skp_core::merkle::{self, CompactRange};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ORIGIN: &str = "kingston.skp/audit/v1";

/// A realistic entry: one agent's ingest batch.
fn sample_entry(i: usize) -> Entry {
    let mut e = Entry::new(
        Actor::agent("met-police", "kingston.skp"),
        Action::Ingest,
        Decision::Allow,
    );
    e.datasets = vec!["police_asb_incident".into()];
    e.counts = Some(Counts::ingest(1000 - (i % 7) as u64, (i % 7) as u64, 0, 0));
    e
}

fn key() -> Result<SigningKey> {
    SigningKey::generate("kingston.skp/audit").context("audit key")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Raw SHA-256 over `bytes` (MB/s) and the rate of hashing `n` entries of the sample size.
fn sha256_baseline(entry_len: usize) -> (f64, f64) {
    let buf = vec![0x5au8; 64 * 1024 * 1024];
    let t = Instant::now();
    let d = Sha256::digest(&buf);
    let mbps = buf.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
    std::hint::black_box(d);
    let entry = vec![0x61u8; entry_len];
    let n = 1_000_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(merkle::leaf_hash(std::hint::black_box(&entry)));
    }
    let leaves_per_s = n as f64 / t.elapsed().as_secs_f64();
    (mbps, leaves_per_s)
}

/// Durable appends by `writers` concurrent tasks until `total` entries are appended.
async fn appends(writers: usize, total: usize) -> Result<(f64, f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let log = AuditLog::open(dir.path(), key()?, ORIGIN)?;
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let log = log.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let s = Instant::now();
                log.append_one(sample_entry(i)).await?;
                lat.push(s.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for task in tasks {
        lat.extend(task.await.context("writer task")??);
    }
    let secs = t.elapsed().as_secs_f64();
    lat.sort_unstable();
    anyhow::ensure!(
        log.size() as usize == total,
        "log has {} entries",
        log.size()
    );
    log.shutdown().await;
    Ok((
        total as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    ))
}

/// An export of `n` chained entries and a checkpoint signed over them.
fn build_export(n: usize, key: &SigningKey) -> Result<Vec<u8>> {
    let mut w = ExportWriter::new(Vec::with_capacity(n * 330))?;
    let mut range = CompactRange::new();
    let base = time::OffsetDateTime::now_utc();
    for i in 0..n {
        let mut e = sample_entry(i);
        e.seq = i as u64;
        e.prev = hex::encode(range.root());
        e.time = gateway::audit::entry::rfc3339_millis(base);
        let bytes = e.encode();
        range.append(merkle::leaf_hash(&bytes))?;
        w.entry(&bytes)?;
    }
    let cp = Checkpoint::new(ORIGIN, n as u64, range.root())?;
    let note = checkpoint::sign(&cp, key)?;
    let bytes = w.finish(&note)?;
    Ok(bytes)
}

/// Runs the audit benchmark and prints a JSON report.
pub fn run(appends_total: usize, verify_entries: usize, runs: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sample_len = sample_entry(0).encode().len() + 120;
    let (sha_mbps, leaves_per_s) = sha256_baseline(sample_len);
    eprintln!(
        "raw SHA-256: {sha_mbps:.0} MB/s; leaf hashes of {sample_len}-byte entries: {leaves_per_s:.0}/s"
    );

    let mut append_rows = Vec::new();
    for writers in [1usize, 8, 64] {
        let mut r = Vec::new();
        for _ in 0..runs {
            let total = if writers == 1 {
                appends_total / 10
            } else {
                appends_total
            }
            .max(100);
            r.push(rt.block_on(appends(writers, total))?);
        }
        let rate = median(r.iter().map(|x| x.0).collect());
        let p50 = median(r.iter().map(|x| x.1).collect());
        let p99 = median(r.iter().map(|x| x.2).collect());
        let max = median(r.iter().map(|x| x.3).collect());
        eprintln!(
            "durable appends, {writers:>2} writers: {rate:>9.0}/s  p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms"
        );
        append_rows.push(serde_json::json!({
            "writers": writers,
            "appends_per_s": rate.round(),
            "p50_ms": (p50 * 100.0).round() / 100.0,
            "p99_ms": (p99 * 100.0).round() / 100.0,
            "max_ms": (max * 100.0).round() / 100.0,
            "runs_appends_per_s": r.iter().map(|x| x.0.round()).collect::<Vec<_>>(),
        }));
    }

    let t = Instant::now();
    let signing = key()?;
    let export = build_export(verify_entries, &signing)?;
    eprintln!(
        "built an export of {verify_entries} entries ({:.0} MB) in {:.1} s",
        export.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let vk = signing.verifier_key();
    let mut verify_rows = Vec::new();
    for (name, mode) in [("fast", Mode::Fast), ("full", Mode::Full)] {
        let mut rates = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let report = verify_with(&export, &vk, ORIGIN, None, mode)
                .map_err(|e| anyhow::anyhow!("export does not verify: {e}"))?;
            let secs = t.elapsed().as_secs_f64();
            anyhow::ensure!(report.entries as usize == verify_entries);
            rates.push(verify_entries as f64 / secs);
        }
        let rate = median(rates.clone());
        eprintln!(
            "verify ({name}): {rate:.0} entries/s = {:.2} x raw SHA-256 leaf hashing",
            rate / leaves_per_s
        );
        verify_rows.push(serde_json::json!({
            "mode": name,
            "entries_per_s": rate.round(),
            "ratio_to_raw_sha256_leaves": (rate / leaves_per_s * 1000.0).round() / 1000.0,
            "runs_entries_per_s": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        }));
    }
    let report = serde_json::json!({
        "machine_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "raw_sha256_mb_per_s": sha_mbps.round(),
        "raw_leaf_hashes_per_s": leaves_per_s.round(),
        "entry_bytes": sample_len,
        "appends": append_rows,
        "verify_entries": verify_entries,
        "verify": verify_rows,
        "runs": runs,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
