//! Storage faults end to end (issue 8 item 4): the gateway's data directory on a small tmpfs
//! that is filled until writes fail with "No space left on device" (a real fault, real
//! binaries, real mTLS).
//!
//! While the disk is full an agent's push is refused with `UNAVAILABLE` naming the cause (the
//! batch stays in the agent's spool), an extract is refused and writes no release, and the
//! gateway keeps running. Once space is freed the service recovers without a restart: the
//! agent resends what was not acknowledged, an extract succeeds, the audit log verifies and
//! every record pushed is stored exactly once. The same holds after a restart, and after a
//! gateway stopped while the disk was still full (nothing of a refused batch is half-stored).
//!
//! Needs root to mount the tmpfs (CI runs as root); without it the test fails and says so.

use anyhow::{Context, Result, bail, ensure};
use e2e::{
    GatewayProc, Pki, audit_entries, export_audit, push, run_agent, run_extract, synth_catalog,
    text, verify_audit, verify_release_cli,
};
use gateway::audit::entry::Entry;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SV: &str = "SKP-ISA-SV-01";
const SV_PURPOSE: &str = "serious-violence-sna";
/// Coarse enough that k-anonymity keeps most rows of a small data set.
const SV_FIELDS: &str = "police_crime.ho_offence_group,police_crime.committed_from:year,police_crime.victim_sex,police_crime.suspect_sex";
/// Big enough for the store, the audit log and a few small releases; small enough to fill
/// at once.
const TMPFS_SIZE: &str = "16m";
const ENOSPC: &str = "No space left on device";

