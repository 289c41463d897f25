//! Nurturing's persistence port for the content library and its PostgreSQL adapter (the
//! embedded one is in `sqlite_repository`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_proto::{common::v1 as common, nurturing::v1 as pb};
use leadflow_storage::{Begun, IdempotencyKey, Page, StorageError, Stored, idempotency};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    content::{CellCount, ContentItem, NewContentItem},
    error::NurturingError,
};

/// How an update changes an item: from the item as stored (locked for the change) to its
/// new fields, or why it must not change.
pub type ContentChange<'a> =
    dyn Fn(&ContentItem) -> Result<NewContentItem, NurturingError> + Send + Sync + 'a;

/// Which items a listing returns; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentFilter {
    /// Only this product.
    pub product: Option<String>,
    /// Only items for this buyer role.
    pub buyer_role: Option<String>,
    /// Only this stage.
    pub stage: Option<common::BuyingStage>,
    /// Only this kind.
    pub kind: Option<pb::ContentKind>,
    /// Only this language.
    pub language: Option<String>,
    /// Retired items too.
    pub include_retired: bool,
}

/// Where nurturing keeps its content library.
#[async_trait]
pub trait ContentRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new item; a retry with the same key returns the item the first call stored.
    async fn create_item(
        &self,
        item: NewContentItem,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<ContentItem>, StorageError>;

    /// The item with this id, if any.
    async fn get_item(&self, content_item_id: Uuid) -> Result<Option<ContentItem>, StorageError>;

    /// Items matching `filter` in the order they are offered (priority, then oldest first),
    /// `limit` at a time after the item `after`.
    async fn list_items(
        &self,
        filter: &ContentFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<ContentItem>, StorageError>;

    /// Replaces the fields of an item with what `change` makes of the item as stored, in
    /// one transaction with the item locked, so concurrent updates of different fields
    /// both land. `update_time` moves only when a field changed. When `change` refuses,
    /// its error comes back and nothing is written; an unknown id is
    /// [`NurturingError::ContentItemNotFound`]. A retry with the same key returns the item
    /// as the first call returned it, even after later changes.
    async fn update_item(
        &self,
        content_item_id: Uuid,
        change: &ContentChange<'_>,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<ContentItem>, NurturingError>;

    /// Retires an item for good, keeping it (and `reason`) for the record; a retired item
    /// stays as it was retired. An unknown id is [`NurturingError::ContentItemNotFound`];
    /// a retry with the same key returns what the first call returned.
    async fn retire_item(
        &self,
        content_item_id: Uuid,
        reason: &str,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<ContentItem>, NurturingError>;

    /// How many active items of each kind every (role, stage) cell holds, of one product
    /// and one language when given; cells without active items are left out.
    async fn active_cell_counts(
        &self,
        product: Option<&str>,
        language: Option<&str>,
    ) -> Result<Vec<CellCount>, StorageError>;
}

/// The content library in nurturing's PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresContentRepository {
    pool: PgPool,
}

impl PostgresContentRepository {
    /// A repository on `pool`, whose search path is nurturing's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// One stored content item, as both adapters read it.
#[derive(sqlx::FromRow)]
pub(crate) struct ItemRow {
    pub(crate) content_item_id: Uuid,
    pub(crate) title: String,
    pub(crate) kind: String,
    pub(crate) url: String,
    pub(crate) summary: String,
    pub(crate) buyer_roles: Vec<String>,
    pub(crate) stage: String,
    pub(crate) product: String,
    pub(crate) language: String,
    pub(crate) priority: i32,
    pub(crate) retired: bool,
    pub(crate) create_time: DateTime<Utc>,
    pub(crate) update_time: DateTime<Utc>,
    pub(crate) retire_time: Option<DateTime<Utc>>,
}

impl TryFrom<ItemRow> for ContentItem {
    type Error = StorageError;

    fn try_from(row: ItemRow) -> Result<Self, StorageError> {
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!("content item {}: {what}", row.content_item_id))
        };
        Ok(Self {
            content_item_id: row.content_item_id,
            item: NewContentItem {
                title: row.title,
                kind: pb::ContentKind::from_str_name(&row.kind).ok_or_else(|| corrupt("kind"))?,
                url: row.url,
                summary: row.summary,
                buyer_roles: row.buyer_roles,
                stage: common::BuyingStage::from_str_name(&row.stage)
                    .ok_or_else(|| corrupt("stage"))?,
                product: row.product,
                language: row.language,
                priority: u32::try_from(row.priority).map_err(|_| corrupt("priority"))?,
            },
            retired: row.retired,
            create_time: row.create_time,
            update_time: row.update_time,
            retire_time: row.retire_time,
        })
    }
}

/// The columns of a stored item, which its snapshots repeat.
macro_rules! item_columns {
    () => {
        "content_item_id, title, kind, url, summary, buyer_roles, stage, product, language, \
         priority, retired, create_time, update_time, retire_time"
    };
}

pub(crate) const SELECT_ITEM: &str = concat!("SELECT ", item_columns!(), " FROM content_items");

/// Copies item `$2` as it is now into snapshot `$1`, the answer a retry gets.
pub(crate) const TAKE_SNAPSHOT: &str = concat!(
    "INSERT INTO content_item_snapshots (snapshot_id, ",
    item_columns!(),
    ") SELECT $1, ",
    item_columns!(),
    " FROM content_items WHERE content_item_id = $2"
);

/// Reads snapshot `$1` as an item.
pub(crate) const SELECT_SNAPSHOT: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM content_item_snapshots WHERE snapshot_id = $1"
);

