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
    /// No assignment has this id.
    #[error("assignment {0} not found")]
    AssignmentNotFound(Uuid),
    /// Something else the call names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Another rep already has this email address.
    #[error("a rep with this email address already exists")]
    RepEmailTaken,
    /// Another team already has this name.
    #[error("a team with this name already exists")]
    TeamNameTaken,
    /// The records are not in the state the call needs.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The idempotency key was used before with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The records could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<RoutingError> for Status {
    fn from(error: RoutingError) -> Self {
        match &error {
            RoutingError::InvalidRequest(violations) => violations.to_status(),
            RoutingError::RepNotFound(_)
            | RoutingError::TeamNotFound(_)
            | RoutingError::AssignmentNotFound(_)
            | RoutingError::NotFound(_) => Status::not_found(error.to_string()),
            RoutingError::RepEmailTaken | RoutingError::TeamNameTaken => {
                Status::already_exists(error.to_string())
            }
            RoutingError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            RoutingError::IdempotencyKeyReused => idempotency_mismatch_status(),
            RoutingError::Storage(storage) => storage_status(storage),
        }
    }
}
