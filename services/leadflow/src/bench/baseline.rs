//! The baselines each figure is measured beside: what PostgreSQL (or SQLite, embedded) and
//! tonic do on this machine with no leadflow logic at all. An empty TrackActivity handler
//! served by the same server bootstrap, a COPY of the rows leadflow wrote, and bare
//! `FOR UPDATE SKIP LOCKED` work-queue loops, one item or one batch of due items at a time.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use leadflow_platform::GrpcServer;
use leadflow_proto::capture::v1::{TrackActivityRequest, TrackActivityResponse};
use sqlx::{
    Connection, Executor, PgConnection, SqliteConnection,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};
use tokio_stream::StreamExt;
use tonic::{body::Body, server::NamedService};

use super::BenchError;

/// A capture service whose TrackActivity decodes the request and answers an empty
/// response; every other method is unimplemented. It measures what gRPC itself costs.
#[derive(Debug, Clone, Default)]
pub struct EmptyCapture;

impl NamedService for EmptyCapture {
    const NAME: &'static str = "leadflow.capture.v1.CaptureService";
}

type BoxedResponse = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for EmptyCapture {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            if request.uri().path() != "/leadflow.capture.v1.CaptureService/TrackActivity" {
                return Ok(tonic::Status::unimplemented("only TrackActivity is served").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(EmptyTrackActivity, request).await)
        })
    }
}

struct EmptyTrackActivity;

impl tonic::server::UnaryService<TrackActivityRequest> for EmptyTrackActivity {
    type Response = TrackActivityResponse;
    type Future = Ready<Result<tonic::Response<TrackActivityResponse>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<TrackActivityRequest>) -> Self::Future {
        ready(Ok(tonic::Response::new(TrackActivityResponse::default())))
    }
}

/// Serves [`EmptyCapture`] on a free port, printing `listening ADDRESS` on standard output
/// for the bench that started this process, until the process is killed.
pub async fn serve_empty_capture() -> Result<(), BenchError> {
    let mut server = GrpcServer::bind(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| BenchError::Suite("the loopback address does not parse".to_owned()))?,
    )
    .await
    .map_err(|error| BenchError::Suite(error.to_string()))?;
    server.add_service(EmptyCapture);
    let address = server.local_addr();
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {address}")?;
        stdout.flush()?;
    }
    server
        .serve(std::future::pending(), Duration::from_secs(1))
        .await
        .map_err(|error| BenchError::Suite(error.to_string()))
}

/// Rows per second that COPY writes into a scratch table shaped like capture's
/// activities, with the rows leadflow wrote there: the same bytes, the same indexes, one
/// durable commit.
pub async fn postgres_copy_rate(database_url: &str) -> Result<(u64, f64), BenchError> {
    let mut connection = PgConnection::connect(database_url).await?;
    connection
        .execute(
            "DROP TABLE IF EXISTS public.bench_copy; \
             CREATE TABLE public.bench_copy (LIKE capture.activities INCLUDING ALL)",
        )
        .await?;
    let mut rows = Vec::new();
    {
        let mut out = connection
            .copy_out_raw("COPY capture.activities TO STDOUT")
            .await?;
        while let Some(chunk) = out.next().await {
            rows.extend_from_slice(&chunk?);
        }
    }
    let started = Instant::now();
    let mut copy = connection
        .copy_in_raw("COPY public.bench_copy FROM STDIN")
        .await?;
    copy.send(rows).await?;
    let written = copy.finish().await?;
    let seconds = started.elapsed().as_secs_f64();
    connection.execute("DROP TABLE public.bench_copy").await?;
    connection.close().await?;
    Ok((written, written as f64 / seconds.max(1e-9)))
}

