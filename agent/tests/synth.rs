//! Acceptance tests of the synthetic data generator (issue 4): exports pass the agent's own
//! push-path validation, identifier errors and cross-agency links come out at the configured
//! rates, and output is byte-identical for a seed.

use agent::config::AgentConfig;
use agent::pseudonymise::Pseudonymiser;
use agent::synth::errors::{Agency, Role, error, recorded};
use agent::synth::{ErrorRates, Shape, SynthConfig, Volume, generate, population};
use anyhow::{Context, Result};
use skp_core::{Catalog, LinkageKey};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// An agent config for `agency` with the generated mapping appended.
fn agent_config(dir: &Path, agency: &str) -> Result<AgentConfig> {
    let mapping =
        std::fs::read_to_string(dir.join(format!("{agency}.agent.toml"))).unwrap_or_default();
    let text = format!(
        "agency = \"{agency}\"\ngateway = \"https://localhost:7443\"\nstate_dir = \"state\"\n\
         [tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n\
         [linkage_key]\nfile = \"link.key\"\nversion = 1\n{mapping}"
    );
    let path = dir.join(format!("{agency}-agent.toml"));
    std::fs::write(&path, text)?;
    AgentConfig::load(&path)
}

/// One person role of a truth row: (role, person id, errors).
type TruthRole = (String, u64, String);

/// Truth rows: line → roles.
fn truth(dir: &Path, dataset: &str) -> Result<BTreeMap<u64, Vec<TruthRole>>> {
    let mut out: BTreeMap<u64, Vec<TruthRole>> = BTreeMap::new();
    let mut rdr = csv::Reader::from_path(dir.join("truth").join(format!("{dataset}.csv")))?;
    for rec in rdr.records() {
        let rec = rec?;
        let line: u64 = rec[0].parse()?;
        out.entry(line).or_default().push((
            rec[2].to_string(),
            rec[3].parse()?,
            rec[5].to_string(),
        ));
    }
    Ok(out)
}

struct Checked {
    rows: u64,
    rejected: Vec<(u64, String, String)>,
}

/// Runs every row of every export through the agent's reader and pseudonymiser.
fn check_exports(
    dir: &Path,
    written: &[agent::synth::Written],
    cat: &Catalog,
) -> Result<BTreeMap<String, Checked>> {
    let key = LinkageKey::from_bytes(&[7; 32]);
    let mut out = BTreeMap::new();
    for w in written {
        let ds = cat.dataset(&w.dataset).context("dataset")?;
        let cfg = agent_config(dir, ds.owner.as_str())?;
        let mapping = cfg.mapping(&w.dataset);
        let p = Pseudonymiser::new(ds, &mapping, &key);
        let (header, rows) = agent::source::read(&w.path)?;
        let missing: Vec<_> = p
            .missing_columns(&header)
            .into_iter()
            .filter(|m| m.2)
            .collect();
        assert!(
            missing.is_empty(),
            "{}: missing required columns {missing:?}",
            w.dataset
        );
        let mut c = Checked {
            rows: 0,
            rejected: Vec::new(),
        };
        for r in rows {
            let r = r.map_err(|b| anyhow::anyhow!("{}:{}: {}", w.dataset, b.line, b.reason))?;
            c.rows += 1;
            if let Err(e) = p.record(&r) {
                c.rejected.push((r.line, e.field, e.reason));
            }
        }
        assert_eq!(c.rows, w.rows, "{}", w.dataset);
        out.insert(w.dataset.clone(), c);
    }
    Ok(out)
}

