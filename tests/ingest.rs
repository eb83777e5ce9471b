//! End-to-end ingest: real `gateway serve` and `agent` processes over loopback mutual TLS.

use anyhow::{Context, Result, bail};
use e2e::{GatewayProc, Pki, agent_client, push, run_agent, text};
use gateway::store::Store;
use sharing_proto::v1::{IngestBatch, Record, Value, value::Kind};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const AGENCIES: [&str; 5] = ["met-police", "rbk-council", "lfb", "probation", "swl-icb"];

/// Writes synthetic exports for an agency and returns (dataset, file) pairs.
fn synth(agency: &str, persons: usize, out: &Path) -> Result<Vec<(String, PathBuf)>> {
    let o = run_agent(&[
        "synth",
        "--shape",
        "catalog",
        "--agency",
        agency,
        "--persons",
        &persons.to_string(),
        "--seed",
        "7",
        "--out",
        &out.display().to_string(),
    ])?;
    if !o.status.success() {
        bail!("agent synth failed: {}", text(&o));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(d, f)| (d.to_string(), PathBuf::from(f)))
        })
        .collect())
}

/// Opens the gateway's store after the gateway stopped, retrying while sled's lock is released.
fn open_store(pki: &Pki) -> Result<Store> {
    let dir = pki.path().join("data");
    let mut last = None;
    for _ in 0..100 {
        match Store::open(&dir) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("cannot open the store: {last:?}")
}

fn all_bytes_under(dir: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(all_bytes_under(&p)?);
        } else {
            out.extend(std::fs::read(&p)?);
        }
    }
    Ok(out)
}

/// The first of `needles` found in `hay` (one pass per distinct needle length), with its
/// surroundings, so a failure says what leaked and where (synthetic values only).
fn find_any(hay: &[u8], needles: &HashSet<String>) -> Option<String> {
    let set: HashSet<&[u8]> = needles.iter().map(|n| n.as_bytes()).collect();
    let lens: HashSet<usize> = set.iter().map(|n| n.len()).collect();
    lens.into_iter().find_map(|l| {
        hay.windows(l).position(|w| set.contains(w)).map(|at| {
            let from = at.saturating_sub(60);
            let to = (at + l + 60).min(hay.len());
            format!(
                "{:?} in …{}…",
                String::from_utf8_lossy(&hay[at..at + l]),
                String::from_utf8_lossy(&hay[from..to])
            )
        })
    })
}

#[test]
fn every_agency_pushes_and_no_raw_identifier_is_stored() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let exports = pki.path().join("exports");
    let catalog = skp_core::Catalog::embedded()?;
    let mut raw_values: HashSet<String> = HashSet::new();
    let mut stored_values: HashSet<String> = HashSet::new();
    let mut expected = 0u64;
    for agency in AGENCIES {
        for (dataset, file) in synth(agency, 150, &exports.join(agency))? {
            let o = push(&pki, &gw, agency, &dataset, &file)?;
            assert_eq!(o.status.code(), Some(0), "{agency} {dataset}: {}", text(&o));
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("accepted 150"),
                "{}",
                text(&o)
            );
            expected += 150;
            // Collect every direct identifier value of the export, raw and normalised.
            let ds = catalog.dataset(&dataset).context("dataset")?;
            let mut rdr = csv_rows(&file)?;
            let header = rdr.remove(0);
            for row in rdr {
                for (col, val) in header.iter().zip(&row) {
                    let direct = ds
                        .field(col)
                        .is_some_and(|f| f.class == skp_core::FieldClass::Direct);
                    if direct && val.len() >= 6 {
                        raw_values.insert(val.clone());
                        raw_values.insert(val.to_uppercase());
                        raw_values.insert(val.replace([' ', '-'], ""));
                    } else if !direct {
                        stored_values.insert(val.clone());
                    }
                }
            }
        }
    }
    // A value that is also a value of a field the gateway does store (a child's date of birth
    // equal to a probation order's start date) is no leak when found.
    raw_values.retain(|v| !stored_values.contains(v));
    assert!(
        raw_values.len() > 500,
        "the exports hold identifiers to look for ({})",
        raw_values.len()
    );
    gw.stop()?;
    let store = open_store(&pki)?;
    assert_eq!(store.count_records()?, expected);
    drop(store);
    let bytes = all_bytes_under(&pki.path().join("data"))?;
    let log = gw.log();
    assert_eq!(
        find_any(&bytes, &raw_values),
        None,
        "a raw identifier was found in the store files"
    );
    assert_eq!(
        find_any(log.as_bytes(), &raw_values),
        None,
        "a raw identifier was found in the gateway log"
    );
    Ok(())
}

