//! The event bus port, on Redis Streams over the PostgreSQL outboxes and on the embedded
//! bus over the SQLite outboxes: only committed events are delivered; a consumer killed
//! mid-batch loses nothing and applies nothing twice; a poison event is set aside while
//! the rest flow; lag is reported; the consumer's span continues the producer's trace.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use leadflow_bus::{
    Applied, Consumer, ConsumerSettings, DeadLetter, Delivery, EmbeddedBus, EmbeddedConsumer,
    EventHandler, GroupLag, HandlerError, Relay, RelaySettings, inbox, new_envelope, outbox,
};
use leadflow_proto::events::v1::{ActivityRecorded, EventEnvelope, event_envelope::Payload};
use leadflow_storage::{
    EmbeddedDatabase, PostgresSettings, RedisKeySpace, RedisStore, ServiceDatabase,
};
use leadflow_tests::{TestDatabase, eventually, redis_url};
use sqlx::{PgPool, SqlitePool};

use super::{Backing, contract};

/// The consuming group of every contract.
pub(crate) const GROUP: &str = "scoring";

/// Where the test handler writes its effects: a table numbered in the order of application
/// and without any uniqueness on the event, so that a double application would show.
#[derive(Debug, Clone)]
pub(crate) enum EffectStore {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl EffectStore {
    /// (effects, distinct events among them).
    pub(crate) async fn effects(&self) -> anyhow::Result<(i64, i64)> {
        const COUNT: &str = "SELECT count(*), count(DISTINCT event_id) FROM effects";
        Ok(match self {
            Self::Postgres(pool) => sqlx::query_as(COUNT).fetch_one(pool).await?,
            Self::Sqlite(pool) => sqlx::query_as(COUNT).fetch_one(pool).await?,
        })
    }
}

/// Records each applied event as a row of `effects`, the way a service's adapter would:
/// the effect and the event's id in one transaction. Refuses aggregates named `poison…`;
/// with `stall_after`, hangs forever once that many events were applied (a replica that
/// dies mid-batch).
#[derive(Debug, Clone)]
pub(crate) struct RecordEffect {
    store: EffectStore,
    applied: Arc<AtomicUsize>,
    stall_after: Option<usize>,
}

impl RecordEffect {
    pub(crate) fn new(store: EffectStore) -> Self {
        Self {
            store,
            applied: Arc::default(),
            stall_after: None,
        }
    }
}

#[async_trait]
impl EventHandler for RecordEffect {
    async fn handle(&self, delivery: &Delivery) -> Result<Applied, HandlerError> {
        let envelope = delivery.envelope();
        if envelope.aggregate_id.starts_with("poison") {
            return Err(HandlerError("refused poison".to_owned()));
        }
        if self
            .stall_after
            .is_some_and(|limit| self.applied.load(Ordering::SeqCst) >= limit)
        {
            std::future::pending::<()>().await;
        }
        let failed = |error: sqlx::Error| HandlerError(error.to_string());
        let recorded = match &self.store {
            EffectStore::Postgres(pool) => {
                let mut transaction = pool.begin().await.map_err(failed)?;
                let recorded = inbox::record(&mut transaction, delivery).await?;
                if recorded.is_first() {
                    sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
                        .bind(&envelope.event_id)
                        .execute(&mut *transaction)
                        .await
                        .map_err(failed)?;
                }
                transaction.commit().await.map_err(failed)?;
                recorded
            }
            EffectStore::Sqlite(pool) => {
                let mut transaction = pool.begin().await.map_err(failed)?;
                let recorded = inbox::sqlite::record(&mut transaction, delivery).await?;
                if recorded.is_first() {
                    sqlx::query("INSERT INTO effects (event_id) VALUES (?)")
                        .bind(&envelope.event_id)
                        .execute(&mut *transaction)
                        .await
                        .map_err(failed)?;
                }
                transaction.commit().await.map_err(failed)?;
                recorded
            }
        };
        if recorded.is_first() {
            self.applied.fetch_add(1, Ordering::SeqCst);
        }
        Ok(recorded.into_applied())
    }
}

/// An `ActivityRecorded` event about `aggregate_id`, produced by capture.
pub(crate) fn activity(aggregate_id: &str) -> EventEnvelope {
    new_envelope(
        "capture",
        aggregate_id,
        Payload::ActivityRecorded(ActivityRecorded {
            activity_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        }),
        chrono::Utc::now(),
    )
}

/// One consumer of [`GROUP`], whichever adapter carries it.
#[async_trait]
pub(crate) trait ConsumerUnderTest: Send + Sync {
    async fn poll_once(&self) -> anyhow::Result<usize>;
    async fn lag(&self) -> anyhow::Result<Vec<GroupLag>>;
}

#[async_trait]
impl ConsumerUnderTest for Consumer<RecordEffect> {
    async fn poll_once(&self) -> anyhow::Result<usize> {
        Ok(Consumer::poll_once(self).await?)
    }
    async fn lag(&self) -> anyhow::Result<Vec<GroupLag>> {
        Ok(Consumer::lag(self).await?)
    }
}

#[async_trait]
impl ConsumerUnderTest for EmbeddedConsumer<RecordEffect> {
    async fn poll_once(&self) -> anyhow::Result<usize> {
        Ok(EmbeddedConsumer::poll_once(self).await?)
    }
    async fn lag(&self) -> anyhow::Result<Vec<GroupLag>> {
        Ok(EmbeddedConsumer::lag(self).await?)
    }
}

/// Capture producing, scoring consuming, over one adapter of the bus.
#[async_trait]
pub(crate) trait BusUnderTest: Send + Sync {
    /// Writes one event per aggregate `<prefix>-<n>` in one producer transaction, which
    /// commits or rolls back.
    async fn produce(
        &self,
        count: usize,
        prefix: &str,
        commit: bool,
    ) -> anyhow::Result<Vec<EventEnvelope>>;
    /// Carries committed events towards the consumers (the relay's work, where there is one).
    async fn publish(&self) -> anyhow::Result<()>;
    /// Where the consumers' handlers write.
    fn effect_store(&self) -> EffectStore;
    /// A consumer of [`GROUP`] with `handler`, its settings adjusted by `configure`.
    async fn consumer(
        &self,
        handler: RecordEffect,
        configure: Configure,
    ) -> anyhow::Result<Box<dyn ConsumerUnderTest>>;
    async fn dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>>;
    async fn lag_report(&self) -> anyhow::Result<Vec<GroupLag>>;
}

/// Adjusts a consumer's settings for one contract.
pub(crate) type Configure = fn(&mut ConsumerSettings);

fn settings(configure: Configure) -> ConsumerSettings {
    let mut settings = ConsumerSettings::new(GROUP);
    settings.block = Duration::from_millis(50);
    configure(&mut settings);
    settings
}

/// Capture's and scoring's PostgreSQL schemas, and a Redis key space of their own.
pub(crate) struct RedisBus {
    pub(crate) capture: PgPool,
    pub(crate) scoring: PgPool,
    pub(crate) redis: RedisStore,
}

impl RedisBus {
    pub(crate) async fn start(redis_url: &str) -> anyhow::Result<(TestDatabase, Self)> {
        let database = TestDatabase::create().await?;
        let settings = PostgresSettings {
            url: database.url().to_owned().into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        };
        let capture = ServiceDatabase::connect(&settings, leadflow_capture::SCHEMA).await?;
        capture.migrate(&leadflow_capture::MIGRATOR).await?;
        let scoring = ServiceDatabase::connect(&settings, leadflow_scoring::SCHEMA).await?;
        scoring.migrate(&leadflow_scoring::MIGRATOR).await?;
        sqlx::query("CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL)")
            .execute(scoring.pool())
            .await?;
        let key_space = RedisKeySpace::new(format!("test:{}", uuid::Uuid::new_v4().simple()));
        let redis = RedisStore::connect(&redis_url.to_owned().into(), key_space).await?;
        let bus = Self {
            capture: capture.pool().clone(),
            scoring: scoring.pool().clone(),
            redis,
        };
        Ok((database, bus))
    }

