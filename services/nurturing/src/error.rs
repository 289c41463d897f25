//! Nurturing's errors and the one place they become gRPC status codes.

use leadflow_platform::{FieldViolations, error::idempotency_mismatch_status, storage_status};
use leadflow_storage::StorageError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
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
    /// No mail template has this id.
    #[error("mail template {0} not found")]
    TemplateNotFound(Uuid),
    /// No track has this id.
    #[error("track {0} not found")]
    TrackNotFound(Uuid),
    /// The track exists but has no such version.
    #[error("track {track_id} has no version {version}")]
    TrackVersionNotFound { track_id: Uuid, version: u32 },
    /// Another track of the product already has this name.
    #[error("product {product} already has a track named {name:?}")]
    TrackNameTaken { product: String, name: String },
    /// A version was published since the caller read the track.
    #[error("track {track_id} is at version {latest}, not {expected}: re-read the track and retry")]
    StaleLatestVersion {
        track_id: Uuid,
        expected: u32,
        latest: u32,
    },
    /// A track version refers to templates that do not exist, each named by its field
    /// path (within the version until [`NurturingError::within`] puts it in its request).
    #[error("a track version refers to templates that do not exist")]
    TemplatesMissing(Vec<(String, Uuid)>),
    /// Nurturing has never heard of this contact.
    #[error("contact {0} is unknown to nurturing")]
    ContactNotFound(Uuid),
    /// No enrollment has this id.
    #[error("enrollment {0} not found")]
    EnrollmentNotFound(Uuid),
    /// The contact may not be nurtured: no confirmed opt-in, or no buyer role.
    #[error("contact {contact_id} cannot be enrolled: {reason}")]
    NotEnrollable {
        contact_id: Uuid,
        reason: &'static str,
    },
    /// The contact already has an open enrollment in the track.
    #[error("contact {contact_id} already has an open enrollment in track {track_id}")]
    AlreadyEnrolled { contact_id: Uuid, track_id: Uuid },
    /// The enrollment has ended or cannot take this change in its state.
    #[error("enrollment {enrollment_id} is {state}: {reason}")]
    EnrollmentClosed {
        enrollment_id: Uuid,
        state: &'static str,
        reason: &'static str,
    },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The copies of an erased contact's mails could not be deleted.
    #[error("the mails of the contact could not be deleted: {0}")]
    MailsNotForgotten(#[source] std::io::Error),
    /// The records could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl NurturingError {
    /// The error with the field paths it names put under the request field `field`, e.g.
    /// a version's `offer_template_id` under `first_version`.
    pub fn within(self, field: &str) -> Self {
        match self {
            Self::TemplatesMissing(references) => Self::TemplatesMissing(
                references
                    .into_iter()
                    .map(|(path, template_id)| (format!("{field}.{path}"), template_id))
                    .collect(),
            ),
            other => other,
        }
    }
}

impl From<NurturingError> for Status {
    fn from(error: NurturingError) -> Self {
        match &error {
            NurturingError::InvalidRequest(violations) => violations.to_status(),
            NurturingError::ContentItemNotFound(_) => Status::not_found(error.to_string()),
            NurturingError::ContentItemRetired(_) => Status::failed_precondition(error.to_string()),
            NurturingError::TemplateNotFound(_)
            | NurturingError::TrackNotFound(_)
            | NurturingError::TrackVersionNotFound { .. }
            | NurturingError::ContactNotFound(_)
            | NurturingError::EnrollmentNotFound(_) => Status::not_found(error.to_string()),
            NurturingError::NotEnrollable { .. } | NurturingError::EnrollmentClosed { .. } => {
                Status::failed_precondition(error.to_string())
            }
            NurturingError::AlreadyEnrolled { .. } => Status::already_exists(error.to_string()),
            NurturingError::TrackNameTaken { .. } => {
                let details = ErrorDetails::with_bad_request_violation(
                    "track.name",
                    "is the name of another track of the product",
                );
                Status::with_error_details(Code::AlreadyExists, error.to_string(), details)
            }
            NurturingError::StaleLatestVersion { .. } => Status::aborted(error.to_string()),
            NurturingError::TemplatesMissing(references) => {
                let mut violations = FieldViolations::new();
                for (field, template_id) in references {
                    violations.add(
                        field,
                        format!("names the template {template_id}, which does not exist"),
                    );
                }
                violations.to_precondition_status("TEMPLATE_MISSING")
            }
            NurturingError::IdempotencyKeyReused => idempotency_mismatch_status(),
            NurturingError::MailsNotForgotten(source) => {
                tracing::error!(%source, "mails of an erased contact not deleted");
                Status::internal("the mails of the contact could not be deleted; retry the call")
            }
            NurturingError::Storage(storage) => storage_status(storage),
        }
    }
}
