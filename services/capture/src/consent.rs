//! Consent: every grant, confirmation and withdrawal is a record with its evidence, written
//! once and never changed, so the current state of a purpose is its latest record. A grant
//! on a double opt-in form waits for the person to confirm it through a signed link, mailed
//! in the same transaction; a withdrawal takes effect in the transaction that records it.

use chrono::{DateTime, Duration, Utc};
use leadflow_platform::time::to_timestamp;
use leadflow_proto::{
    capture::v1 as pb,
    events::v1::{ConsentChanged, ConsentChannel, ConsentState, event_envelope::Payload},
};
use uuid::Uuid;

use crate::{
    error::CaptureError,
    links::{LinkClaims, LinkSigner, LinkUrls},
    records::{CaptureUnit, ConsentRow, ContactRow, OutboundMail},
};

// Defined beside the link signer so that other services can mail links to these routes.
pub use leadflow_platform::links::{CONFIRM_PATH, UNSUBSCRIBE_PATH};

/// The kind of the mail that asks to confirm a double opt-in.
pub const CONFIRMATION_MAIL: &str = "double-opt-in-confirmation";
/// The producer name capture's events carry.
pub(crate) const PRODUCER: &str = "capture";

/// Makes the signed links capture mails and verifies them when they come back.
#[derive(Debug, Clone)]
pub struct ConsentLinks {
    urls: LinkUrls,
    confirmation_valid_for: Duration,
}

impl ConsentLinks {
    /// Links under `public_url` (the ingress as the internet reaches it), signed by
    /// `signer`; a confirmation link stays valid for `confirmation_valid_for`.
    pub fn new(signer: LinkSigner, public_url: &str, confirmation_valid_for: Duration) -> Self {
        Self {
            urls: LinkUrls::new(signer, public_url),
            confirmation_valid_for,
        }
    }

    /// The signer, to verify tokens that come back.
    pub fn signer(&self) -> &LinkSigner {
        self.urls.signer()
    }

    /// The confirmation link of the grant `consent`.
    fn confirmation_link(
        &self,
        consent: &ConsentRow,
        contact_id: Uuid,
        now: DateTime<Utc>,
    ) -> String {
        let consent_id = Uuid::parse_str(&consent.consent_id).unwrap_or_default();
        let claims = LinkClaims::confirm_opt_in(
            contact_id,
            consent_id,
            &consent.purpose,
            now + self.confirmation_valid_for,
        );
        self.urls.url(CONFIRM_PATH, &claims)
    }
}

/// Whether a state lets mail for its purpose go out or wait for a confirmation.
fn is_given(state: ConsentState) -> bool {
    matches!(state, ConsentState::Granted | ConsentState::Confirmed)
}

/// The latest record of `purpose` among a contact's records in written order.
pub(crate) fn latest<'a>(records: &'a [ConsentRow], purpose: &str) -> Option<&'a ConsentRow> {
    records
        .iter()
        .rev()
        .find(|record| record.purpose == purpose)
}

/// The current state of `purpose`.
pub(crate) fn state_of(records: &[ConsentRow], purpose: &str) -> ConsentState {
    latest(records, purpose)
        .map(|record| record.state())
        .unwrap_or(ConsentState::Unspecified)
}

/// The current consent per purpose, in the order purposes were first recorded.
pub(crate) fn current(records: &[ConsentRow]) -> Vec<pb::ConsentStatus> {
    let mut purposes: Vec<&str> = Vec::new();
    for record in records {
        if !purposes.contains(&record.purpose.as_str()) {
            purposes.push(&record.purpose);
        }
    }
    purposes
        .into_iter()
        .filter_map(|purpose| latest(records, purpose))
        .map(|record| pb::ConsentStatus {
            purpose: record.purpose.clone(),
            state: record.state,
            wording_version: if record.state() == ConsentState::Withdrawn {
                String::new()
            } else {
                record.wording_version.clone()
            },
            consent_id: record.consent_id.clone(),
            update_time: record.occurred_at,
        })
        .collect()
}

/// A consent given, with its evidence.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub purpose: String,
    pub wording: String,
    pub wording_version: String,
    pub form_id: Option<Uuid>,
    pub channel: ConsentChannel,
    pub client: Option<pb::ClientInfo>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_by: String,
    pub note: String,
    /// Whether the person must confirm it by the mailed link before mail goes out.
    pub double_opt_in: bool,
}

/// What recording a grant came to.
#[derive(Debug, Clone)]
pub(crate) struct Granted {
    /// The record written, or the confirmation already on record.
    pub record: ConsentRow,
    /// Whether a confirmation mail was queued.
    pub confirmation_sent: bool,
}

