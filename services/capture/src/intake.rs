//! Intake: how a capture (a form submission, an imported row) becomes a contact of a lead
//! of an account, how anonymous visitors join the contact they turn out to be, and how an
//! activity is recorded and published. Everything runs inside the caller's unit of work, so
//! a capture is written whole or not at all.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadflow_domain::CompanyDomain;
use leadflow_platform::time::to_timestamp;
use leadflow_proto::{
    capture::v1 as pb,
    common::v1 as common,
    events::v1::{ActivityRecorded, ConsentState, ContactCaptured, event_envelope::Payload},
};
use uuid::Uuid;

use crate::{
    consent::{self, PRODUCER},
    erasure,
    error::CaptureError,
    profiling::merge_profiles,
    records::{AccountRow, ActivityRow, CaptureUnit, ContactRow, LeadRow, VisitorRow},
};

/// The values one capture carries about a person and its company.
#[derive(Debug, Clone)]
pub(crate) struct Capture<'a> {
    /// The contact values captured; the email is normalised.
    pub contact: &'a common::ContactProfile,
    /// The lead values captured; the web domain is the company's or empty.
    pub lead: &'a common::LeadProfile,
    pub custom_fields: &'a BTreeMap<String, String>,
    /// The company; none for a private person on a free-mail address.
    pub company: Option<&'a CompanyDomain>,
    pub source: &'a str,
    pub attribution: Option<&'a common::CampaignAttribution>,
    /// The signer whose keys hash the email of an erased person (see
    /// [`crate::erasure::email_hashes`]).
    pub signer: &'a leadflow_platform::links::LinkSigner,
    /// Whether the capture carries a new consent grant, without which an erased person is
    /// not captured again.
    pub new_consent: bool,
}

/// What a capture found and changed.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub contact: ContactRow,
    pub lead: LeadRow,
    pub account: Option<AccountRow>,
    pub contact_outcome: pb::RecordOutcome,
    pub lead_outcome: pb::RecordOutcome,
    pub account_outcome: pb::RecordOutcome,
}

/// Finds the contact by its email, else creates it in the lead of its company and site,
/// else in a new lead of the company's account; known values are merged, never blanked.
pub(crate) async fn capture(
    unit: &mut dyn CaptureUnit,
    capture: &Capture<'_>,
    now: DateTime<Utc>,
) -> Result<Captured, CaptureError> {
    match unit.contact_by_email(&capture.contact.email).await? {
        Some(known) => update_known(unit, known, capture, now).await,
        None if !capture.new_consent
            && unit
                .email_erased(&erasure::email_hashes(
                    capture.signer,
                    &capture.contact.email,
                ))
                .await? =>
        {
            Err(CaptureError::ContactErased)
        }
        None => create_contact(unit, capture, now).await,
    }
}

async fn update_known(
    unit: &mut dyn CaptureUnit,
    mut contact: ContactRow,
    capture: &Capture<'_>,
    now: DateTime<Utc>,
) -> Result<Captured, CaptureError> {
    let mut lead = unit.lead(contact.lead_id).await?.ok_or_else(|| {
        CaptureError::Storage(leadflow_storage::StorageError::Corrupt(format!(
            "contact {} belongs to a missing lead",
            contact.contact_id
        )))
    })?;
    let domainless = lead.profile.web_domain.is_empty();
    let mut changed = merge_profiles(
        &mut contact.profile,
        &mut lead.profile,
        capture.contact,
        capture.lead,
    );
    for (name, value) in capture.custom_fields {
        if contact.custom_fields.get(name) != Some(value) {
            contact.custom_fields.insert(name.clone(), value.clone());
            changed.contact = true;
        }
    }
    let mut account = match lead.account_id {
        Some(account_id) => unit.account(account_id).await?,
        None => None,
    };
    let mut account_outcome = pb::RecordOutcome::Unchanged;
    let mut lead_outcome = outcome(changed.lead);
    if domainless && let Some(company) = capture.company {
        // A person known without a company names one now: the contact joins that company's
        // lead for its site, or its lead becomes that lead.
        let site_key = leadflow_domain::site_key(&lead.profile.site);
        if let Some(mut company_lead) = unit.lead_by_site(company.as_str(), &site_key).await? {
            let mut scratch = contact.profile.clone();
            let merged = merge_profiles(
                &mut scratch,
                &mut company_lead.profile,
                &common::ContactProfile::default(),
                capture.lead,
            );
            if merged.lead {
                company_lead.update_time = now;
                unit.put_lead(&company_lead).await?;
            }
            lead_outcome = outcome(merged.lead);
            account = match company_lead.account_id {
                Some(account_id) => unit.account(account_id).await?,
                None => None,
            };
            contact.lead_id = company_lead.lead_id;
            changed.contact = true;
            lead = company_lead;
        } else {
            let (found, created) = account_of(unit, company, capture.lead, now).await?;
            account_outcome = outcome_of_creation(created);
            lead.account_id = Some(found.account_id);
            account = Some(found);
            lead.update_time = now;
            unit.put_lead(&lead).await?;
        }
    } else if changed.lead {
        lead.update_time = now;
        unit.put_lead(&lead).await?;
    }
    if changed.contact {
        contact.update_time = now;
        unit.put_contact(&contact).await?;
    }
    Ok(Captured {
        contact_outcome: outcome(changed.contact),
        contact,
        lead,
        account,
        lead_outcome,
        account_outcome,
    })
}

