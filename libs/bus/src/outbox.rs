//! The transactional outbox: an event is written in the same transaction as the record it
//! tells about, so it is published if and only if that transaction commits. Every service
//! schema holds the table (see the services' `0002_events.sql`).

use leadflow_proto::events::v1::EventEnvelope;
use leadflow_storage::StorageError;
use prost::Message;
use sqlx::PgConnection;

/// Adds `envelope` to the outbox inside the caller's transaction.
pub async fn append(
    connection: &mut PgConnection,
    envelope: &EventEnvelope,
) -> Result<(), StorageError> {
    let event_id = uuid::Uuid::parse_str(&envelope.event_id).map_err(|_| {
        StorageError::Corrupt(format!("event id {:?} is not a UUID", envelope.event_id))
    })?;
    sqlx::query("INSERT INTO outbox (event_id, event_type, envelope) VALUES ($1, $2, $3)")
        .bind(event_id)
        .bind(&envelope.event_type)
        .bind(envelope.encode_to_vec())
        .execute(connection)
        .await?;
    Ok(())
}
