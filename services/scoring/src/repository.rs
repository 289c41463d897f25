//! Scoring's persistence port for models and its PostgreSQL adapter (the embedded one is in
//! `sqlite_repository`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_proto::scoring::v1 as pb;
use leadflow_storage::{Begun, IdempotencyKey, Page, StorageError, Stored, idempotency};
use prost::Message;
use sqlx::PgPool;
use uuid::Uuid;

use crate::models::{NewScoringModel, ScoringModelRecord};

/// Where scoring keeps its models.
#[async_trait]
pub trait ScoringModelRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new version of the product's model, numbered one above its latest.
    async fn create_model(
        &self,
        model: NewScoringModel,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<ScoringModelRecord>, StorageError>;

    /// The model version with this id, if any.
    async fn get_model(&self, model_id: Uuid) -> Result<Option<ScoringModelRecord>, StorageError>;

    /// The product's versions, newest first, `limit` at a time, after the cursor `after`.
    async fn list_models(
        &self,
        product: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<ScoringModelRecord>, StorageError>;
}

/// Scoring models in scoring's PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresScoringModelRepository {
    pool: PgPool,
}

impl PostgresScoringModelRepository {
    /// A repository on `pool`, whose search path is scoring's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// One stored model version, as both adapters read it.
#[derive(sqlx::FromRow)]
pub(crate) struct ModelRow {
    model_id: Uuid,
    version: i32,
    active: bool,
    definition: Vec<u8>,
    create_time: DateTime<Utc>,
}

impl TryFrom<ModelRow> for ScoringModelRecord {
    type Error = StorageError;

    fn try_from(row: ModelRow) -> Result<Self, StorageError> {
        let definition = pb::ScoringModel::decode(row.definition.as_slice()).map_err(|error| {
            StorageError::Corrupt(format!("scoring model {}: {error}", row.model_id))
        })?;
        Ok(Self {
            model_id: row.model_id,
            version: u32::try_from(row.version).map_err(|_| {
                StorageError::Corrupt(format!("scoring model {}: version", row.model_id))
            })?,
            active: row.active,
            create_time: row.create_time,
            model: NewScoringModel::from_stored(definition),
        })
    }
}

pub(crate) const SELECT_MODEL: &str =
    "SELECT model_id, version, active, definition, create_time FROM scoring_models";

#[async_trait]
impl ScoringModelRepository for PostgresScoringModelRepository {
    async fn create_model(
        &self,
        model: NewScoringModel,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<ScoringModelRecord>, StorageError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(model_id) => {
                let record = self
                    .get_model(model_id)
                    .await?
                    .ok_or(StorageError::NotFound)?;
                return Ok(Stored::Done(record));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        // Versions of one product are numbered one after the other: creators of the same
        // product take turns, others do not wait.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('scoring_models:' || $1))")
            .bind(model.product())
            .execute(&mut *transaction)
            .await?;
        let (latest,): (Option<i32>,) =
            sqlx::query_as("SELECT max(version) FROM scoring_models WHERE product = $1")
                .bind(model.product())
                .fetch_one(&mut *transaction)
                .await?;
        let model_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO scoring_models (model_id, product, version, name, threshold, definition, create_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(model_id)
        .bind(model.product())
        .bind(latest.unwrap_or(0) + 1)
        .bind(model.name())
        .bind(i32::try_from(model.threshold()).unwrap_or(i32::MAX))
        .bind(model.definition().encode_to_vec())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        idempotency::complete(&mut transaction, &key, model_id).await?;
        transaction.commit().await?;
        let record = self
            .get_model(model_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(Stored::Done(record))
    }

    async fn get_model(&self, model_id: Uuid) -> Result<Option<ScoringModelRecord>, StorageError> {
        sqlx::query_as::<_, ModelRow>(&format!("{SELECT_MODEL} WHERE model_id = $1"))
            .bind(model_id)
            .fetch_optional(&self.pool)
            .await?
            .map(ScoringModelRecord::try_from)
            .transpose()
    }

    async fn list_models(
        &self,
        product: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<ScoringModelRecord>, StorageError> {
        // Newest first; model ids are time-ordered (UUIDv7), so they serve as the cursor.
        let rows = sqlx::query_as::<_, ModelRow>(&format!(
            "{SELECT_MODEL} WHERE product = $1 AND ($2::uuid IS NULL OR model_id < $2) \
             ORDER BY model_id DESC LIMIT $3"
        ))
        .bind(product)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .into_iter()
            .map(ScoringModelRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, limit, |record| record.model_id))
    }
}
