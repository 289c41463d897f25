//! A contact's data-protection rights in nurturing: the export of everything nurturing holds
//! about it, and its erasure, which the EraseContactData call and capture's ContactErased
//! event share.

use leadflow_bus::{Applied, Delivery, HandlerError};
use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::{events::v1 as events, nurturing::v1 as pb};
use uuid::Uuid;

use crate::{
    api::NurturingApi,
    engine::{Nurturing, halt},
    enrollment_api::{key_of, policy_pb},
    error::NurturingError,
    records::{ContactErasure, EnrollmentFilter, NurtureUnit},
};

/// Why the enrollments of an erased contact end.
const ERASED: &str = "contact erased";

impl Nurturing {
    /// Erases the contact in `unit`: its open enrollments are stopped (a claimed mail is
    /// cancelled, so it never goes out), then its records are erased (see
    /// [`NurtureUnit::erase_contact`]) and the copies of its mails deleted. The copies go
    /// before the unit commits: should the commit fail, the records still name the sends
    /// and a retry finds them again; the other way round, a failure would leave mails of a
    /// contact nurturing no longer knows.
    pub(crate) async fn erase_contact(
        &self,
        unit: &mut dyn NurtureUnit,
        contact_id: Uuid,
    ) -> Result<ContactErasure, NurturingError> {
        let now = self.clock.now();
        for mut enrollment in unit.enrollments_of_contact(contact_id).await? {
            if enrollment.is_open() {
                halt(
                    unit,
                    &mut enrollment,
                    pb::EnrollmentState::Stopped,
                    ERASED,
                    now,
                )
                .await?;
            }
        }
        let erasure = unit.erase_contact(contact_id).await?;
        self.mailer
            .transport
            .forget(&erasure.anonymised_sends)
            .await
            .map_err(NurturingError::MailsNotForgotten)?;
        Ok(erasure)
    }

    /// Applies capture's ContactErased; a redelivery finds it applied and erases nothing.
    pub(crate) async fn contact_erased(
        &self,
        delivery: &Delivery,
        erased: &events::ContactErased,
    ) -> Result<Applied, HandlerError> {
        let contact_id = Uuid::parse_str(&erased.contact_id).map_err(|_| {
            HandlerError(format!("contact_id {:?} is not a UUID", erased.contact_id))
        })?;
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        if recorded.is_first() {
            let erasure = self
                .erase_contact(&mut *unit, contact_id)
                .await
                .map_err(|error| HandlerError(error.to_string()))?;
            tracing::info!(%contact_id, enrollments = erasure.deleted_enrollments, sends = erasure.anonymised_sends.len(), "contact erased from nurturing");
        }
        unit.commit().await?;
        Ok(recorded.into_applied())
    }
}

impl NurturingApi {
    pub(crate) async fn handle_export_contact_data(
        &self,
        request: pb::ExportContactDataRequest,
    ) -> Result<pb::ExportContactDataResponse, NurturingError> {
        let contact_id = validate::required_uuid("contact_id", &request.contact_id)?;
        let mut unit = self.nurturing.store.read().await?;
        let filter = EnrollmentFilter {
            contact_id: Some(contact_id),
            ..EnrollmentFilter::default()
        };
        // The listing is newest first; the export, like the sends, oldest first.
        let mut enrollments = unit.list_enrollments(&filter, None, u32::MAX).await?;
        enrollments.reverse();
        let sends = unit.sends_of_contact(contact_id).await?;
        let contact = unit.contact(contact_id).await?;
        Ok(pb::ExportContactDataResponse {
            enrollments: enrollments.iter().map(Into::into).collect(),
            sends: sends.iter().map(Into::into).collect(),
            frequency_override: contact
                .and_then(|contact| contact.frequency)
                .map(|(cap, set)| policy_pb(&cap, Some(set))),
        })
    }

    pub(crate) async fn handle_erase_contact_data(
        &self,
        request: pb::EraseContactDataRequest,
    ) -> Result<pb::EraseContactDataResponse, NurturingError> {
        let mut violations = FieldViolations::new();
        let contact_id = validate::uuid(&mut violations, "contact_id", &request.contact_id);
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear()
        });
        violations.into_result()?;
        let contact_id = contact_id.expect("no violations means a contact id");
        let mut unit = match self.begin::<pb::EraseContactDataResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(answer),
        };
        let erasure = self.nurturing.erase_contact(&mut *unit, contact_id).await?;
        let answer = pb::EraseContactDataResponse {
            erased_enrollment_count: u32::try_from(erasure.deleted_enrollments).unwrap_or(u32::MAX),
            anonymised_send_count: u32::try_from(erasure.anonymised_sends.len())
                .unwrap_or(u32::MAX),
        };
        Self::finish(unit, &key, &answer).await?;
        tracing::info!(%contact_id, enrollments = erasure.deleted_enrollments, sends = erasure.anonymised_sends.len(), "contact erased from nurturing");
        Ok(answer)
    }
}