/// Rows per second that one SQLite transaction copies from capture's activities into a
/// scratch table of the same shape and indexes: SQLite's fastest bulk write of those rows.
pub async fn sqlite_copy_rate(capture_file: &std::path::Path) -> Result<(u64, f64), BenchError> {
    let mut connection = sqlite(capture_file, false).await?;
    connection
        .execute(
            "DROP TABLE IF EXISTS bench_copy; \
             CREATE TABLE bench_copy AS SELECT * FROM activities WHERE 0",
        )
        .await?;
    // The same indexes as the original, so the copy pays what the real insert pays.
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'activities' AND sql IS NOT NULL",
    )
    .fetch_all(&mut connection)
    .await?;
    for (index,) in indexes {
        let renamed = index
            .replacen("INDEX ", "INDEX bench_copy_", 1)
            .replace(" ON activities", " ON bench_copy");
        connection.execute(renamed.as_str()).await?;
    }
    let started = Instant::now();
    let mut transaction = connection.begin().await?;
    let written = sqlx::query("INSERT INTO bench_copy SELECT * FROM activities")
        .execute(&mut *transaction)
        .await?
        .rows_affected();
    transaction.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    connection.execute("DROP TABLE bench_copy").await?;
    connection.close().await?;
    Ok((written, written as f64 / seconds.max(1e-9)))
}

/// A connection with the embedded stores' durability: the write-ahead log synced on every
/// commit.
async fn sqlite(path: &std::path::Path, create: bool) -> Result<SqliteConnection, BenchError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));
    Ok(SqliteConnection::connect_with(&options).await?)
}

