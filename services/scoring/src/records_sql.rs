//! Scoring's records on both SQL stores: PostgreSQL for production and SQLite for the
//! embedded mode. The statements are written in the dialect both understand, so one
//! implementation is expanded for each driver; only row locks, the serialisation of model
//! writers, the inbox, the outbox and the idempotency claim differ.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_bus::{Delivery, inbox::Recorded};
use leadflow_proto::{common::v1 as common, events::v1::EventEnvelope, scoring::v1 as pb};
use leadflow_storage::{BeginSafely, Begun, IdempotencyKey, StorageError};
use prost::Message;
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use crate::{
    models::ScoringModelRecord,
    records::{
        ActivityFact, ClassChangeRow, ContactErasure, ContactFacts, ContactRecords, DealRow,
        FunnelRecords, FunnelSlice, HandOffRow, LeadFacts, LeadProduct, LedgerRow,
        MarketingCostRow, ScoringStore, ScoringUnit, StageChangeRow, StandingCount,
    },
    repository::{ModelRow, SELECT_MODEL},
};

/// Scoring's records in its PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresScoringStore {
    pool: PgPool,
}

impl PostgresScoringStore {
    /// A store on `pool`, whose search path is scoring's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Scoring's records in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteScoringStore {
    pool: SqlitePool,
}

impl SqliteScoringStore {
    /// A store on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

macro_rules! activity_columns {
    () => {
        "activity_id, event_id, lead_id, contact_id, visitor_id, activity_key, content_id, \
         buying_stage, product, occurred_at"
    };
}

macro_rules! lead_product_columns {
    () => {
        "lead_id, product, stage, lead_class, class_since, manual_since, handed_over, \
         awaiting_new_engagement, contact_requested, create_time, update_time"
    };
}

macro_rules! ledger_columns {
    () => {
        "entry_id, lead_id, product, model_id, contact_id, event_id, activity_id, activity_key, \
         content_id, rule, points, capped, cause, occurred_at, create_time"
    };
}

macro_rules! class_change_columns {
    () => {
        "change_id, lead_id, product, from_class, to_class, origin, actor, reason, event_id, \
         change_time"
    };
}

macro_rules! marketing_cost_columns {
    () => {
        "cost_id, product, campaign, currency, amount_minor, start_time, end_time, note, \
         create_time"
    };
}

macro_rules! stage_change_columns {
    () => {
        "change_id, lead_id, product, from_stage, to_stage, actor, reason, event_id, change_time"
    };
}

/// The ids of the events about contact `$1`: its activities and whatever else put its
/// name in the ledger (its capture, when a fit rule matched its profile).
macro_rules! contact_events {
    () => {
        "SELECT event_id FROM activities WHERE contact_id = $1 \
         UNION SELECT event_id FROM ledger_entries WHERE contact_id = $1 AND event_id IS NOT NULL"
    };
}

/// The leads of product `$1` that moved at or after `$2`: created, reclassified, moved to
/// another stage or closed a deal. Each part reads an index that starts with the product and
/// the time, so the cost follows the leads that moved, not all of them. The statements ask
/// `lead_id IN (SELECT lead_id FROM moving)` rather than join it: SQLite may run a joined
/// CTE as a co-routine anew for every outer row, which made a report over 20,000 leads take
/// 38 s; an IN list it builds once.
macro_rules! moving_leads {
    () => {
        "WITH moving AS (\
         SELECT lead_id FROM lead_products WHERE product = $1 AND create_time >= $2 \
         UNION SELECT lead_id FROM class_changes WHERE product = $1 AND change_time >= $2 \
         UNION SELECT lead_id FROM stage_changes WHERE product = $1 AND change_time >= $2 \
         UNION SELECT lead_id FROM deals WHERE product = $1 AND closed_at >= $2) "
    };
}

/// Leads of one standing, as the funnel slice counts them.
#[derive(sqlx::FromRow)]
struct StoredStandingCount {
    lead_class: String,
    stage: String,
    profile: Option<Vec<u8>>,
    lead_count: i64,
}

impl TryFrom<StoredStandingCount> for StandingCount {
    type Error = StorageError;

    fn try_from(stored: StoredStandingCount) -> Result<Self, StorageError> {
        Ok(Self {
            lead_class: stored.lead_class,
            stage: stored.stage,
            profile: stored
                .profile
                .map(|profile| common::LeadProfile::decode(profile.as_slice()))
                .transpose()
                .map_err(|error| StorageError::Corrupt(format!("lead profile: {error}")))?,
            lead_count: u32::try_from(stored.lead_count).unwrap_or(u32::MAX),
        })
    }
}

#[derive(sqlx::FromRow)]
struct StoredLead {
    lead_id: Uuid,
    account_id: Option<Uuid>,
    profile: Vec<u8>,
    update_time: DateTime<Utc>,
}

impl TryFrom<StoredLead> for LeadFacts {
    type Error = StorageError;

