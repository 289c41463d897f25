//! Events that are never lost: the outbox publishes only what committed, a consumer killed
//! mid-batch loses nothing and applies nothing twice, a Redis that comes back empty is
//! refilled from the outbox, and a poison event is set aside while the rest flow.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use leadflow_bus::{
    Consumer, ConsumerSettings, EventHandler, HandlerError, Relay, RelaySettings, new_envelope,
    outbox,
};
use leadflow_proto::events::v1::{ActivityRecorded, EventEnvelope, event_envelope::Payload};
use leadflow_storage::{PostgresSettings, RedisKeySpace, RedisStore, ServiceDatabase};
use leadflow_tests::{OwnRedis, TestDatabase, eventually, redis_url};
use sqlx::{PgConnection, PgPool};

/// A producer's and a consumer's schema (capture's, with its outbox), a Redis key space,
/// and a table of effects without any uniqueness, so that a double application would show.
struct Rig {
    _database: TestDatabase,
    pool: PgPool,
    redis: RedisStore,
}

impl Rig {
    async fn start(redis_url: &str) -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let settings = PostgresSettings {
            url: database.url().to_owned().into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        };
        let capture = ServiceDatabase::connect(&settings, "capture").await?;
        capture.migrate(&leadflow_capture::MIGRATOR).await?;
        sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL)")
            .execute(capture.pool())
            .await?;
        let key_space = RedisKeySpace::new(format!("test:{}", uuid::Uuid::new_v4().simple()));
        let redis = RedisStore::connect(&redis_url.to_owned().into(), key_space).await?;
        Ok(Self {
            pool: capture.pool().clone(),
            redis,
            _database: database,
        })
    }

    fn relay(&self) -> Relay {
        Relay::new(
            self.pool.clone(),
            self.redis.clone(),
            "capture",
            RelaySettings::default(),
        )
    }

    fn consumer(
        &self,
        handler: RecordEffect,
        configure: impl FnOnce(&mut ConsumerSettings),
    ) -> Consumer<RecordEffect> {
        let mut settings = ConsumerSettings::new("scoring");
        settings.block = Duration::from_millis(50);
        configure(&mut settings);
        Consumer::new(
            self.pool.clone(),
            self.redis.clone(),
            &["capture"],
            settings,
            handler,
        )
    }

    async fn produce(&self, count: usize, aggregate: &str) -> anyhow::Result<Vec<EventEnvelope>> {
        let mut envelopes = Vec::with_capacity(count);
        let mut transaction = self.pool.begin().await?;
        for index in 0..count {
            let envelope = activity(&format!("{aggregate}-{index}"));
            outbox::append(&mut transaction, &envelope).await?;
            envelopes.push(envelope);
        }
        transaction.commit().await?;
        Ok(envelopes)
    }

    async fn effects(&self) -> anyhow::Result<(i64, i64)> {
        Ok(
            sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM effects")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

fn activity(aggregate_id: &str) -> EventEnvelope {
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

/// Records each applied event as a row of `effects`; refuses aggregates named `poison…`;
/// with `stall_after`, hangs forever once that many events were applied (a replica that
/// dies mid-batch).
#[derive(Debug, Clone, Default)]
struct RecordEffect {
    applied: Arc<AtomicUsize>,
    stall_after: Option<usize>,
}

#[async_trait::async_trait]
impl EventHandler for RecordEffect {
    async fn apply(
        &self,
        connection: &mut PgConnection,
        envelope: &EventEnvelope,
    ) -> Result<(), HandlerError> {
        if envelope.aggregate_id.starts_with("poison") {
            return Err(HandlerError("refused poison".to_owned()));
        }
        if self
            .stall_after
            .is_some_and(|limit| self.applied.load(Ordering::SeqCst) >= limit)
        {
            std::future::pending::<()>().await;
        }
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
            .bind(&envelope.event_id)
            .execute(connection)
            .await
            .map_err(|error| HandlerError(error.to_string()))?;
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn drain(
    rig: &Rig,
    consumer: &Consumer<RecordEffect>,
    expected: i64,
) -> anyhow::Result<bool> {
    Ok(eventually(Duration::from_secs(15), || async {
        let _ = consumer.poll_once().await;
        matches!(rig.effects().await, Ok((count, _)) if count >= expected)
    })
    .await)
}

#[tokio::test]
async fn an_event_of_a_rolled_back_transaction_is_never_published() -> anyhow::Result<()> {
    let rig = Rig::start(&redis_url()).await?;
    let rolled_back = activity("rolled-back");
    let mut transaction = rig.pool.begin().await?;
    outbox::append(&mut transaction, &rolled_back).await?;
    transaction.rollback().await?;
    let committed = rig.produce(1, "committed").await?;

    assert_eq!(rig.relay().publish_pending().await?, 1);
    assert_eq!(
        rig.relay().publish_pending().await?,
        0,
        "published rows are not published again"
    );
    let mut redis = rig.redis.connection();
    let entries: Vec<(String, Vec<(String, redis::Value)>)> = redis::cmd("XRANGE")
        .arg(rig.relay().stream())
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await?;
    let published: Vec<String> = entries
        .iter()
        .flat_map(|(_, fields)| fields.iter())
        .filter(|(name, _)| name == "event_id")
        .filter_map(|(_, value)| redis::from_redis_value_ref::<String>(value).ok())
        .collect();
    assert_eq!(published, [committed[0].event_id.clone()]);
    Ok(())
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice() -> anyhow::Result<()>
{
    let rig = Rig::start(&redis_url()).await?;
    rig.produce(50, "lead").await?;
    rig.relay().publish_pending().await?;

    let stalling = rig.consumer(
        RecordEffect {
            stall_after: Some(20),
            ..Default::default()
        },
        |settings| settings.consumer_name = "replica-a".to_owned(),
    );
    stalling.ensure_groups().await?;
    let replica_a = tokio::spawn(async move { stalling.poll_once().await });
    let stalled = eventually(Duration::from_secs(10), || async {
        matches!(rig.effects().await, Ok((20, _)))
    })
    .await;
    assert!(stalled, "replica a applied its first 20 events");
    replica_a.abort();
    let _ = replica_a.await;

    let survivor = rig.consumer(RecordEffect::default(), |settings| {
        settings.consumer_name = "replica-b".to_owned();
        settings.claim_idle = Duration::from_millis(200);
    });
    let before = &survivor.lag().await?[0];
    assert_eq!(
        before.pending, 30,
        "what replica a read but never acknowledged: {before:?}"
    );
    assert!(
        drain(&rig, &survivor, 50).await?,
        "replica b claims what replica a left pending"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    survivor.poll_once().await?;
    assert_eq!(
        rig.effects().await?,
        (50, 50),
        "every event applied exactly once"
    );
    let lag = survivor.lag().await?;
    assert_eq!(lag[0].pending, 0, "{lag:?}");
    Ok(())
}

#[tokio::test]
async fn after_a_flushall_the_relay_refills_and_every_unapplied_event_arrives() -> anyhow::Result<()>
{
    let own_redis = OwnRedis::start().await?;
    let rig = Rig::start(&own_redis.url()).await?;
    let relay = rig.relay();
    relay.refill_if_lost().await?;
    rig.produce(30, "lead").await?;
    relay.publish_pending().await?;
    let consumer = rig.consumer(RecordEffect::default(), |settings| settings.batch_size = 10);
    consumer.ensure_groups().await?;
    consumer.poll_once().await?;
    assert_eq!(
        rig.effects().await?,
        (10, 10),
        "a third applied before redis is lost"
    );

    let mut redis = rig.redis.connection();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut redis).await?;
    assert_eq!(
        relay.refill_if_lost().await?,
        30,
        "every retained event is published again"
    );
    assert_eq!(relay.refill_if_lost().await?, 0, "once");
    rig.produce(5, "later").await?;
    relay.publish_pending().await?;

    assert!(
        drain(&rig, &consumer, 35).await?,
        "the rest arrive after the group is recreated"
    );
    consumer.poll_once().await?;
    assert_eq!(
        rig.effects().await?,
        (35, 35),
        "nothing lost, nothing applied twice"
    );
    Ok(())
}

#[tokio::test]
async fn a_poison_event_goes_to_the_dead_letter_stream_while_the_rest_flow() -> anyhow::Result<()> {
    let rig = Rig::start(&redis_url()).await?;
    rig.produce(4, "lead").await?;
    rig.produce(1, "poison").await?;
    rig.produce(4, "more").await?;
    rig.relay().publish_pending().await?;
    let mut redis = rig.redis.connection();
    let _: String = redis::cmd("XADD")
        .arg(rig.relay().stream())
        .arg("*")
        .arg("event_id")
        .arg("garbage")
        .arg("envelope")
        .arg(&b"\xff\xff not protobuf"[..])
        .query_async(&mut redis)
        .await?;

    let consumer = rig.consumer(RecordEffect::default(), |settings| {
        settings.max_attempts = 3;
        settings.claim_idle = Duration::ZERO;
    });
    consumer.ensure_groups().await?;
    let settled = eventually(Duration::from_secs(15), || async {
        let _ = consumer.poll_once().await;
        matches!(leadflow_bus::dead_letters(&rig.redis, "scoring", 10).await, Ok(entries) if entries.len() == 2)
    })
    .await;
    assert!(settled, "both bad entries are dead-lettered");
    assert_eq!(rig.effects().await?, (8, 8), "the good events all flowed");
    // The undecodable entry is set aside at once, the poison event after its third attempt.
    let dead = leadflow_bus::dead_letters(&rig.redis, "scoring", 10).await?;
    let errors: Vec<&str> = dead.iter().map(|letter| letter.error.as_str()).collect();
    assert_eq!(
        errors,
        ["refused poison", "undecodable envelope"],
        "newest first, each with its error"
    );
    assert_eq!(dead[1].event_id, "garbage");
    assert!(
        dead.iter()
            .all(|letter| letter.stream == rig.relay().stream())
    );
    let report = leadflow_bus::lag_report(&rig.redis, &["capture", "scoring"]).await?;
    assert_eq!(report.len(), 1, "one group on one stream: {report:?}");
    assert_eq!(
        (report[0].group.as_str(), report[0].pending),
        ("scoring", 0)
    );
    assert_eq!(report[0].dead_lettered, 2);
    assert_eq!(report[0].undelivered, Some(0));
    Ok(())
}

#[tokio::test]
async fn the_consumers_span_continues_the_producers_trace() -> anyhow::Result<()> {
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

    let rig = Rig::start(&redis_url()).await?;
    rig.produce(1, "lead")
        .instrument(tracing::info_span!("form.post"))
        .await?;
    rig.relay().publish_pending().await?;
    let consumer = rig.consumer(RecordEffect::default(), |_| {});
    consumer.ensure_groups().await?;
    assert!(drain(&rig, &consumer, 1).await?);
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

#[tokio::test]
async fn consumer_lag_is_exported_as_metrics() -> anyhow::Result<()> {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

    let rig = Rig::start(&redis_url()).await?;
    rig.produce(3, "lead").await?;
    rig.relay().publish_pending().await?;
    let consumer = rig.consumer(RecordEffect::default(), |_| {});
    consumer.ensure_groups().await?;

    let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(exporter.clone())
        .build();
    let samples = leadflow_bus::LagSamples::default();
    leadflow_bus::register_lag_gauges(&provider.meter("events-test"), &samples);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sampler = leadflow_bus::spawn_lag_sampler(
        rig.redis.clone(),
        vec!["capture".to_owned()],
        samples.clone(),
        Duration::from_millis(20),
        stopped,
    );
    let sampled = eventually(Duration::from_secs(5), || async {
        samples
            .lock()
            .map(|samples| !samples.is_empty())
            .unwrap_or(false)
    })
    .await;
    assert!(sampled, "the sampler read the group's lag");
    provider.force_flush()?;
    let _ = stop.send(true);
    sampler.await?;

    let metrics = exporter.get_finished_metrics()?;
    let undelivered = metrics
        .iter()
        .flat_map(|resource| resource.scope_metrics())
        .flat_map(|scope| scope.metrics())
        .find(|metric| metric.name() == "leadflow.events.undelivered")
        .expect("the undelivered gauge");
    let AggregatedMetrics::U64(MetricData::Gauge(gauge)) = undelivered.data() else {
        panic!("a u64 gauge expected");
    };
    let point = gauge.data_points().next().expect("one data point");
    assert_eq!(
        point.value(),
        3,
        "three events not yet delivered to the group"
    );
    let attributes: Vec<String> = point
        .attributes()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    assert!(
        attributes.contains(&"group=scoring".to_owned()),
        "{attributes:?}"
    );
    Ok(())
}
