//! Transactions that a dropped caller cannot leave open. sqlx 0.8 arms the rollback of a
//! PostgreSQL transaction only once the server has answered its BEGIN: a call dropped while
//! BEGIN is on the wire (a client that went away, a timeout) hands the connection back to
//! the pool inside a transaction nobody ends, and the next borrower's statements run in it
//! (sqlx issue 4393). Beginning in a task of its own lets BEGIN finish whatever happens to
//! the caller; an answer nobody awaits any more is a dropped transaction, rolled back.

use std::future::Future;

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// A pool that begins transactions safely against cancellation.
pub trait BeginSafely {
    /// The pool's database.
    type Database: sqlx::Database;

    /// A new transaction on a connection of the pool.
    fn begin_safely(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Database>, sqlx::Error>> + Send;
}

impl BeginSafely for PgPool {
    type Database = Postgres;

    async fn begin_safely(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let pool = self.clone();
        tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(|error| {
                sqlx::Error::Protocol(format!("the task beginning a transaction failed: {error}"))
            })?
    }
}

impl BeginSafely for SqlitePool {
    type Database = Sqlite;

    // sqlx's SQLite driver rolls a BEGIN cancelled midway back itself.
    async fn begin_safely(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin().await
    }
}
