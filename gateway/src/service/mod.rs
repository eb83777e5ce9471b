//! gRPC services: thin shells that take the caller's identity, convert the request, call the
//! core and map errors. Status mapping lives in [`status_of`] only; identity checks and their
//! audit entries live in [`Shared`]; the whole-call deadline in [`deadline`].

pub mod agent;
pub mod analyst;
pub mod audit;
pub mod deadline;

use crate::audit::entry::{Action, Actor, Decision, Entry};
use crate::audit::log::{AuditError, AuditLog};
use crate::auth::{Identity, identify};
use crate::jwt::{JwtVerifier, Role};
use crate::policy::Policy;
use crate::policy::decide::Requester;
use crate::store::{Store, StoreError};
use crate::validate::BatchError;
use skp_core::{AgencyId, Catalog};
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;
use tonic::{Request, Status};

/// Every error a service can return, mapped to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed or refers to something unknown.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Maps a service error to a gRPC status: bad input → `InvalidArgument`, policy →
/// `PermissionDenied` with the rule, storage or audit failure → `Unavailable` (fail closed),
/// anything else → `Internal` with a request id (the cause is logged server-side only).
pub fn status_of(e: ServiceError) -> Status {
    match e {
        ServiceError::Batch(b @ BatchError::NotOwner { .. }) => {
            Status::permission_denied(b.to_string())
        }
        ServiceError::Batch(b @ BatchError::UnknownDataset(..)) => Status::not_found(b.to_string()),
        ServiceError::Batch(b @ BatchError::SchemaVersion { .. }) => {
            Status::failed_precondition(b.to_string())
        }
        ServiceError::Batch(b) => Status::invalid_argument(b.to_string()),
        ServiceError::Store(
            s @ (StoreError::Poisoned
            | StoreError::Closed
            | StoreError::AuditUnavailable(_)
            | StoreError::Io(_)),
        ) => Status::unavailable(redact_paths(&s.to_string())),
        ServiceError::Audit(a @ (AuditError::Unavailable(_) | AuditError::Closed)) => {
            Status::unavailable(redact_paths(&a.to_string()))
        }
        ServiceError::Audit(AuditError::Request(r)) => Status::invalid_argument(r),
        ServiceError::Store(s) => internal(&s),
        ServiceError::Audit(a) => internal(&a),
    }
}

/// A message for a caller with every file system path replaced by `[path]`: the cause (e.g.
/// "No space left on device") stays, where the gateway keeps its data does not leave it. The
/// whole message is in the gateway's log.
pub fn redact_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        let starts_path = c == '/'
            && prev.is_none_or(|p| p.is_whitespace() || matches!(p, '(' | '"' | '\'' | '=' | '`'));
        if starts_path {
            while let Some(&n) = chars.peek() {
                if n.is_whitespace() || matches!(n, ':' | ')' | '"' | '\'' | ',' | ';' | '`') {
                    break;
                }
                chars.next();
            }
            out.push_str("[path]");
            prev = Some(']');
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    if out != message {
        tracing::warn!(
            message,
            "a storage error was sent to a caller without its paths"
        );
    }
    out
}

fn internal(e: &dyn std::fmt::Display) -> Status {
    let id: u64 = rand::random();
    tracing::error!(request_id = format!("{id:016x}"), error = %e, "internal error");
    Status::internal(format!("internal error; request id {id:016x}"))
}

/// What every service shares.
#[derive(Clone)]
pub struct Shared {
    /// The dataset catalog.
    pub catalog: Arc<Catalog>,
    /// The record store.
    pub store: Store,
    /// The audit log.
    pub audit: AuditLog,
    /// The SPIFFE trust domain of identities.
    pub trust_domain: String,
    /// The agreements in force (replaced whole on reload).
    pub policy: Arc<RwLock<Arc<Policy>>>,
    /// Verifier of analysts' and auditors' JWTs.
    pub jwt: Arc<JwtVerifier>,
    /// Makes releases (extracts and tables) and keeps their registry.
    pub releaser: crate::release::Releaser,
    /// The clock decisions use (injectable for tests).
    pub clock: Arc<dyn Fn() -> OffsetDateTime + Send + Sync>,
    /// Per-caller resource limits.
    pub limits: crate::limits::Limiter,
}

