//! The embedded bus: the same outbox tables, read in-process. Each consumer group keeps,
//! in its own service's SQLite file, a cursor per producer (how far it has read that
//! producer's outbox), the events that failed and wait for a retry, and its dead letters.
//! A crash between an effect's commit and the cursor's move redelivers, which the
//! handler's inbox absorbs; the outbox keeps a row until every group read it and the
//! retention window passed.

use std::{collections::BTreeMap, time::Duration};

use chrono::Utc;
use leadflow_proto::events::v1::EventEnvelope;
use leadflow_storage::StorageError;
use prost::Message;
use sqlx::SqlitePool;
use tracing::Instrument;

use crate::{ConsumerSettings, DeadLetter, Delivery, EventHandler, GroupLag};

/// How often the bus deletes outbox rows every group has read and that outlived retention.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The name a producer's outbox goes by in lag reports and dead letters.
pub fn stream_name(producer: &str) -> String {
    format!("embedded:{producer}")
}

/// The producers' outboxes and the groups that read them, all in this process.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    outboxes: BTreeMap<String, SqlitePool>,
    subscriptions: Vec<Subscription>,
    retention: Duration,
}

#[derive(Debug, Clone)]
struct Subscription {
    group: String,
    store: SqlitePool,
    producers: Vec<String>,
}

impl EmbeddedBus {
    /// A bus keeping outbox rows for `retention` after every group read them.
    pub fn new(retention: Duration) -> Self {
        Self {
            outboxes: BTreeMap::new(),
            subscriptions: Vec::new(),
            retention,
        }
    }

    /// Adds the outbox of `producer`, kept in `store`.
    pub fn add_producer(&mut self, producer: &str, store: SqlitePool) {
        self.outboxes.insert(producer.to_owned(), store);
    }

    /// Reports the lag of `group`, which keeps its cursors in `store`, on the outboxes of
    /// `producers`, without consuming: for a process that only inspects the files.
    pub fn watch(&mut self, group: &str, store: SqlitePool, producers: &[&str]) {
        self.subscriptions.push(Subscription {
            group: group.to_owned(),
            store,
            producers: producers
                .iter()
                .map(|&producer| producer.to_owned())
                .collect(),
        });
    }

