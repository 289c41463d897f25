//! The nurture engine: enrolls contacts, and for each due enrollment picks the next item of
//! the contact's (role, stage) cell, renders and sends the mail, and waits for a reaction.
//! Enrollments and their due times live in the database; a worker claims a due enrollment
//! with a row lock that other workers skip, writes its send as pending, and delivers it,
//! so several replicas never send one try twice and a crash leaves the pending send to be
//! delivered again.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::Arc,
    time::Duration as StdDuration,
};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use leadflow_bus::new_envelope;
use leadflow_domain::{
    BuyingStage, LeadClass,
    nurture::{FrequencyCap, NextMove, NurturePolicy, Offer, Progress, next_offer},
};
use leadflow_platform::{links::LinkUrls, time::Clock};
use leadflow_proto::{
    common::v1 as common,
    events::v1::{self as events, ConsentState, event_envelope::Payload},
    nurturing::v1 as pb,
};
use leadflow_storage::StorageError;
use lettre::message::Mailbox;
use tokio::{sync::Mutex, task::JoinSet};
use uuid::Uuid;

use crate::{
    content::ContentItem,
    mail::{
        ContactFields, ItemFields, LeadFields, MailTemplate, MailTransport, MergeFields,
        NurtureMail,
    },
    records::{
        ContactFacts, EnrollmentFilter, EnrollmentRecord, NurtureStore, NurtureUnit, SendRecord,
    },
    repository::{ContentFilter, ContentRepository},
    track_repository::TrackRepository,
    tracks::{TrackPolicy, TrackVersion},
};

/// The producer name nurturing's events carry.
pub const PRODUCER: &str = "nurturing";

/// The consent purpose nurture mail goes out on.
pub const NURTURE_PURPOSE: &str = "nurture-email";

/// How long a claimed send may take to reach the relay before another worker takes it
/// over: longer than any SMTP exchange, short enough that a crash delays a mail little.
pub const CLAIM_LEASE: Duration = Duration::minutes(10);

/// How long the links of a nurture mail keep working: people open old mails.
const LINK_LIFETIME: Duration = Duration::days(730);

/// How often the scheduler looks for due enrollments.
const SCHEDULER_TICK: StdDuration = StdDuration::from_secs(1);

/// The most enrollments one scheduler pass handles; the next pass goes on.
pub const SCHEDULER_BATCH: u32 = 100;

/// How many contacts' due enrollments the running scheduler works on at once. Each mail
/// waits on two commits and the relay in turn, so a backlog goes out at the pace of this
/// many replicas; each worker holds at most one database connection at a time.
const SCHEDULER_WORKERS: usize = 8;

/// The most library items read for one cell choice, pages of this size.
const LIBRARY_PAGE: u32 = 500;

/// How nurture mails are addressed, linked and delivered.
#[derive(Debug, Clone)]
pub struct Mailer {
    /// The sender.
    pub from: Mailbox,
    /// Signs the tracked links, the open pixel and the unsubscribe link.
    pub links: LinkUrls,
    /// Where mails go: an SMTP relay, or `.eml` files in the embedded mode.
    pub transport: Arc<dyn MailTransport>,
}

/// Nurturing's records, library, tracks, clock and mailer, shared by the API, the event
/// handler and the scheduler.
#[derive(Debug, Clone)]
pub struct Nurturing {
    pub(crate) store: Arc<dyn NurtureStore>,
    pub(crate) content: Arc<dyn ContentRepository>,
    pub(crate) tracks: Arc<dyn TrackRepository>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) mailer: Arc<Mailer>,
}

/// What one scheduler pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerReport {
    /// Mails the relay accepted.
    pub sent: usize,
    /// Enrollments that ran out of tries.
    pub exhausted: usize,
    /// Enrollments flagged for want of content.
    pub flagged: usize,
    /// Enrollments put off by quiet hours or the frequency cap.
    pub deferred: usize,
    /// Enrollments stopped (no confirmed opt-in, refused address).
    pub stopped: usize,
    /// Mails that could not be delivered now and wait for a retry.
    pub failed: usize,
}

/// The buying stage a lead class is nurtured at; a C-lead or one scoring has not classified
/// yet starts at the beginning of the journey.
pub fn stage_of(class: Option<LeadClass>) -> common::BuyingStage {
    match class {
        Some(LeadClass::A) => common::BuyingStage::ChoosingOffer,
        Some(LeadClass::B3) => common::BuyingStage::RequestingOffers,
        Some(LeadClass::B2) => common::BuyingStage::SolutionSearch,
        Some(LeadClass::B1 | LeadClass::C) | None => common::BuyingStage::ProblemAwareness,
    }
}

