//! Data-protection handlers: `ExportContact` gathers everything leadflow holds about a
//! person from the four services into one JSON document (GDPR articles 15 and 20), and
//! `EraseContact` erases the person (article 17), leaving only a tombstone.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_platform::{
    FieldViolations, auth::CallerName, proto_json::to_json, time::to_timestamp, validate,
};
use leadflow_proto::{
    capture::v1::{self as pb, erase_contact_request, export_contact_request},
    events::v1::ErasureReason,
    nurturing::v1 as nurturing,
    nurturing::v1::nurturing_service_client::NurturingServiceClient,
    routing::v1 as routing,
    routing::v1::routing_service_client::RoutingServiceClient,
    scoring::v1 as scoring,
    scoring::v1::scoring_service_client::ScoringServiceClient,
};
use leadflow_storage::IdempotencyKey;
use serde_json::{Value, json};
use tonic::{metadata::MetadataValue, transport::Channel};

use super::{
    CaptureApi, Command, ContactRef,
    consent::MAX_NOTE_CHARS,
    queries::{account_message, contact_message, lead_message},
};
use crate::{
    erasure::{self, Erasure},
    error::CaptureError,
    records::{ActivityFilter, ActivitySubject, CaptureUnit, TombstoneRow},
};

/// Who a tombstone names as the eraser when calls are not authenticated.
const UNAUTHENTICATED_ERASER: &str = "api";

/// How many records one read of an export pages through.
const EXPORT_PAGE: u32 = 500;

/// The other services an export gathers from, over gRPC.
#[derive(Debug, Clone)]
pub struct ExportPeers {
    scoring: ScoringServiceClient<Channel>,
    nurturing: NurturingServiceClient<Channel>,
    routing: RoutingServiceClient<Channel>,
}

impl ExportPeers {
    /// Peers reached on these channels.
    pub fn new(scoring: Channel, nurturing: Channel, routing: Channel) -> Self {
        Self {
            scoring: ScoringServiceClient::new(scoring),
            nurturing: NurturingServiceClient::new(nurturing),
            routing: RoutingServiceClient::new(routing),
        }
    }
}

/// A call to a peer, carrying the caller's own token: an export asks the other services
/// with the authority of whoever asked for it, and no token of capture's own is needed.
fn peer_request<T>(
    message: T,
    authorization: Option<&MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
    }
    request
}

fn unreachable_peer(service: &'static str) -> impl FnOnce(tonic::Status) -> CaptureError {
    move |status| CaptureError::PeerUnavailable {
        service,
        reason: format!("{:?}: {}", status.code(), status.message()),
    }
}

fn document_part<M: prost::Message>(name: &str, message: &M) -> Result<Value, CaptureError> {
    to_json(name, message).map_err(|error| CaptureError::Export(error.to_string()))
}

