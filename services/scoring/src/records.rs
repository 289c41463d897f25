//! Scoring's records port: a unit of work (one database transaction) over the facts taken
//! from capture's events, the score ledger, the class and stage history, BANT, hand-offs and
//! models. `records_sql` implements it on PostgreSQL and SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_bus::{Delivery, inbox::Recorded};
use leadflow_proto::{common::v1 as common, events::v1::EventEnvelope, scoring::v1 as pb};
use leadflow_storage::{Begun, IdempotencyKey, StorageError};
use uuid::Uuid;

use crate::models::ScoringModelRecord;

/// A lead as scoring knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadFacts {
    /// The lead id.
    pub lead_id: Uuid,
    /// Its account, if it has one.
    pub account_id: Option<Uuid>,
    /// Its profile as last captured.
    pub profile: common::LeadProfile,
    /// When the profile was last captured.
    pub update_time: DateTime<Utc>,
}

/// A contact as scoring knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactFacts {
    /// The contact id.
    pub contact_id: Uuid,
    /// Its lead.
    pub lead_id: Uuid,
    /// Its profile as last captured.
    pub profile: common::ContactProfile,
    /// Whether it opted in to mail (granted or confirmed).
    pub opted_in: bool,
    /// When it was last captured.
    pub update_time: DateTime<Utc>,
}

/// An activity as scoring keeps it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ActivityFact {
    /// The activity id.
    pub activity_id: Uuid,
    /// The event that carried it.
    pub event_id: Uuid,
    /// The lead; `None` while the visitor is anonymous.
    pub lead_id: Option<Uuid>,
    /// The contact; `None` while the visitor is anonymous.
    pub contact_id: Option<Uuid>,
    /// The anonymous visitor id, or empty.
    pub visitor_id: String,
    /// The engagement rule key.
    pub activity_key: String,
    /// The content item, or empty.
    pub content_id: String,
    /// The content's buying stage as a `BuyingStage` name.
    pub buying_stage: String,
    /// The product, or empty for all.
    pub product: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// The standing of a lead for one product.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LeadProduct {
    /// The lead id.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// The stage as a `LifecycleStage` name.
    pub stage: String,
    /// The class as a `LeadClass` name; unspecified while unclassified.
    pub lead_class: String,
    /// Since when the lead is in its class.
    pub class_since: Option<DateTime<Utc>>,
    /// When the manual class in force was set, if one is.
    pub manual_since: Option<DateTime<Utc>>,
    /// Handed over and not recycled since.
    pub handed_over: bool,
    /// Recycled, and not engaged since.
    pub awaiting_new_engagement: bool,
    /// A contact asked for sales since the last recycle.
    pub contact_requested: bool,
    /// When scoring first saw the lead for the product.
    pub create_time: DateTime<Utc>,
    /// When the standing last changed.
    pub update_time: DateTime<Utc>,
}

/// One score change.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LedgerRow {
    /// The entry id.
    pub entry_id: Uuid,
    /// The lead.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// The model version that applied.
    pub model_id: Uuid,
    /// The contact concerned, if any.
    pub contact_id: Option<Uuid>,
    /// The event that caused it, if any.
    pub event_id: Option<Uuid>,
    /// The scored activity, for engagement entries.
    pub activity_id: Option<Uuid>,
    /// The activity's rule key; empty for fit entries.
    pub activity_key: String,
    /// The activity's content item, or empty.
    pub content_id: String,
    /// The rule: `fit:<rule id>`, `engagement:<key>` or `override:<content id>`.
    pub rule: String,
    /// The points added or taken away, before decay.
    pub points: i32,
    /// Whether a cap reduced the points.
    pub capped: bool,
    /// The `ScoreChangeCause` name.
    pub cause: String,
    /// When the activity or change happened.
    pub occurred_at: DateTime<Utc>,
    /// When the entry was written.
    pub create_time: DateTime<Utc>,
}

impl LedgerRow {
    /// Whether the entry is about fit rather than engagement.
    pub fn is_fit(&self) -> bool {
        self.activity_id.is_none()
    }
}

/// One class change.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ClassChangeRow {
    /// The change id.
    pub change_id: Uuid,
    /// The lead.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// The class before, as a `LeadClass` name.
    pub from_class: String,
    /// The class after.
    pub to_class: String,
    /// The `ClassChangeOrigin` name.
    pub origin: String,
    /// Who made a manual change.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The causing event, if any.
    pub event_id: Option<Uuid>,
    /// When.
    pub change_time: DateTime<Utc>,
}

