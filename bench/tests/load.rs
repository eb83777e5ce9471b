//! The load test in reduced size (CI): `bench load` runs a real `gateway serve` child with a
//! development PKI made on the fly, agents streaming ingest batches with their agencies'
//! certificates and analysts extracting with their JWTs, over loopback mutual TLS. Every kind of
//! call must make progress and no call may fail other than by a configured limit. The full size
//! (25 agents, 10 analysts, 60 s) is the README's command; no wall-clock time is asserted here.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The `bench` binary cargo built for this test.
fn bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bench"))
}

/// Result of the one `cargo build -p gateway` this process runs.
static GATEWAY_BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);

/// Builds the `gateway` binary next to `bench` (same target directory and profile) once per
/// process: `bench load` runs it as a child. Cargo builds only this package's binaries for its
/// tests; a no-op when the gateway is fresh (CI builds every binary first).
fn gateway_next_to_bench() -> Result<()> {
    let mut guard = GATEWAY_BUILT
        .lock()
        .map_err(|_| anyhow::anyhow!("the build lock is poisoned"))?;
    if guard.is_none() {
        *guard = Some(build_gateway(&bench()).map_err(|e| format!("{e:#}")));
    }
    match guard.as_ref() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => bail!("{e}"),
        None => bail!("the gateway was not built"),
    }
}

fn build_gateway(bench: &Path) -> Result<()> {
    let profile_dir = bench
        .parent()
        .with_context(|| format!("{} has no parent directory", bench.display()))?;
    let mut cmd = e2e::cargo_build(&["-p", "gateway", "--bin", "gateway"], profile_dir);
    let out = cmd.output().context("cannot run cargo")?;
    let gateway = profile_dir.join(format!("gateway{}", std::env::consts::EXE_SUFFIX));
    if !out.status.success() {
        let why = format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(gateway.is_file(), "{why}");
        // As tests/support does: another change being built must not stop this test.
        eprintln!(
            "load test: WARNING: using the possibly stale {} because the build failed: {why}",
            gateway.display()
        );
    }
    ensure!(
        gateway.is_file(),
        "{} is missing after `cargo build -p gateway`",
        gateway.display()
    );
    Ok(())
}

/// Runs `bench load ARGS --json` and returns its JSON report; its table goes to this test's
/// output.
fn load(args: &[&str]) -> Result<(bool, Value)> {
    gateway_next_to_bench()?;
    let out = Command::new(bench())
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .context("cannot run bench load")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "bench load ({}) printed no JSON report:\n{}\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok((out.status.success(), report))
}

fn count(v: &Value, what: &str) -> Result<u64> {
    v.as_u64()
        .with_context(|| format!("{what} is not a count in the report: {v}"))
}

#[test]
fn reduced_load_has_no_errors_and_every_kind_makes_progress() -> Result<()> {
    let (ok, r) = load(&[
        "--agents",
        "5",
        "--analysts",
        "2",
        "--secs",
        "5",
        "--records-per-batch",
        "100",
        "--call-timeout-secs",
        "60",
    ])?;
    ensure!(
        count(&r["errors"], "errors")? == 0,
        "calls failed: {}",
        r["error_messages"]
    );
    ensure!(ok, "bench load failed: {}", r["failures"]);
    for kind in [
        "ingest_batch",
        "extract",
        "aggregate",
        "agreements",
        "health_under_load",
        "baseline_health_idle",
    ] {
        let k = &r["kinds"][kind];
        let done = count(&k["ok"], &format!("{kind}.ok"))?;
        ensure!(done > 0, "no {kind} call succeeded: {k}");
        ensure!(count(&k["errors"], kind)? == 0, "{kind} failed: {k}");
        for p in ["p50_ms", "p99_ms", "max_ms"] {
            ensure!(k[p].is_number(), "{kind} has no {p}: {k}");
        }
    }
    ensure!(
        count(&r["records_accepted"], "records_accepted")?
            >= 100 * count(&r["kinds"]["ingest_batch"]["ok"], "ingest ok")?,
        "fewer records accepted than sent in acknowledged batches: {r}"
    );
    ensure!(
        r["gateway_peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0),
        "no peak RSS reported: {r}"
    );
    ensure!(
        r["stopped_cleanly"] == true,
        "the gateway did not stop cleanly"
    );
    Ok(())
}

#[test]
fn load_stops_at_its_call_budget() -> Result<()> {
    // A long time but few calls: the budget ends the run (had it not, far more than 30 calls
    // would be counted).
    let (ok, r) = load(&[
        "--agents",
        "2",
        "--analysts",
        "1",
        "--secs",
        "600",
        "--max-requests",
        "30",
        "--records-per-batch",
        "50",
        "--call-timeout-secs",
        "60",
    ])?;
    ensure!(ok, "bench load failed: {}", r["failures"]);
    ensure!(
        count(&r["calls"], "calls")? == 30,
        "expected exactly the 30 budgeted calls: {r}"
    );
    ensure!(
        count(&r["errors"], "errors")? == 0,
        "{}",
        r["error_messages"]
    );
    Ok(())
}
