//! Routing at work inside one unit of work: placing a hand-over with a rep of its team
//! (account owner, escalation or the team's strategy) or in the team's queue, working the
//! queue in arrival order, ending assignments, and the audit of every choice.

use chrono::{DateTime, Utc};
use leadflow_bus::new_envelope;
use leadflow_domain::routing::{self as choice, Candidate, Need, Schedule, SkipReason};
use leadflow_platform::time::to_timestamp;
use leadflow_proto::{
    common::v1 as common,
    events::v1::{self as events, event_envelope::Payload},
    routing::v1 as pb,
};
use leadflow_storage::StorageError;
use uuid::Uuid;

use crate::{
    records::{AssignmentRecord, HandOver, HandOverState, RoutingUnit, TeamRecord},
    reps::Rep,
    teams,
};

/// The producer name of routing's events.
pub const PRODUCER: &str = "routing";

/// The most queued hand-overs one pass over a team's queue assigns; the next pass goes on.
const QUEUE_PASS: u32 = 200;

/// The domain's view of a rep.
pub fn candidate(rep: &Rep) -> Candidate {
    Candidate {
        rep_id: rep.rep_id,
        active: rep.rep.active,
        schedule: schedule(rep),
        products: rep.rep.products.clone(),
        languages: rep.rep.languages.clone(),
        capacity: rep.rep.capacity,
        open_assignments: rep.open_assignments,
        weight: rep.rep.weight,
        last_assign_time: rep.last_assign_time,
    }
}

fn schedule(rep: &Rep) -> Schedule {
    Schedule {
        time_zone: rep.rep.time_zone,
        working_hours: rep
            .rep
            .working_hours
            .iter()
            .map(|span| choice::WorkingSpan {
                day: weekday(span.day_of_week),
                start_minute: span.start_minute,
                end_minute: span.end_minute,
            })
            .collect(),
        out_of_office: rep
            .rep
            .out_of_office
            .iter()
            .map(|absence| choice::Absence {
                start: absence.start_time,
                end: absence.end_time,
            })
            .collect(),
    }
}

fn weekday(day: pb::DayOfWeek) -> chrono::Weekday {
    match day {
        pb::DayOfWeek::Tuesday => chrono::Weekday::Tue,
        pb::DayOfWeek::Wednesday => chrono::Weekday::Wed,
        pb::DayOfWeek::Thursday => chrono::Weekday::Thu,
        pb::DayOfWeek::Friday => chrono::Weekday::Fri,
        pb::DayOfWeek::Saturday => chrono::Weekday::Sat,
        pb::DayOfWeek::Sunday => chrono::Weekday::Sun,
        pb::DayOfWeek::Monday | pb::DayOfWeek::Unspecified => chrono::Weekday::Mon,
    }
}

/// The contract's skip reason for the domain's.
pub fn skip_reason(reason: SkipReason) -> pb::SkipReason {
    match reason {
        SkipReason::OutsideWorkingHours => pb::SkipReason::OutsideWorkingHours,
        SkipReason::OutOfOffice => pb::SkipReason::OutOfOffice,
        SkipReason::AtCapacity => pb::SkipReason::AtCapacity,
        SkipReason::WrongProduct => pb::SkipReason::WrongProduct,
        SkipReason::WrongLanguage => pb::SkipReason::WrongLanguage,
        SkipReason::Inactive => pb::SkipReason::Inactive,
        SkipReason::AlreadyBreached => pb::SkipReason::AlreadyBreached,
    }
}

/// Who a placement may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The team's own choice: escalation, account owner or strategy.
    Team,
    /// A person's choice of the team: its strategy picks, working hours count.
    ManualTeam,
    /// A person's choice of this rep: only capacity and the active flag count.
    ManualRep(Uuid),
}

/// A placement by a person: who made it and why.
#[derive(Debug, Clone, Default)]
pub struct ManualNote {
    /// Who reassigned.
    pub actor: String,
    /// Why.
    pub note: String,
}

