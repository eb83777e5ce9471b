//! `sharing.v1.AnalystService`: what an analyst may request, and dry runs of requests.
//! The caller is the subject of a verified JWT with role `analyst`; every decision of `Explain`
//! is audited with the SHA-256 of the agreement in force.

use super::Shared;
use crate::audit::entry::{Action, Actor, AgreementRef, Decision, Entry};
use crate::jwt::Role;
use crate::policy::Policy;
use crate::policy::decide::{self, FieldOutcome, Request as PolicyRequest};
use crate::policy::isa::Condition;
use crate::release::{AggregateRequest, ExtractRequest, Prepared, ReleaseError};
use sharing_proto::v1 as pb;
use sharing_proto::v1::analyst_service_server::AnalystService;
use time::format_description::well_known::Rfc3339;
use tonic::{Request, Response, Status};

/// Runs a release off the async runtime and maps its failure to a status: a policy refusal is
/// `PERMISSION_DENIED` naming the rule (and the audit entry of the refusal), an audit or storage
/// failure `UNAVAILABLE` (nothing was released), a bad request `INVALID_ARGUMENT`.
///
/// Releases are built a few at a time gateway-wide (`limits.max_concurrent_releases`); the rest
/// wait their turn, within the call's deadline ([`super::deadline`]). The release slot and the
/// caller's `permit` are held until the work ends, even when the call has ended before it: work
/// that cannot be stopped still counts against the limits.
async fn run_release(
    shared: &Shared,
    actor: Actor,
    permit: crate::limits::Permit,
    f: impl FnOnce(&Policy, &Actor, time::OffsetDateTime) -> Result<Prepared, ReleaseError>
    + Send
    + 'static,
) -> Result<Sealed, Status> {
    let Ok(slot) = shared.limits.releases.clone().acquire_owned().await else {
        return Err(Status::unavailable("the gateway is stopping"));
    };
    let policy = shared.policy();
    let now = shared.now();
    let audit = shared.audit.clone();
    let releaser = shared.releaser.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _held = (slot, permit);
        f(&policy, &actor, now).map(|prepared| Sealed {
            prepared: Some(prepared),
            audit,
            actor,
            releaser,
        })
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "release task failed");
        Status::internal("the release task failed; nothing was released")
    })?;
    result.map_err(|e| match e {
        ReleaseError::Denied {
            rule: rule @ "limits.max_release_rows",
            message,
            audit_entry,
        } => Status::resource_exhausted(format!(
            "refused by {rule}: {message}{}",
            audit_entry
                .map(|n| format!(" (audit entry {n})"))
                .unwrap_or_default()
        )),
        ReleaseError::Denied {
            rule,
            message,
            audit_entry,
        } => Status::permission_denied(format!(
            "denied by rule {rule}: {message}{}",
            audit_entry
                .map(|n| format!(" (audit entry {n})"))
                .unwrap_or_default()
        )),
        ReleaseError::BadRequest(m) => Status::invalid_argument(m),
        ReleaseError::Audit(a) => Status::unavailable(format!(
            "the release's audit entry could not be written, so nothing was released: {a}"
        )),
        ReleaseError::Store(s) => super::status_of(s.into()),
        ReleaseError::Build(m) => {
            tracing::error!(error = %m, "release failed");
            Status::unavailable(
                "the release could not be prepared and nothing was released; see the gateway log",
            )
        }
    })
}

/// A release sealed for one call: audited, registered and spooled, not yet handed over.
///
/// Handed to [`send_release`], it is sent. Dropped instead, its call ended while the release was
/// being sealed: the deadline passed (an audit log slow to make its entry durable, say) or the
/// caller went away, and the work, which cannot be stopped half-way through its audit entry,
/// finished later. Such a release stays registered, as its `release` entry says it was made (the
/// registry agrees with the log, as after a restart between the two), and a second entry, action
/// `deny` with the same release id and a reason starting "not delivered", says that nothing of
/// it was sent; its spooled files are removed. A table's unit list is removed too (under the
/// lock tables are compared under, [`crate::release::Releaser::forget_undelivered_table`]):
/// nobody saw the table, so it must not count as an earlier table that refuses later ones.
///
/// The drop is reached by `server_tests::c14_a_stalled_audit_writer_ends_releases_at_the_deadline_with_nothing_sent`
/// (an aggregate sealed after its deadline); the removal itself is tested in
/// `release::tests::an_undelivered_table_is_not_an_earlier_table`.
struct Sealed {
    prepared: Option<Prepared>,
    audit: crate::audit::log::AuditLog,
    actor: Actor,
    releaser: crate::release::Releaser,
}

