//! Figure 5, nurture dispatch: a track installed through nurturing's API, enrollments of
//! mailable contacts seeded with SQL straight into nurturing's tables (a million in the full
//! profile; the API would take hours), a tenth of them falling due at one instant, and the
//! time from that instant until each one's mail is in the embedded mail sink and its send
//! recorded as sent, beside a bare batched dequeue loop over as many rows.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use leadflow_proto::{common::v1::BuyingStage, nurturing::v1 as nurturing};
use sqlx::{Connection, Executor, PgConnection, SqliteConnection, sqlite::SqliteConnectOptions};
use uuid::Uuid;

use crate::console::{CallResult, Clients};

use super::{
    BenchError, Figure, Profile, baseline,
    figures::{PRODUCT, percentiles},
    suite::Suite,
};

/// The buyer role of the seeded contacts, and the role the bench's content is written for.
const BUYER_ROLE: &str = "it-manager";

/// How long the dispatch may send nothing before the figure is taken from what was sent;
/// the rest is reported as not sent.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the sent mails are counted; the figure itself is read from the sends' own
/// times, so this only decides how soon the bench notices the end.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Rows per seeding transaction on SQLite: the suite writes to the same file meanwhile and
/// waits at most a few seconds for the write lock.
const SQLITE_SEED_CHUNK: usize = 20_000;

/// When the due enrollments fall due, and when their rows were committed.
struct Seeded {
    due_time: DateTime<Utc>,
    committed: DateTime<Utc>,
    seconds: f64,
}

/// Figure 5: due enrollments -> mail delivered to the embedded sink and the send marked
/// sent, per second beside a batched SKIP LOCKED dequeue of as many rows, and the lag from
/// due to sent.
pub async fn nurture_dispatch(suite: &Suite, profile: &Profile) -> Result<Vec<Figure>, BenchError> {
    let rows = profile.dispatch_enrollments;
    let due = profile.dispatch_due.min(rows);
    let batch = leadflow_nurturing::SCHEDULER_BATCH;
    let clients = suite.clients()?;
    let (track_id, version) = install_track(&clients).await?;
    let mut records = Records::open(suite).await?;
    super::progress(&format!("seeding {rows} enrollments, {due} of them due"));
    let seeded = records.seed(track_id, version, rows, due).await?;
    super::progress("dispatching the due enrollments");
    let wall = wait_until_sent(&mut records, &seeded, due).await?;
    let lags = records.lags(track_id).await?;
    records.close().await?;
    let sent = lags.len();
    let last = lags.iter().max().copied().unwrap_or_default();
    let rate = sent as f64 / last.as_secs_f64().max(1e-9);
    let mail_files = count_mails(&mail_directory(suite))?;
    if mail_files < sent {
        return Err(BenchError::Suite(format!(
            "{sent} sends are marked sent but the mail sink holds {mail_files} mails: \
             is an SMTP relay configured?"
        )));
    }
    let (p50, p99) = percentiles(lags);
    let (baseline_rate, baseline_what) = match &suite.database_url {
        Some(url) => (
            baseline::postgres_due_dequeue_rate(url, rows, due, batch).await?,
            format!(
                "one connection: SELECT … FOR UPDATE SKIP LOCKED LIMIT {batch} + UPDATE + \
                 COMMIT over {rows} rows, {due} due"
            ),
        ),
        None => (
            baseline::sqlite_due_dequeue_rate(&suite.directory, rows, due, batch).await?,
            format!("SQLite SELECT … LIMIT {batch} + UPDATE + COMMIT over {rows} rows, {due} due"),
        ),
    };
    let overran = (seeded.committed - seeded.due_time)
        .to_std()
        .unwrap_or_default();
    let rate_figure = Figure::new(
        "nurture_dispatch",
        &format!(
            "due enrollments -> mail in the .eml sink and its send marked sent, per second \
             (sends / (last send_time - due time)); {due} of {rows} enrollments due at once"
        ),
        rate,
        "/s",
    )
    .beside(&baseline_what, baseline_rate)
    .target_ratio(0.5)
    .detail("enrollments", rows as f64)
    .detail("due", due as f64)
    .detail("sent", sent as f64)
    .detail("due_not_sent", due.saturating_sub(sent) as f64)
    .detail("mail_files", mail_files as f64)
    .detail("batch", f64::from(batch))
    .detail("seed_seconds", seeded.seconds)
    .detail("wall_seconds_from_due", wall.as_secs_f64())
    .detail(
        "seed_committed_after_due_ms",
        overran.as_secs_f64() * 1_000.0,
    );
    let lag_figure = Figure::new(
        "nurture_dispatch_lag",
        "due -> send marked sent (send_time - due_time of each send), p99",
        p99,
        "ms",
    )
    .target_at_most(1_000.0)
    .detail("p50_ms", p50)
    .detail("sent", sent as f64);
    Ok(vec![rate_figure, lag_figure])
}