/// Where a placement put the hand-over.
#[derive(Debug, Clone)]
pub enum Placed {
    /// With a rep.
    Assigned(Box<AssignmentRecord>),
    /// In the team queue; the skipped reps say why.
    Queued(Vec<pb::SkippedRep>),
}

/// A choice among a team's reps, as it is evaluated and explained.
struct Choice {
    rep: Option<Rep>,
    method: pb::AssignmentMethod,
    considered: Vec<Uuid>,
    skipped: Vec<pb::SkippedRep>,
    owner: Option<Uuid>,
}

/// The reps that let this hand-over's SLA run out.
async fn breached_reps(
    unit: &mut dyn RoutingUnit,
    hand_over_id: Uuid,
) -> Result<Vec<Uuid>, StorageError> {
    Ok(unit
        .assignments_of_hand_over(hand_over_id)
        .await?
        .into_iter()
        .filter(|assignment| assignment.state == pb::AssignmentState::SlaBreached)
        .map(|assignment| assignment.rep_id)
        .collect())
}

fn skipped(rep_id: Uuid, reasons: &[SkipReason]) -> pb::SkippedRep {
    pb::SkippedRep {
        rep_id: rep_id.to_string(),
        reasons: reasons
            .iter()
            .map(|&reason| skip_reason(reason) as i32)
            .collect(),
    }
}

