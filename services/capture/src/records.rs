//! Capture's records port: accounts, leads, contacts, visitors, activities, consent records
//! and queued mails, read and written inside one unit of work (one database transaction),
//! so that the use cases in `intake` run unchanged on PostgreSQL and on the embedded store.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_proto::{
    capture::v1 as pb,
    common::v1 as common,
    events::v1::{ConsentChannel, ConsentState, EventEnvelope},
};
use leadflow_storage::{Begun, IdempotencyKey, Page, StorageError};
use uuid::Uuid;

/// An account: the company behind one web domain.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AccountRow {
    pub account_id: Uuid,
    pub web_domain: String,
    pub name: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// A lead (buying unit).
#[derive(Debug, Clone, PartialEq)]
pub struct LeadRow {
    pub lead_id: Uuid,
    /// None exactly when the profile has no web domain.
    pub account_id: Option<Uuid>,
    /// The profile; its web_domain and site identify the lead within its account.
    pub profile: common::LeadProfile,
    pub first_attribution: Option<common::CampaignAttribution>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// A contact: one person, unique by normalised email.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    pub contact_id: Uuid,
    pub lead_id: Uuid,
    /// The profile; its email is normalised and never changes here.
    pub profile: common::ContactProfile,
    pub custom_fields: BTreeMap<String, String>,
    pub source: String,
    pub first_attribution: Option<common::CampaignAttribution>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub last_activity_time: Option<DateTime<Utc>>,
}

/// An anonymous visitor id, and the contact it turned out to be once known.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VisitorRow {
    pub visitor_id: String,
    pub contact_id: Option<Uuid>,
    pub first_seen_time: DateTime<Utc>,
    pub merge_time: Option<DateTime<Utc>>,
}

/// One recorded activity; the stored form of `leadflow.capture.v1.Activity`.
pub type ActivityRow = pb::Activity;

/// One consent record; the stored form of `leadflow.capture.v1.ConsentRecord`.
pub type ConsentRow = pb::ConsentRecord;

/// A mail capture sends itself (the double opt-in confirmation), queued in the same
/// transaction as the consent it asks to confirm.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboundMail {
    pub mail_id: Uuid,
    pub contact_id: Uuid,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// The signed link the mail carries.
    pub link: String,
    pub create_time: DateTime<Utc>,
}

/// What remains of an erased contact: the id it had and the keyed hash of its email.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TombstoneRow {
    pub contact_id: Uuid,
    /// See [`crate::erasure::email_hash`].
    pub email_hash: String,
    /// The `leadflow.events.v1.ErasureReason` name.
    pub reason: String,
    pub erase_time: DateTime<Utc>,
    pub erased_by: String,
    /// The erasure log's note; holds no personal data.
    pub note: String,
}

/// How many records an erasure removed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasedRecords {
    pub activities: u64,
    pub consents: u64,
    pub visitors: u64,
    pub mails: u64,
    /// Events in the outbox that named the contact or one of its visitors.
    pub events: u64,
    /// Stored answers of earlier calls that named the contact, with their keys.
    pub answers: u64,
}

/// Whose activities a listing returns, and which of them.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityFilter {
    pub subject: ActivitySubject,
    /// Only these types; empty for all.
    pub types: Vec<common::ActivityType>,
    /// Only activities about this product.
    pub product: Option<String>,
    /// Only activities that occurred at or after this time.
    pub occurred_from: Option<DateTime<Utc>>,
    /// Only activities that occurred before this time.
    pub occurred_until: Option<DateTime<Utc>>,
}

/// Which leads a listing returns; every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadFilter {
    /// Only leads of this account.
    pub account_id: Option<Uuid>,
    /// Only leads with this web domain.
    pub web_domain: Option<String>,
    /// Only leads with this source.
    pub source: Option<String>,
    /// Only leads in this country (ISO 3166-1 alpha-2).
    pub country_code: Option<String>,
    /// Only leads created at or after, and before, these times.
    pub created: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    /// Only leads changed at or after, and before, these times.
    pub updated: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
}

/// The subject of an activity listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivitySubject {
    Contact(Uuid),
    Lead(Uuid),
    Visitor(String),
}

