//! Data protection across the suite: an erasure leaves only a tombstone in capture and
//! reaches every service through `ContactErased`, an erased email comes back only with new
//! consent, the retention policy erases inactive contacts, and an export gathers every
//! service's part into one JSON document. Each scenario runs on PostgreSQL and Redis and
//! on the embedded store.

use std::{sync::Arc, time::Duration};

use leadflow_capture::links::LinkSigner;
use leadflow_platform::time::ManualClock;
use leadflow_proto::{
    capture::v1::{
        ActivityInput, CreateFormRequest, EraseContactRequest, EraseContactResponse,
        ExportContactRequest, Form, GetConsentRequest, GetContactRequest, GetLeadRequest,
        ImportLeadsRequest, ListActivitiesRequest, SubmitFormRequest, TrackActivityRequest,
        activity_input, erase_contact_request, export_contact_request, get_consent_request,
        get_contact_request, list_activities_request,
    },
    common::v1::{ActivityType, ContactProfile, LeadProfile},
    events::v1::{ErasureReason, EventEnvelope, event_envelope::Payload},
    nurturing::v1::{ListEnrollmentsRequest, ListSendsRequest},
    routing::v1::ListAssignmentsRequest,
    scoring::v1::{ExplainScoreRequest, GetScoreRequest},
};
use leadflow_tests::{TEST_LINK_KEY, TestSuite, eventually};
use prost::Message;
use tonic::Code;
use uuid::Uuid;

use crate::{
    capture_api::violated_fields,
    intake::{CaptureRecords, submission, trade_fair_form},
};

const EMAIL: &str = "dana.erase@example-gmbh.de";
const VISITOR: &str = "v-erase-0001";
const SETTLE: Duration = Duration::from_secs(20);

fn erase_request(email: &str, key: &str) -> EraseContactRequest {
    EraseContactRequest {
        contact: Some(erase_contact_request::Contact::Email(email.to_owned())),
        reason: ErasureReason::SubjectRequest as i32,
        note: "ticket DP-17".to_owned(),
        idempotency_key: key.to_owned(),
    }
}

fn single_opt_in_form() -> Form {
    Form {
        double_opt_in: false,
        ..trade_fair_form()
    }
}

async fn form_of(suite: &TestSuite) -> anyhow::Result<String> {
    Ok(suite
        .capture()
        .create_form(CreateFormRequest {
            form: Some(single_opt_in_form()),
            idempotency_key: Uuid::now_v7().to_string(),
        })
        .await?
        .into_inner()
        .form
        .expect("form")
        .form_id)
}

fn person(form_id: &str, email: &str) -> SubmitFormRequest {
    SubmitFormRequest {
        visitor_id: VISITOR.to_owned(),
        ..submission(
            form_id,
            &Uuid::now_v7().to_string(),
            &[
                ("email", email),
                ("first_name", "Dana"),
                ("company", "Example GmbH"),
                ("site", "Stuttgart"),
            ],
        )
    }
}

fn download_by(contact_id: &str) -> TrackActivityRequest {
    TrackActivityRequest {
        activity: Some(ActivityInput {
            subject: Some(activity_input::Subject::ContactId(contact_id.to_owned())),
            r#type: ActivityType::VideoCompleted.into(),
            product: "erp".to_owned(),
            source: "website".to_owned(),
            ..Default::default()
        }),
        idempotency_key: Uuid::now_v7().to_string(),
    }
}

/// The anonymous visit, the submission that names the visitor, and a download.
async fn captured_person(suite: &TestSuite, form_id: &str) -> anyhow::Result<(String, String)> {
    let mut capture = suite.capture();
    capture
        .track_activity(TrackActivityRequest {
            activity: Some(ActivityInput {
                subject: Some(activity_input::Subject::VisitorId(VISITOR.to_owned())),
                r#type: ActivityType::PageVisited.into(),
                product: "erp".to_owned(),
                source: "website".to_owned(),
                ..Default::default()
            }),
            idempotency_key: Uuid::now_v7().to_string(),
        })
        .await?;
    let submitted = capture
        .submit_form(person(form_id, EMAIL))
        .await?
        .into_inner();
    capture
        .track_activity(download_by(&submitted.contact_id))
        .await?;
    Ok((submitted.contact_id, submitted.lead_id))
}

