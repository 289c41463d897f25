//! The routing service: sales-ready leads to the right rep, at once, never twice, never
//! over capacity, served over gRPC (`leadflow.routing.v1.RoutingService`).

mod api;
mod error;
mod repository;
mod reps;
mod sqlite_repository;

use std::sync::Arc;

use leadflow_proto::routing::v1::routing_service_server::RoutingServiceServer;
use leadflow_storage::{ServiceStore, postgres::Migrator};

pub use api::RoutingApi;
pub use error::RoutingError;
pub use repository::{PostgresRepRepository, RepRepository};
pub use reps::{NewRep, Rep};
pub use sqlite_repository::SqliteRepRepository;

/// The PostgreSQL schema routing owns.
pub const SCHEMA: &str = "routing";

/// The gRPC service name, which is also routing's named health entry.
pub const SERVICE_NAME: &str = "leadflow.routing.v1.RoutingService";

/// Routing's migrations, applied into [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Routing's migrations for the embedded store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The gRPC service on the service's records store, with the matching adapters.
pub fn grpc_service(store: ServiceStore) -> RoutingServiceServer<RoutingApi> {
    let reps: Arc<dyn RepRepository> = match store {
        ServiceStore::Postgres(database) => {
            Arc::new(PostgresRepRepository::new(database.pool().clone()))
        }
        ServiceStore::Embedded(database) => {
            Arc::new(SqliteRepRepository::new(database.pool().clone()))
        }
    };
    RoutingServiceServer::new(RoutingApi::new(reps))
}
