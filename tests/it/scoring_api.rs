//! The scoring service's lead API end to end: leads arrive through capture's events, then are
//! classified by hand, moved through their lifecycle, qualified by BANT, listed by score and
//! on the heat map, and rescored when a new model version is tried and activated.

use std::time::Duration;

use leadflow_proto::{
    capture::v1::{CreateFormRequest, TrackActivityRequest, activity_input},
    common::v1::{ActivityType, HeatMapCell, LeadClass, LifecycleStage, ProfileGrade},
    scoring::v1::{
        ActivateScoringModelRequest, Bant, BantCriterion, ClassChangeOrigin, ClassifyLeadRequest,
        CreateScoringModelRequest, DryRunScoringModelRequest, GetBantRequest,
        GetClassHistoryRequest, GetHeatMapRequest, GetScoreRequest, GetScoringModelRequest,
        GetStageHistoryRequest, LeadScore, ListTopLeadsRequest, ScoringModel,
        TransitionStageRequest, UpdateBantRequest,
    },
};
use leadflow_tests::{TestSuite, eventually};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    intake::{submission, trade_fair_form},
    scoring::seed_model,
};

/// The product every test scores for (the product of the trade-fair form).
const PRODUCT: &str = "erp";

/// How long scoring may take to consume capture's events.
const SCORING_DELAY: Duration = Duration::from_secs(10);

/// A lead as capture created it.
struct Lead {
    lead_id: String,
    contact_id: String,
}

/// Creates the trade-fair form (product "erp") and returns its id.
async fn create_form(suite: &TestSuite) -> anyhow::Result<String> {
    Ok(suite
        .capture()
        .create_form(CreateFormRequest {
            form: Some(trade_fair_form()),
            idempotency_key: "form-1".to_owned(),
        })
        .await?
        .into_inner()
        .form
        .expect("form")
        .form_id)
}

/// Submits the form for a contact of its own company, so each name is a lead of its own.
async fn submit_lead(suite: &TestSuite, form_id: &str, name: &str) -> anyhow::Result<Lead> {
    let email = format!("buyer@{name}-werke.com");
    let company = format!("{name} Werke AG");
    let submitted = suite
        .capture()
        .submit_form(submission(
            form_id,
            &format!("submit-{name}"),
            &[
                ("email", email.as_str()),
                ("first_name", "Ada"),
                ("company", company.as_str()),
            ],
        ))
        .await?
        .into_inner();
    Ok(Lead {
        lead_id: submitted.lead_id,
        contact_id: submitted.contact_id,
    })
}

/// Tracks one activity of the contact for the product.
async fn track(
    suite: &TestSuite,
    lead: &Lead,
    activity_type: ActivityType,
    key: &str,
) -> anyhow::Result<()> {
    suite
        .capture()
        .track_activity(TrackActivityRequest {
            activity: Some(leadflow_proto::capture::v1::ActivityInput {
                subject: Some(activity_input::Subject::ContactId(lead.contact_id.clone())),
                r#type: activity_type.into(),
                product: PRODUCT.to_owned(),
                source: "website".to_owned(),
                ..Default::default()
            }),
            idempotency_key: key.to_owned(),
        })
        .await?;
    Ok(())
}

/// The lead's current score.
async fn score(suite: &TestSuite, lead_id: &str) -> Result<LeadScore, tonic::Status> {
    Ok(suite
        .scoring()
        .get_score(GetScoreRequest {
            lead_id: lead_id.to_owned(),
            product: PRODUCT.to_owned(),
            as_of_time: None,
        })
        .await?
        .into_inner()
        .score
        .expect("score"))
}

/// Waits until scoring answers for the lead with a score that passes `check`.
async fn score_when(
    suite: &TestSuite,
    lead_id: &str,
    what: &str,
    check: impl Fn(&LeadScore) -> bool,
) -> anyhow::Result<LeadScore> {
    let check = &check;
    let reached = eventually(SCORING_DELAY, || async move {
        score(suite, lead_id).await.is_ok_and(|score| check(&score))
    })
    .await;
    let last = score(suite, lead_id).await;
    anyhow::ensure!(
        reached,
        "lead {lead_id} never reached {what}; last: {last:?}"
    );
    Ok(last?)
}