    pub(crate) fn relay(&self) -> Relay {
        Relay::new(
            self.capture.clone(),
            self.redis.clone(),
            "capture",
            RelaySettings::default(),
        )
    }

    pub(crate) async fn redis_consumer(
        &self,
        handler: RecordEffect,
        configure: Configure,
    ) -> anyhow::Result<Consumer<RecordEffect>> {
        let consumer = Consumer::new(
            self.redis.clone(),
            &["capture"],
            settings(configure),
            handler,
        );
        consumer.ensure_groups().await?;
        Ok(consumer)
    }
}

#[async_trait]
impl BusUnderTest for RedisBus {
    async fn produce(
        &self,
        count: usize,
        prefix: &str,
        commit: bool,
    ) -> anyhow::Result<Vec<EventEnvelope>> {
        let mut transaction = self.capture.begin().await?;
        let mut envelopes = Vec::with_capacity(count);
        for index in 0..count {
            let envelope = activity(&format!("{prefix}-{index}"));
            outbox::append(&mut transaction, &envelope).await?;
            envelopes.push(envelope);
        }
        if commit {
            transaction.commit().await?;
        } else {
            transaction.rollback().await?;
        }
        Ok(envelopes)
    }

    async fn publish(&self) -> anyhow::Result<()> {
        while self.relay().publish_pending().await? > 0 {}
        Ok(())
    }

