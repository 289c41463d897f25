//! Rectification (GDPR article 16) and upkeep: `UpdateContact` changes the contact fields an
//! update mask names, `UpdateLead` the lead profile fields, each publishing
//! `ContactCaptured` so scoring, nurturing and routing see the new values.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_domain::{CompanyDomain, EmailAddress};
use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::{capture::v1 as pb, common::v1 as common};
use leadflow_storage::IdempotencyKey;
use uuid::Uuid;

use super::{
    CaptureApi, Command,
    queries::{contact_message, lead_message},
};
use crate::{
    error::CaptureError,
    forms::{DEFAULT_CONSENT_PURPOSE, PROFILE_PATHS},
    intake::{self, CaptureEvent, Captured},
    records::{CaptureUnit, ContactRow, LeadRow},
    submission::{
        DEFAULT_MAX_CHARS, company_of, custom_field_values, profile_value, set_profile_value,
    },
};

/// The source `ContactCaptured` names for a change made through the API.
const UPDATE_SOURCE: &str = "api";

/// The profile paths under `kind` ("contact" or "lead") an update mask may name, as
/// `profile.<path>`.
fn profile_paths(kind: &str) -> impl Iterator<Item = &'static str> + '_ {
    PROFILE_PATHS
        .iter()
        .filter_map(move |path| path.strip_prefix(kind)?.strip_prefix('.'))
}

/// The checked value of one profile path of `given`, set into `into`.
fn apply_profile_path(
    violations: &mut FieldViolations,
    kind: &str,
    mask_path: &str,
    contact: (&common::ContactProfile, &mut common::ContactProfile),
    lead: (&common::LeadProfile, &mut common::LeadProfile),
) {
    let Some(rest) = mask_path.strip_prefix("profile.") else {
        return;
    };
    let path = format!("{kind}.{rest}");
    let (given_contact, into_contact) = contact;
    let (given_lead, into_lead) = lead;
    if path == "contact.preferred_channels" {
        if given_contact
            .preferred_channels()
            .any(|channel| channel == common::Channel::Unspecified)
            || given_contact
                .preferred_channels
                .iter()
                .any(|value| common::Channel::try_from(*value).is_err())
        {
            violations.add(mask_path, "must list known channels only");
        }
        into_contact.preferred_channels = given_contact.preferred_channels.clone();
        return;
    }
    let value = profile_value(given_contact, given_lead, &path);
    let value = validate::optional_text(violations, mask_path, &value, DEFAULT_MAX_CHARS);
    let value = match path.as_str() {
        "contact.email" => match EmailAddress::parse(&value) {
            Ok(email) => email.to_string(),
            Err(error) => {
                violations.add(mask_path, error.to_string());
                return;
            }
        },
        "contact.language" if !value.is_empty() => {
            validate::language_tag(violations, mask_path, &value)
        }
        "contact.address.country_code" | "lead.country_code" if !value.is_empty() => {
            match crate::submission::country_code(&value) {
                Ok(code) => code,
                Err(reason) => {
                    violations.add(mask_path, reason);
                    return;
                }
            }
        }
        _ => value,
    };
    if let Err(reason) = set_profile_value(into_contact, into_lead, &path, &value) {
        violations.add(mask_path, reason);
    }
}

/// The mask's paths, each named once; none is a violation.
fn mask_paths(
    violations: &mut FieldViolations,
    mask: Option<&prost_types::FieldMask>,
) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for path in mask.map(|mask| mask.paths.as_slice()).unwrap_or_default() {
        let path = path.trim().to_owned();
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        violations.add("update_mask", "is required: name the paths to change");
    }
    paths
}