/// A form, one lead submitted through it, and the lead scored for the product.
async fn scored_lead(suite: &TestSuite, name: &str) -> anyhow::Result<Lead> {
    let form_id = create_form(suite).await?;
    let lead = submit_lead(suite, &form_id, name).await?;
    score_when(suite, &lead.lead_id, "a score", |_| true).await?;
    Ok(lead)
}

/// The fields a bad request names.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|details| {
            details
                .field_violations
                .iter()
                .map(|violation| violation.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn classify(lead_id: &str, lead_class: LeadClass, key: &str) -> ClassifyLeadRequest {
    ClassifyLeadRequest {
        lead_id: lead_id.to_owned(),
        product: PRODUCT.to_owned(),
        lead_class: lead_class.into(),
        actor: "jana.novak".to_owned(),
        reason: "qualification call: evaluating two offers, decision in May".to_owned(),
        idempotency_key: key.to_owned(),
    }
}

#[tokio::test]
async fn a_manual_class_is_recorded_with_actor_and_reason_and_shows_in_the_score()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let mut scoring = suite.scoring();

    let classified = scoring
        .classify_lead(classify(&lead.lead_id, LeadClass::B2, "classify-1"))
        .await?
        .into_inner();
    let change = classified.change.clone().expect("change");
    assert_eq!(change.lead_id, lead.lead_id);
    assert_eq!(change.product, PRODUCT);
    assert_eq!(change.from_class(), LeadClass::Unspecified);
    assert_eq!(change.to_class(), LeadClass::B2);
    assert_eq!(change.origin(), ClassChangeOrigin::Manual);
    assert_eq!(change.actor, "jana.novak");
    assert_eq!(
        change.reason,
        "qualification call: evaluating two offers, decision in May"
    );
    assert_eq!(
        classified.score.as_ref().map(LeadScore::lead_class),
        Some(LeadClass::B2),
        "the answer carries the score after the change"
    );

    let history = scoring
        .get_class_history(GetClassHistoryRequest {
            lead_id: lead.lead_id.clone(),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        history.changes,
        [change],
        "the manual change, recorded once"
    );
    assert!(history.next_page_token.is_empty());

    let now = score(&suite, &lead.lead_id).await?;
    assert_eq!(now.lead_class(), LeadClass::B2);
    assert!(now.class_since_time.is_some());
    suite.stop().await
}

#[tokio::test]
async fn classify_lead_refuses_missing_fields_naming_each_and_unknown_leads() -> anyhow::Result<()>
{
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let mut scoring = suite.scoring();
    let valid = classify(&lead.lead_id, LeadClass::B1, "classify-invalid");
    let cases = [
        (
            "actor",
            ClassifyLeadRequest {
                actor: String::new(),
                ..valid.clone()
            },
        ),
        (
            "reason",
            ClassifyLeadRequest {
                reason: "  ".to_owned(),
                ..valid.clone()
            },
        ),
        (
            "lead_class",
            ClassifyLeadRequest {
                lead_class: LeadClass::Unspecified.into(),
                ..valid.clone()
            },
        ),
    ];
    for (field, request) in cases {
        let status = scoring.classify_lead(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violated_fields(&status), [field], "{status:?}");
    }

    let unknown = scoring
        .classify_lead(classify(
            &uuid::Uuid::new_v4().to_string(),
            LeadClass::B1,
            "classify-unknown",
        ))
        .await
        .expect_err("unknown lead");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let history = scoring
        .get_class_history(GetClassHistoryRequest {
            lead_id: lead.lead_id.clone(),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(history.changes.is_empty(), "nothing was classified");
    suite.stop().await
}

#[tokio::test]
async fn a_replayed_classification_gets_the_same_answer_and_a_reused_key_is_refused()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let mut scoring = suite.scoring();
    let request = classify(&lead.lead_id, LeadClass::B3, "classify-once");
    let first = scoring.classify_lead(request.clone()).await?.into_inner();
    let replay = scoring.classify_lead(request.clone()).await?.into_inner();
    assert_eq!(replay, first, "a retry gets the first answer");

    let reused = scoring
        .classify_lead(ClassifyLeadRequest {
            lead_class: LeadClass::C.into(),
            ..request
        })
        .await
        .expect_err("same key, other payload");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");

    let history = scoring
        .get_class_history(GetClassHistoryRequest {
            lead_id: lead.lead_id.clone(),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        history.changes.len(),
        1,
        "the retry and the refused call changed nothing: {:?}",
        history.changes
    );
    assert_eq!(
        score(&suite, &lead.lead_id).await?.lead_class(),
        LeadClass::B3
    );
    suite.stop().await
}

fn transition(
    lead_id: &str,
    to: LifecycleStage,
    reason: &str,
    key: &str,
) -> TransitionStageRequest {
    TransitionStageRequest {
        lead_id: lead_id.to_owned(),
        product: PRODUCT.to_owned(),
        to_stage: to.into(),
        expected_stage: LifecycleStage::Unspecified.into(),
        actor: "jana.novak".to_owned(),
        reason: reason.to_owned(),
        idempotency_key: key.to_owned(),
    }
}

#[tokio::test]
async fn an_allowed_transition_is_recorded_after_the_start_at_new() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let mut scoring = suite.scoring();
    assert_eq!(
        score(&suite, &lead.lead_id).await?.stage(),
        LifecycleStage::New
    );

    let moved = scoring
        .transition_stage(TransitionStageRequest {
            expected_stage: LifecycleStage::New.into(),
            ..transition(
                &lead.lead_id,
                LifecycleStage::Disqualified,
                "student project, no budget",
                "disqualify-1",
            )
        })
        .await?
        .into_inner();
    let change = moved.change.clone().expect("change");
    assert_eq!(change.from_stage(), LifecycleStage::New);
    assert_eq!(change.to_stage(), LifecycleStage::Disqualified);
    assert_eq!(change.actor, "jana.novak");
    assert_eq!(change.reason, "student project, no budget");
    assert_eq!(
        moved.score.as_ref().map(LeadScore::stage),
        Some(LifecycleStage::Disqualified)
    );

    let back = scoring
        .transition_stage(transition(
            &lead.lead_id,
            LifecycleStage::New,
            "",
            "reopen-1",
        ))
        .await?
        .into_inner();
    let reopened = back.change.expect("change");
    assert_eq!(
        (reopened.from_stage(), reopened.to_stage()),
        (LifecycleStage::Disqualified, LifecycleStage::New),
        "a disqualified lead may start over"
    );

    let history = scoring
        .get_stage_history(GetStageHistoryRequest {
            lead_id: lead.lead_id.clone(),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .changes;
    let steps: Vec<(LifecycleStage, LifecycleStage)> = history
        .iter()
        .map(|change| (change.from_stage(), change.to_stage()))
        .collect();
    assert_eq!(
        steps,
        [
            (LifecycleStage::Unspecified, LifecycleStage::New),
            (LifecycleStage::New, LifecycleStage::Disqualified),
            (LifecycleStage::Disqualified, LifecycleStage::New),
        ],
        "oldest first, starting at new"
    );
    assert_eq!(history[1], change);
    assert_eq!(
        score(&suite, &lead.lead_id).await?.stage(),
        LifecycleStage::New
    );
    suite.stop().await
}

#[tokio::test]
async fn forbidden_and_unexpected_transitions_fail_their_precondition_and_change_nothing()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let mut scoring = suite.scoring();

    let forbidden = scoring
        .transition_stage(transition(
            &lead.lead_id,
            LifecycleStage::Customer,
            "",
            "to-customer",
        ))
        .await
        .expect_err("NEW -> CUSTOMER");
    assert_eq!(forbidden.code(), Code::FailedPrecondition, "{forbidden:?}");

    let unexpected = scoring
        .transition_stage(TransitionStageRequest {
            expected_stage: LifecycleStage::Mql.into(),
            ..transition(
                &lead.lead_id,
                LifecycleStage::Disqualified,
                "not a fit",
                "expected-mql",
            )
        })
        .await
        .expect_err("the lead is NEW, not MQL");
    assert_eq!(
        unexpected.code(),
        Code::FailedPrecondition,
        "{unexpected:?}"
    );

    let history = scoring
        .get_stage_history(GetStageHistoryRequest {
            lead_id: lead.lead_id.clone(),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .changes;
    assert_eq!(history.len(), 1, "only the start at new: {history:?}");
    assert_eq!(
        score(&suite, &lead.lead_id).await?.stage(),
        LifecycleStage::New
    );
    suite.stop().await
}

#[tokio::test]
async fn transition_stage_allows_only_the_moves_its_contract_lists() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    // From NEW the contract allows MQL, SAL (a lead that asked for sales itself) and
    // DISQUALIFIED: sales qualification (SQL) cannot skip acceptance.
    let skipped = suite
        .scoring()
        .transition_stage(transition(&lead.lead_id, LifecycleStage::Sql, "", "to-sql"))
        .await
        .map(|answer| answer.into_inner().change)
        .expect_err("NEW -> SQL is not an allowed transition");
    assert_eq!(skipped.code(), Code::FailedPrecondition, "{skipped:?}");
    assert_eq!(
        score(&suite, &lead.lead_id).await?.stage(),
        LifecycleStage::New
    );
    let accepted = suite
        .scoring()
        .transition_stage(transition(&lead.lead_id, LifecycleStage::Sal, "", "to-sal"))
        .await?
        .into_inner()
        .change
        .expect("a change");
    assert_eq!(accepted.to_stage(), LifecycleStage::Sal);
    suite.stop().await
}

#[tokio::test]
async fn recycling_or_disqualifying_without_a_reason_is_refused_naming_the_reason()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let mut scoring = suite.scoring();
    for to in [LifecycleStage::Recycled, LifecycleStage::Disqualified] {
        let status = scoring
            .transition_stage(transition(&lead.lead_id, to, " ", "no-reason"))
            .await
            .expect_err("a reason is required");
        assert_eq!(status.code(), Code::InvalidArgument, "{to:?}: {status:?}");
        assert_eq!(violated_fields(&status), ["reason"], "{to:?}: {status:?}");
    }
    assert_eq!(
        score(&suite, &lead.lead_id).await?.stage(),
        LifecycleStage::New
    );
    suite.stop().await
}

fn criterion(met: bool, note: &str) -> Option<BantCriterion> {
    Some(BantCriterion {
        met,
        note: note.to_owned(),
    })
}

fn bant_update(lead_id: &str, bant: Bant, paths: &[&str], key: &str) -> UpdateBantRequest {
    UpdateBantRequest {
        lead_id: lead_id.to_owned(),
        product: PRODUCT.to_owned(),
        bant: Some(bant),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        }),
        actor: "jana.novak".to_owned(),
        idempotency_key: key.to_owned(),
    }
}

#[tokio::test]
async fn bant_starts_unmet_and_a_masked_update_changes_only_the_named_criterion()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let mut scoring = suite.scoring();
    let get = GetBantRequest {
        lead_id: lead.lead_id.clone(),
        product: PRODUCT.to_owned(),
    };

    let initial = scoring
        .get_bant(get.clone())
        .await?
        .into_inner()
        .bant
        .expect("bant");
    for (name, criterion) in [
        ("budget", &initial.budget),
        ("authority", &initial.authority),
        ("need", &initial.need),
        ("time", &initial.time),
    ] {
        assert!(
            !criterion.as_ref().is_some_and(|criterion| criterion.met),
            "{name} is unmet before any update: {initial:?}"
        );
    }
    assert!(!initial.complete);
    assert!(initial.update_time.is_none(), "never updated");

    let updated = scoring
        .update_bant(bant_update(
            &lead.lead_id,
            Bant {
                budget: criterion(true, "budget approved for Q3"),
                authority: criterion(true, "ignored: not in the mask"),
                need: criterion(true, "ignored"),
                time: criterion(true, "ignored"),
                ..Default::default()
            },
            &["budget"],
            "bant-budget",
        ))
        .await?
        .into_inner()
        .bant
        .expect("bant");
    assert_eq!(updated.budget, criterion(true, "budget approved for Q3"));
    for (name, criterion) in [
        ("authority", &updated.authority),
        ("need", &updated.need),
        ("time", &updated.time),
    ] {
        assert!(
            !criterion.as_ref().is_some_and(|criterion| criterion.met),
            "{name} is not in the mask and stays unmet: {updated:?}"
        );
        assert!(
            criterion
                .as_ref()
                .is_none_or(|criterion| criterion.note.is_empty()),
            "{name} keeps no note from outside the mask: {updated:?}"
        );
    }
    assert!(!updated.complete);
    assert_eq!(updated.update_actor, "jana.novak");
    assert!(updated.update_time.is_some());

    let read = scoring
        .get_bant(get)
        .await?
        .into_inner()
        .bant
        .expect("bant");
    assert_eq!(read, updated);
    assert!(!score(&suite, &lead.lead_id).await?.bant_complete);
    suite.stop().await
}