/// Items per second that `workers` connections take off a queue of `items` rows, one at a
/// time, each in its own committed transaction: `UPDATE … WHERE id = (SELECT … FOR UPDATE
/// SKIP LOCKED LIMIT 1)`, the least work a durable assignment or dispatch can be.
pub async fn postgres_skip_locked_rate(
    database_url: &str,
    items: usize,
    workers: usize,
) -> Result<f64, BenchError> {
    let mut setup = PgConnection::connect(database_url).await?;
    setup
        .execute(
            format!(
                "DROP TABLE IF EXISTS public.bench_queue; \
                 CREATE TABLE public.bench_queue (id bigint PRIMARY KEY, taken_by int, taken_at timestamptz); \
                 INSERT INTO public.bench_queue (id) SELECT generate_series(1, {items}); \
                 CREATE INDEX ON public.bench_queue (id) WHERE taken_by IS NULL"
            )
            .as_str(),
        )
        .await?;
    let taken = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers.max(1) {
        let url = database_url.to_owned();
        let taken = taken.clone();
        tasks.spawn(async move {
            let mut connection = PgConnection::connect(&url).await?;
            loop {
                let done = sqlx::query(
                    "UPDATE public.bench_queue SET taken_by = $1, taken_at = now() WHERE id = \
                     (SELECT id FROM public.bench_queue WHERE taken_by IS NULL ORDER BY id \
                      FOR UPDATE SKIP LOCKED LIMIT 1)",
                )
                .bind(i32::try_from(worker).unwrap_or(i32::MAX))
                .execute(&mut connection)
                .await?
                .rows_affected();
                if done == 0 {
                    break;
                }
                taken.fetch_add(1, Ordering::Relaxed);
            }
            connection.close().await?;
            Ok::<(), sqlx::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| BenchError::Suite(error.to_string()))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    setup.execute("DROP TABLE public.bench_queue").await?;
    setup.close().await?;
    Ok(taken.load(Ordering::Relaxed) as f64 / seconds.max(1e-9))
}

/// The embedded counterpart of [`postgres_skip_locked_rate`]: SQLite has one writer and
/// no row locks, so one connection takes the items one committed UPDATE at a time.
pub async fn sqlite_queue_rate(
    directory: &std::path::Path,
    items: usize,
) -> Result<f64, BenchError> {
    let path = directory.join("bench-queue.db");
    let mut connection = sqlite(&path, true).await?;
    connection
        .execute(
            format!(
                "CREATE TABLE bench_queue (id INTEGER PRIMARY KEY, taken_by INTEGER, taken_at TEXT); \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {items}) \
                 INSERT INTO bench_queue (id) SELECT i FROM n; \
                 CREATE INDEX bench_queue_free ON bench_queue (id) WHERE taken_by IS NULL"
            )
            .as_str(),
        )
        .await?;
    let started = Instant::now();
    let mut taken = 0_usize;
    loop {
        let done = sqlx::query(
            "UPDATE bench_queue SET taken_by = 1, taken_at = datetime('now') WHERE id = \
             (SELECT id FROM bench_queue WHERE taken_by IS NULL ORDER BY id LIMIT 1)",
        )
        .execute(&mut connection)
        .await?
        .rows_affected();
        if done == 0 {
            break;
        }
        taken += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    connection.close().await?;
    let _ = std::fs::remove_file(&path);
    Ok(taken as f64 / seconds.max(1e-9))
}

/// Items per second that one connection takes off a queue of `rows` rows of which `due`
/// are due now and the rest far in the future, `batch` at a time, each batch in its own
/// committed transaction: `SELECT … WHERE due … FOR UPDATE SKIP LOCKED LIMIT batch`, an
/// UPDATE of the taken rows, COMMIT. The least work a batched durable dispatch can be.
pub async fn postgres_due_dequeue_rate(
    database_url: &str,
    rows: usize,
    due: usize,
    batch: u32,
) -> Result<f64, BenchError> {
    let stride = (rows / due.max(1)).max(1);
    let mut connection = PgConnection::connect(database_url).await?;
    connection
        .execute(
            format!(
                "DROP TABLE IF EXISTS public.bench_due_queue; \
                 CREATE TABLE public.bench_due_queue (id bigint PRIMARY KEY, \
                  due_time timestamptz NOT NULL, taken_at timestamptz); \
                 INSERT INTO public.bench_due_queue (id, due_time) \
                  SELECT i, CASE WHEN i % {stride} = 0 THEN now() ELSE now() + interval '10 years' END \
                  FROM generate_series(1, {rows}) AS i; \
                 CREATE INDEX ON public.bench_due_queue (due_time) WHERE taken_at IS NULL; \
                 ANALYZE public.bench_due_queue"
            )
            .as_str(),
        )
        .await?;
    let started = Instant::now();
    let mut taken = 0_usize;
    loop {
        let mut transaction = connection.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM public.bench_due_queue WHERE taken_at IS NULL AND due_time <= now() \
             ORDER BY due_time, id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(batch))
        .fetch_all(&mut *transaction)
        .await?;
        if ids.is_empty() {
            break;
        }
        sqlx::query("UPDATE public.bench_due_queue SET taken_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        taken += ids.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    connection
        .execute("DROP TABLE public.bench_due_queue")
        .await?;
    connection.close().await?;
    Ok(taken as f64 / seconds.max(1e-9))
}

/// The embedded counterpart of [`postgres_due_dequeue_rate`]: SQLite has no row locks, so
/// the one connection selects a batch of due rows, updates them and commits.
pub async fn sqlite_due_dequeue_rate(
    directory: &std::path::Path,
    rows: usize,
    due: usize,
    batch: u32,
) -> Result<f64, BenchError> {
    let stride = (rows / due.max(1)).max(1);
    let path = directory.join("bench-due-queue.db");
    let mut connection = sqlite(&path, true).await?;
    // Due times are compared as text, as the embedded stores compare them.
    let now = chrono::Utc::now();
    sqlx::query(
        "CREATE TABLE bench_due_queue (id INTEGER PRIMARY KEY, due_time TEXT NOT NULL, taken_at TEXT)",
    )
    .execute(&mut connection)
    .await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO bench_due_queue (id, due_time) \
         SELECT i, CASE WHEN i % $2 = 0 THEN $3 ELSE $4 END FROM n",
    )
    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
    .bind(i64::try_from(stride).unwrap_or(i64::MAX))
    .bind(now)
    .bind(now + chrono::Duration::days(3_650))
    .execute(&mut connection)
    .await?;
    connection
        .execute(
            "CREATE INDEX bench_due_queue_due ON bench_due_queue (due_time) WHERE taken_at IS NULL",
        )
        .await?;
    let started = Instant::now();
    let mut taken = 0_usize;
    loop {
        let mut transaction = connection.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM bench_due_queue WHERE taken_at IS NULL AND due_time <= $1 \
             ORDER BY due_time, id LIMIT $2",
        )
        .bind(chrono::Utc::now())
        .bind(i64::from(batch))
        .fetch_all(&mut *transaction)
        .await?;
        if ids.is_empty() {
            break;
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        sqlx::query(&format!(
            "UPDATE bench_due_queue SET taken_at = $1 WHERE id IN ({list})"
        ))
        .bind(chrono::Utc::now())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        taken += ids.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    connection.close().await?;
    let _ = std::fs::remove_file(&path);
    Ok(taken as f64 / seconds.max(1e-9))
}
