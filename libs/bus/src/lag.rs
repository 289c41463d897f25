//! How far each consumer group is behind: entries delivered but not acknowledged, the age
//! of the oldest of them, entries not yet delivered at all, and events set aside in the
//! group's dead-letter stream.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry::{KeyValue, metrics::Meter};

use leadflow_storage::{RedisStore, StorageError};
use redis::streams::{StreamInfoGroup, StreamInfoGroupsReply};

/// How far one group is behind on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    /// The stream.
    pub stream: String,
    /// The group.
    pub group: String,
    /// Entries delivered but not yet acknowledged.
    pub pending: u64,
    /// How long the oldest pending entry has waited since its last delivery.
    pub oldest_pending_idle: Duration,
    /// Entries in the stream not yet delivered to the group, when Redis can tell.
    pub undelivered: Option<u64>,
    /// Events the group set aside in its dead-letter stream.
    pub dead_lettered: u64,
}

/// The lag of `group` on `stream`; a missing stream or group counts as nothing pending.
pub async fn group_lag(
    redis: &RedisStore,
    stream: &str,
    group: &str,
) -> Result<GroupLag, StorageError> {
    let groups = stream_groups(redis, stream).await?;
    let info = groups.iter().find(|info| info.name == group);
    lag_of(redis, stream, group, info).await
}

/// The lag of `group` on `stream`, given what XINFO GROUPS said of the group (if anything).
async fn lag_of(
    redis: &RedisStore,
    stream: &str,
    group: &str,
    info: Option<&StreamInfoGroup>,
) -> Result<GroupLag, StorageError> {
    let mut connection = redis.connection();
    let oldest: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(1)
        .query_async(&mut connection)
        .await;
    let oldest = match oldest {
        Ok(oldest) => oldest,
        Err(error) if error.code() == Some("NOGROUP") => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    let dead_lettered: u64 = redis::cmd("XLEN")
        .arg(crate::dead_letter_key(redis.key_space(), group))
        .query_async(&mut connection)
        .await?;
    Ok(GroupLag {
        stream: stream.to_owned(),
        group: group.to_owned(),
        pending: info.map_or(0, |info| info.pending as u64),
        oldest_pending_idle: oldest.first().map_or(Duration::ZERO, |(_, _, idle_ms, _)| {
            Duration::from_millis(*idle_ms)
        }),
        undelivered: info.and_then(|info| info.lag).map(|lag| lag as u64),
        dead_lettered,
    })
}

async fn stream_groups(
    redis: &RedisStore,
    stream: &str,
) -> Result<Vec<StreamInfoGroup>, StorageError> {
    let mut connection = redis.connection();
    let exists: bool = redis::cmd("EXISTS")
        .arg(stream)
        .query_async(&mut connection)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let reply: StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut connection)
        .await?;
    Ok(reply.groups)
}

/// The lag of every group on the streams of `producers`.
pub async fn lag_report(
    redis: &RedisStore,
    producers: &[&str],
) -> Result<Vec<GroupLag>, StorageError> {
    let mut report = Vec::new();
    for producer in producers {
        let stream = crate::stream_key(redis.key_space(), producer);
        for info in stream_groups(redis, &stream).await? {
            report.push(lag_of(redis, &stream, &info.name, Some(&info)).await?);
        }
    }
    Ok(report)
}

/// An event a consumer group set aside, with the error that made it give up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The consumer group that gave up.
    pub group: String,
    /// The dead-letter entry's id (its time of arrival).
    pub entry_id: String,
    /// The stream the event came from.
    pub stream: String,
    /// The event's id, as far as it could be read.
    pub event_id: String,
    /// Why it could not be applied.
    pub error: String,
}

