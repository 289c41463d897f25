//! The way in, end to end on PostgreSQL/Redis and on the embedded mode: an anonymous
//! visitor browses, submits a form with opt-in through the HTTP ingress, confirms by the
//! mailed link; colleagues of the same company and site join the same lead, a colleague of
//! another site becomes a second lead of the same account; retries create nothing twice;
//! every accepted activity is published exactly once.

use std::collections::HashMap;

use leadflow_proto::{
    capture::v1::{
        ActivityInput, CreateFormRequest, Form, FormFieldKind, GetAccountRequest,
        GetConsentRequest, GetContactRequest, GetLeadRequest, ListActivitiesRequest, RecordOutcome,
        SubmitFormRequest, TrackActivitiesRequest, TrackActivityRequest, WithdrawConsentRequest,
        activity_input, get_consent_request, get_contact_request, list_activities_request,
        withdraw_consent_request,
    },
    common::v1::{ActivityType, CampaignAttribution, LeadProfile},
    events::v1::{ConsentChannel, ConsentState, EventEnvelope, event_envelope::Payload},
};
use leadflow_tests::TestSuite;
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

use crate::capture::field;

/// What capture wrote, read straight from its store: the outbox and the queued mails.
pub(crate) enum CaptureRecords {
    Postgres(sqlx::PgPool),
    Embedded(sqlx::SqlitePool),
}

impl CaptureRecords {
    /// Opens capture's store of `suite`: its PostgreSQL database, or the embedded file in
    /// `data_dir`.
    pub(crate) async fn open(
        suite: &TestSuite,
        data_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        Ok(match data_dir {
            None => Self::Postgres(suite.database_pool().await?),
            Some(data_dir) => {
                let path = data_dir.join("capture.sqlite3");
                Self::Embedded(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect(&format!("sqlite://{}?mode=ro", path.display()))
                        .await?,
                )
            }
        })
    }

    /// Every event capture published, in outbox order.
    pub(crate) async fn events(&self) -> anyhow::Result<Vec<EventEnvelope>> {
        let rows: Vec<Vec<u8>> = match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT envelope FROM capture.outbox ORDER BY seq")
                    .fetch_all(pool)
                    .await?
            }
            Self::Embedded(pool) => {
                sqlx::query_scalar("SELECT envelope FROM outbox ORDER BY seq")
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|bytes| EventEnvelope::decode(bytes.as_slice()))
            .collect::<Result<_, _>>()?)
    }

    /// Every stored answer of a call, kept for retries with the same idempotency key.
    pub(crate) async fn stored_answers(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        Ok(match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT response FROM capture.call_responses")
                    .fetch_all(pool)
                    .await?
            }
            Self::Embedded(pool) => {
                sqlx::query_scalar("SELECT response FROM call_responses")
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// What every idempotency key keeps of its request.
    pub(crate) async fn key_requests(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        Ok(match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT request FROM capture.idempotency_keys")
                    .fetch_all(pool)
                    .await?
            }
            Self::Embedded(pool) => {
                sqlx::query_scalar("SELECT request FROM idempotency_keys")
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// The links of the mails queued for `recipient`, oldest first.
    pub(crate) async fn mailed_links(&self, recipient: &str) -> anyhow::Result<Vec<String>> {
        Ok(match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT link FROM capture.outbound_mails WHERE recipient = $1 \
                     ORDER BY create_time, mail_id",
                )
                .bind(recipient)
                .fetch_all(pool)
                .await?
            }
            Self::Embedded(pool) => {
                sqlx::query_scalar(
                    "SELECT link FROM outbound_mails WHERE recipient = $1 \
                     ORDER BY create_time, mail_id",
                )
                .bind(recipient)
                .fetch_all(pool)
                .await?
            }
        })
    }
}

/// The path and query of a link, to send it to the suite's ingress.
pub(crate) fn path_of(link: &str) -> String {
    let without_scheme = link.split_once("://").map_or(link, |(_, rest)| rest);
    without_scheme.find('/').map_or_else(
        || "/".to_owned(),
        |slash| without_scheme[slash..].to_owned(),
    )
}

