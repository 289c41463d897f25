//! The routing store port: reps read back with their hours and absences and page in
//! creation order; one email per rep; capacity is taken only below the limit; teams keep
//! member order and rotation; a lead has one open hand-over per product; the queue is in
//! arrival order.

use std::sync::Arc;

use chrono::{Duration, Utc};
use leadflow_platform::time::{Clock, SystemClock};
use leadflow_proto::{common::v1 as common, routing::v1 as pb};
use leadflow_routing::{
    NewRep, PostgresRoutingStore, RoutingStore, SqliteRoutingStore,
    records::{HandOver, HandOverState, TeamRecord},
};
use leadflow_storage::StorageError;
use uuid::Uuid;

use super::{Backing, contract};
use crate::routing::rep;

async fn postgres_store() -> anyhow::Result<(Backing, Arc<dyn RoutingStore>)> {
    let (backing, routing) =
        super::postgres(leadflow_routing::SCHEMA, &leadflow_routing::MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(PostgresRoutingStore::new(routing.pool().clone())),
    ))
}

async fn sqlite_store() -> anyhow::Result<(Backing, Arc<dyn RoutingStore>)> {
    let (backing, routing) =
        super::sqlite(leadflow_routing::SCHEMA, &leadflow_routing::SQLITE_MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(SqliteRoutingStore::new(routing.pool().clone())),
    ))
}

fn new_rep(email: &str) -> NewRep {
    NewRep::parse(Some(&rep(email))).expect("a valid rep")
}

async fn reps_read_back_with_hours_and_absences_in_pages(
    store: Arc<dyn RoutingStore>,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let mut unit = store.begin_work().await?;
    let mut ids = Vec::new();
    for email in ["jana@example.com", "max@example.com", "ole@example.com"] {
        let rep_id = Uuid::now_v7();
        unit.insert_rep(rep_id, &new_rep(email), now).await?;
        ids.push(rep_id);
    }
    unit.commit().await?;
    let mut unit = store.read().await?;
    let first = unit.rep(ids[0]).await?.expect("stored");
    assert_eq!(first.rep, new_rep("jana@example.com"));
    assert_eq!(first.rep.working_hours.len(), 2);
    assert_eq!(first.rep.out_of_office.len(), 1);
    assert_eq!((first.open_assignments, first.create_time), (0, now));
    let page = unit.reps_page(None, None, 2).await?;
    assert_eq!(
        page.iter().map(|rep| rep.rep_id).collect::<Vec<_>>(),
        ids[..2]
    );
    let rest = unit.reps_page(None, Some(ids[1]), 2).await?;
    assert_eq!(
        rest.iter().map(|rep| rep.rep_id).collect::<Vec<_>>(),
        ids[2..]
    );
    let mut by_ids = unit.reps_by_ids(&[ids[2], ids[0], Uuid::now_v7()]).await?;
    by_ids.sort_by_key(|rep| rep.rep_id);
    assert_eq!(
        by_ids.iter().map(|rep| rep.rep_id).collect::<Vec<_>>(),
        vec![ids[0], ids[2]]
    );
    assert_eq!(by_ids[0], first);
    drop(unit);
    let mut unit = store.begin_work().await?;
    let duplicate = unit
        .insert_rep(Uuid::now_v7(), &new_rep("jana@example.com"), now)
        .await;
    assert!(
        matches!(duplicate, Err(StorageError::UniqueViolation { .. })),
        "{duplicate:?}"
    );
    Ok(())
}

async fn capacity_is_taken_only_below_the_limit(
    store: Arc<dyn RoutingStore>,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let rep_id = Uuid::now_v7();
    let mut unit = store.begin_work().await?;
    let mut small = new_rep("small@example.com");
    small.capacity = 2;
    unit.insert_rep(rep_id, &small, now).await?;
    assert!(unit.take_capacity(rep_id, now).await?);
    assert!(unit.take_capacity(rep_id, now).await?);
    assert!(!unit.take_capacity(rep_id, now).await?, "at capacity");
    unit.release_capacity(rep_id).await?;
    assert!(unit.take_capacity(rep_id, now).await?);
    let rep = unit.rep(rep_id).await?.expect("stored");
    assert_eq!(rep.open_assignments, 2);
    assert_eq!(rep.last_assign_time, Some(now));
    for _ in 0..5 {
        unit.release_capacity(rep_id).await?;
    }
    assert_eq!(unit.rep(rep_id).await?.expect("stored").open_assignments, 0);
    unit.commit().await?;
    Ok(())
}

fn team_of(members: &[Uuid], now: chrono::DateTime<Utc>) -> TeamRecord {
    TeamRecord {
        team_id: Uuid::now_v7(),
        name: "Inside sales".to_owned(),
        members: members
            .iter()
            .map(|&rep_id| leadflow_domain::routing::Rotation {
                rep_id,
                current_weight: 0,
            })
            .collect(),
        team_lead_rep_id: None,
        strategy: pb::RoutingStrategy::WeightedRoundRobin,
        account_ownership_first: false,
        sla: Duration::minutes(30),
        sla_clock: pb::SlaClock::WallTime,
        escalate_after_breaches: 0,
        last_chosen_rep_id: None,
        create_time: now,
        update_time: now,
    }
}

