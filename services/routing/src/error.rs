//! Routing's errors and the one place they become gRPC status codes.

use leadflow_platform::{FieldViolations, error::idempotency_mismatch_status, storage_status};
use leadflow_storage::StorageError;
use tonic::Status;
use uuid::Uuid;

/// Everything a routing call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// The request has invalid fields.
    #[error(transparent)]
    InvalidRequest(#[from] FieldViolations),
    /// No rep has this id.
    #[error("rep {0} not found")]
    RepNotFound(Uuid),
    /// No team has this id.
    #[error("team {0} not found")]
    TeamNotFound(Uuid),
    /// Another rep already has this email address.
    #[error("a rep with this email address already exists")]
    RepEmailTaken,
    /// The idempotency key was used before with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The RPC is part of the contract but not offered by this version of the service.
    #[error("{0} is not available in this version")]
    NotAvailable(&'static str),
    /// The records could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<RoutingError> for Status {
    fn from(error: RoutingError) -> Self {
        match &error {
            RoutingError::InvalidRequest(violations) => violations.to_status(),
            RoutingError::RepNotFound(_) | RoutingError::TeamNotFound(_) => {
                Status::not_found(error.to_string())
            }
            RoutingError::RepEmailTaken => Status::already_exists(error.to_string()),
            RoutingError::IdempotencyKeyReused => idempotency_mismatch_status(),
            RoutingError::NotAvailable(_) => Status::unimplemented(error.to_string()),
            RoutingError::Storage(storage) => storage_status(storage),
        }
    }
}
