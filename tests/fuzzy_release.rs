//! Fuzzy person linkage in a real release, end to end: what an analyst receives when a purpose
//! adds fuzzy linkage to its `linkage = ["pnc", "demo"]`, against the same purpose linking on
//! exact tokens only, over the same stored records.
//!
//! The source exports are `agent synth --shape catalog` data of the police (`police_crime`) and
//! of probation (`probation_caseload`) for one synthetic population (about 650 serious violence
//! crimes and probation cases, about 890 person roles: enough for the gateway to estimate its
//! Fellegi–Sunter model from the store), plus hand-made rows, all within the purpose's serious
//! violence filters: the same people recorded with differences exact tokens cannot join (a
//! one-letter surname typo, a forename typo, a day/month-swapped date of birth, one part of a
//! double-barrelled surname, a surname typo across the two agencies); distinct people who look
//! alike (a shared surname; a shared forename, date of birth and sex; twins sharing surname,
//! date of birth and sex); and two crimes whose victim and suspect have the same name and date
//! of birth (twins of different sex; a suspect whose sex was not recorded). No PNC id is
//! recorded for them, so only names, dates of birth and sex can link them.
//!
//! Real agents push both exports over mutual TLS to a real `gateway serve` whose copy of the SV
//! agreement has three person-linked purposes differing only in fuzzy linkage: [`EXACT`] (the
//! shipped purpose, with probation's caseload added), [`FUZZY`] (`fuzzy = { threshold = 11.0 }`)
//! and [`FUZZY_DEFAULT`] (`[purpose.fuzzy]`, the gateway's default threshold). The analyst runs
//! `gateway extract` for each, releasing few quasi-identifiers so k-anonymity keeps every
//! fixture row.
//!
//! Proven, from the released CSV person-id columns and the signed manifests:
//! - with fuzzy linkage, each person's differently recorded mentions carry ONE person id, also
//!   across agencies; with exact linkage only, they carry different ids (identical recordings
//!   carry one id in both);
//! - the look-alike people get different ids in the exact release and at threshold 11 (the
//!   default, 4, is lower and joins the look-alikes scoring between 4 and 11: the recall it buys,
//!   so they are not asserted there), and fuzzy linkage never gives the victim and the suspect
//!   of one crime one id, at either threshold;
//! - each manifest says `method` "exact" without a threshold or "fuzzy" with the purpose's
//!   threshold (the default's when omitted), and quotes `measured_quality` exactly when the
//!   gateway's table of measured settings has the purpose's
//!   (`gateway::linkage::quality::measured`); its person and cluster counts match the released
//!   files; over the same person mentions, fuzzy linkage counts fewer people (by at least the
//!   fixture's joins) and more people known to both agencies;
//! - `gateway audit verify-release` passes on every release folder.
//!
//! A failure lists every failed check and, per fixture pair, the match weight and comparison
//! levels recomputed in the test from the same rows, as the gateway's linker estimates its model
//! (under a test key: the model depends on tokens only through their equality).

use anyhow::{Context, Result, anyhow, bail, ensure};
use e2e::{
    GatewayProc, Pki, push_ok, run_extract, synth_catalog, text, verify_release_cli, workspace_root,
};
use gateway::linkage::KindSet;
use gateway::linkage::quality;
use gateway::policy::isa::DEFAULT_FUZZY_THRESHOLD;
use gateway::release::manifest::{Linkage, Manifest};
use skp_core::fuzzy::link::{Comparison, MatchSettings, Model};
use skp_core::fuzzy::{FuzzyKey, PersonFields, RawPerson, TokenKeys, TokenSet};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const SV: &str = "SKP-ISA-SV-01";
/// The shipped person-linked SV purpose (exact tokens only), with probation's caseload added.
const EXACT: &str = "serious-violence-sna";
/// The same purpose with `fuzzy = { threshold = FUZZY_THRESHOLD }` added.
const FUZZY: &str = "serious-violence-sna-fuzzy";
/// The match weight [`FUZZY`] links at: between the fixture's true pairs (about 16 bits and
/// more in this data) and its look-alikes (about 9 bits and less); see [`diagnose`].
const FUZZY_THRESHOLD: f64 = 11.0;
/// The same purpose with `[purpose.fuzzy]` and no threshold: the gateway's default.
const FUZZY_DEFAULT: &str = "serious-violence-sna-fuzzy-default";
/// Synthetic population: about 350 serious violence crimes and 300 probation cases of it.
const POPULATION: usize = 1500;
const SEED: u64 = 29;
/// Released columns: few quasi-identifiers (only `victim_sex`), so k-anonymity keeps the
/// fixture rows; `ho_offence_class` and the probation start month identify fixture rows.
const FIELDS: &str = "police_crime.ho_offence_class,police_crime.victim_sex,police_crime.suspect_sex,\
                      probation_caseload.start_date,probation_caseload.tier";

