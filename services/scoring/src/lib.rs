//! The scoring service: explainable fit and engagement scores, lead classes A/B1/B2/B3/C
//! and the lifecycle, served over gRPC (`leadflow.scoring.v1.ScoringService`), fed by
//! capture's and routing's events.

mod api;
mod engine;
mod error;
mod hot;
mod models;
mod records;
mod records_sql;
mod reports;
mod repository;
mod rules;
mod service;
mod sqlite_repository;

use std::sync::Arc;

use leadflow_platform::time::Clock;
use leadflow_proto::scoring::v1::scoring_service_server::ScoringServiceServer;
use leadflow_storage::{RedisStore, ServiceStore, postgres::Migrator};

pub use api::ScoringApi;
pub use error::ScoringError;
pub use hot::{HotScores, MemoryHotScores, RedisHotScores, ScoreSnapshot};
pub use models::{NewScoringModel, ScoringModelRecord};
pub use records::{ScoringStore, ScoringUnit};
pub use records_sql::{PostgresScoringStore, SqliteScoringStore};
pub use repository::{PostgresScoringModelRepository, ScoringModelRepository};
pub use rules::{DEFAULT_PRODUCT, seed_model};
pub use service::{CONSUMER_GROUP, SOURCES, Scoring};
pub use sqlite_repository::SqliteScoringModelRepository;

/// The PostgreSQL schema scoring owns.
pub const SCHEMA: &str = "scoring";

/// The gRPC service name, which is also scoring's named health entry.
pub const SERVICE_NAME: &str = "leadflow.scoring.v1.ScoringService";

/// Scoring's migrations, applied into [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Scoring's migrations for the embedded store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Scoring on its records store, with its hot state in Redis when given, else in memory,
/// reading the time from `clock`.
pub fn scoring(store: &ServiceStore, redis: Option<RedisStore>, clock: Arc<dyn Clock>) -> Scoring {
    let records: Arc<dyn ScoringStore> = match store {
        ServiceStore::Postgres(database) => {
            Arc::new(PostgresScoringStore::new(database.pool().clone()))
        }
        ServiceStore::Embedded(database) => {
            Arc::new(SqliteScoringStore::new(database.pool().clone()))
        }
    };
    let hot: Arc<dyn HotScores> = match redis {
        Some(redis) => Arc::new(RedisHotScores::new(redis)),
        None => Arc::new(MemoryHotScores::new()),
    };
    Scoring::new(records, hot, clock)
}

/// The gRPC service on the service's records store and `scoring`.
pub fn grpc_service(store: &ServiceStore, scoring: Scoring) -> ScoringServiceServer<ScoringApi> {
    let models: Arc<dyn ScoringModelRepository> = match store {
        ServiceStore::Postgres(database) => {
            Arc::new(PostgresScoringModelRepository::new(database.pool().clone()))
        }
        ServiceStore::Embedded(database) => {
            Arc::new(SqliteScoringModelRepository::new(database.pool().clone()))
        }
    };
    ScoringServiceServer::new(ScoringApi::new(models, scoring))
}