fn domain_stage(stage: common::BuyingStage) -> Option<BuyingStage> {
    match stage {
        common::BuyingStage::ProblemAwareness => Some(BuyingStage::ProblemAwareness),
        common::BuyingStage::SolutionSearch => Some(BuyingStage::SolutionSearch),
        common::BuyingStage::RequestingOffers => Some(BuyingStage::RequestingOffers),
        common::BuyingStage::ChoosingOffer => Some(BuyingStage::ChoosingOffer),
        common::BuyingStage::Unspecified => None,
    }
}

/// The engine's timing of a track version.
pub fn nurture_policy(policy: &TrackPolicy) -> NurturePolicy {
    NurturePolicy {
        cadence: policy.cadence,
        max_interval: policy.max_interval,
        reaction_window: policy.reaction_window,
        max_attempts: policy.max_attempts,
        quiet_hours: policy.quiet_hours,
    }
}

/// Where the enrollment stands between mails.
pub fn progress(enrollment: &EnrollmentRecord) -> Progress {
    Progress {
        step: enrollment.step,
        attempt: enrollment.attempt,
        last_send: enrollment.last_send_time,
        last_reaction: enrollment.last_reaction_time,
    }
}

/// The time zone quiet hours are read in for `contact` under `policy`.
fn time_zone(policy: &TrackPolicy, contact: &ContactFacts) -> Tz {
    let track_zone = policy.default_time_zone.parse::<Tz>().unwrap_or(Tz::UTC);
    match policy.time_zone_mode {
        pb::TimeZoneMode::Track => track_zone,
        pb::TimeZoneMode::Contact | pb::TimeZoneMode::Unspecified => {
            contact.time_zone.parse::<Tz>().unwrap_or(track_zone)
        }
    }
}

/// The frequency policy in force for `contact`: its own, or the global one, or the
/// defaults.
pub fn cap_for(
    contact: &ContactFacts,
    global: Option<&(FrequencyCap, DateTime<Utc>)>,
) -> FrequencyCap {
    contact
        .frequency
        .map(|(cap, _)| cap)
        .or(global.map(|(cap, _)| *cap))
        .unwrap_or_default()
}

/// When the sends a contact got count against its cap: delivered ones, and ones on their
/// way to the relay.
pub fn cap_times(sends: &[SendRecord]) -> Vec<DateTime<Utc>> {
    sends
        .iter()
        .filter_map(|send| match send.state {
            pb::SendState::Sent => send.send_time,
            pb::SendState::Pending => Some(send.claim_time),
            _ => None,
        })
        .collect()
}

