//! `agent person-token`: the tokens it prints for a person are byte-identical to those `agent
//! push` puts in that person's records, and invalid identifiers are refused without echoing them.
//! Rows come from synthetic source-shaped exports (agency column names, codes and date formats,
//! read through the generated agent.toml mapping) pseudonymised exactly as push does.

use agent::config::{AgentConfig, Mapping};
use agent::person_token::{
    CatalogSource, PersonIdentifiers, PersonTokenError, RecipeChoice, load_catalog, person_tokens,
};
use agent::pseudonymise::Pseudonymiser;
use agent::source::Row;
use agent::synth::{Shape, SynthConfig, Volume, generate, population};
use anyhow::{Context, Result, bail};
use skp_core::{Catalog, Dataset};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// Synthetic source exports of `agency`'s datasets in `dir`, an agent.toml with the generated
/// mapping and an owner-only linkage key beside them.
fn agency_setup(dir: &Path, agency: &str) -> Result<AgentConfig> {
    let cat = Catalog::embedded()?;
    let people = population(3000, 5);
    let cfg = SynthConfig::new(5, Shape::Source, Volume::PerDataset(300));
    generate(
        cat.datasets().filter(|d| d.owner.as_str() == agency),
        &people,
        &cfg,
        dir,
    )?;
    let key = dir.join("link.key");
    std::fs::write(&key, hex::encode([7u8; 32]))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    let mapping = std::fs::read_to_string(dir.join(format!("{agency}.agent.toml")))?;
    let text = format!(
        "agency = \"{agency}\"\ngateway = \"https://localhost:7443\"\nstate_dir = \"state\"\n\
         [tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n\
         [linkage_key]\nfile = \"link.key\"\nversion = 1\n{mapping}"
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text)?;
    AgentConfig::load(&path)
}

/// The first row of `dataset`'s export that push accepts and whose `role` carries every kind in
/// `kinds`, with that role's pushed tokens as `kind → hex`.
fn pushed_person(
    dir: &Path,
    cfg: &AgentConfig,
    ds: &Dataset,
    role: &str,
    kinds: &[&str],
) -> Result<(Row, BTreeMap<String, String>)> {
    // As `agent::push::push` does: the config's key and mapping, one Pseudonymiser per file.
    let key = cfg.linkage_key()?;
    let mapping = cfg.mapping(ds.name.as_str());
    let p = Pseudonymiser::new(ds, &mapping, &key);
    let (_, rows) = agent::source::read(&dir.join(format!("{}.csv", ds.name)))?;
    for row in rows.into_iter().flatten() {
        let Ok(rec) = p.record(&row) else { continue };
        let Some(person) = rec.persons.iter().find(|p| p.role == role) else {
            continue;
        };
        let tokens: BTreeMap<String, String> = person
            .tokens
            .iter()
            .map(|t| (t.kind.clone(), hex::encode(&t.token)))
            .collect();
        if kinds.iter().all(|k| tokens.contains_key(*k)) {
            return Ok((row, tokens));
        }
    }
    bail!("no row of {} has a {role} with {kinds:?} tokens", ds.name)
}

/// The raw identifiers of `role` in a source row, read through the mapping's column names.
fn identifiers(ds: &Dataset, role: &str, mapping: &Mapping, row: &Row) -> PersonIdentifiers {
    let cell = |f: &skp_core::FieldName| row.cells.get(mapping.column(f.as_str())).cloned();
    let mut who = PersonIdentifiers::default();
    let r = ds
        .roles
        .iter()
        .find(|r| r.name == role)
        .expect("the role is in the catalog");
    for t in &r.tokens {
        match t.kind.as_str() {
            "nhs" => who.nhs = cell(&t.fields[0]),
            "pnc" => who.pnc = cell(&t.fields[0]),
            "demo" => {
                who.surname = cell(&t.fields[0]);
                who.forename = cell(&t.fields[1]);
                who.dob = cell(&t.fields[2]);
                who.sex = cell(&t.fields[3]);
            }
            _ => {}
        }
    }
    who
}

/// Runs the built `agent person-token` with the identifiers as options, logging at trace level.
fn run_binary(cfg: &AgentConfig, who: &PersonIdentifiers, extra: &[&str]) -> Result<Output> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agent"));
    cmd.env("AGENT_LOG", "trace")
        .arg("person-token")
        .arg("--config")
        .arg(&cfg.path)
        .args(extra);
    for (flag, v) in [
        ("--nhs", &who.nhs),
        ("--pnc", &who.pnc),
        ("--surname", &who.surname),
        ("--forename", &who.forename),
        ("--dob", &who.dob),
        ("--sex", &who.sex),
        ("--uprn", &who.uprn),
    ] {
        if let Some(v) = v {
            cmd.arg(flag).arg(v);
        }
    }
    cmd.output().context("run agent person-token")
}