    /// A consumer for `settings.group`, reading the outboxes of `producers` and keeping
    /// its cursors, retries and dead letters in `store` (the consuming service's file).
    pub fn consumer<H: EventHandler>(
        &mut self,
        store: SqlitePool,
        producers: &[&str],
        settings: ConsumerSettings,
        handler: H,
    ) -> Result<EmbeddedConsumer<H>, StorageError> {
        let sources = producers
            .iter()
            .map(|producer| {
                let outbox = self.outboxes.get(*producer).ok_or_else(|| {
                    StorageError::Corrupt(format!("no producer named {producer:?} on the bus"))
                })?;
                Ok(Source {
                    producer: (*producer).to_owned(),
                    outbox: outbox.clone(),
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        self.watch(&settings.group, store.clone(), producers);
        Ok(EmbeddedConsumer {
            store,
            sources,
            settings,
            handler,
        })
    }

    /// The lag of every group on the bus.
    pub async fn lag_report(&self) -> Result<Vec<GroupLag>, StorageError> {
        let mut report = Vec::new();
        for subscription in &self.subscriptions {
            for producer in &subscription.producers {
                report.push(
                    group_lag(
                        &subscription.store,
                        &subscription.group,
                        producer,
                        &self.outboxes[producer],
                    )
                    .await?,
                );
            }
        }
        Ok(report)
    }

    /// The newest `limit` dead letters of `group`, newest first; none for an unknown group.
    pub async fn dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        match self
            .subscriptions
            .iter()
            .find(|subscription| subscription.group == group)
        {
            Some(subscription) => dead_letters(&subscription.store, group, limit).await,
            None => Ok(Vec::new()),
        }
    }

    /// Deletes the outbox rows that every group reading them has passed and that are older
    /// than the retention window; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, StorageError> {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = Utc::now().timestamp_millis().saturating_sub(retention_ms);
        let mut deleted = 0;
        for (producer, outbox) in &self.outboxes {
            let mut read_by_all = i64::MAX;
            for subscription in &self.subscriptions {
                if subscription.producers.contains(producer) {
                    read_by_all = read_by_all
                        .min(cursor(&subscription.store, &subscription.group, producer).await?);
                }
            }
            deleted += sqlx::query("DELETE FROM outbox WHERE create_time < ? AND seq <= ?")
                .bind(cutoff)
                .bind(read_by_all)
                .execute(outbox)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }

    /// Purges expired outbox rows every minute until `stop` fires.
    pub fn spawn_purge(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !*stop.borrow() {
                if let Err(error) = self.purge_expired().await {
                    tracing::warn!(%error, "cannot purge the embedded outboxes");
                }
                tokio::select! {
                    () = tokio::time::sleep(PURGE_INTERVAL) => {}
                    _ = stop.changed() => {}
                }
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Source {
    producer: String,
    outbox: SqlitePool,
}

/// One group's reader of the embedded bus.
#[derive(Debug)]
pub struct EmbeddedConsumer<H> {
    store: SqlitePool,
    sources: Vec<Source>,
    settings: ConsumerSettings,
    handler: H,
}

/// How one delivery went.
enum Outcome {
    Applied,
    /// The handler failed; the event is retried.
    Failed(String),
    /// The event cannot be read at all; it goes straight to the dead letters.
    Unreadable(&'static str),
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    event_id: Vec<u8>,
    envelope: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct FailureRow {
    producer: String,
    seq: i64,
    event_id: String,
    envelope: Vec<u8>,
    attempts: i64,
}

async fn cursor(store: &SqlitePool, group: &str, producer: &str) -> Result<i64, StorageError> {
    let cursor: Option<i64> = sqlx::query_scalar(
        "SELECT last_seq FROM event_cursors WHERE consumer_group = ? AND producer = ?",
    )
    .bind(group)
    .bind(producer)
    .fetch_optional(store)
    .await?;
    Ok(cursor.unwrap_or(0))
}

fn event_id_text(bytes: &[u8]) -> String {
    uuid::Uuid::from_slice(bytes).map_or_else(
        |_| String::from_utf8_lossy(bytes).into_owned(),
        |id| id.to_string(),
    )
}

impl<H: EventHandler> EmbeddedConsumer<H> {
    /// One round: retries the failed events that are due, then reads what is new in every
    /// outbox; returns how many events were handled.
    pub async fn poll_once(&self) -> Result<usize, StorageError> {
        let mut handled = self.retry_due().await?;
        for source in &self.sources {
            handled += self.read_new(source).await?;
        }
        Ok(handled)
    }

    fn readable(&self, envelope: &[u8]) -> Result<Delivery, &'static str> {
        let envelope = EventEnvelope::decode(envelope).map_err(|_| "undecodable envelope")?;
        Delivery::new(&self.settings.group, envelope).map_err(|_| "event id is not a UUID")
    }

    async fn deliver(&self, envelope: &[u8]) -> Outcome {
        let delivery = match self.readable(envelope) {
            Ok(delivery) => delivery,
            Err(error) => return Outcome::Unreadable(error),
        };
        let span = crate::handler::apply_span(&delivery);
        match self.handler.handle(&delivery).instrument(span).await {
            Ok(_applied) => Outcome::Applied,
            Err(error) => Outcome::Failed(error.0),
        }
    }

    async fn read_new(&self, source: &Source) -> Result<usize, StorageError> {
        let group = &self.settings.group;
        let after = cursor(&self.store, group, &source.producer).await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, envelope FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(i64::try_from(self.settings.batch_size).unwrap_or(i64::MAX))
        .fetch_all(&source.outbox)
        .await?;
        let Some(last) = rows.last().map(|row| row.seq) else {
            return Ok(0);
        };
        // The handler writes to the same store, so no transaction is held while it runs.
        let mut set_aside = Vec::new();
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut delivered = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.readable(&row.envelope) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    delivered.push(row);
                }
                Err(error) => set_aside.push((row, error.to_owned(), true)),
            }
        }
        let outcomes = if deliveries.is_empty() {
            Vec::new()
        } else {
            self.handler.handle_batch(&deliveries).await
        };
        debug_assert_eq!(outcomes.len(), deliveries.len(), "one outcome per delivery");
        for (row, outcome) in delivered.into_iter().zip(outcomes) {
            if let Err(error) = outcome {
                let give_up = self.settings.max_attempts <= 1;
                set_aside.push((row, error.0, give_up));
            }
        }
        let now = Utc::now().timestamp_millis();
        let mut transaction = self.store.begin().await?;
        for (row, error, give_up) in set_aside {
            let event_id = event_id_text(&row.event_id);
            if give_up {
                self.dead_letter(
                    &mut transaction,
                    &source.producer,
                    row.seq,
                    &event_id,
                    &error,
                    &row.envelope,
                )
                .await?;
                continue;
            }
            tracing::warn!(event_id, attempts = 1, error, "event could not be applied");
            sqlx::query(
                "INSERT INTO event_failures (consumer_group, producer, seq, event_id, envelope, \
                 attempts, error, last_attempt_time, retry_time) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)",
            )
            .bind(group)
            .bind(&source.producer)
            .bind(row.seq)
            .bind(&event_id)
            .bind(&row.envelope)
            .bind(&error)
            .bind(now)
            .bind(now.saturating_add(self.retry_delay_ms()))
            .execute(&mut *transaction)
            .await?;
        }
        sqlx::query(
            "INSERT INTO event_cursors (consumer_group, producer, last_seq) VALUES (?, ?, ?) \
             ON CONFLICT (consumer_group, producer) DO UPDATE SET last_seq = excluded.last_seq",
        )
        .bind(group)
        .bind(&source.producer)
        .bind(last)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(rows.len())
    }

    async fn retry_due(&self) -> Result<usize, StorageError> {
        let group = &self.settings.group;
        let now = Utc::now().timestamp_millis();
        let due: Vec<FailureRow> = sqlx::query_as(
            "SELECT producer, seq, event_id, envelope, attempts FROM event_failures \
             WHERE consumer_group = ? AND retry_time <= ? ORDER BY retry_time LIMIT ?",
        )
        .bind(group)
        .bind(now)
        .bind(i64::try_from(self.settings.batch_size).unwrap_or(i64::MAX))
        .fetch_all(&self.store)
        .await?;
        for failure in &due {
            let outcome = self.deliver(&failure.envelope).await;
            let mut transaction = self.store.begin().await?;
            let attempts = failure.attempts + 1;
            let error = match outcome {
                Outcome::Applied => None,
                Outcome::Unreadable(error) => Some(error.to_owned()),
                Outcome::Failed(error) => Some(error),
            };
            match error {
                Some(error) if attempts < i64::from(self.settings.max_attempts) => {
                    tracing::warn!(
                        event_id = failure.event_id,
                        attempts,
                        error,
                        "event could not be applied"
                    );
                    sqlx::query(
                        "UPDATE event_failures SET attempts = ?, error = ?, last_attempt_time = ?, retry_time = ? \
                         WHERE consumer_group = ? AND producer = ? AND seq = ?",
                    )
                    .bind(attempts)
                    .bind(&error)
                    .bind(now)
                    .bind(now.saturating_add(self.retry_delay_ms()))
                    .bind(group)
                    .bind(&failure.producer)
                    .bind(failure.seq)
                    .execute(&mut *transaction)
                    .await?;
                }
                outcome => {
                    if let Some(error) = outcome {
                        self.dead_letter(
                            &mut transaction,
                            &failure.producer,
                            failure.seq,
                            &failure.event_id,
                            &error,
                            &failure.envelope,
                        )
                        .await?;
                    }
                    sqlx::query(
                        "DELETE FROM event_failures WHERE consumer_group = ? AND producer = ? AND seq = ?",
                    )
                    .bind(group)
                    .bind(&failure.producer)
                    .bind(failure.seq)
                    .execute(&mut *transaction)
                    .await?;
                }
            }
            transaction.commit().await?;
        }
        Ok(due.len())
    }

    fn retry_delay_ms(&self) -> i64 {
        i64::try_from(self.settings.claim_idle.as_millis()).unwrap_or(i64::MAX)
    }

    async fn dead_letter(
        &self,
        connection: &mut sqlx::SqliteConnection,
        producer: &str,
        seq: i64,
        event_id: &str,
        error: &str,
        envelope: &[u8],
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO dead_letters (consumer_group, producer, seq, event_id, error, envelope, create_time) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&self.settings.group)
        .bind(producer)
        .bind(seq)
        .bind(event_id)
        .bind(error)
        .bind(envelope)
        .bind(Utc::now().timestamp_millis())
        .execute(connection)
        .await?;
        tracing::error!(event_id, error, group = %self.settings.group, "event dead-lettered");
        Ok(())
    }

    /// How far the group is behind on each outbox it reads.
    pub async fn lag(&self) -> Result<Vec<GroupLag>, StorageError> {
        let mut lags = Vec::with_capacity(self.sources.len());
        for source in &self.sources {
            lags.push(
                group_lag(
                    &self.store,
                    &self.settings.group,
                    &source.producer,
                    &source.outbox,
                )
                .await?,
            );
        }
        Ok(lags)
    }
}

impl<H: EventHandler + 'static> EmbeddedConsumer<H> {
    /// Runs until `stop` fires, polling every `settings.block` while there is nothing new.
    pub fn spawn(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !*stop.borrow() {
                let idle = match self.poll_once().await {
                    Ok(handled) => handled == 0,
                    Err(error) => {
                        tracing::warn!(%error, group = %self.settings.group, "consumer round failed; retrying");
                        true
                    }
                };
                if idle {
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.block) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        })
    }
}

/// The lag of `group` (whose records are in `store`) on the outbox of `producer`.
async fn group_lag(
    store: &SqlitePool,
    group: &str,
    producer: &str,
    outbox: &SqlitePool,
) -> Result<GroupLag, StorageError> {
    let after = cursor(store, group, producer).await?;
    let undelivered: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE seq > ?")
        .bind(after)
        .fetch_one(outbox)
        .await?;
    let (pending, oldest_attempt): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), min(last_attempt_time) FROM event_failures \
         WHERE consumer_group = ? AND producer = ?",
    )
    .bind(group)
    .bind(producer)
    .fetch_one(store)
    .await?;
    let dead_lettered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE consumer_group = ?")
            .bind(group)
            .fetch_one(store)
            .await?;
    let idle_ms = oldest_attempt.map_or(0, |attempt| Utc::now().timestamp_millis() - attempt);
    Ok(GroupLag {
        stream: stream_name(producer),
        group: group.to_owned(),
        pending: u64::try_from(pending).unwrap_or(0),
        oldest_pending_idle: Duration::from_millis(u64::try_from(idle_ms).unwrap_or(0)),
        undelivered: Some(u64::try_from(undelivered).unwrap_or(0)),
        dead_lettered: u64::try_from(dead_lettered).unwrap_or(0),
    })
}

/// The newest `limit` dead letters of `group` kept in `store`, newest first.
async fn dead_letters(
    store: &SqlitePool,
    group: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, StorageError> {
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT dead_letter_id, producer, event_id, error FROM dead_letters \
         WHERE consumer_group = ? ORDER BY dead_letter_id DESC LIMIT ?",
    )
    .bind(group)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(store)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, producer, event_id, error)| DeadLetter {
            group: group.to_owned(),
            entry_id: id.to_string(),
            stream: stream_name(&producer),
            event_id,
            error,
        })
        .collect())
}