/// The content kind's name as a merge field shows it, e.g. "case-study".
pub fn kind_name(kind: pb::ContentKind) -> String {
    kind.as_str_name()
        .trim_start_matches("CONTENT_KIND_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Sets the enrollment's cell stage; a flagged enrollment whose stage changed may find
/// content again, so it becomes active and due at `now`. True when anything changed.
pub fn move_to_stage(
    enrollment: &mut EnrollmentRecord,
    stage: common::BuyingStage,
    now: DateTime<Utc>,
) -> bool {
    if enrollment.stage == stage {
        return false;
    }
    enrollment.stage = stage;
    if enrollment.state == pb::EnrollmentState::Flagged {
        enrollment.enter(pb::EnrollmentState::Active, "stage changed", now);
        enrollment.next_due_time = Some(now);
    }
    true
}

/// Cancels the enrollment's claimed send that has not reached the relay.
pub async fn cancel_pending(
    unit: &mut dyn NurtureUnit,
    enrollment_id: Uuid,
) -> Result<(), StorageError> {
    if let Some(mut send) = unit.pending_send(enrollment_id).await? {
        send.state = pb::SendState::Cancelled;
        unit.update_send(&send).await?;
    }
    Ok(())
}

/// Ends or pauses an open enrollment: `state` for `reason`, its pending send cancelled.
pub async fn halt(
    unit: &mut dyn NurtureUnit,
    enrollment: &mut EnrollmentRecord,
    state: pb::EnrollmentState,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    cancel_pending(unit, enrollment.enrollment_id).await?;
    enrollment.enter(state, reason, now);
    unit.update_enrollment(enrollment).await
}

/// Makes a paused or flagged enrollment active with its next step due at `now`.
pub async fn reactivate(
    unit: &mut dyn NurtureUnit,
    enrollment: &mut EnrollmentRecord,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    enrollment.enter(pb::EnrollmentState::Active, reason, now);
    enrollment.next_due_time = Some(now);
    unit.update_enrollment(enrollment).await
}

/// A new active enrollment of `contact` in `version`, its first mail due at `start`, at the
/// stage of the lead's class for the track's product.
pub async fn enroll(
    unit: &mut dyn NurtureUnit,
    contact: &ContactFacts,
    version: &TrackVersion,
    product: &str,
    start: DateTime<Utc>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<EnrollmentRecord>, StorageError> {
    let class = unit
        .lead_products(contact.lead_id)
        .await?
        .into_iter()
        .find(|(known, _)| known == product)
        .and_then(|(_, class)| class);
    let enrollment = EnrollmentRecord {
        enrollment_id: Uuid::now_v7(),
        contact_id: contact.contact_id,
        lead_id: contact.lead_id,
        product: product.to_owned(),
        track_id: version.track_id,
        track_version: version.version,
        state: pb::EnrollmentState::Active,
        state_reason: reason.to_owned(),
        buyer_role: contact.buyer_role.clone(),
        stage: stage_of(class),
        step: 0,
        attempt: 0,
        next_due_time: Some(start),
        last_send_time: None,
        last_reaction_time: None,
        enroll_time: now,
        state_change_time: now,
        end_time: None,
    };
    Ok(unit
        .insert_enrollment(&enrollment)
        .await?
        .then_some(enrollment))
}

/// Appends nurturing's events to the unit's outbox.
pub async fn publish(
    unit: &mut dyn NurtureUnit,
    payloads: Vec<Payload>,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    for payload in payloads {
        let lead_id = match &payload {
            Payload::EmailSent(sent) => sent.lead_id.clone(),
            Payload::NurtureExhausted(exhausted) => exhausted.lead_id.clone(),
            _ => String::new(),
        };
        unit.publish(&new_envelope(PRODUCER, &lead_id, payload, now))
            .await?;
    }
    Ok(())
}

/// What one scheduler pass reads once for all its enrollments: track versions never
/// change, and a cell's library is read when the pass first needs it (an item created
/// during the pass is offered from the next one). Shared by the pass's workers; none of
/// them waits for it while it holds a unit, so the embedded store's one connection is
/// never waited for in a circle.
#[derive(Default)]
struct PassReads {
    versions: HashMap<(Uuid, u32), Arc<TrackVersion>>,
    libraries: HashMap<(String, common::BuyingStage), Arc<Vec<ContentItem>>>,
}

/// What one scheduler pass did, and whether it took a full batch, so that more may be due.
struct Pass {
    report: SchedulerReport,
    full: bool,
}

impl SchedulerReport {
    fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.exhausted += other.exhausted;
        self.flagged += other.flagged;
        self.deferred += other.deferred;
        self.stopped += other.stopped;
        self.failed += other.failed;
    }
}

/// What the scheduler decided for one claimed enrollment.
enum Decision {
    /// A send was claimed: deliver it.
    Deliver(Uuid),
    /// The enrollment ended, was flagged or waits; nothing to deliver.
    Done(Outcome),
    /// Another worker holds it or it is no longer due.
    Skipped,
}

#[derive(Clone, Copy)]
enum Outcome {
    Exhausted,
    Flagged,
    Deferred,
    Stopped,
}

impl Nurturing {
    /// The engine over its records, library and tracks, reading time from `clock` and
    /// sending through `mailer`.
    pub fn new(
        store: Arc<dyn NurtureStore>,
        content: Arc<dyn ContentRepository>,
        tracks: Arc<dyn TrackRepository>,
        clock: Arc<dyn Clock>,
        mailer: Mailer,
    ) -> Self {
        Self {
            store,
            content,
            tracks,
            clock,
            mailer: Arc::new(mailer),
        }
    }

    /// The active items of `product` at `stage`, in the order they are offered.
    async fn library(
        &self,
        product: &str,
        stage: common::BuyingStage,
    ) -> Result<Vec<ContentItem>, StorageError> {
        let filter = ContentFilter {
            product: Some(product.to_owned()),
            stage: Some(stage),
            ..ContentFilter::default()
        };
        let mut items = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .content
                .list_items(&filter, after, LIBRARY_PAGE)
                .await?;
            items.extend(page.items);
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// The track version an enrollment keeps.
    pub(crate) async fn version_of(
        &self,
        track_id: Uuid,
        version: u32,
    ) -> Result<TrackVersion, StorageError> {
        self.tracks
            .get_track_version(track_id, version)
            .await?
            .ok_or_else(|| {
                StorageError::Corrupt(format!("track {track_id} has lost its version {version}"))
            })
    }

    /// A track version, read once per pass.
    async fn pass_version(
        &self,
        reads: &Mutex<PassReads>,
        track_id: Uuid,
        version: u32,
    ) -> Result<Arc<TrackVersion>, StorageError> {
        let mut reads = reads.lock().await;
        if let Some(known) = reads.versions.get(&(track_id, version)) {
            return Ok(known.clone());
        }
        let read = Arc::new(self.version_of(track_id, version).await?);
        reads.versions.insert((track_id, version), read.clone());
        Ok(read)
    }

    /// A cell's library, read once per pass.
    async fn pass_library(
        &self,
        reads: &Mutex<PassReads>,
        product: &str,
        stage: common::BuyingStage,
    ) -> Result<Arc<Vec<ContentItem>>, StorageError> {
        let mut reads = reads.lock().await;
        let key = (product.to_owned(), stage);
        if let Some(known) = reads.libraries.get(&key) {
            return Ok(known.clone());
        }
        let read = Arc::new(self.library(product, stage).await?);
        reads.libraries.insert(key, read.clone());
        Ok(read)
    }

    /// One scheduler pass: every enrollment due now gets its next mail, its alternative
    /// offer, its end or a later due time, one after another.
    pub async fn run_due(&self) -> Result<SchedulerReport, StorageError> {
        Ok(self.run_pass(1).await?.report)
    }

    /// One scheduler pass with the due enrollments of up to `workers` contacts in flight at
    /// once. A contact's enrollments go one after another, so that each sees the sends of
    /// the one before against the contact's frequency cap.
    async fn run_pass(&self, workers: usize) -> Result<Pass, StorageError> {
        let now = self.clock.now();
        // One read for the whole batch; a peek gone stale by its claim is skipped there.
        let (peeks, full) = {
            let mut unit = self.store.read().await?;
            let due = unit.due_enrollments(now, SCHEDULER_BATCH).await?;
            let full = due.len() == SCHEDULER_BATCH as usize;
            let mut peeks = Vec::with_capacity(due.len());
            for enrollment_id in due {
                if let Some(peek) = unit.enrollment(enrollment_id, false).await? {
                    peeks.push(peek);
                }
            }
            (peeks, full)
        };
        let reads = Arc::new(Mutex::new(PassReads::default()));
        let mut report = SchedulerReport::default();
        if workers <= 1 {
            for peek in peeks {
                report.add(&self.handle_due(peek, &reads).await?);
            }
            return Ok(Pass { report, full });
        }
        let mut groups = by_contact(peeks).into_iter();
        let mut tasks = JoinSet::new();
        loop {
            while tasks.len() < workers
                && let Some(group) = groups.next()
            {
                let engine = self.clone();
                let reads = reads.clone();
                tasks.spawn(async move {
                    let mut report = SchedulerReport::default();
                    for peek in group {
                        report.add(&engine.handle_due(peek, &reads).await?);
                    }
                    Ok::<_, StorageError>(report)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined {
                Ok(done) => report.add(&done?),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled: the runtime shuts down; what is claimed waits for its lease.
                Err(_) => break,
            }
        }
        Ok(Pass { report, full })
    }

    /// Advances one due enrollment and delivers the send it claimed; the report counts it.
    async fn handle_due(
        &self,
        peek: EnrollmentRecord,
        reads: &Mutex<PassReads>,
    ) -> Result<SchedulerReport, StorageError> {
        let mut report = SchedulerReport::default();
        match self.advance(peek, reads).await? {
            Decision::Deliver(send_id) => {
                if self.deliver(send_id, reads).await? {
                    report.sent += 1;
                } else {
                    report.failed += 1;
                }
            }
            Decision::Done(Outcome::Exhausted) => report.exhausted += 1,
            Decision::Done(Outcome::Flagged) => report.flagged += 1,
            Decision::Done(Outcome::Deferred) => report.deferred += 1,
            Decision::Done(Outcome::Stopped) => report.stopped += 1,
            Decision::Skipped => {}
        }
        Ok(report)
    }

    /// Decides what a due enrollment does now and claims its send.
    async fn advance(
        &self,
        peek: EnrollmentRecord,
        reads: &Mutex<PassReads>,
    ) -> Result<Decision, StorageError> {
        let enrollment_id = peek.enrollment_id;
        // What the decision reads from other repositories is read before the unit begins:
        // the embedded store has one connection, which the unit holds.
        let version = self
            .pass_version(reads, peek.track_id, peek.track_version)
            .await?;
        let library = self.pass_library(reads, &peek.product, peek.stage).await?;

        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let Some(mut enrollment) = unit.claim_due(enrollment_id, now).await? else {
            return Ok(Decision::Skipped);
        };
        if enrollment.stage != peek.stage {
            // The stage moved since the library was read: the next pass reads the new cell.
            return Ok(Decision::Skipped);
        }
        if let Some(mut pending) = unit.pending_send(enrollment_id).await? {
            // A worker claimed this try and did not finish: deliver it again, as the same
            // send with the same Message-ID.
            pending.claim_time = now;
            enrollment.next_due_time = Some(now + CLAIM_LEASE);
            unit.update_send(&pending).await?;
            unit.update_enrollment(&enrollment).await?;
            unit.commit().await?;
            return Ok(Decision::Deliver(pending.send_id));
        }
        let Some(contact) = unit.contact(enrollment.contact_id).await? else {
            return Err(StorageError::Corrupt(format!(
                "enrollment {enrollment_id} has no contact"
            )));
        };
        if contact.consent != ConsentState::Confirmed {
            halt(
                &mut *unit,
                &mut enrollment,
                pb::EnrollmentState::Stopped,
                "no confirmed opt-in",
                now,
            )
            .await?;
            unit.commit().await?;
            return Ok(Decision::Done(Outcome::Stopped));
        }
        let policy = nurture_policy(&version.policy);
        let (step, attempt) = match progress(&enrollment).next_move(&policy) {
            NextMove::Step { step } => (step, 1),
            NextMove::Alternative { step, attempt } => (step, attempt),
            NextMove::Exhausted => {
                let tries = enrollment.attempt;
                enrollment.enter(
                    pb::EnrollmentState::Exhausted,
                    &format!("no reaction to {tries} tries: recycled"),
                    now,
                );
                unit.update_enrollment(&enrollment).await?;
                let exhausted = events::NurtureExhausted {
                    enrollment_id: enrollment.enrollment_id.to_string(),
                    contact_id: enrollment.contact_id.to_string(),
                    lead_id: enrollment.lead_id.to_string(),
                    product: enrollment.product.clone(),
                    track_id: enrollment.track_id.to_string(),
                    track_version: enrollment.track_version,
                    tries,
                };
                publish(&mut *unit, vec![Payload::NurtureExhausted(exhausted)], now).await?;
                unit.commit().await?;
                tracing::info!(%enrollment_id, "nurture exhausted: lead recycled");
                return Ok(Decision::Done(Outcome::Exhausted));
            }
        };
        let contact_sends = unit.sends_of_contact(contact.contact_id).await?;
        let global = unit.frequency_policy().await?;
        let cap = cap_for(&contact, global.as_ref());
        let zone = time_zone(&version.policy, &contact);
        let mut allowed = cap.next_allowed(&cap_times(&contact_sends), now);
        if let Some(quiet) = policy.quiet_hours {
            allowed = quiet.next_allowed(allowed, zone);
        }
        if allowed > now {
            enrollment.next_due_time = Some(allowed);
            unit.update_enrollment(&enrollment).await?;
            unit.commit().await?;
            return Ok(Decision::Done(Outcome::Deferred));
        }
        let received: Vec<Uuid> = contact_sends
            .iter()
            .filter(|send| matches!(send.state, pb::SendState::Sent | pb::SendState::Pending))
            .map(|send| send.content_item_id)
            .collect();
        let offers: Vec<Offer<Uuid>> = library
            .iter()
            .filter_map(|item| {
                Some(Offer {
                    id: item.content_item_id,
                    buyer_roles: item.item.buyer_roles.clone(),
                    stage: domain_stage(item.item.stage)?,
                    language: item.item.language.clone(),
                })
            })
            .collect();
        let Some(stage) = domain_stage(enrollment.stage) else {
            return Err(StorageError::Corrupt(format!(
                "enrollment {enrollment_id} has no stage"
            )));
        };
        let fallback = version.policy.fallback_language.clone().unwrap_or_default();
        let Some(offer) = next_offer(
            &offers,
            &enrollment.buyer_role,
            stage,
            &contact.language,
            &fallback,
            &received,
        ) else {
            halt(
                &mut *unit,
                &mut enrollment,
                pb::EnrollmentState::Flagged,
                "no content left in the cell",
                now,
            )
            .await?;
            unit.commit().await?;
            tracing::info!(%enrollment_id, role = %enrollment.buyer_role, "nurture cell empty: flagged");
            return Ok(Decision::Done(Outcome::Flagged));
        };
        let item = library
            .iter()
            .find(|item| item.content_item_id == offer.id)
            .ok_or_else(|| StorageError::Corrupt("an offer outside its library".to_owned()))?;
        let send = SendRecord {
            send_id: Uuid::now_v7(),
            enrollment_id: Some(enrollment_id),
            contact_id: Some(contact.contact_id),
            lead_id: enrollment.lead_id,
            product: enrollment.product.clone(),
            track_id: enrollment.track_id,
            track_version: enrollment.track_version,
            step,
            attempt,
            content_item_id: item.content_item_id,
            template_id: template_for(&version.policy, item.item.kind, attempt),
            buyer_role: enrollment.buyer_role.clone(),
            stage: enrollment.stage,
            state: pb::SendState::Pending,
            message_id: String::new(),
            due_time: enrollment.next_due_time.unwrap_or(now),
            claim_time: now,
            send_time: None,
            first_open_time: None,
            first_click_time: None,
            open_count: 0,
            click_count: 0,
            failure_reason: String::new(),
        };
        if !unit.insert_send(&send).await? {
            // Only a lost update could get here: the try was claimed before.
            return Err(StorageError::Corrupt(format!(
                "enrollment {enrollment_id} already has a send for step {step}, try {attempt}"
            )));
        }
        enrollment.step = step;
        enrollment.attempt = attempt;
        enrollment.next_due_time = Some(now + CLAIM_LEASE);
        unit.update_enrollment(&enrollment).await?;
        unit.commit().await?;
        Ok(Decision::Deliver(send.send_id))
    }

    /// Renders and delivers a claimed send, then records it as sent; true when the relay
    /// took it. A transient failure leaves it pending for the next claim after its lease; a
    /// permanent one fails the send and stops the enrollment.
    async fn deliver(&self, send_id: Uuid, reads: &Mutex<PassReads>) -> Result<bool, StorageError> {
        let (send, contact) = {
            let mut unit = self.store.read().await?;
            let Some(send) = unit.send(send_id, false).await? else {
                return Ok(false);
            };
            let contact = match send.contact_id {
                Some(contact_id) => unit.contact(contact_id).await?,
                None => None,
            };
            (send, contact)
        };
        let Some(contact) = contact else {
            return Ok(false);
        };
        if send.state != pb::SendState::Pending || contact.consent != ConsentState::Confirmed {
            return Ok(false);
        }
        let version = self
            .pass_version(reads, send.track_id, send.track_version)
            .await?;
        let mail = match self.render(&send, &contact).await {
            Ok(mail) => mail,
            Err(reason) => {
                self.fail(send_id, &reason).await?;
                return Ok(false);
            }
        };
        match self.mailer.transport.send(&mail).await {
            Ok(()) => {}
            Err(error) if error.is_transient() => {
                tracing::warn!(%send_id, %error, "nurture mail not delivered; retried after the lease");
                return Ok(false);
            }
            Err(error) => {
                self.fail(send_id, &error.to_string()).await?;
                return Ok(false);
            }
        }
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let enrollment = match send.enrollment_id {
            Some(enrollment_id) => unit.enrollment(enrollment_id, true).await?,
            None => None,
        };
        let Some(mut enrollment) = enrollment else {
            // Only an erasure deletes enrollments: the contact was erased while its mail
            // was on the way, and no copy of it may stay behind.
            drop(unit);
            if let Err(error) = self.mailer.transport.forget(&[send_id]).await {
                tracing::warn!(%send_id, %error, "mail of an erased contact not forgotten");
            }
            return Ok(false);
        };
        let Some(mut send) = unit.send(send_id, true).await? else {
            return Ok(false);
        };
        if send.state == pb::SendState::Sent {
            return Ok(true);
        }
        // Delivered is delivered, even when a stop cancelled the send meanwhile.
        send.state = pb::SendState::Sent;
        send.message_id = mail.message_id.clone();
        send.send_time = Some(now);
        unit.update_send(&send).await?;
        enrollment.last_send_time = Some(now);
        if enrollment.state == pb::EnrollmentState::Active {
            enrollment.next_due_time =
                Some(progress(&enrollment).next_due(&nurture_policy(&version.policy)));
        }
        unit.update_enrollment(&enrollment).await?;
        let sent = events::EmailSent {
            send_id: send.send_id.to_string(),
            enrollment_id: optional_id(send.enrollment_id),
            contact_id: optional_id(send.contact_id),
            lead_id: send.lead_id.to_string(),
            product: send.product.clone(),
            content_item_id: send.content_item_id.to_string(),
            track_id: send.track_id.to_string(),
            track_version: send.track_version,
            step: send.step,
            attempt: send.attempt,
        };
        publish(&mut *unit, vec![Payload::EmailSent(sent)], now).await?;
        unit.commit().await?;
        tracing::info!(%send_id, step = send.step, attempt = send.attempt, "nurture mail sent");
        Ok(true)
    }

    /// Records a send the relay refused for good and stops its enrollment: mailing an
    /// address that does not take mail only harms the sender's reputation.
    async fn fail(&self, send_id: Uuid, reason: &str) -> Result<(), StorageError> {
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let Some(enrollment_id) = unit
            .send(send_id, false)
            .await?
            .and_then(|send| send.enrollment_id)
        else {
            return Ok(());
        };
        // Enrollment first, then send: the order every unit locks them in.
        let enrollment = unit.enrollment(enrollment_id, true).await?;
        let Some(mut send) = unit.send(send_id, true).await? else {
            return Ok(());
        };
        if send.state != pb::SendState::Pending {
            return Ok(());
        }
        if let Some(mut enrollment) = enrollment
            && enrollment.is_open()
        {
            enrollment.enter(
                pb::EnrollmentState::Stopped,
                &format!("mail refused: {reason}"),
                now,
            );
            unit.update_enrollment(&enrollment).await?;
        }
        send.state = pb::SendState::Failed;
        send.failure_reason = reason.to_owned();
        unit.update_send(&send).await?;
        unit.commit().await?;
        tracing::warn!(%send_id, reason, "nurture mail refused");
        Ok(())
    }

    /// The mail of a send: its template filled in for the contact and item, with tracked
    /// links, and the open pixel and unsubscribe link added where the template has none.
    async fn render(
        &self,
        send: &SendRecord,
        contact: &ContactFacts,
    ) -> Result<NurtureMail, String> {
        let storage = |error: StorageError| error.to_string();
        let item = self
            .content
            .get_item(send.content_item_id)
            .await
            .map_err(storage)?
            .ok_or("the content item is gone")?;
        let stored = self
            .tracks
            .get_template(send.template_id)
            .await
            .map_err(storage)?
            .ok_or("the template is gone")?;
        let template = MailTemplate::compile(
            &stored.template.subject,
            &stored.template.html_body,
            &stored.template.text_body,
        )
        .map_err(|errors| errors.to_string())?;
        let links = &self.mailer.links;
        let expires = self.clock.now() + LINK_LIFETIME;
        let unsubscribe_url =
            links.unsubscribe(contact.contact_id, send.send_id, NURTURE_PURPOSE, expires);
        let open_pixel_url = links.open(contact.contact_id, send.send_id, expires);
        let fields = MergeFields {
            contact: ContactFields {
                first_name: contact.first_name.clone(),
                last_name: contact.last_name.clone(),
                email: contact.email.clone(),
                job_title: contact.job_title.clone(),
            },
            lead: LeadFields {
                company_name: contact.company_name.clone(),
            },
            item: ItemFields {
                title: item.item.title.clone(),
                url: links
                    .click(contact.contact_id, send.send_id, &item.item.url, expires)
                    .map_err(|error| format!("the item's URL: {error}"))?,
                summary: item.item.summary.clone(),
                kind: kind_name(item.item.kind),
            },
            unsubscribe_url: unsubscribe_url.clone(),
            open_pixel_url: open_pixel_url.clone(),
        };
        let mut rendered = template
            .render(&fields)
            .map_err(|error| error.to_string())?;
        // The escaped form is what an HTML template holds after rendering the URL.
        let escaped_unsubscribe = unsubscribe_url.replace('&', "&amp;");
        if !rendered.html.contains(&escaped_unsubscribe)
            && !rendered.html.contains(&unsubscribe_url)
        {
            rendered.html.push_str(&format!(
                "\n<p style=\"font-size:small\"><a href=\"{escaped_unsubscribe}\">Unsubscribe</a></p>"
            ));
        }
        if !rendered.html.contains(&open_pixel_url) {
            rendered.html.push_str(&format!(
                "\n<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\">",
                open_pixel_url.replace('&', "&amp;")
            ));
        }
        if !rendered.text.contains(&unsubscribe_url) {
            rendered
                .text
                .push_str(&format!("\n\nUnsubscribe: {unsubscribe_url}\n"));
        }
        let to = format!("{} {}", contact.first_name, contact.last_name);
        let to = Mailbox::new(
            Some(to.trim().to_owned()).filter(|name| !name.is_empty()),
            contact
                .email
                .parse()
                .map_err(|error| format!("the contact's email: {error}"))?,
        );
        Ok(NurtureMail::new(
            send.send_id,
            self.mailer.from.clone(),
            to,
            rendered,
            unsubscribe_url,
        ))
    }

    /// Makes the flagged enrollments `item` fits active and due now: they waited for
    /// content of its cell. Returns how many woke; those it does not fit after all (another
    /// language, received before) are flagged again by the scheduler.
    pub(crate) async fn wake_flagged(&self, item: &ContentItem) -> Result<usize, StorageError> {
        if item.retired {
            return Ok(0);
        }
        let filter = EnrollmentFilter {
            product: Some(item.item.product.clone()),
            state: Some(pb::EnrollmentState::Flagged),
            ..EnrollmentFilter::default()
        };
        let mut waiting = Vec::new();
        {
            let mut unit = self.store.read().await?;
            let mut after = None;
            loop {
                let page = unit.list_enrollments(&filter, after, LIBRARY_PAGE).await?;
                after = page.last().map(|enrollment| enrollment.enrollment_id);
                let full = page.len() == LIBRARY_PAGE as usize;
                waiting.extend(page.into_iter().filter(|enrollment| {
                    enrollment.stage == item.item.stage
                        && (item.item.buyer_roles.is_empty()
                            || item
                                .item
                                .buyer_roles
                                .iter()
                                .any(|role| role.eq_ignore_ascii_case(&enrollment.buyer_role)))
                }));
                if !full {
                    break;
                }
            }
        }
        if waiting.is_empty() {
            return Ok(0);
        }
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let mut woken = 0;
        for waiting in waiting {
            if let Some(mut enrollment) = unit.enrollment(waiting.enrollment_id, true).await?
                && enrollment.state == pb::EnrollmentState::Flagged
            {
                reactivate(&mut *unit, &mut enrollment, "new content in its cell", now).await?;
                woken += 1;
            }
        }
        unit.commit().await?;
        Ok(woken)
    }

    /// Runs scheduler passes every second until `stop` turns true; while passes take full
    /// batches and get work done, the next one runs at once, so a backlog is not held to
    /// one batch a second.
    pub fn spawn_scheduler(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(SCHEDULER_TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
                while !*stop.borrow() {
                    match self.run_pass(SCHEDULER_WORKERS).await {
                        Ok(Pass { report, full }) => {
                            let idle = report == SchedulerReport::default();
                            if !idle {
                                tracing::info!(?report, "nurture scheduler pass");
                            }
                            // A full batch of skipped enrollments (another replica holds
                            // them) waits for the tick rather than spinning.
                            if !full || idle {
                                break;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "nurture scheduler pass failed; retrying");
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// The enrollments grouped by contact, each group in due order, the groups in the order of
/// their first enrollment.
fn by_contact(peeks: Vec<EnrollmentRecord>) -> Vec<Vec<EnrollmentRecord>> {
    let mut groups: Vec<Vec<EnrollmentRecord>> = Vec::new();
    let mut group_of: HashMap<Uuid, usize> = HashMap::new();
    for peek in peeks {
        match group_of.entry(peek.contact_id) {
            Entry::Occupied(index) => groups[*index.get()].push(peek),
            Entry::Vacant(slot) => {
                slot.insert(groups.len());
                groups.push(vec![peek]);
            }
        }
    }
    groups
}

/// The template of a try: the kind's own templates first, the alternative offer's from
/// the second try on.
fn template_for(policy: &TrackPolicy, kind: pb::ContentKind, attempt: u32) -> Uuid {
    let (offer, alternative) = policy
        .kind_templates
        .iter()
        .find(|templates| templates.kind == kind)
        .map_or(
            (
                policy.offer_template_id,
                policy.alternative_offer_template_id,
            ),
            |templates| {
                (
                    templates.offer_template_id,
                    templates.alternative_offer_template_id,
                )
            },
        );
    if attempt > 1 {
        alternative.unwrap_or(offer)
    } else {
        offer
    }
}

/// An id as the contracts carry it: empty when there is none.
pub(crate) fn optional_id(id: Option<Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}
