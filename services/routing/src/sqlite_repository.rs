//! Reps on the embedded SQLite store: the same port, the same contract suite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_storage::{
    IdempotencyKey, Page, StorageError, Stored,
    idempotency::sqlite::{self as idempotency, Begun},
    sqlite::{list_from_json, list_to_json},
};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::{
    repository::{AbsenceRow, HoursRow, RepRepository, RepRow, SELECT_REP, build_reps},
    reps::{NewRep, Rep},
};

/// Reps in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteRepRepository {
    pool: SqlitePool,
}

impl SqliteRepRepository {
    /// A repository on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// A rep row as SQLite returns it: lists are JSON arrays.
#[derive(sqlx::FromRow)]
struct SqliteRepRow {
    rep_id: Uuid,
    email: String,
    display_name: String,
    time_zone: String,
    products: String,
    languages: String,
    capacity: i32,
    weight: i32,
    active: bool,
    create_time: DateTime<Utc>,
}

/// Reads the reps of `rows` with their hours and absences: the rows of one page form a
/// contiguous range of ids, so two range queries fetch everything they need.
async fn assemble(
    connection: &mut SqliteConnection,
    rows: Vec<SqliteRepRow>,
) -> Result<Vec<Rep>, StorageError> {
    let (Some(first), Some(last)) = (
        rows.first().map(|row| row.rep_id),
        rows.last().map(|row| row.rep_id),
    ) else {
        return Ok(Vec::new());
    };
    let hours = sqlx::query_as::<_, HoursRow>(
        "SELECT rep_id, day_of_week, start_minute, end_minute FROM rep_working_hours \
         WHERE rep_id BETWEEN $1 AND $2 ORDER BY rep_id, position",
    )
    .bind(first)
    .bind(last)
    .fetch_all(&mut *connection)
    .await?;
    let absences = sqlx::query_as::<_, AbsenceRow>(
        "SELECT rep_id, start_time, end_time FROM rep_out_of_office WHERE rep_id BETWEEN $1 AND $2 \
         ORDER BY rep_id, position",
    )
    .bind(first)
    .bind(last)
    .fetch_all(&mut *connection)
    .await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            let list = |what: &str, text: &str| {
                list_from_json(text, &format!("rep {}: {what}", row.rep_id))
            };
            Ok(RepRow {
                products: list("products", &row.products)?,
                languages: list("languages", &row.languages)?,
                rep_id: row.rep_id,
                email: row.email,
                display_name: row.display_name,
                time_zone: row.time_zone,
                capacity: row.capacity,
                weight: row.weight,
                active: row.active,
                create_time: row.create_time,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    build_reps(rows, &hours, &absences)
}

#[async_trait]
impl RepRepository for SqliteRepRepository {
    async fn create_rep(
        &self,
        rep: NewRep,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<Rep>, StorageError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(rep_id) => {
                let stored = self.get_rep(rep_id).await?.ok_or(StorageError::NotFound)?;
                return Ok(Stored::Done(stored));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        let rep_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO reps (rep_id, email, display_name, time_zone, products, languages, capacity, \
             weight, active, create_time, update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(rep_id)
        .bind(rep.email.as_str())
        .bind(&rep.display_name)
        .bind(rep.time_zone.name())
        .bind(list_to_json(&rep.products))
        .bind(list_to_json(&rep.languages))
        .bind(i64::from(rep.capacity))
        .bind(i64::from(rep.weight))
        .bind(rep.active)
        .bind(now)
        .execute(&mut *transaction)
        .await
        .map_err(|error| match StorageError::from(error) {
            // SQLite names no constraint; the email is the only unique column written here.
            StorageError::UniqueViolation { .. } => StorageError::UniqueViolation {
                constraint: "reps_email_key".to_owned(),
            },
            other => other,
        })?;
        for (position, span) in rep.working_hours.iter().enumerate() {
            sqlx::query(
                "INSERT INTO rep_working_hours (rep_id, position, day_of_week, start_minute, end_minute) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(rep_id)
            .bind(position as i64)
            .bind(span.day_of_week.as_str_name())
            .bind(i64::from(span.start_minute))
            .bind(i64::from(span.end_minute))
            .execute(&mut *transaction)
            .await?;
        }
        for (position, absence) in rep.out_of_office.iter().enumerate() {
            sqlx::query("INSERT INTO rep_out_of_office (rep_id, position, start_time, end_time) VALUES ($1, $2, $3, $4)")
                .bind(rep_id)
                .bind(position as i64)
                .bind(absence.start_time)
                .bind(absence.end_time)
                .execute(&mut *transaction)
                .await?;
        }
        idempotency::complete(&mut transaction, &key, rep_id).await?;
        transaction.commit().await?;
        let stored = self.get_rep(rep_id).await?.ok_or(StorageError::NotFound)?;
        Ok(Stored::Done(stored))
    }

    async fn get_rep(&self, rep_id: Uuid) -> Result<Option<Rep>, StorageError> {
        let mut connection = self.pool.acquire().await?;
        let rows = sqlx::query_as::<_, SqliteRepRow>(&format!("{SELECT_REP} WHERE r.rep_id = $1"))
            .bind(rep_id)
            .fetch_all(&mut *connection)
            .await?;
        Ok(assemble(&mut connection, rows).await?.pop())
    }

    async fn team_exists(&self, team_id: Uuid) -> Result<bool, StorageError> {
        let (exists,): (bool,) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM teams WHERE team_id = $1)")
                .bind(team_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(exists)
    }

    async fn list_reps(
        &self,
        team: Option<Uuid>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<Rep>, StorageError> {
        let mut connection = self.pool.acquire().await?;
        let rows = sqlx::query_as::<_, SqliteRepRow>(&format!(
            "{SELECT_REP} WHERE ($1 IS NULL OR EXISTS \
             (SELECT 1 FROM team_members m WHERE m.team_id = $1 AND m.rep_id = r.rep_id)) \
             AND ($2 IS NULL OR r.rep_id > $2) ORDER BY r.rep_id LIMIT $3"
        ))
        .bind(team)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *connection)
        .await?;
        let reps = assemble(&mut connection, rows).await?;
        Ok(Page::from_overfetch(reps, limit, |rep| rep.rep_id))
    }
}
