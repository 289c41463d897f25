//! The capture service: where every lead enters. Forms, consent, contacts, buying units
//! and the activity stream, served over gRPC (`leadflow.capture.v1.CaptureService`).

mod api;
mod consent;
pub mod erasure;
mod error;
mod forms;
pub mod ingress;
mod intake;
pub mod profiling;
pub mod rate_limit;
pub mod records;
mod records_sql;
mod repository;
mod sqlite_repository;
pub mod submission;

use std::sync::Arc;

use leadflow_platform::time::Clock;
use leadflow_proto::capture::v1::capture_service_server::CaptureServiceServer;
use leadflow_storage::{ServiceStore, postgres::Migrator};

// Re-exported so that `leadflow_capture::links` and `crate::links` keep resolving after the
// move to the platform library.
pub use leadflow_platform::links;

pub use api::{CaptureApi, CaptureLimits, ExportPeers};
pub use consent::{CONFIRM_PATH, CONFIRMATION_MAIL, ConsentLinks, UNSUBSCRIBE_PATH};
pub use erasure::{RETENTION_ERASER, RetentionPolicy, email_hash};
pub use error::CaptureError;
pub use forms::{Form, FormField, NewForm};
pub use ingress::{IngressConfig, IngressServer};
pub use records::CaptureStore;
pub use records_sql::{PostgresCaptureStore, SqliteCaptureStore};
pub use repository::{FormFilter, FormRepository, FormUpdate, PostgresFormRepository};
pub use sqlite_repository::SqliteFormRepository;

/// The PostgreSQL schema capture owns.
pub const SCHEMA: &str = "capture";

/// The gRPC service name, which is also capture's named health entry.
pub const SERVICE_NAME: &str = "leadflow.capture.v1.CaptureService";

/// Capture's migrations, applied into [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Capture's migrations for the embedded store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Capture's handlers on the service's records store, with the matching adapters; `links`
/// signs the links capture mails, `clock` tells the time.
pub fn capture_api(
    store: ServiceStore,
    links: ConsentLinks,
    limits: CaptureLimits,
    clock: Arc<dyn Clock>,
) -> CaptureApi {
    let (forms, records): (Arc<dyn FormRepository>, Arc<dyn CaptureStore>) = match store {
        ServiceStore::Postgres(database) => (
            Arc::new(PostgresFormRepository::new(database.pool().clone())),
            Arc::new(PostgresCaptureStore::new(database.pool().clone())),
        ),
        ServiceStore::Embedded(database) => (
            Arc::new(SqliteFormRepository::new(database.pool().clone())),
            Arc::new(SqliteCaptureStore::new(database.pool().clone())),
        ),
    };
    CaptureApi::new(forms, records, links, limits, clock)
}

/// The gRPC service over capture's handlers.
pub fn grpc_service(api: CaptureApi) -> CaptureServiceServer<CaptureApi> {
    CaptureServiceServer::new(api)
}
