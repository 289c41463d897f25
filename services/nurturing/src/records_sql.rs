//! Nurturing's enrollment records on both SQL stores: PostgreSQL for production and SQLite
//! for the embedded mode. The statements are written in the dialect both understand, so one
//! implementation is expanded for each driver; only row locks, the read snapshot, the inbox,
//! the outbox and the idempotency claim differ.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use leadflow_bus::{Delivery, inbox::Recorded};
use leadflow_domain::{LeadClass, nurture::FrequencyCap};
use leadflow_proto::{
    common::v1 as common,
    events::v1::{ConsentState, EventEnvelope},
    nurturing::v1 as pb,
};
use leadflow_storage::{BeginSafely, Begun, IdempotencyKey, StorageError};
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use crate::{
    records::{
        ContactErasure, ContactFacts, EnrollmentFilter, EnrollmentRecord, NurtureStore,
        NurtureUnit, SendFilter, SendRecord,
    },
    track_repository::nanos,
};

/// Nurturing's enrollment records in its PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresNurtureStore {
    pool: PgPool,
}

impl PostgresNurtureStore {
    /// A store on `pool`, whose search path is nurturing's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Nurturing's enrollment records in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteNurtureStore {
    pool: SqlitePool,
}

impl SqliteNurtureStore {
    /// A store on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

macro_rules! contact_columns {
    () => {
        "contact_id, lead_id, email, first_name, last_name, job_title, buyer_role, language, \
         time_zone, company_name, consent_state, frequency_max_sends, frequency_window_nanos, \
         frequency_min_gap_nanos, frequency_update_time, update_time"
    };
}

macro_rules! enrollment_columns {
    () => {
        "enrollment_id, contact_id, lead_id, product, track_id, track_version, state, \
         state_reason, buyer_role, stage, step, attempt, next_due_time, last_send_time, \
         last_reaction_time, enroll_time, state_change_time, end_time"
    };
}

macro_rules! send_columns {
    () => {
        "send_id, enrollment_id, contact_id, lead_id, product, track_id, track_version, step, \
         attempt, content_item_id, template_id, buyer_role, stage, state, message_id, due_time, \
         claim_time, send_time, first_open_time, first_click_time, open_count, click_count, \
         failure_reason"
    };
}

fn corrupt(what: String) -> StorageError {
    StorageError::Corrupt(what)
}

fn to_u32(value: i64, what: &str) -> Result<u32, StorageError> {
    u32::try_from(value).map_err(|_| corrupt(format!("{what}: {value} is out of range")))
}

#[derive(sqlx::FromRow)]
struct ContactRow {
    contact_id: Uuid,
    lead_id: Uuid,
    email: String,
    first_name: String,
    last_name: String,
    job_title: String,
    buyer_role: String,
    language: String,
    time_zone: String,
    company_name: String,
    consent_state: String,
    frequency_max_sends: Option<i64>,
    frequency_window_nanos: Option<i64>,
    frequency_min_gap_nanos: Option<i64>,
    frequency_update_time: Option<DateTime<Utc>>,
    update_time: DateTime<Utc>,
}

impl TryFrom<ContactRow> for ContactFacts {
    type Error = StorageError;

