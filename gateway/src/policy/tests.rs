//! Tests of the policy engine as a whole: closed-world load errors (each naming `file:line` and
//! the fix), deny by default, validity boundaries with an injected clock, the choice of
//! generalisation, the policy hash, and property tests (no field is ever released beyond what
//! the agreement says; the hash covers every byte of every file and not their order).
//!
//! Every agreement here is written inline over catalog datasets, so these tests do not depend
//! on the agreements shipped in `policies/agreements/`. Each negative test is the valid base
//! agreement with one edit, so the refusal it checks is the only thing wrong with the file.

use super::Policy;
use super::decide::{Explanation, FieldOutcome, Request, Requester, explain};
use super::isa::{self, Agreement, Disposition, Problem};
use proptest::prelude::*;
use proptest::sample::Index;
use sha2::{Digest, Sha256};
use skp_core::Catalog;
use skp_core::catalog::{Dataset, Field, FieldClass};
use skp_core::transform::{Transform, coarser_or_equal};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use time::OffsetDateTime;
use time::macros::datetime;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The file name every single-file load reports.
const FILE: &str = "policies/agreements/test.toml";

/// The clock of every test that does not test the clock: inside the base agreement's validity.
const NOW: OffsetDateTime = datetime!(2026-01-15 12:00 UTC);

/// The agreement part of every test ISA: valid 2025-04-01 to 2027-03-31, BST offsets, no
/// PCSC s.16 gateway.
const HEADER: &str = r#"# Test agreement written for gateway/src/policy/tests.rs.
[agreement]
id = "T-ISA-LFB"
title = "Test: deliberate fires"
version = "1.0"
parties = ["lfb", "rbk-council"]
dpia = "T-DPIA-1"
valid_from = 2025-04-01T00:00:00+01:00
valid_until = 2027-03-31T23:59:59+01:00
review_by = 2026-09-30T23:59:59+01:00
retention = "12 months"

[agreement.legal_basis]
gateways = ["CDA 1998 s.115"]
article6 = "6(1)(e) public task"
"#;

/// The parties line of [`HEADER`].
const PARTIES: &str = r#"parties = ["lfb", "rbk-council"]"#;

/// The gateways line of [`HEADER`].
const GATEWAYS: &str = r#"gateways = ["CDA 1998 s.115"]"#;

/// One purpose over `lfb_incident`, up to its fields table.
const LFB_PURPOSE: &str = r#"
[[purpose]]
id = "fire-sna"
description = "Deliberate fires by month and ward"
recipients = [{ agency = "rbk-council", role = "analyst" }]
output = "records"

[purpose.datasets.lfb_incident]
filter = [{ field = "fire_motive", in = ["Deliberate - others' property"] }]

[purpose.datasets.lfb_incident.fields]
"#;

/// A disposition for every field of `lfb_incident`.
const LFB_FIELDS: &str = r#"incident_number = "deny"
date_of_call = "month"
hour_of_call = "hour_band"
incident_group = "keep"
stop_code_description = "keep"
special_service_type = "deny"
property_category = "keep"
property_type = "keep"
fire_motive = "keep"
postcode_full = "deny"
uprn = "deny"
wd22cd = "keep"
lsoa21cd = "ward"
incident_station_ground = "keep"
first_pump_arriving_attendance_time = "deny"
num_pumps_attending = "keep"
casualty_count = "round5"
hfsv_referral_flag = "deny"
"#;

/// The base agreement: valid, one purpose `fire-sna` over `lfb_incident`.
fn lfb() -> String {
    format!("{HEADER}{LFB_PURPOSE}{LFB_FIELDS}")
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| Catalog::embedded().expect("the embedded catalog is valid"))
}

fn dataset(name: &str) -> &'static Dataset {
    catalog()
        .dataset(name)
        .unwrap_or_else(|| panic!("dataset {name} is in the catalog"))
}

/// A purpose `id` over `dataset`: `head` holds the purpose's own keys (output, linkage), `rule`
/// the dataset table's keys (persons, filter); every field is kept except direct identifiers.
fn purpose_over(dataset_name: &str, id: &str, head: &str, rule: &str) -> String {
    let mut s = format!(
        "\n[[purpose]]\nid = \"{id}\"\ndescription = \"test\"\n\
         recipients = [{{ agency = \"rbk-council\", role = \"analyst\" }}]\n{head}\n\
         [purpose.datasets.{dataset_name}]\n{rule}\n\
         [purpose.datasets.{dataset_name}.fields]\n"
    );
    for f in &dataset(dataset_name).fields {
        let d = if f.class == FieldClass::Direct {
            "deny"
        } else {
            "keep"
        };
        s += &format!("{} = \"{d}\"\n", f.name.as_str());
    }
    s
}

/// [`HEADER`] with other parties and gateways.
fn header(parties: &str, gateways: &str) -> String {
    edit(&edit(HEADER, PARTIES, parties), GATEWAYS, gateways)
}

/// `text` with the one occurrence of `from` replaced by `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the fixture holds {from:?} exactly once"
    );
    text.replacen(from, to, 1)
}

/// The 1-based line of the `nth` (0-based) occurrence of `needle`.
fn line_nth(text: &str, needle: &str, nth: usize) -> usize {
    let (at, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("the fixture holds {needle:?} {} times", nth + 1));
    text[..at].matches('\n').count() + 1
}

/// The 1-based line of the first occurrence of `needle`.
fn line(text: &str, needle: &str) -> usize {
    line_nth(text, needle, 0)
}

fn load_at(text: &str, now: OffsetDateTime) -> Result<Agreement, Vec<Problem>> {
    isa::load(Path::new(FILE), text, catalog(), now)
}

fn load(text: &str) -> Result<Agreement, Vec<Problem>> {
    load_at(text, NOW)
}

fn problems_at(text: &str, now: OffsetDateTime) -> Vec<Problem> {
    match load_at(text, now) {
        Ok(a) => panic!("{} loaded, but the edit should refuse it", a.id),
        Err(p) => p,
    }
}

