//! The platform as a client sees it: named health entries that follow PostgreSQL and
//! Redis, server reflection, error details, and the command line.

use std::{sync::Arc, time::Duration};

use clap::Parser;
use leadflow::{ServiceKind, cli::Cli};
use leadflow_tests::{OwnRedis, TestSuite, eventually, replace_database};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn status_of(suite: &TestSuite, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = suite
        .health()
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn every_service_reports_serving_under_its_own_name() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    for kind in ServiceKind::ALL {
        assert_eq!(
            status_of(&suite, kind.grpc_name()).await?,
            ServingStatus::Serving,
            "{kind:?}"
        );
    }
    assert_eq!(status_of(&suite, "").await?, ServingStatus::Serving);
    let unknown = status_of(&suite, "leadflow.nope.v1.NopeService").await;
    assert_eq!(
        unknown.expect_err("unknown service").code(),
        tonic::Code::NotFound
    );
    suite.stop().await
}

#[tokio::test]
async fn reflection_lists_the_four_services_and_health() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut client = ServerReflectionClient::new(suite.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses.message().await?.expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a list of services, got {response:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for kind in ServiceKind::ALL {
        assert!(
            names.iter().any(|name| name == kind.grpc_name()),
            "{names:?} lacks {kind:?}"
        );
    }
    assert!(
        names.iter().any(|name| name == "grpc.health.v1.Health"),
        "{names:?}"
    );
    suite.stop().await
}

#[tokio::test]
async fn one_service_alone_serves_only_itself() -> anyhow::Result<()> {
    let suite = TestSuite::start_services(&[ServiceKind::Routing]).await?;
    assert_eq!(
        status_of(&suite, ServiceKind::Routing.grpc_name()).await?,
        ServingStatus::Serving
    );
    let capture = status_of(&suite, ServiceKind::Capture.grpc_name()).await;
    assert_eq!(
        capture.expect_err("capture is not here").code(),
        tonic::Code::NotFound
    );
    suite.stop().await
}

#[tokio::test]
async fn losing_postgres_turns_services_not_serving_until_it_returns() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let capture = ServiceKind::Capture.grpc_name();
    assert_eq!(status_of(&suite, capture).await?, ServingStatus::Serving);

    suite.database().cut_off().await?;
    let lost = eventually(Duration::from_secs(10), || async {
        matches!(
            status_of(&suite, capture).await,
            Ok(ServingStatus::NotServing)
        )
    })
    .await;
    assert!(lost, "capture should go NOT_SERVING without its database");
    assert_eq!(
        status_of(&suite, "").await?,
        ServingStatus::Serving,
        "the empty name stays up"
    );

    suite.database().restore().await?;
    let back = eventually(Duration::from_secs(10), || async {
        matches!(status_of(&suite, capture).await, Ok(ServingStatus::Serving))
    })
    .await;
    assert!(back, "capture should serve again once its database is back");
    suite.stop().await
}

#[tokio::test]
async fn losing_redis_turns_services_not_serving() -> anyhow::Result<()> {
    let redis = OwnRedis::start().await?;
    let suite = TestSuite::start_with(&ServiceKind::ALL, redis.url()).await?;
    let scoring = ServiceKind::Scoring.grpc_name();
    assert_eq!(status_of(&suite, scoring).await?, ServingStatus::Serving);
    drop(redis);
    let lost = eventually(Duration::from_secs(10), || async {
        matches!(
            status_of(&suite, scoring).await,
            Ok(ServingStatus::NotServing)
        )
    })
    .await;
    assert!(lost, "scoring should go NOT_SERVING without redis");
    suite.stop().await
}