/// A double opt-in form asking for the company and the site.
pub(crate) fn trade_fair_form() -> Form {
    Form {
        name: "ERP checklist".to_owned(),
        product: "erp".to_owned(),
        fields: vec![
            field("email", FormFieldKind::Email, "contact.email", true),
            field(
                "first_name",
                FormFieldKind::Text,
                "contact.first_name",
                true,
            ),
            field("company", FormFieldKind::Text, "lead.company_name", true),
            field("site", FormFieldKind::Text, "lead.site", false),
            field("job_title", FormFieldKind::Text, "contact.job_title", false),
        ],
        consent_wording: "Send me ERP news by mail.".to_owned(),
        consent_wording_version: "2026-11".to_owned(),
        double_opt_in: true,
        ask_next_fields: vec!["job_title".to_owned()],
        allowed_origins: vec!["https://www.example.com".to_owned()],
        ..Default::default()
    }
}

/// A submission of `values` with consent given.
pub(crate) fn submission(form_id: &str, key: &str, values: &[(&str, &str)]) -> SubmitFormRequest {
    SubmitFormRequest {
        form_id: form_id.to_owned(),
        values: values
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        consent_given: true,
        idempotency_key: key.to_owned(),
        ..Default::default()
    }
}

fn page_visit(visitor_id: &str, page: &str) -> ActivityInput {
    ActivityInput {
        subject: Some(activity_input::Subject::VisitorId(visitor_id.to_owned())),
        r#type: ActivityType::PageVisited.into(),
        product: "erp".to_owned(),
        source: "website".to_owned(),
        attributes: std::collections::BTreeMap::from([("page".to_owned(), page.to_owned())]),
        ..Default::default()
    }
}