#[test]
fn a_full_disk_fails_closed_and_the_gateway_recovers_without_a_restart() -> Result<()> {
    let pki = Pki::new()?;
    let data = pki.path().join("data");
    // Declared before the gateway, so dropped after it: the gateway is killed before the
    // unmount, however the test ends.
    let _mnt = Tmpfs::mount(&data, TMPFS_SIZE)?;
    let agent_cfg = pki.agent_config("met-police");
    // One attempt and no long back-off: a refused push returns at once, its batches spooled.
    let cfg = std::fs::read_to_string(&agent_cfg)?;
    let fast = cfg.replace("retries = 3", "retries = 0\nbackoff_ms = 50");
    ensure!(fast != cfg, "the dev agent config has no `retries = 3`");
    std::fs::write(&agent_cfg, fast)?;
    let spool = pki.path().join("agent-state/met-police/spool");

    // Three parts of one synthetic police export: a baseline, a part pushed while the disk is
    // full (then recovered without a restart), a part pushed while full and left spooled
    // across a restart.
    let exports = pki.path().join("exports");
    let files = synth_catalog("met-police", 900, 41, &exports)?;
    let crime = files
        .get("police_crime")
        .context("no police_crime export")?;
    let parts = split_csv(crime, &[0.5, 0.25, 0.25], &exports)?;
    let rows: Vec<u64> = parts.iter().map(|(_, n)| *n).collect();
    ensure!(rows.iter().all(|n| *n > 0), "empty parts: {rows:?}");

    // 1. Baseline: a push and an extract work.
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let summary = push_summary(&push(&pki, &gw, "met-police", "police_crime", &parts[0].0)?)?;
    assert_eq!(summary.accepted, rows[0], "baseline push");
    let releases = pki.path().join("releases");
    let base = extract_ok(&pki, &gw, &releases.join("baseline"))?;
    ensure!(base > 0, "the baseline extract released no rows");

    // 2. The disk fills up. The push is refused, and so is every resend: first (while the
    // audit log's last page has room for the batch's entry) because the records cannot be
    // written, then because the audit log cannot take even the entry.
    let filler = fill(&data)?;
    let mut o = push(&pki, &gw, "met-police", "police_crime", &parts[1].0)?;
    let mut causes = Vec::new();
    for _ in 0..50 {
        let cause = refused_push_cause(&o)?;
        causes.push(cause);
        if cause == Cause::AuditLog {
            break;
        }
        o = agent_run(&pki, &gw)?;
    }
    eprintln!("refusals while the disk was full: {causes:?}");
    ensure!(
        causes.last() == Some(&Cause::AuditLog),
        "resends never filled the audit log: {causes:?}"
    );
    ensure!(
        spooled(&spool)? == 1,
        "the refused batch is not (or not once) in the agent's spool"
    );

    let refused = releases.join("refused");
    let o = extract(&pki, &gw, &refused)?;
    ensure!(
        !o.status.success(),
        "an extract on a full disk succeeded: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("extract on a full disk: {}", err.trim());
    assert!(err.contains("Unavailable"), "{}", text(&o));
    assert_no_release(&refused, &data)?;
    ensure!(gw.is_running(), "the gateway stopped on a full disk");
    assert_gateway_log_clean(&gw)?;
    assert!(gw.log().contains(ENOSPC), "the gateway log names the cause");

    // 3. Space is freed: the same process takes the resent batch and releases again.
    std::fs::remove_file(&filler)?;
    let o = agent_run(&pki, &gw)?;
    let summary = push_summary(&o)?;
    // One batch, refused: none of its records was kept.
    assert_eq!(
        (summary.accepted, summary.duplicates),
        (rows[1], 0),
        "the resent part is taken whole and was not half-stored: {}",
        text(&o)
    );
    assert_eq!(spooled(&spool)?, 0, "nothing left in the agent's spool");
    let after = extract_ok(&pki, &gw, &releases.join("recovered"))?;
    ensure!(
        after > base,
        "the extract after recovery has {after} rows, the baseline {base}"
    );
    let stored = rows[0] + rows[1];
    check_audit(&pki, &gw, "recovered", &[stored])?;
    ensure!(gw.is_running(), "the gateway stopped");
    gw.stop()?;
    assert_eq!(
        store_count(&data)?,
        stored,
        "every record stored exactly once"
    );

    // 4. A restart on the same data: nothing torn, the same release, the same accounting.
    let mut gw2 = GatewayProc::start(&pki.gateway_config())?;
    assert_no_torn_tail(&gw2)?;
    let again = extract_ok(&pki, &gw2, &releases.join("restarted"))?;
    assert_eq!(again, after, "the same rows after a restart");
    check_audit(&pki, &gw2, "restarted", &[stored])?;

    // 5. Full again, a push refused, and the gateway stopped before space is freed: the
    // refused batch must not come back half-stored when the gateway starts again.
    let filler = fill(&data)?;
    let o = push(&pki, &gw2, "met-police", "police_crime", &parts[2].0)?;
    let cause = refused_push_cause(&o)?;
    eprintln!("refusal before the stop: {cause:?}");
    ensure!(gw2.is_running(), "the gateway stopped on a full disk");
    let status = gw2
        .stop()
        .context("stopping the gateway while its disk is full")?;
    eprintln!("stopped on a full disk: {status}");
    std::fs::remove_file(&filler)?;
    let mut gw3 = GatewayProc::start(&pki.gateway_config())?;
    assert_no_torn_tail(&gw3)?;
    let o = agent_run(&pki, &gw3)?;
    let summary = push_summary(&o)?;
    // One batch, refused: none of its records may have been kept (they would come back as
    // duplicates).
    assert_eq!(
        (summary.accepted, summary.duplicates),
        (rows[2], 0),
        "the part left spooled is taken whole and was not half-stored: {}",
        text(&o)
    );
    let last = extract_ok(&pki, &gw3, &releases.join("last"))?;
    ensure!(
        last > after,
        "the last extract has {last} rows, before {after}"
    );
    let stored = stored + rows[2];
    // The storage_failure entry of the batch refused before the stop cannot be written while
    // the audit log is full too (then lost with the process): the audit log may count that
    // batch twice, once for the refused attempt and once for the resend; never fewer.
    check_audit(&pki, &gw3, "last", &[stored, stored + rows[2]])?;
    gw3.stop()?;
    assert_eq!(
        store_count(&data)?,
        stored,
        "every record stored exactly once"
    );
    Ok(())
}

/// Unmounts the tmpfs when the test ends, however it ends (lazily if it is still busy).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(at)?;
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .context("cannot run mount")?;
        if !o.status.success() {
            bail!(
                "this test needs root to mount a small tmpfs for the gateway's data directory \
                 (CI runs as root); mount failed: {}",
                text(&o)
            );
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A store opened by the test may still be closing its files for a moment.
        for _ in 0..40 {
            let unmounted = Command::new("umount")
                .arg(&self.0)
                .output()
                .is_ok_and(|o| o.status.success());
            if unmounted {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` until a write fails with "no space", down to single
/// bytes (so the filler's own last page is full too). Returns the filler file.
fn fill(dir: &Path) -> Result<PathBuf> {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)?;
    for size in [1 << 20, 65536, 4096, 512, 64, 8, 1] {
        let chunk = vec![0u8; size];
        loop {
            match f.write(&chunk) {
                Ok(n) if n == size => {}
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => bail!("filling {}: {e}", p.display()),
            }
        }
    }
    let _ = f.sync_all();
    Ok(p)
}

/// Splits a CSV into parts of the given shares of its rows (the last takes the rest), each
/// with the header. Returns each part's path and rows.
fn split_csv(file: &Path, shares: &[f64], dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut r = csv::Reader::from_path(file)?;
    let header = r.headers()?.clone();
    let records: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    let mut at = 0usize;
    for (i, share) in shares.iter().enumerate() {
        let n = if i + 1 == shares.len() {
            records.len() - at
        } else {
            ((records.len() as f64) * share) as usize
        };
        let path = dir.join(format!("part{i}.csv"));
        let mut w = csv::Writer::from_path(&path)?;
        w.write_record(&header)?;
        for rec in &records[at..at + n] {
            w.write_record(rec)?;
        }
        w.flush()?;
        out.push((path, n as u64));
        at += n;
    }
    Ok(out)
}

/// What a push refused on a full disk named as the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The records could not be written (their audit entry was).
    RecordLog,
    /// The audit entry (of the batch, or of an earlier refused batch) could not be written.
    AuditLog,
}

/// Checks an agent refused on a full disk: exit 3 (batches kept in the spool), `UNAVAILABLE`
/// naming "No space left on device" and which log could not be written.
fn refused_push_cause(o: &Output) -> Result<Cause> {
    ensure!(
        o.status.code() == Some(3),
        "a push onto a full disk must fail as unavailable (exit 3), batches kept: {}",
        text(o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: the gateway could not take the batches"))
        .with_context(|| format!("no refusal line: {}", text(o)))?;
    ensure!(
        line.contains("Unavailable") && line.contains(ENOSPC),
        "the refusal names the storage failure: {}",
        text(o)
    );
    if line.contains("audit log cannot be written") {
        Ok(Cause::AuditLog)
    } else if line.contains("cannot append to the record log") {
        Ok(Cause::RecordLog)
    } else {
        bail!("the refusal names neither log: {line}")
    }
}

/// The counts an `agent push` or `agent run` printed.
#[derive(Debug, Default)]
struct Summary {
    accepted: u64,
    duplicates: u64,
}

/// Parses the agent's summary line; an error unless the agent succeeded and the gateway
/// rejected nothing.
fn push_summary(o: &Output) -> Result<Summary> {
    ensure!(o.status.success(), "the agent failed: {}", text(o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("accepted "))
        .with_context(|| format!("no summary line: {}", text(o)))?;
    let num = |key: &str| -> Result<u64> {
        line.split(", ")
            .find_map(|p| p.trim().strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no `{key}` in {line:?}"))
    };
    ensure!(
        num("rejected by gateway ")? == 0,
        "the gateway rejected rows: {line}"
    );
    Ok(Summary {
        accepted: num("accepted ")?,
        duplicates: num("duplicates ")?,
    })
}

/// `agent run`: sends whatever is still spooled.
fn agent_run(pki: &Pki, gw: &GatewayProc) -> Result<Output> {
    run_agent(&[
        "run",
        "--config",
        &pki.agent_config("met-police").display().to_string(),
        "--gateway",
        &gw.url(),
    ])
}

/// Spool files waiting in the agent's spool folder.
fn spooled(spool: &Path) -> Result<usize> {
    if !spool.exists() {
        return Ok(0);
    }
    Ok(std::fs::read_dir(spool)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .count())
}

fn extract(pki: &Pki, gw: &GatewayProc, out: &Path) -> Result<Output> {
    run_extract(
        &pki.analyst_config(),
        gw,
        SV,
        SV_PURPOSE,
        &["--datasets", "police_crime", "--fields", SV_FIELDS],
        out,
    )
}

/// An extract that must succeed and verify offline; returns the rows released.
fn extract_ok(pki: &Pki, gw: &GatewayProc, out: &Path) -> Result<u64> {
    let o = extract(pki, gw, out)?;
    ensure!(o.status.success(), "extract failed: {}", text(&o));
    let o = verify_release_cli(pki, out, None)?;
    ensure!(o.status.success(), "verify-release failed: {}", text(&o));
    let m = gateway::release::manifest::Manifest::parse(&std::fs::read(out.join("manifest.json"))?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(m.release.files.iter().map(|f| f.rows).sum())
}

/// A refused release left nothing: no file in the analyst's folder, no spool or unfinished
/// registration in the gateway's release registry.
fn assert_no_release(out: &Path, data: &Path) -> Result<()> {
    if out.exists() {
        let left: Vec<String> = std::fs::read_dir(out)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ensure!(left.is_empty(), "a refused extract left files: {left:?}");
    }
    let registry = data.join("releases");
    if registry.exists() {
        let left: Vec<String> = std::fs::read_dir(&registry)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("spool-") || n.ends_with(".tmp"))
            .collect();
        ensure!(
            left.is_empty(),
            "a refused release left spool files in the gateway: {left:?}"
        );
    }
    Ok(())
}

/// No panic in the gateway's log.
fn assert_gateway_log_clean(gw: &GatewayProc) -> Result<()> {
    let log = gw.log();
    ensure!(
        !log.contains("panicked"),
        "the gateway panicked:\n{}",
        e2e::tail(&log, 40)
    );
    Ok(())
}

/// The gateway started on logs without a half-written entry or record frame.
fn assert_no_torn_tail(gw: &GatewayProc) -> Result<()> {
    let log = gw.log();
    ensure!(
        !log.contains("torn"),
        "the gateway found a torn tail at start-up (a half-written entry or record):\n{}",
        e2e::tail(&log, 40)
    );
    assert_gateway_log_clean(gw)
}

/// Exports and verifies the audit log, and checks the accepted counts of the ingest entries not
/// named by a `storage_failure` entry (those of refused batches) add up to one of `expected`.
fn check_audit(pki: &Pki, gw: &GatewayProc, name: &str, expected: &[u64]) -> Result<()> {
    let out = pki.path().join(format!("audit-{name}.txt"));
    export_audit(pki, gw, &out)?;
    let o = verify_audit(pki, &out, None)?;
    ensure!(o.status.success(), "audit verify: {}", text(&o));
    let es = audit_entries(&out)?;
    let accepted = accepted_not_failed(&es)?;
    let failures = es
        .iter()
        .filter(|e| e.action.as_str() == "storage_failure")
        .count();
    eprintln!(
        "audit {name}: {} entries, {failures} storage_failure, {accepted} accepted by ingest entries not named by one",
        es.len()
    );
    ensure!(
        expected.contains(&accepted),
        "the audit log's ingest entries count {accepted} records accepted, expected {expected:?}"
    );
    Ok(())
}

/// Accepted records of ingest entries not named by a `storage_failure` entry.
fn accepted_not_failed(es: &[Entry]) -> Result<u64> {
    let mut failed = HashSet::new();
    for e in es.iter().filter(|e| e.action.as_str() == "storage_failure") {
        let r = e.reason.as_deref().unwrap_or("");
        let (a, b) = r
            .strip_prefix("entries ")
            .and_then(|r| r.split_once(" were not committed"))
            .and_then(|(r, _)| r.split_once("..="))
            .with_context(|| format!("storage_failure names its entries: {r}"))?;
        for s in a.parse::<u64>()?..=b.parse::<u64>()? {
            failed.insert(s);
        }
    }
    Ok(es
        .iter()
        .filter(|e| e.action.as_str() == "ingest" && !failed.contains(&e.seq))
        .filter_map(|e| e.counts.and_then(|c| c.accepted))
        .sum())
}

/// Live records in the store, opened directly (the gateway must be stopped).
fn store_count(data: &Path) -> Result<u64> {
    let store = gateway::store::Store::open(data)?;
    Ok(store.count_records()?)
}
