//! Routing in the running suite, on PostgreSQL/Redis and on the embedded mode: a lead that
//! scoring hands over is assigned by the published rules, the rep's acceptance makes it
//! sales accepted in scoring and ends its nurturing as handed over, and a "not ready yet"
//! sends it back to nurturing (recycled), which enrolls its contact again.

use std::time::Duration;

use leadflow_proto::{
    capture::v1::{CreateFormRequest, Form, FormFieldKind},
    common::v1::{BuyingStage, LeadClass, LifecycleStage},
    nurturing::v1::{
        ContentItem, ContentKind, CreateContentItemRequest, CreateTemplateRequest,
        CreateTrackRequest, Enrollment, EnrollmentState, ListEnrollmentsRequest, MailTemplate,
        Track, TrackVersion,
    },
    routing::v1::{
        AcceptAssignmentRequest, Assignment, AssignmentState, CreateRepRequest, CreateTeamRequest,
        ListAssignmentsRequest, PublishRuleSetRequest, RejectAssignmentRequest, RejectionReason,
        Rep, RoutingStrategy, RuleSet, SlaClock, Team,
    },
};
use leadflow_tests::{TestSuite, eventually};

use crate::{
    capture::field,
    intake::submission,
    scoring_ledger::{PRODUCT, SEED_EXAMPLE, score_until, target_lead, track},
};

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One rep in one team that catches every lead.
pub(crate) async fn sales_team(suite: &TestSuite) -> anyhow::Result<String> {
    let mut routing = suite.routing();
    let rep = routing
        .create_rep(CreateRepRequest {
            rep: Some(Rep {
                email: "anna.berger@example.com".to_owned(),
                display_name: "Anna Berger".to_owned(),
                time_zone: "Europe/Berlin".to_owned(),
                capacity: 50,
                weight: 1,
                active: true,
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .rep
        .expect("rep");
    let team = routing
        .create_team(CreateTeamRequest {
            team: Some(Team {
                name: "Inside sales".to_owned(),
                member_rep_ids: vec![rep.rep_id.clone()],
                strategy: RoutingStrategy::RoundRobin.into(),
                sla: Some(prost_types::Duration {
                    seconds: 3_600,
                    nanos: 0,
                }),
                sla_clock: SlaClock::WallTime.into(),
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .team
        .expect("team");
    routing
        .publish_rule_set(PublishRuleSetRequest {
            rule_set: Some(RuleSet {
                default_team_id: team.team_id,
                description: "everything to inside sales".to_owned(),
                ..Default::default()
            }),
            base_version: 0,
            idempotency_key: key(),
        })
        .await?;
    Ok(rep.rep_id)
}

pub(crate) async fn assignment_of(suite: &TestSuite, lead_id: &str) -> anyhow::Result<Assignment> {
    let found = std::sync::Mutex::new(None);
    let reached = eventually(Duration::from_secs(20), || async {
        let listed = suite
            .routing()
            .list_assignments(ListAssignmentsRequest {
                lead_id: lead_id.to_owned(),
                ..Default::default()
            })
            .await;
        match listed.map(|response| response.into_inner().assignments) {
            Ok(assignments) if !assignments.is_empty() => {
                *found.lock().expect("not poisoned") = assignments.into_iter().next();
                true
            }
            _ => false,
        }
    })
    .await;
    anyhow::ensure!(reached, "lead {lead_id} was never assigned");
    Ok(found.into_inner().expect("not poisoned").expect("found"))
}

/// A nurture track for the product that enrolls every B- and A-lead, with two items for IT
/// managers at every stage.
async fn nurture_track(suite: &TestSuite) -> anyhow::Result<String> {
    let mut nurturing = suite.nurturing();
    let template = nurturing
        .create_template(CreateTemplateRequest {
            template: Some(MailTemplate {
                name: "Offer (en)".to_owned(),
                language: "en".to_owned(),
                subject: "{{ item.title }}".to_owned(),
                html_body: "<p><a href=\"{{ item.url }}\">{{ item.title }}</a></p>".to_owned(),
                text_body: "{{ item.title }}: {{ item.url }}".to_owned(),
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .template
        .expect("template");
    for stage in [
        BuyingStage::ProblemAwareness,
        BuyingStage::SolutionSearch,
        BuyingStage::RequestingOffers,
        BuyingStage::ChoosingOffer,
    ] {
        for number in 1..=2 {
            nurturing
                .create_content_item(CreateContentItemRequest {
                    item: Some(ContentItem {
                        title: format!("{} item {number}", stage.as_str_name()),
                        kind: ContentKind::Article.into(),
                        url: format!("https://www.example.com/{}/{number}", stage as i32),
                        buyer_roles: vec!["it-manager".to_owned()],
                        stage: stage.into(),
                        product: PRODUCT.to_owned(),
                        language: "en".to_owned(),
                        ..Default::default()
                    }),
                    idempotency_key: key(),
                })
                .await?;
        }
    }
    let created = nurturing
        .create_track(CreateTrackRequest {
            track: Some(Track {
                name: "ERP nurture".to_owned(),
                product: PRODUCT.to_owned(),
                ..Default::default()
            }),
            first_version: Some(TrackVersion {
                offer_template_id: template.template_id,
                auto_enroll_classes: [LeadClass::B1, LeadClass::B2, LeadClass::B3, LeadClass::A]
                    .into_iter()
                    .map(i32::from)
                    .collect(),
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner();
    Ok(created.track.expect("track").track_id)
}

/// Tells capture the contact's buyer role through a profile form, as progressive
/// profiling would.
async fn complete_profile(suite: &TestSuite, email: &str) -> anyhow::Result<()> {
    let mut capture = suite.capture();
    let form = capture
        .create_form(CreateFormRequest {
            form: Some(Form {
                name: "ERP profile".to_owned(),
                product: PRODUCT.to_owned(),
                fields: vec![
                    field("email", FormFieldKind::Email, "contact.email", true),
                    field("role", FormFieldKind::Text, "contact.buyer_role", true),
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
    capture
        .submit_form(submission(
            &form.form_id,
            &key(),
            &[("email", email), ("role", "it-manager")],
        ))
        .await?;
    Ok(())
}

/// The contact's enrollments once `done` holds for them.
async fn enrollments_until(
    suite: &TestSuite,
    contact_id: &str,
    done: impl Fn(&[Enrollment]) -> bool,
) -> anyhow::Result<Vec<Enrollment>> {
    let found = std::sync::Mutex::new(Ok(Vec::new()));
    let reached = eventually(Duration::from_secs(20), || async {
        let listed = suite
            .nurturing()
            .list_enrollments(ListEnrollmentsRequest {
                contact_id: contact_id.to_owned(),
                ..Default::default()
            })
            .await
            .map(|response| response.into_inner().enrollments);
        let holds = listed.as_ref().is_ok_and(|listed| done(listed));
        *found.lock().expect("not poisoned") = listed;
        holds
    })
    .await;
    let found = found.into_inner().expect("not poisoned")?;
    anyhow::ensure!(reached, "the enrollments never got there: {found:?}");
    Ok(found)
}

async fn hand_over_accept_and_recycle(suite: &TestSuite) -> anyhow::Result<()> {
    let rep_id = sales_team(suite).await?;
    let track_id = nurture_track(suite).await?;
    let email = "jonas.weber@acme-maschinenbau.example";
    let (contact_id, lead_id) = target_lead(suite, "Acme Maschinenbau", email).await?;
    complete_profile(suite, email).await?;
    for (activity, _) in SEED_EXAMPLE {
        track(suite, &contact_id, activity, None).await?;
    }
    let assignment = assignment_of(suite, &lead_id).await?;
    assert_eq!(assignment.rep_id, rep_id);
    assert_eq!(assignment.state, AssignmentState::Pending as i32);
    assert!(assignment.total_score >= 250.0);
    assert_eq!(
        assignment
            .lead
            .as_ref()
            .map(|lead| lead.company_name.as_str()),
        Some("Acme Maschinenbau")
    );
    let mut routing = suite.routing();
    routing
        .accept_assignment(AcceptAssignmentRequest {
            assignment_id: assignment.assignment_id.clone(),
            actor: "anna.berger@example.com".to_owned(),
            idempotency_key: key(),
        })
        .await?;
    score_until(suite, &lead_id, |score| {
        score.stage == LifecycleStage::Sal as i32
    })
    .await?;
    let rejected = routing
        .reject_assignment(RejectAssignmentRequest {
            assignment_id: assignment.assignment_id,
            reason: RejectionReason::NotReadyYet.into(),
            note: "evaluating next year".to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(rejected.resulting_stage, LifecycleStage::Recycled as i32);
    let recycled = score_until(suite, &lead_id, |score| {
        score.stage == LifecycleStage::Recycled as i32
    })
    .await?;
    assert!(!recycled.sales_ready);
    // Accepted by sales, the first enrollment ended handed over; recycled, the contact is
    // enrolled in the same track again.
    let enrollments = enrollments_until(suite, &contact_id, |enrollments| {
        enrollments.iter().any(|enrollment| {
            enrollment.state == EnrollmentState::Completed as i32
                && enrollment.state_reason == "accepted by sales"
        }) && enrollments.iter().any(|enrollment| {
            enrollment.state == EnrollmentState::Active as i32
                && enrollment.state_reason == "recycled by sales"
        })
    })
    .await?;
    assert!(
        enrollments
            .iter()
            .all(|enrollment| enrollment.track_id == track_id && enrollment.lead_id == lead_id)
    );
    Ok(())
}

#[tokio::test]
async fn a_handed_over_lead_is_assigned_accepted_and_recycled() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    hand_over_accept_and_recycle(&suite).await?;
    suite.stop().await
}

#[tokio::test]
async fn a_handed_over_lead_is_assigned_accepted_and_recycled_in_the_embedded_mode()
-> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("leadflow-routing-{}", uuid::Uuid::new_v4()));
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let result = hand_over_accept_and_recycle(&suite).await;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}