#[tokio::test]
async fn a_complete_bant_makes_the_lead_class_a() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let mut scoring = suite.scoring();

    let complete = scoring
        .update_bant(bant_update(
            &lead.lead_id,
            Bant {
                budget: criterion(true, "budget approved"),
                authority: criterion(true, "CFO involved"),
                need: criterion(true, "legacy ERP out of support"),
                time: criterion(true, "decision in May"),
                ..Default::default()
            },
            &[],
            "bant-all",
        ))
        .await?
        .into_inner()
        .bant
        .expect("bant");
    assert!(complete.complete, "{complete:?}");

    let now = score(&suite, &lead.lead_id).await?;
    assert_eq!(now.lead_class(), LeadClass::A, "{now:?}");
    assert!(now.bant_complete);

    let history = scoring
        .get_class_history(GetClassHistoryRequest {
            lead_id: lead.lead_id.clone(),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .changes;
    let last = history.last().expect("a class change");
    assert_eq!(last.to_class(), LeadClass::A);
    assert_eq!(last.origin(), ClassChangeOrigin::Bant, "{history:?}");
    suite.stop().await
}

#[tokio::test]
async fn update_bant_refuses_an_unknown_mask_path() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let lead = scored_lead(&suite, "alpha").await?;
    let status = suite
        .scoring()
        .update_bant(bant_update(
            &lead.lead_id,
            Bant {
                budget: criterion(true, ""),
                ..Default::default()
            },
            &["budgets"],
            "bant-typo",
        ))
        .await
        .expect_err("unknown path");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = violated_fields(&status);
    assert!(
        fields.len() == 1 && fields[0].starts_with("update_mask"),
        "the mask is named: {fields:?}"
    );
    let bant = suite
        .scoring()
        .get_bant(GetBantRequest {
            lead_id: lead.lead_id.clone(),
            product: PRODUCT.to_owned(),
        })
        .await?
        .into_inner()
        .bant
        .expect("bant");
    assert!(bant.update_time.is_none(), "nothing was written: {bant:?}");
    suite.stop().await
}