async fn erasure_leaves_only_a_tombstone(
    suite: &TestSuite,
    records: &CaptureRecords,
    link_key: &[u8],
) -> anyhow::Result<()> {
    let mut capture = suite.capture();
    let form_id = form_of(suite).await?;
    let (contact_id, lead_id) = captured_person(suite, &form_id).await?;

    // Bad requests name their field and erase nothing.
    let mut nobody = erase_request(EMAIL, "erase-bad-1");
    nobody.contact = None;
    let mut no_reason = erase_request(EMAIL, "erase-bad-2");
    no_reason.reason = ErasureReason::Unspecified as i32;
    let mut personal_note = erase_request(EMAIL, "erase-bad-3");
    personal_note.note = format!("asked by {EMAIL}");
    for (request, field) in [
        (nobody, "contact"),
        (no_reason, "reason"),
        (erase_request(EMAIL, ""), "idempotency_key"),
        (personal_note, "note"),
        (erase_request("not an email", "erase-bad-4"), "email"),
    ] {
        let refused = capture.erase_contact(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(violated_fields(&refused), [field], "{refused:?}");
    }
    capture
        .get_contact(GetContactRequest {
            lookup: Some(get_contact_request::Lookup::ContactId(contact_id.clone())),
        })
        .await?;

    let erased = capture
        .erase_contact(erase_request(EMAIL, "erase-1"))
        .await?
        .into_inner();
    let tombstone = erased.tombstone.clone().expect("tombstone");
    assert_eq!(tombstone.contact_id, contact_id);
    let signer = LinkSigner::new(link_key, &[]).expect("key");
    assert_eq!(
        tombstone.email_hash,
        leadflow_capture::email_hash(&signer, EMAIL)
    );
    assert!(!tombstone.email_hash.contains("example"), "{tombstone:?}");
    assert_eq!(tombstone.reason(), ErasureReason::SubjectRequest);
    assert_eq!(
        tombstone.erased_by, "api",
        "calls are not authenticated here"
    );
    assert!(tombstone.erase_time.is_some());

    // A retry answers the same; the key with another request is refused.
    let retried: EraseContactResponse = capture
        .erase_contact(erase_request(EMAIL, "erase-1"))
        .await?
        .into_inner();
    assert_eq!(retried, erased);
    let mut other = erase_request(EMAIL, "erase-1");
    other.note = "ticket DP-18".to_owned();
    let reused = capture.erase_contact(other).await.expect_err("reused");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    // Erasing again by id answers the tombstone; by email, nobody is found.
    let again = capture
        .erase_contact(EraseContactRequest {
            contact: Some(erase_contact_request::Contact::ContactId(
                contact_id.clone(),
            )),
            ..erase_request(EMAIL, "erase-2")
        })
        .await?
        .into_inner();
    assert_eq!(again.tombstone, erased.tombstone);
    let gone = capture
        .erase_contact(erase_request(EMAIL, "erase-3"))
        .await
        .expect_err("nobody has the email now");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");

    // No query of capture finds the person.
    for lookup in [
        get_contact_request::Lookup::ContactId(contact_id.clone()),
        get_contact_request::Lookup::Email(EMAIL.to_owned()),
    ] {
        let missing = capture
            .get_contact(GetContactRequest {
                lookup: Some(lookup),
            })
            .await
            .expect_err("erased");
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    }
    let consent = capture
        .get_consent(GetConsentRequest {
            contact: Some(get_consent_request::Contact::ContactId(contact_id.clone())),
            purpose: String::new(),
        })
        .await
        .expect_err("erased");
    assert_eq!(consent.code(), Code::NotFound, "{consent:?}");
    let export = capture
        .export_contact(ExportContactRequest {
            contact: Some(export_contact_request::Contact::ContactId(
                contact_id.clone(),
            )),
        })
        .await
        .expect_err("erased");
    assert_eq!(export.code(), Code::NotFound, "{export:?}");
    for subject in [
        list_activities_request::Subject::ContactId(contact_id.clone()),
        list_activities_request::Subject::VisitorId(VISITOR.to_owned()),
        list_activities_request::Subject::LeadId(lead_id.clone()),
    ] {
        let listed = capture
            .list_activities(ListActivitiesRequest {
                subject: Some(subject.clone()),
                ..Default::default()
            })
            .await;
        match listed {
            Ok(listed) => assert!(
                listed.get_ref().activities.is_empty(),
                "{subject:?}: {listed:?}"
            ),
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{subject:?}: {status:?}"),
        }
    }
    let lead = capture
        .get_lead(GetLeadRequest {
            lead_id: lead_id.clone(),
        })
        .await?
        .into_inner()
        .lead
        .expect("the company's lead stays");
    assert_eq!(lead.contact_count, 0, "{lead:?}");

    // The outbox names the person only in the erasure itself.
    let events = records.events().await?;
    let naming: Vec<_> = events
        .iter()
        .filter(|event| {
            let bytes = event.encode_to_vec();
            [contact_id.as_str(), EMAIL, VISITOR].iter().any(|name| {
                bytes
                    .windows(name.len())
                    .any(|window| window == name.as_bytes())
            })
        })
        .collect();
    assert_eq!(naming.len(), 1, "{naming:?}");
    let Some(Payload::ContactErased(announced)) = &naming[0].payload else {
        panic!("only ContactErased names the person: {naming:?}");
    };
    assert_eq!(announced.contact_id, contact_id);
    assert_eq!(announced.lead_id, lead_id);
    assert_eq!(announced.visitor_ids, [VISITOR]);
    assert_eq!(announced.reason(), ErasureReason::SubjectRequest);

    // The stored answers that named the person went with their keys, but for the
    // erasure's own; the keys keep digests of their requests, never the values posted.
    let holds = |bytes: &[u8], name: &str| {
        bytes
            .windows(name.len())
            .any(|window| window == name.as_bytes())
    };
    let answers = records.stored_answers().await?;
    let naming: Vec<_> = answers
        .iter()
        .filter(|answer| holds(answer, &contact_id))
        .collect();
    assert!(
        !naming.is_empty(),
        "the erasure's answers are kept for its retries"
    );
    for answer in naming {
        let erasure = EraseContactResponse::decode(answer.as_slice())?;
        assert_eq!(
            erasure.tombstone.map(|tombstone| tombstone.contact_id),
            Some(contact_id.clone()),
            "only an erasure's answer names the person"
        );
    }
    for request in records.key_requests().await? {
        assert!(!holds(&request, EMAIL), "a key keeps a posted email");
        assert!(!holds(&request, "Dana"), "a key keeps a posted name");
    }

    // The email comes back only with new consent.
    let mut without_consent = person(&form_id, EMAIL);
    without_consent.consent_given = false;
    without_consent.visitor_id = String::new();
    let refused = capture
        .submit_form(without_consent)
        .await
        .expect_err("an erased email needs new consent");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("contact.email"), "{refused:?}");
    let imported = capture
        .import_leads(tokio_stream::iter([ImportLeadsRequest {
            line_number: 2,
            contact: Some(ContactProfile {
                email: EMAIL.to_owned(),
                first_name: "Dana".to_owned(),
                ..Default::default()
            }),
            lead: Some(LeadProfile {
                company_name: "Example GmbH".to_owned(),
                ..Default::default()
            }),
            product: "erp".to_owned(),
            source: "trade-fair".to_owned(),
            idempotency_key: Uuid::now_v7().to_string(),
            ..Default::default()
        }]))
        .await?
        .into_inner();
    let rows: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(imported).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let error = rows[0].as_ref().expect("a row answer").error.clone();
    let error = error.expect("the row is rejected");
    assert_eq!(error.field, "contact.email", "{error:?}");
    assert_eq!(error.code, Code::FailedPrecondition as i32, "{error:?}");
    let mut with_consent = person(&form_id, EMAIL);
    with_consent.visitor_id = String::new();
    let back = capture.submit_form(with_consent).await?.into_inner();
    assert_ne!(
        back.contact_id, contact_id,
        "a new contact, not the erased one"
    );
    Ok(())
}