impl Sealed {
    /// The release, to send.
    fn into_prepared(mut self) -> Prepared {
        self.prepared
            .take()
            .expect("a sealed release is handed over once, when it is made")
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        let Some(prepared) = self.prepared.take() else {
            return;
        };
        let body = &prepared.manifest.release;
        let mut e = Entry::new(self.actor.clone(), Action::Deny, Decision::Deny);
        e.release = Some(prepared.release_id.clone());
        e.datasets = body.files.iter().map(|f| f.dataset.clone()).collect();
        e.agreement = Some(body.agreement.clone());
        e.reason = Some(format!(
            "not delivered: release {} (audit entry {}) was ready only after its call had ended \
             (its deadline passed or the caller went away); nothing of it was sent and its files \
             were removed",
            prepared.release_id, prepared.audit_entry
        ));
        tracing::warn!(release = %prepared.release_id, audit_entry = prepared.audit_entry, "a release was ready after its call had ended; not sent");
        let release_id = prepared.release_id.clone();
        let table = prepared.manifest.release.kind == "aggregate";
        // Removes the spool.
        drop(prepared);
        let audit = self.audit.clone();
        let releaser = self.releaser.clone();
        // Blocking (a file removal, and a lock another table may hold while it is compared):
        // run where blocking is allowed.
        let forget = move || {
            if table && let Err(err) = releaser.forget_undelivered_table(&release_id) {
                tracing::error!(release = %release_id, error = %err, "cannot remove the unit list of an undelivered table; later tables are still compared with it");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(forget);
                rt.spawn(async move {
                    if let Err(err) = audit.append_one(e).await {
                        tracing::error!(error = %err, "cannot audit that a release was not delivered");
                    }
                });
            }
            Err(_) => {
                forget();
                tracing::error!("cannot audit that a release was not delivered: no runtime");
            }
        }
    }
}

/// Streams a prepared (already audited) release: each file in chunks, `manifest.json` last.
/// The spool is removed when the last chunk is sent or the caller goes away.
fn send_release(prepared: Prepared) -> ReleaseStream {
    const CHUNK: usize = 256 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut first = true;
        for name in &prepared.files {
            let path = prepared.dir.join(name);
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a release spool file");
                    let _ = tx.blocking_send(Err(Status::unavailable(
                        "a release file could not be read back; the release is incomplete",
                    )));
                    return;
                }
            };
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match f.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read a release spool file");
                        let _ = tx.blocking_send(Err(Status::unavailable(
                            "a release file could not be read back; the release is incomplete",
                        )));
                        return;
                    }
                };
                let mut chunk = pb::ReleaseChunk {
                    file: name.clone(),
                    data: buf[..n].to_vec(),
                    end_of_file: n == 0,
                    ..Default::default()
                };
                if first {
                    chunk.release_id = prepared.release_id.clone();
                    chunk.audit_entry = prepared.audit_entry;
                    chunk.total_bytes = prepared.total_bytes;
                    first = false;
                }
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
            }
        }
        drop(prepared);
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The chunks of a release folder.
pub type ReleaseStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReleaseChunk, Status>> + Send>>;

/// Days before a review date from which an agreement is flagged as due for review.
pub const REVIEW_WARNING_DAYS: i64 = 60;

/// The analyst service.
#[derive(Clone)]
pub struct AnalystSvc {
    shared: Shared,
}

impl AnalystSvc {
    /// A service over the gateway's shared state.
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

/// An instant as RFC 3339 text.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A condition as one line of text.
pub fn describe(c: &Condition) -> String {
    match c {
        Condition::In(f, v) => format!("{f} in [{}]", v.join(", ")),
        Condition::Range(f, lo, hi) => match (lo, hi) {
            (Some(l), Some(h)) => format!("{l} <= {f} <= {h}"),
            (Some(l), None) => format!("{f} >= {l}"),
            (None, Some(h)) => format!("{f} <= {h}"),
            (None, None) => format!("{f} is a number"),
        },
        Condition::Is(f, b) => format!("{f} is {b}"),
        Condition::Or(cs) => format!(
            "({})",
            cs.iter().map(describe).collect::<Vec<_>>().join(" or ")
        ),
    }
}

#[tonic::async_trait]
impl AnalystService for AnalystSvc {
    type ExtractStream = ReleaseStream;
    type AggregateStream = ReleaseStream;

    async fn extract(
        &self,
        req: Request<pb::ExtractRequest>,
    ) -> Result<Response<Self::ExtractStream>, Status> {
        let (who, permit) = self.shared.require_user(&req, Role::Analyst).await?;
        let r = req.into_inner();
        let request = ExtractRequest {
            agreement: r.agreement,
            purpose: r.purpose,
            datasets: r.datasets,
        };
        let fields = r.fields;
        let shared = self.shared.clone();
        let actor = self.shared.analyst_actor(&who);
        let sealed = run_release(&self.shared, actor, permit, move |policy, actor, now| {
            shared
                .releaser
                .extract_fields(policy, &who, actor, &request, &fields, now)
        })
        .await?;
        Ok(Response::new(send_release(sealed.into_prepared())))
    }

    async fn aggregate(
        &self,
        req: Request<pb::AggregateRequest>,
    ) -> Result<Response<Self::AggregateStream>, Status> {
        let (who, permit) = self.shared.require_user(&req, Role::Analyst).await?;
        let r = req.into_inner();
        let request = AggregateRequest {
            agreement: r.agreement,
            purpose: r.purpose,
            dataset: r.dataset,
            by: r.by,
        };
        let shared = self.shared.clone();
        let actor = self.shared.analyst_actor(&who);
        let sealed = run_release(&self.shared, actor, permit, move |policy, actor, now| {
            shared
                .releaser
                .aggregate(policy, &who, actor, &request, now)
        })
        .await?;
        Ok(Response::new(send_release(sealed.into_prepared())))
    }