/// Three leads of the seed model with 200, 80 and 10 engagement points: engagement levels
/// 3, 2 and 1. Returns them highest first with their scores.
async fn three_engaged_leads(suite: &TestSuite) -> anyhow::Result<Vec<(Lead, LeadScore)>> {
    let form_id = create_form(suite).await?;
    let plan: [(&str, &[ActivityType], f64); 3] = [
        (
            "high",
            &[
                ActivityType::KnowledgeTestPassed,
                ActivityType::SurveyAnswered,
            ],
            200.0,
        ),
        (
            "mid",
            &[
                ActivityType::VideoCompleted,
                ActivityType::SlideDeckDownloaded,
            ],
            80.0,
        ),
        ("low", &[ActivityType::TeaserRead], 10.0),
    ];
    let mut leads = Vec::new();
    for (name, activities, points) in plan {
        let lead = submit_lead(suite, &form_id, name).await?;
        score_when(suite, &lead.lead_id, "a score", |_| true).await?;
        for (index, activity) in activities.iter().enumerate() {
            track(suite, &lead, *activity, &format!("{name}-{index}")).await?;
        }
        let scored = score_when(suite, &lead.lead_id, "its engagement", |score| {
            score.engagement_points > points - 1.0
        })
        .await?;
        leads.push((lead, scored));
    }
    Ok(leads)
}