/// The `KIND:HEX` lines of a successful run.
fn printed_tokens(out: &Output) -> Result<BTreeMap<String, String>> {
    let stdout = String::from_utf8(out.stdout.clone())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("agent person-token failed: {stderr}");
    }
    let mut tokens = BTreeMap::new();
    for line in stdout.lines() {
        let (kind, hex_text) = line
            .split_once(':')
            .with_context(|| format!("not KIND:HEX: {line}"))?;
        assert_eq!(hex_text.len(), 64, "{line}");
        assert!(
            hex_text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{line}"
        );
        assert!(
            tokens
                .insert(kind.to_string(), hex_text.to_string())
                .is_none(),
            "{kind} printed twice"
        );
    }
    Ok(tokens)
}

/// The raw values given, for checking that none is echoed.
fn raw_values(who: &PersonIdentifiers) -> Vec<String> {
    [
        &who.nhs,
        &who.pnc,
        &who.surname,
        &who.forename,
        &who.dob,
        &who.uprn,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect()
}

#[test]
fn nhs_and_demo_tokens_equal_those_push_puts_in_the_record() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = agency_setup(dir.path(), "swl-icb")?;
    let (catalog, source) = load_catalog(&cfg)?;
    assert_eq!(source, CatalogSource::Embedded);
    let ds = catalog
        .dataset("icb_ed_assault_mh_linked")
        .context("dataset")?;
    let (row, pushed) = pushed_person(dir.path(), &cfg, ds, "patient", &["nhs", "demo"])?;
    let who = identifiers(ds, "patient", &cfg.mapping(ds.name.as_str()), &row);
    // The source export spells sex as an NHS code ("1"/"2"/"9"), mapped in agent.toml.
    assert!(
        matches!(who.sex.as_deref(), Some("1" | "2" | "9")),
        "{:?}",
        who.sex
    );

    let key = cfg.linkage_key()?;
    let outcome = person_tokens(&catalog, &cfg, &key, &who, &RecipeChoice::default())?;
    let got: BTreeMap<String, String> = outcome
        .tokens
        .iter()
        .map(|t| {
            let line = t.to_string();
            let (k, h) = line.split_once(':').expect("KIND:HEX");
            (k.to_string(), h.to_string())
        })
        .collect();
    assert_eq!(
        got, pushed,
        "library tokens differ from the pushed record's"
    );
    assert!(outcome.notes.is_empty(), "{:?}", outcome.notes);

    let out = run_binary(&cfg, &who, &[])?;
    assert_eq!(
        printed_tokens(&out)?,
        pushed,
        "printed tokens differ from the pushed record's"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("nhs:") && stdout.contains("\ndemo:"),
        "{stdout}"
    );
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for v in raw_values(&who) {
        assert!(!all.contains(&v), "a raw identifier was printed: {all}");
    }
    Ok(())
}

#[test]
fn pnc_and_demo_tokens_equal_those_push_puts_in_the_record() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = agency_setup(dir.path(), "met-police")?;
    let (catalog, _) = load_catalog(&cfg)?;
    let ds = catalog.dataset("police_crime").context("dataset")?;
    let (row, pushed) = pushed_person(dir.path(), &cfg, ds, "suspect", &["pnc", "demo"])?;
    let who = identifiers(ds, "suspect", &cfg.mapping(ds.name.as_str()), &row);

    // Default recipes (the first of the agency's datasets per kind) agree with police_crime's.
    let key = cfg.linkage_key()?;
    let outcome = person_tokens(&catalog, &cfg, &key, &who, &RecipeChoice::default())?;
    let got: BTreeMap<String, String> = outcome
        .tokens
        .iter()
        .map(|t| (t.kind.clone(), hex::encode(t.token.as_bytes())))
        .collect();
    assert_eq!(got, pushed);
    assert!(outcome.notes.is_empty(), "{:?}", outcome.notes);

    // Through the binary, with the recipe chosen explicitly and the catalog from the cache
    // `agent push` keeps.
    std::fs::create_dir_all(&cfg.state_dir)?;
    std::fs::write(
        cfg.state_dir.join("catalog.json"),
        serde_json::to_vec(&catalog)?,
    )?;
    let out = run_binary(
        &cfg,
        &who,
        &["--dataset", "police_crime", "--role", "suspect"],
    )?;
    assert_eq!(printed_tokens(&out)?, pushed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("no catalog cached"), "{stderr}");
    Ok(())
}

