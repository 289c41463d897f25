//! Consumers on Redis Streams: one consumer group per consuming service, so that its
//! replicas share the work. What one read returns is handed to the group's handler as a
//! batch; it applies each event and records its id in the same transaction as the effect
//! ([`crate::inbox`]), and what it applied is acknowledged in one round trip: a
//! redelivered event changes nothing twice. Entries a dead replica left pending are
//! claimed after an idle time; an event that keeps failing goes to the group's dead-letter
//! stream with its error and stops blocking the others.

use std::time::Duration;

use leadflow_proto::events::v1::EventEnvelope;
use leadflow_storage::{RedisStore, StorageError};
use prost::Message;
use redis::{
    Value,
    streams::{StreamAutoClaimReply, StreamId, StreamReadReply},
};

use crate::{Delivery, EventHandler, GroupLag};

/// How a consumer reads, claims and gives up.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The consumer group: one per consuming service.
    pub group: String,
    /// This replica's name within the group.
    pub consumer_name: String,
    /// The most entries read per round trip.
    pub batch_size: usize,
    /// How long a read waits for new entries.
    pub block: Duration,
    /// How long an entry stays pending with another consumer before it is claimed.
    pub claim_idle: Duration,
    /// How many failed attempts send an event to the dead-letter stream.
    pub max_attempts: u32,
}