pub(super) async fn update_contact(
    api: &CaptureApi,
    request: pb::UpdateContactRequest,
) -> Result<pb::UpdateContactResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let contact_id = validate::uuid(&mut violations, "contact_id", &request.contact_id);
    let paths = mask_paths(&mut violations, request.update_mask.as_ref());
    let given = request.profile.clone().unwrap_or_default();
    let mut changes = ContactChanges::default();
    for path in &paths {
        match path.as_str() {
            "custom_fields" => {
                changes.custom_fields =
                    Some(custom_field_values(&mut violations, &request.custom_fields));
            }
            "lead_id" => {
                changes.lead_id = validate::uuid(&mut violations, "lead_id", &request.lead_id);
            }
            other
                if other
                    .strip_prefix("profile.")
                    .is_some_and(|rest| profile_paths("contact").any(|known| known == rest)) =>
            {
                changes.profile_paths.push(other.to_owned());
            }
            other => violations.add(
                "update_mask.paths",
                format!(
                    "{other:?} is not a path UpdateContact changes: use profile.<field>, \
                     custom_fields or lead_id"
                ),
            ),
        }
    }
    // The new values are checked on a scratch profile; the stored one is changed in the unit.
    let mut checked = common::ContactProfile::default();
    for path in &changes.profile_paths {
        apply_profile_path(
            &mut violations,
            "contact",
            path,
            (&given, &mut checked),
            (
                &common::LeadProfile::default(),
                &mut common::LeadProfile::default(),
            ),
        );
    }
    violations.into_result()?;
    let command = UpdateContact {
        contact_id: contact_id.expect("no violations means the id parsed"),
        given,
        changes,
    };
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    let answer = api.run(&key, &command).await?;
    tracing::info!(contact_id = %command.contact_id, paths = paths.len(), "contact updated");
    Ok(answer)
}

#[derive(Debug, Default)]
struct ContactChanges {
    profile_paths: Vec<String>,
    custom_fields: Option<BTreeMap<String, String>>,
    lead_id: Option<Uuid>,
}

struct UpdateContact {
    contact_id: Uuid,
    given: common::ContactProfile,
    changes: ContactChanges,
}

#[async_trait]
impl Command for UpdateContact {
    type Answer = pb::UpdateContactResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::UpdateContactResponse, CaptureError> {
        let mut contact = unit
            .contact(self.contact_id)
            .await?
            .ok_or(CaptureError::ContactNotFound)?;
        let mut violations = FieldViolations::new();
        for path in &self.changes.profile_paths {
            apply_profile_path(
                &mut violations,
                "contact",
                path,
                (&self.given, &mut contact.profile),
                (
                    &common::LeadProfile::default(),
                    &mut common::LeadProfile::default(),
                ),
            );
        }
        violations.into_result()?;
        if let Some(other) = unit.contact_by_email(&contact.profile.email).await?
            && other.contact_id != contact.contact_id
        {
            return Err(CaptureError::EmailTaken);
        }
        if let Some(custom_fields) = &self.changes.custom_fields {
            contact.custom_fields = custom_fields.clone();
        }
        if let Some(lead_id) = self.changes.lead_id {
            unit.lead(lead_id)
                .await?
                .ok_or(CaptureError::LeadNotFound(lead_id))?;
            contact.lead_id = lead_id;
        }
        contact.update_time = now;
        unit.put_contact(&contact).await?;
        let lead = unit
            .lead(contact.lead_id)
            .await?
            .ok_or(CaptureError::LeadNotFound(contact.lead_id))?;
        let account_id = publish_change(unit, &contact, &lead, now).await?;
        Ok(pb::UpdateContactResponse {
            contact: Some(contact_message(unit, contact, account_id).await?),
        })
    }
}

/// Publishes `ContactCaptured` with the contact's and its lead's values as they are now;
/// answers the lead's account id as text.
async fn publish_change(
    unit: &mut dyn CaptureUnit,
    contact: &ContactRow,
    lead: &LeadRow,
    now: DateTime<Utc>,
) -> Result<String, CaptureError> {
    let account = match lead.account_id {
        Some(account_id) => unit.account(account_id).await?,
        None => None,
    };
    let account_id = account
        .as_ref()
        .map(|account| account.account_id.to_string())
        .unwrap_or_default();
    let captured = Captured {
        contact: contact.clone(),
        lead: lead.clone(),
        account,
        contact_outcome: pb::RecordOutcome::Updated,
        lead_outcome: pb::RecordOutcome::Unchanged,
        account_outcome: pb::RecordOutcome::Unchanged,
    };
    intake::publish_captured(
        unit,
        CaptureEvent {
            captured: &captured,
            form_id: None,
            product: "",
            source: UPDATE_SOURCE,
            attribution: None,
            merged_visitor_ids: Vec::new(),
        },
        DEFAULT_CONSENT_PURPOSE,
        now,
    )
    .await?;
    Ok(account_id)
}