pub(super) async fn export_contact(
    api: &CaptureApi,
    request: tonic::Request<pb::ExportContactRequest>,
) -> Result<pb::ExportContactResponse, CaptureError> {
    let authorization = request.metadata().get("authorization").cloned();
    let request = request.into_inner();
    let mut violations = FieldViolations::new();
    let contact = ContactRef::parse(
        &mut violations,
        "contact",
        match &request.contact {
            Some(export_contact_request::Contact::ContactId(id)) => Some(id),
            _ => None,
        },
        match &request.contact {
            Some(export_contact_request::Contact::Email(email)) => Some(email),
            _ => None,
        },
    );
    violations.into_result()?;
    let peers = api
        .export_peers
        .clone()
        .ok_or(CaptureError::PeerUnavailable {
            service: "scoring, nurturing and routing",
            reason: "no addresses are configured for them (set LEADFLOW_PEERS__*_URL)".to_owned(),
        })?;
    let mut unit = api.read().await?;
    let contact = contact
        .expect("no violations means the contact parsed")
        .find(unit.as_mut())
        .await?;
    let contact_id = contact.contact_id;
    let lead_id = contact.lead_id;
    let capture = capture_section(unit.as_mut(), contact).await?;
    drop(unit);

    let auth = authorization.as_ref();
    let scoring = peers
        .scoring
        .clone()
        .export_contact_data(peer_request(
            scoring::ExportContactDataRequest {
                contact_id: contact_id.to_string(),
            },
            auth,
        ))
        .await
        .map_err(unreachable_peer("scoring"))?
        .into_inner();
    let nurturing = peers
        .nurturing
        .clone()
        .export_contact_data(peer_request(
            nurturing::ExportContactDataRequest {
                contact_id: contact_id.to_string(),
            },
            auth,
        ))
        .await
        .map_err(unreachable_peer("nurturing"))?
        .into_inner();
    let mut assignments = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = peers
            .routing
            .clone()
            .list_assignments(peer_request(
                routing::ListAssignmentsRequest {
                    lead_id: lead_id.to_string(),
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                auth,
            ))
            .await
            .map_err(unreachable_peer("routing"))?
            .into_inner();
        for assignment in &page.assignments {
            if assignment.primary_contact_id == contact_id.to_string() {
                assignments.push(document_part("leadflow.routing.v1.Assignment", assignment)?);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }

    let export_time = api.now();
    let document = json!({
        "contactId": contact_id.to_string(),
        "exportTime": export_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "capture": capture,
        "scoring": document_part("leadflow.scoring.v1.ExportContactDataResponse", &scoring)?,
        "nurturing": document_part("leadflow.nurturing.v1.ExportContactDataResponse", &nurturing)?,
        "routing": { "assignments": assignments },
    });
    tracing::info!(%contact_id, "contact exported");
    Ok(pb::ExportContactResponse {
        contact_id: contact_id.to_string(),
        document: serde_json::to_string_pretty(&document)
            .map_err(|error| CaptureError::Export(error.to_string()))?,
        export_time: Some(to_timestamp(export_time)),
    })
}

/// What capture holds about the contact: its record, its lead and account, every activity
/// and the whole consent history.
async fn capture_section(
    unit: &mut dyn CaptureUnit,
    contact: crate::records::ContactRow,
) -> Result<Value, CaptureError> {
    let contact_id = contact.contact_id;
    let lead = unit.lead(contact.lead_id).await?;
    let account = match lead.as_ref().and_then(|lead| lead.account_id) {
        Some(account_id) => unit.account(account_id).await?,
        None => None,
    };
    let account_id = account
        .as_ref()
        .map(|account| account.account_id.to_string())
        .unwrap_or_default();
    let contact = contact_message(unit, contact, account_id).await?;
    let lead = match lead {
        Some(lead) => document_part("leadflow.capture.v1.Lead", &lead_message(unit, lead).await?)?,
        None => Value::Null,
    };
    let account = match account {
        Some(account) => document_part(
            "leadflow.capture.v1.Account",
            &account_message(unit, account).await?,
        )?,
        None => Value::Null,
    };
    let filter = ActivityFilter {
        subject: ActivitySubject::Contact(contact_id),
        types: Vec::new(),
        product: None,
        occurred_from: None,
        occurred_until: None,
    };
    let mut activities = Vec::new();
    let mut after = None;
    loop {
        let page = unit.list_activities(&filter, after, EXPORT_PAGE).await?;
        for activity in &page.items {
            activities.push(document_part("leadflow.capture.v1.Activity", activity)?);
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let consent_history = unit
        .consents_of_contact(contact_id)
        .await?
        .iter()
        .map(|record| document_part("leadflow.capture.v1.ConsentRecord", record))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "contact": document_part("leadflow.capture.v1.Contact", &contact)?,
        "lead": lead,
        "account": account,
        "activities": activities,
        "consentHistory": consent_history,
    }))
}

pub(super) async fn erase_contact(
    api: &CaptureApi,
    request: tonic::Request<pb::EraseContactRequest>,
) -> Result<pb::EraseContactResponse, CaptureError> {
    let erased_by = request.extensions().get::<CallerName>().map_or_else(
        || UNAUTHENTICATED_ERASER.to_owned(),
        |caller| caller.0.clone(),
    );
    let request = request.into_inner();
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let contact = ContactRef::parse(
        &mut violations,
        "contact",
        match &request.contact {
            Some(erase_contact_request::Contact::ContactId(id)) => Some(id),
            _ => None,
        },
        match &request.contact {
            Some(erase_contact_request::Contact::Email(email)) => Some(email),
            _ => None,
        },
    );
    let reason = match ErasureReason::try_from(request.reason) {
        Ok(ErasureReason::Unspecified) => {
            violations.add("reason", "is required: say why the contact is erased");
            ErasureReason::Unspecified
        }
        Ok(reason) => reason,
        Err(_) => {
            violations.add("reason", "must be a known erasure reason");
            ErasureReason::Unspecified
        }
    };
    let note = validate::optional_text(&mut violations, "note", &request.note, MAX_NOTE_CHARS);
    if note.contains('@') {
        violations.add(
            "note",
            "must not hold personal data such as an email address: name the ticket instead",
        );
    }
    violations.into_result()?;
    let command = Erase {
        contact: contact.expect("no violations means the contact parsed"),
        erasure: Erasure {
            reason,
            erased_by,
            note,
        },
        api,
    };
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    let answer = api.run(&key, &command).await?;
    if let Some(tombstone) = &answer.tombstone {
        tracing::info!(contact_id = %tombstone.contact_id, reason = reason.as_str_name(), "contact erased");
    }
    Ok(answer)
}

struct Erase<'a> {
    contact: ContactRef,
    erasure: Erasure,
    api: &'a CaptureApi,
}

#[async_trait]
impl Command for Erase<'_> {
    type Answer = pb::EraseContactResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::EraseContactResponse, CaptureError> {
        let contact = match self.contact.find(unit).await {
            Ok(contact) => contact,
            Err(CaptureError::ContactNotFound) => {
                // Erasing twice by id answers the erasure that was made.
                if let ContactRef::Id(contact_id) = &self.contact
                    && let Some(tombstone) = unit.tombstone(*contact_id).await?
                {
                    return Ok(pb::EraseContactResponse {
                        tombstone: Some(tombstone_message(&tombstone)),
                    });
                }
                return Err(CaptureError::ContactNotFound);
            }
            Err(error) => return Err(error),
        };
        let (tombstone, erased) =
            erasure::erase(unit, self.api.links.signer(), &contact, &self.erasure, now).await?;
        tracing::debug!(
            activities = erased.activities,
            consents = erased.consents,
            visitors = erased.visitors,
            mails = erased.mails,
            events = erased.events,
            answers = erased.answers,
            "records of the contact erased"
        );
        Ok(pb::EraseContactResponse {
            tombstone: Some(tombstone_message(&tombstone)),
        })
    }
}

fn tombstone_message(tombstone: &TombstoneRow) -> pb::Tombstone {
    pb::Tombstone {
        contact_id: tombstone.contact_id.to_string(),
        email_hash: tombstone.email_hash.clone(),
        reason: ErasureReason::from_str_name(&tombstone.reason)
            .unwrap_or(ErasureReason::Unspecified) as i32,
        erase_time: Some(to_timestamp(tombstone.erase_time)),
        erased_by: tombstone.erased_by.clone(),
    }
}
