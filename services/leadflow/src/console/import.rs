//! `leadflow import`: a CSV file of leads sent to capture's `ImportLeads` stream, one message
//! per row, with a progress bar; every row's idempotency key comes from the file's hash and
//! the row's line, so importing the same file again writes nothing twice.

use std::{collections::BTreeMap, path::Path};

use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use leadflow_platform::time::to_timestamp;
use leadflow_proto::{
    capture::v1::{self as pb, ItemStatus},
    common::v1 as common,
};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;

use super::{Clients, ConsoleError, print, print_json, table::Table};
use crate::cli::{ImportArgs, OutputFormat};

/// The rows one stream carries; capture refuses streams beyond its limit (100,000 by default).
const ROWS_PER_STREAM: usize = 50_000;
/// The rejected rows the table shows; JSON lists them all.
const SHOWN_REJECTIONS: usize = 20;

/// A row that could not be sent or was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Its line in the file.
    pub line: u64,
    /// The field at fault, e.g. `contact.email`.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Rows written (or, with validation only, found valid).
    pub accepted: u64,
    /// Of those, rows that created a contact.
    pub contacts_created: u64,
    /// Of those, rows that created a lead.
    pub leads_created: u64,
    /// Rows refused, by line.
    pub rejected: Vec<Rejection>,
}

/// The parsed rows of a file: the requests to send, and the rows refused before sending.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// One request per good row.
    pub rows: Vec<pb::ImportLeadsRequest>,
    /// Rows that cannot be sent as they are.
    pub rejected: Vec<Rejection>,
}

fn truthy(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" => None,
        "true" | "yes" | "y" | "1" | "x" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// A time given as RFC 3339 or as a date (midnight UTC).
fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .map(|date| date.and_time(chrono::NaiveTime::MIN).and_utc())
        })
}

