//! The console's pages. Each reads the gateway's own state (audit log, policy, release
//! registry); pages that show audit content record an `audit_query` entry first, so reading
//! the log is itself on the log. No page shows a field value, a token or a person id.

use super::html::{self, esc};
use super::{Reply, Session};
use crate::audit::entry::{Action, Decision, Entry};
use crate::service::Shared;
use hyper::StatusCode;
use sharing_proto::v1 as pb;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

/// Most entries one page of the log shows.
const MAX_PAGE: usize = 1000;
/// Entries a page of the log shows unless asked.
const DEFAULT_PAGE: usize = 100;
/// Days before an agreement's end or review date that the console flags it.
const DUE_DAYS: i64 = 60;

/// The sign-in page, with an error if the last attempt failed.
pub(super) fn login(error: Option<&str>) -> Reply {
    let mut b = String::new();
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" id=\"login-error\">{}</p>", esc(e));
    }
    b.push_str(
        "<p>Sign in with a token of the partnership's identity provider with the role \
         <b>auditor</b> or <b>admin</b>. In the dev setup, make one with \
         <code>gateway token --role auditor --sub NAME</code> and paste it here.</p>\
         <form method=\"post\" action=\"/login\">\
         <p><label for=\"token\">Token</label><br>\
         <textarea id=\"token\" name=\"token\" rows=\"6\" autocomplete=\"off\" \
         spellcheck=\"false\"></textarea></p>\
         <p><button id=\"sign-in\" type=\"submit\">Sign in</button></p></form>",
    );
    Reply::page(StatusCode::OK, "Sign in", None, &b)
}

fn who(s: &Session) -> Option<&str> {
    Some(s.requester.sub.as_str())
}

fn unavailable(s: &Session, what: &str, e: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %e, "console: {what} failed");
    Reply::page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        who(s),
        &format!(
            "<p class=\"error\">{} could not be read; see the gateway log.</p>",
            esc(what)
        ),
    )
}

/// Audits that `s` read `what`; the page is refused if the entry cannot be written.
async fn audited(shared: &Shared, s: &Session, what: String) -> Result<u64, Reply> {
    let mut e = Entry::new(s.actor(shared), Action::AuditQuery, Decision::Allow);
    e.reason = Some(what);
    shared.audit.append_one(e).await.map_err(|err| {
        tracing::error!(error = %err, "console: cannot audit a query");
        Reply::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            who(s),
            "<p class=\"error\">The audit log refuses entries, so nothing is shown (fail \
             closed); see the gateway log.</p>",
        )
    })
}

/// Reads every entry of the log (index, decoded entry).
fn all_entries(shared: &Shared) -> Result<Vec<(u64, Entry)>, String> {
    let size = shared.audit.size();
    let reader = shared.audit.read(0, size).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(size as usize);
    for (i, bytes) in (0u64..).zip(reader) {
        let bytes = bytes.map_err(|e| e.to_string())?;
        let e = Entry::decode(&bytes).map_err(|e| format!("entry {i}: {e}"))?;
        out.push((i, e));
    }
    Ok(out)
}

const FILTERS: [&str; 8] = [
    "from",
    "to",
    "agency",
    "actor",
    "action",
    "agreement",
    "purpose",
    "decision",
];

const ACTIONS: [&str; 13] = [
    "ingest",
    "withdraw",
    "release",
    "deny",
    "audit_query",
    "policy_load",
    "auth_failure",
    "gateway_start",
    "gateway_stop",
    "storage_failure",
    "explain",
    "limit",
    "crl_load",
];

