//! End-to-end linked releases: a real `gateway serve`, real agents pushing synthetic police data
//! over mutual TLS, and the analyst's and IG officer's commands as they would run them:
//! `gateway extract`, `gateway aggregate`, `gateway audit verify-release` (tampering caught),
//! person ids per purpose, refusals, and `agent person-token` + `gateway audit person`.

use anyhow::{Context, Result, bail, ensure};
use e2e::{GatewayProc, Pki, audit_entries, export_audit, push, run_agent, run_gateway, text};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use e2e::{
    AUDIT_ORIGIN, audit_verifier_key, person_tokens, push_ok, run_aggregate, run_audit_person,
    run_extract, synth_catalog, verify_release_cli, workspace_root,
};
use gateway::audit::entry::Entry;
use gateway::release::manifest::{self as release_manifest, Manifest};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::process::Output;

const SV: &str = "SKP-ISA-SV-01";
const SV_PURPOSE: &str = "serious-violence-sna";
/// Coarse enough that k-anonymity keeps most rows of a small data set.
const SV_FIELDS: &str = "police_crime.ho_offence_group,police_crime.committed_from:year,police_crime.victim_sex,police_crime.suspect_sex";

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
        "11",
        "--out",
        &out.display().to_string(),
    ])?;
    ensure!(o.status.success(), "agent synth failed: {}", text(&o));
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(d, f)| (d.to_string(), PathBuf::from(f)))
        })
        .collect())
}

