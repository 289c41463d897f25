//! The transactional outbox: an event is written in the same transaction as the record it
//! tells about, so it is published if and only if that transaction commits. Every service
//! schema holds the table (see the services' `*_events.sql` migrations).

use leadflow_proto::events::v1::EventEnvelope;
use leadflow_storage::StorageError;
use prost::Message;
use sqlx::{PgConnection, SqliteConnection};

fn event_id(envelope: &EventEnvelope) -> Result<uuid::Uuid, StorageError> {
    uuid::Uuid::parse_str(&envelope.event_id).map_err(|_| {
        StorageError::Corrupt(format!("event id {:?} is not a UUID", envelope.event_id))
    })
}

/// Adds `envelope` to the outbox inside the caller's PostgreSQL transaction.
pub async fn append(
    connection: &mut PgConnection,
    envelope: &EventEnvelope,
) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO outbox (event_id, event_type, envelope) VALUES ($1, $2, $3)")
        .bind(event_id(envelope)?)
        .bind(&envelope.event_type)
        .bind(envelope.encode_to_vec())
        .execute(connection)
        .await?;
    Ok(())
}

/// The embedded store's side.
pub mod sqlite {
    use super::*;

    /// Adds `envelope` to the outbox inside the caller's SQLite transaction.
    pub async fn append(
        connection: &mut SqliteConnection,
        envelope: &EventEnvelope,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, envelope, create_time) VALUES (?, ?, ?, ?)",
        )
        .bind(event_id(envelope)?)
        .bind(&envelope.event_type)
        .bind(envelope.encode_to_vec())
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(connection)
        .await?;
        Ok(())
    }
}
