//! The transparency register: the partnership's public list of data releases (like the NHS
//! Data Release Register), generated from a verified audit log export rather than typed by
//! hand.
//!
//! Owns the register's content and its two renderings: `releases.csv` and a static
//! `index.html` (no script, no external asset). Each row is one `release` entry of the log:
//! date, agreement (id and version), purpose, recipient organisation, datasets, rows released,
//! the audit entry index and the release id and SHA-256 a reader can check a release folder
//! against. Must never show a person: no field value, no token, no person id, and not the
//! analyst's user name (an individual) — only the organisation they released to.

use crate::audit::entry::{Action, Decision, Entry};
use std::fmt::Write as _;
use std::path::Path;

/// One release, as the register shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterRow {
    /// UTC date of the release (`YYYY-MM-DD`).
    pub date: String,
    /// Agreement id.
    pub agreement: String,
    /// Agreement version.
    pub version: String,
    /// Purpose id.
    pub purpose: String,
    /// The recipient's organisation (the analyst's agency), or `unknown`.
    pub recipient: String,
    /// Datasets released.
    pub datasets: Vec<String>,
    /// Rows released (records or table rows).
    pub rows: u64,
    /// Audit entry index.
    pub audit_entry: u64,
    /// Release id.
    pub release: String,
    /// SHA-256 of the released manifest body.
    pub sha256: String,
}

/// What the register was generated from: the signed checkpoint that covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Log origin.
    pub origin: String,
    /// Entries covered.
    pub size: u64,
    /// Merkle root, hex.
    pub root: String,
}

/// The register rows of `entries`: every allowed release, in log order.
pub fn rows<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<RegisterRow> {
    entries
        .into_iter()
        .filter(|e| e.action == Action::Release && e.decision == Decision::Allow)
        .map(|e| {
            let a = e.agreement.as_ref();
            RegisterRow {
                date: e.time.chars().take(10).collect(),
                agreement: a.map(|a| a.id.clone()).unwrap_or_default(),
                version: a.map(|a| a.version.clone()).unwrap_or_default(),
                purpose: a.map(|a| a.purpose.clone()).unwrap_or_default(),
                recipient: e
                    .actor
                    .agency
                    .clone()
                    .unwrap_or_else(|| "unknown".to_owned()),
                datasets: e.datasets.clone(),
                rows: e.rows.unwrap_or(0),
                audit_entry: e.seq,
                release: e.release.clone().unwrap_or_default(),
                sha256: e.released_sha256.clone().unwrap_or_default(),
            }
        })
        .collect()
}

/// CSV header of `releases.csv`.
pub const CSV_HEADER: [&str; 10] = [
    "date",
    "agreement",
    "agreement_version",
    "purpose",
    "recipient_organisation",
    "datasets",
    "rows",
    "audit_entry",
    "release_id",
    "released_sha256",
];

/// Writes `dir/releases.csv` and `dir/index.html`.
pub fn write(dir: &Path, rows: &[RegisterRow], source: &Source) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_path(dir.join("releases.csv"))?;
    w.write_record(CSV_HEADER)?;
    for r in rows {
        w.write_record([
            r.date.as_str(),
            &r.agreement,
            &r.version,
            &r.purpose,
            &r.recipient,
            &r.datasets.join(";"),
            &r.rows.to_string(),
            &r.audit_entry.to_string(),
            &r.release,
            &r.sha256,
        ])?;
    }
    w.flush()?;
    std::fs::write(dir.join("index.html"), html(rows, source))
}

