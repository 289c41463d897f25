//! Data-protection rights in scoring, nurturing and routing, on PostgreSQL/Redis and
//! embedded: a contact that engaged, got a nurture mail and went to a rep is exported from
//! scoring and nurturing, then erased from them by call (the points stay with the lead, the
//! sends keep counting, the mail file goes) and from routing by capture's ContactErased
//! event, after which no read call names it; a second erasure, an unknown contact, empty
//! fields and a reused idempotency key are answered as the contracts say; one ContactErased
//! event alone erases the contact from all three services, and a second one changes nothing.

use std::{future::Future, time::Duration};

use leadflow_bus::new_envelope;
use leadflow_proto::{
    capture::v1::{ActivityInput, CreateFormRequest, TrackActivityRequest, activity_input},
    common::v1::{BuyingStage, LeadClass, TimeRange},
    events::v1::{self as events, EventEnvelope, event_envelope::Payload},
    nurturing::v1::{
        self as nurturing, ContentItem, ContentKind, CreateContentItemRequest,
        CreateTemplateRequest, CreateTrackRequest, GetNurtureReportRequest, ListEnrollmentsRequest,
        ListSendsRequest, MailTemplate, SendState, Track, TrackVersion,
    },
    routing::v1::{Assignment, GetAssignmentRequest, ListAssignmentsRequest},
    scoring::v1::{
        self as scoring, ExplainScoreRequest, ExplainScoreResponse, GetClassHistoryRequest,
        GetScoreRequest, GetStageHistoryRequest, LeadScore,
    },
};
use leadflow_tests::{TestSuite, eventually};
use tonic::{Code, Status};

use crate::{
    closed_loop::{always_available_rep, buyers_guide_form, route_to_inside_sales},
    intake::submission,
    scoring_ledger::SEED_EXAMPLE,
};

const PRODUCT: &str = "erp";
const BUYER_ROLE: &str = "it-manager";
/// How long a step may take to show in every service: events travel asynchronously, and a
/// loaded 2-core machine runs several suites at once.
const STEP_TIMEOUT: Duration = Duration::from_secs(40);

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Polls `read` until what it returns satisfies `holds`, and returns that; fails naming
/// `step` and what it saw last.
async fn step<T, F, Fut>(step: &str, mut read: F, holds: impl Fn(&T) -> bool) -> anyhow::Result<T>
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let last = std::sync::Mutex::new(None);
    let (last_ref, holds_ref) = (&last, &holds);
    let held = eventually(STEP_TIMEOUT, || {
        let seen = read();
        async move {
            let seen = seen.await;
            let done = seen.as_ref().is_ok_and(holds_ref);
            *last_ref.lock().expect("not poisoned") = Some(seen);
            done
        }
    })
    .await;
    match last.into_inner().expect("not poisoned") {
        Some(Ok(seen)) if held => Ok(seen),
        seen => anyhow::bail!(
            "{step}: not within {STEP_TIMEOUT:?}; last seen: {:?}",
            seen.map(|seen| seen.map_err(|error| format!("{error:#}")))
        ),
    }
}

