//! End-to-end test of the console in a real browser: a gateway with pushed records, releases and
//! an agreement that has just expired; headless Chromium (Debian's `chromium`, driven by
//! Playwright from `tests/console/console-e2e.mjs`) signs in as an auditor, filters the log to
//! one agreement, opens an entry and sees its proof verified, sees the expired agreement
//! flagged, looks up a person's releases, and is refused with an analyst token. Screenshots
//! and the HTML of every page are kept in `target/console-e2e/`. Then every page served, and
//! the public register, is searched for each identifier and person id of the data: none may
//! appear.
//!
//! Needs Node.js, `npm ci` in `tests/console` and `/usr/bin/chromium` (or `CHROMIUM`):
//! `scripts/test.sh` installs them when missing.

use anyhow::{Context, Result, bail, ensure};
use e2e::{
    GatewayProc, Pki, export_audit, person_tokens, push_ok, run_audit_person, run_extract,
    run_gateway, synth_catalog, text, workspace_root,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SV: &str = "SKP-ISA-SV-01";
const SV_PURPOSE: &str = "serious-violence-sna";
const SV_FIELDS: &str = "police_crime.ho_offence_group,police_crime.committed_from:year,police_crime.victim_sex,police_crime.suspect_sex";
const EXPIRING: &str = "SKP-ISA-EXPIRING-01";
/// Columns of the source export that identify a person.
const IDENTIFIERS: [&str; 8] = [
    "victim_surname",
    "victim_forename",
    "victim_dob",
    "victim_pnc_id",
    "suspect_surname",
    "suspect_forename",
    "suspect_dob",
    "suspect_pnc_id",
];

/// The console's port, from the gateway's log line `console listening ... 127.0.0.1:PORT`.
fn console_port(gw: &GatewayProc) -> Result<String> {
    let log = gw.log();
    log.lines()
        .find(|l| l.contains("console listening"))
        .and_then(|l| l.rsplit("127.0.0.1:").next())
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|port| !port.is_empty())
        .with_context(|| format!("no console address in the log:\n{log}"))
}

/// The agreements of the repository plus one that ends `secs` seconds from now.
fn policy_dir(pki: &Pki, secs: i64) -> Result<PathBuf> {
    let dir = pki.path().join("agreements");
    std::fs::create_dir_all(&dir)?;
    let src = workspace_root().join("policies/agreements");
    for e in std::fs::read_dir(&src)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, dir.join(p.file_name().context("a file name")?))?;
        }
    }
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    let until = until
        .replace_nanosecond(0)?
        .format(&time::format_description::well_known::Rfc3339)?;
    let hate = std::fs::read_to_string(src.join("hate-crime.toml"))?;
    let expiring = hate
        .replace("id = \"SKP-ISA-HATE-01\"", &format!("id = \"{EXPIRING}\""))
        .replace(
            "valid_until = 2027-12-31T23:59:59Z",
            &format!("valid_until = {until}"),
        )
        .replace(
            "title = \"Hate crime monitoring\"",
            "title = \"Hate crime monitoring (pilot, ending)\"",
        );
    ensure!(
        expiring.contains(EXPIRING) && expiring.contains(&until),
        "hate-crime.toml changed: the test's edits no longer apply"
    );
    std::fs::write(dir.join("expiring.toml"), expiring)?;
    Ok(dir)
}

/// The CSV's rows as column name → value.
fn csv_rows(path: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    let mut r = csv::Reader::from_path(path)?;
    let header = r.headers()?.clone();
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec?;
        out.push(
            header
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect(),
        );
    }
    Ok(out)
}

/// `gateway audit person`'s count of releases for `tokens`.
fn releases_of(pki: &Pki, gw: &GatewayProc, tokens: &[String]) -> Result<usize> {
    let o = run_audit_person(&pki.auditor_config(), gw, tokens)?;
    ensure!(o.status.success(), "gateway audit person: {}", text(&o));
    let out = text(&o);
    let n = out
        .split("; ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no release count in: {out}"))?;
    Ok(n)
}

/// The JWT's `sub` claim (payload decoded without checking: the gateway checks it).
fn jwt_sub(token: &str) -> Result<String> {
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = base64_url_decode(payload)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    Ok(v["sub"].as_str().context("no sub")?.to_owned())
}

fn base64_url_decode(s: &str) -> Result<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => bail!("not base64url"),
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Ok(out)
}

/// Node.js, the Playwright package and Chromium, or a message saying how to get them.
fn browser_tools() -> Result<(PathBuf, PathBuf)> {
    let dir = workspace_root().join("tests/console");
    ensure!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/console/node_modules is missing: run `npm ci --prefix tests/console` \
         (scripts/test.sh does)"
    );
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    ensure!(
        chromium.is_file(),
        "{} is missing: install Debian's chromium package (scripts/test.sh does) or set CHROMIUM",
        chromium.display()
    );
    Ok((dir, chromium))
}