/// The register as one static HTML page.
pub fn html(rows: &[RegisterRow], source: &Source) -> String {
    let mut h = String::new();
    h.push_str(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Data release register</title>\n<style>\n\
         body{font-family:sans-serif;margin:2em;color:#0b0c0c}\n\
         table{border-collapse:collapse;width:100%}\n\
         th,td{border:1px solid #b1b4b6;padding:.3em .5em;text-align:left;vertical-align:top}\n\
         th{background:#f3f2f1}\ntd.n{text-align:right}\ncode{font-size:.85em}\n\
         </style>\n</head>\n<body>\n<h1>Data release register</h1>\n",
    );
    let _ = writeln!(
        h,
        "<p>Every release of data made through the partnership's data-sharing gateway: {} \
         release{}. Generated from the gateway's audit log <code>{}</code>, verified against its \
         signed checkpoint of {} entries (root <code>{}</code>). No row shows personal data; \
         each names the audit entry that recorded the release, and the release id and SHA-256 a \
         recipient's folder can be checked against (<code>gateway audit verify-release</code>). \
         The same rows are in <a href=\"releases.csv\">releases.csv</a>.</p>",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        esc(&source.origin),
        source.size,
        esc(&source.root),
    );
    h.push_str(
        "<table>\n<thead><tr><th>Date</th><th>Agreement</th><th>Purpose</th>\
         <th>Recipient organisation</th><th>Datasets</th><th>Rows</th><th>Audit entry</th>\
         <th>Release</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{} <small>v{}</small></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td><code>{}</code><br>\
             <small>sha256 <code>{}</code></small></td></tr>",
            esc(&r.date),
            esc(&r.agreement),
            esc(&r.version),
            esc(&r.purpose),
            esc(&r.recipient),
            esc(&r.datasets.join(", ")),
            r.rows,
            r.audit_entry,
            esc(&r.release),
            esc(&r.sha256),
        );
    }
    h.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    h
}

/// HTML-escapes text for element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c) => {
                let _ = write!(o, "&#x{:x};", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::{Actor, AgreementRef};

    fn release(seq: u64, agency: Option<&str>) -> Entry {
        let mut e = Entry::new(
            Actor {
                kind: "analyst".into(),
                id: "jane.analyst@kingston.gov.uk".into(),
                agency: agency.map(str::to_owned),
            },
            Action::Release,
            Decision::Allow,
        );
        e.seq = seq;
        e.time = "2026-12-05T10:11:12.000Z".into();
        e.datasets = vec!["police_crime".into(), "lfb_incident".into()];
        e.rows = Some(143);
        e.release = Some("ab".repeat(16));
        e.released_sha256 = Some("cd".repeat(32));
        e.agreement = Some(AgreementRef {
            id: "SKP-ISA-SV-01".into(),
            version: "1.2".into(),
            policy_sha256: "ef".repeat(32),
            purpose: "serious-violence-sna".into(),
        });
        e
    }

    #[test]
    fn only_allowed_releases_are_listed_and_no_individual_is_named() {
        let mut denied = release(3, Some("kingston-council"));
        denied.decision = Decision::Deny;
        denied.action = Action::Deny;
        let ingest = Entry::new(Actor::gateway(), Action::Ingest, Decision::Allow);
        let entries = [
            release(1, Some("kingston-council")),
            ingest,
            denied,
            release(4, None),
        ];
        let rows = rows(&entries);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].date, "2026-12-05");
        assert_eq!(rows[0].recipient, "kingston-council");
        assert_eq!(rows[0].audit_entry, 1);
        assert_eq!(rows[1].recipient, "unknown");
        let src = Source {
            origin: "kingston.skp/audit/v1".into(),
            size: 5,
            root: "00".repeat(32),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &rows, &src).expect("written");
        let html = std::fs::read_to_string(dir.path().join("index.html")).expect("html");
        let csv = std::fs::read_to_string(dir.path().join("releases.csv")).expect("csv");
        for text in [&html, &csv] {
            assert!(text.contains("SKP-ISA-SV-01"));
            assert!(text.contains("serious-violence-sna"));
            assert!(!text.contains("jane.analyst"), "no analyst's name");
        }
        assert_eq!(csv.lines().count(), 3);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER.join(","), "the whole header, in order");
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(
            r.headers().expect("header").iter().collect::<Vec<_>>(),
            CSV_HEADER
        );
        let cell = |rec: &csv::StringRecord, name: &str| {
            let i = CSV_HEADER.iter().position(|h| *h == name).expect("column");
            rec.get(i).expect("cell").to_owned()
        };
        let recs: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>().expect("rows");
        assert_eq!(recs.len(), 2);
        for (rec, entry) in recs.iter().zip([1, 4]) {
            assert_eq!(cell(rec, "datasets"), "police_crime;lfb_incident");
            assert_eq!(cell(rec, "rows"), "143");
            assert_eq!(cell(rec, "audit_entry"), entry.to_string());
            assert_eq!(cell(rec, "agreement_version"), "1.2");
            assert_eq!(cell(rec, "release_id"), "ab".repeat(16));
            assert_eq!(cell(rec, "released_sha256"), "cd".repeat(32));
        }
        assert!(!html.contains("<script"));
    }

    #[test]
    fn text_is_escaped() {
        let mut e = release(1, Some("<script>alert(1)</script>"));
        e.datasets = vec!["a&b\u{202e}".into()];
        let html = html(
            &rows([&e]),
            &Source {
                origin: "o\"".into(),
                size: 1,
                root: "r".into(),
            },
        );
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("a&amp;b&#x202e;"));
        assert!(html.contains("o&quot;"));
    }
}