pub(super) async fn update_lead(
    api: &CaptureApi,
    request: pb::UpdateLeadRequest,
) -> Result<pb::UpdateLeadResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let lead_id = validate::uuid(&mut violations, "lead_id", &request.lead_id);
    let paths = mask_paths(&mut violations, request.update_mask.as_ref());
    let given = request.profile.clone().unwrap_or_default();
    let mut lead_paths = Vec::new();
    for path in &paths {
        if path
            .strip_prefix("profile.")
            .is_some_and(|rest| profile_paths("lead").any(|known| known == rest))
        {
            lead_paths.push(path.clone());
        } else {
            violations.add(
                "update_mask.paths",
                format!("{path:?} is not a path UpdateLead changes: use profile.<field>"),
            );
        }
    }
    let mut checked = common::LeadProfile::default();
    for path in &lead_paths {
        apply_profile_path(
            &mut violations,
            "lead",
            path,
            (
                &common::ContactProfile::default(),
                &mut common::ContactProfile::default(),
            ),
            (&given, &mut checked),
        );
    }
    let company = if lead_paths.iter().any(|path| path == "profile.web_domain") {
        company_of(&mut violations, &checked.web_domain, None)
    } else {
        None
    };
    violations.into_result()?;
    let command = UpdateLead {
        lead_id: lead_id.expect("no violations means the id parsed"),
        given,
        profile_paths: lead_paths,
        company,
    };
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    let answer = api.run(&key, &command).await?;
    tracing::info!(lead_id = %command.lead_id, paths = paths.len(), "lead updated");
    Ok(answer)
}

struct UpdateLead {
    lead_id: Uuid,
    given: common::LeadProfile,
    profile_paths: Vec<String>,
    /// The company of a new web domain; None when the domain is not changed or is blank.
    company: Option<CompanyDomain>,
}

#[async_trait]
impl Command for UpdateLead {
    type Answer = pb::UpdateLeadResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::UpdateLeadResponse, CaptureError> {
        let mut lead = unit
            .lead(self.lead_id)
            .await?
            .ok_or(CaptureError::LeadNotFound(self.lead_id))?;
        let before = lead.profile.clone();
        let mut violations = FieldViolations::new();
        for path in &self.profile_paths {
            apply_profile_path(
                &mut violations,
                "lead",
                path,
                (
                    &common::ContactProfile::default(),
                    &mut common::ContactProfile::default(),
                ),
                (&self.given, &mut lead.profile),
            );
        }
        violations.into_result()?;
        let moved_domain = self
            .profile_paths
            .iter()
            .any(|path| path == "profile.web_domain");
        if moved_domain {
            lead.profile.web_domain = self
                .company
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            lead.account_id = match &self.company {
                Some(company) => Some(
                    intake::account_of(unit, company, &lead.profile, now)
                        .await?
                        .0
                        .account_id,
                ),
                None => None,
            };
        }
        // The domain and site name the buying unit: no two leads share them.
        if (moved_domain || before.site != lead.profile.site) && !lead.profile.web_domain.is_empty()
        {
            let site_key = leadflow_domain::site_key(&lead.profile.site);
            if let Some(other) = unit
                .lead_by_site(&lead.profile.web_domain, &site_key)
                .await?
                && other.lead_id != lead.lead_id
            {
                return Err(CaptureError::LeadTaken(other.lead_id));
            }
        }
        lead.update_time = now;
        unit.put_lead(&lead).await?;
        // Scoring reads the lead's profile from ContactCaptured: one per contact.
        for contact in unit.contacts_of_lead(lead.lead_id).await? {
            publish_change(unit, &contact, &lead, now).await?;
        }
        Ok(pb::UpdateLeadResponse {
            lead: Some(lead_message(unit, lead).await?),
        })
    }
}
