//! Capture's records on both SQL stores: PostgreSQL for production and SQLite for the
//! embedded mode. The two dialects agree on every statement here (`$n` parameters, upserts
//! on the primary key, row values), so one implementation is expanded for each driver and
//! only the transaction setup, the consent order and the outbox differ.
//!
//! Times are kept as `TIMESTAMPTZ` on PostgreSQL and as RFC 3339 UTC text on SQLite, whose
//! text order is time order, so both sort activities and mails alike.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_platform::time::{from_timestamp, to_timestamp};
use leadflow_proto::{
    common::v1 as common,
    events::v1::{ConsentChannel, ConsentState},
};
use leadflow_storage::{BeginSafely, Begun, IdempotencyKey, Page, StorageError};
use prost::Message;
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use crate::records::{
    AccountRow, ActivityFilter, ActivityRow, ActivitySubject, CaptureStore, CaptureUnit,
    ConsentRow, ContactRow, ErasedRecords, LeadFilter, LeadRow, OutboundMail, TombstoneRow,
    VisitorRow, activity_type_name, consent_channel_name, consent_state_name, decode,
    decode_optional, enum_value, map_from_json, map_to_json, stage_name,
};
use crate::repository::{READ_WORDINGS, WordingRow};

/// Capture's records in its PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresCaptureStore {
    pool: PgPool,
}

impl PostgresCaptureStore {
    /// A store on `pool`, whose search path is capture's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Capture's records in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteCaptureStore {
    pool: SqlitePool,
}

impl SqliteCaptureStore {
    /// A store on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

macro_rules! lead_columns {
    () => {
        "lead_id, account_id, profile, first_attribution, create_time, update_time"
    };
}

macro_rules! contact_columns {
    () => {
        "contact_id, lead_id, profile, custom_fields, source, first_attribution, create_time, \
         update_time, last_activity_time"
    };
}

macro_rules! activity_columns {
    () => {
        "activity_id, contact_id, lead_id, visitor_id, activity_type, custom_type, \
         content_item_id, stage, product, occurred_at, source, send_id, attribution, \
         attributes, form_id, recorded_at"
    };
}

macro_rules! consent_columns {
    () => {
        "consent_id, contact_id, purpose, state, previous_state, wording_version, wording, \
         form_id, channel, client, occurred_at, recorded_at, recorded_by, send_id, \
         confirms_consent_id, note"
    };
}

macro_rules! mail_columns {
    () => {
        "mail_id, contact_id, kind, recipient, subject, body, link, create_time"
    };
}

const UPSERT_ACCOUNT: &str = "INSERT INTO accounts (account_id, web_domain, name, create_time, \
     update_time) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO UPDATE SET \
     web_domain = excluded.web_domain, name = excluded.name, update_time = excluded.update_time";

const UPSERT_LEAD: &str = "INSERT INTO leads (lead_id, account_id, web_domain, site_key, source, \
     country_code, profile, first_attribution, create_time, update_time) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (lead_id) DO UPDATE SET \
     account_id = excluded.account_id, web_domain = excluded.web_domain, \
     site_key = excluded.site_key, source = excluded.source, \
     country_code = excluded.country_code, profile = excluded.profile, \
     first_attribution = excluded.first_attribution, update_time = excluded.update_time";

const UPSERT_CONTACT: &str = "INSERT INTO contacts (contact_id, email, lead_id, source, profile, \
     custom_fields, first_attribution, create_time, update_time, last_activity_time) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (contact_id) DO UPDATE SET \
     email = excluded.email, lead_id = excluded.lead_id, source = excluded.source, \
     profile = excluded.profile, custom_fields = excluded.custom_fields, \
     first_attribution = excluded.first_attribution, update_time = excluded.update_time, \
     last_activity_time = excluded.last_activity_time";

const UPSERT_VISITOR: &str = "INSERT INTO visitors (visitor_id, contact_id, first_seen_time, \
     merge_time) VALUES ($1, $2, $3, $4) ON CONFLICT (visitor_id) DO UPDATE SET \
     contact_id = excluded.contact_id, merge_time = excluded.merge_time";

const MOVE_VISITOR_ACTIVITIES: &str = "UPDATE activities SET contact_id = $2, lead_id = $3 \
     WHERE visitor_id = $1 AND contact_id IS NULL";

const INSERT_ACTIVITY: &str = concat!(
    "INSERT INTO activities (",
    activity_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
);

const INSERT_CONSENT: &str = concat!(
    "INSERT INTO consent_records (",
    consent_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
);

const INSERT_MAIL: &str = concat!(
    "INSERT INTO outbound_mails (",
    mail_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
);

const UNSENT_MAILS: &str = concat!(
    "SELECT ",
    mail_columns!(),
    " FROM outbound_mails WHERE send_time IS NULL ORDER BY create_time, mail_id LIMIT $1"
);

/// A lead as stored; the profile is an encoded `LeadProfile`.
#[derive(sqlx::FromRow)]
struct StoredLead {
    lead_id: Uuid,
    account_id: Option<Uuid>,
    profile: Vec<u8>,
    first_attribution: Option<Vec<u8>>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

impl TryFrom<StoredLead> for LeadRow {
    type Error = StorageError;

