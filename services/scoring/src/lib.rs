//! The scoring service: explainable fit and engagement scores, lead classes A/B1/B2/B3/C
//! and the lifecycle, served over gRPC (`leadflow.scoring.v1.ScoringService`).

mod api;
mod error;
mod models;
mod repository;
mod sqlite_repository;

use std::sync::Arc;

use leadflow_proto::scoring::v1::scoring_service_server::ScoringServiceServer;
use leadflow_storage::{ServiceStore, postgres::Migrator};

pub use api::ScoringApi;
pub use error::ScoringError;
pub use models::{NewScoringModel, ScoringModelRecord};
pub use repository::{PostgresScoringModelRepository, ScoringModelRepository};
pub use sqlite_repository::SqliteScoringModelRepository;

/// The PostgreSQL schema scoring owns.
pub const SCHEMA: &str = "scoring";

/// The gRPC service name, which is also scoring's named health entry.
pub const SERVICE_NAME: &str = "leadflow.scoring.v1.ScoringService";

/// Scoring's migrations, applied into [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Scoring's migrations for the embedded store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The gRPC service on the service's records store, with the matching adapters.
pub fn grpc_service(store: ServiceStore) -> ScoringServiceServer<ScoringApi> {
    let models: Arc<dyn ScoringModelRepository> = match store {
        ServiceStore::Postgres(database) => {
            Arc::new(PostgresScoringModelRepository::new(database.pool().clone()))
        }
        ServiceStore::Embedded(database) => {
            Arc::new(SqliteScoringModelRepository::new(database.pool().clone()))
        }
    };
    ScoringServiceServer::new(ScoringApi::new(models))
}
