//! The score ledger end to end, on PostgreSQL/Redis and on the embedded mode: the field's
//! seed example (teaser, video, fact sheet, slide deck, test, comment) takes a contact at a
//! target-profile lead to 250 points and hands the lead over exactly once, with those six
//! contributions explained; an idle lead's engagement halves after one half-life; a
//! redelivered event adds nothing; a Redis wiped by FLUSHALL is rebuilt to identical scores.

use std::time::Duration;

use leadflow_proto::{
    capture::v1::{
        ActivityInput, CreateFormRequest, Form, FormFieldKind, TrackActivityRequest, activity_input,
    },
    common::v1::ActivityType,
    events::v1::{EventEnvelope, event_envelope::Payload},
    scoring::v1::{
        ActivateScoringModelRequest, CreateScoringModelRequest, ExplainScoreRequest, FitOperator,
        FitRule, GetScoreRequest, LeadScore, MqlRule, ProfileAttribute, RebuildScoresRequest,
        ScoringModel,
    },
};
use leadflow_tests::{OwnRedis, TestSuite, eventually};
use prost::Message;

use crate::{capture::field, intake::submission, scoring::seed_model};

pub(crate) const PRODUCT: &str = "erp";
const HALF_LIFE_DAYS: i64 = 30;
/// The seed example in the field's order, with the points of the seed table.
pub(crate) const SEED_EXAMPLE: [(ActivityType, u32); 6] = [
    (ActivityType::TeaserRead, 10),
    (ActivityType::VideoCompleted, 30),
    (ActivityType::FactSheetRequested, 20),
    (ActivityType::SlideDeckDownloaded, 50),
    (ActivityType::KnowledgeTestPassed, 100),
    (ActivityType::ContentCommented, 40),
];

