//! Idempotency keys for mutating calls: the first call with a key does the work and
//! records which resource it made, in the same transaction; a retry with the same key and
//! the same request gets that resource back; the same key with another request is refused.
//! Keys are kept for a configured time, then forgotten: a call with a key that old is new.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{BeginSafely, StorageError};

/// A client's idempotency key together with what identifies the request it came with, so
/// that a reuse with a different payload can be told apart from a retry.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The key as the client sent it.
    pub key: String,
    /// What identifies the request without its key, as bytes: the SHA-256 of its encoding
    /// for [`IdempotencyKey::for_request`].
    pub request: Vec<u8>,
}

impl IdempotencyKey {
    /// The key of `request`, compared by the SHA-256 of the request's encoding with its own
    /// key field cleared by `clear_key` (so a retry matches the first call byte for byte).
    /// The digest, not the request, is kept: a request may carry personal data (a form's
    /// values), which a key kept for weeks must not hold.
    pub fn for_request<M: prost::Message + Clone>(
        key: String,
        request: &M,
        clear_key: impl FnOnce(&mut M),
    ) -> Self {
        use sha2::Digest;

        let mut without_key = request.clone();
        clear_key(&mut without_key);
        Self {
            key,
            request: sha2::Sha256::digest(without_key.encode_to_vec()).to_vec(),
        }
    }
}

/// What starting an idempotent write found; `T` is the store's transaction.
#[derive(Debug)]
pub enum Begun<T> {
    /// The key is new: write in this transaction, then `complete` it before committing.
    Fresh(T),
    /// An earlier call with this key and request made this resource: answer with it.
    Replay(Uuid),
    /// The key was used before with a different request: write nothing.
    KeyReused,
}

impl<T> Begun<T> {
    fn from_claim(claim: IdempotencyClaim, transaction: T) -> Self {
        match claim {
            IdempotencyClaim::Fresh => Self::Fresh(transaction),
            IdempotencyClaim::Replay(resource_id) => Self::Replay(resource_id),
            IdempotencyClaim::Mismatch => Self::KeyReused,
        }
    }
}

/// Opens a transaction and claims `key` in it. The service's schema holds the table
/// `idempotency_keys (idempotency_key TEXT PRIMARY KEY, request BYTEA, resource_id UUID,
/// create_time TIMESTAMPTZ)`. A concurrent call with the same key waits on the row lock
/// until this transaction ends, so exactly one of them does the work.
pub async fn begin(
    pool: &PgPool,
    key: &IdempotencyKey,
) -> Result<Begun<Transaction<'static, Postgres>>, StorageError> {
    let mut transaction = pool.begin_safely().await?;
    let claimed = claim(&mut transaction, key).await?;
    Ok(Begun::from_claim(claimed, transaction))
}

/// Claims `key` inside a transaction the caller already holds, e.g. one that writes many
/// items of a batch, each under its own key and savepoint.
pub async fn claim_in(
    connection: &mut PgConnection,
    key: &IdempotencyKey,
) -> Result<Begun<()>, StorageError> {
    Ok(Begun::from_claim(claim(connection, key).await?, ()))
}

/// What claiming a key inside a transaction found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IdempotencyClaim {
    /// The key is new: do the work, then `complete` it in the same transaction.
    Fresh,
    /// The key was used before with this very request: answer with this resource again.
    Replay(Uuid),
    /// The key was used before with a different request.
    Mismatch,
}

/// What a write with an idempotency key came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored<T> {
    /// Written now, or replayed from an earlier call with the same key and request.
    Done(T),
    /// The key was used before with a different request: nothing was written.
    KeyReused,
}

// The same statements serve both stores: PostgreSQL and SQLite agree on this SQL.
const CLAIM: &str = "INSERT INTO idempotency_keys (idempotency_key, request) VALUES ($1, $2) \
     ON CONFLICT (idempotency_key) DO NOTHING";
const EARLIER_CLAIM: &str =
    "SELECT request, resource_id FROM idempotency_keys WHERE idempotency_key = $1";
const COMPLETE: &str = "UPDATE idempotency_keys SET resource_id = $2 WHERE idempotency_key = $1";

/// What an earlier claim of `key`, found with its request and resource, means for this one.
fn judge_earlier_claim(
    key: &IdempotencyKey,
    request: &[u8],
    resource_id: Option<Uuid>,
) -> Result<IdempotencyClaim, StorageError> {
    match resource_id {
        Some(resource_id) if request == key.request => Ok(IdempotencyClaim::Replay(resource_id)),
        Some(_) => Ok(IdempotencyClaim::Mismatch),
        None => Err(StorageError::Corrupt(format!(
            "idempotency key {} was committed without its resource",
            key.key
        ))),
    }
}

