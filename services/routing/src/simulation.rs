//! Routing simulation: a proposed rule set replayed over given leads or the recent
//! hand-overs, against the current teams and reps, with capacity counting only the
//! simulated assignments. Nothing is written.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use leadflow_domain::routing::{self as choice, Candidate, Need, Rotation};
use leadflow_platform::{FieldViolations, time::from_timestamp};
use leadflow_proto::{common::v1 as common, routing::v1 as pb};
use uuid::Uuid;

use crate::{
    engine::{candidate, skip_reason},
    error::RoutingError,
    records::{RoutingUnit, TeamRecord},
    rule_sets::{CompiledRuleSet, traits},
    teams,
};

/// The most leads one simulation replays.
const MAX_LEADS: usize = 10_000;

/// One lead to replay.
struct Replayed {
    lead_ref: String,
    profile: common::LeadProfile,
    product: String,
    lead_class: common::LeadClass,
    cell: common::HeatMapCell,
    account_id: String,
    language: String,
    arrival: DateTime<Utc>,
}

/// A team's rotation as the simulation moves it.
struct SimulatedTeam {
    team: TeamRecord,
    rotation: Vec<Rotation>,
    last_chosen: Option<Uuid>,
}

/// Runs the simulation of `request`.
pub async fn simulate(
    unit: &mut dyn RoutingUnit,
    request: &pb::SimulateRoutingRequest,
    now: DateTime<Utc>,
) -> Result<pb::SimulateRoutingResponse, RoutingError> {
    let mut violations = FieldViolations::new();
    let mut proposal = request.rule_set.clone();
    if let Some(proposal) = proposal.as_mut() {
        proposal.version = 0;
    }
    let rules = CompiledRuleSet::parse("rule_set", proposal.as_ref())
        .map_err(|rule_violations| violations.extend(rule_violations))
        .ok();
    match &request.source {
        None => violations.add("source", "is required: set leads or last_days"),
        Some(pb::simulate_routing_request::Source::Leads(leads)) => {
            if leads.leads.is_empty() {
                violations.add("leads.leads", "must hold at least one lead");
            } else if leads.leads.len() > MAX_LEADS {
                violations.add(
                    "leads.leads",
                    format!(
                        "holds {} leads; at most {MAX_LEADS} are allowed",
                        leads.leads.len()
                    ),
                );
            }
        }
        Some(pb::simulate_routing_request::Source::LastDays(days)) => {
            if !(1..=365).contains(days) {
                violations.add("last_days", "must be between 1 and 365");
            }
        }
    }
    violations.into_result()?;
    let rules = rules.expect("no violations means the rule set parsed");
    let mut teams: HashMap<Uuid, SimulatedTeam> = HashMap::new();
    for team_id in rules.referenced_teams() {
        let team = unit
            .team(team_id)
            .await?
            .ok_or(RoutingError::TeamNotFound(team_id))?;
        teams.insert(
            team_id,
            SimulatedTeam {
                rotation: team
                    .members
                    .iter()
                    .map(|member| Rotation {
                        rep_id: member.rep_id,
                        current_weight: 0,
                    })
                    .collect(),
                last_chosen: None,
                team,
            },
        );
    }
    let mut leads = replayed_leads(unit, request, now).await?;
    // A stable sort keeps list order among leads of the same arrival.
    leads.sort_by_key(|lead| lead.arrival);
    let mut reps: HashMap<Uuid, Candidate> = unit
        .all_reps()
        .await?
        .iter()
        .map(|rep| {
            let mut candidate = candidate(rep);
            candidate.open_assignments = 0;
            candidate.last_assign_time = None;
            if !request.respect_availability {
                candidate.active = true;
            }
            (rep.rep_id, candidate)
        })
        .collect();
    let mut owners: HashMap<String, Option<Uuid>> = HashMap::new();
    let mut answer = pb::SimulateRoutingResponse {
        lead_count: u32::try_from(leads.len()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let mut per_rep: HashMap<Uuid, u32> = HashMap::new();
    let mut per_team: Vec<pb::TeamDistribution> = Vec::new();
    let mut per_rule: Vec<pb::RuleDistribution> = rules
        .rules
        .iter()
        .map(|rule| pb::RuleDistribution {
            rule_ref: rule
                .rule_id
                .map(|id| id.to_string())
                .unwrap_or_else(|| rule.name.clone()),
            lead_count: 0,
        })
        .collect();
    for lead in &leads {
        let routed = rules.route(&traits(
            &lead.profile,
            &lead.product,
            lead.lead_class,
            &lead.cell,
        ));
        match routed.rule {
            Some(rule) => {
                if let Some(index) = rules.rules.iter().position(|other| other == rule) {
                    per_rule[index].lead_count += 1;
                }
            }
            None => answer.default_team_count += 1,
        }
        let team = teams
            .get_mut(&routed.team_id)
            .expect("every referenced team was loaded");
        let need = Need {
            product: &lead.product,
            language: &lead.language,
            at: lead.arrival,
            breached: &[],
            respect_schedule: request.respect_availability,
        };
        let mut method = pb::AssignmentMethod::Unspecified;
        let mut chosen = None;
        let mut skipped = Vec::new();
        if team.team.account_ownership_first && !lead.account_id.is_empty() {
            if !owners.contains_key(&lead.account_id) {
                let owner = unit
                    .account_owner(&lead.account_id)
                    .await?
                    .and_then(|owner| owner.rep_id);
                owners.insert(lead.account_id.clone(), owner);
            }
            if let Some(owner) = owners[&lead.account_id]
                && reps
                    .get(&owner)
                    .is_some_and(|rep| rep.skip_reasons(&need).is_empty())
            {
                chosen = Some(owner);
                method = pb::AssignmentMethod::AccountOwner;
            }
        }
        if chosen.is_none() {
            let mut available = Vec::new();
            for member in &team.team.members {
                let Some(rep) = reps.get(&member.rep_id) else {
                    continue;
                };
                let reasons = rep.skip_reasons(&need);
                if reasons.is_empty() {
                    available.push(rep);
                } else {
                    skipped.push(pb::SkippedRep {
                        rep_id: rep.rep_id.to_string(),
                        reasons: reasons
                            .into_iter()
                            .map(|reason| skip_reason(reason) as i32)
                            .collect(),
                    });
                }
            }
            if let Some(pick) = choice::pick(
                teams::strategy(team.team.strategy),
                &team.rotation,
                &available,
                team.last_chosen,
            ) {
                for updated in &pick.rotation {
                    if let Some(member) = team
                        .rotation
                        .iter_mut()
                        .find(|member| member.rep_id == updated.rep_id)
                    {
                        *member = *updated;
                    }
                }
                team.last_chosen = Some(pick.rep_id);
                chosen = Some(pick.rep_id);
                method = pb::AssignmentMethod::Strategy;
            }
        }
        let distribution = match per_team
            .iter_mut()
            .position(|entry| entry.team_id == routed.team_id.to_string())
        {
            Some(index) => &mut per_team[index],
            None => {
                per_team.push(pb::TeamDistribution {
                    team_id: routed.team_id.to_string(),
                    ..Default::default()
                });
                per_team.last_mut().expect("just pushed")
            }
        };
        distribution.lead_count += 1;
        match chosen {
            Some(rep_id) => {
                *per_rep.entry(rep_id).or_default() += 1;
                if let Some(rep) = reps.get_mut(&rep_id) {
                    rep.open_assignments += 1;
                    rep.last_assign_time = Some(lead.arrival);
                }
            }
            None => {
                distribution.queued_count += 1;
                answer.queued_count += 1;
            }
        }
        if request.include_lead_results {
            answer.lead_results.push(pb::SimulatedAssignment {
                lead_ref: lead.lead_ref.clone(),
                product: lead.product.clone(),
                rule_id: routed
                    .rule
                    .map(|rule| {
                        rule.rule_id
                            .map(|id| id.to_string())
                            .unwrap_or_else(|| rule.name.clone())
                    })
                    .unwrap_or_default(),
                team_id: routed.team_id.to_string(),
                rep_id: chosen.map(|id| id.to_string()).unwrap_or_default(),
                method: method.into(),
                skipped_reps: skipped,
            });
        }
    }
    let total: u32 = per_rep.values().sum();
    let mut rep_distribution: Vec<pb::RepDistribution> = per_rep
        .into_iter()
        .map(|(rep_id, lead_count)| pb::RepDistribution {
            rep_id: rep_id.to_string(),
            lead_count,
            share: f64::from(lead_count) / f64::from(total.max(1)),
        })
        .collect();
    rep_distribution.sort_by(|left, right| {
        right
            .lead_count
            .cmp(&left.lead_count)
            .then(left.rep_id.cmp(&right.rep_id))
    });
    answer.reps = rep_distribution;
    answer.teams = per_team;
    answer.rules = per_rule;
    Ok(answer)
}

async fn replayed_leads(
    unit: &mut dyn RoutingUnit,
    request: &pb::SimulateRoutingRequest,
    now: DateTime<Utc>,
) -> Result<Vec<Replayed>, RoutingError> {
    Ok(match &request.source {
        Some(pb::simulate_routing_request::Source::Leads(leads)) => leads
            .leads
            .iter()
            .map(|lead| Replayed {
                lead_ref: lead.lead_ref.clone(),
                profile: lead.lead.clone().unwrap_or_default(),
                product: lead.product.clone(),
                lead_class: common::LeadClass::try_from(lead.lead_class).unwrap_or_default(),
                cell: lead.cell.unwrap_or_default(),
                account_id: lead.account_id.clone(),
                language: lead.language.clone(),
                arrival: lead
                    .arrival_time
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or(now),
            })
            .collect(),
        Some(pb::simulate_routing_request::Source::LastDays(days)) => unit
            .hand_overs_ready_between(now - chrono::Duration::days(i64::from(*days)), now)
            .await?
            .into_iter()
            .take(MAX_LEADS)
            .map(|hand_over| Replayed {
                lead_ref: hand_over.lead_id.to_string(),
                profile: hand_over.profile,
                product: hand_over.product,
                lead_class: hand_over.lead_class,
                cell: hand_over.cell,
                account_id: hand_over.account_id,
                language: hand_over.language,
                arrival: hand_over.sales_ready_time,
            })
            .collect(),
        None => Vec::new(),
    })
}