fn csv_rows(path: &Path) -> Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path)?;
    // Synthetic exports have no quoted commas in identifier columns; split plainly but honour
    // quotes written by the csv crate.
    Ok(text.lines().map(split_csv_line).collect())
}

fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn three_bad_rows_among_a_thousand() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let files = synth("lfb", 1000, &pki.path().join("exports"))?;
    let (_, file) = files
        .iter()
        .find(|(d, _)| d == "lfb_incident")
        .context("lfb_incident")?;
    let mut lines: Vec<String> = std::fs::read_to_string(file)?
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 1001);
    let header = split_csv_line(&lines[0]);
    let col = |name: &str| header.iter().position(|h| h == name).context("column");
    let (date, group) = (col("date_of_call")?, col("incident_group")?);
    // Line 11: an impossible date; line 501: an unknown enum value; line 901: a missing cell.
    let mut set = |line: usize, i: usize, v: &str| {
        let mut cells = split_csv_line(&lines[line - 1]);
        cells[i] = v.to_string();
        lines[line - 1] = cells.join(",");
    };
    set(11, date, "2024-02-31");
    set(501, group, "Alien landing");
    let mut cells = split_csv_line(&lines[900]);
    cells.pop();
    lines[900] = cells.join(",");
    std::fs::write(file, lines.join("\n") + "\n")?;

    let o = push(&pki, &gw, "lfb", "lfb_incident", file)?;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for (line, field) in [(11, "date_of_call"), (501, "incident_group"), (901, "")] {
        let needle = format!("lfb_incident.csv:{line}:");
        assert!(err.contains(&needle), "line {line} reported: {err}");
        if !field.is_empty() {
            assert!(
                err.lines()
                    .any(|l| l.contains(&needle) && l.contains(field)),
                "field {field} named: {err}"
            );
        }
    }
    assert!(
        !err.contains("Alien landing"),
        "rejections must not echo values: {err}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("accepted 997"),
        "{}",
        text(&o)
    );
    gw.stop()?;
    assert_eq!(open_store(&pki)?.count_records()?, 997);
    Ok(())
}

#[test]
fn killed_gateway_loses_nothing_and_stores_each_row_once() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let addr = gw.addr;
    let files = synth("met-police", 30_000, &pki.path().join("exports"))?;
    let (_, file) = files
        .iter()
        .find(|(d, _)| d == "police_asb_incident")
        .context("dataset")?;
    let agent = e2e::bin("agent")?;
    let child = std::process::Command::new(agent)
        .args([
            "push",
            "--config",
            &pki.agent_config("met-police").display().to_string(),
            "--gateway",
            &gw.url(),
            "--dataset",
            "police_asb_incident",
            &file.display().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Kill the gateway once the agent has spooled its batches and started sending.
    let spool = pki.path().join("agent-state/met-police/spool");
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) == 0
        && t0.elapsed().as_secs() < 120
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    gw.kill9();
    let first = child.wait_with_output()?;
    // Either the push failed over to the spool (exit 3) or it had already finished (exit 0).
    assert!(
        matches!(first.status.code(), Some(0) | Some(3)),
        "{}",
        text(&first)
    );

    let mut gw = GatewayProc::start_at(&pki.gateway_config(), addr)?;
    let second = push(&pki, &gw, "met-police", "police_asb_incident", file)?;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("rejected by gateway 0"), "{out}");
    gw.stop()?;
    let store = open_store(&pki)?;
    assert_eq!(
        store.count_records()?,
        30_000,
        "every row stored exactly once"
    );
    assert_eq!(
        store.counts()?,
        vec![("police_asb_incident".to_string(), 30_000)]
    );
    assert!(std::fs::read_dir(&spool)?.next().is_none(), "spool drained");
    Ok(())
}

