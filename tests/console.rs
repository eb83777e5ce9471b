//! End-to-end test of the console in a real browser: a gateway with records pushed by every
//! agency, extracts and an aggregate released, a refused request, and agreements that have just
//! expired, end or fall due for review within 60 days, or are overdue for review; headless
//! Chromium (Debian's `chromium`, driven by Playwright from `tests/console/console-e2e.mjs`)
//! signs in as an auditor, filters the log to one agreement, opens an entry and sees its proof
//! verified, sees the agreements flagged, looks up a person's releases, and is refused with an
//! analyst token. Screenshots and the HTML of every page are kept in `target/console-e2e/`
//! (`NN-failed.png`/`NN-failed.html` when step NN fails). Then every page the browser saw, every page
//! of the console fetched with the auditor's bearer token (the whole log, every entry, releases,
//! agreements, checkpoint, metrics, a person lookup) and the public register are searched for
//! each identifier, person id, record key and person token of the data: none may appear. The
//! register must list exactly the releases made, each with its audit entry.
//!
//! Needs Node.js 20+, `npm ci` in `tests/console` and `/usr/bin/chromium` (or `CHROMIUM`):
//! `scripts/test.sh` installs them when missing (`scripts/browser-tools.sh`).

use aho_corasick::AhoCorasick;
use anyhow::{Context, Result, bail, ensure};
use e2e::{
    GatewayProc, Pki, audit_entries, config_with_console, console_port, console_request,
    export_audit, person_tokens, push_ok, run_aggregate, run_audit_person, run_extract,
    run_gateway, synth_catalog, text, workspace_root,
};
use skp_core::{FieldClass, FieldType};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const SV: &str = "SKP-ISA-SV-01";
const SV_PURPOSE: &str = "serious-violence-sna";
const SV_FIELDS: &str = "police_crime.ho_offence_group,police_crime.committed_from:year,police_crime.victim_sex,police_crime.suspect_sex";
const EXPIRING: &str = "SKP-ISA-EXPIRING-01";
/// An agreement that ends, and is due for review, about 30 days from now.
const DUE: &str = "SKP-ISA-DUE-01";
/// An agreement in force whose review date has passed.
const OVERDUE: &str = "SKP-ISA-OVERDUE-01";
/// Where the browser test keeps its screenshots and page HTML.
const OUT_DIR: &str = "target/console-e2e";

/// An RFC 3339 instant `secs` seconds from now (negative: ago), in whole seconds.
fn rfc3339_in(secs: i64) -> Result<String> {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    Ok(t.replace_nanosecond(0)?
        .format(&time::format_description::well_known::Rfc3339)?)
}

/// `hate-crime.toml` with the id, title and the given `(from, to)` line edits, each of which
/// must apply.
fn hate_crime_copy(src: &str, id: &str, title: &str, edits: &[(&str, String)]) -> Result<String> {
    let mut text = src
        .replace("id = \"SKP-ISA-HATE-01\"", &format!("id = \"{id}\""))
        .replace(
            "title = \"Hate crime monitoring\"",
            &format!("title = \"{title}\""),
        );
    ensure!(
        text.contains(&format!("id = \"{id}\"")),
        "hate-crime.toml changed: the test's id edit no longer applies"
    );
    for (from, to) in edits {
        ensure!(
            text.contains(from),
            "hate-crime.toml changed: the test's edit of {from:?} no longer applies"
        );
        text = text.replace(from, to);
    }
    Ok(text)
}