/// `GET /entries`: the log, newest first, filtered.
pub(super) async fn entries(
    shared: &Shared,
    s: &Session,
    query: &BTreeMap<String, String>,
) -> Reply {
    let q = |k: &str| {
        query
            .get(k)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let aq = pb::AuditQuery {
        from_time: q("from"),
        to_time: q("to"),
        actor: q("actor"),
        agency: q("agency"),
        action: q("action"),
        agreement: q("agreement"),
        purpose: q("purpose"),
        decision: q("decision"),
        ..Default::default()
    };
    let filter = match crate::service::audit::Filter::new(aq) {
        Ok(f) => f,
        Err(status) => {
            return Reply::page(
                StatusCode::BAD_REQUEST,
                "Audit log",
                who(s),
                &format!("<p class=\"error\">{}</p>", esc(status.message())),
            );
        }
    };
    let limit = q("limit")
        .parse::<usize>()
        .map_or(DEFAULT_PAGE, |n| n.clamp(1, MAX_PAGE));
    let before = q("before").parse::<u64>().ok();
    if let Err(r) = audited(shared, s, format!("console: {}", filter.describe())).await {
        return r;
    }
    let sh = shared.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let size = sh.audit.size();
        let end = before.map_or(size, |b| b.min(size));
        let reader = sh.audit.read(0, end).map_err(|e| e.to_string())?;
        let mut shown: VecDeque<(u64, Entry)> = VecDeque::new();
        let mut older = false;
        for (i, bytes) in (0u64..).zip(reader) {
            let bytes = bytes.map_err(|e| e.to_string())?;
            let e = Entry::decode(&bytes).map_err(|e| format!("entry {i}: {e}"))?;
            if filter.matches(&e) {
                shown.push_back((i, e));
                if shown.len() > limit {
                    shown.pop_front();
                    older = true;
                }
            }
        }
        Ok((size, shown, older))
    })
    .await;
    let (size, shown, older) = match found {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return unavailable(s, "The audit log", e),
        Err(e) => return unavailable(s, "The audit log", e),
    };

    let policy = shared.policy();
    let agreements: Vec<&str> = policy.agreements().iter().map(|a| a.id.as_str()).collect();
    let mut b = String::new();
    let _ = write!(
        b,
        "<p>The log holds <b>{size}</b> entries. Newest first; each links to its entry with \
         an inclusion proof. Times are UTC (a date such as 2026-12-01, or an RFC 3339 \
         instant).</p><form class=\"filters\" method=\"get\" action=\"/entries\" id=\"filters\">\
         <label>From <input name=\"from\" value=\"{}\" size=\"12\"></label>\
         <label>To (before) <input name=\"to\" value=\"{}\" size=\"12\"></label>\
         <label>Agency {}</label>\
         <label>Actor <input name=\"actor\" value=\"{}\" size=\"18\"></label>\
         <label>Action {}</label>\
         <label>Agreement {}</label>\
         <label>Purpose <input name=\"purpose\" value=\"{}\" size=\"16\"></label>\
         <label>Decision {}</label>\
         <button id=\"apply\" type=\"submit\">Filter</button> <a href=\"/entries\">clear</a></form>",
        esc(&q("from")),
        esc(&q("to")),
        html::select("agency", &skp_core::ids::KINGSTON_AGENCIES, &q("agency")),
        esc(&q("actor")),
        html::select("action", &ACTIONS, &q("action")),
        html::select("agreement", &agreements, &q("agreement")),
        esc(&q("purpose")),
        html::select("decision", &["allow", "deny"], &q("decision")),
    );
    let _ = write!(
        b,
        "<p id=\"shown\">{} matching entr{} shown.</p>",
        shown.len(),
        if shown.len() == 1 { "y" } else { "ies" }
    );
    b.push_str(
        "<table id=\"entries\"><thead><tr><th>#</th><th>Time (UTC)</th><th>Actor</th>\
         <th>Agency</th><th>Action</th><th>Decision</th><th>Agreement / purpose</th>\
         <th>Datasets</th><th>Rows / counts</th><th>Reason</th></tr></thead><tbody>",
    );
    for (i, e) in shown.iter().rev() {
        let agreement = e
            .agreement
            .as_ref()
            .map(|a| format!("{} v{} / {}", a.id, a.version, a.purpose))
            .unwrap_or_default();
        let counts = match (&e.rows, &e.counts) {
            (Some(r), _) => format!("{r} rows"),
            (None, Some(c)) => serde_json::to_string(c).unwrap_or_default(),
            _ => String::new(),
        };
        let _ = write!(
            b,
            "<tr data-index=\"{i}\"><td class=\"n\"><a href=\"/entries/{i}\">{i}</a></td>\
             <td>{}</td><td>{} <small>{}</small></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.time),
            esc(&e.actor.id),
            esc(&e.actor.kind),
            esc(e.actor.agency.as_deref().unwrap_or("")),
            esc(e.action.as_str()),
            decision_badge(e.decision),
            esc(&agreement),
            esc(&e.datasets.join(", ")),
            esc(&counts),
            esc(e.reason.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</tbody></table>");
    if older && let Some((first, _)) = shown.front() {
        let mut link = format!("/entries?before={first}&limit={limit}");
        for k in FILTERS {
            let v = q(k);
            if !v.is_empty() {
                let _ = write!(link, "&{k}={}", html::encode(&v));
            }
        }
        let _ = write!(
            b,
            "<p><a id=\"older\" href=\"{}\">Older entries</a></p>",
            esc(&link)
        );
    }
    Reply::page(StatusCode::OK, "Audit log", who(s), &b)
}

fn decision_badge(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "<span class=\"ok\">allow</span>",
        Decision::Deny => "<span class=\"bad\">deny</span>",
    }
}

/// What the server established about one entry's inclusion.
struct Proved {
    bytes: Vec<u8>,
    leaf: skp_core::merkle::Hash,
    size: u64,
    root: skp_core::merkle::Hash,
    path: Vec<skp_core::merkle::Hash>,
    note: String,
    /// `Ok` when the proof leads from the entry's bytes to the signed root.
    verdict: Result<(), String>,
}

fn prove(shared: &Shared, index: u64) -> Result<Proved, String> {
    let audit = &shared.audit;
    let bytes = audit
        .read(index, index + 1)
        .map_err(|e| e.to_string())?
        .next()
        .transpose()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("entry {index} is not in the log"))?;
    let cp = audit.checkpoint().map_err(|e| e.to_string())?;
    let path = audit
        .inclusion_proof(index, cp.checkpoint.size)
        .map_err(|e| e.to_string())?;
    // Check as an outside verifier would: the entry's own bytes, the signed note opened with
    // the log's public key, and the proof from one to the other.
    let leaf = skp_core::merkle::leaf_hash(&bytes);
    let verdict = skp_core::checkpoint::VerifierKey::parse(&audit.verifier_key())
        .map_err(|e| format!("the log's verifier key does not parse: {e}"))
        .and_then(|vk| {
            skp_core::checkpoint::open(&cp.note, &vk, audit.origin())
                .map_err(|e| format!("the checkpoint's signature does not verify: {e}"))
        })
        .and_then(|opened| {
            skp_core::merkle::verify_inclusion(&leaf, index, opened.size, &path, &opened.root)
                .map_err(|e| format!("the inclusion proof does not verify: {e}"))
        });
    Ok(Proved {
        bytes,
        leaf,
        size: cp.checkpoint.size,
        root: cp.checkpoint.root,
        path,
        note: cp.note,
        verdict,
    })
}