fn hand_over(lead_id: Uuid, team_id: Uuid, queued: chrono::DateTime<Utc>) -> HandOver {
    HandOver {
        hand_over_id: Uuid::now_v7(),
        lead_id,
        product: "erp".to_owned(),
        event_id: None,
        sales_ready_time: queued,
        account_id: String::new(),
        primary_contact_id: String::new(),
        language: "de".to_owned(),
        lead_class: common::LeadClass::A,
        cell: common::HeatMapCell {
            grade: common::ProfileGrade::B.into(),
            engagement_level: 3,
        },
        total_score: 260.5,
        profile: common::LeadProfile {
            country_code: "DE".to_owned(),
            ..Default::default()
        },
        rule_set_version: 1,
        rule_id: None,
        team_id: Some(team_id),
        state: HandOverState::Queued,
        stage: common::LifecycleStage::Mql,
        breach_count: 0,
        queued_time: Some(queued),
        first_queued_time: Some(queued),
        first_assign_time: None,
        accept_time: None,
        outcome: Default::default(),
        end_time: None,
        create_time: queued,
    }
}

async fn teams_keep_order_and_rotation_and_leads_queue_once_in_arrival_order(
    store: Arc<dyn RoutingStore>,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let mut unit = store.begin_work().await?;
    let reps: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (index, rep_id) in reps.iter().enumerate() {
        unit.insert_rep(*rep_id, &new_rep(&format!("rep{index}@example.com")), now)
            .await?;
    }
    // Members in an order that is not the id order.
    let mut team = team_of(&[reps[2], reps[0], reps[1]], now);
    unit.insert_team(&team).await?;
    let rotation = [
        leadflow_domain::routing::Rotation {
            rep_id: reps[2],
            current_weight: -3,
        },
        leadflow_domain::routing::Rotation {
            rep_id: reps[0],
            current_weight: 2,
        },
    ];
    unit.save_rotation(team.team_id, reps[0], &rotation).await?;
    let stored = unit.lock_team(team.team_id).await?.expect("stored");
    assert_eq!(stored.member_ids(), vec![reps[2], reps[0], reps[1]]);
    assert_eq!(stored.last_chosen_rep_id, Some(reps[0]));
    assert_eq!(stored.members[0].current_weight, -3);
    // Replacing keeps the rotation of members that stay.
    team.members = vec![stored.members[1], stored.members[0]];
    team.name = "Inside sales DACH".to_owned();
    unit.replace_team(&team).await?;
    let replaced = unit.team(team.team_id).await?.expect("stored");
    assert_eq!(replaced.member_ids(), vec![reps[0], reps[2]]);
    assert_eq!(replaced.members[0].current_weight, 2);
    assert_eq!(replaced.name, "Inside sales DACH");
    assert_eq!(unit.teams_of_rep(reps[1]).await?, Vec::<Uuid>::new());
    assert_eq!(unit.teams_of_rep(reps[0]).await?, vec![team.team_id]);

    let lead = Uuid::now_v7();
    let first = hand_over(lead, team.team_id, now);
    assert!(unit.insert_hand_over(&first).await?);
    assert!(
        !unit
            .insert_hand_over(&hand_over(lead, team.team_id, now))
            .await?,
        "a lead has one open hand-over per product"
    );
    let later = hand_over(Uuid::now_v7(), team.team_id, now + Duration::seconds(1));
    let earliest = hand_over(Uuid::now_v7(), team.team_id, now - Duration::seconds(1));
    assert!(unit.insert_hand_over(&later).await?);
    assert!(unit.insert_hand_over(&earliest).await?);
    assert_eq!(unit.queue_length(Some(team.team_id)).await?, 3);
    let queued: Vec<Uuid> = unit
        .lock_queued(team.team_id, 10)
        .await?
        .iter()
        .map(|queued| queued.hand_over_id)
        .collect();
    assert_eq!(
        queued,
        vec![
            earliest.hand_over_id,
            first.hand_over_id,
            later.hand_over_id
        ]
    );
    assert_eq!(
        unit.hand_over(first.hand_over_id).await?.expect("stored"),
        first
    );
    let mut ended = first.clone();
    ended.state = HandOverState::Ended;
    ended.queued_time = None;
    ended.end_time = Some(now);
    unit.update_hand_over(&ended).await?;
    assert!(
        unit.insert_hand_over(&hand_over(lead, team.team_id, now))
            .await?,
        "a lead whose hand-over ended can be handed over again"
    );
    assert_eq!(unit.teams_with_queue().await?, vec![team.team_id]);
    unit.commit().await?;
    Ok(())
}

contract!(reps_read_back_with_hours_and_absences_in_pages on postgres_store, sqlite_store);
contract!(capacity_is_taken_only_below_the_limit on postgres_store, sqlite_store);
contract!(teams_keep_order_and_rotation_and_leads_queue_once_in_arrival_order on postgres_store, sqlite_store);
