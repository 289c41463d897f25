//! The suite as production runs it: the real `leadflow` binary started once per service
//! (`leadflow serve --service NAME`), all of them on one fresh PostgreSQL database and one
//! Redis key prefix, each on a free port, each logging to a file of its own that a failing
//! test prints.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use leadflow::ServiceKind;
use leadflow_proto::{
    capture::v1::capture_service_client::CaptureServiceClient,
    nurturing::v1::nurturing_service_client::NurturingServiceClient,
    routing::v1::routing_service_client::RoutingServiceClient,
    scoring::v1::scoring_service_client::ScoringServiceClient,
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{TEST_LINK_KEY, TestDatabase, http_request, redis_url};

/// How long a process may take to bind, migrate its schema and report SERVING; generous,
/// for a loaded CI machine with four processes migrating at once.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many lines of each process's log a failure shows.
const LOG_LINES_SHOWN: usize = 200;

/// The message the binary logs once it is bound, with its gRPC and ingress addresses.
const LISTENING_MESSAGE: &str = "leadflow listening";

/// The path of the `leadflow` binary that cargo built beside this test binary: the test
/// runs as `target/<profile>/deps/it-HASH`, the binary is `target/<profile>/leadflow`.
pub fn leadflow_binary() -> anyhow::Result<PathBuf> {
    let test_binary = std::env::current_exe()?;
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("no target directory above {}", test_binary.display()))?;
    let binary = profile_dir.join(format!("leadflow{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        binary.is_file(),
        "the leadflow binary is missing at {}: run the tests with scripts/test.sh, which builds \
         it first, or run `cargo build -p leadflow` (same profile and CARGO_TARGET_DIR) before \
         `cargo test`",
        binary.display()
    );
    Ok(binary)
}

/// One `leadflow serve --service NAME` process.
#[derive(Debug)]
struct ServiceProcess {
    kind: ServiceKind,
    child: Mutex<Child>,
    log: PathBuf,
    address: SocketAddr,
    channel: Channel,
}

/// What a process logged when it was bound.
#[derive(Debug, Clone, Copy)]
struct Bound {
    address: SocketAddr,
    ingress: Option<SocketAddr>,
}

/// The four services as four processes of the real binary, sharing a fresh database and a
/// Redis key prefix; killed, and their files removed, when dropped, also when a test panics
/// (whose output then shows their logs).
#[derive(Debug)]
pub struct ProcessSuite {
    processes: Vec<ServiceProcess>,
    ingress_address: SocketAddr,
    key_prefix: String,
    /// The processes' logs and data directories.
    directory: PathBuf,
    // Declared last: dropped after the processes are gone.
    database: TestDatabase,
}

impl ProcessSuite {
    /// Starts capture, then scoring, nurturing and routing together (nurturing needs
    /// capture's ingress address, which its mailed links point at), and waits until each
    /// reports its service SERVING.
    /// `settings` are extra `LEADFLOW_*` variables every process gets, such as
    /// [`crate::SmtpSink::relay_settings`].
    pub async fn start(settings: &[(&str, String)]) -> anyhow::Result<Self> {
        let binary = leadflow_binary()?;
        let database = TestDatabase::create().await?;
        let directory =
            std::env::temp_dir().join(format!("leadflow-processes-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory)?;
        let mut suite = Self {
            processes: Vec::with_capacity(ServiceKind::ALL.len()),
            ingress_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            key_prefix: format!("test:{}", uuid::Uuid::new_v4().simple()),
            directory,
            database,
        };
        let launcher = Launcher {
            binary: &binary,
            suite: &suite,
            settings,
        };
        let capture = launcher.spawn(ServiceKind::Capture, None)?;
        let (capture, bound) = capture.ready().await?;
        suite.ingress_address = bound.ingress.ok_or_else(|| {
            anyhow::anyhow!(
                "capture logged no ingress address:\n{}",
                log_tail(&capture.log)
            )
        })?;
        suite.processes.push(capture);
        let launcher = Launcher {
            binary: &binary,
            suite: &suite,
            settings,
        };
        // Started together, so that their migrations overlap as they do on a cluster.
        let mut starting = Vec::new();
        for kind in [
            ServiceKind::Scoring,
            ServiceKind::Nurturing,
            ServiceKind::Routing,
        ] {
            starting.push(launcher.spawn(kind, Some(suite.ingress_address))?);
        }
        for process in starting {
            let (process, _) = process.ready().await?;
            suite.processes.push(process);
        }
        Ok(suite)
    }

    fn process(&self, kind: ServiceKind) -> &ServiceProcess {
        self.processes
            .iter()
            .find(|process| process.kind == kind)
            .expect("a process per service")
    }

    /// The gRPC address of the process running `kind`.
    pub fn address(&self, kind: ServiceKind) -> SocketAddr {
        self.process(kind).address
    }

    /// A channel to the process running `kind`.
    pub fn channel(&self, kind: ServiceKind) -> Channel {
        self.process(kind).channel.clone()
    }

    /// A client of the capture process.
    pub fn capture(&self) -> CaptureServiceClient<Channel> {
        CaptureServiceClient::new(self.channel(ServiceKind::Capture))
    }

    /// A client of the scoring process.
    pub fn scoring(&self) -> ScoringServiceClient<Channel> {
        ScoringServiceClient::new(self.channel(ServiceKind::Scoring))
    }

    /// A client of the nurturing process.
    pub fn nurturing(&self) -> NurturingServiceClient<Channel> {
        NurturingServiceClient::new(self.channel(ServiceKind::Nurturing))
    }

    /// A client of the routing process.
    pub fn routing(&self) -> RoutingServiceClient<Channel> {
        RoutingServiceClient::new(self.channel(ServiceKind::Routing))
    }

    /// The address of capture's HTTP ingress.
    pub fn ingress_address(&self) -> SocketAddr {
        self.ingress_address
    }

    /// Sends one HTTP/1.1 request to capture's ingress.
    pub async fn http(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<crate::HttpResponse> {
        http_request(self.ingress_address, method, path_and_query, headers, body).await
    }

    /// The database the processes share.
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// The Redis key prefix the processes share.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Fails naming the first process that has exited: every later step would only time
    /// out waiting for it.
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        for process in &self.processes {
            let mut child = process
                .child
                .lock()
                .map_err(|_| anyhow::anyhow!("a poisoned process lock"))?;
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("the {:?} process exited with {status}", process.kind);
            }
        }
        Ok(())
    }

    /// Every line every process has logged so far.
    pub fn full_logs(&self) -> anyhow::Result<String> {
        let mut all = String::new();
        for process in &self.processes {
            all.push_str(&std::fs::read_to_string(&process.log)?);
        }
        Ok(all)
    }

    /// The last lines of every process's log, to explain a failure.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|process| {
                format!(
                    "----- {:?} process log ({}) -----\n{}",
                    process.kind,
                    process.log.display(),
                    log_tail(&process.log)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `outcome`, with the processes' logs appended to its error, so that a failed step
    /// shows what the services did meanwhile.
    pub fn explain<T>(&self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        outcome.map_err(|error| anyhow::anyhow!("{error:#}\n\n{}", self.logs()))
    }
}

impl Drop for ProcessSuite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for process in &self.processes {
            if let Ok(mut child) = process.child.lock() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// Starts the processes of one suite.
struct Launcher<'a> {
    binary: &'a Path,
    suite: &'a ProcessSuite,
    settings: &'a [(&'a str, String)],
}

impl Launcher<'_> {
    /// Spawns `kind` on free ports (the binary binds port 0 and logs what it got), its
    /// stdout and stderr into `<service>.log`. `ingress` is capture's ingress, which the
    /// links in mails point at.
    fn spawn(&self, kind: ServiceKind, ingress: Option<SocketAddr>) -> anyhow::Result<Starting> {
        let name = kind.schema();
        let log = self.suite.directory.join(format!("{name}.log"));
        let stdout = std::fs::File::create(&log)?;
        let stderr = stdout.try_clone()?;
        let data_dir = self.suite.directory.join(name);
        let mut command = Command::new(self.binary);
        // The test's own environment must not reconfigure the services (a developer's
        // LEADFLOW_DATABASE_URL, a RUST_LOG that silences the log this rig reads).
        leadflow::without_inherited_configuration(&mut command);
        command
            .args(["serve", "--service", name])
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--database-url")
            .arg(self.suite.database.url())
            .arg("--redis-url")
            .arg(redis_url())
            .arg("--redis-key-prefix")
            .arg(&self.suite.key_prefix)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("LEADFLOW_INGRESS__LINK_KEY", TEST_LINK_KEY)
            .env("LEADFLOW_LOG__FILTER", "info")
            .env("LEADFLOW_DATABASE_MAX_CONNECTIONS", "4")
            .env("LEADFLOW_HEALTH_CHECK_INTERVAL_MS", "100")
            .env("LEADFLOW_SHUTDOWN_GRACE_MS", "2000");
        if kind == ServiceKind::Capture {
            command.args(["--ingress-listen", "127.0.0.1:0"]);
        }
        if let Some(ingress) = ingress {
            command.env("LEADFLOW_INGRESS__PUBLIC_URL", format!("http://{ingress}"));
        }
        for (variable, value) in self.settings {
            command.env(variable, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|error| anyhow::anyhow!("could not run {}: {error}", self.binary.display()))?;
        Ok(Starting {
            kind,
            child: Some(child),
            log,
        })
    }
}

/// A process spawned but not yet known to serve; killed when dropped before it is.
#[derive(Debug)]
struct Starting {
    kind: ServiceKind,
    /// Taken by the [`ServiceProcess`] it becomes.
    child: Option<Child>,
    log: PathBuf,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Starting {
    /// Waits until the process has logged its addresses and answers its named health entry
    /// as SERVING; a process that exits or never gets there fails with its log.
    async fn ready(mut self) -> anyhow::Result<(ServiceProcess, Bound)> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let (channel, bound) = match self.wait_until_serving(deadline).await {
            Ok(ready) => ready,
            // Dropping `self` kills the process.
            Err(error) => anyhow::bail!(
                "the {:?} process did not come up: {error:#}\n----- its log ({}) -----\n{}",
                self.kind,
                self.log.display(),
                log_tail(&self.log)
            ),
        };
        let child = self
            .child
            .take()
            .ok_or_else(|| anyhow::anyhow!("the {:?} process was handed on twice", self.kind))?;
        Ok((
            ServiceProcess {
                kind: self.kind,
                child: Mutex::new(child),
                log: self.log.clone(),
                address: bound.address,
                channel,
            },
            bound,
        ))
    }

    async fn wait_until_serving(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<(Channel, Bound)> {
        let bound = loop {
            if let Some(bound) = bound_addresses(&self.log)? {
                break bound;
            }
            self.ensure_alive()?;
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "it did not log {LISTENING_MESSAGE:?} within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let channel = Channel::from_shared(format!("http://{}", bound.address))?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        let mut health = HealthClient::new(channel.clone());
        loop {
            let answer = health
                .check(HealthCheckRequest {
                    service: self.kind.grpc_name().to_owned(),
                })
                .await;
            let last = match answer.map(|response| response.into_inner().status()) {
                Ok(ServingStatus::Serving) => return Ok((channel, bound)),
                Ok(status) => format!("{status:?}"),
                Err(status) => format!("{status}"),
            };
            self.ensure_alive()?;
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} was not SERVING within {START_TIMEOUT:?}; last answer: {last}",
                self.kind.grpc_name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn ensure_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            anyhow::bail!("it was already handed on");
        };
        match child.try_wait()? {
            Some(status) => anyhow::bail!("it exited with {status}"),
            None => Ok(()),
        }
    }
}

/// The addresses in the process's "leadflow listening" line, once it is in the log.
fn bound_addresses(log: &Path) -> anyhow::Result<Option<Bound>> {
    let text = std::fs::read_to_string(log)?;
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if entry["message"] != LISTENING_MESSAGE {
            continue;
        }
        let address = entry["address"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a listening line without its address: {line}"))?
            .parse()?;
        // Logged as an optional value: `Some(127.0.0.1:8080)` or `None`.
        let ingress = entry["ingress"]
            .as_str()
            .map(|ingress| {
                ingress
                    .strip_prefix("Some(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .unwrap_or(ingress)
            })
            .filter(|ingress| *ingress != "None")
            .map(str::parse)
            .transpose()?;
        return Ok(Some(Bound { address, ingress }));
    }
    Ok(None)
}

/// The last lines of a log file, each JSON entry as one readable line, or why the file
/// cannot be read.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let skipped = lines.len().saturating_sub(LOG_LINES_SHOWN);
            let mut tail = Vec::with_capacity(LOG_LINES_SHOWN + 1);
            if skipped > 0 {
                tail.push(format!("[{skipped} earlier lines left out]"));
            }
            tail.extend(lines[skipped..].iter().map(|line| readable(line)));
            tail.join("\n")
        }
        Err(error) => format!("[the log cannot be read: {error}]"),
    }
}

/// A JSON log entry as `time LEVEL target: message field=value ...`, without the span
/// context that makes the JSON lines long; any other line as it is.
fn readable(line: &str) -> String {
    let Ok(serde_json::Value::Object(entry)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return line.to_owned();
    };
    let text = |name: &str| {
        entry
            .get(name)
            .and_then(|value| value.as_str())
            .unwrap_or("")
    };
    let mut readable = format!(
        "{} {} {}: {}",
        text("timestamp"),
        text("level"),
        text("target"),
        text("message")
    );
    for (name, value) in &entry {
        if matches!(
            name.as_str(),
            "timestamp" | "level" | "target" | "message" | "span" | "spans"
        ) {
            continue;
        }
        match value.as_str() {
            Some(value) => readable.push_str(&format!(" {name}={value}")),
            None => readable.push_str(&format!(" {name}={value}")),
        }
    }
    readable
}
