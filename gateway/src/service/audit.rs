//! `sharing.v1.AuditService`: IG officers read, prove and export the audit log.
//!
//! Queries and exports are themselves audited (their entry is durable before the first entry is
//! sent). Tree heads and proofs are not: they reveal no entry content beyond the one asked for
//! and verifying must not grow the log.

use super::{ServiceError, Shared, status_of};
use crate::audit::entry::{Action, Decision, Entry};
use crate::jwt::Role;
use crate::policy::decide::Requester;
use sharing_proto::v1 as pb;
use sharing_proto::v1::audit_service_server::AuditService;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Most entries one query returns.
pub const MAX_QUERY_ENTRIES: u64 = 10_000;

/// The audit service.
#[derive(Clone)]
pub struct AuditSvc {
    shared: Shared,
}

impl AuditSvc {
    /// A service over the gateway's shared state.
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// `size` as asked, or (for 0) the current tree's size with a freshly signed checkpoint.
    fn size_or_current(&self, size: u64) -> Result<(u64, String), Status> {
        if size != 0 {
            return Ok((size, String::new()));
        }
        let cp = self
            .shared
            .audit
            .checkpoint()
            .map_err(|e| status_of(e.into()))?;
        Ok((cp.checkpoint.size, cp.note))
    }

    /// Audits an audit query by `auditor` with a description of what was asked.
    async fn record_query(&self, auditor: &Requester, what: String) -> Result<u64, Status> {
        let actor = self.shared.analyst_actor(auditor);
        let mut e = Entry::new(actor, Action::AuditQuery, Decision::Allow);
        e.reason = Some(what);
        self.shared.record(e).await
    }
}

type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEntry, Status>> + Send>>;
type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

/// A query's filters, checked.
pub(crate) struct Filter {
    q: pb::AuditQuery,
    /// `from_time` and `to_time` as instants (compared as instants: `10:00:00.000Z` is not
    /// before `10:00:00Z`, as the strings would have it).
    from: Option<time::OffsetDateTime>,
    to: Option<time::OffsetDateTime>,
}

impl Filter {
    pub(crate) fn new(q: pb::AuditQuery) -> Result<Filter, Status> {
        let mut bounds = [None, None];
        for (bound, (name, t)) in bounds
            .iter_mut()
            .zip([("from_time", &q.from_time), ("to_time", &q.to_time)])
        {
            if t.is_empty() {
                continue;
            }
            *bound = Some(parse_bound(t).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{name} must be an RFC 3339 UTC time or date such as 2026-11-25 or 2026-11-25T13:00:00Z"
                ))
            })?);
        }
        let [from, to] = bounds;
        for (name, v) in [
            ("actor", &q.actor),
            ("agency", &q.agency),
            ("action", &q.action),
            ("agreement", &q.agreement),
            ("purpose", &q.purpose),
            ("decision", &q.decision),
        ] {
            if v.len() > 256 {
                return Err(Status::invalid_argument(format!(
                    "{name} is longer than 256 characters"
                )));
            }
        }
        Ok(Filter { q, from, to })
    }

    pub(crate) fn describe(&self) -> String {
        let q = &self.q;
        let mut parts = vec![format!("query start={}", q.start)];
        for (name, v) in [
            ("from", &q.from_time),
            ("to", &q.to_time),
            ("actor", &q.actor),
            ("agency", &q.agency),
            ("action", &q.action),
            ("agreement", &q.agreement),
            ("purpose", &q.purpose),
            ("decision", &q.decision),
        ] {
            if !v.is_empty() {
                parts.push(format!("{name}={v}"));
            }
        }
        parts.join(" ")
    }

    pub(crate) fn matches(&self, e: &Entry) -> bool {
        let q = &self.q;
        let eq = |want: &str, have: &str| want.is_empty() || want == have;
        let in_time = match (self.from, self.to) {
            (None, None) => true,
            (from, to) => {
                time::OffsetDateTime::parse(&e.time, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|t| from.is_none_or(|f| t >= f) && to.is_none_or(|u| t < u))
            }
        };
        in_time
            && eq(&q.actor, &e.actor.id)
            && eq(&q.agency, e.actor.agency.as_deref().unwrap_or(""))
            && eq(&q.action, e.action.as_str())
            && eq(&q.decision, e.decision.as_str())
            && eq(
                &q.agreement,
                e.agreement.as_ref().map_or("", |a| a.id.as_str()),
            )
            && eq(
                &q.purpose,
                e.agreement.as_ref().map_or("", |a| a.purpose.as_str()),
            )
    }
}

