//! The relay: publishes a producer's outbox to its Redis stream, oldest first, marking rows
//! published in the same transaction that selected them; keeps published rows (and stream
//! entries) for a retention window and refills the stream from them when Redis comes back
//! empty. Before it publishes a `ContactErased`, it deletes the stream entries that name
//! the erased contact, as the producer deleted its outbox rows.

use std::time::Duration;

use leadflow_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use leadflow_storage::{BeginSafely, RedisStore, StorageError};
use prost::Message;
use sqlx::PgPool;

use crate::envelope::CONTACT_ERASED;

/// How many stream entries one read of a scrub takes.
const SCRUB_PAGE: usize = 1_000;

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

/// Whether `haystack` holds the bytes of `needle`.
fn holds(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    event_id: uuid::Uuid,
    event_type: String,
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
        let mut transaction = self.pool.begin_safely().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, event_type, envelope FROM outbox WHERE publish_time IS NULL \
             ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // One pass over the stream for every erasure of the batch (the retention policy
        // erases many contacts at once).
        let mut erased_names = Vec::new();
        for row in rows.iter().filter(|row| row.event_type == CONTACT_ERASED) {
            if let Ok(EventEnvelope {
                payload: Some(Payload::ContactErased(erased)),
                ..
            }) = EventEnvelope::decode(row.envelope.as_slice())
            {
                erased_names.extend(erased.visitor_ids);
                erased_names.push(erased.contact_id);
            }
        }
        if !erased_names.is_empty() {
            let scrubbed = self.scrub_stream(&erased_names).await?;
            tracing::debug!(stream = %self.stream, scrubbed, "stream entries of erased contacts deleted");
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
                "SELECT seq, event_id, event_type, envelope FROM outbox WHERE publish_time IS NOT NULL AND seq > $1 \
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

    /// Deletes every stream entry whose envelope holds one of `names` (ids as text);
    /// returns how many.
    pub async fn scrub_stream(&self, names: &[String]) -> Result<usize, StorageError> {
        let mut redis = self.redis.connection();
        let mut start = "-".to_owned();
        let mut deleted = 0;
        loop {
            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(SCRUB_PAGE)
                .query_async(&mut redis)
                .await?;
            let Some(last) = page.ids.last() else { break };
            start = format!("({}", last.id);
            let naming: Vec<&str> = page
                .ids
                .iter()
                .filter(|entry| {
                    entry
                        .get::<Vec<u8>>("envelope")
                        .is_some_and(|envelope| names.iter().any(|name| holds(&envelope, name)))
                })
                .map(|entry| entry.id.as_str())
                .collect();
            if !naming.is_empty() {
                let removed: usize = redis::cmd("XDEL")
                    .arg(&self.stream)
                    .arg(&naming)
                    .query_async(&mut redis)
                    .await?;
                deleted += removed;
            }
            if page.ids.len() < SCRUB_PAGE {
                break;
            }
        }
        Ok(deleted)
    }

    /// Deletes published rows older than the retention window, and the stream entries
    /// older than it; returns how many rows.
    pub async fn purge_expired(&self) -> Result<u64, StorageError> {
        let retention_ms = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        // Entry ids start with their Unix time in milliseconds: MINID trims by age.
        let oldest_kept = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(retention_ms);
        let mut redis = self.redis.connection();
        let _: usize = redis::cmd("XTRIM")
            .arg(&self.stream)
            .arg("MINID")
            .arg("~")
            .arg(oldest_kept.max(0))
            .query_async(&mut redis)
            .await?;
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
