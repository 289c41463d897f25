//! `SubmitForm`: one submission becomes a contact of a lead of an account, with its consent,
//! its visitor history and a form-submitted activity, all in one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::{capture::v1 as pb, common::v1 as common, events::v1::ConsentChannel};
use leadflow_storage::IdempotencyKey;

use super::{CaptureApi, Command};
use crate::{
    consent::{self, ConsentLinks, Grant},
    error::CaptureError,
    forms::Form,
    intake::{self, Capture, CaptureEvent},
    profiling::{KnownProfile, fields_to_ask},
    records::{ActivityRow, CaptureUnit},
    submission::Submission,
};

/// Who recorded consent given on a form.
const FORM_RECORDER: &str = "capture-form";

pub(super) async fn submit_form(
    api: &CaptureApi,
    request: pb::SubmitFormRequest,
) -> Result<pb::SubmitFormResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let form_id = validate::uuid(&mut violations, "form_id", &request.form_id);
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    violations.into_result()?;
    let form_id = form_id.expect("no violations means the id parsed");
    let form = api
        .forms
        .get_form(form_id)
        .await?
        .ok_or(CaptureError::FormNotFound(form_id))?;
    if form.definition.state == pb::FormState::Archived {
        return Err(CaptureError::FormArchived(form_id));
    }
    let submission = Submission::parse(&form, &request, api.now())?;
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    let answer = api
        .run(
            &key,
            &SubmitForm {
                form: &form,
                submission: &submission,
                links: &api.links,
            },
        )
        .await?;
    tracing::info!(
        contact_id = %answer.contact_id,
        lead_id = %answer.lead_id,
        contact_outcome = answer.contact_outcome().as_str_name(),
        "form submitted"
    );
    Ok(answer)
}

struct SubmitForm<'a> {
    form: &'a Form,
    submission: &'a Submission,
    links: &'a ConsentLinks,
}

#[async_trait]
impl Command for SubmitForm<'_> {
    type Answer = pb::SubmitFormResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::SubmitFormResponse, CaptureError> {
        let (form, submission) = (self.form, self.submission);
        let definition = &form.definition;
        let grants_consent =
            submission.consent_given && !definition.consent_wording_version.is_empty();
        let mut captured = intake::capture(
            unit,
            &Capture {
                contact: &submission.contact,
                lead: &submission.lead,
                custom_fields: &submission.custom_fields,
                company: submission.company.as_ref(),
                source: &submission.source,
                attribution: submission.attribution.as_ref(),
                signer: self.links.signer(),
                new_consent: grants_consent,
            },
            now,
        )
        .await?;
        // What the contact answered before counts: progressive profiling asks it only once.
        submission
            .missing_required(
                form,
                &captured.contact.profile,
                &captured.lead.profile,
                &captured.contact.custom_fields,
            )
            .into_result()?;

        let mut merged_visitor_ids = Vec::new();
        if let Some(visitor_id) = &submission.visitor_id
            && intake::merge_visitor(unit, visitor_id, &captured.contact, now)
                .await?
                .is_some()
        {
            merged_visitor_ids.push(visitor_id.clone());
        }

        let mut confirmation_sent = false;
        if grants_consent {
            let granted = consent::grant(
                unit,
                &captured.contact,
                Grant {
                    purpose: definition.consent_purpose.clone(),
                    wording: definition.consent_wording.clone(),
                    wording_version: definition.consent_wording_version.clone(),
                    form_id: Some(form.form_id),
                    channel: ConsentChannel::Form,
                    client: submission.client.clone(),
                    occurred_at: submission.submitted_at,
                    recorded_by: FORM_RECORDER.to_owned(),
                    note: String::new(),
                    double_opt_in: definition.double_opt_in,
                },
                self.links,
                now,
            )
            .await?;
            confirmation_sent = granted.confirmation_sent;
        }

        let consent_state = intake::publish_captured(
            unit,
            CaptureEvent {
                captured: &captured,
                form_id: Some(form.form_id),
                product: &definition.product,
                source: &submission.source,
                attribution: submission.attribution.as_ref(),
                merged_visitor_ids: merged_visitor_ids.clone(),
            },
            &definition.consent_purpose,
            now,
        )
        .await?;

        let activity = ActivityRow {
            contact_id: captured.contact.contact_id.to_string(),
            lead_id: captured.lead.lead_id.to_string(),
            visitor_id: submission.visitor_id.clone().unwrap_or_default(),
            r#type: common::ActivityType::FormSubmitted as i32,
            product: definition.product.clone(),
            occurred_at: Some(to_timestamp(submission.submitted_at)),
            source: submission.source.clone(),
            attribution: submission.attribution.clone(),
            form_id: form.form_id.to_string(),
            attributes: submission
                .client
                .as_ref()
                .filter(|client| !client.page_url.is_empty())
                .map(|client| [("page_url".to_owned(), client.page_url.clone())].into())
                .unwrap_or_default(),
            ..ActivityRow::default()
        };
        let activity =
            intake::record_activity(unit, activity, Some(&mut captured.contact), now).await?;

        let next_fields = fields_to_ask(
            form,
            Some(KnownProfile {
                contact: &captured.contact.profile,
                lead: &captured.lead.profile,
                custom_fields: &captured.contact.custom_fields,
            }),
        );
        Ok(pb::SubmitFormResponse {
            contact_id: captured.contact.contact_id.to_string(),
            lead_id: captured.lead.lead_id.to_string(),
            account_id: captured
                .account
                .as_ref()
                .map(|account| account.account_id.to_string())
                .unwrap_or_default(),
            contact_outcome: captured.contact_outcome as i32,
            lead_outcome: captured.lead_outcome as i32,
            account_outcome: captured.account_outcome as i32,
            consent_state: consent_state as i32,
            confirmation_sent,
            next_fields: next_fields.iter().map(Into::into).collect(),
            activity_id: activity.activity_id,
            merged_visitor_ids,
        })
    }
}