    fn effect_store(&self) -> EffectStore {
        EffectStore::Postgres(self.scoring.clone())
    }

    async fn consumer(
        &self,
        handler: RecordEffect,
        configure: Configure,
    ) -> anyhow::Result<Box<dyn ConsumerUnderTest>> {
        Ok(Box::new(self.redis_consumer(handler, configure).await?))
    }

    async fn dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        Ok(leadflow_bus::dead_letters(&self.redis, GROUP, 10).await?)
    }

    async fn lag_report(&self) -> anyhow::Result<Vec<GroupLag>> {
        Ok(leadflow_bus::lag_report(&self.redis, &["capture", "scoring"]).await?)
    }
}

/// Capture's and scoring's embedded stores, and the in-process bus between them.
struct EmbeddedBusRig {
    capture: SqlitePool,
    scoring: SqlitePool,
    bus: Mutex<EmbeddedBus>,
}

#[async_trait]
impl BusUnderTest for EmbeddedBusRig {
    async fn produce(
        &self,
        count: usize,
        prefix: &str,
        commit: bool,
    ) -> anyhow::Result<Vec<EventEnvelope>> {
        let mut transaction = self.capture.begin().await?;
        let mut envelopes = Vec::with_capacity(count);
        for index in 0..count {
            let envelope = activity(&format!("{prefix}-{index}"));
            outbox::sqlite::append(&mut transaction, &envelope).await?;
            envelopes.push(envelope);
        }
        if commit {
            transaction.commit().await?;
        } else {
            transaction.rollback().await?;
        }
        Ok(envelopes)
    }

    async fn publish(&self) -> anyhow::Result<()> {
        // Consumers read the outboxes themselves.
        Ok(())
    }

    fn effect_store(&self) -> EffectStore {
        EffectStore::Sqlite(self.scoring.clone())
    }

    async fn consumer(
        &self,
        handler: RecordEffect,
        configure: Configure,
    ) -> anyhow::Result<Box<dyn ConsumerUnderTest>> {
        let mut bus = self.bus.lock().map_err(|_| anyhow::anyhow!("bus lock"))?;
        Ok(Box::new(bus.consumer(
            self.scoring.clone(),
            &["capture"],
            settings(configure),
            handler,
        )?))
    }

    async fn dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let bus = self.bus_snapshot()?;
        Ok(bus.dead_letters(GROUP, 10).await?)
    }

    async fn lag_report(&self) -> anyhow::Result<Vec<GroupLag>> {
        let bus = self.bus_snapshot()?;
        Ok(bus.lag_report().await?)
    }
}

impl EmbeddedBusRig {
    fn bus_snapshot(&self) -> anyhow::Result<EmbeddedBus> {
        Ok(self
            .bus
            .lock()
            .map_err(|_| anyhow::anyhow!("bus lock"))?
            .clone())
    }
}