/// A batch of one record for `dataset` whose values are all empty except `values`.
fn crafted(dataset: &str, fields: &[&str], values: Vec<Value>) -> IngestBatch {
    let rec = Record {
        record_key: vec![7; 32],
        content_hash: vec![0; 32],
        persons: vec![],
        values,
        source_line: 1,
    };
    IngestBatch {
        dataset: dataset.into(),
        schema_version: 1,
        fields: fields.iter().map(|s| s.to_string()).collect(),
        records: vec![rec],
        batch_id: "crafted#1".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_clear_and_store_nothing() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let ca = pki.ca_pem()?;
    let (lfb_c, lfb_k) = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    let (icb_c, icb_k) = (
        pki.agent_cert_pem("swl-icb")?,
        pki.agent_key_pem("swl-icb")?,
    );

    // No client certificate.
    let mut anon = agent_client(&ca, None, gw.addr).await?;
    let e = anon
        .ingest(tokio_stream_iter(vec![crafted(
            "lfb_incident",
            &[],
            vec![],
        )]))
        .await
        .expect_err("no cert");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");

    // lfb pushing a police dataset.
    let mut lfb = agent_client(&ca, Some((&lfb_c, &lfb_k)), gw.addr).await?;
    let e = lfb
        .ingest(tokio_stream_iter(vec![crafted(
            "police_crime",
            &[],
            vec![],
        )]))
        .await
        .expect_err("not owner");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(
        e.message().contains("may not submit dataset police_crime"),
        "{e}"
    );

    // Unknown dataset.
    let e = lfb
        .ingest(tokio_stream_iter(vec![crafted(
            "lfb_incidents",
            &[],
            vec![],
        )]))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    assert!(e.message().contains("did you mean \"lfb_incident\""), "{e}");

    // Unknown field, and a direct identifier sent as a field.
    let e = lfb
        .ingest(tokio_stream_iter(vec![crafted(
            "lfb_incident",
            &["colour"],
            vec![Value::default()],
        )]))
        .await
        .expect_err("field");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("no field \"colour\""), "{e}");
    let e = lfb
        .ingest(tokio_stream_iter(vec![crafted(
            "lfb_incident",
            &["postcode_full"],
            vec![Value::default()],
        )]))
        .await
        .expect_err("direct identifier");
    assert!(e.message().contains("direct identifier"), "{e}");

    // Wrong type: a bool where the catalog has a date.
    let s = lfb
        .ingest(tokio_stream_iter(vec![crafted(
            "lfb_incident",
            &["date_of_call"],
            vec![Value {
                kind: Some(Kind::Flag(true)),
            }],
        )]))
        .await?
        .into_inner();
    assert_eq!((s.accepted, s.rejected), (0, 1));
    assert_eq!(s.rejections[0].field, "date_of_call");
    assert!(
        s.rejections[0].reason.contains("expected a date value"),
        "{:?}",
        s.rejections
    );

    // A raw NHS number in a free-text field.
    let mut icb = agent_client(&ca, Some((&icb_c, &icb_k)), gw.addr).await?;
    let s = icb
        .ingest(tokio_stream_iter(vec![crafted(
            "ed_istv",
            &["assault_location_desc"],
            vec![Value {
                kind: Some(Kind::Text("patient 943 476 5919 outside club".into())),
            }],
        )]))
        .await?
        .into_inner();
    assert_eq!((s.accepted, s.rejected), (0, 1));
    assert!(
        s.rejections[0].reason.contains("NHS number"),
        "{:?}",
        s.rejections
    );
    assert!(
        !s.rejections[0].reason.contains("943"),
        "reason echoes no value"
    );

    // An oversize message (default limit 4 MiB).
    let big = Value {
        kind: Some(Kind::Text("x".repeat(5 * 1024 * 1024))),
    };
    let e = lfb
        .ingest(tokio_stream_iter(vec![crafted(
            "lfb_incident",
            &["property_type"],
            vec![big],
        )]))
        .await
        .expect_err("oversize");
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
        ),
        "{e}"
    );
    assert!(
        e.message().to_lowercase().contains("message") || e.message().contains("too large"),
        "{e}"
    );

    gw.stop()?;
    let store = open_store(&pki)?;
    assert_eq!(store.count_records()?, 0, "nothing stored");
    Ok(())
}