/// The agreements of the repository plus three copies of the hate crime agreement (each with
/// its own id; purpose ids need only be unique within a file): one that ends `secs` seconds
/// from now, one that ends in 30 days and is due for review in 28, and one in force whose
/// review date passed 10 days ago.
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
    const UNTIL: &str = "valid_until = 2027-12-31T23:59:59Z";
    const REVIEW: &str = "review_by = 2026-12-31T23:59:59Z";
    let hate = std::fs::read_to_string(src.join("hate-crime.toml"))?;
    let day = 86_400;
    let copies = [
        (
            "expiring.toml",
            hate_crime_copy(
                &hate,
                EXPIRING,
                "Hate crime monitoring (pilot, ending)",
                &[(UNTIL, format!("valid_until = {}", rfc3339_in(secs)?))],
            )?,
        ),
        (
            "due.toml",
            hate_crime_copy(
                &hate,
                DUE,
                "Hate crime monitoring (extension, ending soon)",
                &[
                    (UNTIL, format!("valid_until = {}", rfc3339_in(30 * day)?)),
                    (REVIEW, format!("review_by = {}", rfc3339_in(28 * day)?)),
                ],
            )?,
        ),
        (
            "overdue.toml",
            hate_crime_copy(
                &hate,
                OVERDUE,
                "Hate crime monitoring (review overdue)",
                &[(REVIEW, format!("review_by = {}", rfc3339_in(-10 * day)?))],
            )?,
        ),
    ];
    for (file, text) in copies {
        std::fs::write(dir.join(file), text)?;
    }
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

/// Node.js 20+, the Playwright package and Chromium, or a message saying how to get them.
fn browser_tools() -> Result<(PathBuf, PathBuf)> {
    let dir = workspace_root().join("tests/console");
    ensure!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/console/node_modules is missing: run scripts/browser-tools.sh (scripts/test.sh \
         does)"
    );
    // Playwright exits on Node.js older than 20 (Debian 12's own `nodejs` is 18).
    let o = Command::new("node")
        .arg("--version")
        .output()
        .context("cannot run node: run scripts/browser-tools.sh, which installs Node.js 20+")?;
    let version = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    ensure!(
        major >= 20,
        "node on PATH is {version:?}; Playwright needs Node.js 20 or later: run \
         scripts/browser-tools.sh and put target/tools/node/bin first on PATH (scripts/test.sh \
         does)"
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

/// How a value is looked for in the text searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    /// Anywhere, also inside a longer word.
    Anywhere,
    /// As a whole word: the characters either side are not letters or digits.
    Word,
    /// As a whole cell: an element's whole text (`>v<`), a quoted value (`"v"`) or a CSV
    /// field (`,v,`).
    Cell,
}

/// The values that must not appear, and how each is looked for.
#[derive(Default)]
struct Needles {
    values: BTreeMap<String, Match>,
}

impl Needles {
    /// Adds `v` (and its HTML-escaped form); a value added twice keeps the stricter match.
    fn add(&mut self, v: &str, how: Match) {
        if v.is_empty() {
            return;
        }
        let escaped = v
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;");
        for s in [v.to_owned(), escaped] {
            let m = self.values.entry(s).or_insert(how);
            *m = match (*m, how) {
                (Match::Anywhere, _) | (_, Match::Anywhere) => Match::Anywhere,
                (Match::Word, _) | (_, Match::Word) => Match::Word,
                _ => Match::Cell,
            };
        }
    }

    /// Every value found in `haystacks` (name, text), as "value (match) in name: context".
    fn search(&self, haystacks: &[(String, String)]) -> Result<Vec<String>> {
        let patterns: Vec<(&String, &Match)> = self.values.iter().collect();
        let ac = AhoCorasick::new(patterns.iter().map(|(v, _)| v.as_str()))?;
        let mut found = Vec::new();
        for (name, hay) in haystacks {
            for m in ac.find_overlapping_iter(hay.as_str()) {
                let (value, how) = patterns[m.pattern().as_usize()];
                let before = hay[..m.start()].chars().next_back();
                let after = hay[m.end()..].chars().next();
                let hit = match how {
                    Match::Anywhere => true,
                    Match::Word => {
                        !before.is_some_and(char::is_alphanumeric)
                            && !after.is_some_and(char::is_alphanumeric)
                    }
                    Match::Cell => {
                        before.is_none_or(|c| matches!(c, '>' | '"' | ',' | '\n'))
                            && after.is_none_or(|c| matches!(c, '<' | '"' | ',' | '\r' | '\n'))
                    }
                };
                if hit {
                    let mut from = m.start().saturating_sub(60);
                    while !hay.is_char_boundary(from) {
                        from -= 1;
                    }
                    let mut to = (m.end() + 60).min(hay.len());
                    while !hay.is_char_boundary(to) {
                        to += 1;
                    }
                    found.push(format!(
                        "{value:?} ({how:?}) in {name}: …{}…",
                        &hay[from..to]
                    ));
                }
            }
        }
        Ok(found)
    }
}