/// Asserts the load of `text` fails with a problem at `file:line` whose message holds every
/// one of `says`; returns that problem.
fn refused_at(text: &str, now: OffsetDateTime, at_line: usize, says: &[&str]) -> Problem {
    let problems = problems_at(text, now);
    let found = problems.iter().find(|p| {
        p.file == FILE && p.line == at_line && says.iter().all(|s| p.message.contains(s))
    });
    match found {
        Some(p) => {
            assert!(
                p.to_string().starts_with(&format!("{FILE}:{at_line}: ")),
                "Display gives file:line first: {p}"
            );
            p.clone()
        }
        None => panic!(
            "expected a problem at {FILE}:{at_line} saying {says:?}; got:\n{}",
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn refused(text: &str, at_line: usize, says: &[&str]) -> Problem {
    refused_at(text, NOW, at_line, says)
}

fn loads(text: &str) -> Agreement {
    load(text).unwrap_or_else(|p| {
        panic!(
            "should load; problems:\n{}",
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// A policy of files `a0.toml`, `a1.toml`, … loaded at [`NOW`].
fn policy_of(texts: &[&str]) -> Policy {
    let files: Vec<(PathBuf, String)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (PathBuf::from(format!("a{i}.toml")), (*t).to_owned()))
        .collect();
    Policy::from_texts(&files, catalog(), NOW, "test")
        .unwrap_or_else(|e| panic!("policy should load:\n{e}"))
}

fn policy(text: &str) -> Policy {
    policy_of(&[text])
}

fn analyst() -> Requester {
    Requester {
        sub: "a.analyst".into(),
        agency: Some("rbk-council".into()),
        roles: vec!["analyst".into()],
    }
}

fn ask(purpose: &str, dataset_name: &str, fields: &[&str]) -> Request {
    Request {
        agreement: "T-ISA-LFB".into(),
        purpose: purpose.into(),
        dataset: dataset_name.into(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

/// Fields of `lfb_incident` under `fire-sna`, asked by the analyst at `now`.
fn ask_lfb_at(p: &Policy, fields: &[&str], now: OffsetDateTime) -> Explanation {
    explain(
        p,
        catalog(),
        &analyst(),
        &ask("fire-sna", "lfb_incident", fields),
        now,
    )
}

fn ask_lfb(p: &Policy, fields: &[&str]) -> Explanation {
    ask_lfb_at(p, fields, NOW)
}

/// The rule that refused the request, or `allowed`.
fn rule(e: &Explanation) -> &'static str {
    e.denial.as_ref().map_or("allowed", |d| d.rule)
}

/// Asserts the whole request was refused by `expected` and nothing is listed as released.
fn assert_refused(e: &Explanation, expected: &str) {
    assert_eq!(rule(e), expected, "denial: {:?}", e.denial);
    assert!(
        !e.fields.iter().any(|(_, o)| o.released()),
        "a refused request releases nothing: {:?}",
        e.fields
    );
}

fn outcome<'e>(e: &'e Explanation, field: &str) -> &'e FieldOutcome {
    e.fields
        .iter()
        .find(|(n, _)| n == field)
        .map(|(_, o)| o)
        .unwrap_or_else(|| panic!("{field} is in the explanation: {:?}", e.fields))
}

// ---------------------------------------------------------------------------------------------
// Closed-world load validation

#[test]
fn base_agreement_loads_and_covers_every_field() {
    let a = loads(&lfb());
    assert_eq!(a.id, "T-ISA-LFB");
    assert_eq!(a.file, FILE);
    let rule = &a.purposes[0].datasets["lfb_incident"];
    let names: Vec<&str> = rule.fields.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = dataset("lfb_incident")
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    want.sort_unstable();
    assert_eq!(names, want);
    assert_eq!(
        rule.fields["date_of_call"],
        Disposition::Generalise(Transform::Month)
    );
    assert_eq!(rule.fields["incident_number"], Disposition::Deny);
    assert_eq!(rule.fields["fire_motive"], Disposition::Keep);
}

#[test]
fn a_field_missing_from_the_isa_refuses_the_load() {
    let text = edit(&lfb(), "hour_of_call = \"hour_band\"\n", "");
    refused(
        &text,
        line(&text, "[purpose.datasets.lfb_incident.fields]"),
        &[
            "purpose fire-sna",
            "dataset lfb_incident",
            "every field needs a disposition (keep, deny or a generalisation)",
            "missing: hour_of_call",
        ],
    );
}

#[test]
fn a_field_listed_twice_refuses_the_load() {
    let text = edit(
        &lfb(),
        "fire_motive = \"keep\"\n",
        "fire_motive = \"keep\"\nfire_motive = \"deny\"\n",
    );
    refused(
        &text,
        line(&text, "fire_motive = \"deny\""),
        &["duplicate key"],
    );
}

#[test]
fn a_field_the_dataset_does_not_have_refuses_the_load() {
    let text = edit(&lfb(), "fire_motive = \"keep\"", "fire_motiv = \"keep\"");
    refused(
        &text,
        line(&text, "fire_motiv = "),
        &[
            "dataset lfb_incident has no field \"fire_motiv\"",
            "did you mean \"fire_motive\"",
        ],
    );
    refused(
        &text,
        line(&text, "[purpose.datasets.lfb_incident.fields]"),
        &["missing: fire_motive"],
    );
}

#[test]
fn an_unknown_transform_refuses_the_load_with_did_you_mean() {
    let text = edit(
        &lfb(),
        "date_of_call = \"month\"",
        "date_of_call = \"mnth\"",
    );
    refused(
        &text,
        line(&text, "date_of_call = "),
        &[
            "purpose fire-sna",
            "lfb_incident.date_of_call",
            "unknown transform \"mnth\"",
            "did you mean \"month\"",
            "or write \"keep\" or \"deny\"",
        ],
    );
    let text = edit(
        &lfb(),
        "hour_of_call = \"hour_band\"",
        "hour_of_call = \"hourbands\"",
    );
    refused(
        &text,
        line(&text, "hour_of_call = "),
        &[
            "unknown transform \"hourbands\"",
            "did you mean \"hour_band\"",
        ],
    );
}

#[test]
fn a_transform_that_does_not_fit_the_field_refuses_the_load() {
    for (from, to, field, ty, t) in [
        (
            "incident_group = \"keep\"",
            "incident_group = \"month\"",
            "incident_group",
            "enum",
            "month",
        ),
        (
            "property_type = \"keep\"",
            "property_type = \"round5\"",
            "property_type",
            "str",
            "round5",
        ),
        (
            "casualty_count = \"round5\"",
            "casualty_count = \"age_band_sv\"",
            "casualty_count",
            "int",
            "age_band_sv",
        ),
    ] {
        let text = edit(&lfb(), from, to);
        refused(
            &text,
            line(&text, to),
            &[
                "purpose fire-sna",
                &format!("lfb_incident.{field} is of type {ty}"),
                &format!("\"{t}\" does not apply"),
            ],
        );
    }
}

#[test]
fn a_transform_that_does_not_fit_the_field_is_refused_with_the_fix() {
    let text = edit(
        &lfb(),
        "incident_group = \"keep\"",
        "incident_group = \"month\"",
    );
    let p = refused(&text, line(&text, "incident_group = "), &["does not apply"]);
    assert!(
        p.message.contains("\"keep\"") || p.message.contains("\"deny\""),
        "the message should name what to write instead: {p}"
    );
}

#[test]
fn a_direct_identifier_with_anything_but_deny_refuses_the_load() {
    for (from, to) in [
        ("incident_number = \"deny\"", "incident_number = \"keep\""),
        ("postcode_full = \"deny\"", "postcode_full = \"ward\""),
        ("uprn = \"deny\"", "uprn = \"drop_free_text\""),
    ] {
        let text = edit(&lfb(), from, to);
        let field = to.split(' ').next().expect("a key");
        refused(
            &text,
            line(&text, to),
            &[
                &format!("lfb_incident.{field} is a direct identifier"),
                "never leaves the agency",
                "write \"deny\"",
            ],
        );
    }
}

#[test]
fn an_unknown_key_refuses_the_load_at_every_level() {
    let base = lfb();
    let cases: [(String, &str, &str); 7] = [
        (format!("colour = \"red\"\n{base}"), "colour = ", "colour"),
        (
            edit(
                &base,
                "retention = \"12 months\"\n",
                "retention = \"12 months\"\nowner = \"lfb\"\n",
            ),
            "owner = ",
            "owner",
        ),
        (
            edit(
                &base,
                "article6 = \"6(1)(e) public task\"\n",
                "article6 = \"6(1)(e) public task\"\narticle99 = \"x\"\n",
            ),
            "article99 = ",
            "article99",
        ),
        (
            edit(
                &base,
                "output = \"records\"\n",
                "output = \"records\"\npriority = 1\n",
            ),
            "priority = ",
            "priority",
        ),
        (
            edit(
                &base,
                "[purpose.datasets.lfb_incident]\n",
                "[purpose.datasets.lfb_incident]\nlimit = 5\n",
            ),
            "limit = ",
            "limit",
        ),
        (
            edit(
                &base,
                "role = \"analyst\" }",
                "role = \"analyst\", team = \"x\" }",
            ),
            "team = ",
            "team",
        ),
        (
            edit(
                &base,
                "[purpose.datasets.lfb_incident]\n",
                "[purpose.disclosure]\nmin_cel = 10\n\n[purpose.datasets.lfb_incident]\n",
            ),
            "min_cel = ",
            "min_cel",
        ),
    ];
    for (text, at, key) in cases {
        let p = refused(
            &text,
            line(&text, at),
            &[&format!("unknown field `{key}`"), "expected"],
        );
        assert_eq!(problems_at(&text, NOW).len(), 1, "{p}");
    }
}

#[test]
fn a_dataset_of_an_agency_that_is_not_a_party_refuses_the_load() {
    let text = edit(
        &lfb(),
        PARTIES,
        r#"parties = ["met-police", "rbk-council"]"#,
    );
    refused(
        &text,
        line(&text, "[purpose.datasets.lfb_incident.fields]"),
        &[
            "purpose fire-sna",
            "dataset lfb_incident is owned by lfb, which is not a party to the agreement",
            "add it to parties or remove the dataset",
        ],
    );
}

/// The base agreement with a second dataset, `police_asb_incident` (owned by met-police, not a
/// party), in the same purpose after `lfb_incident`.
fn two_datasets_one_not_a_party() -> String {
    let second = purpose_over("police_asb_incident", "unused", "", "");
    let tables = &second[second
        .find("[purpose.datasets.")
        .expect("purpose_over writes the dataset tables")..];
    format!("{}\n{tables}", lfb())
}

#[test]
fn a_second_dataset_of_a_non_party_is_refused() {
    let text = two_datasets_one_not_a_party();
    let problems = problems_at(&text, NOW);
    assert!(
        problems.iter().any(|p| p
            .message
            .contains("dataset police_asb_incident is owned by met-police, which is not a party")),
        "{problems:?}"
    );
}

#[test]
fn a_second_dataset_of_a_non_party_is_reported_at_its_own_line() {
    let text = two_datasets_one_not_a_party();
    refused(
        &text,
        line(&text, "[purpose.datasets.police_asb_incident.fields]"),
        &["dataset police_asb_incident is owned by met-police, which is not a party"],
    );
}

#[test]
fn a_party_that_is_not_a_partnership_agency_refuses_the_load() {
    let text = edit(&lfb(), PARTIES, r#"parties = ["lfb", "rbk-councl"]"#);
    refused(
        &text,
        line(&text, "parties = "),
        &[
            "party \"rbk-councl\" is not an agency of the partnership",
            "did you mean \"rbk-council\"",
        ],
    );
}

#[test]
fn a_dataset_not_in_the_catalog_refuses_the_load() {
    let text = lfb().replace("datasets.lfb_incident", "datasets.lfb_incidents");
    refused(
        &text,
        line(&text, "[purpose.datasets.lfb_incidents.fields]"),
        &[
            "purpose fire-sna",
            "dataset \"lfb_incidents\" is not in the catalog",
            "did you mean \"lfb_incident\"",
        ],
    );
}

#[test]
fn an_expired_agreement_refuses_the_load_but_loads_at_its_last_instant() {
    let text = lfb();
    let last = datetime!(2027-03-31 23:59:59 +01:00);
    load_at(&text, last).expect("loads at its last valid instant");
    refused_at(
        &text,
        datetime!(2027-03-31 23:00:00 UTC),
        line(&text, "valid_until = "),
        &[
            "expired at",
            "renew it (new valid_until and version) or remove the file",
        ],
    );
}

#[test]
fn an_instant_without_an_offset_refuses_the_load() {
    for local in ["2027-03-31T23:59:59", "2027-03-31", "2027-03-31 23:59:59"] {
        let text = edit(
            &lfb(),
            "valid_until = 2027-03-31T23:59:59+01:00",
            &format!("valid_until = {local}"),
        );
        refused(
            &text,
            line(&text, "valid_until = "),
            &[
                "valid_until",
                "no time zone offset",
                "write the instant with its offset, e.g. 2027-03-31T23:59:59+01:00",
            ],
        );
    }
    let text = edit(
        &lfb(),
        "valid_from = 2025-04-01T00:00:00+01:00",
        "valid_from = 2025-04-01T00:00:00",
    );
    refused(
        &text,
        line(&text, "valid_from = "),
        &["valid_from", "no time zone offset"],
    );
}

#[test]
fn valid_until_not_after_valid_from_refuses_the_load() {
    let early = datetime!(2024-01-01 00:00 UTC);
    for until in ["2025-03-31T23:59:59+01:00", "2025-04-01T00:00:00+01:00"] {
        let text = edit(
            &lfb(),
            "valid_until = 2027-03-31T23:59:59+01:00",
            &format!("valid_until = {until}"),
        );
        refused_at(
            &text,
            early,
            line(&text, "valid_until = "),
            &["valid_until must be after valid_from"],
        );
    }
    // The same instant in another offset is the same instant: still refused.
    let text = edit(
        &lfb(),
        "valid_until = 2027-03-31T23:59:59+01:00",
        "valid_until = 2025-03-31T23:00:00Z",
    );
    refused_at(
        &text,
        early,
        line(&text, "valid_until = "),
        &["valid_until must be after valid_from"],
    );
}

#[test]
fn a_purpose_id_used_twice_refuses_the_load() {
    let text = format!("{}{LFB_PURPOSE}{LFB_FIELDS}", lfb());
    refused(
        &text,
        line_nth(&text, "id = \"fire-sna\"", 1),
        &["purpose \"fire-sna\" is defined twice"],
    );
}

#[test]
fn a_purpose_id_used_twice_is_refused_with_the_fix() {
    let text = format!("{}{LFB_PURPOSE}{LFB_FIELDS}", lfb());
    let p = refused(
        &text,
        line_nth(&text, "id = \"fire-sna\"", 1),
        &["defined twice"],
    );
    assert!(
        p.message.contains("rename") || p.message.contains("merge"),
        "the message should say what to do: {p}"
    );
}

#[test]
fn a_purpose_id_with_look_alike_characters_refuses_the_load() {
    for id in ["fire\u{2011}sna", "fir\u{0435}-sna", "", "Fire SNA"] {
        let text = edit(&lfb(), "id = \"fire-sna\"", &format!("id = \"{id}\""));
        refused(
            &text,
            line(&text, &format!("id = \"{id}\"")),
            &[
                "purpose id",
                "must be 1-64 ASCII letters, digits, '-', '_' or '.'",
            ],
        );
    }
}

fn two_files_with_one_id() -> (Vec<(PathBuf, String)>, String) {
    let second = edit(
        &lfb(),
        "title = \"Test: deliberate fires\"",
        "title = \"Test: deliberate fires (copy)\"",
    );
    let files = vec![
        (PathBuf::from("policies/agreements/b.toml"), second.clone()),
        (PathBuf::from("policies/agreements/a.toml"), lfb()),
    ];
    (files, second)
}

#[test]
fn an_agreement_id_used_by_two_files_refuses_the_set() {
    let (files, _) = two_files_with_one_id();
    let err = Policy::from_texts(&files, catalog(), NOW, "test")
        .expect_err("two files with one agreement id");
    assert_eq!(err.problems.len(), 1, "{err}");
    let p = &err.problems[0];
    assert_eq!(p.file, "policies/agreements/b.toml");
    assert!(
        p.message
            .contains("agreement id T-ISA-LFB is also used by policies/agreements/a.toml")
            && p.message.contains("ids must be unique"),
        "{p}"
    );
}

#[test]
fn an_agreement_id_used_by_two_files_is_reported_at_its_line() {
    let (files, second) = two_files_with_one_id();
    let err = Policy::from_texts(&files, catalog(), NOW, "test")
        .expect_err("two files with one agreement id");
    assert_eq!(err.problems[0].line, line(&second, "id = \"T-ISA-LFB\""));
}

/// An ISA over a health or social care dataset, with PCSC s.16 among its gateways.
fn health_isa(dataset_name: &str, head: &str, rule: &str) -> String {
    let h = header(
        r#"parties = ["swl-icb", "rbk-council"]"#,
        r#"gateways = ["PCSC 2022 s.16", "CDA 1998 s.115"]"#,
    );
    format!(
        "{h}{}",
        purpose_over(dataset_name, "health-test", head, rule)
    )
}

/// A line that records a health basis beyond s.16.
const HEALTH_BASIS: &str = "article6 = \"6(1)(e) public task\"\nhealth = \"Caldicott-approved DHR panel, CG sign-off 2025-04\"\n";

#[test]
fn health_caveat_refuses_records_under_pcsc_s16() {
    let text = health_isa("ed_istv", "output = \"records\"\n", "");
    refused(
        &text,
        line(&text, "output = \"records\""),
        &[
            "purpose health-test",
            "dataset ed_istv is health or social care data",
            "anonymous or aggregate",
            "set output = \"aggregate\"",
            "legal_basis.health",
        ],
    );
    // Aggregate is allowed under s.16 …
    loads(&health_isa("ed_istv", "output = \"aggregate\"\n", ""));
    // … and records with a recorded health basis.
    let with_basis = edit(&text, "article6 = \"6(1)(e) public task\"\n", HEALTH_BASIS);
    let a = loads(&with_basis);
    assert!(a.health_basis.is_some());
}

#[test]
fn health_caveat_refuses_person_ids_from_social_care_data() {
    let text = edit(
        &health_isa(
            "council_csc_flags",
            "output = \"records\"\nlinkage = [\"nhs\"]\n",
            "persons = [\"child\"]\n",
        ),
        r#"parties = ["swl-icb", "rbk-council"]"#,
        r#"parties = ["rbk-council"]"#,
    );
    refused(
        &text,
        line(&text, "persons = "),
        &[
            "dataset council_csc_flags is health or social care data",
            "person ids need a separate health basis in legal_basis.health",
        ],
    );
    let with_basis = edit(&text, "article6 = \"6(1)(e) public task\"\n", HEALTH_BASIS);
    let a = loads(&with_basis);
    assert_eq!(
        a.purposes[0].datasets["council_csc_flags"].persons,
        vec!["child".to_owned()]
    );
}

/// The caveat does not depend on which gateways the agreement names: CDA s.115 alone does not
/// cover patient or social care information either.
#[test]
fn health_caveat_applies_whatever_the_gateways() {
    let text = format!(
        "{}{}",
        header(
            r#"parties = ["swl-icb", "rbk-council"]"#,
            r#"gateways = ["CDA 1998 s.115"]"#,
        ),
        purpose_over("ed_istv", "health-test", "output = \"records\"\n", "")
    );
    refused(
        &text,
        line(&text, "output = \"records\""),
        &["health or social care data"],
    );
}

/// An ISA over `probation_caseload` releasing person ids.
fn persons_isa(head: &str) -> String {
    format!(
        "{}{}",
        header(
            r#"parties = ["probation", "rbk-council"]"#,
            r#"gateways = ["CDA 1998 s.115"]"#,
        ),
        purpose_over(
            "probation_caseload",
            "reoffending",
            head,
            "persons = [\"person\"]\n"
        )
    )
}

#[test]
fn person_ids_need_records_and_linkage() {
    for head in [
        "output = \"aggregate\"\nlinkage = [\"pnc\"]\n",
        "output = \"records\"\n",
        "output = \"records\"\nlinkage = []\n",
    ] {
        let text = persons_isa(head);
        refused(
            &text,
            line(&text, "persons = "),
            &[
                "purpose reoffending",
                "person ids are released only with output = \"records\" and a non-empty linkage list",
            ],
        );
    }
    loads(&persons_isa("output = \"records\"\nlinkage = [\"pnc\"]\n"));
}

#[test]
fn the_default_fuzzy_threshold_is_the_matchers() {
    assert_eq!(
        crate::policy::isa::DEFAULT_FUZZY_THRESHOLD,
        skp_core::fuzzy::link::MatchSettings::default().threshold
    );
}

#[test]
fn fuzzy_linkage_takes_a_threshold_needs_demo_and_refuses_a_bad_one() {
    let ok = loads(&persons_isa(
        "output = \"records\"\nlinkage = [\"pnc\", \"demo\"]\nfuzzy = { threshold = 12.5 }\n",
    ));
    assert_eq!(
        ok.purposes[0].fuzzy,
        Some(crate::policy::isa::FuzzyLinkage { threshold: 12.5 })
    );
    let default = loads(&persons_isa(
        "output = \"records\"\nlinkage = [\"demo\"]\nfuzzy = {}\n",
    ));
    assert_eq!(
        default.purposes[0].fuzzy.map(|f| f.threshold),
        Some(crate::policy::isa::DEFAULT_FUZZY_THRESHOLD)
    );
    let exact = loads(&persons_isa("output = \"records\"\nlinkage = [\"pnc\"]\n"));
    assert_eq!(exact.purposes[0].fuzzy, None);

    let text = persons_isa("output = \"records\"\nlinkage = [\"pnc\"]\nfuzzy = {}\n");
    refused(
        &text,
        line(&text, "fuzzy = "),
        &["purpose reoffending", "add \"demo\" to `linkage`"],
    );
    for bad in ["-1.0", "61.0", "nan"] {
        let text = persons_isa(&format!(
            "output = \"records\"\nlinkage = [\"demo\"]\nfuzzy = {{ threshold = {bad} }}\n"
        ));
        refused(
            &text,
            line(&text, "fuzzy = "),
            &["fuzzy.threshold must be a match weight from 0 to 60"],
        );
    }
    let text =
        persons_isa("output = \"records\"\nlinkage = [\"demo\"]\nfuzzy = { treshold = 3.0 }\n");
    let problems = problems_at(&text, NOW);
    assert!(
        problems.iter().any(|p| p.message.contains("treshold")),
        "{problems:?}"
    );
}

#[test]
fn a_person_role_the_dataset_does_not_have_refuses_the_load() {
    let text = edit(
        &persons_isa("output = \"records\"\nlinkage = [\"pnc\"]\n"),
        "persons = [\"person\"]",
        "persons = [\"persn\"]",
    );
    refused(
        &text,
        line(&text, "persons = "),
        &[
            "dataset probation_caseload has no person role \"persn\"",
            "did you mean \"person\"",
        ],
    );
}

#[test]
fn a_filter_the_dataset_cannot_evaluate_refuses_the_load() {
    let filter = r#"filter = [{ field = "fire_motive", in = ["Deliberate - others' property"] }]"#;
    for (to, says) in [
        (
            r#"filter = [{ field = "fire_motiv", in = ["Deliberate - others' property"] }]"#,
            vec![
                "filter: no field \"fire_motiv\"",
                "did you mean \"fire_motive\"",
            ],
        ),
        (
            r#"filter = [{ field = "fire_motive", in = ["Deliberate"] }]"#,
            vec!["filter: \"Deliberate\" is not a value of fire_motive"],
        ),
        (
            r#"filter = [{ field = "fire_motive", min = 1 }]"#,
            vec!["filter: min/max apply to int fields; fire_motive is enum"],
        ),
        (
            r#"filter = [{ field = "casualty_count", is = true }]"#,
            vec!["filter: `is` applies to bool fields; casualty_count is int"],
        ),
        (
            r#"filter = [{ field = "casualty_count", min = 1, is = true }]"#,
            vec!["write exactly one of `in = [...]`, `min`/`max`, or `is = true|false`"],
        ),
        (
            r#"filter = [{ field = "postcode_full", in = ["KT1 1AA"] }]"#,
            vec!["postcode_full is a direct identifier"],
        ),
    ] {
        let text = edit(&lfb(), filter, to);
        let mut all = vec!["purpose fire-sna", "dataset lfb_incident"];
        all.extend(says);
        refused(&text, line(&text, "filter = "), &all);
    }
    // A valid int range and an `or` load.
    let text = edit(
        &lfb(),
        filter,
        r#"filter = [{ field = "casualty_count", min = 1 }, { field = "", or = [{ field = "hfsv_referral_flag", is = true }, { field = "incident_group", in = ["Fire"] }] }]"#,
    );
    assert_eq!(
        loads(&text).purposes[0].datasets["lfb_incident"]
            .filter
            .len(),
        2
    );
}

#[test]
fn an_unknown_enum_value_in_a_filter_is_refused_with_the_values() {
    let text = edit(
        &lfb(),
        r#"in = ["Deliberate - others' property"]"#,
        r#"in = ["Deliberate"]"#,
    );
    let p = refused(&text, line(&text, "filter = "), &["is not a value"]);
    assert!(
        p.message.contains("Deliberate - own property"),
        "the message should list the allowed values: {p}"
    );
}

#[test]
fn an_unknown_recipient_agency_or_role_refuses_the_load() {
    let recipients = r#"recipients = [{ agency = "rbk-council", role = "analyst" }]"#;
    let text = edit(
        &lfb(),
        recipients,
        r#"recipients = [{ agency = "rbk-counci", role = "analyst" }]"#,
    );
    refused(
        &text,
        line(&text, "recipients = "),
        &[
            "recipient agency \"rbk-counci\" is not an agency of the partnership",
            "did you mean \"rbk-council\"",
        ],
    );
    let text = edit(
        &lfb(),
        recipients,
        r#"recipients = [{ agency = "rbk-council", role = "analyts" }]"#,
    );
    refused(
        &text,
        line(&text, "recipients = "),
        &[
            "recipient role \"analyts\" is not known",
            "write \"analyst\"",
        ],
    );
    let text = edit(&lfb(), recipients, "recipients = []");
    refused(
        &text,
        line(&text, "recipients = "),
        &["no recipients; name at least one { agency, role }"],
    );
}

#[test]
fn an_unknown_linkage_kind_refuses_the_load() {
    let text = edit(
        &lfb(),
        "output = \"records\"\n",
        "output = \"records\"\nlinkage = [\"pnc\", \"nhss\"]\n",
    );
    refused(
        &text,
        line(&text, "linkage = "),
        &[
            "linkage token kind \"nhss\" is not known",
            "did you mean \"nhs\"",
            "known: nhs, pnc, demo, uprn, ref",
        ],
    );
}

#[test]
fn an_unknown_output_kind_refuses_the_load() {
    let text = edit(&lfb(), "output = \"records\"", "output = \"record\"");
    refused(
        &text,
        line(&text, "output = "),
        &[
            "output \"record\" is not known",
            "write \"records\" or \"aggregate\"",
        ],
    );
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let text = edit(
        &edit(
            &edit(
                &lfb(),
                "date_of_call = \"month\"",
                "date_of_call = \"mnth\"",
            ),
            "incident_number = \"deny\"",
            "incident_number = \"keep\"",
        ),
        "role = \"analyst\"",
        "role = \"analyts\"",
    );
    let found = problems_at(&text, NOW);
    let lines: Vec<usize> = found.iter().map(|p| p.line).collect();
    for at in ["date_of_call = ", "incident_number = ", "recipients = "] {
        assert!(
            lines.contains(&line(&text, at)),
            "a problem at the line of {at:?}: {found:?}"
        );
    }
}

#[test]
fn a_broken_file_fails_the_whole_set_closed() {
    let broken = edit(
        &lfb(),
        "date_of_call = \"month\"",
        "date_of_call = \"mnth\"",
    );
    let other = edit(&lfb(), "id = \"T-ISA-LFB\"", "id = \"T-ISA-OTHER\"");
    let files = vec![
        (PathBuf::from("a.toml"), other),
        (PathBuf::from("b.toml"), broken),
    ];
    let err = Policy::from_texts(&files, catalog(), NOW, "test")
        .expect_err("one invalid file refuses the set");
    assert!(err.problems.iter().all(|p| p.file == "b.toml"), "{err}");
    assert!(err.to_string().contains("b.toml:"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Deny by default

#[test]
fn the_base_request_is_allowed() {
    let p = policy(&lfb());
    let e = ask_lfb(&p, &["fire_motive", "date_of_call"]);
    assert_eq!(rule(&e), "allowed");
    assert_eq!(outcome(&e, "fire_motive"), &FieldOutcome::Keep);
    assert_eq!(
        outcome(&e, "date_of_call"),
        &FieldOutcome::Generalised(Transform::Month)
    );
    assert_eq!(e.fields.len(), 2, "only the fields asked: {:?}", e.fields);
}

#[test]
fn an_unknown_agreement_is_denied() {
    let p = policy(&lfb());
    for id in ["T-ISA-LFX", "t-isa-lfb", "T\u{2011}ISA-LFB", ""] {
        let mut r = ask("fire-sna", "lfb_incident", &[]);
        r.agreement = id.into();
        assert_refused(
            &explain(&p, catalog(), &analyst(), &r, NOW),
            "unknown-agreement",
        );
    }
}

#[test]
fn an_unknown_purpose_is_denied_including_case_and_look_alikes() {
    let p = policy(&lfb());
    for purpose in [
        "fire-needs",
        "Fire-SNA",
        "FIRE-SNA",
        "fire\u{2011}sna",
        "fir\u{0435}-sna",
        "fire-sna ",
        " fire-sna",
        "",
    ] {
        let e = explain(
            &p,
            catalog(),
            &analyst(),
            &ask(purpose, "lfb_incident", &[]),
            NOW,
        );
        assert_refused(&e, "unknown-purpose");
    }
}

#[test]
fn a_dataset_outside_the_purpose_is_denied() {
    let p = policy(&lfb());
    for ds in [
        "police_crime",
        "lfb_incidents",
        "lfb_incid\u{0435}nt",
        "LFB_INCIDENT",
        "",
    ] {
        let e = explain(&p, catalog(), &analyst(), &ask("fire-sna", ds, &[]), NOW);
        assert_refused(&e, "unknown-dataset");
    }
}

#[test]
fn an_unknown_field_is_denied() {
    let p = policy(&lfb());
    for f in ["colour", "Fire_Motive", "fire_m\u{043e}tive", "", ":month"] {
        assert_refused(&ask_lfb(&p, &["date_of_call", f]), "unknown-field");
    }
}

#[test]
fn a_requester_who_is_not_a_recipient_is_denied() {
    let p = policy(&lfb());
    let req = ask("fire-sna", "lfb_incident", &[]);
    let others = [
        Requester {
            agency: Some("met-police".into()),
            ..analyst()
        },
        Requester {
            agency: Some("lfb".into()),
            ..analyst()
        },
        Requester {
            agency: None,
            ..analyst()
        },
        Requester {
            roles: vec!["auditor".into()],
            ..analyst()
        },
        Requester {
            roles: vec!["admin".into()],
            ..analyst()
        },
        Requester {
            roles: vec!["Analyst".into()],
            ..analyst()
        },
        Requester {
            roles: vec![],
            ..analyst()
        },
    ];
    for who in others {
        let e = explain(&p, catalog(), &who, &req, NOW);
        assert_refused(&e, "not-a-recipient");
    }
    // An extra role does not hurt.
    let both = Requester {
        roles: vec!["auditor".into(), "analyst".into()],
        ..analyst()
    };
    assert_eq!(rule(&explain(&p, catalog(), &both, &req, NOW)), "allowed");
}

#[test]
fn a_named_subject_list_admits_only_those_subjects() {
    let text = edit(
        &lfb(),
        r#"role = "analyst" }"#,
        r#"role = "analyst", subjects = ["a.analyst"] }"#,
    );
    let p = policy(&text);
    let req = ask("fire-sna", "lfb_incident", &[]);
    assert_eq!(
        rule(&explain(&p, catalog(), &analyst(), &req, NOW)),
        "allowed"
    );
    for sub in ["b.analyst", "A.analyst", ""] {
        let who = Requester {
            sub: sub.into(),
            ..analyst()
        };
        assert_refused(&explain(&p, catalog(), &who, &req, NOW), "not-a-recipient");
    }
}

#[test]
fn a_field_the_isa_denies_is_denied_while_others_are_released() {
    let p = policy(&lfb());
    let e = ask_lfb(
        &p,
        &["fire_motive", "special_service_type", "incident_number"],
    );
    assert_eq!(rule(&e), "allowed");
    assert_eq!(outcome(&e, "fire_motive"), &FieldOutcome::Keep);
    for f in ["special_service_type", "incident_number"] {
        match outcome(&e, f) {
            FieldOutcome::Denied(d) => assert_eq!(d.rule, "isa-deny"),
            o => panic!("{f} should be denied, got {o:?}"),
        }
    }
}

#[test]
fn a_request_for_only_denied_fields_is_denied() {
    let p = policy(&lfb());
    for fields in [
        vec!["incident_number", "uprn"],
        vec!["special_service_type"],
        vec!["fire_motive:deny"],
        vec!["property_type:drop_free_text"],
    ] {
        let e = ask_lfb(&p, &fields);
        assert_eq!(rule(&e), "no-field-released", "{fields:?}");
        assert!(e.fields.iter().all(|(_, o)| !o.released()));
    }
}

#[test]
fn every_field_and_star_list_the_whole_dataset_with_identifiers_denied() {
    let p = policy(&lfb());
    let names: Vec<&str> = dataset("lfb_incident")
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    for fields in [vec![], vec!["*"], vec!["fire_motive", "*"]] {
        let e = ask_lfb(&p, &fields);
        assert_eq!(rule(&e), "allowed");
        let got: Vec<&str> = e.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(got, names, "every field, in catalog order");
        for f in ["incident_number", "postcode_full", "uprn"] {
            assert!(!outcome(&e, f).released(), "{f} is never released");
        }
        assert_eq!(
            outcome(&e, "lsoa21cd"),
            &FieldOutcome::Generalised(Transform::Ward)
        );
    }
}

#[test]
fn an_explanation_names_the_agreement_version_and_file_hash() {
    let text = lfb();
    let p = policy(&text);
    let e = ask_lfb(&p, &[]);
    let (id, version, sha) = e.agreement.expect("the agreement is known");
    assert_eq!(id, "T-ISA-LFB");
    assert_eq!(version, "1.0");
    assert_eq!(sha, hex::encode(Sha256::digest(text.as_bytes())));
    assert_eq!(e.output, Some(isa::Output::Records));
    assert_eq!(e.filter.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Validity boundaries (injected clock, stated offsets)

#[test]
fn valid_until_is_inclusive_to_the_second_in_its_own_offset() {
    let bst = lfb();
    let utc = edit(
        &bst,
        "valid_until = 2027-03-31T23:59:59+01:00",
        "valid_until = 2027-03-31T22:59:59Z",
    );
    for text in [bst, utc] {
        let p = policy(&text);
        assert_eq!(
            rule(&ask_lfb_at(&p, &[], datetime!(2027-03-31 23:59:59 +01:00))),
            "allowed"
        );
        assert_eq!(
            rule(&ask_lfb_at(&p, &[], datetime!(2027-03-31 22:59:59 UTC))),
            "allowed",
            "the same instant written in UTC"
        );
        assert_refused(
            &ask_lfb_at(&p, &[], datetime!(2027-03-31 23:00:00 UTC)),
            "expired",
        );
        assert_refused(
            &ask_lfb_at(&p, &[], datetime!(2027-04-01 00:00:00 +01:00)),
            "expired",
        );
    }
}

#[test]
fn an_instant_is_read_in_the_offset_written_not_in_utc() {
    // 23:59:59 written as UTC is an hour later than 23:59:59 BST.
    let utc = edit(
        &lfb(),
        "valid_until = 2027-03-31T23:59:59+01:00",
        "valid_until = 2027-03-31T23:59:59Z",
    );
    let at = datetime!(2027-03-31 23:30:00 UTC);
    assert_eq!(rule(&ask_lfb_at(&policy(&utc), &[], at)), "allowed");
    assert_refused(&ask_lfb_at(&policy(&lfb()), &[], at), "expired");
}

#[test]
fn valid_from_is_inclusive_to_the_second() {
    let p = policy(&lfb());
    assert_eq!(
        rule(&ask_lfb_at(&p, &[], datetime!(2025-04-01 00:00:00 +01:00))),
        "allowed"
    );
    assert_eq!(
        rule(&ask_lfb_at(&p, &[], datetime!(2025-03-31 23:00:00 UTC))),
        "allowed"
    );
    assert_refused(
        &ask_lfb_at(&p, &[], datetime!(2025-03-31 22:59:59 UTC)),
        "not-yet-valid",
    );
    assert_refused(
        &ask_lfb_at(&p, &[], datetime!(2025-03-31 23:59:59 +01:00)),
        "not-yet-valid",
    );
}

// ---------------------------------------------------------------------------------------------
// The choice of generalisation

#[test]
fn a_coarser_request_gets_what_it_asked() {
    let p = policy(&lfb());
    for (asked, field, got) in [
        ("date_of_call:year", "date_of_call", Transform::Year),
        ("date_of_call:quarter", "date_of_call", Transform::Quarter),
        ("date_of_call:month", "date_of_call", Transform::Month),
        ("lsoa21cd:borough", "lsoa21cd", Transform::Borough),
    ] {
        let e = ask_lfb(&p, &[asked]);
        assert_eq!(
            outcome(&e, field),
            &FieldOutcome::Generalised(got),
            "{asked}"
        );
    }
}

#[test]
fn a_finer_or_incomparable_request_gets_what_the_isa_says() {
    let p = policy(&lfb());
    for (asked, field, got) in [
        ("date_of_call:day", "date_of_call", Transform::Month),
        ("date_of_call:keep", "date_of_call", Transform::Month),
        ("date_of_call:week", "date_of_call", Transform::Month),
        ("date_of_call:day_of_week", "date_of_call", Transform::Month),
        ("date_of_call", "date_of_call", Transform::Month),
        ("hour_of_call:hour", "hour_of_call", Transform::HourBand),
        ("lsoa21cd:keep", "lsoa21cd", Transform::Ward),
        ("casualty_count:keep", "casualty_count", Transform::Round5),
    ] {
        let e = ask_lfb(&p, &[asked]);
        assert_eq!(
            outcome(&e, field),
            &FieldOutcome::Generalised(got),
            "{asked}"
        );
    }
}

#[test]
fn a_kept_field_with_a_requested_transform_gets_the_transform() {
    let p = policy(&lfb());
    let e = ask_lfb(&p, &["wd22cd:borough", "num_pumps_attending:round5"]);
    assert_eq!(
        outcome(&e, "wd22cd"),
        &FieldOutcome::Generalised(Transform::Borough)
    );
    assert_eq!(
        outcome(&e, "num_pumps_attending"),
        &FieldOutcome::Generalised(Transform::Round5)
    );
    let e = ask_lfb(&p, &["wd22cd:keep"]);
    assert_eq!(outcome(&e, "wd22cd"), &FieldOutcome::Keep);
}

#[test]
fn a_transform_that_does_not_apply_or_does_not_exist_is_denied() {
    let p = policy(&lfb());
    for asked in [
        "incident_group:month",
        "fire_motive:round5",
        "property_type:year",
        "date_of_call:yaer",
        "date_of_call:Month",
        "date_of_call:",
    ] {
        assert_refused(&ask_lfb(&p, &["fire_motive", asked]), "unknown-transform");
    }
}

#[test]
fn asking_a_generalisation_of_a_denied_field_is_still_denied() {
    let p = policy(&lfb());
    let e = ask_lfb(&p, &["fire_motive", "special_service_type:keep"]);
    match outcome(&e, "special_service_type") {
        FieldOutcome::Denied(d) => assert_eq!(d.rule, "isa-deny"),
        o => panic!("denied field released as {o:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Policy hash

fn named(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(n, t)| (PathBuf::from(n), (*t).to_owned()))
        .collect()
}

fn sha_of(files: &[(PathBuf, String)]) -> Option<String> {
    Policy::from_texts(files, catalog(), NOW, "test")
        .ok()
        .map(|p| p.sha256().to_owned())
}

/// Three valid agreements with distinct ids, each ending in a comment line holding `notes[i]`.
fn three_files(notes: &[String; 3]) -> Vec<(PathBuf, String)> {
    (0..3)
        .map(|i| {
            let text = edit(&lfb(), "id = \"T-ISA-LFB\"", &format!("id = \"T-ISA-{i}\""));
            (
                PathBuf::from(format!("policies/agreements/isa-{i}.toml")),
                format!("{text}# note: {}\n", notes[i]),
            )
        })
        .collect()
}

#[test]
fn the_same_files_give_the_same_hash() {
    let files = three_files(&["a".into(), "b".into(), "c".into()]);
    let one = Policy::from_texts(&files, catalog(), NOW, "one").expect("loads");
    let two = Policy::from_texts(&files, catalog(), datetime!(2025-06-01 00:00 UTC), "two")
        .expect("loads");
    assert_eq!(
        one.sha256(),
        two.sha256(),
        "clock and source are not hashed"
    );
    assert_eq!(one.sha256().len(), 64);
    assert!(one.sha256().bytes().all(|b| b.is_ascii_hexdigit()));
    let mut reversed = files.clone();
    reversed.reverse();
    assert_eq!(sha_of(&reversed).as_deref(), Some(one.sha256()));
}

#[test]
fn a_directory_and_the_same_texts_give_the_same_hash() {
    let files = three_files(&["x".into(), "y".into(), "z".into()]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (path, text) in &files {
        let name = path.file_name().expect("a file name");
        std::fs::write(dir.path().join(name), text).expect("write a test file");
    }
    std::fs::write(dir.path().join("README.md"), "not an agreement").expect("write");
    let from_dir = Policy::load_dir(dir.path(), catalog(), NOW).expect("loads");
    assert_eq!(Some(from_dir.sha256().to_owned()), sha_of(&files));
    assert_eq!(from_dir.agreements().len(), 3);
}

#[test]
fn the_hash_covers_file_names_and_file_boundaries() {
    let a = lfb();
    let b = edit(&lfb(), "id = \"T-ISA-LFB\"", "id = \"T-ISA-B\"");
    let base = sha_of(&named(&[("a.toml", &a), ("b.toml", &b)])).expect("loads");
    let renamed = sha_of(&named(&[("a.toml", &a), ("c.toml", &b)])).expect("loads");
    assert_ne!(base, renamed, "a renamed file changes the hash");
    // Moving a comment from the end of one file to the start of the next.
    let moved_from =
        sha_of(&named(&[("a.toml", &format!("{a}# x\n")), ("b.toml", &b)])).expect("loads");
    let moved_to =
        sha_of(&named(&[("a.toml", &a), ("b.toml", &format!("# x\n{b}"))])).expect("loads");
    assert_ne!(moved_from, moved_to);
    let dropped = sha_of(&named(&[("a.toml", &a)])).expect("loads");
    assert_ne!(base, dropped, "a removed file changes the hash");
}

#[test]
fn the_hash_separates_names_from_contents() {
    // Two sets whose names and texts concatenate to the same bytes: name "a.toml", then
    // `A#xb.toml# bbb\nB`. Only the file boundaries differ, so the hash must encode them.
    let a = lfb();
    let b = edit(&lfb(), "id = \"T-ISA-LFB\"", "id = \"T-ISA-B\"");
    let one = named(&[
        ("a.toml", &format!("{a}#x")),
        ("b.toml", &format!("# bbb\n{b}")),
    ]);
    let two = named(&[
        ("a.toml", &format!("{a}#xb.toml")),
        ("z/# bbb", &format!("\n{b}")),
    ]);
    let concat = |files: &[(PathBuf, String)]| -> String {
        files
            .iter()
            .map(|(p, t)| format!("{}{t}", p.file_name().expect("a name").to_string_lossy()))
            .collect()
    };
    assert_eq!(concat(&one), concat(&two), "the fixture is ambiguous");
    assert_ne!(sha_of(&one).expect("loads"), sha_of(&two).expect("loads"));
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// The dispositions an ISA may give a field: `deny` for direct identifiers, otherwise `keep`,
/// `deny` and every transform that fits the field.
fn candidates(f: &Field) -> Vec<&'static str> {
    if f.class == FieldClass::Direct {
        return vec!["deny"];
    }
    let mut v = vec!["keep", "deny"];
    v.extend(
        Transform::ALL
            .iter()
            .filter(|t| !matches!(t, Transform::Keep | Transform::Deny) && t.applies_to_field(f))
            .map(|t| t.name()),
    );
    v
}

fn disposition(name: &str) -> Disposition {
    match name {
        "keep" => Disposition::Keep,
        "deny" => Disposition::Deny,
        t => Disposition::Generalise(Transform::parse(t).expect("a candidate parses")),
    }
}

/// An ISA with every party over one dataset, with the given field dispositions.
fn random_isa(ds: &Dataset, disp: &[(String, &str)]) -> String {
    // With a health basis, so health and social care datasets may be released as records too.
    let mut s = edit(
        &header(
            r#"parties = ["met-police", "rbk-council", "lfb", "probation", "swl-icb"]"#,
            GATEWAYS,
        ),
        "article6 = \"6(1)(e) public task\"\n",
        HEALTH_BASIS,
    );
    s += &format!(
        "\n[[purpose]]\nid = \"p\"\ndescription = \"random\"\n\
         recipients = [{{ agency = \"rbk-council\", role = \"analyst\" }}]\noutput = \"records\"\n\n\
         [purpose.datasets.{}.fields]\n",
        ds.name.as_str()
    );
    for (f, d) in disp {
        s += &format!("{f} = \"{d}\"\n");
    }
    s
}

/// One asked field: which field, how the transform is chosen (0 none, 1 one that fits, 2 any),
/// and which transform.
type Asked = (Index, u8, Index);

fn asked_text(ds: &Dataset, (fi, mode, ti): &Asked) -> (String, bool) {
    let f = &ds.fields[fi.index(ds.fields.len())];
    let fitting: Vec<Transform> = Transform::ALL
        .iter()
        .copied()
        .filter(|t| t.applies_to_field(f))
        .collect();
    let name = f.name.as_str();
    match mode {
        1 if !fitting.is_empty() => (format!("{name}:{}", ti.get(&fitting).name()), true),
        2 => {
            let t = *ti.get(Transform::ALL);
            (format!("{name}:{}", t.name()), t.applies_to_field(f))
        }
        _ => (name.to_owned(), true),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// No field is ever released beyond what the agreement says.
    #[test]
    fn no_release_beyond_the_isa(
        ds_pick in any::<Index>(),
        disp_picks in proptest::collection::vec(any::<Index>(), 64),
        asked in proptest::collection::vec((any::<Index>(), 0u8..3, any::<Index>()), 0..8),
    ) {
        let datasets: Vec<&Dataset> = catalog().datasets().collect();
        let ds = *ds_pick.get(&datasets);
        prop_assert!(ds.fields.len() <= disp_picks.len());
        let disp: Vec<(String, &str)> = ds
            .fields
            .iter()
            .zip(&disp_picks)
            .map(|(f, pick)| (f.name.as_str().to_owned(), *pick.get(&candidates(f))))
            .collect();
        let text = random_isa(ds, &disp);
        let p = policy(&text);
        let isa: BTreeMap<&str, Disposition> =
            disp.iter().map(|(f, d)| (f.as_str(), disposition(d))).collect();
        // The loader keeps exactly what the file says.
        let loaded = &p.agreements()[0].purposes[0].datasets[ds.name.as_str()].fields;
        for (f, d) in &isa {
            prop_assert_eq!(loaded.get(*f), Some(d));
        }

        let asked: Vec<(String, bool)> = asked.iter().map(|a| asked_text(ds, a)).collect();
        let fields: Vec<&str> = asked.iter().map(|(a, _)| a.as_str()).collect();
        let req = Request {
            agreement: "T-ISA-LFB".into(),
            purpose: "p".into(),
            dataset: ds.name.as_str().into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        };
        let e = explain(&p, catalog(), &analyst(), &req, NOW);

        if asked.iter().any(|(_, fits)| !fits) {
            prop_assert_eq!(rule(&e), "unknown-transform");
        }
        let wanted: BTreeMap<&str, Vec<Option<Transform>>> = {
            let mut m: BTreeMap<&str, Vec<Option<Transform>>> = BTreeMap::new();
            for f in &fields {
                let (n, t) = match f.split_once(':') {
                    Some((n, t)) => (n, Some(Transform::parse(t).expect("generated names parse"))),
                    None => (*f, None),
                };
                m.entry(n).or_default().push(t);
            }
            m
        };
        let mut released = false;
        for (i, (name, o)) in e.fields.iter().enumerate() {
            let field = ds.field(name).expect("an explained field is in the dataset");
            let d = isa[name.as_str()];
            released |= o.released();
            match d {
                Disposition::Deny => prop_assert!(!o.released(), "{} denied by the ISA but {:?}", name, o),
                Disposition::Generalise(g) if g.releases_nothing() => {
                    prop_assert!(!o.released(), "{} is {} in the ISA but {:?}", name, g, o)
                }
                Disposition::Generalise(g) => {
                    prop_assert_ne!(o, &FieldOutcome::Keep, "{} generalised to {} in the ISA", name, g);
                    if let FieldOutcome::Generalised(t) = o {
                        prop_assert!(coarser_or_equal(*t, g), "{}: released {} where the ISA says {}", name, t, g);
                    }
                }
                Disposition::Keep => {}
            }
            if let FieldOutcome::Generalised(t) = o {
                prop_assert!(!t.releases_nothing() && *t != Transform::Keep, "{}: {:?}", name, o);
                prop_assert!(t.applies_to_field(field), "{}: {} does not fit", name, t);
            }
            // Without a requested transform the outcome is exactly the ISA's disposition.
            let want = if fields.is_empty() {
                Some(None)
            } else {
                let n = e.fields[..i].iter().filter(|(m, _)| m == name).count();
                wanted.get(name.as_str()).and_then(|w| w.get(n)).copied()
            };
            prop_assert!(want.is_some(), "{} was not asked", name);
            if want == Some(None) {
                let expected = match d {
                    Disposition::Keep => FieldOutcome::Keep,
                    Disposition::Generalise(g) if !g.releases_nothing() => FieldOutcome::Generalised(g),
                    _ => {
                        prop_assert!(!o.released());
                        continue;
                    }
                };
                prop_assert_eq!(o, &expected);
            }
        }
        match rule(&e) {
            "allowed" => prop_assert!(released),
            "no-field-released" => prop_assert!(!released && !e.fields.is_empty()),
            _ => prop_assert!(e.fields.is_empty()),
        }
        if fields.is_empty() {
            prop_assert_eq!(e.fields.len(), ds.fields.len());
        }
    }

    /// The policy hash does not depend on the order the files are given in.
    #[test]
    fn the_hash_ignores_file_order(
        notes in proptest::array::uniform3("[ -~]{0,24}"),
        order in Just(vec![0usize, 1, 2]).prop_shuffle(),
    ) {
        let files = three_files(&notes);
        let shuffled: Vec<(PathBuf, String)> = order.iter().map(|i| files[*i].clone()).collect();
        let a = sha_of(&files);
        prop_assert!(a.is_some());
        prop_assert_eq!(a, sha_of(&shuffled));
    }

    /// The policy hash changes whenever any byte of any file changes (when the result still
    /// loads; a change in the trailing comment always does).
    #[test]
    fn the_hash_changes_with_any_byte(
        notes in proptest::array::uniform3("[ -~]{1,24}"),
        file in 0usize..3,
        in_comment in any::<bool>(),
        at in any::<Index>(),
        byte in 0x20u8..0x7f,
    ) {
        let files = three_files(&notes);
        let before = sha_of(&files).expect("the three files load");
        let text = files[file].1.as_bytes();
        let comment_start = text.len() - 1 - notes[file].len();
        let pos = if in_comment {
            comment_start + at.index(notes[file].len())
        } else {
            at.index(text.len())
        };
        let mut changed = text.to_vec();
        changed[pos] = if changed[pos] == byte {
            if byte == 0x7e { 0x20 } else { byte + 1 }
        } else {
            byte
        };
        let Ok(changed) = String::from_utf8(changed) else {
            return Err(TestCaseError::fail("ASCII replaced by ASCII stays UTF-8"));
        };
        let mut mutated = files.clone();
        mutated[file].1 = changed;
        match sha_of(&mutated) {
            Some(after) => prop_assert_ne!(before, after),
            None => prop_assert!(!in_comment, "a comment change keeps the file valid"),
        }
    }
}