async fn claim(
    connection: &mut PgConnection,
    key: &IdempotencyKey,
) -> Result<IdempotencyClaim, StorageError> {
    let inserted = sqlx::query(CLAIM)
        .bind(&key.key)
        .bind(&key.request)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    if inserted == 1 {
        return Ok(IdempotencyClaim::Fresh);
    }
    let (request, resource_id): (Vec<u8>, Option<Uuid>) = sqlx::query_as(EARLIER_CLAIM)
        .bind(&key.key)
        .fetch_one(&mut *connection)
        .await?;
    judge_earlier_claim(key, &request, resource_id)
}

/// The answer a completed call stored under `response_id` (read back as `stored`), decoded
/// for its retry.
pub fn stored_answer<M: prost::Message + Default>(
    response_id: Uuid,
    stored: Option<Vec<u8>>,
) -> Result<M, StorageError> {
    let bytes = stored.ok_or_else(|| {
        StorageError::Corrupt(format!("answer {response_id} of a completed call"))
    })?;
    M::decode(bytes.as_slice())
        .map_err(|error| StorageError::Corrupt(format!("stored answer: {error}")))
}

/// Records the resource a fresh key produced, in the transaction that produced it.
pub async fn complete(
    connection: &mut PgConnection,
    key: &IdempotencyKey,
    resource_id: Uuid,
) -> Result<(), StorageError> {
    sqlx::query(COMPLETE)
        .bind(&key.key)
        .bind(resource_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Forgets the keys claimed before `before`, so the table holds only the retention window;
/// answers how many it removed.
pub async fn expire(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, StorageError> {
    Ok(sqlx::query(EXPIRE)
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected())
}

const EXPIRE: &str = "DELETE FROM idempotency_keys WHERE create_time < $1";

/// The same protocol on the embedded SQLite store, whose single connection serialises
/// transactions, so a duplicate sees the first call's committed row.
pub mod sqlite {
    use chrono::{DateTime, SecondsFormat, Utc};
    use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
    use uuid::Uuid;

    pub use super::Begun;
    use super::{
        CLAIM, COMPLETE, EARLIER_CLAIM, EXPIRE, IdempotencyClaim, IdempotencyKey,
        judge_earlier_claim,
    };
    use crate::BeginSafely;
    use crate::StorageError;

    /// Opens a transaction and claims `key` in it.
    pub async fn begin(
        pool: &SqlitePool,
        key: &IdempotencyKey,
    ) -> Result<Begun<Transaction<'static, Sqlite>>, StorageError> {
        let mut transaction = pool.begin_safely().await?;
        let claimed = claim(&mut transaction, key).await?;
        Ok(Begun::from_claim(claimed, transaction))
    }

    /// Claims `key` inside a transaction the caller already holds.
    pub async fn claim_in(
        connection: &mut SqliteConnection,
        key: &IdempotencyKey,
    ) -> Result<Begun<()>, StorageError> {
        Ok(Begun::from_claim(claim(connection, key).await?, ()))
    }

    async fn claim(
        connection: &mut SqliteConnection,
        key: &IdempotencyKey,
    ) -> Result<IdempotencyClaim, StorageError> {
        let inserted = sqlx::query(CLAIM)
            .bind(&key.key)
            .bind(&key.request)
            .execute(&mut *connection)
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(IdempotencyClaim::Fresh);
        }
        let (request, resource_id): (Vec<u8>, Option<Uuid>) = sqlx::query_as(EARLIER_CLAIM)
            .bind(&key.key)
            .fetch_one(&mut *connection)
            .await?;
        judge_earlier_claim(key, &request, resource_id)
    }

    /// Records the resource a fresh key produced, in the transaction that produced it.
    pub async fn complete(
        connection: &mut SqliteConnection,
        key: &IdempotencyKey,
        resource_id: Uuid,
    ) -> Result<(), StorageError> {
        sqlx::query(COMPLETE)
            .bind(&key.key)
            .bind(resource_id)
            .execute(connection)
            .await?;
        Ok(())
    }

    /// Forgets the keys claimed before `before`; answers how many it removed.
    pub async fn expire(pool: &SqlitePool, before: DateTime<Utc>) -> Result<u64, StorageError> {
        // The column holds `strftime('%Y-%m-%dT%H:%M:%fZ')` text, which orders as it reads
        // only against text of the very same shape.
        let before = before.to_rfc3339_opts(SecondsFormat::Millis, true);
        Ok(sqlx::query(EXPIRE)
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected())
    }
}
