//! Where one service keeps its records: its PostgreSQL schema in production, its SQLite
//! file in the embedded mode. Services pick the matching adapter of each port from it.

use crate::{EmbeddedDatabase, ServiceDatabase, StorageError};

/// One service's records store.
#[derive(Debug, Clone)]
pub enum ServiceStore {
    /// The service's schema on PostgreSQL.
    Postgres(ServiceDatabase),
    /// The service's file of the embedded store.
    Embedded(EmbeddedDatabase),
}

impl ServiceStore {
    /// A short name for logs, e.g. `postgres/capture` or `sqlite/capture`.
    pub fn name(&self) -> String {
        match self {
            Self::Postgres(database) => format!("postgres/{}", database.schema()),
            Self::Embedded(database) => format!("sqlite/{}", database.schema()),
        }
    }

    /// Forgets the idempotency keys claimed before `before`; answers how many.
    pub async fn expire_idempotency_keys(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StorageError> {
        match self {
            Self::Postgres(database) => crate::idempotency::expire(database.pool(), before).await,
            Self::Embedded(database) => {
                crate::idempotency::sqlite::expire(database.pool(), before).await
            }
        }
    }

    /// Answers whether the store serves right now.
    pub async fn ping(&self) -> Result<(), StorageError> {
        match self {
            Self::Postgres(database) => database.ping().await,
            Self::Embedded(database) => database.ping().await,
        }
    }
}
