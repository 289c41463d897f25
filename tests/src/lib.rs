//! The test rig: every test gets a fresh PostgreSQL database and its own Redis key space,
//! boots the real application on 127.0.0.1:0 and talks to it through the generated
//! clients. Real servers, no mocks. PostgreSQL and Redis are found through
//! `LEADFLOW_TEST_DATABASE_URL` and `LEADFLOW_TEST_REDIS_URL` (defaults: the local servers).
//! [`ProcessSuite`] runs the real binary instead, one process per service, on the shared
//! servers or on servers of the test's own ([`OwnPostgres`], [`OwnRedis`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use leadflow::{Application, ServiceKind};
use leadflow_platform::{
    AuthSettings, IngressSettings, Settings,
    time::{Clock, SystemClock},
};
use leadflow_proto::{
    capture::v1::capture_service_client::CaptureServiceClient,
    nurturing::v1::nurturing_service_client::NurturingServiceClient,
    routing::v1::routing_service_client::RoutingServiceClient,
    scoring::v1::scoring_service_client::ScoringServiceClient,
};
use secrecy::SecretString;
use sqlx::{Connection, Executor, PgConnection};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

mod own_postgres;
mod processes;

pub use own_postgres::OwnPostgres;
pub use processes::{Backing, ProcessSuite, leadflow_binary};

