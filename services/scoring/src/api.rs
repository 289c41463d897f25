//! Scoring's gRPC handlers: parse the request, read or change the records in one unit of
//! work, keep the hot state in step, answer. A mutating call stores its encoded answer under
//! its idempotency key, so a retry gets the same bytes back.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use leadflow_domain::{LifecycleStage, ProfileGrade};
use leadflow_platform::{
    FieldViolations,
    time::{from_timestamp, to_timestamp},
    validate,
};
use leadflow_proto::{
    common::v1 as common,
    events::v1::ScoreChangeCause,
    scoring::v1::{self as pb, scoring_service_server::ScoringService},
};
use leadflow_storage::{Begun, IdempotencyKey, Stored, idempotency};
use prost::Message;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    engine::{self, Cause},
    error::ScoringError,
    hot::{ScoreSnapshot, class_name, class_value, stage_name, stage_of, stage_value},
    models::NewScoringModel,
    records::{ClassChangeRow, FunnelRecords, LeadFacts, LeadProduct, LedgerRow, ScoringUnit},
    reports::{self, ForecastQuery, FunnelQuery},
    repository::ScoringModelRepository,
    rules::{ScoringRules, lead_class, profile_attribute, proto_class},
    service::{Scoring, compute_snapshot, publish, refresh_product},
};

/// The most models one list call returns.
const MAX_PAGE_SIZE: u32 = 200;
/// The page size when the caller gives none.
const DEFAULT_PAGE_SIZE: u32 = 50;

/// The most entries of a history page.
const MAX_HISTORY_PAGE: u32 = 200;
/// The most leads of a top-leads page.
const MAX_TOP_PAGE: u32 = 500;
/// The most engagement contributions an explanation returns.
const MAX_CONTRIBUTIONS: u32 = 100;
/// The engagement contributions an explanation returns when the caller gives no number.
const DEFAULT_CONTRIBUTIONS: u32 = 10;

/// The `leadflow.scoring.v1.ScoringService` implementation.
#[derive(Debug, Clone)]
pub struct ScoringApi {
    models: Arc<dyn ScoringModelRepository>,
    scoring: Scoring,
}

impl ScoringApi {
    /// Handlers over the model repository and scoring's records and hot state.
    pub fn new(models: Arc<dyn ScoringModelRepository>, scoring: Scoring) -> Self {
        Self { models, scoring }
    }