/// One person as one record shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recorded {
    surname: &'static str,
    forename: &'static str,
    dob: &'static str,
    /// `F`, `M`, or empty (not recorded).
    sex: &'static str,
}

const fn who(
    surname: &'static str,
    forename: &'static str,
    dob: &'static str,
    sex: &'static str,
) -> Recorded {
    Recorded {
        surname,
        forename,
        dob,
        sex,
    }
}

// The people who are recorded differently (true matches).
const THEODORA: Recorded = who("Brackenridge", "Theodora", "1988-04-17", "F");
/// One letter of the surname dropped.
const THEODORA_TYPO: Recorded = who("Brakenridge", "Theodora", "1988-04-17", "F");
const BENEDICT: Recorded = who("Ashworth", "Benedict", "1979-11-03", "M");
/// One letter of the forename changed (a spelling, not a nickname).
const BENEDICT_TYPO: Recorded = who("Ashworth", "Benedikt", "1979-11-03", "M");
const MARGUERITE: Recorded = who("Oyelaran", "Marguerite", "1992-07-04", "F");
/// Day and month swapped (4 July read as April 7).
const MARGUERITE_SWAP: Recorded = who("Oyelaran", "Marguerite", "1992-04-07", "F");
const PRIYA: Recorded = who("Castellanos-Whitby", "Priya", "1985-09-21", "F");
/// One part of the double-barrelled surname.
const PRIYA_PART: Recorded = who("Whitby", "Priya", "1985-09-21", "F");
/// A police suspect ...
const DECLAN: Recorded = who("Fairweather", "Declan", "1995-02-23", "M");
/// ... on probation, the surname misspelt.
const DECLAN_TYPO: Recorded = who("Fairwether", "Declan", "1995-02-23", "M");

// Distinct people who look alike (true non-matches).
/// Shares Theodora's surname only.
const GORDON: Recorded = who("Brackenridge", "Gordon", "1958-12-30", "M");
/// Shares Theodora's forename, date of birth and sex.
const THEODORA_OTHER: Recorded = who("Pemberton", "Theodora", "1988-04-17", "F");
/// Benedict's twin brother: shares surname, date of birth and sex.
const OLIVER: Recorded = who("Ashworth", "Oliver", "1979-11-03", "M");
/// Shares Declan's surname only.
const ROSALIND: Recorded = who("Fairweather", "Rosalind", "1971-06-08", "F");

// Victims and suspects of one crime with the same name and date of birth.
/// Twins with a forename given to boys and girls alike: same name and date of birth.
const JORDAN: Recorded = who("Ellesmere", "Jordan", "2003-05-14", "M");
const JORDAN_SISTER: Recorded = who("Ellesmere", "Jordan", "2003-05-14", "F");
const SASHA: Recorded = who("Quennell", "Sasha", "1999-10-02", "F");
/// The same name and date of birth, sex not recorded.
const SASHA_NO_SEX: Recorded = who("Quennell", "Sasha", "1999-10-02", "");

// Other people of the fixture crimes, each recorded once.
const HARRIET: Recorded = who("Quenby", "Harriet", "1969-01-30", "F");
const SAMUEL: Recorded = who("Adeyemi-Rourke", "Samuel", "1983-08-11", "M");
const KIERAN: Recorded = who("Lothbury", "Kieran", "1990-12-05", "M");

/// A hand-made `police_crime` row; `marker` makes its `ho_offence_class` unique.
struct Crime {
    marker: &'static str,
    code: &'static str,
    class: &'static str,
    group: &'static str,
    committed: &'static str,
    victim: Recorded,
    suspect: Option<Recorded>,
}

const fn crime(
    marker: &'static str,
    code: &'static str,
    committed: &'static str,
    victim: Recorded,
    suspect: Option<Recorded>,
) -> Crime {
    let (class, group) = match code.as_bytes() {
        b"34B" => ("Robbery of personal property", "Robbery"),
        b"5D" => (
            "Assault with intent to cause serious harm",
            "Violence with injury",
        ),
        _ => ("Assault with injury", "Violence with injury"),
    };
    Crime {
        marker,
        code,
        class,
        group,
        committed,
        victim,
        suspect,
    }
}

