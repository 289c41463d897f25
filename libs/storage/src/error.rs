//! Storage errors, translated once from sqlx and redis errors (by constraint kind, then by
//! SQLSTATE for PostgreSQL),
//! so that services map them to status codes without looking at driver details. Their
//! messages carry the driver's cause: they are for logs and operators, never for clients.

/// What went wrong in a storage adapter, in terms a service can act on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique constraint rejected the write (SQLSTATE 23505, SQLite 2067/1555).
    #[error("unique constraint {constraint} violated")]
    UniqueViolation { constraint: String },
    /// A foreign key rejected the write (SQLSTATE 23503, SQLite 787).
    #[error("foreign key {constraint} violated")]
    ForeignKeyViolation { constraint: String },
    /// A check or not-null constraint rejected the write (SQLSTATE 23514, 23502).
    #[error("constraint {constraint} violated")]
    ConstraintViolation { constraint: String },
    /// The transaction lost a race (serialization failure 40001 or deadlock 40P01) and may be retried.
    #[error("transaction conflict, retry: {0}")]
    Conflict(#[source] sqlx::Error),
    /// The record asked for does not exist.
    #[error("record not found")]
    NotFound,
    /// The database cannot be reached or is shutting down.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Redis cannot be reached or failed.
    #[error("redis unavailable: {0}")]
    RedisUnavailable(#[source] redis::RedisError),
    /// A stored value could not be decoded: the record is corrupt or from an unknown version.
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::DatabaseUnavailable(error)
            }
            sqlx::Error::Database(db) => {
                let constraint = db.constraint().unwrap_or_default().to_owned();
                // Constraint kinds are classified by sqlx for PostgreSQL (SQLSTATE 23xxx) and
                // SQLite (extended result codes) alike; the rest is PostgreSQL's SQLSTATE.
                match db.kind() {
                    sqlx::error::ErrorKind::UniqueViolation => {
                        return Self::UniqueViolation { constraint };
                    }
                    sqlx::error::ErrorKind::ForeignKeyViolation => {
                        return Self::ForeignKeyViolation { constraint };
                    }
                    sqlx::error::ErrorKind::NotNullViolation
                    | sqlx::error::ErrorKind::CheckViolation => {
                        return Self::ConstraintViolation { constraint };
                    }
                    _ => {}
                }
                match db.code().as_deref() {
                    Some("40001" | "40P01") => Self::Conflict(error),
                    // Class 08 (connection exception) and 57P0x (admin/crash shutdown).
                    Some(code) if code.starts_with("08") || code.starts_with("57P0") => {
                        Self::DatabaseUnavailable(error)
                    }
                    _ => Self::Database(error),
                }
            }
            _ => Self::Database(error),
        }
    }
}

impl From<redis::RedisError> for StorageError {
    fn from(error: redis::RedisError) -> Self {
        Self::RedisUnavailable(error)
    }
}
