//! The relay: publishes a producer's outbox to its Redis stream, oldest first, marking rows
//! published in the same transaction that selected them; keeps published rows for a
//! retention window and refills the stream from them when Redis comes back empty.

use std::time::Duration;

use leadflow_storage::{RedisStore, StorageError};
use sqlx::PgPool;

/// How often a running relay checks whether Redis lost its stream.
const REFILL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How the relay batches, polls and retains.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The most rows published per round trip.
    pub batch_size: i64,
    /// How long the relay sleeps when the outbox is empty.
    pub poll_interval: Duration,
    /// How long published rows are kept to refill a lost stream.
    pub retention: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(50),
            retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Publishes one producer's outbox.
#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    redis: RedisStore,
    stream: String,
    epoch_key: String,
    settings: RelaySettings,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    event_id: uuid::Uuid,
    envelope: Vec<u8>,
}

impl Relay {
    /// A relay for the outbox in `pool`'s schema, publishing as `producer`.
    pub fn new(pool: PgPool, redis: RedisStore, producer: &str, settings: RelaySettings) -> Self {
        let stream = crate::stream_key(redis.key_space(), producer);
        let epoch_key = format!("{stream}:epoch");
        Self {
            pool,
            redis,
            stream,
            epoch_key,
            settings,
        }
    }

    /// The stream this relay publishes to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Publishes up to one batch of unpublished rows; returns how many. Rows whose
    /// publication fails stay unpublished and are retried; a row may reach the stream twice
    /// (Redis wrote it, the commit failed), which consumers absorb by event id.
    pub async fn publish_pending(&self) -> Result<usize, StorageError> {
        let mut transaction = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, envelope FROM outbox WHERE publish_time IS NULL \
             ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        self.add_to_stream(&rows).await?;
        let sequence_numbers: Vec<i64> = rows.iter().map(|row| row.seq).collect();
        sqlx::query("UPDATE outbox SET publish_time = now() WHERE seq = ANY($1)")
            .bind(&sequence_numbers)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        tracing::debug!(stream = %self.stream, published = rows.len(), "outbox published");
        Ok(rows.len())
    }

    /// When Redis lost the stream (its epoch marker is gone, e.g. after a restart without
    /// persistence or a FLUSHALL), publishes every retained row again, oldest first, and
    /// sets the marker; returns how many rows were republished.
    pub async fn refill_if_lost(&self) -> Result<usize, StorageError> {
        let mut redis = self.redis.connection();
        let marker_exists: bool = redis::cmd("EXISTS")
            .arg(&self.epoch_key)
            .query_async(&mut redis)
            .await?;
        if marker_exists {
            return Ok(0);
        }
        let mut republished = 0;
        let mut after = 0_i64;
        loop {
            let rows: Vec<OutboxRow> = sqlx::query_as(
                "SELECT seq, event_id, envelope FROM outbox WHERE publish_time IS NOT NULL AND seq > $1 \
                 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(self.settings.batch_size)
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            self.add_to_stream(&rows).await?;
            republished += rows.len();
        }
        let _: () = redis::cmd("SET")
            .arg(&self.epoch_key)
            .arg(chrono::Utc::now().to_rfc3339())
            .query_async(&mut redis)
            .await?;
        if republished > 0 {
            tracing::warn!(stream = %self.stream, republished, "stream was lost; refilled from the outbox");
        }
        Ok(republished)
    }

    /// Deletes published rows older than the retention window; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, StorageError> {
        let retention_ms = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        let deleted = sqlx::query(
            "DELETE FROM outbox WHERE publish_time < now() - make_interval(secs => $1::double precision / 1000)",
        )
        .bind(retention_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    async fn add_to_stream(&self, rows: &[OutboxRow]) -> Result<(), StorageError> {
        let mut pipeline = redis::pipe();
        for row in rows {
            pipeline
                .cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("event_id")
                .arg(row.event_id.to_string())
                .arg("envelope")
                .arg(row.envelope.as_slice())
                .ignore();
        }
        let mut redis = self.redis.connection();
        let _: () = pipeline.query_async(&mut redis).await?;
        Ok(())
    }

    /// Runs until `stop` fires: refills a lost stream, publishes, purges, sleeps when idle.
    pub fn spawn(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_purge = tokio::time::Instant::now();
            // None until the first round, which always checks whether Redis lost the stream.
            let mut last_refill_check: Option<tokio::time::Instant> = None;
            while !*stop.borrow() {
                let round = async {
                    // Losing the stream is rare: looking once a second is enough, and keeps a
                    // round trip off every busy round.
                    if last_refill_check
                        .is_none_or(|checked| checked.elapsed() >= REFILL_CHECK_INTERVAL)
                    {
                        self.refill_if_lost().await?;
                        last_refill_check = Some(tokio::time::Instant::now());
                    }
                    let published = self.publish_pending().await?;
                    if last_purge.elapsed() > Duration::from_secs(60) {
                        self.purge_expired().await?;
                        last_purge = tokio::time::Instant::now();
                    }
                    Ok::<usize, StorageError>(published)
                };
                // A round may wait long on a lost Redis or database; it is safe to abandon
                // (publication is transactional: at worst a row is published again).
                let outcome = tokio::select! {
                    outcome = round => outcome,
                    _ = stop.changed() => break,
                };
                let idle = match outcome {
                    Ok(published) => published == 0,
                    Err(error) => {
                        tracing::warn!(stream = %self.stream, %error, "relay round failed; retrying");
                        true
                    }
                };
                if idle {
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        })
    }
}
