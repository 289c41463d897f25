//! Read handlers: a contact with its consent and visitors, a lead with its contacts, an
//! account with its leads, each read on one consistent snapshot.

use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::capture::v1::{self as pb, get_contact_request};

use super::{CaptureApi, ContactRef};
use crate::{
    consent,
    error::CaptureError,
    records::{AccountRow, CaptureUnit, ContactRow, LeadFilter, LeadRow},
};

/// The message of a contact, with its consent summary and merged visitors.
pub(super) async fn contact_message(
    unit: &mut dyn CaptureUnit,
    contact: ContactRow,
    account_id: String,
) -> Result<pb::Contact, CaptureError> {
    let consents = unit.consents_of_contact(contact.contact_id).await?;
    let visitor_ids = unit.visitors_of_contact(contact.contact_id).await?;
    Ok(pb::Contact {
        contact_id: contact.contact_id.to_string(),
        lead_id: contact.lead_id.to_string(),
        account_id,
        profile: Some(contact.profile),
        custom_fields: contact.custom_fields.into_iter().collect(),
        consents: consent::current(&consents),
        visitor_ids,
        source: contact.source,
        first_attribution: contact.first_attribution,
        create_time: Some(to_timestamp(contact.create_time)),
        update_time: Some(to_timestamp(contact.update_time)),
        last_activity_time: contact.last_activity_time.map(to_timestamp),
    })
}

/// The message of a lead, with how many contacts it holds.
pub(super) async fn lead_message(
    unit: &mut dyn CaptureUnit,
    lead: LeadRow,
) -> Result<pb::Lead, CaptureError> {
    let contact_count = unit.contact_count(lead.lead_id).await?;
    Ok(pb::Lead {
        lead_id: lead.lead_id.to_string(),
        account_id: account_text(&lead),
        profile: Some(lead.profile),
        contact_count,
        first_attribution: lead.first_attribution,
        create_time: Some(to_timestamp(lead.create_time)),
        update_time: Some(to_timestamp(lead.update_time)),
    })
}

fn account_text(lead: &LeadRow) -> String {
    lead.account_id.map(|id| id.to_string()).unwrap_or_default()
}

/// The message of an account, with how many leads it holds.
pub(super) async fn account_message(
    unit: &mut dyn CaptureUnit,
    account: AccountRow,
) -> Result<pb::Account, CaptureError> {
    let lead_count = unit.lead_count(account.account_id).await?;
    Ok(pb::Account {
        account_id: account.account_id.to_string(),
        name: account.name,
        web_domain: account.web_domain,
        lead_count,
        create_time: Some(to_timestamp(account.create_time)),
        update_time: Some(to_timestamp(account.update_time)),
    })
}

pub(super) async fn get_contact(
    api: &CaptureApi,
    request: pb::GetContactRequest,
) -> Result<pb::GetContactResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let contact = ContactRef::parse(
        &mut violations,
        "lookup",
        match &request.lookup {
            Some(get_contact_request::Lookup::ContactId(id)) => Some(id),
            _ => None,
        },
        match &request.lookup {
            Some(get_contact_request::Lookup::Email(email)) => Some(email),
            _ => None,
        },
    );
    violations.into_result()?;
    let mut unit = api.read().await?;
    let contact = contact
        .expect("no violations means the lookup parsed")
        .find(unit.as_mut())
        .await?;
    let account_id = match unit.lead(contact.lead_id).await? {
        Some(lead) => account_text(&lead),
        None => String::new(),
    };
    Ok(pb::GetContactResponse {
        contact: Some(contact_message(unit.as_mut(), contact, account_id).await?),
    })
}

pub(super) async fn get_lead(
    api: &CaptureApi,
    request: pb::GetLeadRequest,
) -> Result<pb::GetLeadResponse, CaptureError> {
    let lead_id = validate::required_uuid("lead_id", &request.lead_id)?;
    let mut unit = api.read().await?;
    let lead = unit
        .lead(lead_id)
        .await?
        .ok_or(CaptureError::LeadNotFound(lead_id))?;
    let account_id = account_text(&lead);
    let mut contacts = Vec::new();
    for contact in unit.contacts_of_lead(lead_id).await? {
        contacts.push(contact_message(unit.as_mut(), contact, account_id.clone()).await?);
    }
    Ok(pb::GetLeadResponse {
        lead: Some(lead_message(unit.as_mut(), lead).await?),
        contacts,
    })
}

/// A filter's text, trimmed; None when it is empty.
fn given(value: &str) -> Option<&str> {
    Some(value.trim()).filter(|value| !value.is_empty())
}

/// The leads of a listing page when the caller gives no page size, and the most it may ask.
const DEFAULT_LEAD_PAGE: u32 = 50;
const MAX_LEAD_PAGE: u32 = 200;

pub(super) async fn list_leads(
    api: &CaptureApi,
    request: pb::ListLeadsRequest,
) -> Result<pb::ListLeadsResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let account_id =
        given(&request.account_id).and_then(|id| validate::uuid(&mut violations, "account_id", id));
    let country_code = given(&request.country_code).and_then(|code| {
        crate::submission::country_code(code)
            .map_err(|reason| violations.add("country_code", reason))
            .ok()
    });
    let created = validate::time_range(
        &mut violations,
        "create_time_range",
        request.create_time_range.as_ref(),
    );
    let updated = validate::time_range(
        &mut violations,
        "update_time_range",
        request.update_time_range.as_ref(),
    );
    let limit = validate::page_size(
        &mut violations,
        "page_size",
        request.page_size,
        DEFAULT_LEAD_PAGE,
        MAX_LEAD_PAGE,
    );
    let after = validate::page_token(&mut violations, &request.page_token);
    violations.into_result()?;
    let filter = LeadFilter {
        account_id,
        web_domain: given(&request.web_domain).map(str::to_ascii_lowercase),
        source: given(&request.source).map(str::to_owned),
        country_code,
        created,
        updated,
    };
    let mut unit = api.read().await?;
    if let Some(after) = after
        && unit.lead(after).await?.is_none()
    {
        return Err(
            FieldViolations::single("page_token", "is not a token this listing returned").into(),
        );
    }
    let page = unit.list_leads(&filter, after, limit).await?;
    let mut leads = Vec::with_capacity(page.items.len());
    for lead in page.items {
        leads.push(lead_message(unit.as_mut(), lead).await?);
    }
    Ok(pb::ListLeadsResponse {
        leads,
        next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
    })
}

pub(super) async fn get_account(
    api: &CaptureApi,
    request: pb::GetAccountRequest,
) -> Result<pb::GetAccountResponse, CaptureError> {
    let account_id = validate::required_uuid("account_id", &request.account_id)?;
    let mut unit = api.read().await?;
    let account = unit
        .account(account_id)
        .await?
        .ok_or(CaptureError::AccountNotFound(account_id))?;
    let mut leads = Vec::new();
    for lead in unit.leads_of_account(account_id).await? {
        leads.push(lead_message(unit.as_mut(), lead).await?);
    }
    Ok(pb::GetAccountResponse {
        account: Some(account_message(unit.as_mut(), account).await?),
        leads,
    })
}
