//! Golden decision files (`policies/tests/*.toml`): requests with the decision each agreement
//! must give, so any change that widens (or narrows) a release fails a test.
//!
//! ```toml
//! [[case]]
//! name = "SV analyst: offence month, victim age band, no names"
//! agreement = "SKP-ISA-SV-01"
//! purpose = "serious-violence-sna"
//! dataset = "police_crime"
//! at = 2026-01-15T12:00:00Z
//! requester = { sub = "a.analyst", agency = "rbk-council", roles = ["analyst"] }
//! fields = []            # every field (then `outcome` must list every field of the dataset)
//! expect = "allow"       # or "deny", with `rule = "expired"`
//! [case.outcome]
//! committed_from = "month"
//! victim_surname = "deny"
//! ```

use super::Policy;
use super::decide::{Request, Requester, explain};
use serde::Deserialize;
use skp_core::catalog::Catalog;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    case: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    agreement: String,
    purpose: String,
    dataset: String,
    at: toml::value::Datetime,
    requester: RawRequester,
    #[serde(default)]
    fields: Vec<String>,
    expect: String,
    rule: Option<String>,
    #[serde(default)]
    outcome: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequester {
    sub: String,
    agency: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// The result of running golden files.
#[derive(Debug, Default)]
pub struct GoldenReport {
    /// Cases that gave the expected decision.
    pub passed: usize,
    /// `file: case: what differed`, one per failed case.
    pub failures: Vec<String>,
}

/// Runs every case of the given (path, text) files against `policy`.
pub fn run(
    files: &[(std::path::PathBuf, String)],
    policy: &Policy,
    catalog: &Catalog,
) -> GoldenReport {
    let mut report = GoldenReport::default();
    for (path, text) in files {
        match run_file(path, text, policy, catalog) {
            Ok((passed, failures)) => {
                report.passed += passed;
                report.failures.extend(failures);
            }
            Err(e) => report.failures.push(e),
        }
    }
    report
}

fn run_file(
    path: &Path,
    text: &str,
    policy: &Policy,
    catalog: &Catalog,
) -> Result<(usize, Vec<String>), String> {
    let raw: RawFile = skp_core::toml_file::parse(text, path).map_err(|e| e.to_string())?;
    let file = path.display();
    let mut passed = 0;
    let mut failures = Vec::new();
    for c in raw.case {
        let at = match super::isa::instant(&c.at) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{file}: case {:?}: at: {e}", c.name));
                continue;
            }
        };
        let who = Requester {
            sub: c.requester.sub.clone(),
            agency: c.requester.agency.clone(),
            roles: c.requester.roles.clone(),
        };
        let req = Request {
            agreement: c.agreement.clone(),
            purpose: c.purpose.clone(),
            dataset: c.dataset.clone(),
            fields: c.fields.clone(),
        };
        let e = explain(policy, catalog, &who, &req, at);
        let mut diffs = Vec::new();
        match (c.expect.as_str(), &e.denial) {
            ("allow", None) => {}
            ("allow", Some(d)) => diffs.push(format!(
                "expected allow, got deny by {}: {}",
                d.rule, d.message
            )),
            ("deny", None) => diffs.push("expected deny, got allow".to_string()),
            ("deny", Some(d)) => {
                if let Some(r) = &c.rule
                    && r != d.rule
                {
                    diffs.push(format!(
                        "expected deny by {r}, got deny by {}: {}",
                        d.rule, d.message
                    ));
                }
            }
            (other, _) => diffs.push(format!("expect = {other:?}: write \"allow\" or \"deny\"")),
        }
        if c.expect == "allow" && e.denial.is_none() {
            let got: BTreeMap<&str, &str> = e
                .fields
                .iter()
                .map(|(n, o)| (n.as_str(), o.name()))
                .collect();
            if c.fields.is_empty() {
                for n in got.keys() {
                    if !c.outcome.contains_key(*n) {
                        diffs.push(format!("outcome does not list field {n} (a case over every field must list every field)"));
                    }
                }
            }
            for (n, want) in &c.outcome {
                match got.get(n.as_str()) {
                    Some(g) if g == want => {}
                    Some(g) => diffs.push(format!("{n}: expected {want}, got {g}")),
                    None => diffs.push(format!(
                        "{n}: expected {want}, but the field was not in the decision"
                    )),
                }
            }
        }
        if diffs.is_empty() {
            passed += 1;
        } else {
            failures.push(format!("{file}: case {:?}: {}", c.name, diffs.join("; ")));
        }
    }
    Ok((passed, failures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn embedded(list: &[(&str, &str)], dir: &str) -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(n, t)| (Path::new(dir).join(n), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn every_shipped_golden_decision_holds() {
        let catalog = Catalog::embedded().expect("catalog");
        let now = time::OffsetDateTime::now_utc();
        let policy = Policy::embedded(&catalog, now).expect("shipped agreements load");
        assert_eq!(
            policy.agreements().len(),
            8,
            "the eight purposes of domain.md part C"
        );
        let tests = embedded(super::super::EMBEDDED_TESTS, "policies/tests");
        let report = run(&tests, &policy, &catalog);
        assert!(report.failures.is_empty(), "{:#?}", report.failures);
        assert!(report.passed >= 300, "only {} golden cases", report.passed);
    }

    #[test]
    fn widening_any_shipped_agreement_fails_a_golden_case() {
        let catalog = Catalog::embedded().expect("catalog");
        let now = time::OffsetDateTime::now_utc();
        let tests = embedded(super::super::EMBEDDED_TESTS, "policies/tests");
        let files = embedded(super::super::EMBEDDED_AGREEMENTS, "policies/agreements");
        let mut widened = 0;
        for (i, (_, text)) in files.iter().enumerate() {
            // Release the first denied non-identifier field of the file instead.
            let Some(at) = text
                .match_indices(" = \"deny\"")
                .map(|(at, _)| at)
                .find(|at| {
                    let key = text[..*at].rsplit('\n').next().unwrap_or("");
                    let f = catalog
                        .datasets()
                        .flat_map(|d| d.fields.iter())
                        .find(|f| f.name.as_str() == key.trim());
                    f.is_some_and(|f| f.is_sent() && f.ty != skp_core::catalog::FieldType::Str)
                })
            else {
                continue;
            };
            let mut changed = files.clone();
            changed[i].1 = format!("{} = \"keep\"{}", &text[..at], &text[at + 9..]);
            let Ok(policy) = Policy::from_texts(&changed, &catalog, now, "test") else {
                continue;
            };
            let report = run(&tests, &policy, &catalog);
            assert!(
                !report.failures.is_empty(),
                "widening {} at byte {at} passed every golden case",
                files[i].0.display()
            );
            widened += 1;
        }
        assert!(widened >= 6, "only {widened} agreements could be widened");
    }
}
