//! Routing metrics: speed to lead as percentiles, assignments, acceptances, rejections by
//! reason, SLA breaches and escalations in a period, the queue now and the load per rep.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, time::from_timestamp, validate};
use leadflow_proto::routing::v1 as pb;
use uuid::Uuid;

use crate::{
    error::RoutingError,
    records::{AssignmentRecord, HandOver, RoutingUnit},
    teams::to_duration,
};

/// Count, mean and nearest-rank percentiles of `durations`.
pub fn duration_stats(mut durations: Vec<chrono::Duration>) -> pb::DurationStats {
    if durations.is_empty() {
        return pb::DurationStats::default();
    }
    durations.sort();
    let count = durations.len();
    let total: chrono::Duration = durations.iter().copied().sum();
    let percentile = |p: usize| {
        let rank = (p * count).div_ceil(100).max(1);
        to_duration(durations[rank - 1])
    };
    pb::DurationStats {
        count: u32::try_from(count).unwrap_or(u32::MAX),
        mean: Some(to_duration(
            total / i32::try_from(count).unwrap_or(i32::MAX),
        )),
        p50: Some(percentile(50)),
        p90: Some(percentile(90)),
        p99: Some(percentile(99)),
    }
}

fn within(time: Option<DateTime<Utc>>, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    time.is_some_and(|time| from <= time && time < to)
}

/// The metrics of `request`, read in `unit`.
pub async fn routing_metrics(
    unit: &mut dyn RoutingUnit,
    request: &pb::GetRoutingMetricsRequest,
    now: DateTime<Utc>,
) -> Result<pb::GetRoutingMetricsResponse, RoutingError> {
    let mut violations = FieldViolations::new();
    let range = request.time_range.unwrap_or_default();
    let from = range.start_time.as_ref().and_then(from_timestamp);
    if from.is_none() {
        violations.add("time_range.start_time", "is required");
    }
    let to = match range.end_time.as_ref() {
        None => now,
        Some(end) => match from_timestamp(end) {
            // Without a start there is nothing to compare the end with.
            Some(to) if from.is_none_or(|from| to >= from) => to,
            _ => {
                violations.add("time_range.end_time", "must not lie before start_time");
                now
            }
        },
    };
    let from = from.unwrap_or(now);
    let team = if request.team_id.is_empty() {
        None
    } else {
        validate::uuid(&mut violations, "team_id", &request.team_id)
    };
    violations.into_result()?;
    let team_record = match team {
        Some(team_id) => Some(
            unit.team(team_id)
                .await?
                .ok_or(RoutingError::TeamNotFound(team_id))?,
        ),
        None => None,
    };
    let product = request.product.as_str();
    let assignments: Vec<AssignmentRecord> = unit
        .assignments_touching(from, to)
        .await?
        .into_iter()
        .filter(|a| team.is_none_or(|team| a.team_id == team))
        .filter(|a| product.is_empty() || a.product == product)
        .collect();
    let mut hand_overs: HashMap<Uuid, HandOver> = HashMap::new();
    for assignment in &assignments {
        if !hand_overs.contains_key(&assignment.hand_over_id)
            && let Some(hand_over) = unit.hand_over(assignment.hand_over_id).await?
        {
            hand_overs.insert(hand_over.hand_over_id, hand_over);
        }
    }
    let mut ready_to_assigned = Vec::new();
    let mut assigned_to_accepted = Vec::new();
    let mut ready_to_accepted = Vec::new();
    let mut rejections: BTreeMap<i32, u32> = BTreeMap::new();
    let (mut assignment_count, mut accepted_count) = (0u32, 0u32);
    let (mut sla_breach_count, mut escalation_count) = (0u32, 0u32);
    #[derive(Default)]
    struct RepTally {
        assigned: u32,
        accepted: u32,
        rejected: u32,
        breached: u32,
        to_accept: Vec<chrono::Duration>,
    }
    let mut per_rep: HashMap<Uuid, RepTally> = HashMap::new();
    for assignment in &assignments {
        let tally = per_rep.entry(assignment.rep_id).or_default();
        let hand_over = hand_overs.get(&assignment.hand_over_id);
        if within(Some(assignment.create_time), from, to) {
            assignment_count += 1;
            tally.assigned += 1;
            if assignment.method == pb::AssignmentMethod::Escalation {
                escalation_count += 1;
            }
            if let Some(hand_over) = hand_over
                && hand_over.first_assign_time == Some(assignment.create_time)
                && assignment.previous_assignment_id.is_none()
            {
                ready_to_assigned.push(assignment.create_time - hand_over.sales_ready_time);
            }
        }
        if within(assignment.accept_time, from, to) {
            let accepted = assignment.accept_time.unwrap_or(assignment.create_time);
            accepted_count += 1;
            tally.accepted += 1;
            tally.to_accept.push(accepted - assignment.create_time);
            assigned_to_accepted.push(accepted - assignment.create_time);
            if let Some(hand_over) = hand_over {
                ready_to_accepted.push(accepted - hand_over.sales_ready_time);
            }
        }
        if within(assignment.end_time, from, to) {
            match assignment.state {
                pb::AssignmentState::Rejected => {
                    *rejections
                        .entry(assignment.rejection_reason as i32)
                        .or_default() += 1;
                    tally.rejected += 1;
                }
                pb::AssignmentState::SlaBreached => {
                    sla_breach_count += 1;
                    tally.breached += 1;
                }
                _ => {}
            }
        }
    }
    let reps = match &team_record {
        Some(team) => unit.reps_by_ids(&team.member_ids()).await?,
        None => unit.all_reps().await?,
    };
    let mut rep_loads: Vec<pb::RepLoad> = reps
        .iter()
        .map(|rep| {
            let tally = per_rep.remove(&rep.rep_id).unwrap_or_default();
            pb::RepLoad {
                rep_id: rep.rep_id.to_string(),
                open_assignments: rep.open_assignments,
                capacity: rep.rep.capacity,
                assigned_count: tally.assigned,
                accepted_count: tally.accepted,
                rejected_count: tally.rejected,
                sla_breach_count: tally.breached,
                assigned_to_accepted: Some(duration_stats(tally.to_accept)),
            }
        })
        .collect();
    rep_loads.sort_by(|left, right| left.rep_id.cmp(&right.rep_id));
    Ok(pb::GetRoutingMetricsResponse {
        speed_to_lead: Some(pb::SpeedToLead {
            ready_to_assigned: Some(duration_stats(ready_to_assigned)),
            assigned_to_accepted: Some(duration_stats(assigned_to_accepted)),
            ready_to_accepted: Some(duration_stats(ready_to_accepted)),
        }),
        assignment_count,
        accepted_count,
        rejections: rejections
            .into_iter()
            .map(|(reason, count)| pb::RejectionCount { reason, count })
            .collect(),
        sla_breach_count,
        escalation_count,
        queued_lead_count: unit.queue_length(team).await?,
        rep_loads,
    })
}
