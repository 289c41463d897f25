//! Routing's gRPC handlers: parse the request, do the work in one unit of work, answer.
//! Mutating calls keep their answer under the idempotency key, so a retry gets it back.

use chrono::{DateTime, Utc};
use leadflow_platform::{
    FieldViolations,
    time::{from_timestamp, to_timestamp},
    validate,
};
use leadflow_proto::{
    common::v1 as common,
    events::v1::{self as events, event_envelope::Payload},
    routing::v1::{self as pb, routing_service_server::RoutingService},
};
use leadflow_storage::{Begun, IdempotencyKey, Page, StorageError, idempotency};
use prost::Message;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    engine::{self, ManualNote, Placed, Target},
    error::RoutingError,
    metrics,
    records::{
        AccountOwnerRecord, AssignmentFilter, AssignmentRecord, HandOver, HandOverState,
        RoutingUnit, RuleSetRecord,
    },
    reps::{NewRep, Rep},
    rule_sets::CompiledRuleSet,
    service::Routing,
    simulation,
    teams::{self, TeamSpec},
};

/// The most items one list call returns.
const MAX_PAGE_SIZE: u32 = 500;
/// The page size when the caller gives none.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// The most rule set versions one list call returns.
const MAX_RULE_SET_PAGE: u32 = 100;
/// The rule set versions a list call returns when the caller gives no number.
const DEFAULT_RULE_SET_PAGE: u32 = 20;

/// The mutable fields of a rep, as update_mask paths.
const REP_FIELDS: [&str; 10] = [
    "email",
    "display_name",
    "time_zone",
    "working_hours",
    "out_of_office",
    "products",
    "languages",
    "capacity",
    "weight",
    "active",
];

/// The mutable fields of a team, as update_mask paths.
const TEAM_FIELDS: [&str; 8] = [
    "name",
    "member_rep_ids",
    "team_lead_rep_id",
    "strategy",
    "account_ownership_first",
    "sla",
    "sla_clock",
    "escalate_after_breaches",
];

/// The `leadflow.routing.v1.RoutingService` implementation.
#[derive(Debug, Clone)]
pub struct RoutingApi {
    routing: Routing,
}

type Opened<M> = Result<Box<dyn RoutingUnit>, M>;

impl RoutingApi {
    /// Handlers over routing's records and clock.
    pub fn new(routing: Routing) -> Self {
        Self { routing }
    }

    fn now(&self) -> DateTime<Utc> {
        self.routing.clock.now()
    }