/// Places `hand_over` with a rep of `team` (locked by the caller) or, for the team's own
/// choice, in its queue. Writes the assignment, the rep's load, the rotation (in the
/// records and in `team`) and the hand-over, and adds the LeadAssigned event to `events`. A manual placement that finds
/// nobody returns `Queued` and writes nothing.
#[allow(clippy::too_many_arguments, reason = "one placement needs all of them")]
pub async fn place(
    unit: &mut dyn RoutingUnit,
    hand_over: &mut HandOver,
    team: &mut TeamRecord,
    target: Target,
    previous: Option<&AssignmentRecord>,
    manual: Option<&ManualNote>,
    now: DateTime<Utc>,
    events: &mut Vec<Payload>,
) -> Result<Placed, StorageError> {
    let breached = breached_reps(unit, hand_over.hand_over_id).await?;
    let escalate = target == Target::Team
        && team.escalate_after_breaches > 0
        && hand_over.breach_count >= team.escalate_after_breaches;
    let owner = if target == Target::Team && team.account_ownership_first {
        match hand_over.account_id.as_str() {
            "" => None,
            account => unit
                .account_owner(account)
                .await?
                .and_then(|owner| owner.rep_id),
        }
    } else {
        None
    };
    let mut wanted = team.member_ids();
    wanted.extend(team.team_lead_rep_id);
    wanted.extend(owner);
    if let Target::ManualRep(rep_id) = target {
        wanted.push(rep_id);
    }
    let reps = unit.reps_by_ids(&wanted).await?;
    let find = |rep_id: Uuid| reps.iter().find(|rep| rep.rep_id == rep_id);
    let need = Need {
        product: &hand_over.product,
        language: &hand_over.language,
        at: now,
        breached: &breached,
        respect_schedule: true,
    };
    let mut decided = Choice {
        rep: None,
        method: pb::AssignmentMethod::Unspecified,
        considered: Vec::new(),
        skipped: Vec::new(),
        owner,
    };
    match target {
        Target::ManualRep(rep_id) => {
            if let Some(rep) = find(rep_id) {
                let manual_need = Need {
                    respect_schedule: false,
                    breached: &[],
                    ..need
                };
                let reasons: Vec<SkipReason> = candidate(rep)
                    .skip_reasons(&manual_need)
                    .into_iter()
                    .filter(|reason| {
                        matches!(reason, SkipReason::AtCapacity | SkipReason::Inactive)
                    })
                    .collect();
                if reasons.is_empty() && unit.take_capacity(rep_id, now).await? {
                    decided.rep = Some(rep.clone());
                    decided.considered = vec![rep_id];
                } else {
                    decided.skipped.push(skipped(
                        rep_id,
                        if reasons.is_empty() {
                            &[SkipReason::AtCapacity]
                        } else {
                            &reasons
                        },
                    ));
                }
            }
            decided.method = pb::AssignmentMethod::Manual;
        }
        Target::Team | Target::ManualTeam => {
            if escalate {
                decided.method = pb::AssignmentMethod::Escalation;
                if let Some(lead) = team.team_lead_rep_id.and_then(find) {
                    // The team lead is the end of the line: its hours and earlier breaches
                    // do not stop an escalation, capacity does.
                    let escalation_need = Need {
                        respect_schedule: false,
                        breached: &[],
                        ..need
                    };
                    // An escalated lead waits for its team lead alone, so a busy team lead
                    // is not recorded as a skip: it says nothing about whether the members
                    // are free for the leads queued behind it.
                    let reasons = candidate(lead).skip_reasons(&escalation_need);
                    if reasons.is_empty() && unit.take_capacity(lead.rep_id, now).await? {
                        decided.rep = Some(lead.clone());
                        decided.considered = vec![lead.rep_id];
                    }
                }
            }
            if decided.rep.is_none()
                && !escalate
                && let Some(owner_rep) = owner.and_then(find)
            {
                let reasons = candidate(owner_rep).skip_reasons(&need);
                if reasons.is_empty() && unit.take_capacity(owner_rep.rep_id, now).await? {
                    decided.rep = Some(owner_rep.clone());
                    decided.method = pb::AssignmentMethod::AccountOwner;
                    decided.considered = vec![owner_rep.rep_id];
                }
            }
            if decided.rep.is_none() && !escalate {
                choose_by_strategy(unit, team, &reps, &need, now, &mut decided).await?;
                decided.method = if target == Target::ManualTeam {
                    pb::AssignmentMethod::Manual
                } else {
                    pb::AssignmentMethod::Strategy
                };
            }
        }
    }
    let Some(rep) = decided.rep.clone() else {
        if target == Target::Team {
            hand_over.state = HandOverState::Queued;
            hand_over.queued_time.get_or_insert(now);
            hand_over.first_queued_time.get_or_insert(now);
            unit.update_hand_over(hand_over).await?;
        }
        return Ok(Placed::Queued(decided.skipped));
    };
    let sla_due_time =
        (decided.method != pb::AssignmentMethod::Escalation).then(|| match team.sla_clock {
            pb::SlaClock::WorkingHours => schedule(&rep).add_working_time(now, team.sla),
            pb::SlaClock::WallTime | pb::SlaClock::Unspecified => now + team.sla,
        });
    let automatic = !matches!(decided.method, pb::AssignmentMethod::Manual);
    let strategy = if decided.method == pb::AssignmentMethod::Strategy {
        team.strategy
    } else {
        pb::RoutingStrategy::Unspecified
    };
    let (rule_id, rule_set_version) = if automatic {
        (hand_over.rule_id, hand_over.rule_set_version)
    } else {
        (None, 0)
    };
    let assignment_id = Uuid::now_v7();
    let explanation = pb::ExplainAssignmentResponse {
        assignment_id: assignment_id.to_string(),
        rule_set_version,
        rule_id: rule_id.map(|id| id.to_string()).unwrap_or_default(),
        rule_name: String::new(),
        default_team: automatic && rule_id.is_none(),
        team_id: team.team_id.to_string(),
        method: decided.method.into(),
        strategy: strategy.into(),
        account_owner_rep_id: decided.owner.map(|id| id.to_string()).unwrap_or_default(),
        chosen_rep_id: rep.rep_id.to_string(),
        eligible_rep_ids: decided.considered.iter().map(Uuid::to_string).collect(),
        skipped_reps: decided.skipped,
        evaluate_time: Some(to_timestamp(now)),
    };
    let assignment = AssignmentRecord {
        assignment_id,
        hand_over_id: hand_over.hand_over_id,
        lead_id: hand_over.lead_id,
        product: hand_over.product.clone(),
        rep_id: rep.rep_id,
        team_id: team.team_id,
        state: pb::AssignmentState::Pending,
        method: decided.method,
        strategy,
        rule_id,
        rule_set_version,
        previous_assignment_id: previous.map(|previous| previous.assignment_id),
        breach_count: hand_over.breach_count,
        create_time: now,
        sla_due_time,
        accept_time: None,
        end_time: None,
        rejection_reason: pb::RejectionReason::Unspecified,
        note: manual.map(|manual| manual.note.clone()).unwrap_or_default(),
        assigned_by: manual
            .map(|manual| manual.actor.clone())
            .unwrap_or_default(),
        decided_by: String::new(),
        explanation,
    };
    unit.insert_assignment(&assignment).await?;
    hand_over.state = HandOverState::Assigned;
    hand_over.queued_time = None;
    hand_over.first_assign_time.get_or_insert(now);
    hand_over.stage = common::LifecycleStage::Mql;
    hand_over.accept_time = None;
    unit.update_hand_over(hand_over).await?;
    events.push(Payload::LeadAssigned(events::LeadAssigned {
        assignment_id: assignment_id.to_string(),
        lead_id: hand_over.lead_id.to_string(),
        product: hand_over.product.clone(),
        rep_id: rep.rep_id.to_string(),
        team_id: team.team_id.to_string(),
        rule_id: rule_id.map(|id| id.to_string()).unwrap_or_default(),
        rule_set_version,
        strategy: event_strategy(decided.method, strategy).into(),
        reassignment: previous.is_some(),
        previous_assignment_id: previous
            .map(|previous| previous.assignment_id.to_string())
            .unwrap_or_default(),
        accept_by: sla_due_time.map(to_timestamp),
    }));
    Ok(Placed::Assigned(Box::new(assignment)))
}