#[test]
fn source_exports_pass_validation_except_the_deliberately_invalid_identifiers() -> Result<()> {
    let cat = Catalog::embedded()?;
    let dir = tempfile::tempdir()?;
    let people = population(20_000, 11);
    let mut cfg = SynthConfig::new(11, Shape::Source, Volume::Realistic);
    // Enough invalid identifiers to see several in a modest file.
    cfg.errors.nhs_invalid = 0.02;
    cfg.errors.pnc_invalid = 0.02;
    let written = generate(cat.datasets(), &people, &cfg, dir.path())?;
    assert_eq!(written.len(), cat.datasets().count());
    let checked = check_exports(dir.path(), &written, &cat)?;
    let mut invalid_seen = 0;
    for (dataset, c) in &checked {
        assert!(c.rows > 0, "{dataset} has rows");
        let t = truth(dir.path(), dataset)?;
        // An identifier error counts only where the role's export carries that identifier
        // (the truth records the error for the person as that agency holds them; a council
        // ASB case, say, has no NHS number column).
        let ds = cat.dataset(dataset).context("dataset")?;
        let carries = |role: &str, kind: &str| {
            ds.roles
                .iter()
                .any(|r| r.name == role && r.tokens.iter().any(|t| t.kind == kind))
        };
        let expected: HashSet<u64> = t
            .iter()
            .filter(|(_, roles)| {
                roles.iter().any(|r| {
                    (r.2.contains("nhs_invalid") && carries(&r.0, "nhs"))
                        || (r.2.contains("pnc_invalid") && carries(&r.0, "pnc"))
                })
            })
            .map(|(l, _)| *l)
            .collect();
        let got: HashSet<u64> = c.rejected.iter().map(|r| r.0).collect();
        for (line, field, reason) in &c.rejected {
            assert!(
                reason == "NHS number fails its mod-11 check digit"
                    || reason == "PNC id fails its mod-23 check letter",
                "{dataset}:{line}: field {field} refused for an unexpected reason: {reason}"
            );
        }
        assert_eq!(
            got, expected,
            "{dataset}: rejected lines are exactly the invalid-identifier lines"
        );
        invalid_seen += got.len();
    }
    assert!(
        invalid_seen >= 5,
        "some invalid identifiers were written and refused ({invalid_seen})"
    );
    // The exports really are in the agencies' shapes.
    let police = std::fs::read_to_string(dir.path().join("police_crime.csv"))?;
    assert!(police.starts_with("CRIME_REF,VICTIM_NO,HO_CODE"));
    assert!(
        police
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("/2024") || l.contains("/2023")),
        "police dates are DD/MM/YYYY"
    );
    let icb = std::fs::read_to_string(dir.path().join("icb_ed_assault_mh_linked.csv"))?;
    assert!(
        icb.contains(" 999 ") || icb.contains(",999 "),
        "NHS numbers are spaced 999-range numbers"
    );
    Ok(())
}

#[test]
fn catalog_exports_accept_every_row_at_exact_sizes() -> Result<()> {
    // 150 people and rows (the ingest test's size), and a tiny population that lacks most traits.
    for (persons, rows) in [(150, 150), (3, 40)] {
        catalog_exports(persons, rows)?;
    }
    Ok(())
}

fn catalog_exports(persons: usize, n: u64) -> Result<()> {
    let cat = Catalog::embedded()?;
    let dir = tempfile::tempdir()?;
    let people = population(persons, 7);
    let files = agent::synth::write_datasets(cat.datasets(), &people, n as usize, 7, dir.path())?;
    let written: Vec<agent::synth::Written> = files
        .into_iter()
        .map(|(dataset, path)| agent::synth::Written {
            truth: dir.path().join("truth").join(format!("{dataset}.csv")),
            dataset,
            path,
            rows: n,
        })
        .collect();
    for (dataset, c) in check_exports(dir.path(), &written, &cat)? {
        assert!(c.rejected.is_empty(), "{dataset}: {:?}", c.rejected.first());
    }
    // Record keys are unique in every file (the gateway would count repeats as duplicates).
    for w in &written {
        let t = std::fs::read_to_string(&w.truth)?;
        let mut keys: HashMap<String, u64> = HashMap::new();
        for l in t.lines().skip(1) {
            let mut parts = l.splitn(3, ',');
            let line: u64 = parts.next().context("line")?.parse()?;
            let key = parts.next().context("key")?.to_string();
            let prev = keys.insert(key.clone(), line);
            assert!(
                prev.is_none() || prev == Some(line),
                "{}: key {key} on two lines",
                w.dataset
            );
        }
    }
    Ok(())
}

fn files_under(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for e in walk(dir)? {
        let rel = e.strip_prefix(dir)?.display().to_string();
        out.insert(rel, std::fs::read(&e)?);
    }
    Ok(out)
}

fn walk(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

#[test]
fn same_seed_same_bytes_and_another_seed_differs() -> Result<()> {
    let cat = Catalog::embedded()?;
    let run = |seed: u64| -> Result<(tempfile::TempDir, BTreeMap<String, Vec<u8>>)> {
        let dir = tempfile::tempdir()?;
        let people = population(5_000, seed);
        let cfg = SynthConfig::new(seed, Shape::Source, Volume::Realistic);
        generate(cat.datasets(), &people, &cfg, dir.path())?;
        let files = files_under(dir.path())?;
        Ok((dir, files))
    };
    let (_a, a) = run(5)?;
    let (_b, b) = run(5)?;
    let (_c, c) = run(6)?;
    assert!(a.len() >= 21, "exports, truth and mappings: {}", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{name} differs between two runs with one seed"
        );
    }
    let differing = a
        .iter()
        .filter(|(n, bytes)| c.get(*n) != Some(bytes))
        .count();
    assert!(
        differing >= 20,
        "another seed changes the data files ({differing} differ)"
    );
    Ok(())
}

/// |observed − expected| within 4 standard errors (binomial), plus a small floor.
fn close(observed: u64, trials: u64, p: f64) -> bool {
    let n = trials.max(1) as f64;
    let se = (p * (1.0 - p) / n).sqrt();
    ((observed as f64 / n) - p).abs() <= 4.0 * se + 0.002
}

