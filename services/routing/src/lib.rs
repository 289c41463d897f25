//! The routing service: sales-ready leads to the right rep, at once, never twice, never
//! over capacity, served over gRPC (`leadflow.routing.v1.RoutingService`), fed by
//! scoring's SalesReady events.

mod api;
mod engine;
mod error;
mod metrics;
pub mod records;
mod records_sql;
mod reps;
mod rule_sets;
mod service;
mod simulation;
mod teams;

use std::sync::Arc;

use leadflow_platform::time::Clock;
use leadflow_proto::routing::v1::routing_service_server::RoutingServiceServer;
use leadflow_storage::{ServiceStore, postgres::Migrator};

pub use api::RoutingApi;
pub use engine::PRODUCER;
pub use error::RoutingError;
pub use records::{RoutingStore, RoutingUnit};
pub use records_sql::{PostgresRoutingStore, SqliteRoutingStore};
pub use reps::{NewRep, Rep};
pub use service::{CONSUMER_GROUP, Routing, SOURCES, TickReport};

/// The PostgreSQL schema routing owns.
pub const SCHEMA: &str = "routing";

/// The gRPC service name, which is also routing's named health entry.
pub const SERVICE_NAME: &str = "leadflow.routing.v1.RoutingService";

/// Routing's migrations, applied into [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Routing's migrations for the embedded store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Routing on its records store, reading time from `clock`.
pub fn routing(store: &ServiceStore, clock: Arc<dyn Clock>) -> Routing {
    let records: Arc<dyn RoutingStore> = match store {
        ServiceStore::Postgres(database) => {
            Arc::new(PostgresRoutingStore::new(database.pool().clone()))
        }
        ServiceStore::Embedded(database) => {
            Arc::new(SqliteRoutingStore::new(database.pool().clone()))
        }
    };
    Routing::new(records, clock)
}

/// The gRPC service on `routing`.
pub fn grpc_service(routing: Routing) -> RoutingServiceServer<RoutingApi> {
    RoutingServiceServer::new(RoutingApi::new(routing))
}