fn extract(
    pki: &Pki,
    gw: &GatewayProc,
    agreement: &str,
    purpose: &str,
    extra: &[&str],
    out: &Path,
) -> Result<std::process::Output> {
    let config = pki.analyst_config();
    let url = gw.url();
    let out = out.display().to_string();
    let mut args = vec![
        "extract",
        "--config",
        &config,
        "--gateway",
        &url,
        "--agreement",
        agreement,
        "--purpose",
        purpose,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    run_gateway(&args)
}

fn verify_release(pki: &Pki, dir: &Path) -> Result<std::process::Output> {
    run_gateway(&[
        "audit",
        "verify-release",
        &dir.display().to_string(),
        "--pubkey",
        &pki.path().join("audit.pub").display().to_string(),
    ])
}

/// The release id in a folder's manifest.
fn release_id(dir: &Path) -> Result<String> {
    let m = gateway::release::manifest::Manifest::parse(&std::fs::read(dir.join("manifest.json"))?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(m.release.release_id)
}

/// Non-empty values of the `*_person_id` columns of a CSV.
fn person_ids(file: &Path) -> Result<BTreeSet<String>> {
    let mut r = csv::Reader::from_path(file)?;
    let headers = r.headers()?.clone();
    let cols: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| h.ends_with("_person_id"))
        .map(|(i, _)| i)
        .collect();
    let mut ids = BTreeSet::new();
    for row in r.records() {
        let row = row?;
        for &c in &cols {
            if let Some(v) = row.get(c).filter(|v| !v.is_empty()) {
                ids.insert(v.to_owned());
            }
        }
    }
    Ok(ids)
}

#[test]
fn linked_releases_end_to_end() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let data = pki.path().join("exports");
    let files = synth("met-police", 1500, &data)?;
    let (_, crime) = files
        .iter()
        .find(|(d, _)| d == "police_crime")
        .context("no police_crime export")?;
    let o = push(&pki, &gw, "met-police", "police_crime", crime)?;
    ensure!(o.status.success(), "push failed: {}", text(&o));

    // Two extracts of one purpose, one of another purpose over the same people.
    let base = pki.path().join("releases");
    let (sv1, sv2, reoff) = (base.join("sv1"), base.join("sv2"), base.join("reoff"));
    for d in [&sv1, &sv2] {
        let o = extract(
            &pki,
            &gw,
            SV,
            SV_PURPOSE,
            &["--datasets", "police_crime", "--fields", SV_FIELDS],
            d,
        )?;
        ensure!(o.status.success(), "extract failed: {}", text(&o));
    }
    let o = extract(
        &pki,
        &gw,
        "SKP-ISA-REOFF-01",
        "reoffending-iom-cohort",
        &[
            "--datasets",
            "police_crime",
            "--fields",
            "police_crime.committed_from:year",
        ],
        &reoff,
    )?;
    ensure!(o.status.success(), "extract failed: {}", text(&o));

    // Only released columns; person ids repeat within a purpose and never across purposes.
    let header = std::fs::read_to_string(sv1.join("police_crime.csv"))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        header,
        "victim_person_id,suspect_person_id,ho_offence_group,committed_from,victim_sex,suspect_sex"
    );
    let a = person_ids(&sv1.join("police_crime.csv"))?;
    let b = person_ids(&sv2.join("police_crime.csv"))?;
    let c = person_ids(&reoff.join("police_crime.csv"))?;
    ensure!(
        !a.is_empty() && !c.is_empty(),
        "no person ids released: {} / {}",
        a.len(),
        c.len()
    );
    assert_eq!(a, b, "two extracts of one purpose show the same ids");
    assert!(a.is_disjoint(&c), "ids of two purposes must not join");

    // The folder verifies; one flipped byte of a CSV or of the manifest does not.
    let o = verify_release(&pki, &sv1)?;
    ensure!(o.status.success(), "verify-release failed: {}", text(&o));
    for name in ["police_crime.csv", "manifest.json"] {
        let path = sv1.join(name);
        let orig = std::fs::read(&path)?;
        for pos in [0, orig.len() / 2, orig.len() - 2] {
            let mut bad = orig.clone();
            bad[pos] ^= 0x01;
            std::fs::write(&path, &bad)?;
            let o = verify_release(&pki, &sv1)?;
            assert!(
                !o.status.success(),
                "{name} byte {pos} flipped but verify-release passed"
            );
            assert!(text(&o).contains("VERIFICATION FAILED"), "{}", text(&o));
        }
        std::fs::write(&path, &orig)?;
    }
    let o = verify_release(&pki, &sv1)?;
    ensure!(o.status.success(), "restored folder fails: {}", text(&o));

    // A counts table with suppression, verified too.
    let table = base.join("table");
    let o = run_gateway(&[
        "aggregate",
        "--config",
        &pki.analyst_config(),
        "--gateway",
        &gw.url(),
        "--agreement",
        SV,
        "--purpose",
        SV_PURPOSE,
        "--dataset",
        "police_crime",
        "--by",
        "wd22cd,ho_offence_group",
        "--out",
        &table.display().to_string(),
    ])?;
    ensure!(o.status.success(), "aggregate failed: {}", text(&o));
    let o = verify_release(&pki, &table)?;
    ensure!(
        o.status.success(),
        "verify-release of the table failed: {}",
        text(&o)
    );

    // Refusals name their rule and release nothing.
    let refused = base.join("refused");
    let o = extract(
        &pki,
        &gw,
        SV,
        "serious-violence-sna-probation",
        &[],
        &refused,
    )?;
    assert!(!o.status.success());
    assert!(text(&o).contains("aggregate-only"), "{}", text(&o));
    let o = extract(&pki, &gw, "SKP-ISA-NOPE", SV_PURPOSE, &[], &refused)?;
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown-agreement"), "{}", text(&o));
    assert!(!refused.join("manifest.json").exists());

    // Who saw this person's data: tokens of the victim of a released row, as the agent
    // computes them from the raw export.
    let mut r = csv::Reader::from_path(crime)?;
    let h = r.headers()?.clone();
    let col = |n: &str| h.iter().position(|x| x == n);
    let (s, f, dob, sex) = (
        col("victim_surname").context("victim_surname")?,
        col("victim_forename").context("victim_forename")?,
        col("victim_dob").context("victim_dob")?,
        col("victim_sex").context("victim_sex")?,
    );
    let (id1, id2, id3) = (release_id(&sv1)?, release_id(&sv2)?, release_id(&reoff)?);
    let mut found_in_sv = 0;
    for row in r.records().take(60) {
        let row = row?;
        let v = |i: usize| row.get(i).unwrap_or("").to_owned();
        if [s, f, dob, sex].iter().any(|i| v(*i).is_empty()) {
            continue;
        }
        let o = run_agent(&[
            "person-token",
            "--config",
            &pki.agent_config("met-police").display().to_string(),
            "--surname",
            &v(s),
            "--forename",
            &v(f),
            "--dob",
            &v(dob),
            "--sex",
            &v(sex),
        ])?;
        if !o.status.success() {
            continue;
        }
        let tokens: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let o = run_gateway(&[
            "audit",
            "person",
            "--config",
            &pki.auditor_config(),
            "--gateway",
            &gw.url(),
            "--token",
            &tokens.join(","),
        ])?;
        ensure!(o.status.success(), "audit person failed: {}", text(&o));
        let out = text(&o);
        assert!(!out.contains(&v(s)), "the lookup shows a name");
        for t in &tokens {
            let hexpart = t.split_once(':').map(|x| x.1).unwrap_or("");
            assert!(!out.contains(hexpart), "the lookup shows a token");
        }
        let in1 = out.contains(&id1);
        assert_eq!(
            in1,
            out.contains(&id2),
            "same purpose, same data: both or neither\n{out}"
        );
        assert!(!out.contains(&id3) || out.contains("reoffending"), "{out}");
        if in1 {
            found_in_sv += 1;
        }
    }
    ensure!(
        found_in_sv > 0,
        "no victim of the first rows was found in the SV extracts"
    );
    let o = run_gateway(&[
        "audit",
        "person",
        "--config",
        &pki.auditor_config(),
        "--gateway",
        &gw.url(),
        "--token",
        &format!("demo:{}", "ab".repeat(32)),
    ])?;
    ensure!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("0 stored record(s)") && text(&o).contains("0 release(s)"),
        "{}",
        text(&o)
    );

    // The audit log holds one release entry per release, bound to its manifest.
    let export = pki.path().join("audit.txt");
    export_audit(&pki, &gw, &export)?;
    let entries = audit_entries(&export)?;
    for dir in [&sv1, &sv2, &reoff, &table] {
        let m =
            gateway::release::manifest::Manifest::parse(&std::fs::read(dir.join("manifest.json"))?)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let matching: Vec<_> = entries
            .iter()
            .filter(|e| e.release.as_deref() == Some(m.release.release_id.as_str()))
            .collect();
        assert_eq!(matching.len(), 1);
        assert_eq!(
            matching[0].released_sha256.as_deref(),
            Some(m.release.sha256_hex().as_str())
        );
    }
    let denials = entries
        .iter()
        .filter(|e| e.action.as_str() == "deny")
        .count();
    assert!(denials >= 2, "refusals are audited ({denials})");

    // The public register, generated from the verified export: one row per release, no
    // personal data (no raw identifier of the source export, no person id, no analyst name).
    let register = base.join("register");
    let o = run_gateway(&[
        "register",
        "--export",
        &export.display().to_string(),
        "--pubkey",
        &pki.path().join("audit.pub").display().to_string(),
        "--out",
        &register.display().to_string(),
    ])?;
    ensure!(o.status.success(), "register failed: {}", text(&o));
    let csv_text = std::fs::read_to_string(register.join("releases.csv"))?;
    let html_text = std::fs::read_to_string(register.join("index.html"))?;
    let releases = entries
        .iter()
        .filter(|e| e.action.as_str() == "release")
        .count();
    assert_eq!(csv_text.lines().count(), releases + 1, "{csv_text}");
    for dir in [&sv1, &sv2, &reoff, &table] {
        let id = release_id(dir)?;
        assert!(
            csv_text.contains(&id) && html_text.contains(&id),
            "{id} listed"
        );
    }
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    for row in read_raw(crime)? {
        for (k, v) in row {
            let direct = k.contains("surname")
                || k.contains("forename")
                || k.contains("dob")
                || k.contains("pnc")
                || k.contains("nhs")
                || k.contains("address")
                || k.contains("postcode");
            if direct && v.len() >= 6 {
                secrets.insert(v);
            }
        }
    }
    for dir in [&sv1, &sv2, &reoff] {
        for f in std::fs::read_dir(dir)? {
            let f = f?.path();
            if f.extension().is_some_and(|e| e == "csv") {
                secrets.extend(person_ids(&f)?);
            }
        }
    }
    ensure!(
        secrets.len() > 50,
        "too few values to search for ({})",
        secrets.len()
    );
    for s in &secrets {
        assert!(
            !csv_text.contains(s.as_str()) && !html_text.contains(s.as_str()),
            "the register shows a personal value"
        );
    }
    // A tampered export writes no register.
    let mut bad = std::fs::read(&export)?;
    let at = bad.len() / 2;
    bad[at] ^= 1;
    let tampered = base.join("tampered.txt");
    std::fs::write(&tampered, &bad)?;
    let o = run_gateway(&[
        "register",
        "--export",
        &tampered.display().to_string(),
        "--pubkey",
        &pki.path().join("audit.pub").display().to_string(),
        "--out",
        &base.join("register2").display().to_string(),
    ])?;
    assert!(!o.status.success(), "a tampered export made a register");
    assert!(!base.join("register2").join("releases.csv").exists());

    if !gw.stop()?.success() {
        bail!("gateway did not stop cleanly");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One test per promise: each drives its own gateway with its own synthetic data.

/// Synthetic population size: enough that rows survive k-anonymity under coarse fields and
/// that tables have cells at or over `min_cell`, small enough to push in a second or two.
const PERSONS: usize = 2000;
/// Synthetic seed (one population for every agency of a test).
const SEED: u64 = 11;
const REOFF: &str = "SKP-ISA-REOFF-01";
const REOFF_PURPOSE: &str = "reoffending-iom-cohort";
/// The SV extract of test 1: police_crime narrowed to fields whose quasi-identifiers
/// (committed_from by quarter, victim_sex) leave classes of at least k = 5; lfb_incident keeps
/// every field the agreement releases.
const TEST1_CRIME_FIELDS: [&str; 6] = [
    "ho_offence_code",
    "ho_offence_group",
    "committed_from:quarter",
    "victim_sex",
    "wd22cd",
    "knife_flag",
];

/// Fails with the command's output unless it succeeded.
fn succeeded(o: Output, what: &str) -> Result<Output> {
    ensure!(o.status.success(), "{what} failed: {}", text(&o));
    Ok(o)
}

/// The manifest of a release folder, parsed as `verify-release` parses it.
fn manifest_in(dir: &Path) -> Result<Manifest> {
    let path = dir.join(release_manifest::MANIFEST_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Manifest::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A CSV file: its header and records.
fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
    let header = r.headers()?.iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|row| row.map(|row| row.iter().map(str::to_owned).collect()))
        .collect::<Result<_, _>>()?;
    Ok((header, rows))
}

/// A raw (pre-push) catalog-shape CSV as maps from column to value.
fn read_raw(path: &Path) -> Result<Vec<HashMap<String, String>>> {
    let (header, rows) = read_csv(path)?;
    Ok(rows
        .into_iter()
        .map(|row| header.iter().cloned().zip(row).collect())
        .collect())
}

/// The names of the entries of a folder (empty if it does not exist).
fn folder_names(dir: &Path) -> Result<BTreeSet<String>> {
    if !dir.exists() {
        return Ok(BTreeSet::new());
    }
    std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// `gateway explain` of a whole dataset as the analyst: (released fields, denied fields), in
/// the order it lists them.
fn explained_fields(
    pki: &Pki,
    gw: &GatewayProc,
    agreement: &str,
    purpose: &str,
    dataset: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let o = succeeded(
        run_gateway(&[
            "explain",
            "--config",
            &pki.analyst_config(),
            "--gateway",
            &gw.url(),
            "--agreement",
            agreement,
            "--purpose",
            purpose,
            "--dataset",
            dataset,
        ])?,
        "gateway explain",
    )?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    ensure!(out.starts_with("ALLOWED"), "{out}");
    let (mut released, mut denied) = (Vec::new(), Vec::new());
    for line in out.lines().skip(1) {
        let line = line.trim();
        if line.starts_with("row filter:") || line.is_empty() {
            continue;
        }
        let (name, outcome) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("unexpected explain line {line:?}"))?;
        if outcome.trim_start().starts_with("denied by ") {
            denied.push(name.to_owned());
        } else {
            released.push(name.to_owned());
        }
    }
    Ok((released, denied))
}

/// The IG officer's export of the whole audit log, decoded.
fn exported_entries(pki: &Pki, gw: &GatewayProc, name: &str) -> Result<Vec<Entry>> {
    let file = pki.path().join(name);
    export_audit(pki, gw, &file)?;
    audit_entries(&file)
}

/// `(audit entry N)` in a refusal message.
fn refusal_entry(o: &Output) -> Option<u64> {
    let err = String::from_utf8_lossy(&o.stderr);
    let rest = err.rsplit_once("(audit entry ")?.1;
    rest.split(')').next()?.parse().ok()
}

/// The `release` value of `manifest.json` re-encoded as compact JSON, computed here from the
/// pretty-printed text without the gateway's types: whitespace outside strings removed, then
/// the value of the first key (`release`) cut out by bracket matching.
fn compact_release_body(manifest_text: &str) -> Result<String> {
    let mut compact = String::with_capacity(manifest_text.len());
    let (mut in_string, mut escaped) = (false, false);
    for ch in manifest_text.chars() {
        if in_string {
            compact.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            compact.push(ch);
        } else if !ch.is_whitespace() {
            compact.push(ch);
        }
    }
    let body = compact
        .strip_prefix("{\"release\":")
        .context("manifest.json does not start with the release body")?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, ch) in body.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
            continue;
        }
        match ch {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(body[..=i].to_owned());
                }
            }
            _ => {}
        }
    }
    bail!("the release body of manifest.json never closes")
}

