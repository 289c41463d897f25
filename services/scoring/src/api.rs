//! Scoring's gRPC handlers: parse the request, call the repository, answer.

use std::sync::Arc;

use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::scoring::v1::{self as pb, scoring_service_server::ScoringService};
use leadflow_storage::{IdempotencyKey, Stored};
use tonic::{Request, Response, Status};

use crate::{error::ScoringError, models::NewScoringModel, repository::ScoringModelRepository};

/// The most models one list call returns.
const MAX_PAGE_SIZE: u32 = 200;
/// The page size when the caller gives none.
const DEFAULT_PAGE_SIZE: u32 = 50;

/// The `leadflow.scoring.v1.ScoringService` implementation.
#[derive(Debug, Clone)]
pub struct ScoringApi {
    models: Arc<dyn ScoringModelRepository>,
}

impl ScoringApi {
    /// Handlers over the given model repository.
    pub fn new(models: Arc<dyn ScoringModelRepository>) -> Self {
        Self { models }
    }
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
            .create_model(model, key, chrono::Utc::now())
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

    async fn activate_scoring_model(
        &self,
        _request: Request<pb::ActivateScoringModelRequest>,
    ) -> Result<Response<pb::ActivateScoringModelResponse>, Status> {
        Err(ScoringError::NotAvailable("ActivateScoringModel").into())
    }

    async fn dry_run_scoring_model(
        &self,
        _request: Request<pb::DryRunScoringModelRequest>,
    ) -> Result<Response<pb::DryRunScoringModelResponse>, Status> {
        Err(ScoringError::NotAvailable("DryRunScoringModel").into())
    }

    async fn get_score(
        &self,
        _request: Request<pb::GetScoreRequest>,
    ) -> Result<Response<pb::GetScoreResponse>, Status> {
        Err(ScoringError::NotAvailable("GetScore").into())
    }

    async fn explain_score(
        &self,
        _request: Request<pb::ExplainScoreRequest>,
    ) -> Result<Response<pb::ExplainScoreResponse>, Status> {
        Err(ScoringError::NotAvailable("ExplainScore").into())
    }

    async fn rebuild_scores(
        &self,
        _request: Request<pb::RebuildScoresRequest>,
    ) -> Result<Response<pb::RebuildScoresResponse>, Status> {
        Err(ScoringError::NotAvailable("RebuildScores").into())
    }

    async fn classify_lead(
        &self,
        _request: Request<pb::ClassifyLeadRequest>,
    ) -> Result<Response<pb::ClassifyLeadResponse>, Status> {
        Err(ScoringError::NotAvailable("ClassifyLead").into())
    }

    async fn get_class_history(
        &self,
        _request: Request<pb::GetClassHistoryRequest>,
    ) -> Result<Response<pb::GetClassHistoryResponse>, Status> {
        Err(ScoringError::NotAvailable("GetClassHistory").into())
    }

    async fn transition_stage(
        &self,
        _request: Request<pb::TransitionStageRequest>,
    ) -> Result<Response<pb::TransitionStageResponse>, Status> {
        Err(ScoringError::NotAvailable("TransitionStage").into())
    }

    async fn get_stage_history(
        &self,
        _request: Request<pb::GetStageHistoryRequest>,
    ) -> Result<Response<pb::GetStageHistoryResponse>, Status> {
        Err(ScoringError::NotAvailable("GetStageHistory").into())
    }

    async fn update_bant(
        &self,
        _request: Request<pb::UpdateBantRequest>,
    ) -> Result<Response<pb::UpdateBantResponse>, Status> {
        Err(ScoringError::NotAvailable("UpdateBant").into())
    }

    async fn get_bant(
        &self,
        _request: Request<pb::GetBantRequest>,
    ) -> Result<Response<pb::GetBantResponse>, Status> {
        Err(ScoringError::NotAvailable("GetBant").into())
    }

    async fn list_top_leads(
        &self,
        _request: Request<pb::ListTopLeadsRequest>,
    ) -> Result<Response<pb::ListTopLeadsResponse>, Status> {
        Err(ScoringError::NotAvailable("ListTopLeads").into())
    }

    async fn get_heat_map(
        &self,
        _request: Request<pb::GetHeatMapRequest>,
    ) -> Result<Response<pb::GetHeatMapResponse>, Status> {
        Err(ScoringError::NotAvailable("GetHeatMap").into())
    }

    async fn get_funnel_report(
        &self,
        _request: Request<pb::GetFunnelReportRequest>,
    ) -> Result<Response<pb::GetFunnelReportResponse>, Status> {
        Err(ScoringError::NotAvailable("GetFunnelReport").into())
    }

    async fn get_forecast(
        &self,
        _request: Request<pb::GetForecastRequest>,
    ) -> Result<Response<pb::GetForecastResponse>, Status> {
        Err(ScoringError::NotAvailable("GetForecast").into())
    }

    async fn export_contact_data(
        &self,
        _request: Request<pb::ExportContactDataRequest>,
    ) -> Result<Response<pb::ExportContactDataResponse>, Status> {
        Err(ScoringError::NotAvailable("ExportContactData").into())
    }

    async fn erase_contact_data(
        &self,
        _request: Request<pb::EraseContactDataRequest>,
    ) -> Result<Response<pb::EraseContactDataResponse>, Status> {
        Err(ScoringError::NotAvailable("EraseContactData").into())
    }
}
