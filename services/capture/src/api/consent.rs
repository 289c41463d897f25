//! Consent handlers: record consent given outside a form, confirm a double opt-in by its
//! link, withdraw (unsubscribe), and show the current state with its full evidence.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::{
    capture::v1::{
        self as pb, get_consent_request, record_consent_request, withdraw_consent_request,
    },
    events::v1::ConsentChannel,
};
use leadflow_storage::IdempotencyKey;
use uuid::Uuid;

use super::{CaptureApi, Command, ContactRef};
use crate::{
    consent::{self, ConsentLinks, Grant, Withdrawal},
    error::CaptureError,
    forms::DEFAULT_CONSENT_PURPOSE,
    links::{LinkError, LinkPurpose},
    records::CaptureUnit,
    submission::past_time,
};

/// Who recorded a consent change made through the API.
const API_RECORDER: &str = "api";
/// The longest consent wording, in characters.
const MAX_WORDING_CHARS: usize = 10_000;
/// The longest note, in characters.
pub(super) const MAX_NOTE_CHARS: usize = 1_000;

/// A purpose: `nurture-email` when blank.
fn purpose(violations: &mut FieldViolations, value: &str) -> String {
    match value.trim() {
        "" => DEFAULT_CONSENT_PURPOSE.to_owned(),
        purpose => validate::identifier(violations, "purpose", purpose),
    }
}

/// A channel that must be given.
fn channel(violations: &mut FieldViolations, value: i32) -> ConsentChannel {
    match ConsentChannel::try_from(value) {
        Ok(ConsentChannel::Unspecified) => {
            violations.add("channel", "is required");
            ConsentChannel::Unspecified
        }
        Ok(channel) => channel,
        Err(_) => {
            violations.add("channel", "must be a known consent channel");
            ConsentChannel::Unspecified
        }
    }
}

/// Why a link token is refused, for the `token` field.
fn token_problem(error: LinkError) -> CaptureError {
    match error {
        LinkError::Expired => CaptureError::LinkNoLongerValid("the link has expired"),
        other => FieldViolations::single("token", other.to_string()).into(),
    }
}

struct RecordConsent<'a> {
    contact: ContactRef,
    grant: Grant,
    links: &'a ConsentLinks,
}

#[async_trait]
impl Command for RecordConsent<'_> {
    type Answer = pb::RecordConsentResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::RecordConsentResponse, CaptureError> {
        let contact = self.contact.find(unit).await?;
        let granted = consent::grant(unit, &contact, self.grant.clone(), self.links, now).await?;
        Ok(pb::RecordConsentResponse {
            consent: Some(granted.record),
            confirmation_sent: granted.confirmation_sent,
        })
    }
}

pub(super) async fn record_consent(
    api: &CaptureApi,
    request: pb::RecordConsentRequest,
) -> Result<pb::RecordConsentResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let contact = ContactRef::parse(
        &mut violations,
        "contact",
        match &request.contact {
            Some(record_consent_request::Contact::ContactId(id)) => Some(id),
            _ => None,
        },
        match &request.contact {
            Some(record_consent_request::Contact::Email(email)) => Some(email),
            _ => None,
        },
    );
    let purpose = purpose(&mut violations, &request.purpose);
    let wording_version = validate::required_text(
        &mut violations,
        "wording_version",
        &request.wording_version,
        64,
    );
    let wording = validate::optional_text(
        &mut violations,
        "wording",
        &request.wording,
        MAX_WORDING_CHARS,
    );
    let form_id = match request.form_id.trim() {
        "" => None,
        form_id => validate::uuid(&mut violations, "form_id", form_id),
    };
    let channel = channel(&mut violations, request.channel);
    let note = validate::optional_text(&mut violations, "note", &request.note, MAX_NOTE_CHARS);
    let occurred_at = past_time(
        &mut violations,
        "given_at",
        request.given_at.as_ref(),
        api.now(),
    );
    violations.into_result()?;
    if let Some(form_id) = form_id
        && api.forms.get_form(form_id).await?.is_none()
    {
        return Err(CaptureError::FormNotFound(form_id));
    }
    let command = RecordConsent {
        contact: contact.expect("no violations means the contact parsed"),
        grant: Grant {
            purpose,
            wording,
            wording_version,
            form_id,
            channel,
            client: request.client.clone(),
            occurred_at,
            recorded_by: API_RECORDER.to_owned(),
            note,
            double_opt_in: request.double_opt_in,
        },
        links: &api.links,
    };
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    api.run(&key, &command).await
}

struct Confirm {
    contact_id: Uuid,
    grant_id: Uuid,
    client: Option<pb::ClientInfo>,
}

#[async_trait]
impl Command for Confirm {
    type Answer = pb::ConfirmDoubleOptInResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::ConfirmDoubleOptInResponse, CaptureError> {
        let contact = ContactRef::Id(self.contact_id).find(unit).await?;
        let record =
            consent::confirm(unit, &contact, self.grant_id, self.client.clone(), now).await?;
        Ok(pb::ConfirmDoubleOptInResponse {
            consent: Some(record),
        })
    }
}

