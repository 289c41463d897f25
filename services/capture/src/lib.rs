//! The capture service: where every lead enters. Forms, consent, contacts, buying units
//! and the activity stream, served over gRPC (`leadflow.capture.v1.CaptureService`).

mod api;
mod error;
mod forms;
mod repository;
mod sqlite_repository;
pub mod submission;

use std::sync::Arc;

use leadflow_proto::capture::v1::capture_service_server::CaptureServiceServer;
use leadflow_storage::{ServiceStore, postgres::Migrator};

pub use api::CaptureApi;
pub use error::CaptureError;
pub use forms::{Form, FormField, NewForm};
pub use repository::{FormFilter, FormRepository, PostgresFormRepository};
pub use sqlite_repository::SqliteFormRepository;

/// The PostgreSQL schema capture owns.
pub const SCHEMA: &str = "capture";

/// The gRPC service name, which is also capture's named health entry.
pub const SERVICE_NAME: &str = "leadflow.capture.v1.CaptureService";

/// Capture's migrations, applied into [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Capture's migrations for the embedded store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The gRPC service on the service's records store, with the matching adapters.
pub fn grpc_service(store: ServiceStore) -> CaptureServiceServer<CaptureApi> {
    let forms: Arc<dyn FormRepository> = match store {
        ServiceStore::Postgres(database) => {
            Arc::new(PostgresFormRepository::new(database.pool().clone()))
        }
        ServiceStore::Embedded(database) => {
            Arc::new(SqliteFormRepository::new(database.pool().clone()))
        }
    };
    CaptureServiceServer::new(CaptureApi::new(forms))
}
