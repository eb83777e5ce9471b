//! End-to-end linked releases: a real `gateway serve`, real agents pushing synthetic police data
//! over mutual TLS, and the analyst's and IG officer's commands as they would run them:
//! `gateway extract`, `gateway aggregate`, `gateway audit verify-release` (tampering caught),
//! person ids per purpose, refusals, and `agent person-token` + `gateway audit person`.

use anyhow::{Context, Result, bail, ensure};
use e2e::{GatewayProc, Pki, audit_entries, export_audit, push, run_agent, run_gateway, text};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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
    if !gw.stop()?.success() {
        bail!("gateway did not stop cleanly");
    }
    Ok(())
}