/// One stage change.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StageChangeRow {
    /// The change id.
    pub change_id: Uuid,
    /// The lead.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// The stage before, as a `LifecycleStage` name.
    pub from_stage: String,
    /// The stage after.
    pub to_stage: String,
    /// Who: a user, or the service for automatic changes.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The causing event, if any.
    pub event_id: Option<Uuid>,
    /// When.
    pub change_time: DateTime<Utc>,
}

/// One hand-off to sales.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HandOffRow {
    /// The hand-off id.
    pub hand_off_id: Uuid,
    /// The lead.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// The `SalesReadyReason` name.
    pub reason: String,
    /// The total score at the hand-off.
    pub total_points: f64,
    /// The model that made the lead ready.
    pub model_id: Uuid,
    /// The causing event, if any.
    pub event_id: Option<Uuid>,
    /// When.
    pub hand_off_time: DateTime<Utc>,
}

/// A deal routing reported closed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DealRow {
    /// The id of the event that reported it.
    pub deal_id: Uuid,
    /// The lead.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// Won or lost.
    pub won: bool,
    /// The order value in the currency's minor unit; 0 for a lost deal.
    pub amount_minor: i64,
    /// The ISO 4217 currency code; empty when no value was reported.
    pub currency: String,
    /// When it was closed.
    pub closed_at: DateTime<Utc>,
}

/// What marketing spent on a campaign for a product.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MarketingCostRow {
    /// The cost id.
    pub cost_id: Uuid,
    /// The product.
    pub product: String,
    /// The campaign.
    pub campaign: String,
    /// The ISO 4217 currency code.
    pub currency: String,
    /// The amount in the currency's minor unit.
    pub amount_minor: i64,
    /// The start of the time the amount was spent over.
    pub start_time: DateTime<Utc>,
    /// The end of that time.
    pub end_time: DateTime<Utc>,
    /// A note.
    pub note: String,
    /// When it was recorded.
    pub create_time: DateTime<Utc>,
}

/// Everything a funnel report of one product reads, from one snapshot.
#[derive(Debug, Clone, Default)]
pub struct FunnelRecords {
    /// The standing of every lead of the product.
    pub standings: Vec<LeadProduct>,
    /// Their class changes, by lead and then oldest first.
    pub class_changes: Vec<ClassChangeRow>,
    /// Their stage changes, by lead and then oldest first.
    pub stage_changes: Vec<StageChangeRow>,
    /// Their profiles.
    pub leads: Vec<LeadFacts>,
    /// The campaign of each lead that has one.
    pub campaigns: Vec<(Uuid, String)>,
    /// The deals closed on them.
    pub deals: Vec<DealRow>,
    /// The marketing costs of the product.
    pub costs: Vec<MarketingCostRow>,
}

/// How many leads of a product stand in one class and stage now (with one profile, when a
/// report segments them).
#[derive(Debug, Clone, PartialEq)]
pub struct StandingCount {
    /// The class as a `LeadClass` name; unspecified while unclassified.
    pub lead_class: String,
    /// The stage as a `LifecycleStage` name.
    pub stage: String,
    /// The profile the leads share, when asked for.
    pub profile: Option<common::LeadProfile>,
    /// How many leads.
    pub lead_count: u32,
}

/// What a funnel report of one product from one moment on reads, from one snapshot.
#[derive(Debug, Clone, Default)]
pub struct FunnelSlice {
    /// Everything about the leads that moved from the moment on: created, reclassified,
    /// moved to another stage or closed a deal then or later. The costs are all the
    /// product's.
    pub moving: FunnelRecords,
    /// Every lead created before the moment, moving or not, counted by its standing now.
    pub before: Vec<StandingCount>,
}

/// Everything scoring holds about one contact, each list oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactRecords {
    /// The ledger entries that name the contact.
    pub ledger: Vec<LedgerRow>,
    /// The class changes the events of its activities caused.
    pub class_changes: Vec<ClassChangeRow>,
    /// The stage changes the events of its activities caused.
    pub stage_changes: Vec<StageChangeRow>,
}

