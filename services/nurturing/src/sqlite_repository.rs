//! The content library on the embedded SQLite store: the same port, the same contract suite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_storage::{
    IdempotencyKey, Page, StorageError, Stored,
    idempotency::sqlite::{self as idempotency, Begun},
    sqlite::{list_from_json, list_to_json},
};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::{
    content::{CellCount, ContentItem, NewContentItem},
    error::NurturingError,
    repository::{
        CellCountRow, ContentChange, ContentFilter, ContentRepository, ItemRow, RETIRE_ITEM,
        SELECT_ITEM, SELECT_SNAPSHOT, TAKE_SNAPSHOT, UPDATE_ITEM,
    },
};

/// The content library in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteContentRepository {
    pool: SqlitePool,
}

impl SqliteContentRepository {
    /// A repository on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// A row as SQLite returns it: the role list is a JSON array.
#[derive(sqlx::FromRow)]
struct SqliteItemRow {
    content_item_id: Uuid,
    title: String,
    kind: String,
    url: String,
    summary: String,
    buyer_roles: String,
    stage: String,
    product: String,
    language: String,
    priority: i32,
    retired: bool,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    retire_time: Option<DateTime<Utc>>,
}

impl TryFrom<SqliteItemRow> for ContentItem {
    type Error = StorageError;