    /// Opens the unit of work of a mutating call, or answers a retry with the stored answer.
    async fn begin<M: Message + Default>(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Opened<M>, RoutingError> {
        match self.routing.store.begin(key).await? {
            Begun::Fresh(unit) => Ok(Ok(unit)),
            Begun::Replay(response_id) => {
                let stored = self.routing.store.response(response_id).await?;
                Ok(Err(idempotency::stored_answer(response_id, stored)?))
            }
            Begun::KeyReused => Err(RoutingError::IdempotencyKeyReused),
        }
    }

    /// Publishes the events, stores the answer under the key and commits.
    async fn finish<M: Message>(
        &self,
        mut unit: Box<dyn RoutingUnit>,
        key: &IdempotencyKey,
        events: Vec<Payload>,
        answer: &M,
    ) -> Result<(), RoutingError> {
        engine::publish(&mut *unit, events, self.now()).await?;
        unit.save_response(key, Uuid::now_v7(), &answer.encode_to_vec())
            .await?;
        unit.commit().await?;
        Ok(())
    }

    /// Works the queues a freed rep belongs to; a failure only delays it to the next tick.
    async fn after_release(&self, rep_id: Uuid) {
        if let Err(error) = self.routing.work_queues_of_rep(rep_id).await {
            tracing::warn!(%error, %rep_id, "queues not worked after a release; the ticker will");
        }
    }
}

fn key_of<M: Message + Clone>(
    violations: &mut FieldViolations,
    value: &str,
    request: &M,
    clear: impl FnOnce(&mut M),
) -> IdempotencyKey {
    let key = validate::idempotency_key(violations, value);
    IdempotencyKey::for_request(key, request, clear)
}

async fn rep_pb(unit: &mut dyn RoutingUnit, rep: &Rep) -> Result<pb::Rep, StorageError> {
    let mut shown = pb::Rep::from(rep);
    shown.team_ids = unit
        .teams_of_rep(rep.rep_id)
        .await?
        .iter()
        .map(Uuid::to_string)
        .collect();
    Ok(shown)
}

async fn team_pb(
    unit: &mut dyn RoutingUnit,
    team: &crate::records::TeamRecord,
) -> Result<pb::Team, StorageError> {
    let queued = unit.queue_length(Some(team.team_id)).await?;
    Ok(teams::to_pb(team, queued))
}

fn rule_set_pb(record: &RuleSetRecord, latest: u32) -> pb::RuleSet {
    pb::RuleSet {
        version: record.version,
        active: record.version == latest,
        create_time: Some(to_timestamp(record.create_time)),
        ..record.definition.clone()
    }
}

/// The assignment as the contract shows it, with what the hand-over knows.
pub(crate) fn assignment_pb(assignment: &AssignmentRecord, hand_over: &HandOver) -> pb::Assignment {
    let outcome = &hand_over.outcome;
    let has_outcome = outcome.qualify_time.is_some()
        || outcome.opportunity_open_time.is_some()
        || outcome.close_time.is_some();
    pb::Assignment {
        assignment_id: assignment.assignment_id.to_string(),
        lead_id: assignment.lead_id.to_string(),
        product: assignment.product.clone(),
        account_id: hand_over.account_id.clone(),
        primary_contact_id: hand_over.primary_contact_id.clone(),
        rep_id: assignment.rep_id.to_string(),
        team_id: assignment.team_id.to_string(),
        state: assignment.state.into(),
        method: assignment.method.into(),
        strategy: assignment.strategy.into(),
        rule_id: assignment
            .rule_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        rule_set_version: assignment.rule_set_version,
        previous_assignment_id: assignment
            .previous_assignment_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        breach_count: assignment.breach_count,
        lead: Some(hand_over.profile.clone()),
        lead_class: hand_over.lead_class.into(),
        cell: Some(hand_over.cell),
        total_score: hand_over.total_score,
        language: hand_over.language.clone(),
        sales_ready_time: Some(to_timestamp(hand_over.sales_ready_time)),
        queued_time: hand_over.first_queued_time.map(to_timestamp),
        create_time: Some(to_timestamp(assignment.create_time)),
        sla_due_time: assignment.sla_due_time.map(to_timestamp),
        accept_time: assignment.accept_time.map(to_timestamp),
        end_time: assignment.end_time.map(to_timestamp),
        rejection_reason: assignment.rejection_reason.into(),
        note: assignment.note.clone(),
        assigned_by: assignment.assigned_by.clone(),
        decided_by: assignment.decided_by.clone(),
        lifecycle_stage: hand_over.stage.into(),
        sales_outcome: has_outcome.then(|| pb::SalesOutcome {
            qualify_time: outcome.qualify_time.map(to_timestamp),
            opportunity_open_time: outcome.opportunity_open_time.map(to_timestamp),
            crm_opportunity_id: outcome.crm_opportunity_id.clone(),
            expected_amount_minor: outcome.expected_amount_minor,
            expected_close_time: outcome.expected_close_time.map(to_timestamp),
            deal_outcome: outcome.deal_outcome.into(),
            amount_minor: outcome.amount_minor,
            currency: outcome.currency.clone(),
            close_time: outcome.close_time.map(to_timestamp),
            lost_reason: outcome.lost_reason.clone(),
        }),
    }
}

async fn assignment_with_hand_over(
    unit: &mut dyn RoutingUnit,
    assignment: &AssignmentRecord,
) -> Result<pb::Assignment, StorageError> {
    let hand_over = unit
        .hand_over(assignment.hand_over_id)
        .await?
        .ok_or_else(|| {
            StorageError::Corrupt(format!(
                "assignment {} without hand-over",
                assignment.assignment_id
            ))
        })?;
    Ok(assignment_pb(assignment, &hand_over))
}

/// The assignment with its hand-over, both locked.
async fn lock_assignment(
    unit: &mut dyn RoutingUnit,
    assignment_id: Uuid,
) -> Result<(HandOver, AssignmentRecord), RoutingError> {
    engine::lock_with_hand_over(unit, assignment_id)
        .await?
        .ok_or(RoutingError::AssignmentNotFound(assignment_id))
}

fn mask_paths(
    violations: &mut FieldViolations,
    mask: Option<&prost_types::FieldMask>,
    prefix: &str,
    allowed: &[&str],
) -> Vec<String> {
    let paths: Vec<String> = mask.map(|mask| mask.paths.clone()).unwrap_or_default();
    for (index, path) in paths.iter().enumerate() {
        let field = path.strip_prefix(prefix).unwrap_or(path);
        if !allowed.contains(&field) {
            violations.add(
                format!("update_mask.paths[{index}]"),
                format!("{path:?} is not a field that can be changed"),
            );
        }
    }
    paths
        .iter()
        .map(|path| path.strip_prefix(prefix).unwrap_or(path).to_owned())
        .collect()
}

fn merge_rep(stored: &pb::Rep, given: &pb::Rep, paths: &[String]) -> pb::Rep {
    if paths.is_empty() {
        return pb::Rep {
            rep_id: stored.rep_id.clone(),
            ..given.clone()
        };
    }
    let mut merged = stored.clone();
    for path in paths {
        match path.as_str() {
            "email" => merged.email = given.email.clone(),
            "display_name" => merged.display_name = given.display_name.clone(),
            "time_zone" => merged.time_zone = given.time_zone.clone(),
            "working_hours" => merged.working_hours = given.working_hours.clone(),
            "out_of_office" => merged.out_of_office = given.out_of_office.clone(),
            "products" => merged.products = given.products.clone(),
            "languages" => merged.languages = given.languages.clone(),
            "capacity" => merged.capacity = given.capacity,
            "weight" => merged.weight = given.weight,
            "active" => merged.active = given.active,
            _ => {}
        }
    }
    merged
}

fn merge_team(stored: &pb::Team, given: &pb::Team, paths: &[String]) -> pb::Team {
    if paths.is_empty() {
        return pb::Team {
            team_id: stored.team_id.clone(),
            ..given.clone()
        };
    }
    let mut merged = stored.clone();
    for path in paths {
        match path.as_str() {
            "name" => merged.name = given.name.clone(),
            "member_rep_ids" => merged.member_rep_ids = given.member_rep_ids.clone(),
            "team_lead_rep_id" => merged.team_lead_rep_id = given.team_lead_rep_id.clone(),
            "strategy" => merged.strategy = given.strategy,
            "account_ownership_first" => {
                merged.account_ownership_first = given.account_ownership_first;
            }
            "sla" => merged.sla = given.sla,
            "sla_clock" => merged.sla_clock = given.sla_clock,
            "escalate_after_breaches" => {
                merged.escalate_after_breaches = given.escalate_after_breaches;
            }
            _ => {}
        }
    }
    merged
}

/// Checks that every referenced rep exists.
async fn check_reps_exist(
    unit: &mut dyn RoutingUnit,
    rep_ids: &[Uuid],
) -> Result<(), RoutingError> {
    let found = unit.reps_by_ids(rep_ids).await?;
    for rep_id in rep_ids {
        if !found.iter().any(|rep| rep.rep_id == *rep_id) {
            return Err(RoutingError::RepNotFound(*rep_id));
        }
    }
    Ok(())
}

/// Checks that every team the rule set refers to exists.
async fn check_teams_exist(
    unit: &mut dyn RoutingUnit,
    rule_set: &CompiledRuleSet,
) -> Result<(), RoutingError> {
    for team_id in rule_set.referenced_teams() {
        if unit.team(team_id).await?.is_none() {
            return Err(RoutingError::TeamNotFound(team_id));
        }
    }
    Ok(())
}

/// A required id: "is required" when empty, else it must be a UUID.
fn required_id(violations: &mut FieldViolations, field: &str, value: &str) -> Option<Uuid> {
    if value.is_empty() {
        violations.add(field, "is required");
        None
    } else {
        validate::uuid(violations, field, value)
    }
}

/// The id of the resource an update names: the resource and its id are both required.
fn updated_id(
    violations: &mut FieldViolations,
    resource: &str,
    present: bool,
    id: &str,
) -> Option<Uuid> {
    if present {
        required_id(violations, &format!("{resource}.{resource}_id"), id)
    } else {
        violations.add(resource, "is required");
        None
    }
}

fn lead_and_product(
    violations: &mut FieldViolations,
    lead_id: &str,
    product: &str,
) -> (Option<Uuid>, String) {
    let lead_id = if lead_id.is_empty() {
        violations.add("lead_id", "is required");
        None
    } else {
        validate::uuid(violations, "lead_id", lead_id)
    };
    (
        lead_id,
        validate::identifier(violations, "product", product),
    )
}

fn reported_time(
    violations: &mut FieldViolations,
    field: &str,
    value: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match value {
        None => now,
        Some(timestamp) => match from_timestamp(timestamp) {
            Some(time) if time <= now => time,
            Some(_) => {
                violations.add(field, "must not lie in the future");
                now
            }
            None => {
                violations.add(field, "is not a valid time");
                now
            }
        },
    }
}

/// The lead's latest hand-over for the product, which must have an accepted assignment.
async fn accepted_hand_over(
    unit: &mut dyn RoutingUnit,
    lead_id: Uuid,
    product: &str,
) -> Result<(HandOver, AssignmentRecord), RoutingError> {
    let hand_over = unit
        .lock_latest_hand_over(lead_id, product)
        .await?
        .ok_or_else(|| {
            RoutingError::NotFound(format!("lead {lead_id} has no assignment for {product:?}"))
        })?;
    let assignments = unit
        .assignments_of_hand_over(hand_over.hand_over_id)
        .await?;
    if assignments.is_empty() {
        return Err(RoutingError::NotFound(format!(
            "lead {lead_id} has no assignment for {product:?}"
        )));
    }
    let accepted = match engine::open_assignment(assignments) {
        Some(assignment) if assignment.state == pb::AssignmentState::Accepted => assignment,
        _ => {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {lead_id} has no accepted assignment for {product:?}"
            )));
        }
    };
    let accepted = unit
        .lock_assignment(accepted.assignment_id)
        .await?
        .ok_or(RoutingError::AssignmentNotFound(accepted.assignment_id))?;
    Ok((hand_over, accepted))
}

