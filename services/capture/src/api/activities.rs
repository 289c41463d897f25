//! Activity handlers: track one activity or a stream of them, merge an anonymous visitor
//! into the contact it turned out to be, and list a subject's activities.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::{
    capture::v1::{self as pb, activity_input, list_activities_request, merge_visitor_request},
    common::v1 as common,
};
use leadflow_storage::{IdempotencyKey, StorageError};
use tonic::Streaming;
use uuid::Uuid;

use super::{CaptureApi, Command, ContactRef};
use crate::{
    error::{CaptureError, item_error},
    intake::{self, CaptureEvent, Captured},
    records::{ActivityFilter, ActivityRow, ActivitySubject, CaptureUnit},
    submission::{DEFAULT_MAX_CHARS, past_time, visitor_id},
};

/// The source of an activity that names none.
const DEFAULT_ACTIVITY_SOURCE: &str = "api";
/// The most attributes one activity carries.
const MAX_ATTRIBUTES: usize = 50;
/// The longest attribute value, in characters.
const MAX_ATTRIBUTE_CHARS: usize = 1_000;
/// The page size of a listing that asks for none.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page a listing returns.
const MAX_PAGE_SIZE: u32 = 1_000;

/// Who an activity input names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Actor {
    Contact(ContactRef),
    Visitor(String),
}

/// An activity input that passed its checks: who acted, and the activity without its
/// subject ids, which are known only once the actor is looked up.
#[derive(Debug, Clone)]
struct TrackedActivity {
    actor: Actor,
    activity: ActivityRow,
}

/// Checks an `ActivityInput`; every problem is reported under `activity.<field>`.
fn parse_activity(
    input: Option<&pb::ActivityInput>,
    now: DateTime<Utc>,
) -> Result<TrackedActivity, FieldViolations> {
    let Some(input) = input else {
        return Err(FieldViolations::single("activity", "is required"));
    };
    let mut violations = FieldViolations::new();
    let actor = match &input.subject {
        Some(activity_input::Subject::ContactId(contact_id)) => {
            validate::uuid(&mut violations, "activity.contact_id", contact_id)
                .map(|id| Actor::Contact(ContactRef::Id(id)))
        }
        Some(activity_input::Subject::Email(email)) => {
            match leadflow_domain::EmailAddress::parse(email) {
                Ok(email) => Some(Actor::Contact(ContactRef::Email(email.to_string()))),
                Err(error) => {
                    violations.add("activity.email", error.to_string());
                    None
                }
            }
        }
        Some(activity_input::Subject::VisitorId(visitor)) => {
            match visitor_id(&mut violations, "activity.visitor_id", visitor) {
                Some(visitor) => Some(Actor::Visitor(visitor)),
                None => {
                    violations.add("activity.visitor_id", "is required");
                    None
                }
            }
        }
        None => {
            violations.add(
                "activity.subject",
                "is required: give contact_id, email or visitor_id",
            );
            None
        }
    };
    match common::ActivityType::try_from(input.r#type) {
        Ok(common::ActivityType::Unspecified) => {
            violations.add("activity.type", "is required");
        }
        Ok(common::ActivityType::Custom) => {
            validate::identifier(&mut violations, "activity.custom_type", &input.custom_type);
        }
        Ok(_) if !input.custom_type.is_empty() => violations.add(
            "activity.custom_type",
            "must be empty unless type is ACTIVITY_TYPE_CUSTOM",
        ),
        Ok(_) => {}
        Err(_) => violations.add("activity.type", "must be a known activity type"),
    }
    if common::BuyingStage::try_from(input.stage).is_err() {
        violations.add("activity.stage", "must be a known buying stage");
    }
    let content_item_id = validate::optional_text(
        &mut violations,
        "activity.content_item_id",
        &input.content_item_id,
        DEFAULT_MAX_CHARS,
    );
    let product = match input.product.trim() {
        "" => String::new(),
        product => validate::identifier(&mut violations, "activity.product", product),
    };
    let source = match input.source.trim() {
        "" => DEFAULT_ACTIVITY_SOURCE.to_owned(),
        source => validate::identifier(&mut violations, "activity.source", source),
    };
    let send_id = match input.send_id.trim() {
        "" => String::new(),
        send_id => validate::uuid(&mut violations, "activity.send_id", send_id)
            .map(|id| id.to_string())
            .unwrap_or_default(),
    };
    let occurred_at = past_time(
        &mut violations,
        "activity.occurred_at",
        input.occurred_at.as_ref(),
        now,
    );
    if input.attributes.len() > MAX_ATTRIBUTES {
        violations.add(
            "activity.attributes",
            format!("must hold at most {MAX_ATTRIBUTES} entries"),
        );
    }
    let attributes: BTreeMap<&String, &String> = input.attributes.iter().collect();
    for (name, value) in attributes {
        let field = format!("activity.attributes[{name:?}]");
        if name.is_empty() || name.chars().count() > 64 {
            violations.add(&field, "needs a name of 1 to 64 characters");
        }
        validate::optional_text(&mut violations, &field, value, MAX_ATTRIBUTE_CHARS);
    }
    violations.into_result()?;
    Ok(TrackedActivity {
        actor: actor.expect("no violations means the subject parsed"),
        activity: ActivityRow {
            r#type: input.r#type,
            custom_type: input.custom_type.trim().to_owned(),
            content_item_id,
            stage: input.stage,
            product,
            occurred_at: Some(to_timestamp(occurred_at)),
            source,
            send_id,
            attribution: input.attribution.clone(),
            attributes: input.attributes.clone(),
            ..ActivityRow::default()
        },
    })
}