    fn try_from(stored: StoredLead) -> Result<Self, StorageError> {
        Ok(Self {
            lead_id: stored.lead_id,
            account_id: stored.account_id,
            profile: decode(&stored.profile, "lead profile")?,
            first_attribution: decode_optional(
                stored.first_attribution.as_deref(),
                "lead attribution",
            )?,
            create_time: stored.create_time,
            update_time: stored.update_time,
        })
    }
}

/// A contact as stored; the profile is an encoded `ContactProfile`.
#[derive(sqlx::FromRow)]
struct StoredContact {
    contact_id: Uuid,
    lead_id: Uuid,
    profile: Vec<u8>,
    custom_fields: String,
    source: String,
    first_attribution: Option<Vec<u8>>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    last_activity_time: Option<DateTime<Utc>>,
}

impl TryFrom<StoredContact> for ContactRow {
    type Error = StorageError;

    fn try_from(stored: StoredContact) -> Result<Self, StorageError> {
        Ok(Self {
            contact_id: stored.contact_id,
            lead_id: stored.lead_id,
            profile: decode(&stored.profile, "contact profile")?,
            custom_fields: map_from_json(&stored.custom_fields, "contact custom fields")?,
            source: stored.source,
            first_attribution: decode_optional(
                stored.first_attribution.as_deref(),
                "contact attribution",
            )?,
            create_time: stored.create_time,
            update_time: stored.update_time,
            last_activity_time: stored.last_activity_time,
        })
    }
}

/// An activity as stored; enums by name, the attributes as a JSON object.
#[derive(sqlx::FromRow)]
struct StoredActivity {
    activity_id: Uuid,
    contact_id: Option<Uuid>,
    lead_id: Option<Uuid>,
    visitor_id: Option<String>,
    activity_type: String,
    custom_type: String,
    content_item_id: String,
    stage: String,
    product: String,
    occurred_at: DateTime<Utc>,
    source: String,
    send_id: String,
    attribution: Option<Vec<u8>>,
    attributes: String,
    form_id: Option<Uuid>,
    recorded_at: DateTime<Utc>,
}

impl TryFrom<StoredActivity> for ActivityRow {
    type Error = StorageError;

    fn try_from(stored: StoredActivity) -> Result<Self, StorageError> {
        Ok(Self {
            activity_id: stored.activity_id.to_string(),
            contact_id: id_text(stored.contact_id),
            lead_id: id_text(stored.lead_id),
            visitor_id: stored.visitor_id.unwrap_or_default(),
            r#type: enum_value(
                &stored.activity_type,
                |name| common::ActivityType::from_str_name(name).map(|value| value as i32),
                "activity type",
            )?,
            custom_type: stored.custom_type,
            content_item_id: stored.content_item_id,
            stage: enum_value(
                &stored.stage,
                |name| common::BuyingStage::from_str_name(name).map(|value| value as i32),
                "activity stage",
            )?,
            product: stored.product,
            occurred_at: Some(to_timestamp(stored.occurred_at)),
            source: stored.source,
            send_id: stored.send_id,
            attribution: decode_optional(stored.attribution.as_deref(), "activity attribution")?,
            attributes: map_from_json(&stored.attributes, "activity attributes")?
                .into_iter()
                .collect(),
            form_id: id_text(stored.form_id),
            recorded_at: Some(to_timestamp(stored.recorded_at)),
        })
    }
}

/// A consent record as stored; enums by name.
#[derive(sqlx::FromRow)]
struct StoredConsent {
    consent_id: Uuid,
    contact_id: Uuid,
    purpose: String,
    state: String,
    previous_state: String,
    wording_version: String,
    wording: String,
    form_id: Option<Uuid>,
    channel: String,
    client: Option<Vec<u8>>,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    recorded_by: String,
    send_id: String,
    confirms_consent_id: Option<Uuid>,
    note: String,
}

impl TryFrom<StoredConsent> for ConsentRow {
    type Error = StorageError;

