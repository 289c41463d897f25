//! Nurturing's gRPC handlers for enrollments, sends, the report and the frequency cap:
//! parse the request, work in one unit, answer. Mutating calls store their answer under the
//! idempotency key, so a retry gets the same answer.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeDelta, Utc};
use leadflow_domain::nurture::FrequencyCap;
use leadflow_platform::{
    FieldViolations,
    time::{from_timestamp, to_timestamp},
    validate,
};
use leadflow_proto::{common::v1 as common, events::v1::ConsentState, nurturing::v1 as pb};
use leadflow_storage::{Begun, IdempotencyKey, StorageError, idempotency};
use prost::Message;
use uuid::Uuid;

use crate::{
    api::{NurturingApi, foreign_page_token, page_request},
    engine::{self, cap_for, cap_times, halt, optional_id, reactivate},
    error::NurturingError,
    records::{EnrollmentFilter, EnrollmentRecord, NurtureUnit, SendFilter, SendRecord},
    tracks::to_duration,
};

/// How far in the past a start time may lie: clocks of callers drift.
const START_TOLERANCE: Duration = Duration::minutes(1);
/// The longest reason kept with a pause or stop.
const MAX_REASON_CHARS: usize = 500;
/// The longest frequency window or gap a policy may set.
const MAX_POLICY_DAYS: i64 = 3_660;

type Opened<M> = Result<Box<dyn NurtureUnit>, M>;

pub(crate) fn key_of<M: Message + Clone>(
    violations: &mut FieldViolations,
    value: &str,
    request: &M,
    clear: impl FnOnce(&mut M),
) -> IdempotencyKey {
    let key = validate::idempotency_key(violations, value);
    IdempotencyKey::for_request(key, request, clear)
}

fn time(value: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    value.map(to_timestamp)
}

impl From<&EnrollmentRecord> for pb::Enrollment {
    fn from(enrollment: &EnrollmentRecord) -> Self {
        Self {
            enrollment_id: enrollment.enrollment_id.to_string(),
            contact_id: enrollment.contact_id.to_string(),
            lead_id: enrollment.lead_id.to_string(),
            product: enrollment.product.clone(),
            track_id: enrollment.track_id.to_string(),
            track_version: enrollment.track_version,
            state: enrollment.state.into(),
            state_reason: enrollment.state_reason.clone(),
            buyer_role: enrollment.buyer_role.clone(),
            stage: enrollment.stage.into(),
            step: enrollment.step,
            attempt: enrollment.attempt,
            next_due_time: if enrollment.state == pb::EnrollmentState::Active {
                time(enrollment.next_due_time)
            } else {
                None
            },
            last_send_time: time(enrollment.last_send_time),
            last_reaction_time: time(enrollment.last_reaction_time),
            enroll_time: Some(to_timestamp(enrollment.enroll_time)),
            state_change_time: Some(to_timestamp(enrollment.state_change_time)),
            end_time: time(enrollment.end_time),
        }
    }
}

impl From<&SendRecord> for pb::Send {
    fn from(send: &SendRecord) -> Self {
        Self {
            send_id: send.send_id.to_string(),
            enrollment_id: optional_id(send.enrollment_id),
            contact_id: optional_id(send.contact_id),
            lead_id: send.lead_id.to_string(),
            track_id: send.track_id.to_string(),
            track_version: send.track_version,
            step: send.step,
            attempt: send.attempt,
            content_item_id: send.content_item_id.to_string(),
            template_id: send.template_id.to_string(),
            buyer_role: send.buyer_role.clone(),
            stage: send.stage.into(),
            state: send.state.into(),
            message_id: send.message_id.clone(),
            due_time: Some(to_timestamp(send.due_time)),
            send_time: time(send.send_time),
            first_open_time: time(send.first_open_time),
            first_click_time: time(send.first_click_time),
            open_count: send.open_count,
            click_count: send.click_count,
            failure_reason: send.failure_reason.clone(),
        }
    }
}