fn qualified_event(hand_over: &HandOver, rep_id: Uuid) -> Payload {
    Payload::LeadQualified(events::LeadQualified {
        lead_id: hand_over.lead_id.to_string(),
        product: hand_over.product.clone(),
        rep_id: rep_id.to_string(),
    })
}

fn page_size(violations: &mut FieldViolations, value: i32) -> u32 {
    validate::page_size(
        violations,
        "page_size",
        value,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    )
}

/// The handlers, answering in routing's own errors; the `RoutingService` impl below turns
/// them into statuses in one place.
impl RoutingApi {
    async fn create_rep(
        &self,
        request: Request<pb::CreateRepRequest>,
    ) -> Result<Response<pb::CreateRepResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let rep = NewRep::parse(request.rep.as_ref())
            .map_err(|rep_violations| violations.extend(rep_violations))
            .ok();
        violations.into_result()?;
        let rep = rep.expect("no violations means the rep parsed");
        let mut unit = match self.begin::<pb::CreateRepResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let rep_id = Uuid::now_v7();
        match unit.insert_rep(rep_id, &rep, self.now()).await {
            Err(StorageError::UniqueViolation { .. }) => {
                return Err(RoutingError::RepEmailTaken);
            }
            result => result?,
        }
        let stored = unit
            .rep(rep_id)
            .await?
            .ok_or(RoutingError::RepNotFound(rep_id))?;
        let answer = pb::CreateRepResponse {
            rep: Some(rep_pb(&mut *unit, &stored).await?),
        };
        self.finish(unit, &key, Vec::new(), &answer).await?;
        tracing::info!(%rep_id, "rep created");
        Ok(Response::new(answer))
    }

    async fn get_rep(
        &self,
        request: Request<pb::GetRepRequest>,
    ) -> Result<Response<pb::GetRepResponse>, RoutingError> {
        let rep_id = validate::required_uuid("rep_id", &request.get_ref().rep_id)?;
        let mut unit = self.routing.store.read().await?;
        let rep = unit
            .rep(rep_id)
            .await?
            .ok_or(RoutingError::RepNotFound(rep_id))?;
        Ok(Response::new(pb::GetRepResponse {
            rep: Some(rep_pb(&mut *unit, &rep).await?),
        }))
    }

    async fn list_reps(
        &self,
        request: Request<pb::ListRepsRequest>,
    ) -> Result<Response<pb::ListRepsResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let team = if request.team_id.is_empty() {
            None
        } else {
            validate::uuid(&mut violations, "team_id", &request.team_id)
        };
        let limit = page_size(&mut violations, request.page_size);
        let after = validate::page_token(&mut violations, &request.page_token);
        violations.into_result()?;
        let mut unit = self.routing.store.read().await?;
        if let Some(team) = team
            && unit.team(team).await?.is_none()
        {
            return Err(RoutingError::TeamNotFound(team));
        }
        let rows = unit.reps_page(team, after, limit + 1).await?;
        let page = Page::from_overfetch(rows, limit, |rep| rep.rep_id);
        let mut reps = Vec::with_capacity(page.items.len());
        for rep in &page.items {
            reps.push(rep_pb(&mut *unit, rep).await?);
        }
        Ok(Response::new(pb::ListRepsResponse {
            reps,
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_rep(
        &self,
        request: Request<pb::UpdateRepRequest>,
    ) -> Result<Response<pb::UpdateRepResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let given = request.rep.clone().unwrap_or_default();
        let rep_id = updated_id(&mut violations, "rep", request.rep.is_some(), &given.rep_id);
        let paths = mask_paths(
            &mut violations,
            request.update_mask.as_ref(),
            "rep.",
            &REP_FIELDS,
        );
        violations.into_result()?;
        let rep_id = rep_id.expect("no violations means a rep id");
        let mut unit = match self.begin::<pb::UpdateRepResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let stored = unit
            .lock_rep(rep_id)
            .await?
            .ok_or(RoutingError::RepNotFound(rep_id))?;
        let merged = merge_rep(&pb::Rep::from(&stored), &given, &paths);
        let rep = NewRep::parse(Some(&merged))?;
        match unit.replace_rep(rep_id, &rep, self.now()).await {
            Err(StorageError::UniqueViolation { .. }) => {
                return Err(RoutingError::RepEmailTaken);
            }
            result => result?,
        }
        let updated = unit
            .rep(rep_id)
            .await?
            .ok_or(RoutingError::RepNotFound(rep_id))?;
        let answer = pb::UpdateRepResponse {
            rep: Some(rep_pb(&mut *unit, &updated).await?),
        };
        self.finish(unit, &key, Vec::new(), &answer).await?;
        if stored.rep.active && !updated.rep.active {
            // A deactivated rep's pending leads go to the next rep at once.
            if let Err(error) = self.routing.move_pending_of_inactive_reps().await {
                tracing::warn!(%error, "pending leads of a deactivated rep not moved yet");
            }
        }
        self.after_release(rep_id).await;
        Ok(Response::new(answer))
    }

    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let spec = TeamSpec::parse(request.team.as_ref())
            .map_err(|team_violations| violations.extend(team_violations))
            .ok();
        violations.into_result()?;
        let spec = spec.expect("no violations means the team parsed");
        let mut unit = match self.begin::<pb::CreateTeamResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        check_reps_exist(&mut *unit, &spec.referenced_reps()).await?;
        let team = spec.into_record(Uuid::now_v7(), self.now());
        match unit.insert_team(&team).await {
            Err(StorageError::UniqueViolation { .. }) => {
                return Err(RoutingError::TeamNameTaken);
            }
            result => result?,
        }
        let answer = pb::CreateTeamResponse {
            team: Some(teams::to_pb(&team, 0)),
        };
        self.finish(unit, &key, Vec::new(), &answer).await?;
        tracing::info!(team_id = %team.team_id, "team created");
        Ok(Response::new(answer))
    }

    async fn get_team(
        &self,
        request: Request<pb::GetTeamRequest>,
    ) -> Result<Response<pb::GetTeamResponse>, RoutingError> {
        let team_id = validate::required_uuid("team_id", &request.get_ref().team_id)?;
        let mut unit = self.routing.store.read().await?;
        let team = unit
            .team(team_id)
            .await?
            .ok_or(RoutingError::TeamNotFound(team_id))?;
        Ok(Response::new(pb::GetTeamResponse {
            team: Some(team_pb(&mut *unit, &team).await?),
        }))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let limit = page_size(&mut violations, request.page_size);
        let after = validate::page_token(&mut violations, &request.page_token);
        violations.into_result()?;
        let mut unit = self.routing.store.read().await?;
        let rows = unit.teams_page(after, limit + 1).await?;
        let page = Page::from_overfetch(rows, limit, |team| team.team_id);
        let mut teams = Vec::with_capacity(page.items.len());
        for team in &page.items {
            teams.push(team_pb(&mut *unit, team).await?);
        }
        Ok(Response::new(pb::ListTeamsResponse {
            teams,
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_team(
        &self,
        request: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::UpdateTeamResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let given = request.team.clone().unwrap_or_default();
        let team_id = updated_id(
            &mut violations,
            "team",
            request.team.is_some(),
            &given.team_id,
        );
        let paths = mask_paths(
            &mut violations,
            request.update_mask.as_ref(),
            "team.",
            &TEAM_FIELDS,
        );
        violations.into_result()?;
        let team_id = team_id.expect("no violations means a team id");
        let mut unit = match self.begin::<pb::UpdateTeamResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let stored = unit
            .lock_team(team_id)
            .await?
            .ok_or(RoutingError::TeamNotFound(team_id))?;
        let merged = merge_team(&teams::to_pb(&stored, 0), &given, &paths);
        let spec = TeamSpec::parse(Some(&merged))?;
        check_reps_exist(&mut *unit, &spec.referenced_reps()).await?;
        let mut team = spec.into_record(team_id, stored.create_time);
        team.update_time = self.now();
        team.last_chosen_rep_id = stored.last_chosen_rep_id;
        for member in &mut team.members {
            if let Some(kept) = stored
                .members
                .iter()
                .find(|old| old.rep_id == member.rep_id)
            {
                member.current_weight = kept.current_weight;
            }
        }
        match unit.replace_team(&team).await {
            Err(StorageError::UniqueViolation { .. }) => {
                return Err(RoutingError::TeamNameTaken);
            }
            result => result?,
        }
        let answer = pb::UpdateTeamResponse {
            team: Some(team_pb(&mut *unit, &team).await?),
        };
        self.finish(unit, &key, Vec::new(), &answer).await?;
        if let Err(error) = self.routing.work_queue(team_id).await {
            tracing::warn!(%error, %team_id, "queue not worked after a team change; the ticker will");
        }
        Ok(Response::new(answer))
    }

    async fn publish_rule_set(
        &self,
        request: Request<pb::PublishRuleSetRequest>,
    ) -> Result<Response<pb::PublishRuleSetResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        // Ids are the server's: a proposal's ids are ignored, not checked.
        let mut proposal = request.rule_set.clone();
        if let Some(proposal) = proposal.as_mut() {
            proposal.version = 0;
            for rule in &mut proposal.rules {
                rule.rule_id.clear();
            }
        }
        let compiled = CompiledRuleSet::parse("rule_set", proposal.as_ref())
            .map_err(|rule_violations| violations.extend(rule_violations))
            .ok();
        violations.into_result()?;
        let compiled = compiled.expect("no violations means the rule set parsed");
        let mut unit = match self.begin::<pb::PublishRuleSetResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        check_teams_exist(&mut *unit, &compiled).await?;
        let latest = unit
            .latest_rule_set()
            .await?
            .map_or(0, |latest| latest.version);
        if request.base_version != latest {
            return Err(RoutingError::FailedPrecondition(format!(
                "base_version {} is not the latest published version {latest}",
                request.base_version
            )));
        }
        let mut definition = proposal.unwrap_or_default();
        for rule in &mut definition.rules {
            rule.rule_id = Uuid::now_v7().to_string();
        }
        definition.active = false;
        definition.create_time = None;
        let record = RuleSetRecord {
            version: latest + 1,
            definition,
            create_time: self.now(),
        };
        match unit.insert_rule_set(&record).await {
            Err(StorageError::UniqueViolation { .. }) => {
                return Err(RoutingError::FailedPrecondition(format!(
                    "base_version {latest} is no longer the latest published version"
                )));
            }
            result => result?,
        }
        let answer = pb::PublishRuleSetResponse {
            rule_set: Some(rule_set_pb(&record, record.version)),
        };
        self.finish(unit, &key, Vec::new(), &answer).await?;
        tracing::info!(version = record.version, "routing rule set published");
        Ok(Response::new(answer))
    }

    async fn get_rule_set(
        &self,
        request: Request<pb::GetRuleSetRequest>,
    ) -> Result<Response<pb::GetRuleSetResponse>, RoutingError> {
        let version = request.get_ref().version;
        let mut unit = self.routing.store.read().await?;
        let latest = unit
            .latest_rule_set()
            .await?
            .ok_or_else(|| RoutingError::NotFound("no rule set was published yet".to_owned()))?;
        let record = if version == 0 || version == latest.version {
            latest.clone()
        } else {
            unit.rule_set(version).await?.ok_or_else(|| {
                RoutingError::NotFound(format!("rule set version {version} not found"))
            })?
        };
        Ok(Response::new(pb::GetRuleSetResponse {
            rule_set: Some(rule_set_pb(&record, latest.version)),
        }))
    }

    async fn list_rule_sets(
        &self,
        request: Request<pb::ListRuleSetsRequest>,
    ) -> Result<Response<pb::ListRuleSetsResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let limit = validate::page_size(
            &mut violations,
            "page_size",
            request.page_size,
            DEFAULT_RULE_SET_PAGE,
            MAX_RULE_SET_PAGE,
        );
        let before = if request.page_token.is_empty() {
            None
        } else {
            match request.page_token.parse::<u32>() {
                Ok(version) => Some(version),
                Err(_) => {
                    violations.add("page_token", "is not a token this call returned");
                    None
                }
            }
        };
        violations.into_result()?;
        let mut unit = self.routing.store.read().await?;
        let latest = unit
            .latest_rule_set()
            .await?
            .map_or(0, |latest| latest.version);
        let mut rows = unit.rule_sets_page(before, limit + 1).await?;
        let next_page_token = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|row| row.version.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRuleSetsResponse {
            rule_sets: rows.iter().map(|row| rule_set_pb(row, latest)).collect(),
            next_page_token,
        }))
    }

    async fn get_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> Result<Response<pb::GetAssignmentResponse>, RoutingError> {
        let assignment_id =
            validate::required_uuid("assignment_id", &request.get_ref().assignment_id)?;
        let mut unit = self.routing.store.read().await?;
        let assignment = unit
            .assignment(assignment_id)
            .await?
            .ok_or(RoutingError::AssignmentNotFound(assignment_id))?;
        Ok(Response::new(pb::GetAssignmentResponse {
            assignment: Some(assignment_with_hand_over(&mut *unit, &assignment).await?),
        }))
    }

    async fn list_assignments(
        &self,
        request: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let optional_id = |violations: &mut FieldViolations, field: &str, value: &str| {
            if value.is_empty() {
                None
            } else {
                validate::uuid(violations, field, value)
            }
        };
        let mut filter = AssignmentFilter {
            rep_id: optional_id(&mut violations, "rep_id", &request.rep_id),
            lead_id: optional_id(&mut violations, "lead_id", &request.lead_id),
            team_id: optional_id(&mut violations, "team_id", &request.team_id),
            product: (!request.product.is_empty()).then(|| request.product.clone()),
            states: Vec::new(),
        };
        for (index, state) in request.states.iter().enumerate() {
            match pb::AssignmentState::try_from(*state) {
                Ok(pb::AssignmentState::Unspecified) | Err(_) => {
                    violations.add(format!("states[{index}]"), "must be an assignment state");
                }
                Ok(state) => filter.states.push(state),
            }
        }
        let limit = page_size(&mut violations, request.page_size);
        let after = validate::page_token(&mut violations, &request.page_token);
        violations.into_result()?;
        let mut unit = self.routing.store.read().await?;
        let rows = unit.assignments_page(&filter, after, limit + 1).await?;
        let page = Page::from_overfetch(rows, limit, |assignment| assignment.assignment_id);
        let mut assignments = Vec::with_capacity(page.items.len());
        for assignment in &page.items {
            assignments.push(assignment_with_hand_over(&mut *unit, assignment).await?);
        }
        Ok(Response::new(pb::ListAssignmentsResponse {
            assignments,
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn accept_assignment(
        &self,
        request: Request<pb::AcceptAssignmentRequest>,
    ) -> Result<Response<pb::AcceptAssignmentResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let assignment_id = required_id(&mut violations, "assignment_id", &request.assignment_id);
        let actor = validate::optional_text(&mut violations, "actor", &request.actor, 200);
        violations.into_result()?;
        let assignment_id = assignment_id.expect("no violations means an id");
        let mut unit = match self.begin::<pb::AcceptAssignmentResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let now = self.now();
        let (mut hand_over, mut assignment) = lock_assignment(&mut *unit, assignment_id).await?;
        if assignment.state != pb::AssignmentState::Pending {
            return Err(RoutingError::FailedPrecondition(format!(
                "assignment {assignment_id} is {}, not pending",
                assignment.state.as_str_name()
            )));
        }
        assignment.state = pb::AssignmentState::Accepted;
        assignment.accept_time = Some(now);
        assignment.decided_by = actor;
        unit.update_assignment(&assignment).await?;
        hand_over.state = HandOverState::Accepted;
        hand_over.accept_time = Some(now);
        hand_over.stage = common::LifecycleStage::Sal;
        unit.update_hand_over(&hand_over).await?;
        let events = vec![Payload::AssignmentAccepted(events::AssignmentAccepted {
            assignment_id: assignment_id.to_string(),
            lead_id: hand_over.lead_id.to_string(),
            product: hand_over.product.clone(),
            rep_id: assignment.rep_id.to_string(),
        })];
        let answer = pb::AcceptAssignmentResponse {
            assignment: Some(assignment_pb(&assignment, &hand_over)),
        };
        self.finish(unit, &key, events, &answer).await?;
        tracing::info!(%assignment_id, "assignment accepted");
        Ok(Response::new(answer))
    }

    async fn reject_assignment(
        &self,
        request: Request<pb::RejectAssignmentRequest>,
    ) -> Result<Response<pb::RejectAssignmentResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let assignment_id = required_id(&mut violations, "assignment_id", &request.assignment_id);
        let reason = match pb::RejectionReason::try_from(request.reason) {
            Ok(pb::RejectionReason::Unspecified) | Err(_) => {
                violations.add("reason", "must be a rejection reason");
                pb::RejectionReason::Unspecified
            }
            Ok(reason) => reason,
        };
        let note = validate::optional_text(&mut violations, "note", &request.note, 2_000);
        let actor = validate::optional_text(&mut violations, "actor", &request.actor, 200);
        violations.into_result()?;
        let assignment_id = assignment_id.expect("no violations means an id");
        let mut unit = match self.begin::<pb::RejectAssignmentResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let now = self.now();
        let (mut hand_over, mut assignment) = lock_assignment(&mut *unit, assignment_id).await?;
        if !matches!(
            assignment.state,
            pb::AssignmentState::Pending | pb::AssignmentState::Accepted
        ) {
            return Err(RoutingError::FailedPrecondition(format!(
                "assignment {assignment_id} is {}, neither pending nor accepted",
                assignment.state.as_str_name()
            )));
        }
        if hand_over.outcome.qualify_time.is_some() {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {} is already qualified; report the deal's outcome instead",
                hand_over.lead_id
            )));
        }
        assignment.rejection_reason = reason;
        assignment.note = note.clone();
        assignment.decided_by = actor;
        engine::end_assignment(
            &mut *unit,
            &mut assignment,
            pb::AssignmentState::Rejected,
            now,
        )
        .await?;
        let recycle = matches!(
            reason,
            pb::RejectionReason::NotReadyYet
                | pb::RejectionReason::NoBudget
                | pb::RejectionReason::WrongContact
        );
        hand_over.state = HandOverState::Ended;
        hand_over.end_time = Some(now);
        hand_over.stage = if recycle {
            common::LifecycleStage::Recycled
        } else {
            common::LifecycleStage::Disqualified
        };
        unit.update_hand_over(&hand_over).await?;
        let event_reason = events::RejectionReason::try_from(reason as i32).unwrap_or_default();
        let mut events = vec![Payload::AssignmentRejected(events::AssignmentRejected {
            assignment_id: assignment_id.to_string(),
            lead_id: hand_over.lead_id.to_string(),
            product: hand_over.product.clone(),
            rep_id: assignment.rep_id.to_string(),
            reason: event_reason.into(),
            note: note.clone(),
        })];
        if recycle {
            events.push(Payload::LeadRecycled(events::LeadRecycled {
                lead_id: hand_over.lead_id.to_string(),
                product: hand_over.product.clone(),
                reason: event_reason.into(),
                note,
                from_rep_id: assignment.rep_id.to_string(),
                assignment_id: assignment_id.to_string(),
            }));
        }
        let answer = pb::RejectAssignmentResponse {
            assignment: Some(assignment_pb(&assignment, &hand_over)),
            resulting_stage: hand_over.stage.into(),
        };
        self.finish(unit, &key, events, &answer).await?;
        tracing::info!(%assignment_id, reason = reason.as_str_name(), "assignment rejected");
        self.after_release(assignment.rep_id).await;
        Ok(Response::new(answer))
    }

    async fn reassign_lead(
        &self,
        request: Request<pb::ReassignLeadRequest>,
    ) -> Result<Response<pb::ReassignLeadResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let target = match &request.target {
            None => {
                violations.add("target", "is required: set rep_id or team_id");
                None
            }
            Some(pb::reassign_lead_request::Target::RepId(rep_id)) => {
                validate::uuid(&mut violations, "rep_id", rep_id).map(|id| (Some(id), None))
            }
            Some(pb::reassign_lead_request::Target::TeamId(team_id)) => {
                validate::uuid(&mut violations, "team_id", team_id).map(|id| (None, Some(id)))
            }
        };
        let note = validate::optional_text(&mut violations, "note", &request.note, 2_000);
        let actor = validate::optional_text(&mut violations, "actor", &request.actor, 200);
        violations.into_result()?;
        let (lead_id, (target_rep, target_team)) = (
            lead_id.expect("no violations means a lead id"),
            target.expect("no violations means a target"),
        );
        let mut unit = match self.begin::<pb::ReassignLeadResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let now = self.now();
        let mut hand_over = unit
            .lock_latest_hand_over(lead_id, &product)
            .await?
            .ok_or_else(|| {
                RoutingError::NotFound(format!("lead {lead_id} was never routed for {product:?}"))
            })?;
        if hand_over.state == HandOverState::Ended {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {lead_id}'s hand-over for {product:?} has ended (rejected or closed)"
            )));
        }
        if hand_over.outcome.qualify_time.is_some() {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {lead_id} is already qualified"
            )));
        }
        if let Some(rep_id) = target_rep
            && unit.rep(rep_id).await?.is_none()
        {
            return Err(RoutingError::RepNotFound(rep_id));
        }
        let assignments = unit
            .assignments_of_hand_over(hand_over.hand_over_id)
            .await?;
        let previous = match engine::open_assignment(assignments) {
            Some(open) => unit.lock_assignment(open.assignment_id).await?,
            None => None,
        };
        if let (Some(previous), Some(rep_id)) = (&previous, target_rep)
            && previous.rep_id == rep_id
            && previous.state == pb::AssignmentState::Accepted
        {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {lead_id} is already accepted by rep {rep_id}"
            )));
        }
        let team_id = target_team
            .or(hand_over.team_id)
            .or(previous.as_ref().map(|previous| previous.team_id));
        let Some(team_id) = team_id else {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {lead_id} has no team yet; name a team"
            )));
        };
        let mut team = unit
            .lock_team(team_id)
            .await?
            .ok_or(RoutingError::TeamNotFound(team_id))?;
        let mut previous = previous;
        if let Some(previous) = previous.as_mut() {
            engine::end_assignment(&mut *unit, previous, pb::AssignmentState::Reassigned, now)
                .await?;
        }
        hand_over.team_id = Some(team_id);
        let mut events = Vec::new();
        let placement = match target_rep {
            Some(rep_id) => Target::ManualRep(rep_id),
            None => Target::ManualTeam,
        };
        let manual = ManualNote { actor, note };
        let placed = engine::place(
            &mut *unit,
            &mut hand_over,
            &mut team,
            placement,
            previous.as_ref(),
            Some(&manual),
            now,
            &mut events,
        )
        .await?;
        let Placed::Assigned(assignment) = placed else {
            return Err(RoutingError::FailedPrecondition(match target_rep {
                Some(rep_id) => format!("rep {rep_id} is inactive or at capacity"),
                None => format!("no rep of team {team_id} is available"),
            }));
        };
        let answer = pb::ReassignLeadResponse {
            assignment: Some(assignment_pb(&assignment, &hand_over)),
            previous_assignment: previous
                .as_ref()
                .map(|previous| assignment_pb(previous, &hand_over)),
        };
        self.finish(unit, &key, events, &answer).await?;
        if let Some(previous) = previous {
            self.after_release(previous.rep_id).await;
        }
        Ok(Response::new(answer))
    }

    async fn set_account_owner(
        &self,
        request: Request<pb::SetAccountOwnerRequest>,
    ) -> Result<Response<pb::SetAccountOwnerResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let account_id =
            validate::required_text(&mut violations, "account_id", &request.account_id, 200);
        let rep_id = if request.rep_id.is_empty() {
            None
        } else {
            validate::uuid(&mut violations, "rep_id", &request.rep_id)
        };
        violations.into_result()?;
        let mut unit = match self.begin::<pb::SetAccountOwnerResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        if let Some(rep_id) = rep_id {
            check_reps_exist(&mut *unit, &[rep_id]).await?;
        }
        let owner = AccountOwnerRecord {
            account_id,
            rep_id,
            update_time: self.now(),
        };
        unit.put_account_owner(&owner).await?;
        let answer = pb::SetAccountOwnerResponse {
            owner: Some(owner_pb(&owner)),
        };
        self.finish(unit, &key, Vec::new(), &answer).await?;
        Ok(Response::new(answer))
    }

    async fn get_account_owner(
        &self,
        request: Request<pb::GetAccountOwnerRequest>,
    ) -> Result<Response<pb::GetAccountOwnerResponse>, RoutingError> {
        let account_id = request.get_ref().account_id.trim().to_owned();
        if account_id.is_empty() {
            return Err(RoutingError::from(FieldViolations::single(
                "account_id",
                "is required",
            )));
        }
        let mut unit = self.routing.store.read().await?;
        let owner = unit
            .account_owner(&account_id)
            .await?
            .filter(|owner| owner.rep_id.is_some())
            .ok_or_else(|| {
                RoutingError::NotFound(format!("account {account_id:?} has no owner"))
            })?;
        Ok(Response::new(pb::GetAccountOwnerResponse {
            owner: Some(owner_pb(&owner)),
        }))
    }

    async fn get_team_queue(
        &self,
        request: Request<pb::GetTeamQueueRequest>,
    ) -> Result<Response<pb::GetTeamQueueResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let team_id = required_id(&mut violations, "team_id", &request.team_id);
        let limit = page_size(&mut violations, request.page_size);
        let after = queue_cursor(&mut violations, &request.page_token);
        violations.into_result()?;
        let team_id = team_id.expect("no violations means a team id");
        let mut unit = self.routing.store.read().await?;
        if unit.team(team_id).await?.is_none() {
            return Err(RoutingError::TeamNotFound(team_id));
        }
        let total_count = unit.queue_length(Some(team_id)).await?;
        // Positions count from the head of the queue as it is now, across pages.
        let skipped_before = match after {
            None => 0,
            Some(cursor) => unit.queued_up_to(team_id, cursor).await?,
        };
        let mut rows = unit.queue_page(team_id, after, limit + 1).await?;
        let next_page_token = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(queue_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::GetTeamQueueResponse {
            leads: rows
                .iter()
                .enumerate()
                .map(|(index, hand_over)| pb::QueuedLead {
                    position: skipped_before + index as u32 + 1,
                    lead_id: hand_over.lead_id.to_string(),
                    product: hand_over.product.clone(),
                    account_id: hand_over.account_id.clone(),
                    lead_class: hand_over.lead_class.into(),
                    cell: Some(hand_over.cell),
                    rule_id: hand_over
                        .rule_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    rule_set_version: hand_over.rule_set_version,
                    breach_count: hand_over.breach_count,
                    sales_ready_time: Some(to_timestamp(hand_over.sales_ready_time)),
                    enqueue_time: hand_over.queued_time.map(to_timestamp),
                })
                .collect(),
            next_page_token,
            total_count,
        }))
    }

    async fn explain_assignment(
        &self,
        request: Request<pb::ExplainAssignmentRequest>,
    ) -> Result<Response<pb::ExplainAssignmentResponse>, RoutingError> {
        let assignment_id =
            validate::required_uuid("assignment_id", &request.get_ref().assignment_id)?;
        let mut unit = self.routing.store.read().await?;
        let assignment = unit
            .assignment(assignment_id)
            .await?
            .ok_or(RoutingError::AssignmentNotFound(assignment_id))?;
        let mut explanation = assignment.explanation.clone();
        if let Some(rule_id) = assignment.rule_id
            && let Some(record) = unit.rule_set(assignment.rule_set_version).await?
        {
            explanation.rule_name = record
                .definition
                .rules
                .iter()
                .find(|rule| rule.rule_id == rule_id.to_string())
                .map(|rule| rule.name.clone())
                .unwrap_or_default();
        }
        Ok(Response::new(explanation))
    }

    async fn simulate_routing(
        &self,
        request: Request<pb::SimulateRoutingRequest>,
    ) -> Result<Response<pb::SimulateRoutingResponse>, RoutingError> {
        let request = request.into_inner();
        let mut unit = self.routing.store.read().await?;
        let answer = simulation::simulate(&mut *unit, &request, self.now()).await?;
        Ok(Response::new(answer))
    }

    async fn qualify_lead(
        &self,
        request: Request<pb::QualifyLeadRequest>,
    ) -> Result<Response<pb::QualifyLeadResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let now = self.now();
        let qualify_time = reported_time(
            &mut violations,
            "qualify_time",
            request.qualify_time.as_ref(),
            now,
        );
        validate::optional_text(&mut violations, "actor", &request.actor, 200);
        violations.into_result()?;
        let lead_id = lead_id.expect("no violations means a lead id");
        let mut unit = match self.begin::<pb::QualifyLeadResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let (mut hand_over, accepted) = accepted_hand_over(&mut *unit, lead_id, &product).await?;
        if hand_over.outcome.qualify_time.is_some() {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {lead_id} is already qualified for {product:?}"
            )));
        }
        hand_over.outcome.qualify_time = Some(qualify_time);
        hand_over.stage = common::LifecycleStage::Sql;
        unit.update_hand_over(&hand_over).await?;
        let events = vec![qualified_event(&hand_over, accepted.rep_id)];
        let answer = pb::QualifyLeadResponse {
            assignment: Some(assignment_pb(&accepted, &hand_over)),
        };
        self.finish(unit, &key, events, &answer).await?;
        Ok(Response::new(answer))
    }

    async fn open_opportunity(
        &self,
        request: Request<pb::OpenOpportunityRequest>,
    ) -> Result<Response<pb::OpenOpportunityResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let now = self.now();
        let open_time = reported_time(
            &mut violations,
            "open_time",
            request.open_time.as_ref(),
            now,
        );
        if request.expected_amount_minor < 0 {
            violations.add("expected_amount_minor", "must not be negative");
        }
        if request.expected_amount_minor > 0 || !request.currency.is_empty() {
            validate::currency(&mut violations, "currency", &request.currency);
        }
        let crm_opportunity_id = validate::optional_text(
            &mut violations,
            "crm_opportunity_id",
            &request.crm_opportunity_id,
            200,
        );
        validate::optional_text(&mut violations, "actor", &request.actor, 200);
        let expected_close_time = match request.expected_close_time.as_ref() {
            None => None,
            Some(timestamp) => {
                let time = from_timestamp(timestamp);
                if time.is_none() {
                    violations.add("expected_close_time", "is not a valid time");
                }
                time
            }
        };
        violations.into_result()?;
        let lead_id = lead_id.expect("no violations means a lead id");
        let mut unit = match self.begin::<pb::OpenOpportunityResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let (mut hand_over, accepted) = accepted_hand_over(&mut *unit, lead_id, &product).await?;
        if hand_over.outcome.opportunity_open_time.is_some() {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {lead_id} already has an opportunity for {product:?}"
            )));
        }
        let mut events = Vec::new();
        if hand_over.outcome.qualify_time.is_none() {
            hand_over.outcome.qualify_time = Some(open_time);
            events.push(qualified_event(&hand_over, accepted.rep_id));
        }
        hand_over.outcome.opportunity_open_time = Some(open_time);
        hand_over.outcome.crm_opportunity_id = crm_opportunity_id;
        hand_over.outcome.expected_amount_minor = request.expected_amount_minor;
        hand_over.outcome.expected_close_time = expected_close_time;
        hand_over.outcome.currency = request.currency.clone();
        hand_over.stage = common::LifecycleStage::Opportunity;
        unit.update_hand_over(&hand_over).await?;
        events.push(Payload::OpportunityOpened(events::OpportunityOpened {
            lead_id: lead_id.to_string(),
            product: product.clone(),
            rep_id: accepted.rep_id.to_string(),
            expected_amount_minor: request.expected_amount_minor,
            currency: request.currency.clone(),
            expected_close_at: expected_close_time.map(to_timestamp),
        }));
        let answer = pb::OpenOpportunityResponse {
            assignment: Some(assignment_pb(&accepted, &hand_over)),
        };
        self.finish(unit, &key, events, &answer).await?;
        Ok(Response::new(answer))
    }

    async fn close_deal(
        &self,
        request: Request<pb::CloseDealRequest>,
    ) -> Result<Response<pb::CloseDealResponse>, RoutingError> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear();
        });
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let now = self.now();
        let close_time = reported_time(
            &mut violations,
            "close_time",
            request.close_time.as_ref(),
            now,
        );
        let outcome = match pb::DealOutcome::try_from(request.outcome) {
            Ok(pb::DealOutcome::Unspecified) | Err(_) => {
                violations.add("outcome", "must be WON or LOST");
                pb::DealOutcome::Unspecified
            }
            Ok(outcome) => outcome,
        };
        if request.amount_minor < 0 {
            violations.add("amount_minor", "must not be negative");
        }
        if outcome == pb::DealOutcome::Lost && request.amount_minor != 0 {
            violations.add("amount_minor", "must be 0 for a lost deal");
        }
        if outcome == pb::DealOutcome::Won {
            validate::currency(&mut violations, "currency", &request.currency);
        }
        let lost_reason =
            validate::optional_text(&mut violations, "lost_reason", &request.lost_reason, 2_000);
        validate::optional_text(&mut violations, "actor", &request.actor, 200);
        violations.into_result()?;
        let lead_id = lead_id.expect("no violations means a lead id");
        let mut unit = match self.begin::<pb::CloseDealResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let latest = unit
            .lock_latest_hand_over(lead_id, &product)
            .await?
            .ok_or_else(|| {
                RoutingError::NotFound(format!("lead {lead_id} has no assignment for {product:?}"))
            })?;
        if latest.outcome.close_time.is_some() {
            return Err(RoutingError::FailedPrecondition(format!(
                "the deal on lead {lead_id} for {product:?} is already closed"
            )));
        }
        let (mut hand_over, mut accepted) =
            accepted_hand_over(&mut *unit, lead_id, &product).await?;
        if hand_over.outcome.qualify_time.is_none()
            || hand_over.outcome.opportunity_open_time.is_none()
        {
            return Err(RoutingError::FailedPrecondition(format!(
                "lead {lead_id} has no qualified opportunity for {product:?}"
            )));
        }
        let won = outcome == pb::DealOutcome::Won;
        engine::end_assignment(&mut *unit, &mut accepted, pb::AssignmentState::Closed, now).await?;
        hand_over.outcome.deal_outcome = outcome;
        hand_over.outcome.amount_minor = request.amount_minor;
        if won || !request.currency.is_empty() {
            hand_over.outcome.currency = request.currency.clone();
        }
        hand_over.outcome.close_time = Some(close_time);
        hand_over.outcome.lost_reason = lost_reason;
        hand_over.state = HandOverState::Ended;
        hand_over.end_time = Some(now);
        hand_over.stage = if won {
            common::LifecycleStage::Customer
        } else {
            common::LifecycleStage::Recycled
        };
        unit.update_hand_over(&hand_over).await?;
        let events = vec![Payload::DealClosed(events::DealClosed {
            lead_id: lead_id.to_string(),
            product: product.clone(),
            rep_id: accepted.rep_id.to_string(),
            won,
            amount_minor: request.amount_minor,
            currency: hand_over.outcome.currency.clone(),
            closed_at: Some(to_timestamp(close_time)),
        })];
        let answer = pb::CloseDealResponse {
            assignment: Some(assignment_pb(&accepted, &hand_over)),
        };
        self.finish(unit, &key, events, &answer).await?;
        self.after_release(accepted.rep_id).await;
        Ok(Response::new(answer))
    }

    async fn get_routing_metrics(
        &self,
        request: Request<pb::GetRoutingMetricsRequest>,
    ) -> Result<Response<pb::GetRoutingMetricsResponse>, RoutingError> {
        let request = request.into_inner();
        let mut unit = self.routing.store.read().await?;
        let answer = metrics::routing_metrics(&mut *unit, &request, self.now()).await?;
        Ok(Response::new(answer))
    }
}

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    #[tracing::instrument(skip_all)]
    async fn create_rep(
        &self,
        request: Request<pb::CreateRepRequest>,
    ) -> Result<Response<pb::CreateRepResponse>, Status> {
        Ok(RoutingApi::create_rep(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(rep_id = %request.get_ref().rep_id))]
    async fn get_rep(
        &self,
        request: Request<pb::GetRepRequest>,
    ) -> Result<Response<pb::GetRepResponse>, Status> {
        Ok(RoutingApi::get_rep(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(team_id = %request.get_ref().team_id))]
    async fn list_reps(
        &self,
        request: Request<pb::ListRepsRequest>,
    ) -> Result<Response<pb::ListRepsResponse>, Status> {
        Ok(RoutingApi::list_reps(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn update_rep(
        &self,
        request: Request<pb::UpdateRepRequest>,
    ) -> Result<Response<pb::UpdateRepResponse>, Status> {
        Ok(RoutingApi::update_rep(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, Status> {
        Ok(RoutingApi::create_team(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(team_id = %request.get_ref().team_id))]
    async fn get_team(
        &self,
        request: Request<pb::GetTeamRequest>,
    ) -> Result<Response<pb::GetTeamResponse>, Status> {
        Ok(RoutingApi::get_team(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        Ok(RoutingApi::list_teams(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn update_team(
        &self,
        request: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::UpdateTeamResponse>, Status> {
        Ok(RoutingApi::update_team(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn publish_rule_set(
        &self,
        request: Request<pb::PublishRuleSetRequest>,
    ) -> Result<Response<pb::PublishRuleSetResponse>, Status> {
        Ok(RoutingApi::publish_rule_set(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(version = request.get_ref().version))]
    async fn get_rule_set(
        &self,
        request: Request<pb::GetRuleSetRequest>,
    ) -> Result<Response<pb::GetRuleSetResponse>, Status> {
        Ok(RoutingApi::get_rule_set(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn list_rule_sets(
        &self,
        request: Request<pb::ListRuleSetsRequest>,
    ) -> Result<Response<pb::ListRuleSetsResponse>, Status> {
        Ok(RoutingApi::list_rule_sets(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(assignment_id = %request.get_ref().assignment_id))]
    async fn get_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> Result<Response<pb::GetAssignmentResponse>, Status> {
        Ok(RoutingApi::get_assignment(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn list_assignments(
        &self,
        request: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
        Ok(RoutingApi::list_assignments(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(assignment_id = %request.get_ref().assignment_id))]
    async fn accept_assignment(
        &self,
        request: Request<pb::AcceptAssignmentRequest>,
    ) -> Result<Response<pb::AcceptAssignmentResponse>, Status> {
        Ok(RoutingApi::accept_assignment(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(assignment_id = %request.get_ref().assignment_id))]
    async fn reject_assignment(
        &self,
        request: Request<pb::RejectAssignmentRequest>,
    ) -> Result<Response<pb::RejectAssignmentResponse>, Status> {
        Ok(RoutingApi::reject_assignment(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn reassign_lead(
        &self,
        request: Request<pb::ReassignLeadRequest>,
    ) -> Result<Response<pb::ReassignLeadResponse>, Status> {
        Ok(RoutingApi::reassign_lead(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(account_id = %request.get_ref().account_id))]
    async fn set_account_owner(
        &self,
        request: Request<pb::SetAccountOwnerRequest>,
    ) -> Result<Response<pb::SetAccountOwnerResponse>, Status> {
        Ok(RoutingApi::set_account_owner(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(account_id = %request.get_ref().account_id))]
    async fn get_account_owner(
        &self,
        request: Request<pb::GetAccountOwnerRequest>,
    ) -> Result<Response<pb::GetAccountOwnerResponse>, Status> {
        Ok(RoutingApi::get_account_owner(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(team_id = %request.get_ref().team_id))]
    async fn get_team_queue(
        &self,
        request: Request<pb::GetTeamQueueRequest>,
    ) -> Result<Response<pb::GetTeamQueueResponse>, Status> {
        Ok(RoutingApi::get_team_queue(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(assignment_id = %request.get_ref().assignment_id))]
    async fn explain_assignment(
        &self,
        request: Request<pb::ExplainAssignmentRequest>,
    ) -> Result<Response<pb::ExplainAssignmentResponse>, Status> {
        Ok(RoutingApi::explain_assignment(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn simulate_routing(
        &self,
        request: Request<pb::SimulateRoutingRequest>,
    ) -> Result<Response<pb::SimulateRoutingResponse>, Status> {
        Ok(RoutingApi::simulate_routing(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn qualify_lead(
        &self,
        request: Request<pb::QualifyLeadRequest>,
    ) -> Result<Response<pb::QualifyLeadResponse>, Status> {
        Ok(RoutingApi::qualify_lead(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn open_opportunity(
        &self,
        request: Request<pb::OpenOpportunityRequest>,
    ) -> Result<Response<pb::OpenOpportunityResponse>, Status> {
        Ok(RoutingApi::open_opportunity(self, request).await?)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn close_deal(
        &self,
        request: Request<pb::CloseDealRequest>,
    ) -> Result<Response<pb::CloseDealResponse>, Status> {
        Ok(RoutingApi::close_deal(self, request).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn get_routing_metrics(
        &self,
        request: Request<pb::GetRoutingMetricsRequest>,
    ) -> Result<Response<pb::GetRoutingMetricsResponse>, Status> {
        Ok(RoutingApi::get_routing_metrics(self, request).await?)
    }
}

/// A queue page token: the arrival time (microseconds) and id of the last lead shown, so
/// that the next page starts right after it even once it has been assigned.
fn queue_token(hand_over: &HandOver) -> String {
    let arrival = hand_over.queued_time.unwrap_or(hand_over.create_time);
    format!("{}_{}", arrival.timestamp_micros(), hand_over.hand_over_id)
}

fn queue_cursor(violations: &mut FieldViolations, token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    if token.is_empty() {
        return None;
    }
    let parsed = token.split_once('_').and_then(|(micros, id)| {
        Some((
            DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            Uuid::parse_str(id).ok()?,
        ))
    });
    if parsed.is_none() {
        violations.add("page_token", "is not a token this call returned");
    }
    parsed
}

fn owner_pb(owner: &AccountOwnerRecord) -> pb::AccountOwner {
    pb::AccountOwner {
        account_id: owner.account_id.clone(),
        rep_id: owner.rep_id.map(|id| id.to_string()).unwrap_or_default(),
        update_time: Some(to_timestamp(owner.update_time)),
    }
}