/// `GET /entries/{index}`: one entry and its inclusion proof, checked.
pub(super) async fn entry(shared: &Shared, s: &Session, index: u64) -> Reply {
    if index >= shared.audit.size() {
        return Reply::page(
            StatusCode::NOT_FOUND,
            "No such entry",
            who(s),
            &format!(
                "<p>The log has {} entries; there is no entry {index}.</p>",
                shared.audit.size()
            ),
        );
    }
    if let Err(r) = audited(shared, s, format!("console: entry {index}")).await {
        return r;
    }
    let sh = shared.clone();
    let p = match tokio::task::spawn_blocking(move || prove(&sh, index)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return unavailable(s, "The entry", e),
        Err(e) => return unavailable(s, "The entry", e),
    };
    let mut b = String::new();
    match Entry::decode(&p.bytes) {
        Ok(e) => {
            b.push_str("<table id=\"entry\"><tbody>");
            let mut row = |k: &str, v: String| {
                if !v.is_empty() {
                    let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
                }
            };
            row("Index", e.seq.to_string());
            row("Time (UTC)", e.time.clone());
            row(
                "Actor",
                format!(
                    "{} ({}{})",
                    e.actor.id,
                    e.actor.kind,
                    e.actor
                        .agency
                        .as_ref()
                        .map(|a| format!(", {a}"))
                        .unwrap_or_default()
                ),
            );
            row("Action", e.action.as_str().into());
            row("Decision", e.decision.as_str().into());
            row("Reason", e.reason.clone().unwrap_or_default());
            if let Some(a) = &e.agreement {
                row("Agreement", format!("{} v{}", a.id, a.version));
                row("Purpose", a.purpose.clone());
                row("Policy SHA-256", a.policy_sha256.clone());
            }
            row("Datasets", e.datasets.join(", "));
            row("Fields", e.fields.join(", "));
            row(
                "Counts",
                e.counts
                    .as_ref()
                    .and_then(|c| serde_json::to_string(c).ok())
                    .unwrap_or_default(),
            );
            row("Rows", e.rows.map(|r| r.to_string()).unwrap_or_default());
            row("Release", e.release.clone().unwrap_or_default());
            row(
                "Released SHA-256",
                e.released_sha256.clone().unwrap_or_default(),
            );
            row("Peer", e.peer.clone().unwrap_or_default());
            row("Previous root", e.prev.clone());
            b.push_str("</tbody></table>");
        }
        Err(e) => {
            let _ = write!(
                b,
                "<p class=\"bad\">The entry's bytes are not a valid entry: {}</p>",
                esc(&e.to_string())
            );
        }
    }
    b.push_str("<h2>Inclusion proof</h2>");
    match &p.verdict {
        Ok(()) => {
            let _ = write!(
                b,
                "<p><span class=\"ok\" id=\"proof-status\" data-status=\"verified\">Verified</span> \
                 The entry's bytes hash to the leaf below, and the {} hashes of the proof lead \
                 from it to the root of the checkpoint of {} entries, whose signature verifies \
                 with the log's public key.</p>",
                p.path.len(),
                p.size
            );
        }
        Err(e) => {
            let _ = write!(
                b,
                "<p><span class=\"bad\" id=\"proof-status\" data-status=\"failed\">NOT \
                 verified</span> {}</p>",
                esc(e)
            );
        }
    }
    let _ = write!(
        b,
        "<table id=\"proof\"><tbody><tr><th>Leaf hash</th><td><code>{}</code></td></tr>\
         <tr><th>Tree size</th><td>{}</td></tr><tr><th>Root</th><td><code>{}</code></td></tr>\
         <tr><th>Proof</th><td><code>{}</code></td></tr></tbody></table>\
         <h3>Signed checkpoint</h3><pre id=\"note\">{}</pre>\
         <h3>Entry bytes (canonical JSON)</h3><pre>{}</pre>\
         <p>Check it yourself: <code>gateway audit prove --entry {index}</code> and \
         <code>gateway audit verify</code> with the pinned public key.</p>",
        hex::encode(p.leaf),
        p.size,
        hex::encode(p.root),
        p.path
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join("\n"),
        esc(&p.note),
        esc(&String::from_utf8_lossy(&p.bytes)),
    );
    Reply::page(StatusCode::OK, &format!("Entry {index}"), who(s), &b)
}