async fn create_contact(
    unit: &mut dyn CaptureUnit,
    capture: &Capture<'_>,
    now: DateTime<Utc>,
) -> Result<Captured, CaptureError> {
    let mut account = None;
    let mut account_outcome = pb::RecordOutcome::Unspecified;
    let mut lead_outcome = pb::RecordOutcome::Created;
    let site_key = leadflow_domain::site_key(&capture.lead.site);
    let existing_lead = match capture.company {
        Some(company) => unit.lead_by_site(company.as_str(), &site_key).await?,
        None => None,
    };
    let lead = match existing_lead {
        Some(mut lead) => {
            // Only the lead's values are merged here; the contact is new.
            let mut no_contact = common::ContactProfile::default();
            let merged = merge_profiles(
                &mut no_contact,
                &mut lead.profile,
                &common::ContactProfile::default(),
                capture.lead,
            );
            if merged.lead {
                lead.update_time = now;
                unit.put_lead(&lead).await?;
            }
            lead_outcome = outcome(merged.lead);
            if let Some(account_id) = lead.account_id {
                account = unit.account(account_id).await?;
                account_outcome = pb::RecordOutcome::Unchanged;
            }
            lead
        }
        None => {
            let mut profile = capture.lead.clone();
            if profile.source.is_empty() {
                profile.source = capture.source.to_owned();
            }
            let account_id = match capture.company {
                Some(company) => {
                    let (found, created) = account_of(unit, company, capture.lead, now).await?;
                    account_outcome = outcome_of_creation(created);
                    let account_id = found.account_id;
                    account = Some(found);
                    Some(account_id)
                }
                None => None,
            };
            let lead = LeadRow {
                lead_id: Uuid::now_v7(),
                account_id,
                profile,
                first_attribution: capture.attribution.cloned(),
                create_time: now,
                update_time: now,
            };
            unit.put_lead(&lead).await?;
            lead
        }
    };
    let contact = ContactRow {
        contact_id: Uuid::now_v7(),
        lead_id: lead.lead_id,
        profile: capture.contact.clone(),
        custom_fields: capture.custom_fields.clone(),
        source: capture.source.to_owned(),
        first_attribution: capture.attribution.cloned(),
        create_time: now,
        update_time: now,
        last_activity_time: None,
    };
    unit.put_contact(&contact).await?;
    Ok(Captured {
        contact,
        lead,
        account,
        contact_outcome: pb::RecordOutcome::Created,
        lead_outcome,
        account_outcome,
    })
}

/// The account of `company`, created when missing; true when it was created.
pub(crate) async fn account_of(
    unit: &mut dyn CaptureUnit,
    company: &CompanyDomain,
    lead: &common::LeadProfile,
    now: DateTime<Utc>,
) -> Result<(AccountRow, bool), CaptureError> {
    if let Some(mut account) = unit.account_by_domain(company.as_str()).await? {
        // An account first named by its domain takes the company's name once it is given.
        if account.name == account.web_domain && !lead.company_name.trim().is_empty() {
            account.name = lead.company_name.trim().to_owned();
            account.update_time = now;
            unit.put_account(&account).await?;
        }
        return Ok((account, false));
    }
    let account = AccountRow {
        account_id: Uuid::now_v7(),
        web_domain: company.as_str().to_owned(),
        name: match lead.company_name.trim() {
            "" => company.as_str().to_owned(),
            name => name.to_owned(),
        },
        create_time: now,
        update_time: now,
    };
    unit.put_account(&account).await?;
    Ok((account, true))
}

fn outcome(changed: bool) -> pb::RecordOutcome {
    if changed {
        pb::RecordOutcome::Updated
    } else {
        pb::RecordOutcome::Unchanged
    }
}

fn outcome_of_creation(created: bool) -> pb::RecordOutcome {
    if created {
        pb::RecordOutcome::Created
    } else {
        pb::RecordOutcome::Unchanged
    }
}