/// The envelopes of capture's Redis stream that name `contact_id`, once the relay has
/// published the erasure.
async fn stream_entries_naming(
    suite: &TestSuite,
    contact_id: &str,
) -> anyhow::Result<Vec<EventEnvelope>> {
    let client = redis::Client::open(leadflow_tests::redis_url())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let stream = format!("{}:events:capture", suite.key_prefix());
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await?;
    Ok(reply
        .ids
        .iter()
        .filter_map(|entry| entry.get::<Vec<u8>>("envelope"))
        .filter(|bytes| {
            bytes
                .windows(contact_id.len())
                .any(|window| window == contact_id.as_bytes())
        })
        .map(|bytes| EventEnvelope::decode(bytes.as_slice()))
        .collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn an_erasure_leaves_only_a_tombstone_on_postgresql() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    let mut capture = suite.capture();
    let form_id = form_of(&suite).await?;
    let submitted = capture
        .submit_form(SubmitFormRequest {
            visitor_id: String::new(),
            ..person(&form_id, "stream.check@example-gmbh.de")
        })
        .await?
        .into_inner();
    let published = eventually(SETTLE, || async {
        stream_entries_naming(&suite, &submitted.contact_id)
            .await
            .is_ok_and(|entries| !entries.is_empty())
    })
    .await;
    assert!(published, "the capture reached the stream");
    capture
        .erase_contact(erase_request(
            "stream.check@example-gmbh.de",
            "erase-stream",
        ))
        .await?;
    // The relay deletes the stream entries that name the person before it publishes the
    // erasure, so the stream names them in the erasure only.
    let scrubbed = eventually(SETTLE, || async {
        stream_entries_naming(&suite, &submitted.contact_id)
            .await
            .is_ok_and(|entries| {
                entries.len() == 1 && matches!(entries[0].payload, Some(Payload::ContactErased(_)))
            })
    })
    .await;
    assert!(
        scrubbed,
        "{:?}",
        stream_entries_naming(&suite, &submitted.contact_id).await?
    );
    erasure_leaves_only_a_tombstone(&suite, &records, TEST_LINK_KEY.as_bytes()).await
}

#[tokio::test]
async fn an_erasure_leaves_only_a_tombstone_embedded() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let records = CaptureRecords::open(&suite, Some(&data_dir)).await?;
    // The embedded mode made its own link key on first start.
    let link_key = std::fs::read_to_string(data_dir.join("link-signing.key"))?;
    let outcome =
        erasure_leaves_only_a_tombstone(&suite, &records, link_key.trim().as_bytes()).await;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

#[tokio::test]
async fn the_retention_policy_erases_contacts_inactive_for_three_years() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let suite = TestSuite::start_embedded_with_clock(&data_dir, clock.clone()).await?;
    let form_id = form_of(&suite).await?;
    let mut capture = suite.capture();
    let dormant = capture
        .submit_form(person(&form_id, "dormant@example-gmbh.de"))
        .await?
        .into_inner();
    suite.stop().await?;

    // Two years on, someone new comes; a year and a day later only the first is dormant.
    clock.advance(chrono::Duration::days(2 * 365));
    let suite = TestSuite::start_embedded_with_clock(&data_dir, clock.clone()).await?;
    let mut capture = suite.capture();
    let mut recent = person(&form_id, "recent@example-gmbh.de");
    recent.visitor_id = String::new();
    let recent = capture.submit_form(recent).await?.into_inner();
    suite.stop().await?;
    clock.advance(chrono::Duration::days(365 + 1));

    let suite = TestSuite::start_embedded_with_clock(&data_dir, clock.clone()).await?;
    let mut capture = suite.capture();
    let lookup = |contact_id: &str| GetContactRequest {
        lookup: Some(get_contact_request::Lookup::ContactId(
            contact_id.to_owned(),
        )),
    };
    let erased = eventually(SETTLE, || {
        let mut capture = capture.clone();
        let request = lookup(&dormant.contact_id);
        async move {
            matches!(capture.get_contact(request).await, Err(status) if status.code() == Code::NotFound)
        }
    })
    .await;
    assert!(erased, "the dormant contact is erased at start-up");
    capture.get_contact(lookup(&recent.contact_id)).await?;
    let tombstone = capture
        .erase_contact(EraseContactRequest {
            contact: Some(erase_contact_request::Contact::ContactId(
                dormant.contact_id.clone(),
            )),
            ..erase_request("", "retention-check")
        })
        .await?
        .into_inner()
        .tombstone
        .expect("tombstone");
    assert_eq!(tombstone.reason(), ErasureReason::RetentionPolicy);
    assert_eq!(tombstone.erased_by, leadflow_capture::RETENTION_ERASER);
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// Export, erase, and then no query of any service names the person.
async fn exported_then_erased_everywhere(suite: &TestSuite) -> anyhow::Result<()> {
    let mut capture = suite.capture();
    let form_id = form_of(suite).await?;
    let (contact_id, lead_id) = captured_person(suite, &form_id).await?;
    let scored = eventually(SETTLE, || {
        let mut scoring = suite.scoring();
        let lead_id = lead_id.clone();
        async move {
            scoring
                .get_score(GetScoreRequest {
                    lead_id,
                    product: "erp".to_owned(),
                    as_of_time: None,
                })
                .await
                .is_ok_and(|score| {
                    score
                        .get_ref()
                        .score
                        .as_ref()
                        .is_some_and(|score| score.engagement_points > 0.0)
                })
        }
    })
    .await;
    let score = suite
        .scoring()
        .get_score(GetScoreRequest {
            lead_id: lead_id.clone(),
            product: "erp".to_owned(),
            as_of_time: None,
        })
        .await;
    assert!(scored, "the download is scored: {score:?}");

    let export = capture
        .export_contact(ExportContactRequest {
            contact: Some(export_contact_request::Contact::Email(EMAIL.to_owned())),
        })
        .await?
        .into_inner();
    assert_eq!(export.contact_id, contact_id);
    let document: serde_json::Value = serde_json::from_str(&export.document)?;
    assert_eq!(document["contactId"], contact_id.as_str());
    let section = &document["capture"];
    assert_eq!(
        section["contact"]["profile"]["email"], EMAIL,
        "{document:#}"
    );
    assert_eq!(section["lead"]["leadId"], lead_id.as_str(), "{document:#}");
    assert_eq!(
        section["activities"].as_array().map(Vec::len),
        Some(3),
        "the merged visit, the form submission and the download: {document:#}"
    );
    assert!(
        section["consentHistory"]
            .as_array()
            .is_some_and(|history| !history.is_empty()),
        "{document:#}"
    );
    assert!(
        document["scoring"]["ledgerEntries"]
            .as_array()
            .is_some_and(|entries| !entries.is_empty()),
        "{document:#}"
    );
    assert!(document["nurturing"].is_object(), "{document:#}");
    assert!(
        document["routing"]["assignments"].is_array(),
        "{document:#}"
    );

    capture
        .erase_contact(erase_request(EMAIL, "erase-everywhere"))
        .await?;
    let forgotten = eventually(SETTLE, || {
        let (mut scoring, mut nurturing, mut routing) =
            (suite.scoring(), suite.nurturing(), suite.routing());
        let (contact_id, lead_id) = (contact_id.clone(), lead_id.clone());
        async move {
            let explained = scoring
                .explain_score(ExplainScoreRequest {
                    lead_id: lead_id.clone(),
                    product: "erp".to_owned(),
                    ..Default::default()
                })
                .await;
            let explained_names = match explained {
                Ok(explained) => format!("{:?}", explained.get_ref()).contains(&contact_id),
                Err(_) => false,
            };
            let sends = nurturing
                .list_sends(ListSendsRequest {
                    contact_id: contact_id.clone(),
                    ..Default::default()
                })
                .await
                .map(|sends| sends.get_ref().sends.len())
                .unwrap_or(0);
            let enrollments = nurturing
                .list_enrollments(ListEnrollmentsRequest {
                    contact_id: contact_id.clone(),
                    ..Default::default()
                })
                .await
                .map(|listed| listed.get_ref().enrollments.len())
                .unwrap_or(0);
            let assigned = routing
                .list_assignments(ListAssignmentsRequest {
                    lead_id,
                    ..Default::default()
                })
                .await
                .map(|listed| {
                    listed
                        .get_ref()
                        .assignments
                        .iter()
                        .any(|assignment| assignment.primary_contact_id == contact_id)
                })
                .unwrap_or(false);
            !explained_names && sends == 0 && enrollments == 0 && !assigned
        }
    })
    .await;
    assert!(forgotten, "every service has erased the contact");
    let scoring_part = suite
        .scoring()
        .export_contact_data(leadflow_proto::scoring::v1::ExportContactDataRequest {
            contact_id: contact_id.clone(),
        })
        .await?
        .into_inner();
    assert!(scoring_part.ledger_entries.is_empty(), "{scoring_part:?}");
    let nurturing_part = suite
        .nurturing()
        .export_contact_data(leadflow_proto::nurturing::v1::ExportContactDataRequest {
            contact_id: contact_id.clone(),
        })
        .await?
        .into_inner();
    assert!(
        nurturing_part.enrollments.is_empty() && nurturing_part.sends.is_empty(),
        "{nurturing_part:?}"
    );
    // The lead keeps the points its contacts earned: they describe the company's interest.
    let score = suite
        .scoring()
        .get_score(GetScoreRequest {
            lead_id,
            product: "erp".to_owned(),
            as_of_time: None,
        })
        .await?
        .into_inner()
        .score
        .expect("score");
    assert!(score.engagement_points > 0.0, "{score:?}");
    Ok(())
}

#[tokio::test]
async fn an_export_gathers_every_service_and_an_erasure_reaches_them_on_postgresql()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    exported_then_erased_everywhere(&suite).await
}