#[test]
fn the_command_line_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn bad_flags_are_refused_with_a_message_naming_them() {
    let error = Cli::try_parse_from(["leadflow", "serve", "--listen", "not-an-address"])
        .expect_err("bad address");
    assert!(error.to_string().contains("--listen"), "{error}");

    let error = Cli::try_parse_from(["leadflow", "serve", "--service", "billing"])
        .expect_err("bad service");
    let message = error.to_string();
    assert!(
        message.contains("billing") && message.contains("capture"),
        "{message}"
    );

    let error = Cli::try_parse_from(["leadflow", "serve", "--colour"]).expect_err("unknown flag");
    assert!(error.to_string().contains("--colour"), "{error}");

    let cli = Cli::try_parse_from([
        "leadflow",
        "serve",
        "--service",
        "scoring",
        "--listen",
        "127.0.0.1:0",
    ])
    .expect("valid flags");
    let leadflow::cli::Command::Serve(serve) = cli.command else {
        panic!("serve expected");
    };
    assert_eq!(serve.services(), [ServiceKind::Scoring]);
}

#[tokio::test]
async fn a_wrong_database_or_redis_url_is_a_clear_configuration_error() {
    let settings = leadflow_platform::Settings {
        database_url: Some("mysql://x".to_owned().into()),
        redis_url: Some("redis://127.0.0.1:6379".to_owned().into()),
        ..Default::default()
    };
    let error = leadflow::Application::build(&settings, &ServiceKind::ALL)
        .await
        .expect_err("wrong scheme");
    assert!(error.to_string().contains("postgres://"), "{error}");

    let settings = leadflow_platform::Settings {
        database_url: Some("postgres://postgres@127.0.0.1/x".to_owned().into()),
        redis_url: None,
        ..Default::default()
    };
    let error = leadflow::Application::build(&settings, &ServiceKind::ALL)
        .await
        .expect_err("no redis");
    assert!(error.to_string().contains("--redis-url"), "{error}");
}

#[test]
fn test_database_urls_keep_host_and_options() {
    assert_eq!(
        replace_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        replace_database("postgres://u:p@h/db?sslmode=disable", "t2"),
        "postgres://u:p@h/t2?sslmode=disable"
    );
}

/// Managed PostgreSQL services often refuse connections without TLS; a URL with
/// `sslmode=require` gets an encrypted connection (the local server has its snakeoil
/// certificate), and the services work over it.
#[tokio::test]
async fn a_database_url_that_requires_tls_gets_an_encrypted_connection() -> anyhow::Result<()> {
    let database = leadflow_tests::TestDatabase::create().await?;
    let settings = leadflow_storage::PostgresSettings {
        url: format!("{}?sslmode=require", database.url()).into(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
    };
    let service = leadflow_storage::ServiceDatabase::connect(&settings, "scoring").await?;
    service.migrate(&leadflow_scoring::MIGRATOR).await?;
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(service.pool())
            .await?;
    assert!(encrypted, "the connection is not encrypted");
    Ok(())
}

/// Claims `key` in `store` and completes it with `resource`, committed.
async fn claim_and_complete(
    store: &leadflow_storage::ServiceStore,
    key: &leadflow_storage::idempotency::IdempotencyKey,
    resource: uuid::Uuid,
) -> anyhow::Result<()> {
    use leadflow_storage::{ServiceStore, idempotency};
    match store {
        ServiceStore::Postgres(database) => {
            let idempotency::Begun::Fresh(mut transaction) =
                idempotency::begin(database.pool(), key).await?
            else {
                anyhow::bail!("the key was not fresh");
            };
            idempotency::complete(&mut transaction, key, resource).await?;
            transaction.commit().await?;
        }
        ServiceStore::Embedded(database) => {
            let idempotency::Begun::Fresh(mut transaction) =
                idempotency::sqlite::begin(database.pool(), key).await?
            else {
                anyhow::bail!("the key was not fresh");
            };
            idempotency::sqlite::complete(&mut transaction, key, resource).await?;
            transaction.commit().await?;
        }
    }
    Ok(())
}

/// What claiming `key` in `store` finds now: `fresh`, `replay` or `reused`; nothing is kept.
async fn claim_finds(
    store: &leadflow_storage::ServiceStore,
    key: &leadflow_storage::idempotency::IdempotencyKey,
) -> anyhow::Result<&'static str> {
    use leadflow_storage::{ServiceStore, idempotency, idempotency::Begun};
    let found = match store {
        ServiceStore::Postgres(database) => match idempotency::begin(database.pool(), key).await? {
            Begun::Fresh(_) => "fresh",
            Begun::Replay(_) => "replay",
            Begun::KeyReused => "reused",
        },
        ServiceStore::Embedded(database) => {
            match idempotency::sqlite::begin(database.pool(), key).await? {
                Begun::Fresh(_) => "fresh",
                Begun::Replay(_) => "replay",
                Begun::KeyReused => "reused",
            }
        }
    };
    Ok(found)
}

