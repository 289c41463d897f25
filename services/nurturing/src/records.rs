//! Nurturing's records port for contacts, leads, enrollments, sends and the frequency
//! policy: a unit of work is one database transaction. `records_sql` implements it on
//! PostgreSQL and SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_bus::{Delivery, inbox::Recorded};
use leadflow_domain::{LeadClass, nurture::FrequencyCap};
use leadflow_proto::{
    common::v1 as common,
    events::v1::{ConsentState, EventEnvelope},
    nurturing::v1 as pb,
};
use leadflow_storage::{Begun, IdempotencyKey, StorageError};
use uuid::Uuid;

/// What nurturing knows of a contact, from capture's events.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactFacts {
    /// The contact.
    pub contact_id: Uuid,
    /// The lead (buying unit) it belongs to.
    pub lead_id: Uuid,
    /// Where mail goes.
    pub email: String,
    /// For the salutation.
    pub first_name: String,
    /// For the salutation.
    pub last_name: String,
    /// A merge field.
    pub job_title: String,
    /// The grid row its content comes from; empty when unknown.
    pub buyer_role: String,
    /// Its language (BCP 47), or empty.
    pub language: String,
    /// Its IANA time zone, or empty.
    pub time_zone: String,
    /// The lead's company, a merge field.
    pub company_name: String,
    /// The nurture-mail consent.
    pub consent: ConsentState,
    /// Its own frequency policy and when it was set, when it has one.
    pub frequency: Option<(FrequencyCap, DateTime<Utc>)>,
    /// When capture last told nurturing about it.
    pub update_time: DateTime<Utc>,
}

/// A contact's run through one version of a track.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentRecord {
    /// The enrollment.
    pub enrollment_id: Uuid,
    /// The contact.
    pub contact_id: Uuid,
    /// The contact's lead.
    pub lead_id: Uuid,
    /// The track's product.
    pub product: String,
    /// The track.
    pub track_id: Uuid,
    /// The version it keeps.
    pub track_version: u32,
    /// Where it stands.
    pub state: pb::EnrollmentState,
    /// Why it entered that state.
    pub state_reason: String,
    /// The grid row.
    pub buyer_role: String,
    /// The grid column.
    pub stage: common::BuyingStage,
    /// The current step from 1; 0 before the first mail.
    pub step: u32,
    /// The try within the step from 1; 0 before the first mail.
    pub attempt: u32,
    /// When the scheduler next looks at it; while a send is claimed, when the claim lapses.
    pub next_due_time: Option<DateTime<Utc>>,
    /// When the last mail went out.
    pub last_send_time: Option<DateTime<Utc>>,
    /// When the contact last opened or clicked one of its mails.
    pub last_reaction_time: Option<DateTime<Utc>>,
    /// When the contact was enrolled.
    pub enroll_time: DateTime<Utc>,
    /// When the state last changed.
    pub state_change_time: DateTime<Utc>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
}

impl EnrollmentRecord {
    /// Whether the enrollment may still send or resume.
    pub fn is_open(&self) -> bool {
        is_open(self.state)
    }

    /// Moves to `state` for `reason` at `now`; a final state ends the enrollment and an
    /// inactive one has nothing due.
    pub fn enter(&mut self, state: pb::EnrollmentState, reason: &str, now: DateTime<Utc>) {
        self.state = state;
        self.state_reason = reason.to_owned();
        self.state_change_time = now;
        if state != pb::EnrollmentState::Active {
            self.next_due_time = None;
        }
        if !is_open(state) {
            self.end_time = Some(now);
        }
    }
}

/// Whether an enrollment in `state` is open: active, paused, paused for sales or flagged.
pub fn is_open(state: pb::EnrollmentState) -> bool {
    matches!(
        state,
        pb::EnrollmentState::Active
            | pb::EnrollmentState::Paused
            | pb::EnrollmentState::PausedForSales
            | pb::EnrollmentState::Flagged
    )
}

