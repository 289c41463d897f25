//! Routing's gRPC handlers on both stores (PostgreSQL and the embedded SQLite), driven with
//! an injected clock: rule sets are versioned and checked field by field, teams and reps
//! change only where the update mask says, a deactivated rep's pending leads move on and a
//! rep given more capacity takes the oldest waiting lead, account owners get their
//! accounts' leads first, leads are reassigned by hand, the CRM's outcome walks a lead to
//! customer in order, retries answer the same, simulations write nothing, metrics count
//! what happened, and a team queue pages with running positions.

use std::collections::BTreeMap;

use leadflow_platform::time::{Clock, to_timestamp};
use leadflow_proto::{
    common::v1::{self as common, HeatMapCell, LeadProfile, ProfileGrade, TimeRange},
    events::v1::{EventEnvelope, event_envelope::Payload},
    routing::v1::{
        self as pb, AcceptAssignmentRequest, AssignmentMethod, AssignmentState, CloseDealRequest,
        CompanySizeRange, CreateTeamRequest, DealOutcome, GetRoutingMetricsRequest,
        GetRuleSetRequest, GetTeamQueueRequest, ListRuleSetsRequest, ListTeamsRequest,
        OpenOpportunityRequest, PublishRuleSetRequest, QualifyLeadRequest, ReassignLeadRequest,
        RejectAssignmentRequest, RejectionReason, Rep, RoutingRule, RoutingStrategy, RuleSet,
        SetAccountOwnerRequest, SimulateRoutingRequest, SimulationLead, SimulationLeads,
        SkipReason, Team, UpdateRepRequest, UpdateTeamRequest, reassign_lead_request::Target,
        routing_service_server::RoutingService, simulate_routing_request::Source,
    },
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::routing_assign::{
    Bench, PRODUCT, bench, deliver, key, office_hours, on_both_stores, rep, sales_ready, team, utc,
};

/// The status of a call that must fail, after checking its code.
fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

/// The fields an INVALID_ARGUMENT refusal names, in order.
fn violated_fields(result: Result<impl std::fmt::Debug, Status>) -> Vec<String> {
    refused(result, Code::InvalidArgument)
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

fn minutes(count: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: count * 60,
        nanos: 0,
    }
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
    })
}

fn rule(name: &str, countries: &[&str], team_id: &str) -> RoutingRule {
    RoutingRule {
        name: name.to_owned(),
        country_codes: countries.iter().map(|code| (*code).to_owned()).collect(),
        team_id: team_id.to_owned(),
        ..Default::default()
    }
}

fn from_country(country: &str) -> LeadProfile {
    LeadProfile {
        country_code: country.to_owned(),
        ..Default::default()
    }
}

/// The kinds of routing's events about one lead, in the order they were published.
fn event_kinds(events: &[EventEnvelope], lead_id: &str) -> Vec<&'static str> {
    events
        .iter()
        .filter(|event| event.aggregate_id == lead_id)
        .map(|event| match event.payload {
            Some(Payload::LeadAssigned(_)) => "LeadAssigned",
            Some(Payload::AssignmentAccepted(_)) => "AssignmentAccepted",
            Some(Payload::AssignmentRejected(_)) => "AssignmentRejected",
            Some(Payload::LeadRecycled(_)) => "LeadRecycled",
            Some(Payload::SlaBreached(_)) => "SlaBreached",
            Some(Payload::LeadQualified(_)) => "LeadQualified",
            Some(Payload::OpportunityOpened(_)) => "OpportunityOpened",
            Some(Payload::DealClosed(_)) => "DealClosed",
            _ => "other",
        })
        .collect()
}