fn state_name(state: pb::EnrollmentState) -> &'static str {
    match state {
        pb::EnrollmentState::Exhausted => "exhausted",
        pb::EnrollmentState::Stopped => "stopped",
        pb::EnrollmentState::Completed => "completed",
        pb::EnrollmentState::Active => "active",
        pb::EnrollmentState::Paused => "paused",
        pb::EnrollmentState::PausedForSales => "paused for sales",
        pb::EnrollmentState::Flagged => "flagged",
        pb::EnrollmentState::Unspecified => "in no state",
    }
}

fn closed(enrollment: &EnrollmentRecord, reason: &'static str) -> NurturingError {
    NurturingError::EnrollmentClosed {
        enrollment_id: enrollment.enrollment_id,
        state: state_name(enrollment.state),
        reason,
    }
}

/// A time range as `[from, to)`, `to` defaulting to `now`; violations name `field`.
fn range_of(
    violations: &mut FieldViolations,
    field: &str,
    range: Option<&common::TimeRange>,
    start_required: bool,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let Some(range) = range else {
        if start_required {
            violations.add(format!("{field}.start_time"), "is required");
        }
        return (None, None);
    };
    let from = range.start_time.as_ref().and_then(from_timestamp);
    let to = range.end_time.as_ref().and_then(from_timestamp);
    if start_required && from.is_none() {
        violations.add(format!("{field}.start_time"), "is required");
    }
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        violations.add(format!("{field}.end_time"), "must not be before start_time");
    }
    (from, to.or(start_required.then_some(now)))
}

/// A positive policy duration no longer than the policy allows.
fn policy_duration(
    violations: &mut FieldViolations,
    field: &str,
    value: Option<&prost_types::Duration>,
    default: TimeDelta,
) -> TimeDelta {
    let Some(value) = value else {
        return default;
    };
    let duration = u32::try_from(value.nanos)
        .ok()
        .and_then(|nanos| TimeDelta::new(value.seconds, nanos));
    match duration {
        Some(duration)
            if duration > TimeDelta::zero() && duration.num_days() <= MAX_POLICY_DAYS =>
        {
            duration
        }
        Some(duration) if duration > TimeDelta::zero() => {
            violations.add(field, format!("must be at most {MAX_POLICY_DAYS} days"));
            default
        }
        _ => {
            violations.add(field, "must be positive");
            default
        }
    }
}

pub(crate) fn policy_pb(cap: &FrequencyCap, set: Option<DateTime<Utc>>) -> pb::FrequencyPolicy {
    pb::FrequencyPolicy {
        max_sends: cap.max_sends,
        window: Some(to_duration(cap.window)),
        min_gap: Some(to_duration(cap.min_gap)),
        update_time: time(set),
    }
}

fn stats(sends: &[&SendRecord]) -> pb::NurtureStats {
    let sent = sends.len() as u32;
    let opened = sends.iter().filter(|send| send.open_count > 0).count() as u32;
    let clicked = sends.iter().filter(|send| send.click_count > 0).count() as u32;
    let rate = |count: u32| {
        if sent == 0 {
            0.0
        } else {
            f64::from(count) / f64::from(sent)
        }
    };
    pb::NurtureStats {
        sent_count: sent,
        opened_count: opened,
        clicked_count: clicked,
        open_rate: rate(opened),
        click_rate: rate(clicked),
    }
}

impl NurturingApi {
    fn now(&self) -> DateTime<Utc> {
        self.nurturing.clock.now()
    }