#[tokio::test]
async fn an_export_gathers_every_service_and_an_erasure_reaches_them_embedded() -> anyhow::Result<()>
{
    let data_dir = crate::embedded::temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let outcome = exported_then_erased_everywhere(&suite).await;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    request
}

#[tokio::test]
async fn an_export_asks_the_other_services_with_the_caller_s_token() -> anyhow::Result<()> {
    use crate::auth::{ADMIN, EVERY_AREA_SCOPE, Scratch, secret};

    let scratch = Scratch::new()?;
    let suite = TestSuite::start_embedded_with_tokens(&scratch.data(), &scratch.tokens()).await?;
    let mut capture = suite.capture();
    let admin = secret(ADMIN);
    let form = capture
        .create_form(with_token(
            CreateFormRequest {
                form: Some(single_opt_in_form()),
                idempotency_key: Uuid::now_v7().to_string(),
            },
            &admin,
        ))
        .await?
        .into_inner()
        .form
        .expect("form");
    let mut submitted = person(&form.form_id, EMAIL);
    submitted.visitor_id = String::new();
    let submitted = capture
        .submit_form(with_token(submitted, &admin))
        .await?
        .into_inner();
    let by_id = || ExportContactRequest {
        contact: Some(export_contact_request::Contact::ContactId(
            submitted.contact_id.clone(),
        )),
    };
    let denied = capture
        .export_contact(with_token(by_id(), &secret(EVERY_AREA_SCOPE)))
        .await
        .expect_err("an export needs admin");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // The peers check the token capture passes on: without it they would refuse the export.
    let export = capture
        .export_contact(with_token(by_id(), &admin))
        .await?
        .into_inner();
    let document: serde_json::Value = serde_json::from_str(&export.document)?;
    assert!(document["scoring"].is_object(), "{document:#}");
    let erased = capture
        .erase_contact(with_token(erase_request(EMAIL, "erase-by-admin"), &admin))
        .await?
        .into_inner();
    assert_eq!(
        erased.tombstone.expect("tombstone").erased_by,
        ADMIN,
        "the tombstone names the token that asked"
    );
    suite.stop().await
}