/// A time filter's bound: an RFC 3339 instant (`2026-11-25T13:00:00Z`, with a fraction or an
/// offset), or in UTC a date, a date and time without offset (`2026-11-25`,
/// `2026-11-25T13:00`, `2026-11-25T13:00:00.5`), a month or a year (`2026-11`, `2026`), each
/// meaning its first instant.
fn parse_bound(t: &str) -> Option<time::OffsetDateTime> {
    use time::macros::format_description;
    if t.len() > 30 {
        return None;
    }
    if let Ok(x) = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return Some(x);
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, clock) = t.split_once('T').unwrap_or((t, ""));
    let date = match date.len() {
        4 => format!("{date}-01-01"),
        7 => format!("{date}-01"),
        _ => date.to_owned(),
    };
    let date = time::Date::parse(&date, format_description!("[year]-[month]-[day]")).ok()?;
    let clock = match clock.len() {
        0 => time::Time::MIDNIGHT,
        5 => time::Time::parse(clock, format_description!("[hour]:[minute]")).ok()?,
        8 => time::Time::parse(clock, format_description!("[hour]:[minute]:[second]")).ok()?,
        _ => time::Time::parse(
            clock,
            format_description!("[hour]:[minute]:[second].[subsecond]"),
        )
        .ok()?,
    };
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

#[tonic::async_trait]
impl AuditService for AuditSvc {
    type QueryStream = EntryStream;
    type ExportStream = ExportStream;