    fn try_from(stored: StoredConsent) -> Result<Self, StorageError> {
        let state = |name: &str, what: &str| {
            enum_value(
                name,
                |name| ConsentState::from_str_name(name).map(|value| value as i32),
                what,
            )
        };
        Ok(Self {
            consent_id: stored.consent_id.to_string(),
            contact_id: stored.contact_id.to_string(),
            purpose: stored.purpose,
            state: state(&stored.state, "consent state")?,
            previous_state: state(&stored.previous_state, "consent previous state")?,
            wording_version: stored.wording_version,
            wording: stored.wording,
            form_id: id_text(stored.form_id),
            channel: enum_value(
                &stored.channel,
                |name| ConsentChannel::from_str_name(name).map(|value| value as i32),
                "consent channel",
            )?,
            client: decode_optional(stored.client.as_deref(), "consent client")?,
            occurred_at: Some(to_timestamp(stored.occurred_at)),
            recorded_at: Some(to_timestamp(stored.recorded_at)),
            recorded_by: stored.recorded_by,
            send_id: stored.send_id,
            confirms_consent_id: id_text(stored.confirms_consent_id),
            note: stored.note,
        })
    }
}

/// An optional id as the protobuf string field holds it: empty when absent.
fn id_text(id: Option<Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// An id from a protobuf string field: `None` when empty.
fn optional_id(text: &str, field: &str) -> Result<Option<Uuid>, StorageError> {
    if text.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(text)
        .map(Some)
        .map_err(|_| StorageError::Corrupt(format!("{field} {text:?} is not a UUID")))
}

/// An id from a protobuf string field that must be set.
fn required_id(text: &str, field: &str) -> Result<Uuid, StorageError> {
    optional_id(text, field)?.ok_or_else(|| StorageError::Corrupt(format!("{field} is missing")))
}

/// A time from a protobuf timestamp field that must be set.
fn required_time(
    timestamp: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, StorageError> {
    timestamp
        .and_then(from_timestamp)
        .ok_or_else(|| StorageError::Corrupt(format!("{field} is missing or out of range")))
}

/// The text of an optional value: `None` when empty, as nullable columns keep it.
fn optional_text(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// The listing's statement: the subject's index, the filters given, and the keyset
/// continuation after the activity `after` in (occurred_at, activity_id) order.
fn list_activities_sql(filter: &ActivityFilter, after: bool) -> String {
    let subject = match filter.subject {
        ActivitySubject::Contact(_) => "contact_id",
        ActivitySubject::Lead(_) => "lead_id",
        ActivitySubject::Visitor(_) => "visitor_id",
    };
    let mut sql = format!(
        concat!(
            "SELECT ",
            activity_columns!(),
            " FROM activities WHERE {} = $1"
        ),
        subject
    );
    let mut parameter = 1;
    let mut next = || {
        parameter += 1;
        parameter
    };
    if !filter.types.is_empty() {
        let placeholders: Vec<String> = filter
            .types
            .iter()
            .map(|_| format!("${}", next()))
            .collect();
        sql.push_str(&format!(
            " AND activity_type IN ({})",
            placeholders.join(", ")
        ));
    }
    if filter.product.is_some() {
        sql.push_str(&format!(" AND product = ${}", next()));
    }
    if filter.occurred_from.is_some() {
        sql.push_str(&format!(" AND occurred_at >= ${}", next()));
    }
    if filter.occurred_until.is_some() {
        sql.push_str(&format!(" AND occurred_at < ${}", next()));
    }
    if after {
        sql.push_str(&format!(
            " AND (occurred_at, activity_id) < \
             (SELECT occurred_at, activity_id FROM activities WHERE activity_id = ${})",
            next()
        ));
    }
    sql.push_str(&format!(
        " ORDER BY occurred_at DESC, activity_id DESC LIMIT ${}",
        next()
    ));
    sql
}

/// The lead listing's statement: the filters given, then the keyset continuation after the
/// lead `after` in (create_time, lead_id) order, newest first.
fn list_leads_sql(filter: &LeadFilter, after: bool) -> String {
    let mut sql = concat!("SELECT ", lead_columns!(), " FROM leads WHERE TRUE").to_owned();
    let mut parameter = 0;
    let mut condition = |sql: &mut String, test: &str| {
        parameter += 1;
        sql.push_str(&format!(" AND {test} ${parameter}"));
    };
    let filters = [
        ("account_id =", filter.account_id.is_some()),
        ("web_domain =", filter.web_domain.is_some()),
        ("source =", filter.source.is_some()),
        ("country_code =", filter.country_code.is_some()),
        ("create_time >=", filter.created.0.is_some()),
        ("create_time <", filter.created.1.is_some()),
        ("update_time >=", filter.updated.0.is_some()),
        ("update_time <", filter.updated.1.is_some()),
    ];
    for (test, given) in filters {
        if given {
            condition(&mut sql, test);
        }
    }
    if after {
        parameter += 1;
        sql.push_str(&format!(
            " AND (create_time, lead_id) < \
             (SELECT create_time, lead_id FROM leads WHERE lead_id = ${parameter})"
        ));
    }
    parameter += 1;
    sql.push_str(&format!(
        " ORDER BY create_time DESC, lead_id DESC LIMIT ${parameter}"
    ));
    sql
}

/// Expands the port for one driver. `snapshot` runs first in a read-only unit;
/// `consent_order` is the column that keeps the order consent records were written in;
/// `envelope_names` and `answer_names` test whether an outbox envelope or a stored answer
/// holds the bytes `$1`; `skip_locked` lets replicas that sweep at once take different
/// rows.
macro_rules! sql_capture_store {
    (
        store: $store:ident,
        unit: $unit:ident,
        database: $database:ty,
        idempotency: $idempotency:path,
        outbox: $outbox:path,
        consent_order: $consent_order:literal,
        envelope_names: $envelope_names:literal,
        answer_names: $answer_names:literal,
        skip_locked: $skip_locked:literal,
        snapshot: [$($snapshot:literal)?] $(,)?
    ) => {
        /// One transaction of the store.
        struct $unit {
            transaction: sqlx::Transaction<'static, $database>,
        }

        #[async_trait]
        impl CaptureStore for $store {
            async fn begin(
                &self,
                key: &IdempotencyKey,
            ) -> Result<Begun<Box<dyn CaptureUnit>>, StorageError> {
                use $idempotency as idempotency;
                Ok(match idempotency::begin(&self.pool, key).await? {
                    Begun::Fresh(transaction) => Begun::Fresh(Box::new($unit { transaction })),
                    Begun::Replay(resource_id) => Begun::Replay(resource_id),
                    Begun::KeyReused => Begun::KeyReused,
                })
            }

            async fn read(&self) -> Result<Box<dyn CaptureUnit>, StorageError> {
                #[allow(unused_mut, reason = "only one dialect sets up a snapshot")]
                let mut transaction = self.pool.begin_safely().await?;
                $(sqlx::query($snapshot).execute(&mut *transaction).await?;)?
                Ok(Box::new($unit { transaction }))
            }

            async fn begin_batch(&self) -> Result<Box<dyn CaptureUnit>, StorageError> {
                let transaction = self.pool.begin_safely().await?;
                Ok(Box::new($unit { transaction }))
            }

            async fn unsent_mails(&self, limit: u32) -> Result<Vec<OutboundMail>, StorageError> {
                Ok(sqlx::query_as::<_, OutboundMail>(UNSENT_MAILS)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn mark_mail_sent(
                &self,
                mail_id: Uuid,
                now: DateTime<Utc>,
            ) -> Result<(), StorageError> {
                sqlx::query("UPDATE outbound_mails SET send_time = $2 WHERE mail_id = $1")
                    .bind(mail_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }

        #[async_trait]
        impl CaptureUnit for $unit {
            async fn account(
                &mut self,
                account_id: Uuid,
            ) -> Result<Option<AccountRow>, StorageError> {
                Ok(sqlx::query_as::<_, AccountRow>(
                    "SELECT account_id, web_domain, name, create_time, update_time \
                     FROM accounts WHERE account_id = $1",
                )
                .bind(account_id)
                .fetch_optional(&mut *self.transaction)
                .await?)
            }

            async fn account_by_domain(
                &mut self,
                web_domain: &str,
            ) -> Result<Option<AccountRow>, StorageError> {
                Ok(sqlx::query_as::<_, AccountRow>(
                    "SELECT account_id, web_domain, name, create_time, update_time \
                     FROM accounts WHERE web_domain = $1",
                )
                .bind(web_domain)
                .fetch_optional(&mut *self.transaction)
                .await?)
            }

            async fn put_account(&mut self, account: &AccountRow) -> Result<(), StorageError> {
                sqlx::query(UPSERT_ACCOUNT)
                    .bind(account.account_id)
                    .bind(&account.web_domain)
                    .bind(&account.name)
                    .bind(account.create_time)
                    .bind(account.update_time)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(())
            }

            async fn lead_count(&mut self, account_id: Uuid) -> Result<u32, StorageError> {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM leads WHERE account_id = $1")
                        .bind(account_id)
                        .fetch_one(&mut *self.transaction)
                        .await?;
                Ok(u32::try_from(count).unwrap_or(u32::MAX))
            }

            async fn lead(&mut self, lead_id: Uuid) -> Result<Option<LeadRow>, StorageError> {
                sqlx::query_as::<_, StoredLead>(concat!(
                    "SELECT ",
                    lead_columns!(),
                    " FROM leads WHERE lead_id = $1"
                ))
                .bind(lead_id)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(LeadRow::try_from)
                .transpose()
            }

            async fn lead_by_site(
                &mut self,
                web_domain: &str,
                site_key: &str,
            ) -> Result<Option<LeadRow>, StorageError> {
                sqlx::query_as::<_, StoredLead>(concat!(
                    "SELECT ",
                    lead_columns!(),
                    " FROM leads WHERE web_domain = $1 AND site_key = $2 AND web_domain <> ''"
                ))
                .bind(web_domain)
                .bind(site_key)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(LeadRow::try_from)
                .transpose()
            }

            async fn leads_of_account(
                &mut self,
                account_id: Uuid,
            ) -> Result<Vec<LeadRow>, StorageError> {
                // Lead ids are time-ordered (UUIDv7): id order is creation order.
                sqlx::query_as::<_, StoredLead>(concat!(
                    "SELECT ",
                    lead_columns!(),
                    " FROM leads WHERE account_id = $1 ORDER BY lead_id"
                ))
                .bind(account_id)
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(LeadRow::try_from)
                .collect()
            }

            async fn put_lead(&mut self, lead: &LeadRow) -> Result<(), StorageError> {
                let profile = &lead.profile;
                sqlx::query(UPSERT_LEAD)
                    .bind(lead.lead_id)
                    .bind(lead.account_id)
                    .bind(&profile.web_domain)
                    .bind(leadflow_domain::site_key(&profile.site))
                    .bind(&profile.source)
                    .bind(&profile.country_code)
                    .bind(profile.encode_to_vec())
                    .bind(lead.first_attribution.as_ref().map(Message::encode_to_vec))
                    .bind(lead.create_time)
                    .bind(lead.update_time)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(())
            }

            async fn contact_count(&mut self, lead_id: Uuid) -> Result<u32, StorageError> {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM contacts WHERE lead_id = $1")
                        .bind(lead_id)
                        .fetch_one(&mut *self.transaction)
                        .await?;
                Ok(u32::try_from(count).unwrap_or(u32::MAX))
            }

            async fn contact(
                &mut self,
                contact_id: Uuid,
            ) -> Result<Option<ContactRow>, StorageError> {
                sqlx::query_as::<_, StoredContact>(concat!(
                    "SELECT ",
                    contact_columns!(),
                    " FROM contacts WHERE contact_id = $1"
                ))
                .bind(contact_id)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(ContactRow::try_from)
                .transpose()
            }

            async fn contact_by_email(
                &mut self,
                email: &str,
            ) -> Result<Option<ContactRow>, StorageError> {
                sqlx::query_as::<_, StoredContact>(concat!(
                    "SELECT ",
                    contact_columns!(),
                    " FROM contacts WHERE email = $1"
                ))
                .bind(email)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(ContactRow::try_from)
                .transpose()
            }

            async fn contacts_of_lead(
                &mut self,
                lead_id: Uuid,
            ) -> Result<Vec<ContactRow>, StorageError> {
                // Contact ids are time-ordered (UUIDv7): id order is creation order.
                sqlx::query_as::<_, StoredContact>(concat!(
                    "SELECT ",
                    contact_columns!(),
                    " FROM contacts WHERE lead_id = $1 ORDER BY contact_id"
                ))
                .bind(lead_id)
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(ContactRow::try_from)
                .collect()
            }

            async fn put_contact(&mut self, contact: &ContactRow) -> Result<(), StorageError> {
                sqlx::query(UPSERT_CONTACT)
                    .bind(contact.contact_id)
                    .bind(&contact.profile.email)
                    .bind(contact.lead_id)
                    .bind(&contact.source)
                    .bind(contact.profile.encode_to_vec())
                    .bind(map_to_json(&contact.custom_fields))
                    .bind(contact.first_attribution.as_ref().map(Message::encode_to_vec))
                    .bind(contact.create_time)
                    .bind(contact.update_time)
                    .bind(contact.last_activity_time)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(())
            }

            async fn tombstone(
                &mut self,
                contact_id: Uuid,
            ) -> Result<Option<TombstoneRow>, StorageError> {
                Ok(sqlx::query_as::<_, TombstoneRow>(
                    "SELECT contact_id, email_hash, reason, erase_time, erased_by, note \
                     FROM tombstones WHERE contact_id = $1",
                )
                .bind(contact_id)
                .fetch_optional(&mut *self.transaction)
                .await?)
            }

            async fn email_erased(&mut self, email_hashes: &[String]) -> Result<bool, StorageError> {
                for email_hash in email_hashes {
                    let found: Option<i32> =
                        sqlx::query_scalar("SELECT 1 FROM tombstones WHERE email_hash = $1 LIMIT 1")
                            .bind(email_hash)
                            .fetch_optional(&mut *self.transaction)
                            .await?;
                    if found.is_some() {
                        return Ok(true);
                    }
                }
                Ok(false)
            }

            async fn erase_contact(
                &mut self,
                contact_id: Uuid,
                visitor_ids: &[String],
            ) -> Result<ErasedRecords, StorageError> {
                let mut erased = ErasedRecords::default();
                // Activities first: they reference the visitors and the contact.
                erased.activities = sqlx::query(
                    "DELETE FROM activities WHERE contact_id = $1 OR visitor_id IN \
                     (SELECT visitor_id FROM visitors WHERE contact_id = $1)",
                )
                .bind(contact_id)
                .execute(&mut *self.transaction)
                .await?
                .rows_affected();
                erased.visitors = sqlx::query("DELETE FROM visitors WHERE contact_id = $1")
                    .bind(contact_id)
                    .execute(&mut *self.transaction)
                    .await?
                    .rows_affected();
                erased.consents = sqlx::query("DELETE FROM consent_records WHERE contact_id = $1")
                    .bind(contact_id)
                    .execute(&mut *self.transaction)
                    .await?
                    .rows_affected();
                erased.mails = sqlx::query("DELETE FROM outbound_mails WHERE contact_id = $1")
                    .bind(contact_id)
                    .execute(&mut *self.transaction)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM contacts WHERE contact_id = $1")
                    .bind(contact_id)
                    .execute(&mut *self.transaction)
                    .await?;
                // An event or a stored answer names a contact or visitor by its id as text;
                // what the consumers applied already is erased by them on ContactErased.
                let contact_text = contact_id.to_string();
                // A retry of a call whose answer named the person (an update answers the
                // whole contact) is a new call now: its key goes with the answer.
                sqlx::query(concat!(
                    "DELETE FROM idempotency_keys WHERE resource_id IN \
                     (SELECT response_id FROM call_responses WHERE ",
                    $answer_names,
                    ")"
                ))
                .bind(contact_text.as_bytes().to_vec())
                .execute(&mut *self.transaction)
                .await?;
                erased.answers = sqlx::query(concat!(
                    "DELETE FROM call_responses WHERE ",
                    $answer_names
                ))
                .bind(contact_text.as_bytes().to_vec())
                .execute(&mut *self.transaction)
                .await?
                .rows_affected();
                for name in std::iter::once(&contact_text).chain(visitor_ids) {
                    erased.events += sqlx::query(concat!(
                        "DELETE FROM outbox WHERE ",
                        $envelope_names
                    ))
                    .bind(name.as_bytes().to_vec())
                    .execute(&mut *self.transaction)
                    .await?
                    .rows_affected();
                }
                Ok(erased)
            }

            async fn insert_tombstone(
                &mut self,
                tombstone: &TombstoneRow,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO tombstones (contact_id, email_hash, reason, erase_time, \
                     erased_by, note) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(tombstone.contact_id)
                .bind(&tombstone.email_hash)
                .bind(&tombstone.reason)
                .bind(tombstone.erase_time)
                .bind(&tombstone.erased_by)
                .bind(&tombstone.note)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn inactive_contacts(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Uuid>, StorageError> {
                // Locked until the unit ends, so that two replicas sweeping at once erase
                // different contacts instead of colliding on the same tombstones.
                Ok(sqlx::query_scalar(concat!(
                    "SELECT contact_id FROM contacts \
                     WHERE COALESCE(last_activity_time, update_time) < $1 \
                     ORDER BY COALESCE(last_activity_time, update_time), contact_id LIMIT $2",
                    $skip_locked
                ))
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn visitor(
                &mut self,
                visitor_id: &str,
            ) -> Result<Option<VisitorRow>, StorageError> {
                Ok(sqlx::query_as::<_, VisitorRow>(
                    "SELECT visitor_id, contact_id, first_seen_time, merge_time FROM visitors \
                     WHERE visitor_id = $1",
                )
                .bind(visitor_id)
                .fetch_optional(&mut *self.transaction)
                .await?)
            }

            async fn visitors_of_contact(
                &mut self,
                contact_id: Uuid,
            ) -> Result<Vec<String>, StorageError> {
                Ok(sqlx::query_scalar(
                    "SELECT visitor_id FROM visitors WHERE contact_id = $1 \
                     ORDER BY merge_time, visitor_id",
                )
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn put_visitor(&mut self, visitor: &VisitorRow) -> Result<(), StorageError> {
                sqlx::query(UPSERT_VISITOR)
                    .bind(&visitor.visitor_id)
                    .bind(visitor.contact_id)
                    .bind(visitor.first_seen_time)
                    .bind(visitor.merge_time)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(())
            }

            async fn move_visitor_activities(
                &mut self,
                visitor_id: &str,
                contact_id: Uuid,
                lead_id: Uuid,
            ) -> Result<u32, StorageError> {
                let moved = sqlx::query(MOVE_VISITOR_ACTIVITIES)
                    .bind(visitor_id)
                    .bind(contact_id)
                    .bind(lead_id)
                    .execute(&mut *self.transaction)
                    .await?
                    .rows_affected();
                Ok(u32::try_from(moved).unwrap_or(u32::MAX))
            }

            async fn activity(
                &mut self,
                activity_id: Uuid,
            ) -> Result<Option<ActivityRow>, StorageError> {
                sqlx::query_as::<_, StoredActivity>(concat!(
                    "SELECT ",
                    activity_columns!(),
                    " FROM activities WHERE activity_id = $1"
                ))
                .bind(activity_id)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(ActivityRow::try_from)
                .transpose()
            }

            async fn insert_activity(&mut self, activity: &ActivityRow) -> Result<(), StorageError> {
                sqlx::query(INSERT_ACTIVITY)
                    .bind(required_id(&activity.activity_id, "activity_id")?)
                    .bind(optional_id(&activity.contact_id, "activity contact_id")?)
                    .bind(optional_id(&activity.lead_id, "activity lead_id")?)
                    .bind(optional_text(&activity.visitor_id))
                    .bind(activity_type_name(activity.r#type))
                    .bind(&activity.custom_type)
                    .bind(&activity.content_item_id)
                    .bind(stage_name(activity.stage))
                    .bind(&activity.product)
                    .bind(required_time(activity.occurred_at.as_ref(), "activity occurred_at")?)
                    .bind(&activity.source)
                    .bind(&activity.send_id)
                    .bind(activity.attribution.as_ref().map(Message::encode_to_vec))
                    .bind(map_to_json(&activity.attributes))
                    .bind(optional_id(&activity.form_id, "activity form_id")?)
                    .bind(required_time(activity.recorded_at.as_ref(), "activity recorded_at")?)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(())
            }

            async fn list_leads(
                &mut self,
                filter: &LeadFilter,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Page<LeadRow>, StorageError> {
                let sql = list_leads_sql(filter, after.is_some());
                let mut query = sqlx::query_as::<_, StoredLead>(&sql);
                if let Some(account_id) = filter.account_id {
                    query = query.bind(account_id);
                }
                for text in [&filter.web_domain, &filter.source, &filter.country_code]
                    .into_iter()
                    .flatten()
                {
                    query = query.bind(text.clone());
                }
                for time in [filter.created.0, filter.created.1, filter.updated.0, filter.updated.1]
                    .into_iter()
                    .flatten()
                {
                    query = query.bind(time);
                }
                if let Some(after) = after {
                    query = query.bind(after);
                }
                let leads = query
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&mut *self.transaction)
                    .await?
                    .into_iter()
                    .map(LeadRow::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Page::from_overfetch(leads, limit, |lead| lead.lead_id))
            }

            async fn list_activities(
                &mut self,
                filter: &ActivityFilter,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Page<ActivityRow>, StorageError> {
                let sql = list_activities_sql(filter, after.is_some());
                let mut query = sqlx::query_as::<_, StoredActivity>(&sql);
                query = match &filter.subject {
                    ActivitySubject::Contact(contact_id) => query.bind(*contact_id),
                    ActivitySubject::Lead(lead_id) => query.bind(*lead_id),
                    ActivitySubject::Visitor(visitor_id) => query.bind(visitor_id.clone()),
                };
                for activity_type in &filter.types {
                    query = query.bind(activity_type.as_str_name());
                }
                if let Some(product) = &filter.product {
                    query = query.bind(product.clone());
                }
                if let Some(from) = filter.occurred_from {
                    query = query.bind(from);
                }
                if let Some(until) = filter.occurred_until {
                    query = query.bind(until);
                }
                if let Some(after) = after {
                    query = query.bind(after);
                }
                let activities = query
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&mut *self.transaction)
                    .await?
                    .into_iter()
                    .map(ActivityRow::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Page::from_overfetch(activities, limit, |activity| {
                    // Every listed id was read from a UUID column.
                    Uuid::parse_str(&activity.activity_id).unwrap_or_default()
                }))
            }

            async fn consent(
                &mut self,
                consent_id: Uuid,
            ) -> Result<Option<ConsentRow>, StorageError> {
                sqlx::query_as::<_, StoredConsent>(concat!(
                    "SELECT ",
                    consent_columns!(),
                    " FROM consent_records WHERE consent_id = $1"
                ))
                .bind(consent_id)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(ConsentRow::try_from)
                .transpose()
            }

            async fn consents_of_contact(
                &mut self,
                contact_id: Uuid,
            ) -> Result<Vec<ConsentRow>, StorageError> {
                sqlx::query_as::<_, StoredConsent>(concat!(
                    "SELECT ",
                    consent_columns!(),
                    " FROM consent_records WHERE contact_id = $1 ORDER BY ",
                    $consent_order
                ))
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(ConsentRow::try_from)
                .collect()
            }

            async fn insert_consent(&mut self, consent: &ConsentRow) -> Result<(), StorageError> {
                sqlx::query(INSERT_CONSENT)
                    .bind(required_id(&consent.consent_id, "consent_id")?)
                    .bind(required_id(&consent.contact_id, "consent contact_id")?)
                    .bind(&consent.purpose)
                    .bind(consent_state_name(consent.state))
                    .bind(consent_state_name(consent.previous_state))
                    .bind(&consent.wording_version)
                    .bind(&consent.wording)
                    .bind(optional_id(&consent.form_id, "consent form_id")?)
                    .bind(consent_channel_name(consent.channel))
                    .bind(consent.client.as_ref().map(Message::encode_to_vec))
                    .bind(required_time(consent.occurred_at.as_ref(), "consent occurred_at")?)
                    .bind(required_time(consent.recorded_at.as_ref(), "consent recorded_at")?)
                    .bind(&consent.recorded_by)
                    .bind(&consent.send_id)
                    .bind(optional_id(
                        &consent.confirms_consent_id,
                        "consent confirms_consent_id",
                    )?)
                    .bind(&consent.note)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(())
            }

            async fn queue_mail(&mut self, mail: &OutboundMail) -> Result<(), StorageError> {
                sqlx::query(INSERT_MAIL)
                    .bind(mail.mail_id)
                    .bind(mail.contact_id)
                    .bind(&mail.kind)
                    .bind(&mail.recipient)
                    .bind(&mail.subject)
                    .bind(&mail.body)
                    .bind(&mail.link)
                    .bind(mail.create_time)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(())
            }

            async fn form_wordings(
                &mut self,
                form_id: Uuid,
            ) -> Result<Vec<leadflow_proto::capture::v1::ConsentWording>, StorageError> {
                Ok(sqlx::query_as::<_, WordingRow>(READ_WORDINGS)
                    .bind(form_id)
                    .fetch_all(&mut *self.transaction)
                    .await?
                    .into_iter()
                    .map(Into::into)
                    .collect())
            }

            async fn save_response(
                &mut self,
                response_id: Uuid,
                response: &[u8],
                now: DateTime<Utc>,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO call_responses (response_id, response, create_time) \
                     VALUES ($1, $2, $3)",
                )
                .bind(response_id)
                .bind(response)
                .bind(now)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn response(
                &mut self,
                response_id: Uuid,
            ) -> Result<Option<Vec<u8>>, StorageError> {
                Ok(sqlx::query_scalar(
                    "SELECT response FROM call_responses WHERE response_id = $1",
                )
                .bind(response_id)
                .fetch_optional(&mut *self.transaction)
                .await?)
            }

            async fn publish(
                &mut self,
                envelope: &leadflow_proto::events::v1::EventEnvelope,
            ) -> Result<(), StorageError> {
                $outbox(&mut self.transaction, envelope).await
            }

            async fn complete(
                &mut self,
                key: &IdempotencyKey,
                resource_id: Uuid,
            ) -> Result<(), StorageError> {
                use $idempotency as idempotency;
                idempotency::complete(&mut self.transaction, key, resource_id).await
            }

            async fn commit(self: Box<Self>) -> Result<(), StorageError> {
                self.transaction.commit().await?;
                Ok(())
            }

            async fn claim(&mut self, key: &IdempotencyKey) -> Result<Begun<()>, StorageError> {
                use $idempotency as idempotency;
                idempotency::claim_in(&mut self.transaction, key).await
            }

            async fn savepoint(&mut self) -> Result<(), StorageError> {
                sqlx::query("SAVEPOINT batch_item").execute(&mut *self.transaction).await?;
                Ok(())
            }

            async fn release_savepoint(&mut self) -> Result<(), StorageError> {
                sqlx::query("RELEASE SAVEPOINT batch_item").execute(&mut *self.transaction).await?;
                Ok(())
            }

            async fn rollback_to_savepoint(&mut self) -> Result<(), StorageError> {
                sqlx::query("ROLLBACK TO SAVEPOINT batch_item")
                    .execute(&mut *self.transaction)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT batch_item").execute(&mut *self.transaction).await?;
                Ok(())
            }
        }
    };
}

sql_capture_store! {
    store: PostgresCaptureStore,
    unit: PostgresCaptureUnit,
    database: sqlx::Postgres,
    idempotency: leadflow_storage::idempotency,
    outbox: leadflow_bus::outbox::append,
    consent_order: "seq",
    envelope_names: "position($1 IN envelope) > 0",
    answer_names: "position($1 IN response) > 0",
    skip_locked: " FOR UPDATE SKIP LOCKED",
    // One consistent snapshot for everything a read answers from.
    snapshot: ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"],
}

sql_capture_store! {
    store: SqliteCaptureStore,
    unit: SqliteCaptureUnit,
    database: sqlx::Sqlite,
    idempotency: leadflow_storage::idempotency::sqlite,
    outbox: leadflow_bus::outbox::sqlite::append,
    // The rowid grows with every insert: it is the order the records were written in.
    consent_order: "rowid",
    envelope_names: "instr(envelope, $1) > 0",
    answer_names: "instr(response, $1) > 0",
    // The one connection serialises the sweeps.
    skip_locked: "",
    // The one connection serialises transactions: every read is a snapshot already.
    snapshot: [],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_numbers_its_parameters_in_bind_order() {
        let filter = ActivityFilter {
            subject: ActivitySubject::Lead(Uuid::nil()),
            types: vec![
                common::ActivityType::PageVisited,
                common::ActivityType::TeaserRead,
            ],
            product: Some("erp".to_owned()),
            occurred_from: None,
            occurred_until: Some(Utc::now()),
        };
        let sql = list_activities_sql(&filter, true);
        assert!(sql.contains("WHERE lead_id = $1 AND activity_type IN ($2, $3)"));
        assert!(sql.contains("AND product = $4 AND occurred_at < $5"));
        assert!(sql.contains("WHERE activity_id = $6)"));
        assert!(sql.ends_with("LIMIT $7"));
    }
}