/// Checks the audit log holds exactly one `release` entry for the release in `dir`, that it is
/// byte for byte the entry the manifest carries, and that its `released_sha256` is the SHA-256
/// of the manifest body.
fn check_release_entry(entries: &[Entry], dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(dir.join(release_manifest::MANIFEST_FILE))?;
    let m = Manifest::parse(text.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = &m.release.release_id;
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.release.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "release {id}: expected exactly one audit entry naming it"
    );
    let e = mine[0];
    assert_eq!(e.action.as_str(), "release", "release {id}");
    assert_eq!(e.decision.as_str(), "allow", "release {id}");
    let body = compact_release_body(&text)?;
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    assert_eq!(
        e.released_sha256.as_deref(),
        Some(sha.as_str()),
        "release {id}: released_sha256 must be the SHA-256 of the manifest body"
    );
    assert_eq!(sha, m.release.sha256_hex(), "release {id}");
    assert_eq!(e.seq, m.audit.entry_index, "release {id}: entry index");
    assert_eq!(
        String::from_utf8(e.encode())?,
        m.audit.entry,
        "release {id}: the manifest carries the logged entry byte for byte"
    );
    let rows: u64 = m.release.files.iter().map(|f| f.rows).sum();
    assert_eq!(e.rows, Some(rows), "release {id}: rows");
    let datasets: Vec<String> = m.release.files.iter().map(|f| f.dataset.clone()).collect();
    assert_eq!(e.datasets, datasets, "release {id}: datasets");
    assert_eq!(e.actor.id, "rbk-analyst", "release {id}: actor");
    Ok(())
}

/// For each position, flips `mask` into that byte of `file`, expects `verify` to fail, and
/// restores the file. Returns how many flips were tried.
fn every_flip_fails(
    file: &Path,
    positions: &[usize],
    masks: &[u8],
    verify: &dyn Fn() -> Result<
        release_manifest::VerifiedRelease,
        release_manifest::ReleaseVerifyError,
    >,
) -> Result<usize> {
    let orig = std::fs::read(file)?;
    let mut tried = 0;
    let mut passed = Vec::new();
    for &pos in positions {
        for &mask in masks {
            let mut bad = orig.clone();
            bad[pos] ^= mask;
            std::fs::write(file, &bad)?;
            if verify().is_ok() {
                passed.push((pos, mask));
            }
            tried += 1;
        }
    }
    std::fs::write(file, &orig)?;
    ensure!(
        passed.is_empty(),
        "{}: verification passed after {} of {tried} flips, e.g. (byte, xor mask) {:?}",
        file.display(),
        passed.len(),
        &passed[..passed.len().min(10)]
    );
    Ok(tried)
}

/// Flips one byte, runs `gateway audit verify-release` and expects it to fail; restores.
fn cli_flip_fails(pki: &Pki, dir: &Path, name: &str, pos: usize) -> Result<()> {
    let path = dir.join(name);
    let orig = std::fs::read(&path)?;
    let mut bad = orig.clone();
    bad[pos] ^= 0x01;
    std::fs::write(&path, &bad)?;
    let o = verify_release_cli(pki, dir, None);
    std::fs::write(&path, &orig)?;
    let o = o?;
    assert!(
        !o.status.success(),
        "{name} byte {pos} flipped but verify-release passed: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("VERIFICATION FAILED"),
        "{}",
        text(&o)
    );
    Ok(())
}

/// The SV agreement's row filter on police_crime: the offence codes it admits.
fn sv_offence_codes() -> Result<BTreeSet<String>> {
    let path = workspace_root().join("policies/agreements/sv-sna.toml");
    e2e::police_filter_codes(&std::fs::read_to_string(&path)?, SV_PURPOSE)
        .with_context(|| path.display().to_string())
}

/// Whether a raw police_crime row passes the REOFF filter (`suspect_age >= 10`).
fn reoff_admits(row: &HashMap<String, String>) -> bool {
    row.get("suspect_age")
        .and_then(|a| a.parse::<i64>().ok())
        .is_some_and(|a| a >= 10)
}

/// The values of the `*_person_id` columns of a released CSV, row by row.
fn person_id_rows(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let (header, rows) = read_csv(path)?;
    let cols: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].ends_with("_person_id"))
        .collect();
    let names = cols.iter().map(|&i| header[i].clone()).collect();
    let ids = rows
        .iter()
        .map(|r| cols.iter().map(|&i| r[i].clone()).collect())
        .collect();
    Ok((names, ids))
}

fn non_empty_ids(rows: &[Vec<String>]) -> BTreeSet<String> {
    rows.iter()
        .flatten()
        .filter(|v| !v.is_empty())
        .cloned()
        .collect()
}