/// The newest `limit` dead-lettered events of `group`, newest first.
pub async fn dead_letters(
    redis: &RedisStore,
    group: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, StorageError> {
    let mut connection = redis.connection();
    let entries: Vec<(String, Vec<(String, redis::Value)>)> = redis::cmd("XREVRANGE")
        .arg(crate::dead_letter_key(redis.key_space(), group))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(limit)
        .query_async(&mut connection)
        .await?;
    Ok(entries
        .into_iter()
        .map(|(entry_id, fields)| {
            let text = |name: &str| {
                fields
                    .iter()
                    .find(|(field, _)| field == name)
                    .and_then(|(_, value)| redis::from_redis_value_ref::<String>(value).ok())
                    .unwrap_or_default()
            };
            DeadLetter {
                group: group.to_owned(),
                stream: text("stream"),
                event_id: text("event_id"),
                error: text("error"),
                entry_id,
            }
        })
        .collect())
}

/// The latest lag sample of every group, shared between the sampler and the gauges.
pub type LagSamples = Arc<Mutex<Vec<GroupLag>>>;

/// Registers the lag gauges on `meter`: `leadflow.events.pending`,
/// `leadflow.events.oldest_pending_age` (seconds), `leadflow.events.undelivered` and
/// `leadflow.events.dead_lettered`, each with the `stream` and `group` attributes, read
/// from `samples` whenever the metrics are collected.
pub fn register_lag_gauges(meter: &Meter, samples: &LagSamples) {
    fn observe<T>(
        samples: &LagSamples,
        value: impl Fn(&GroupLag) -> Option<T>,
        record: impl Fn(T, &[KeyValue]),
    ) {
        let samples = samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for lag in samples.iter() {
            if let Some(observed) = value(lag) {
                record(
                    observed,
                    &[
                        KeyValue::new("stream", lag.stream.clone()),
                        KeyValue::new("group", lag.group.clone()),
                    ],
                );
            }
        }
    }
    let pending = Arc::clone(samples);
    meter
        .u64_observable_gauge("leadflow.events.pending")
        .with_description("Events delivered to a consumer group but not yet acknowledged")
        .with_callback(move |gauge| {
            observe(
                &pending,
                |lag| Some(lag.pending),
                |value, attributes| gauge.observe(value, attributes),
            )
        })
        .build();
    let oldest = Arc::clone(samples);
    meter
        .f64_observable_gauge("leadflow.events.oldest_pending_age")
        .with_description("Seconds the oldest pending event of a consumer group has waited")
        .with_unit("s")
        .with_callback(move |gauge| {
            observe(
                &oldest,
                |lag| Some(lag.oldest_pending_idle.as_secs_f64()),
                |value, attributes| gauge.observe(value, attributes),
            );
        })
        .build();
    let undelivered = Arc::clone(samples);
    meter
        .u64_observable_gauge("leadflow.events.undelivered")
        .with_description("Events in a stream not yet delivered to a consumer group")
        .with_callback(move |gauge| {
            observe(
                &undelivered,
                |lag| lag.undelivered,
                |value, attributes| gauge.observe(value, attributes),
            )
        })
        .build();
    let dead = Arc::clone(samples);
    meter
        .u64_observable_gauge("leadflow.events.dead_lettered")
        .with_description("Events a consumer group set aside in its dead-letter stream")
        .with_callback(move |gauge| {
            observe(
                &dead,
                |lag| Some(lag.dead_lettered),
                |value, attributes| gauge.observe(value, attributes),
            )
        })
        .build();
}

/// Samples the lag of every group with `read` (e.g. [`lag_report`] or
/// [`crate::EmbeddedBus::lag_report`]) every `interval` into `samples`, until `stop` fires.
pub fn spawn_lag_sampler<F, Fut>(
    read: F,
    samples: LagSamples,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<GroupLag>, StorageError>> + Send,
{
    tokio::spawn(async move {
        while !*stop.borrow() {
            match read().await {
                Ok(report) => {
                    *samples
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = report
                }
                Err(error) => tracing::debug!(%error, "cannot sample consumer lag"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
        }
    })
}