/// Writes the new fields `$2..$10` of item `$1`, changed at `$11`.
pub(crate) const UPDATE_ITEM: &str = "UPDATE content_items SET title = $2, kind = $3, url = $4, \
     summary = $5, buyer_roles = $6, stage = $7, product = $8, language = $9, priority = $10, \
     update_time = $11 WHERE content_item_id = $1";

/// Retires active item `$1` at `$2` for reason `$3`; a retired item keeps its retirement.
pub(crate) const RETIRE_ITEM: &str = "UPDATE content_items SET retired = TRUE, retire_time = $2, \
     update_time = $2, retire_reason = $3 WHERE content_item_id = $1 AND NOT retired";

/// One cell count, as both adapters read it.
#[derive(sqlx::FromRow)]
pub(crate) struct CellCountRow {
    pub(crate) buyer_role: String,
    pub(crate) stage: String,
    pub(crate) kind: String,
    pub(crate) item_count: i64,
}

impl TryFrom<CellCountRow> for CellCount {
    type Error = StorageError;

    fn try_from(row: CellCountRow) -> Result<Self, StorageError> {
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!(
                "content cell {} {}: {what}",
                row.buyer_role, row.stage
            ))
        };
        Ok(Self {
            stage: common::BuyingStage::from_str_name(&row.stage)
                .ok_or_else(|| corrupt("stage"))?,
            kind: pb::ContentKind::from_str_name(&row.kind).ok_or_else(|| corrupt("kind"))?,
            count: u32::try_from(row.item_count).map_err(|_| corrupt("count"))?,
            buyer_role: row.buyer_role,
        })
    }
}

#[async_trait]
impl ContentRepository for PostgresContentRepository {
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
        .bind(&item.buyer_roles)
        .bind(item.stage.as_str_name())
        .bind(&item.product)
        .bind(&item.language)
        .bind(i32::try_from(item.priority).unwrap_or(i32::MAX))
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
        sqlx::query_as::<_, ItemRow>(&format!("{SELECT_ITEM} WHERE content_item_id = $1"))
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
        let rows = sqlx::query_as::<_, ItemRow>(&format!(
            "{SELECT_ITEM} WHERE ($1::text IS NULL OR product = $1) \
             AND ($2::text IS NULL OR $2 = ANY(buyer_roles)) \
             AND ($3::text IS NULL OR stage = $3) \
             AND ($4::text IS NULL OR kind = $4) \
             AND ($5::text IS NULL OR language = $5) \
             AND ($6 OR NOT retired) \
             AND ($7::uuid IS NULL OR (priority, content_item_id) > \
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
        let stored = lock_item(&mut transaction, content_item_id)
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
                .bind(&item.buyer_roles)
                .bind(item.stage.as_str_name())
                .bind(&item.product)
                .bind(&item.language)
                .bind(i32::try_from(item.priority).unwrap_or(i32::MAX))
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
        lock_item(&mut transaction, content_item_id)
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
            "SELECT role AS buyer_role, stage, kind, count(*) AS item_count \
             FROM content_items CROSS JOIN LATERAL unnest(buyer_roles) AS role \
             WHERE NOT retired AND ($1::text IS NULL OR product = $1) \
             AND ($2::text IS NULL OR language = $2) \
             GROUP BY role, stage, kind",
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

impl PostgresContentRepository {
    /// The item as the call that took snapshot `snapshot_id` answered with it.
    async fn snapshot(&self, snapshot_id: Uuid) -> Result<ContentItem, StorageError> {
        sqlx::query_as::<_, ItemRow>(SELECT_SNAPSHOT)
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)
            .and_then(ContentItem::try_from)
    }
}

/// The item, locked until the transaction ends.
async fn lock_item(
    connection: &mut PgConnection,
    content_item_id: Uuid,
) -> Result<Option<ContentItem>, StorageError> {
    sqlx::query_as::<_, ItemRow>(&format!(
        "{SELECT_ITEM} WHERE content_item_id = $1 FOR UPDATE"
    ))
    .bind(content_item_id)
    .fetch_optional(connection)
    .await?
    .map(ContentItem::try_from)
    .transpose()
}

/// Snapshots the item as the call leaves it and records the snapshot under the call's key.
async fn answer(
    connection: &mut PgConnection,
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