/// The seed table with a 30-day half-life, the core industry worth 30 fit points, and an
/// MQL rule asking only for the email and the company.
fn target_model() -> ScoringModel {
    let mut model = seed_model(PRODUCT);
    for rule in &mut model.engagement_rules {
        rule.half_life = Some(prost_types::Duration {
            seconds: HALF_LIFE_DAYS * 86_400,
            nanos: 0,
        });
    }
    model.fit_rules = vec![FitRule {
        rule_id: "core-industry".to_owned(),
        attribute: ProfileAttribute::Industry.into(),
        operator: FitOperator::In.into(),
        values: vec!["manufacturing".to_owned()],
        points: 30,
        description: "manufacturing is the core target industry".to_owned(),
        ..Default::default()
    }];
    model.mql_rule = Some(MqlRule {
        required_attributes: vec![
            ProfileAttribute::Email.into(),
            ProfileAttribute::CompanyName.into(),
        ],
        ..Default::default()
    });
    model
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Creates and activates the target model, creates a form, and captures one contact of a
/// manufacturing company; returns (contact id, lead id).
pub(crate) async fn target_lead(
    suite: &TestSuite,
    company: &str,
    email: &str,
) -> anyhow::Result<(String, String)> {
    let mut scoring = suite.scoring();
    let listed = scoring
        .list_scoring_models(leadflow_proto::scoring::v1::ListScoringModelsRequest {
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if listed.models.is_empty() {
        let model = scoring
            .create_scoring_model(CreateScoringModelRequest {
                model: Some(target_model()),
                idempotency_key: key(),
            })
            .await?
            .into_inner()
            .model
            .expect("model");
        scoring
            .activate_scoring_model(ActivateScoringModelRequest {
                model_id: model.model_id,
                idempotency_key: key(),
            })
            .await?;
    }
    let mut capture = suite.capture();
    let form = capture
        .create_form(CreateFormRequest {
            form: Some(Form {
                name: "ERP demo".to_owned(),
                product: PRODUCT.to_owned(),
                fields: vec![
                    field("email", FormFieldKind::Email, "contact.email", true),
                    field("company", FormFieldKind::Text, "lead.company_name", true),
                    field("industry", FormFieldKind::Text, "lead.industry", true),
                ],
                consent_wording: "Send me ERP news by mail.".to_owned(),
                consent_wording_version: "2026-11".to_owned(),
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .form
        .expect("form");
    let submitted = capture
        .submit_form(submission(
            &form.form_id,
            &key(),
            &[
                ("email", email),
                ("company", company),
                ("industry", "Manufacturing"),
            ],
        ))
        .await?
        .into_inner();
    Ok((submitted.contact_id, submitted.lead_id))
}

pub(crate) async fn track(
    suite: &TestSuite,
    contact_id: &str,
    activity_type: ActivityType,
    occurred_at: Option<prost_types::Timestamp>,
) -> anyhow::Result<()> {
    suite
        .capture()
        .track_activity(TrackActivityRequest {
            activity: Some(ActivityInput {
                subject: Some(activity_input::Subject::ContactId(contact_id.to_owned())),
                r#type: activity_type.into(),
                product: PRODUCT.to_owned(),
                source: "website".to_owned(),
                occurred_at,
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?;
    Ok(())
}

async fn score(
    suite: &TestSuite,
    lead_id: &str,
    as_of_time: Option<prost_types::Timestamp>,
) -> Option<LeadScore> {
    suite
        .scoring()
        .get_score(GetScoreRequest {
            lead_id: lead_id.to_owned(),
            product: PRODUCT.to_owned(),
            as_of_time,
        })
        .await
        .ok()
        .and_then(|response| response.into_inner().score)
}

/// Waits until the lead's score satisfies `check`.
pub(crate) async fn score_until(
    suite: &TestSuite,
    lead_id: &str,
    check: impl Fn(&LeadScore) -> bool,
) -> anyhow::Result<LeadScore> {
    score_as_of_until(suite, lead_id, None, check).await
}

/// Waits until the lead's score as of `as_of_time` satisfies `check` (a loaded machine may
/// answer a call with UNAVAILABLE now and then).
async fn score_as_of_until(
    suite: &TestSuite,
    lead_id: &str,
    as_of_time: Option<prost_types::Timestamp>,
    check: impl Fn(&LeadScore) -> bool,
) -> anyhow::Result<LeadScore> {
    let last = std::sync::Mutex::new(None);
    let reached = eventually(Duration::from_secs(15), || async {
        let found = score(suite, lead_id, as_of_time).await;
        let done = found.as_ref().is_some_and(&check);
        *last.lock().expect("not poisoned") = found;
        done
    })
    .await;
    let last = last.into_inner().expect("not poisoned");
    anyhow::ensure!(reached, "the score never got there; last: {last:?}");
    Ok(last.expect("a score"))
}

/// Scoring's published events, read from its outbox.
async fn scoring_events(
    suite: &TestSuite,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<Vec<EventEnvelope>> {
    let rows: Vec<Vec<u8>> = match data_dir {
        None => {
            sqlx::query_scalar("SELECT envelope FROM scoring.outbox ORDER BY seq")
                .fetch_all(&suite.database_pool().await?)
                .await?
        }
        Some(data_dir) => {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(&format!(
                    "sqlite://{}?mode=ro",
                    data_dir.join("scoring.sqlite3").display()
                ))
                .await?;
            sqlx::query_scalar("SELECT envelope FROM outbox ORDER BY seq")
                .fetch_all(&pool)
                .await?
        }
    };
    Ok(rows
        .iter()
        .map(|bytes| EventEnvelope::decode(bytes.as_slice()))
        .collect::<Result<_, _>>()?)
}

fn sales_ready_count(events: &[EventEnvelope], lead_id: &str) -> usize {
    events
        .iter()
        .filter(|envelope| {
            matches!(&envelope.payload, Some(Payload::SalesReady(ready)) if ready.lead_id == lead_id)
        })
        .count()
}

/// The seed example, in either mode: 250 engagement points, one hand-off, six contributions.
async fn seed_example(
    suite: &TestSuite,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let (contact_id, lead_id) = target_lead(suite, "Acme Werke", "anna@acme-werke.example").await?;
    let captured = score_until(suite, &lead_id, |score| score.fit_points == 30).await?;
    assert_eq!(captured.engagement_points, 0.0);
    assert_eq!(
        captured.grade,
        leadflow_proto::common::v1::ProfileGrade::B as i32,
        "30 fit points are grade B"
    );
    assert!(!captured.sales_ready);

    for (activity_type, _) in SEED_EXAMPLE {
        track(suite, &contact_id, activity_type, None).await?;
    }
    let ready = score_until(suite, &lead_id, |score| score.sales_ready).await?;
    assert_eq!(ready.engagement_points.round(), 250.0, "{ready:?}");
    assert!(ready.engagement_points <= 250.0 && ready.engagement_points > 249.9);
    assert_eq!(ready.engagement_level, 4);
    assert_eq!(
        ready.stage,
        leadflow_proto::common::v1::LifecycleStage::Mql as i32
    );

    let explained = suite
        .scoring()
        .explain_score(ExplainScoreRequest {
            lead_id: lead_id.clone(),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(explained.total_contribution_count, 6);
    let mut contributions: Vec<(i32, u32)> = explained
        .engagement_contributions
        .iter()
        .map(|item| (item.activity_type, item.original_points))
        .collect();
    contributions.sort_unstable();
    let mut expected: Vec<(i32, u32)> = SEED_EXAMPLE
        .iter()
        .map(|(activity_type, points)| (*activity_type as i32, *points))
        .collect();
    expected.sort_unstable();
    assert_eq!(contributions, expected);
    assert!(
        explained
            .engagement_contributions
            .iter()
            .all(|item| item.contact_id == contact_id && !item.event_id.is_empty())
    );
    assert_eq!(
        explained.engagement_contributions[0].original_points, 100,
        "largest first"
    );
    assert_eq!(explained.fit_contributions.len(), 1);
    assert_eq!(explained.fit_contributions[0].rule_id, "core-industry");
    assert_eq!(
        explained.fit_contributions[0].matched_value,
        "Manufacturing"
    );
    assert_eq!(explained.contact_contributions.len(), 1);
    assert!((explained.contact_contributions[0].share - 1.0).abs() < 1e-9);

    // Hovering above the threshold hands nothing over again.
    track(suite, &contact_id, ActivityType::EmailOpened, None).await?;
    score_until(suite, &lead_id, |score| score.engagement_points > 255.0).await?;
    let events = scoring_events(suite, data_dir).await?;
    assert_eq!(sales_ready_count(&events, &lead_id), 1);
    Ok(lead_id)
}

/// An idle lead: the seed example 40 days ago, then nothing.
async fn idle_lead_halves_after_one_half_life(suite: &TestSuite) -> anyhow::Result<()> {
    let (contact_id, lead_id) =
        target_lead(suite, "Beta Anlagenbau", "ben@beta-anlagenbau.example").await?;
    let then = chrono::Utc::now() - chrono::TimeDelta::days(40);
    let at = |time: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: 0,
    };
    for (activity_type, _) in SEED_EXAMPLE {
        track(suite, &contact_id, activity_type, Some(at(then))).await?;
    }
    let now = score_until(suite, &lead_id, |score| {
        score.engagement_points > 0.0
            && score.engagement_points < 250.0
            && score.engagement_points > 90.0
    })
    .await?;
    let at_the_time = score_as_of_until(suite, &lead_id, Some(at(then)), |_| true).await?;
    let one_half_life_later = score_as_of_until(
        suite,
        &lead_id,
        Some(at(then + chrono::TimeDelta::days(HALF_LIFE_DAYS))),
        |_| true,
    )
    .await?;
    assert!(
        (at_the_time.engagement_points - 250.0).abs() < 1e-6,
        "{at_the_time:?}"
    );
    assert!(
        (one_half_life_later.engagement_points - 125.0).abs() < 1e-6,
        "{one_half_life_later:?}"
    );
    let expected_now = 250.0 * 0.5_f64.powf(40.0 / HALF_LIFE_DAYS as f64);
    assert!(
        (now.engagement_points - expected_now).abs() < 0.01,
        "{now:?}"
    );
    // The profile was captured today: as of back then the ledger held no fit points yet.
    assert_eq!(one_half_life_later.fit_points, 0);
    assert_eq!(now.fit_points, 30, "fit does not decay");
    Ok(())
}

#[tokio::test]
async fn the_seed_example_hands_over_once_decays_and_survives_redelivery_and_a_redis_loss()
-> anyhow::Result<()> {
    let redis = OwnRedis::start().await?;
    let suite = TestSuite::start_with(&leadflow::ServiceKind::ALL, redis.url()).await?;
    let lead_id = seed_example(&suite, None).await?;
    idle_lead_halves_after_one_half_life(&suite).await?;

    // A redelivered ActivityRecorded: the consumer applies it again, and nothing changes.
    let pool = suite.database_pool().await?;
    let ledger_count = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM scoring.ledger_entries")
            .fetch_one(&pool)
            .await
    };
    let entries_before = ledger_count(pool.clone()).await?;
    let before = score_until(&suite, &lead_id, |_| true).await?;
    let (event_id, envelope): (uuid::Uuid, Vec<u8>) = sqlx::query_as(
        "SELECT event_id, envelope FROM capture.outbox \
         WHERE event_type = 'leadflow.events.v1.ActivityRecorded' ORDER BY seq LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    let client = redis::Client::open(redis.url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let stream = format!("{}:events:capture", suite.key_prefix());
    let redelivered: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("event_id")
        .arg(event_id.to_string())
        .arg("envelope")
        .arg(&envelope)
        .query_async(&mut connection)
        .await?;
    let applied = eventually(Duration::from_secs(10), || {
        scoring_group_reached(connection.clone(), &stream, 0, &redelivered)
    })
    .await;
    assert!(applied, "the redelivered event was consumed");
    assert_eq!(
        ledger_count(pool.clone()).await?,
        entries_before,
        "a redelivery adds nothing to the ledger"
    );
    let after = score_until(&suite, &lead_id, |_| true).await?;
    assert_eq!(after.fit_points, before.fit_points);
    assert!((after.engagement_points - before.engagement_points).abs() < 0.01);
    assert_eq!(
        sales_ready_count(&scoring_events(&suite, None).await?, &lead_id),
        1
    );

    // One read carries two new activities, one of them twice, and an event that cannot
    // be applied: the read is applied in one transaction, the repeat within it adds nothing,
    // and the failing event neither holds back the others nor is acknowledged.
    let recorded: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT envelope FROM capture.outbox \
         WHERE event_type = 'leadflow.events.v1.ActivityRecorded' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await?;
    let template = recorded
        .iter()
        .map(|bytes| EventEnvelope::decode(bytes.as_slice()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|envelope| {
            matches!(&envelope.payload, Some(Payload::ActivityRecorded(recorded)) if recorded.lead_id == lead_id)
        })
        .ok_or_else(|| anyhow::anyhow!("no activity of the lead"))?;
    let batch = read_in_one_batch(&mut connection, &stream, &template).await?;
    let applied = eventually(Duration::from_secs(10), || {
        scoring_group_reached(connection.clone(), &stream, 1, &batch.last_entry)
    })
    .await;
    assert!(
        applied,
        "the batch was read and all but the failing event acknowledged"
    );
    let processed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scoring.processed_events WHERE event_id = ANY($1)",
    )
    .bind(&batch.event_ids)
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        processed, 2,
        "each new activity is applied once, the failing one not at all"
    );
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM scoring.activities WHERE activity_id = ANY($1)")
            .bind(&batch.activity_ids)
            .fetch_one(&pool)
            .await?;
    assert_eq!(kept, 2, "both new activities are kept once");
    let failures: std::collections::HashMap<String, u32> = redis::cmd("HGETALL")
        .arg(format!("{}:events:failures:scoring", suite.key_prefix()))
        .query_async(&mut connection)
        .await?;
    assert_eq!(
        failures.get(&batch.failing_event_id).copied(),
        Some(1),
        "the failing event counts one attempt: {failures:?}"
    );
    assert_eq!(failures.len(), 1, "no other event failed: {failures:?}");
    let entries_after_batch = ledger_count(pool.clone()).await?;
    assert!(
        entries_after_batch > entries_before,
        "the new activities add to the ledger"
    );
    score_until(&suite, &lead_id, |score| {
        score.engagement_points > after.engagement_points + 1.0
    })
    .await?;

    // Redis loses everything; a rebuild from the ledger gives identical scores.
    let hot_key = format!("{}:scoring:scores:{PRODUCT}", suite.key_prefix());
    let hot_before: std::collections::BTreeMap<String, Vec<u8>> = redis::cmd("HGETALL")
        .arg(&hot_key)
        .query_async(&mut connection)
        .await?;
    assert_eq!(hot_before.len(), 2, "both leads are hot");
    let () = redis::cmd("FLUSHALL").query_async(&mut connection).await?;
    let rebuilt = suite
        .scoring()
        .rebuild_scores(RebuildScoresRequest {
            idempotency_key: key(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(rebuilt.rebuilt_score_count, 2);
    let hot_after: std::collections::BTreeMap<String, Vec<u8>> = redis::cmd("HGETALL")
        .arg(&hot_key)
        .query_async(&mut connection)
        .await?;
    assert_eq!(hot_after, hot_before, "the rebuilt hot state is identical");
    suite.stop().await
}

/// Whether scoring's consumer group on `stream` has read up to `last_entry` and holds
/// `pending` entries unacknowledged.
async fn scoring_group_reached(
    mut connection: redis::aio::MultiplexedConnection,
    stream: &str,
    pending: usize,
    last_entry: &str,
) -> bool {
    let groups: redis::streams::StreamInfoGroupsReply = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut connection)
        .await
    {
        Ok(groups) => groups,
        Err(_) => return false,
    };
    groups.groups.iter().any(|group| {
        group.name == "scoring" && group.pending == pending && group.last_delivered_id == last_entry
    })
}

/// What [`read_in_one_batch`] put on the stream.
struct OneRead {
    /// The ids of the events of the read.
    event_ids: Vec<uuid::Uuid>,
    /// The ids of the activities of the read.
    activity_ids: Vec<uuid::Uuid>,
    /// The event that cannot be applied.
    failing_event_id: String,
    /// The stream entry of the read's last event.
    last_entry: String,
}

/// Adds, in one MULTI so that a blocked consumer reads them together: a new teaser read
/// (copied from `template`, an ActivityRecorded envelope of the lead), an activity whose id is not a UUID,
/// the first activity again under the same event id, and another new activity.
async fn read_in_one_batch(
    connection: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    template: &EventEnvelope,
) -> anyhow::Result<OneRead> {
    let activity = |activity_id: String| {
        let mut envelope = template.clone();
        envelope.event_id = uuid::Uuid::new_v4().to_string();
        if let Some(Payload::ActivityRecorded(recorded)) = envelope.payload.as_mut() {
            recorded.activity_id = activity_id;
            recorded.r#type = ActivityType::TeaserRead.into();
            recorded.custom_type.clear();
        }
        envelope
    };
    let first = activity(uuid::Uuid::new_v4().to_string());
    let failing = activity("not-an-activity-id".to_owned());
    let second = activity(uuid::Uuid::new_v4().to_string());
    let mut pipeline = redis::pipe();
    pipeline.atomic();
    for envelope in [&first, &failing, &first, &second] {
        pipeline
            .cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("event_id")
            .arg(&envelope.event_id)
            .arg("envelope")
            .arg(envelope.encode_to_vec());
    }
    let entries: Vec<String> = pipeline.query_async(connection).await?;
    let activity_id = |envelope: &EventEnvelope| match envelope.payload.as_ref() {
        Some(Payload::ActivityRecorded(recorded)) => uuid::Uuid::parse_str(&recorded.activity_id),
        _ => unreachable!("copied from an ActivityRecorded"),
    };
    Ok(OneRead {
        event_ids: [&first, &failing, &second]
            .iter()
            .map(|envelope| uuid::Uuid::parse_str(&envelope.event_id))
            .collect::<Result<_, _>>()?,
        activity_ids: vec![activity_id(&first)?, activity_id(&second)?],
        failing_event_id: failing.event_id.clone(),
        last_entry: entries.last().cloned().unwrap_or_default(),
    })
}

#[tokio::test]
async fn the_seed_example_hands_over_once_in_the_embedded_mode() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    seed_example(&suite, Some(&data_dir)).await?;
    idle_lead_halves_after_one_half_life(&suite).await?;
    suite.stop().await?;
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}