#[test]
fn wrong_nhs_check_digit_is_refused_without_echoing_the_digits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = agency_setup(dir.path(), "swl-icb")?;
    let (catalog, _) = load_catalog(&cfg)?;
    let ds = catalog
        .dataset("icb_ed_assault_mh_linked")
        .context("dataset")?;
    let (row, _) = pushed_person(dir.path(), &cfg, ds, "patient", &["nhs", "demo"])?;
    let mut who = identifiers(ds, "patient", &cfg.mapping(ds.name.as_str()), &row);
    let valid: String = who
        .nhs
        .as_deref()
        .context("nhs")?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert!(skp_core::normalise::nhs_number(&valid).is_ok());
    // Any other check digit fails the mod-11 check.
    let last = valid.as_bytes()[9] - b'0';
    let wrong = format!("{}{}", &valid[..9], (last + 1) % 10);
    assert!(skp_core::normalise::nhs_number(&wrong).is_err());
    who.nhs = Some(wrong.clone());

    let key = cfg.linkage_key()?;
    let e = person_tokens(&catalog, &cfg, &key, &who, &RecipeChoice::default())
        .expect_err("a wrong check digit is refused");
    assert!(
        matches!(&e, PersonTokenError::Invalid { option: "--nhs", reason } if reason.contains("check digit")),
        "{e:?}"
    );
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains(&valid[..9]),
        "the digits were echoed: {text}"
    );

    let out = run_binary(&cfg, &who, &[])?;
    assert!(!out.status.success(), "a wrong check digit was accepted");
    assert!(out.stdout.is_empty(), "tokens printed despite the error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--nhs") && stderr.contains("check digit"),
        "{stderr}"
    );
    for v in raw_values(&who).iter().chain([&valid[..9].to_string()]) {
        assert!(
            !stderr.contains(v.as_str()),
            "a raw value was echoed: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn bad_pnc_bad_dob_and_too_few_options_are_refused_naming_the_option() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = agency_setup(dir.path(), "met-police")?;
    let (catalog, _) = load_catalog(&cfg)?;
    let key = cfg.linkage_key()?;
    let choice = RecipeChoice::default();
    let letter = skp_core::normalise::pnc_check_letter("19", 123456);
    let wrong_letter = if letter == b'A' { 'B' } else { 'A' };

    let bad_pnc = PersonIdentifiers {
        pnc: Some(format!("2019/0123456{wrong_letter}")),
        ..Default::default()
    };
    let e = person_tokens(&catalog, &cfg, &key, &bad_pnc, &choice).expect_err("bad PNC");
    assert!(
        matches!(
            &e,
            PersonTokenError::Invalid {
                option: "--pnc",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.to_string().contains("0123456"), "{e}");

    let bad_dob = PersonIdentifiers {
        surname: Some("Smith".into()),
        forename: Some("Ann".into()),
        dob: Some("31/02/1990".into()),
        sex: Some("F".into()),
        ..Default::default()
    };
    let e = person_tokens(&catalog, &cfg, &key, &bad_dob, &choice).expect_err("bad date");
    assert!(
        matches!(
            &e,
            PersonTokenError::Invalid {
                option: "--dob",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.to_string().contains("1990"), "{e}");

    let surname_only = PersonIdentifiers {
        surname: Some("Smith".into()),
        ..Default::default()
    };
    let e = person_tokens(&catalog, &cfg, &key, &surname_only, &choice).expect_err("nothing");
    let text = e.to_string();
    for flag in ["--pnc", "--forename", "--dob", "--sex"] {
        assert!(text.contains(flag), "{flag} not named: {text}");
    }
    assert!(!text.contains("Smith"), "{text}");

    // The good values alone give tokens: the refusals above were for the bad ones.
    let letter = letter as char;
    let good = PersonIdentifiers {
        pnc: Some(format!("19/123456{letter}")),
        dob: Some("28/02/1990".into()),
        ..bad_dob
    };
    let outcome = person_tokens(&catalog, &cfg, &key, &good, &choice)?;
    let kinds: Vec<&str> = outcome.tokens.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["pnc", "demo"]);
    Ok(())
}