fn event_strategy(
    method: pb::AssignmentMethod,
    strategy: pb::RoutingStrategy,
) -> events::RoutingStrategy {
    if method == pb::AssignmentMethod::AccountOwner {
        return events::RoutingStrategy::AccountOwner;
    }
    match strategy {
        pb::RoutingStrategy::RoundRobin => events::RoutingStrategy::RoundRobin,
        pb::RoutingStrategy::WeightedRoundRobin => events::RoutingStrategy::WeightedRoundRobin,
        pb::RoutingStrategy::LeastLoaded => events::RoutingStrategy::LeastLoaded,
        pb::RoutingStrategy::Unspecified => events::RoutingStrategy::Unspecified,
    }
}

/// Lets the team's strategy pick among the available members, taking the chosen rep's
/// capacity; a rep another team filled in the meantime is skipped and the pick repeated.
async fn choose_by_strategy(
    unit: &mut dyn RoutingUnit,
    team: &mut TeamRecord,
    reps: &[Rep],
    need: &Need<'_>,
    now: DateTime<Utc>,
    decided: &mut Choice,
) -> Result<(), StorageError> {
    let mut candidates: Vec<Candidate> = Vec::with_capacity(team.members.len());
    for member in &team.members {
        let Some(rep) = reps.iter().find(|rep| rep.rep_id == member.rep_id) else {
            continue;
        };
        let candidate = candidate(rep);
        let reasons = candidate.skip_reasons(need);
        if reasons.is_empty() {
            candidates.push(candidate);
        } else {
            decided.skipped.push(skipped(rep.rep_id, &reasons));
        }
    }
    loop {
        let available: Vec<&Candidate> = candidates.iter().collect();
        let Some(pick) = choice::pick(
            teams::strategy(team.strategy),
            &team.members,
            &available,
            team.last_chosen_rep_id,
        ) else {
            return Ok(());
        };
        if unit.take_capacity(pick.rep_id, now).await? {
            unit.save_rotation(team.team_id, pick.rep_id, &pick.rotation)
                .await?;
            team.last_chosen_rep_id = Some(pick.rep_id);
            for updated in &pick.rotation {
                if let Some(member) = team
                    .members
                    .iter_mut()
                    .find(|member| member.rep_id == updated.rep_id)
                {
                    *member = *updated;
                }
            }
            decided.rep = reps.iter().find(|rep| rep.rep_id == pick.rep_id).cloned();
            decided.considered = pick.considered;
            return Ok(());
        }
        decided
            .skipped
            .push(skipped(pick.rep_id, &[SkipReason::AtCapacity]));
        candidates.retain(|candidate| candidate.rep_id != pick.rep_id);
    }
}