/// The PostgreSQL server tests create their databases on.
pub fn admin_database_url() -> String {
    std::env::var("LEADFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis server tests use, each under its own key prefix.
pub fn redis_url() -> String {
    std::env::var("LEADFLOW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A database created for one test and dropped when the test ends, even if it panics.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    /// The server's maintenance database, which creates and drops this one.
    admin_url: String,
}

impl TestDatabase {
    /// Creates an empty database with a unique name.
    pub async fn create() -> anyhow::Result<Self> {
        Self::create_on(&admin_database_url()).await
    }

    /// Creates an empty database with a unique name on the server of `admin_url`, e.g. a
    /// server of the test's own ([`OwnPostgres`]).
    pub async fn create_on(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("leadflow_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await?;
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await?;
        admin.close().await?;
        let url = replace_database(admin_url, &name);
        Ok(Self {
            name,
            url,
            admin_url: admin_url.to_owned(),
        })
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Refuses new connections and ends the open ones, as if PostgreSQL were gone for
    /// this database; [`TestDatabase::restore`] undoes it.
    pub async fn cut_off(&self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        admin
            .execute(format!(r#"ALTER DATABASE "{}" ALLOW_CONNECTIONS false"#, self.name).as_str())
            .await?;
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .execute(&mut admin)
            .await?;
        Ok(())
    }

    /// Lets connections in again after [`TestDatabase::cut_off`].
    pub async fn restore(&self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        admin
            .execute(format!(r#"ALTER DATABASE "{}" ALLOW_CONNECTIONS true"#, self.name).as_str())
            .await?;
        Ok(())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // Drop runs outside any async context we could borrow; a short-lived runtime on its
        // own thread does the cleanup even while the test thread unwinds.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin
                    .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await?;
                anyhow::Ok(())
            })
        });
        if let Ok(Err(error)) = cleanup.join() {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// `url` with its database name replaced by `database`.
pub fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let without_path = match base.rfind('/') {
        Some(slash) if base[..slash].ends_with('/') => base.to_owned(),
        Some(slash) => base[..slash].to_owned(),
        None => base.to_owned(),
    };
    let without_path = without_path.trim_end_matches('/');
    match query {
        Some(query) => format!("{without_path}/{database}?{query}"),
        None => format!("{without_path}/{database}"),
    }
}

/// The link key of test suites on PostgreSQL, so tests can sign links as the suite does.
pub const TEST_LINK_KEY: &str = "leadflow-tests-link-key-0123456789abcdef";

/// An ingress on a free port; `link_key` None lets the embedded mode make its own.
pub fn test_ingress(link_key: Option<&str>) -> IngressSettings {
    IngressSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        link_key: link_key.map(|key| SecretString::from(key.to_owned())),
        ..IngressSettings::default()
    }
}

/// The settings of an embedded test suite with its files in `data_dir`: free ports, quick
/// health probes and a short drain.
fn embedded_settings(data_dir: &std::path::Path) -> Settings {
    Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: None,
        redis_url: None,
        data_dir: data_dir.to_path_buf(),
        health_check_interval_ms: 100,
        shutdown_grace_ms: 2_000,
        ingress: test_ingress(None),
        ..Settings::default()
    }
}

/// A running suite (all four services or some) on a free port, with its own database and
/// Redis key space; stopped and cleaned up when dropped.
#[derive(Debug)]
pub struct TestSuite {
    address: SocketAddr,
    ingress_address: Option<SocketAddr>,
    channel: Channel,
    key_prefix: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), leadflow::AppError>>>,
    /// The data directory: the embedded store's files, and the mails written without a
    /// relay.
    data_dir: std::path::PathBuf,
    /// The data directory the suite made for itself (where mails go without a relay),
    /// removed when the suite is dropped; None when the caller gave one.
    own_data_dir: Option<std::path::PathBuf>,
    // Declared last: dropped after the server has stopped. None for an embedded suite.
    database: Option<TestDatabase>,
}

impl TestSuite {
    /// Starts all four services in one process.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_services(&ServiceKind::ALL).await
    }

    /// Starts the given services in one process.
    pub async fn start_services(services: &[ServiceKind]) -> anyhow::Result<Self> {
        Self::start_with(services, redis_url()).await
    }

    /// Starts the given services against the Redis at `redis_url`.
    pub async fn start_with(services: &[ServiceKind], redis_url: String) -> anyhow::Result<Self> {
        Self::start_on_clock(services, redis_url, Arc::new(SystemClock)).await
    }

    /// Starts all four services on PostgreSQL and Redis, reading the time from `clock`.
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::start_on_clock(&ServiceKind::ALL, redis_url(), clock).await
    }

    async fn start_on_clock(
        services: &[ServiceKind],
        redis_url: String,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let data_dir =
            std::env::temp_dir().join(format!("leadflow-suite-{}", uuid::Uuid::new_v4()));
        let settings = Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: Some(SecretString::from(database.url().to_owned())),
            data_dir: data_dir.clone(),
            redis_url: Some(SecretString::from(redis_url)),
            redis_key_prefix: format!("test:{}", uuid::Uuid::new_v4().simple()),
            database_max_connections: 4,
            database_acquire_timeout_ms: 1_000,
            health_check_interval_ms: 100,
            shutdown_grace_ms: 2_000,
            ingress: test_ingress(Some(TEST_LINK_KEY)),
            ..Settings::default()
        };
        let mut suite = Self::serve(settings, services, clock).await?;
        suite.database = Some(database);
        suite.own_data_dir = Some(data_dir);
        Ok(suite)
    }

    /// Starts the whole suite in the embedded mode, its files in `data_dir`: no PostgreSQL,
    /// no Redis.
    pub async fn start_embedded(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_embedded_with_clock(data_dir, Arc::new(SystemClock)).await
    }

    /// Starts the whole suite in the embedded mode, requiring the bearer tokens listed in
    /// `tokens_file` on every call.
    pub async fn start_embedded_with_tokens(
        data_dir: &std::path::Path,
        tokens_file: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let settings = Settings {
            auth: AuthSettings {
                tokens_file: Some(tokens_file.to_path_buf()),
            },
            ..embedded_settings(data_dir)
        };
        Self::serve(settings, &ServiceKind::ALL, Arc::new(SystemClock)).await
    }

    /// Starts the whole suite in the embedded mode with the ingress configured as `ingress`.
    pub async fn start_embedded_with_ingress(
        data_dir: &std::path::Path,
        ingress: IngressSettings,
    ) -> anyhow::Result<Self> {
        let settings = Settings {
            ingress,
            ..embedded_settings(data_dir)
        };
        Self::serve(settings, &ServiceKind::ALL, Arc::new(SystemClock)).await
    }

    /// Starts the whole suite in the embedded mode, reading the time from `clock`.
    pub async fn start_embedded_with_clock(
        data_dir: &std::path::Path,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        Self::serve(embedded_settings(data_dir), &ServiceKind::ALL, clock).await
    }

    /// Starts the whole suite in the embedded mode serving over the TLS `tls` configures;
    /// the suite's own channel connects with `client`, to `localhost`.
    pub async fn start_embedded_with_tls(
        data_dir: &std::path::Path,
        tls: leadflow_platform::TlsSettings,
        client: tonic::transport::ClientTlsConfig,
    ) -> anyhow::Result<Self> {
        let settings = Settings {
            tls,
            ..embedded_settings(data_dir)
        };
        Self::serve_with(
            settings,
            &ServiceKind::ALL,
            Arc::new(SystemClock),
            Some(client),
        )
        .await
    }

    async fn serve(
        settings: Settings,
        services: &[ServiceKind],
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        Self::serve_with(settings, services, clock, None).await
    }

    async fn serve_with(
        settings: Settings,
        services: &[ServiceKind],
        clock: Arc<dyn Clock>,
        client_tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let key_prefix = settings.redis_key_prefix.clone();
        let data_dir = settings.data_dir.clone();
        let application = Application::build_with_clock(&settings, services, clock).await?;
        let address = application.local_addr();
        let ingress_address = application.ingress_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        let endpoint = match client_tls {
            Some(tls) => Channel::from_shared(format!("https://localhost:{}", address.port()))?
                .tls_config(tls)?,
            None => Channel::from_shared(format!("http://{address}"))?,
        };
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Self {
            address,
            ingress_address,
            channel,
            key_prefix,
            data_dir,
            stop: Some(stop),
            server: Some(server),
            own_data_dir: None,
            database: None,
        })
    }

    /// The address the suite listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address of capture's HTTP ingress; panics when the suite runs no capture.
    pub fn ingress_address(&self) -> SocketAddr {
        self.ingress_address.expect("a suite running capture")
    }

    /// Sends one HTTP/1.1 request to the ingress and reads the whole response.
    pub async fn http(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<HttpResponse> {
        http_request(
            self.ingress_address(),
            method,
            path_and_query,
            headers,
            body,
        )
        .await
    }

    /// The suite's PostgreSQL database; panics for an embedded suite.
    pub fn database(&self) -> &TestDatabase {
        self.database.as_ref().expect("a suite on PostgreSQL")
    }

    /// A direct connection pool to the suite's database, for checking what was written.
    pub async fn database_pool(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(self.database().url())
            .await?)
    }

    /// Where the suite keeps its files: the embedded store's, and the mails it writes when
    /// no relay is configured (under `mail`).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The Redis key prefix of this suite.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// A channel to the suite.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A capture client.
    pub fn capture(&self) -> CaptureServiceClient<Channel> {
        CaptureServiceClient::new(self.channel())
    }

    /// A scoring client.
    pub fn scoring(&self) -> ScoringServiceClient<Channel> {
        ScoringServiceClient::new(self.channel())
    }

    /// A nurturing client.
    pub fn nurturing(&self) -> NurturingServiceClient<Channel> {
        NurturingServiceClient::new(self.channel())
    }

    /// A routing client.
    pub fn routing(&self) -> RoutingServiceClient<Channel> {
        RoutingServiceClient::new(self.channel())
    }

    /// A `grpc.health.v1` client.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await??;
        }
        Ok(())
    }
}