const CRIMES: [Crime; 15] = [
    crime("F01", "8N", "2024-02-10T22:15", THEODORA, None),
    crime("F02", "34B", "2024-06-03T17:40", THEODORA_TYPO, None),
    crime("F03", "8N", "2024-09-21T01:05", HARRIET, Some(THEODORA)),
    crime("F04", "8N", "2024-03-14T20:30", BENEDICT, None),
    crime("F05", "5D", "2024-08-02T23:50", SAMUEL, Some(BENEDICT_TYPO)),
    crime("F06", "8N", "2024-01-27T19:10", MARGUERITE, None),
    crime("F07", "34B", "2024-10-08T16:25", MARGUERITE_SWAP, None),
    crime("F08", "8N", "2024-04-19T21:45", PRIYA, None),
    crime("F09", "8N", "2024-11-30T02:20", PRIYA_PART, None),
    crime("F10", "5D", "2024-05-05T00:35", KIERAN, Some(DECLAN)),
    crime("F11", "8N", "2024-07-12T18:00", GORDON, None),
    crime("F12", "8N", "2024-03-02T22:55", THEODORA_OTHER, None),
    crime("F13", "34B", "2024-12-09T15:15", OLIVER, None),
    crime("F14", "8N", "2024-08-24T23:30", JORDAN, Some(JORDAN_SISTER)),
    crime("F15", "8N", "2024-09-06T01:40", SASHA, Some(SASHA_NO_SEX)),
];

/// A hand-made `probation_caseload` row; its start month (in a year the synthetic caseload
/// does not use) and tier identify it in the release.
struct Case {
    marker: &'static str,
    crn: &'static str,
    start: &'static str,
    tier: &'static str,
    person: Recorded,
}

const CASES: [Case; 3] = [
    Case {
        marker: "PB1",
        crn: "X990001",
        start: "2021-02-15",
        tier: "B2",
        person: DECLAN_TYPO,
    },
    Case {
        marker: "PB2",
        crn: "X990002",
        start: "2021-03-15",
        tier: "C1",
        person: ROSALIND,
    },
    Case {
        marker: "PB3",
        crn: "X990003",
        start: "2021-04-15",
        tier: "B3",
        person: BENEDICT,
    },
];

