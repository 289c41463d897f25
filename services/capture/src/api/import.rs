//! `ImportLeads`: rows stream in (the CLI reads them from CSV), each is captured like a
//! submission without a form in its own transaction, and its result streams back as soon
//! as the row is durable. A bad row is answered with its line, field and reason, and the
//! rows after it go on.

use std::{collections::BTreeMap, pin::Pin};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_domain::{CompanyDomain, EmailAddress};
use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::{capture::v1 as pb, common::v1 as common, events::v1::ConsentChannel};
use leadflow_storage::IdempotencyKey;
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Status, Streaming};

use super::{CaptureApi, Command};
use crate::{
    consent::{self, ConsentLinks, Grant},
    error::{CaptureError, item_error},
    forms::DEFAULT_CONSENT_PURPOSE,
    intake::{self, Capture, CaptureEvent},
    records::CaptureUnit,
    submission::{check_typed_lengths, company_of, custom_field_values, past_time},
};

/// The answers of an import, one per row, in row order.
pub type ImportAnswers =
    Pin<Box<dyn Stream<Item = Result<pb::ImportLeadsResponse, Status>> + Send>>;

/// The source of a row that names none.
const IMPORT_SOURCE: &str = "import";
/// Who recorded consent carried by an imported row.
const IMPORT_RECORDER: &str = "import";
/// The most custom fields one row carries.
/// How many answers wait for a slow client before the import pauses.
const ANSWER_BUFFER: usize = 64;

/// A row that passed its checks.
#[derive(Debug, Clone)]
struct ImportRow {
    line_number: u64,
    contact: common::ContactProfile,
    lead: common::LeadProfile,
    custom_fields: BTreeMap<String, String>,
    company: Option<CompanyDomain>,
    product: String,
    source: String,
    attribution: Option<common::CampaignAttribution>,
    consent: Option<ImportedConsent>,
}

/// The consent evidence of a row.
#[derive(Debug, Clone)]
struct ImportedConsent {
    purpose: String,
    wording: String,
    wording_version: String,
    given_at: DateTime<Utc>,
    confirmed: bool,
    evidence: String,
}

fn parse_row(
    request: &pb::ImportLeadsRequest,
    now: DateTime<Utc>,
) -> Result<ImportRow, FieldViolations> {
    let mut violations = FieldViolations::new();
    let mut contact = request.contact.clone().unwrap_or_default();
    let mut lead = request.lead.clone().unwrap_or_default();
    check_typed_lengths(&mut violations, &contact, &lead);
    let email = match EmailAddress::parse(&contact.email) {
        Ok(email) => {
            contact.email = email.to_string();
            Some(email)
        }
        Err(error) => {
            violations.add("contact.email", error.to_string());
            None
        }
    };
    let company = company_of(&mut violations, &lead.web_domain, email.as_ref());
    lead.web_domain = company
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let custom_fields = custom_field_values(&mut violations, &request.custom_fields);
    let product = match request.product.trim() {
        "" => String::new(),
        product => validate::identifier(&mut violations, "product", product),
    };
    let source = match request.source.trim() {
        "" => IMPORT_SOURCE.to_owned(),
        source => validate::identifier(&mut violations, "source", source),
    };
    let consent = request.consent.as_ref().map(|consent| {
        if consent.given_at.is_none() {
            violations.add("consent.given_at", "is required");
        }
        ImportedConsent {
            purpose: match consent.purpose.trim() {
                "" => DEFAULT_CONSENT_PURPOSE.to_owned(),
                purpose => validate::identifier(&mut violations, "consent.purpose", purpose),
            },
            wording: validate::optional_text(
                &mut violations,
                "consent.wording",
                &consent.wording,
                10_000,
            ),
            wording_version: validate::required_text(
                &mut violations,
                "consent.wording_version",
                &consent.wording_version,
                64,
            ),
            given_at: past_time(
                &mut violations,
                "consent.given_at",
                consent.given_at.as_ref(),
                now,
            ),
            confirmed: consent.confirmed,
            evidence: validate::optional_text(
                &mut violations,
                "consent.evidence",
                &consent.evidence,
                1_000,
            ),
        }
    });
    violations.into_result()?;
    Ok(ImportRow {
        line_number: request.line_number,
        contact,
        lead,
        custom_fields,
        company,
        product,
        source,
        attribution: request.attribution.clone(),
        consent,
    })
}

struct ImportOne<'a> {
    row: &'a ImportRow,
    links: &'a ConsentLinks,
}