    async fn query(
        &self,
        req: Request<pb::AuditQuery>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let (auditor, _permit) = self.shared.require_user(&req, Role::Auditor).await?;
        let filter = Filter::new(req.into_inner())?;
        self.record_query(&auditor, filter.describe()).await?;
        let limit = match filter.q.limit {
            0 => MAX_QUERY_ENTRIES,
            n => n.min(MAX_QUERY_ENTRIES),
        };
        let size = self.shared.audit.size();
        let start = filter.q.start.min(size);
        let reader = self
            .shared
            .audit
            .read(start, size)
            .map_err(|e| status_of(ServiceError::from(e)))?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let mut sent = 0u64;
            for (i, bytes) in (start..).zip(reader) {
                if sent >= limit {
                    break;
                }
                let item = match bytes {
                    Ok(b) => match Entry::decode(&b) {
                        Ok(e) if filter.matches(&e) => {
                            Some(Ok(pb::AuditEntry { index: i, entry: b }))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(Status::data_loss(format!(
                            "entry {i} cannot be read: {e}"
                        )))),
                    },
                    Err(e) => Some(Err(status_of(ServiceError::from(e)))),
                };
                if let Some(item) = item {
                    let stop = item.is_err();
                    sent += 1;
                    if tx.blocking_send(item).is_err() || stop {
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn tree_head(
        &self,
        req: Request<pb::TreeHeadRequest>,
    ) -> Result<Response<pb::SignedTreeHead>, Status> {
        let _permit = self.shared.require_user(&req, Role::Auditor).await?;
        let cp = self
            .shared
            .audit
            .checkpoint()
            .map_err(|e| status_of(e.into()))?;
        Ok(Response::new(pb::SignedTreeHead {
            size: cp.checkpoint.size,
            root: cp.checkpoint.root.to_vec(),
            note: cp.note,
        }))
    }

    async fn inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProofResponse>, Status> {
        let _permit = self.shared.require_user(&req, Role::Auditor).await?;
        let r = req.into_inner();
        let audit = &self.shared.audit;
        let (size, note) = self.size_or_current(r.tree_size)?;
        if r.index >= size {
            return Err(Status::out_of_range(format!(
                "entry {} is not in a tree of {size} entries",
                r.index
            )));
        }
        let path = audit
            .inclusion_proof(r.index, size)
            .map_err(|e| status_of(e.into()))?;
        let entry = audit
            .read(r.index, r.index + 1)
            .map_err(|e| status_of(e.into()))?
            .next()
            .transpose()
            .map_err(|e| status_of(e.into()))?
            .unwrap_or_default();
        let leaf = audit.leaf_hash(r.index).unwrap_or_default();
        Ok(Response::new(pb::InclusionProofResponse {
            index: r.index,
            tree_size: size,
            entry,
            leaf_hash: leaf.to_vec(),
            path: path.iter().map(|h| h.to_vec()).collect(),
            note,
        }))
    }

    async fn consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProofResponse>, Status> {
        let _permit = self.shared.require_user(&req, Role::Auditor).await?;
        let r = req.into_inner();
        let audit = &self.shared.audit;
        let (new_size, note) = self.size_or_current(r.new_size)?;
        if r.old_size > new_size || new_size > audit.size() {
            return Err(Status::out_of_range(format!(
                "no consistency proof from {} to {new_size} entries: the log has {}",
                r.old_size,
                audit.size()
            )));
        }
        let path = audit
            .consistency_proof(r.old_size, new_size)
            .map_err(|e| status_of(e.into()))?;
        Ok(Response::new(pb::ConsistencyProofResponse {
            old_size: r.old_size,
            new_size,
            path: path.iter().map(|h| h.to_vec()).collect(),
            note,
        }))
    }

    async fn person_releases(
        &self,
        req: Request<pb::PersonReleasesRequest>,
    ) -> Result<Response<pb::PersonReleasesResponse>, Status> {
        let (auditor, _permit) = self.shared.require_user(&req, Role::Auditor).await?;
        let r = req.into_inner();
        if r.tokens.is_empty() || r.tokens.len() > 64 {
            return Err(Status::invalid_argument(
                "give between 1 and 64 person tokens (kind and 32-byte token each)",
            ));
        }
        let mut tokens = Vec::with_capacity(r.tokens.len());
        let mut kinds = std::collections::BTreeSet::new();
        for (i, t) in r.tokens.iter().enumerate() {
            let tok = <[u8; 32]>::try_from(t.token.as_slice()).map_err(|_| {
                Status::invalid_argument(format!(
                    "token {i} is {} bytes; a person token is 32 bytes",
                    t.token.len()
                ))
            })?;
            if crate::linkage::TokenKind::parse(&t.kind).is_none() {
                return Err(Status::invalid_argument(format!(
                    "token {i} has kind {:?}; known kinds: nhs, pnc, demo, uprn, ref",
                    t.kind.chars().take(32).collect::<String>()
                )));
            }
            kinds.insert(t.kind.clone());
            tokens.push((t.kind.clone(), tok));
        }
        // The lookup is audited before it is answered (kinds only, never a token).
        let kinds: Vec<String> = kinds.into_iter().collect();
        let seq = self
            .record_query(
                &auditor,
                format!(
                    "person releases: {} token(s) of kind {}",
                    tokens.len(),
                    kinds.join(", ")
                ),
            )
            .await?;
        let releaser = self.shared.releaser.clone();
        let (found, releases) =
            tokio::task::spawn_blocking(move || releaser.person_releases(&tokens))
                .await
                .map_err(|_| Status::internal("the lookup task failed"))?
                .map_err(|e| {
                    tracing::error!(error = %e, "person releases lookup failed");
                    Status::unavailable(
                        "the release registry could not be read; see the gateway log",
                    )
                })?;
        Ok(Response::new(pb::PersonReleasesResponse {
            records_found: found,
            releases: releases
                .into_iter()
                .map(|r| pb::PersonRelease {
                    release_id: r.header.release_id,
                    kind: r.header.kind,
                    agreement: r.header.agreement,
                    purpose: r.header.purpose,
                    time: r.header.time,
                    requester: r.header.requester,
                    datasets: r.header.datasets,
                    audit_entry: r.audit_entry,
                })
                .collect(),
            audit_entry: seq,
        }))
    }

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let (auditor, _permit) = self.shared.require_user(&req, Role::Auditor).await?;
        self.record_query(&auditor, "export".into()).await?;
        let cp = self
            .shared
            .audit
            .checkpoint()
            .map_err(|e| status_of(e.into()))?;
        let reader = self
            .shared
            .audit
            .read(0, cp.checkpoint.size)
            .map_err(|e| status_of(e.into()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::task::spawn_blocking(move || {
            for bytes in reader {
                let item = bytes
                    .map(|b| pb::ExportChunk {
                        item: Some(pb::export_chunk::Item::Entry(b)),
                    })
                    .map_err(|e| status_of(e.into()));
                let stop = item.is_err();
                if tx.blocking_send(item).is_err() || stop {
                    return;
                }
            }
            let _ = tx.blocking_send(Ok(pb::ExportChunk {
                item: Some(pb::export_chunk::Item::Note(cp.note)),
            }));
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
#[path = "audit_filter_tests.rs"]
mod filter_tests;
