//! Nurturing's errors and the one place they become gRPC status codes.

use leadflow_platform::{FieldViolations, error::idempotency_mismatch_status, storage_status};
use leadflow_storage::StorageError;
use tonic::Status;
use uuid::Uuid;

/// Everything a nurturing call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NurturingError {
    /// The request has invalid fields.
    #[error(transparent)]
    InvalidRequest(#[from] FieldViolations),
    /// No content item has this id.
    #[error("content item {0} not found")]
    ContentItemNotFound(Uuid),
    /// The content item is retired and can no longer change.
    #[error("content item {0} is retired")]
    ContentItemRetired(Uuid),
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

impl From<NurturingError> for Status {
    fn from(error: NurturingError) -> Self {
        match &error {
            NurturingError::InvalidRequest(violations) => violations.to_status(),
            NurturingError::ContentItemNotFound(_) => Status::not_found(error.to_string()),
            NurturingError::ContentItemRetired(_) => Status::failed_precondition(error.to_string()),
            NurturingError::IdempotencyKeyReused => idempotency_mismatch_status(),
            NurturingError::NotAvailable(_) => Status::unimplemented(error.to_string()),
            NurturingError::Storage(storage) => storage_status(storage),
        }
    }
}