/// A person mention in a released file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mention {
    Victim(&'static str),
    Suspect(&'static str),
    Probation(&'static str),
}

impl Mention {
    /// The person as the source row records them.
    fn recorded(self) -> Result<Recorded> {
        let found = match self {
            Mention::Victim(m) => CRIMES.iter().find(|c| c.marker == m).map(|c| c.victim),
            Mention::Suspect(m) => CRIMES
                .iter()
                .find(|c| c.marker == m)
                .and_then(|c| c.suspect),
            Mention::Probation(m) => CASES.iter().find(|c| c.marker == m).map(|c| c.person),
        };
        found.ok_or_else(|| anyhow!("{self:?} is not a fixture mention"))
    }
}

/// Whether two mentions must carry one person id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    OnePerson,
    TwoPeople,
}
use Link::{OnePerson, TwoPeople};

/// A pair of mentions and what each release must show for it.
struct Check {
    what: &'static str,
    a: Mention,
    b: Mention,
    exact: Link,
    fuzzy: Link,
}

const fn check(what: &'static str, a: Mention, b: Mention, exact: Link, fuzzy: Link) -> Check {
    Check {
        what,
        a,
        b,
        exact,
        fuzzy,
    }
}

use Mention::{Probation, Suspect, Victim};

const CHECKS: [Check; 13] = [
    check(
        "Theodora recorded identically twice (victim, then suspect)",
        Victim("F01"),
        Suspect("F03"),
        OnePerson,
        OnePerson,
    ),
    check(
        "Theodora with a one-letter surname typo",
        Victim("F01"),
        Victim("F02"),
        TwoPeople,
        OnePerson,
    ),
    check(
        "Benedict with a forename typo",
        Victim("F04"),
        Suspect("F05"),
        TwoPeople,
        OnePerson,
    ),
    check(
        "Benedict recorded identically by the police and probation",
        Victim("F04"),
        Probation("PB3"),
        OnePerson,
        OnePerson,
    ),
    check(
        "Marguerite with day and month of birth swapped",
        Victim("F06"),
        Victim("F07"),
        TwoPeople,
        OnePerson,
    ),
    check(
        "Priya with one part of her double-barrelled surname",
        Victim("F08"),
        Victim("F09"),
        TwoPeople,
        OnePerson,
    ),
    check(
        "Declan, police suspect, on probation with a surname typo",
        Suspect("F10"),
        Probation("PB1"),
        TwoPeople,
        OnePerson,
    ),
    check(
        "Gordon, who shares Theodora's surname only",
        Victim("F01"),
        Victim("F11"),
        TwoPeople,
        TwoPeople,
    ),
    check(
        "another Theodora with the same date of birth and sex, another surname",
        Victim("F01"),
        Victim("F12"),
        TwoPeople,
        TwoPeople,
    ),
    check(
        "Oliver, Benedict's twin (same surname, date of birth and sex)",
        Victim("F04"),
        Victim("F13"),
        TwoPeople,
        TwoPeople,
    ),
    check(
        "Rosalind, who shares Declan's surname only",
        Suspect("F10"),
        Probation("PB2"),
        TwoPeople,
        TwoPeople,
    ),
    check(
        "twins, victim and suspect of one crime: same name and date of birth, sex differs",
        Victim("F14"),
        Suspect("F14"),
        TwoPeople,
        TwoPeople,
    ),
    check(
        "victim and suspect of one crime, same name and date of birth, suspect's sex not recorded",
        Victim("F15"),
        Suspect("F15"),
        TwoPeople,
        TwoPeople,
    ),
];

/// How many more people the exact release must count than the fuzzy one: the checks above
/// that fuzzy linkage joins and exact linkage does not, each joining two clusters.
fn fuzzy_joins() -> u64 {
    CHECKS
        .iter()
        .filter(|c| c.exact == TwoPeople && c.fuzzy == OnePerson)
        .count() as u64
}

#[test]
fn fuzzy_linkage_joins_misrecorded_people_and_keeps_look_alikes_apart() -> Result<()> {
    let pki = Pki::new()?;
    let (config, sv_codes) = config_with_fuzzy_purposes(&pki)?;
    for c in &CRIMES {
        ensure!(
            sv_codes.contains(c.code),
            "fixture crime {} has offence code {}, outside the purpose's filter",
            c.marker,
            c.code
        );
    }

    // The source exports: synthetic data of one population, plus the fixture rows.
    let exports = pki.path().join("exports");
    let police_synth = synth_catalog("met-police", POPULATION, SEED, &exports.join("police"))?;
    let probation_synth = synth_catalog("probation", POPULATION, SEED, &exports.join("probation"))?;
    let police = exports.join("police_crime.csv");
    let probation = exports.join("probation_caseload.csv");
    append_rows(
        police_synth
            .get("police_crime")
            .context("agent synth wrote no police_crime export")?,
        &police,
        CRIMES.iter().map(crime_row).collect(),
    )?;
    append_rows(
        probation_synth
            .get("probation_caseload")
            .context("agent synth wrote no probation_caseload export")?,
        &probation,
        CASES.iter().map(case_row).collect(),
    )?;

    let gw = GatewayProc::start(&config)?;
    push_ok(&pki, &gw, "met-police", "police_crime", &police)?;
    push_ok(&pki, &gw, "probation", "probation_caseload", &probation)?;

    let releases = pki.path().join("releases");
    let exact = Released::extract(&pki, &gw, EXACT, &releases.join("exact"))?;
    let fuzzy = Released::extract(&pki, &gw, FUZZY, &releases.join("fuzzy"))?;
    let default = Released::extract(&pki, &gw, FUZZY_DEFAULT, &releases.join("default"))?;

    let mut failures = Vec::new();
    // Who is one person. At the default threshold (below FUZZY_THRESHOLD) only what a lower
    // threshold keeps: every join made at FUZZY_THRESHOLD, and the two roles of one crime
    // apart (the one-record rule holds at any threshold). Look-alikes scoring between the two
    // thresholds are joined at the default: that is the recall it buys (README, linkage
    // quality), so they are not asserted there.
    type Want = fn(&Check) -> Option<Link>;
    let wants: [(&Released, Want); 3] = [
        (&exact, |c| Some(c.exact)),
        (&fuzzy, |c| Some(c.fuzzy)),
        (&default, |c| match (c.exact, c.fuzzy, c.a, c.b) {
            (OnePerson, _, _, _) | (_, OnePerson, _, _) => Some(OnePerson),
            (_, _, Mention::Victim(a), Mention::Suspect(b)) if a == b => Some(TwoPeople),
            _ => None,
        }),
    ];
    for (r, want) in wants {
        for c in &CHECKS {
            let Some(want) = want(c) else { continue };
            let (a, b) = (r.id(c.a)?, r.id(c.b)?);
            let got = if a == b { OnePerson } else { TwoPeople };
            if got != want {
                failures.push(format!(
                    "{}: {} ({:?} vs {:?}): want {want:?}, got {got:?} (ids {a} / {b})",
                    r.purpose, c.what, c.a, c.b
                ));
            }
        }
    }

    // The manifests: method, threshold, measured quality, and counts that describe the files.
    let kinds = ["pnc".to_owned(), "demo".to_owned()];
    for (r, method, threshold) in [
        (&exact, "exact", None),
        (&fuzzy, "fuzzy", Some(FUZZY_THRESHOLD)),
        (&default, "fuzzy", Some(DEFAULT_FUZZY_THRESHOLD)),
    ] {
        let (p, l) = (r.purpose, &r.linkage);
        if l.method != method || l.threshold != threshold || l.kinds != kinds {
            failures.push(format!(
                "{p} manifest: want method {method:?}, threshold {threshold:?}, kinds {kinds:?}; \
                 got method {:?}, threshold {:?}, kinds {:?}",
                l.method, l.threshold, l.kinds
            ));
        }
        let kind_set = KindSet::parse(kinds.iter().map(String::as_str))
            .map_err(|e| anyhow!("linkage kinds {kinds:?}: {e}"))?;
        let want_quality = quality::measured(kind_set, threshold);
        let got_quality = l.measured_quality.as_ref().and_then(|q| {
            Some(quality::Measured {
                precision: q.precision,
                recall: q.recall,
                f1: q.f1,
                with_date_of_birth: q.with_date_of_birth?,
                without_date_of_birth: q.without_date_of_birth?,
            })
        });
        let measured_on_ok = l
            .measured_quality
            .as_ref()
            .is_none_or(|q| q.measured_on == quality::MEASURED_ON);
        if got_quality != want_quality || !measured_on_ok {
            failures.push(format!(
                "{p} manifest: measured_quality {:?}, but the gateway's table of measured \
                 settings gives {want_quality:?} for {kinds:?} at threshold {threshold:?}",
                l.measured_quality
            ));
        }
        if (l.person_nodes, l.clusters) != (r.mentions, r.people.len() as u64) {
            failures.push(format!(
                "{p} manifest: person_nodes {} and clusters {}, but the files hold {} person \
                 ids of {} distinct people",
                l.person_nodes,
                l.clusters,
                r.mentions,
                r.people.len()
            ));
        }
        if l.person_nodes != exact.linkage.person_nodes {
            failures.push(format!(
                "{p} manifest: {} person mentions, but {} in the exact release of the same rows",
                l.person_nodes, exact.linkage.person_nodes
            ));
        }
    }
    // Fuzzy linkage only adds joins to the exact ones, so never counts more people; the checks
    // above that it joins each merge two people of the exact release.
    let (le, lf, ld) = (&exact.linkage, &fuzzy.linkage, &default.linkage);
    if lf.clusters + fuzzy_joins() > le.clusters {
        failures.push(format!(
            "{FUZZY} must count at least {} fewer people than {EXACT}: {} vs {}",
            fuzzy_joins(),
            lf.clusters,
            le.clusters
        ));
    }
    if ld.clusters > le.clusters {
        failures.push(format!(
            "{FUZZY_DEFAULT} counts more people than {EXACT}: {} vs {}",
            ld.clusters, le.clusters
        ));
    }
    // Declan is known to both agencies only through fuzzy linkage.
    if lf.cross_agency_clusters <= le.cross_agency_clusters {
        failures.push(format!(
            "{FUZZY} must find more people known to both agencies than {EXACT}: {} vs {}",
            lf.cross_agency_clusters, le.cross_agency_clusters
        ));
    }

    for r in [&exact, &fuzzy, &default] {
        let o = verify_release_cli(&pki, &r.dir, None)?;
        if !o.status.success() {
            failures.push(format!(
                "gateway audit verify-release of the {} release failed: {}",
                r.purpose,
                text(&o)
            ));
        }
    }

    if !failures.is_empty() {
        bail!(
            "{} check(s) failed:\n- {}\n\n{}",
            failures.len(),
            failures.join("\n- "),
            diagnose(&police, &probation, &sv_codes)
                .unwrap_or_else(|e| format!("(no weights: {e:#})"))
        );
    }
    Ok(())
}

/// One release folder as the analyst reads it.
struct Released {
    purpose: &'static str,
    dir: PathBuf,
    linkage: Linkage,
    /// Fixture mention → released person id.
    ids: BTreeMap<Mention, String>,
    /// Non-empty person-id cells in all files.
    mentions: u64,
    /// Distinct person ids in all files.
    people: BTreeSet<String>,
}

impl Released {
    /// `gateway extract` of the police and probation datasets of `purpose`, as the analyst.
    fn extract(pki: &Pki, gw: &GatewayProc, purpose: &'static str, dir: &Path) -> Result<Released> {
        let o = run_extract(
            &pki.analyst_config(),
            gw,
            SV,
            purpose,
            &[
                "--datasets",
                "police_crime,probation_caseload",
                "--fields",
                FIELDS,
            ],
            dir,
        )?;
        ensure!(
            o.status.success(),
            "extract of {purpose} failed: {}",
            text(&o)
        );
        let manifest = Manifest::parse(
            &std::fs::read(dir.join("manifest.json"))
                .with_context(|| format!("{purpose}: no manifest.json in {}", dir.display()))?,
        )
        .map_err(|e| anyhow!("{purpose}: manifest.json: {e}"))?;
        let linkage = manifest
            .release
            .linkage
            .clone()
            .with_context(|| format!("{purpose}: the manifest has no linkage summary"))?;

        let mut ids = BTreeMap::new();
        let mut mentions = 0;
        let mut people = BTreeSet::new();
        let police = read_csv(&dir.join("police_crime.csv"))?;
        let probation = read_csv(&dir.join("probation_caseload.csv"))?;
        for row in police.iter().chain(&probation) {
            for (col, v) in row {
                if col.ends_with("_person_id") && !v.is_empty() {
                    mentions += 1;
                    people.insert(v.clone());
                }
            }
        }
        for c in &CRIMES {
            let class = format!("{} (fixture {})", c.class, c.marker);
            let row = only_row(&police, |r| field(r, "ho_offence_class") == class)
                .with_context(|| format!("{purpose}: police_crime.csv, fixture {}", c.marker))?;
            ids.insert(Victim(c.marker), person_id(row, "victim_person_id")?);
            if c.suspect.is_some() {
                ids.insert(Suspect(c.marker), person_id(row, "suspect_person_id")?);
            }
        }
        for c in &CASES {
            let row = only_row(&probation, |r| {
                field(r, "start_date") == &c.start[..7] && field(r, "tier") == c.tier
            })
            .with_context(|| format!("{purpose}: probation_caseload.csv, fixture {}", c.marker))?;
            ids.insert(Probation(c.marker), person_id(row, "person_person_id")?);
        }
        Ok(Released {
            purpose,
            dir: dir.to_path_buf(),
            linkage,
            ids,
            mentions,
            people,
        })
    }

    fn id(&self, m: Mention) -> Result<&str> {
        self.ids
            .get(&m)
            .map(String::as_str)
            .with_context(|| format!("no released person id for {m:?}"))
    }
}

type Row = BTreeMap<String, String>;

fn read_csv(path: &Path) -> Result<Vec<Row>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers = r.headers()?.clone();
    r.records()
        .map(|rec| {
            let rec = rec.with_context(|| format!("bad CSV row in {}", path.display()))?;
            Ok(headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect())
        })
        .collect()
}

