//! Scoring's errors and the one place they become gRPC status codes.

use leadflow_platform::{FieldViolations, error::idempotency_mismatch_status, storage_status};
use leadflow_storage::StorageError;
use tonic::Status;
use uuid::Uuid;

/// Everything a scoring call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    /// The request has invalid fields.
    #[error(transparent)]
    InvalidRequest(#[from] FieldViolations),
    /// No scoring model has this id.
    #[error("scoring model {0} not found")]
    ModelNotFound(Uuid),
    /// The idempotency key was used before with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// Scoring does not know the lead (for the product).
    #[error("lead {0} not found")]
    LeadNotFound(Uuid),
    /// The product has no active scoring model.
    #[error("product {0:?} has no active scoring model")]
    NoActiveModel(String),
    /// The lead is not in a state that allows the change.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The records could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<ScoringError> for Status {
    fn from(error: ScoringError) -> Self {
        match &error {
            ScoringError::InvalidRequest(violations) => violations.to_status(),
            ScoringError::ModelNotFound(_)
            | ScoringError::LeadNotFound(_)
            | ScoringError::NoActiveModel(_) => Status::not_found(error.to_string()),
            ScoringError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            ScoringError::IdempotencyKeyReused => idempotency_mismatch_status(),
            ScoringError::Storage(storage) => storage_status(storage),
        }
    }
}