#[async_trait]
impl Command for ImportOne<'_> {
    type Answer = pb::ImportLeadsResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::ImportLeadsResponse, CaptureError> {
        let row = self.row;
        let captured = intake::capture(
            unit,
            &Capture {
                contact: &row.contact,
                lead: &row.lead,
                custom_fields: &row.custom_fields,
                company: row.company.as_ref(),
                source: &row.source,
                attribution: row.attribution.as_ref(),
                signer: self.links.signer(),
                new_consent: row.consent.is_some(),
            },
            now,
        )
        .await?;
        if let Some(imported) = &row.consent {
            consent::grant(
                unit,
                &captured.contact,
                Grant {
                    purpose: imported.purpose.clone(),
                    wording: imported.wording.clone(),
                    wording_version: imported.wording_version.clone(),
                    form_id: None,
                    channel: ConsentChannel::Import,
                    client: None,
                    occurred_at: imported.given_at,
                    recorded_by: IMPORT_RECORDER.to_owned(),
                    note: imported.evidence.clone(),
                    double_opt_in: !imported.confirmed,
                },
                self.links,
                now,
            )
            .await?;
        }
        let purpose = row
            .consent
            .as_ref()
            .map_or(DEFAULT_CONSENT_PURPOSE, |consent| consent.purpose.as_str());
        intake::publish_captured(
            unit,
            CaptureEvent {
                captured: &captured,
                form_id: None,
                product: &row.product,
                source: &row.source,
                attribution: row.attribution.as_ref(),
                merged_visitor_ids: Vec::new(),
            },
            purpose,
            now,
        )
        .await?;
        Ok(pb::ImportLeadsResponse {
            line_number: row.line_number,
            status: pb::ItemStatus::Accepted as i32,
            contact_id: captured.contact.contact_id.to_string(),
            lead_id: captured.lead.lead_id.to_string(),
            account_id: captured
                .account
                .as_ref()
                .map(|account| account.account_id.to_string())
                .unwrap_or_default(),
            contact_outcome: captured.contact_outcome as i32,
            lead_outcome: captured.lead_outcome as i32,
            error: None,
        })
    }
}

/// Checks and, unless it only validates, writes one row.
async fn import_row(
    api: &CaptureApi,
    request: &pb::ImportLeadsRequest,
) -> Result<pb::ImportLeadsResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let row = parse_row(request, api.now())
        .map_err(|row_violations| violations.extend(row_violations))
        .ok();
    violations.into_result()?;
    let row = row.expect("no violations means the row parsed");
    if request.validate_only {
        return Ok(pb::ImportLeadsResponse {
            line_number: row.line_number,
            status: pb::ItemStatus::Validated as i32,
            ..pb::ImportLeadsResponse::default()
        });
    }
    let key = IdempotencyKey::for_request(key, request, |request| request.idempotency_key.clear());
    api.run(
        &key,
        &ImportOne {
            row: &row,
            links: &api.links,
        },
    )
    .await
}

/// Reads the rows as they come and answers each in order.
pub(super) fn import_leads(
    api: CaptureApi,
    mut rows: Streaming<pb::ImportLeadsRequest>,
) -> ImportAnswers {
    let (answers, receiver) = mpsc::channel(ANSWER_BUFFER);
    tokio::spawn(async move {
        let limit = api.limits.max_import_rows;
        let (mut accepted, mut rejected, mut count) = (0_u64, 0_u64, 0_usize);
        loop {
            let row = match rows.message().await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(status) => {
                    let _ = answers.send(Err(status)).await;
                    break;
                }
            };
            count += 1;
            if count > limit {
                let _ = answers
                    .send(Err(CaptureError::TooManyItems(limit).into()))
                    .await;
                break;
            }
            let answer = match import_row(&api, &row).await {
                Ok(answer) => {
                    accepted += 1;
                    Ok(answer)
                }
                Err(error) if error.blames_the_item() => {
                    rejected += 1;
                    Ok(pb::ImportLeadsResponse {
                        line_number: row.line_number,
                        status: pb::ItemStatus::Rejected as i32,
                        error: Some(item_error(error)),
                        ..pb::ImportLeadsResponse::default()
                    })
                }
                Err(error) => Err(Status::from(error)),
            };
            let stop = answer.is_err();
            // A client that went away ends the import; the rows so far are durable.
            if answers.send(answer).await.is_err() || stop {
                break;
            }
        }
        tracing::info!(accepted, rejected, "import finished");
    });
    Box::pin(ReceiverStream::new(receiver))
}