#[test]
fn extract_and_aggregate_verify_and_tampering_is_caught() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let data = pki.path().join("exports");
    let crime = synth_catalog("met-police", PERSONS, SEED, &data)?
        .remove("police_crime")
        .context("no police_crime export")?;
    let fires = synth_catalog("lfb", PERSONS, SEED, &data)?
        .remove("lfb_incident")
        .context("no lfb_incident export")?;
    push_ok(&pki, &gw, "met-police", "police_crime", &crime)?;
    push_ok(&pki, &gw, "lfb", "lfb_incident", &fires)?;

    let analyst = pki.analyst_config();
    let base = pki.path().join("releases");
    let (sv, table) = (base.join("sv"), base.join("table"));
    let fields: Vec<String> = TEST1_CRIME_FIELDS
        .iter()
        .map(|f| format!("police_crime.{f}"))
        .collect();
    succeeded(
        run_extract(
            &analyst,
            &gw,
            SV,
            SV_PURPOSE,
            &[
                "--datasets",
                "police_crime,lfb_incident",
                "--fields",
                &fields.join(","),
            ],
            &sv,
        )?,
        "gateway extract",
    )?;
    succeeded(
        run_aggregate(
            &analyst,
            &gw,
            SV,
            SV_PURPOSE,
            "police_crime",
            "wd22cd,ho_offence_group",
            &table,
        )?,
        "gateway aggregate",
    )?;

    // The extract: one CSV per dataset, only released columns plus the person id columns, and
    // the manifest's counts are the files'.
    let raw_crime = read_raw(&crime)?;
    let (crime_released, crime_denied) =
        explained_fields(&pki, &gw, SV, SV_PURPOSE, "police_crime")?;
    let (fire_released, fire_denied) = explained_fields(&pki, &gw, SV, SV_PURPOSE, "lfb_incident")?;
    for must in [
        "victim_surname",
        "crime_ref",
        "victim_dob",
        "location_postcode",
    ] {
        ensure!(
            crime_denied.iter().any(|d| d == must),
            "explain: {must} is not denied?"
        );
    }
    let m = manifest_in(&sv)?;
    assert_eq!(m.release.kind, "extract");
    assert_eq!(
        folder_names(&sv)?,
        BTreeSet::from(["lfb_incident.csv", "manifest.json", "police_crime.csv"].map(String::from)),
        "the extract folder holds one CSV per dataset and the manifest"
    );
    for f in &m.release.files {
        let (header, rows) = read_csv(&sv.join(&f.name))?;
        assert_eq!(header, f.columns, "{}: header vs manifest columns", f.name);
        assert_eq!(
            rows.len() as u64,
            f.rows,
            "{}: data rows vs manifest",
            f.name
        );
        let raw_lines = std::fs::read_to_string(sv.join(&f.name))?
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .count();
        assert_eq!(raw_lines as u64, f.rows + 1, "{}: CRLF lines", f.name);
        eprintln!(
            "{}: {} rows released, {} suppressed by k-anonymity",
            f.name, f.rows, f.suppressed_rows
        );
        let (persons, data): (Vec<&String>, Vec<&String>) =
            header.iter().partition(|h| h.ends_with("_person_id"));
        let (released, denied) = match f.dataset.as_str() {
            "police_crime" => (&crime_released, &crime_denied),
            "lfb_incident" => (&fire_released, &fire_denied),
            other => bail!("unexpected dataset {other} in the SV extract"),
        };
        for h in &header {
            assert!(
                !denied.iter().any(|d| h.contains(d.as_str())),
                "{}: column {h} names a denied field",
                f.name
            );
        }
        for h in &data {
            assert!(
                released.contains(h),
                "{}: column {h} is not released",
                f.name
            );
        }
        // Person id columns come first.
        assert!(
            header
                .iter()
                .take(persons.len())
                .all(|h| h.ends_with("_person_id"))
        );
        match f.dataset.as_str() {
            "police_crime" => {
                assert_eq!(persons, ["victim_person_id", "suspect_person_id"]);
                let asked: BTreeSet<&str> = TEST1_CRIME_FIELDS
                    .iter()
                    .map(|f| f.split(':').next().unwrap_or(f))
                    .collect();
                let got: BTreeSet<&str> = data.iter().map(|s| s.as_str()).collect();
                assert_eq!(got, asked, "police_crime: exactly the fields asked");
                assert!(f.rows > 0, "no police_crime row survived k-anonymity");
                // Person ids: 32 lowercase hex; no raw direct identifier in any cell.
                let ids = non_empty_ids(&person_id_rows(&sv.join(&f.name))?.1);
                assert!(!ids.is_empty());
                for id in &ids {
                    assert!(
                        id.len() == 32
                            && id
                                .bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                        "person id {id:?}"
                    );
                }
                let direct: BTreeSet<&str> = raw_crime
                    .iter()
                    .flat_map(|r| {
                        [
                            "crime_ref",
                            "victim_surname",
                            "suspect_surname",
                            "victim_dob",
                            "location_postcode",
                        ]
                        .map(|c| r.get(c).map(String::as_str).unwrap_or(""))
                    })
                    .filter(|v| !v.is_empty())
                    .collect();
                for row in &rows {
                    for cell in row {
                        assert!(
                            !direct.contains(cell.as_str()),
                            "police_crime.csv shows a direct identifier"
                        );
                    }
                }
            }
            _ => {
                assert!(persons.is_empty(), "lfb_incident has no person roles");
                assert_eq!(
                    &data.into_iter().cloned().collect::<Vec<_>>(),
                    released,
                    "lfb_incident: every released field, no other"
                );
                assert!(f.rows > 0, "no lfb_incident row survived k-anonymity");
            }
        }
    }

    // The table: the by-fields' values as headings, counts shown only at or over min_cell.
    let tm = manifest_in(&table)?;
    assert_eq!(tm.release.kind, "aggregate");
    let [tf] = tm.release.files.as_slice() else {
        bail!(
            "an aggregate release holds one table: {:?}",
            tm.release.files
        );
    };
    assert_eq!(tf.name, "police_crime_by_wd22cd_ho_offence_group.csv");
    assert_eq!(
        folder_names(&table)?,
        BTreeSet::from([tf.name.clone(), "manifest.json".to_owned()])
    );
    let (header, rows) = read_csv(&table.join(&tf.name))?;
    assert_eq!(header, tf.columns);
    assert_eq!(header[0], "wd22cd \\ ho_offence_group");
    assert_eq!(header.last().map(String::as_str), Some("total"));
    let groups: BTreeSet<&str> = raw_crime
        .iter()
        .map(|r| r["ho_offence_group"].as_str())
        .collect();
    let wards: BTreeSet<&str> = raw_crime.iter().map(|r| r["wd22cd"].as_str()).collect();
    for h in &header[1..header.len() - 1] {
        assert!(
            groups.contains(h.as_str()),
            "table heading {h:?} is not an offence group"
        );
        assert!(!h.ends_with("_person_id"));
    }
    let (last, body) = rows.split_last().context("empty table")?;
    assert_eq!(last[0], "total");
    assert_eq!(
        body.len() as u64,
        tf.rows,
        "table rows (totals excluded) vs manifest"
    );
    let min_cell = tm.release.disclosure.min_cell;
    for row in &rows {
        assert!(
            row[0] == "total" || wards.contains(row[0].as_str()),
            "row {:?}",
            row[0]
        );
        for cell in &row[1..] {
            match cell.parse::<u64>() {
                Ok(n) => assert!(
                    n == 0 || n >= min_cell,
                    "a count of {n} is shown (min_cell {min_cell})"
                ),
                Err(_) => assert_eq!(cell, "c", "table cell {cell:?}"),
            }
        }
    }
    eprintln!("{}: {} suppressed cells", tf.name, tf.suppressed_cells);

    // Both verify, offline and online.
    for dir in [&sv, &table] {
        let id = &manifest_in(dir)?.release.release_id;
        let o = succeeded(verify_release_cli(&pki, dir, None)?, "verify-release")?;
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(id.as_str()),
            "{}",
            text(&o)
        );
        let o = succeeded(
            verify_release_cli(&pki, dir, Some(&gw))?,
            "verify-release --online",
        )?;
        assert!(text(&o).contains("is consistent with it"), "{}", text(&o));
    }

    // Every flipped byte is caught: each byte of the table folder (its CSV and manifest), and
    // evenly spread bytes of the extract folder (200 per CSV, 400 of the manifest, with two
    // masks). Through the library for speed (a few milliseconds a check in a debug build),
    // then a few through the CLI.
    let key = audit_verifier_key(&pki)?;
    let started = std::time::Instant::now();
    let mut tried = 0;
    let spread = |len: usize, n: usize| -> Vec<usize> {
        if len <= n {
            (0..len).collect()
        } else {
            (0..n).map(|i| i * (len - 1) / (n - 1)).collect()
        }
    };
    for (dir, name, sample, masks) in [
        (&table, tf.name.as_str(), None, &[0x01][..]),
        (&table, "manifest.json", None, &[0x01][..]),
        (&sv, "lfb_incident.csv", Some(200), &[0x01][..]),
        (&sv, "police_crime.csv", Some(200), &[0x01][..]),
        (&sv, "manifest.json", Some(400), &[0x01, 0x20][..]),
    ] {
        let path = dir.join(name);
        let len = std::fs::metadata(&path)?.len() as usize;
        let positions = spread(len, sample.unwrap_or(len));
        let verify = || release_manifest::verify_release(dir, &key, AUDIT_ORIGIN);
        verify().map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        tried += every_flip_fails(&path, &positions, masks, &verify)?;
        verify().map_err(|e| anyhow::anyhow!("{} after restoring: {e}", dir.display()))?;
    }
    eprintln!(
        "{tried} flipped bytes caught in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let manifest_text = std::fs::read_to_string(sv.join("manifest.json"))?;
    let at = |needle: &str| manifest_text.find(needle).map(|p| p + needle.len() + 2);
    let crime_len = std::fs::metadata(sv.join("police_crime.csv"))?.len() as usize;
    cli_flip_fails(&pki, &sv, "police_crime.csv", 0)?;
    cli_flip_fails(&pki, &sv, "police_crime.csv", crime_len / 2)?;
    cli_flip_fails(&pki, &sv, "police_crime.csv", crime_len - 1)?;
    for needle in [
        "\"release_id\":",
        "\"rows\":",
        "\"entry\":",
        "\"checkpoint\":",
    ] {
        let pos = at(needle).with_context(|| format!("no {needle} in manifest.json"))?;
        cli_flip_fails(&pki, &sv, "manifest.json", pos)?;
    }
    cli_flip_fails(&pki, &sv, "manifest.json", manifest_text.len() - 1)?;

    // A missing file, an extra file, a missing manifest or another release's manifest fail.
    let check_fails = |what: &str| -> Result<()> {
        let lib = release_manifest::verify_release(&sv, &key, AUDIT_ORIGIN);
        assert!(lib.is_err(), "{what}: the library passed the folder");
        let o = verify_release_cli(&pki, &sv, None)?;
        assert!(
            !o.status.success(),
            "{what}: verify-release passed: {}",
            text(&o)
        );
        Ok(())
    };
    let crime_csv = sv.join("police_crime.csv");
    let aside = base.join("police_crime.csv.aside");
    std::fs::rename(&crime_csv, &aside)?;
    check_fails("police_crime.csv deleted")?;
    std::fs::rename(&aside, &crime_csv)?;
    std::fs::write(sv.join("notes.csv"), "a,b\r\n1,2\r\n")?;
    check_fails("an extra file")?;
    std::fs::remove_file(sv.join("notes.csv"))?;
    std::fs::copy(&crime_csv, sv.join("police_crime (1).csv"))?;
    check_fails("a copy of a released file")?;
    std::fs::remove_file(sv.join("police_crime (1).csv"))?;
    let manifest_path = sv.join("manifest.json");
    let manifest_bytes = std::fs::read(&manifest_path)?;
    std::fs::remove_file(&manifest_path)?;
    check_fails("manifest.json deleted")?;
    std::fs::copy(table.join("manifest.json"), &manifest_path)?;
    check_fails("another release's manifest")?;
    std::fs::write(&manifest_path, &manifest_bytes)?;
    for dir in [&sv, &table] {
        succeeded(
            verify_release_cli(&pki, dir, None)?,
            "verify-release after restoring",
        )?;
    }

    // One release entry per release, bound to its manifest body.
    let entries = exported_entries(&pki, &gw, "audit.txt")?;
    check_release_entry(&entries, &sv)?;
    check_release_entry(&entries, &table)?;
    let releases = entries
        .iter()
        .filter(|e| e.action.as_str() == "release")
        .count();
    assert_eq!(releases, 2, "two releases were made");
    ensure!(gw.stop()?.success(), "the gateway did not stop cleanly");
    Ok(())
}