/// Installs through nurturing's API what the seeded enrollments run on: one content item
/// for the seeded contacts' cell, a template and a track. Returns the track and its version.
async fn install_track(clients: &Clients) -> Result<(Uuid, u32), BenchError> {
    let mut client = clients.nurturing();
    client
        .create_content_item(nurturing::CreateContentItemRequest {
            item: Some(nurturing::ContentItem {
                title: "Ten questions before you buy".to_owned(),
                kind: nurturing::ContentKind::Whitepaper.into(),
                url: "https://bench.example/whitepaper".to_owned(),
                summary: "What to ask a vendor.".to_owned(),
                buyer_roles: vec![BUYER_ROLE.to_owned()],
                stage: BuyingStage::ProblemAwareness.into(),
                product: PRODUCT.to_owned(),
                language: "en".to_owned(),
                ..Default::default()
            }),
            idempotency_key: "bench:dispatch:content".to_owned(),
        })
        .await
        .or_fail("CreateContentItem")?;
    let template = client
        .create_template(nurturing::CreateTemplateRequest {
            template: Some(nurturing::MailTemplate {
                name: "Bench offer (en)".to_owned(),
                language: "en".to_owned(),
                subject: "{{ item.title }}".to_owned(),
                html_body: "<p>Hello {{ contact.first_name }},</p>\
                            <p><a href=\"{{ item.url }}\">{{ item.title }}</a></p>"
                    .to_owned(),
                text_body: "Hello {{ contact.first_name }},\n\n{{ item.title }}: {{ item.url }}\n"
                    .to_owned(),
                ..Default::default()
            }),
            idempotency_key: "bench:dispatch:template".to_owned(),
        })
        .await
        .or_fail("CreateTemplate")?
        .template
        .unwrap_or_default();
    let created = client
        .create_track(nurturing::CreateTrackRequest {
            track: Some(nurturing::Track {
                name: "Bench dispatch".to_owned(),
                product: PRODUCT.to_owned(),
                ..Default::default()
            }),
            first_version: Some(nurturing::TrackVersion {
                offer_template_id: template.template_id,
                time_zone_mode: nurturing::TimeZoneMode::Track.into(),
                default_time_zone: "UTC".to_owned(),
                ..Default::default()
            }),
            idempotency_key: "bench:dispatch:track".to_owned(),
        })
        .await
        .or_fail("CreateTrack")?;
    let track = created.track.unwrap_or_default();
    let track_id = Uuid::parse_str(&track.track_id).map_err(|error| {
        BenchError::Suite(format!(
            "CreateTrack answered the track id {track:?}: {error}"
        ))
    })?;
    Ok((
        track_id,
        created.version.map_or(1, |version| version.version),
    ))
}

/// Nurturing's records as the bench reaches them: its schema in the scratch PostgreSQL
/// database, or its SQLite file.
enum Records {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl Records {
    async fn open(suite: &Suite) -> Result<Self, BenchError> {
        Ok(match &suite.database_url {
            Some(url) => {
                let mut connection = PgConnection::connect(url).await?;
                connection
                    .execute(format!("SET search_path TO {}", leadflow_nurturing::SCHEMA).as_str())
                    .await?;
                Self::Postgres(connection)
            }
            None => {
                let file = suite
                    .directory
                    .join("data")
                    .join(format!("{}.sqlite3", leadflow_nurturing::SCHEMA));
                let options = SqliteConnectOptions::new()
                    .filename(file)
                    .busy_timeout(Duration::from_secs(30));
                Self::Sqlite(SqliteConnection::connect_with(&options).await?)
            }
        })
    }

