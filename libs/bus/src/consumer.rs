//! Consumers on Redis Streams: one consumer group per consuming service, so that its
//! replicas share the work. Each event is handed to the group's handler, which applies it
//! and records its id in one transaction ([`crate::inbox`]), then acknowledged: a
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
use tracing::Instrument;

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
        for key in reply.map(|reply| reply.keys).unwrap_or_default() {
            for entry in &key.ids {
                self.process(&key.key, entry).await?;
                handled += 1;
            }
        }
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
            for entry in &reply.claimed {
                self.process(stream, entry).await?;
                handled += 1;
            }
        }
        Ok(handled)
    }

    async fn process(&self, stream: &str, entry: &StreamId) -> Result<(), StorageError> {
        let envelope = field(entry, "envelope").and_then(|bytes| EventEnvelope::decode(bytes).ok());
        let Some(envelope) = envelope else {
            return self
                .dead_letter(stream, entry, "undecodable envelope")
                .await;
        };
        let delivery = match Delivery::new(&self.settings.group, envelope) {
            Ok(delivery) => delivery,
            Err(error) => return self.dead_letter(stream, entry, &error.0).await,
        };
        let span = crate::handler::apply_span(&delivery);
        let outcome = self.handler.handle(&delivery).instrument(span).await;
        let event_id = delivery.envelope().event_id.as_str();
        match outcome {
            Ok(_applied) => self.acknowledge(stream, entry, event_id).await,
            Err(error) => self.record_failure(stream, entry, event_id, &error.0).await,
        }
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

    async fn acknowledge(
        &self,
        stream: &str,
        entry: &StreamId,
        event_id: &str,
    ) -> Result<(), StorageError> {
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("XACK")
            .arg(stream)
            .arg(&self.settings.group)
            .arg(&entry.id)
            .ignore()
            .cmd("HDEL")
            .arg(&self.failures)
            .arg(event_id)
            .ignore();
        let mut redis = self.redis.connection();
        let _: () = pipeline.query_async(&mut redis).await?;
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