#[test]
fn person_ids_differ_across_purposes_and_repeat_within_one() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let crime = synth_catalog("met-police", PERSONS, SEED, &pki.path().join("exports"))?
        .remove("police_crime")
        .context("no police_crime export")?;
    push_ok(&pki, &gw, "met-police", "police_crime", &crime)?;
    let analyst = pki.analyst_config();

    // Both purposes are record purposes over police_crime the analyst may request.
    let o = succeeded(
        run_gateway(&["agreements", "--config", &analyst, "--gateway", &gw.url()])?,
        "gateway agreements",
    )?;
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    for purpose in [SV_PURPOSE, REOFF_PURPOSE] {
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(purpose))
            .with_context(|| format!("{purpose} not listed:\n{listing}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "*", "the analyst may request {purpose}: {line}");
        assert_eq!(words[2], "records", "{line}");
        assert!(line.contains("police_crime"), "{line}");
    }

    // Fields without quasi-identifiers: k-anonymity keeps every row the filter admits.
    let base = pki.path().join("releases");
    let extract = |agreement: &str, purpose: &str, field: &str, dir: &Path| -> Result<()> {
        succeeded(
            run_extract(
                &analyst,
                &gw,
                agreement,
                purpose,
                &[
                    "--datasets",
                    "police_crime",
                    "--fields",
                    &format!("police_crime.{field}"),
                ],
                dir,
            )?,
            "gateway extract",
        )?;
        Ok(())
    };
    let (sv_a, sv_b, sv_c, reoff) = (
        base.join("sv-a"),
        base.join("sv-b"),
        base.join("sv-c"),
        base.join("reoff"),
    );
    extract(SV, SV_PURPOSE, "ho_offence_code", &sv_a)?;
    extract(SV, SV_PURPOSE, "ho_offence_code", &sv_b)?;
    extract(SV, SV_PURPOSE, "ho_offence_group", &sv_c)?;
    extract(REOFF, REOFF_PURPOSE, "ho_offence_code", &reoff)?;
    let ids = |dir: &Path| person_id_rows(&dir.join("police_crime.csv"));
    let (names_a, a) = ids(&sv_a)?;
    let (_, b) = ids(&sv_b)?;
    let (_, c) = ids(&sv_c)?;
    let (names_r, r) = ids(&reoff)?;
    assert_eq!(names_a, ["victim_person_id", "suspect_person_id"]);
    assert_eq!(
        names_r,
        ["suspect_person_id"],
        "REOFF releases the suspect side only"
    );
    let (set_a, set_r) = (non_empty_ids(&a), non_empty_ids(&r));
    ensure!(
        set_a.len() > 10 && set_r.len() > 10,
        "too few person ids released: {} / {}",
        set_a.len(),
        set_r.len()
    );
    assert_ne!(
        manifest_in(&sv_a)?.release.release_id,
        manifest_in(&sv_b)?.release.release_id
    );
    assert_eq!(
        a, b,
        "two extracts of one purpose over the same data: the same ids, row by row"
    );
    assert_eq!(
        a, c,
        "the ids of a purpose do not depend on the fields asked"
    );
    let shared: Vec<&String> = set_a.intersection(&set_r).collect();
    assert!(
        shared.is_empty(),
        "{} person ids appear under both purposes",
        shared.len()
    );

    // The same people: rows both filters admit hold the same suspects, renamed one to one.
    let raw = read_raw(&crime)?;
    let codes = sv_offence_codes()?;
    let sv_rows: Vec<usize> = (0..raw.len())
        .filter(|&i| codes.contains(&raw[i]["ho_offence_code"]))
        .collect();
    let reoff_rows: Vec<usize> = (0..raw.len()).filter(|&i| reoff_admits(&raw[i])).collect();
    assert_eq!(
        a.len(),
        sv_rows.len(),
        "SV rows released vs admitted by its filter"
    );
    assert_eq!(
        r.len(),
        reoff_rows.len(),
        "REOFF rows released vs admitted by its filter"
    );
    // Releases list records in push order: check it, then align released rows to raw rows.
    let released_codes = |dir: &Path| -> Result<Vec<String>> {
        let (h, rows) = read_csv(&dir.join("police_crime.csv"))?;
        let col = h
            .iter()
            .position(|c| c == "ho_offence_code")
            .context("ho_offence_code")?;
        Ok(rows
            .into_iter()
            .map(|mut row| row.swap_remove(col))
            .collect())
    };
    let expect = |rows: &[usize]| -> Vec<String> {
        rows.iter()
            .map(|&i| raw[i]["ho_offence_code"].clone())
            .collect()
    };
    ensure!(
        released_codes(&sv_a)? == expect(&sv_rows),
        "SV rows are not in push order"
    );
    ensure!(
        released_codes(&reoff)? == expect(&reoff_rows),
        "REOFF rows are not in push order"
    );
    let sv_suspect: HashMap<usize, &String> = sv_rows
        .iter()
        .copied()
        .zip(a.iter().map(|row| &row[1]))
        .collect();
    let mut forward: BTreeMap<&String, &String> = BTreeMap::new();
    let mut backward: BTreeMap<&String, &String> = BTreeMap::new();
    for (&i, row) in reoff_rows.iter().zip(&r) {
        let (Some(&s), reoff_id) = (sv_suspect.get(&i), &row[0]) else {
            continue;
        };
        if s.is_empty() || reoff_id.is_empty() {
            assert_eq!(
                s.is_empty(),
                reoff_id.is_empty(),
                "raw row {i}: a suspect id in one purpose only"
            );
            continue;
        }
        assert_ne!(s, reoff_id);
        assert_eq!(
            *forward.entry(s).or_insert(reoff_id),
            reoff_id,
            "raw row {i}: one SV person, two REOFF ids"
        );
        assert_eq!(
            *backward.entry(reoff_id).or_insert(s),
            s,
            "raw row {i}: one REOFF person, two SV ids"
        );
    }
    ensure!(
        forward.len() > 10,
        "too few suspects in both releases: {}",
        forward.len()
    );
    ensure!(gw.stop()?.success(), "the gateway did not stop cleanly");
    Ok(())
}

#[test]
fn refused_releases_say_which_rule_and_are_audited() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let crime = synth_catalog("met-police", 300, SEED, &pki.path().join("exports"))?
        .remove("police_crime")
        .context("no police_crime export")?;
    push_ok(&pki, &gw, "met-police", "police_crime", &crime)?;
    let analyst = pki.analyst_config();
    let base = pki.path().join("refused");
    let out = |n: &str| base.join(n);

    // (what, output, folder, rule) for refusals by policy.
    let cases = [
        (
            "an extract of an aggregate-only purpose",
            run_extract(
                &analyst,
                &gw,
                SV,
                "serious-violence-sna-probation",
                &[],
                &out("probation"),
            )?,
            out("probation"),
            "aggregate-only",
        ),
        (
            "an unknown agreement",
            run_extract(
                &analyst,
                &gw,
                "SKP-ISA-NOPE-01",
                SV_PURPOSE,
                &[],
                &out("nope"),
            )?,
            out("nope"),
            "unknown-agreement",
        ),
        (
            "a table by a denied field beside a released one",
            run_aggregate(
                &analyst,
                &gw,
                SV,
                SV_PURPOSE,
                "police_crime",
                "wd22cd,victim_surname",
                &out("by-surname"),
            )?,
            out("by-surname"),
            "isa-deny",
        ),
        (
            "a table by a denied field alone",
            run_aggregate(
                &analyst,
                &gw,
                SV,
                SV_PURPOSE,
                "police_crime",
                "victim_surname",
                &out("by-surname-only"),
            )?,
            out("by-surname-only"),
            "no-field-released",
        ),
        (
            "an extract asking a denied field",
            run_extract(
                &analyst,
                &gw,
                SV,
                SV_PURPOSE,
                &[
                    "--datasets",
                    "police_crime",
                    "--fields",
                    "police_crime.wd22cd,police_crime.crime_ref",
                ],
                &out("crime-ref"),
            )?,
            out("crime-ref"),
            "isa-deny",
        ),
        (
            "an extract of a purpose the analyst is not a recipient of",
            run_extract(
                &analyst,
                &gw,
                "SKP-ISA-DHR-01",
                "dhr-case-chronology",
                &[],
                &out("dhr"),
            )?,
            out("dhr"),
            "not-a-recipient",
        ),
    ];
    // The IG officer's token on the analyst service.
    let auditor_out = out("auditor");
    let auditor = run_extract(
        &pki.auditor_config(),
        &gw,
        SV,
        SV_PURPOSE,
        &[],
        &auditor_out,
    )?;

    let entries = exported_entries(&pki, &gw, "audit.txt")?;
    for (what, o, dir, rule) in &cases {
        assert!(!o.status.success(), "{what}: not refused: {}", text(o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("PermissionDenied"), "{what}: {}", text(o));
        assert!(
            err.contains(&format!("denied by rule {rule}:")),
            "{what}: expected rule {rule}: {}",
            text(o)
        );
        let n = refusal_entry(o)
            .with_context(|| format!("{what}: no audit entry named: {}", text(o)))?;
        let e = entries
            .iter()
            .find(|e| e.seq == n)
            .with_context(|| format!("{what}: audit entry {n} not exported"))?;
        assert_eq!(e.action.as_str(), "deny", "{what}: entry {n}");
        assert_eq!(e.decision.as_str(), "deny", "{what}: entry {n}");
        assert_eq!(e.actor.id, "rbk-analyst", "{what}: entry {n}");
        assert!(
            e.reason
                .as_deref()
                .is_some_and(|r| r.starts_with(&format!("{rule}: "))),
            "{what}: entry {n} reason {:?}",
            e.reason
        );
        assert!(
            e.release.is_none() && e.released_sha256.is_none(),
            "{what}: entry {n}"
        );
        assert!(
            folder_names(dir)?.is_empty(),
            "{what}: files written: {:?}",
            folder_names(dir)?
        );
    }
    assert!(
        !auditor.status.success(),
        "an auditor's extract: {}",
        text(&auditor)
    );
    assert!(
        String::from_utf8_lossy(&auditor.stderr).contains("PermissionDenied"),
        "{}",
        text(&auditor)
    );
    assert!(folder_names(&auditor_out)?.is_empty());
    let auth: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.action.as_str() == "auth_failure")
        .collect();
    assert_eq!(auth.len(), 1, "one auth_failure entry: {auth:?}");
    assert_eq!(auth[0].actor.id, "ig-officer");

    // Exactly one deny entry per refusal, and nothing released.
    let denials = entries
        .iter()
        .filter(|e| e.action.as_str() == "deny")
        .count();
    assert_eq!(denials, cases.len(), "one deny entry per refusal");
    assert!(!entries.iter().any(|e| e.action.as_str() == "release"));
    ensure!(gw.stop()?.success(), "the gateway did not stop cleanly");
    Ok(())
}

