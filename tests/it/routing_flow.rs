//! Routing in the running suite, on PostgreSQL/Redis and on the embedded mode: a lead that
//! scoring hands over is assigned by the published rules, the rep's acceptance makes it
//! sales accepted in scoring, and a "not ready yet" sends it back to nurturing (recycled).

use std::time::Duration;

use leadflow_proto::{
    common::v1::LifecycleStage,
    routing::v1::{
        AcceptAssignmentRequest, Assignment, AssignmentState, CreateRepRequest, CreateTeamRequest,
        ListAssignmentsRequest, PublishRuleSetRequest, RejectAssignmentRequest, RejectionReason,
        Rep, RoutingStrategy, RuleSet, SlaClock, Team,
    },
};
use leadflow_tests::{TestSuite, eventually};

use crate::scoring_ledger::{SEED_EXAMPLE, score_until, target_lead, track};

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One rep in one team that catches every lead.
async fn sales_team(suite: &TestSuite) -> anyhow::Result<String> {
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

async fn assignment_of(suite: &TestSuite, lead_id: &str) -> anyhow::Result<Assignment> {
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

async fn hand_over_accept_and_recycle(suite: &TestSuite) -> anyhow::Result<()> {
    let rep_id = sales_team(suite).await?;
    let (contact_id, lead_id) = target_lead(
        suite,
        "Acme Maschinenbau",
        "jonas.weber@acme-maschinenbau.example",
    )
    .await?;
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
