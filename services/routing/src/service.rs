//! Routing at work over time: SalesReady events become hand-overs placed with a rep or in a
//! queue, ContactErased events take the contact out of them, and a ticker breaches overdue
//! SLAs, moves the pending leads of deactivated reps, routes leads that arrived before any
//! rule set, and works every queue as reps free up.

use std::{sync::Arc, time::Duration};

use leadflow_bus::{Applied, Delivery, EventHandler, HandlerError};
use leadflow_platform::time::{Clock, from_timestamp, to_timestamp};
use leadflow_proto::{
    common::v1 as common,
    events::v1::{self as events, event_envelope::Payload},
    routing::v1 as pb,
};
use leadflow_storage::StorageError;
use uuid::Uuid;

use crate::{
    engine::{self, Placed, Target},
    records::{AssignmentRecord, HandOver, HandOverState, RoutingStore, RoutingUnit},
    rule_sets::{CompiledRuleSet, traits},
};

/// The consumer group routing reads events in.
pub const CONSUMER_GROUP: &str = "routing";

/// The producers whose events routing reads: scoring's hand-overs and capture's erasures.
pub const SOURCES: [&str; 2] = ["scoring", "capture"];

/// How often the ticker looks for overdue SLAs and reps that became free.
const TICK: Duration = Duration::from_secs(1);

/// The most overdue assignments or unrouted leads one tick handles; the next goes on.
const TICK_BATCH: u32 = 200;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Assignments whose SLA ran out.
    pub breached: usize,
    /// Pending assignments taken from deactivated reps.
    pub moved: usize,
    /// Leads routed that arrived before any rule set.
    pub routed: usize,
    /// Queued leads assigned.
    pub dequeued: usize,
}

/// Why a pending assignment is taken from its rep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replacement {
    /// The rep let the SLA run out.
    SlaBreach,
    /// The rep was deactivated; no breach counts.
    RepInactive,
}

/// Routing's records and clock, shared by the API, the event handler and the ticker.
#[derive(Debug, Clone)]
pub struct Routing {
    pub(crate) store: Arc<dyn RoutingStore>,
    pub(crate) clock: Arc<dyn Clock>,
}

fn parse_id(text: &str, field: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text).map_err(|_| HandlerError(format!("{field} {text:?} is not a UUID")))
}

/// The active rule set, compiled.
pub(crate) async fn active_rules(
    unit: &mut dyn RoutingUnit,
) -> Result<Option<CompiledRuleSet>, StorageError> {
    let Some(record) = unit.latest_rule_set().await? else {
        return Ok(None);
    };
    let mut definition = record.definition;
    definition.version = record.version;
    CompiledRuleSet::parse("rule_set", Some(&definition))
        .map(Some)
        .map_err(|violations| {
            StorageError::Corrupt(format!("rule set {}: {violations:?}", record.version))
        })
}

/// Routes an unrouted hand-over by the active rules and works its team's queue; true when
/// a rule set sent it to a team.
async fn route_to_team(
    unit: &mut dyn RoutingUnit,
    hand_over: &mut HandOver,
    now: chrono::DateTime<chrono::Utc>,
    events: &mut Vec<Payload>,
) -> Result<bool, StorageError> {
    let Some(rules) = active_rules(unit).await? else {
        return Ok(false);
    };
    let routed = rules.route(&traits(
        &hand_over.profile,
        &hand_over.product,
        hand_over.lead_class,
        &hand_over.cell,
    ));
    // The team first: writing the hand-over's team takes a key-share lock on the team row,
    // which two units could then not both upgrade.
    let Some(team) = unit.lock_team(routed.team_id).await? else {
        return Err(StorageError::Corrupt(format!(
            "rule set {} routes to the unknown team {}",
            rules.version, routed.team_id
        )));
    };
    hand_over.team_id = Some(routed.team_id);
    hand_over.rule_id = routed.rule.and_then(|rule| rule.rule_id);
    hand_over.rule_set_version = rules.version;
    unit.update_hand_over(hand_over).await?;
    engine::work_queue(unit, team, now, events).await?;
    Ok(true)
}

/// The pending assignment with its hand-over, both locked; `None` when it is gone or no
/// longer pending.
async fn lock_pending(
    unit: &mut dyn RoutingUnit,
    assignment_id: Uuid,
) -> Result<Option<(HandOver, AssignmentRecord)>, StorageError> {
    Ok(engine::lock_with_hand_over(unit, assignment_id)
        .await?
        .filter(|(_, assignment)| assignment.state == pb::AssignmentState::Pending))
}