/// The calls these tests make often, answered as the contract's messages.
impl Bench {
    async fn create_team(&self, team: Team) -> Result<Team, Status> {
        Ok(self
            .api
            .create_team(Request::new(CreateTeamRequest {
                team: Some(team),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .team
            .expect("team"))
    }

    async fn update_team(&self, team: Team, paths: &[&str]) -> Result<Team, Status> {
        Ok(self
            .api
            .update_team(Request::new(UpdateTeamRequest {
                team: Some(team),
                update_mask: mask(paths),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .team
            .expect("team"))
    }

    async fn team_by_id(&self, team_id: &str) -> Result<Team, Status> {
        Ok(self
            .api
            .get_team(Request::new(pb::GetTeamRequest {
                team_id: team_id.to_owned(),
            }))
            .await?
            .into_inner()
            .team
            .expect("team"))
    }

    async fn update_rep(&self, rep: Rep, paths: &[&str]) -> Result<Rep, Status> {
        Ok(self
            .api
            .update_rep(Request::new(UpdateRepRequest {
                rep: Some(rep),
                update_mask: mask(paths),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .rep
            .expect("rep"))
    }

    async fn rep_by_id(&self, rep_id: &str) -> Result<Rep, Status> {
        Ok(self
            .api
            .get_rep(Request::new(pb::GetRepRequest {
                rep_id: rep_id.to_owned(),
            }))
            .await?
            .into_inner()
            .rep
            .expect("rep"))
    }

    async fn publish_on(&self, base_version: u32, rule_set: RuleSet) -> Result<RuleSet, Status> {
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

    async fn rule_set(&self, version: u32) -> Result<RuleSet, Status> {
        Ok(self
            .api
            .get_rule_set(Request::new(GetRuleSetRequest { version }))
            .await?
            .into_inner()
            .rule_set
            .expect("rule set"))
    }

    async fn assignment(&self, assignment_id: &str) -> Result<pb::Assignment, Status> {
        Ok(self
            .api
            .get_assignment(Request::new(pb::GetAssignmentRequest {
                assignment_id: assignment_id.to_owned(),
            }))
            .await?
            .into_inner()
            .assignment
            .expect("assignment"))
    }

    async fn accept(&self, assignment_id: &str) -> Result<pb::Assignment, Status> {
        Ok(self
            .api
            .accept_assignment(Request::new(AcceptAssignmentRequest {
                assignment_id: assignment_id.to_owned(),
                idempotency_key: key(),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .assignment
            .expect("assignment"))
    }

    async fn reject(
        &self,
        assignment_id: &str,
        reason: RejectionReason,
    ) -> Result<pb::RejectAssignmentResponse, Status> {
        Ok(self
            .api
            .reject_assignment(Request::new(RejectAssignmentRequest {
                assignment_id: assignment_id.to_owned(),
                reason: reason.into(),
                idempotency_key: key(),
                ..Default::default()
            }))
            .await?
            .into_inner())
    }

    async fn reassign_to_rep(
        &self,
        lead_id: &str,
        rep_id: &str,
    ) -> Result<pb::ReassignLeadResponse, Status> {
        Ok(self
            .api
            .reassign_lead(Request::new(ReassignLeadRequest {
                lead_id: lead_id.to_owned(),
                product: PRODUCT.to_owned(),
                target: Some(Target::RepId(rep_id.to_owned())),
                actor: "manager@example.com".to_owned(),
                note: "knows the customer".to_owned(),
                idempotency_key: key(),
            }))
            .await?
            .into_inner())
    }

    async fn qualify(&self, lead_id: &str) -> Result<pb::Assignment, Status> {
        Ok(self
            .api
            .qualify_lead(Request::new(QualifyLeadRequest {
                lead_id: lead_id.to_owned(),
                product: PRODUCT.to_owned(),
                idempotency_key: key(),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .assignment
            .expect("assignment"))
    }

    async fn open_opportunity(
        &self,
        request: OpenOpportunityRequest,
    ) -> Result<pb::Assignment, Status> {
        Ok(self
            .api
            .open_opportunity(Request::new(OpenOpportunityRequest {
                product: PRODUCT.to_owned(),
                idempotency_key: key(),
                ..request
            }))
            .await?
            .into_inner()
            .assignment
            .expect("assignment"))
    }

    async fn close_deal(&self, request: CloseDealRequest) -> Result<pb::Assignment, Status> {
        Ok(self
            .api
            .close_deal(Request::new(CloseDealRequest {
                product: PRODUCT.to_owned(),
                idempotency_key: key(),
                ..request
            }))
            .await?
            .into_inner()
            .assignment
            .expect("assignment"))
    }

    async fn set_account_owner(
        &self,
        account_id: &str,
        rep_id: &str,
    ) -> Result<pb::AccountOwner, Status> {
        Ok(self
            .api
            .set_account_owner(Request::new(SetAccountOwnerRequest {
                account_id: account_id.to_owned(),
                rep_id: rep_id.to_owned(),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .owner
            .expect("owner"))
    }

    async fn account_owner(&self, account_id: &str) -> Result<pb::AccountOwner, Status> {
        Ok(self
            .api
            .get_account_owner(Request::new(pb::GetAccountOwnerRequest {
                account_id: account_id.to_owned(),
            }))
            .await?
            .into_inner()
            .owner
            .expect("owner"))
    }

    async fn simulate(
        &self,
        request: SimulateRoutingRequest,
    ) -> Result<pb::SimulateRoutingResponse, Status> {
        Ok(self
            .api
            .simulate_routing(Request::new(request))
            .await?
            .into_inner())
    }

    async fn metrics(
        &self,
        request: GetRoutingMetricsRequest,
    ) -> Result<pb::GetRoutingMetricsResponse, Status> {
        Ok(self
            .api
            .get_routing_metrics(Request::new(request))
            .await?
            .into_inner())
    }

    /// Delivers a SalesReady for a new lead of `account_id`; returns the lead id.
    async fn sales_ready_of_account(&self, account_id: &str) -> anyhow::Result<String> {
        let lead_id = Uuid::now_v7().to_string();
        let mut envelope = sales_ready(&lead_id, LeadProfile::default(), self.clock.now());
        if let Some(Payload::SalesReady(ready)) = envelope.payload.as_mut() {
            ready.account_id = account_id.to_owned();
        }
        deliver(&self.routing, &envelope).await?;
        Ok(lead_id)
    }

    /// The pending or accepted assignment of a lead, which must have one.
    async fn assigned(&self, lead_id: &str) -> anyhow::Result<pb::Assignment> {
        Ok(self
            .open_assignment(lead_id)
            .await?
            .expect("the lead is assigned"))
    }
}

async fn rule_sets_get_versions_and_only_the_latest_is_active(bench: Bench) -> anyhow::Result<()> {
    refused(bench.rule_set(0).await, Code::NotFound);
    let seller = bench.create_rep(rep("seller")).await?;
    let dach = bench
        .create_team(team(
            "DACH",
            std::slice::from_ref(&seller),
            RoutingStrategy::RoundRobin,
        ))
        .await?
        .team_id;
    let rest = bench
        .create_team(team(
            "Rest of world",
            &[seller],
            RoutingStrategy::RoundRobin,
        ))
        .await?
        .team_id;
    let first = bench
        .publish_on(
            0,
            RuleSet {
                rules: vec![rule("DACH", &["DE", "AT", "CH"], &dach)],
                default_team_id: rest.clone(),
                description: "DACH gets its own team".to_owned(),
                published_by: "ops@example.com".to_owned(),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(first.version, 1);
    assert!(first.active);
    assert_eq!(
        first.create_time,
        Some(to_timestamp(bench.clock.now())),
        "published now"
    );
    assert_eq!(first.description, "DACH gets its own team");
    Uuid::parse_str(&first.rules[0].rule_id)?;

    let second = bench
        .publish_on(
            1,
            RuleSet {
                rules: vec![
                    rule("DACH", &["DE", "AT", "CH"], &dach),
                    rule("France", &["FR"], &rest),
                ],
                default_team_id: rest.clone(),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(second.version, 2);
    assert!(second.active);
    let second_ids: Vec<&str> = second.rules.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(second_ids.len(), 2);
    assert_ne!(second_ids[0], second_ids[1], "every rule gets its own id");
    assert!(
        !second_ids.contains(&first.rules[0].rule_id.as_str()),
        "a new version gets new rule ids"
    );
    assert_eq!(bench.rule_set(0).await?, second, "0 is the active version");
    assert_eq!(bench.rule_set(2).await?, second);
    assert_eq!(
        bench.rule_set(1).await?,
        RuleSet {
            active: false,
            ..first.clone()
        },
        "the old version is kept as published, no longer active"
    );
    refused(bench.rule_set(3).await, Code::NotFound);

    // An editor who worked on version 1 must not overwrite version 2.
    refused(
        bench
            .publish_on(
                1,
                RuleSet {
                    default_team_id: dach.clone(),
                    ..Default::default()
                },
            )
            .await,
        Code::FailedPrecondition,
    );
    let rollback = bench
        .publish_on(
            2,
            RuleSet {
                rules: vec![rule("DACH", &["DE", "AT", "CH"], &dach)],
                default_team_id: rest.clone(),
                description: "back to version 1".to_owned(),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(rollback.version, 3, "a rollback is a new version");

    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = bench
            .api
            .list_rule_sets(Request::new(ListRuleSetsRequest {
                page_size: 1,
                page_token,
            }))
            .await?
            .into_inner();
        pages.push(
            page.rule_sets
                .iter()
                .map(|set| (set.version, set.active))
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        pages,
        vec![vec![(3, true)], vec![(2, false)], vec![(1, false)]],
        "newest first, one per page, only the latest active"
    );

    // Every team a rule set names must exist.
    let unknown = Uuid::new_v4().to_string();
    refused(
        bench
            .publish_on(
                3,
                RuleSet {
                    rules: vec![rule("Nowhere", &["DE"], &unknown)],
                    default_team_id: rest.clone(),
                    ..Default::default()
                },
            )
            .await,
        Code::NotFound,
    );
    refused(
        bench
            .publish_on(
                3,
                RuleSet {
                    default_team_id: unknown,
                    ..Default::default()
                },
            )
            .await,
        Code::NotFound,
    );
    assert_eq!(bench.rule_set(0).await?.version, 3, "nothing was published");
    Ok(())
}

async fn an_invalid_rule_set_names_each_wrong_field(bench: Bench) -> anyhow::Result<()> {
    let seller = bench.create_rep(rep("seller")).await?;
    let team_id = bench
        .create_team(team("DACH", &[seller], RoutingStrategy::RoundRobin))
        .await?
        .team_id;
    let invalid = RuleSet {
        default_team_id: String::new(),
        rules: vec![
            rule("", &["DE"], &team_id),
            rule("Twice", &["AT"], &team_id),
            rule("Twice", &["CH"], &team_id),
            rule("Lower case", &["de"], &team_id),
            RoutingRule {
                company_size: Some(CompanySizeRange {
                    min_employees: 500,
                    max_employees: 100,
                }),
                ..rule("Sizes", &[], &team_id)
            },
            RoutingRule {
                cells: vec![HeatMapCell {
                    grade: ProfileGrade::A.into(),
                    engagement_level: 5,
                }],
                ..rule("Hot", &[], &team_id)
            },
            rule("Teamless", &["FR"], ""),
        ],
        ..Default::default()
    };
    let fields = violated_fields(
        bench
            .api
            .publish_rule_set(Request::new(PublishRuleSetRequest {
                rule_set: Some(invalid),
                base_version: 0,
                idempotency_key: String::new(),
            }))
            .await,
    );
    assert_eq!(
        fields,
        [
            "idempotency_key",
            "rule_set.default_team_id",
            "rule_set.rules[0].name",
            "rule_set.rules[2].name",
            "rule_set.rules[3].country_codes[0]",
            "rule_set.rules[4].company_size.max_employees",
            "rule_set.rules[5].cells[0]",
            "rule_set.rules[6].team_id",
        ]
    );
    assert_eq!(
        violated_fields(
            bench
                .api
                .publish_rule_set(Request::new(PublishRuleSetRequest {
                    rule_set: None,
                    base_version: 0,
                    idempotency_key: key(),
                }))
                .await
        ),
        ["rule_set"]
    );
    refused(bench.rule_set(0).await, Code::NotFound);
    Ok(())
}

async fn teams_are_listed_by_name_and_updated_by_mask(bench: Bench) -> anyhow::Result<()> {
    let anna = bench.create_rep(rep("anna")).await?;
    let ben = bench.create_rep(rep("ben")).await?;
    let lead = bench.create_rep(rep("lead")).await?;
    let zeta = bench
        .create_team(team(
            "Zeta",
            std::slice::from_ref(&anna),
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    let alpha = bench
        .create_team(Team {
            team_lead_rep_id: lead.clone(),
            account_ownership_first: true,
            escalate_after_breaches: 2,
            ..team(
                "alpha",
                &[anna.clone(), ben.clone()],
                RoutingStrategy::LeastLoaded,
            )
        })
        .await?;
    let mid = bench
        .create_team(team(
            "Mid",
            std::slice::from_ref(&ben),
            RoutingStrategy::WeightedRoundRobin,
        ))
        .await?;
    Uuid::parse_str(&alpha.team_id)?;
    assert_eq!(alpha.member_rep_ids, [anna.clone(), ben.clone()]);
    assert_eq!(alpha.team_lead_rep_id, lead);
    assert_eq!(alpha.strategy, RoutingStrategy::LeastLoaded as i32);
    assert!(alpha.account_ownership_first);
    assert_eq!(alpha.escalate_after_breaches, 2);
    assert_eq!(alpha.sla, Some(minutes(30)));
    assert_eq!(alpha.create_time, Some(to_timestamp(bench.clock.now())));
    assert_eq!(alpha.update_time, alpha.create_time);
    assert_eq!(bench.team_by_id(&alpha.team_id).await?, alpha);
    let rep_teams = bench.rep_by_id(&anna).await?.team_ids;
    assert_eq!(
        rep_teams,
        [alpha.team_id.clone(), zeta.team_id.clone()],
        "a rep shows its teams"
    );

    // By name, case-insensitively, across pages.
    let first_page = bench
        .api
        .list_teams(Request::new(ListTeamsRequest {
            page_size: 2,
            page_token: String::new(),
        }))
        .await?
        .into_inner();
    let second_page = bench
        .api
        .list_teams(Request::new(ListTeamsRequest {
            page_size: 2,
            page_token: first_page.next_page_token.clone(),
        }))
        .await?
        .into_inner();
    assert_eq!(first_page.teams, [alpha.clone(), mid.clone()]);
    assert_eq!(second_page.teams, std::slice::from_ref(&zeta));
    assert!(second_page.next_page_token.is_empty());

    // Only the SLA changes; what the request leaves empty is not cleared.
    bench.clock.advance(chrono::Duration::minutes(1));
    let updated = bench
        .update_team(
            Team {
                team_id: alpha.team_id.clone(),
                sla: Some(minutes(45)),
                ..Default::default()
            },
            &["sla"],
        )
        .await?;
    assert_eq!(
        updated,
        Team {
            sla: Some(minutes(45)),
            update_time: Some(to_timestamp(bench.clock.now())),
            ..alpha.clone()
        }
    );
    assert_eq!(bench.team_by_id(&alpha.team_id).await?, updated);

    // Names are unique, whatever their case.
    refused(
        bench
            .create_team(team("ZETA", &[], RoutingStrategy::RoundRobin))
            .await,
        Code::AlreadyExists,
    );
    refused(
        bench
            .update_team(
                Team {
                    team_id: mid.team_id.clone(),
                    name: "ALPHA".to_owned(),
                    ..Default::default()
                },
                &["name"],
            )
            .await,
        Code::AlreadyExists,
    );
    // Members and the team lead must be known reps.
    refused(
        bench
            .create_team(team(
                "Ghosts",
                &[Uuid::new_v4().to_string()],
                RoutingStrategy::RoundRobin,
            ))
            .await,
        Code::NotFound,
    );
    refused(
        bench
            .create_team(Team {
                team_lead_rep_id: Uuid::new_v4().to_string(),
                ..team(
                    "Leaderless",
                    std::slice::from_ref(&anna),
                    RoutingStrategy::RoundRobin,
                )
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(
        violated_fields(
            bench
                .create_team(Team {
                    name: String::new(),
                    member_rep_ids: vec![anna.clone(), anna.clone()],
                    strategy: RoutingStrategy::Unspecified.into(),
                    sla: None,
                    sla_clock: pb::SlaClock::Unspecified.into(),
                    ..Default::default()
                })
                .await
        ),
        [
            "team.name",
            "team.member_rep_ids[1]",
            "team.strategy",
            "team.sla",
            "team.sla_clock",
        ]
    );
    assert_eq!(
        violated_fields(
            bench
                .update_team(
                    Team {
                        team_id: zeta.team_id.clone(),
                        queued_leads: 3,
                        ..Default::default()
                    },
                    &["sla", "queued_leads"],
                )
                .await
        ),
        ["update_mask.paths[1]"],
        "an output-only field cannot be changed"
    );
    let all = bench
        .api
        .list_teams(Request::new(ListTeamsRequest::default()))
        .await?
        .into_inner()
        .teams;
    assert_eq!(all, [updated, mid, zeta], "nothing else changed");
    Ok(())
}

async fn update_rep_changes_only_the_masked_fields(bench: Bench) -> anyhow::Result<()> {
    let (zone, hours) = office_hours("Europe/Berlin");
    let rep_id = bench
        .create_rep(Rep {
            time_zone: zone,
            working_hours: hours,
            products: vec![PRODUCT.to_owned()],
            languages: vec!["de".to_owned(), "en".to_owned()],
            capacity: 5,
            weight: 3,
            ..rep("jana")
        })
        .await?;
    let created = bench.rep_by_id(&rep_id).await?;
    bench.clock.advance(chrono::Duration::minutes(1));
    let updated = bench
        .update_rep(
            Rep {
                rep_id: rep_id.clone(),
                capacity: 8,
                ..Default::default()
            },
            &["capacity"],
        )
        .await?;
    assert_eq!(
        updated,
        Rep {
            capacity: 8,
            update_time: Some(to_timestamp(bench.clock.now())),
            ..created.clone()
        }
    );
    assert_eq!(bench.rep_by_id(&rep_id).await?, updated);
    for paths in [&["nickname"][..], &["capacity", "open_assignments"][..]] {
        let fields = violated_fields(
            bench
                .update_rep(
                    Rep {
                        rep_id: rep_id.clone(),
                        capacity: 9,
                        ..Default::default()
                    },
                    paths,
                )
                .await,
        );
        assert_eq!(
            fields,
            [format!("update_mask.paths[{}]", paths.len() - 1)],
            "{paths:?}"
        );
    }
    refused(
        bench
            .update_rep(
                Rep {
                    rep_id: Uuid::new_v4().to_string(),
                    capacity: 9,
                    ..Default::default()
                },
                &["capacity"],
            )
            .await,
        Code::NotFound,
    );
    assert_eq!(bench.rep_by_id(&rep_id).await?.capacity, 8);
    Ok(())
}

async fn deactivating_a_rep_moves_its_pending_leads_at_once(bench: Bench) -> anyhow::Result<()> {
    let leaving = bench.create_rep(rep("leaving")).await?;
    let staying = bench.create_rep(rep("staying")).await?;
    bench
        .default_team(team(
            "Inside sales",
            &[leaving.clone(), staying.clone()],
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    let pending = bench.sales_ready(LeadProfile::default()).await?;
    let other = bench.sales_ready(LeadProfile::default()).await?;
    let accepted = bench.sales_ready(LeadProfile::default()).await?;
    let first = bench.assigned(&pending).await?;
    assert_eq!(first.rep_id, leaving);
    assert_eq!(bench.assigned(&other).await?.rep_id, staying);
    let kept = bench.assigned(&accepted).await?;
    assert_eq!(kept.rep_id, leaving);
    bench.accept(&kept.assignment_id).await?;

    let deactivated = bench
        .update_rep(
            Rep {
                rep_id: leaving.clone(),
                active: false,
                ..Default::default()
            },
            &["active"],
        )
        .await?;
    assert!(!deactivated.active);
    assert_eq!(deactivated.capacity, 10_000, "only the active flag changed");

    let history = bench.assignments_of(&pending).await?;
    assert_eq!(history.len(), 2);
    let old = history
        .iter()
        .find(|a| a.assignment_id == first.assignment_id)
        .expect("the first assignment");
    assert_eq!(old.state, AssignmentState::Reassigned as i32);
    assert!(old.end_time.is_some());
    let moved = bench.assigned(&pending).await?;
    assert_eq!(moved.state, AssignmentState::Pending as i32);
    assert_eq!(moved.rep_id, staying);
    assert_eq!(moved.previous_assignment_id, first.assignment_id);
    assert_eq!(moved.breach_count, 0, "moving is no SLA breach");
    let explained = bench.explain(&moved.assignment_id).await?;
    assert!(explained.skipped_reps.iter().any(
        |skipped| skipped.rep_id == leaving && skipped.reasons == [SkipReason::Inactive as i32]
    ));
    // An accepted lead stays with its rep.
    let still = bench.assigned(&accepted).await?;
    assert_eq!(
        (still.assignment_id, still.rep_id, still.state),
        (
            kept.assignment_id,
            leaving.clone(),
            AssignmentState::Accepted as i32
        )
    );
    assert_eq!(bench.rep_by_id(&leaving).await?.open_assignments, 1);
    assert_eq!(bench.rep_by_id(&staying).await?.open_assignments, 2);
    assert!(
        !bench
            .events()
            .await?
            .iter()
            .any(|event| matches!(event.payload, Some(Payload::SlaBreached(_))))
    );
    Ok(())
}

async fn raising_capacity_lets_a_full_rep_take_the_oldest_waiting_lead(
    bench: Bench,
) -> anyhow::Result<()> {
    let solo = bench
        .create_rep(Rep {
            capacity: 1,
            ..rep("solo")
        })
        .await?;
    let team_id = bench
        .default_team(team(
            "Solo",
            std::slice::from_ref(&solo),
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    let first = bench.sales_ready(LeadProfile::default()).await?;
    bench.clock.advance(chrono::Duration::seconds(1));
    let oldest_waiting = bench.sales_ready(LeadProfile::default()).await?;
    bench.clock.advance(chrono::Duration::seconds(1));
    let newest_waiting = bench.sales_ready(LeadProfile::default()).await?;
    assert_eq!(bench.assigned(&first).await?.rep_id, solo);
    assert_eq!(bench.queue(&team_id).await?.total_count, 2);

    bench.clock.advance(chrono::Duration::minutes(1));
    let raised = bench
        .update_rep(
            Rep {
                rep_id: solo.clone(),
                capacity: 2,
                ..Default::default()
            },
            &["capacity"],
        )
        .await?;
    assert_eq!(raised.capacity, 2);
    let taken = bench.assigned(&oldest_waiting).await?;
    assert_eq!(taken.rep_id, solo);
    assert_eq!(
        taken.create_time,
        Some(to_timestamp(bench.clock.now())),
        "taken at once, not at the next tick"
    );
    assert!(taken.queued_time.is_some());
    assert!(bench.open_assignment(&newest_waiting).await?.is_none());
    let queue = bench.queue(&team_id).await?;
    assert_eq!(queue.total_count, 1);
    assert_eq!(queue.leads[0].lead_id, newest_waiting);
    assert_eq!(queue.leads[0].position, 1);
    assert_eq!(bench.rep_by_id(&solo).await?.open_assignments, 2);
    Ok(())
}

async fn account_owners_are_set_read_and_cleared(bench: Bench) -> anyhow::Result<()> {
    let owner = bench.create_rep(rep("owner")).await?;
    let successor = bench.create_rep(rep("successor")).await?;
    refused(bench.account_owner("acme").await, Code::NotFound);
    let set = bench.set_account_owner("acme", &owner).await?;
    assert_eq!(set.account_id, "acme");
    assert_eq!(set.rep_id, owner);
    assert_eq!(set.update_time, Some(to_timestamp(bench.clock.now())));
    assert_eq!(bench.account_owner("acme").await?, set);
    bench.clock.advance(chrono::Duration::minutes(1));
    let handed_on = bench.set_account_owner("acme", &successor).await?;
    assert_eq!(bench.account_owner("acme").await?, handed_on);
    assert_eq!(handed_on.rep_id, successor);
    let cleared = bench.set_account_owner("acme", "").await?;
    assert!(cleared.rep_id.is_empty());
    refused(bench.account_owner("acme").await, Code::NotFound);
    refused(
        bench
            .set_account_owner("globex", &Uuid::new_v4().to_string())
            .await,
        Code::NotFound,
    );
    refused(bench.account_owner("globex").await, Code::NotFound);
    assert_eq!(
        violated_fields(bench.set_account_owner("", &owner).await),
        ["account_id"]
    );
    assert_eq!(
        violated_fields(bench.account_owner("").await),
        ["account_id"]
    );
    Ok(())
}

async fn an_account_owner_gets_the_accounts_leads_until_at_capacity(
    bench: Bench,
) -> anyhow::Result<()> {
    let colleague = bench.create_rep(rep("colleague")).await?;
    let owner = bench
        .create_rep(Rep {
            capacity: 1,
            ..rep("owner")
        })
        .await?;
    bench
        .default_team(Team {
            account_ownership_first: true,
            ..team(
                "Key accounts",
                &[colleague.clone(), owner.clone()],
                RoutingStrategy::RoundRobin,
            )
        })
        .await?;
    bench.set_account_owner("acme", &owner).await?;

    let first = bench.sales_ready_of_account("acme").await?;
    let to_owner = bench.assigned(&first).await?;
    let shown = bench.assignment(&to_owner.assignment_id).await?;
    assert_eq!(shown.rep_id, owner);
    assert_eq!(shown.account_id, "acme");
    assert_eq!(shown.method, AssignmentMethod::AccountOwner as i32);
    assert_eq!(shown.strategy, RoutingStrategy::Unspecified as i32);
    let explained = bench.explain(&to_owner.assignment_id).await?;
    assert_eq!(explained.method, AssignmentMethod::AccountOwner as i32);
    assert_eq!(explained.account_owner_rep_id, owner);
    assert_eq!(explained.chosen_rep_id, owner);

    // The owner holds its capacity: the team's strategy decides.
    let second = bench.sales_ready_of_account("acme").await?;
    let to_team = bench.assigned(&second).await?;
    assert_eq!(to_team.rep_id, colleague);
    assert_eq!(to_team.method, AssignmentMethod::Strategy as i32);
    let explained = bench.explain(&to_team.assignment_id).await?;
    assert_eq!(explained.method, AssignmentMethod::Strategy as i32);
    assert_eq!(explained.account_owner_rep_id, owner);
    assert!(explained.skipped_reps.iter().any(
        |skipped| skipped.rep_id == owner && skipped.reasons == [SkipReason::AtCapacity as i32]
    ));
    Ok(())
}

async fn a_lead_is_reassigned_by_hand_to_a_named_rep(bench: Bench) -> anyhow::Result<()> {
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
    let small = bench
        .create_rep(Rep {
            capacity: 1,
            ..rep("small")
        })
        .await?;
    bench
        .default_team(team(
            "Berlin",
            std::slice::from_ref(&berlin),
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    // 09:00 in Berlin, 03:00 in New York.
    let lead_id = bench.sales_ready(LeadProfile::default()).await?;
    let before = bench.assigned(&lead_id).await?;
    assert_eq!(before.rep_id, berlin);

    let reassigned = bench.reassign_to_rep(&lead_id, &new_york).await?;
    let assignment = reassigned.assignment.expect("the new assignment");
    assert_eq!(assignment.rep_id, new_york, "working hours do not stop it");
    assert_eq!(assignment.state, AssignmentState::Pending as i32);
    assert_eq!(assignment.method, AssignmentMethod::Manual as i32);
    assert_eq!(assignment.assigned_by, "manager@example.com");
    assert_eq!(assignment.note, "knows the customer");
    assert_eq!(assignment.rule_set_version, 0);
    assert_eq!(assignment.previous_assignment_id, before.assignment_id);
    let previous = reassigned
        .previous_assignment
        .expect("the replaced assignment");
    assert_eq!(previous.assignment_id, before.assignment_id);
    assert_eq!(previous.state, AssignmentState::Reassigned as i32);
    assert_eq!(
        bench.assignment(&before.assignment_id).await?.state,
        AssignmentState::Reassigned as i32
    );
    assert_eq!(bench.assigned(&lead_id).await?, assignment);
    assert_eq!(bench.rep_by_id(&berlin).await?.open_assignments, 0);
    assert_eq!(bench.rep_by_id(&new_york).await?.open_assignments, 1);
    let explained = bench.explain(&assignment.assignment_id).await?;
    assert_eq!(explained.method, AssignmentMethod::Manual as i32);
    assert_eq!(explained.chosen_rep_id, new_york);
    assert_eq!(
        event_kinds(&bench.events().await?, &lead_id),
        ["LeadAssigned", "LeadAssigned"]
    );

    // Capacity does stop it, and the lead stays where it was.
    let fills = bench.sales_ready(LeadProfile::default()).await?;
    bench.reassign_to_rep(&fills, &small).await?;
    let waiting = bench.sales_ready(LeadProfile::default()).await?;
    let kept = bench.assigned(&waiting).await?;
    refused(
        bench.reassign_to_rep(&waiting, &small).await,
        Code::FailedPrecondition,
    );
    assert_eq!(bench.assigned(&waiting).await?, kept, "nothing changed");
    assert_eq!(bench.rep_by_id(&small).await?.open_assignments, 1);

    refused(
        bench
            .reassign_to_rep(&Uuid::now_v7().to_string(), &new_york)
            .await,
        Code::NotFound,
    );
    let fields = violated_fields(
        bench
            .api
            .reassign_lead(Request::new(ReassignLeadRequest {
                lead_id: lead_id.clone(),
                product: PRODUCT.to_owned(),
                target: None,
                idempotency_key: key(),
                ..Default::default()
            }))
            .await,
    );
    assert_eq!(fields, ["target"]);
    Ok(())
}

async fn a_won_deal_walks_the_lead_from_accepted_to_customer(bench: Bench) -> anyhow::Result<()> {
    let seller = bench.create_rep(rep("seller")).await?;
    bench
        .default_team(team(
            "Closers",
            std::slice::from_ref(&seller),
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    let lead_id = bench.sales_ready(LeadProfile::default()).await?;
    let assignment_id = bench.assigned(&lead_id).await?.assignment_id;
    refused(bench.qualify(&lead_id).await, Code::FailedPrecondition);

    let accepted = bench.accept(&assignment_id).await?;
    assert_eq!(accepted.state, AssignmentState::Accepted as i32);
    assert_eq!(accepted.lifecycle_stage, common::LifecycleStage::Sal as i32);
    refused(bench.accept(&assignment_id).await, Code::FailedPrecondition);

    bench.clock.advance(chrono::Duration::days(1));
    let qualified = bench.qualify(&lead_id).await?;
    assert_eq!(
        qualified.lifecycle_stage,
        common::LifecycleStage::Sql as i32
    );
    assert_eq!(
        qualified
            .sales_outcome
            .as_ref()
            .expect("an outcome")
            .qualify_time,
        Some(to_timestamp(bench.clock.now()))
    );
    refused(bench.qualify(&lead_id).await, Code::FailedPrecondition);
    refused(
        bench
            .reject(&assignment_id, RejectionReason::NoBudget)
            .await,
        Code::FailedPrecondition,
    );
    refused(
        bench
            .close_deal(CloseDealRequest {
                lead_id: lead_id.clone(),
                outcome: DealOutcome::Won.into(),
                amount_minor: 1_000,
                currency: "EUR".to_owned(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );

    bench.clock.advance(chrono::Duration::days(1));
    let expected_close = utc(2026, 3, 31, 0, 0, 0);
    let opened = bench
        .open_opportunity(OpenOpportunityRequest {
            lead_id: lead_id.clone(),
            crm_opportunity_id: "opp-42".to_owned(),
            expected_amount_minor: 1_200_000,
            currency: "EUR".to_owned(),
            expected_close_time: Some(to_timestamp(expected_close)),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        opened.lifecycle_stage,
        common::LifecycleStage::Opportunity as i32
    );
    let outcome = opened.sales_outcome.expect("an outcome");
    assert_eq!(outcome.expected_amount_minor, 1_200_000);
    assert_eq!(outcome.currency, "EUR");
    assert_eq!(outcome.crm_opportunity_id, "opp-42");
    assert_eq!(
        outcome.opportunity_open_time,
        Some(to_timestamp(bench.clock.now()))
    );
    assert_eq!(
        outcome.expected_close_time,
        Some(to_timestamp(expected_close))
    );
    assert_eq!(
        outcome.qualify_time,
        qualified.sales_outcome.expect("outcome").qualify_time,
        "qualified once"
    );
    refused(
        bench
            .open_opportunity(OpenOpportunityRequest {
                lead_id: lead_id.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(bench.rep_by_id(&seller).await?.open_assignments, 1);

    let closed = bench
        .close_deal(CloseDealRequest {
            lead_id: lead_id.clone(),
            outcome: DealOutcome::Won.into(),
            amount_minor: 1_150_000,
            currency: "EUR".to_owned(),
            ..Default::default()
        })
        .await?;
    assert_eq!(closed.state, AssignmentState::Closed as i32);
    assert_eq!(
        closed.lifecycle_stage,
        common::LifecycleStage::Customer as i32
    );
    assert!(closed.end_time.is_some());
    let outcome = closed.sales_outcome.expect("an outcome");
    assert_eq!(outcome.deal_outcome, DealOutcome::Won as i32);
    assert_eq!(outcome.amount_minor, 1_150_000);
    assert_eq!(outcome.currency, "EUR");
    assert_eq!(bench.assignment(&assignment_id).await?.state, closed.state);
    assert_eq!(
        bench.rep_by_id(&seller).await?.open_assignments,
        0,
        "a closed deal no longer counts toward capacity"
    );
    refused(
        bench
            .close_deal(CloseDealRequest {
                lead_id: lead_id.clone(),
                outcome: DealOutcome::Lost.into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        event_kinds(&bench.events().await?, &lead_id),
        [
            "LeadAssigned",
            "AssignmentAccepted",
            "LeadQualified",
            "OpportunityOpened",
            "DealClosed"
        ]
    );
    Ok(())
}

async fn an_opportunity_qualifies_on_the_way_and_wrong_reports_are_refused(
    bench: Bench,
) -> anyhow::Result<()> {
    let seller = bench.create_rep(rep("seller")).await?;
    bench
        .default_team(team("Closers", &[seller], RoutingStrategy::RoundRobin))
        .await?;
    let lead_id = bench.sales_ready(LeadProfile::default()).await?;
    let assignment_id = bench.assigned(&lead_id).await?.assignment_id;
    bench.accept(&assignment_id).await?;

    let tomorrow = bench.clock.now() + chrono::Duration::days(1);
    assert_eq!(
        violated_fields(
            bench
                .api
                .qualify_lead(Request::new(QualifyLeadRequest {
                    lead_id: lead_id.clone(),
                    product: PRODUCT.to_owned(),
                    qualify_time: Some(to_timestamp(tomorrow)),
                    idempotency_key: key(),
                    ..Default::default()
                }))
                .await
        ),
        ["qualify_time"]
    );
    assert_eq!(
        violated_fields(
            bench
                .close_deal(CloseDealRequest {
                    lead_id: lead_id.clone(),
                    outcome: DealOutcome::Lost.into(),
                    amount_minor: 5_000,
                    lost_reason: "went with a competitor".to_owned(),
                    ..Default::default()
                })
                .await
        ),
        ["amount_minor"]
    );

    let opened = bench
        .open_opportunity(OpenOpportunityRequest {
            lead_id: lead_id.clone(),
            expected_amount_minor: 50_000,
            currency: "USD".to_owned(),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        opened.lifecycle_stage,
        common::LifecycleStage::Opportunity as i32
    );
    let outcome = opened.sales_outcome.expect("an outcome");
    assert_eq!(outcome.qualify_time, Some(to_timestamp(bench.clock.now())));
    assert_eq!(outcome.opportunity_open_time, outcome.qualify_time);
    assert_eq!(
        event_kinds(&bench.events().await?, &lead_id),
        [
            "LeadAssigned",
            "AssignmentAccepted",
            "LeadQualified",
            "OpportunityOpened"
        ]
    );
    let lost = bench
        .close_deal(CloseDealRequest {
            lead_id: lead_id.clone(),
            outcome: DealOutcome::Lost.into(),
            lost_reason: "went with a competitor".to_owned(),
            ..Default::default()
        })
        .await?;
    assert_eq!(lost.state, AssignmentState::Closed as i32);
    let outcome = lost.sales_outcome.expect("an outcome");
    assert_eq!(outcome.deal_outcome, DealOutcome::Lost as i32);
    assert_eq!(outcome.lost_reason, "went with a competitor");
    Ok(())
}

async fn a_retried_accept_answers_the_same_and_accepts_once(bench: Bench) -> anyhow::Result<()> {
    let seller = bench.create_rep(rep("seller")).await?;
    bench
        .default_team(team("Inside", &[seller], RoutingStrategy::RoundRobin))
        .await?;
    let lead_id = bench.sales_ready(LeadProfile::default()).await?;
    let assignment_id = bench.assigned(&lead_id).await?.assignment_id;
    let request = AcceptAssignmentRequest {
        assignment_id: assignment_id.clone(),
        actor: "seller@example.com".to_owned(),
        idempotency_key: key(),
    };
    let first = bench
        .api
        .accept_assignment(Request::new(request.clone()))
        .await?
        .into_inner();
    bench.clock.advance(chrono::Duration::minutes(3));
    let retry = bench
        .api
        .accept_assignment(Request::new(request.clone()))
        .await?
        .into_inner();
    assert_eq!(retry, first, "the retry gets the first answer");
    let accepted = bench
        .events()
        .await?
        .iter()
        .filter(|event| matches!(event.payload, Some(Payload::AssignmentAccepted(_))))
        .count();
    assert_eq!(accepted, 1);

    refused(
        bench
            .api
            .accept_assignment(Request::new(AcceptAssignmentRequest {
                actor: "someone-else@example.com".to_owned(),
                ..request.clone()
            }))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        violated_fields(
            bench
                .api
                .accept_assignment(Request::new(AcceptAssignmentRequest {
                    idempotency_key: String::new(),
                    ..request
                }))
                .await
        ),
        ["idempotency_key"]
    );
    assert_eq!(
        Some(bench.assignment(&assignment_id).await?),
        first.assignment,
        "the retries changed nothing"
    );
    Ok(())
}

async fn a_simulation_counts_leads_per_rule_team_and_rep_and_writes_nothing(
    bench: Bench,
) -> anyhow::Result<()> {
    let dach_first = bench.create_rep(rep("dach1")).await?;
    let dach_second = bench.create_rep(rep("dach2")).await?;
    let rest_rep = bench.create_rep(rep("rest")).await?;
    let dach = bench
        .create_team(team(
            "DACH",
            &[dach_first.clone(), dach_second.clone()],
            RoutingStrategy::RoundRobin,
        ))
        .await?
        .team_id;
    let rest = bench
        .create_team(team(
            "Rest of world",
            std::slice::from_ref(&rest_rep),
            RoutingStrategy::RoundRobin,
        ))
        .await?
        .team_id;
    let events_before = bench.events().await?.len();
    let countries = ["DE", "FR", "DE", "DE", "FR"];
    let leads = countries
        .iter()
        .enumerate()
        .map(|(index, country)| SimulationLead {
            lead_ref: format!("lead-{index}"),
            lead: Some(from_country(country)),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .collect();
    let simulated = bench
        .simulate(SimulateRoutingRequest {
            rule_set: Some(RuleSet {
                rules: vec![rule("DACH", &["DE"], &dach)],
                default_team_id: rest.clone(),
                ..Default::default()
            }),
            source: Some(Source::Leads(SimulationLeads { leads })),
            respect_availability: false,
            include_lead_results: true,
        })
        .await?;
    assert_eq!(simulated.lead_count, 5);
    assert_eq!(simulated.default_team_count, 2, "the French leads");
    assert_eq!(simulated.queued_count, 0);
    assert_eq!(
        simulated
            .rules
            .iter()
            .map(|r| (r.rule_ref.as_str(), r.lead_count))
            .collect::<Vec<_>>(),
        [("DACH", 3)]
    );
    let teams: BTreeMap<&str, (u32, u32)> = simulated
        .teams
        .iter()
        .map(|t| (t.team_id.as_str(), (t.lead_count, t.queued_count)))
        .collect();
    assert_eq!(
        teams,
        BTreeMap::from([(dach.as_str(), (3, 0)), (rest.as_str(), (2, 0))])
    );
    let reps: BTreeMap<&str, u32> = simulated
        .reps
        .iter()
        .map(|r| (r.rep_id.as_str(), r.lead_count))
        .collect();
    assert_eq!(
        reps,
        BTreeMap::from([
            (dach_first.as_str(), 2),
            (dach_second.as_str(), 1),
            (rest_rep.as_str(), 2)
        ]),
        "round robin within DACH"
    );
    assert!(
        simulated
            .reps
            .windows(2)
            .all(|pair| pair[0].lead_count >= pair[1].lead_count),
        "highest count first"
    );
    for distribution in &simulated.reps {
        let expected = f64::from(distribution.lead_count) / 5.0;
        assert!((distribution.share - expected).abs() < 1e-9);
    }
    assert_eq!(
        simulated
            .lead_results
            .iter()
            .map(|result| (result.lead_ref.as_str(), result.rep_id.as_str()))
            .collect::<Vec<_>>(),
        [
            ("lead-0", dach_first.as_str()),
            ("lead-1", rest_rep.as_str()),
            ("lead-2", dach_second.as_str()),
            ("lead-3", dach_first.as_str()),
            ("lead-4", rest_rep.as_str()),
        ]
    );
    assert!(
        simulated
            .lead_results
            .iter()
            .all(|result| result.method == AssignmentMethod::Strategy as i32)
    );

    // Nothing was assigned, queued, published or counted.
    assert!(bench.all_assignments().await?.is_empty());
    assert_eq!(bench.events().await?.len(), events_before);
    assert_eq!(bench.queue(&dach).await?.total_count, 0);
    refused(bench.rule_set(0).await, Code::NotFound);
    for rep_id in [&dach_first, &dach_second, &rest_rep] {
        assert_eq!(bench.rep_by_id(rep_id).await?.open_assignments, 0);
    }
    Ok(())
}

async fn a_simulation_respects_availability_and_replays_the_past_days(
    bench: Bench,
) -> anyhow::Result<()> {
    let (zone, hours) = office_hours("America/New_York");
    let new_york = bench
        .create_rep(Rep {
            time_zone: zone,
            working_hours: hours,
            ..rep("newyork")
        })
        .await?;
    let anytime = bench.create_rep(rep("anytime")).await?;
    let americas = bench
        .create_team(team(
            "Americas",
            std::slice::from_ref(&new_york),
            RoutingStrategy::RoundRobin,
        ))
        .await?
        .team_id;
    let proposal = RuleSet {
        rules: vec![rule("US", &["US"], &americas)],
        default_team_id: americas.clone(),
        ..Default::default()
    };
    // Two leads now (03:00 in New York), one at 15:00 UTC (10:00 in New York).
    let mut leads: Vec<SimulationLead> = (0..2)
        .map(|index| SimulationLead {
            lead_ref: format!("night-{index}"),
            lead: Some(from_country("US")),
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .collect();
    leads.push(SimulationLead {
        lead_ref: "day".to_owned(),
        lead: Some(from_country("US")),
        product: PRODUCT.to_owned(),
        arrival_time: Some(to_timestamp(utc(2026, 1, 5, 15, 0, 0))),
        ..Default::default()
    });
    let over_leads = |respect_availability: bool| SimulateRoutingRequest {
        rule_set: Some(proposal.clone()),
        source: Some(Source::Leads(SimulationLeads {
            leads: leads.clone(),
        })),
        respect_availability,
        include_lead_results: true,
    };
    let respected = bench.simulate(over_leads(true)).await?;
    assert_eq!(respected.queued_count, 2);
    assert_eq!(respected.teams.len(), 1);
    assert_eq!(
        (
            respected.teams[0].lead_count,
            respected.teams[0].queued_count
        ),
        (3, 2)
    );
    assert_eq!(
        respected
            .reps
            .iter()
            .map(|r| (r.rep_id.as_str(), r.lead_count))
            .collect::<Vec<_>>(),
        [(new_york.as_str(), 1)]
    );
    let night = &respected.lead_results[0];
    assert!(night.rep_id.is_empty());
    assert_eq!(night.method, AssignmentMethod::Unspecified as i32);
    assert_eq!(night.skipped_reps.len(), 1);
    assert_eq!(
        night.skipped_reps[0].reasons,
        [SkipReason::OutsideWorkingHours as i32]
    );
    let ignored = bench.simulate(over_leads(false)).await?;
    assert_eq!(ignored.queued_count, 0);
    assert_eq!(ignored.reps[0].lead_count, 3);

    // Wrong sources are named.
    let with_source = |source: Option<Source>| SimulateRoutingRequest {
        rule_set: Some(proposal.clone()),
        source,
        ..Default::default()
    };
    for days in [0, 366] {
        assert_eq!(
            violated_fields(
                bench
                    .simulate(with_source(Some(Source::LastDays(days))))
                    .await
            ),
            ["last_days"],
            "{days} days"
        );
    }
    assert_eq!(
        violated_fields(
            bench
                .simulate(with_source(Some(Source::Leads(SimulationLeads::default()))))
                .await
        ),
        ["leads.leads"]
    );
    refused(
        bench.simulate(with_source(None)).await,
        Code::InvalidArgument,
    );

    // The past week's hand-overs, at their own arrival times.
    bench
        .default_team(team(
            "Anytime",
            std::slice::from_ref(&anytime),
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    let too_old = bench.sales_ready(from_country("US")).await?;
    bench.clock.set(utc(2026, 1, 13, 14, 30, 0));
    let recent_us = bench.sales_ready(from_country("US")).await?;
    bench.clock.advance(chrono::Duration::hours(1));
    let recent_fr = bench.sales_ready(from_country("FR")).await?;
    bench.clock.advance(chrono::Duration::hours(1));
    let assignments_before = bench.all_assignments().await?;
    let events_before = bench.events().await?.len();
    let replayed = bench
        .simulate(SimulateRoutingRequest {
            rule_set: Some(RuleSet {
                rules: vec![rule("US", &["US"], &americas)],
                default_team_id: americas.clone(),
                ..Default::default()
            }),
            source: Some(Source::LastDays(7)),
            respect_availability: true,
            include_lead_results: true,
        })
        .await?;
    assert_eq!(replayed.lead_count, 2);
    assert_eq!(
        replayed
            .lead_results
            .iter()
            .map(|result| result.lead_ref.as_str())
            .collect::<Vec<_>>(),
        [recent_us.as_str(), recent_fr.as_str()],
        "not the lead of {too_old}, eight days ago"
    );
    assert_eq!(replayed.rules[0].lead_count, 1);
    assert_eq!(replayed.default_team_count, 1);
    // 14:30 and 15:30 UTC on a Tuesday: 09:30 and 10:30 in New York.
    assert_eq!(replayed.queued_count, 0);
    assert_eq!(replayed.reps[0].rep_id, new_york);
    assert_eq!(bench.all_assignments().await?, assignments_before);
    assert_eq!(bench.events().await?.len(), events_before);
    Ok(())
}

async fn metrics_count_what_routing_did(bench: Bench) -> anyhow::Result<()> {
    let first = bench
        .create_rep(Rep {
            capacity: 10,
            ..rep("first")
        })
        .await?;
    let second = bench
        .create_rep(Rep {
            capacity: 10,
            ..rep("second")
        })
        .await?;
    let away = bench
        .create_rep(Rep {
            out_of_office: vec![TimeRange {
                start_time: Some(to_timestamp(utc(2026, 1, 1, 0, 0, 0))),
                end_time: None,
            }],
            ..rep("away")
        })
        .await?;
    let inside = bench
        .create_team(team(
            "Inside",
            &[first.clone(), second.clone()],
            RoutingStrategy::RoundRobin,
        ))
        .await?
        .team_id;
    let remote = bench
        .create_team(team(
            "Remote",
            std::slice::from_ref(&away),
            RoutingStrategy::RoundRobin,
        ))
        .await?
        .team_id;
    bench
        .publish(RuleSet {
            rules: vec![rule("New Zealand", &["NZ"], &remote)],
            default_team_id: inside.clone(),
            ..Default::default()
        })
        .await?;
    let start = bench.clock.now();
    let accepted_by_first = bench.sales_ready(LeadProfile::default()).await?;
    let accepted_by_second = bench.sales_ready(LeadProfile::default()).await?;
    let rejected = bench.sales_ready(LeadProfile::default()).await?;
    let waiting = bench.sales_ready(from_country("NZ")).await?;
    assert!(bench.open_assignment(&waiting).await?.is_none());

    bench.clock.advance(chrono::Duration::minutes(5));
    for lead_id in [&accepted_by_first, &accepted_by_second] {
        let assignment = bench.assigned(lead_id).await?;
        bench.accept(&assignment.assignment_id).await?;
    }
    let to_reject = bench.assigned(&rejected).await?;
    assert_eq!(to_reject.rep_id, first);
    bench
        .reject(&to_reject.assignment_id, RejectionReason::NoBudget)
        .await?;
    let breached = bench.sales_ready(LeadProfile::default()).await?;
    assert_eq!(bench.assigned(&breached).await?.rep_id, second);
    bench.clock.advance(chrono::Duration::minutes(31));
    assert_eq!(bench.routing.tick().await?.breached, 1);
    assert_eq!(bench.assigned(&breached).await?.rep_id, first);
    bench.clock.advance(chrono::Duration::minutes(4));

    let metrics = bench
        .metrics(GetRoutingMetricsRequest {
            time_range: Some(TimeRange {
                start_time: Some(to_timestamp(start - chrono::Duration::hours(1))),
                end_time: None,
            }),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        metrics.assignment_count, 5,
        "four leads and one reassignment"
    );
    assert_eq!(metrics.accepted_count, 2);
    assert_eq!(
        metrics
            .rejections
            .iter()
            .map(|r| (r.reason, r.count))
            .collect::<Vec<_>>(),
        [(RejectionReason::NoBudget as i32, 1)]
    );
    assert_eq!(metrics.sla_breach_count, 1);
    assert_eq!(metrics.escalation_count, 0);
    assert_eq!(metrics.queued_lead_count, 1);
    let speed = metrics.speed_to_lead.expect("speed to lead");
    let to_accept = speed.assigned_to_accepted.expect("assigned to accepted");
    assert_eq!(to_accept.count, 2);
    assert_eq!(to_accept.p50, Some(minutes(5)));
    assert_eq!(to_accept.mean, Some(minutes(5)));
    assert_eq!(speed.ready_to_assigned.expect("ready to assigned").count, 4);
    assert_eq!(
        speed.ready_to_accepted.expect("ready to accepted").p50,
        Some(minutes(5))
    );
    let loads: BTreeMap<&str, (u32, u32, u32, u32, u32, u32)> = metrics
        .rep_loads
        .iter()
        .map(|load| {
            (
                load.rep_id.as_str(),
                (
                    load.open_assignments,
                    load.capacity,
                    load.assigned_count,
                    load.accepted_count,
                    load.rejected_count,
                    load.sla_breach_count,
                ),
            )
        })
        .collect();
    assert_eq!(
        loads,
        BTreeMap::from([
            (first.as_str(), (2, 10, 3, 1, 1, 0)),
            (second.as_str(), (1, 10, 2, 1, 0, 1)),
            (away.as_str(), (0, 10_000, 0, 0, 0, 0)),
        ]),
        "(open, capacity, assigned, accepted, rejected, breached) per rep"
    );

    // One team only, and a range that ends before the acceptances.
    let of_inside = bench
        .metrics(GetRoutingMetricsRequest {
            time_range: Some(TimeRange {
                start_time: Some(to_timestamp(start)),
                end_time: None,
            }),
            team_id: inside.clone(),
            ..Default::default()
        })
        .await?;
    assert_eq!(of_inside.assignment_count, 5);
    assert_eq!(of_inside.queued_lead_count, 0);
    assert_eq!(of_inside.rep_loads.len(), 2);
    let early = bench
        .metrics(GetRoutingMetricsRequest {
            time_range: Some(TimeRange {
                start_time: Some(to_timestamp(start)),
                end_time: Some(to_timestamp(start + chrono::Duration::minutes(1))),
            }),
            ..Default::default()
        })
        .await?;
    assert_eq!((early.assignment_count, early.accepted_count), (3, 0));

    assert_eq!(
        violated_fields(
            bench
                .metrics(GetRoutingMetricsRequest {
                    time_range: Some(TimeRange {
                        start_time: None,
                        end_time: None,
                    }),
                    ..Default::default()
                })
                .await
        ),
        ["time_range.start_time"]
    );
    assert_eq!(
        violated_fields(
            bench
                .metrics(GetRoutingMetricsRequest {
                    time_range: Some(TimeRange {
                        start_time: Some(to_timestamp(start)),
                        end_time: Some(to_timestamp(start - chrono::Duration::minutes(1))),
                    }),
                    ..Default::default()
                })
                .await
        ),
        ["time_range.end_time"]
    );
    assert_eq!(
        violated_fields(bench.metrics(GetRoutingMetricsRequest::default()).await),
        ["time_range.start_time"]
    );
    Ok(())
}

async fn queued_leads_are_counted_on_the_team_and_paged_with_running_positions(
    bench: Bench,
) -> anyhow::Result<()> {
    let idle = bench
        .create_rep(Rep {
            active: false,
            ..rep("idle")
        })
        .await?;
    let team_id = bench
        .default_team(team("Waiting room", &[idle], RoutingStrategy::RoundRobin))
        .await?;
    let mut arrived = Vec::new();
    for _ in 0..5 {
        arrived.push(bench.sales_ready(LeadProfile::default()).await?);
        bench.clock.advance(chrono::Duration::seconds(1));
    }
    assert_eq!(bench.team_by_id(&team_id).await?.queued_leads, 5);

    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = bench
            .api
            .get_team_queue(Request::new(GetTeamQueueRequest {
                team_id: team_id.clone(),
                page_size: 2,
                page_token,
            }))
            .await?
            .into_inner();
        assert_eq!(page.total_count, 5);
        pages.push(
            page.leads
                .into_iter()
                .map(|lead| (lead.position, lead.lead_id))
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let at = |position: u32| (position, arrived[position as usize - 1].clone());
    assert_eq!(
        pages,
        [vec![at(1), at(2)], vec![at(3), at(4)], vec![at(5)]],
        "positions run on across pages, in arrival order"
    );
    refused(
        bench
            .api
            .get_team_queue(Request::new(GetTeamQueueRequest {
                team_id: Uuid::new_v4().to_string(),
                ..Default::default()
            }))
            .await,
        Code::NotFound,
    );
    Ok(())
}

/// Fails today: `queue_page` in services/routing/src/records_sql.rs finds the page after the
/// token's lead by that lead's `queued_time`, which assignment clears, so the next page
/// comes back empty (and without a token) while leads still wait.
async fn a_queue_page_token_outlives_the_assignment_of_its_lead(
    bench: Bench,
) -> anyhow::Result<()> {
    let busy = bench
        .create_rep(Rep {
            capacity: 1,
            ..rep("busy")
        })
        .await?;
    let team_id = bench
        .default_team(team(
            "Busy",
            std::slice::from_ref(&busy),
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    bench.sales_ready(LeadProfile::default()).await?;
    let mut waiting = Vec::new();
    for _ in 0..4 {
        bench.clock.advance(chrono::Duration::seconds(1));
        waiting.push(bench.sales_ready(LeadProfile::default()).await?);
    }
    let page = |page_token: String| GetTeamQueueRequest {
        team_id: team_id.clone(),
        page_size: 2,
        page_token,
    };
    let first_page = bench
        .api
        .get_team_queue(Request::new(page(String::new())))
        .await?
        .into_inner();
    assert_eq!(
        first_page
            .leads
            .iter()
            .map(|lead| lead.lead_id.as_str())
            .collect::<Vec<_>>(),
        [waiting[0].as_str(), waiting[1].as_str()]
    );
    // The rep takes the two leads of the first page before the second page is read.
    bench
        .update_rep(
            Rep {
                rep_id: busy.clone(),
                capacity: 3,
                ..Default::default()
            },
            &["capacity"],
        )
        .await?;
    assert_eq!(bench.queue(&team_id).await?.total_count, 2);
    let second_page = bench
        .api
        .get_team_queue(Request::new(page(first_page.next_page_token)))
        .await?
        .into_inner();
    assert_eq!(second_page.total_count, 2);
    assert_eq!(
        second_page
            .leads
            .iter()
            .map(|lead| (lead.position, lead.lead_id.as_str()))
            .collect::<Vec<_>>(),
        [(1, waiting[2].as_str()), (2, waiting[3].as_str())],
        "the leads that still wait, at their places now"
    );
    Ok(())
}

async fn a_lead_never_assigned_has_no_outcome_and_a_manual_team_choice_names_no_strategy(
    bench: Bench,
) -> anyhow::Result<()> {
    let full = bench
        .create_rep(Rep {
            capacity: 1,
            ..rep("full")
        })
        .await?;
    let team_id = bench
        .default_team(team(
            "Busy",
            std::slice::from_ref(&full),
            RoutingStrategy::RoundRobin,
        ))
        .await?;
    let first = bench.sales_ready(from_country("DE")).await?;
    let waiting = bench.sales_ready(from_country("DE")).await?;
    assert!(
        bench.open_assignment(&waiting).await?.is_none(),
        "the rep is full"
    );
    let qualify = bench
        .api
        .qualify_lead(Request::new(QualifyLeadRequest {
            lead_id: waiting.clone(),
            product: PRODUCT.to_owned(),
            idempotency_key: key(),
            ..Default::default()
        }))
        .await;
    refused(qualify, Code::NotFound);
    // A person sends the first lead to the team again: the team's strategy picks, but the
    // assignment is the person's, so it names no strategy.
    let spare = bench.create_rep(rep("spare")).await?;
    bench
        .api
        .update_team(Request::new(UpdateTeamRequest {
            team: Some(Team {
                team_id: team_id.clone(),
                member_rep_ids: vec![full.clone(), spare.clone()],
                ..Default::default()
            }),
            update_mask: mask(&["member_rep_ids"]),
            idempotency_key: key(),
        }))
        .await?;
    let moved = bench
        .api
        .reassign_lead(Request::new(ReassignLeadRequest {
            lead_id: first.clone(),
            product: PRODUCT.to_owned(),
            target: Some(Target::TeamId(team_id.clone())),
            actor: "lead.desk@example.com".to_owned(),
            idempotency_key: key(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .assignment
        .expect("assignment");
    assert_eq!(moved.method, AssignmentMethod::Manual as i32);
    assert_eq!(moved.strategy, RoutingStrategy::Unspecified as i32);
    assert_eq!(moved.assigned_by, "lead.desk@example.com");
    Ok(())
}

async fn a_lead_waiting_for_its_busy_team_lead_does_not_hold_up_the_queue(
    bench: Bench,
) -> anyhow::Result<()> {
    let first = bench.create_rep(rep("first")).await?;
    let team_lead = bench
        .create_rep(Rep {
            capacity: 1,
            ..rep("teamlead")
        })
        .await?;
    bench
        .default_team(Team {
            team_lead_rep_id: team_lead.clone(),
            escalate_after_breaches: 1,
            ..team(
                "Escalating",
                std::slice::from_ref(&first),
                RoutingStrategy::RoundRobin,
            )
        })
        .await?;
    // The team lead's one place is taken by hand.
    let taken = bench.sales_ready(from_country("DE")).await?;
    let held = bench
        .api
        .reassign_lead(Request::new(ReassignLeadRequest {
            lead_id: taken,
            product: PRODUCT.to_owned(),
            target: Some(Target::RepId(team_lead.clone())),
            idempotency_key: key(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .assignment
        .expect("assignment");
    bench
        .api
        .accept_assignment(Request::new(AcceptAssignmentRequest {
            assignment_id: held.assignment_id,
            idempotency_key: key(),
            ..Default::default()
        }))
        .await?;
    let ignored = bench.sales_ready(from_country("DE")).await?;
    bench.clock.advance(chrono::Duration::minutes(31));
    assert_eq!(bench.routing.tick().await?.breached, 1);
    assert!(
        bench.open_assignment(&ignored).await?.is_none(),
        "escalated to a full team lead: it waits"
    );
    let next = bench.sales_ready(from_country("DE")).await?;
    assert_eq!(
        bench
            .open_assignment(&next)
            .await?
            .expect("assigned")
            .rep_id,
        first,
        "the free member takes the lead queued behind the escalated one"
    );
    Ok(())
}

on_both_stores!(
    rule_sets_get_versions_and_only_the_latest_is_active,
    an_invalid_rule_set_names_each_wrong_field,
    teams_are_listed_by_name_and_updated_by_mask,
    update_rep_changes_only_the_masked_fields,
    deactivating_a_rep_moves_its_pending_leads_at_once,
    raising_capacity_lets_a_full_rep_take_the_oldest_waiting_lead,
    account_owners_are_set_read_and_cleared,
    an_account_owner_gets_the_accounts_leads_until_at_capacity,
    a_lead_is_reassigned_by_hand_to_a_named_rep,
    a_won_deal_walks_the_lead_from_accepted_to_customer,
    an_opportunity_qualifies_on_the_way_and_wrong_reports_are_refused,
    a_retried_accept_answers_the_same_and_accepts_once,
    a_simulation_counts_leads_per_rule_team_and_rep_and_writes_nothing,
    a_simulation_respects_availability_and_replays_the_past_days,
    metrics_count_what_routing_did,
    queued_leads_are_counted_on_the_team_and_paged_with_running_positions,
    a_queue_page_token_outlives_the_assignment_of_its_lead,
    a_lead_never_assigned_has_no_outcome_and_a_manual_team_choice_names_no_strategy,
    a_lead_waiting_for_its_busy_team_lead_does_not_hold_up_the_queue,
);