fn top_leads(page_size: i32, page_token: &str, cell: Option<HeatMapCell>) -> ListTopLeadsRequest {
    ListTopLeadsRequest {
        product: PRODUCT.to_owned(),
        cell,
        page_size,
        page_token: page_token.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn top_leads_come_highest_score_first_page_by_page_and_by_cell() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let leads = three_engaged_leads(&suite).await?;
    let expected: Vec<&str> = leads
        .iter()
        .map(|(lead, _)| lead.lead_id.as_str())
        .collect();
    let levels: Vec<u32> = leads
        .iter()
        .map(|(_, score)| score.engagement_level)
        .collect();
    assert_eq!(
        levels,
        [3, 2, 1],
        "the engagement levels of 200, 80, 10 points"
    );
    let mut scoring = suite.scoring();

    let all = scoring
        .list_top_leads(top_leads(0, "", None))
        .await?
        .into_inner();
    let ids: Vec<&str> = all
        .scores
        .iter()
        .map(|score| score.lead_id.as_str())
        .collect();
    assert_eq!(ids, expected, "highest total first");
    assert!(
        all.scores
            .windows(2)
            .all(|pair| pair[0].total_points >= pair[1].total_points)
    );
    assert!(all.next_page_token.is_empty());

    let mut paged = Vec::new();
    let mut token = String::new();
    for page_number in 0..3 {
        let page = scoring
            .list_top_leads(top_leads(1, &token, None))
            .await?
            .into_inner();
        assert_eq!(page.scores.len(), 1, "page {page_number}");
        paged.push(page.scores[0].lead_id.clone());
        token = page.next_page_token;
        assert_eq!(token.is_empty(), page_number == 2, "page {page_number}");
    }
    assert_eq!(paged, expected, "the pages together give the whole list");

    let mid_cell = leads[1].1.cell.expect("cell");
    let in_cell = scoring
        .list_top_leads(top_leads(0, "", Some(mid_cell)))
        .await?
        .into_inner();
    let ids: Vec<&str> = in_cell
        .scores
        .iter()
        .map(|score| score.lead_id.as_str())
        .collect();
    assert_eq!(ids, [expected[1]], "only the lead in {mid_cell:?}");

    let level_three = scoring
        .list_top_leads(top_leads(
            0,
            "",
            Some(HeatMapCell {
                grade: ProfileGrade::Unspecified.into(),
                engagement_level: 3,
            }),
        ))
        .await?
        .into_inner();
    let ids: Vec<&str> = level_three
        .scores
        .iter()
        .map(|score| score.lead_id.as_str())
        .collect();
    assert_eq!(ids, [expected[0]], "the column of engagement level 3");
    suite.stop().await
}

#[tokio::test]
async fn the_heat_map_has_sixteen_cells_that_add_up_to_the_leads() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let leads = three_engaged_leads(&suite).await?;
    let map = suite
        .scoring()
        .get_heat_map(GetHeatMapRequest {
            product: PRODUCT.to_owned(),
            stages: Vec::new(),
        })
        .await?
        .into_inner();
    assert_eq!(map.cells.len(), 16, "{map:?}");
    let sum: u32 = map.cells.iter().map(|cell| cell.lead_count).sum();
    assert_eq!(sum, map.total_lead_count);
    assert_eq!(map.total_lead_count, 3);
    assert_eq!(
        map.cells[0]
            .cell
            .map(|cell| (cell.grade(), cell.engagement_level)),
        Some((ProfileGrade::A, 1)),
        "grade A first"
    );
    for (_, score) in &leads {
        let count = map
            .cells
            .iter()
            .find(|cell| cell.cell == score.cell)
            .map(|cell| cell.lead_count);
        assert_eq!(count, Some(1), "the cell {:?} holds its lead", score.cell);
    }
    assert!(map.as_of_time.is_some());
    suite.stop().await
}

