//! Capture's gRPC handlers: each reads and checks its request, runs its use case in one
//! unit of work under the request's idempotency key, and answers. The answer of a write is
//! kept beside its key, so a retry gets the very same answer and writes nothing again.

mod activities;
mod consent;
mod data_protection;
mod forms;
mod import;
mod queries;
mod submissions;
mod updates;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_domain::EmailAddress;
use leadflow_platform::{FieldViolations, time::Clock, validate};
use leadflow_proto::capture::v1::{self as pb, capture_service_server::CaptureService};
use leadflow_storage::{Begun, IdempotencyKey, StorageError};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

pub use data_protection::ExportPeers;

use crate::{
    consent::ConsentLinks,
    error::CaptureError,
    records::{CaptureStore, CaptureUnit, ContactRow},
    repository::FormRepository,
};

/// How much one streaming call may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// The most activities one `TrackActivities` stream may hold.
    pub max_stream_activities: usize,
    /// The most rows one `ImportLeads` stream may hold.
    pub max_import_rows: usize,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        Self {
            max_stream_activities: 10_000,
            max_import_rows: 100_000,
        }
    }
}

/// The `leadflow.capture.v1.CaptureService` implementation.
#[derive(Debug, Clone)]
pub struct CaptureApi {
    forms: Arc<dyn FormRepository>,
    records: Arc<dyn CaptureStore>,
    links: ConsentLinks,
    limits: CaptureLimits,
    clock: Arc<dyn Clock>,
    /// The other services a data-protection export gathers from; None refuses exports.
    export_peers: Option<ExportPeers>,
}

/// How often a write that lost a race to a concurrent one (the same new company, the same
/// new email) is tried again; the retry finds what the winner wrote.
const MAX_ATTEMPTS: u32 = 3;

/// A write use case: what it does in one unit of work, and what it answers.
#[async_trait]
trait Command: Sync {
    type Answer: Message + Default;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<Self::Answer, CaptureError>;
}