/// Where capture keeps contacts and everything about them.
#[async_trait]
pub trait CaptureStore: Send + Sync + std::fmt::Debug {
    /// Opens a unit of work for a mutating call and claims its idempotency key in it.
    async fn begin(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Begun<Box<dyn CaptureUnit>>, StorageError>;

    /// Opens a unit of work that only reads, on one consistent snapshot.
    async fn read(&self) -> Result<Box<dyn CaptureUnit>, StorageError>;

    /// Opens a unit of work for many items of one call, each claiming its own key with
    /// [`CaptureUnit::claim`] inside a savepoint, all committed at once.
    async fn begin_batch(&self) -> Result<Box<dyn CaptureUnit>, StorageError>;

    /// The confirmation mails not handed to a mail transport yet, oldest first.
    async fn unsent_mails(&self, limit: u32) -> Result<Vec<OutboundMail>, StorageError>;

    /// Marks a queued mail as handed to the mail transport.
    async fn mark_mail_sent(&self, mail_id: Uuid, now: DateTime<Utc>) -> Result<(), StorageError>;
}

/// One unit of work: a database transaction. Dropping it without [`CaptureUnit::commit`]
/// rolls everything back, the idempotency claim included.
#[async_trait]
pub trait CaptureUnit: Send {
    /// The account with this id.
    async fn account(&mut self, account_id: Uuid) -> Result<Option<AccountRow>, StorageError>;
    /// The account of this web domain.
    async fn account_by_domain(
        &mut self,
        web_domain: &str,
    ) -> Result<Option<AccountRow>, StorageError>;
    /// Inserts the account, or updates it when its id exists.
    async fn put_account(&mut self, account: &AccountRow) -> Result<(), StorageError>;
    /// How many leads the account holds.
    async fn lead_count(&mut self, account_id: Uuid) -> Result<u32, StorageError>;

    /// The lead with this id.
    async fn lead(&mut self, lead_id: Uuid) -> Result<Option<LeadRow>, StorageError>;
    /// The lead of this company domain and site key (see `leadflow_domain::site_key`).
    async fn lead_by_site(
        &mut self,
        web_domain: &str,
        site_key: &str,
    ) -> Result<Option<LeadRow>, StorageError>;
    /// The leads of an account, oldest first.
    async fn leads_of_account(&mut self, account_id: Uuid) -> Result<Vec<LeadRow>, StorageError>;
    /// Inserts the lead, or updates it when its id exists.
    async fn put_lead(&mut self, lead: &LeadRow) -> Result<(), StorageError>;
    /// How many contacts the lead holds.
    async fn contact_count(&mut self, lead_id: Uuid) -> Result<u32, StorageError>;

    /// The contact with this id.
    async fn contact(&mut self, contact_id: Uuid) -> Result<Option<ContactRow>, StorageError>;
    /// The contact with this normalised email.
    async fn contact_by_email(&mut self, email: &str) -> Result<Option<ContactRow>, StorageError>;
    /// The contacts of a lead, oldest first.
    async fn contacts_of_lead(&mut self, lead_id: Uuid) -> Result<Vec<ContactRow>, StorageError>;
    /// Inserts the contact, or updates it when its id exists.
    async fn put_contact(&mut self, contact: &ContactRow) -> Result<(), StorageError>;