    fn try_from(row: SqliteItemRow) -> Result<Self, StorageError> {
        let buyer_roles = list_from_json(
            &row.buyer_roles,
            &format!("content item {}: roles", row.content_item_id),
        )?;
        ContentItem::try_from(ItemRow {
            content_item_id: row.content_item_id,
            title: row.title,
            kind: row.kind,
            url: row.url,
            summary: row.summary,
            buyer_roles,
            stage: row.stage,
            product: row.product,
            language: row.language,
            priority: row.priority,
            retired: row.retired,
            create_time: row.create_time,
            update_time: row.update_time,
            retire_time: row.retire_time,
        })
    }
}

#[async_trait]
impl ContentRepository for SqliteContentRepository {
    async fn create_item(
        &self,
        item: NewContentItem,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<ContentItem>, StorageError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(content_item_id) => {
                let stored = self
                    .get_item(content_item_id)
                    .await?
                    .ok_or(StorageError::NotFound)?;
                return Ok(Stored::Done(stored));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        let buyer_roles = list_to_json(&item.buyer_roles);
        let content_item_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO content_items (content_item_id, title, kind, url, summary, buyer_roles, stage, \
             product, language, priority, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(content_item_id)
        .bind(&item.title)
        .bind(item.kind.as_str_name())
        .bind(&item.url)
        .bind(&item.summary)
        .bind(buyer_roles)
        .bind(item.stage.as_str_name())
        .bind(&item.product)
        .bind(&item.language)
        .bind(i64::from(item.priority))
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        idempotency::complete(&mut transaction, &key, content_item_id).await?;
        transaction.commit().await?;
        let stored = self
            .get_item(content_item_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(Stored::Done(stored))
    }

    async fn get_item(&self, content_item_id: Uuid) -> Result<Option<ContentItem>, StorageError> {
        sqlx::query_as::<_, SqliteItemRow>(&format!("{SELECT_ITEM} WHERE content_item_id = $1"))
            .bind(content_item_id)
            .fetch_optional(&self.pool)
            .await?
            .map(ContentItem::try_from)
            .transpose()
    }

    async fn list_items(
        &self,
        filter: &ContentFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<ContentItem>, StorageError> {
        let rows = sqlx::query_as::<_, SqliteItemRow>(&format!(
            "{SELECT_ITEM} WHERE ($1 IS NULL OR product = $1) \
             AND ($2 IS NULL OR EXISTS (SELECT 1 FROM json_each(buyer_roles) WHERE json_each.value = $2)) \
             AND ($3 IS NULL OR stage = $3) \
             AND ($4 IS NULL OR kind = $4) \
             AND ($5 IS NULL OR language = $5) \
             AND ($6 OR NOT retired) \
             AND ($7 IS NULL OR (priority, content_item_id) > \
             (SELECT a.priority, a.content_item_id FROM content_items a WHERE a.content_item_id = $7)) \
             ORDER BY priority, content_item_id LIMIT $8"
        ))
        .bind(filter.product.as_deref())
        .bind(filter.buyer_role.as_deref())
        .bind(filter.stage.map(|stage| stage.as_str_name()))
        .bind(filter.kind.map(|kind| kind.as_str_name()))
        .bind(filter.language.as_deref())
        .bind(filter.include_retired)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .into_iter()
            .map(ContentItem::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, limit, |item| {
            item.content_item_id
        }))
    }

    async fn update_item(
        &self,
        content_item_id: Uuid,
        change: &ContentChange<'_>,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<ContentItem>, NurturingError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(snapshot_id) => {
                return Ok(Stored::Done(self.snapshot(snapshot_id).await?));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        // The single connection serialises transactions: nothing changes the item meanwhile.
        let stored = item_in(&mut transaction, content_item_id)
            .await?
            .ok_or(NurturingError::ContentItemNotFound(content_item_id))?;
        let item = change(&stored)?;
        if item != stored.item {
            sqlx::query(UPDATE_ITEM)
                .bind(content_item_id)
                .bind(&item.title)
                .bind(item.kind.as_str_name())
                .bind(&item.url)
                .bind(&item.summary)
                .bind(list_to_json(&item.buyer_roles))
                .bind(item.stage.as_str_name())
                .bind(&item.product)
                .bind(&item.language)
                .bind(i64::from(item.priority))
                .bind(now)
                .execute(&mut *transaction)
                .await
                .map_err(StorageError::from)?;
        }
        let snapshot_id = answer(&mut transaction, &key, content_item_id).await?;
        transaction.commit().await.map_err(StorageError::from)?;
        Ok(Stored::Done(self.snapshot(snapshot_id).await?))
    }

    async fn retire_item(
        &self,
        content_item_id: Uuid,
        reason: &str,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<ContentItem>, NurturingError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(snapshot_id) => {
                return Ok(Stored::Done(self.snapshot(snapshot_id).await?));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        item_in(&mut transaction, content_item_id)
            .await?
            .ok_or(NurturingError::ContentItemNotFound(content_item_id))?;
        sqlx::query(RETIRE_ITEM)
            .bind(content_item_id)
            .bind(now)
            .bind(reason)
            .execute(&mut *transaction)
            .await
            .map_err(StorageError::from)?;
        let snapshot_id = answer(&mut transaction, &key, content_item_id).await?;
        transaction.commit().await.map_err(StorageError::from)?;
        Ok(Stored::Done(self.snapshot(snapshot_id).await?))
    }

    async fn active_cell_counts(
        &self,
        product: Option<&str>,
        language: Option<&str>,
    ) -> Result<Vec<CellCount>, StorageError> {
        sqlx::query_as::<_, CellCountRow>(
            "SELECT role.value AS buyer_role, stage, kind, count(*) AS item_count \
             FROM content_items, json_each(content_items.buyer_roles) AS role \
             WHERE NOT retired AND ($1 IS NULL OR product = $1) \
             AND ($2 IS NULL OR language = $2) \
             GROUP BY role.value, stage, kind",
        )
        .bind(product)
        .bind(language)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(CellCount::try_from)
        .collect()
    }
}

impl SqliteContentRepository {
    /// The item as the call that took snapshot `snapshot_id` answered with it.
    async fn snapshot(&self, snapshot_id: Uuid) -> Result<ContentItem, StorageError> {
        sqlx::query_as::<_, SqliteItemRow>(SELECT_SNAPSHOT)
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)
            .and_then(ContentItem::try_from)
    }
}

/// The item as the transaction on `connection` sees it.
async fn item_in(
    connection: &mut SqliteConnection,
    content_item_id: Uuid,
) -> Result<Option<ContentItem>, StorageError> {
    sqlx::query_as::<_, SqliteItemRow>(&format!("{SELECT_ITEM} WHERE content_item_id = $1"))
        .bind(content_item_id)
        .fetch_optional(connection)
        .await?
        .map(ContentItem::try_from)
        .transpose()
}

/// Snapshots the item as the call leaves it and records the snapshot under the call's key.
async fn answer(
    connection: &mut SqliteConnection,
    key: &IdempotencyKey,
    content_item_id: Uuid,
) -> Result<Uuid, StorageError> {
    let snapshot_id = Uuid::now_v7();
    sqlx::query(TAKE_SNAPSHOT)
        .bind(snapshot_id)
        .bind(content_item_id)
        .execute(&mut *connection)
        .await?;
    idempotency::complete(connection, key, snapshot_id).await?;
    Ok(snapshot_id)
}
