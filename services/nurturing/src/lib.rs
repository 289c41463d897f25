//! The nurturing service: the right content to the right buyer role at the right stage,
//! for months, served over gRPC (`leadflow.nurturing.v1.NurturingService`).

mod api;
mod content;
mod engine;
mod enrollment_api;
mod erasure;
mod error;
pub mod mail;
pub mod records;
mod records_sql;
mod repository;
mod service;
mod sqlite_repository;
mod sqlite_track_repository;
mod templates;
mod track_repository;
mod tracks;

use std::sync::Arc;

use leadflow_platform::time::Clock;
use leadflow_proto::nurturing::v1::nurturing_service_server::NurturingServiceServer;
use leadflow_storage::{ServiceStore, postgres::Migrator};

pub use api::NurturingApi;
pub use content::{ContentItem, NewContentItem};
pub use engine::{
    CLAIM_LEASE, Mailer, NURTURE_PURPOSE, Nurturing, PRODUCER, SCHEDULER_BATCH, SchedulerReport,
};
pub use error::NurturingError;
pub use records::{NurtureStore, NurtureUnit};
pub use records_sql::{PostgresNurtureStore, SqliteNurtureStore};
pub use repository::{ContentFilter, ContentRepository, PostgresContentRepository};
pub use service::{CONSUMER_GROUP, SOURCES};
pub use sqlite_repository::SqliteContentRepository;
pub use sqlite_track_repository::SqliteTrackRepository;
pub use templates::{NewMailTemplate, StoredMailTemplate};
pub use track_repository::{PostgresTrackRepository, PublishedVersion, TrackRepository};
pub use tracks::{KindTemplates, NewTrack, Track, TrackPolicy, TrackVersion};

/// The PostgreSQL schema nurturing owns.
pub const SCHEMA: &str = "nurturing";

/// The gRPC service name, which is also nurturing's named health entry.
pub const SERVICE_NAME: &str = "leadflow.nurturing.v1.NurturingService";

/// Nurturing's migrations, applied into [`SCHEMA`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Nurturing's migrations for the embedded store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Nurturing on its records store, reading time from `clock` and sending through `mailer`.
pub fn nurturing(store: &ServiceStore, clock: Arc<dyn Clock>, mailer: Mailer) -> Nurturing {
    let (records, content, tracks): (
        Arc<dyn NurtureStore>,
        Arc<dyn ContentRepository>,
        Arc<dyn TrackRepository>,
    ) = match store {
        ServiceStore::Postgres(database) => (
            Arc::new(PostgresNurtureStore::new(database.pool().clone())),
            Arc::new(PostgresContentRepository::new(database.pool().clone())),
            Arc::new(PostgresTrackRepository::new(database.pool().clone())),
        ),
        ServiceStore::Embedded(database) => (
            Arc::new(SqliteNurtureStore::new(database.pool().clone())),
            Arc::new(SqliteContentRepository::new(database.pool().clone())),
            Arc::new(SqliteTrackRepository::new(database.pool().clone())),
        ),
    };
    Nurturing::new(records, content, tracks, clock, mailer)
}

/// The gRPC service on `nurturing`.
pub fn grpc_service(nurturing: Nurturing) -> NurturingServiceServer<NurturingApi> {
    NurturingServiceServer::new(NurturingApi::new(nurturing))
}