    fn try_from(row: ContactRow) -> Result<Self, StorageError> {
        let frequency = match (
            row.frequency_max_sends,
            row.frequency_window_nanos,
            row.frequency_min_gap_nanos,
            row.frequency_update_time,
        ) {
            (Some(max_sends), Some(window), Some(min_gap), Some(set)) => Some((
                FrequencyCap {
                    max_sends: to_u32(max_sends, "contact frequency_max_sends")?,
                    window: TimeDelta::nanoseconds(window),
                    min_gap: TimeDelta::nanoseconds(min_gap),
                },
                set,
            )),
            _ => None,
        };
        Ok(Self {
            contact_id: row.contact_id,
            lead_id: row.lead_id,
            email: row.email,
            first_name: row.first_name,
            last_name: row.last_name,
            job_title: row.job_title,
            buyer_role: row.buyer_role,
            language: row.language,
            time_zone: row.time_zone,
            company_name: row.company_name,
            consent: ConsentState::from_str_name(&row.consent_state)
                .ok_or_else(|| corrupt(format!("contact consent {:?}", row.consent_state)))?,
            frequency,
            update_time: row.update_time,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EnrollmentRow {
    enrollment_id: Uuid,
    contact_id: Uuid,
    lead_id: Uuid,
    product: String,
    track_id: Uuid,
    track_version: i64,
    state: String,
    state_reason: String,
    buyer_role: String,
    stage: String,
    step: i64,
    attempt: i64,
    next_due_time: Option<DateTime<Utc>>,
    last_send_time: Option<DateTime<Utc>>,
    last_reaction_time: Option<DateTime<Utc>>,
    enroll_time: DateTime<Utc>,
    state_change_time: DateTime<Utc>,
    end_time: Option<DateTime<Utc>>,
}

fn stage_named(name: &str) -> Result<common::BuyingStage, StorageError> {
    common::BuyingStage::from_str_name(name).ok_or_else(|| corrupt(format!("stage {name:?}")))
}

impl TryFrom<EnrollmentRow> for EnrollmentRecord {
    type Error = StorageError;

    fn try_from(row: EnrollmentRow) -> Result<Self, StorageError> {
        Ok(Self {
            enrollment_id: row.enrollment_id,
            contact_id: row.contact_id,
            lead_id: row.lead_id,
            product: row.product,
            track_id: row.track_id,
            track_version: to_u32(row.track_version, "enrollment track_version")?,
            state: pb::EnrollmentState::from_str_name(&row.state)
                .ok_or_else(|| corrupt(format!("enrollment state {:?}", row.state)))?,
            state_reason: row.state_reason,
            buyer_role: row.buyer_role,
            stage: stage_named(&row.stage)?,
            step: to_u32(row.step, "enrollment step")?,
            attempt: to_u32(row.attempt, "enrollment attempt")?,
            next_due_time: row.next_due_time,
            last_send_time: row.last_send_time,
            last_reaction_time: row.last_reaction_time,
            enroll_time: row.enroll_time,
            state_change_time: row.state_change_time,
            end_time: row.end_time,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SendRow {
    send_id: Uuid,
    enrollment_id: Option<Uuid>,
    contact_id: Option<Uuid>,
    lead_id: Uuid,
    product: String,
    track_id: Uuid,
    track_version: i64,
    step: i64,
    attempt: i64,
    content_item_id: Uuid,
    template_id: Uuid,
    buyer_role: String,
    stage: String,
    state: String,
    message_id: String,
    due_time: DateTime<Utc>,
    claim_time: DateTime<Utc>,
    send_time: Option<DateTime<Utc>>,
    first_open_time: Option<DateTime<Utc>>,
    first_click_time: Option<DateTime<Utc>>,
    open_count: i64,
    click_count: i64,
    failure_reason: String,
}

impl TryFrom<SendRow> for SendRecord {
    type Error = StorageError;

    fn try_from(row: SendRow) -> Result<Self, StorageError> {
        Ok(Self {
            send_id: row.send_id,
            enrollment_id: row.enrollment_id,
            contact_id: row.contact_id,
            lead_id: row.lead_id,
            product: row.product,
            track_id: row.track_id,
            track_version: to_u32(row.track_version, "send track_version")?,
            step: to_u32(row.step, "send step")?,
            attempt: to_u32(row.attempt, "send attempt")?,
            content_item_id: row.content_item_id,
            template_id: row.template_id,
            buyer_role: row.buyer_role,
            stage: stage_named(&row.stage)?,
            state: pb::SendState::from_str_name(&row.state)
                .ok_or_else(|| corrupt(format!("send state {:?}", row.state)))?,
            message_id: row.message_id,
            due_time: row.due_time,
            claim_time: row.claim_time,
            send_time: row.send_time,
            first_open_time: row.first_open_time,
            first_click_time: row.first_click_time,
            open_count: to_u32(row.open_count, "send open_count")?,
            click_count: to_u32(row.click_count, "send click_count")?,
            failure_reason: row.failure_reason,
        })
    }
}

fn enrollments(rows: Vec<EnrollmentRow>) -> Result<Vec<EnrollmentRecord>, StorageError> {
    rows.into_iter().map(EnrollmentRecord::try_from).collect()
}

fn sends(rows: Vec<SendRow>) -> Result<Vec<SendRecord>, StorageError> {
    rows.into_iter().map(SendRecord::try_from).collect()
}

fn frequency_binds(
    frequency: Option<&(FrequencyCap, DateTime<Utc>)>,
) -> (Option<i64>, Option<i64>, Option<i64>, Option<DateTime<Utc>>) {
    match frequency {
        Some((cap, set)) => (
            Some(i64::from(cap.max_sends)),
            Some(nanos(cap.window)),
            Some(nanos(cap.min_gap)),
            Some(*set),
        ),
        None => (None, None, None, None),
    }
}

macro_rules! sql_nurture_store {
    (
        store: $store:ident,
        unit: $unit:ident,
        database: $database:ty,
        idempotency: $idempotency:path,
        inbox: $inbox:path,
        outbox: $outbox:path,
        for_update: $for_update:literal,
        skip_locked: $skip_locked:literal,
        snapshot: [$($snapshot:literal)?],
    ) => {
        struct $unit {
            transaction: sqlx::Transaction<'static, $database>,
        }

        #[async_trait]
        impl NurtureStore for $store {
            async fn begin(
                &self,
                key: &IdempotencyKey,
            ) -> Result<Begun<Box<dyn NurtureUnit>>, StorageError> {
                use $idempotency as idempotency;
                Ok(match idempotency::begin(&self.pool, key).await? {
                    Begun::Fresh(transaction) => Begun::Fresh(Box::new($unit { transaction })),
                    Begun::Replay(resource_id) => Begun::Replay(resource_id),
                    Begun::KeyReused => Begun::KeyReused,
                })
            }

            async fn begin_work(&self) -> Result<Box<dyn NurtureUnit>, StorageError> {
                Ok(Box::new($unit {
                    transaction: self.pool.begin_safely().await?,
                }))
            }

            async fn read(&self) -> Result<Box<dyn NurtureUnit>, StorageError> {
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
        impl NurtureUnit for $unit {
            async fn upsert_contact(&mut self, contact: &ContactFacts) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO contacts (contact_id, lead_id, email, first_name, last_name, \
                     job_title, buyer_role, language, time_zone, company_name, consent_state, \
                     update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (contact_id) DO UPDATE SET lead_id = excluded.lead_id, \
                     email = excluded.email, first_name = excluded.first_name, \
                     last_name = excluded.last_name, job_title = excluded.job_title, \
                     buyer_role = excluded.buyer_role, language = excluded.language, \
                     time_zone = excluded.time_zone, company_name = excluded.company_name, \
                     consent_state = excluded.consent_state, update_time = excluded.update_time",
                )
                .bind(contact.contact_id)
                .bind(contact.lead_id)
                .bind(&contact.email)
                .bind(&contact.first_name)
                .bind(&contact.last_name)
                .bind(&contact.job_title)
                .bind(&contact.buyer_role)
                .bind(&contact.language)
                .bind(&contact.time_zone)
                .bind(&contact.company_name)
                .bind(contact.consent.as_str_name())
                .bind(contact.update_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn contact(
                &mut self,
                contact_id: Uuid,
            ) -> Result<Option<ContactFacts>, StorageError> {
                sqlx::query_as::<_, ContactRow>(concat!(
                    "SELECT ", contact_columns!(), " FROM contacts WHERE contact_id = $1"
                ))
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
                sqlx::query_as::<_, ContactRow>(concat!(
                    "SELECT ", contact_columns!(),
                    " FROM contacts WHERE lead_id = $1 ORDER BY contact_id"
                ))
                .bind(lead_id)
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(ContactFacts::try_from)
                .collect()
            }

            async fn set_consent(
                &mut self,
                contact_id: Uuid,
                consent: ConsentState,
                now: DateTime<Utc>,
            ) -> Result<bool, StorageError> {
                let updated = sqlx::query(
                    "UPDATE contacts SET consent_state = $2, update_time = $3 \
                     WHERE contact_id = $1",
                )
                .bind(contact_id)
                .bind(consent.as_str_name())
                .bind(now)
                .execute(&mut *self.transaction)
                .await?
                .rows_affected();
                Ok(updated == 1)
            }

            async fn set_contact_frequency(
                &mut self,
                contact_id: Uuid,
                frequency: Option<(FrequencyCap, DateTime<Utc>)>,
            ) -> Result<(), StorageError> {
                let (max_sends, window, min_gap, set) = frequency_binds(frequency.as_ref());
                sqlx::query(
                    "UPDATE contacts SET frequency_max_sends = $2, frequency_window_nanos = $3, \
                     frequency_min_gap_nanos = $4, frequency_update_time = $5 \
                     WHERE contact_id = $1",
                )
                .bind(contact_id)
                .bind(max_sends)
                .bind(window)
                .bind(min_gap)
                .bind(set)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn upsert_lead_product(
                &mut self,
                lead_id: Uuid,
                product: &str,
                class: Option<LeadClass>,
                now: DateTime<Utc>,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO lead_products (lead_id, product, lead_class, update_time) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (lead_id, product) DO UPDATE SET \
                     lead_class = COALESCE(excluded.lead_class, lead_products.lead_class), \
                     update_time = excluded.update_time",
                )
                .bind(lead_id)
                .bind(product)
                .bind(class.map(LeadClass::code))
                .bind(now)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn lead_products(
                &mut self,
                lead_id: Uuid,
            ) -> Result<Vec<(String, Option<LeadClass>)>, StorageError> {
                let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT product, lead_class FROM lead_products WHERE lead_id = $1 \
                     ORDER BY product",
                )
                .bind(lead_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                rows.into_iter()
                    .map(|(product, class)| {
                        let class = class
                            .map(|code| {
                                LeadClass::from_code(&code)
                                    .ok_or_else(|| corrupt(format!("lead class {code:?}")))
                            })
                            .transpose()?;
                        Ok((product, class))
                    })
                    .collect()
            }

            async fn frequency_policy(
                &mut self,
            ) -> Result<Option<(FrequencyCap, DateTime<Utc>)>, StorageError> {
                let row: Option<(i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT max_sends, window_nanos, min_gap_nanos, update_time \
                     FROM frequency_policy WHERE policy_id = 1",
                )
                .fetch_optional(&mut *self.transaction)
                .await?;
                row.map(|(max_sends, window, min_gap, set)| {
                    Ok((
                        FrequencyCap {
                            max_sends: to_u32(max_sends, "frequency policy max_sends")?,
                            window: TimeDelta::nanoseconds(window),
                            min_gap: TimeDelta::nanoseconds(min_gap),
                        },
                        set,
                    ))
                })
                .transpose()
            }

            async fn set_frequency_policy(
                &mut self,
                policy: &FrequencyCap,
                now: DateTime<Utc>,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO frequency_policy (policy_id, max_sends, window_nanos, \
                     min_gap_nanos, update_time) VALUES (1, $1, $2, $3, $4) \
                     ON CONFLICT (policy_id) DO UPDATE SET max_sends = excluded.max_sends, \
                     window_nanos = excluded.window_nanos, min_gap_nanos = excluded.min_gap_nanos, \
                     update_time = excluded.update_time",
                )
                .bind(i64::from(policy.max_sends))
                .bind(nanos(policy.window))
                .bind(nanos(policy.min_gap))
                .bind(now)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn insert_enrollment(
                &mut self,
                enrollment: &EnrollmentRecord,
            ) -> Result<bool, StorageError> {
                // ON CONFLICT without a target: the only unique rule a new id can break is
                // one open enrollment per contact and track.
                let inserted = sqlx::query(concat!(
                    "INSERT INTO enrollments (", enrollment_columns!(), ") VALUES ($1, $2, $3, \
                     $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                     ON CONFLICT DO NOTHING"
                ))
                .bind(enrollment.enrollment_id)
                .bind(enrollment.contact_id)
                .bind(enrollment.lead_id)
                .bind(&enrollment.product)
                .bind(enrollment.track_id)
                .bind(i64::from(enrollment.track_version))
                .bind(enrollment.state.as_str_name())
                .bind(&enrollment.state_reason)
                .bind(&enrollment.buyer_role)
                .bind(enrollment.stage.as_str_name())
                .bind(i64::from(enrollment.step))
                .bind(i64::from(enrollment.attempt))
                .bind(enrollment.next_due_time)
                .bind(enrollment.last_send_time)
                .bind(enrollment.last_reaction_time)
                .bind(enrollment.enroll_time)
                .bind(enrollment.state_change_time)
                .bind(enrollment.end_time)
                .execute(&mut *self.transaction)
                .await?
                .rows_affected();
                Ok(inserted == 1)
            }

            async fn update_enrollment(
                &mut self,
                enrollment: &EnrollmentRecord,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "UPDATE enrollments SET state = $2, state_reason = $3, buyer_role = $4, \
                     stage = $5, step = $6, attempt = $7, next_due_time = $8, \
                     last_send_time = $9, last_reaction_time = $10, state_change_time = $11, \
                     end_time = $12 WHERE enrollment_id = $1",
                )
                .bind(enrollment.enrollment_id)
                .bind(enrollment.state.as_str_name())
                .bind(&enrollment.state_reason)
                .bind(&enrollment.buyer_role)
                .bind(enrollment.stage.as_str_name())
                .bind(i64::from(enrollment.step))
                .bind(i64::from(enrollment.attempt))
                .bind(enrollment.next_due_time)
                .bind(enrollment.last_send_time)
                .bind(enrollment.last_reaction_time)
                .bind(enrollment.state_change_time)
                .bind(enrollment.end_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn enrollment(
                &mut self,
                enrollment_id: Uuid,
                locked: bool,
            ) -> Result<Option<EnrollmentRecord>, StorageError> {
                const PLAIN: &str = concat!(
                    "SELECT ", enrollment_columns!(), " FROM enrollments WHERE enrollment_id = $1"
                );
                let sql = if locked { concat!(
                    "SELECT ", enrollment_columns!(), " FROM enrollments WHERE enrollment_id = $1",
                    $for_update
                ) } else { PLAIN };
                sqlx::query_as::<_, EnrollmentRow>(sql)
                    .bind(enrollment_id)
                    .fetch_optional(&mut *self.transaction)
                    .await?
                    .map(EnrollmentRecord::try_from)
                    .transpose()
            }

            async fn claim_due(
                &mut self,
                enrollment_id: Uuid,
                now: DateTime<Utc>,
            ) -> Result<Option<EnrollmentRecord>, StorageError> {
                sqlx::query_as::<_, EnrollmentRow>(concat!(
                    "SELECT ", enrollment_columns!(), " FROM enrollments WHERE enrollment_id = $1 \
                     AND state = 'ENROLLMENT_STATE_ACTIVE' AND next_due_time <= $2",
                    $skip_locked
                ))
                .bind(enrollment_id)
                .bind(now)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(EnrollmentRecord::try_from)
                .transpose()
            }

            async fn due_enrollments(
                &mut self,
                now: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Uuid>, StorageError> {
                Ok(sqlx::query_scalar(
                    "SELECT enrollment_id FROM enrollments \
                     WHERE state = 'ENROLLMENT_STATE_ACTIVE' AND next_due_time <= $1 \
                     ORDER BY next_due_time, enrollment_id LIMIT $2",
                )
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn enrollments_of_lead(
                &mut self,
                lead_id: Uuid,
                product: Option<&str>,
            ) -> Result<Vec<EnrollmentRecord>, StorageError> {
                let rows = sqlx::query_as::<_, EnrollmentRow>(concat!(
                    "SELECT ", enrollment_columns!(), " FROM enrollments WHERE lead_id = $1 \
                     AND ($2 IS NULL OR product = $2) ORDER BY enroll_time, enrollment_id",
                    $for_update
                ))
                .bind(lead_id)
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                enrollments(rows)
            }

            async fn enrollments_of_contact(
                &mut self,
                contact_id: Uuid,
            ) -> Result<Vec<EnrollmentRecord>, StorageError> {
                let rows = sqlx::query_as::<_, EnrollmentRow>(concat!(
                    "SELECT ", enrollment_columns!(), " FROM enrollments WHERE contact_id = $1 \
                     ORDER BY enroll_time, enrollment_id",
                    $for_update
                ))
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                enrollments(rows)
            }

            async fn list_enrollments(
                &mut self,
                filter: &EnrollmentFilter,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<EnrollmentRecord>, StorageError> {
                let rows = sqlx::query_as::<_, EnrollmentRow>(concat!(
                    "SELECT ", enrollment_columns!(), " FROM enrollments e \
                     WHERE ($1 IS NULL OR contact_id = $1) AND ($2 IS NULL OR track_id = $2) \
                     AND ($3 IS NULL OR product = $3) AND ($4 IS NULL OR state = $4) \
                     AND ($5 IS NULL OR (enroll_time, enrollment_id) < (SELECT a.enroll_time, \
                     a.enrollment_id FROM enrollments a WHERE a.enrollment_id = $5)) \
                     ORDER BY enroll_time DESC, enrollment_id DESC LIMIT $6"
                ))
                .bind(filter.contact_id)
                .bind(filter.track_id)
                .bind(filter.product.as_deref())
                .bind(filter.state.map(|state| state.as_str_name()))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?;
                enrollments(rows)
            }

            async fn enrollments_touching(
                &mut self,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<EnrollmentRecord>, StorageError> {
                let rows = sqlx::query_as::<_, EnrollmentRow>(concat!(
                    "SELECT ", enrollment_columns!(), " FROM enrollments \
                     WHERE enroll_time < $2 AND (end_time IS NULL OR end_time >= $1) \
                     ORDER BY enroll_time, enrollment_id"
                ))
                .bind(from)
                .bind(to)
                .fetch_all(&mut *self.transaction)
                .await?;
                enrollments(rows)
            }

            async fn erase_contact(
                &mut self,
                contact_id: Uuid,
            ) -> Result<ContactErasure, StorageError> {
                let anonymised_sends: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT send_id FROM sends WHERE contact_id = $1 ORDER BY send_id",
                )
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                sqlx::query(
                    "UPDATE sends SET contact_id = NULL, enrollment_id = NULL WHERE contact_id = $1",
                )
                .bind(contact_id)
                .execute(&mut *self.transaction)
                .await?;
                let deleted_enrollments =
                    sqlx::query("DELETE FROM enrollments WHERE contact_id = $1")
                        .bind(contact_id)
                        .execute(&mut *self.transaction)
                        .await?
                        .rows_affected();
                sqlx::query("DELETE FROM contacts WHERE contact_id = $1")
                    .bind(contact_id)
                    .execute(&mut *self.transaction)
                    .await?;
                Ok(ContactErasure {
                    deleted_enrollments,
                    anonymised_sends,
                })
            }

            async fn insert_send(&mut self, send: &SendRecord) -> Result<bool, StorageError> {
                let inserted = sqlx::query(concat!(
                    "INSERT INTO sends (", send_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, \
                     $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
                     $22, $23) ON CONFLICT DO NOTHING"
                ))
                .bind(send.send_id)
                .bind(send.enrollment_id)
                .bind(send.contact_id)
                .bind(send.lead_id)
                .bind(&send.product)
                .bind(send.track_id)
                .bind(i64::from(send.track_version))
                .bind(i64::from(send.step))
                .bind(i64::from(send.attempt))
                .bind(send.content_item_id)
                .bind(send.template_id)
                .bind(&send.buyer_role)
                .bind(send.stage.as_str_name())
                .bind(send.state.as_str_name())
                .bind(&send.message_id)
                .bind(send.due_time)
                .bind(send.claim_time)
                .bind(send.send_time)
                .bind(send.first_open_time)
                .bind(send.first_click_time)
                .bind(i64::from(send.open_count))
                .bind(i64::from(send.click_count))
                .bind(&send.failure_reason)
                .execute(&mut *self.transaction)
                .await?
                .rows_affected();
                Ok(inserted == 1)
            }

            async fn update_send(&mut self, send: &SendRecord) -> Result<(), StorageError> {
                sqlx::query(
                    "UPDATE sends SET state = $2, message_id = $3, claim_time = $4, \
                     send_time = $5, first_open_time = $6, first_click_time = $7, \
                     open_count = $8, click_count = $9, failure_reason = $10 WHERE send_id = $1",
                )
                .bind(send.send_id)
                .bind(send.state.as_str_name())
                .bind(&send.message_id)
                .bind(send.claim_time)
                .bind(send.send_time)
                .bind(send.first_open_time)
                .bind(send.first_click_time)
                .bind(i64::from(send.open_count))
                .bind(i64::from(send.click_count))
                .bind(&send.failure_reason)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn send(
                &mut self,
                send_id: Uuid,
                locked: bool,
            ) -> Result<Option<SendRecord>, StorageError> {
                const PLAIN: &str =
                    concat!("SELECT ", send_columns!(), " FROM sends WHERE send_id = $1");
                let sql = if locked {
                    concat!("SELECT ", send_columns!(), " FROM sends WHERE send_id = $1", $for_update)
                } else {
                    PLAIN
                };
                sqlx::query_as::<_, SendRow>(sql)
                    .bind(send_id)
                    .fetch_optional(&mut *self.transaction)
                    .await?
                    .map(SendRecord::try_from)
                    .transpose()
            }

            async fn pending_send(
                &mut self,
                enrollment_id: Uuid,
            ) -> Result<Option<SendRecord>, StorageError> {
                sqlx::query_as::<_, SendRow>(concat!(
                    "SELECT ", send_columns!(), " FROM sends WHERE enrollment_id = $1 \
                     AND state = 'SEND_STATE_PENDING' ORDER BY step DESC, attempt DESC LIMIT 1"
                ))
                .bind(enrollment_id)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(SendRecord::try_from)
                .transpose()
            }

            async fn sends_of_enrollment(
                &mut self,
                enrollment_id: Uuid,
            ) -> Result<Vec<SendRecord>, StorageError> {
                let rows = sqlx::query_as::<_, SendRow>(concat!(
                    "SELECT ", send_columns!(), " FROM sends WHERE enrollment_id = $1 \
                     ORDER BY step, attempt"
                ))
                .bind(enrollment_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                sends(rows)
            }

            async fn sends_of_contact(
                &mut self,
                contact_id: Uuid,
            ) -> Result<Vec<SendRecord>, StorageError> {
                let rows = sqlx::query_as::<_, SendRow>(concat!(
                    "SELECT ", send_columns!(), " FROM sends WHERE contact_id = $1 \
                     ORDER BY due_time, send_id"
                ))
                .bind(contact_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                sends(rows)
            }

            async fn list_sends(
                &mut self,
                filter: &SendFilter,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<SendRecord>, StorageError> {
                let rows = sqlx::query_as::<_, SendRow>(concat!(
                    "SELECT ", send_columns!(), " FROM sends WHERE contact_id = $1 \
                     AND ($2 IS NULL OR enrollment_id = $2) AND ($3 IS NULL OR due_time >= $3) \
                     AND ($4 IS NULL OR due_time < $4) \
                     AND ($5 IS NULL OR (due_time, send_id) < (SELECT a.due_time, a.send_id \
                     FROM sends a WHERE a.send_id = $5)) \
                     ORDER BY due_time DESC, send_id DESC LIMIT $6"
                ))
                .bind(filter.contact_id)
                .bind(filter.enrollment_id)
                .bind(filter.from)
                .bind(filter.to)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?;
                sends(rows)
            }

            async fn sent_between(
                &mut self,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<SendRecord>, StorageError> {
                let rows = sqlx::query_as::<_, SendRow>(concat!(
                    "SELECT ", send_columns!(), " FROM sends WHERE state = 'SEND_STATE_SENT' \
                     AND send_time >= $1 AND send_time < $2 ORDER BY send_time, send_id"
                ))
                .bind(from)
                .bind(to)
                .fetch_all(&mut *self.transaction)
                .await?;
                sends(rows)
            }

            async fn flagged_per_cell(
                &mut self,
                product: Option<&str>,
            ) -> Result<Vec<(String, common::BuyingStage, u32)>, StorageError> {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT buyer_role, stage, COUNT(*) FROM enrollments \
                     WHERE state = 'ENROLLMENT_STATE_FLAGGED' AND ($1 IS NULL OR product = $1) \
                     GROUP BY buyer_role, stage ORDER BY buyer_role, stage",
                )
                .bind(product)
                .fetch_all(&mut *self.transaction)
                .await?;
                rows.into_iter()
                    .map(|(role, stage, count)| {
                        Ok((role, stage_named(&stage)?, to_u32(count, "flagged count")?))
                    })
                    .collect()
            }

            async fn record_delivery(
                &mut self,
                delivery: &Delivery,
            ) -> Result<Recorded, StorageError> {
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

sql_nurture_store! {
    store: PostgresNurtureStore,
    unit: PostgresNurtureUnit,
    database: sqlx::Postgres,
    idempotency: leadflow_storage::idempotency,
    inbox: leadflow_bus::inbox::record,
    outbox: leadflow_bus::outbox::append,
    for_update: " FOR UPDATE",
    // Scheduler replicas take different enrollments instead of waiting on each other.
    skip_locked: " FOR UPDATE SKIP LOCKED",
    snapshot: ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"],
}

sql_nurture_store! {
    store: SqliteNurtureStore,
    unit: SqliteNurtureUnit,
    database: sqlx::Sqlite,
    idempotency: leadflow_storage::idempotency::sqlite,
    inbox: leadflow_bus::inbox::sqlite::record,
    outbox: leadflow_bus::outbox::sqlite::append,
    // The one connection serialises transactions: rows need no locks, reads no snapshot.
    for_update: "",
    skip_locked: "",
    snapshot: [],
}