async fn redis_streams() -> anyhow::Result<(Backing, Box<dyn BusUnderTest>)> {
    let (database, bus) = RedisBus::start(&redis_url()).await?;
    Ok((Backing::Postgres(database), Box::new(bus)))
}

async fn embedded_bus() -> anyhow::Result<(Backing, Box<dyn BusUnderTest>)> {
    let capture = EmbeddedDatabase::in_memory(leadflow_capture::SCHEMA).await?;
    capture.migrate(&leadflow_capture::SQLITE_MIGRATOR).await?;
    let scoring = EmbeddedDatabase::in_memory(leadflow_scoring::SCHEMA).await?;
    scoring.migrate(&leadflow_scoring::SQLITE_MIGRATOR).await?;
    sqlx::query("CREATE TABLE effects (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL)")
        .execute(scoring.pool())
        .await?;
    let mut bus = EmbeddedBus::new(Duration::from_secs(7 * 86_400));
    bus.add_producer("capture", capture.pool().clone());
    Ok((
        Backing::Sqlite,
        Box::new(EmbeddedBusRig {
            capture: capture.pool().clone(),
            scoring: scoring.pool().clone(),
            bus: Mutex::new(bus),
        }),
    ))
}

/// Polls `consumer` until the effects count `expected`.
async fn drain(
    bus: &dyn BusUnderTest,
    consumer: &dyn ConsumerUnderTest,
    expected: i64,
) -> anyhow::Result<bool> {
    let store = bus.effect_store();
    Ok(eventually(Duration::from_secs(15), || async {
        let _ = consumer.poll_once().await;
        matches!(store.effects().await, Ok((count, _)) if count >= expected)
    })
    .await)
}

contract!(only_committed_events_are_delivered on redis_streams, embedded_bus);
async fn only_committed_events_are_delivered(bus: Box<dyn BusUnderTest>) -> anyhow::Result<()> {
    bus.produce(3, "rolled-back", false).await?;
    let committed = bus.produce(2, "committed", true).await?;
    bus.publish().await?;
    let consumer = bus
        .consumer(RecordEffect::new(bus.effect_store()), |_| {})
        .await?;
    assert!(drain(bus.as_ref(), consumer.as_ref(), 2).await?);
    consumer.poll_once().await?;
    assert_eq!(bus.effect_store().effects().await?, (2, 2));
    let applied = applied_event_ids(&bus.effect_store()).await?;
    let expected: Vec<String> = committed.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(applied, expected, "the committed events, in order");
    Ok(())
}

async fn applied_event_ids(store: &EffectStore) -> anyhow::Result<Vec<String>> {
    const IDS: &str = "SELECT event_id FROM effects ORDER BY seq";
    Ok(match store {
        EffectStore::Postgres(pool) => sqlx::query_scalar(IDS).fetch_all(pool).await?,
        EffectStore::Sqlite(pool) => sqlx::query_scalar(IDS).fetch_all(pool).await?,
    })
}

