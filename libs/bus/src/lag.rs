//! How far each consumer group is behind: entries delivered but not acknowledged, the age
//! of the oldest of them, entries not yet delivered at all, and events set aside in the
//! group's dead-letter stream.

use std::time::Duration;

use leadflow_storage::{RedisStore, StorageError};
use redis::streams::StreamInfoGroupsReply;

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
    let groups = stream_groups(redis, stream).await?;
    let info = groups.iter().find(|info| info.name == group);
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
) -> Result<Vec<redis::streams::StreamInfoGroup>, StorageError> {
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
            report.push(group_lag(redis, &stream, &info.name).await?);
        }
    }
    Ok(report)
}