/// An idempotency key answers retries for its retention and is then forgotten, in both
/// stores: within it the same key with another request is refused, after it that is a new
/// call.
#[tokio::test]
async fn idempotency_keys_expire_after_their_retention() -> anyhow::Result<()> {
    use leadflow::key_expiry::KeyExpiry;
    use leadflow_platform::time::ManualClock;
    use leadflow_storage::{ServiceStore, idempotency::IdempotencyKey};

    let postgres = leadflow_tests::TestDatabase::create().await?;
    let settings = leadflow_storage::PostgresSettings {
        url: postgres.url().to_string().into(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    };
    let on_postgres = leadflow_storage::ServiceDatabase::connect(&settings, "scoring").await?;
    on_postgres.migrate(&leadflow_scoring::MIGRATOR).await?;
    let directory = std::env::temp_dir().join(format!("leadflow-keys-{}", uuid::Uuid::now_v7()));
    let embedded = leadflow_storage::EmbeddedDatabase::open(&directory, "scoring").await?;
    embedded.migrate(&leadflow_scoring::SQLITE_MIGRATOR).await?;
    let stores = [
        ServiceStore::Postgres(on_postgres),
        ServiceStore::Embedded(embedded),
    ];

    let first = IdempotencyKey {
        key: "retry-1".to_owned(),
        request: b"first request".to_vec(),
    };
    let other = IdempotencyKey {
        key: first.key.clone(),
        request: b"another request".to_vec(),
    };
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut expiry = KeyExpiry::new(Duration::from_secs(3_600), clock.clone());
    for store in &stores {
        claim_and_complete(store, &first, uuid::Uuid::now_v7()).await?;
        expiry.watch(store.clone());
    }

    assert_eq!(
        expiry.expire_once().await?,
        0,
        "both keys are within the hour"
    );
    for store in &stores {
        assert_eq!(
            claim_finds(store, &first).await?,
            "replay",
            "{}",
            store.name()
        );
        assert_eq!(
            claim_finds(store, &other).await?,
            "reused",
            "{}",
            store.name()
        );
    }

    clock.advance(chrono::Duration::minutes(61));
    assert_eq!(
        expiry.expire_once().await?,
        2,
        "one key per store has expired"
    );
    for store in &stores {
        assert_eq!(
            claim_finds(store, &other).await?,
            "fresh",
            "{}",
            store.name()
        );
    }
    let _ = std::fs::remove_dir_all(&directory);
    Ok(())
}

#[tokio::test]
async fn a_transaction_dropped_while_it_begins_leaves_its_connection_outside_any()
-> anyhow::Result<()> {
    use leadflow_storage::BeginSafely;

    let database = leadflow_tests::TestDatabase::create().await?;
    // One connection: every attempt and every check runs on the same session.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database.url())
        .await?;
    let mut dropped = 0;
    for attempt in 0..400_u64 {
        // Cut at every point of BEGIN's round trip: before it is sent, on the wire, after.
        let cut = Duration::from_micros(attempt % 80 * 5);
        if tokio::time::timeout(cut, pool.begin_safely())
            .await
            .is_err()
        {
            dropped += 1;
        }
        // A simple query outside a transaction starts its own, at the same time as itself;
        // in a transaction left open, the transaction began before it.
        let outside_any: bool = sqlx::Row::try_get(
            &sqlx::raw_sql("SELECT transaction_timestamp() = statement_timestamp()")
                .fetch_one(&pool)
                .await?,
            0,
        )?;
        assert!(
            outside_any,
            "attempt {attempt} (cut after {cut:?}) left the connection inside a transaction"
        );
    }
    assert!(dropped > 0, "some attempts were cut before BEGIN finished");
    Ok(())
}