    /// Seeds `rows` contacts with confirmed consent, each enrolled in the track; `due` of
    /// the enrollments fall due at one instant just after seeding, the rest in ten years.
    /// The far ones go in first; the due ones last, due a margin after their insert is
    /// expected to commit, so that they fall due at once rather than as they are written.
    async fn seed(
        &mut self,
        track_id: Uuid,
        version: u32,
        rows: usize,
        due: usize,
    ) -> Result<Seeded, BenchError> {
        let stride = i64::try_from((rows / due.max(1)).max(1)).unwrap_or(i64::MAX);
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        let version = i64::from(version);
        let now = Utc::now();
        let later = now + chrono::Duration::days(3_650);
        let started = Instant::now();
        let far_rows = rows - rows / stride;
        let due_time = match self {
            Self::Postgres(connection) => {
                sqlx::query(
                    "INSERT INTO contacts (contact_id, lead_id, email, first_name, last_name, \
                     job_title, buyer_role, language, time_zone, company_name, consent_state, \
                     update_time) \
                     SELECT md5('bench-contact:' || i)::uuid, md5('bench-lead:' || i)::uuid, \
                     'buyer' || i || '@dispatch-company' || i || '.example', 'Bench', \
                     'Buyer ' || i, 'IT manager', $1, 'en', 'UTC', 'Company ' || i, \
                     'CONSENT_STATE_CONFIRMED', $2 FROM generate_series(1, $3::bigint) AS i",
                )
                .bind(BUYER_ROLE)
                .bind(now)
                .bind(rows)
                .execute(&mut *connection)
                .await?;
                insert_postgres_enrollments(
                    connection, track_id, version, rows, stride, false, later, now,
                )
                .await?;
                // As autovacuum would after such a load, so the scheduler's plan fits the table.
                sqlx::raw_sql("ANALYZE contacts; ANALYZE enrollments")
                    .execute(&mut *connection)
                    .await?;
                let due_time = due_after(started.elapsed(), far_rows, rows - far_rows);
                insert_postgres_enrollments(
                    connection, track_id, version, rows, stride, true, due_time, now,
                )
                .await?;
                due_time
            }
            Self::Sqlite(connection) => {
                let (base,): (i64,) =
                    sqlx::query_as("SELECT COALESCE(MAX(rowid), 0) FROM contacts")
                        .fetch_one(&mut *connection)
                        .await?;
                let chunk = i64::try_from(SQLITE_SEED_CHUNK).unwrap_or(i64::MAX);
                for start in (1..=rows).step_by(SQLITE_SEED_CHUNK) {
                    let end = (start + chunk - 1).min(rows);
                    let mut transaction = connection.begin().await?;
                    sqlx::query(
                        "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) \
                         INSERT INTO contacts (contact_id, lead_id, email, first_name, last_name, \
                         job_title, buyer_role, language, time_zone, company_name, consent_state, \
                         update_time) \
                         SELECT randomblob(16), randomblob(16), \
                         'buyer' || i || '@dispatch-company' || i || '.example', 'Bench', \
                         'Buyer ' || i, 'IT manager', $3, 'en', 'UTC', 'Company ' || i, \
                         'CONSENT_STATE_CONFIRMED', $4 FROM n",
                    )
                    .bind(start)
                    .bind(end)
                    .bind(BUYER_ROLE)
                    .bind(now)
                    .execute(&mut *transaction)
                    .await?;
                    insert_sqlite_enrollments(
                        &mut transaction,
                        track_id,
                        version,
                        (base + start, base + end),
                        (base, stride, false),
                        later,
                        now,
                    )
                    .await?;
                    transaction.commit().await?;
                }
                let due_time = due_after(started.elapsed(), far_rows, rows - far_rows);
                for start in (1..=rows).step_by(SQLITE_SEED_CHUNK) {
                    let end = (start + chunk - 1).min(rows);
                    let mut transaction = connection.begin().await?;
                    insert_sqlite_enrollments(
                        &mut transaction,
                        track_id,
                        version,
                        (base + start, base + end),
                        (base, stride, true),
                        due_time,
                        now,
                    )
                    .await?;
                    transaction.commit().await?;
                }
                due_time
            }
        };
        Ok(Seeded {
            due_time,
            committed: Utc::now(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// How many mails have been sent since `since`: only the figure's sends are sent then.
    async fn sent_since(&mut self, since: DateTime<Utc>) -> Result<usize, BenchError> {
        // Counted on the index of sent times, so the poll costs the suite little.
        const SENT: &str =
            "SELECT COUNT(*) FROM sends WHERE send_time IS NOT NULL AND send_time >= $1";
        let (count,): (i64,) = match self {
            Self::Postgres(connection) => {
                sqlx::query_as(SENT)
                    .bind(since)
                    .fetch_one(&mut *connection)
                    .await?
            }
            Self::Sqlite(connection) => {
                sqlx::query_as(SENT)
                    .bind(since)
                    .fetch_one(&mut *connection)
                    .await?
            }
        };
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// The lag from due to sent of every sent mail of the track.
    async fn lags(&mut self, track_id: Uuid) -> Result<Vec<Duration>, BenchError> {
        const TIMES: &str = "SELECT due_time, send_time FROM sends \
                             WHERE track_id = $1 AND state = 'SEND_STATE_SENT'";
        let times: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = match self {
            Self::Postgres(connection) => {
                sqlx::query_as(TIMES)
                    .bind(track_id)
                    .fetch_all(&mut *connection)
                    .await?
            }
            Self::Sqlite(connection) => {
                sqlx::query_as(TIMES)
                    .bind(track_id)
                    .fetch_all(&mut *connection)
                    .await?
            }
        };
        Ok(times
            .into_iter()
            .filter_map(|(due, sent)| (sent? - due).to_std().ok())
            .collect())
    }

    async fn close(self) -> Result<(), BenchError> {
        match self {
            Self::Postgres(connection) => connection.close().await?,
            Self::Sqlite(connection) => connection.close().await?,
        }
        Ok(())
    }
}

/// The instant the due enrollments fall due: after their insert, at the pace the far ones
/// were written, is expected to have committed, with room to spare.
fn due_after(far_elapsed: Duration, far_rows: i64, due_rows: i64) -> DateTime<Utc> {
    let per_row = far_elapsed.as_secs_f64() / far_rows.max(1) as f64;
    let margin = Duration::from_secs_f64(0.5 + 2.0 * per_row * due_rows as f64);
    Utc::now() + chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::seconds(1))
}

/// Enrolls the seeded contacts `1..=rows` whose number is (`due`) or is not a multiple of
/// `stride`, due at `next_due`.
#[allow(clippy::too_many_arguments, reason = "one SQL statement's parameters")]
async fn insert_postgres_enrollments(
    connection: &mut PgConnection,
    track_id: Uuid,
    version: i64,
    rows: i64,
    stride: i64,
    due: bool,
    next_due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), BenchError> {
    sqlx::query(
        "INSERT INTO enrollments (enrollment_id, contact_id, lead_id, product, track_id, \
         track_version, state, state_reason, buyer_role, stage, step, attempt, next_due_time, \
         enroll_time, state_change_time) \
         SELECT gen_random_uuid(), md5('bench-contact:' || i)::uuid, md5('bench-lead:' || i)::uuid, \
         $1, $2, $3, 'ENROLLMENT_STATE_ACTIVE', 'seeded by the bench', $4, \
         'BUYING_STAGE_PROBLEM_AWARENESS', 0, 0, $5, $6, $6 \
         FROM generate_series(1, $7::bigint) AS i WHERE (i % $8 = 0) = $9",
    )
    .bind(PRODUCT)
    .bind(track_id)
    .bind(version)
    .bind(BUYER_ROLE)
    .bind(next_due)
    .bind(now)
    .bind(rows)
    .bind(stride)
    .bind(due)
    .execute(connection)
    .await?;
    Ok(())
}

/// Enrolls the contacts of rowids `from..=to` whose number above `base` is (`due`) or is
/// not a multiple of `stride`, due at `next_due`.
async fn insert_sqlite_enrollments(
    connection: &mut SqliteConnection,
    track_id: Uuid,
    version: i64,
    (from, to): (i64, i64),
    (base, stride, due): (i64, i64, bool),
    next_due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), BenchError> {
    sqlx::query(
        "INSERT INTO enrollments (enrollment_id, contact_id, lead_id, product, track_id, \
         track_version, state, state_reason, buyer_role, stage, step, attempt, next_due_time, \
         enroll_time, state_change_time) \
         SELECT randomblob(16), contact_id, lead_id, $1, $2, $3, 'ENROLLMENT_STATE_ACTIVE', \
         'seeded by the bench', $4, 'BUYING_STAGE_PROBLEM_AWARENESS', 0, 0, $5, $6, $6 \
         FROM contacts WHERE rowid BETWEEN $7 AND $8 AND ((rowid - $9) % $10 = 0) = $11",
    )
    .bind(PRODUCT)
    .bind(track_id)
    .bind(version)
    .bind(BUYER_ROLE)
    .bind(next_due)
    .bind(now)
    .bind(from)
    .bind(to)
    .bind(base)
    .bind(stride)
    .bind(due)
    .execute(connection)
    .await?;
    Ok(())
}

/// Waits until `due` mails have been sent since the due time, or none more for
/// [`STALL_TIMEOUT`]; returns how long after the due time the bench saw the last.
async fn wait_until_sent(
    records: &mut Records,
    seeded: &Seeded,
    due: usize,
) -> Result<Duration, BenchError> {
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let sent = records.sent_since(seeded.due_time).await?;
        if sent >= due {
            return Ok((Utc::now() - seeded.due_time).to_std().unwrap_or_default());
        }
        if sent > last_count {
            last_count = sent;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL_TIMEOUT {
            super::progress(&format!(
                "nurturing sent {sent} of {due} due mails and then none for {STALL_TIMEOUT:?}"
            ));
            return Ok((Utc::now() - seeded.due_time).to_std().unwrap_or_default());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Where nurturing writes its mails: `mail` under the data directory of the process that
/// runs it.
fn mail_directory(suite: &Suite) -> PathBuf {
    let data = if suite.database_url.is_some() {
        leadflow_nurturing::SCHEMA
    } else {
        "data"
    };
    suite.directory.join(data).join("mail")
}

/// The `.eml` files in `directory`; none when it was never created.
fn count_mails(directory: &Path) -> Result<usize, BenchError> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let mut count = 0;
    for entry in entries {
        if entry?
            .path()
            .extension()
            .is_some_and(|extension| extension == "eml")
        {
            count += 1;
        }
    }
    Ok(count)
}
