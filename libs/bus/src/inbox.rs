//! The consuming side of exactly-once: a handler records each event's id in the same
//! transaction as its effect, and learns whether the group applied it before (a
//! redelivery), in which case it changes nothing. Every service schema holds the
//! `processed_events` table (see the services' `*_events.sql` migrations).

use leadflow_storage::StorageError;
use sqlx::{PgConnection, SqliteConnection};

use crate::{Applied, Delivery};

/// Whether a delivery is the first of its event to its group.
#[derive(Debug)]
pub enum Recorded {
    /// The first: apply the effect in this transaction, commit, and return the proof.
    First(Applied),
    /// Applied before: change nothing, return the proof.
    Again(Applied),
}

impl Recorded {
    /// Whether the effect is still to be applied.
    pub fn is_first(&self) -> bool {
        matches!(self, Self::First(_))
    }

    /// The proof to return once the transaction committed.
    pub fn into_applied(self) -> Applied {
        match self {
            Self::First(applied) | Self::Again(applied) => applied,
        }
    }
}

fn recorded(first: bool) -> Recorded {
    if first {
        Recorded::First(Applied::recorded())
    } else {
        Recorded::Again(Applied::recorded())
    }
}

/// Records `delivery` as applied inside the caller's PostgreSQL transaction.
pub async fn record(
    connection: &mut PgConnection,
    delivery: &Delivery,
) -> Result<Recorded, StorageError> {
    let first = sqlx::query(
        "INSERT INTO processed_events (consumer_group, event_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(delivery.group())
    .bind(delivery.event_id())
    .execute(connection)
    .await?
    .rows_affected()
        == 1;
    Ok(recorded(first))
}

/// The embedded store's side.
pub mod sqlite {
    use super::*;

    /// Records `delivery` as applied inside the caller's SQLite transaction.
    pub async fn record(
        connection: &mut SqliteConnection,
        delivery: &Delivery,
    ) -> Result<Recorded, StorageError> {
        let first = sqlx::query(
            "INSERT INTO processed_events (consumer_group, event_id) VALUES (?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(delivery.group())
        .bind(delivery.event_id())
        .execute(connection)
        .await?
        .rows_affected()
            == 1;
        Ok(recorded(first))
    }
}