pub(super) async fn confirm_double_opt_in(
    api: &CaptureApi,
    request: pb::ConfirmDoubleOptInRequest,
) -> Result<pb::ConfirmDoubleOptInResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    if request.token.is_empty() {
        violations.add("token", "is required");
    }
    violations.into_result()?;
    let claims = api
        .links
        .signer()
        .verify(&request.token, LinkPurpose::ConfirmOptIn, api.now())
        .map_err(token_problem)?;
    let command = Confirm {
        contact_id: claims.contact_id(),
        grant_id: claims.subject_id(),
        client: request.client.clone(),
    };
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    let answer = api.run(&key, &command).await?;
    tracing::info!(contact_id = %claims.contact_id(), "double opt-in confirmed");
    Ok(answer)
}

struct Withdraw {
    contact: ContactRef,
    withdrawal: Withdrawal,
}

#[async_trait]
impl Command for Withdraw {
    type Answer = pb::WithdrawConsentResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::WithdrawConsentResponse, CaptureError> {
        let contact = self.contact.find(unit).await?;
        let consents = consent::withdraw(unit, &contact, self.withdrawal.clone(), now).await?;
        Ok(pb::WithdrawConsentResponse { consents })
    }
}

pub(super) async fn withdraw_consent(
    api: &CaptureApi,
    request: pb::WithdrawConsentRequest,
) -> Result<pb::WithdrawConsentResponse, CaptureError> {
    use withdraw_consent_request::Subject;

    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let mut send_id = String::new();
    let mut token_purpose = None;
    let contact = match &request.subject {
        Some(Subject::UnsubscribeToken(token)) => {
            match api
                .links
                .signer()
                .verify(token, LinkPurpose::Unsubscribe, api.now())
            {
                Ok(claims) => {
                    if !claims.subject_id().is_nil() {
                        send_id = claims.subject_id().to_string();
                    }
                    token_purpose = Some(claims.consent_purpose().to_owned());
                    Some(ContactRef::Id(claims.contact_id()))
                }
                Err(error) => {
                    violations.add("unsubscribe_token", error.to_string());
                    None
                }
            }
        }
        Some(Subject::ContactId(id)) => {
            ContactRef::parse(&mut violations, "subject", Some(id), None)
        }
        Some(Subject::Email(email)) => {
            ContactRef::parse(&mut violations, "subject", None, Some(email))
        }
        None => {
            violations.add(
                "subject",
                "is required: give contact_id, email or unsubscribe_token",
            );
            None
        }
    };
    // An explicit purpose wins; a token names its own, and empty means every purpose.
    let purpose = match (request.purpose.trim(), token_purpose) {
        ("", Some(token_purpose)) if token_purpose.is_empty() => None,
        ("", Some(token_purpose)) => Some(token_purpose),
        ("", None) => None,
        (purpose, _) => Some(validate::identifier(&mut violations, "purpose", purpose)),
    };
    let channel = match (ConsentChannel::try_from(request.channel), &request.subject) {
        (Ok(ConsentChannel::Unspecified), Some(Subject::UnsubscribeToken(_))) => {
            ConsentChannel::UnsubscribeLink
        }
        (Ok(ConsentChannel::Unspecified), _) => ConsentChannel::Api,
        (Ok(channel), _) => channel,
        (Err(_), _) => {
            violations.add("channel", "must be a known consent channel");
            ConsentChannel::Api
        }
    };
    let note = validate::optional_text(&mut violations, "note", &request.note, MAX_NOTE_CHARS);
    violations.into_result()?;
    let recorded_by = match channel {
        ConsentChannel::UnsubscribeLink | ConsentChannel::ListUnsubscribe => "unsubscribe-link",
        _ => API_RECORDER,
    };
    let command = Withdraw {
        contact: contact.expect("no violations means the subject parsed"),
        withdrawal: Withdrawal {
            purpose,
            channel,
            client: request.client.clone(),
            recorded_by: recorded_by.to_owned(),
            send_id,
            note,
        },
    };
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    let answer = api.run(&key, &command).await?;
    tracing::info!(withdrawn = answer.consents.len(), "consent withdrawn");
    Ok(answer)
}

pub(super) async fn get_consent(
    api: &CaptureApi,
    request: pb::GetConsentRequest,
) -> Result<pb::GetConsentResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let contact = ContactRef::parse(
        &mut violations,
        "contact",
        match &request.contact {
            Some(get_consent_request::Contact::ContactId(id)) => Some(id),
            _ => None,
        },
        match &request.contact {
            Some(get_consent_request::Contact::Email(email)) => Some(email),
            _ => None,
        },
    );
    let purpose = match request.purpose.trim() {
        "" => None,
        purpose => Some(validate::identifier(&mut violations, "purpose", purpose)),
    };
    violations.into_result()?;
    let mut unit = api.read().await?;
    let contact = contact
        .expect("no violations means the contact parsed")
        .find(unit.as_mut())
        .await?;
    let history: Vec<pb::ConsentRecord> = unit
        .consents_of_contact(contact.contact_id)
        .await?
        .into_iter()
        .filter(|record| {
            purpose
                .as_deref()
                .is_none_or(|purpose| record.purpose == purpose)
        })
        .collect();
    Ok(pb::GetConsentResponse {
        current: consent::current(&history),
        history,
    })
}
