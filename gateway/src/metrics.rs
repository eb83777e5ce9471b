//! Operator metrics in the Prometheus text exposition format (version 0.0.4): ingested and
//! refused records, releases and denials, audit log size and append latency, and each agency
//! certificate's days to expiry.
//!
//! One process-wide registry ([`global`]) that services, the store and the audit log add to;
//! [`Metrics::render`] writes it out for `GET /metrics` on the console listener. Labels are
//! bounded by configuration (agencies, datasets, catalog fields, outcomes, rule names): never a
//! value, token, subject or free text, so a scrape holds no personal data. The `reason` of a
//! refused record is one of the fixed codes of [`RejectReason`] (`raw_identifier`,
//! `missing_value`, `bad_value`, `bad_key`, `bad_value_count`, `unknown_role`, `bad_token`,
//! `bad_fuzzy_tokens`, `bad_content_hash`).

use crate::validate::RejectReason;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Upper bounds (seconds) of the audit append latency histogram.
pub const APPEND_BUCKETS: [f64; 10] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0];

/// The registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (agency, dataset, outcome) → records.
    ingested: BTreeMap<(String, String, &'static str), u64>,
    /// (agency, dataset, field, reason) → records refused at validation.
    rejected: BTreeMap<(String, String, String, RejectReason), u64>,
    /// Release kind → releases made.
    releases: BTreeMap<String, u64>,
    /// Rows released, by kind.
    released_rows: BTreeMap<String, u64>,
    /// Rule → releases refused.
    denials: BTreeMap<String, u64>,
    limited: BTreeMap<String, u64>,
    /// Cumulative counts per bucket of [`APPEND_BUCKETS`], then the count and the sum.
    append_buckets: [u64; APPEND_BUCKETS.len()],
    append_count: u64,
    append_sum: f64,
    /// Agency → certificate `notAfter` (Unix seconds) of the last connection seen.
    cert_not_after: BTreeMap<String, i64>,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut g = crate::unpoisoned(self.inner.lock());
        f(&mut g);
    }

    /// Records stored by ingest (`outcome`: `accepted`, `duplicate` or `replaced`).
    pub fn ingested(&self, agency: &str, dataset: &str, outcome: &'static str, n: u64) {
        if n > 0 {
            self.with(|m| {
                *m.ingested
                    .entry((agency.to_owned(), dataset.to_owned(), outcome))
                    .or_default() += n;
            });
        }
    }

    /// A record refused at validation, by the field at fault (empty: the record as a whole)
    /// and the kind of fault.
    pub fn rejected(&self, agency: &str, dataset: &str, field: &str, reason: RejectReason) {
        let field = if field.is_empty() { "record" } else { field };
        self.with(|m| {
            *m.rejected
                .entry((
                    agency.to_owned(),
                    dataset.to_owned(),
                    field.to_owned(),
                    reason,
                ))
                .or_default() += 1;
        });
    }

    /// A release made (`extract` or `aggregate`) with its rows.
    pub fn released(&self, kind: &str, rows: u64) {
        self.with(|m| {
            *m.releases.entry(kind.to_owned()).or_default() += 1;
            *m.released_rows.entry(kind.to_owned()).or_default() += rows;
        });
    }

    /// A release refused, by the rule that refused it.
    pub fn denied(&self, rule: &str) {
        self.with(|m| *m.denials.entry(rule.to_owned()).or_default() += 1);
    }

    /// One call refused by the resource limit `limit` (a `[limits]` setting).
    pub fn limited(&self, limit: &str) {
        self.with(|m| *m.limited.entry(limit.to_owned()).or_default() += 1);
    }

    /// One durable audit append (a group of entries) that took `secs`.
    pub fn audit_append(&self, secs: f64) {
        self.with(|m| {
            for (b, bound) in m.append_buckets.iter_mut().zip(APPEND_BUCKETS) {
                if secs <= bound {
                    *b += 1;
                }
            }
            m.append_count += 1;
            m.append_sum += secs;
        });
    }

    /// An agency's certificate was seen with this `notAfter` (Unix seconds).
    pub fn certificate(&self, agency: &str, not_after: i64) {
        self.with(|m| {
            m.cert_not_after.insert(agency.to_owned(), not_after);
        });
    }

    /// The exposition text, with the audit log's size and the clock (`now`, Unix seconds) for
    /// days to expiry.
    pub fn render(&self, audit_entries: u64, now: i64) -> String {
        let m = crate::unpoisoned(self.inner.lock());
        let mut o = String::new();
        head(
            &mut o,
            "skp_ingest_records_total",
            "counter",
            "Records ingested, by agency, dataset and outcome.",
        );
        for ((a, d, out), n) in &m.ingested {
            let _ = writeln!(
                o,
                "skp_ingest_records_total{{agency=\"{}\",dataset=\"{}\",outcome=\"{out}\"}} {n}",
                lv(a),
                lv(d)
            );
        }
        head(
            &mut o,
            "skp_ingest_rejected_records_total",
            "counter",
            "Records refused at validation, by agency, dataset, the field at fault and the kind \
             of fault.",
        );
        for ((a, d, f, r), n) in &m.rejected {
            let _ = writeln!(
                o,
                "skp_ingest_rejected_records_total{{agency=\"{}\",dataset=\"{}\",field=\"{}\",reason=\"{}\"}} {n}",
                lv(a),
                lv(d),
                lv(f),
                r.as_str()
            );
        }
        head(
            &mut o,
            "skp_releases_total",
            "counter",
            "Releases made, by kind.",
        );
        for (k, n) in &m.releases {
            let _ = writeln!(o, "skp_releases_total{{kind=\"{}\"}} {n}", lv(k));
        }
        head(
            &mut o,
            "skp_released_rows_total",
            "counter",
            "Rows released, by kind.",
        );
        for (k, n) in &m.released_rows {
            let _ = writeln!(o, "skp_released_rows_total{{kind=\"{}\"}} {n}", lv(k));
        }
        head(
            &mut o,
            "skp_release_denials_total",
            "counter",
            "Releases refused, by the rule that refused them.",
        );
        for (r, n) in &m.denials {
            let _ = writeln!(o, "skp_release_denials_total{{rule=\"{}\"}} {n}", lv(r));
        }
        head(
            &mut o,
            "skp_limit_refusals_total",
            "counter",
            "Calls refused by a resource limit, by the [limits] setting that refused them.",
        );
        for (l, n) in &m.limited {
            let _ = writeln!(o, "skp_limit_refusals_total{{limit=\"{}\"}} {n}", lv(l));
        }
        head(
            &mut o,
            "skp_audit_log_entries",
            "gauge",
            "Entries in the audit log.",
        );
        let _ = writeln!(o, "skp_audit_log_entries {audit_entries}");
        head(
            &mut o,
            "skp_audit_append_seconds",
            "histogram",
            "Time to make a group of audit entries durable.",
        );
        for (b, bound) in m.append_buckets.iter().zip(APPEND_BUCKETS) {
            let _ = writeln!(o, "skp_audit_append_seconds_bucket{{le=\"{bound}\"}} {b}");
        }
        let _ = writeln!(
            o,
            "skp_audit_append_seconds_bucket{{le=\"+Inf\"}} {}",
            m.append_count
        );
        let _ = writeln!(o, "skp_audit_append_seconds_sum {}", m.append_sum);
        let _ = writeln!(o, "skp_audit_append_seconds_count {}", m.append_count);
        head(
            &mut o,
            "skp_agency_certificate_days_to_expiry",
            "gauge",
            "Days until the agency certificate last seen expires (negative: expired).",
        );
        for (a, t) in &m.cert_not_after {
            let days = (*t - now) as f64 / 86_400.0;
            let _ = writeln!(
                o,
                "skp_agency_certificate_days_to_expiry{{agency=\"{}\"}} {days:.3}",
                lv(a)
            );
        }
        o
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// A label value, escaped as the format requires (backslash, quote, newline).
fn lv(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module comment lists the `reason` codes by hand: it must name exactly
    /// [`RejectReason::ALL`], in order, so a code added or renamed there fails here.
    #[test]
    fn the_module_comment_lists_every_reject_reason() {
        let doc: String = include_str!("metrics.rs")
            .lines()
            .map_while(|l| l.strip_prefix("//!"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        let listed = doc
            .split_once("[`RejectReason`] (")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(list, _)| list)
            .expect("the module comment lists the codes as \"[`RejectReason`] (`a`, `b`)\"");
        let listed: Vec<&str> = listed
            .split(',')
            .map(|c| c.trim().trim_matches('`'))
            .collect();
        let codes: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            listed, codes,
            "update the `reason` codes in the module comment of metrics.rs"
        );
    }

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.ingested("lfb", "lfb_incident", "accepted", 10);
        m.ingested("lfb", "lfb_incident", "accepted", 5);
        m.ingested("lfb", "lfb_incident", "duplicate", 0);
        m.rejected("lfb", "lfb_incident", "", RejectReason::BadContentHash);
        m.rejected(
            "lfb",
            "lfb_incident",
            "date_of_call",
            RejectReason::BadValue,
        );
        m.rejected(
            "lfb",
            "lfb_incident",
            "date_of_call",
            RejectReason::BadValue,
        );
        m.rejected(
            "lfb",
            "lfb_incident",
            "date_of_call",
            RejectReason::MissingValue,
        );
        m.released("extract", 120);
        m.denied("aggregate-only");
        m.audit_append(0.003);
        m.audit_append(3.0);
        m.certificate("we\"ird\nname", 1_000_000 + 86_400 * 10);
        let t = m.render(42, 1_000_000);
        for want in [
            "skp_ingest_records_total{agency=\"lfb\",dataset=\"lfb_incident\",outcome=\"accepted\"} 15",
            "skp_ingest_rejected_records_total{agency=\"lfb\",dataset=\"lfb_incident\",field=\"record\",reason=\"bad_content_hash\"} 1",
            "skp_ingest_rejected_records_total{agency=\"lfb\",dataset=\"lfb_incident\",field=\"date_of_call\",reason=\"bad_value\"} 2",
            "skp_ingest_rejected_records_total{agency=\"lfb\",dataset=\"lfb_incident\",field=\"date_of_call\",reason=\"missing_value\"} 1",
            "skp_releases_total{kind=\"extract\"} 1",
            "skp_released_rows_total{kind=\"extract\"} 120",
            "skp_release_denials_total{rule=\"aggregate-only\"} 1",
            "skp_audit_log_entries 42",
            "skp_audit_append_seconds_bucket{le=\"0.005\"} 1",
            "skp_audit_append_seconds_bucket{le=\"+Inf\"} 2",
            "skp_audit_append_seconds_count 2",
            "skp_agency_certificate_days_to_expiry{agency=\"we\\\"ird\\nname\"} 10.000",
        ] {
            assert!(t.contains(want), "missing {want}\n{t}");
        }
        assert!(!t.contains("duplicate"), "zero increments add no series");
        // Every sample line is `name{labels} value` or `name value`, after its TYPE line.
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("a value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
