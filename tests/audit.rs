//! End-to-end audit log: real `gateway serve`, `agent` and `gateway audit` processes over
//! loopback mutual TLS. Every action is counted in a verified export; tampering, rollback and a
//! full disk are caught.

use anyhow::{Context, Result, bail, ensure};
use e2e::{
    GatewayProc, Pki, agent_client, audit_entries, bin, config_with_console, console_port,
    console_request, export_audit, push, run_agent, run_extract, run_gateway, text, verify_audit,
};
use gateway::audit::entry::Entry;
use sharing_proto::v1::{IngestBatch, Record, WithdrawRequest};
use std::path::{Path, PathBuf};
use std::process::Command;

fn count(es: &[Entry], action: &str, decision: &str) -> usize {
    es.iter()
        .filter(|e| e.action.as_str() == action && e.decision.as_str() == decision)
        .count()
}

/// Writes `rows` synthetic rows of `lfb_incident` and returns the file.
fn lfb_rows(pki: &Pki, persons: usize, seed: u64) -> Result<PathBuf> {
    let out = pki.path().join(format!("exports-{seed}"));
    let o = run_agent(&[
        "synth",
        "--shape",
        "catalog",
        "--agency",
        "lfb",
        "--persons",
        &persons.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        &out.display().to_string(),
    ])?;
    ensure!(o.status.success(), "agent synth failed: {}", text(&o));
    let file = String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("lfb_incident: ").map(PathBuf::from))
        .context("synth wrote no lfb_incident file")?;
    Ok(file)
}

fn data_lines(file: &Path) -> Result<usize> {
    Ok(std::fs::read_to_string(file)?
        .lines()
        .count()
        .saturating_sub(1))
}