impl CaptureApi {
    /// Handlers over capture's forms and records; `links` signs and verifies the links
    /// capture mails; `clock` tells the time of submissions, activities and link checks.
    pub fn new(
        forms: Arc<dyn FormRepository>,
        records: Arc<dyn CaptureStore>,
        links: ConsentLinks,
        limits: CaptureLimits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            forms,
            records,
            links,
            limits,
            clock,
            export_peers: None,
        }
    }

    /// The handlers gathering data-protection exports from `peers`.
    pub fn with_export_peers(mut self, peers: ExportPeers) -> Self {
        self.export_peers = Some(peers);
        self
    }

    /// The retention policy over these handlers' records: contacts inactive for longer
    /// than `retention` are erased.
    pub fn retention_policy(&self, retention: std::time::Duration) -> crate::RetentionPolicy {
        crate::RetentionPolicy::new(
            self.records.clone(),
            self.links.signer().clone(),
            retention,
            self.clock.clone(),
        )
    }

    /// Now, as capture's clock tells it.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs `command` once per idempotency key: a fresh key does the work and keeps the
    /// answer in the same transaction; a retry gets the kept answer.
    async fn run<C: Command>(
        &self,
        key: &IdempotencyKey,
        command: &C,
    ) -> Result<C::Answer, CaptureError> {
        let mut attempt = 1;
        loop {
            let mut unit = match self.records.begin(key).await? {
                Begun::Fresh(unit) => unit,
                Begun::Replay(response_id) => return self.replay(response_id).await,
                Begun::KeyReused => return Err(CaptureError::IdempotencyKeyReused),
            };
            let now = self.now();
            match command.write(unit.as_mut(), now).await {
                Ok(answer) => {
                    let response_id = Uuid::now_v7();
                    unit.save_response(response_id, &answer.encode_to_vec(), now)
                        .await?;
                    unit.complete(key, response_id).await?;
                    unit.commit().await?;
                    return Ok(answer);
                }
                Err(CaptureError::Storage(
                    StorageError::UniqueViolation { .. } | StorageError::Conflict(_),
                )) if attempt < MAX_ATTEMPTS => attempt += 1,
                Err(error) => return Err(error),
            }
        }
    }

    /// The answer an earlier call with the same key kept.
    async fn replay<A: Message + Default>(&self, response_id: Uuid) -> Result<A, CaptureError> {
        let mut unit = self.records.read().await?;
        kept_answer(unit.as_mut(), response_id).await
    }

    /// Runs each item's command once per its idempotency key, all in one transaction: one
    /// durable commit for the whole batch instead of one per item. An item that fails for
    /// reasons of its own is undone to its savepoint and answered with its error; a failure
    /// of the store fails the batch and writes nothing, and the keys make the caller's retry
    /// write each item once. Items are written in `order`, which callers choose so that
    /// concurrent batches take row locks in one order and cannot deadlock; the answers
    /// come back in the items' own order.
    async fn run_batch<C: Command>(
        &self,
        items: &[(&IdempotencyKey, C)],
        order: &[usize],
    ) -> Result<Vec<Result<C::Answer, CaptureError>>, CaptureError> {
        let mut answers: Vec<Option<Result<C::Answer, CaptureError>>> =
            std::iter::repeat_with(|| None).take(items.len()).collect();
        let mut unit = self.records.begin_batch().await?;
        let now = self.now();
        for &index in order {
            let (key, command) = &items[index];
            let mut attempt = 1;
            let answer = loop {
                unit.savepoint().await?;
                let written = match unit.claim(key).await? {
                    Begun::Fresh(()) => match command.write(unit.as_mut(), now).await {
                        Ok(answer) => {
                            let response_id = Uuid::now_v7();
                            unit.save_response(response_id, &answer.encode_to_vec(), now)
                                .await?;
                            unit.complete(key, response_id).await?;
                            Ok(answer)
                        }
                        Err(error) => Err(error),
                    },
                    Begun::Replay(response_id) => kept_answer(unit.as_mut(), response_id).await,
                    Begun::KeyReused => Err(CaptureError::IdempotencyKeyReused),
                };
                match written {
                    Ok(answer) => {
                        unit.release_savepoint().await?;
                        break Ok(answer);
                    }
                    // A concurrent call made the same record first: read it and try again.
                    Err(CaptureError::Storage(StorageError::UniqueViolation { .. }))
                        if attempt < MAX_ATTEMPTS =>
                    {
                        unit.rollback_to_savepoint().await?;
                        attempt += 1;
                    }
                    Err(error) if error.blames_the_item() => {
                        unit.rollback_to_savepoint().await?;
                        break Err(error);
                    }
                    Err(error) => return Err(error),
                }
            };
            answers[index] = Some(answer);
        }
        unit.commit().await?;
        Ok(answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| {
                    Err(StorageError::Corrupt("a batch item was never written".to_owned()).into())
                })
            })
            .collect())
    }

    /// A unit that only reads.
    async fn read(&self) -> Result<Box<dyn CaptureUnit>, CaptureError> {
        Ok(self.records.read().await?)
    }
}

/// The answer a completed call kept under `response_id`.
async fn kept_answer<A: Message + Default>(
    unit: &mut dyn CaptureUnit,
    response_id: Uuid,
) -> Result<A, CaptureError> {
    let bytes = unit.response(response_id).await?.ok_or_else(|| {
        StorageError::Corrupt(format!("the answer {response_id} of a key is missing"))
    })?;
    Ok(A::decode(bytes.as_slice())
        .map_err(|error| StorageError::Corrupt(format!("answer {response_id}: {error}")))?)
}

/// How a request names a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContactRef {
    Id(Uuid),
    Email(String),
}

impl ContactRef {
    /// Reads the `contact_id` or `email` of a request's oneof; `field` names the oneof.
    fn parse(
        violations: &mut FieldViolations,
        field: &str,
        contact_id: Option<&str>,
        email: Option<&str>,
    ) -> Option<Self> {
        match (contact_id, email) {
            (Some(contact_id), _) => {
                validate::uuid(violations, "contact_id", contact_id).map(Self::Id)
            }
            (None, Some(email)) => match EmailAddress::parse(email) {
                Ok(email) => Some(Self::Email(email.to_string())),
                Err(error) => {
                    violations.add("email", error.to_string());
                    None
                }
            },
            (None, None) => {
                violations.add(field, "is required: give contact_id or email");
                None
            }
        }
    }

    /// The contact named, or NOT_FOUND.
    async fn find(&self, unit: &mut dyn CaptureUnit) -> Result<ContactRow, CaptureError> {
        let contact = match self {
            Self::Id(contact_id) => unit.contact(*contact_id).await?,
            Self::Email(email) => unit.contact_by_email(email).await?,
        };
        contact.ok_or(CaptureError::ContactNotFound)
    }
}