fn field<'a>(row: &'a Row, name: &str) -> &'a str {
    row.get(name).map(String::as_str).unwrap_or("")
}

fn person_id(row: &Row, column: &str) -> Result<String> {
    let id = field(row, column);
    ensure!(
        !id.is_empty(),
        "{column} is empty: the person was not released"
    );
    Ok(id.to_owned())
}

/// The one row matching `pred`: an error if k-anonymity or the filter dropped it, or if the
/// marker is not unique.
fn only_row(rows: &[Row], pred: impl Fn(&Row) -> bool) -> Result<&Row> {
    let mut found = rows.iter().filter(|r| pred(r));
    match (found.next(), found.next()) {
        (Some(r), None) => Ok(r),
        (None, _) => bail!("the fixture row was not released (filtered out or suppressed)"),
        (Some(_), Some(_)) => bail!("the fixture row's marker matches more than one row"),
    }
}

/// Writes `out`: the rows of the CSV `base`, then `extra` (column → value; other columns
/// empty). Fails on a column `base` does not have.
fn append_rows(base: &Path, out: &Path, extra: Vec<Vec<(&'static str, String)>>) -> Result<()> {
    let mut r =
        csv::Reader::from_path(base).with_context(|| format!("cannot read {}", base.display()))?;
    let headers = r.headers()?.clone();
    let mut w =
        csv::Writer::from_path(out).with_context(|| format!("cannot write {}", out.display()))?;
    w.write_record(&headers)?;
    for rec in r.records() {
        w.write_record(&rec?)?;
    }
    for row in extra {
        for (col, _) in &row {
            ensure!(
                headers.iter().any(|h| h == *col),
                "{} has no column {col}",
                base.display()
            );
        }
        let values: HashMap<&str, &str> = row.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.write_record(headers.iter().map(|h| values.get(h).copied().unwrap_or("")))?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", out.display()))
}

fn crime_row(c: &Crime) -> Vec<(&'static str, String)> {
    let n = &c.marker[1..];
    let date = &c.committed[..10];
    let mut row = vec![
        ("crime_ref", format!("52990{n}/24")),
        ("victim_no", "1".into()),
        ("ho_offence_code", c.code.into()),
        (
            "ho_offence_class",
            format!("{} (fixture {})", c.class, c.marker),
        ),
        ("ho_offence_group", c.group.into()),
        ("committed_from", c.committed.into()),
        ("reported_dt", c.committed.into()),
        ("lsoa21cd", "E01002972".into()),
        ("wd22cd", "E05013933".into()),
        ("location_type", "Street/road".into()),
        ("victim_surname", c.victim.surname.into()),
        ("victim_forename", c.victim.forename.into()),
        ("victim_dob", c.victim.dob.into()),
        ("victim_sex", c.victim.sex.into()),
        ("victim_age", age(c.victim.dob, date).to_string()),
        ("sv_flag", "true".into()),
    ];
    if let Some(s) = c.suspect {
        row.extend([
            ("suspect_surname", s.surname.into()),
            ("suspect_forename", s.forename.into()),
            ("suspect_dob", s.dob.into()),
            ("suspect_sex", s.sex.into()),
            ("suspect_age", age(s.dob, date).to_string()),
            ("victim_suspect_relationship", "Not known".into()),
        ]);
    }
    row
}

fn case_row(c: &Case) -> Vec<(&'static str, String)> {
    let p = c.person;
    vec![
        ("crn", c.crn.into()),
        ("event_no", "1".into()),
        ("surname", p.surname.into()),
        ("forename", p.forename.into()),
        ("dob", p.dob.into()),
        ("sex", p.sex.into()),
        ("age_at_start", age(p.dob, c.start).to_string()),
        ("sentence_type", "Community order".into()),
        ("start_date", c.start.into()),
        ("index_offence_ho_code", "8N".into()),
        ("index_offence_ho_group", "Violence with injury".into()),
        ("tier", c.tier.into()),
        ("rosh_level", "Medium".into()),
    ]
}

/// Whole years from `dob` to `on` (both `YYYY-MM-DD`, fixture constants).
fn age(dob: &str, on: &str) -> i32 {
    let num = |s: &str| s.parse::<i32>().unwrap_or(0);
    let years = num(&on[..4]) - num(&dob[..4]);
    if on[5..10] < dob[5..10] {
        years - 1
    } else {
        years
    }
}

/// The gateway config of `pki` with a copy of the shipped agreements in which the SV
/// agreement's person-linked purpose [`EXACT`] also links probation's caseload (persons, and the
/// filter and dispositions of the shipped probation purpose), followed by two twins that differ
/// from it only in their id and fuzzy linkage: [`FUZZY`] with `fuzzy = { threshold =
/// FUZZY_THRESHOLD }`, [`FUZZY_DEFAULT`] with an empty `[purpose.fuzzy]`. Also returns the
/// purpose's police offence codes.
fn config_with_fuzzy_purposes(pki: &Pki) -> Result<(PathBuf, BTreeSet<String>)> {
    let shipped = workspace_root().join("policies/agreements");
    let dir = pki.path().join("agreements");
    std::fs::create_dir_all(&dir)?;
    for e in
        std::fs::read_dir(&shipped).with_context(|| format!("cannot list {}", shipped.display()))?
    {
        let e = e?;
        if e.path().extension().is_some_and(|x| x == "toml") {
            std::fs::copy(e.path(), dir.join(e.file_name()))
                .with_context(|| format!("cannot copy {}", e.path().display()))?;
        }
    }
    let path = dir.join("sv-sna.toml");
    let original = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;

    // The person-linked purpose's block, up to the comment rule before the next purpose.
    let head = format!("[[purpose]]\nid = \"{EXACT}\"\n");
    let start = original
        .find(&head)
        .with_context(|| format!("sv-sna.toml has no purpose {EXACT}"))?;
    let rest = &original[start + head.len()..];
    let next = rest
        .find("\n[[purpose]]")
        .context("sv-sna.toml: no purpose after the person-linked one")?;
    let block_end = rest[..next].rfind("\n# ---").unwrap_or(next) + 1;
    let block = &original[start..start + head.len() + block_end];

    // Probation's caseload, as the shipped aggregate purpose lets it be used, with persons.
    let pb_head = "[purpose.datasets.probation_caseload]\n";
    let pb_start = original
        .find(pb_head)
        .context("sv-sna.toml has no probation_caseload dataset")?;
    let pb_rest = &original[pb_start..];
    let pb_end = pb_rest.find("\n# ---").unwrap_or(pb_rest.len()) + 1;
    let mut probation = pb_rest[..pb_end].to_owned();
    let filter_end = probation
        .find("\nfilter = ")
        .and_then(|i| probation[i + 1..].find('\n').map(|j| i + 1 + j + 1))
        .context("sv-sna.toml: the probation_caseload dataset has no filter")?;
    probation.insert_str(filter_end, "persons = [\"person\"]\n");

    let exact = format!("{}\n{probation}\n", block.trim_end());
    let linkage = "\nlinkage = [\"pnc\", \"demo\"]\n";
    let twin = |id: &str, after_linkage: &str, before_disclosure: &str| -> Result<String> {
        ensure!(
            exact.contains(linkage) && exact.contains("\n[purpose.disclosure]\n"),
            "sv-sna.toml: purpose {EXACT} no longer has `{}` and [purpose.disclosure]",
            linkage.trim()
        );
        Ok(exact
            .replacen(&head, &format!("[[purpose]]\nid = \"{id}\"\n"), 1)
            .replacen(linkage, &format!("{linkage}{after_linkage}"), 1)
            .replacen(
                "\n[purpose.disclosure]\n",
                &format!("\n{before_disclosure}[purpose.disclosure]\n"),
                1,
            ))
    };
    let fuzzy = twin(
        FUZZY,
        &format!("fuzzy = {{ threshold = {FUZZY_THRESHOLD:?} }}\n"),
        "",
    )?;
    let default = twin(
        FUZZY_DEFAULT,
        "",
        "[purpose.fuzzy]\n# No threshold: the gateway's default.\n\n",
    )?;
    let edited = format!(
        "{}{exact}\n{fuzzy}\n{default}\n{}",
        &original[..start],
        &original[start + block.len()..]
    );
    std::fs::write(&path, &edited).with_context(|| format!("cannot write {}", path.display()))?;

    let sv_codes = e2e::police_filter_codes(&edited, FUZZY).context("the edited sv-sna.toml")?;
    let mut cfg = std::fs::read_to_string(pki.gateway_config())?;
    cfg.push_str("\n[policy]\ndir = \"agreements\"\n");
    let config = pki.path().join("gateway-fuzzy.toml");
    std::fs::write(&config, cfg)?;
    Ok((config, sv_codes))
}

/// Per fixture check, the match weight and comparison levels of its pair under a model
/// estimated, as the gateway's linker estimates it, from every person role the purpose links:
/// the police roles of serious violence rows, then the probation cases of the purpose's
/// filter, in file order. Tokens under a test key (the model depends on tokens only through
/// their equality).
fn diagnose(police: &Path, probation: &Path, sv_codes: &BTreeSet<String>) -> Result<String> {
    let keys = TokenKeys::derive(&FuzzyKey::from_bytes(&[0x5a; 32]));
    let encode = |surname: &str, forename: &str, dob: &str, sex: &str| -> TokenSet {
        fn some(s: &str) -> Option<&str> {
            (!s.trim().is_empty()).then_some(s)
        }
        let (fields, _) = PersonFields::from_raw(&RawPerson {
            surname: some(surname),
            forenames: some(forename),
            dob: some(dob),
            sex: some(sex),
            postcode: None,
        });
        keys.encode(&fields)
    };
    let mut sets = Vec::new();
    for row in read_csv(police)? {
        if !sv_codes.contains(field(&row, "ho_offence_code")) {
            continue;
        }
        for role in ["victim", "suspect"] {
            let f = |n: &str| field(&row, &format!("{role}_{n}")).to_owned();
            let set = encode(&f("surname"), &f("forename"), &f("dob"), &f("sex"));
            if !set.is_empty() {
                sets.push(set);
            }
        }
    }
    for row in read_csv(probation)? {
        // The shipped probation filter lists the same codes.
        if !sv_codes.contains(field(&row, "index_offence_ho_code")) {
            continue;
        }
        let f = |n: &str| field(&row, n);
        let set = encode(f("surname"), f("forename"), f("dob"), f("sex"));
        if !set.is_empty() {
            sets.push(set);
        }
    }
    // The gateway's linker: the default settings with the purpose's threshold, which the
    // estimate does not use.
    let model = Model::estimate(&sets, &MatchSettings::default());
    let mut out = format!(
        "Match weights recomputed in the test ({} person roles; prior weight {:.2} bits); \
         {FUZZY} links at {FUZZY_THRESHOLD}, {FUZZY_DEFAULT} at {DEFAULT_FUZZY_THRESHOLD}:\n",
        sets.len(),
        model.prior_weight(),
    );
    for c in &CHECKS {
        let (a, b) = (c.a.recorded()?, c.b.recorded()?);
        let (sa, sb) = (
            encode(a.surname, a.forename, a.dob, a.sex),
            encode(b.surname, b.forename, b.dob, b.sex),
        );
        let w = model.weight(&sa, &sb, Some(model.term_frequencies()));
        let levels: Vec<String> = Comparison::ALL
            .iter()
            .zip(model.levels(&sa, &sb))
            .map(|(cmp, l)| {
                let name = l
                    .and_then(|l| cmp.level_names().get(l).copied())
                    .unwrap_or("not compared");
                format!("{cmp:?}={name}")
            })
            .collect();
        let _ = writeln!(
            out,
            "  {:>7.2}  {} ({:?} / {:?}; want exact {:?}, fuzzy {:?}) [{}]",
            w,
            c.what,
            c.a,
            c.b,
            c.exact,
            c.fuzzy,
            levels.join(", ")
        );
    }
    Ok(out)
}