/// What erasing a contact changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactErasure {
    /// How many ledger entries no longer name the contact.
    pub anonymised_entries: u64,
    /// The leads whose records changed, by id: their hot state is recomputed.
    pub leads: Vec<Uuid>,
}

/// Where scoring keeps its records.
#[async_trait]
pub trait ScoringStore: Send + Sync + std::fmt::Debug {
    /// Opens a unit of work for a mutating call and claims its idempotency key in it.
    async fn begin(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Begun<Box<dyn ScoringUnit>>, StorageError>;

    /// Opens a unit of work for applying an event or maintenance.
    async fn begin_work(&self) -> Result<Box<dyn ScoringUnit>, StorageError>;

    /// Opens a unit of work that only reads, on one consistent snapshot.
    async fn read(&self) -> Result<Box<dyn ScoringUnit>, StorageError>;

    /// The stored answer of an earlier call.
    async fn response(&self, response_id: Uuid) -> Result<Option<Vec<u8>>, StorageError>;
}

/// One unit of work: a database transaction. Dropping it without [`ScoringUnit::commit`]
/// rolls everything back.
#[async_trait]
pub trait ScoringUnit: Send {
    /// The lead, created with an empty profile when unknown, and locked against concurrent
    /// changes until the unit ends.
    async fn lock_lead(
        &mut self,
        lead_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<LeadFacts, StorageError>;
    /// The lead, if known.
    async fn lead(&mut self, lead_id: Uuid) -> Result<Option<LeadFacts>, StorageError>;
    /// Inserts or replaces the lead.
    async fn put_lead(&mut self, lead: &LeadFacts) -> Result<(), StorageError>;
    /// Inserts or replaces the contact.
    async fn put_contact(&mut self, contact: &ContactFacts) -> Result<(), StorageError>;
    /// The contact, if known.
    async fn contact(&mut self, contact_id: Uuid) -> Result<Option<ContactFacts>, StorageError>;
    /// The contacts of the lead, oldest first.
    async fn contacts_of_lead(&mut self, lead_id: Uuid) -> Result<Vec<ContactFacts>, StorageError>;

    /// Keeps the activity; false when it was kept before.
    async fn insert_activity(&mut self, activity: &ActivityFact) -> Result<bool, StorageError>;
    /// Gives the anonymous activities of `visitor_ids` to the contact and its lead.
    async fn attach_visitor_activities(
        &mut self,
        visitor_ids: &[String],
        contact_id: Uuid,
        lead_id: Uuid,
    ) -> Result<u64, StorageError>;
    /// The lead's activities that count for `product` (its own and those of no product),
    /// in the order they happened.
    async fn activities_of_lead(
        &mut self,
        lead_id: Uuid,
        product: &str,
    ) -> Result<Vec<ActivityFact>, StorageError>;

    /// The lead's standing for the product.
    async fn lead_product(
        &mut self,
        lead_id: Uuid,
        product: &str,
    ) -> Result<Option<LeadProduct>, StorageError>;
    /// The products the lead is scored for.
    async fn products_of_lead(&mut self, lead_id: Uuid) -> Result<Vec<String>, StorageError>;
    /// The leads scored for the product (every product when empty), by id.
    async fn lead_products(&mut self, product: &str) -> Result<Vec<LeadProduct>, StorageError>;
    /// Inserts or replaces a standing.
    async fn put_lead_product(&mut self, standing: &LeadProduct) -> Result<(), StorageError>;

    /// The lead's ledger entries for the product under one model, oldest first.
    async fn ledger(
        &mut self,
        lead_id: Uuid,
        product: &str,
        model_id: Uuid,
    ) -> Result<Vec<LedgerRow>, StorageError>;
    /// Appends entries to the ledger.
    async fn append_ledger(&mut self, entries: &[LedgerRow]) -> Result<(), StorageError>;

    /// Everything scoring holds about the contact.
    async fn contact_records(&mut self, contact_id: Uuid) -> Result<ContactRecords, StorageError>;
    /// Erases the contact: its ledger entries and activities keep their points for the lead
    /// but no longer name it (nor the visitor it browsed as), the anonymous activities of
    /// `visitor_ids` are deleted, and so is its profile. The leads concerned are locked
    /// first, in id order, so no event of theirs is applied halfway through.
    async fn erase_contact(
        &mut self,
        contact_id: Uuid,
        visitor_ids: &[String],
    ) -> Result<ContactErasure, StorageError>;

    /// Records a class change.
    async fn insert_class_change(&mut self, change: &ClassChangeRow) -> Result<(), StorageError>;
    /// The class changes of the lead for the product, oldest first, after the cursor.
    async fn class_changes(
        &mut self,
        lead_id: Uuid,
        product: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ClassChangeRow>, StorageError>;
    /// Records a stage change.
    async fn insert_stage_change(&mut self, change: &StageChangeRow) -> Result<(), StorageError>;
    /// The stage changes of the lead for the product, oldest first, after the cursor.
    async fn stage_changes(
        &mut self,
        lead_id: Uuid,
        product: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<StageChangeRow>, StorageError>;
    /// Records a hand-off to sales.
    async fn insert_hand_off(&mut self, hand_off: &HandOffRow) -> Result<(), StorageError>;

    /// Keeps a closed deal; a deal reported again changes nothing.
    async fn insert_deal(&mut self, deal: &DealRow) -> Result<(), StorageError>;
    /// Gives the lead its campaign, unless it has one already.
    async fn note_campaign(
        &mut self,
        lead_id: Uuid,
        campaign: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;
    /// Keeps a marketing cost.
    async fn insert_marketing_cost(&mut self, cost: &MarketingCostRow) -> Result<(), StorageError>;
    /// The product's marketing costs (of one campaign, unless empty), in the order they were
    /// recorded, after the cursor.
    async fn marketing_costs(
        &mut self,
        product: &str,
        campaign: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<MarketingCostRow>, StorageError>;
    /// Everything a funnel report of the product reads.
    async fn funnel_records(&mut self, product: &str) -> Result<FunnelRecords, StorageError>;
    /// What a funnel report of the product from `since` on reads: every record of the leads
    /// that moved since, and the leads created before `since` counted by standing (and by
    /// profile when `by_profile`). A lead that did not move since stood where it stands now
    /// at every moment since, its standing being the last word of its history; so the
    /// counts stand in for the records of the many leads that did not.
    async fn funnel_slice(
        &mut self,
        product: &str,
        since: DateTime<Utc>,
        by_profile: bool,
    ) -> Result<FunnelSlice, StorageError>;

    /// The BANT qualification, if recorded.
    async fn bant(
        &mut self,
        lead_id: Uuid,
        product: &str,
    ) -> Result<Option<pb::Bant>, StorageError>;
    /// Inserts or replaces the BANT qualification.
    async fn put_bant(
        &mut self,
        lead_id: Uuid,
        product: &str,
        qualification: &pb::Bant,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;

    /// The product's active model version, if any.
    async fn active_model(
        &mut self,
        product: &str,
    ) -> Result<Option<ScoringModelRecord>, StorageError>;
    /// The model version with this id.
    async fn model(&mut self, model_id: Uuid) -> Result<Option<ScoringModelRecord>, StorageError>;
    /// Whether the product has any model version, waiting for other writers of its models.
    async fn lock_product_models(&mut self, product: &str) -> Result<u32, StorageError>;
    /// Stores a new model version.
    async fn insert_model(&mut self, record: &ScoringModelRecord) -> Result<(), StorageError>;
    /// Makes the version the only active one of its product.
    async fn activate_model(&mut self, product: &str, model_id: Uuid) -> Result<(), StorageError>;

    /// Marks where one event of a batch starts, so that its failure can be undone alone.
    async fn savepoint(&mut self) -> Result<(), StorageError>;
    /// Keeps what was written since the savepoint.
    async fn release_savepoint(&mut self) -> Result<(), StorageError>;
    /// Undoes what was written since the savepoint, keeping the rest of the unit.
    async fn rollback_to_savepoint(&mut self) -> Result<(), StorageError>;

    /// Records the delivery of an event to the consuming group.
    async fn record_delivery(&mut self, delivery: &Delivery) -> Result<Recorded, StorageError>;
    /// Adds an event to the outbox.
    async fn publish(&mut self, envelope: &EventEnvelope) -> Result<(), StorageError>;
    /// Keeps the answer of a call under its idempotency key.
    async fn save_response(
        &mut self,
        key: &IdempotencyKey,
        response_id: Uuid,
        response: &[u8],
    ) -> Result<(), StorageError>;
    /// Commits.
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
}