    /// The tombstone of the erased contact with this id.
    async fn tombstone(&mut self, contact_id: Uuid) -> Result<Option<TombstoneRow>, StorageError>;
    /// Whether a contact with one of these email hashes was erased.
    async fn email_erased(&mut self, email_hashes: &[String]) -> Result<bool, StorageError>;
    /// Removes the contact and everything recorded about it or about its merged visitors:
    /// activities, consent records, visitors, queued mails, the outbox events that name
    /// them and the stored answers of calls that named the contact. The lead and the account stay: they describe the company.
    async fn erase_contact(
        &mut self,
        contact_id: Uuid,
        visitor_ids: &[String],
    ) -> Result<ErasedRecords, StorageError>;
    /// Records the tombstone of an erased contact.
    async fn insert_tombstone(&mut self, tombstone: &TombstoneRow) -> Result<(), StorageError>;
    /// Up to `limit` contacts last active (or, without activity, last changed) before
    /// `before`, least recently active first.
    async fn inactive_contacts(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StorageError>;

    /// The visitor with this id.
    async fn visitor(&mut self, visitor_id: &str) -> Result<Option<VisitorRow>, StorageError>;
    /// The visitor ids merged into a contact, in merge order.
    async fn visitors_of_contact(&mut self, contact_id: Uuid) -> Result<Vec<String>, StorageError>;
    /// Inserts the visitor, or updates it when its id exists.
    async fn put_visitor(&mut self, visitor: &VisitorRow) -> Result<(), StorageError>;
    /// Attributes every activity tracked under the visitor without a contact to the contact
    /// and its lead; returns how many moved.
    async fn move_visitor_activities(
        &mut self,
        visitor_id: &str,
        contact_id: Uuid,
        lead_id: Uuid,
    ) -> Result<u32, StorageError>;

    /// Up to `limit` leads matching `filter`, most recently created first, after the lead
    /// `after` when continuing a listing.
    async fn list_leads(
        &mut self,
        filter: &LeadFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<LeadRow>, StorageError>;

    /// The activity with this id.
    async fn activity(&mut self, activity_id: Uuid) -> Result<Option<ActivityRow>, StorageError>;
    /// Records an activity.
    async fn insert_activity(&mut self, activity: &ActivityRow) -> Result<(), StorageError>;
    /// Up to `limit` activities matching `filter`, most recent occurrence first, after the
    /// activity `after` when continuing a listing.
    async fn list_activities(
        &mut self,
        filter: &ActivityFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<ActivityRow>, StorageError>;

    /// The consent record with this id.
    async fn consent(&mut self, consent_id: Uuid) -> Result<Option<ConsentRow>, StorageError>;
    /// Every consent record of a contact, in the order they were written.
    async fn consents_of_contact(
        &mut self,
        contact_id: Uuid,
    ) -> Result<Vec<ConsentRow>, StorageError>;
    /// Records a consent change; records are never changed afterwards.
    async fn insert_consent(&mut self, consent: &ConsentRow) -> Result<(), StorageError>;

    /// Queues a mail for delivery.
    async fn queue_mail(&mut self, mail: &OutboundMail) -> Result<(), StorageError>;

    /// The consent wordings a form showed before its current one, oldest first.
    async fn form_wordings(
        &mut self,
        form_id: Uuid,
    ) -> Result<Vec<pb::ConsentWording>, StorageError>;

    /// Keeps the encoded answer of a call, for a retry with the same idempotency key.
    async fn save_response(
        &mut self,
        response_id: Uuid,
        response: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;
    /// The encoded answer kept under this id.
    async fn response(&mut self, response_id: Uuid) -> Result<Option<Vec<u8>>, StorageError>;

    /// Adds an event to the outbox, published if and only if this unit commits.
    async fn publish(&mut self, envelope: &EventEnvelope) -> Result<(), StorageError>;

    /// Records the resource a fresh idempotency key produced.
    async fn complete(
        &mut self,
        key: &IdempotencyKey,
        resource_id: Uuid,
    ) -> Result<(), StorageError>;

    /// Makes everything durable.
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;

    /// Claims `key` in this unit, for one item of a batch.
    async fn claim(&mut self, key: &IdempotencyKey) -> Result<Begun<()>, StorageError>;
    /// Marks where the current item of a batch begins.
    async fn savepoint(&mut self) -> Result<(), StorageError>;
    /// Keeps what the current item wrote.
    async fn release_savepoint(&mut self) -> Result<(), StorageError>;
    /// Undoes what the current item wrote, and nothing before it.
    async fn rollback_to_savepoint(&mut self) -> Result<(), StorageError>;
}

/// The stored name of a consent state.
pub(crate) fn consent_state_name(state: i32) -> &'static str {
    ConsentState::try_from(state)
        .unwrap_or(ConsentState::Unspecified)
        .as_str_name()
}

/// The stored name of a consent channel.
pub(crate) fn consent_channel_name(channel: i32) -> &'static str {
    ConsentChannel::try_from(channel)
        .unwrap_or(ConsentChannel::Unspecified)
        .as_str_name()
}

/// The stored name of an activity type.
pub(crate) fn activity_type_name(activity_type: i32) -> &'static str {
    common::ActivityType::try_from(activity_type)
        .unwrap_or(common::ActivityType::Unspecified)
        .as_str_name()
}

/// The stored name of a buying stage.
pub(crate) fn stage_name(stage: i32) -> &'static str {
    common::BuyingStage::try_from(stage)
        .unwrap_or(common::BuyingStage::Unspecified)
        .as_str_name()
}

/// A JSON object of string values, as both adapters store maps.
pub(crate) fn map_to_json<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let object: serde_json::Map<String, serde_json::Value> = map
        .into_iter()
        .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// Reads a map stored by [`map_to_json`].
pub(crate) fn map_from_json(
    text: &str,
    record: &str,
) -> Result<BTreeMap<String, String>, StorageError> {
    serde_json::from_str(text).map_err(|error| StorageError::Corrupt(format!("{record}: {error}")))
}

/// Decodes a stored protobuf message.
pub(crate) fn decode<M: prost::Message + Default>(
    bytes: &[u8],
    record: &str,
) -> Result<M, StorageError> {
    M::decode(bytes).map_err(|error| StorageError::Corrupt(format!("{record}: {error}")))
}

/// Decodes a stored optional protobuf message.
pub(crate) fn decode_optional<M: prost::Message + Default>(
    bytes: Option<&[u8]>,
    record: &str,
) -> Result<Option<M>, StorageError> {
    bytes.map(|bytes| decode(bytes, record)).transpose()
}

/// Reads a stored enum name back into its protobuf value.
pub(crate) fn enum_value(
    name: &str,
    parse: impl Fn(&str) -> Option<i32>,
    record: &str,
) -> Result<i32, StorageError> {
    parse(name).ok_or_else(|| StorageError::Corrupt(format!("{record}: unknown value {name:?}")))
}