/// Records `grant` for `contact`. A confirmed consent stays confirmed: a person who ticks
/// the box again is not asked to confirm again. Otherwise a double opt-in grant is recorded
/// as granted and a confirmation mail queued (again, when an earlier one was not used).
pub(crate) async fn grant(
    unit: &mut dyn CaptureUnit,
    contact: &ContactRow,
    grant: Grant,
    links: &ConsentLinks,
    now: DateTime<Utc>,
) -> Result<Granted, CaptureError> {
    let records = unit.consents_of_contact(contact.contact_id).await?;
    let previous = latest(&records, &grant.purpose);
    if let Some(confirmed) = previous.filter(|record| record.state() == ConsentState::Confirmed) {
        return Ok(Granted {
            record: confirmed.clone(),
            confirmation_sent: false,
        });
    }
    let state = if grant.double_opt_in {
        ConsentState::Granted
    } else {
        ConsentState::Confirmed
    };
    let record = ConsentRow {
        consent_id: Uuid::now_v7().to_string(),
        contact_id: contact.contact_id.to_string(),
        purpose: grant.purpose,
        state: state as i32,
        previous_state: previous.map_or(ConsentState::Unspecified as i32, |record| record.state),
        wording_version: grant.wording_version,
        wording: grant.wording,
        form_id: grant.form_id.map(|id| id.to_string()).unwrap_or_default(),
        channel: grant.channel as i32,
        client: grant.client,
        occurred_at: Some(to_timestamp(grant.occurred_at)),
        recorded_at: Some(to_timestamp(now)),
        recorded_by: grant.recorded_by,
        send_id: String::new(),
        confirms_consent_id: String::new(),
        note: grant.note,
    };
    write(unit, contact, &record, now).await?;
    if state == ConsentState::Granted {
        let link = links.confirmation_link(&record, contact.contact_id, now);
        unit.queue_mail(&confirmation_mail(contact, link, now))
            .await?;
    }
    Ok(Granted {
        confirmation_sent: state == ConsentState::Granted,
        record,
    })
}

/// The mail that asks `contact` to confirm its opt-in through `link`.
fn confirmation_mail(contact: &ContactRow, link: String, now: DateTime<Utc>) -> OutboundMail {
    let greeting = match contact.profile.first_name.trim() {
        "" => "Hello,".to_owned(),
        name => format!("Hello {name},"),
    };
    OutboundMail {
        mail_id: Uuid::now_v7(),
        contact_id: contact.contact_id,
        kind: CONFIRMATION_MAIL.to_owned(),
        recipient: contact.profile.email.clone(),
        subject: "Please confirm your subscription".to_owned(),
        body: format!(
            "{greeting}\n\nplease confirm that you want to hear from us by opening this link:\n\n\
             {link}\n\nIf you did not ask for this, ignore this mail and nothing will be sent.\n"
        ),
        link,
        create_time: now,
    }
}

/// Confirms the grant a confirmation link names. Confirming twice returns the first
/// confirmation; a grant withdrawn after the link was sent cannot be confirmed any more.
pub(crate) async fn confirm(
    unit: &mut dyn CaptureUnit,
    contact: &ContactRow,
    grant_id: Uuid,
    client: Option<pb::ClientInfo>,
    now: DateTime<Utc>,
) -> Result<ConsentRow, CaptureError> {
    let records = unit.consents_of_contact(contact.contact_id).await?;
    let Some(position) = records
        .iter()
        .position(|record| record.consent_id == grant_id.to_string())
    else {
        return Err(CaptureError::LinkNoLongerValid(
            "the consent this link confirms is not on record",
        ));
    };
    let granted = &records[position];
    let later = &records[position + 1..];
    let same_purpose = |record: &&ConsentRow| record.purpose == granted.purpose;
    if let Some(confirmed) = later
        .iter()
        .filter(same_purpose)
        .find(|record| record.confirms_consent_id == granted.consent_id)
    {
        return Ok(confirmed.clone());
    }
    if later
        .iter()
        .filter(same_purpose)
        .any(|record| record.state() == ConsentState::Withdrawn)
    {
        return Err(CaptureError::LinkNoLongerValid(
            "the consent was withdrawn after this link was sent",
        ));
    }
    if granted.state() != ConsentState::Granted {
        return Err(CaptureError::LinkNoLongerValid(
            "this link does not confirm a pending consent",
        ));
    }
    let previous = state_of(&records, &granted.purpose);
    if previous == ConsentState::Confirmed {
        // Confirmed since through another grant: that confirmation stands.
        if let Some(record) = latest(&records, &granted.purpose) {
            return Ok(record.clone());
        }
    }
    let record = ConsentRow {
        consent_id: Uuid::now_v7().to_string(),
        contact_id: contact.contact_id.to_string(),
        purpose: granted.purpose.clone(),
        state: ConsentState::Confirmed as i32,
        previous_state: previous as i32,
        wording_version: granted.wording_version.clone(),
        wording: granted.wording.clone(),
        form_id: granted.form_id.clone(),
        channel: ConsentChannel::ConfirmationLink as i32,
        client,
        occurred_at: Some(to_timestamp(now)),
        recorded_at: Some(to_timestamp(now)),
        recorded_by: "confirmation-link".to_owned(),
        send_id: String::new(),
        confirms_consent_id: granted.consent_id.clone(),
        note: String::new(),
    };
    write(unit, contact, &record, now).await?;
    Ok(record)
}

