//! The suite as production runs it: the real `leadflow` binary started once per service
//! (`leadflow serve --service NAME`), all of them on one fresh PostgreSQL database and one
//! Redis key prefix, each on a free port, each logging to a file of its own that a failing
//! test prints. A test may kill a process and start it again on the same ports, and may
//! run the suite on servers of its own ([`Backing`]).

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

use crate::{TEST_LINK_KEY, TestDatabase, admin_database_url, http_request, redis_url};

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

/// The PostgreSQL and Redis servers a suite runs on.
#[derive(Debug, Clone)]
pub struct Backing {
    /// The Redis the processes share, under a key prefix of the suite's own.
    pub redis_url: String,
    /// The maintenance database of the PostgreSQL server the suite's database is made on.
    pub admin_database_url: String,
}

impl Backing {
    /// The servers the whole test run shares (`LEADFLOW_TEST_*`).
    pub fn shared() -> Self {
        Self {
            redis_url: redis_url(),
            admin_database_url: admin_database_url(),
        }
    }
}

/// One `leadflow serve --service NAME` process.
#[derive(Debug)]
struct ServiceProcess {
    kind: ServiceKind,
    child: Mutex<Child>,
    /// The log of the current run; each restart logs to a file of its own.
    log: PathBuf,
    address: SocketAddr,
    /// Capture's ingress address; None for the other services.
    ingress: Option<SocketAddr>,
    /// How often the process was started: 1 for the first run.
    run: u32,
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
    binary: PathBuf,
    /// The extra `LEADFLOW_*` variables of every process, kept for restarts.
    settings: Vec<(String, String)>,
    redis_url: String,
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
        Self::start_on(settings, Backing::shared()).await
    }

    /// Starts the suite as [`ProcessSuite::start`] does, on the servers of `backing`.
    pub async fn start_on(settings: &[(&str, String)], backing: Backing) -> anyhow::Result<Self> {
        let binary = leadflow_binary()?;
        let database = TestDatabase::create_on(&backing.admin_database_url).await?;
        let directory =
            std::env::temp_dir().join(format!("leadflow-processes-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory)?;
        let mut suite = Self {
            processes: Vec::with_capacity(ServiceKind::ALL.len()),
            ingress_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            key_prefix: format!("test:{}", uuid::Uuid::new_v4().simple()),
            binary,
            settings: settings
                .iter()
                .map(|(variable, value)| ((*variable).to_owned(), value.clone()))
                .collect(),
            redis_url: backing.redis_url,
            directory,
            database,
        };
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let capture = suite.spawn(ServiceKind::Capture, any_port, Some(any_port), 1)?;
        let (capture, bound) = capture.ready().await?;
        suite.ingress_address = bound.ingress.ok_or_else(|| {
            anyhow::anyhow!(
                "capture logged no ingress address:\n{}",
                log_tail(&capture.log)
            )
        })?;
        suite.processes.push(capture);
        // Started together, so that their migrations overlap as they do on a cluster.
        let mut starting = Vec::new();
        for kind in [
            ServiceKind::Scoring,
            ServiceKind::Nurturing,
            ServiceKind::Routing,
        ] {
            starting.push(suite.spawn(kind, any_port, None, 1)?);
        }
        for process in starting {
            let (process, _) = process.ready().await?;
            suite.processes.push(process);
        }
        Ok(suite)
    }

    /// Kills the process running `kind` with SIGKILL, as the kernel or a node failure
    /// would: no drain, no graceful shutdown. [`ProcessSuite::restart`] brings it back.
    pub fn kill(&self, kind: ServiceKind) -> anyhow::Result<()> {
        let mut child = self
            .process(kind)
            .child
            .lock()
            .map_err(|_| anyhow::anyhow!("a poisoned process lock"))?;
        // Child::kill sends SIGKILL on Unix; a process that already died has nothing left.
        if child.try_wait()?.is_none() {
            child.kill()?;
        }
        child.wait()?;
        Ok(())
    }

    /// Starts `kind` again on the ports it had, so that the clients' channels reconnect to
    /// it, after [`ProcessSuite::kill`] or a crash; waits until it reports SERVING.
    pub async fn restart(&mut self, kind: ServiceKind) -> anyhow::Result<()> {
        self.kill(kind)?;
        let process = self.process(kind);
        let starting = self.spawn(kind, process.address, process.ingress, process.run + 1)?;
        let (restarted, _) = starting.ready().await?;
        let index = self
            .processes
            .iter()
            .position(|process| process.kind == kind)
            .expect("a process per service");
        self.processes[index] = restarted;
        Ok(())
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

impl ProcessSuite {
    /// Spawns `kind` listening on `listen` (port 0: the binary binds a free port and logs
    /// what it got), capture's ingress on `ingress_listen`; its stdout and stderr go into
    /// `<service>.log`, from its second run on into `<service>.<run>.log`. The others get
    /// capture's ingress address, which the links in mails point at.
    fn spawn(
        &self,
        kind: ServiceKind,
        listen: SocketAddr,
        ingress_listen: Option<SocketAddr>,
        run: u32,
    ) -> anyhow::Result<Starting> {
        let name = kind.schema();
        let log = match run {
            1 => self.directory.join(format!("{name}.log")),
            run => self.directory.join(format!("{name}.{run}.log")),
        };
        let stdout = std::fs::File::create(&log)?;
        let stderr = stdout.try_clone()?;
        let data_dir = self.directory.join(name);
        let mut command = Command::new(&self.binary);
        // The test's own environment must not reconfigure the services (a developer's
        // LEADFLOW_DATABASE_URL, a RUST_LOG that silences the log this rig reads).
        leadflow::without_inherited_configuration(&mut command);
        command
            .args(["serve", "--service", name])
            .arg("--listen")
            .arg(listen.to_string())
            .args(["--log-format", "json"])
            .arg("--database-url")
            .arg(self.database.url())
            .arg("--redis-url")
            .arg(&self.redis_url)
            .arg("--redis-key-prefix")
            .arg(&self.key_prefix)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("LEADFLOW_INGRESS__LINK_KEY", TEST_LINK_KEY)
            .env("LEADFLOW_LOG__FILTER", "info")
            .env("LEADFLOW_DATABASE_MAX_CONNECTIONS", "4")
            .env("LEADFLOW_HEALTH_CHECK_INTERVAL_MS", "100")
            .env("LEADFLOW_SHUTDOWN_GRACE_MS", "2000");
        if let Some(ingress_listen) = ingress_listen {
            command
                .arg("--ingress-listen")
                .arg(ingress_listen.to_string());
        }
        if kind != ServiceKind::Capture {
            command.env(
                "LEADFLOW_INGRESS__PUBLIC_URL",
                format!("http://{}", self.ingress_address),
            );
        }
        for (variable, value) in &self.settings {
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
            run,
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
    run: u32,
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
                ingress: bound.ingress,
                run: self.run,
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