contract!(a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice on redis_streams, embedded_bus);
async fn a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    bus: Box<dyn BusUnderTest>,
) -> anyhow::Result<()> {
    bus.produce(50, "lead", true).await?;
    bus.publish().await?;
    let store = bus.effect_store();
    let mut stalling = RecordEffect::new(store.clone());
    stalling.stall_after = Some(20);
    let replica_a = bus
        .consumer(stalling, |settings| {
            settings.consumer_name = "replica-a".to_owned()
        })
        .await?;
    let replica_a = tokio::spawn(async move { replica_a.poll_once().await });
    let stalled = eventually(Duration::from_secs(10), || async {
        matches!(store.effects().await, Ok((20, _)))
    })
    .await;
    assert!(stalled, "replica a applied its first 20 events");
    replica_a.abort();
    let _ = replica_a.await;

    let survivor = bus
        .consumer(RecordEffect::new(store.clone()), |settings| {
            settings.consumer_name = "replica-b".to_owned();
            settings.claim_idle = Duration::from_millis(200);
        })
        .await?;
    assert!(
        drain(bus.as_ref(), survivor.as_ref(), 50).await?,
        "replica b takes over what replica a left"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    survivor.poll_once().await?;
    assert_eq!(
        store.effects().await?,
        (50, 50),
        "every event applied exactly once"
    );
    let lag = survivor.lag().await?;
    assert_eq!(
        (lag[0].pending, lag[0].undelivered),
        (0, Some(0)),
        "{lag:?}"
    );
    Ok(())
}

contract!(a_poison_event_is_dead_lettered_while_the_rest_flow on redis_streams, embedded_bus);
async fn a_poison_event_is_dead_lettered_while_the_rest_flow(
    bus: Box<dyn BusUnderTest>,
) -> anyhow::Result<()> {
    bus.produce(4, "lead", true).await?;
    let poison = bus.produce(1, "poison", true).await?;
    bus.produce(4, "more", true).await?;
    bus.publish().await?;
    let consumer = bus
        .consumer(RecordEffect::new(bus.effect_store()), |settings| {
            settings.max_attempts = 3;
            settings.claim_idle = Duration::ZERO;
        })
        .await?;
    let settled = eventually(Duration::from_secs(15), || async {
        let _ = consumer.poll_once().await;
        matches!(bus.dead_letters().await, Ok(letters) if !letters.is_empty())
    })
    .await;
    assert!(settled, "the poison event is dead-lettered");
    assert_eq!(
        bus.effect_store().effects().await?,
        (8, 8),
        "the good events all flowed"
    );
    let dead = bus.dead_letters().await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].event_id.as_str(), dead[0].error.as_str()),
        (poison[0].event_id.as_str(), "refused poison")
    );
    let report = bus.lag_report().await?;
    assert_eq!(report.len(), 1, "one group on one producer: {report:?}");
    assert_eq!(
        (
            report[0].group.as_str(),
            report[0].pending,
            report[0].undelivered,
            report[0].dead_lettered
        ),
        (GROUP, 0, Some(0), 1)
    );
    Ok(())
}

contract!(lag_counts_what_the_group_has_not_read on redis_streams, embedded_bus);
async fn lag_counts_what_the_group_has_not_read(bus: Box<dyn BusUnderTest>) -> anyhow::Result<()> {
    bus.produce(3, "lead", true).await?;
    bus.publish().await?;
    let consumer = bus
        .consumer(RecordEffect::new(bus.effect_store()), |settings| {
            settings.batch_size = 2
        })
        .await?;
    let before = bus.lag_report().await?;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!((before[0].pending, before[0].undelivered), (0, Some(3)));
    consumer.poll_once().await?;
    let after = consumer.lag().await?;
    assert_eq!(
        after[0].undelivered,
        Some(1),
        "one batch of two read: {after:?}"
    );
    Ok(())
}

contract!(the_consumers_span_continues_the_producers_trace on redis_streams, embedded_bus);
async fn the_consumers_span_continues_the_producers_trace(
    bus: Box<dyn BusUnderTest>,
) -> anyhow::Result<()> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("events-test")));
    // This test's runtime runs on this thread only, so a thread-local subscriber sees it all.
    let _subscriber = tracing::subscriber::set_default(subscriber);
    // Other tests may have met the consumer's span first, with no subscriber on their
    // thread; tracing caches that lack of interest per callsite until it is rebuilt.
    tracing::callsite::rebuild_interest_cache();

    bus.produce(1, "lead", true)
        .instrument(tracing::info_span!("form.post"))
        .await?;
    bus.publish().await?;
    let consumer = bus
        .consumer(RecordEffect::new(bus.effect_store()), |_| {})
        .await?;
    assert!(drain(bus.as_ref(), consumer.as_ref(), 1).await?);
    provider.force_flush()?;

    let spans = exporter.get_finished_spans()?;
    let find = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span among {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let post = find("form.post");
    let apply = find("event.apply");
    assert_eq!(
        apply.span_context.trace_id(),
        post.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(
        apply.parent_span_id,
        post.span_context.span_id(),
        "the consumer's span is a child of the post"
    );
    Ok(())
}