/// `GET /checkpoint`: a freshly signed checkpoint and a full verification of the log against
/// it (every entry decoded, sequence and chain checked, root recomputed, signature opened).
pub(super) async fn checkpoint(shared: &Shared, s: &Session) -> Reply {
    let sh = shared.clone();
    let checked = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let audit = &sh.audit;
        let cp = audit.checkpoint().map_err(|e| e.to_string())?;
        let reader = audit
            .read(0, cp.checkpoint.size)
            .map_err(|e| e.to_string())?;
        let mut w =
            crate::audit::export::ExportWriter::new(Vec::new()).map_err(|e| e.to_string())?;
        for bytes in reader {
            w.entry(&bytes.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let export = w.finish(&cp.note).map_err(|e| e.to_string())?;
        let verdict = skp_core::checkpoint::VerifierKey::parse(&audit.verifier_key())
            .map_err(|e| e.to_string())
            .and_then(|vk| {
                crate::audit::verify::verify_with(
                    &export,
                    &vk,
                    audit.origin(),
                    None,
                    crate::audit::verify::Mode::Full,
                )
                .map_err(|e| e.to_string())
            });
        Ok((cp, audit.verifier_key(), verdict))
    })
    .await;
    let (cp, vk, verdict) = match checked {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return unavailable(s, "The checkpoint", e),
        Err(e) => return unavailable(s, "The checkpoint", e),
    };
    let mut b = String::new();
    match verdict {
        Ok(r) => {
            let _ = write!(
                b,
                "<p><span class=\"ok\" id=\"log-status\" data-status=\"verified\">Log verified</span> \
                 All {} entries decode in canonical form with consecutive indexes and an \
                 unbroken chain, their Merkle root is the signed root, and the signature \
                 verifies with the log's public key.</p>",
                r.entries
            );
        }
        Err(e) => {
            let _ = write!(
                b,
                "<p><span class=\"bad\" id=\"log-status\" data-status=\"failed\">Log NOT \
                 verified</span> {}</p>",
                esc(&e)
            );
        }
    }
    let _ = write!(
        b,
        "<table><tbody><tr><th>Origin</th><td><code>{}</code></td></tr>\
         <tr><th>Entries</th><td id=\"size\">{}</td></tr>\
         <tr><th>Root</th><td><code>{}</code></td></tr></tbody></table>\
         <h2>Signed note</h2><pre id=\"note\">{}</pre>\
         <h2>The log's public key</h2><p>Pin this text and check checkpoints with \
         <code>gateway audit verify --pubkey</code>:</p><pre>{}</pre>",
        esc(&cp.checkpoint.origin),
        cp.checkpoint.size,
        hex::encode(cp.checkpoint.root),
        esc(&cp.note),
        esc(&vk),
    );
    Reply::page(StatusCode::OK, "Latest checkpoint", who(s), &b)
}