/// The values of the synthetic exports to look for, by the catalog's class and type of each
/// column:
///
/// - direct identifiers (names, dates of birth, NHS and PNC numbers, references, postcodes,
///   UPRNs), however short: shown anywhere as a word, they are a leak. A value of 8 or more
///   characters with a digit in it (a date of birth, an NHS number, a reference) cannot occur
///   by chance, so it is looked for anywhere, also inside a longer word; other values (names,
///   short references) as whole words, case-sensitive, so that "Li" in "<link" or "King" in
///   "Kingston" is not taken for a surname while "Li" between spaces, tags or quotes is.
/// - other free text and date-times (a location description, a code, the time of an event):
///   not identifying alone, and some are also words the console uses itself (a town, a
///   street), so they are looked for as whole cells only, which is how a page or the
///   register would show a record's value.
/// - enums, sets, flags, numbers and other dates are left out: catalog vocabulary, counts and
///   dates that the pages print for their own reasons (an agreement's end date, a row count).
fn export_needles(files: &[(String, PathBuf)], needles: &mut Needles) -> Result<()> {
    let catalog = skp_core::Catalog::embedded()?;
    for (dataset, file) in files {
        let ds = catalog
            .dataset(dataset)
            .with_context(|| format!("synth wrote {dataset}, which the catalog lacks"))?;
        for row in csv_rows(file)? {
            for (column, v) in &row {
                let Some(field) = ds.field(column) else {
                    continue;
                };
                if field.class == FieldClass::Direct {
                    let long = v.chars().count() >= 8 && v.chars().any(|c| c.is_ascii_digit());
                    needles.add(v, if long { Match::Anywhere } else { Match::Word });
                } else if matches!(field.ty, FieldType::Str | FieldType::Datetime) {
                    needles.add(v, Match::Cell);
                }
            }
        }
    }
    Ok(())
}

/// Hex of every record key and person token in the store at `data` (the gateway stopped),
/// whole and its first 16 digits (a page showing a shortened token would show those).
fn store_needles(data: &Path, needles: &mut Needles) -> Result<usize> {
    let store = gateway::store::Store::open(data)
        .with_context(|| format!("cannot open the store in {}", data.display()))?;
    let snapshot = store.snapshot(&[], 0)?;
    let mut n = 0;
    for seq in snapshot.seqs() {
        let Some(rec) = store.record_at(seq)?.and_then(|r| r.record) else {
            continue;
        };
        let mut add = |bytes: &[u8]| {
            let h = hex::encode(bytes);
            needles.add(&h[..16.min(h.len())], Match::Anywhere);
            needles.add(&h, Match::Anywhere);
            n += 1;
        };
        add(&rec.record_key);
        for p in &rec.persons {
            for t in &p.tokens {
                add(&t.token);
            }
        }
    }
    Ok(n)
}

