//! From errors to gRPC status codes. Invalid input becomes `INVALID_ARGUMENT` with
//! `google.rpc.BadRequest` field violations; storage errors are translated once here.
//! The client gets a clean message, the log gets the cause.

use std::fmt;

use leadflow_storage::StorageError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The fields of a request that failed validation, each with what is wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldViolations {
    violations: Vec<(String, String)>,
}

impl FieldViolations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One violation of `field` (a path such as `form.fields[2].name`).
    pub fn single(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut violations = Self::new();
        violations.add(field, description);
        violations
    }

    /// Records that `field` is wrong, and why.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push((field.into(), description.into()));
    }

    /// Adds every violation of `other`.
    pub fn extend(&mut self, other: FieldViolations) {
        self.violations.extend(other.violations);
    }

    /// Whether no field was found wrong.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` when no field was found wrong, else these violations as the error.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The violations as (field, description) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.violations
            .iter()
            .map(|(field, description)| (field.as_str(), description.as_str()))
    }

    /// `INVALID_ARGUMENT` whose message names every field and whose details carry a
    /// `google.rpc.BadRequest` with one field violation each.
    pub fn to_status(&self) -> Status {
        let details = ErrorDetails::with_bad_request(
            self.violations
                .iter()
                .map(|(field, description)| FieldViolation::new(field, description))
                .collect::<Vec<_>>(),
        );
        Status::with_error_details(Code::InvalidArgument, self.to_string(), details)
    }

    /// `FAILED_PRECONDITION` for fields that are well formed but refer to something that
    /// does not exist: each field is named as the subject of a `google.rpc.PreconditionFailure`
    /// violation of `violation_type`, and as a `google.rpc.BadRequest` field violation too,
    /// so clients that read either find it.
    pub fn to_precondition_status(&self, violation_type: &str) -> Status {
        let mut details = ErrorDetails::with_bad_request(
            self.violations
                .iter()
                .map(|(field, description)| FieldViolation::new(field, description))
                .collect::<Vec<_>>(),
        );
        for (field, description) in &self.violations {
            details.add_precondition_failure_violation(violation_type, field, description);
        }
        let fields: Vec<String> = self
            .violations
            .iter()
            .map(|(field, description)| format!("{field}: {description}"))
            .collect();
        let message = format!("failed precondition: {}", fields.join("; "));
        Status::with_error_details(Code::FailedPrecondition, message, details)
    }
}

impl fmt::Display for FieldViolations {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("invalid request")?;
        for (index, (field, description)) in self.violations.iter().enumerate() {
            let separator = if index == 0 { ": " } else { "; " };
            write!(formatter, "{separator}{field}: {description}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldViolations {}

/// `ALREADY_EXISTS` for an idempotency key reused with a different request.
pub fn idempotency_mismatch_status() -> Status {
    let details = ErrorDetails::with_bad_request_violation(
        "idempotency_key",
        "was already used with a different request",
    );
    Status::with_error_details(
        Code::AlreadyExists,
        "idempotency_key was already used with a different request",
        details,
    )
}

/// The status for a storage failure. Causes are logged, never sent to the client.
pub fn storage_status(error: &StorageError) -> Status {
    match error {
        StorageError::UniqueViolation { constraint } => {
            tracing::debug!(constraint, "unique violation");
            Status::already_exists("a record with the same identity already exists")
        }
        StorageError::ForeignKeyViolation { constraint } => {
            tracing::debug!(constraint, "foreign key violation");
            Status::failed_precondition("a record this one refers to does not exist")
        }
        StorageError::ConstraintViolation { constraint } => {
            tracing::warn!(
                constraint,
                "constraint violation that validation should have caught"
            );
            Status::invalid_argument("the request violates a data constraint")
        }
        StorageError::NotFound => Status::not_found("record not found"),
        StorageError::Conflict(cause) => {
            tracing::info!(error = %cause, "transaction conflict");
            Status::aborted("the request conflicted with a concurrent one; retry")
        }
        StorageError::DatabaseUnavailable(cause) => {
            tracing::warn!(error = %cause, "database unavailable");
            Status::unavailable("the database is unavailable; retry later")
        }
        StorageError::RedisUnavailable(cause) => {
            tracing::warn!(error = %cause, "redis unavailable");
            Status::unavailable("the cache is unavailable; retry later")
        }
        StorageError::Database(cause) => {
            tracing::error!(error = %cause, "database error");
            Status::internal("internal error")
        }
        StorageError::Corrupt(detail) => {
            tracing::error!(detail, "corrupt stored value");
            Status::internal("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_name_every_field_in_message_and_details() {
        let mut violations = FieldViolations::new();
        violations.add("form.name", "must not be empty");
        violations.add("form.fields[1].name", "is repeated");
        let status = violations.to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid request: form.name: must not be empty; form.fields[1].name: is repeated"
        );
        let bad_request = status
            .get_details_bad_request()
            .expect("bad request details");
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|violation| violation.field.as_str())
            .collect();
        assert_eq!(fields, ["form.name", "form.fields[1].name"]);
    }

    #[test]
    fn precondition_failures_name_every_field() {
        let status = FieldViolations::single("version.offer_template_id", "does not exist")
            .to_precondition_status("TEMPLATE_MISSING");
        assert_eq!(status.code(), Code::FailedPrecondition);
        let failure = status
            .get_details_precondition_failure()
            .expect("precondition failure details");
        assert_eq!(failure.violations[0].subject, "version.offer_template_id");
        assert_eq!(failure.violations[0].r#type, "TEMPLATE_MISSING");
        let bad_request = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(
            bad_request.field_violations[0].field,
            "version.offer_template_id"
        );
    }

    #[test]
    fn unique_violation_is_already_exists() {
        let status = storage_status(&StorageError::UniqueViolation {
            constraint: "forms_name_key".into(),
        });
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(
            !status.message().contains("forms_name_key"),
            "constraint names stay in the log"
        );
    }
}