fn tokio_stream_iter(v: Vec<IngestBatch>) -> impl futures::Stream<Item = IngestBatch> {
    futures::stream::iter(v)
}

#[test]
fn expired_certificate_is_refused_and_agent_check_says_so() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = e2e::issue_cert(
        &pki.path(),
        "lfb",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )?;
    let dir = pki.path().join("agents");
    write_private(&dir.join("lfb-expired.pem"), &cert)?;
    write_private(&dir.join("lfb-expired.key"), &key)?;
    let cfg = std::fs::read_to_string(pki.agent_config("lfb"))?
        .replace("cert = \"lfb.pem\"", "cert = \"lfb-expired.pem\"")
        .replace("key = \"lfb.key\"", "key = \"lfb-expired.key\"")
        .replace("retries = 3", "retries = 0");
    let cfg_path = dir.join("lfb-expired.toml");
    std::fs::write(&cfg_path, cfg)?;
    let o = run_agent(&[
        "check",
        "--config",
        &cfg_path.display().to_string(),
        "--gateway",
        &gw.url(),
    ])?;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("certificate expired"),
        "{}",
        text(&o)
    );
    let files = synth("lfb", 20, &pki.path().join("exports"))?;
    let o = run_agent(&[
        "push",
        "--config",
        &cfg_path.display().to_string(),
        "--gateway",
        &gw.url(),
        "--dataset",
        "lfb_incident",
        &files[0].1.display().to_string(),
    ])?;
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    drop(gw);
    Ok(())
}

fn write_private(p: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, text)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[test]
fn demo_runs_and_prints_per_agency_counts() -> Result<()> {
    let out = tempfile::tempdir()?;
    let o = std::process::Command::new(e2e::bin("gateway")?)
        .args([
            "demo",
            "--persons",
            "40",
            "--out",
            &out.path().display().to_string(),
        ])
        .output()?;
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for agency in AGENCIES {
        assert!(stdout.contains(agency), "{agency} in demo output: {stdout}");
    }
    assert!(
        stdout.contains("police_crime") && stdout.contains("demo finished"),
        "{stdout}"
    );
    Ok(())
}