/// Records one checked activity for its actor.
struct Track<'a>(&'a TrackedActivity);

#[async_trait]
impl Command for Track<'_> {
    type Answer = pb::TrackActivityResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::TrackActivityResponse, CaptureError> {
        let mut activity = self.0.activity.clone();
        let contact_ref = match &self.0.actor {
            Actor::Contact(contact) => Some(contact.clone()),
            Actor::Visitor(visitor_id) => {
                activity.visitor_id = visitor_id.clone();
                // A visitor that identified itself acts as its contact from then on.
                unit.visitor(visitor_id)
                    .await?
                    .and_then(|visitor| visitor.contact_id)
                    .map(ContactRef::Id)
            }
        };
        let mut contact = match contact_ref {
            Some(contact) => Some(contact.find(unit).await?),
            None => None,
        };
        if let Some(contact) = &contact {
            activity.contact_id = contact.contact_id.to_string();
            activity.lead_id = contact.lead_id.to_string();
        }
        let activity = intake::record_activity(unit, activity, contact.as_mut(), now).await?;
        Ok(pb::TrackActivityResponse {
            activity: Some(activity),
        })
    }
}

pub(super) async fn track_activity(
    api: &CaptureApi,
    request: pb::TrackActivityRequest,
) -> Result<pb::TrackActivityResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let tracked = parse_activity(request.activity.as_ref(), api.now())
        .map_err(|activity_violations| violations.extend(activity_violations))
        .ok();
    violations.into_result()?;
    let tracked = tracked.expect("no violations means the activity parsed");
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    api.run(&key, &Track(&tracked)).await
}

/// Checks one message of a stream: its key and activity, or what is wrong with them.
fn check_one(
    api: &CaptureApi,
    request: &pb::TrackActivitiesRequest,
) -> Result<(IdempotencyKey, TrackedActivity), CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let tracked = parse_activity(request.activity.as_ref(), api.now())
        .map_err(|activity_violations| violations.extend(activity_violations))
        .ok();
    violations.into_result()?;
    let tracked = tracked.expect("no violations means the activity parsed");
    let key = IdempotencyKey::for_request(key, request, |request| request.idempotency_key.clear());
    Ok((key, tracked))
}

/// The row an activity's write locks first (its contact, or its visitor): batches write
/// their items in this order, so two concurrent batches never wait on each other in a
/// circle.
fn lock_order(tracked: &TrackedActivity) -> (u8, String) {
    match &tracked.actor {
        Actor::Contact(ContactRef::Id(id)) => (0, id.to_string()),
        Actor::Contact(ContactRef::Email(email)) => (1, email.clone()),
        Actor::Visitor(visitor_id) => (2, visitor_id.clone()),
    }
}