/// Reads a CSV document (with a header row) into import requests. `key_prefix` makes each
/// row's idempotency key.
pub fn parse_csv(
    bytes: &[u8],
    product: &str,
    source: &str,
    validate_only: bool,
    key_prefix: &str,
) -> Result<ParsedFile, ConsoleError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|error| ConsoleError::Input(format!("cannot read the header row: {error}")))?
        .iter()
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    if !headers.iter().any(|name| name == "email") {
        return Err(ConsoleError::Input(
            "the header row has no email column; every row needs the contact's email".to_owned(),
        ));
    }
    let mut parsed = ParsedFile::default();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, csv::Position::line);
                parsed.rejected.push(Rejection {
                    line,
                    field: String::new(),
                    reason: format!("not a CSV row: {error}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let mut contact = common::ContactProfile::default();
        let mut lead = common::LeadProfile::default();
        let mut attribution = common::CampaignAttribution::default();
        let mut consent = pb::ImportedConsent::default();
        let mut custom_fields = BTreeMap::new();
        let mut problem = None;
        for (name, value) in headers.iter().zip(record.iter()) {
            let value = value.to_owned();
            match name.as_str() {
                "email" => contact.email = value,
                "first_name" => contact.first_name = value,
                "last_name" => contact.last_name = value,
                "buyer_role" => contact.buyer_role = value,
                "job_title" => contact.job_title = value,
                "seniority" => contact.seniority = value,
                "department" => contact.department = value,
                "phone" => contact.phone = value,
                "language" => contact.language = value,
                "time_zone" => contact.time_zone = value,
                "company_name" | "company" => lead.company_name = value,
                "web_domain" => lead.web_domain = value,
                "site" => lead.site = value,
                "industry" => lead.industry = value,
                "employee_count" | "employees" => {
                    if !value.is_empty() {
                        match value.replace([',', '_'], "").parse() {
                            Ok(count) => lead.employee_count = count,
                            Err(_) => {
                                problem = Some(("lead.employee_count", "is not a whole number"));
                            }
                        }
                    }
                }
                "revenue_band" => lead.revenue_band = value,
                "country_code" | "country" => lead.country_code = value,
                "region" => lead.region = value,
                "utm_source" => attribution.source = value,
                "utm_medium" => attribution.medium = value,
                "utm_campaign" => attribution.campaign = value,
                "utm_term" => attribution.term = value,
                "utm_content" => attribution.content = value,
                "consent_purpose" => consent.purpose = value,
                "consent_wording_version" => consent.wording_version = value,
                "consent_wording" => consent.wording = value,
                "consent_evidence" => consent.evidence = value,
                "consent_confirmed" => consent.confirmed = truthy(&value).unwrap_or(false),
                "consent_given_at" => {
                    if !value.is_empty() {
                        match parse_time(&value) {
                            Some(time) => consent.given_at = Some(to_timestamp(time)),
                            None => {
                                problem = Some((
                                    "consent.given_at",
                                    "is neither an RFC 3339 time nor a YYYY-MM-DD date",
                                ));
                            }
                        }
                    }
                }
                _ => {
                    if !value.is_empty() {
                        custom_fields.insert(name.clone(), value);
                    }
                }
            }
        }
        if let Some((field, reason)) = problem {
            parsed.rejected.push(Rejection {
                line,
                field: field.to_owned(),
                reason: reason.to_owned(),
            });
            continue;
        }
        let has_consent = !consent.wording_version.is_empty() || consent.given_at.is_some();
        parsed.rows.push(pb::ImportLeadsRequest {
            line_number: line,
            contact: Some(contact),
            lead: Some(lead),
            custom_fields,
            product: product.to_owned(),
            source: source.to_owned(),
            attribution: (attribution != common::CampaignAttribution::default())
                .then_some(attribution),
            consent: has_consent.then_some(consent),
            validate_only,
            idempotency_key: format!("{key_prefix}:{line}"),
        });
    }
    Ok(parsed)
}

/// Sends the rows, `ROWS_PER_STREAM` per stream, counting each answer on `progress`.
pub async fn send_rows(
    clients: &Clients,
    rows: Vec<pb::ImportLeadsRequest>,
    progress: &ProgressBar,
) -> Result<ImportSummary, ConsoleError> {
    let mut summary = ImportSummary::default();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<pb::ImportLeadsRequest> = rows.by_ref().take(ROWS_PER_STREAM).collect();
        let mut answers = clients
            .capture()
            .import_leads(tokio_stream::iter(chunk))
            .await
            .map_err(|status| ConsoleError::call("ImportLeads", &status))?
            .into_inner();
        while let Some(answer) = answers.next().await {
            let answer = answer.map_err(|status| ConsoleError::call("ImportLeads", &status))?;
            match ItemStatus::try_from(answer.status).unwrap_or_default() {
                ItemStatus::Accepted | ItemStatus::Validated => {
                    summary.accepted += 1;
                    if answer.contact_outcome == pb::RecordOutcome::Created as i32 {
                        summary.contacts_created += 1;
                    }
                    if answer.lead_outcome == pb::RecordOutcome::Created as i32 {
                        summary.leads_created += 1;
                    }
                }
                ItemStatus::Rejected | ItemStatus::Unspecified => {
                    let error = answer.error.unwrap_or_default();
                    summary.rejected.push(Rejection {
                        line: answer.line_number,
                        field: error.field,
                        reason: error.reason,
                    });
                }
            }
            progress.inc(1);
        }
    }
    Ok(summary)
}

