//! Nurturing's gRPC handlers: parse the request, call the repository, answer.

use std::sync::Arc;

use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::{
    common::v1 as common,
    nurturing::v1::{self as pb, nurturing_service_server::NurturingService},
};
use leadflow_storage::{IdempotencyKey, Stored};
use tonic::{Request, Response, Status};

use crate::{
    content::{self, ContentItem, NewContentItem},
    engine::Nurturing,
    error::NurturingError,
    repository::{ContentFilter, ContentRepository},
    templates::NewMailTemplate,
    track_repository::{PublishedVersion, TrackRepository},
    tracks::{NewTrack, TrackPolicy},
};

/// The most items one list call returns.
const MAX_PAGE_SIZE: u32 = 500;
/// The page size when the caller gives none.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// The longest reason a retirement keeps.
const MAX_RETIRE_REASON_CHARS: usize = 2_000;
/// The most extra rows one grid call may ask for, which bounds the size of its answer.
const MAX_GRID_ROLES: usize = 500;

/// The `leadflow.nurturing.v1.NurturingService` implementation.
#[derive(Debug, Clone)]
pub struct NurturingApi {
    content: Arc<dyn ContentRepository>,
    tracks: Arc<dyn TrackRepository>,
    pub(crate) nurturing: Nurturing,
}

impl NurturingApi {
    /// Handlers over the engine's content library, templates, tracks and enrollments.
    pub fn new(nurturing: Nurturing) -> Self {
        Self {
            content: nurturing.content.clone(),
            tracks: nurturing.tracks.clone(),
            nurturing,
        }
    }
}

impl NurturingApi {
    /// Wakes the enrollments that waited for content the item brings; a failure leaves
    /// them flagged until the next item or stage change, and does not undo the item.
    async fn wake_flagged(&self, item: &ContentItem) {
        match self.nurturing.wake_flagged(item).await {
            Ok(0) => {}
            Ok(woken) => {
                tracing::info!(woken, content_item_id = %item.content_item_id, "flagged enrollments woken by new content")
            }
            Err(error) => {
                tracing::warn!(%error, content_item_id = %item.content_item_id, "flagged enrollments not woken")
            }
        }
    }
}

/// The page size and the cursor of a list request, checked.
pub(crate) fn page_request(
    violations: &mut FieldViolations,
    page_size: i32,
    page_token: &str,
) -> (u32, Option<uuid::Uuid>) {
    let limit = validate::page_size(
        violations,
        "page_size",
        page_size,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    );
    (limit, validate::page_token(violations, page_token))
}

/// The refusal of a page token that no call of this listing with these filters returned.
pub(crate) fn foreign_page_token() -> NurturingError {
    NurturingError::InvalidRequest(FieldViolations::single(
        "page_token",
        "is not a token this listing returned for the same filters",
    ))
}

/// The answer of a call that published a track version: the track as the call left it.
fn published_parts(published: &PublishedVersion) -> (Option<pb::Track>, Option<pb::TrackVersion>) {
    (
        Some((&published.track).into()),
        Some((&published.version).into()),
    )
}

fn non_empty(value: &str) -> Option<&str> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then_some(trimmed)
}

