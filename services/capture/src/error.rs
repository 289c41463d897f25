//! Capture's errors and the one place they become gRPC status codes.

use leadflow_platform::{FieldViolations, error::idempotency_mismatch_status, storage_status};
use leadflow_storage::StorageError;
use tonic::Status;
use uuid::Uuid;

/// Everything a capture call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The request has invalid fields.
    #[error(transparent)]
    InvalidRequest(#[from] FieldViolations),
    /// No form has this id.
    #[error("form {0} not found")]
    FormNotFound(Uuid),
    /// The form refuses submissions.
    #[error("form {0} is archived and takes no submissions")]
    FormArchived(Uuid),
    /// No contact matches the id or email given.
    #[error("contact not found")]
    ContactNotFound,
    /// No lead has this id.
    #[error("lead {0} not found")]
    LeadNotFound(Uuid),
    /// No account has this id.
    #[error("account {0} not found")]
    AccountNotFound(Uuid),
    /// The anonymous visitor already turned out to be another contact.
    #[error("visitor id {0:?} was already merged into another contact")]
    VisitorMergedElsewhere(String),
    /// The new email of a contact belongs to another contact.
    #[error("profile.email belongs to another contact")]
    EmailTaken,
    /// The new web domain and site of a lead belong to another lead.
    #[error("profile.web_domain and profile.site belong to lead {0}")]
    LeadTaken(Uuid),
    /// The email belongs to an erased contact and the capture carries no new consent.
    #[error(
        "contact.email belongs to a contact erased at its request or by the retention policy: \
         it is captured again only with new consent"
    )]
    ContactErased,
    /// A signed link is expired, or the consent it confirms was withdrawn since.
    #[error("{0}")]
    LinkNoLongerValid(&'static str),
    /// A streaming call carried more items than it may.
    #[error("the stream holds more than {0} items")]
    TooManyItems(usize),
    /// The caller read another revision than the record has now.
    #[error("expected revision {expected}, but it is at {actual}: read it again")]
    RevisionMismatch { expected: i64, actual: i64 },
    /// The client's stream broke off or sent something unreadable.
    #[error("the request stream failed: {}", .0.message())]
    Stream(Status),
    /// The idempotency key was used before with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// Another service an export gathers from cannot be reached or failed.
    #[error("{service} cannot give its part of the export now, retry later: {reason}")]
    PeerUnavailable {
        service: &'static str,
        reason: String,
    },
    /// The export document could not be written.
    #[error("the export cannot be written: {0}")]
    Export(String),
    /// The records could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<CaptureError> for Status {
    fn from(error: CaptureError) -> Self {
        match &error {
            CaptureError::InvalidRequest(violations) => violations.to_status(),
            CaptureError::FormNotFound(_)
            | CaptureError::ContactNotFound
            | CaptureError::LeadNotFound(_)
            | CaptureError::AccountNotFound(_) => Status::not_found(error.to_string()),
            CaptureError::FormArchived(_)
            | CaptureError::VisitorMergedElsewhere(_)
            | CaptureError::ContactErased
            | CaptureError::LinkNoLongerValid(_) => Status::failed_precondition(error.to_string()),
            CaptureError::Stream(status) => status.clone(),
            CaptureError::RevisionMismatch { .. } => Status::aborted(error.to_string()),
            CaptureError::TooManyItems(_) => Status::resource_exhausted(error.to_string()),
            CaptureError::IdempotencyKeyReused => idempotency_mismatch_status(),
            CaptureError::EmailTaken | CaptureError::LeadTaken(_) => {
                Status::already_exists(error.to_string())
            }
            CaptureError::PeerUnavailable { .. } => Status::unavailable(error.to_string()),
            CaptureError::Export(_) => Status::internal(error.to_string()),
            CaptureError::Storage(storage) => storage_status(storage),
        }
    }
}
/// Why one item of a streaming call was rejected: the status it would have failed with as
/// a single call, and the first field at fault.
pub(crate) fn item_error(error: CaptureError) -> leadflow_proto::capture::v1::ItemError {
    let (field, reason) = match &error {
        CaptureError::InvalidRequest(violations) => violations
            .iter()
            .next()
            .map(|(field, reason)| (field.to_owned(), reason.to_owned()))
            .unwrap_or_default(),
        CaptureError::ContactErased => ("contact.email".to_owned(), error.to_string()),
        other => (String::new(), other.to_string()),
    };
    let status = Status::from(error);
    let reason = if reason.is_empty() {
        status.message().to_owned()
    } else {
        reason
    };
    leadflow_proto::capture::v1::ItemError {
        code: status.code() as i32,
        field,
        reason,
    }
}

impl CaptureError {
    /// Whether the error is about the item a streaming call carried, so that the item is
    /// rejected and the stream goes on, rather than about the store, which stops the stream.
    pub(crate) fn blames_the_item(&self) -> bool {
        match self {
            CaptureError::Storage(storage) => matches!(
                storage,
                StorageError::UniqueViolation { .. }
                    | StorageError::ForeignKeyViolation { .. }
                    | StorageError::ConstraintViolation { .. }
                    | StorageError::NotFound
            ),
            _ => true,
        }
    }
}