/// A model of the product that makes every lead an MQL at once and hands it over at
/// `threshold` points.
fn mql_at_once_model(threshold: u32) -> ScoringModel {
    ScoringModel {
        name: format!("ERP, hand-off at {threshold}"),
        threshold,
        mql_rule: None,
        ..seed_model(PRODUCT)
    }
}

async fn create_model(
    suite: &TestSuite,
    model: ScoringModel,
    key: &str,
) -> anyhow::Result<ScoringModel> {
    Ok(suite
        .scoring()
        .create_scoring_model(CreateScoringModelRequest {
            model: Some(model),
            idempotency_key: key.to_owned(),
        })
        .await?
        .into_inner()
        .model
        .expect("model"))
}

#[tokio::test]
async fn a_dry_run_reports_new_hand_offs_and_activation_rescores_every_lead() -> anyhow::Result<()>
{
    let suite = TestSuite::start().await?;
    let mut scoring = suite.scoring();
    let strict = create_model(&suite, mql_at_once_model(1_000), "model-strict").await?;
    let activated = scoring
        .activate_scoring_model(ActivateScoringModelRequest {
            model_id: strict.model_id.clone(),
            idempotency_key: "activate-strict".to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!(
        activated.previous_model_id, "",
        "the product had no active model"
    );
    assert_eq!(activated.rescored_lead_count, 0);

    // Two MQLs: one with 200 points, one with 10; neither reaches 1000.
    let form_id = create_form(&suite).await?;
    let hot = submit_lead(&suite, &form_id, "hot").await?;
    track(&suite, &hot, ActivityType::KnowledgeTestPassed, "hot-1").await?;
    track(&suite, &hot, ActivityType::SurveyAnswered, "hot-2").await?;
    let cold = submit_lead(&suite, &form_id, "cold").await?;
    track(&suite, &cold, ActivityType::TeaserRead, "cold-1").await?;
    let hot_before = score_when(&suite, &hot.lead_id, "200 points as an MQL", |score| {
        score.engagement_points > 199.0 && score.stage() == LifecycleStage::Mql
    })
    .await?;
    let cold_before = score_when(&suite, &cold.lead_id, "10 points as an MQL", |score| {
        score.engagement_points > 9.0 && score.stage() == LifecycleStage::Mql
    })
    .await?;
    for before in [&hot_before, &cold_before] {
        assert_eq!(before.model_id, strict.model_id);
        assert!(!before.sales_ready, "below the threshold: {before:?}");
    }

    let lenient = create_model(&suite, mql_at_once_model(100), "model-lenient").await?;
    assert_eq!(lenient.version, 2);
    let dry_run = scoring
        .dry_run_scoring_model(DryRunScoringModelRequest {
            model_id: lenient.model_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(dry_run.model_id, lenient.model_id);
    assert_eq!(dry_run.active_model_id, strict.model_id);
    assert_eq!(dry_run.evaluated_lead_count, 2);
    assert_eq!(
        dry_run.become_sales_ready_count, 1,
        "only the lead with 200 points reaches 100: {dry_run:?}"
    );
    assert_eq!(dry_run.stop_being_sales_ready_count, 0);
    assert_eq!(dry_run.become_mql_count, 0);
    assert_eq!(dry_run.stop_being_mql_count, 0);
    assert_eq!(dry_run.current_heat_map.len(), 16);
    assert_eq!(dry_run.proposed_heat_map.len(), 16);
    let counted = |map: &[leadflow_proto::scoring::v1::HeatMapCount]| -> u32 {
        map.iter().map(|cell| cell.lead_count).sum()
    };
    assert_eq!(counted(&dry_run.current_heat_map), 2);
    assert_eq!(counted(&dry_run.proposed_heat_map), 2);

    // The dry run changed nothing.
    for (lead, before) in [(&hot, &hot_before), (&cold, &cold_before)] {
        let after = score(&suite, &lead.lead_id).await?;
        assert_eq!(after.model_id, strict.model_id);
        assert_eq!(
            (
                after.stage(),
                after.sales_ready,
                after.lead_class,
                after.cell
            ),
            (
                before.stage(),
                before.sales_ready,
                before.lead_class,
                before.cell
            ),
            "a dry run changes no score"
        );
    }
    let untouched = scoring
        .get_scoring_model(GetScoringModelRequest {
            model_id: lenient.model_id.clone(),
        })
        .await?
        .into_inner()
        .model
        .expect("model");
    assert!(!untouched.active, "a dry run activates nothing");

    let activated = scoring
        .activate_scoring_model(ActivateScoringModelRequest {
            model_id: lenient.model_id.clone(),
            idempotency_key: "activate-lenient".to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!(activated.previous_model_id, strict.model_id);
    assert_eq!(activated.rescored_lead_count, 2);
    let model = activated.model.expect("model");
    assert_eq!(model.model_id, lenient.model_id);
    assert!(model.active);

    let hot_after = score(&suite, &hot.lead_id).await?;
    assert_eq!(hot_after.model_id, lenient.model_id);
    assert_eq!(hot_after.model_version, 2);
    assert!(hot_after.sales_ready, "200 points reach 100: {hot_after:?}");
    let cold_after = score(&suite, &cold.lead_id).await?;
    assert_eq!(cold_after.model_id, lenient.model_id);
    assert!(!cold_after.sales_ready, "10 points do not: {cold_after:?}");

    let previous = scoring
        .get_scoring_model(GetScoringModelRequest {
            model_id: strict.model_id.clone(),
        })
        .await?
        .into_inner()
        .model
        .expect("model");
    assert!(!previous.active, "the previous version was deactivated");
    suite.stop().await
}