pub(super) async fn track_activities(
    api: &CaptureApi,
    mut stream: Streaming<pb::TrackActivitiesRequest>,
) -> Result<pb::TrackActivitiesResponse, CaptureError> {
    let limit = api.limits.max_stream_activities;
    // The whole stream is read first: one over the limit and none is recorded.
    let mut requests = Vec::new();
    while let Some(request) = stream.message().await.map_err(CaptureError::Stream)? {
        if requests.len() == limit {
            return Err(CaptureError::TooManyItems(limit));
        }
        requests.push(request);
    }
    let mut outcomes: Vec<Option<Result<ActivityRow, CaptureError>>> =
        Vec::with_capacity(requests.len());
    let mut valid: Vec<(usize, IdempotencyKey, TrackedActivity)> = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        match check_one(api, request) {
            Ok((key, tracked)) => {
                valid.push((index, key, tracked));
                outcomes.push(None);
            }
            Err(error) => outcomes.push(Some(Err(error))),
        }
    }
    // Every valid activity is written in one transaction: one commit for the stream.
    let items: Vec<(&IdempotencyKey, Track<'_>)> = valid
        .iter()
        .map(|(_, key, tracked)| (key, Track(tracked)))
        .collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_cached_key(|&item| lock_order(&valid[item].2));
    let written = match api.run_batch(&items, &order).await {
        Ok(written) => written,
        // Lost a race against another transaction: the slower path, one transaction per
        // activity, each retried on its own.
        Err(CaptureError::Storage(StorageError::Conflict(_))) => {
            let mut written = Vec::with_capacity(items.len());
            for (key, command) in &items {
                written.push(api.run(key, command).await);
            }
            written
        }
        Err(error) => return Err(error),
    };
    for ((index, _, _), answer) in valid.iter().zip(written) {
        outcomes[*index] = Some(answer.map(|answer| answer.activity.unwrap_or_default()));
    }
    let mut response = pb::TrackActivitiesResponse::default();
    for (index, (request, outcome)) in requests.iter().zip(outcomes).enumerate() {
        let mut result = pb::TrackActivityResult {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            idempotency_key: request.idempotency_key.clone(),
            ..pb::TrackActivityResult::default()
        };
        match outcome.unwrap_or(Err(CaptureError::Storage(StorageError::Corrupt(
            "an activity of the stream was never written".to_owned(),
        )))) {
            Ok(activity) => {
                result.set_status(pb::ItemStatus::Accepted);
                result.activity = Some(activity);
                response.accepted_count += 1;
            }
            // The store failing is not the item's fault: the caller retries the stream, and
            // the keys of the items recorded so far make the retry record them once.
            Err(error) if !error.blames_the_item() => return Err(error),
            Err(error) => {
                result.set_status(pb::ItemStatus::Rejected);
                result.error = Some(item_error(error));
                response.rejected_count += 1;
            }
        }
        response.results.push(result);
    }
    tracing::info!(
        accepted = response.accepted_count,
        rejected = response.rejected_count,
        "activities tracked"
    );
    Ok(response)
}

/// Merges a visitor into a contact and tells the other services.
struct MergeVisitor {
    visitor_id: String,
    contact: ContactRef,
}

#[async_trait]
impl Command for MergeVisitor {
    type Answer = pb::MergeVisitorResponse;

