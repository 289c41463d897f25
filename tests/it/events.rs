//! What only the production adapter of the bus has to show (the rest is the bus contract
//! in `contracts::bus`): a Redis that comes back empty is refilled from the outbox, an
//! entry that is not an event is set aside at once, and consumer lag is exported as
//! metrics.

use std::time::Duration;

use leadflow_tests::{OwnRedis, eventually, redis_url};

use crate::contracts::bus::{EffectStore, GROUP, RecordEffect, RedisBus};

#[tokio::test]
async fn after_a_flushall_the_relay_refills_and_every_unapplied_event_arrives() -> anyhow::Result<()>
{
    use crate::contracts::bus::BusUnderTest as _;

    let own_redis = OwnRedis::start().await?;
    let (_database, bus) = RedisBus::start(&own_redis.url()).await?;
    let store = EffectStore::Postgres(bus.scoring.clone());
    let relay = bus.relay();
    relay.refill_if_lost().await?;
    bus.produce(30, "lead", true).await?;
    relay.publish_pending().await?;
    let consumer = bus
        .redis_consumer(RecordEffect::new(store.clone()), |settings| {
            settings.batch_size = 10
        })
        .await?;
    consumer.poll_once().await?;
    assert_eq!(
        store.effects().await?,
        (10, 10),
        "a third applied before redis is lost"
    );

    let mut redis = bus.redis.connection();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut redis).await?;
    assert_eq!(
        relay.refill_if_lost().await?,
        30,
        "every retained event is published again"
    );
    assert_eq!(relay.refill_if_lost().await?, 0, "once");
    bus.produce(5, "later", true).await?;
    relay.publish_pending().await?;

    let drained = eventually(Duration::from_secs(15), || async {
        let _ = consumer.poll_once().await;
        matches!(store.effects().await, Ok((count, _)) if count >= 35)
    })
    .await;
    assert!(drained, "the rest arrive after the group is recreated");
    consumer.poll_once().await?;
    assert_eq!(
        store.effects().await?,
        (35, 35),
        "nothing lost, nothing applied twice"
    );
    Ok(())
}

#[tokio::test]
async fn an_entry_that_is_not_an_event_is_dead_lettered_at_once() -> anyhow::Result<()> {
    let (_database, bus) = RedisBus::start(&redis_url()).await?;
    let mut redis = bus.redis.connection();
    let _: String = redis::cmd("XADD")
        .arg(bus.relay().stream())
        .arg("*")
        .arg("event_id")
        .arg("garbage")
        .arg("envelope")
        .arg(&b"\xff\xff not protobuf"[..])
        .query_async(&mut redis)
        .await?;
    let consumer = bus
        .redis_consumer(
            RecordEffect::new(EffectStore::Postgres(bus.scoring.clone())),
            |_| {},
        )
        .await?;
    consumer.poll_once().await?;
    let dead = leadflow_bus::dead_letters(&bus.redis, GROUP, 10).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].event_id.as_str(), dead[0].error.as_str()),
        ("garbage", "undecodable envelope")
    );
    assert_eq!(dead[0].stream, bus.relay().stream());
    assert_eq!(consumer.lag().await?[0].pending, 0, "and acknowledged");
    Ok(())
}

#[tokio::test]
async fn consumer_lag_is_exported_as_metrics() -> anyhow::Result<()> {
    use crate::contracts::bus::BusUnderTest as _;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

    let (_database, bus) = RedisBus::start(&redis_url()).await?;
    bus.produce(3, "lead", true).await?;
    bus.publish().await?;
    bus.redis_consumer(
        RecordEffect::new(EffectStore::Postgres(bus.scoring.clone())),
        |_| {},
    )
    .await?;

    let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(exporter.clone())
        .build();
    let samples = leadflow_bus::LagSamples::default();
    leadflow_bus::register_lag_gauges(&provider.meter("events-test"), &samples);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let redis = bus.redis.clone();
    let sampler = leadflow_bus::spawn_lag_sampler(
        move || {
            let redis = redis.clone();
            async move { leadflow_bus::lag_report(&redis, &["capture"]).await }
        },
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
        attributes.contains(&format!("group={GROUP}")),
        "{attributes:?}"
    );
    Ok(())
}
