//! The nurturing service: the right content to the right buyer role at the right stage,
//! for months, served over gRPC (`leadflow.nurturing.v1.NurturingService`).

mod api;
mod content;
mod error;
mod repository;
mod sqlite_repository;

use std::sync::Arc;

use leadflow_proto::nurturing::v1::nurturing_service_server::NurturingServiceServer;
use leadflow_storage::{EmbeddedDatabase, ServiceDatabase, postgres::Migrator};

pub use api::NurturingApi;
pub use content::{ContentItem, NewContentItem};
pub use error::NurturingError;
pub use repository::{ContentFilter, ContentRepository, PostgresContentRepository};
pub use sqlite_repository::SqliteContentRepository;

/// The PostgreSQL schema nurturing owns.
pub const SCHEMA: &str = "nurturing";

/// The gRPC service name, which is also nurturing's named health entry.
pub const SERVICE_NAME: &str = "leadflow.nurturing.v1.NurturingService";

/// Nurturing's migrations, applied into [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Nurturing's migrations for the embedded store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The gRPC service on PostgreSQL.
pub fn grpc_service(database: ServiceDatabase) -> NurturingServiceServer<NurturingApi> {
    let content = Arc::new(PostgresContentRepository::new(database.pool().clone()));
    NurturingServiceServer::new(NurturingApi::new(content))
}

/// The gRPC service on the embedded store.
pub fn embedded_grpc_service(database: EmbeddedDatabase) -> NurturingServiceServer<NurturingApi> {
    let content = Arc::new(SqliteContentRepository::new(database.pool().clone()));
    NurturingServiceServer::new(NurturingApi::new(content))
}