/// Whole days from `now` to `t` (negative once past).
fn days_until(t: time::OffsetDateTime, now: time::OffsetDateTime) -> i64 {
    (t - now).whole_days()
}

/// `GET /agreements`: the agreements in force, their validity and review dates, flagged when
/// past or due within [`DUE_DAYS`] days.
pub(super) fn agreements(shared: &Shared, s: &Session) -> Reply {
    let policy = shared.policy();
    let now = shared.now();
    let date = |t: time::OffsetDateTime| crate::audit::entry::rfc3339_millis(t)[..10].to_owned();
    let mut b = format!(
        "<p>{} agreement(s) loaded from <code>{}</code> (policy SHA-256 <code>{}</code>). An \
         agreement past its end date releases nothing; one due for review or ending within \
         {DUE_DAYS} days is highlighted.</p>",
        policy.agreements().len(),
        esc(policy.source()),
        esc(policy.sha256()),
    );
    b.push_str(
        "<table id=\"agreements\"><thead><tr><th>Agreement</th><th>Version</th><th>Parties</th>\
         <th>Purposes</th><th>Valid from</th><th>Valid until</th><th>Review by</th>\
         <th>Status</th></tr></thead><tbody>",
    );
    for a in policy.agreements() {
        let until = days_until(a.valid_until, now);
        let review = days_until(a.review_by, now);
        let mut flags = Vec::new();
        let mut class = "";
        if now < a.valid_from {
            flags.push("<span class=\"warn\">not yet in force</span>".to_owned());
            class = "due";
        } else if now > a.valid_until {
            flags.push("<span class=\"bad\">EXPIRED</span>".to_owned());
            class = "expired";
        } else if until < DUE_DAYS {
            flags.push(format!(
                "<span class=\"warn\">ends in {until} day(s)</span>"
            ));
            class = "due";
        }
        if now > a.review_by {
            flags.push("<span class=\"bad\">review overdue</span>".to_owned());
            if class.is_empty() {
                class = "expired";
            }
        } else if review < DUE_DAYS {
            flags.push(format!(
                "<span class=\"warn\">review due in {review} day(s)</span>"
            ));
            if class.is_empty() {
                class = "due";
            }
        }
        if flags.is_empty() {
            flags.push("<span class=\"ok\">in force</span>".to_owned());
        }
        let purposes: Vec<String> = a
            .purposes
            .iter()
            .map(|p| format!("{} ({})", p.id, p.output.as_str()))
            .collect();
        let _ = write!(
            b,
            "<tr class=\"{class}\" data-agreement=\"{}\"><td><b>{}</b><br>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"status\">{}</td></tr>",
            esc(&a.id),
            esc(&a.id),
            esc(&a.title),
            esc(&a.version),
            esc(&a.parties.join(", ")),
            esc(&purposes.join(", ")),
            date(a.valid_from),
            date(a.valid_until),
            date(a.review_by),
            flags.join(" "),
        );
    }
    b.push_str("</tbody></table>");
    Reply::page(StatusCode::OK, "Agreements", who(s), &b)
}