fn batch(dataset: &str) -> IngestBatch {
    IngestBatch {
        dataset: dataset.into(),
        schema_version: 1,
        fields: vec![],
        records: vec![Record {
            record_key: vec![7; 32],
            content_hash: vec![0; 32],
            persons: vec![],
            values: vec![],
            source_line: 1,
        }],
        batch_id: "crafted#1".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_is_audited_once_and_the_export_verifies() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let ca = pki.ca_pem()?;

    // Ingest: 2,500 rows in batches of 1,000 → three entries.
    let file = lfb_rows(&pki, 2500, 11)?;
    let rows = data_lines(&file)?;
    let o = push(&pki, &gw, "lfb", "lfb_incident", &file)?;
    ensure!(o.status.success(), "push failed: {}", text(&o));

    // Refusals: no certificate; another agency's dataset; an unknown dataset.
    let mut anon = agent_client(&ca, None, gw.addr).await?;
    anon.ingest(futures::stream::iter(vec![batch("lfb_incident")]))
        .await
        .expect_err("no certificate");
    let lfb_id = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    let mut lfb = agent_client(&ca, Some((&lfb_id.0, &lfb_id.1)), gw.addr).await?;
    let e = lfb
        .ingest(futures::stream::iter(vec![batch("police_crime")]))
        .await
        .expect_err("not owner");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = lfb
        .ingest(futures::stream::iter(vec![batch("lfb_incidentz")]))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound);

    // A withdrawal of a key that matches nothing.
    let w = lfb
        .withdraw(WithdrawRequest {
            dataset: "lfb_incident".into(),
            record_keys: vec![vec![9; 32]],
            reason: "erasure".into(),
        })
        .await?
        .into_inner();
    assert_eq!((w.withdrawn, w.not_found), (0, 1));

    // An analyst's token on the audit service: refused (role), audited.
    let analyst_token = std::fs::read_to_string(pki.path().join("analysts/rbk-analyst.jwt"))?;
    let o = Command::new(bin("gateway")?)
        .args([
            "audit",
            "tree-head",
            "--config",
            &pki.auditor_config(),
            "--gateway",
            &gw.url(),
        ])
        .env("SKP_TOKEN", analyst_token.trim())
        .output()?;
    ensure!(
        !o.status.success(),
        "an analyst read the tree head: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("PermissionDenied"),
        "{}",
        text(&o)
    );

    // A certificate from another CA: refused in the TLS handshake.
    let foreign = tempfile::tempdir()?;
    gateway::pki::make_dev_pki(foreign.path(), &gateway::pki::DevPkiOptions::default())?;
    let fc = std::fs::read_to_string(foreign.path().join("agents/lfb.pem"))?;
    let fk = std::fs::read_to_string(foreign.path().join("agents/lfb.key"))?;
    if let Ok(mut c) = agent_client(&ca, Some((&fc, &fk)), gw.addr).await {
        c.ingest(futures::stream::iter(vec![batch("lfb_incident")]))
            .await
            .expect_err("foreign CA");
    }

    // Export and verify with the pinned key.
    let out = pki.path().join("audit-1.txt");
    export_audit(&pki, &gw, &out)?;
    let o = verify_audit(&pki, &out, None)?;
    ensure!(o.status.success(), "verify failed: {}", text(&o));
    let es = audit_entries(&out)?;

    assert_eq!(count(&es, "gateway_start", "allow"), 1, "{es:#?}");
    assert_eq!(count(&es, "policy_load", "allow"), 1, "{es:#?}");
    assert_eq!(
        count(&es, "crl_load", "allow"),
        1,
        "the CRL put in force at start"
    );
    let ingests: Vec<&Entry> = es
        .iter()
        .filter(|e| e.action.as_str() == "ingest" && e.decision.as_str() == "allow")
        .collect();
    assert_eq!(ingests.len(), rows.div_ceil(1000), "one entry per batch");
    let accepted: u64 = ingests
        .iter()
        .filter_map(|e| e.counts.and_then(|c| c.accepted))
        .sum();
    assert_eq!(accepted, rows as u64);
    assert!(
        ingests
            .iter()
            .all(|e| e.actor.agency.as_deref() == Some("lfb") && e.datasets == ["lfb_incident"])
    );
    assert_eq!(count(&es, "ingest", "deny"), 1, "unknown dataset");
    assert_eq!(count(&es, "withdraw", "allow"), 1);
    // Failed calls: no certificate, another agency's dataset, an analyst on the audit
    // service: one entry each. The foreign certificate fails in the TLS handshake; the client
    // library reconnects on its own, so each connection it made is one entry.
    let fails: Vec<&Entry> = es
        .iter()
        .filter(|e| e.action.as_str() == "auth_failure")
        .collect();
    let (tls, calls): (Vec<&Entry>, Vec<&Entry>) = fails.iter().partition(|e| {
        e.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("TLS handshake refused"))
    });
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert!(
        !tls.is_empty()
            && tls
                .iter()
                .all(|e| e.peer.is_some() && e.actor.kind == "anonymous")
    );
    assert!(calls.iter().any(|e| e.actor.kind == "anonymous"
        && e.reason.as_deref() == Some("call without a client certificate")));
    assert!(
        calls
            .iter()
            .any(|e| e.actor.kind == "analyst" && e.actor.id == "rbk-analyst")
    );
    assert!(calls.iter().any(|e| {
        e.reason
            .as_deref()
            .is_some_and(|r| r.contains("may not submit dataset police_crime"))
            && e.actor.agency.as_deref() == Some("lfb")
    }));
    assert_eq!(count(&es, "audit_query", "allow"), 1, "the export itself");
    assert_eq!(
        es.len(),
        3 + ingests.len() + 1 + 1 + fails.len() + 1,
        "{es:#?}"
    );

    // An inclusion proof of the first ingest entry, checked by the CLI.
    let idx = ingests[0].seq.to_string();
    let o = run_gateway(&[
        "audit",
        "prove",
        "--config",
        &pki.auditor_config(),
        "--gateway",
        &gw.url(),
        "--entry",
        &idx,
    ])?;
    ensure!(o.status.success(), "prove failed: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("is in the log"));

    // The query CLI filters.
    let o = run_gateway(&[
        "audit",
        "log",
        "--config",
        &pki.auditor_config(),
        "--gateway",
        &gw.url(),
        "--action",
        "ingest",
        "--agency",
        "lfb",
        "--json",
    ])?;
    ensure!(o.status.success(), "log failed: {}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout).lines().count();
    assert_eq!(
        listed,
        ingests.len() + 1,
        "ingest entries of lfb incl. the denial"
    );

    // Stop (audited), restart, export again: consistent with the first export's checkpoint.
    gw.stop()?;
    let first_cp = pki.path().join("checkpoint-1.txt");
    let t = std::fs::read_to_string(&out)?;
    let note = t
        .split_once("# checkpoint\n")
        .map(|(_, n)| n.to_string())
        .context("no checkpoint in export")?;
    std::fs::write(&first_cp, note)?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let out2 = pki.path().join("audit-2.txt");
    export_audit(&pki, &gw, &out2)?;
    let o = verify_audit(&pki, &out2, Some(&first_cp))?;
    ensure!(
        o.status.success(),
        "verify with kept checkpoint: {}",
        text(&o)
    );
    let es2 = audit_entries(&out2)?;
    assert_eq!(count(&es2, "gateway_stop", "allow"), 1);
    assert_eq!(count(&es2, "gateway_start", "allow"), 2);
    assert_eq!(
        count(&es2, "audit_query", "allow"),
        3,
        "export, log, export"
    );

    tamper_matrix(&pki, &out2)?;
    Ok(())
}

/// Each tamper of a real export must fail `gateway audit verify` naming what is wrong.
fn tamper_matrix(pki: &Pki, export: &Path) -> Result<()> {
    let original = std::fs::read_to_string(export)?;
    let lines: Vec<&str> = original.split_inclusive('\n').collect();
    let first = 1; // line index of entry 0 (after the header)
    let n = lines.iter().filter(|l| l.starts_with('{')).count();
    ensure!(n >= 8, "need a few entries, have {n}");
    let entry_line = |i: usize| first + i;
    let rebuild = |ls: &[String]| ls.concat();
    let owned: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let dir = tempfile::tempdir()?;
    let mut cases: Vec<(&str, String, String)> = Vec::new();

    // Flip a byte inside entry 3's reason or dataset text (JSON stays valid).
    let mut ls = owned.clone();
    let l = &ls[entry_line(3)];
    let pos = l.find("\"time\":\"").context("time")? + 10;
    let mut b = l.clone().into_bytes();
    b[pos] = if b[pos] == b'1' { b'2' } else { b'1' };
    ls[entry_line(3)] = String::from_utf8(b)?;
    cases.push(("flip a byte in entry 3", rebuild(&ls), "entry 3".into()));

    // Swap entries 2 and 5.
    let mut ls = owned.clone();
    ls.swap(entry_line(2), entry_line(5));
    cases.push(("swap 2 and 5", rebuild(&ls), "entry 2".into()));

    // Delete entry 4.
    let mut ls = owned.clone();
    ls.remove(entry_line(4));
    cases.push(("delete 4", rebuild(&ls), "4".into()));

    // Truncate: drop the last two entries (checkpoint kept).
    let mut ls = owned.clone();
    ls.remove(entry_line(n - 1));
    ls.remove(entry_line(n - 2));
    cases.push(("truncate", rebuild(&ls), format!("{}", n - 2)));

    // Insert a forged copy of entry 1 after it.
    let mut ls = owned.clone();
    let forged = ls[entry_line(1)].clone();
    ls.insert(entry_line(2), forged);
    cases.push(("insert", rebuild(&ls), "inserted".into()));

    // Rewrite entry 2 and recompute every later seq/prev without the key: the signature
    // (old checkpoint) no longer matches the root.
    let mut es: Vec<Entry> = owned[first..first + n]
        .iter()
        .map(|l| Entry::decode(l.trim_end().as_bytes()).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<Result<_>>()?;
    es[2].reason = Some("nothing happened".into());
    let mut range = skp_core::merkle::CompactRange::new();
    for (i, e) in es.iter_mut().enumerate() {
        e.seq = i as u64;
        e.prev = hex::encode(range.root());
        range.append(e.leaf_hash())?;
    }
    let mut ls = owned.clone();
    for (i, e) in es.iter().enumerate() {
        ls[entry_line(i)] = format!("{}\n", String::from_utf8(e.encode())?);
    }
    cases.push(("rewrite and recompute", rebuild(&ls), "checkpoint".into()));

    for (name, text_, needle) in cases {
        let p = dir.path().join(name.replace(' ', "-"));
        std::fs::write(&p, &text_)?;
        let o = verify_audit(pki, &p, None)?;
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        if o.status.success() {
            bail!("{name}: tampered export verified: {}", text(&o));
        }
        ensure!(
            err.contains(&needle),
            "{name}: the error should name {needle:?}: {err}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_log_fails_against_a_kept_checkpoint() -> Result<()> {
    let pki = Pki::new()?;
    let data = pki.path().join("data");
    let snapshot = pki.path().join("data-snapshot");
    let file = lfb_rows(&pki, 120, 21)?;

    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let o = push(&pki, &gw, "lfb", "lfb_incident", &file)?;
    ensure!(o.status.success(), "push: {}", text(&o));
    gw.stop()?;
    copy_dir(&data, &snapshot)?;

    // More entries, then the IG officer keeps checkpoint C.
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let more = lfb_rows(&pki, 90, 22)?;
    let o = push(&pki, &gw, "lfb", "lfb_incident", &more)?;
    ensure!(o.status.success(), "push: {}", text(&o));
    let kept = pki.path().join("kept-checkpoint.txt");
    let o = run_gateway(&[
        "audit",
        "tree-head",
        "--config",
        &pki.auditor_config(),
        "--gateway",
        &gw.url(),
        "--save",
        &kept.display().to_string(),
    ])?;
    ensure!(o.status.success(), "tree-head: {}", text(&o));
    gw.stop()?;

    // The operator restores the old data directory and different entries are appended.
    std::fs::remove_dir_all(&data)?;
    copy_dir(&snapshot, &data)?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let other = lfb_rows(&pki, 60, 23)?;
    let o = push(&pki, &gw, "lfb", "lfb_incident", &other)?;
    ensure!(o.status.success(), "push: {}", text(&o));
    let out = pki.path().join("after-rollback.txt");
    export_audit(&pki, &gw, &out)?;

    // On its own the forked log is self-consistent; the kept checkpoint exposes it.
    let o = verify_audit(&pki, &out, None)?;
    ensure!(o.status.success(), "fork verifies alone: {}", text(&o));
    let o = verify_audit(&pki, &out, Some(&kept))?;
    ensure!(!o.status.success(), "rollback not detected: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("checkpoint"), "{err}");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(at)?;
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .context("cannot run mount")?;
        ensure!(
            o.status.success(),
            "this test needs root to mount a small tmpfs (CI runs as root): {}",
            text(&o)
        );
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` until a write fails with "no space".
fn fill(dir: &Path) -> Result<PathBuf> {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p)?;
    for size in [65536, 4096, 512, 64, 8, 1] {
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

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_ingest_and_recovers_when_space_is_freed() -> Result<()> {
    let pki = Pki::new()?;
    let data = pki.path().join("data");
    let _mnt = Tmpfs::mount(&data, "4m")?;
    let file = lfb_rows(&pki, 200, 31)?;
    let rows = data_lines(&file)? as u64;
    // No retries: the refusal is reported at once and the batch stays in the agent's spool.
    let cfg =
        std::fs::read_to_string(pki.agent_config("lfb"))?.replace("retries = 3", "retries = 0");
    std::fs::write(pki.agent_config("lfb"), cfg)?;

    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let filler = fill(&data)?;
    let o = push(&pki, &gw, "lfb", "lfb_incident", &file)?;
    ensure!(
        !o.status.success(),
        "push onto a full disk succeeded: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    // Refused as unavailable, naming the cause: either the audit entry could not be written,
    // or it was (the log file's last page had room) and the records could not be.
    assert!(
        err.contains("Unavailable") && err.contains("No space left on device"),
        "{}",
        text(&o)
    );

    // Space freed: the spooled batch goes through and the log verifies.
    std::fs::remove_file(&filler)?;
    let o = run_agent(&[
        "push",
        "--config",
        &pki.agent_config("lfb").display().to_string(),
        "--gateway",
        &gw.url(),
        "--dataset",
        "lfb_incident",
        &file.display().to_string(),
    ])?;
    ensure!(o.status.success(), "push after freeing space: {}", text(&o));
    let out = pki.path().join("audit.txt");
    export_audit(&pki, &gw, &out)?;
    let o = verify_audit(&pki, &out, None)?;
    ensure!(o.status.success(), "verify: {}", text(&o));
    let es = audit_entries(&out)?;
    // Ingest entries whose records could not be stored are named by a storage_failure entry.
    let mut not_committed = std::collections::HashSet::new();
    for e in es.iter().filter(|e| e.action.as_str() == "storage_failure") {
        let r = e.reason.as_deref().unwrap_or("");
        let range = r
            .strip_prefix("entries ")
            .and_then(|r| r.split_once(" were not committed"))
            .and_then(|(r, _)| r.split_once("..="))
            .context("storage_failure names its entries")?;
        for s in range.0.parse::<u64>()?..=range.1.parse::<u64>()? {
            not_committed.insert(s);
        }
    }
    let accepted: u64 = es
        .iter()
        .filter(|e| e.action.as_str() == "ingest" && !not_committed.contains(&e.seq))
        .filter_map(|e| e.counts.and_then(|c| c.accepted))
        .sum();
    assert_eq!(accepted, rows, "every stored record has its entry");
    gw.stop()?;

    // The store holds exactly the records the audit log accounts for.
    let store = gateway::store::Store::open(&data)?;
    assert_eq!(store.count_records()?, rows);
    Ok(())
}

/// The value of one sample of a parsed scrape (0 when absent).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// The console's `/metrics`: refused without a token or with an analyst's, served to an
/// auditor in the Prometheus text format (parsed by a Prometheus parser), and changing as
/// records are pushed and refused and as releases are made and refused.
#[tokio::test(flavor = "multi_thread")]
async fn console_metrics_parse_and_follow_what_the_gateway_does() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&config_with_console(&pki)?)?;
    let console = console_port(&gw)?;
    let auditor = std::fs::read_to_string(pki.path().join("auditors").join("ig-officer.jwt"))?;
    let analyst = std::fs::read_to_string(pki.path().join("analysts").join("rbk-analyst.jwt"))?;
    let scrape = |token: Option<&str>| console_request(&pki, &console, "/metrics", token, &[]);

    assert_eq!(scrape(None)?.0, 401);
    assert_eq!(scrape(Some(&analyst))?.0, 403);
    let (code, before) = scrape(Some(&auditor))?;
    assert_eq!(code, 200, "{before}");
    let before = prometheus_parse::Scrape::parse(before.lines().map(|l| Ok(l.to_owned())))?;
    let entries_before = sample(&before, "skp_audit_log_entries", &[]);
    assert!(entries_before >= 1.0);

    // lfb pushes its rows, then sends one record the gateway refuses (a flag for a date).
    let file = lfb_rows(&pki, 60, 5)?;
    let lines = data_lines(&file)?;
    let o = push(&pki, &gw, "lfb", "lfb_incident", &file)?;
    ensure!(o.status.success(), "push failed: {}", text(&o));
    let ca = pki.ca_pem()?;
    let (cert, key) = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    let mut lfb = agent_client(&ca, Some((&cert, &key)), gw.addr).await?;
    let crafted = IngestBatch {
        dataset: "lfb_incident".into(),
        schema_version: 1,
        fields: vec!["date_of_call".into()],
        records: vec![Record {
            record_key: vec![9; 32],
            content_hash: vec![1; 32],
            persons: vec![],
            values: vec![sharing_proto::v1::Value {
                kind: Some(sharing_proto::v1::value::Kind::Flag(true)),
            }],
            source_line: 1,
        }],
        batch_id: "crafted#2".into(),
    };
    let s = lfb
        .ingest(futures::stream::iter(vec![crafted]))
        .await?
        .into_inner();
    assert_eq!((s.accepted, s.rejected), (0, 1));

    let (code, after) = scrape(Some(&auditor))?;
    assert_eq!(code, 200);
    assert!(!after.contains("Bearer"), "no token in the scrape");
    let after = prometheus_parse::Scrape::parse(after.lines().map(|l| Ok(l.to_owned())))?;
    let stored = sample(
        &after,
        "skp_ingest_records_total",
        &[
            ("agency", "lfb"),
            ("dataset", "lfb_incident"),
            ("outcome", "accepted"),
        ],
    ) + sample(
        &after,
        "skp_ingest_records_total",
        &[
            ("agency", "lfb"),
            ("dataset", "lfb_incident"),
            ("outcome", "duplicate"),
        ],
    );
    assert_eq!(stored as usize, lines, "every good row counted once");
    // A flag where a date belongs: a bad value, labelled by its fixed code.
    assert_eq!(
        sample(
            &after,
            "skp_ingest_rejected_records_total",
            &[
                ("agency", "lfb"),
                ("field", "date_of_call"),
                ("reason", "bad_value")
            ]
        ),
        1.0
    );
    assert!(
        after
            .samples
            .iter()
            .filter(|s| s.metric == "skp_ingest_rejected_records_total")
            .all(|s| s.labels.get("reason").is_some_and(|r| {
                gateway::validate::RejectReason::ALL
                    .iter()
                    .any(|c| c.as_str() == r)
            })),
        "every rejected-records series has a reason of the fixed set"
    );
    assert!(sample(&after, "skp_audit_log_entries", &[]) > entries_before);
    let days = sample(
        &after,
        "skp_agency_certificate_days_to_expiry",
        &[("agency", "lfb")],
    );
    assert!(days > 30.0, "the dev certificate has {days} days left");
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "skp_audit_append_seconds_count"),
        "the append latency histogram is scraped"
    );

    // One allowed extract and one refused (only a field the agreement denies, so the rule is
    // no-field-released): each counted once.
    let releases = pki.path().join("releases");
    let o = run_extract(
        &pki.analyst_config(),
        &gw,
        "SKP-ISA-SV-01",
        "serious-violence-sna",
        &["--datasets", "lfb_incident"],
        &releases.join("allowed"),
    )?;
    ensure!(o.status.success(), "extract failed: {}", text(&o));
    let o = run_extract(
        &pki.analyst_config(),
        &gw,
        "SKP-ISA-SV-01",
        "serious-violence-sna",
        &[
            "--datasets",
            "police_crime",
            "--fields",
            "police_crime.victim_surname",
        ],
        &releases.join("refused"),
    )?;
    ensure!(
        !o.status.success(),
        "a refused extract succeeded: {}",
        text(&o)
    );
    let (code, last) = scrape(Some(&auditor))?;
    assert_eq!(code, 200);
    let last = prometheus_parse::Scrape::parse(last.lines().map(|l| Ok(l.to_owned())))?;
    let went_up = |name: &str, labels: &[(&str, &str)]| {
        sample(&last, name, labels) - sample(&after, name, labels)
    };
    assert_eq!(
        went_up("skp_releases_total", &[("kind", "extract")]),
        1.0,
        "one extract released"
    );
    assert_eq!(
        went_up(
            "skp_release_denials_total",
            &[("rule", "no-field-released")]
        ),
        1.0,
        "one request refused: the purpose releases none of the fields asked"
    );
    assert_eq!(
        went_up("skp_release_denials_total", &[]),
        1.0,
        "no other refusal counted"
    );
    drop(gw);
    Ok(())
}