/// What `gateway audit person` printed: (records found, releases counted, lookup entry, the
/// release ids listed).
fn person_lookup(o: &Output) -> Result<(u64, u64, u64, BTreeSet<String>)> {
    let out = String::from_utf8_lossy(&o.stdout);
    let mut lines = out.lines();
    let first = lines.next().context("audit person printed nothing")?;
    let num = |after: &str| -> Result<u64> {
        let s = first
            .split(after)
            .next()
            .and_then(|s| {
                s.rsplit(|c: char| !c.is_ascii_digit())
                    .find(|w| !w.is_empty())
            })
            .with_context(|| format!("no count before {after:?} in {first:?}"))?;
        Ok(s.parse()?)
    };
    let records = num(" stored record(s)")?;
    let releases = num(" release(s) included")?;
    let entry = first
        .rsplit_once("audited as entry ")
        .and_then(|(_, e)| e.trim_end_matches(')').parse().ok())
        .with_context(|| format!("no lookup entry in {first:?}"))?;
    let ids = lines
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    Ok((records, releases, entry, ids))
}

#[test]
fn person_releases_finds_exactly_the_releases_that_included_the_person() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let data = pki.path().join("exports");
    let crime = synth_catalog("met-police", PERSONS, SEED, &data)?
        .remove("police_crime")
        .context("no police_crime export")?;
    let fires = synth_catalog("lfb", PERSONS, SEED, &data)?
        .remove("lfb_incident")
        .context("no lfb_incident export")?;
    push_ok(&pki, &gw, "met-police", "police_crime", &crime)?;
    push_ok(&pki, &gw, "lfb", "lfb_incident", &fires)?;

    // Choose the person from the raw export: the victim of a serious-violence crime
    // - whose row the REOFF filter also admits (so REOFF releases the row, with its suspect),
    // - in an LSOA with fewer than k = 5 such crimes (so an SV extract showing lsoa21cd
    //   suppresses the row),
    // - seen nowhere else: no other person role in the export shares their date of birth and
    //   sex (which every demo token of theirs would) or their PNC id.
    let raw = read_raw(&crime)?;
    let codes = sv_offence_codes()?;
    let sv_admits = |row: &HashMap<String, String>| codes.contains(&row["ho_offence_code"]);
    let mut per_lsoa: HashMap<&str, usize> = HashMap::new();
    for row in raw.iter().filter(|r| sv_admits(r)) {
        *per_lsoa.entry(row["lsoa21cd"].as_str()).or_default() += 1;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for row in &raw {
        for role in ["victim", "suspect"] {
            let dob = &row[&format!("{role}_dob")];
            if !dob.is_empty() {
                *seen
                    .entry(format!("{dob}|{}", row[&format!("{role}_sex")]))
                    .or_default() += 1;
            }
            let pnc = &row[&format!("{role}_pnc_id")];
            if !pnc.is_empty() {
                *seen.entry(format!("pnc|{pnc}")).or_default() += 1;
            }
        }
    }
    let once = |key: String| seen.get(&key).copied() == Some(1);
    let (index, person) = raw
        .iter()
        .enumerate()
        .find(|(_, r)| {
            sv_admits(r)
                && reoff_admits(r)
                && per_lsoa[r["lsoa21cd"].as_str()] < 5
                && [
                    "victim_surname",
                    "victim_forename",
                    "victim_dob",
                    "victim_sex",
                ]
                .iter()
                .all(|c| !r[*c].is_empty())
                && once(format!("{}|{}", r["victim_dob"], r["victim_sex"]))
                && (r["victim_pnc_id"].is_empty() || once(format!("pnc|{}", r["victim_pnc_id"])))
        })
        .context("no suitable victim in the synthetic export")?;

    // Releases that include the person, and releases that cannot.
    let analyst = pki.analyst_config();
    let base = pki.path().join("releases");
    let extract = |agreement: &str, purpose: &str, extra: &[&str], dir: &Path| -> Result<String> {
        succeeded(
            run_extract(&analyst, &gw, agreement, purpose, extra, dir)?,
            "gateway extract",
        )?;
        Ok(manifest_in(dir)?.release.release_id)
    };
    let code = [
        "--datasets",
        "police_crime",
        "--fields",
        "police_crime.ho_offence_code",
    ];
    let lsoa = [
        "--datasets",
        "police_crime",
        "--fields",
        "police_crime.lsoa21cd",
    ];
    // Every admitted row (no quasi-identifier released).
    let all_rows = base.join("sv-all");
    let with_person = extract(SV, SV_PURPOSE, &code, &all_rows)?;
    // The person's row is admitted but suppressed by k-anonymity.
    let by_lsoa = base.join("sv-lsoa");
    let suppressed = extract(SV, SV_PURPOSE, &lsoa, &by_lsoa)?;
    // The person's row, with its suspect only.
    let reoff_dir = base.join("reoff");
    let reoff = extract(REOFF, REOFF_PURPOSE, &code, &reoff_dir)?;
    // Another dataset.
    let fires_dir = base.join("sv-fires");
    let fires_only = extract(SV, SV_PURPOSE, &["--datasets", "lfb_incident"], &fires_dir)?;
    // A table counting the person's row.
    let table = base.join("table");
    succeeded(
        run_aggregate(
            &analyst,
            &gw,
            SV,
            SV_PURPOSE,
            "police_crime",
            "wd22cd",
            &table,
        )?,
        "gateway aggregate",
    )?;
    let counted = manifest_in(&table)?.release.release_id;

    // The premises, checked against the files: every admitted row in the first extract, the
    // LSOA extract suppressing exactly the rows of small LSOAs, REOFF all its rows.
    let admitted = raw.iter().filter(|r| sv_admits(r)).count() as u64;
    let in_small = raw
        .iter()
        .filter(|r| sv_admits(r) && per_lsoa[r["lsoa21cd"].as_str()] < 5)
        .count() as u64;
    let file = |dir: &Path| -> Result<release_manifest::FileDigest> {
        manifest_in(dir)?
            .release
            .files
            .into_iter()
            .next()
            .context("no file in the release")
    };
    let f = file(&all_rows)?;
    assert_eq!((f.rows, f.suppressed_rows), (admitted, 0));
    let f = file(&by_lsoa)?;
    assert_eq!(
        (f.rows, f.suppressed_rows),
        (admitted - in_small, in_small),
        "k-anonymity on lsoa21cd"
    );
    let f = file(&reoff_dir)?;
    assert_eq!(
        f.rows,
        raw.iter().filter(|r| reoff_admits(r)).count() as u64
    );
    // The person's victim id in the first extract (rows are in push order), absent from the
    // LSOA extract of the same purpose.
    let position = raw[..index].iter().filter(|r| sv_admits(r)).count();
    let (_, ids) = person_id_rows(&all_rows.join("police_crime.csv"))?;
    let victim_id = ids[position][0].clone();
    ensure!(!victim_id.is_empty(), "the person has no id in the extract");
    let occurrences = ids.iter().flatten().filter(|v| **v == victim_id).count();
    assert_eq!(occurrences, 1, "the person appears once in the data");
    let (_, lsoa_ids) = person_id_rows(&by_lsoa.join("police_crime.csv"))?;
    assert!(
        !non_empty_ids(&lsoa_ids).contains(&victim_id),
        "the suppressed row's person was released"
    );

    // The person's tokens, as their agency computes them.
    let mut id_args = vec![
        "--surname",
        person["victim_surname"].as_str(),
        "--forename",
        person["victim_forename"].as_str(),
        "--dob",
        person["victim_dob"].as_str(),
        "--sex",
        person["victim_sex"].as_str(),
    ];
    if !person["victim_pnc_id"].is_empty() {
        id_args.extend(["--pnc", person["victim_pnc_id"].as_str()]);
    }
    let tokens = person_tokens(&pki, "met-police", &id_args)?;
    assert!(tokens.iter().any(|t| t.starts_with("demo:")), "{tokens:?}");

    let o = succeeded(
        run_audit_person(&pki.auditor_config(), &gw, &tokens)?,
        "gateway audit person",
    )?;
    let (records, count, entry, listed) = person_lookup(&o)?;
    assert_eq!(
        records,
        1,
        "stored records carrying the tokens: {}",
        text(&o)
    );
    assert_eq!(
        listed,
        BTreeSet::from([with_person.clone(), counted.clone()]),
        "releases that included the person (not {suppressed} suppressed, {reoff} REOFF, {fires_only} fires):\n{}",
        text(&o)
    );
    assert_eq!(count, 2, "{}", text(&o));
    // The answer names releases only: no token, no identifier, no field value.
    let shown = text(&o);
    for t in &tokens {
        let hex_part = t.split_once(':').map_or(t.as_str(), |(_, h)| h);
        assert!(!shown.contains(&hex_part[..16]), "the lookup shows a token");
    }
    for c in [
        "victim_surname",
        "victim_forename",
        "victim_dob",
        "victim_pnc_id",
        "crime_ref",
        "location_postcode",
    ] {
        let v = &person[c];
        assert!(
            v.is_empty() || !shown.contains(v.as_str()),
            "the lookup shows {c}"
        );
    }
    assert!(!shown.contains(&victim_id), "the lookup shows a person id");

    // A token nobody has finds nothing; an analyst may not ask.
    let nobody = vec![format!(
        "demo:{}",
        hex::encode(Sha256::digest(b"nobody in the data"))
    )];
    let o = succeeded(
        run_audit_person(&pki.auditor_config(), &gw, &nobody)?,
        "gateway audit person",
    )?;
    let (records, count, nobody_entry, listed) = person_lookup(&o)?;
    assert_eq!((records, count), (0, 0), "{}", text(&o));
    assert!(listed.is_empty(), "{}", text(&o));
    let analyst_jwt = std::fs::read_to_string(pki.path().join("analysts/rbk-analyst.jwt"))?;
    let o = e2e::run_gateway_env(
        &[
            "audit",
            "person",
            "--config",
            &pki.auditor_config(),
            "--gateway",
            &gw.url(),
            "--token",
            &tokens.join(","),
        ],
        &[("SKP_TOKEN", analyst_jwt.trim())],
    )?;
    assert!(
        !o.status.success(),
        "an analyst looked a person up: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("PermissionDenied"),
        "{}",
        text(&o)
    );

    // Each lookup is an audit_query entry holding no token.
    let entries = exported_entries(&pki, &gw, "audit.txt")?;
    for n in [entry, nobody_entry] {
        let e = entries
            .iter()
            .find(|e| e.seq == n)
            .with_context(|| format!("no entry {n}"))?;
        assert_eq!(e.action.as_str(), "audit_query", "entry {n}");
        assert_eq!(e.actor.id, "ig-officer", "entry {n}");
        let line = String::from_utf8(e.encode())?;
        for t in tokens.iter().chain(&nobody) {
            let hex_part = t.split_once(':').map_or(t.as_str(), |(_, h)| h);
            assert!(
                !line.contains(&hex_part[..16]),
                "entry {n} holds a token: {line}"
            );
        }
    }
    ensure!(gw.stop()?.success(), "the gateway did not stop cleanly");
    Ok(())
}

