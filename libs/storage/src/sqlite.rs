//! The embedded records store: one SQLite file per service under the data directory, so
//! that a fresh machine runs the suite with nothing installed. One connection per file:
//! the embedded mode is a single process, and SQLite takes one writer at a time anyway.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::StorageError;

/// One service's embedded database.
#[derive(Debug, Clone)]
pub struct EmbeddedDatabase {
    schema: &'static str,
    pool: SqlitePool,
}

impl EmbeddedDatabase {
    /// Opens (creating it if missing) `<data_dir>/<schema>.sqlite3`. Writes are durable
    /// before they are acknowledged: the write-ahead log is synced on every commit.
    pub async fn open(data_dir: &Path, schema: &'static str) -> Result<Self, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StorageError::Corrupt(format!("cannot create {}: {error}", data_dir.display()))
        })?;
        let path = data_dir.join(format!("{schema}.sqlite3"));
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(StorageError::DatabaseUnavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(Self { schema, pool })
    }

    /// An in-memory database that lives as long as its pool, for tests.
    pub async fn in_memory(schema: &'static str) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(StorageError::DatabaseUnavailable)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // The one connection must never be closed: it holds the whole database.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(Self { schema, pool })
    }

    /// Applies the service's pending SQLite migrations.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), StorageError> {
        migrator.run(&self.pool).await.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(error) => StorageError::from(error),
            other => StorageError::Corrupt(format!("migration failed: {other}")),
        })
    }

    /// Answers whether the store serves right now.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The service this database belongs to.
    pub fn schema(&self) -> &'static str {
        self.schema
    }

    /// The pool, for repositories.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A list of strings as the JSON array the embedded store keeps lists in.
pub fn list_to_json(list: &[String]) -> String {
    serde_json::to_string(list).expect("a list of strings always serialises")
}

/// A list read back from its JSON array; `record` names the record and field for the error.
pub fn list_from_json(text: &str, record: &str) -> Result<Vec<String>, StorageError> {
    serde_json::from_str(text).map_err(|error| StorageError::Corrupt(format!("{record}: {error}")))
}
