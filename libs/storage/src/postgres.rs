//! PostgreSQL pools bound to one service's schema. Each service owns one schema, runs its
//! own migrations into it, and never reads another's: the search path is the schema alone.

use std::{str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    Connection, Executor, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use sqlx::migrate::Migrator;

use crate::StorageError;

/// How to reach PostgreSQL and how large each service's pool may grow.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The connection URL; it may carry a password, so it never prints.
    pub url: SecretString,
    /// The most connections one service's pool opens.
    pub max_connections: u32,
    /// How long a caller waits for a free connection before the call fails as unavailable.
    pub acquire_timeout: Duration,
}

/// One service's database: a pool whose connections see only that service's schema.
#[derive(Debug, Clone)]
pub struct ServiceDatabase {
    schema: &'static str,
    pool: PgPool,
}

impl ServiceDatabase {
    /// Connects to PostgreSQL, creates the service's schema if it is missing and returns a
    /// pool whose search path is that schema. Fails if the server cannot be reached.
    pub async fn connect(
        settings: &PostgresSettings,
        schema: &'static str,
    ) -> Result<Self, StorageError> {
        assert!(
            schema.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "schema names are lowercase identifiers"
        );
        let options = PgConnectOptions::from_str(settings.url.expose_secret())
            .map_err(StorageError::DatabaseUnavailable)?
            .application_name(&format!("leadflow-{schema}"))
            .options([("search_path", schema)]);
        // One direct connection first: a pool would retry until its timeout and then report
        // only that it timed out, hiding the cause (refused, unknown host, bad password).
        PgConnection::connect_with(&options).await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await?;
        pool.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await?;
        Ok(Self { schema, pool })
    }

    /// Applies the service's pending migrations to its schema. Safe to run from several
    /// replicas at once: the migrator holds an advisory lock while it works.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), StorageError> {
        migrator
            .run(&self.pool)
            .await
            .map_err(|error| match error {
                sqlx::migrate::MigrateError::Execute(error) => StorageError::from(error),
                other => StorageError::Corrupt(format!("migration failed: {other}")),
            })?;
        tracing::debug!(schema = self.schema, "migrations applied");
        Ok(())
    }

    /// The schema this database is bound to.
    pub fn schema(&self) -> &'static str {
        self.schema
    }

    /// The pool, for repositories.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Answers whether PostgreSQL serves this pool right now.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