impl Shared {
    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        crate::unpoisoned(self.policy.read()).clone()
    }

    /// Now, by the gateway's clock.
    pub fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }

    /// The verified JWT subject of the call, which must hold `role`; anything else is refused
    /// and the refusal audited (`UNAUTHENTICATED` without a valid token, `PERMISSION_DENIED`
    /// without the role). The subject is left for the call's deadline ([`deadline::Proven`]).
    pub async fn require_role<T>(&self, req: &Request<T>, role: Role) -> Result<Requester, Status> {
        let claims = match crate::jwt::bearer(req).and_then(|t| self.jwt.verify(t, self.now())) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("bearer token refused: {e}");
                let status = Status::unauthenticated(reason.clone());
                return Err(self
                    .auth_failure(req, Actor::anonymous(), &reason, status)
                    .await);
            }
        };
        let who = Requester {
            sub: claims.sub.clone(),
            agency: claims.agency.as_ref().map(|a| a.to_string()),
            roles: claims
                .roles
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
        };
        // Token ↔ client-certificate binding by organisation: a token presented over a
        // connection authenticated with an agency's certificate must be of that agency.
        if let Ok(Identity::Agent(a)) = identify(req, &self.trust_domain)
            && who.agency.as_deref() != Some(a.as_str())
        {
            let reason = format!(
                "{} presented a token of agency {} over the client certificate of {a}; a token \
                 is accepted only over a connection of its own agency (or one without a \
                 client certificate)",
                who.sub,
                who.agency.as_deref().unwrap_or("(none)")
            );
            let status = Status::permission_denied(reason.clone());
            return Err(self
                .auth_failure(req, self.analyst_actor(&who), &reason, status)
                .await);
        }
        if !claims.has(role) {
            let reason = format!(
                "{} lacks the role {} this service requires",
                who.sub,
                role.as_str()
            );
            let status = Status::permission_denied(reason.clone());
            return Err(self
                .auth_failure(req, self.analyst_actor(&who), &reason, status)
                .await);
        }
        deadline::Proven::record(
            req,
            self.analyst_actor(&who),
            crate::limits::CallerKey::User(who.sub.clone()),
        );
        Ok(who)
    }

    /// The actor of a JWT subject.
    pub fn analyst_actor(&self, who: &Requester) -> Actor {
        let kind = if who.roles.iter().any(|r| r == "auditor")
            && !who.roles.iter().any(|r| r == "analyst")
        {
            "auditor"
        } else {
            "analyst"
        };
        Actor {
            kind: kind.into(),
            id: who.sub.chars().take(128).collect(),
            agency: who.agency.clone(),
        }
    }

    /// The calling agency; anything else is refused and the refusal audited. The agency is left
    /// for the call's deadline ([`deadline::Proven`]).
    pub async fn require_agent<T>(&self, req: &Request<T>) -> Result<AgencyId, Status> {
        match identify(req, &self.trust_domain) {
            Ok(Identity::Agent(a)) => {
                if let Some(not_after) =
                    req.peer_certs()
                        .and_then(|c| c.first().cloned())
                        .and_then(|leaf| {
                            x509_parser::parse_x509_certificate(leaf.as_ref())
                                .ok()
                                .map(|(_, c)| c.validity().not_after.timestamp())
                        })
                {
                    crate::metrics::global().certificate(a.as_str(), not_after);
                }
                deadline::Proven::record(
                    req,
                    Actor::agent(a.as_str(), &self.trust_domain),
                    crate::limits::CallerKey::Agency(a.to_string()),
                );
                Ok(a)
            }
            Ok(other) => Err(self
                .auth_failure(
                    req,
                    self.actor(&other),
                    "only an agency's agent may call AgentService",
                    Status::permission_denied("only an agency's agent may call AgentService"),
                )
                .await),
            Err(f) => Err(self
                .auth_failure(req, Actor::anonymous(), &f.reason, f.status)
                .await),
        }
    }

    /// The calling auditor (a JWT with role `auditor`); anything else is refused and audited.
    pub async fn require_auditor<T>(&self, req: &Request<T>) -> Result<Requester, Status> {
        self.require_role(req, Role::Auditor).await
    }

    /// The caller with `role` (see [`Shared::require_role`]), admitted under the per-person
    /// limits: the permit holds the caller's place until dropped.
    pub async fn require_user<T>(
        &self,
        req: &Request<T>,
        role: Role,
    ) -> Result<(Requester, crate::limits::Permit), Status> {
        let who = self.require_role(req, role).await?;
        let admitted = self.limits.user_call(&who.sub);
        let permit = self.admit(req, self.analyst_actor(&who), admitted).await?;
        Ok((who, permit))
    }

    /// The actor of an identity.
    pub fn actor(&self, id: &Identity) -> Actor {
        match id {
            Identity::Agent(a) => Actor::agent(a.as_str(), &self.trust_domain),
            Identity::Auditor(_) => Actor {
                kind: "auditor".into(),
                id: id.uri(&self.trust_domain),
                agency: None,
            },
        }
    }

    /// Admits a call of `actor` under the resource limits (`admitted` is the limiter's answer);
    /// a refusal is audited and answered `RESOURCE_EXHAUSTED` naming the setting.
    pub async fn admit<T>(
        &self,
        req: &Request<T>,
        actor: Actor,
        admitted: Result<crate::limits::Permit, crate::limits::Refusal>,
    ) -> Result<crate::limits::Permit, Status> {
        match admitted {
            Ok(p) => Ok(p),
            Err(r) => {
                let status =
                    Status::resource_exhausted(format!("refused by {}: {}", r.limit, r.message));
                Err(self
                    .limit_refused(actor, req.remote_addr(), &r, status)
                    .await)
            }
        }
    }

    /// Audits a call refused by a limit (when the refusal says so) and returns `status`.
    pub async fn limit_refused(
        &self,
        actor: Actor,
        peer: Option<std::net::SocketAddr>,
        r: &crate::limits::Refusal,
        status: Status,
    ) -> Status {
        tracing::warn!(limit = r.limit, actor = %actor.id, "call refused by a limit");
        crate::metrics::global().limited(r.limit);
        if r.audit.is_some() {
            let mut e = Entry::new(actor, Action::Limit, Decision::Deny);
            e.reason = Some(r.audit_reason());
            e.peer = peer.map(|a| a.to_string());
            if let Err(err) = self.audit.append_one(e).await {
                tracing::error!(error = %err, "cannot audit a call refused by a limit");
                return Status::unavailable("the audit log refuses entries; nothing was done");
            }
        }
        status
    }

    /// Appends an entry; a failure becomes `Unavailable` (fail closed).
    pub async fn record(&self, entry: Entry) -> Result<u64, Status> {
        self.audit
            .append_one(entry)
            .await
            .map_err(|e| status_of(e.into()))
    }

    /// Audits an authentication or authorisation failure and returns the status to send.
    async fn auth_failure<T>(
        &self,
        req: &Request<T>,
        actor: Actor,
        reason: &str,
        status: Status,
    ) -> Status {
        tracing::warn!(peer = ?req.remote_addr(), reason, "call refused");
        let mut e = Entry::new(actor, Action::AuthFailure, Decision::Deny);
        e.reason = Some(reason.to_owned());
        e.peer = req.remote_addr().map(|a| a.to_string());
        if let Err(err) = self.audit.append_one(e).await {
            tracing::error!(error = %err, "cannot audit a refused call");
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_statuses_name_the_cause_but_no_path() {
        let s = status_of(ServiceError::Store(StoreError::Io(
            "cannot append to /var/lib/skp/data/records/seg-000001.log: No space left on device (os error 28)"
                .into(),
        )));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(!s.message().contains("/var"), "{}", s.message());
        assert!(!s.message().contains("seg-000001"), "{}", s.message());
        assert!(
            s.message().contains("No space left on device"),
            "{}",
            s.message()
        );
        let a = status_of(ServiceError::Audit(AuditError::Unavailable(
            "cannot write \"/data/audit/log\" (fsync): Input/output error".into(),
        )));
        assert!(!a.message().contains("/data"), "{}", a.message());
        assert!(
            a.message().contains("Input/output error"),
            "{}",
            a.message()
        );
    }

    #[test]
    fn text_without_paths_is_unchanged() {
        for t in ["a/b ratio", "read 3/4 of it", "no path here", "https://x"] {
            assert_eq!(redact_paths(t), t);
        }
    }

    #[test]
    fn internal_errors_say_only_a_request_id() {
        let s = status_of(ServiceError::Store(StoreError::Corrupt(
            "frame at /srv/data/records/seg-000002.log offset 42 key 0xdeadbeef".into(),
        )));
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(
            s.message().starts_with("internal error; request id "),
            "{}",
            s.message()
        );
        assert!(!s.message().contains("/srv") && !s.message().contains("deadbeef"));
    }
}
