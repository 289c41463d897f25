//! Routing's assignment rules on both stores (PostgreSQL and the embedded SQLite), driven
//! with an injected clock: a thousand sales-ready leads arriving at once from many tasks
//! are each assigned exactly once and no rep goes over capacity; round robin stays within
//! one lead of even and weights hold; working hours and absences decide who is available;
//! an unaccepted lead moves on after its SLA and escalates; sales' rejections recycle or
//! disqualify; a rep who frees up takes the oldest waiting lead.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use leadflow_bus::{Delivery, EventHandler, new_envelope};
use leadflow_platform::time::{Clock, ManualClock};
use leadflow_proto::{
    common::v1::{self as common, HeatMapCell, LeadClass, LeadProfile, ProfileGrade, TimeRange},
    events::v1::{self as events, EventEnvelope, event_envelope::Payload},
    routing::v1::{
        self as pb, AcceptAssignmentRequest, AssignmentMethod, AssignmentState, CreateRepRequest,
        CreateTeamRequest, DayOfWeek, ExplainAssignmentRequest, GetTeamQueueRequest,
        ListAssignmentsRequest, PublishRuleSetRequest, RejectAssignmentRequest, RejectionReason,
        Rep, RoutingRule, RoutingStrategy, RuleSet, SkipReason, SlaClock, Team, WorkingHours,
        routing_service_server::RoutingService,
    },
};
use leadflow_routing::{Routing, RoutingApi};
use leadflow_storage::ServiceStore;
use prost::Message;
use tonic::Request;

use crate::contracts::{Backing, postgres, sqlite};

pub(crate) const PRODUCT: &str = "erp";

/// Routing on a fresh store of one kind, with a clock the test moves.
pub(crate) struct Bench {
    _backing: Backing,
    pub(crate) store: ServiceStore,
    pub(crate) routing: Routing,
    pub(crate) api: RoutingApi,
    pub(crate) clock: ManualClock,
}

pub(crate) fn utc(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, second)
        .single()
        .expect("a valid time")
}

/// Monday, 5 January 2026, 08:00 UTC (09:00 in Berlin, 03:00 in New York).
pub(crate) fn monday_morning() -> DateTime<Utc> {
    utc(2026, 1, 5, 8, 0, 0)
}

pub(crate) async fn bench(postgres_store: bool) -> anyhow::Result<Bench> {
    let (backing, store) = if postgres_store {
        let (backing, database) =
            postgres(leadflow_routing::SCHEMA, &leadflow_routing::MIGRATOR).await?;
        (backing, ServiceStore::Postgres(database))
    } else {
        let (backing, database) =
            sqlite(leadflow_routing::SCHEMA, &leadflow_routing::SQLITE_MIGRATOR).await?;
        (backing, ServiceStore::Embedded(database))
    };
    let clock = ManualClock::new(monday_morning());
    let routing = leadflow_routing::routing(&store, Arc::new(clock.clone()));
    Ok(Bench {
        _backing: backing,
        api: RoutingApi::new(routing.clone()),
        store,
        routing,
        clock,
    })
}

pub(crate) fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn rep(name: &str) -> Rep {
    Rep {
        email: format!("{name}@example.com"),
        display_name: name.to_owned(),
        time_zone: "UTC".to_owned(),
        capacity: 10_000,
        weight: 1,
        active: true,
        ..Default::default()
    }
}

pub(crate) fn office_hours(time_zone: &str) -> (String, Vec<WorkingHours>) {
    (
        time_zone.to_owned(),
        [
            DayOfWeek::Monday,
            DayOfWeek::Tuesday,
            DayOfWeek::Wednesday,
            DayOfWeek::Thursday,
            DayOfWeek::Friday,
        ]
        .into_iter()
        .map(|day| WorkingHours {
            day_of_week: day.into(),
            start_minute: 9 * 60,
            end_minute: 17 * 60,
        })
        .collect(),
    )
}