/// `audit entry N` in a command's output (stdout or stderr).
fn named_entry(o: &Output) -> Option<u64> {
    let all = text(o);
    let rest = all.rsplit_once("audit entry ")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn refusals_under_a_known_agreement_carry_its_file_sha256() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let analyst = pki.analyst_config();
    let base = pki.path().join("refused");
    let explain = succeeded(
        run_gateway(&[
            "explain",
            "--config",
            &analyst,
            "--gateway",
            &gw.url(),
            "--agreement",
            SV,
            "--purpose",
            SV_PURPOSE,
            "--dataset",
            "police_crime",
        ])?,
        "gateway explain",
    )?;
    let refusals = [
        run_extract(
            &analyst,
            &gw,
            SV,
            "serious-violence-sna-probation",
            &[],
            &base.join("a"),
        )?,
        run_extract(
            &analyst,
            &gw,
            SV,
            SV_PURPOSE,
            &["--datasets", "probation_caseload"],
            &base.join("b"),
        )?,
        run_aggregate(
            &analyst,
            &gw,
            SV,
            SV_PURPOSE,
            "police_crime",
            "victim_surname",
            &base.join("c"),
        )?,
    ];
    let file = workspace_root().join("policies/agreements/sv-sna.toml");
    let file_sha = hex::encode(Sha256::digest(std::fs::read(&file)?));
    let entries = exported_entries(&pki, &gw, "audit.txt")?;
    let agreement_of = |o: &Output| -> Result<gateway::audit::entry::AgreementRef> {
        let n = named_entry(o).with_context(|| format!("no audit entry named: {}", text(o)))?;
        entries
            .iter()
            .find(|e| e.seq == n)
            .and_then(|e| e.agreement.clone())
            .with_context(|| format!("entry {n} names no agreement"))
    };
    let allowed = agreement_of(&explain)?;
    assert_eq!(allowed.policy_sha256, file_sha, "the explain entry");
    for o in &refusals {
        assert!(!o.status.success(), "{}", text(o));
        let denied = agreement_of(o)?;
        assert_eq!(
            (
                denied.id.as_str(),
                denied.version.as_str(),
                denied.policy_sha256.as_str()
            ),
            (SV, allowed.version.as_str(), file_sha.as_str()),
            "the deny entry of: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    ensure!(gw.stop()?.success(), "the gateway did not stop cleanly");
    Ok(())
}

#[test]
fn linkage_goes_only_through_granted_rows_and_roles() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let crime = synth_catalog("met-police", PERSONS, SEED, &pki.path().join("exports"))?
        .remove("police_crime")
        .context("no police_crime export")?;
    let (header, mut rows) = read_csv(&crime)?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .context(name.to_owned())
    };
    let (code, suspect_age) = (col("ho_offence_code")?, col("suspect_age")?);
    // Two valid PNC ids of the data, taken out of every row so that they link nothing else.
    let pnc_cols = [col("victim_pnc_id")?, col("suspect_pnc_id")?];
    let pncs: Vec<String> = rows
        .iter()
        .map(|r| r[pnc_cols[1]].clone())
        .filter(|p| !p.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(2)
        .collect();
    let [p1, p2] = pncs.as_slice() else {
        bail!("fewer than two PNC ids in the synthetic export");
    };
    for row in &mut rows {
        for &c in &pnc_cols {
            if row[c] == *p1 || row[c] == *p2 {
                row[c].clear();
            }
        }
    }
    // Crimes A and C (serious violence, adult suspects) and burglary B between them:
    // - A's suspect (demo only) is B's victim (demo + PNC 1), who is C's suspect (PNC 1, a
    //   new surname): REOFF, which releases suspects only, can join A and C only through B's
    //   victim;
    // - A's victim (demo only) is B's suspect (demo + PNC 2), who is C's victim (PNC 2, a new
    //   surname): SV, which releases serious violence only, can join A and C only through B.
    let template = rows
        .iter()
        .find(|r| r[code] == "8N" && r[suspect_age].parse::<u32>().is_ok_and(|a| a >= 20))
        .context("no adult 8N crime to copy")?
        .clone();
    let burglary = rows
        .iter()
        .find(|r| r[code] == "28E")
        .context("no 28E crime to copy")?
        .clone();
    let person = |row: &mut Vec<String>, role: &str, who: [&str; 5]| -> Result<()> {
        for (field, value) in ["surname", "forename", "dob", "sex", "pnc_id"]
            .iter()
            .zip(who)
        {
            row[col(&format!("{role}_{field}"))?] = value.to_owned();
        }
        Ok(())
    };
    let (mut a, mut b, mut c) = (template.clone(), template.clone(), template);
    for (row, reference) in [
        (&mut a, "9900001/24"),
        (&mut b, "9900002/24"),
        (&mut c, "9900003/24"),
    ] {
        row[col("crime_ref")?] = reference.to_owned();
    }
    for field in ["ho_offence_code", "ho_offence_class", "ho_offence_group"] {
        let i = col(field)?;
        b[i] = burglary[i].clone();
    }
    person(
        &mut a,
        "suspect",
        ["Zzalpha", "Quinella", "1980-02-03", "F", ""],
    )?;
    person(
        &mut b,
        "victim",
        ["Zzalpha", "Quinella", "1980-02-03", "F", p1],
    )?;
    person(
        &mut c,
        "suspect",
        ["Zzbeta", "Quinella", "1980-02-03", "F", p1],
    )?;
    person(
        &mut a,
        "victim",
        ["Yyone", "Rosalind", "1975-05-06", "F", ""],
    )?;
    person(
        &mut b,
        "suspect",
        ["Yyone", "Rosalind", "1975-05-06", "F", p2],
    )?;
    person(
        &mut c,
        "victim",
        ["Yytwo", "Rosalind", "1975-05-06", "F", p2],
    )?;
    rows.extend([a, b, c]);
    let crafted = pki.path().join("exports/crafted.csv");
    let mut w = csv::Writer::from_path(&crafted)?;
    w.write_record(&header)?;
    for row in &rows {
        w.write_record(row)?;
    }
    w.flush()?;
    drop(w);
    push_ok(&pki, &gw, "met-police", "police_crime", &crafted)?;

    let analyst = pki.analyst_config();
    let base = pki.path().join("releases");
    let fields = [
        "--datasets",
        "police_crime",
        "--fields",
        "police_crime.ho_offence_code",
    ];
    let tail = |agreement: &str, purpose: &str, dir: &Path, n: usize| -> Result<Vec<Vec<String>>> {
        succeeded(
            run_extract(&analyst, &gw, agreement, purpose, &fields, dir)?,
            "gateway extract",
        )?;
        let (_, rows) = read_csv(&dir.join("police_crime.csv"))?;
        Ok(rows[rows.len().saturating_sub(n)..].to_vec())
    };
    // REOFF: suspect_person_id, ho_offence_code of A, B, C (push order).
    let reoff = tail(REOFF, REOFF_PURPOSE, &base.join("reoff"), 3)?;
    let codes: Vec<&str> = reoff.iter().map(|r| r[1].as_str()).collect();
    ensure!(codes == ["8N", "28E", "8N"], "REOFF tail {reoff:?}");
    assert_ne!(
        reoff[0][0], reoff[2][0],
        "REOFF joined A's and C's suspects through B's victim, a role it is not granted"
    );
    // SV: victim_person_id, suspect_person_id, ho_offence_code of A and C (B is filtered out).
    let sv = tail(SV, SV_PURPOSE, &base.join("sv"), 2)?;
    ensure!(sv.iter().all(|r| r[2] == "8N"), "SV tail {sv:?}");
    assert_ne!(
        sv[0][0], sv[1][0],
        "SV joined A's and C's victims through burglary B, a crime its filter excludes"
    );
    assert_ne!(
        sv[0][1], sv[1][1],
        "SV joined A's and C's suspects through burglary B, a crime its filter excludes"
    );
    ensure!(gw.stop()?.success(), "the gateway did not stop cleanly");
    Ok(())
}

/// A one-row police_crime export: the first row of `raw` the serious-violence filter admits,
/// under a new crime reference (a record the gateway has not seen).
fn one_more_crime(raw: &Path, out: &Path) -> Result<()> {
    let codes = sv_offence_codes()?;
    let (header, rows) = read_csv(raw)?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{} has no column {name}", raw.display()))
    };
    let (key, code) = (col("crime_ref")?, col("ho_offence_code")?);
    let mut row = rows
        .into_iter()
        .find(|r| codes.contains(&r[code]))
        .context("no row of the export is admitted by the serious-violence filter")?;
    row[key] = "differencing-one-more".into();
    let mut w = csv::Writer::from_path(out)?;
    w.write_record(&header)?;
    w.write_record(&row)?;
    w.flush()?;
    Ok(())
}