    async fn list_agreements(
        &self,
        req: Request<pb::ListAgreementsRequest>,
    ) -> Result<Response<pb::AgreementList>, Status> {
        let (who, _permit) = self.shared.require_user(&req, Role::Analyst).await?;
        let policy = self.shared.policy();
        let now = self.shared.now();
        let agreements = policy
            .agreements()
            .iter()
            .map(|a| {
                let status = if now < a.valid_from {
                    "not yet valid"
                } else if now > a.valid_until {
                    "expired"
                } else {
                    "in force"
                };
                pb::AgreementSummary {
                    id: a.id.clone(),
                    title: a.title.clone(),
                    version: a.version.clone(),
                    valid_from: rfc3339(a.valid_from),
                    valid_until: rfc3339(a.valid_until),
                    review_by: rfc3339(a.review_by),
                    status: status.into(),
                    review_due: a.review_by - now < time::Duration::days(REVIEW_WARNING_DAYS),
                    purposes: a
                        .purposes
                        .iter()
                        .map(|p| pb::PurposeSummary {
                            id: p.id.clone(),
                            description: p.description.clone(),
                            output: p.output.as_str().into(),
                            datasets: p.datasets.keys().cloned().collect(),
                            you_may_request: p.recipients.iter().any(|r| {
                                who.agency.as_deref() == Some(r.agency.as_str())
                                    && who.roles.contains(&r.role)
                                    && (r.subjects.is_empty() || r.subjects.contains(&who.sub))
                            }),
                        })
                        .collect(),
                    sha256: a.sha256.clone(),
                    legal_gateways: a.gateways.clone(),
                }
            })
            .collect();
        Ok(Response::new(pb::AgreementList {
            agreements,
            policy_sha256: policy.sha256().to_string(),
        }))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::Explanation>, Status> {
        let (who, _permit) = self.shared.require_user(&req, Role::Analyst).await?;
        let r = req.into_inner();
        if r.fields.len() > 1000 || r.fields.iter().any(|f| f.len() > 128) {
            return Err(Status::invalid_argument(
                "at most 1000 fields of at most 128 characters each",
            ));
        }
        let policy = self.shared.policy();
        let preq = PolicyRequest {
            agreement: r.agreement.clone(),
            purpose: r.purpose.clone(),
            dataset: r.dataset.clone(),
            fields: r.fields.clone(),
        };
        let e = decide::explain(
            &policy,
            &self.shared.catalog,
            &who,
            &preq,
            self.shared.now(),
        );

        let mut entry = Entry::new(
            self.shared.analyst_actor(&who),
            Action::Explain,
            if e.allowed() {
                Decision::Allow
            } else {
                Decision::Deny
            },
        );
        entry.datasets = vec![r.dataset.chars().take(128).collect()];
        entry.fields = e
            .fields
            .iter()
            .filter(|(_, o)| o.released())
            .map(|(n, o)| format!("{n}:{}", o.name()))
            .collect();
        entry.reason = e
            .denial
            .as_ref()
            .map(|d| format!("{}: {}", d.rule, d.message));
        entry.agreement = Some(match &e.agreement {
            Some((id, version, sha)) => AgreementRef {
                id: id.clone(),
                version: version.clone(),
                policy_sha256: sha.clone(),
                purpose: r.purpose.chars().take(128).collect(),
            },
            None => AgreementRef {
                id: r.agreement.chars().take(128).collect(),
                version: String::new(),
                policy_sha256: policy.sha256().to_string(),
                purpose: r.purpose.chars().take(128).collect(),
            },
        });
        let seq = self.shared.record(entry).await?;

        let (version, sha) = e
            .agreement
            .as_ref()
            .map(|(_, v, s)| (v.clone(), s.clone()))
            .unwrap_or_default();
        Ok(Response::new(pb::Explanation {
            allowed: e.allowed(),
            rule: e
                .denial
                .as_ref()
                .map(|d| d.rule.to_string())
                .unwrap_or_default(),
            reason: e
                .denial
                .as_ref()
                .map(|d| d.message.clone())
                .unwrap_or_default(),
            fields: e
                .fields
                .iter()
                .map(|(n, o)| {
                    let (rule, reason) = match o {
                        FieldOutcome::Denied(d) => (d.rule.to_string(), d.message.clone()),
                        FieldOutcome::Generalised(t) => {
                            (String::new(), format!("generalised to {}", t.name()))
                        }
                        FieldOutcome::Keep => (String::new(), String::new()),
                    };
                    pb::FieldDecision {
                        field: n.clone(),
                        outcome: o.name().to_string(),
                        rule,
                        reason,
                    }
                })
                .collect(),
            output: e.output.map(|o| o.as_str().to_string()).unwrap_or_default(),
            persons: e.persons.clone(),
            filter: e.filter.iter().map(describe).collect(),
            agreement_version: version,
            policy_sha256: sha,
            audit_entry: seq,
        }))
    }
}
