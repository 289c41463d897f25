//! Teams (queues) of reps: who is in them, who leads them, how they pick a rep, how long a
//! rep has to accept and after how many breaches a lead goes to the team lead.

use chrono::{DateTime, Utc};
use leadflow_domain::routing::{Rotation, Strategy};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::routing::v1 as pb;
use uuid::Uuid;

use crate::records::TeamRecord;

/// The longest SLA a team may set: a lead that waits longer is not being worked.
const MAX_SLA: chrono::Duration = chrono::Duration::days(30);

/// A team as a request describes it, validated; members and the lead are not yet known to
/// exist.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamSpec {
    /// The name.
    pub name: String,
    /// The members in order.
    pub members: Vec<Uuid>,
    /// The team lead.
    pub team_lead_rep_id: Option<Uuid>,
    /// The strategy.
    pub strategy: pb::RoutingStrategy,
    /// Account owners first.
    pub account_ownership_first: bool,
    /// The SLA.
    pub sla: chrono::Duration,
    /// The SLA's clock.
    pub sla_clock: pb::SlaClock,
    /// Breaches before escalation; 0 never.
    pub escalate_after_breaches: u32,
}

impl TeamSpec {
    /// Parses the `team` of a create or update request; every problem is reported under its
    /// field path.
    pub fn parse(team: Option<&pb::Team>) -> Result<Self, FieldViolations> {
        let Some(team) = team else {
            return Err(FieldViolations::single("team", "is required"));
        };
        let mut violations = FieldViolations::new();
        let name = validate::required_text(&mut violations, "team.name", &team.name, 200);
        let mut members = Vec::with_capacity(team.member_rep_ids.len());
        for (index, id) in team.member_rep_ids.iter().enumerate() {
            let field = format!("team.member_rep_ids[{index}]");
            if let Some(id) = validate::uuid(&mut violations, &field, id) {
                if members.contains(&id) {
                    violations.add(field, "repeats a member");
                } else {
                    members.push(id);
                }
            }
        }
        let team_lead_rep_id = if team.team_lead_rep_id.is_empty() {
            None
        } else {
            validate::uuid(
                &mut violations,
                "team.team_lead_rep_id",
                &team.team_lead_rep_id,
            )
        };
        let strategy = match pb::RoutingStrategy::try_from(team.strategy) {
            Ok(pb::RoutingStrategy::Unspecified) | Err(_) => {
                violations.add("team.strategy", "must be a routing strategy");
                pb::RoutingStrategy::Unspecified
            }
            Ok(strategy) => strategy,
        };
        let sla = match team.sla.as_ref() {
            None => {
                violations.add("team.sla", "is required");
                chrono::Duration::zero()
            }
            Some(duration) => {
                let sla = chrono::Duration::seconds(duration.seconds)
                    + chrono::Duration::nanoseconds(i64::from(duration.nanos));
                if sla < chrono::Duration::seconds(1) || sla > MAX_SLA {
                    violations.add("team.sla", "must be between 1 second and 30 days");
                }
                sla
            }
        };
        let sla_clock = match pb::SlaClock::try_from(team.sla_clock) {
            Ok(pb::SlaClock::Unspecified) | Err(_) => {
                violations.add("team.sla_clock", "must be WALL_TIME or WORKING_HOURS");
                pb::SlaClock::Unspecified
            }
            Ok(clock) => clock,
        };
        if team.escalate_after_breaches > 100 {
            violations.add("team.escalate_after_breaches", "must be at most 100");
        }
        violations.into_result()?;
        Ok(Self {
            name,
            members,
            team_lead_rep_id,
            strategy,
            account_ownership_first: team.account_ownership_first,
            sla,
            sla_clock,
            escalate_after_breaches: team.escalate_after_breaches,
        })
    }

    /// Every rep the team refers to: members and the lead.
    pub fn referenced_reps(&self) -> Vec<Uuid> {
        let mut reps = self.members.clone();
        if let Some(lead) = self.team_lead_rep_id
            && !reps.contains(&lead)
        {
            reps.push(lead);
        }
        reps
    }

    /// A new team record.
    pub fn into_record(self, team_id: Uuid, now: DateTime<Utc>) -> TeamRecord {
        TeamRecord {
            team_id,
            name: self.name,
            members: self
                .members
                .into_iter()
                .map(|rep_id| Rotation {
                    rep_id,
                    current_weight: 0,
                })
                .collect(),
            team_lead_rep_id: self.team_lead_rep_id,
            strategy: self.strategy,
            account_ownership_first: self.account_ownership_first,
            sla: self.sla,
            sla_clock: self.sla_clock,
            escalate_after_breaches: self.escalate_after_breaches,
            last_chosen_rep_id: None,
            create_time: now,
            update_time: now,
        }
    }
}

/// The domain's strategy for the contract's.
pub fn strategy(strategy: pb::RoutingStrategy) -> Strategy {
    match strategy {
        pb::RoutingStrategy::WeightedRoundRobin => Strategy::WeightedRoundRobin,
        pb::RoutingStrategy::LeastLoaded => Strategy::LeastLoaded,
        pb::RoutingStrategy::RoundRobin | pb::RoutingStrategy::Unspecified => Strategy::RoundRobin,
    }
}

pub use leadflow_platform::time::to_duration;

/// The team as the contract shows it, with its queue length.
pub fn to_pb(team: &TeamRecord, queued_leads: u32) -> pb::Team {
    pb::Team {
        team_id: team.team_id.to_string(),
        name: team.name.clone(),
        member_rep_ids: team
            .members
            .iter()
            .map(|member| member.rep_id.to_string())
            .collect(),
        team_lead_rep_id: team
            .team_lead_rep_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        strategy: team.strategy.into(),
        account_ownership_first: team.account_ownership_first,
        sla: Some(to_duration(team.sla)),
        sla_clock: team.sla_clock.into(),
        escalate_after_breaches: team.escalate_after_breaches,
        create_time: Some(to_timestamp(team.create_time)),
        update_time: Some(to_timestamp(team.update_time)),
        queued_leads,
    }
}