/// Secrets hygiene: a whole demo run (dev PKI made on the fly, every agency pushing, linked
/// releases, audit export), with our own debug logs on, prints no key, no JWT and no raw
/// identifier of the synthetic exports.
#[test]
fn a_demo_run_logs_no_secret_and_no_identifier() -> Result<()> {
    let out = tempfile::tempdir()?;
    let o = std::process::Command::new(e2e::bin("gateway")?)
        .args([
            "demo",
            "--persons",
            "200",
            "--out",
            &out.path().display().to_string(),
        ])
        .env(
            "GATEWAY_LOG",
            "info,gateway=debug,agent=debug,skp_core=debug",
        )
        .output()?;
    assert!(o.status.success(), "{}", text(&o));
    let logs = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // Every secret the dev PKI holds: private keys (their base64 body lines), raw keys (hex)
    // and JWTs (whole, and their signatures).
    let mut secrets: Vec<String> = Vec::new();
    let mut stack = vec![out.path().join("pki")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(name) = name else { continue };
            let body = std::fs::read_to_string(&p).unwrap_or_default();
            if name.ends_with(".key") {
                if body.contains("PRIVATE KEY") {
                    secrets.extend(
                        body.lines()
                            .filter(|l| !l.starts_with("-----") && l.len() >= 24)
                            .map(str::to_owned),
                    );
                } else {
                    secrets.push(body.trim().to_owned());
                }
            } else if name.ends_with(".jwt") {
                let jwt = body.trim().to_owned();
                if let Some(sig) = jwt.rsplit('.').next() {
                    secrets.push(sig.to_owned());
                }
                secrets.push(jwt);
            }
        }
    }
    assert!(
        secrets.len() >= 10,
        "found {} secrets to look for",
        secrets.len()
    );
    // Raw identifiers of the synthetic exports.
    let mut identifiers = std::collections::BTreeSet::new();
    let mut stack = vec![out.path().join("exports")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "csv") {
                let mut r = csv::Reader::from_path(&p)?;
                let h = r.headers()?.clone();
                let cols: Vec<usize> = h
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| {
                        let n = n.to_ascii_lowercase();
                        [
                            "surname", "forename", "name", "dob", "birth", "nhs", "pnc", "address",
                            "postcode",
                        ]
                        .iter()
                        .any(|k| n.contains(k))
                    })
                    .map(|(i, _)| i)
                    .collect();
                for row in r.records() {
                    let row = row?;
                    for &i in &cols {
                        if let Some(v) = row.get(i)
                            && v.trim().len() >= 6
                        {
                            identifiers.insert(v.trim().to_owned());
                        }
                    }
                }
            }
        }
    }
    assert!(
        identifiers.len() > 200,
        "found {} identifiers to look for",
        identifiers.len()
    );
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret of the dev PKI is in the demo's output"
        );
    }
    let leaked: Vec<&String> = identifiers
        .iter()
        .filter(|v| logs.contains(v.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} raw identifiers are in the demo's output",
        leaked.len()
    );
    Ok(())
}

/// `--log-format json`: every log line of a demo run is one JSON object with a level and a
/// message, for log collectors.
#[test]
fn json_logs_are_one_object_a_line() -> Result<()> {
    let out = tempfile::tempdir()?;
    let o = std::process::Command::new(e2e::bin("gateway")?)
        .args([
            "--log-format",
            "json",
            "demo",
            "--persons",
            "40",
            "--out",
            &out.path().display().to_string(),
        ])
        .env("GATEWAY_LOG", "info")
        .output()?;
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let mut lines = 0;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line}"))?;
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 5, "only {lines} log lines");
    Ok(())
}

/// Every key file must be readable by its owner only: the gateway refuses to start, and the
/// agent refuses to push, naming the file and the `chmod` that fixes it.
#[test]
fn key_files_readable_by_others_refuse_to_start() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new()?;
    let chmod =
        |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    for key in ["gateway.key", "audit.key", "release.key"] {
        let path = pki.path().join(key);
        chmod(&path, 0o644)?;
        let e = match GatewayProc::start(&pki.gateway_config()) {
            Ok(mut gw) => {
                gw.stop()?;
                bail!("the gateway started with {key} readable by others");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(
            e.contains(&path.display().to_string()) && e.contains("chmod 600"),
            "{key}: {e}"
        );
        chmod(&path, 0o600)?;
    }
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let (dataset, file) = synth("lfb", 20, &pki.path().join("exports"))?
        .into_iter()
        .next()
        .context("no export")?;
    for key in ["agents/lfb.key", "linkage.key"] {
        let path = pki.path().join(key);
        chmod(&path, 0o640)?;
        let o = push(&pki, &gw, "lfb", &dataset, &file)?;
        assert_ne!(o.status.code(), Some(0), "{key}: {}", text(&o));
        let name = key.rsplit('/').next().unwrap_or(key);
        assert!(
            text(&o).contains(name) && text(&o).contains("chmod 600"),
            "{key}: {}",
            text(&o)
        );
        chmod(&path, 0o600)?;
    }
    let o = push(&pki, &gw, "lfb", &dataset, &file)?;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    gw.stop()?;
    Ok(())
}