/// One nurture mail: one try of one step of one enrollment.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRecord {
    /// The send; its links and pixel carry it.
    pub send_id: Uuid,
    /// The enrollment; `None` once the contact was erased (with its enrollments).
    pub enrollment_id: Option<Uuid>,
    /// The contact; `None` once it was erased.
    pub contact_id: Option<Uuid>,
    /// The contact's lead.
    pub lead_id: Uuid,
    /// The track's product.
    pub product: String,
    /// The track.
    pub track_id: Uuid,
    /// The enrollment's track version.
    pub track_version: u32,
    /// The step from 1.
    pub step: u32,
    /// The try from 1.
    pub attempt: u32,
    /// The item offered.
    pub content_item_id: Uuid,
    /// The template it is rendered with.
    pub template_id: Uuid,
    /// The grid row the item was chosen for.
    pub buyer_role: String,
    /// The grid column the item was chosen for.
    pub stage: common::BuyingStage,
    /// Where the mail stands.
    pub state: pb::SendState,
    /// Its Message-ID, once rendered.
    pub message_id: String,
    /// When it was due.
    pub due_time: DateTime<Utc>,
    /// When a worker claimed it.
    pub claim_time: DateTime<Utc>,
    /// When the relay accepted it.
    pub send_time: Option<DateTime<Utc>>,
    /// The first open.
    pub first_open_time: Option<DateTime<Utc>>,
    /// The first click.
    pub first_click_time: Option<DateTime<Utc>>,
    /// Opens tracked.
    pub open_count: u32,
    /// Clicks tracked.
    pub click_count: u32,
    /// Why the relay refused it.
    pub failure_reason: String,
}

/// Which enrollments a listing returns; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnrollmentFilter {
    /// Only this contact's.
    pub contact_id: Option<Uuid>,
    /// Only this track's.
    pub track_id: Option<Uuid>,
    /// Only this product's.
    pub product: Option<String>,
    /// Only in this state.
    pub state: Option<pb::EnrollmentState>,
}

/// Which sends a listing returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SendFilter {
    /// The contact.
    pub contact_id: Uuid,
    /// Only this enrollment's.
    pub enrollment_id: Option<Uuid>,
    /// Only sends due at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Only sends due before this.
    pub to: Option<DateTime<Utc>>,
}

/// What erasing a contact changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactErasure {
    /// How many of its enrollments were deleted.
    pub deleted_enrollments: u64,
    /// Its sends, now anonymised: their mails may still be kept somewhere.
    pub anonymised_sends: Vec<Uuid>,
}