/// `GET /releases`: releases and refusals per agreement and purpose, then every release.
pub(super) async fn releases(shared: &Shared, s: &Session) -> Reply {
    if let Err(r) = audited(shared, s, "console: releases per agreement".into()).await {
        return r;
    }
    let sh = shared.clone();
    let all = match tokio::task::spawn_blocking(move || all_entries(&sh)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return unavailable(s, "The audit log", e),
        Err(e) => return unavailable(s, "The audit log", e),
    };
    #[derive(Default)]
    struct Tally {
        releases: u64,
        rows: u64,
        denials: u64,
        last: String,
    }
    let mut by: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for (_, e) in &all {
        let Some(a) = &e.agreement else { continue };
        let t = by.entry((a.id.clone(), a.purpose.clone())).or_default();
        match (e.action, e.decision) {
            (Action::Release, Decision::Allow) => {
                t.releases += 1;
                t.rows += e.rows.unwrap_or(0);
                t.last = e.time.clone();
            }
            (Action::Release | Action::Deny, Decision::Deny) => t.denials += 1,
            _ => {}
        }
    }
    let mut b = String::from(
        "<h2>Per agreement and purpose</h2><table id=\"per-agreement\"><thead><tr>\
         <th>Agreement</th><th>Purpose</th><th>Releases</th><th>Rows released</th>\
         <th>Refusals</th><th>Last release (UTC)</th></tr></thead><tbody>",
    );
    for ((agreement, purpose), t) in &by {
        let _ = write!(
            b,
            "<tr data-agreement=\"{}\"><td><a href=\"/entries?agreement={}\">{}</a></td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td></tr>",
            esc(agreement),
            esc(&html::encode(agreement)),
            esc(agreement),
            esc(purpose),
            t.releases,
            t.rows,
            t.denials,
            esc(&t.last),
        );
    }
    b.push_str("</tbody></table><h2>Every release, newest first</h2>");
    let rows = crate::register::rows(all.iter().map(|(_, e)| e));
    b.push_str(
        "<table id=\"releases\"><thead><tr><th>Date</th><th>Agreement</th><th>Purpose</th>\
         <th>Recipient organisation</th><th>Datasets</th><th>Rows</th><th>Audit entry</th>\
         <th>Release</th></tr></thead><tbody>",
    );
    for r in rows.iter().rev() {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{} <small>v{}</small></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\"><a href=\"/entries/{}\">{}</a></td>\
             <td><code>{}</code></td></tr>",
            esc(&r.date),
            esc(&r.agreement),
            esc(&r.version),
            esc(&r.purpose),
            esc(&r.recipient),
            esc(&r.datasets.join(", ")),
            r.rows,
            r.audit_entry,
            r.audit_entry,
            esc(&r.release),
        );
    }
    b.push_str(
        "</tbody></table><p>The public register of the same releases: \
         <code>gateway register --out DIR</code>.</p>",
    );
    Reply::page(StatusCode::OK, "Releases", who(s), &b)
}

/// `GET /person`: the lookup form, with an error if the last lookup was refused.
pub(super) fn person_form(s: &Session, error: Option<&str>) -> Reply {
    let mut b = String::new();
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" id=\"lookup-error\">{}</p>", esc(e));
    }
    b.push_str(
        "<p>Which releases included a person? The gateway holds no names: ask the agency \
         that knows the person for their tokens (<code>agent person-token</code> prints \
         them as <code>KIND:HEX</code>) and paste them here, one a line. The lookup is \
         recorded in the audit log (token kinds only, never a token); the tokens are not \
         shown back.</p><form method=\"post\" action=\"/person\">\
         <p><label for=\"tokens\">Tokens</label><br><textarea id=\"tokens\" name=\"tokens\" \
         rows=\"4\" autocomplete=\"off\" spellcheck=\"false\"></textarea></p>\
         <p><button id=\"lookup\" type=\"submit\">Look up</button></p></form>",
    );
    Reply::page(StatusCode::OK, "Person lookup", who(s), &b)
}