#[test]
fn an_auditor_uses_the_console_in_a_browser_and_no_page_shows_personal_data() -> Result<()> {
    let (script_dir, chromium) = browser_tools()?;
    let pki = Pki::new()?;
    // The expiring agreement must outlast start-up (an expired agreement refuses the load)
    // and then end before the browser looks.
    let expires_in = 20;
    let started = std::time::Instant::now();
    let agreements = policy_dir(&pki, expires_in)?;
    let config = pki.gateway_config();
    let mut cfg = std::fs::read_to_string(&config)?;
    cfg.push_str(&format!(
        "\n[policy]\ndir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n",
        agreements.display()
    ));
    std::fs::write(&config, cfg)?;
    let mut gw = GatewayProc::start(&config)?;
    let port = console_port(&gw)?;

    // Records, two releases, and a refused request.
    let data = pki.path().join("exports");
    let crime = synth_catalog("met-police", 300, 7, &data)?
        .remove("police_crime")
        .context("no police_crime export")?;
    push_ok(&pki, &gw, "met-police", "police_crime", &crime)?;
    let releases = pki.path().join("releases");
    for n in ["a", "b"] {
        let o = run_extract(
            &pki.analyst_config(),
            &gw,
            SV,
            SV_PURPOSE,
            &["--datasets", "police_crime", "--fields", SV_FIELDS],
            &releases.join(n),
        )?;
        ensure!(o.status.success(), "extract failed: {}", text(&o));
    }
    let o = run_extract(
        &pki.analyst_config(),
        &gw,
        SV,
        "serious-violence-sna-probation",
        &[],
        &releases.join("refused"),
    )?;
    ensure!(!o.status.success(), "a refused extract succeeded");

    // A person who was in a release, by their tokens as their agency computes them.
    let rows = csv_rows(&crime)?;
    let mut person = None;
    for r in rows
        .iter()
        .filter(|r| !r["victim_surname"].is_empty())
        .take(40)
    {
        let mut args = vec![
            "--surname",
            r["victim_surname"].as_str(),
            "--forename",
            r["victim_forename"].as_str(),
            "--dob",
            r["victim_dob"].as_str(),
            "--sex",
            r["victim_sex"].as_str(),
        ];
        if !r["victim_pnc_id"].is_empty() {
            args.extend(["--pnc", r["victim_pnc_id"].as_str()]);
        }
        let tokens = person_tokens(&pki, "met-police", &args)?;
        let n = releases_of(&pki, &gw, &tokens)?;
        if n > 0 {
            person = Some((tokens, n));
            break;
        }
    }
    let (tokens, expected) = person.context("no person of the first 40 rows was released")?;

    // Wait for the pilot agreement to end.
    let end = std::time::Duration::from_secs(expires_in as u64 + 1);
    if let Some(left) = end.checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }

    let auditor = std::fs::read_to_string(pki.path().join("auditors/ig-officer.jwt"))?;
    let analyst = std::fs::read_to_string(pki.path().join("analysts/rbk-analyst.jwt"))?;
    let out_dir = workspace_root().join("target/console-e2e");
    let _ = std::fs::remove_dir_all(&out_dir);
    let o = Command::new("node")
        .arg(script_dir.join("console-e2e.mjs"))
        .current_dir(&script_dir)
        .env("CONSOLE_URL", format!("https://127.0.0.1:{port}"))
        .env("AUDITOR_TOKEN", auditor.trim())
        .env("AUDITOR_SUB", jwt_sub(auditor.trim())?)
        .env("ANALYST_TOKEN", analyst.trim())
        .env("AGREEMENT", SV)
        .env("EXPIRED_AGREEMENT", EXPIRING)
        .env("PERSON_TOKENS", tokens.join("\n"))
        .env("EXPECT_RELEASES", expected.to_string())
        .env("OUT_DIR", &out_dir)
        .env("CHROMIUM", &chromium)
        .output()
        .context("cannot run node (install Node.js 20 or later)")?;
    let said = text(&o);
    println!("{said}");
    ensure!(
        o.status.success(),
        "the browser test failed (screenshots in {}):\n{said}",
        out_dir.display()
    );
    let shots = std::fs::read_dir(&out_dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    ensure!(
        shots >= 7,
        "only {shots} screenshots in {}",
        out_dir.display()
    );

    // The refusal and the sign-in left their entries; nothing personal is in any page.
    let mut pages = String::new();
    for e in std::fs::read_dir(&out_dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "html") {
            pages.push_str(&std::fs::read_to_string(&p)?);
        }
    }
    let export = pki.path().join("audit-export.txt");
    export_audit(&pki, &gw, &export)?;
    let register = pki.path().join("register");
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
    let register_text = std::fs::read_to_string(register.join("index.html"))?
        + &std::fs::read_to_string(register.join("releases.csv"))?;
    let exported = std::fs::read_to_string(&export)?;
    assert!(
        exported.contains("lacks the role auditor or admin"),
        "the analyst's refused sign-in is audited"
    );

    // Every identifier of the source export, and every other value long enough not to occur
    // by chance in a page's own text (codes, references, dates, free text).
    let mut secrets: Vec<String> = Vec::new();
    for r in &rows {
        for (c, v) in r {
            let long_enough = if IDENTIFIERS.contains(&c.as_str()) {
                5
            } else {
                8
            };
            if v.chars().count() >= long_enough {
                secrets.push(v.clone());
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    for n in ["a", "b"] {
        for r in csv_rows(&releases.join(n).join("police_crime.csv"))? {
            for c in ["victim_person_id", "suspect_person_id"] {
                if let Some(v) = r.get(c).filter(|v| !v.is_empty()) {
                    secrets.push(v.clone());
                }
            }
        }
    }
    for t in &tokens {
        secrets.push(t.split_once(':').map_or(t.as_str(), |(_, h)| h)[..16].to_owned());
    }
    for jwt in [&auditor, &analyst] {
        let signature = jwt.trim().rsplit('.').next().unwrap_or_default();
        secrets.push(signature.chars().take(30).collect());
    }
    ensure!(secrets.len() > 100, "too few values to search for");
    println!(
        "searched {} bytes of pages and the register for {} values",
        pages.len() + register_text.len(),
        secrets.len()
    );
    for s in &secrets {
        assert!(!pages.contains(s.as_str()), "a console page shows {s:?}");
        assert!(
            !register_text.contains(s.as_str()),
            "the register shows {s:?}"
        );
    }
    ensure!(gw.stop()?.success(), "gateway did not stop cleanly");
    Ok(())
}