/// Case 22, differencing: a table, the same records counted by other fields (released, flagged
/// by a count of earlier tables, naming none, verifies), one more record pushed, the first table
/// asked again: refused by `disclosure.differencing` (PermissionDenied) without naming the
/// earlier release to the analyst, nothing written, and the audit export holds the deny entry
/// naming the rule and, for auditors, the earlier release.
#[test]
fn a_table_asked_again_after_one_more_record_is_refused_as_differencing() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let exports = pki.path().join("exports");
    let crime = synth_catalog("met-police", 300, SEED, &exports)?
        .remove("police_crime")
        .context("no police_crime export")?;
    push_ok(&pki, &gw, "met-police", "police_crime", &crime)?;
    let analyst = pki.analyst_config();
    let base = pki.path().join("differencing");
    let table = |by: &str, out: &Path| {
        run_aggregate(&analyst, &gw, SV, SV_PURPOSE, "police_crime", by, out)
    };

    let first_dir = base.join("by-ward");
    succeeded(table("wd22cd", &first_dir)?, "the first table")?;
    let first = manifest_in(&first_dir)?;
    ensure!(first.release.shares_population_with_earlier_tables == 0);

    // The same records by other fields: released, naming the first, and it verifies.
    let linked_dir = base.join("by-group");
    succeeded(table("ho_offence_group", &linked_dir)?, "the linked table")?;
    let linked = manifest_in(&linked_dir)?;
    assert_eq!(linked.release.shares_population_with_earlier_tables, 1);
    let sent = std::fs::read_to_string(linked_dir.join("manifest.json"))?;
    ensure!(
        !sent.contains(&first.release.release_id),
        "the linked table's manifest names the earlier release"
    );
    succeeded(
        verify_release(&pki, &linked_dir)?,
        "verify-release of the linked table",
    )?;

    // One more record, then the first table again.
    let one = exports.join("one-more-crime.csv");
    one_more_crime(&crime, &one)?;
    push_ok(&pki, &gw, "met-police", "police_crime", &one)?;
    let again_dir = base.join("by-ward-again");
    let again = table("wd22cd", &again_dir)?;
    ensure!(
        !again.status.success(),
        "the table one record later was released: {}",
        text(&again)
    );
    let err = String::from_utf8_lossy(&again.stderr);
    ensure!(err.contains("PermissionDenied"), "{}", text(&again));
    ensure!(
        err.contains("denied by rule disclosure.differencing:"),
        "{}",
        text(&again)
    );
    ensure!(
        err.contains("an earlier table of police_crime (released "),
        "the refusal says an earlier table is too close: {}",
        text(&again)
    );
    ensure!(
        !err.contains(&first.release.release_id) && !err.contains(&linked.release.release_id),
        "the refusal names an earlier release to the analyst: {}",
        text(&again)
    );
    ensure!(
        folder_names(&again_dir)?.is_empty(),
        "files written: {:?}",
        folder_names(&again_dir)?
    );
    let n = refusal_entry(&again).with_context(|| format!("no audit entry: {}", text(&again)))?;

    let entries = exported_entries(&pki, &gw, "audit.txt")?;
    let e = entries
        .iter()
        .find(|e| e.seq == n)
        .with_context(|| format!("audit entry {n} not exported"))?;
    assert_eq!(e.action.as_str(), "deny");
    assert_eq!(e.decision.as_str(), "deny");
    assert_eq!(e.actor.id, "rbk-analyst");
    let reason = e.reason.as_deref().unwrap_or_default();
    ensure!(
        reason.starts_with("disclosure.differencing: ")
            && [&first, &linked].iter().any(|m| {
                reason.contains(&format!(
                    "the earlier table is release {} (audit entry {}",
                    m.release.release_id, m.audit.entry_index
                ))
            }),
        "reason {reason:?}"
    );
    assert!(e.release.is_none() && e.released_sha256.is_none());
    let linked_entry = entries
        .iter()
        .find(|e| e.seq == linked.audit.entry_index)
        .context("the linked table's entry")?;
    ensure!(
        linked_entry
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("disclosure.linked-tables: ")
                && r.contains("the records of 1 earlier table(s) of police_crime")
                && !r.contains(&first.release.release_id)),
        "the linked table's entry: {:?}",
        linked_entry.reason
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action.as_str() == "release")
            .count(),
        2,
        "two tables released"
    );
    ensure!(gw.stop()?.success(), "the gateway did not stop cleanly");
    Ok(())
}
