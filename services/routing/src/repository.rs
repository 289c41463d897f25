//! Routing's persistence port for reps and teams, and its PostgreSQL adapter (the embedded
//! one is in `sqlite_repository`).

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_domain::EmailAddress;
use leadflow_proto::routing::v1 as pb;
use leadflow_storage::{Begun, IdempotencyKey, Page, StorageError, Stored, idempotency};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::reps::{Absence, NewRep, Rep, WorkingHours};

/// Where routing keeps its reps.
#[async_trait]
pub trait RepRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new rep; a retry with the same key returns the rep the first call stored. Fails
    /// with a unique violation on `reps_email_key` when the email is taken.
    async fn create_rep(
        &self,
        rep: NewRep,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<Rep>, StorageError>;

    /// The rep with this id, if any.
    async fn get_rep(&self, rep_id: Uuid) -> Result<Option<Rep>, StorageError>;

    /// Whether a team with this id exists.
    async fn team_exists(&self, team_id: Uuid) -> Result<bool, StorageError>;

    /// Reps (of `team`, when given), oldest first, `limit` at a time after the cursor `after`.
    async fn list_reps(
        &self,
        team: Option<Uuid>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<Rep>, StorageError>;
}

/// Reps in routing's PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresRepRepository {
    pool: PgPool,
}

impl PostgresRepRepository {
    /// A repository on `pool`, whose search path is routing's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RepRow {
    pub(crate) rep_id: Uuid,
    pub(crate) email: String,
    pub(crate) display_name: String,
    pub(crate) time_zone: String,
    pub(crate) products: Vec<String>,
    pub(crate) languages: Vec<String>,
    pub(crate) capacity: i32,
    pub(crate) weight: i32,
    pub(crate) active: bool,
    pub(crate) create_time: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct HoursRow {
    pub(crate) rep_id: Uuid,
    pub(crate) day_of_week: String,
    pub(crate) start_minute: i32,
    pub(crate) end_minute: i32,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AbsenceRow {
    pub(crate) rep_id: Uuid,
    pub(crate) start_time: DateTime<Utc>,
    pub(crate) end_time: Option<DateTime<Utc>>,
}

pub(crate) const SELECT_REP: &str = "SELECT r.rep_id, r.email, r.display_name, r.time_zone, r.products, r.languages, \
     r.capacity, r.weight, r.active, r.create_time FROM reps r";

/// Loads the working hours and absences of `rows` and assembles the reps, in row order.
async fn assemble(
    connection: &mut PgConnection,
    rows: Vec<RepRow>,
) -> Result<Vec<Rep>, StorageError> {
    let ids: Vec<Uuid> = rows.iter().map(|row| row.rep_id).collect();
    let hours = sqlx::query_as::<_, HoursRow>(
        "SELECT rep_id, day_of_week, start_minute, end_minute FROM rep_working_hours \
         WHERE rep_id = ANY($1) ORDER BY rep_id, position",
    )
    .bind(&ids)
    .fetch_all(&mut *connection)
    .await?;
    let absences = sqlx::query_as::<_, AbsenceRow>(
        "SELECT rep_id, start_time, end_time FROM rep_out_of_office WHERE rep_id = ANY($1) ORDER BY rep_id, position",
    )
    .bind(&ids)
    .fetch_all(&mut *connection)
    .await?;
    build_reps(rows, &hours, &absences)
}

/// Assembles reps from their rows, in row order, with the working hours and absences
/// found for them (rows for other reps are ignored).
pub(crate) fn build_reps(
    rows: Vec<RepRow>,
    hours: &[HoursRow],
    absences: &[AbsenceRow],
) -> Result<Vec<Rep>, StorageError> {
    rows.into_iter()
        .map(|row| {
            let corrupt = |what: &str| StorageError::Corrupt(format!("rep {}: {what}", row.rep_id));
            let working_hours = hours
                .iter()
                .filter(|span| span.rep_id == row.rep_id)
                .map(|span| {
                    Ok(WorkingHours {
                        day_of_week: pb::DayOfWeek::from_str_name(&span.day_of_week)
                            .ok_or_else(|| corrupt("day of week"))?,
                        start_minute: u32::try_from(span.start_minute)
                            .map_err(|_| corrupt("start minute"))?,
                        end_minute: u32::try_from(span.end_minute)
                            .map_err(|_| corrupt("end minute"))?,
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()?;
            let out_of_office = absences
                .iter()
                .filter(|absence| absence.rep_id == row.rep_id)
                .map(|absence| Absence {
                    start_time: absence.start_time,
                    end_time: absence.end_time,
                })
                .collect();
            Ok(Rep {
                rep_id: row.rep_id,
                rep: NewRep {
                    email: EmailAddress::parse(&row.email).map_err(|_| corrupt("email"))?,
                    display_name: row.display_name,
                    time_zone: chrono_tz::Tz::from_str(&row.time_zone)
                        .map_err(|_| corrupt("time zone"))?,
                    working_hours,
                    out_of_office,
                    products: row.products,
                    languages: row.languages,
                    capacity: u32::try_from(row.capacity).map_err(|_| corrupt("capacity"))?,
                    weight: u32::try_from(row.weight).map_err(|_| corrupt("weight"))?,
                    active: row.active,
                },
                create_time: row.create_time,
            })
        })
        .collect()
}

#[async_trait]
impl RepRepository for PostgresRepRepository {
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
        .bind(&rep.products)
        .bind(&rep.languages)
        .bind(i32::try_from(rep.capacity).unwrap_or(i32::MAX))
        .bind(i32::try_from(rep.weight).unwrap_or(i32::MAX))
        .bind(rep.active)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        for (position, span) in rep.working_hours.iter().enumerate() {
            sqlx::query(
                "INSERT INTO rep_working_hours (rep_id, position, day_of_week, start_minute, end_minute) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(rep_id)
            .bind(position as i32)
            .bind(span.day_of_week.as_str_name())
            .bind(span.start_minute as i32)
            .bind(span.end_minute as i32)
            .execute(&mut *transaction)
            .await?;
        }
        for (position, absence) in rep.out_of_office.iter().enumerate() {
            sqlx::query(
                "INSERT INTO rep_out_of_office (rep_id, position, start_time, end_time) VALUES ($1, $2, $3, $4)",
            )
            .bind(rep_id)
            .bind(position as i32)
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
        let rows = sqlx::query_as::<_, RepRow>(&format!("{SELECT_REP} WHERE r.rep_id = $1"))
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
        let rows = sqlx::query_as::<_, RepRow>(&format!(
            "{SELECT_REP} WHERE ($1::uuid IS NULL OR EXISTS \
             (SELECT 1 FROM team_members m WHERE m.team_id = $1 AND m.rep_id = r.rep_id)) \
             AND ($2::uuid IS NULL OR r.rep_id > $2) ORDER BY r.rep_id LIMIT $3"
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