/// Merges the anonymous visitor into `contact`: its earlier activities move to the contact
/// and its lead. Returns how many moved, or `None` when it was merged into this contact
/// before.
pub(crate) async fn merge_visitor(
    unit: &mut dyn CaptureUnit,
    visitor_id: &str,
    contact: &ContactRow,
    now: DateTime<Utc>,
) -> Result<Option<u32>, CaptureError> {
    let visitor = unit.visitor(visitor_id).await?;
    match visitor.as_ref().and_then(|visitor| visitor.contact_id) {
        Some(merged) if merged == contact.contact_id => return Ok(None),
        Some(_) => return Err(CaptureError::VisitorMergedElsewhere(visitor_id.to_owned())),
        None => {}
    }
    unit.put_visitor(&VisitorRow {
        visitor_id: visitor_id.to_owned(),
        contact_id: Some(contact.contact_id),
        first_seen_time: visitor.map_or(now, |visitor| visitor.first_seen_time),
        merge_time: Some(now),
    })
    .await?;
    let moved = unit
        .move_visitor_activities(visitor_id, contact.contact_id, contact.lead_id)
        .await?;
    Ok(Some(moved))
}

/// Publishes what a capture made of the contact, as scoring and routing read it.
pub(crate) struct CaptureEvent<'a> {
    pub captured: &'a Captured,
    pub form_id: Option<Uuid>,
    pub product: &'a str,
    pub source: &'a str,
    pub attribution: Option<&'a common::CampaignAttribution>,
    pub merged_visitor_ids: Vec<String>,
}

/// Publishes `ContactCaptured` with the contact's nurture consent as it is now.
pub(crate) async fn publish_captured(
    unit: &mut dyn CaptureUnit,
    event: CaptureEvent<'_>,
    consent_purpose: &str,
    now: DateTime<Utc>,
) -> Result<ConsentState, CaptureError> {
    let captured = event.captured;
    let records = unit
        .consents_of_contact(captured.contact.contact_id)
        .await?;
    let consent_state = consent::state_of(&records, consent_purpose);
    let payload = ContactCaptured {
        contact_id: captured.contact.contact_id.to_string(),
        lead_id: captured.lead.lead_id.to_string(),
        account_id: captured
            .account
            .as_ref()
            .map(|account| account.account_id.to_string())
            .unwrap_or_default(),
        contact: Some(captured.contact.profile.clone()),
        lead: Some(captured.lead.profile.clone()),
        form_id: event.form_id.map(|id| id.to_string()).unwrap_or_default(),
        product: event.product.to_owned(),
        source: event.source.to_owned(),
        attribution: event.attribution.cloned(),
        consent_state: consent_state as i32,
        contact_created: captured.contact_outcome == pb::RecordOutcome::Created,
        lead_created: captured.lead_outcome == pb::RecordOutcome::Created,
        merged_visitor_ids: event.merged_visitor_ids,
    };
    unit.publish(&leadflow_bus::new_envelope(
        PRODUCER,
        &payload.contact_id.clone(),
        Payload::ContactCaptured(payload),
        now,
    ))
    .await?;
    Ok(consent_state)
}

/// Records `activity` (its subject fields already resolved) and publishes it; keeps the
/// contact's last activity time.
pub(crate) async fn record_activity(
    unit: &mut dyn CaptureUnit,
    mut activity: ActivityRow,
    contact: Option<&mut ContactRow>,
    now: DateTime<Utc>,
) -> Result<ActivityRow, CaptureError> {
    activity.activity_id = Uuid::now_v7().to_string();
    activity.recorded_at = Some(to_timestamp(now));
    if let Some(contact) = contact {
        let occurred = activity
            .occurred_at
            .as_ref()
            .and_then(leadflow_platform::time::from_timestamp)
            .unwrap_or(now);
        if contact
            .last_activity_time
            .is_none_or(|last| last < occurred)
        {
            contact.last_activity_time = Some(occurred);
            unit.put_contact(contact).await?;
        }
    } else if !activity.visitor_id.is_empty() && unit.visitor(&activity.visitor_id).await?.is_none()
    {
        unit.put_visitor(&VisitorRow {
            visitor_id: activity.visitor_id.clone(),
            contact_id: None,
            first_seen_time: now,
            merge_time: None,
        })
        .await?;
    }
    unit.insert_activity(&activity).await?;
    let event = ActivityRecorded {
        activity_id: activity.activity_id.clone(),
        contact_id: activity.contact_id.clone(),
        lead_id: activity.lead_id.clone(),
        visitor_id: activity.visitor_id.clone(),
        r#type: activity.r#type,
        custom_type: activity.custom_type.clone(),
        content_item_id: activity.content_item_id.clone(),
        stage: activity.stage,
        product: activity.product.clone(),
        occurred_at: activity.occurred_at,
        source: activity.source.clone(),
        send_id: activity.send_id.clone(),
        attribution: activity.attribution.clone(),
    };
    let aggregate = if activity.contact_id.is_empty() {
        activity.visitor_id.clone()
    } else {
        activity.contact_id.clone()
    };
    unit.publish(&leadflow_bus::new_envelope(
        PRODUCER,
        &aggregate,
        Payload::ActivityRecorded(event),
        now,
    ))
    .await?;
    Ok(activity)
}
