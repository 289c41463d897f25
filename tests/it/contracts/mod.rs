//! One contract suite per port, run against both of its adapters (PostgreSQL for
//! production, SQLite for the embedded mode), so that the two cannot drift apart.

pub(crate) mod bus;
mod capture_store;
mod content_library;
mod forms;
mod routing_store;
mod scoring_models;
mod tracks_and_templates;

use std::time::Duration;

use leadflow_storage::{EmbeddedDatabase, PostgresSettings, ServiceDatabase, postgres::Migrator};
use leadflow_tests::TestDatabase;

/// Keeps a PostgreSQL test database alive for as long as the adapter under test needs it.
pub(crate) enum Backing {
    Postgres(#[allow(dead_code, reason = "held for its Drop")] TestDatabase),
    Sqlite,
}

/// A fresh, migrated PostgreSQL schema for `schema`.
pub(crate) async fn postgres(
    schema: &'static str,
    migrator: &Migrator,
) -> anyhow::Result<(Backing, ServiceDatabase)> {
    let database = TestDatabase::create().await?;
    let settings = PostgresSettings {
        url: database.url().to_owned().into(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let service = ServiceDatabase::connect(&settings, schema).await?;
    service.migrate(migrator).await?;
    Ok((Backing::Postgres(database), service))
}

/// A fresh, migrated in-memory embedded store for `schema`.
pub(crate) async fn sqlite(
    schema: &'static str,
    migrator: &Migrator,
) -> anyhow::Result<(Backing, EmbeddedDatabase)> {
    let service = EmbeddedDatabase::in_memory(schema).await?;
    service.migrate(migrator).await?;
    Ok((Backing::Sqlite, service))
}

/// Runs one contract against every adapter of the port, as one test per adapter.
macro_rules! contract {
    ($contract:ident on $($adapter:ident),+) => {
        mod $contract {
            $(
                #[tokio::test]
                async fn $adapter() -> anyhow::Result<()> {
                    let (_backing, repository) = super::$adapter().await?;
                    super::$contract(repository).await
                }
            )+
        }
    };
}
use contract;