async fn rectification(suite: &TestSuite, records: &CaptureRecords) -> anyhow::Result<()> {
    use leadflow_proto::capture::v1::{UpdateContactRequest, UpdateLeadRequest};
    use prost_types::FieldMask;

    let mut capture = suite.capture();
    let form_id = form_of(suite).await?;
    let (contact_id, lead_id) = captured_person(suite, &form_id).await?;
    let mut other = person(&form_id, "other.person@example-gmbh.de");
    other.visitor_id = String::new();
    let other = capture.submit_form(other).await?.into_inner();
    let mask = |paths: &[&str]| {
        Some(FieldMask {
            paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        })
    };
    let change = |paths: &[&str], key: &str| UpdateContactRequest {
        contact_id: contact_id.clone(),
        profile: Some(ContactProfile {
            last_name: "Berg".to_owned(),
            job_title: "Head of Finance".to_owned(),
            email: "Dana.Berg@Example-GmbH.de".to_owned(),
            ..Default::default()
        }),
        custom_fields: [("erp_system".to_owned(), "SAP R/3".to_owned())].into(),
        lead_id: String::new(),
        update_mask: mask(paths),
        idempotency_key: key.to_owned(),
    };

    for (request, field, code) in [
        (change(&[], "u-bad-1"), "update_mask", Code::InvalidArgument),
        (
            change(&["profile.shoe_size"], "u-bad-2"),
            "update_mask.paths",
            Code::InvalidArgument,
        ),
        (
            UpdateContactRequest {
                contact_id: String::new(),
                ..change(&["profile.job_title"], "u-bad-3")
            },
            "contact_id",
            Code::InvalidArgument,
        ),
        (
            change(&["profile.job_title"], ""),
            "idempotency_key",
            Code::InvalidArgument,
        ),
        (
            UpdateContactRequest {
                profile: Some(ContactProfile {
                    email: "not an email".to_owned(),
                    ..Default::default()
                }),
                ..change(&["profile.email"], "u-bad-4")
            },
            "profile.email",
            Code::InvalidArgument,
        ),
    ] {
        let refused = capture.update_contact(request).await.expect_err("refused");
        assert_eq!(refused.code(), code, "{refused:?}");
        assert_eq!(violated_fields(&refused), [field], "{refused:?}");
    }
    let taken = capture
        .update_contact(UpdateContactRequest {
            profile: Some(ContactProfile {
                email: "other.person@example-gmbh.de".to_owned(),
                ..Default::default()
            }),
            ..change(&["profile.email"], "u-taken")
        })
        .await
        .expect_err("another contact has the email");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    let no_lead = capture
        .update_contact(UpdateContactRequest {
            lead_id: Uuid::now_v7().to_string(),
            ..change(&["lead_id"], "u-no-lead")
        })
        .await
        .expect_err("no such lead");
    assert_eq!(no_lead.code(), Code::NotFound, "{no_lead:?}");

    let paths = [
        "profile.last_name",
        "profile.job_title",
        "profile.email",
        "custom_fields",
    ];
    let updated = capture
        .update_contact(change(&paths, "u-1"))
        .await?
        .into_inner();
    let contact = updated.contact.clone().expect("contact");
    let profile = contact.profile.clone().expect("profile");
    assert_eq!(profile.last_name, "Berg");
    assert_eq!(profile.job_title, "Head of Finance");
    assert_eq!(profile.email, "dana.berg@example-gmbh.de", "normalised");
    assert_eq!(profile.first_name, "Dana", "paths not named stay");
    assert_eq!(
        contact.custom_fields.get("erp_system").map(String::as_str),
        Some("SAP R/3")
    );
    let retried = capture
        .update_contact(change(&paths, "u-1"))
        .await?
        .into_inner();
    assert_eq!(retried, updated, "a retry gets the first answer");
    let reused = capture
        .update_contact(change(&["profile.job_title"], "u-1"))
        .await
        .expect_err("the key with another request");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let found = capture
        .get_contact(GetContactRequest {
            lookup: Some(get_contact_request::Lookup::Email(
                "dana.berg@example-gmbh.de".to_owned(),
            )),
        })
        .await?
        .into_inner()
        .contact
        .expect("contact");
    assert_eq!(found.contact_id, contact_id);

    // A lead update reaches scoring through one ContactCaptured per contact.
    let refused = capture
        .update_lead(UpdateLeadRequest {
            lead_id: lead_id.clone(),
            profile: None,
            update_mask: mask(&["profile.company_size"]),
            idempotency_key: "l-bad".to_owned(),
        })
        .await
        .expect_err("unknown path");
    assert_eq!(
        violated_fields(&refused),
        ["update_mask.paths"],
        "{refused:?}"
    );
    let missing = capture
        .update_lead(UpdateLeadRequest {
            lead_id: Uuid::now_v7().to_string(),
            profile: None,
            update_mask: mask(&["profile.industry"]),
            idempotency_key: "l-missing".to_owned(),
        })
        .await
        .expect_err("no such lead");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let lead = capture
        .update_lead(UpdateLeadRequest {
            lead_id: lead_id.clone(),
            profile: Some(LeadProfile {
                industry: "Manufacturing".to_owned(),
                employee_count: 850,
                company_name: "ignored, not in the mask".to_owned(),
                ..Default::default()
            }),
            update_mask: mask(&["profile.industry", "profile.employee_count"]),
            idempotency_key: "l-1".to_owned(),
        })
        .await?
        .into_inner()
        .lead
        .expect("lead");
    let lead_profile = lead.profile.expect("profile");
    assert_eq!(lead_profile.industry, "Manufacturing");
    assert_eq!(lead_profile.employee_count, 850);
    assert_eq!(lead_profile.company_name, "Example GmbH");
    let events = records.events().await?;
    let recaptured: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.payload {
            Some(Payload::ContactCaptured(captured))
                if captured
                    .lead
                    .as_ref()
                    .is_some_and(|lead| lead.industry == "Manufacturing") =>
            {
                Some(captured.contact_id.clone())
            }
            _ => None,
        })
        .collect();
    let mut expected = vec![contact_id.clone(), other.contact_id.clone()];
    expected.sort();
    let mut recaptured_sorted = recaptured.clone();
    recaptured_sorted.sort();
    assert_eq!(
        recaptured_sorted, expected,
        "one ContactCaptured per contact of the lead"
    );
    Ok(())
}