    /// Opens the unit of work of a mutating call, or answers a retry with the stored answer.
    pub(crate) async fn begin<M: Message + Default>(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Opened<M>, NurturingError> {
        match self.nurturing.store.begin(key).await? {
            Begun::Fresh(unit) => Ok(Ok(unit)),
            Begun::Replay(response_id) => {
                let stored = self.nurturing.store.response(response_id).await?;
                Ok(Err(idempotency::stored_answer(response_id, stored)?))
            }
            Begun::KeyReused => Err(NurturingError::IdempotencyKeyReused),
        }
    }

    /// Stores the answer under the key and commits.
    pub(crate) async fn finish<M: Message>(
        mut unit: Box<dyn NurtureUnit>,
        key: &IdempotencyKey,
        answer: &M,
    ) -> Result<(), NurturingError> {
        unit.save_response(key, Uuid::now_v7(), &answer.encode_to_vec())
            .await?;
        unit.commit().await?;
        Ok(())
    }

    pub(crate) async fn handle_enroll_contact(
        &self,
        request: pb::EnrollContactRequest,
    ) -> Result<pb::EnrollContactResponse, NurturingError> {
        let now = self.now();
        let mut violations = FieldViolations::new();
        let contact_id = validate::uuid(&mut violations, "contact_id", &request.contact_id);
        let track_id = validate::uuid(&mut violations, "track_id", &request.track_id);
        let start = request.start_time.as_ref().map(from_timestamp);
        match start {
            Some(None) => violations.add("start_time", "is not a valid time"),
            Some(Some(start)) if start < now - START_TOLERANCE => {
                violations.add("start_time", "must not lie in the past")
            }
            _ => {}
        }
        let key = key_of(
            &mut violations,
            &request.idempotency_key,
            &request,
            |request| request.idempotency_key.clear(),
        );
        violations.into_result()?;
        let (Some(contact_id), Some(track_id)) = (contact_id, track_id) else {
            return Err(FieldViolations::single("contact_id", "must be a UUID").into());
        };
        let start = start.flatten().unwrap_or(now).max(now);
        let track = self
            .nurturing
            .tracks
            .get_track(track_id)
            .await?
            .ok_or(NurturingError::TrackNotFound(track_id))?;
        let wanted = if request.track_version == 0 {
            track.latest_version
        } else {
            request.track_version
        };
        let version = self
            .nurturing
            .tracks
            .get_track_version(track_id, wanted)
            .await?
            .ok_or(NurturingError::TrackVersionNotFound {
                track_id,
                version: wanted,
            })?;
        let mut unit = match self.begin::<pb::EnrollContactResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(answer),
        };
        let contact = unit
            .contact(contact_id)
            .await?
            .ok_or(NurturingError::ContactNotFound(contact_id))?;
        if contact.consent != ConsentState::Confirmed {
            return Err(NurturingError::NotEnrollable {
                contact_id,
                reason: "it has no confirmed opt-in for nurture mail",
            });
        }
        if contact.buyer_role.is_empty() {
            return Err(NurturingError::NotEnrollable {
                contact_id,
                reason: "it has no buyer role, so no content fits it",
            });
        }
        unit.upsert_lead_product(contact.lead_id, &track.track.product, None, now)
            .await?;
        let enrollment = engine::enroll(
            &mut *unit,
            &contact,
            &version,
            &track.track.product,
            start,
            "enrolled by request",
            now,
        )
        .await?
        .ok_or(NurturingError::AlreadyEnrolled {
            contact_id,
            track_id,
        })?;
        let answer = pb::EnrollContactResponse {
            enrollment: Some((&enrollment).into()),
        };
        Self::finish(unit, &key, &answer).await?;
        Ok(answer)
    }

    pub(crate) async fn handle_get_enrollment(
        &self,
        request: pb::GetEnrollmentRequest,
    ) -> Result<pb::GetEnrollmentResponse, NurturingError> {
        let enrollment_id = validate::required_uuid("enrollment_id", &request.enrollment_id)?;
        let mut unit = self.nurturing.store.read().await?;
        let enrollment = unit
            .enrollment(enrollment_id, false)
            .await?
            .ok_or(NurturingError::EnrollmentNotFound(enrollment_id))?;
        let sends = unit.sends_of_enrollment(enrollment_id).await?;
        Ok(pb::GetEnrollmentResponse {
            enrollment: Some((&enrollment).into()),
            sends: sends.iter().map(pb::Send::from).collect(),
        })
    }