#[tonic::async_trait]
impl NurturingService for NurturingApi {
    #[tracing::instrument(skip_all)]
    async fn create_content_item(
        &self,
        request: Request<pb::CreateContentItemRequest>,
    ) -> Result<Response<pb::CreateContentItemResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        let item = NewContentItem::parse(request.item.as_ref())
            .map_err(|item_violations| violations.extend(item_violations))
            .ok();
        violations.into_result().map_err(NurturingError::from)?;
        let item = item.expect("no violations means the item parsed");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        match self
            .content
            .create_item(item, key, self.nurturing.clock.now())
            .await
            .map_err(NurturingError::from)?
        {
            Stored::Done(stored) => {
                tracing::info!(content_item_id = %stored.content_item_id, "content item created");
                self.wake_flagged(&stored).await;
                Ok(Response::new(pb::CreateContentItemResponse {
                    item: Some((&stored).into()),
                }))
            }
            Stored::KeyReused => Err(NurturingError::IdempotencyKeyReused.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(content_item_id = %request.get_ref().content_item_id))]
    async fn get_content_item(
        &self,
        request: Request<pb::GetContentItemRequest>,
    ) -> Result<Response<pb::GetContentItemResponse>, Status> {
        let id = validate::required_uuid("content_item_id", &request.get_ref().content_item_id)
            .map_err(NurturingError::from)?;
        let stored = self
            .content
            .get_item(id)
            .await
            .map_err(NurturingError::from)?
            .ok_or(NurturingError::ContentItemNotFound(id))?;
        Ok(Response::new(pb::GetContentItemResponse {
            item: Some((&stored).into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_content_items(
        &self,
        request: Request<pb::ListContentItemsRequest>,
    ) -> Result<Response<pb::ListContentItemsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let (limit, after) = page_request(&mut violations, request.page_size, &request.page_token);
        let stage = match common::BuyingStage::try_from(request.stage) {
            Ok(common::BuyingStage::Unspecified) => None,
            Ok(stage) => Some(stage),
            Err(_) => {
                violations.add("stage", "must be a known buying stage");
                None
            }
        };
        let kind = match pb::ContentKind::try_from(request.kind) {
            Ok(pb::ContentKind::Unspecified) => None,
            Ok(kind) => Some(kind),
            Err(_) => {
                violations.add("kind", "must be a known content kind");
                None
            }
        };
        violations.into_result().map_err(NurturingError::from)?;
        let filter = ContentFilter {
            product: non_empty(&request.product).map(str::to_owned),
            buyer_role: non_empty(&request.buyer_role).map(str::to_owned),
            stage,
            kind,
            language: non_empty(&request.language).map(str::to_owned),
            include_retired: request.include_retired,
        };
        let page = self
            .content
            .list_items(&filter, after, limit)
            .await
            .map_err(NurturingError::from)?;
        Ok(Response::new(pb::ListContentItemsResponse {
            items: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_content_item(
        &self,
        request: Request<pb::UpdateContentItemRequest>,
    ) -> Result<Response<pb::UpdateContentItemResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let given = request.item.clone().unwrap_or_default();
        let content_item_id = validate::uuid(
            &mut violations,
            "item.content_item_id",
            &given.content_item_id,
        );
        let paths = content::update_mask_paths(&mut violations, request.update_mask.as_ref());
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(NurturingError::from)?;
        let content_item_id = content_item_id.expect("no violations means an item id");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        // The new values are checked against the item as stored, with the rules of a create.
        let change = |stored: &ContentItem| {
            if stored.retired {
                return Err(NurturingError::ContentItemRetired(content_item_id));
            }
            let merged = content::merge_update(&stored.into(), &given, &paths);
            NewContentItem::parse(Some(&merged)).map_err(NurturingError::from)
        };
        match self
            .content
            .update_item(content_item_id, &change, key, self.nurturing.clock.now())
            .await?
        {
            Stored::Done(updated) => {
                tracing::info!(%content_item_id, "content item updated");
                self.wake_flagged(&updated).await;
                Ok(Response::new(pb::UpdateContentItemResponse {
                    item: Some((&updated).into()),
                }))
            }
            Stored::KeyReused => Err(NurturingError::IdempotencyKeyReused.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(content_item_id = %request.get_ref().content_item_id))]
    async fn retire_content_item(
        &self,
        request: Request<pb::RetireContentItemRequest>,
    ) -> Result<Response<pb::RetireContentItemResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let content_item_id =
            validate::uuid(&mut violations, "content_item_id", &request.content_item_id);
        let reason = validate::optional_text(
            &mut violations,
            "reason",
            &request.reason,
            MAX_RETIRE_REASON_CHARS,
        );
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(NurturingError::from)?;
        let content_item_id = content_item_id.expect("no violations means an item id");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        match self
            .content
            .retire_item(content_item_id, &reason, key, self.nurturing.clock.now())
            .await?
        {
            Stored::Done(retired) => {
                tracing::info!(%content_item_id, "content item retired");
                Ok(Response::new(pb::RetireContentItemResponse {
                    item: Some((&retired).into()),
                }))
            }
            Stored::KeyReused => Err(NurturingError::IdempotencyKeyReused.into()),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_content_grid(
        &self,
        request: Request<pb::GetContentGridRequest>,
    ) -> Result<Response<pb::GetContentGridResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let language = non_empty(&request.language)
            .map(|language| validate::language_tag(&mut violations, "language", language));
        if request.buyer_roles.len() > MAX_GRID_ROLES {
            violations.add(
                "buyer_roles",
                format!("must name at most {MAX_GRID_ROLES} roles"),
            );
        }
        // Checked like the roles of an item: a role no item can carry would only show an
        // empty row that hides the item's real spelling.
        let roles: Vec<String> = request
            .buyer_roles
            .iter()
            .enumerate()
            .map(|(index, role)| {
                validate::identifier(&mut violations, &format!("buyer_roles[{index}]"), role)
            })
            .collect();
        violations.into_result().map_err(NurturingError::from)?;
        let counts = self
            .content
            .active_cell_counts(non_empty(&request.product), language.as_deref())
            .await
            .map_err(NurturingError::from)?;
        let flagged = self
            .nurturing
            .store
            .read()
            .await
            .map_err(NurturingError::from)?
            .flagged_per_cell(non_empty(&request.product))
            .await
            .map_err(NurturingError::from)?;
        Ok(Response::new(content::content_grid(
            &counts,
            &flagged,
            &roles,
            request.min_items_per_cell,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn create_track(
        &self,
        request: Request<pb::CreateTrackRequest>,
    ) -> Result<Response<pb::CreateTrackResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let track = NewTrack::parse(request.track.as_ref())
            .map_err(|track_violations| violations.extend(track_violations))
            .ok();
        let first_version = TrackPolicy::parse(request.first_version.as_ref(), "first_version")
            .map_err(|version_violations| violations.extend(version_violations))
            .ok();
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(NurturingError::from)?;
        let track = track.expect("no violations means the track parsed");
        let first_version = first_version.expect("no violations means the version parsed");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        match self
            .tracks
            .create_track(track, first_version, key, self.nurturing.clock.now())
            .await
            .map_err(|error| error.within("first_version"))?
        {
            Stored::Done(created) => {
                tracing::info!(track_id = %created.track.track_id, "track created");
                let (track, version) = published_parts(&created);
                Ok(Response::new(pb::CreateTrackResponse { track, version }))
            }
            Stored::KeyReused => Err(NurturingError::IdempotencyKeyReused.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(track_id = %request.get_ref().track_id))]
    async fn get_track(
        &self,
        request: Request<pb::GetTrackRequest>,
    ) -> Result<Response<pb::GetTrackResponse>, Status> {
        let request = request.into_inner();
        let track_id =
            validate::required_uuid("track_id", &request.track_id).map_err(NurturingError::from)?;
        let track = self
            .tracks
            .get_track(track_id)
            .await
            .map_err(NurturingError::from)?
            .ok_or(NurturingError::TrackNotFound(track_id))?;
        let version = match request.version {
            0 => track.latest_version,
            version => version,
        };
        let stored_version = self
            .tracks
            .get_track_version(track_id, version)
            .await
            .map_err(NurturingError::from)?
            .ok_or(NurturingError::TrackVersionNotFound { track_id, version })?;
        Ok(Response::new(pb::GetTrackResponse {
            track: Some((&track).into()),
            version: Some((&stored_version).into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tracks(
        &self,
        request: Request<pb::ListTracksRequest>,
    ) -> Result<Response<pb::ListTracksResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let (limit, after) = page_request(&mut violations, request.page_size, &request.page_token);
        violations.into_result().map_err(NurturingError::from)?;
        let page = self
            .tracks
            .list_tracks(non_empty(&request.product), after, limit)
            .await
            .map_err(NurturingError::from)?
            .ok_or_else(foreign_page_token)?;
        Ok(Response::new(pb::ListTracksResponse {
            tracks: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(track_id = %request.get_ref().track_id))]
    async fn publish_track_version(
        &self,
        request: Request<pb::PublishTrackVersionRequest>,
    ) -> Result<Response<pb::PublishTrackVersionResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let track_id = validate::uuid(&mut violations, "track_id", &request.track_id);
        let policy = TrackPolicy::parse(request.version.as_ref(), "version")
            .map_err(|version_violations| violations.extend(version_violations))
            .ok();
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(NurturingError::from)?;
        let track_id = track_id.expect("no violations means a track id");
        let policy = policy.expect("no violations means the version parsed");
        let expected_latest_version =
            (request.expected_latest_version != 0).then_some(request.expected_latest_version);
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        match self
            .tracks
            .publish_track_version(
                track_id,
                policy,
                expected_latest_version,
                key,
                self.nurturing.clock.now(),
            )
            .await
            .map_err(|error| error.within("version"))?
        {
            Stored::Done(published) => {
                tracing::info!(%track_id, version = published.version.version, "track version published");
                let (track, version) = published_parts(&published);
                Ok(Response::new(pb::PublishTrackVersionResponse {
                    track,
                    version,
                }))
            }
            Stored::KeyReused => Err(NurturingError::IdempotencyKeyReused.into()),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn create_template(
        &self,
        request: Request<pb::CreateTemplateRequest>,
    ) -> Result<Response<pb::CreateTemplateResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let template = NewMailTemplate::parse(request.template.as_ref())
            .map_err(|template_violations| violations.extend(template_violations))
            .ok();
        let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
        violations.into_result().map_err(NurturingError::from)?;
        let template = template.expect("no violations means the template parsed");
        let key =
            IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
        match self
            .tracks
            .create_template(template, key, self.nurturing.clock.now())
            .await
            .map_err(NurturingError::from)?
        {
            Stored::Done(stored) => {
                tracing::info!(template_id = %stored.template_id, "mail template created");
                Ok(Response::new(pb::CreateTemplateResponse {
                    template: Some((&stored).into()),
                }))
            }
            Stored::KeyReused => Err(NurturingError::IdempotencyKeyReused.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(template_id = %request.get_ref().template_id))]
    async fn get_template(
        &self,
        request: Request<pb::GetTemplateRequest>,
    ) -> Result<Response<pb::GetTemplateResponse>, Status> {
        let template_id = validate::required_uuid("template_id", &request.get_ref().template_id)
            .map_err(NurturingError::from)?;
        let stored = self
            .tracks
            .get_template(template_id)
            .await
            .map_err(NurturingError::from)?
            .ok_or(NurturingError::TemplateNotFound(template_id))?;
        Ok(Response::new(pb::GetTemplateResponse {
            template: Some((&stored).into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        // Not checked as a tag, as the contract lists no such refusal: a language no
        // template has simply lists nothing.
        let language = non_empty(&request.language);
        let (limit, after) = page_request(&mut violations, request.page_size, &request.page_token);
        violations.into_result().map_err(NurturingError::from)?;
        let page = self
            .tracks
            .list_templates(language, after, limit)
            .await
            .map_err(NurturingError::from)?
            .ok_or_else(foreign_page_token)?;
        Ok(Response::new(pb::ListTemplatesResponse {
            templates: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn enroll_contact(
        &self,
        request: Request<pb::EnrollContactRequest>,
    ) -> Result<Response<pb::EnrollContactResponse>, Status> {
        Ok(Response::new(
            self.handle_enroll_contact(request.into_inner()).await?,
        ))
    }

    async fn get_enrollment(
        &self,
        request: Request<pb::GetEnrollmentRequest>,
    ) -> Result<Response<pb::GetEnrollmentResponse>, Status> {
        Ok(Response::new(
            self.handle_get_enrollment(request.into_inner()).await?,
        ))
    }

    async fn list_enrollments(
        &self,
        request: Request<pb::ListEnrollmentsRequest>,
    ) -> Result<Response<pb::ListEnrollmentsResponse>, Status> {
        Ok(Response::new(
            self.handle_list_enrollments(request.into_inner()).await?,
        ))
    }

    async fn pause_enrollment(
        &self,
        request: Request<pb::PauseEnrollmentRequest>,
    ) -> Result<Response<pb::PauseEnrollmentResponse>, Status> {
        Ok(Response::new(
            self.handle_pause_enrollment(request.into_inner()).await?,
        ))
    }

    async fn resume_enrollment(
        &self,
        request: Request<pb::ResumeEnrollmentRequest>,
    ) -> Result<Response<pb::ResumeEnrollmentResponse>, Status> {
        Ok(Response::new(
            self.handle_resume_enrollment(request.into_inner()).await?,
        ))
    }

    async fn stop_enrollment(
        &self,
        request: Request<pb::StopEnrollmentRequest>,
    ) -> Result<Response<pb::StopEnrollmentResponse>, Status> {
        Ok(Response::new(
            self.handle_stop_enrollment(request.into_inner()).await?,
        ))
    }

    async fn list_sends(
        &self,
        request: Request<pb::ListSendsRequest>,
    ) -> Result<Response<pb::ListSendsResponse>, Status> {
        Ok(Response::new(
            self.handle_list_sends(request.into_inner()).await?,
        ))
    }

    async fn get_nurture_report(
        &self,
        request: Request<pb::GetNurtureReportRequest>,
    ) -> Result<Response<pb::GetNurtureReportResponse>, Status> {
        Ok(Response::new(
            self.handle_get_nurture_report(request.into_inner()).await?,
        ))
    }

    async fn get_frequency_cap(
        &self,
        request: Request<pb::GetFrequencyCapRequest>,
    ) -> Result<Response<pb::GetFrequencyCapResponse>, Status> {
        Ok(Response::new(
            self.handle_get_frequency_cap(request.into_inner()).await?,
        ))
    }

    async fn set_frequency_policy(
        &self,
        request: Request<pb::SetFrequencyPolicyRequest>,
    ) -> Result<Response<pb::SetFrequencyPolicyResponse>, Status> {
        Ok(Response::new(
            self.handle_set_frequency_policy(request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(contact_id = %request.get_ref().contact_id))]
    async fn export_contact_data(
        &self,
        request: Request<pb::ExportContactDataRequest>,
    ) -> Result<Response<pb::ExportContactDataResponse>, Status> {
        Ok(Response::new(
            self.handle_export_contact_data(request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(contact_id = %request.get_ref().contact_id))]
    async fn erase_contact_data(
        &self,
        request: Request<pb::EraseContactDataRequest>,
    ) -> Result<Response<pb::EraseContactDataResponse>, Status> {
        Ok(Response::new(
            self.handle_erase_contact_data(request.into_inner()).await?,
        ))
    }
}