impl Routing {
    /// Routing on its records, reading time from `clock`.
    pub fn new(store: Arc<dyn RoutingStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    async fn sales_ready(
        &self,
        delivery: &Delivery,
        ready: &events::SalesReady,
    ) -> Result<Applied, HandlerError> {
        let lead_id = parse_id(&ready.lead_id, "lead_id")?;
        if ready.product.is_empty() {
            return Err(HandlerError("SalesReady without a product".to_owned()));
        }
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        if !recorded.is_first() {
            unit.commit().await?;
            return Ok(recorded.into_applied());
        }
        let mut hand_over = HandOver {
            hand_over_id: Uuid::now_v7(),
            lead_id,
            product: ready.product.clone(),
            event_id: Some(delivery.event_id()),
            sales_ready_time: delivery
                .envelope()
                .occurred_at
                .as_ref()
                .and_then(from_timestamp)
                .map_or(now, |occurred| occurred.min(now)),
            account_id: ready.account_id.clone(),
            primary_contact_id: ready.primary_contact_id.clone(),
            language: ready.primary_contact_language.clone(),
            lead_class: common::LeadClass::try_from(ready.lead_class).unwrap_or_default(),
            cell: ready.cell.unwrap_or_default(),
            total_score: ready.total_score,
            profile: ready.lead.clone().unwrap_or_default(),
            rule_set_version: 0,
            rule_id: None,
            team_id: None,
            state: HandOverState::Queued,
            stage: common::LifecycleStage::Mql,
            breach_count: 0,
            queued_time: Some(now),
            first_queued_time: None,
            first_assign_time: None,
            accept_time: None,
            outcome: Default::default(),
            end_time: None,
            create_time: now,
        };
        if !unit.insert_hand_over(&hand_over).await? {
            // The lead is with sales already: a second hand-over would route it twice.
            tracing::info!(%lead_id, product = %ready.product, "sales-ready lead already handed over");
            unit.commit().await?;
            return Ok(recorded.into_applied());
        }
        let mut events = Vec::new();
        if !route_to_team(&mut *unit, &mut hand_over, now, &mut events).await? {
            tracing::warn!(%lead_id, "no routing rule set is published: the lead waits for one");
        }
        engine::publish(&mut *unit, events, now).await?;
        unit.commit().await?;
        Ok(recorded.into_applied())
    }

    /// Takes an erased contact out of the hand-overs; a redelivery finds the event applied.
    async fn contact_erased(
        &self,
        delivery: &Delivery,
        erased: &events::ContactErased,
    ) -> Result<Applied, HandlerError> {
        let contact_id = parse_id(&erased.contact_id, "contact_id")?;
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        if recorded.is_first() {
            let hand_overs = unit.erase_contact(contact_id).await?;
            tracing::info!(%contact_id, hand_overs, "contact erased from routing");
        }
        unit.commit().await?;
        Ok(recorded.into_applied())
    }

    /// One round of the work that time brings: overdue SLAs, pending leads of deactivated
    /// reps, leads without a team, and every queue.
    pub async fn tick(&self) -> Result<TickReport, StorageError> {
        let mut report = TickReport::default();
        let (due, unrouted) = {
            let mut unit = self.store.read().await?;
            let now = self.clock.now();
            (
                unit.due_assignments(now, TICK_BATCH).await?,
                unit.unrouted_hand_overs(TICK_BATCH).await?,
            )
        };
        for assignment_id in due {
            if self
                .replace_pending(assignment_id, Replacement::SlaBreach)
                .await?
            {
                report.breached += 1;
            }
        }
        report.moved = self.move_pending_of_inactive_reps().await?;
        for hand_over_id in unrouted {
            if self.route_unrouted(hand_over_id).await? {
                report.routed += 1;
            }
        }
        let teams = self.store.read().await?.teams_with_queue().await?;
        for team_id in teams {
            report.dequeued += self.work_queue(team_id).await?;
        }
        Ok(report)
    }

    /// Moves the pending assignments of deactivated reps to their teams' next choice;
    /// returns how many moved.
    pub async fn move_pending_of_inactive_reps(&self) -> Result<usize, StorageError> {
        let inactive = self
            .store
            .read()
            .await?
            .pending_of_inactive_reps(TICK_BATCH)
            .await?;
        let mut moved = 0;
        for assignment_id in inactive {
            if self
                .replace_pending(assignment_id, Replacement::RepInactive)
                .await?
            {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Assigns what waits in the team's queue; returns how many were assigned.
    pub async fn work_queue(&self, team_id: Uuid) -> Result<usize, StorageError> {
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let Some(team) = unit.lock_team(team_id).await? else {
            return Ok(0);
        };
        let mut events = Vec::new();
        let assigned = engine::work_queue(&mut *unit, team, now, &mut events).await?;
        if assigned > 0 {
            engine::publish(&mut *unit, events, now).await?;
            unit.commit().await?;
        }
        Ok(assigned)
    }

    /// Works the queues of every team the rep belongs to, after the rep freed up.
    pub async fn work_queues_of_rep(&self, rep_id: Uuid) -> Result<usize, StorageError> {
        let teams = self.store.read().await?.teams_of_rep(rep_id).await?;
        let mut assigned = 0;
        for team_id in teams {
            assigned += self.work_queue(team_id).await?;
        }
        Ok(assigned)
    }

    /// Ends a pending assignment, as breached when its SLA ran out or as reassigned when
    /// its rep was deactivated, and places the lead again: with the next rep, the team
    /// lead after too many breaches, or in the queue. False when the reason no longer holds.
    async fn replace_pending(
        &self,
        assignment_id: Uuid,
        why: Replacement,
    ) -> Result<bool, StorageError> {
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let Some((mut hand_over, mut assignment)) = lock_pending(&mut *unit, assignment_id).await?
        else {
            return Ok(false);
        };
        let still_holds = match why {
            Replacement::SlaBreach => assignment.sla_due_time.is_some_and(|due| due <= now),
            Replacement::RepInactive => unit
                .rep(assignment.rep_id)
                .await?
                .is_some_and(|rep| !rep.rep.active),
        };
        if !still_holds {
            return Ok(false);
        }
        let team_id = hand_over.team_id.unwrap_or(assignment.team_id);
        let Some(mut team) = unit.lock_team(team_id).await? else {
            return Ok(false);
        };
        let ended_as = match why {
            Replacement::SlaBreach => pb::AssignmentState::SlaBreached,
            Replacement::RepInactive => pb::AssignmentState::Reassigned,
        };
        engine::end_assignment(&mut *unit, &mut assignment, ended_as, now).await?;
        let mut events = Vec::new();
        if why == Replacement::SlaBreach {
            hand_over.breach_count += 1;
            let escalated = team.escalate_after_breaches > 0
                && hand_over.breach_count >= team.escalate_after_breaches;
            events.push(Payload::SlaBreached(events::SlaBreached {
                assignment_id: assignment.assignment_id.to_string(),
                lead_id: hand_over.lead_id.to_string(),
                product: hand_over.product.clone(),
                rep_id: assignment.rep_id.to_string(),
                team_id: team.team_id.to_string(),
                breach_count: hand_over.breach_count,
                escalated,
                due_at: assignment.sla_due_time.map(to_timestamp),
            }));
            tracing::info!(%assignment_id, rep_id = %assignment.rep_id, escalated, "SLA breached");
        }
        // Waiting leads keep their place: this one goes behind them only if nobody is free
        // for it now.
        let placed = engine::place(
            &mut *unit,
            &mut hand_over,
            &mut team,
            Target::Team,
            Some(&assignment),
            None,
            now,
            &mut events,
        )
        .await?;
        if let Placed::Queued(_) = placed {
            tracing::info!(lead_id = %hand_over.lead_id, "replaced lead waits in the queue");
        }
        engine::publish(&mut *unit, events, now).await?;
        unit.commit().await?;
        if why == Replacement::SlaBreach {
            // The breaching rep is free for other leads; a deactivated one is not.
            self.work_queues_of_rep(assignment.rep_id).await?;
        }
        Ok(true)
    }

    async fn route_unrouted(&self, hand_over_id: Uuid) -> Result<bool, StorageError> {
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let Some(mut hand_over) = unit.lock_hand_over(hand_over_id).await? else {
            return Ok(false);
        };
        if hand_over.team_id.is_some() || hand_over.state != HandOverState::Queued {
            return Ok(false);
        }
        let mut events = Vec::new();
        if !route_to_team(&mut *unit, &mut hand_over, now, &mut events).await? {
            return Ok(false);
        }
        engine::publish(&mut *unit, events, now).await?;
        unit.commit().await?;
        Ok(true)
    }

    /// Runs [`Routing::tick`] every second until `stop` turns true.
    pub fn spawn_ticker(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
                match self.tick().await {
                    Ok(report) if report != TickReport::default() => {
                        tracing::info!(?report, "routing tick");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "routing tick failed; retrying"),
                }
            }
        })
    }
}

#[async_trait::async_trait]
impl EventHandler for Routing {
    async fn handle(&self, delivery: &Delivery) -> Result<Applied, HandlerError> {
        match delivery.envelope().payload.as_ref() {
            Some(Payload::SalesReady(ready)) => self.sales_ready(delivery, ready).await,
            Some(Payload::ContactErased(erased)) => self.contact_erased(delivery, erased).await,
            _ => Ok(Applied::nothing_to_do()),
        }
    }
}