    pub(crate) async fn handle_list_enrollments(
        &self,
        request: pb::ListEnrollmentsRequest,
    ) -> Result<pb::ListEnrollmentsResponse, NurturingError> {
        let mut violations = FieldViolations::new();
        let optional_uuid = |violations: &mut FieldViolations, field: &str, value: &str| {
            (!value.trim().is_empty())
                .then(|| validate::uuid(violations, field, value))
                .flatten()
        };
        let filter = EnrollmentFilter {
            contact_id: optional_uuid(&mut violations, "contact_id", &request.contact_id),
            track_id: optional_uuid(&mut violations, "track_id", &request.track_id),
            product: (!request.product.trim().is_empty())
                .then(|| request.product.trim().to_owned()),
            state: match pb::EnrollmentState::try_from(request.state) {
                Ok(pb::EnrollmentState::Unspecified) => None,
                Ok(state) => Some(state),
                Err(_) => {
                    violations.add("state", "is not an enrollment state");
                    None
                }
            },
        };
        let (limit, after) = page_request(&mut violations, request.page_size, &request.page_token);
        violations.into_result()?;
        let mut unit = self.nurturing.store.read().await?;
        if let Some(after) = after {
            let fits = unit.enrollment(after, false).await?.is_some_and(|last| {
                filter.contact_id.is_none_or(|id| id == last.contact_id)
                    && filter.track_id.is_none_or(|id| id == last.track_id)
                    && filter.product.as_deref().is_none_or(|p| p == last.product)
            });
            if !fits {
                return Err(foreign_page_token());
            }
        }
        let mut page = unit.list_enrollments(&filter, after, limit + 1).await?;
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        Ok(pb::ListEnrollmentsResponse {
            next_page_token: if more {
                page.last()
                    .map(|last| last.enrollment_id.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            enrollments: page.iter().map(pb::Enrollment::from).collect(),
        })
    }

    /// Validates a state change of one enrollment and applies `change` in a unit that
    /// stores its answer.
    async fn change_enrollment<M: Message + Clone>(
        &self,
        request: &M,
        fields: (&str, &str, &str),
        clear_key: impl FnOnce(&mut M),
        change: Change,
    ) -> Result<pb::Enrollment, NurturingError> {
        let (enrollment_id, idempotency_key, reason) = fields;
        let mut violations = FieldViolations::new();
        let mut key = key_of(&mut violations, idempotency_key, request, clear_key);
        // Pause, resume and stop requests encode alike: the call's name keeps a key used for
        // one from replaying as another.
        key.request.extend_from_slice(change.name().as_bytes());
        let enrollment_id = validate::uuid(&mut violations, "enrollment_id", enrollment_id);
        if reason.chars().count() > MAX_REASON_CHARS {
            violations.add(
                "reason",
                format!("must be at most {MAX_REASON_CHARS} characters"),
            );
        }
        violations.into_result()?;
        let Some(enrollment_id) = enrollment_id else {
            return Err(FieldViolations::single("enrollment_id", "must be a UUID").into());
        };
        let now = self.now();
        let mut unit = match self.begin::<pb::Enrollment>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(answer),
        };
        let mut enrollment = unit
            .enrollment(enrollment_id, true)
            .await?
            .ok_or(NurturingError::EnrollmentNotFound(enrollment_id))?;
        let reason = reason.trim();
        match change {
            Change::Pause => match enrollment.state {
                pb::EnrollmentState::Active | pb::EnrollmentState::Flagged => {
                    let reason = if reason.is_empty() {
                        "paused by hand"
                    } else {
                        reason
                    };
                    halt(
                        &mut *unit,
                        &mut enrollment,
                        pb::EnrollmentState::Paused,
                        reason,
                        now,
                    )
                    .await?;
                }
                pb::EnrollmentState::Paused | pb::EnrollmentState::PausedForSales => {}
                _ => return Err(closed(&enrollment, "only an open enrollment pauses")),
            },
            Change::Resume => match enrollment.state {
                pb::EnrollmentState::Paused
                | pb::EnrollmentState::PausedForSales
                | pb::EnrollmentState::Flagged => {
                    let consent = unit
                        .contact(enrollment.contact_id)
                        .await?
                        .map(|contact| contact.consent);
                    if consent != Some(ConsentState::Confirmed) {
                        return Err(NurturingError::NotEnrollable {
                            contact_id: enrollment.contact_id,
                            reason: "it no longer has a confirmed opt-in for nurture mail",
                        });
                    }
                    reactivate(&mut *unit, &mut enrollment, "resumed by hand", now).await?;
                }
                pb::EnrollmentState::Active => {}
                _ => return Err(closed(&enrollment, "an ended enrollment does not resume")),
            },
            Change::Stop => match enrollment.state {
                pb::EnrollmentState::Stopped => {}
                pb::EnrollmentState::Exhausted | pb::EnrollmentState::Completed => {
                    return Err(closed(&enrollment, "it has ended already"));
                }
                _ => {
                    let reason = if reason.is_empty() {
                        "stopped by hand"
                    } else {
                        reason
                    };
                    halt(
                        &mut *unit,
                        &mut enrollment,
                        pb::EnrollmentState::Stopped,
                        reason,
                        now,
                    )
                    .await?;
                }
            },
        }
        let answer = pb::Enrollment::from(&enrollment);
        Self::finish(unit, &key, &answer).await?;
        Ok(answer)
    }

    pub(crate) async fn handle_pause_enrollment(
        &self,
        request: pb::PauseEnrollmentRequest,
    ) -> Result<pb::PauseEnrollmentResponse, NurturingError> {
        let fields = (
            request.enrollment_id.as_str(),
            request.idempotency_key.as_str(),
            request.reason.as_str(),
        );
        let enrollment = self
            .change_enrollment(
                &request,
                fields,
                |r| r.idempotency_key.clear(),
                Change::Pause,
            )
            .await?;
        Ok(pb::PauseEnrollmentResponse {
            enrollment: Some(enrollment),
        })
    }

    pub(crate) async fn handle_resume_enrollment(
        &self,
        request: pb::ResumeEnrollmentRequest,
    ) -> Result<pb::ResumeEnrollmentResponse, NurturingError> {
        let fields = (
            request.enrollment_id.as_str(),
            request.idempotency_key.as_str(),
            "",
        );
        let enrollment = self
            .change_enrollment(
                &request,
                fields,
                |r| r.idempotency_key.clear(),
                Change::Resume,
            )
            .await?;
        Ok(pb::ResumeEnrollmentResponse {
            enrollment: Some(enrollment),
        })
    }

    pub(crate) async fn handle_stop_enrollment(
        &self,
        request: pb::StopEnrollmentRequest,
    ) -> Result<pb::StopEnrollmentResponse, NurturingError> {
        let fields = (
            request.enrollment_id.as_str(),
            request.idempotency_key.as_str(),
            request.reason.as_str(),
        );
        let enrollment = self
            .change_enrollment(
                &request,
                fields,
                |r| r.idempotency_key.clear(),
                Change::Stop,
            )
            .await?;
        Ok(pb::StopEnrollmentResponse {
            enrollment: Some(enrollment),
        })
    }

    pub(crate) async fn handle_list_sends(
        &self,
        request: pb::ListSendsRequest,
    ) -> Result<pb::ListSendsResponse, NurturingError> {
        let now = self.now();
        let mut violations = FieldViolations::new();
        let contact_id = validate::uuid(&mut violations, "contact_id", &request.contact_id);
        let enrollment_id = (!request.enrollment_id.trim().is_empty())
            .then(|| validate::uuid(&mut violations, "enrollment_id", &request.enrollment_id))
            .flatten();
        let (from, to) = range_of(
            &mut violations,
            "time_range",
            request.time_range.as_ref(),
            false,
            now,
        );
        let (limit, after) = page_request(&mut violations, request.page_size, &request.page_token);
        violations.into_result()?;
        let Some(contact_id) = contact_id else {
            return Err(FieldViolations::single("contact_id", "must be a UUID").into());
        };
        let mut unit = self.nurturing.store.read().await?;
        if unit.contact(contact_id).await?.is_none() {
            return Err(NurturingError::ContactNotFound(contact_id));
        }
        if let Some(after) = after {
            let fits = unit.send(after, false).await?.is_some_and(|last| {
                last.contact_id == Some(contact_id)
                    && enrollment_id.is_none_or(|id| Some(id) == last.enrollment_id)
            });
            if !fits {
                return Err(foreign_page_token());
            }
        }
        let filter = SendFilter {
            contact_id,
            enrollment_id,
            from,
            to,
        };
        let mut page = unit.list_sends(&filter, after, limit + 1).await?;
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        Ok(pb::ListSendsResponse {
            next_page_token: if more {
                page.last()
                    .map(|last| last.send_id.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            sends: page.iter().map(pb::Send::from).collect(),
        })
    }

    pub(crate) async fn handle_get_nurture_report(
        &self,
        request: pb::GetNurtureReportRequest,
    ) -> Result<pb::GetNurtureReportResponse, NurturingError> {
        let now = self.now();
        let mut violations = FieldViolations::new();
        let (from, to) = range_of(
            &mut violations,
            "time_range",
            request.time_range.as_ref(),
            true,
            now,
        );
        let track_filter = (!request.track_id.trim().is_empty())
            .then(|| validate::uuid(&mut violations, "track_id", &request.track_id))
            .flatten();
        violations.into_result()?;
        let (Some(from), Some(to)) = (from, to) else {
            return Err(FieldViolations::single("time_range.start_time", "is required").into());
        };
        if let Some(track_id) = track_filter
            && self.nurturing.tracks.get_track(track_id).await?.is_none()
        {
            return Err(NurturingError::TrackNotFound(track_id));
        }
        let product = request.product.trim();
        let wanted = |record_product: &str, track_id: Uuid| {
            (product.is_empty() || record_product == product)
                && track_filter.is_none_or(|wanted| wanted == track_id)
        };
        let (sends, enrollments) = {
            let mut unit = self.nurturing.store.read().await?;
            (
                unit.sent_between(from, to).await?,
                unit.enrollments_touching(from, to).await?,
            )
        };
        let sends: Vec<&SendRecord> = sends
            .iter()
            .filter(|send| wanted(&send.product, send.track_id))
            .collect();
        let enrollments: Vec<&EnrollmentRecord> = enrollments
            .iter()
            .filter(|enrollment| wanted(&enrollment.product, enrollment.track_id))
            .collect();

        let mut per_item: BTreeMap<Uuid, Vec<&SendRecord>> = BTreeMap::new();
        let mut per_cell: BTreeMap<(String, i32), Vec<&SendRecord>> = BTreeMap::new();
        let mut per_track: BTreeMap<Uuid, Vec<&SendRecord>> = BTreeMap::new();
        for send in &sends {
            per_item.entry(send.content_item_id).or_default().push(send);
            per_cell
                .entry((send.buyer_role.clone(), send.stage as i32))
                .or_default()
                .push(send);
            per_track.entry(send.track_id).or_default().push(send);
        }
        let mut items = Vec::new();
        for (content_item_id, item_sends) in &per_item {
            let item = self.nurturing.content.get_item(*content_item_id).await?;
            items.push(pb::ContentItemStats {
                content_item_id: content_item_id.to_string(),
                title: item
                    .as_ref()
                    .map(|item| item.item.title.clone())
                    .unwrap_or_default(),
                kind: item
                    .as_ref()
                    .map_or(pb::ContentKind::Unspecified, |item| item.item.kind)
                    .into(),
                stats: Some(stats(item_sends)),
            });
        }
        items.sort_by(|a, b| {
            let sent = |stats: &pb::ContentItemStats| stats.stats.map_or(0, |s| s.sent_count);
            sent(b).cmp(&sent(a)).then_with(|| a.title.cmp(&b.title))
        });
        let cells = per_cell
            .iter()
            .map(|((buyer_role, stage), cell_sends)| pb::CellStats {
                buyer_role: buyer_role.clone(),
                stage: *stage,
                stats: Some(stats(cell_sends)),
            })
            .collect();

        let mut track_ids: Vec<Uuid> = per_track.keys().copied().collect();
        for enrollment in &enrollments {
            if !track_ids.contains(&enrollment.track_id) {
                track_ids.push(enrollment.track_id);
            }
        }
        let mut tracks = Vec::new();
        for track_id in track_ids {
            let name = self
                .nurturing
                .tracks
                .get_track(track_id)
                .await?
                .map(|track| track.track.name)
                .unwrap_or_default();
            let of_track: Vec<&&EnrollmentRecord> = enrollments
                .iter()
                .filter(|enrollment| enrollment.track_id == track_id)
                .collect();
            let ended_in_range = |state: pb::EnrollmentState| {
                of_track
                    .iter()
                    .filter(|enrollment| {
                        enrollment.state == state
                            && enrollment
                                .end_time
                                .is_some_and(|end| end >= from && end < to)
                    })
                    .count() as u32
            };
            let mut durations: Vec<TimeDelta> = of_track
                .iter()
                .filter_map(|enrollment| {
                    let end = enrollment
                        .end_time
                        .filter(|end| *end >= from && *end < to)?;
                    Some(end - enrollment.enroll_time)
                })
                .collect();
            durations.sort();
            let mean = (!durations.is_empty()).then(|| {
                let total: i64 = durations
                    .iter()
                    .map(|duration| duration.num_milliseconds())
                    .sum();
                TimeDelta::milliseconds(total / durations.len() as i64)
            });
            let median = (!durations.is_empty()).then(|| {
                let middle = durations.len() / 2;
                if durations.len() % 2 == 1 {
                    durations[middle]
                } else {
                    (durations[middle - 1] + durations[middle]) / 2
                }
            });
            let empty = Vec::new();
            tracks.push(pb::TrackStats {
                track_id: track_id.to_string(),
                name,
                stats: Some(stats(per_track.get(&track_id).unwrap_or(&empty))),
                enrolled_count: of_track
                    .iter()
                    .filter(|enrollment| enrollment.enroll_time >= from)
                    .count() as u32,
                open_count: of_track
                    .iter()
                    .filter(|enrollment| enrollment.end_time.is_none_or(|end| end >= to))
                    .count() as u32,
                exhausted_count: ended_in_range(pb::EnrollmentState::Exhausted),
                handed_over_count: ended_in_range(pb::EnrollmentState::Completed),
                stopped_count: ended_in_range(pb::EnrollmentState::Stopped),
                flagged_count: of_track
                    .iter()
                    .filter(|enrollment| enrollment.state == pb::EnrollmentState::Flagged)
                    .count() as u32,
                mean_time_in_track: mean.map(to_duration),
                median_time_in_track: median.map(to_duration),
            });
        }
        tracks.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| a.track_id.cmp(&b.track_id))
        });
        Ok(pb::GetNurtureReportResponse {
            totals: Some(stats(&sends)),
            items,
            cells,
            tracks,
        })
    }