/// Parses `KIND:HEX` tokens, one a line or comma-separated; errors name the token by position
/// only.
fn parse_tokens(text: &str) -> Result<Vec<(String, [u8; 32])>, String> {
    let items: Vec<&str> = text
        .split(['\n', ',', '\r'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if items.is_empty() || items.len() > 64 {
        return Err("Give between 1 and 64 tokens, each as KIND:HEX.".into());
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, t) in items.iter().enumerate() {
        let n = i + 1;
        let (kind, hex_text) = t
            .split_once(':')
            .ok_or_else(|| format!("Token {n} is not written KIND:HEX."))?;
        if crate::linkage::TokenKind::parse(kind).is_none() {
            return Err(format!(
                "Token {n} has an unknown kind; known kinds: nhs, pnc, demo, uprn, ref."
            ));
        }
        let bytes = hex::decode(hex_text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| format!("Token {n} is not 64 hex digits."))?;
        out.push((kind.to_owned(), bytes));
    }
    Ok(out)
}

/// `POST /person`: the releases that included the person the tokens name.
pub(super) async fn person_lookup(
    shared: &Shared,
    s: &Session,
    form: &BTreeMap<String, String>,
) -> Reply {
    let tokens = match parse_tokens(form.get("tokens").map_or("", String::as_str)) {
        Ok(t) => t,
        Err(e) => {
            let mut r = person_form(s, Some(&e));
            r.status = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let kinds: std::collections::BTreeSet<&str> = tokens.iter().map(|(k, _)| k.as_str()).collect();
    let what = format!(
        "console: person releases: {} token(s) of kind {}",
        tokens.len(),
        kinds.into_iter().collect::<Vec<_>>().join(", ")
    );
    let seq = match audited(shared, s, what).await {
        Ok(seq) => seq,
        Err(r) => return r,
    };
    let releaser = shared.releaser.clone();
    let (found, releases) =
        match tokio::task::spawn_blocking(move || releaser.person_releases(&tokens)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return unavailable(s, "The release registry", e),
            Err(e) => return unavailable(s, "The release registry", e),
        };
    let mut b = format!(
        "<p id=\"lookup-result\"><b>{found}</b> stored record(s) carry the token(s); \
         <b id=\"release-count\">{}</b> release(s) included this person. This lookup is audit \
         entry <a href=\"/entries/{seq}\">{seq}</a>.</p>",
        releases.len()
    );
    if !releases.is_empty() {
        b.push_str(
            "<table id=\"person-releases\"><thead><tr><th>Time (UTC)</th><th>Kind</th>\
             <th>Agreement</th><th>Purpose</th><th>Requester</th><th>Datasets</th>\
             <th>Release</th><th>Audit entry</th></tr></thead><tbody>",
        );
        for r in &releases {
            let h = &r.header;
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td><code>{}</code></td><td><a href=\"/entries/{}\">{}</a></td></tr>",
                esc(&h.time),
                esc(&h.kind),
                esc(&h.agreement),
                esc(&h.purpose),
                esc(&h.requester),
                esc(&h.datasets.join(", ")),
                esc(&h.release_id),
                r.audit_entry,
                r.audit_entry,
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<p><a href=\"/person\">Another lookup</a></p>");
    Reply::page(StatusCode::OK, "Person lookup", who(s), &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_errors_never_echo_a_token() {
        let hex = "ab".repeat(32);
        let ok = parse_tokens(&format!("nhs:{hex}\n\npnc:{hex}")).expect("two tokens");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].0, "pnc");
        for bad in [
            format!("nhs:{}", &hex[..10]),
            format!("xyz:{hex}"),
            hex.clone(),
            String::new(),
        ] {
            let e = parse_tokens(&bad).expect_err(&bad);
            assert!(!e.contains(&hex[..10]), "{e}");
        }
    }

    #[test]
    fn days_until_counts_whole_days() {
        let now = time::macros::datetime!(2026-12-05 12:00 UTC);
        assert_eq!(
            days_until(time::macros::datetime!(2026-12-31 12:00 UTC), now),
            26
        );
        assert!(days_until(time::macros::datetime!(2026-12-01 0:00 UTC), now) < 0);
    }
}