/// A form with a single opt-in, a B1 grid cell for IT managers with a track that enrolls
/// B1 leads, and a rep around the clock whom every lead of the product goes to.
async fn set_up(suite: &TestSuite) -> anyhow::Result<String> {
    let form = suite
        .capture()
        .create_form(CreateFormRequest {
            form: Some(buyers_guide_form()),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .form
        .ok_or_else(|| anyhow::anyhow!("a CreateForm answer without the form"))?;

    let mut nurturing = suite.nurturing();
    let template = nurturing
        .create_template(CreateTemplateRequest {
            template: Some(MailTemplate {
                name: "Offer (en)".to_owned(),
                language: "en".to_owned(),
                subject: "{{ item.title }}".to_owned(),
                html_body: "<p>Hello {{ contact.first_name }},</p>\
                            <p><a href=\"{{ item.url }}\">{{ item.title }}</a></p>"
                    .to_owned(),
                text_body: "Hello {{ contact.first_name }},\n\n{{ item.title }}: {{ item.url }}\n"
                    .to_owned(),
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .template
        .ok_or_else(|| anyhow::anyhow!("a CreateTemplate answer without the template"))?;
    nurturing
        .create_content_item(CreateContentItemRequest {
            item: Some(ContentItem {
                title: "ERP in mid-sized manufacturing: the 2026 study".to_owned(),
                kind: ContentKind::Study.into(),
                url: "https://www.example.com/erp/study-2026".to_owned(),
                buyer_roles: vec![BUYER_ROLE.to_owned()],
                stage: BuyingStage::ProblemAwareness.into(),
                product: PRODUCT.to_owned(),
                language: "en".to_owned(),
                priority: 1,
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?;
    nurturing
        .create_track(CreateTrackRequest {
            track: Some(Track {
                name: "ERP problem awareness".to_owned(),
                product: PRODUCT.to_owned(),
                ..Default::default()
            }),
            first_version: Some(TrackVersion {
                offer_template_id: template.template_id.clone(),
                alternative_offer_template_id: template.template_id,
                auto_enroll_classes: vec![LeadClass::B1.into()],
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?;

    let mut routing = suite.routing();
    let rep_id =
        always_available_rep(&mut routing, "lena.vogt@example.com", "Lena Vogt", 10).await?;
    route_to_inside_sales(&mut routing, vec![rep_id]).await?;
    Ok(form.form_id)
}

/// A contact that is known everywhere: captured, mailed by nurturing, engaged up to the
/// hand-over and assigned to the rep with itself as the one to talk to.
#[derive(Debug)]
struct Engaged {
    contact_id: String,
    lead_id: String,
    send_id: String,
    assignment_id: String,
}

async fn sends(suite: &TestSuite, contact_id: &str) -> anyhow::Result<Vec<nurturing::Send>> {
    Ok(suite
        .nurturing()
        .list_sends(ListSendsRequest {
            contact_id: contact_id.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .sends)
}

async fn score(suite: &TestSuite, lead_id: &str) -> anyhow::Result<LeadScore> {
    suite
        .scoring()
        .get_score(GetScoreRequest {
            lead_id: lead_id.to_owned(),
            product: PRODUCT.to_owned(),
            as_of_time: None,
        })
        .await?
        .into_inner()
        .score
        .ok_or_else(|| anyhow::anyhow!("a GetScore answer without a score"))
}

async fn assignments(suite: &TestSuite, lead_id: &str) -> anyhow::Result<Vec<Assignment>> {
    Ok(suite
        .routing()
        .list_assignments(ListAssignmentsRequest {
            lead_id: lead_id.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .assignments)
}

async fn assignment(suite: &TestSuite, assignment_id: &str) -> anyhow::Result<Assignment> {
    suite
        .routing()
        .get_assignment(GetAssignmentRequest {
            assignment_id: assignment_id.to_owned(),
        })
        .await?
        .into_inner()
        .assignment
        .ok_or_else(|| anyhow::anyhow!("a GetAssignment answer without the assignment"))
}

async fn engage(suite: &TestSuite, form_id: &str, name: &str) -> anyhow::Result<Engaged> {
    // A domain of its own: capture puts the contacts of one web domain into one lead.
    let email = format!("{name}@{name}-antriebe.example");
    let submitted = suite
        .capture()
        .submit_form(submission(
            form_id,
            &key(),
            &[
                ("email", &email),
                ("first_name", name),
                ("last_name", "Hoffmann"),
                ("job_title", "Head of IT"),
                ("department", "IT"),
                ("role", BUYER_ROLE),
                ("phone", "+49 711 1234567"),
                ("street", "Industriestraße 7"),
                ("postal_code", "70565"),
                ("city", "Stuttgart"),
                ("country", "de"),
                ("company", &format!("Hoffmann Antriebe {name}")),
                ("industry", "Manufacturing"),
                ("employees", "240"),
            ],
        ))
        .await?
        .into_inner();
    let (contact_id, lead_id) = (submitted.contact_id, submitted.lead_id);
    let sent = step(
        "nurturing mails the contact",
        || sends(suite, &contact_id),
        |sends| {
            sends
                .iter()
                .any(|send| send.state == SendState::Sent as i32)
        },
    )
    .await?;
    for (index, (activity_type, _)) in SEED_EXAMPLE.into_iter().enumerate() {
        // The first one reads problem-awareness content: the lead's class changes for it.
        let (content_item_id, stage) = if index == 0 {
            ("erp-teaser".to_owned(), BuyingStage::ProblemAwareness)
        } else {
            (String::new(), BuyingStage::Unspecified)
        };
        suite
            .capture()
            .track_activity(TrackActivityRequest {
                activity: Some(ActivityInput {
                    subject: Some(activity_input::Subject::ContactId(contact_id.clone())),
                    r#type: activity_type.into(),
                    product: PRODUCT.to_owned(),
                    source: "website".to_owned(),
                    content_item_id,
                    stage: stage.into(),
                    ..Default::default()
                }),
                idempotency_key: key(),
            })
            .await?;
    }
    step(
        "scoring hands the lead over",
        || score(suite, &lead_id),
        |score| score.sales_ready,
    )
    .await?;
    let assigned = step(
        "routing assigns the lead",
        || assignments(suite, &lead_id),
        |assignments| !assignments.is_empty(),
    )
    .await?;
    assert_eq!(
        assigned[0].primary_contact_id, contact_id,
        "the contact is the one to talk to: {assigned:?}"
    );
    Ok(Engaged {
        contact_id,
        lead_id,
        send_id: sent[0].send_id.clone(),
        assignment_id: assigned[0].assignment_id.clone(),
    })
}

async fn scoring_export(
    suite: &TestSuite,
    contact_id: &str,
) -> anyhow::Result<scoring::ExportContactDataResponse> {
    Ok(suite
        .scoring()
        .export_contact_data(scoring::ExportContactDataRequest {
            contact_id: contact_id.to_owned(),
        })
        .await?
        .into_inner())
}

async fn nurturing_export(
    suite: &TestSuite,
    contact_id: &str,
) -> anyhow::Result<nurturing::ExportContactDataResponse> {
    Ok(suite
        .nurturing()
        .export_contact_data(nurturing::ExportContactDataRequest {
            contact_id: contact_id.to_owned(),
        })
        .await?
        .into_inner())
}

async fn erase_from_scoring(
    suite: &TestSuite,
    contact_id: &str,
    idempotency_key: &str,
) -> Result<scoring::EraseContactDataResponse, Status> {
    Ok(suite
        .scoring()
        .erase_contact_data(scoring::EraseContactDataRequest {
            contact_id: contact_id.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        })
        .await?
        .into_inner())
}

async fn erase_from_nurturing(
    suite: &TestSuite,
    contact_id: &str,
    idempotency_key: &str,
) -> Result<nurturing::EraseContactDataResponse, Status> {
    Ok(suite
        .nurturing()
        .erase_contact_data(nurturing::EraseContactDataRequest {
            contact_id: contact_id.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        })
        .await?
        .into_inner())
}

async fn explain(suite: &TestSuite, lead_id: &str) -> anyhow::Result<ExplainScoreResponse> {
    Ok(suite
        .scoring()
        .explain_score(ExplainScoreRequest {
            lead_id: lead_id.to_owned(),
            product: PRODUCT.to_owned(),
            max_contributions: 100,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// The lead's total score at a moment just past, which the ledger alone decides.
async fn total_at(
    suite: &TestSuite,
    lead_id: &str,
    at: prost_types::Timestamp,
) -> anyhow::Result<f64> {
    Ok(suite
        .scoring()
        .get_score(GetScoreRequest {
            lead_id: lead_id.to_owned(),
            product: PRODUCT.to_owned(),
            as_of_time: Some(at),
        })
        .await?
        .into_inner()
        .score
        .ok_or_else(|| anyhow::anyhow!("a GetScore answer without a score"))?
        .total_points)
}

/// Now, once it has passed: every activity tracked so far happened before it, and the
/// score as of it is the ledger's to tell.
async fn just_now() -> prost_types::Timestamp {
    let moment = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    prost_types::Timestamp::from(moment)
}

async fn sent_in_report(suite: &TestSuite) -> anyhow::Result<u32> {
    let report = suite
        .nurturing()
        .get_nurture_report(GetNurtureReportRequest {
            time_range: Some(TimeRange {
                start_time: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                end_time: None,
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(report.totals.unwrap_or_default().sent_count)
}

fn mail_file(suite: &TestSuite, send_id: &str) -> std::path::PathBuf {
    suite.data_dir().join("mail").join(format!("{send_id}.eml"))
}

/// Neither nurturing's listings nor its export name the contact any more.
async fn nurturing_forgot(suite: &TestSuite, contact: &Engaged) -> anyhow::Result<()> {
    let exported = nurturing_export(suite, &contact.contact_id).await?;
    assert!(exported.enrollments.is_empty(), "{exported:?}");
    assert!(exported.sends.is_empty(), "{exported:?}");
    assert_eq!(exported.frequency_override, None, "{exported:?}");
    // Nurturing no longer knows the contact: its sends are not found, it has no enrollments.
    let listed = sends(suite, &contact.contact_id)
        .await
        .expect_err("the sends of an erased contact");
    assert_eq!(
        listed.downcast_ref::<Status>().map(Status::code),
        Some(Code::NotFound),
        "{listed:#}"
    );
    let listed = suite
        .nurturing()
        .list_enrollments(ListEnrollmentsRequest {
            contact_id: contact.contact_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(listed.enrollments.is_empty(), "{listed:?}");
    assert!(
        !mail_file(suite, &contact.send_id).exists(),
        "the mail file of {} is gone",
        contact.send_id
    );
    Ok(())
}

/// Neither scoring's explanation nor its export name the contact any more.
async fn scoring_forgot(suite: &TestSuite, contact: &Engaged) -> anyhow::Result<()> {
    let exported = scoring_export(suite, &contact.contact_id).await?;
    assert!(exported.ledger_entries.is_empty(), "{exported:?}");
    assert!(exported.class_changes.is_empty(), "{exported:?}");
    assert!(exported.stage_changes.is_empty(), "{exported:?}");
    let explained = explain(suite, &contact.lead_id).await?;
    assert!(
        !format!("{explained:?}").contains(&contact.contact_id),
        "the explanation names the erased contact: {explained:?}"
    );
    assert!(explained.contact_contributions.is_empty(), "{explained:?}");
    Ok(())
}

fn violated_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    crate::capture_api::violated_fields(status)
}

async fn export_and_erase_by_call(suite: &TestSuite) -> anyhow::Result<()> {
    let form_id = set_up(suite).await?;
    let contact = engage(suite, &form_id, "mira").await?;
    assert!(mail_file(suite, &contact.send_id).exists(), "{contact:?}");

    // Scoring's export: every ledger entry names the contact, the six activities among
    // them; the class and stage changes are those the entries' events caused.
    let exported = scoring_export(suite, &contact.contact_id).await?;
    assert!(
        exported
            .ledger_entries
            .iter()
            .all(|entry| entry.contact_id == contact.contact_id && entry.lead_id == contact.lead_id),
        "{exported:?}"
    );
    let activities = exported
        .ledger_entries
        .iter()
        .filter(|entry| !entry.activity_id.is_empty())
        .count();
    assert!(activities >= SEED_EXAMPLE.len(), "{exported:?}");
    let times: Vec<_> = exported
        .ledger_entries
        .iter()
        .map(|entry| entry.occur_time.map(|time| (time.seconds, time.nanos)))
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "oldest first: {times:?}"
    );
    let events: Vec<&str> = exported
        .ledger_entries
        .iter()
        .map(|entry| entry.event_id.as_str())
        .collect();
    let classes = suite
        .scoring()
        .get_class_history(GetClassHistoryRequest {
            lead_id: contact.lead_id.clone(),
            product: PRODUCT.to_owned(),
            page_size: 200,
            ..Default::default()
        })
        .await?
        .into_inner()
        .changes;
    let caused: Vec<_> = classes
        .into_iter()
        .filter(|change| events.contains(&change.event_id.as_str()))
        .collect();
    assert!(
        !caused.is_empty(),
        "the content read changed the class: {exported:?}"
    );
    assert_eq!(exported.class_changes, caused);
    let stages = suite
        .scoring()
        .get_stage_history(GetStageHistoryRequest {
            lead_id: contact.lead_id.clone(),
            product: PRODUCT.to_owned(),
            page_size: 200,
            ..Default::default()
        })
        .await?
        .into_inner()
        .changes;
    let caused: Vec<_> = stages
        .into_iter()
        .filter(|change| events.contains(&change.event_id.as_str()))
        .collect();
    assert_eq!(exported.stage_changes, caused);

    // Nurturing's export: the enrollment, and the send with its counts.
    let nurtured = nurturing_export(suite, &contact.contact_id).await?;
    assert_eq!(nurtured.enrollments.len(), 1, "{nurtured:?}");
    assert_eq!(nurtured.enrollments[0].contact_id, contact.contact_id);
    assert!(
        nurtured
            .sends
            .iter()
            .any(|send| send.send_id == contact.send_id && send.contact_id == contact.contact_id),
        "{nurtured:?}"
    );
    let sent_before = sent_in_report(suite).await?;
    assert!(sent_before >= 1);

    // Erasure from scoring: the entries are anonymised, the score stays.
    let moment = just_now().await;
    let total_before = total_at(suite, &contact.lead_id, moment).await?;
    assert!(
        total_before > 249.0,
        "the six activities earned 250 points: {total_before}"
    );
    let scoring_key = key();
    let erased = erase_from_scoring(suite, &contact.contact_id, &scoring_key).await?;
    assert_eq!(
        erased.anonymised_entry_count as usize,
        exported.ledger_entries.len(),
        "{erased:?}"
    );
    assert_eq!(
        total_at(suite, &contact.lead_id, moment).await?,
        total_before
    );
    let now = score(suite, &contact.lead_id).await?;
    assert!(now.total_points >= total_before - 1.0, "{now:?}");
    assert!(now.sales_ready, "the lead is still with sales: {now:?}");
    scoring_forgot(suite, &contact).await?;
    let explained = explain(suite, &contact.lead_id).await?;
    assert!(
        explained.engagement_contributions.len() >= SEED_EXAMPLE.len(),
        "the contributions stay, without the contact: {explained:?}"
    );

    // Erasure from nurturing: the enrollment goes, the send stays for the report.
    let nurturing_key = key();
    let erased = erase_from_nurturing(suite, &contact.contact_id, &nurturing_key).await?;
    assert_eq!(erased.erased_enrollment_count, 1, "{erased:?}");
    assert_eq!(
        erased.anonymised_send_count as usize,
        nurtured.sends.len(),
        "{erased:?}"
    );
    nurturing_forgot(suite, &contact).await?;
    assert_eq!(sent_in_report(suite).await?, sent_before);

    // A retry answers the same; another erasure, and one of an unknown contact, erase
    // nothing; the key of one erasure does not fit another contact.
    let retried = erase_from_scoring(suite, &contact.contact_id, &scoring_key).await?;
    assert_eq!(
        retried.anonymised_entry_count as usize,
        exported.ledger_entries.len()
    );
    let again = erase_from_scoring(suite, &contact.contact_id, &key()).await?;
    assert_eq!(again.anonymised_entry_count, 0, "{again:?}");
    let again = erase_from_nurturing(suite, &contact.contact_id, &key()).await?;
    assert_eq!(
        (again.erased_enrollment_count, again.anonymised_send_count),
        (0, 0)
    );
    let stranger = uuid::Uuid::new_v4().to_string();
    let unknown = erase_from_scoring(suite, &stranger, &key()).await?;
    assert_eq!(unknown.anonymised_entry_count, 0);
    let unknown = erase_from_nurturing(suite, &stranger, &key()).await?;
    assert_eq!(
        (
            unknown.erased_enrollment_count,
            unknown.anonymised_send_count
        ),
        (0, 0)
    );
    let reused = erase_from_scoring(suite, &stranger, &scoring_key)
        .await
        .expect_err("the key of another erasure");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let reused = erase_from_nurturing(suite, &stranger, &nurturing_key)
        .await
        .expect_err("the key of another erasure");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let unknown = scoring_export(suite, &stranger).await?;
    assert_eq!(unknown, scoring::ExportContactDataResponse::default());
    let unknown = nurturing_export(suite, &stranger).await?;
    assert_eq!(unknown, nurturing::ExportContactDataResponse::default());

    // Routing has no call: capture's event takes the contact out of its assignment.
    publish_contact_erased(suite, &contact).await?;
    let erased = step(
        "routing forgets the contact",
        || assignment(suite, &contact.assignment_id),
        |assignment| assignment.primary_contact_id.is_empty(),
    )
    .await?;
    assert_eq!(erased.lead_id, contact.lead_id, "the ids stay: {erased:?}");
    assert!(
        erased
            .lead
            .as_ref()
            .is_some_and(|lead| lead.company_name.starts_with("Hoffmann Antriebe")),
        "the company profile stays: {erased:?}"
    );
    Ok(())
}

/// Publishes capture's ContactErased for `contact` the way capture does: through its
/// outbox, which the relay (or the embedded bus) hands to every consumer.
async fn publish_contact_erased(suite: &TestSuite, contact: &Engaged) -> anyhow::Result<()> {
    let envelope = new_envelope(
        "capture",
        &contact.lead_id,
        Payload::ContactErased(events::ContactErased {
            contact_id: contact.contact_id.clone(),
            lead_id: contact.lead_id.clone(),
            reason: events::ErasureReason::SubjectRequest.into(),
            visitor_ids: vec!["v-erased-visitor".to_owned()],
        }),
        chrono::Utc::now(),
    );
    publish(suite, &envelope).await
}

async fn publish(suite: &TestSuite, envelope: &EventEnvelope) -> anyhow::Result<()> {
    if let Some(pool) = postgres_pool(suite).await? {
        let mut transaction = pool.begin().await?;
        sqlx::query("SET LOCAL search_path TO capture")
            .execute(&mut *transaction)
            .await?;
        leadflow_bus::outbox::append(&mut transaction, envelope).await?;
        transaction.commit().await?;
        return Ok(());
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(suite.data_dir().join("capture.sqlite3"))
        .busy_timeout(Duration::from_secs(10));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let mut transaction = pool.begin().await?;
    leadflow_bus::outbox::sqlite::append(&mut transaction, envelope).await?;
    transaction.commit().await?;
    pool.close().await;
    Ok(())
}

/// The suite's PostgreSQL database, unless it runs embedded.
async fn postgres_pool(suite: &TestSuite) -> anyhow::Result<Option<sqlx::PgPool>> {
    if suite.data_dir().join("capture.sqlite3").exists() {
        return Ok(None);
    }
    Ok(Some(suite.database_pool().await?))
}

async fn erase_by_event(suite: &TestSuite) -> anyhow::Result<()> {
    let form_id = set_up(suite).await?;
    let contact = engage(suite, &form_id, "jonas").await?;
    let moment = just_now().await;
    let total_before = total_at(suite, &contact.lead_id, moment).await?;
    let sent_before = sent_in_report(suite).await?;
    publish_contact_erased(suite, &contact).await?;
    step(
        "scoring forgets the contact",
        || scoring_export(suite, &contact.contact_id),
        |exported| exported.ledger_entries.is_empty(),
    )
    .await?;
    step(
        "nurturing forgets the contact",
        || nurturing_export(suite, &contact.contact_id),
        |exported| exported.enrollments.is_empty() && exported.sends.is_empty(),
    )
    .await?;
    step(
        "routing forgets the contact",
        || assignment(suite, &contact.assignment_id),
        |assignment| assignment.primary_contact_id.is_empty(),
    )
    .await?;
    scoring_forgot(suite, &contact).await?;
    nurturing_forgot(suite, &contact).await?;
    assert_eq!(
        total_at(suite, &contact.lead_id, moment).await?,
        total_before
    );
    assert_eq!(sent_in_report(suite).await?, sent_before);

    // A second erasure event (capture erasing again) erases nothing more and fails nothing:
    // the contact captured after it is still handled by every consumer.
    publish_contact_erased(suite, &contact).await?;
    let later = engage(suite, &form_id, "lea").await?;
    assert_eq!(
        total_at(suite, &contact.lead_id, moment).await?,
        total_before
    );
    let exported = scoring_export(suite, &later.contact_id).await?;
    assert!(!exported.ledger_entries.is_empty(), "{exported:?}");
    Ok(())
}

async fn refuse_empty_fields(suite: &TestSuite) -> anyhow::Result<()> {
    let status = erase_from_scoring(suite, "", "")
        .await
        .expect_err("no contact, no key");
    assert_eq!(
        violated_fields(&status),
        ["contact_id", "idempotency_key"],
        "{status:?}"
    );
    let status = erase_from_nurturing(suite, "", "")
        .await
        .expect_err("no contact, no key");
    assert_eq!(
        violated_fields(&status),
        ["contact_id", "idempotency_key"],
        "{status:?}"
    );
    let contact_id = uuid::Uuid::new_v4().to_string();
    let status = erase_from_scoring(suite, &contact_id, "")
        .await
        .expect_err("no key");
    assert_eq!(violated_fields(&status), ["idempotency_key"]);
    let status = erase_from_nurturing(suite, &contact_id, "")
        .await
        .expect_err("no key");
    assert_eq!(violated_fields(&status), ["idempotency_key"]);
    let status = suite
        .scoring()
        .export_contact_data(scoring::ExportContactDataRequest::default())
        .await
        .expect_err("no contact");
    assert_eq!(violated_fields(&status), ["contact_id"]);
    let status = suite
        .nurturing()
        .export_contact_data(nurturing::ExportContactDataRequest::default())
        .await
        .expect_err("no contact");
    assert_eq!(violated_fields(&status), ["contact_id"]);
    Ok(())
}

/// An embedded data directory, removed when the test ends, also when an assertion panics;
/// declared before the suite, so removed after the suite is gone.
struct RemovedOnDrop(std::path::PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test that runs `$scenario` on a fresh suite: on PostgreSQL and Redis, or embedded in
/// a data directory of its own.
macro_rules! scenario_test {
    ($name:ident, postgres, $scenario:ident) => {
        #[tokio::test]
        async fn $name() -> anyhow::Result<()> {
            let suite = TestSuite::start().await?;
            let outcome = $scenario(&suite).await;
            suite.stop().await?;
            outcome
        }
    };
    ($name:ident, embedded, $scenario:ident) => {
        #[tokio::test]
        async fn $name() -> anyhow::Result<()> {
            let data_dir = RemovedOnDrop(crate::embedded::temporary_data_dir());
            let suite = TestSuite::start_embedded(&data_dir.0).await?;
            let outcome = $scenario(&suite).await;
            suite.stop().await?;
            outcome
        }
    };
}

scenario_test!(
    export_then_erase_by_call_on_postgres_and_redis,
    postgres,
    export_and_erase_by_call
);
scenario_test!(
    export_then_erase_by_call_embedded,
    embedded,
    export_and_erase_by_call
);
scenario_test!(
    a_contact_erased_event_erases_everywhere_on_postgres_and_redis,
    postgres,
    erase_by_event
);
scenario_test!(
    a_contact_erased_event_erases_everywhere_embedded,
    embedded,
    erase_by_event
);
scenario_test!(
    empty_fields_are_refused_naming_them,
    embedded,
    refuse_empty_fields
);