/// Where nurturing keeps its enrollments and what they depend on.
#[async_trait]
pub trait NurtureStore: Send + Sync + std::fmt::Debug {
    /// Opens a unit of work for a mutating call and claims its idempotency key in it.
    async fn begin(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Begun<Box<dyn NurtureUnit>>, StorageError>;

    /// Opens a unit of work for applying an event or for the scheduler.
    async fn begin_work(&self) -> Result<Box<dyn NurtureUnit>, StorageError>;

    /// Opens a unit of work that only reads, on one consistent snapshot.
    async fn read(&self) -> Result<Box<dyn NurtureUnit>, StorageError>;

    /// The stored answer of an earlier call.
    async fn response(&self, response_id: Uuid) -> Result<Option<Vec<u8>>, StorageError>;
}

/// One unit of work: a database transaction, rolled back unless committed. Locks are taken
/// enrollment first, then send, so concurrent units never wait on each other in a circle.
#[async_trait]
pub trait NurtureUnit: Send {
    /// Stores what capture said of a contact; its frequency override stays.
    async fn upsert_contact(&mut self, contact: &ContactFacts) -> Result<(), StorageError>;
    /// The contact, if nurturing knows it.
    async fn contact(&mut self, contact_id: Uuid) -> Result<Option<ContactFacts>, StorageError>;
    /// The contacts of a lead.
    async fn contacts_of_lead(&mut self, lead_id: Uuid) -> Result<Vec<ContactFacts>, StorageError>;
    /// Sets the contact's consent; false when the contact is unknown.
    async fn set_consent(
        &mut self,
        contact_id: Uuid,
        consent: ConsentState,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError>;
    /// Sets or (with `None`) removes the contact's frequency override.
    async fn set_contact_frequency(
        &mut self,
        contact_id: Uuid,
        frequency: Option<(FrequencyCap, DateTime<Utc>)>,
    ) -> Result<(), StorageError>;
    /// Records that the lead is known for `product`, with its class when given (an unset
    /// class keeps the one known).
    async fn upsert_lead_product(
        &mut self,
        lead_id: Uuid,
        product: &str,
        class: Option<LeadClass>,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;
    /// The products the lead is known for, with its class for each when known.
    async fn lead_products(
        &mut self,
        lead_id: Uuid,
    ) -> Result<Vec<(String, Option<LeadClass>)>, StorageError>;
    /// The global frequency policy and when it was set, unless never set.
    async fn frequency_policy(
        &mut self,
    ) -> Result<Option<(FrequencyCap, DateTime<Utc>)>, StorageError>;
    /// Sets the global frequency policy.
    async fn set_frequency_policy(
        &mut self,
        policy: &FrequencyCap,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;

    /// Stores a new enrollment; false when the contact already has an open one in the track.
    async fn insert_enrollment(
        &mut self,
        enrollment: &EnrollmentRecord,
    ) -> Result<bool, StorageError>;
    /// Writes an enrollment's changed fields.
    async fn update_enrollment(
        &mut self,
        enrollment: &EnrollmentRecord,
    ) -> Result<(), StorageError>;
    /// The enrollment, locked until the unit ends when `locked`.
    async fn enrollment(
        &mut self,
        enrollment_id: Uuid,
        locked: bool,
    ) -> Result<Option<EnrollmentRecord>, StorageError>;
    /// The enrollment locked, if it is still active and due at `now` and no other unit
    /// holds it: a worker never waits for another's claim.
    async fn claim_due(
        &mut self,
        enrollment_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<EnrollmentRecord>, StorageError>;
    /// Active enrollments due at `now`, most overdue first.
    async fn due_enrollments(
        &mut self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StorageError>;
    /// The enrollments of a lead (of one product when given), locked.
    async fn enrollments_of_lead(
        &mut self,
        lead_id: Uuid,
        product: Option<&str>,
    ) -> Result<Vec<EnrollmentRecord>, StorageError>;
    /// The enrollments of a contact, locked, oldest first.
    async fn enrollments_of_contact(
        &mut self,
        contact_id: Uuid,
    ) -> Result<Vec<EnrollmentRecord>, StorageError>;
    /// Enrollments matching `filter`, most recently enrolled first, after the enrollment
    /// `after`.
    async fn list_enrollments(
        &mut self,
        filter: &EnrollmentFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<EnrollmentRecord>, StorageError>;
    /// Enrollments enrolled before `to` that were open at `from` or later: those a report
    /// over `[from, to)` counts.
    async fn enrollments_touching(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<EnrollmentRecord>, StorageError>;

    /// Erases the contact: its sends stay for the reports but name neither it nor their
    /// enrollment, its enrollments are deleted, and so is what capture said of it with its
    /// frequency override. Its open enrollments are to be halted first, in the same unit.
    async fn erase_contact(&mut self, contact_id: Uuid) -> Result<ContactErasure, StorageError>;

    /// Stores a new send; false when its (enrollment, step, attempt) has one already.
    async fn insert_send(&mut self, send: &SendRecord) -> Result<bool, StorageError>;
    /// Writes a send's changed fields.
    async fn update_send(&mut self, send: &SendRecord) -> Result<(), StorageError>;
    /// The send, locked until the unit ends when `locked`.
    async fn send(
        &mut self,
        send_id: Uuid,
        locked: bool,
    ) -> Result<Option<SendRecord>, StorageError>;
    /// The enrollment's claimed send that has not reached the relay, if any.
    async fn pending_send(
        &mut self,
        enrollment_id: Uuid,
    ) -> Result<Option<SendRecord>, StorageError>;
    /// The enrollment's sends, oldest first.
    async fn sends_of_enrollment(
        &mut self,
        enrollment_id: Uuid,
    ) -> Result<Vec<SendRecord>, StorageError>;
    /// Every send to the contact, oldest first.
    async fn sends_of_contact(&mut self, contact_id: Uuid)
    -> Result<Vec<SendRecord>, StorageError>;
    /// Sends matching `filter`, newest first, after the send `after`.
    async fn list_sends(
        &mut self,
        filter: &SendFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<SendRecord>, StorageError>;
    /// Sends the relay accepted within `[from, to)`.
    async fn sent_between(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SendRecord>, StorageError>;
    /// How many flagged enrollments wait in each (role, stage) cell of `product` (all when
    /// `None`).
    async fn flagged_per_cell(
        &mut self,
        product: Option<&str>,
    ) -> Result<Vec<(String, common::BuyingStage, u32)>, StorageError>;

    /// Records an event as applied; a redelivery finds it recorded.
    async fn record_delivery(&mut self, delivery: &Delivery) -> Result<Recorded, StorageError>;
    /// Appends an event to the outbox.
    async fn publish(&mut self, envelope: &EventEnvelope) -> Result<(), StorageError>;
    /// Stores a call's answer under its idempotency key.
    async fn save_response(
        &mut self,
        key: &IdempotencyKey,
        response_id: Uuid,
        response: &[u8],
    ) -> Result<(), StorageError>;
    /// Makes the unit's writes durable.
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
}
