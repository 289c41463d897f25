//! Capture's gRPC handlers: parse the request, call the repository, answer.

use std::sync::Arc;

use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::capture::v1::{self as pb, capture_service_server::CaptureService};
use leadflow_storage::{IdempotencyKey, Stored};
use tonic::{Request, Response, Status};

use crate::{
    error::CaptureError,
    forms::NewForm,
    repository::{FormFilter, FormRepository},
};

/// The page size of a listing that asks for none.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page a listing returns.
const MAX_PAGE_SIZE: u32 = 200;

/// The `leadflow.capture.v1.CaptureService` implementation.
#[derive(Debug, Clone)]
pub struct CaptureApi {
    forms: Arc<dyn FormRepository>,
}

impl CaptureApi {
    /// Handlers over the given form repository.
    pub fn new(forms: Arc<dyn FormRepository>) -> Self {
        Self { forms }
    }
}

#[tonic::async_trait]
impl CaptureService for CaptureApi {
    type ImportLeadsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ImportLeadsResponse, Status>> + Send>,
    >;

    #[tracing::instrument(skip_all)]
    async fn create_form(
        &self,
        request: Request<pb::CreateFormRequest>,
    ) -> Result<Response<pb::CreateFormResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        let form = NewForm::parse(request.form.as_ref())
            .map_err(|form_violations| violations.extend(form_violations))
            .ok();
        violations.into_result().map_err(CaptureError::from)?;
        let form = form.expect("no violations means the form parsed");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        match self
            .forms
            .create_form(form, key, chrono::Utc::now())
            .await
            .map_err(CaptureError::from)?
        {
            Stored::Done(form) => {
                tracing::info!(form_id = %form.form_id, "form created");
                Ok(Response::new(pb::CreateFormResponse {
                    form: Some((&form).into()),
                }))
            }
            Stored::KeyReused => Err(CaptureError::IdempotencyKeyReused.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(form_id = %request.get_ref().form_id))]
    async fn get_form(
        &self,
        request: Request<pb::GetFormRequest>,
    ) -> Result<Response<pb::GetFormResponse>, Status> {
        let form_id = validate::required_uuid("form_id", &request.get_ref().form_id)
            .map_err(CaptureError::from)?;
        let form = self
            .forms
            .get_form(form_id)
            .await
            .map_err(CaptureError::from)?
            .ok_or(CaptureError::FormNotFound(form_id))?;
        Ok(Response::new(pb::GetFormResponse {
            form: Some((&form).into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_forms(
        &self,
        request: Request<pb::ListFormsRequest>,
    ) -> Result<Response<pb::ListFormsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let product = match request.product.trim() {
            "" => None,
            product => Some(validate::identifier(&mut violations, "product", product)),
        };
        let state = match pb::FormState::try_from(request.state) {
            Ok(pb::FormState::Unspecified) => None,
            Ok(state) => Some(state),
            Err(_) => {
                violations.add("state", "must be a known form state");
                None
            }
        };
        let limit = validate::page_size(
            &mut violations,
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        );
        let after = validate::page_token(&mut violations, &request.page_token);
        violations.into_result().map_err(CaptureError::from)?;
        let page = self
            .forms
            .list_forms(&FormFilter { product, state }, after, limit)
            .await
            .map_err(CaptureError::from)?;
        Ok(Response::new(pb::ListFormsResponse {
            forms: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_form(
        &self,
        _request: Request<pb::UpdateFormRequest>,
    ) -> Result<Response<pb::UpdateFormResponse>, Status> {
        Err(CaptureError::NotAvailable("UpdateForm").into())
    }

    async fn resolve_form_fields(
        &self,
        _request: Request<pb::ResolveFormFieldsRequest>,
    ) -> Result<Response<pb::ResolveFormFieldsResponse>, Status> {
        Err(CaptureError::NotAvailable("ResolveFormFields").into())
    }

    async fn submit_form(
        &self,
        _request: Request<pb::SubmitFormRequest>,
    ) -> Result<Response<pb::SubmitFormResponse>, Status> {
        Err(CaptureError::NotAvailable("SubmitForm").into())
    }

    async fn get_contact(
        &self,
        _request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::GetContactResponse>, Status> {
        Err(CaptureError::NotAvailable("GetContact").into())
    }

    async fn update_contact(
        &self,
        _request: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<pb::UpdateContactResponse>, Status> {
        Err(CaptureError::NotAvailable("UpdateContact").into())
    }

    async fn get_lead(
        &self,
        _request: Request<pb::GetLeadRequest>,
    ) -> Result<Response<pb::GetLeadResponse>, Status> {
        Err(CaptureError::NotAvailable("GetLead").into())
    }

    async fn update_lead(
        &self,
        _request: Request<pb::UpdateLeadRequest>,
    ) -> Result<Response<pb::UpdateLeadResponse>, Status> {
        Err(CaptureError::NotAvailable("UpdateLead").into())
    }

    async fn list_leads(
        &self,
        _request: Request<pb::ListLeadsRequest>,
    ) -> Result<Response<pb::ListLeadsResponse>, Status> {
        Err(CaptureError::NotAvailable("ListLeads").into())
    }

    async fn get_account(
        &self,
        _request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        Err(CaptureError::NotAvailable("GetAccount").into())
    }

    async fn track_activity(
        &self,
        _request: Request<pb::TrackActivityRequest>,
    ) -> Result<Response<pb::TrackActivityResponse>, Status> {
        Err(CaptureError::NotAvailable("TrackActivity").into())
    }

    async fn track_activities(
        &self,
        _request: Request<tonic::Streaming<pb::TrackActivitiesRequest>>,
    ) -> Result<Response<pb::TrackActivitiesResponse>, Status> {
        Err(CaptureError::NotAvailable("TrackActivities").into())
    }

    async fn merge_visitor(
        &self,
        _request: Request<pb::MergeVisitorRequest>,
    ) -> Result<Response<pb::MergeVisitorResponse>, Status> {
        Err(CaptureError::NotAvailable("MergeVisitor").into())
    }

    async fn list_activities(
        &self,
        _request: Request<pb::ListActivitiesRequest>,
    ) -> Result<Response<pb::ListActivitiesResponse>, Status> {
        Err(CaptureError::NotAvailable("ListActivities").into())
    }

    async fn record_consent(
        &self,
        _request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::RecordConsentResponse>, Status> {
        Err(CaptureError::NotAvailable("RecordConsent").into())
    }

    async fn confirm_double_opt_in(
        &self,
        _request: Request<pb::ConfirmDoubleOptInRequest>,
    ) -> Result<Response<pb::ConfirmDoubleOptInResponse>, Status> {
        Err(CaptureError::NotAvailable("ConfirmDoubleOptIn").into())
    }

    async fn withdraw_consent(
        &self,
        _request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        Err(CaptureError::NotAvailable("WithdrawConsent").into())
    }

    async fn get_consent(
        &self,
        _request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        Err(CaptureError::NotAvailable("GetConsent").into())
    }

    async fn import_leads(
        &self,
        _request: Request<tonic::Streaming<pb::ImportLeadsRequest>>,
    ) -> Result<Response<Self::ImportLeadsStream>, Status> {
        Err(CaptureError::NotAvailable("ImportLeads").into())
    }

    async fn export_contact(
        &self,
        _request: Request<pb::ExportContactRequest>,
    ) -> Result<Response<pb::ExportContactResponse>, Status> {
        Err(CaptureError::NotAvailable("ExportContact").into())
    }

    async fn erase_contact(
        &self,
        _request: Request<pb::EraseContactRequest>,
    ) -> Result<Response<pb::EraseContactResponse>, Status> {
        Err(CaptureError::NotAvailable("EraseContact").into())
    }
}