#[tokio::test]
async fn contacts_and_leads_are_rectified_by_their_masks_on_postgresql() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    rectification(&suite, &records).await
}

#[tokio::test]
async fn contacts_and_leads_are_rectified_by_their_masks_embedded() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let records = CaptureRecords::open(&suite, Some(&data_dir)).await?;
    let outcome = rectification(&suite, &records).await;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

#[tokio::test]
async fn two_replicas_sweeping_at_once_erase_each_dormant_contact_once() -> anyhow::Result<()> {
    use leadflow_capture::{CaptureLimits, ConsentLinks};
    use leadflow_proto::capture::v1::capture_service_server::CaptureService;
    use leadflow_storage::{PostgresSettings, ServiceDatabase, ServiceStore};

    const DORMANT: usize = 150;
    let database = leadflow_tests::TestDatabase::create().await?;
    let settings = PostgresSettings {
        url: database.url().to_owned().into(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
    };
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let capture = ServiceDatabase::connect(&settings, leadflow_capture::SCHEMA).await?;
        capture.migrate(&leadflow_capture::MIGRATOR).await?;
        let links = ConsentLinks::new(
            LinkSigner::new(TEST_LINK_KEY.as_bytes(), &[])?,
            "http://localhost",
            chrono::Duration::hours(24),
        );
        replicas.push(leadflow_capture::capture_api(
            ServiceStore::Postgres(capture),
            links,
            CaptureLimits::default(),
            clock.clone(),
        ));
    }
    let form = replicas[0]
        .create_form(tonic::Request::new(CreateFormRequest {
            form: Some(single_opt_in_form()),
            idempotency_key: Uuid::now_v7().to_string(),
        }))
        .await?
        .into_inner()
        .form
        .expect("form");
    for number in 0..DORMANT {
        let email = format!("dormant-{number}@example-gmbh.de");
        let mut request = person(&form.form_id, &email);
        request.visitor_id = String::new();
        replicas[number % 2]
            .submit_form(tonic::Request::new(request))
            .await?;
    }
    clock.advance(chrono::Duration::days(3 * 365 + 1));

    // More than one batch each, at the same time, on the same rows.
    let retention = Duration::from_secs(3 * 365 * 86_400);
    let (policy_a, policy_b) = (
        replicas[0].retention_policy(retention),
        replicas[1].retention_policy(retention),
    );
    let (first, second) = tokio::join!(policy_a.sweep_once(), policy_b.sweep_once());
    let (first, second) = (first?, second?);
    assert_eq!(
        first + second,
        DORMANT as u64,
        "each dormant contact erased once: {first} + {second}"
    );
    let pool = database_pool(&database).await?;
    let (contacts, tombstones): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM capture.contacts), (SELECT count(*) FROM capture.tombstones)",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((contacts, tombstones), (0, DORMANT as i64));
    Ok(())
}

async fn database_pool(database: &leadflow_tests::TestDatabase) -> anyhow::Result<sqlx::PgPool> {
    Ok(sqlx::PgPool::connect(database.url()).await?)
}