/// A withdrawal, with its evidence.
#[derive(Debug, Clone)]
pub(crate) struct Withdrawal {
    /// The purpose withdrawn; `None` withdraws every purpose (unsubscribe from all).
    pub purpose: Option<String>,
    pub channel: ConsentChannel,
    pub client: Option<pb::ClientInfo>,
    pub recorded_by: String,
    pub send_id: String,
    pub note: String,
}

/// Withdraws the consent of `contact` for the purposes named; returns the records written,
/// none when nothing was given.
pub(crate) async fn withdraw(
    unit: &mut dyn CaptureUnit,
    contact: &ContactRow,
    withdrawal: Withdrawal,
    now: DateTime<Utc>,
) -> Result<Vec<ConsentRow>, CaptureError> {
    let records = unit.consents_of_contact(contact.contact_id).await?;
    let given: Vec<pb::ConsentStatus> = current(&records)
        .into_iter()
        .filter(|status| is_given(status.state()))
        .filter(|status| {
            withdrawal
                .purpose
                .as_deref()
                .is_none_or(|purpose| purpose == status.purpose)
        })
        .collect();
    let mut written = Vec::with_capacity(given.len());
    for status in given {
        let record = ConsentRow {
            consent_id: Uuid::now_v7().to_string(),
            contact_id: contact.contact_id.to_string(),
            purpose: status.purpose,
            state: ConsentState::Withdrawn as i32,
            previous_state: status.state,
            wording_version: String::new(),
            wording: String::new(),
            form_id: String::new(),
            channel: withdrawal.channel as i32,
            client: withdrawal.client.clone(),
            occurred_at: Some(to_timestamp(now)),
            recorded_at: Some(to_timestamp(now)),
            recorded_by: withdrawal.recorded_by.clone(),
            send_id: withdrawal.send_id.clone(),
            confirms_consent_id: String::new(),
            note: withdrawal.note.clone(),
        };
        write(unit, contact, &record, now).await?;
        written.push(record);
    }
    Ok(written)
}

/// Writes a consent record and publishes the change in the same unit.
async fn write(
    unit: &mut dyn CaptureUnit,
    contact: &ContactRow,
    record: &ConsentRow,
    now: DateTime<Utc>,
) -> Result<(), CaptureError> {
    unit.insert_consent(record).await?;
    let event = ConsentChanged {
        consent_id: record.consent_id.clone(),
        contact_id: record.contact_id.clone(),
        lead_id: contact.lead_id.to_string(),
        purpose: record.purpose.clone(),
        previous_state: record.previous_state,
        state: record.state,
        wording_version: record.wording_version.clone(),
        channel: record.channel,
        form_id: record.form_id.clone(),
    };
    unit.publish(&leadflow_bus::new_envelope(
        PRODUCER,
        &record.contact_id,
        Payload::ConsentChanged(event),
        now,
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(purpose: &str, state: ConsentState, version: &str) -> ConsentRow {
        ConsentRow {
            consent_id: Uuid::now_v7().to_string(),
            purpose: purpose.to_owned(),
            state: state as i32,
            wording_version: version.to_owned(),
            ..ConsentRow::default()
        }
    }

    #[test]
    fn the_latest_record_of_a_purpose_is_its_state() {
        let records = vec![
            record("nurture-email", ConsentState::Granted, "v1"),
            record("newsletter", ConsentState::Confirmed, "n1"),
            record("nurture-email", ConsentState::Confirmed, "v1"),
            record("newsletter", ConsentState::Withdrawn, ""),
        ];
        assert_eq!(state_of(&records, "nurture-email"), ConsentState::Confirmed);
        assert_eq!(state_of(&records, "newsletter"), ConsentState::Withdrawn);
        assert_eq!(state_of(&records, "events"), ConsentState::Unspecified);
        let summary = current(&records);
        assert_eq!(
            summary
                .iter()
                .map(|status| (status.purpose.as_str(), status.state()))
                .collect::<Vec<_>>(),
            [
                ("nurture-email", ConsentState::Confirmed),
                ("newsletter", ConsentState::Withdrawn)
            ]
        );
        assert_eq!(summary[0].consent_id, records[2].consent_id);
    }
}