async fn the_way_in(suite: &TestSuite, records: &CaptureRecords) -> anyhow::Result<()> {
    let mut capture = suite.capture();
    let form = capture
        .create_form(CreateFormRequest {
            form: Some(trade_fair_form()),
            idempotency_key: "form-1".to_owned(),
        })
        .await?
        .into_inner()
        .form
        .expect("form");

    // Anonymous browsing: one call, then a batch.
    let visitor = "v-7f3a9c";
    let first_visit = capture
        .track_activity(TrackActivityRequest {
            activity: Some(page_visit(visitor, "/erp")),
            idempotency_key: "visit-1".to_owned(),
        })
        .await?
        .into_inner()
        .activity
        .expect("activity");
    assert!(first_visit.contact_id.is_empty(), "still anonymous");
    let batch = tokio_stream::iter(vec![
        TrackActivitiesRequest {
            activity: Some(page_visit(visitor, "/erp/pricing")),
            idempotency_key: "visit-2".to_owned(),
        },
        TrackActivitiesRequest {
            activity: Some(ActivityInput {
                r#type: ActivityType::Unspecified.into(),
                ..page_visit(visitor, "/bad")
            }),
            idempotency_key: "visit-bad".to_owned(),
        },
        TrackActivitiesRequest {
            activity: Some(page_visit(visitor, "/erp/cases")),
            idempotency_key: "visit-3".to_owned(),
        },
    ]);
    let tracked = capture.track_activities(batch).await?.into_inner();
    assert_eq!((tracked.accepted_count, tracked.rejected_count), (2, 1));
    let rejected = tracked.results[1].error.clone().expect("rejected");
    assert_eq!(
        (rejected.code, rejected.field.as_str()),
        (Code::InvalidArgument as i32, "activity.type")
    );

    // The visitor identifies itself on the form, posted by its browser.
    let body = format!(
        "email=Ada.Lovelace%40Example.COM&first_name=Ada&company=Example+AG&site=Berlin\
         &consent_given=on&visitor_id={visitor}&utm_source=newsletter&utm_campaign=erp-q4"
    );
    let posted = suite
        .http(
            "POST",
            &format!("/v1/forms/{}/submissions", form.form_id),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "https://www.example.com"),
                ("user-agent", "Mozilla/5.0 (test)"),
            ],
            body.as_bytes(),
        )
        .await?;
    assert_eq!(posted.status, 200, "{}", posted.text());
    assert_eq!(
        posted.header("access-control-allow-origin"),
        Some("https://www.example.com")
    );
    let answer: serde_json::Value = serde_json::from_slice(&posted.body)?;
    assert_eq!(answer["consent_state"], "CONSENT_STATE_GRANTED");
    assert_eq!(answer["confirmation_sent"], true);
    assert_eq!(
        answer["next_fields"],
        serde_json::json!(["email", "job_title"])
    );

    let ada = capture
        .get_contact(GetContactRequest {
            lookup: Some(get_contact_request::Lookup::Email(
                "Ada.Lovelace@example.com".to_owned(),
            )),
        })
        .await?
        .into_inner()
        .contact
        .expect("contact");
    assert_eq!(
        ada.profile.as_ref().expect("profile").email,
        "ada.lovelace@example.com",
        "emails are kept normalised"
    );
    assert_eq!(ada.visitor_ids, [visitor]);
    assert_eq!(
        ada.first_attribution
            .as_ref()
            .map(|utm| utm.campaign.as_str()),
        Some("erp-q4")
    );
    let history = capture
        .list_activities(ListActivitiesRequest {
            subject: Some(list_activities_request::Subject::ContactId(
                ada.contact_id.clone(),
            )),
            ..Default::default()
        })
        .await?
        .into_inner()
        .activities;
    let types: Vec<ActivityType> = history.iter().map(|activity| activity.r#type()).collect();
    assert_eq!(
        types,
        [
            ActivityType::FormSubmitted,
            ActivityType::PageVisited,
            ActivityType::PageVisited,
            ActivityType::PageVisited
        ],
        "the anonymous visits moved to the contact, most recent first"
    );
    assert!(
        history
            .iter()
            .all(|activity| activity.lead_id == ada.lead_id)
    );

    // The confirmation link from the mail confirms the opt-in, once.
    let links = records.mailed_links("ada.lovelace@example.com").await?;
    assert_eq!(links.len(), 1, "one confirmation mail");
    let confirmed = suite.http("GET", &path_of(&links[0]), &[], b"").await?;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());
    let again = suite.http("GET", &path_of(&links[0]), &[], b"").await?;
    assert_eq!(again.status, 200, "confirming twice is fine");
    let mut forged = path_of(&links[0]);
    forged.push('x');
    let forged = suite.http("GET", &forged, &[], b"").await?;
    assert_eq!(forged.status, 400, "an altered token is refused");
    let consent = capture
        .get_consent(GetConsentRequest {
            contact: Some(get_consent_request::Contact::ContactId(
                ada.contact_id.clone(),
            )),
            purpose: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(consent.current.len(), 1);
    assert_eq!(consent.current[0].state(), ConsentState::Confirmed);
    let evidence: Vec<(ConsentState, ConsentChannel)> = consent
        .history
        .iter()
        .map(|record| (record.state(), record.channel()))
        .collect();
    assert_eq!(
        evidence,
        [
            (ConsentState::Granted, ConsentChannel::Form),
            (ConsentState::Confirmed, ConsentChannel::ConfirmationLink)
        ]
    );
    let grant = &consent.history[0];
    assert_eq!(grant.form_id, form.form_id);
    assert_eq!(grant.wording_version, "2026-11");
    assert_eq!(grant.wording, "Send me ERP news by mail.");
    let client = grant.client.clone().expect("evidence of the browser");
    assert_eq!(client.ip_address, "127.0.0.1");
    assert_eq!(client.user_agent, "Mozilla/5.0 (test)");
    assert_eq!(consent.history[1].confirms_consent_id, grant.consent_id);

    // A colleague at the same site joins the lead; one at another site is a second lead.
    let grace = capture
        .submit_form(submission(
            &form.form_id,
            "grace-1",
            &[
                ("email", "grace@example.com"),
                ("first_name", "Grace"),
                ("company", "Example AG"),
                ("site", " berlin "),
            ],
        ))
        .await?
        .into_inner();
    assert_eq!(grace.lead_id, ada.lead_id, "same company, same site");
    assert_eq!(grace.contact_outcome(), RecordOutcome::Created);
    assert_eq!(grace.lead_outcome(), RecordOutcome::Unchanged);
    let retried = capture
        .submit_form(submission(
            &form.form_id,
            "grace-1",
            &[
                ("email", "grace@example.com"),
                ("first_name", "Grace"),
                ("company", "Example AG"),
                ("site", " berlin "),
            ],
        ))
        .await?
        .into_inner();
    assert_eq!(retried, grace, "a retry gets the first answer");
    let reused = capture
        .submit_form(submission(
            &form.form_id,
            "grace-1",
            &[
                ("email", "grace@example.com"),
                ("first_name", "Grace Hopper"),
                ("company", "Example AG"),
            ],
        ))
        .await
        .expect_err("the same key with another payload");
    assert_eq!(reused.code(), Code::AlreadyExists);

    let linus = capture
        .submit_form(SubmitFormRequest {
            lead: Some(LeadProfile {
                web_domain: "https://www.example.com/".to_owned(),
                ..Default::default()
            }),
            attribution: Some(CampaignAttribution {
                source: "trade-fair".to_owned(),
                ..Default::default()
            }),
            ..submission(
                &form.form_id,
                "linus-1",
                &[
                    ("email", "linus@example-mail.org"),
                    ("first_name", "Linus"),
                    ("company", "Example AG"),
                    ("site", "Plant Hamburg"),
                ],
            )
        })
        .await?
        .into_inner();
    assert_ne!(
        linus.lead_id, ada.lead_id,
        "another site is another buying unit"
    );
    assert_eq!(linus.lead_outcome(), RecordOutcome::Created);
    assert_eq!(linus.account_id, grace.account_id, "the same company");
    assert_eq!(linus.account_outcome(), RecordOutcome::Unchanged);

    let lead = capture
        .get_lead(GetLeadRequest {
            lead_id: ada.lead_id.clone(),
        })
        .await?
        .into_inner();
    let mut emails: Vec<String> = lead
        .contacts
        .iter()
        .map(|contact| contact.profile.clone().unwrap_or_default().email)
        .collect();
    emails.sort();
    assert_eq!(emails, ["ada.lovelace@example.com", "grace@example.com"]);
    assert_eq!(lead.lead.expect("lead").contact_count, 2);
    let account = capture
        .get_account(GetAccountRequest {
            account_id: grace.account_id.clone(),
        })
        .await?
        .into_inner();
    let account_message = account.account.expect("account");
    assert_eq!(account_message.web_domain, "example.com");
    assert_eq!(account_message.name, "Example AG");
    assert_eq!(account.leads.len(), 2);

    // Unsubscribing takes effect at once and is published.
    let withdrawn = capture
        .withdraw_consent(WithdrawConsentRequest {
            subject: Some(withdraw_consent_request::Subject::ContactId(
                ada.contact_id.clone(),
            )),
            idempotency_key: "unsubscribe-ada".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(withdrawn.consents.len(), 1);
    assert_eq!(withdrawn.consents[0].state(), ConsentState::Withdrawn);

    // Every accepted activity is an event exactly once; nothing else is.
    let events = records.events().await?;
    let mut recorded: HashMap<String, usize> = HashMap::new();
    for event in &events {
        if let Some(Payload::ActivityRecorded(activity)) = &event.payload {
            *recorded.entry(activity.activity_id.clone()).or_default() += 1;
        }
    }
    let mut accepted: Vec<String> = history.iter().map(|a| a.activity_id.clone()).collect();
    for contact in [&grace.contact_id, &linus.contact_id] {
        let listed = capture
            .list_activities(ListActivitiesRequest {
                subject: Some(list_activities_request::Subject::ContactId(contact.clone())),
                ..Default::default()
            })
            .await?
            .into_inner()
            .activities;
        accepted.extend(listed.into_iter().map(|a| a.activity_id));
    }
    assert_eq!(
        accepted.len(),
        6,
        "four of Ada's, one each of the colleagues"
    );
    for activity_id in &accepted {
        assert_eq!(recorded.get(activity_id), Some(&1), "{activity_id}");
    }
    assert_eq!(
        recorded.len(),
        accepted.len(),
        "no other activity was published"
    );
    let consent_changes: Vec<ConsentState> = events
        .iter()
        .filter_map(|event| match &event.payload {
            Some(Payload::ConsentChanged(change)) if change.contact_id == ada.contact_id => {
                Some(change.state())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        consent_changes,
        [
            ConsentState::Granted,
            ConsentState::Confirmed,
            ConsentState::Withdrawn
        ]
    );
    let captured = events
        .iter()
        .filter(|event| matches!(&event.payload, Some(Payload::ContactCaptured(_))))
        .count();
    assert_eq!(captured, 3, "one capture per submission, none for retries");
    Ok(())
}

#[tokio::test]
async fn the_way_in_on_postgres() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    the_way_in(&suite, &records).await?;
    suite.stop().await
}

#[tokio::test]
async fn the_way_in_embedded() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let records = CaptureRecords::open(&suite, Some(&data_dir)).await?;
    the_way_in(&suite, &records).await?;
    suite.stop().await?;
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}

#[tokio::test]
async fn a_bad_submission_names_its_field_and_writes_nothing() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    let mut capture = suite.capture();
    let form = capture
        .create_form(CreateFormRequest {
            form: Some(trade_fair_form()),
            idempotency_key: "form-1".to_owned(),
        })
        .await?
        .into_inner()
        .form
        .expect("form");
    let long_name = "x".repeat(201);
    let cases: Vec<(SubmitFormRequest, Code, &str)> = vec![
        (
            submission(
                &form.form_id,
                "k1",
                &[
                    ("email", "not-an-email"),
                    ("first_name", "A"),
                    ("company", "C"),
                ],
            ),
            Code::InvalidArgument,
            "values[\"email\"]",
        ),
        (
            submission(
                &form.form_id,
                "k2",
                &[("email", "a@example.com"), ("company", "C")],
            ),
            Code::InvalidArgument,
            "values[\"first_name\"]",
        ),
        (
            submission(
                &form.form_id,
                "k3",
                &[
                    ("email", "a@example.com"),
                    ("first_name", &long_name),
                    ("company", "C"),
                ],
            ),
            Code::InvalidArgument,
            "values[\"first_name\"]",
        ),
        (
            submission(
                &form.form_id,
                "k4",
                &[
                    ("email", "a@example.com"),
                    ("first_name", "A"),
                    ("company", "C"),
                    ("fax", "1"),
                ],
            ),
            Code::InvalidArgument,
            "values[\"fax\"]",
        ),
        (
            submission(
                &form.form_id,
                "",
                &[
                    ("email", "a@example.com"),
                    ("first_name", "A"),
                    ("company", "C"),
                ],
            ),
            Code::InvalidArgument,
            "idempotency_key",
        ),
        (
            submission(
                &uuid::Uuid::now_v7().to_string(),
                "k6",
                &[("email", "a@example.com")],
            ),
            Code::NotFound,
            "",
        ),
    ];
    for (request, code, field) in cases {
        let status = capture
            .submit_form(request)
            .await
            .expect_err("a bad submission");
        assert_eq!(status.code(), code, "{field}: {status:?}");
        if !field.is_empty() {
            let violations = status.get_details_bad_request().expect("field violations");
            assert!(
                violations
                    .field_violations
                    .iter()
                    .any(|violation| violation.field == field),
                "{field} named in {violations:?}"
            );
        }
    }
    let unknown = capture
        .get_contact(GetContactRequest {
            lookup: Some(get_contact_request::Lookup::Email(
                "a@example.com".to_owned(),
            )),
        })
        .await
        .expect_err("nothing was written");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(records.events().await?.is_empty(), "nothing was published");
    assert!(records.mailed_links("a@example.com").await?.is_empty());
    suite.stop().await
}

/// One stream, written in one transaction: a visitor's second activity sees the visitor
/// its first made, a bad item is undone alone, a key repeated in the stream answers what
/// it answered first, the same key with another payload is refused, and the whole stream
/// sent again records nothing twice and answers the same.
async fn a_stream_is_written_at_once_and_each_activity_once(
    suite: &TestSuite,
    records: &CaptureRecords,
) -> anyhow::Result<()> {
    let mut capture = suite.capture();
    let item = |activity: ActivityInput, key: &str| TrackActivitiesRequest {
        activity: Some(activity),
        idempotency_key: key.to_owned(),
    };
    let unknown_contact = ActivityInput {
        subject: Some(activity_input::Subject::ContactId(
            uuid::Uuid::now_v7().to_string(),
        )),
        ..page_visit("unused", "/erp")
    };
    let stream = vec![
        item(page_visit("v-one", "/erp"), "s-1"),
        item(page_visit("v-two", "/erp"), "s-2"),
        item(unknown_contact, "s-3"),
        item(page_visit("v-one", "/erp/pricing"), "s-4"),
        item(page_visit("v-one", "/erp"), "s-1"),
        item(page_visit("v-one", "/erp/other"), "s-1"),
    ];
    let first = capture
        .track_activities(tokio_stream::iter(stream.clone()))
        .await?
        .into_inner();
    assert_eq!((first.accepted_count, first.rejected_count), (4, 2));
    let codes: Vec<i32> = first
        .results
        .iter()
        .map(|result| result.error.as_ref().map_or(0, |error| error.code))
        .collect();
    assert_eq!(
        codes,
        [
            0,
            0,
            Code::NotFound as i32,
            0,
            0,
            Code::AlreadyExists as i32
        ]
    );
    let ids: Vec<String> = first
        .results
        .iter()
        .map(|result| {
            result
                .activity
                .as_ref()
                .map(|activity| activity.activity_id.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(ids[4], ids[0], "a repeated key answers its first answer");

    let again = capture
        .track_activities(tokio_stream::iter(stream))
        .await?
        .into_inner();
    let ids_again: Vec<String> = again
        .results
        .iter()
        .map(|result| {
            result
                .activity
                .as_ref()
                .map(|activity| activity.activity_id.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(ids_again, ids, "a retried stream answers the same");

    let listed = capture
        .list_activities(ListActivitiesRequest {
            subject: Some(list_activities_request::Subject::VisitorId(
                "v-one".to_owned(),
            )),
            ..Default::default()
        })
        .await?
        .into_inner()
        .activities;
    assert_eq!(listed.len(), 2, "v-one's two activities, each once");
    let recorded = records
        .events()
        .await?
        .into_iter()
        .filter(|event| matches!(event.payload, Some(Payload::ActivityRecorded(_))))
        .count();
    assert_eq!(recorded, 3, "one ActivityRecorded per activity");
    Ok(())
}

#[tokio::test]
async fn a_stream_is_written_at_once_and_each_activity_once_on_postgres() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    a_stream_is_written_at_once_and_each_activity_once(&suite, &records).await?;
    suite.stop().await
}

#[tokio::test]
async fn a_stream_is_written_at_once_and_each_activity_once_embedded() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let records = CaptureRecords::open(&suite, Some(&data_dir)).await?;
    a_stream_is_written_at_once_and_each_activity_once(&suite, &records).await?;
    suite.stop().await?;
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}