#[test]
fn the_needle_search_finds_words_and_cells_and_ignores_parts_of_words() -> Result<()> {
    let mut n = Needles::default();
    n.add("Li", Match::Word);
    n.add("Kingston", Match::Cell);
    n.add("1999-07-15", Match::Anywhere);
    n.add("O'Brien", Match::Word);
    let pages = |t: &str| vec![("page".to_owned(), t.to_owned())];
    assert!(
        n.search(&pages("<link> Lisa Kingston Partnership"))?
            .is_empty()
    );
    assert_eq!(n.search(&pages("<td>Li</td>"))?.len(), 1);
    assert_eq!(n.search(&pages("a,Kingston,b"))?.len(), 1);
    assert_eq!(n.search(&pages("x1999-07-15T00"))?.len(), 1);
    assert_eq!(n.search(&pages("<td>O&#39;Brien</td>"))?.len(), 1);
    Ok(())
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
    cfg.push_str(&format!("\n[policy]\ndir = \"{}\"\n", agreements.display()));
    std::fs::write(&config, cfg)?;
    let mut gw = GatewayProc::start(&config_with_console(&pki)?)?;
    let port = console_port(&gw)?;

    // Every agency pushes every dataset it owns (one synthetic population, as `gateway demo`).
    let data = pki.path().join("exports");
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for agency in skp_core::ids::KINGSTON_AGENCIES {
        for (dataset, file) in synth_catalog(agency, 300, 7, &data.join(agency))? {
            push_ok(&pki, &gw, agency, &dataset, &file)?;
            files.push((dataset, file));
        }
    }
    ensure!(
        files.len() >= 10,
        "synth wrote only {} datasets",
        files.len()
    );
    let crime = files
        .iter()
        .find(|(d, _)| d == "police_crime")
        .map(|(_, f)| f.clone())
        .context("no police_crime export")?;

    // Two extracts and an aggregate table released under SV, and a refused request.
    let releases = pki.path().join("releases");
    let extracts = ["a", "b"];
    for n in extracts {
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
    let o = run_aggregate(
        &pki.analyst_config(),
        &gw,
        SV,
        SV_PURPOSE,
        "police_crime",
        "wd22cd,ho_offence_group",
        &releases.join("table"),
    )?;
    ensure!(o.status.success(), "aggregate failed: {}", text(&o));
    let made = extracts.len() + 1;
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
    let out_dir = workspace_root().join(OUT_DIR);
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
        .env("DUE_AGREEMENT", DUE)
        .env("OVERDUE_AGREEMENT", OVERDUE)
        .env("PERSON_TOKENS", tokens.join("\n"))
        .env("EXPECT_RELEASES", expected.to_string())
        .env("OUT_DIR", &out_dir)
        .env("CHROMIUM", &chromium)
        .output()
        .context("cannot run node (install Node.js 20 or later: scripts/browser-tools.sh)")?;
    let said = text(&o);
    println!("{said}");
    ensure!(
        o.status.success(),
        "the browser test failed; screenshots and page HTML, the failing page as NN-failed.png \
         and NN-failed.html, are in {}:\n{said}",
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

    // Every page the browser saw, and every page of the console fetched directly: the whole
    // log, each entry with its proof, releases, agreements, checkpoint, metrics, a lookup.
    let mut pages: Vec<(String, String)> = Vec::new();
    for e in std::fs::read_dir(&out_dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "html") {
            pages.push((p.display().to_string(), std::fs::read_to_string(&p)?));
        }
    }
    let (status, checkpoint) = console_request(&pki, &port, "/checkpoint", Some(&auditor), &[])?;
    ensure!(status == 200, "/checkpoint: HTTP {status}\n{checkpoint}");
    let size: u64 = checkpoint
        .split_once("<td id=\"size\">")
        .and_then(|(_, rest)| rest.split_once('<'))
        .and_then(|(n, _)| n.parse().ok())
        .context("no log size on /checkpoint")?;
    ensure!(
        size < 1000,
        "the log has {size} entries: more than one page"
    );
    pages.push(("/checkpoint".into(), checkpoint));
    for path in [
        "/entries?limit=1000".to_owned(),
        "/releases".into(),
        "/agreements".into(),
        "/metrics".into(),
        "/person".into(),
    ]
    .into_iter()
    .chain((0..size).map(|i| format!("/entries/{i}")))
    {
        let (status, page) = console_request(&pki, &port, &path, Some(&auditor), &[])?;
        ensure!(status == 200, "{path}: HTTP {status}\n{page}");
        pages.push((path, page));
    }
    let (status, lookup) = console_request(
        &pki,
        &port,
        "/person",
        Some(&auditor),
        &[("tokens", &tokens.join("\n"))],
    )?;
    ensure!(status == 200, "POST /person: HTTP {status}\n{lookup}");
    ensure!(
        lookup.contains(&format!("<b id=\"release-count\">{expected}</b>")),
        "the lookup by curl finds {expected} release(s):\n{lookup}"
    );
    pages.push(("POST /person".into(), lookup));

    // The refusal and the sign-in left their entries; the register lists exactly the releases.
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
    let exported = std::fs::read_to_string(&export)?;
    assert!(
        exported.contains("lacks the role auditor or admin"),
        "the analyst's refused sign-in is audited"
    );
    check_register(&register.join("releases.csv"), &export, made)?;
    for file in ["index.html", "releases.csv"] {
        let p = register.join(file);
        pages.push((p.display().to_string(), std::fs::read_to_string(&p)?));
    }

    // What must not appear: the exports' values, the released person ids, the person's
    // tokens, the JWTs' signatures, and (read once the gateway has stopped) every record key
    // and person token in the store.
    let mut needles = Needles::default();
    export_needles(&files, &mut needles)?;
    for n in extracts {
        for r in csv_rows(&releases.join(n).join("police_crime.csv"))? {
            for (c, v) in &r {
                if c.ends_with("_person_id") {
                    needles.add(v, Match::Anywhere);
                }
            }
        }
    }
    for t in &tokens {
        let h = t.split_once(':').map_or(t.as_str(), |(_, h)| h);
        needles.add(&h[..16.min(h.len())], Match::Anywhere);
    }
    for jwt in [&auditor, &analyst] {
        let signature = jwt.trim().rsplit('.').next().unwrap_or_default();
        needles.add(
            &signature.chars().take(30).collect::<String>(),
            Match::Anywhere,
        );
    }
    ensure!(gw.stop()?.success(), "gateway did not stop cleanly");
    let stored = store_needles(&pki.path().join("data"), &mut needles)?;
    ensure!(
        stored > 3000,
        "only {stored} record keys and tokens in the store"
    );
    let by_match = |m: Match| needles.values.values().filter(|&&x| x == m).count();
    println!(
        "searched {} pages ({} bytes) and the register for {} values ({} anywhere, {} as words, \
         {} as cells)",
        pages.len(),
        pages.iter().map(|(_, p)| p.len()).sum::<usize>(),
        needles.values.len(),
        by_match(Match::Anywhere),
        by_match(Match::Word),
        by_match(Match::Cell)
    );
    let found = needles.search(&pages)?;
    ensure!(
        found.is_empty(),
        "{} values of the data appear in the pages or the register:\n{}",
        found.len(),
        found
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// `releases.csv` has one row per release of SV made in the test (`made`), each naming the
/// index of its `release` entry in the audit export, with its datasets and rows.
fn check_register(csv: &Path, export: &Path, made: usize) -> Result<()> {
    let rows: Vec<BTreeMap<String, String>> = csv_rows(csv)?
        .into_iter()
        .filter(|r| r.get("agreement").map(String::as_str) == Some(SV))
        .collect();
    let released: Vec<gateway::audit::entry::Entry> = audit_entries(export)?
        .into_iter()
        .filter(|e| {
            e.action.as_str() == "release"
                && e.decision.as_str() == "allow"
                && e.agreement.as_ref().is_some_and(|a| a.id == SV)
        })
        .collect();
    ensure!(
        released.len() == made,
        "the audit export has {} release entries of {SV}; the test made {made}",
        released.len()
    );
    ensure!(
        rows.len() == made,
        "releases.csv has {} rows of {SV}; the test made {made} releases:\n{rows:#?}",
        rows.len()
    );
    let listed: BTreeSet<u64> = rows
        .iter()
        .map(|r| r["audit_entry"].parse::<u64>())
        .collect::<Result<_, _>>()
        .context("an audit_entry of releases.csv is not a number")?;
    let entries: BTreeSet<u64> = released.iter().map(|e| e.seq).collect();
    ensure!(
        listed == entries,
        "releases.csv names audit entries {listed:?}; the release entries are {entries:?}"
    );
    for e in &released {
        let r = rows
            .iter()
            .find(|r| r["audit_entry"] == e.seq.to_string())
            .context("a release entry without its row")?;
        ensure!(
            r["datasets"] == "police_crime" && r["datasets"] == e.datasets.join(";"),
            "row of entry {}: datasets {:?}, the entry {:?}",
            e.seq,
            r["datasets"],
            e.datasets
        );
        let n: u64 = r["rows"].parse().context("rows is not a number")?;
        ensure!(
            n > 0 && Some(n) == e.rows,
            "row of entry {}: rows {n}, the entry {:?}",
            e.seq,
            e.rows
        );
        ensure!(
            r["purpose"] == SV_PURPOSE
                && r["recipient_organisation"] == "rbk-council"
                && Some(&r["release_id"]) == e.release.as_ref()
                && Some(&r["released_sha256"]) == e.released_sha256.as_ref(),
            "row of entry {}: {r:?} does not match the entry",
            e.seq
        );
    }
    Ok(())
}
