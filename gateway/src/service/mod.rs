//! gRPC services: thin shells that take the caller's identity, convert the request, call the
//! core and map errors. Status mapping lives in [`status_of`] only; identity checks and their
//! audit entries live in [`Shared`].

pub mod agent;
pub mod audit;

use crate::audit::entry::{Action, Actor, Decision, Entry};
use crate::audit::log::{AuditError, AuditLog};
use crate::auth::{Identity, identify};
use crate::store::{Store, StoreError};
use crate::validate::BatchError;
use skp_core::{AgencyId, Catalog};
use std::sync::Arc;
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
        ) => Status::unavailable(s.to_string()),
        ServiceError::Audit(a @ (AuditError::Unavailable(_) | AuditError::Closed)) => {
            Status::unavailable(a.to_string())
        }
        ServiceError::Audit(AuditError::Request(r)) => Status::invalid_argument(r),
        ServiceError::Store(s) => internal(&s),
        ServiceError::Audit(a) => internal(&a),
    }
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
}

impl Shared {
    /// The calling agency; anything else is refused and the refusal audited.
    pub async fn require_agent<T>(&self, req: &Request<T>) -> Result<AgencyId, Status> {
        match identify(req, &self.trust_domain) {
            Ok(Identity::Agent(a)) => Ok(a),
            Ok(other) => Err(self
                .auth_failure(
                    req,
                    Some(&other),
                    "only an agency's agent may call AgentService",
                    Status::permission_denied("only an agency's agent may call AgentService"),
                )
                .await),
            Err(f) => Err(self.auth_failure(req, None, &f.reason, f.status).await),
        }
    }

    /// The calling auditor; anything else is refused and the refusal audited.
    pub async fn require_auditor<T>(&self, req: &Request<T>) -> Result<String, Status> {
        match identify(req, &self.trust_domain) {
            Ok(Identity::Auditor(n)) => Ok(n),
            Ok(other) => Err(self
                .auth_failure(
                    req,
                    Some(&other),
                    "only an auditor may call AuditService",
                    Status::permission_denied("only an auditor may call AuditService"),
                )
                .await),
            Err(f) => Err(self.auth_failure(req, None, &f.reason, f.status).await),
        }
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
        who: Option<&Identity>,
        reason: &str,
        status: Status,
    ) -> Status {
        tracing::warn!(peer = ?req.remote_addr(), reason, "call refused");
        let actor = who.map_or_else(Actor::anonymous, |w| self.actor(w));
        let mut e = Entry::new(actor, Action::AuthFailure, Decision::Deny);
        e.reason = Some(reason.to_owned());
        e.peer = req.remote_addr().map(|a| a.to_string());
        if let Err(err) = self.audit.append_one(e).await {
            tracing::error!(error = %err, "cannot audit a refused call");
        }
        status
    }
}