/// Imports the file the arguments name.
pub async fn run(args: &ImportArgs) -> Result<(), ConsoleError> {
    let bytes = read_file(&args.file)?;
    let key_prefix = format!("import:{:x}", Sha256::digest(&bytes));
    let product = args.product.clone().unwrap_or_default();
    let parsed = parse_csv(
        &bytes,
        &product,
        &args.source,
        args.validate_only,
        &key_prefix,
    )?;
    let clients = Clients::for_console(&args.console).await?;
    let total = parsed.rows.len() as u64;
    let progress = if args.console.format == OutputFormat::Table {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = send_rows(&clients, parsed.rows, &progress).await?;
    progress.finish_and_clear();
    summary.rejected.extend(parsed.rejected);
    summary.rejected.sort_by_key(|rejection| rejection.line);
    match args.console.format {
        OutputFormat::Json => print_json(&serde_json::json!({
            "accepted": summary.accepted,
            "contactsCreated": summary.contacts_created,
            "leadsCreated": summary.leads_created,
            "validateOnly": args.validate_only,
            "rejected": summary.rejected.iter().map(|rejection| serde_json::json!({
                "line": rejection.line,
                "field": rejection.field,
                "reason": rejection.reason,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => print(&render(&summary, args.validate_only)),
    }?;
    if summary.rejected.is_empty() {
        Ok(())
    } else {
        Err(ConsoleError::Input(format!(
            "{} rows were rejected",
            summary.rejected.len()
        )))
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ConsoleError> {
    std::fs::read(path)
        .map_err(|error| ConsoleError::Input(format!("cannot read {}: {error}", path.display())))
}

fn render(summary: &ImportSummary, validate_only: bool) -> String {
    let mut text = if validate_only {
        format!(
            "{} rows valid, {} rejected (nothing written)\n",
            summary.accepted,
            summary.rejected.len()
        )
    } else {
        format!(
            "{} rows imported ({} new contacts, {} new leads), {} rejected\n",
            summary.accepted,
            summary.contacts_created,
            summary.leads_created,
            summary.rejected.len()
        )
    };
    let mut table = Table::new(&[">LINE", "FIELD", "REASON"]);
    for rejection in summary.rejected.iter().take(SHOWN_REJECTIONS) {
        table.row([
            rejection.line.to_string(),
            rejection.field.clone(),
            rejection.reason.clone(),
        ]);
    }
    if !table.is_empty() {
        text.push_str(&table.render());
        if summary.rejected.len() > SHOWN_REJECTIONS {
            text.push_str(&format!(
                "... and {} more (--format json lists them all)\n",
                summary.rejected.len() - SHOWN_REJECTIONS
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_map_to_the_profile_and_the_rest_become_custom_fields() {
        let csv = "email,first_name,Company,employee_count,country_code,utm_campaign,badge\n\
                   ida@acme.example,Ida,Acme,\"1,200\",DE,fair-2026,B-17\n";
        let parsed = parse_csv(csv.as_bytes(), "erp", "trade-fair", false, "k").expect("parsed");
        assert!(parsed.rejected.is_empty());
        let row = &parsed.rows[0];
        assert_eq!(row.line_number, 2);
        assert_eq!(row.idempotency_key, "k:2");
        let contact = row.contact.as_ref().expect("contact");
        assert_eq!(
            (contact.email.as_str(), contact.first_name.as_str()),
            ("ida@acme.example", "Ida")
        );
        let lead = row.lead.as_ref().expect("lead");
        assert_eq!(
            (lead.company_name.as_str(), lead.employee_count),
            ("Acme", 1200)
        );
        assert_eq!(
            row.attribution.as_ref().map(|a| a.campaign.as_str()),
            Some("fair-2026")
        );
        assert_eq!(
            row.custom_fields.get("badge").map(String::as_str),
            Some("B-17")
        );
        assert!(row.consent.is_none());
        assert_eq!(row.source, "trade-fair");
    }

    #[test]
    fn a_row_with_a_bad_number_or_time_is_refused_naming_its_line_and_field() {
        let csv = "email,employees,consent_wording_version,consent_given_at\n\
                   a@x.example,many,,\n\
                   b@x.example,5,v1,yesterday\n\
                   c@x.example,5,v1,2026-03-01\n";
        let parsed = parse_csv(csv.as_bytes(), "", "import", true, "k").expect("parsed");
        let refused: Vec<(u64, &str)> = parsed
            .rejected
            .iter()
            .map(|rejection| (rejection.line, rejection.field.as_str()))
            .collect();
        assert_eq!(
            refused,
            vec![(2, "lead.employee_count"), (3, "consent.given_at")]
        );
        assert_eq!(parsed.rows.len(), 1);
        let consent = parsed.rows[0].consent.as_ref().expect("consent");
        assert_eq!(consent.wording_version, "v1");
        assert!(parsed.rows[0].validate_only);
    }

    #[test]
    fn a_file_without_an_email_column_is_refused() {
        let error = parse_csv(b"name\nIda\n", "", "import", false, "k").expect_err("no email");
        assert!(error.to_string().contains("email"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any bytes at all are refused as a whole or read row by row; never a panic.
        #[test]
        fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(
            proptest::prelude::any::<u8>(),
            0..2_000,
        )) {
            let _ = parse_csv(&bytes, "erp", "import", false, "k");
        }

        /// Under a valid header any rows either become requests or are rejected with their
        /// line and field; each line of the file is accounted for once at most.
        #[test]
        fn any_rows_under_a_header_are_sent_or_rejected_by_line(
            rows in proptest::collection::vec(
                proptest::collection::vec("[^\n\r]{0,40}", 0..6),
                0..30,
            ),
        ) {
            let mut file = String::from("email,first_name,company,employee_count,country_code,opted_in\n");
            for row in &rows {
                file.push_str(&row.join(","));
                file.push('\n');
            }
            if let Ok(parsed) = parse_csv(file.as_bytes(), "erp", "import", false, "k") {
                proptest::prop_assert!(parsed.rows.len() + parsed.rejected.len() <= rows.len());
                for rejection in &parsed.rejected {
                    proptest::prop_assert!(rejection.line >= 2, "{rejection:?}");
                    proptest::prop_assert!(!rejection.reason.is_empty(), "{rejection:?}");
                }
            }
        }
    }
}