impl ConsumerSettings {
    /// Defaults for `group`, with a consumer name unique to this process.
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            consumer_name: format!("{group}-{}", uuid::Uuid::new_v4().simple()),
            batch_size: 100,
            block: Duration::from_millis(500),
            claim_idle: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

/// Reads a set of streams for one consumer group and applies what it reads.
#[derive(Debug)]
pub struct Consumer<H> {
    redis: RedisStore,
    streams: Vec<String>,
    dead_letter: String,
    failures: String,
    settings: ConsumerSettings,
    handler: H,
}

fn field<'a>(entry: &'a StreamId, name: &str) -> Option<&'a [u8]> {
    match entry.map.get(name)? {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

impl<H: EventHandler> Consumer<H> {
    /// A consumer of the streams of `producers`, applying events with `handler`.
    pub fn new(
        redis: RedisStore,
        producers: &[&str],
        settings: ConsumerSettings,
        handler: H,
    ) -> Self {
        let streams = producers
            .iter()
            .map(|producer| crate::stream_key(redis.key_space(), producer))
            .collect();
        let dead_letter = crate::dead_letter_key(redis.key_space(), &settings.group);
        let failures = redis
            .key_space()
            .key(&format!("events:failures:{}", settings.group));
        Self {
            redis,
            streams,
            dead_letter,
            failures,
            settings,
            handler,
        }
    }

    /// Creates the group on every stream (and the stream if missing), reading from the
    /// start so that nothing published before the group existed is skipped.
    pub async fn ensure_groups(&self) -> Result<(), StorageError> {
        let mut redis = self.redis.connection();
        for stream in &self.streams {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(&self.settings.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut redis)
                .await;
            match created {
                Ok(()) => {}
                Err(error) if error.code() == Some("BUSYGROUP") => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// One round: claims entries left idle by other consumers, reads new ones, applies
    /// them all; returns how many entries were handled.
    pub async fn poll_once(&self) -> Result<usize, StorageError> {
        let mut handled = self.claim_idle().await?;
        let mut redis = self.redis.connection();
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&self.settings.group)
            .arg(&self.settings.consumer_name)
            .arg("COUNT")
            .arg(self.settings.batch_size)
            .arg("BLOCK")
            .arg(self.settings.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.streams);
        for _ in &self.streams {
            command.arg(">");
        }
        let reply: redis::RedisResult<Option<StreamReadReply>> =
            command.query_async(&mut redis).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) if error.code() == Some("NOGROUP") => {
                // Redis lost the stream and its groups: create them again and read next round.
                tracing::warn!(group = %self.settings.group, "consumer group missing; recreating");
                self.ensure_groups().await?;
                return Ok(handled);
            }
            Err(error) => return Err(error.into()),
        };
        let keys = reply.map(|reply| reply.keys).unwrap_or_default();
        let entries: Vec<(&str, &StreamId)> = keys
            .iter()
            .flat_map(|key| key.ids.iter().map(|entry| (key.key.as_str(), entry)))
            .collect();
        self.process(&entries).await?;
        handled += entries.len();
        Ok(handled)
    }

    async fn claim_idle(&self) -> Result<usize, StorageError> {
        let mut handled = 0;
        let mut redis = self.redis.connection();
        for stream in &self.streams {
            let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(&self.settings.group)
                .arg(&self.settings.consumer_name)
                .arg(self.settings.claim_idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(self.settings.batch_size)
                .query_async(&mut redis)
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(error) if error.code() == Some("NOGROUP") => continue,
                Err(error) => return Err(error.into()),
            };
            let entries: Vec<(&str, &StreamId)> = reply
                .claimed
                .iter()
                .map(|entry| (stream.as_str(), entry))
                .collect();
            self.process(&entries).await?;
            handled += entries.len();
        }
        Ok(handled)
    }

    /// Hands the readable entries to the handler as one batch, then acknowledges what it
    /// applied in one round trip; what it could not apply stays pending and is retried.
    async fn process(&self, entries: &[(&str, &StreamId)]) -> Result<(), StorageError> {
        let mut deliveries = Vec::with_capacity(entries.len());
        let mut delivered = Vec::with_capacity(entries.len());
        for &(stream, entry) in entries {
            let envelope =
                field(entry, "envelope").and_then(|bytes| EventEnvelope::decode(bytes).ok());
            let Some(envelope) = envelope else {
                self.dead_letter(stream, entry, "undecodable envelope")
                    .await?;
                continue;
            };
            match Delivery::new(&self.settings.group, envelope) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    delivered.push((stream, entry));
                }
                Err(error) => self.dead_letter(stream, entry, &error.0).await?,
            }
        }
        if deliveries.is_empty() {
            return Ok(());
        }
        let outcomes = self.handler.handle_batch(&deliveries).await;
        debug_assert_eq!(outcomes.len(), deliveries.len(), "one outcome per delivery");
        let mut acknowledgements = redis::pipe();
        let mut applied = 0;
        for ((stream, entry), (delivery, outcome)) in
            delivered.iter().zip(deliveries.iter().zip(outcomes))
        {
            let event_id = delivery.envelope().event_id.as_str();
            match outcome {
                Ok(_applied) => {
                    acknowledgements
                        .cmd("XACK")
                        .arg(*stream)
                        .arg(&self.settings.group)
                        .arg(&entry.id)
                        .ignore()
                        .cmd("HDEL")
                        .arg(&self.failures)
                        .arg(event_id)
                        .ignore();
                    applied += 1;
                }
                Err(error) => {
                    self.record_failure(stream, entry, event_id, &error.0)
                        .await?
                }
            }
        }
        if applied > 0 {
            let mut redis = self.redis.connection();
            let _: () = acknowledgements.query_async(&mut redis).await?;
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        stream: &str,
        entry: &StreamId,
        event_id: &str,
        error: &str,
    ) -> Result<(), StorageError> {
        let mut redis = self.redis.connection();
        let attempts: u32 = redis::cmd("HINCRBY")
            .arg(&self.failures)
            .arg(event_id)
            .arg(1)
            .query_async(&mut redis)
            .await?;
        tracing::warn!(event_id, attempts, error, "event could not be applied");
        if attempts >= self.settings.max_attempts {
            return self.dead_letter(stream, entry, error).await;
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        stream: &str,
        entry: &StreamId,
        error: &str,
    ) -> Result<(), StorageError> {
        let event_id = field(entry, "event_id")
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let envelope = field(entry, "envelope").unwrap_or_default();
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("XADD")
            .arg(&self.dead_letter)
            .arg("*")
            .arg("stream")
            .arg(stream)
            .arg("entry_id")
            .arg(&entry.id)
            .arg("event_id")
            .arg(event_id.as_ref())
            .arg("error")
            .arg(error)
            .arg("envelope")
            .arg(envelope)
            .ignore()
            .cmd("XACK")
            .arg(stream)
            .arg(&self.settings.group)
            .arg(&entry.id)
            .ignore()
            .cmd("HDEL")
            .arg(&self.failures)
            .arg(event_id.as_ref())
            .ignore();
        let mut redis = self.redis.connection();
        let _: () = pipeline.query_async(&mut redis).await?;
        tracing::error!(event_id = %event_id, error, dead_letter = %self.dead_letter, "event dead-lettered");
        Ok(())
    }

    /// How far the group is behind on each of its streams.
    pub async fn lag(&self) -> Result<Vec<GroupLag>, StorageError> {
        let mut lags = Vec::with_capacity(self.streams.len());
        for stream in &self.streams {
            lags.push(crate::lag::group_lag(&self.redis, stream, &self.settings.group).await?);
        }
        Ok(lags)
    }
}

impl<H: EventHandler + 'static> Consumer<H> {
    /// Runs until `stop` fires, retrying after failures.
    pub fn spawn(self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(error) = self.ensure_groups().await {
                tracing::warn!(%error, group = %self.settings.group, "cannot create consumer groups yet");
            }
            while !*stop.borrow() {
                if let Err(error) = self.poll_once().await {
                    tracing::warn!(%error, group = %self.settings.group, "consumer round failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    }
}