#[test]
fn error_rates_match_the_configuration_at_100k_persons() {
    let people = population(100_000, 21);
    let rates = ErrorRates::default();
    let cases = [
        (Agency::Police, Role::Suspect),
        (Agency::Council, Role::Other),
        (Agency::Health, Role::Victim),
        (Agency::Probation, Role::Supervised),
    ];
    for (agency, role) in cases {
        let mut applied: HashMap<u32, u64> = HashMap::new();
        let mut eligible: HashMap<u32, u64> = HashMap::new();
        for p in &people {
            let r = recorded(p, agency, role, 0, &rates, true, false, 21);
            for (bit, _) in error::NAMES {
                if r.eligible & bit != 0 {
                    *eligible.entry(*bit).or_default() += 1;
                }
                if r.errors & bit != 0 {
                    *applied.entry(*bit).or_default() += 1;
                }
            }
        }
        let expect: &[(u32, f64)] = &[
            (error::FORENAME_TYPO, rates.forename_typo),
            (error::SURNAME_TYPO, rates.surname_typo),
            (error::NICKNAME, rates.nickname),
            (error::NAME_SWAP, rates.name_swap),
            (error::SURNAME_CHANGE, rates.surname_change),
            (error::SURNAME_HYPHENATED, rates.surname_hyphenated),
            (error::DOB_DAY_MONTH_SWAP, rates.dob_day_month_swap),
            (error::DOB_OTHER, rates.dob_other),
            (error::ADDRESS_STALE, rates.address_stale),
        ];
        for (bit, p) in expect {
            let (a, e) = (
                applied.get(bit).copied().unwrap_or(0),
                eligible.get(bit).copied().unwrap_or(0),
            );
            assert!(e > 1000, "{agency:?}: error {bit} eligible for {e}");
            assert!(close(a, e, *p), "{agency:?}: error {bit}: {a}/{e} vs {p}");
        }
        let nhs_rate = match agency {
            Agency::Council => Some(rates.nhs_missing_council),
            Agency::Health => Some(rates.nhs_missing_health),
            _ => None,
        };
        let missing = applied.get(&error::NHS_MISSING).copied().unwrap_or(0);
        match nhs_rate {
            Some(p) => assert!(
                close(missing, 100_000, p),
                "{agency:?} NHS missing {missing}"
            ),
            None => assert_eq!(
                eligible.get(&error::NHS_MISSING),
                None,
                "{agency:?} holds no NHS number"
            ),
        }
        match agency {
            Agency::Council => assert!(
                missing > 30_000,
                "NHS numbers are often missing outside health ({missing})"
            ),
            Agency::Health => assert!(
                missing < 5_000,
                "NHS numbers are rarely missing in health ({missing})"
            ),
            _ => {}
        }
        if matches!(agency, Agency::Police | Agency::Probation) {
            let e = eligible.get(&error::PNC_MISSING).copied().unwrap_or(0);
            let a = applied.get(&error::PNC_MISSING).copied().unwrap_or(0);
            let p = if agency == Agency::Police {
                rates.pnc_missing_suspect
            } else {
                rates.pnc_missing_probation
            };
            assert!(e > 5000 && close(a, e, p), "{agency:?} PNC missing {a}/{e}");
        }
    }
    let dup = people
        .iter()
        .filter(|p| agent::synth::errors::has_duplicate(21, Agency::Police, p.id, &rates))
        .count() as u64;
    assert!(
        close(dup, 100_000, rates.duplicate_record),
        "duplicates {dup}"
    );
}

/// Reads a CSV into rows of column → value.
fn read(path: &Path) -> Result<Vec<HashMap<String, String>>> {
    let mut rdr = csv::Reader::from_path(path)?;
    let header: Vec<String> = rdr.headers()?.iter().map(str::to_string).collect();
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec?;
        out.push(
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_string))
                .collect(),
        );
    }
    Ok(out)
}