impl Bench {
    pub(crate) async fn create_rep(&self, rep: Rep) -> anyhow::Result<String> {
        Ok(self
            .api
            .create_rep(Request::new(CreateRepRequest {
                rep: Some(rep),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .rep
            .expect("rep")
            .rep_id)
    }

    /// A team of `members`, the default team of a new rule set version.
    pub(crate) async fn default_team(&self, team: Team) -> anyhow::Result<String> {
        let team_id = self
            .api
            .create_team(Request::new(CreateTeamRequest {
                team: Some(team),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .team
            .expect("team")
            .team_id;
        self.publish(RuleSet {
            default_team_id: team_id.clone(),
            ..Default::default()
        })
        .await?;
        Ok(team_id)
    }

    pub(crate) async fn publish(&self, rule_set: RuleSet) -> anyhow::Result<RuleSet> {
        let base_version = match self
            .api
            .get_rule_set(Request::new(pb::GetRuleSetRequest { version: 0 }))
            .await
        {
            Ok(response) => response.into_inner().rule_set.expect("rule set").version,
            Err(_) => 0,
        };
        Ok(self
            .api
            .publish_rule_set(Request::new(PublishRuleSetRequest {
                rule_set: Some(rule_set),
                base_version,
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .rule_set
            .expect("rule set"))
    }

    /// Delivers one SalesReady for a new lead, as the consumer would; returns the lead id.
    pub(crate) async fn sales_ready(&self, profile: LeadProfile) -> anyhow::Result<String> {
        let lead_id = uuid::Uuid::now_v7().to_string();
        deliver(
            &self.routing,
            &sales_ready(&lead_id, profile, self.clock.now()),
        )
        .await?;
        Ok(lead_id)
    }

    pub(crate) async fn assignments_of(
        &self,
        lead_id: &str,
    ) -> anyhow::Result<Vec<pb::Assignment>> {
        Ok(self
            .api
            .list_assignments(Request::new(ListAssignmentsRequest {
                lead_id: lead_id.to_owned(),
                page_size: 500,
                ..Default::default()
            }))
            .await?
            .into_inner()
            .assignments)
    }

    pub(crate) async fn all_assignments(&self) -> anyhow::Result<Vec<pb::Assignment>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .api
                .list_assignments(Request::new(ListAssignmentsRequest {
                    page_size: 500,
                    page_token,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            all.extend(page.assignments);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    pub(crate) async fn open_assignment(
        &self,
        lead_id: &str,
    ) -> anyhow::Result<Option<pb::Assignment>> {
        Ok(self
            .assignments_of(lead_id)
            .await?
            .into_iter()
            .find(|assignment| {
                assignment.state == AssignmentState::Pending as i32
                    || assignment.state == AssignmentState::Accepted as i32
            }))
    }

    pub(crate) async fn explain(
        &self,
        assignment_id: &str,
    ) -> anyhow::Result<pb::ExplainAssignmentResponse> {
        Ok(self
            .api
            .explain_assignment(Request::new(ExplainAssignmentRequest {
                assignment_id: assignment_id.to_owned(),
            }))
            .await?
            .into_inner())
    }

    pub(crate) async fn queue(&self, team_id: &str) -> anyhow::Result<pb::GetTeamQueueResponse> {
        Ok(self
            .api
            .get_team_queue(Request::new(GetTeamQueueRequest {
                team_id: team_id.to_owned(),
                page_size: 500,
                ..Default::default()
            }))
            .await?
            .into_inner())
    }

    /// Routing's published events, from its outbox.
    pub(crate) async fn events(&self) -> anyhow::Result<Vec<EventEnvelope>> {
        let rows: Vec<Vec<u8>> = match &self.store {
            ServiceStore::Postgres(database) => {
                sqlx::query_scalar("SELECT envelope FROM outbox ORDER BY seq")
                    .fetch_all(database.pool())
                    .await?
            }
            ServiceStore::Embedded(database) => {
                sqlx::query_scalar("SELECT envelope FROM outbox ORDER BY seq")
                    .fetch_all(database.pool())
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|row| EventEnvelope::decode(row.as_slice()))
            .collect::<Result<_, _>>()?)
    }
}

pub(crate) fn sales_ready(
    lead_id: &str,
    profile: LeadProfile,
    now: DateTime<Utc>,
) -> EventEnvelope {
    new_envelope(
        "scoring",
        lead_id,
        Payload::SalesReady(events::SalesReady {
            lead_id: lead_id.to_owned(),
            product: PRODUCT.to_owned(),
            reason: events::SalesReadyReason::ScoreThreshold.into(),
            total_score: 280.0,
            lead_class: LeadClass::A.into(),
            cell: Some(HeatMapCell {
                grade: ProfileGrade::A.into(),
                engagement_level: 4,
            }),
            account_id: String::new(),
            lead: Some(profile),
            primary_contact_id: uuid::Uuid::now_v7().to_string(),
            top_contacts: Vec::new(),
            model_id: uuid::Uuid::now_v7().to_string(),
            model_version: 1,
            primary_contact_language: "de".to_owned(),
        }),
        now,
    )
}

pub(crate) async fn deliver(routing: &Routing, envelope: &EventEnvelope) -> anyhow::Result<()> {
    let delivery = Delivery::new(leadflow_routing::CONSUMER_GROUP, envelope.clone())
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    // A loaded database may ask for a retry; the consumer would retry too.
    let mut attempts = 0;
    loop {
        match routing.handle(&delivery).await {
            Ok(_) => return Ok(()),
            Err(error) if attempts < 5 => {
                attempts += 1;
                tracing::warn!(%error, "retrying a delivery");
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempts)).await;
            }
            Err(error) => anyhow::bail!("delivery failed: {error}"),
        }
    }
}

pub(crate) fn team(name: &str, members: &[String], strategy: RoutingStrategy) -> Team {
    Team {
        name: name.to_owned(),
        member_rep_ids: members.to_vec(),
        strategy: strategy.into(),
        sla: Some(prost_types::Duration {
            seconds: 30 * 60,
            nanos: 0,
        }),
        sla_clock: SlaClock::WallTime.into(),
        ..Default::default()
    }
}

/// Sends `count` SalesReady events from `tasks` concurrent tasks, each event twice (a
/// redelivery); returns the lead ids.
async fn flood(bench: &Bench, count: usize, tasks: usize) -> anyhow::Result<Vec<String>> {
    let now = bench.clock.now();
    let envelopes: Vec<EventEnvelope> = (0..count)
        .map(|_| {
            sales_ready(
                &uuid::Uuid::now_v7().to_string(),
                LeadProfile::default(),
                now,
            )
        })
        .collect();
    let leads: Vec<String> = envelopes
        .iter()
        .map(|envelope| envelope.aggregate_id.clone())
        .collect();
    let envelopes = Arc::new(envelopes);
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let routing = bench.routing.clone();
        let envelopes = Arc::clone(&envelopes);
        handles.push(tokio::spawn(async move {
            for (index, envelope) in envelopes.iter().enumerate() {
                // Every event goes to two tasks: one delivery and one redelivery.
                if index % tasks == task || index % tasks == (task + 1) % tasks {
                    deliver(&routing, envelope).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(leads)
}

fn count_by_rep(assignments: &[pb::Assignment]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for assignment in assignments {
        *counts.entry(assignment.rep_id.clone()).or_insert(0) += 1;
    }
    counts
}

async fn concurrent_leads_are_assigned_once_and_never_over_capacity(
    bench: Bench,
) -> anyhow::Result<()> {
    let mut reps = Vec::new();
    for index in 0..10 {
        reps.push(
            bench
                .create_rep(Rep {
                    capacity: 90,
                    ..rep(&format!("rep{index}"))
                })
                .await?,
        );
    }
    let team_id = bench
        .default_team(team("Inside sales", &reps, RoutingStrategy::RoundRobin))
        .await?;
    let leads = flood(&bench, 1_000, 16).await?;
    let assignments = bench.all_assignments().await?;
    assert_eq!(
        assignments.len(),
        900,
        "ten reps of capacity 90 take 900 leads"
    );
    let mut assigned_leads: Vec<&str> = assignments.iter().map(|a| a.lead_id.as_str()).collect();
    assigned_leads.sort_unstable();
    assigned_leads.dedup();
    assert_eq!(assigned_leads.len(), 900, "no lead is assigned twice");
    for (rep_id, count) in count_by_rep(&assignments) {
        assert_eq!(count, 90, "rep {rep_id} holds exactly its capacity");
    }
    for rep_id in &reps {
        let shown = bench
            .api
            .get_rep(Request::new(pb::GetRepRequest {
                rep_id: rep_id.clone(),
            }))
            .await?
            .into_inner()
            .rep
            .expect("rep");
        assert_eq!(shown.open_assignments, 90);
        assert_eq!(shown.team_ids, vec![team_id.clone()]);
    }
    let queue = bench.queue(&team_id).await?;
    assert_eq!(queue.total_count, 100, "the other hundred wait");
    let waiting: Vec<&str> = queue
        .leads
        .iter()
        .map(|lead| lead.lead_id.as_str())
        .collect();
    assert!(waiting.iter().all(|lead| !assigned_leads.contains(lead)));
    assert!(
        waiting
            .iter()
            .all(|lead| leads.iter().any(|known| known == lead))
    );
    assert_eq!(
        queue
            .leads
            .iter()
            .map(|lead| lead.position)
            .collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    // A rep who frees up takes the oldest waiting lead at once.
    let given_up = assignments
        .iter()
        .find(|assignment| assignment.rep_id == reps[3])
        .expect("rep 3 has leads");
    bench
        .api
        .reject_assignment(Request::new(RejectAssignmentRequest {
            assignment_id: given_up.assignment_id.clone(),
            reason: RejectionReason::NoBudget.into(),
            idempotency_key: key(),
            ..Default::default()
        }))
        .await?;
    let next = bench
        .open_assignment(waiting[0])
        .await?
        .expect("the head of the queue is assigned");
    assert_eq!(next.rep_id, reps[3]);
    assert_eq!(bench.queue(&team_id).await?.total_count, 99);
    assert!(
        bench.open_assignment(waiting[1]).await?.is_none(),
        "the next one still waits"
    );
    Ok(())
}

async fn round_robin_stays_within_one_lead_of_even_and_weights_hold(
    bench: Bench,
) -> anyhow::Result<()> {
    let mut even = Vec::new();
    for index in 0..7 {
        even.push(bench.create_rep(rep(&format!("even{index}"))).await?);
    }
    bench
        .default_team(team("Round robin", &even, RoutingStrategy::RoundRobin))
        .await?;
    flood(&bench, 1_000, 12).await?;
    let counts = count_by_rep(&bench.all_assignments().await?);
    assert_eq!(counts.values().sum::<usize>(), 1_000);
    let (min, max) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    assert!(max - min <= 1, "round robin: {counts:?}");

    let mut weighted = Vec::new();
    for (index, weight) in [1, 2, 3, 4].into_iter().enumerate() {
        weighted.push(
            bench
                .create_rep(Rep {
                    weight,
                    ..rep(&format!("weighted{index}"))
                })
                .await?,
        );
    }
    bench
        .default_team(team(
            "Weighted",
            &weighted,
            RoutingStrategy::WeightedRoundRobin,
        ))
        .await?;
    flood(&bench, 1_000, 12).await?;
    let all = bench.all_assignments().await?;
    let counts = count_by_rep(&all);
    // Smooth weighted round robin keeps every rep within one lead of its exact share.
    for (rep_id, weight) in weighted.iter().zip([1.0, 2.0, 3.0, 4.0]) {
        let expected = 1_000.0 * weight / 10.0;
        let got = counts.get(rep_id).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= 1.0,
            "weight {weight}: {got} leads, expected {expected}"
        );
    }
    Ok(())
}

async fn working_hours_and_absences_decide_who_is_available(bench: Bench) -> anyhow::Result<()> {
    let (berlin_zone, berlin_hours) = office_hours("Europe/Berlin");
    let berlin = bench
        .create_rep(Rep {
            time_zone: berlin_zone,
            working_hours: berlin_hours,
            ..rep("berlin")
        })
        .await?;
    let (new_york_zone, new_york_hours) = office_hours("America/New_York");
    let new_york = bench
        .create_rep(Rep {
            time_zone: new_york_zone,
            working_hours: new_york_hours,
            ..rep("newyork")
        })
        .await?;
    let away = bench
        .create_rep(Rep {
            out_of_office: vec![TimeRange {
                start_time: Some(prost_types::Timestamp {
                    seconds: monday_morning().timestamp() - 86_400,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: monday_morning().timestamp() + 8 * 86_400,
                    nanos: 0,
                }),
            }],
            ..rep("away")
        })
        .await?;
    let team_id = bench
        .default_team(team(
            "Global",
            &[berlin.clone(), new_york.clone(), away.clone()],
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    // Monday 09:00 in Berlin, 03:00 in New York, and the third rep is away.
    let early = bench.sales_ready(LeadProfile::default()).await?;
    let assignment = bench.open_assignment(&early).await?.expect("assigned");
    assert_eq!(assignment.rep_id, berlin);
    let explained = bench.explain(&assignment.assignment_id).await?;
    let reasons = |rep_id: &str| {
        explained
            .skipped_reps
            .iter()
            .find(|skipped| skipped.rep_id == rep_id)
            .map(|skipped| skipped.reasons.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        reasons(&new_york),
        vec![SkipReason::OutsideWorkingHours as i32]
    );
    assert_eq!(reasons(&away), vec![SkipReason::OutOfOffice as i32]);
    assert_eq!(explained.chosen_rep_id, berlin);
    assert!(explained.default_team);
    assert_eq!(explained.method, AssignmentMethod::Strategy as i32);
    assert_eq!(explained.strategy, RoutingStrategy::RoundRobin as i32);
    // 17:00 UTC: 18:00 in Berlin, noon in New York.
    bench.clock.set(utc(2026, 1, 5, 17, 0, 0));
    let late = bench.sales_ready(LeadProfile::default()).await?;
    assert_eq!(
        bench
            .open_assignment(&late)
            .await?
            .expect("assigned")
            .rep_id,
        new_york
    );
    // Accepted leads have no deadline left to breach over the weekend.
    for lead in [&early, &late] {
        let open = bench.open_assignment(lead).await?.expect("assigned");
        bench
            .api
            .accept_assignment(Request::new(AcceptAssignmentRequest {
                assignment_id: open.assignment_id,
                idempotency_key: key(),
                ..Default::default()
            }))
            .await?;
    }
    // Saturday: nobody works; the lead waits and is assigned on Monday morning.
    bench.clock.set(utc(2026, 1, 10, 12, 0, 0));
    let weekend = bench.sales_ready(LeadProfile::default()).await?;
    assert!(bench.open_assignment(&weekend).await?.is_none());
    assert_eq!(bench.queue(&team_id).await?.total_count, 1);
    bench.routing.tick().await?;
    assert!(
        bench.open_assignment(&weekend).await?.is_none(),
        "still Saturday"
    );
    bench.clock.set(utc(2026, 1, 12, 8, 30, 0));
    let report = bench.routing.tick().await?;
    assert_eq!(report.dequeued, 1);
    let monday = bench
        .open_assignment(&weekend)
        .await?
        .expect("assigned on Monday");
    assert_eq!(monday.rep_id, berlin);
    assert!(monday.queued_time.is_some());
    // The absence ends on Tuesday morning.
    bench.clock.set(utc(2026, 1, 13, 8, 30, 0));
    let mut seen_away = false;
    for _ in 0..3 {
        let lead = bench.sales_ready(LeadProfile::default()).await?;
        seen_away |= bench
            .open_assignment(&lead)
            .await?
            .expect("assigned")
            .rep_id
            == away;
    }
    assert!(seen_away, "a rep back from absence takes leads again");
    Ok(())
}

async fn an_unaccepted_lead_moves_on_after_its_sla_and_escalates(
    bench: Bench,
) -> anyhow::Result<()> {
    let first = bench.create_rep(rep("first")).await?;
    let second = bench.create_rep(rep("second")).await?;
    let lead_rep = bench.create_rep(rep("teamlead")).await?;
    bench
        .default_team(Team {
            team_lead_rep_id: lead_rep.clone(),
            escalate_after_breaches: 2,
            ..team(
                "SLA",
                &[first.clone(), second.clone()],
                RoutingStrategy::RoundRobin,
            )
        })
        .await?;
    let lead_id = bench.sales_ready(LeadProfile::default()).await?;
    let assigned = bench.open_assignment(&lead_id).await?.expect("assigned");
    assert_eq!(assigned.rep_id, first);
    let due = assigned.sla_due_time.expect("an SLA deadline");
    assert_eq!(due.seconds, monday_morning().timestamp() + 30 * 60);
    bench.clock.advance(chrono::Duration::minutes(29));
    assert_eq!(bench.routing.tick().await?.breached, 0);
    bench.clock.advance(chrono::Duration::minutes(2));
    assert_eq!(bench.routing.tick().await?.breached, 1);
    let history = bench.assignments_of(&lead_id).await?;
    let breached = history
        .iter()
        .find(|a| a.assignment_id == assigned.assignment_id)
        .expect("the first assignment");
    assert_eq!(breached.state, AssignmentState::SlaBreached as i32);
    let moved = bench.open_assignment(&lead_id).await?.expect("reassigned");
    assert_eq!(moved.rep_id, second);
    assert_eq!(moved.previous_assignment_id, assigned.assignment_id);
    assert_eq!(moved.breach_count, 1);
    let explained = bench.explain(&moved.assignment_id).await?;
    assert!(
        explained
            .skipped_reps
            .iter()
            .any(|skipped| skipped.rep_id == first
                && skipped.reasons == vec![SkipReason::AlreadyBreached as i32])
    );
    // The second breach goes to the team lead, with no deadline.
    bench.clock.advance(chrono::Duration::minutes(31));
    assert_eq!(bench.routing.tick().await?.breached, 1);
    let escalated = bench.open_assignment(&lead_id).await?.expect("escalated");
    assert_eq!(escalated.rep_id, lead_rep);
    assert_eq!(escalated.method, AssignmentMethod::Escalation as i32);
    assert!(escalated.sla_due_time.is_none());
    let breaches: Vec<events::SlaBreached> = bench
        .events()
        .await?
        .into_iter()
        .filter_map(|event| match event.payload {
            Some(Payload::SlaBreached(breach)) => Some(breach),
            _ => None,
        })
        .collect();
    assert_eq!(breaches.len(), 2);
    assert_eq!(
        breaches
            .iter()
            .map(|b| (b.breach_count, b.escalated))
            .collect::<Vec<_>>(),
        vec![(1, false), (2, true)]
    );
    // An accepted lead never breaches.
    bench
        .api
        .accept_assignment(Request::new(AcceptAssignmentRequest {
            assignment_id: escalated.assignment_id.clone(),
            idempotency_key: key(),
            ..Default::default()
        }))
        .await?;
    bench.clock.advance(chrono::Duration::days(3));
    assert_eq!(bench.routing.tick().await?.breached, 0);

    // On the working-hours clock, an hour given at 16:30 on a Friday runs out on Monday at
    // 09:30 in the rep's zone.
    let (zone, hours) = office_hours("Europe/Berlin");
    let office = bench
        .create_rep(Rep {
            time_zone: zone,
            working_hours: hours,
            ..rep("office")
        })
        .await?;
    bench
        .default_team(Team {
            sla: Some(prost_types::Duration {
                seconds: 3_600,
                nanos: 0,
            }),
            sla_clock: SlaClock::WorkingHours.into(),
            ..team(
                "Office hours",
                std::slice::from_ref(&office),
                RoutingStrategy::RoundRobin,
            )
        })
        .await?;
    bench.clock.set(utc(2026, 1, 16, 15, 30, 0));
    let friday = bench.sales_ready(LeadProfile::default()).await?;
    let assignment = bench.open_assignment(&friday).await?.expect("assigned");
    assert_eq!(assignment.rep_id, office);
    assert_eq!(
        assignment.sla_due_time.expect("deadline").seconds,
        utc(2026, 1, 19, 8, 30, 0).timestamp()
    );
    Ok(())
}

async fn rules_route_by_profile_and_rejections_recycle_or_disqualify(
    bench: Bench,
) -> anyhow::Result<()> {
    let dach_rep = bench.create_rep(rep("dach")).await?;
    let rest_rep = bench.create_rep(rep("rest")).await?;
    let create_team = |name: &str, member: &str| {
        let request = CreateTeamRequest {
            team: Some(team(
                name,
                &[member.to_owned()],
                RoutingStrategy::LeastLoaded,
            )),
            idempotency_key: key(),
        };
        let api = bench.api.clone();
        async move {
            anyhow::Ok(
                api.create_team(Request::new(request))
                    .await?
                    .into_inner()
                    .team
                    .expect("team")
                    .team_id,
            )
        }
    };
    let dach = create_team("DACH", &dach_rep).await?;
    let rest = create_team("Rest of world", &rest_rep).await?;
    let published = bench
        .publish(RuleSet {
            rules: vec![RoutingRule {
                name: "DACH".to_owned(),
                country_codes: vec!["DE".to_owned(), "AT".to_owned(), "CH".to_owned()],
                team_id: dach.clone(),
                ..Default::default()
            }],
            default_team_id: rest.clone(),
            ..Default::default()
        })
        .await?;
    let german = bench
        .sales_ready(LeadProfile {
            country_code: "DE".to_owned(),
            ..Default::default()
        })
        .await?;
    let french = bench
        .sales_ready(LeadProfile {
            country_code: "FR".to_owned(),
            ..Default::default()
        })
        .await?;
    let german_assignment = bench.open_assignment(&german).await?.expect("assigned");
    assert_eq!(german_assignment.rep_id, dach_rep);
    assert_eq!(german_assignment.team_id, dach);
    assert_eq!(german_assignment.rule_id, published.rules[0].rule_id);
    let explained = bench.explain(&german_assignment.assignment_id).await?;
    assert_eq!(explained.rule_name, "DACH");
    assert_eq!(explained.rule_set_version, published.version);
    let french_assignment = bench.open_assignment(&french).await?.expect("assigned");
    assert_eq!(french_assignment.rep_id, rest_rep);
    assert!(
        bench
            .explain(&french_assignment.assignment_id)
            .await?
            .default_team
    );

    // Not ready yet: back to nurturing.
    let rejected = bench
        .api
        .reject_assignment(Request::new(RejectAssignmentRequest {
            assignment_id: german_assignment.assignment_id.clone(),
            reason: RejectionReason::NotReadyYet.into(),
            note: "budget cycle starts in Q3".to_owned(),
            idempotency_key: key(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(
        rejected.resulting_stage,
        common::LifecycleStage::Recycled as i32
    );
    // Not a fit: disqualified, and not recycled.
    bench
        .api
        .accept_assignment(Request::new(AcceptAssignmentRequest {
            assignment_id: french_assignment.assignment_id.clone(),
            idempotency_key: key(),
            ..Default::default()
        }))
        .await?;
    let disqualified = bench
        .api
        .reject_assignment(Request::new(RejectAssignmentRequest {
            assignment_id: french_assignment.assignment_id.clone(),
            reason: RejectionReason::NotAFit.into(),
            idempotency_key: key(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(
        disqualified.resulting_stage,
        common::LifecycleStage::Disqualified as i32
    );
    let events = bench.events().await?;
    let recycled: Vec<&events::LeadRecycled> = events
        .iter()
        .filter_map(|event| match &event.payload {
            Some(Payload::LeadRecycled(recycled)) => Some(recycled),
            _ => None,
        })
        .collect();
    assert_eq!(recycled.len(), 1, "only the not-ready lead is recycled");
    assert_eq!(recycled[0].lead_id, german);
    assert_eq!(
        recycled[0].reason,
        events::RejectionReason::NotReadyYet as i32
    );
    assert_eq!(recycled[0].from_rep_id, dach_rep);
    let accepted = events
        .iter()
        .filter(|event| matches!(event.payload, Some(Payload::AssignmentAccepted(_))))
        .count();
    let rejections = events
        .iter()
        .filter(|event| matches!(event.payload, Some(Payload::AssignmentRejected(_))))
        .count();
    assert_eq!((accepted, rejections), (1, 2));
    // A recycled lead that becomes ready again is handed over afresh.
    deliver(
        &bench.routing,
        &sales_ready(
            &german,
            LeadProfile {
                country_code: "AT".to_owned(),
                ..Default::default()
            },
            bench.clock.now(),
        ),
    )
    .await?;
    let again = bench
        .open_assignment(&german)
        .await?
        .expect("assigned again");
    assert_eq!(again.rep_id, dach_rep);
    assert_ne!(again.assignment_id, german_assignment.assignment_id);
    Ok(())
}

macro_rules! on_both_stores {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() -> anyhow::Result<()> {
                    super::$test(super::bench(true).await?).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() -> anyhow::Result<()> {
                    super::$test(super::bench(false).await?).await
                }
            }
        )+
    };
}

// Shared with `routing_api`, whose tests run on both stores too.
pub(crate) use on_both_stores;

on_both_stores!(
    concurrent_leads_are_assigned_once_and_never_over_capacity,
    round_robin_stays_within_one_lead_of_even_and_weights_hold,
    working_hours_and_absences_decide_who_is_available,
    an_unaccepted_lead_moves_on_after_its_sla_and_escalates,
    rules_route_by_profile_and_rejections_recycle_or_disqualify,
);