    fn try_from(stored: StoredLead) -> Result<Self, StorageError> {
        Ok(Self {
            lead_id: stored.lead_id,
            account_id: stored.account_id,
            profile: common::LeadProfile::decode(stored.profile.as_slice())
                .map_err(|error| StorageError::Corrupt(format!("lead profile: {error}")))?,
            update_time: stored.update_time,
        })
    }
}

#[derive(sqlx::FromRow)]
struct StoredContact {
    contact_id: Uuid,
    lead_id: Uuid,
    profile: Vec<u8>,
    opted_in: bool,
    update_time: DateTime<Utc>,
}

impl TryFrom<StoredContact> for ContactFacts {
    type Error = StorageError;

    fn try_from(stored: StoredContact) -> Result<Self, StorageError> {
        Ok(Self {
            contact_id: stored.contact_id,
            lead_id: stored.lead_id,
            profile: common::ContactProfile::decode(stored.profile.as_slice())
                .map_err(|error| StorageError::Corrupt(format!("contact profile: {error}")))?,
            opted_in: stored.opted_in,
            update_time: stored.update_time,
        })
    }
}

fn model_record(row: ModelRow) -> Result<ScoringModelRecord, StorageError> {
    ScoringModelRecord::try_from(row)
}

macro_rules! sql_scoring_store {
    (
        store: $store:ident,
        unit: $unit:ident,
        database: $database:ty,
        idempotency: $idempotency:path,
        inbox: $inbox:path,
        outbox: $outbox:path,
        for_update: $for_update:literal,
        serialise_models: [$($serialise:literal)?],
        snapshot: [$($snapshot:literal)?],
    ) => {
        struct $unit {
            transaction: sqlx::Transaction<'static, $database>,
        }

        #[async_trait]
        impl ScoringStore for $store {
            async fn begin(
                &self,
                key: &IdempotencyKey,
            ) -> Result<Begun<Box<dyn ScoringUnit>>, StorageError> {
                use $idempotency as idempotency;
                Ok(match idempotency::begin(&self.pool, key).await? {
                    Begun::Fresh(transaction) => Begun::Fresh(Box::new($unit { transaction })),
                    Begun::Replay(resource_id) => Begun::Replay(resource_id),
                    Begun::KeyReused => Begun::KeyReused,
                })
            }

            async fn begin_work(&self) -> Result<Box<dyn ScoringUnit>, StorageError> {
                Ok(Box::new($unit {
                    transaction: self.pool.begin_safely().await?,
                }))
            }

            async fn read(&self) -> Result<Box<dyn ScoringUnit>, StorageError> {
                #[allow(unused_mut, reason = "only one dialect sets up a snapshot")]
                let mut transaction = self.pool.begin_safely().await?;
                $(sqlx::query($snapshot).execute(&mut *transaction).await?;)?
                Ok(Box::new($unit { transaction }))
            }

            async fn response(&self, response_id: Uuid) -> Result<Option<Vec<u8>>, StorageError> {
                Ok(
                    sqlx::query_scalar("SELECT response FROM call_responses WHERE response_id = $1")
                        .bind(response_id)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }
        }

        #[async_trait]
        impl ScoringUnit for $unit {
            async fn lock_lead(
                &mut self,
                lead_id: Uuid,
                now: DateTime<Utc>,
            ) -> Result<LeadFacts, StorageError> {
                sqlx::query(
                    "INSERT INTO leads (lead_id, account_id, profile, update_time) \
                     VALUES ($1, NULL, $2, $3) ON CONFLICT (lead_id) DO NOTHING",
                )
                .bind(lead_id)
                .bind(Vec::<u8>::new())
                .bind(now)
                .execute(&mut *self.transaction)
                .await?;
                sqlx::query_as::<_, StoredLead>(concat!(
                    "SELECT lead_id, account_id, profile, update_time FROM leads WHERE lead_id = $1",
                    $for_update
                ))
                .bind(lead_id)
                .fetch_one(&mut *self.transaction)
                .await
                .map_err(StorageError::from)
                .and_then(LeadFacts::try_from)
            }

            async fn lead(&mut self, lead_id: Uuid) -> Result<Option<LeadFacts>, StorageError> {
                sqlx::query_as::<_, StoredLead>(
                    "SELECT lead_id, account_id, profile, update_time FROM leads WHERE lead_id = $1",
                )
                .bind(lead_id)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(LeadFacts::try_from)
                .transpose()
            }

            async fn put_lead(&mut self, lead: &LeadFacts) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO leads (lead_id, account_id, profile, update_time) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (lead_id) DO UPDATE SET \
                     account_id = excluded.account_id, profile = excluded.profile, \
                     update_time = excluded.update_time",
                )
                .bind(lead.lead_id)
                .bind(lead.account_id)
                .bind(lead.profile.encode_to_vec())
                .bind(lead.update_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn put_contact(&mut self, contact: &ContactFacts) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO contacts (contact_id, lead_id, profile, opted_in, update_time) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (contact_id) DO UPDATE SET \
                     lead_id = excluded.lead_id, profile = excluded.profile, \
                     opted_in = excluded.opted_in, update_time = excluded.update_time",
                )
                .bind(contact.contact_id)
                .bind(contact.lead_id)
                .bind(contact.profile.encode_to_vec())
                .bind(contact.opted_in)
                .bind(contact.update_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn contact(
                &mut self,
                contact_id: Uuid,
            ) -> Result<Option<ContactFacts>, StorageError> {
                sqlx::query_as::<_, StoredContact>(
                    "SELECT contact_id, lead_id, profile, opted_in, update_time FROM contacts \
                     WHERE contact_id = $1",
                )
                .bind(contact_id)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(ContactFacts::try_from)
                .transpose()
            }

            async fn contacts_of_lead(
                &mut self,
                lead_id: Uuid,
            ) -> Result<Vec<ContactFacts>, StorageError> {
                sqlx::query_as::<_, StoredContact>(
                    "SELECT contact_id, lead_id, profile, opted_in, update_time FROM contacts \
                     WHERE lead_id = $1 ORDER BY contact_id",
                )
                .bind(lead_id)
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(ContactFacts::try_from)
                .collect()
            }

            async fn insert_activity(&mut self, activity: &ActivityFact) -> Result<bool, StorageError> {
                let inserted = sqlx::query(concat!(
                    "INSERT INTO activities (",
                    activity_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (activity_id) DO NOTHING"
                ))
                .bind(activity.activity_id)
                .bind(activity.event_id)
                .bind(activity.lead_id)
                .bind(activity.contact_id)
                .bind(&activity.visitor_id)
                .bind(&activity.activity_key)
                .bind(&activity.content_id)
                .bind(&activity.buying_stage)
                .bind(&activity.product)
                .bind(activity.occurred_at)
                .execute(&mut *self.transaction)
                .await?
                .rows_affected();
                Ok(inserted == 1)
            }

            async fn attach_visitor_activities(
                &mut self,
                visitor_ids: &[String],
                contact_id: Uuid,
                lead_id: Uuid,
            ) -> Result<u64, StorageError> {
                let mut attached = 0;
                for visitor_id in visitor_ids.iter().filter(|id| !id.is_empty()) {
                    attached += sqlx::query(
                        "UPDATE activities SET contact_id = $2, lead_id = $3 \
                         WHERE visitor_id = $1 AND lead_id IS NULL",
                    )
                    .bind(visitor_id)
                    .bind(contact_id)
                    .bind(lead_id)
                    .execute(&mut *self.transaction)
                    .await?
                    .rows_affected();
                }
                Ok(attached)
            }

            async fn activities_of_lead(
                &mut self,
                lead_id: Uuid,
                product: &str,
            ) -> Result<Vec<ActivityFact>, StorageError> {
                Ok(sqlx::query_as::<_, ActivityFact>(concat!(
                    "SELECT ",
                    activity_columns!(),
                    " FROM activities WHERE lead_id = $1 AND (product = $2 OR product = '') \
                     ORDER BY occurred_at, activity_id"
                ))
                .bind(lead_id)
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn lead_product(
                &mut self,
                lead_id: Uuid,
                product: &str,
            ) -> Result<Option<LeadProduct>, StorageError> {
                Ok(sqlx::query_as::<_, LeadProduct>(concat!(
                    "SELECT ",
                    lead_product_columns!(),
                    " FROM lead_products WHERE lead_id = $1 AND product = $2"
                ))
                .bind(lead_id)
                .bind(product)
                .fetch_optional(&mut *self.transaction)
                .await?)
            }

            async fn products_of_lead(&mut self, lead_id: Uuid) -> Result<Vec<String>, StorageError> {
                Ok(sqlx::query_scalar(
                    "SELECT product FROM lead_products WHERE lead_id = $1 ORDER BY product",
                )
                .bind(lead_id)
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn lead_products(&mut self, product: &str) -> Result<Vec<LeadProduct>, StorageError> {
                Ok(sqlx::query_as::<_, LeadProduct>(concat!(
                    "SELECT ",
                    lead_product_columns!(),
                    " FROM lead_products WHERE ($1 = '' OR product = $1) ORDER BY product, lead_id"
                ))
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn put_lead_product(&mut self, standing: &LeadProduct) -> Result<(), StorageError> {
                sqlx::query(concat!(
                    "INSERT INTO lead_products (",
                    lead_product_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (lead_id, product) DO UPDATE SET stage = excluded.stage, \
                     lead_class = excluded.lead_class, class_since = excluded.class_since, \
                     manual_since = excluded.manual_since, handed_over = excluded.handed_over, \
                     awaiting_new_engagement = excluded.awaiting_new_engagement, \
                     contact_requested = excluded.contact_requested, \
                     update_time = excluded.update_time"
                ))
                .bind(standing.lead_id)
                .bind(&standing.product)
                .bind(&standing.stage)
                .bind(&standing.lead_class)
                .bind(standing.class_since)
                .bind(standing.manual_since)
                .bind(standing.handed_over)
                .bind(standing.awaiting_new_engagement)
                .bind(standing.contact_requested)
                .bind(standing.create_time)
                .bind(standing.update_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn ledger(
                &mut self,
                lead_id: Uuid,
                product: &str,
                model_id: Uuid,
            ) -> Result<Vec<LedgerRow>, StorageError> {
                Ok(sqlx::query_as::<_, LedgerRow>(concat!(
                    "SELECT ",
                    ledger_columns!(),
                    " FROM ledger_entries WHERE lead_id = $1 AND product = $2 AND model_id = $3 \
                     ORDER BY occurred_at, entry_id"
                ))
                .bind(lead_id)
                .bind(product)
                .bind(model_id)
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn append_ledger(&mut self, entries: &[LedgerRow]) -> Result<(), StorageError> {
                for entry in entries {
                    sqlx::query(concat!(
                        "INSERT INTO ledger_entries (",
                        ledger_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                    ))
                    .bind(entry.entry_id)
                    .bind(entry.lead_id)
                    .bind(&entry.product)
                    .bind(entry.model_id)
                    .bind(entry.contact_id)
                    .bind(entry.event_id)
                    .bind(entry.activity_id)
                    .bind(&entry.activity_key)
                    .bind(&entry.content_id)
                    .bind(&entry.rule)
                    .bind(entry.points)
                    .bind(entry.capped)
                    .bind(&entry.cause)
                    .bind(entry.occurred_at)
                    .bind(entry.create_time)
                    .execute(&mut *self.transaction)
                    .await?;
                }
                Ok(())
            }

            async fn contact_records(
                &mut self,
                contact_id: Uuid,
            ) -> Result<ContactRecords, StorageError> {
                let ledger = sqlx::query_as::<_, LedgerRow>(concat!(
                    "SELECT ",
                    ledger_columns!(),
                    " FROM ledger_entries WHERE contact_id = $1 ORDER BY occurred_at, entry_id"
                ))
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                let class_changes = sqlx::query_as::<_, ClassChangeRow>(concat!(
                    "SELECT ",
                    class_change_columns!(),
                    " FROM class_changes WHERE event_id IN (",
                    contact_events!(),
                    ") ORDER BY change_id"
                ))
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                let stage_changes = sqlx::query_as::<_, StageChangeRow>(concat!(
                    "SELECT ",
                    stage_change_columns!(),
                    " FROM stage_changes WHERE event_id IN (",
                    contact_events!(),
                    ") ORDER BY change_id"
                ))
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                Ok(ContactRecords {
                    ledger,
                    class_changes,
                    stage_changes,
                })
            }

            async fn erase_contact(
                &mut self,
                contact_id: Uuid,
                visitor_ids: &[String],
            ) -> Result<ContactErasure, StorageError> {
                let leads: Vec<Uuid> = sqlx::query_scalar(concat!(
                    "SELECT lead_id FROM leads WHERE lead_id IN (\
                     SELECT lead_id FROM contacts WHERE contact_id = $1 \
                     UNION SELECT lead_id FROM ledger_entries WHERE contact_id = $1 \
                     UNION SELECT lead_id FROM activities WHERE contact_id = $1) \
                     ORDER BY lead_id",
                    $for_update
                ))
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                let anonymised_entries =
                    sqlx::query("UPDATE ledger_entries SET contact_id = NULL WHERE contact_id = $1")
                        .bind(contact_id)
                        .execute(&mut *self.transaction)
                        .await?
                        .rows_affected();
                sqlx::query(
                    "UPDATE activities SET contact_id = NULL, visitor_id = '' WHERE contact_id = $1",
                )
                .bind(contact_id)
                .execute(&mut *self.transaction)
                .await?;
                for visitor_id in visitor_ids.iter().filter(|id| !id.is_empty()) {
                    sqlx::query("DELETE FROM activities WHERE visitor_id = $1 AND lead_id IS NULL")
                        .bind(visitor_id)
                        .execute(&mut *self.transaction)
                        .await?;
                }
                sqlx::query("DELETE FROM contacts WHERE contact_id = $1")
                    .bind(contact_id)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(ContactErasure {
                    anonymised_entries,
                    leads,
                })
            }

            async fn insert_class_change(&mut self, change: &ClassChangeRow) -> Result<(), StorageError> {
                sqlx::query(concat!(
                    "INSERT INTO class_changes (",
                    class_change_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .bind(change.change_id)
                .bind(change.lead_id)
                .bind(&change.product)
                .bind(&change.from_class)
                .bind(&change.to_class)
                .bind(&change.origin)
                .bind(&change.actor)
                .bind(&change.reason)
                .bind(change.event_id)
                .bind(change.change_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn class_changes(
                &mut self,
                lead_id: Uuid,
                product: &str,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<ClassChangeRow>, StorageError> {
                // Change ids are time-ordered (UUIDv7): id order is the order of the changes.
                Ok(sqlx::query_as::<_, ClassChangeRow>(concat!(
                    "SELECT ",
                    class_change_columns!(),
                    " FROM class_changes WHERE lead_id = $1 AND product = $2 \
                     AND change_id > $3 ORDER BY change_id LIMIT $4"
                ))
                .bind(lead_id)
                .bind(product)
                // The nil id sorts before every change id.
                .bind(after.unwrap_or_else(Uuid::nil))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn insert_stage_change(&mut self, change: &StageChangeRow) -> Result<(), StorageError> {
                sqlx::query(concat!(
                    "INSERT INTO stage_changes (",
                    stage_change_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(change.change_id)
                .bind(change.lead_id)
                .bind(&change.product)
                .bind(&change.from_stage)
                .bind(&change.to_stage)
                .bind(&change.actor)
                .bind(&change.reason)
                .bind(change.event_id)
                .bind(change.change_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn stage_changes(
                &mut self,
                lead_id: Uuid,
                product: &str,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<StageChangeRow>, StorageError> {
                Ok(sqlx::query_as::<_, StageChangeRow>(concat!(
                    "SELECT ",
                    stage_change_columns!(),
                    " FROM stage_changes WHERE lead_id = $1 AND product = $2 \
                     AND change_id > $3 ORDER BY change_id LIMIT $4"
                ))
                .bind(lead_id)
                .bind(product)
                // The nil id sorts before every change id.
                .bind(after.unwrap_or_else(Uuid::nil))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn insert_hand_off(&mut self, hand_off: &HandOffRow) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO hand_offs (hand_off_id, lead_id, product, reason, total_points, \
                     model_id, event_id, hand_off_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(hand_off.hand_off_id)
                .bind(hand_off.lead_id)
                .bind(&hand_off.product)
                .bind(&hand_off.reason)
                .bind(hand_off.total_points)
                .bind(hand_off.model_id)
                .bind(hand_off.event_id)
                .bind(hand_off.hand_off_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn insert_deal(&mut self, deal: &DealRow) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO deals (deal_id, lead_id, product, won, amount_minor, currency, \
                     closed_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (deal_id) DO NOTHING",
                )
                .bind(deal.deal_id)
                .bind(deal.lead_id)
                .bind(&deal.product)
                .bind(deal.won)
                .bind(deal.amount_minor)
                .bind(&deal.currency)
                .bind(deal.closed_at)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn note_campaign(
                &mut self,
                lead_id: Uuid,
                campaign: &str,
                now: DateTime<Utc>,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO lead_campaigns (lead_id, campaign, first_time) \
                     VALUES ($1, $2, $3) ON CONFLICT (lead_id) DO NOTHING",
                )
                .bind(lead_id)
                .bind(campaign)
                .bind(now)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn insert_marketing_cost(
                &mut self,
                cost: &MarketingCostRow,
            ) -> Result<(), StorageError> {
                sqlx::query(concat!(
                    "INSERT INTO marketing_costs (",
                    marketing_cost_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(cost.cost_id)
                .bind(&cost.product)
                .bind(&cost.campaign)
                .bind(&cost.currency)
                .bind(cost.amount_minor)
                .bind(cost.start_time)
                .bind(cost.end_time)
                .bind(&cost.note)
                .bind(cost.create_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn marketing_costs(
                &mut self,
                product: &str,
                campaign: &str,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<MarketingCostRow>, StorageError> {
                // Cost ids are time-ordered (UUIDv7): id order is the order of recording.
                Ok(sqlx::query_as::<_, MarketingCostRow>(concat!(
                    "SELECT ",
                    marketing_cost_columns!(),
                    " FROM marketing_costs WHERE product = $1 AND ($2 = '' OR campaign = $2) \
                     AND cost_id > $3 ORDER BY cost_id LIMIT $4"
                ))
                .bind(product)
                .bind(campaign)
                .bind(after.unwrap_or_else(Uuid::nil))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn funnel_records(&mut self, product: &str) -> Result<FunnelRecords, StorageError> {
                let standings = sqlx::query_as::<_, LeadProduct>(concat!(
                    "SELECT ",
                    lead_product_columns!(),
                    " FROM lead_products WHERE product = $1 ORDER BY lead_id"
                ))
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                let class_changes = sqlx::query_as::<_, ClassChangeRow>(concat!(
                    "SELECT ",
                    class_change_columns!(),
                    " FROM class_changes WHERE product = $1 ORDER BY lead_id, change_id"
                ))
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                let stage_changes = sqlx::query_as::<_, StageChangeRow>(concat!(
                    "SELECT ",
                    stage_change_columns!(),
                    " FROM stage_changes WHERE product = $1 ORDER BY lead_id, change_id"
                ))
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                let leads = sqlx::query_as::<_, StoredLead>(
                    "SELECT l.lead_id, l.account_id, l.profile, l.update_time FROM leads l \
                     JOIN lead_products p ON p.lead_id = l.lead_id WHERE p.product = $1 \
                     ORDER BY l.lead_id",
                )
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(LeadFacts::try_from)
                .collect::<Result<Vec<_>, _>>()?;
                let campaigns = sqlx::query_as::<_, (Uuid, String)>(
                    "SELECT c.lead_id, c.campaign FROM lead_campaigns c \
                     JOIN lead_products p ON p.lead_id = c.lead_id WHERE p.product = $1",
                )
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                let deals = sqlx::query_as::<_, DealRow>(
                    "SELECT deal_id, lead_id, product, won, amount_minor, currency, closed_at \
                     FROM deals WHERE product = $1 ORDER BY closed_at, deal_id",
                )
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                let costs = sqlx::query_as::<_, MarketingCostRow>(concat!(
                    "SELECT ",
                    marketing_cost_columns!(),
                    " FROM marketing_costs WHERE product = $1 ORDER BY cost_id"
                ))
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                Ok(FunnelRecords {
                    standings,
                    class_changes,
                    stage_changes,
                    leads,
                    campaigns,
                    deals,
                    costs,
                })
            }

            async fn funnel_slice(
                &mut self,
                product: &str,
                since: DateTime<Utc>,
                by_profile: bool,
            ) -> Result<FunnelSlice, StorageError> {
                let standings = sqlx::query_as::<_, LeadProduct>(concat!(
                    moving_leads!(),
                    "SELECT p.lead_id, p.product, p.stage, p.lead_class, p.class_since, \
                     p.manual_since, p.handed_over, p.awaiting_new_engagement, \
                     p.contact_requested, p.create_time, p.update_time \
                     FROM lead_products p \
                     WHERE p.product = $1 AND p.lead_id IN (SELECT lead_id FROM moving) \
                     ORDER BY p.lead_id"
                ))
                .bind(product)
                .bind(since)
                .fetch_all(&mut *self.transaction)
                .await?;
                let class_changes = sqlx::query_as::<_, ClassChangeRow>(concat!(
                    moving_leads!(),
                    "SELECT c.change_id, c.lead_id, c.product, c.from_class, c.to_class, \
                     c.origin, c.actor, c.reason, c.event_id, c.change_time \
                     FROM class_changes c \
                     WHERE c.product = $1 AND c.lead_id IN (SELECT lead_id FROM moving) \
                     ORDER BY c.lead_id, c.change_id"
                ))
                .bind(product)
                .bind(since)
                .fetch_all(&mut *self.transaction)
                .await?;
                let stage_changes = sqlx::query_as::<_, StageChangeRow>(concat!(
                    moving_leads!(),
                    "SELECT s.change_id, s.lead_id, s.product, s.from_stage, s.to_stage, \
                     s.actor, s.reason, s.event_id, s.change_time \
                     FROM stage_changes s \
                     WHERE s.product = $1 AND s.lead_id IN (SELECT lead_id FROM moving) \
                     ORDER BY s.lead_id, s.change_id"
                ))
                .bind(product)
                .bind(since)
                .fetch_all(&mut *self.transaction)
                .await?;
                let leads = sqlx::query_as::<_, StoredLead>(concat!(
                    moving_leads!(),
                    "SELECT l.lead_id, l.account_id, l.profile, l.update_time FROM leads l \
                     JOIN lead_products p ON p.lead_id = l.lead_id \
                     WHERE p.product = $1 AND l.lead_id IN (SELECT lead_id FROM moving) \
                     ORDER BY l.lead_id"
                ))
                .bind(product)
                .bind(since)
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(LeadFacts::try_from)
                .collect::<Result<Vec<_>, _>>()?;
                let campaigns = sqlx::query_as::<_, (Uuid, String)>(concat!(
                    moving_leads!(),
                    "SELECT c.lead_id, c.campaign FROM lead_campaigns c \
                     JOIN lead_products p ON p.lead_id = c.lead_id \
                     WHERE p.product = $1 AND c.lead_id IN (SELECT lead_id FROM moving)"
                ))
                .bind(product)
                .bind(since)
                .fetch_all(&mut *self.transaction)
                .await?;
                let deals = sqlx::query_as::<_, DealRow>(concat!(
                    moving_leads!(),
                    "SELECT d.deal_id, d.lead_id, d.product, d.won, d.amount_minor, \
                     d.currency, d.closed_at FROM deals d \
                     WHERE d.product = $1 AND d.lead_id IN (SELECT lead_id FROM moving) \
                     ORDER BY d.closed_at, d.deal_id"
                ))
                .bind(product)
                .bind(since)
                .fetch_all(&mut *self.transaction)
                .await?;
                let costs = sqlx::query_as::<_, MarketingCostRow>(concat!(
                    "SELECT ",
                    marketing_cost_columns!(),
                    " FROM marketing_costs WHERE product = $1 ORDER BY cost_id"
                ))
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                // The many leads that did not move are only counted, in the database; a
                // segmented report counts them per profile too, since the attributes it
                // segments by live inside the encoded profile.
                let before = if by_profile {
                    sqlx::query_as::<_, StoredStandingCount>(
                        "SELECT p.lead_class, p.stage, l.profile, count(*) AS lead_count \
                         FROM lead_products p JOIN leads l ON l.lead_id = p.lead_id \
                         WHERE p.product = $1 AND p.create_time < $2 \
                         GROUP BY p.lead_class, p.stage, l.profile",
                    )
                } else {
                    sqlx::query_as::<_, StoredStandingCount>(
                        "SELECT lead_class, stage, NULL AS profile, count(*) AS lead_count \
                         FROM lead_products WHERE product = $1 AND create_time < $2 \
                         GROUP BY lead_class, stage",
                    )
                }
                .bind(product)
                .bind(since)
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(StandingCount::try_from)
                .collect::<Result<Vec<_>, _>>()?;
                Ok(FunnelSlice {
                    moving: FunnelRecords {
                        standings,
                        class_changes,
                        stage_changes,
                        leads,
                        campaigns,
                        deals,
                        costs,
                    },
                    before,
                })
            }

            async fn bant(
                &mut self,
                lead_id: Uuid,
                product: &str,
            ) -> Result<Option<pb::Bant>, StorageError> {
                let bytes: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT qualification FROM bant WHERE lead_id = $1 AND product = $2",
                )
                .bind(lead_id)
                .bind(product)
                .fetch_optional(&mut *self.transaction)
                .await?;
                bytes
                    .map(|bytes| {
                        pb::Bant::decode(bytes.as_slice())
                            .map_err(|error| StorageError::Corrupt(format!("bant: {error}")))
                    })
                    .transpose()
            }

            async fn put_bant(
                &mut self,
                lead_id: Uuid,
                product: &str,
                qualification: &pb::Bant,
                now: DateTime<Utc>,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO bant (lead_id, product, qualification, update_time) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (lead_id, product) DO UPDATE SET \
                     qualification = excluded.qualification, update_time = excluded.update_time",
                )
                .bind(lead_id)
                .bind(product)
                .bind(qualification.encode_to_vec())
                .bind(now)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn active_model(
                &mut self,
                product: &str,
            ) -> Result<Option<ScoringModelRecord>, StorageError> {
                sqlx::query_as::<_, ModelRow>(&format!(
                    "{SELECT_MODEL} WHERE product = $1 AND active"
                ))
                .bind(product)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(model_record)
                .transpose()
            }

            async fn model(
                &mut self,
                model_id: Uuid,
            ) -> Result<Option<ScoringModelRecord>, StorageError> {
                sqlx::query_as::<_, ModelRow>(&format!("{SELECT_MODEL} WHERE model_id = $1"))
                    .bind(model_id)
                    .fetch_optional(&mut *self.transaction)
                    .await?
                    .map(model_record)
                    .transpose()
            }

            async fn lock_product_models(&mut self, product: &str) -> Result<u32, StorageError> {
                $(sqlx::query($serialise)
                    .bind(product)
                    .execute(&mut *self.transaction)
                    .await?;)?
                let latest: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(max(version) AS BIGINT) FROM scoring_models WHERE product = $1",
                )
                .bind(product)
                .fetch_one(&mut *self.transaction)
                .await?;
                Ok(latest.map_or(0, |version| u32::try_from(version).unwrap_or(0)))
            }

            async fn insert_model(&mut self, record: &ScoringModelRecord) -> Result<(), StorageError> {
                let model = &record.model;
                sqlx::query(
                    "INSERT INTO scoring_models (model_id, product, version, name, active, \
                     threshold, definition, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(record.model_id)
                .bind(model.product())
                .bind(i32::try_from(record.version).unwrap_or(i32::MAX))
                .bind(model.name())
                .bind(false)
                .bind(i32::try_from(model.threshold()).unwrap_or(i32::MAX))
                .bind(model.definition().encode_to_vec())
                .bind(record.create_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn activate_model(
                &mut self,
                product: &str,
                model_id: Uuid,
            ) -> Result<(), StorageError> {
                // Off first: the partial unique index allows one active version per product.
                sqlx::query("UPDATE scoring_models SET active = false WHERE product = $1 AND active")
                    .bind(product)
                    .execute(&mut *self.transaction)
                    .await?;
                sqlx::query("UPDATE scoring_models SET active = true WHERE model_id = $1")
                    .bind(model_id)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(())
            }

            async fn savepoint(&mut self) -> Result<(), StorageError> {
                sqlx::query("SAVEPOINT batch_event").execute(&mut *self.transaction).await?;
                Ok(())
            }

            async fn release_savepoint(&mut self) -> Result<(), StorageError> {
                sqlx::query("RELEASE SAVEPOINT batch_event").execute(&mut *self.transaction).await?;
                Ok(())
            }

            async fn rollback_to_savepoint(&mut self) -> Result<(), StorageError> {
                sqlx::query("ROLLBACK TO SAVEPOINT batch_event")
                    .execute(&mut *self.transaction)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT batch_event").execute(&mut *self.transaction).await?;
                Ok(())
            }

            async fn record_delivery(&mut self, delivery: &Delivery) -> Result<Recorded, StorageError> {
                $inbox(&mut self.transaction, delivery).await
            }

            async fn publish(&mut self, envelope: &EventEnvelope) -> Result<(), StorageError> {
                $outbox(&mut self.transaction, envelope).await
            }

            async fn save_response(
                &mut self,
                key: &IdempotencyKey,
                response_id: Uuid,
                response: &[u8],
            ) -> Result<(), StorageError> {
                use $idempotency as idempotency;
                sqlx::query("INSERT INTO call_responses (response_id, response) VALUES ($1, $2)")
                    .bind(response_id)
                    .bind(response)
                    .execute(&mut *self.transaction)
                    .await?;
                idempotency::complete(&mut self.transaction, key, response_id).await
            }

            async fn commit(self: Box<Self>) -> Result<(), StorageError> {
                self.transaction.commit().await?;
                Ok(())
            }
        }
    };
}

sql_scoring_store! {
    store: PostgresScoringStore,
    unit: PostgresScoringUnit,
    database: sqlx::Postgres,
    idempotency: leadflow_storage::idempotency,
    inbox: leadflow_bus::inbox::record,
    outbox: leadflow_bus::outbox::append,
    for_update: " FOR UPDATE",
    // Writers of one product's models take turns; others do not wait.
    serialise_models: ["SELECT pg_advisory_xact_lock(hashtext('scoring_models:' || $1))"],
    // One consistent snapshot for everything a read answers from.
    snapshot: ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"],
}

sql_scoring_store! {
    store: SqliteScoringStore,
    unit: SqliteScoringUnit,
    database: sqlx::Sqlite,
    idempotency: leadflow_storage::idempotency::sqlite,
    inbox: leadflow_bus::inbox::sqlite::record,
    outbox: leadflow_bus::outbox::sqlite::append,
    // The one connection serialises transactions: rows need no locks, reads no snapshot.
    for_update: "",
    serialise_models: [],
    snapshot: [],
}