/// Assigns the team's waiting hand-overs in arrival order; the team must be locked by the
/// caller. A hand-over nobody can take for reasons of its own (its product, its language,
/// earlier breaches) does not hold up the ones behind it; one that waits because nobody is
/// free ends the pass. Returns how many were assigned.
pub async fn work_queue(
    unit: &mut dyn RoutingUnit,
    mut team: TeamRecord,
    now: DateTime<Utc>,
    events: &mut Vec<Payload>,
) -> Result<usize, StorageError> {
    let mut assigned = 0;
    let waiting = unit.lock_queued(team.team_id, QUEUE_PASS).await?;
    for mut hand_over in waiting {
        match place(
            unit,
            &mut hand_over,
            &mut team,
            Target::Team,
            None,
            None,
            now,
            events,
        )
        .await?
        {
            Placed::Assigned(_) => assigned += 1,
            Placed::Queued(skipped) if nobody_free(&skipped) => break,
            Placed::Queued(_) => {}
        }
    }
    Ok(assigned)
}

/// Whether every skipped rep was unavailable for any lead, not just for this one.
fn nobody_free(skipped: &[pb::SkippedRep]) -> bool {
    let general = [
        pb::SkipReason::AtCapacity as i32,
        pb::SkipReason::OutsideWorkingHours as i32,
        pb::SkipReason::OutOfOffice as i32,
        pb::SkipReason::Inactive as i32,
    ];
    !skipped.is_empty()
        && skipped
            .iter()
            .all(|rep| rep.reasons.iter().any(|reason| general.contains(reason)))
}

/// Ends an open assignment (`state` one of the final states) and gives back the rep's
/// capacity.
pub async fn end_assignment(
    unit: &mut dyn RoutingUnit,
    assignment: &mut AssignmentRecord,
    state: pb::AssignmentState,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    assignment.state = state;
    assignment.end_time = Some(now);
    unit.update_assignment(assignment).await?;
    unit.release_capacity(assignment.rep_id).await
}

/// Locks the hand-over of an assignment, then the assignment: the lock order of every
/// unit. `None` when either is gone.
pub async fn lock_with_hand_over(
    unit: &mut dyn RoutingUnit,
    assignment_id: Uuid,
) -> Result<Option<(HandOver, AssignmentRecord)>, StorageError> {
    let Some(found) = unit.assignment(assignment_id).await? else {
        return Ok(None);
    };
    let Some(hand_over) = unit.lock_hand_over(found.hand_over_id).await? else {
        return Ok(None);
    };
    Ok(unit
        .lock_assignment(assignment_id)
        .await?
        .map(|assignment| (hand_over, assignment)))
}

/// The open (pending or accepted) assignment among a hand-over's assignments, oldest first.
pub fn open_assignment(assignments: Vec<AssignmentRecord>) -> Option<AssignmentRecord> {
    assignments.into_iter().rev().find(|assignment| {
        matches!(
            assignment.state,
            pb::AssignmentState::Pending | pb::AssignmentState::Accepted
        )
    })
}

/// Adds the events to the outbox, each under its lead.
pub async fn publish(
    unit: &mut dyn RoutingUnit,
    payloads: Vec<Payload>,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    for payload in payloads {
        let lead_id = lead_of(&payload).to_owned();
        let envelope = new_envelope(PRODUCER, &lead_id, payload, now);
        unit.publish(&envelope).await?;
    }
    Ok(())
}

fn lead_of(payload: &Payload) -> &str {
    match payload {
        Payload::LeadAssigned(event) => &event.lead_id,
        Payload::SlaBreached(event) => &event.lead_id,
        Payload::AssignmentAccepted(event) => &event.lead_id,
        Payload::AssignmentRejected(event) => &event.lead_id,
        Payload::LeadRecycled(event) => &event.lead_id,
        Payload::LeadQualified(event) => &event.lead_id,
        Payload::OpportunityOpened(event) => &event.lead_id,
        Payload::DealClosed(event) => &event.lead_id,
        _ => "",
    }
}
