//! Routing's gRPC handlers: parse the request, call the repository, answer.

use std::sync::Arc;

use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::routing::v1::{self as pb, routing_service_server::RoutingService};
use leadflow_storage::{IdempotencyKey, StorageError, Stored};
use tonic::{Request, Response, Status};

use crate::{error::RoutingError, repository::RepRepository, reps::NewRep};

/// The most reps one list call returns.
const MAX_PAGE_SIZE: u32 = 500;
/// The page size when the caller gives none.
const DEFAULT_PAGE_SIZE: u32 = 50;

/// The `leadflow.routing.v1.RoutingService` implementation.
#[derive(Debug, Clone)]
pub struct RoutingApi {
    reps: Arc<dyn RepRepository>,
}

impl RoutingApi {
    /// Handlers over the given rep repository.
    pub fn new(reps: Arc<dyn RepRepository>) -> Self {
        Self { reps }
    }
}

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    #[tracing::instrument(skip_all)]
    async fn create_rep(
        &self,
        request: Request<pb::CreateRepRequest>,
    ) -> Result<Response<pb::CreateRepResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        let rep = NewRep::parse(request.rep.as_ref())
            .map_err(|rep_violations| violations.extend(rep_violations))
            .ok();
        violations.into_result().map_err(RoutingError::from)?;
        let rep = rep.expect("no violations means the rep parsed");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        let stored = match self.reps.create_rep(rep, key, chrono::Utc::now()).await {
            Ok(Stored::Done(stored)) => stored,
            Ok(Stored::KeyReused) => return Err(RoutingError::IdempotencyKeyReused.into()),
            Err(StorageError::UniqueViolation { constraint }) if constraint == "reps_email_key" => {
                return Err(RoutingError::RepEmailTaken.into());
            }
            Err(error) => return Err(RoutingError::from(error).into()),
        };
        tracing::info!(rep_id = %stored.rep_id, "rep created");
        Ok(Response::new(pb::CreateRepResponse {
            rep: Some((&stored).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rep_id = %request.get_ref().rep_id))]
    async fn get_rep(
        &self,
        request: Request<pb::GetRepRequest>,
    ) -> Result<Response<pb::GetRepResponse>, Status> {
        let rep_id = validate::required_uuid("rep_id", &request.get_ref().rep_id)
            .map_err(RoutingError::from)?;
        let stored = self
            .reps
            .get_rep(rep_id)
            .await
            .map_err(RoutingError::from)?
            .ok_or(RoutingError::RepNotFound(rep_id))?;
        Ok(Response::new(pb::GetRepResponse {
            rep: Some((&stored).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(team_id = %request.get_ref().team_id))]
    async fn list_reps(
        &self,
        request: Request<pb::ListRepsRequest>,
    ) -> Result<Response<pb::ListRepsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let team = if request.team_id.is_empty() {
            None
        } else {
            validate::uuid(&mut violations, "team_id", &request.team_id)
        };
        let limit = validate::page_size(
            &mut violations,
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        );
        let after = validate::page_token(&mut violations, &request.page_token);
        violations.into_result().map_err(RoutingError::from)?;
        if let Some(team) = team
            && !self
                .reps
                .team_exists(team)
                .await
                .map_err(RoutingError::from)?
        {
            return Err(RoutingError::TeamNotFound(team).into());
        }
        let page = self
            .reps
            .list_reps(team, after, limit)
            .await
            .map_err(RoutingError::from)?;
        Ok(Response::new(pb::ListRepsResponse {
            reps: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_rep(
        &self,
        _request: Request<pb::UpdateRepRequest>,
    ) -> Result<Response<pb::UpdateRepResponse>, Status> {
        Err(RoutingError::NotAvailable("UpdateRep").into())
    }

    async fn create_team(
        &self,
        _request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, Status> {
        Err(RoutingError::NotAvailable("CreateTeam").into())
    }

    async fn get_team(
        &self,
        _request: Request<pb::GetTeamRequest>,
    ) -> Result<Response<pb::GetTeamResponse>, Status> {
        Err(RoutingError::NotAvailable("GetTeam").into())
    }

    async fn list_teams(
        &self,
        _request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        Err(RoutingError::NotAvailable("ListTeams").into())
    }

    async fn update_team(
        &self,
        _request: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::UpdateTeamResponse>, Status> {
        Err(RoutingError::NotAvailable("UpdateTeam").into())
    }

    async fn publish_rule_set(
        &self,
        _request: Request<pb::PublishRuleSetRequest>,
    ) -> Result<Response<pb::PublishRuleSetResponse>, Status> {
        Err(RoutingError::NotAvailable("PublishRuleSet").into())
    }

    async fn get_rule_set(
        &self,
        _request: Request<pb::GetRuleSetRequest>,
    ) -> Result<Response<pb::GetRuleSetResponse>, Status> {
        Err(RoutingError::NotAvailable("GetRuleSet").into())
    }

    async fn list_rule_sets(
        &self,
        _request: Request<pb::ListRuleSetsRequest>,
    ) -> Result<Response<pb::ListRuleSetsResponse>, Status> {
        Err(RoutingError::NotAvailable("ListRuleSets").into())
    }

    async fn get_assignment(
        &self,
        _request: Request<pb::GetAssignmentRequest>,
    ) -> Result<Response<pb::GetAssignmentResponse>, Status> {
        Err(RoutingError::NotAvailable("GetAssignment").into())
    }

    async fn list_assignments(
        &self,
        _request: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
        Err(RoutingError::NotAvailable("ListAssignments").into())
    }

    async fn accept_assignment(
        &self,
        _request: Request<pb::AcceptAssignmentRequest>,
    ) -> Result<Response<pb::AcceptAssignmentResponse>, Status> {
        Err(RoutingError::NotAvailable("AcceptAssignment").into())
    }

    async fn reject_assignment(
        &self,
        _request: Request<pb::RejectAssignmentRequest>,
    ) -> Result<Response<pb::RejectAssignmentResponse>, Status> {
        Err(RoutingError::NotAvailable("RejectAssignment").into())
    }

    async fn reassign_lead(
        &self,
        _request: Request<pb::ReassignLeadRequest>,
    ) -> Result<Response<pb::ReassignLeadResponse>, Status> {
        Err(RoutingError::NotAvailable("ReassignLead").into())
    }

    async fn set_account_owner(
        &self,
        _request: Request<pb::SetAccountOwnerRequest>,
    ) -> Result<Response<pb::SetAccountOwnerResponse>, Status> {
        Err(RoutingError::NotAvailable("SetAccountOwner").into())
    }

    async fn get_account_owner(
        &self,
        _request: Request<pb::GetAccountOwnerRequest>,
    ) -> Result<Response<pb::GetAccountOwnerResponse>, Status> {
        Err(RoutingError::NotAvailable("GetAccountOwner").into())
    }

    async fn get_team_queue(
        &self,
        _request: Request<pb::GetTeamQueueRequest>,
    ) -> Result<Response<pb::GetTeamQueueResponse>, Status> {
        Err(RoutingError::NotAvailable("GetTeamQueue").into())
    }

    async fn explain_assignment(
        &self,
        _request: Request<pb::ExplainAssignmentRequest>,
    ) -> Result<Response<pb::ExplainAssignmentResponse>, Status> {
        Err(RoutingError::NotAvailable("ExplainAssignment").into())
    }

    async fn simulate_routing(
        &self,
        _request: Request<pb::SimulateRoutingRequest>,
    ) -> Result<Response<pb::SimulateRoutingResponse>, Status> {
        Err(RoutingError::NotAvailable("SimulateRouting").into())
    }

    async fn qualify_lead(
        &self,
        _request: Request<pb::QualifyLeadRequest>,
    ) -> Result<Response<pb::QualifyLeadResponse>, Status> {
        Err(RoutingError::NotAvailable("QualifyLead").into())
    }

    async fn open_opportunity(
        &self,
        _request: Request<pb::OpenOpportunityRequest>,
    ) -> Result<Response<pb::OpenOpportunityResponse>, Status> {
        Err(RoutingError::NotAvailable("OpenOpportunity").into())
    }

    async fn close_deal(
        &self,
        _request: Request<pb::CloseDealRequest>,
    ) -> Result<Response<pb::CloseDealResponse>, Status> {
        Err(RoutingError::NotAvailable("CloseDeal").into())
    }

    async fn get_routing_metrics(
        &self,
        _request: Request<pb::GetRoutingMetricsRequest>,
    ) -> Result<Response<pb::GetRoutingMetricsResponse>, Status> {
        Err(RoutingError::NotAvailable("GetRoutingMetrics").into())
    }
}
