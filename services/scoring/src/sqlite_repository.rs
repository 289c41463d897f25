//! Scoring models on the embedded SQLite store: the same port, the same contract suite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_storage::{
    IdempotencyKey, Page, StorageError, Stored,
    idempotency::sqlite::{self as idempotency, Begun},
};
use prost::Message;
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::{
    models::{NewScoringModel, ScoringModelRecord},
    repository::{ModelRow, SELECT_MODEL, ScoringModelRepository},
};

/// Scoring models in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteScoringModelRepository {
    pool: SqlitePool,
}

impl SqliteScoringModelRepository {
    /// A repository on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl ScoringModelRepository for SqliteScoringModelRepository {
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
        // The store's single connection serialises writers, so no lock is needed to number
        // the versions of a product one after the other.
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
        .bind(i64::from(model.threshold()))
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
        let rows = sqlx::query_as::<_, ModelRow>(&format!(
            "{SELECT_MODEL} WHERE product = $1 AND ($2 IS NULL OR model_id < $2) ORDER BY model_id DESC LIMIT $3"
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