fn answer<T>(result: Result<T, CaptureError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl CaptureService for CaptureApi {
    type ImportLeadsStream = import::ImportAnswers;

    #[tracing::instrument(skip_all)]
    async fn create_form(
        &self,
        request: Request<pb::CreateFormRequest>,
    ) -> Result<Response<pb::CreateFormResponse>, Status> {
        answer(forms::create_form(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(form_id = %request.get_ref().form_id))]
    async fn get_form(
        &self,
        request: Request<pb::GetFormRequest>,
    ) -> Result<Response<pb::GetFormResponse>, Status> {
        answer(forms::get_form(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn list_forms(
        &self,
        request: Request<pb::ListFormsRequest>,
    ) -> Result<Response<pb::ListFormsResponse>, Status> {
        answer(forms::list_forms(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn update_form(
        &self,
        request: Request<pb::UpdateFormRequest>,
    ) -> Result<Response<pb::UpdateFormResponse>, Status> {
        answer(forms::update_form(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn resolve_form_fields(
        &self,
        request: Request<pb::ResolveFormFieldsRequest>,
    ) -> Result<Response<pb::ResolveFormFieldsResponse>, Status> {
        answer(forms::resolve_form_fields(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(form_id = %request.get_ref().form_id))]
    async fn submit_form(
        &self,
        request: Request<pb::SubmitFormRequest>,
    ) -> Result<Response<pb::SubmitFormResponse>, Status> {
        answer(submissions::submit_form(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::GetContactResponse>, Status> {
        answer(queries::get_contact(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(contact_id = %request.get_ref().contact_id))]
    async fn update_contact(
        &self,
        request: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<pb::UpdateContactResponse>, Status> {
        answer(updates::update_contact(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn get_lead(
        &self,
        request: Request<pb::GetLeadRequest>,
    ) -> Result<Response<pb::GetLeadResponse>, Status> {
        answer(queries::get_lead(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(lead_id = %request.get_ref().lead_id))]
    async fn update_lead(
        &self,
        request: Request<pb::UpdateLeadRequest>,
    ) -> Result<Response<pb::UpdateLeadResponse>, Status> {
        answer(updates::update_lead(self, request.into_inner()).await)
    }

    async fn list_leads(
        &self,
        request: Request<pb::ListLeadsRequest>,
    ) -> Result<Response<pb::ListLeadsResponse>, Status> {
        answer(queries::list_leads(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(account_id = %request.get_ref().account_id))]
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        answer(queries::get_account(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn track_activity(
        &self,
        request: Request<pb::TrackActivityRequest>,
    ) -> Result<Response<pb::TrackActivityResponse>, Status> {
        answer(activities::track_activity(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn track_activities(
        &self,
        request: Request<Streaming<pb::TrackActivitiesRequest>>,
    ) -> Result<Response<pb::TrackActivitiesResponse>, Status> {
        answer(activities::track_activities(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn merge_visitor(
        &self,
        request: Request<pb::MergeVisitorRequest>,
    ) -> Result<Response<pb::MergeVisitorResponse>, Status> {
        answer(activities::merge_visitor(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn list_activities(
        &self,
        request: Request<pb::ListActivitiesRequest>,
    ) -> Result<Response<pb::ListActivitiesResponse>, Status> {
        answer(activities::list_activities(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::RecordConsentResponse>, Status> {
        answer(consent::record_consent(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn confirm_double_opt_in(
        &self,
        request: Request<pb::ConfirmDoubleOptInRequest>,
    ) -> Result<Response<pb::ConfirmDoubleOptInResponse>, Status> {
        answer(consent::confirm_double_opt_in(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        answer(consent::withdraw_consent(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        answer(consent::get_consent(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn import_leads(
        &self,
        request: Request<Streaming<pb::ImportLeadsRequest>>,
    ) -> Result<Response<Self::ImportLeadsStream>, Status> {
        Ok(Response::new(import::import_leads(
            self.clone(),
            request.into_inner(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn export_contact(
        &self,
        request: Request<pb::ExportContactRequest>,
    ) -> Result<Response<pb::ExportContactResponse>, Status> {
        answer(data_protection::export_contact(self, request).await)
    }

    #[tracing::instrument(skip_all)]
    async fn erase_contact(
        &self,
        request: Request<pb::EraseContactRequest>,
    ) -> Result<Response<pb::EraseContactResponse>, Status> {
        answer(data_protection::erase_contact(self, request).await)
    }
}