    async fn write(
        &self,
        unit: &mut dyn CaptureUnit,
        now: DateTime<Utc>,
    ) -> Result<pb::MergeVisitorResponse, CaptureError> {
        let contact = self.contact.find(unit).await?;
        let answer = |moved: u32| pb::MergeVisitorResponse {
            contact_id: contact.contact_id.to_string(),
            lead_id: contact.lead_id.to_string(),
            moved_activity_count: moved,
        };
        let Some(moved) = intake::merge_visitor(unit, &self.visitor_id, &contact, now).await?
        else {
            return Ok(answer(0));
        };
        let answer = answer(moved);
        let lead = unit.lead(contact.lead_id).await?.ok_or_else(|| {
            StorageError::Corrupt(format!(
                "contact {} belongs to a missing lead",
                contact.contact_id
            ))
        })?;
        let account = match lead.account_id {
            Some(account_id) => unit.account(account_id).await?,
            None => None,
        };
        let captured = Captured {
            contact,
            lead,
            account,
            contact_outcome: pb::RecordOutcome::Unchanged,
            lead_outcome: pb::RecordOutcome::Unchanged,
            account_outcome: pb::RecordOutcome::Unchanged,
        };
        intake::publish_captured(
            unit,
            CaptureEvent {
                captured: &captured,
                form_id: None,
                product: "",
                source: &captured.contact.source,
                attribution: None,
                merged_visitor_ids: vec![self.visitor_id.clone()],
            },
            crate::forms::DEFAULT_CONSENT_PURPOSE,
            now,
        )
        .await?;
        Ok(answer)
    }
}

pub(super) async fn merge_visitor(
    api: &CaptureApi,
    request: pb::MergeVisitorRequest,
) -> Result<pb::MergeVisitorResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let visitor = visitor_id(&mut violations, "visitor_id", &request.visitor_id);
    if visitor.is_none() && request.visitor_id.trim().is_empty() {
        violations.add("visitor_id", "is required");
    }
    let contact = ContactRef::parse(
        &mut violations,
        "contact",
        match &request.contact {
            Some(merge_visitor_request::Contact::ContactId(id)) => Some(id),
            _ => None,
        },
        match &request.contact {
            Some(merge_visitor_request::Contact::Email(email)) => Some(email),
            _ => None,
        },
    );
    violations.into_result()?;
    let command = MergeVisitor {
        visitor_id: visitor.expect("no violations means the visitor id parsed"),
        contact: contact.expect("no violations means the contact parsed"),
    };
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    api.run(&key, &command).await
}

pub(super) async fn list_activities(
    api: &CaptureApi,
    request: pb::ListActivitiesRequest,
) -> Result<pb::ListActivitiesResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let subject = match &request.subject {
        Some(list_activities_request::Subject::ContactId(id)) => {
            validate::uuid(&mut violations, "contact_id", id).map(ActivitySubject::Contact)
        }
        Some(list_activities_request::Subject::LeadId(id)) => {
            validate::uuid(&mut violations, "lead_id", id).map(ActivitySubject::Lead)
        }
        Some(list_activities_request::Subject::VisitorId(visitor)) => {
            let visitor = visitor_id(&mut violations, "visitor_id", visitor);
            if visitor.is_none() {
                violations.add("visitor_id", "is required");
            }
            visitor.map(ActivitySubject::Visitor)
        }
        None => {
            violations.add(
                "subject",
                "is required: give contact_id, lead_id or visitor_id",
            );
            None
        }
    };
    let mut types = Vec::with_capacity(request.types.len());
    for (index, value) in request.types.iter().enumerate() {
        match common::ActivityType::try_from(*value) {
            Ok(common::ActivityType::Unspecified) | Err(_) => {
                violations.add(format!("types[{index}]"), "must be a known activity type")
            }
            Ok(activity_type) => types.push(activity_type),
        }
    }
    let product = match request.product.trim() {
        "" => None,
        product => Some(validate::identifier(&mut violations, "product", product)),
    };
    let (occurred_from, occurred_until) =
        validate::time_range(&mut violations, "time_range", request.time_range.as_ref());
    let limit = validate::page_size(
        &mut violations,
        "page_size",
        request.page_size,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    );
    let after: Option<Uuid> = validate::page_token(&mut violations, &request.page_token);
    violations.into_result()?;
    let filter = ActivityFilter {
        subject: subject.expect("no violations means the subject parsed"),
        types,
        product,
        occurred_from,
        occurred_until,
    };
    let mut unit = api.read().await?;
    let page = unit.list_activities(&filter, after, limit).await?;
    Ok(pb::ListActivitiesResponse {
        activities: page.items,
        next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
    })
}