    /// Opens the unit of work of a mutating call, or answers a retry with the stored answer.
    async fn begin<M: Message + Default>(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Result<Box<dyn ScoringUnit>, M>, ScoringError> {
        match self.scoring.store.begin(key).await? {
            Begun::Fresh(unit) => Ok(Ok(unit)),
            Begun::Replay(response_id) => {
                let stored = self.scoring.store.response(response_id).await?;
                Ok(Err(idempotency::stored_answer(response_id, stored)?))
            }
            Begun::KeyReused => Err(ScoringError::IdempotencyKeyReused),
        }
    }

    /// Stores the answer under the key, commits, and puts the new snapshots in the hot state.
    async fn finish<M: Message>(
        &self,
        mut unit: Box<dyn ScoringUnit>,
        key: &IdempotencyKey,
        answer: &M,
        snapshots: &[ScoreSnapshot],
    ) -> Result<(), ScoringError> {
        unit.save_response(key, Uuid::now_v7(), &answer.encode_to_vec())
            .await?;
        unit.commit().await?;
        if let Err(error) = self.scoring.hot.put(snapshots).await {
            // The records are committed; the next read or rebuild recomputes the hot state.
            tracing::warn!(%error, "hot score state not updated");
        }
        Ok(())
    }
}

fn lead_and_product(
    violations: &mut FieldViolations,
    lead_id: &str,
    product: &str,
) -> (Option<Uuid>, String) {
    (
        validate::uuid(violations, "lead_id", lead_id),
        validate::identifier(violations, "product", product),
    )
}

fn as_of(
    violations: &mut FieldViolations,
    value: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let time = value.and_then(from_timestamp)?;
    if time > now {
        violations.add("as_of_time", "must not lie in the future");
    }
    Some(time)
}

fn page_offset(violations: &mut FieldViolations, token: &str) -> usize {
    if token.is_empty() {
        return 0;
    }
    token.parse().unwrap_or_else(|_| {
        violations.add("page_token", "is not a token this call returned");
        0
    })
}

/// The lead, locked, and its standing for the product (started when the lead is new to it).
async fn lead_for_change(
    unit: &mut dyn ScoringUnit,
    lead_id: Uuid,
    product: &str,
    cause: &Cause,
) -> Result<(LeadFacts, LeadProduct), ScoringError> {
    if unit.lead(lead_id).await?.is_none() {
        return Err(ScoringError::LeadNotFound(lead_id));
    }
    let lead = unit.lock_lead(lead_id, cause.now).await?;
    let standing = match unit.lead_product(lead_id, product).await? {
        Some(standing) => standing,
        None => {
            let standing = engine::new_standing(lead_id, product, cause.now);
            unit.put_lead_product(&standing).await?;
            let event = engine::start_lifecycle(unit, &standing, cause).await?;
            publish(unit, lead_id, vec![event], cause.now).await?;
            standing
        }
    };
    Ok((lead, standing))
}

fn class_change(row: &ClassChangeRow) -> pb::ClassChange {
    pb::ClassChange {
        change_id: row.change_id.to_string(),
        lead_id: row.lead_id.to_string(),
        product: row.product.clone(),
        from_class: class_value(&row.from_class),
        to_class: class_value(&row.to_class),
        origin: pb::ClassChangeOrigin::from_str_name(&row.origin).unwrap_or_default() as i32,
        actor: row.actor.clone(),
        reason: row.reason.clone(),
        event_id: row.event_id.map(|id| id.to_string()).unwrap_or_default(),
        change_time: Some(to_timestamp(row.change_time)),
    }
}

fn ledger_entry(row: &LedgerRow) -> pb::LedgerEntry {
    pb::LedgerEntry {
        entry_id: row.entry_id.to_string(),
        lead_id: row.lead_id.to_string(),
        product: row.product.clone(),
        contact_id: row.contact_id.map(|id| id.to_string()).unwrap_or_default(),
        event_id: row.event_id.map(|id| id.to_string()).unwrap_or_default(),
        activity_id: row.activity_id.map(|id| id.to_string()).unwrap_or_default(),
        model_id: row.model_id.to_string(),
        rule: row.rule.clone(),
        points: row.points,
        occur_time: Some(to_timestamp(row.occurred_at)),
        create_time: Some(to_timestamp(row.create_time)),
    }
}

fn stage_change(row: &crate::records::StageChangeRow) -> pb::StageChange {
    pb::StageChange {
        change_id: row.change_id.to_string(),
        lead_id: row.lead_id.to_string(),
        product: row.product.clone(),
        from_stage: stage_value(&row.from_stage),
        to_stage: stage_value(&row.to_stage),
        actor: row.actor.clone(),
        reason: row.reason.clone(),
        event_id: row.event_id.map(|id| id.to_string()).unwrap_or_default(),
        change_time: Some(to_timestamp(row.change_time)),
    }
}

fn domain_stage(value: i32) -> Option<LifecycleStage> {
    let stage = common::LifecycleStage::try_from(value).ok()?;
    (stage != common::LifecycleStage::Unspecified).then(|| stage_of(stage.as_str_name()))
}

/// Every heat-map cell, grade A first, with its count.
fn heat_map(scores: &[pb::LeadScore]) -> Vec<pb::HeatMapCount> {
    let mut cells = Vec::with_capacity(16);
    for grade in ProfileGrade::ALL {
        for level in 1..=4u32 {
            let grade = crate::rules::proto_grade(grade) as i32;
            let lead_count = scores
                .iter()
                .filter(|score| {
                    score
                        .cell
                        .is_some_and(|cell| cell.grade == grade && cell.engagement_level == level)
                })
                .count();
            cells.push(pb::HeatMapCount {
                cell: Some(common::HeatMapCell {
                    grade,
                    engagement_level: level,
                }),
                lead_count: u32::try_from(lead_count).unwrap_or(u32::MAX),
            });
        }
    }
    cells
}

#[tonic::async_trait]
impl ScoringService for ScoringApi {
    #[tracing::instrument(skip_all, fields(product = %request.get_ref().model.as_ref().map_or("", |m| m.product.as_str())))]
    async fn create_scoring_model(
        &self,
        request: Request<pb::CreateScoringModelRequest>,
    ) -> Result<Response<pb::CreateScoringModelResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        let model = NewScoringModel::parse(request.model.as_ref())
            .map_err(|model_violations| violations.extend(model_violations))
            .ok();
        violations.into_result().map_err(ScoringError::from)?;
        let model = model.expect("no violations means the model parsed");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        match self
            .models
            .create_model(model, key, self.scoring.now())
            .await
            .map_err(ScoringError::from)?
        {
            Stored::Done(record) => {
                tracing::info!(model_id = %record.model_id, version = record.version, "scoring model created");
                Ok(Response::new(pb::CreateScoringModelResponse {
                    model: Some((&record).into()),
                }))
            }
            Stored::KeyReused => Err(ScoringError::IdempotencyKeyReused.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn get_scoring_model(
        &self,
        request: Request<pb::GetScoringModelRequest>,
    ) -> Result<Response<pb::GetScoringModelResponse>, Status> {
        let model_id = validate::required_uuid("model_id", &request.get_ref().model_id)
            .map_err(ScoringError::from)?;
        let record = self
            .models
            .get_model(model_id)
            .await
            .map_err(ScoringError::from)?
            .ok_or(ScoringError::ModelNotFound(model_id))?;
        Ok(Response::new(pb::GetScoringModelResponse {
            model: Some((&record).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(product = %request.get_ref().product))]
    async fn list_scoring_models(
        &self,
        request: Request<pb::ListScoringModelsRequest>,
    ) -> Result<Response<pb::ListScoringModelsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let product = validate::identifier(&mut violations, "product", &request.product);
        let limit = validate::page_size(
            &mut violations,
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        );
        let after = validate::page_token(&mut violations, &request.page_token);
        violations.into_result().map_err(ScoringError::from)?;
        let page = self
            .models
            .list_models(&product, after, limit)
            .await
            .map_err(ScoringError::from)?;
        Ok(Response::new(pb::ListScoringModelsResponse {
            models: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn activate_scoring_model(
        &self,
        request: Request<pb::ActivateScoringModelRequest>,
    ) -> Result<Response<pb::ActivateScoringModelResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let model_id = validate::uuid(&mut violations, "model_id", &request.model_id);
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(ScoringError::from)?;
        let model_id = model_id.expect("no violations means a model id");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        let mut unit = match self.begin(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let mut record = unit
            .model(model_id)
            .await
            .map_err(ScoringError::from)?
            .ok_or(ScoringError::ModelNotFound(model_id))?;
        let product = record.model.product().to_owned();
        let previous = unit
            .active_model(&product)
            .await
            .map_err(ScoringError::from)?;
        let mut snapshots = Vec::new();
        let previous_model_id = match previous {
            Some(previous) if previous.model_id == model_id => String::new(),
            previous => {
                unit.activate_model(&product, model_id)
                    .await
                    .map_err(ScoringError::from)?;
                let cause = Cause::new(ScoreChangeCause::ModelActivated, self.scoring.now());
                for standing in unit
                    .lead_products(&product)
                    .await
                    .map_err(ScoringError::from)?
                {
                    let lead = unit
                        .lock_lead(standing.lead_id, cause.now)
                        .await
                        .map_err(ScoringError::from)?;
                    snapshots.extend(
                        refresh_product(unit.as_mut(), &lead, &product, &cause)
                            .await
                            .map_err(ScoringError::from)?,
                    );
                }
                tracing::info!(%model_id, product, rescored = snapshots.len(), "scoring model activated");
                previous
                    .map(|previous| previous.model_id.to_string())
                    .unwrap_or_default()
            }
        };
        record.active = true;
        let answer = pb::ActivateScoringModelResponse {
            model: Some((&record).into()),
            previous_model_id,
            rescored_lead_count: u32::try_from(snapshots.len()).unwrap_or(u32::MAX),
        };
        self.finish(unit, &key, &answer, &snapshots).await?;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(model_id = %request.get_ref().model_id))]
    async fn dry_run_scoring_model(
        &self,
        request: Request<pb::DryRunScoringModelRequest>,
    ) -> Result<Response<pb::DryRunScoringModelResponse>, Status> {
        let model_id = validate::required_uuid("model_id", &request.get_ref().model_id)
            .map_err(ScoringError::from)?;
        let mut unit = self
            .scoring
            .store
            .read()
            .await
            .map_err(ScoringError::from)?;
        let record = unit
            .model(model_id)
            .await
            .map_err(ScoringError::from)?
            .ok_or(ScoringError::ModelNotFound(model_id))?;
        let tried = ScoringRules::from_record(&record);
        let product = record.model.product().to_owned();
        let active = unit
            .active_model(&product)
            .await
            .map_err(ScoringError::from)?;
        let now = self.scoring.now();
        let cause = Cause::new(ScoreChangeCause::ModelActivated, now);
        let mut answer = pb::DryRunScoringModelResponse {
            model_id: model_id.to_string(),
            active_model_id: active
                .as_ref()
                .map(|active| active.model_id.to_string())
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut current_scores = Vec::new();
        let mut proposed_scores = Vec::new();
        for standing in unit
            .lead_products(&product)
            .await
            .map_err(ScoringError::from)?
        {
            let current = compute_snapshot(unit.as_mut(), &standing, now)
                .await
                .map_err(ScoringError::from)?;
            let Some(lead) = unit
                .lead(standing.lead_id)
                .await
                .map_err(ScoringError::from)?
            else {
                continue;
            };
            let inputs = engine::load_inputs(unit.as_mut(), lead, &product, tried.model_id, now)
                .await
                .map_err(ScoringError::from)?;
            let plan = engine::plan(&inputs, &tried, &cause);
            let proposed =
                engine::snapshot(&tried, &plan.standing, &plan.after, inputs.bant.as_ref())
                    .score_at(now);
            let current = current.map(|snapshot| snapshot.score_at(now));
            let is_mql = |stage: i32| stage == common::LifecycleStage::Mql as i32;
            let (was_mql, was_ready, old_grade, old_class) = current.as_ref().map_or(
                (
                    is_mql(stage_value(&standing.stage)),
                    false,
                    0,
                    class_value(&standing.lead_class),
                ),
                |score| {
                    (
                        is_mql(score.stage),
                        score.sales_ready,
                        score.grade,
                        score.lead_class,
                    )
                },
            );
            answer.evaluated_lead_count += 1;
            answer.become_mql_count += u32::from(!was_mql && is_mql(proposed.stage));
            answer.stop_being_mql_count += u32::from(was_mql && !is_mql(proposed.stage));
            answer.become_sales_ready_count += u32::from(!was_ready && proposed.sales_ready);
            answer.stop_being_sales_ready_count += u32::from(was_ready && !proposed.sales_ready);
            answer.grade_changed_count += u32::from(old_grade != proposed.grade);
            answer.class_changed_count += u32::from(old_class != proposed.lead_class);
            current_scores.extend(current);
            proposed_scores.push(proposed);
        }
        answer.current_heat_map = heat_map(&current_scores);
        answer.proposed_heat_map = heat_map(&proposed_scores);
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn get_score(
        &self,
        request: Request<pb::GetScoreRequest>,
    ) -> Result<Response<pb::GetScoreResponse>, Status> {
        let request = request.into_inner();
        let now = self.scoring.now();
        let mut violations = FieldViolations::new();
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let as_of = as_of(&mut violations, request.as_of_time.as_ref(), now);
        violations.into_result().map_err(ScoringError::from)?;
        let lead_id = lead_id.expect("no violations means a lead id");
        let score = match as_of {
            None => self
                .scoring
                .snapshot(lead_id, &product)
                .await
                .map_err(ScoringError::from)?
                .map(|snapshot| snapshot.score_at(now)),
            Some(as_of) => self
                .explain(lead_id, &product, as_of, 0)
                .await?
                .map(|explained| explained.score.unwrap_or_default()),
        };
        let score = score.ok_or_else(|| not_scored(lead_id, &product))?;
        Ok(Response::new(pb::GetScoreResponse { score: Some(score) }))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn explain_score(
        &self,
        request: Request<pb::ExplainScoreRequest>,
    ) -> Result<Response<pb::ExplainScoreResponse>, Status> {
        let request = request.into_inner();
        let now = self.scoring.now();
        let mut violations = FieldViolations::new();
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let as_of = as_of(&mut violations, request.as_of_time.as_ref(), now);
        if request.max_contributions < 0 {
            violations.add("max_contributions", "must not be negative");
        }
        violations.into_result().map_err(ScoringError::from)?;
        let lead_id = lead_id.expect("no violations means a lead id");
        let limit = match u32::try_from(request.max_contributions).unwrap_or(0) {
            0 => DEFAULT_CONTRIBUTIONS,
            limit => limit.min(MAX_CONTRIBUTIONS),
        };
        let explained = self
            .explain(lead_id, &product, as_of.unwrap_or(now), limit)
            .await?
            .ok_or_else(|| not_scored(lead_id, &product))?;
        Ok(Response::new(explained))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn rebuild_scores(
        &self,
        request: Request<pb::RebuildScoresRequest>,
    ) -> Result<Response<pb::RebuildScoresResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let lead_id = (!request.lead_id.is_empty())
            .then(|| validate::uuid(&mut violations, "lead_id", &request.lead_id))
            .flatten();
        let product = if request.product.is_empty() {
            String::new()
        } else {
            validate::identifier(&mut violations, "product", &request.product)
        };
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(ScoringError::from)?;
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        let mut unit = match self.begin(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        if let Some(lead_id) = lead_id
            && unit
                .lead(lead_id)
                .await
                .map_err(ScoringError::from)?
                .is_none()
        {
            return Err(ScoringError::LeadNotFound(lead_id).into());
        }
        let snapshots = self
            .scoring
            .compute_snapshots(unit.as_mut(), lead_id, &product)
            .await
            .map_err(ScoringError::from)?;
        let mut changed = 0;
        for snapshot in &snapshots {
            let cached = self
                .scoring
                .hot
                .get(snapshot.lead_id, &snapshot.product)
                .await
                .map_err(ScoringError::from)?;
            changed += u32::from(cached.as_ref() != Some(snapshot));
        }
        let answer = pb::RebuildScoresResponse {
            rebuilt_score_count: u32::try_from(snapshots.len()).unwrap_or(u32::MAX),
            changed_score_count: changed,
        };
        self.finish(unit, &key, &answer, &snapshots).await?;
        if lead_id.is_none() && product.is_empty() {
            self.scoring
                .hot
                .mark_built()
                .await
                .map_err(ScoringError::from)?;
        }
        tracing::info!(
            rebuilt = answer.rebuilt_score_count,
            changed,
            "scores rebuilt"
        );
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn classify_lead(
        &self,
        request: Request<pb::ClassifyLeadRequest>,
    ) -> Result<Response<pb::ClassifyLeadResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let class = lead_class(request.lead_class);
        if class.is_none() {
            violations.add("lead_class", "must be A, B1, B2, B3 or C");
        }
        let actor = validate::required_text(&mut violations, "actor", &request.actor, 200);
        let reason = validate::required_text(&mut violations, "reason", &request.reason, 2_000);
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(ScoringError::from)?;
        let (lead_id, class) = (
            lead_id.expect("no violations means a lead id"),
            class.expect("no violations means a class"),
        );
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        let mut unit = match self.begin(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let cause = Cause::new(ScoreChangeCause::Unspecified, self.scoring.now());
        let (lead, mut standing) =
            lead_for_change(unit.as_mut(), lead_id, &product, &cause).await?;
        let from = lead_class(class_value(&standing.lead_class));
        let row = ClassChangeRow {
            change_id: Uuid::now_v7(),
            lead_id,
            product: product.clone(),
            from_class: class_name(from).to_owned(),
            to_class: class_name(Some(class)).to_owned(),
            origin: pb::ClassChangeOrigin::Manual.as_str_name().to_owned(),
            actor: actor.clone(),
            reason: reason.clone(),
            event_id: None,
            change_time: cause.now,
        };
        unit.insert_class_change(&row)
            .await
            .map_err(ScoringError::from)?;
        if from != Some(class) {
            standing.class_since = Some(cause.now);
            publish(
                unit.as_mut(),
                lead_id,
                vec![
                    leadflow_proto::events::v1::event_envelope::Payload::ClassChanged(
                        leadflow_proto::events::v1::ClassChanged {
                            lead_id: lead_id.to_string(),
                            product: product.clone(),
                            previous_class: proto_class(from).into(),
                            new_class: proto_class(Some(class)).into(),
                            manual: true,
                            changed_by: actor.clone(),
                            reason: reason.clone(),
                        },
                    ),
                ],
                cause.now,
            )
            .await
            .map_err(ScoringError::from)?;
        }
        standing.lead_class = class_name(Some(class)).to_owned();
        standing.manual_since = Some(cause.now);
        standing.update_time = cause.now;
        unit.put_lead_product(&standing)
            .await
            .map_err(ScoringError::from)?;
        // A class A may hand the lead over.
        let snapshot = refresh_product(unit.as_mut(), &lead, &product, &cause)
            .await
            .map_err(ScoringError::from)?;
        tracing::info!(%lead_id, class = %class, "lead classified by hand");
        let answer = pb::ClassifyLeadResponse {
            change: Some(class_change(&row)),
            score: snapshot
                .as_ref()
                .map(|snapshot| snapshot.score_at(cause.now)),
        };
        let snapshots: Vec<ScoreSnapshot> = snapshot.into_iter().collect();
        self.finish(unit, &key, &answer, &snapshots).await?;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn get_class_history(
        &self,
        request: Request<pb::GetClassHistoryRequest>,
    ) -> Result<Response<pb::GetClassHistoryResponse>, Status> {
        let request = request.into_inner();
        let (lead_id, product, after, limit) = history_request(
            &request.lead_id,
            &request.product,
            request.page_size,
            &request.page_token,
        )?;
        let mut unit = self.read_known_lead(lead_id).await?;
        let rows = unit
            .class_changes(lead_id, &product, after, limit + 1)
            .await
            .map_err(ScoringError::from)?;
        let page = leadflow_storage::Page::from_overfetch(rows, limit, |row| row.change_id);
        Ok(Response::new(pb::GetClassHistoryResponse {
            changes: page.items.iter().map(class_change).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn transition_stage(
        &self,
        request: Request<pb::TransitionStageRequest>,
    ) -> Result<Response<pb::TransitionStageResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let to = domain_stage(request.to_stage);
        if to.is_none() {
            violations.add("to_stage", "must be a lifecycle stage");
        }
        let expected = domain_stage(request.expected_stage);
        let actor = validate::required_text(&mut violations, "actor", &request.actor, 200);
        let reason = if matches!(
            to,
            Some(LifecycleStage::Recycled | LifecycleStage::Disqualified)
        ) {
            validate::required_text(&mut violations, "reason", &request.reason, 2_000)
        } else {
            validate::optional_text(&mut violations, "reason", &request.reason, 2_000)
        };
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(ScoringError::from)?;
        let (lead_id, to) = (
            lead_id.expect("no violations means a lead id"),
            to.expect("no violations means a stage"),
        );
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        let mut unit = match self.begin(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let cause = Cause::new(ScoreChangeCause::Unspecified, self.scoring.now());
        let (lead, mut standing) =
            lead_for_change(unit.as_mut(), lead_id, &product, &cause).await?;
        let from = stage_of(&standing.stage);
        if expected.is_some_and(|expected| expected != from) {
            return Err(ScoringError::FailedPrecondition(format!(
                "the lead is {from}, not {}",
                expected.map(|stage| stage.name()).unwrap_or_default()
            ))
            .into());
        }
        if !from.can_move_to(to) {
            return Err(ScoringError::FailedPrecondition(format!(
                "a lead cannot move from {from} to {to}"
            ))
            .into());
        }
        let changes =
            engine::move_stage(unit.as_mut(), &mut standing, &[to], &actor, &reason, &cause)
                .await
                .map_err(ScoringError::from)?;
        unit.put_lead_product(&standing)
            .await
            .map_err(ScoringError::from)?;
        let change = changes.first().map(|(row, _)| stage_change(row));
        let payloads = changes.into_iter().map(|(_, event)| event).collect();
        publish(unit.as_mut(), lead_id, payloads, cause.now)
            .await
            .map_err(ScoringError::from)?;
        let snapshot = refresh_product(unit.as_mut(), &lead, &product, &cause)
            .await
            .map_err(ScoringError::from)?;
        tracing::info!(%lead_id, %from, %to, "stage changed by hand");
        let answer = pb::TransitionStageResponse {
            change,
            score: snapshot
                .as_ref()
                .map(|snapshot| snapshot.score_at(cause.now)),
        };
        let snapshots: Vec<ScoreSnapshot> = snapshot.into_iter().collect();
        self.finish(unit, &key, &answer, &snapshots).await?;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn get_stage_history(
        &self,
        request: Request<pb::GetStageHistoryRequest>,
    ) -> Result<Response<pb::GetStageHistoryResponse>, Status> {
        let request = request.into_inner();
        let (lead_id, product, after, limit) = history_request(
            &request.lead_id,
            &request.product,
            request.page_size,
            &request.page_token,
        )?;
        let mut unit = self.read_known_lead(lead_id).await?;
        let rows = unit
            .stage_changes(lead_id, &product, after, limit + 1)
            .await
            .map_err(ScoringError::from)?;
        let page = leadflow_storage::Page::from_overfetch(rows, limit, |row| row.change_id);
        Ok(Response::new(pb::GetStageHistoryResponse {
            changes: page.items.iter().map(stage_change).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn update_bant(
        &self,
        request: Request<pb::UpdateBantRequest>,
    ) -> Result<Response<pb::UpdateBantResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        let actor = validate::required_text(&mut violations, "actor", &request.actor, 200);
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        const CRITERIA: [&str; 4] = ["budget", "authority", "need", "time"];
        let paths: Vec<String> = request
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        for (index, path) in paths.iter().enumerate() {
            let (criterion, field) = path.split_once('.').unwrap_or((path.as_str(), ""));
            if !CRITERIA.contains(&criterion) || !["", "met", "note"].contains(&field) {
                violations.add(
                    format!("update_mask.paths[{index}]"),
                    "is not a BANT criterion or its met or note",
                );
            }
        }
        let given = request.bant.clone().unwrap_or_default();
        for (name, criterion) in
            CRITERIA
                .iter()
                .zip([&given.budget, &given.authority, &given.need, &given.time])
        {
            if criterion
                .as_ref()
                .is_some_and(|c| c.note.chars().count() > 2_000)
            {
                violations.add(
                    format!("bant.{name}.note"),
                    "must be at most 2000 characters",
                );
            }
        }
        violations.into_result().map_err(ScoringError::from)?;
        let lead_id = lead_id.expect("no violations means a lead id");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        let mut unit = match self.begin(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        let cause = Cause::new(ScoreChangeCause::Unspecified, self.scoring.now());
        let (lead, _) = lead_for_change(unit.as_mut(), lead_id, &product, &cause).await?;
        let mut bant = unit
            .bant(lead_id, &product)
            .await
            .map_err(ScoringError::from)?
            .unwrap_or_default();
        let replace_all = paths.is_empty();
        for (name, (slot, new)) in CRITERIA.iter().zip([
            (&mut bant.budget, &given.budget),
            (&mut bant.authority, &given.authority),
            (&mut bant.need, &given.need),
            (&mut bant.time, &given.time),
        ]) {
            let new = new.clone().unwrap_or_default();
            let current = slot.get_or_insert_with(Default::default);
            if replace_all || paths.iter().any(|path| path == name) {
                *current = new;
                continue;
            }
            if paths.iter().any(|path| *path == format!("{name}.met")) {
                current.met = new.met;
            }
            if paths.iter().any(|path| *path == format!("{name}.note")) {
                current.note = new.note;
            }
        }
        bant.lead_id = lead_id.to_string();
        bant.product = product.clone();
        bant.update_actor = actor;
        bant.update_time = Some(to_timestamp(cause.now));
        bant.complete = engine::bant_complete(Some(&bant));
        unit.put_bant(lead_id, &product, &bant, cause.now)
            .await
            .map_err(ScoringError::from)?;
        // A complete BANT, or a need found missing, is evidence for the class.
        let snapshot = refresh_product(unit.as_mut(), &lead, &product, &cause)
            .await
            .map_err(ScoringError::from)?;
        let answer = pb::UpdateBantResponse { bant: Some(bant) };
        let snapshots: Vec<ScoreSnapshot> = snapshot.into_iter().collect();
        self.finish(unit, &key, &answer, &snapshots).await?;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id, product = %request.get_ref().product))]
    async fn get_bant(
        &self,
        request: Request<pb::GetBantRequest>,
    ) -> Result<Response<pb::GetBantResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let (lead_id, product) =
            lead_and_product(&mut violations, &request.lead_id, &request.product);
        violations.into_result().map_err(ScoringError::from)?;
        let lead_id = lead_id.expect("no violations means a lead id");
        let mut unit = self.read_known_lead(lead_id).await?;
        let bant = match unit
            .bant(lead_id, &product)
            .await
            .map_err(ScoringError::from)?
        {
            Some(bant) => bant,
            None => pb::Bant {
                lead_id: lead_id.to_string(),
                product,
                budget: Some(pb::BantCriterion::default()),
                authority: Some(pb::BantCriterion::default()),
                need: Some(pb::BantCriterion::default()),
                time: Some(pb::BantCriterion::default()),
                ..Default::default()
            },
        };
        Ok(Response::new(pb::GetBantResponse { bant: Some(bant) }))
    }

    #[tracing::instrument(skip_all, fields(product = %request.get_ref().product))]
    async fn list_top_leads(
        &self,
        request: Request<pb::ListTopLeadsRequest>,
    ) -> Result<Response<pb::ListTopLeadsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let product = validate::identifier(&mut violations, "product", &request.product);
        if request.cell.is_some_and(|cell| cell.engagement_level > 4) {
            violations.add("cell.engagement_level", "must be 0 (any) or 1 to 4");
        }
        let limit = validate::page_size(
            &mut violations,
            "page_size",
            request.page_size,
            50,
            MAX_TOP_PAGE,
        );
        let offset = page_offset(&mut violations, &request.page_token);
        violations.into_result().map_err(ScoringError::from)?;
        let mut scores = self.product_scores(&product).await?;
        scores.retain(|score| {
            let cell = score.cell.unwrap_or_default();
            let in_cell = request.cell.is_none_or(|wanted| {
                (wanted.grade == 0 || wanted.grade == cell.grade)
                    && (wanted.engagement_level == 0
                        || wanted.engagement_level == cell.engagement_level)
            });
            in_cell
                && (request.lead_classes.is_empty()
                    || request.lead_classes.contains(&score.lead_class))
                && (request.stages.is_empty() || request.stages.contains(&score.stage))
                && (!request.stalled_only || score.stalled)
        });
        scores.sort_by(|a, b| {
            b.total_points
                .total_cmp(&a.total_points)
                .then_with(|| a.lead_id.cmp(&b.lead_id))
        });
        let end = offset.saturating_add(limit as usize);
        let next_page_token = if scores.len() > end {
            end.to_string()
        } else {
            String::new()
        };
        let scores = scores
            .into_iter()
            .skip(offset)
            .take(limit as usize)
            .collect();
        Ok(Response::new(pb::ListTopLeadsResponse {
            scores,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(product = %request.get_ref().product))]
    async fn get_heat_map(
        &self,
        request: Request<pb::GetHeatMapRequest>,
    ) -> Result<Response<pb::GetHeatMapResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let product = validate::identifier(&mut violations, "product", &request.product);
        violations.into_result().map_err(ScoringError::from)?;
        let now = self.scoring.now();
        let mut scores = self.product_scores(&product).await?;
        let closed = [
            common::LifecycleStage::Customer as i32,
            common::LifecycleStage::Disqualified as i32,
        ];
        scores.retain(|score| {
            if request.stages.is_empty() {
                !closed.contains(&score.stage)
            } else {
                request.stages.contains(&score.stage)
            }
        });
        Ok(Response::new(pb::GetHeatMapResponse {
            cells: heat_map(&scores),
            total_lead_count: u32::try_from(scores.len()).unwrap_or(u32::MAX),
            as_of_time: Some(to_timestamp(now)),
        }))
    }

    #[tracing::instrument(skip_all, fields(product = %request.get_ref().product))]
    async fn get_funnel_report(
        &self,
        request: Request<pb::GetFunnelReportRequest>,
    ) -> Result<Response<pb::GetFunnelReportResponse>, Status> {
        let query = FunnelQuery::parse(request.get_ref(), self.scoring.now())?;
        let mut unit = self
            .scoring
            .store
            .read()
            .await
            .map_err(ScoringError::from)?;
        let slice = unit
            .funnel_slice(&query.product, query.since(), query.segmented())
            .await
            .map_err(ScoringError::from)?;
        drop(unit);
        Ok(Response::new(reports::funnel_report(&slice, &query)))
    }

    #[tracing::instrument(skip_all, fields(product = %request.get_ref().product))]
    async fn get_forecast(
        &self,
        request: Request<pb::GetForecastRequest>,
    ) -> Result<Response<pb::GetForecastResponse>, Status> {
        let query = ForecastQuery::parse(request.get_ref(), self.scoring.now())?;
        let records = self.funnel_records(&query.product).await?;
        Ok(Response::new(reports::forecast(&records, &query)?))
    }

    #[tracing::instrument(skip_all, fields(product = %request.get_ref().product, campaign = %request.get_ref().campaign))]
    async fn record_marketing_cost(
        &self,
        request: Request<pb::RecordMarketingCostRequest>,
    ) -> Result<Response<pb::RecordMarketingCostResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        let cost = reports::parse_marketing_cost(&request, &mut violations, self.scoring.now());
        violations.into_result().map_err(ScoringError::from)?;
        let cost = cost.expect("no violations means a cost");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        let mut unit = match self.begin(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        unit.insert_marketing_cost(&cost)
            .await
            .map_err(ScoringError::from)?;
        let answer = pb::RecordMarketingCostResponse {
            cost: Some(reports::marketing_cost(&cost)),
        };
        self.finish(unit, &key, &answer, &[]).await?;
        tracing::info!(cost_id = %cost.cost_id, "marketing cost recorded");
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(product = %request.get_ref().product))]
    async fn list_marketing_costs(
        &self,
        request: Request<pb::ListMarketingCostsRequest>,
    ) -> Result<Response<pb::ListMarketingCostsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let product = validate::identifier(&mut violations, "product", &request.product);
        let campaign = request.campaign.trim();
        let limit = validate::page_size(
            &mut violations,
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_TOP_PAGE,
        );
        let after = validate::page_token(&mut violations, &request.page_token);
        violations.into_result().map_err(ScoringError::from)?;
        let mut unit = self
            .scoring
            .store
            .read()
            .await
            .map_err(ScoringError::from)?;
        // One more than the page tells whether another page follows.
        let mut costs = unit
            .marketing_costs(&product, campaign, after, limit + 1)
            .await
            .map_err(ScoringError::from)?;
        let next_page_token = if costs.len() > limit as usize {
            costs.truncate(limit as usize);
            costs
                .last()
                .map(|cost| cost.cost_id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListMarketingCostsResponse {
            costs: costs.iter().map(reports::marketing_cost).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(contact_id = %request.get_ref().contact_id))]
    async fn export_contact_data(
        &self,
        request: Request<pb::ExportContactDataRequest>,
    ) -> Result<Response<pb::ExportContactDataResponse>, Status> {
        let contact_id = validate::required_uuid("contact_id", &request.get_ref().contact_id)
            .map_err(ScoringError::from)?;
        let mut unit = self
            .scoring
            .store
            .read()
            .await
            .map_err(ScoringError::from)?;
        let records = unit
            .contact_records(contact_id)
            .await
            .map_err(ScoringError::from)?;
        drop(unit);
        Ok(Response::new(pb::ExportContactDataResponse {
            ledger_entries: records.ledger.iter().map(ledger_entry).collect(),
            class_changes: records.class_changes.iter().map(class_change).collect(),
            stage_changes: records.stage_changes.iter().map(stage_change).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(contact_id = %request.get_ref().contact_id))]
    async fn erase_contact_data(
        &self,
        request: Request<pb::EraseContactDataRequest>,
    ) -> Result<Response<pb::EraseContactDataResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let contact_id = validate::uuid(&mut violations, "contact_id", &request.contact_id);
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(ScoringError::from)?;
        let contact_id = contact_id.expect("no violations means a contact id");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        let mut unit = match self.begin(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(Response::new(answer)),
        };
        // The call knows no visitor ids: the visitors merged into the contact are erased
        // with it, and capture's ContactErased names those never merged.
        let (erasure, snapshots) = self
            .scoring
            .erase_contact(unit.as_mut(), contact_id, &[])
            .await
            .map_err(ScoringError::from)?;
        let answer = pb::EraseContactDataResponse {
            anonymised_entry_count: u32::try_from(erasure.anonymised_entries).unwrap_or(u32::MAX),
        };
        self.finish(unit, &key, &answer, &snapshots).await?;
        tracing::info!(%contact_id, anonymised_entries = erasure.anonymised_entries, "contact erased from scoring");
        Ok(Response::new(answer))
    }
}

fn not_scored(lead_id: Uuid, product: &str) -> ScoringError {
    ScoringError::NoActiveModel(format!("{product}; or lead {lead_id} is not scored for it"))
}

fn history_request(
    lead_id: &str,
    product: &str,
    page_size: i32,
    page_token: &str,
) -> Result<(Uuid, String, Option<Uuid>, u32), ScoringError> {
    let mut violations = FieldViolations::new();
    let (lead_id, product) = lead_and_product(&mut violations, lead_id, product);
    let limit = validate::page_size(
        &mut violations,
        "page_size",
        page_size,
        50,
        MAX_HISTORY_PAGE,
    );
    let after = validate::page_token(&mut violations, page_token);
    violations.into_result()?;
    Ok((
        lead_id.expect("no violations means a lead id"),
        product,
        after,
        limit,
    ))
}

impl ScoringApi {
    /// A read unit, once the lead is known to scoring.
    async fn read_known_lead(&self, lead_id: Uuid) -> Result<Box<dyn ScoringUnit>, ScoringError> {
        let mut unit = self.scoring.store.read().await?;
        if unit.lead(lead_id).await?.is_none() {
            return Err(ScoringError::LeadNotFound(lead_id));
        }
        Ok(unit)
    }

    /// Everything a report of the product reads, from one snapshot.
    async fn funnel_records(&self, product: &str) -> Result<FunnelRecords, ScoringError> {
        let mut unit = self.scoring.store.read().await?;
        Ok(unit.funnel_records(product).await?)
    }

    /// The scores of every lead of the product now, from the hot state (rebuilt first if it
    /// was lost).
    async fn product_scores(&self, product: &str) -> Result<Vec<pb::LeadScore>, ScoringError> {
        self.scoring.rebuild_if_lost().await?;
        let now = self.scoring.now();
        Ok(self
            .scoring
            .hot
            .product(product)
            .await?
            .iter()
            .map(|snapshot| snapshot.score_at(now))
            .collect())
    }

    /// The score of the lead for the product at `at`, from the ledger, with its fit rules,
    /// its top `limit` engagement contributions and the contacts that drove it (only the
    /// score when `limit` is 0).
    async fn explain(
        &self,
        lead_id: Uuid,
        product: &str,
        at: DateTime<Utc>,
        limit: u32,
    ) -> Result<Option<pb::ExplainScoreResponse>, ScoringError> {
        let mut unit = self.scoring.store.read().await?;
        let Some(mut standing) = unit.lead_product(lead_id, product).await? else {
            return Ok(None);
        };
        let Some(record) = unit.active_model(product).await? else {
            return Ok(None);
        };
        let Some(lead) = unit.lead(lead_id).await? else {
            return Ok(None);
        };
        let rules = ScoringRules::from_record(&record);
        let inputs = engine::load_inputs(unit.as_mut(), lead, product, rules.model_id, at).await?;
        // The class and stage of the moment asked for, from their history.
        let classes = unit.class_changes(lead_id, product, None, u32::MAX).await?;
        let stages = unit.stage_changes(lead_id, product, None, u32::MAX).await?;
        drop(unit);
        let ledger: Vec<_> = inputs
            .ledger
            .iter()
            .filter(|entry| entry.occurred_at <= at)
            .cloned()
            .collect();
        let last_class = classes.iter().rev().find(|change| change.change_time <= at);
        standing.lead_class =
            last_class.map_or_else(|| class_name(None).to_owned(), |c| c.to_class.clone());
        standing.class_since = last_class.map(|change| change.change_time);
        if let Some(stage) = stages.iter().rev().find(|change| change.change_time <= at) {
            standing.stage = stage.to_stage.clone();
        } else {
            standing.stage = stage_name(LifecycleStage::New).to_owned();
        }
        let latest = stages.last().is_none_or(|change| change.change_time <= at)
            && classes.last().is_none_or(|change| change.change_time <= at);
        // Whether a lead was handed over is kept as its current flag only.
        standing.handed_over &= latest;
        let evaluation = engine::evaluate(&rules, &ledger, None);
        let score =
            engine::snapshot(&rules, &standing, &evaluation, inputs.bant.as_ref()).score_at(at);
        if limit == 0 {
            // Only the score was asked for.
            return Ok(Some(pb::ExplainScoreResponse {
                score: Some(score),
                ..Default::default()
            }));
        }
        let fit = engine::fit_of(&rules, &inputs);
        let fit_contributions = fit
            .matches
            .iter()
            .map(|matched| pb::FitContribution {
                rule_id: matched.rule_id.clone(),
                description: rules
                    .fit_descriptions
                    .get(&matched.rule_id)
                    .cloned()
                    .unwrap_or_default(),
                attribute: profile_attribute(matched.attribute).into(),
                matched_value: matched.matched_value.clone(),
                contact_id: matched.contact_id.clone().unwrap_or_default(),
                points: matched.points,
                disqualifier: matched.disqualifier,
            })
            .collect();
        let mut contributions: Vec<pb::EngagementContribution> = ledger
            .iter()
            .filter(|entry| !entry.is_fit() && (entry.points > 0 || entry.capped))
            .map(|entry| {
                let (activity_type, custom_type) =
                    crate::rules::activity_type_of(&entry.activity_key);
                pb::EngagementContribution {
                    ledger_entry_id: entry.entry_id.to_string(),
                    activity_id: entry
                        .activity_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    event_id: entry.event_id.map(|id| id.to_string()).unwrap_or_default(),
                    contact_id: entry
                        .contact_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    activity_type: activity_type.into(),
                    custom_type,
                    content_id: entry.content_id.clone(),
                    rule: entry.rule.clone(),
                    original_points: u32::try_from(entry.points).unwrap_or(0),
                    decayed_points: engine::entry_value_at(&rules, entry, at),
                    occur_time: Some(to_timestamp(entry.occurred_at)),
                    capped: entry.capped,
                }
            })
            .collect();
        let total_contribution_count = u32::try_from(contributions.len()).unwrap_or(u32::MAX);
        contributions.sort_by(|a, b| {
            b.decayed_points
                .total_cmp(&a.decayed_points)
                .then_with(|| a.ledger_entry_id.cmp(&b.ledger_entry_id))
        });
        contributions.truncate(limit as usize);
        let engagement = score.engagement_points;
        let contact_contributions = engine::contact_shares(&rules, &ledger, at)
            .into_iter()
            .map(|(contact_id, points, count)| pb::ContactContribution {
                contact_id: contact_id.to_string(),
                engagement_points: points,
                share: if engagement > 0.0 {
                    points / engagement
                } else {
                    0.0
                },
                activity_count: count,
            })
            .collect();
        Ok(Some(pb::ExplainScoreResponse {
            score: Some(score),
            fit_contributions,
            engagement_contributions: contributions,
            contact_contributions,
            total_contribution_count,
        }))
    }
}