impl Drop for TestSuite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(data_dir) = self.own_data_dir.take() {
            let _ = std::fs::remove_dir_all(data_dir);
        }
    }
}

/// An HTTP response as the ingress sent it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client: one request per connection, so the response ends when the
/// server closes it; chunked bodies are decoded.
pub async fn http_request(
    address: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let mut request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| {
            anyhow::anyhow!("no end of headers in {:?}", String::from_utf8_lossy(&raw))
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or_else(|| anyhow::anyhow!("a chunk without its size line"))?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        anyhow::ensure!(raw.len() >= size + 2, "a chunk shorter than its size");
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Redis server of the test's own, so that stopping it disturbs no other test.
#[derive(Debug)]
pub struct OwnRedis {
    /// None while it is killed.
    child: Option<std::process::Child>,
    port: u16,
}

impl OwnRedis {
    /// Starts a Redis server without persistence on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut redis = Self { child: None, port };
        redis.start_again().await?;
        Ok(redis)
    }

    /// Starts the server again on its port after [`OwnRedis::kill`]: empty, since it keeps
    /// nothing on disk, as a Redis without persistence comes back after a crash.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "redis-server is still running");
        let port = self.port;
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let up = eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        anyhow::ensure!(up, "redis-server on port {port} did not come up");
        Ok(())
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Empties the server: every key of every client is gone (FLUSHALL).
    pub async fn flush_all(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let () = redis::cmd("FLUSHALL").query_async(&mut connection).await?;
        Ok(())
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// An SMTP server of the test's own: aiosmtpd (installed by `scripts/backing-services.sh`)
/// with the handler in `tests/smtp_sink`, which keeps every message it accepts as one
/// `.eml` file and refuses recipients whose local part starts with `refused` (550) or
/// `busy` (451). Killed, and its files removed, when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    child: std::process::Child,
    port: u16,
    directory: std::path::PathBuf,
}

impl SmtpSink {
    /// Starts the sink on a free port and waits until it greets.
    pub async fn start() -> anyhow::Result<Self> {
        // The free port is only free when we look; another process can take it before
        // aiosmtpd binds, so a sink that dies at once gets another port.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_once().await {
                Ok(sink) => return Ok(sink),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the smtp sink did not start")))
    }

    async fn start_once() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let directory =
            std::env::temp_dir().join(format!("leadflow-smtp-sink-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory)?;
        let handler_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_sink");
        let python_path = match std::env::var_os("PYTHONPATH") {
            Some(existing) => {
                let mut paths = vec![handler_path];
                paths.extend(std::env::split_paths(&existing));
                std::env::join_paths(paths)?
            }
            None => handler_path.into_os_string(),
        };
        // The log sits beside the messages, out of `messages()`'s way, to explain a sink
        // that did not come up.
        let log = std::fs::File::create(directory.join("sink.log"))?;
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "leadflow_smtp_sink.Sink"])
            .arg(&directory)
            .env("PYTHONPATH", python_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| anyhow::anyhow!("could not run python3 for the smtp sink: {error}"))?;
        let mut sink = Self {
            child,
            port,
            directory,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if sink.greets().await {
                return Ok(sink);
            }
            if let Some(status) = sink.child.try_wait()? {
                let log =
                    std::fs::read_to_string(sink.directory.join("sink.log")).unwrap_or_default();
                let hint = if log.contains("No module named aiosmtpd") {
                    " (run scripts/backing-services.sh, which installs aiosmtpd)"
                } else {
                    ""
                };
                anyhow::bail!("the smtp sink exited with {status}{hint}: {}", log.trim());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the smtp sink on port {port} did not greet within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the sink accepts a connection and says 220, as a ready SMTP server does.
    async fn greets(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut greeting = [0_u8; 3];
        let greeted =
            tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut greeting))
                .await
                .is_ok_and(|read| read.is_ok())
                && &greeting == b"220";
        let _ = stream.write_all(b"QUIT\r\n").await;
        greeted
    }

    /// The host the sink listens on.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The port the sink listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `LEADFLOW_MAIL__*` settings that make a leadflow process mail through this sink
    /// (without STARTTLS, which the sink does not offer).
    pub fn relay_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LEADFLOW_MAIL__SMTP_HOST", self.host().to_owned()),
            ("LEADFLOW_MAIL__SMTP_PORT", self.port.to_string()),
            ("LEADFLOW_MAIL__SMTP_STARTTLS", "false".to_owned()),
        ]
    }

    /// Every message accepted so far, raw, oldest first. Each starts with the envelope as
    /// `X-Sink-Mail-From` and `X-Sink-Rcpt-To` headers. The sink writes a message before it
    /// acknowledges it, so whatever a client saw accepted is here.
    pub fn messages(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.directory)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_some_and(|extension| extension == "eml") {
                files.push((entry.metadata()?.modified()?, path));
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| Ok(std::fs::read(path)?))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