#[test]
fn cross_agency_links_and_flags_match_the_configuration_at_100k_persons() -> Result<()> {
    let cat = Catalog::embedded()?;
    let dir = tempfile::tempdir()?;
    let people = population(100_000, 31);
    let cfg = SynthConfig::new(31, Shape::Source, Volume::Realistic);
    let written = generate(cat.datasets(), &people, &cfg, dir.path())?;
    let rows: HashMap<&str, u64> = written
        .iter()
        .map(|w| (w.dataset.as_str(), w.rows))
        .collect();
    let expected = (72.0 * 100.0 * cfg.years()).round() as u64;
    assert_eq!(
        rows["police_crime"], expected,
        "72 crimes per 1,000 residents a year"
    );

    // Police crime index i is the CRIS number − 5,200,001.
    let police = read(&dir.path().join("police_crime.csv"))?;
    let police_truth = truth(dir.path(), "police_crime")?;
    let index = |r: &HashMap<String, String>| -> u64 {
        r["CRIME_REF"]
            .split('/')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            - 5_200_001
    };
    let mut victim_of: HashMap<u64, u64> = HashMap::new();
    let mut suspect_of: HashMap<u64, u64> = HashMap::new();
    for (k, r) in police.iter().enumerate() {
        let line = k as u64 + 2;
        for (role, person, _) in police_truth.get(&line).into_iter().flatten() {
            let map = if role == "victim" {
                &mut victim_of
            } else {
                &mut suspect_of
            };
            map.entry(index(r)).or_insert(*person);
        }
    }
    // Flags on crimes not carrying a shared event.
    let free: Vec<&HashMap<String, String>> = police
        .iter()
        .filter(|r| r["VICTIM_NO"] == "1" && index(r) % 16 != 0 && index(r) % 16 != 8)
        .collect();
    let da = free.iter().filter(|r| r["DA_FLAG"] == "Y").count() as u64;
    assert!(
        close(da, free.len() as u64, cfg.events.da_share),
        "DA {da}/{}",
        free.len()
    );
    let hate_cols = [
        "HATE_RACE",
        "HATE_FAITH",
        "HATE_SEXUAL_ORIENT",
        "HATE_DISAB",
        "HATE_TRANS",
    ];
    let hate = free
        .iter()
        .filter(|r| hate_cols.iter().any(|c| r[*c] == "Y"))
        .count() as u64;
    assert!(
        close(hate, free.len() as u64, cfg.events.hate_share),
        "hate {hate}/{}",
        free.len()
    );
    let race = free.iter().filter(|r| r["HATE_RACE"] == "Y").count() as u64;
    assert!(
        race * 2 > hate,
        "race is the largest hate strand ({race}/{hate})"
    );
    let sv_young = police.iter().filter(|r| r["SV_FLAG"] == "Y").count();
    assert!(sv_young > 100, "serious violence flagged ({sv_young})");

    // ED assaults reported to the police: the patient is the victim of police crime 16k + 8.
    let istv_truth = truth(dir.path(), "ed_istv")?;
    let (mut linked, mut trials) = (0u64, 0u64);
    for (line, roles) in &istv_truth {
        let k = line - 2;
        if 16 * k + 8 < rows["police_crime"] {
            trials += 1;
            if victim_of.get(&(16 * k + 8)) == Some(&roles[0].1) {
                linked += 1;
            }
        }
    }
    assert!(
        trials > 300 && close(linked, trials, cfg.events.ed_assault_reported),
        "ED→police {linked}/{trials}"
    );

    // Local re-offences: the supervised person is the suspect of police crime 16r.
    let re_truth = truth(dir.path(), "probation_reoffending_events")?;
    let re = read(&dir.path().join("probation_reoffending_events.csv"))?;
    let (mut linked, mut trials) = (0u64, 0u64);
    for (k, r) in re.iter().enumerate() {
        if r["OffenceSequence"] != "1" {
            continue;
        }
        let n: u64 = r["ASN"]
            .rsplit('/')
            .next()
            .map(|s| s[..6].parse().unwrap_or(0))
            .unwrap_or(0);
        let ri = n - 1;
        if 16 * ri < rows["police_crime"] {
            trials += 1;
            let person = re_truth[&(k as u64 + 2)][0].1;
            if suspect_of.get(&(16 * ri)) == Some(&person) {
                linked += 1;
            }
        }
    }
    assert!(
        trials > 250 && close(linked, trials, cfg.events.reoffence_local),
        "reoffence→police {linked}/{trials}"
    );

    // The same people across agencies.
    let persons_in = |dataset: &str| -> Result<HashSet<u64>> {
        Ok(truth(dir.path(), dataset)?
            .values()
            .flatten()
            .map(|r| r.1)
            .collect())
    };
    let caseload = persons_in("probation_caseload")?;
    let suspects: HashSet<u64> = suspect_of.values().copied().collect();
    let share = caseload.intersection(&suspects).count() as f64 / caseload.len() as f64;
    assert!(
        share > 0.3,
        "most people on probation are known police suspects ({share:.2})"
    );
    let callers = persons_in("police_asb_incident")?;
    let council_victims = persons_in("council_asb_case")?;
    let both = council_victims.intersection(&callers).count();
    assert!(
        both * 5 > council_victims.len(),
        "council ASB victims also call the police ({both}/{})",
        council_victims.len()
    );
    let hclic = persons_in("council_hclic")?;
    let da_victims: HashSet<u64> = victim_of.values().copied().collect();
    assert!(
        hclic.intersection(&da_victims).count() > 50,
        "homeless applicants include crime victims"
    );
    Ok(())
}
