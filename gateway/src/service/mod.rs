//! gRPC services: thin shells that take the caller's identity, convert the request, call the
//! core and map errors. Status mapping lives in [`status_of`] only.

pub mod agent;

use crate::store::StoreError;
use crate::validate::BatchError;
use tonic::Status;

/// Every error a service can return, mapped to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed or refers to something unknown.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Maps a service error to a gRPC status: bad input → `InvalidArgument`, policy →
/// `PermissionDenied` with the rule, storage failure → `Unavailable` (fail closed), anything
/// else → `Internal` with a request id (the cause is logged server-side only).
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
        ServiceError::Store(s @ (StoreError::Poisoned | StoreError::Closed)) => {
            Status::unavailable(s.to_string())
        }
        ServiceError::Store(s) => {
            let id: u64 = rand::random();
            tracing::error!(request_id = format!("{id:016x}"), error = %s, "store error");
            Status::internal(format!("internal error; request id {id:016x}"))
        }
    }
}