    /// The cap of a contact now, or the global policy alone.
    async fn cap_of(
        unit: &mut dyn NurtureUnit,
        contact_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<pb::FrequencyCap, NurturingError> {
        let global = unit.frequency_policy().await?;
        let Some(contact_id) = contact_id else {
            let cap = global.map(|(cap, _)| cap).unwrap_or_default();
            return Ok(pb::FrequencyCap {
                policy: Some(policy_pb(&cap, global.map(|(_, set)| set))),
                ..pb::FrequencyCap::default()
            });
        };
        let contact = unit
            .contact(contact_id)
            .await?
            .ok_or(NurturingError::ContactNotFound(contact_id))?;
        let cap = cap_for(&contact, global.as_ref());
        let set = contact
            .frequency
            .map(|(_, set)| set)
            .or(global.map(|(_, set)| set));
        let times = cap_times(&unit.sends_of_contact(contact_id).await?);
        let next_allowed = cap.next_allowed(&times, now);
        Ok(pb::FrequencyCap {
            contact_id: contact_id.to_string(),
            policy: Some(policy_pb(&cap, set)),
            overridden: contact.frequency.is_some(),
            sends_in_window: times
                .iter()
                .filter(|sent| **sent > now - cap.window && **sent <= now)
                .count() as u32,
            last_send_time: times.iter().max().copied().map(to_timestamp),
            next_allowed_time: (next_allowed > now).then(|| to_timestamp(next_allowed)),
        })
    }

    pub(crate) async fn handle_get_frequency_cap(
        &self,
        request: pb::GetFrequencyCapRequest,
    ) -> Result<pb::GetFrequencyCapResponse, NurturingError> {
        let contact_id = if request.contact_id.trim().is_empty() {
            None
        } else {
            Some(validate::required_uuid("contact_id", &request.contact_id)?)
        };
        let mut unit = self.nurturing.store.read().await?;
        Ok(pb::GetFrequencyCapResponse {
            cap: Some(Self::cap_of(&mut *unit, contact_id, self.now()).await?),
        })
    }

    pub(crate) async fn handle_set_frequency_policy(
        &self,
        request: pb::SetFrequencyPolicyRequest,
    ) -> Result<pb::SetFrequencyPolicyResponse, NurturingError> {
        let mut violations = FieldViolations::new();
        let contact_id = (!request.contact_id.trim().is_empty())
            .then(|| validate::uuid(&mut violations, "contact_id", &request.contact_id))
            .flatten();
        let defaults = FrequencyCap::default();
        let policy = match request.policy.as_ref() {
            None if request.contact_id.trim().is_empty() => {
                violations.add("policy", "is required for the global policy");
                None
            }
            None => None,
            Some(policy) => {
                if policy.max_sends == 0 {
                    violations.add("policy.max_sends", "must be at least 1");
                }
                Some(FrequencyCap {
                    max_sends: policy.max_sends,
                    window: policy_duration(
                        &mut violations,
                        "policy.window",
                        policy.window.as_ref(),
                        defaults.window,
                    ),
                    min_gap: policy_duration(
                        &mut violations,
                        "policy.min_gap",
                        policy.min_gap.as_ref(),
                        defaults.min_gap,
                    ),
                })
            }
        };
        let key = key_of(&mut violations, &request.idempotency_key, &request, |r| {
            r.idempotency_key.clear()
        });
        violations.into_result()?;
        let now = self.now();
        let mut unit = match self.begin::<pb::SetFrequencyPolicyResponse>(&key).await? {
            Ok(unit) => unit,
            Err(answer) => return Ok(answer),
        };
        match (contact_id, policy) {
            (Some(contact_id), policy) => {
                if unit.contact(contact_id).await?.is_none() {
                    return Err(NurturingError::ContactNotFound(contact_id));
                }
                unit.set_contact_frequency(contact_id, policy.map(|cap| (cap, now)))
                    .await?;
            }
            (None, Some(policy)) => unit.set_frequency_policy(&policy, now).await?,
            (None, None) => {
                return Err(StorageError::Corrupt("a validated policy went missing".into()).into());
            }
        }
        let answer = pb::SetFrequencyPolicyResponse {
            cap: Some(Self::cap_of(&mut *unit, contact_id, now).await?),
        };
        Self::finish(unit, &key, &answer).await?;
        Ok(answer)
    }
}

/// A change of an enrollment's state by hand.
#[derive(Clone, Copy)]
enum Change {
    Pause,
    Resume,
    Stop,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Self::Pause => "PauseEnrollment",
            Self::Resume => "ResumeEnrollment",
            Self::Stop => "StopEnrollment",
        }
    }
}
