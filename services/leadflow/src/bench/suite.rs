//! The suite under measurement, started as production runs it: this binary once per service
//! (`leadflow serve --service NAME`) on a scratch PostgreSQL database and its own Redis key
//! prefix, or once embedded (`leadflow serve` on SQLite files in a scratch folder). The load
//! generator is this process, so it never shares a runtime with the services it measures.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use sqlx::{Connection, Executor, PgConnection};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{EventReader, ServiceKind, console::Clients};

use super::BenchError;

/// The message the binary logs once it is bound, with its addresses.
const LISTENING_MESSAGE: &str = "leadflow listening";

/// How long a process may take to bind, migrate and report SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the production mode keeps its records and hot state.
#[derive(Debug, Clone)]
pub struct ProductionBackends {
    /// A PostgreSQL URL whose user may create databases; the bench makes its own.
    pub admin_database_url: String,
    /// The Redis URL; the bench keeps under a key prefix of its own.
    pub redis_url: String,
}

/// One running `leadflow serve` process.
#[derive(Debug)]
pub struct SuiteProcess {
    /// What it runs: one service's schema name, or "suite" for all four.
    pub name: &'static str,
    child: Child,
    /// Its gRPC address.
    pub address: SocketAddr,
    log: PathBuf,
}

impl SuiteProcess {
    /// Its resident memory now, in bytes, from /proc.
    pub fn resident_bytes(&self) -> Option<u64> {
        resident_bytes(self.child.id())
    }

    /// Fails with the end of its log when it has exited.
    pub fn ensure_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Suite(format!(
                "{} exited with {status}; its log ends:\n{}",
                self.name,
                log_tail(&self.log)
            ))),
            Err(error) => Err(BenchError::Suite(error.to_string())),
        }
    }
}

impl Drop for SuiteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The suite's processes and the scratch stores they run on.
#[derive(Debug)]
pub struct Suite {
    /// The processes: four in production, one embedded.
    pub processes: Vec<SuiteProcess>,
    /// The scratch folder: logs, SQLite files, mail.
    pub directory: PathBuf,
    /// The scratch database's URL, in production.
    pub database_url: Option<String>,
    /// The Redis URL and key prefix, in production.
    pub redis: Option<(String, String)>,
    database_name: Option<String>,
    admin_database_url: Option<String>,
    /// The consumer groups' lag, read from this process; opened once the suite serves.
    events: Option<EventReader>,
}

impl Suite {
    /// Starts the suite: in production mode on `backends`, embedded without. A suite that
    /// does not come up leaves no scratch database or keys behind.
    pub async fn start(backends: Option<&ProductionBackends>) -> Result<Self, BenchError> {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let directory = std::env::temp_dir().join(format!("leadflow-bench-{}", &run_id[..12]));
        std::fs::create_dir_all(&directory)?;
        let mut suite = Self {
            processes: Vec::new(),
            directory,
            database_url: None,
            redis: None,
            database_name: None,
            admin_database_url: None,
            events: None,
        };
        if let Some(backends) = backends {
            let database_name = format!("leadflow_bench_{}", &run_id[..12]);
            let mut admin = PgConnection::connect(&backends.admin_database_url).await?;
            admin
                .execute(format!(r#"CREATE DATABASE "{database_name}""#).as_str())
                .await?;
            admin.close().await?;
            suite.database_url = Some(replace_database(
                &backends.admin_database_url,
                &database_name,
            ));
            suite.database_name = Some(database_name);
            suite.admin_database_url = Some(backends.admin_database_url.clone());
            suite.redis = Some((
                backends.redis_url.clone(),
                format!("leadflow-bench-{}", &run_id[..12]),
            ));
        }
        match suite.launch().await {
            Ok(()) => Ok(suite),
            Err(error) => {
                let _ = suite.finish().await;
                Err(error)
            }
        }
    }

    /// Starts the processes and waits until each serves.
    async fn launch(&mut self) -> Result<(), BenchError> {
        let binary = std::env::current_exe()?;
        let (Some(database_url), Some((redis_url, key_prefix))) = (&self.database_url, &self.redis)
        else {
            let mut command = Command::new(&binary);
            command
                .args(["serve", "--ingress-listen", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(self.directory.join("data"));
            let process = spawn(command, "suite", &self.directory, &[])?;
            self.processes.push(ready(process, None).await?);
            self.events = Some(self.open_events().await?);
            return Ok(());
        };
        // The services sign their mail links; a run gets a fresh key of its own.
        let link_key = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut starting = Vec::new();
        for kind in ServiceKind::ALL {
            let mut command = Command::new(&binary);
            command
                .args(["serve", "--service", kind.schema()])
                .args(["--database-url", database_url])
                .args(["--redis-url", redis_url])
                .args(["--redis-key-prefix", key_prefix])
                .arg("--data-dir")
                .arg(self.directory.join(kind.schema()));
            if kind == ServiceKind::Capture {
                command.args(["--ingress-listen", "127.0.0.1:0"]);
            }
            // The bench follows no link in a mail; nurturing needs an address to write.
            let settings = [
                ("LEADFLOW_INGRESS__LINK_KEY", link_key.as_str()),
                ("LEADFLOW_INGRESS__PUBLIC_URL", "http://127.0.0.1:9"),
            ];
            starting.push((
                kind,
                spawn(command, kind.schema(), &self.directory, &settings)?,
            ));
        }
        for (kind, process) in starting {
            self.processes.push(ready(process, Some(kind)).await?);
        }
        self.events = Some(self.open_events().await?);
        Ok(())
    }

    /// A reader of the suite's consumer groups: its Redis streams, or its SQLite files.
    async fn open_events(&self) -> Result<EventReader, BenchError> {
        let mut settings = leadflow_platform::Settings {
            data_dir: self.directory.join("data"),
            ..Default::default()
        };
        if let (Some(url), Some((redis_url, prefix))) = (&self.database_url, &self.redis) {
            settings.database_url = Some(url.clone().into());
            settings.redis_url = Some(redis_url.clone().into());
            settings.redis_key_prefix = prefix.clone();
        }
        EventReader::open(&settings)
            .await
            .map_err(|error| BenchError::Suite(error.to_string()))
    }

    /// How far every consumer group of the suite is behind.
    pub async fn lag(&self) -> Result<Vec<leadflow_bus::GroupLag>, BenchError> {
        let events = self
            .events
            .as_ref()
            .ok_or_else(|| BenchError::Suite("the suite is not serving".to_owned()))?;
        events
            .lag_report()
            .await
            .map_err(|error| BenchError::Suite(error.to_string()))
    }

    /// The gRPC address of the process that runs `kind`.
    pub fn address(&self, kind: ServiceKind) -> SocketAddr {
        let index = if self.processes.len() == 1 {
            0
        } else {
            ServiceKind::ALL
                .iter()
                .position(|candidate| *candidate == kind)
                .unwrap_or(0)
        };
        self.processes[index].address
    }

    /// `count` independent connections to the process that runs `kind`: one HTTP/2
    /// connection is one socket and one reader task on each side, so load spreads over
    /// several.
    pub fn channels(&self, kind: ServiceKind, count: usize) -> Result<Vec<Channel>, BenchError> {
        (0..count.max(1))
            .map(|_| channel(self.address(kind)))
            .collect()
    }

    /// Clients of the four services, one connection each.
    pub fn clients(&self) -> Result<Clients, BenchError> {
        Ok(Clients::per_service(
            channel(self.address(ServiceKind::Capture))?,
            channel(self.address(ServiceKind::Scoring))?,
            channel(self.address(ServiceKind::Nurturing))?,
            channel(self.address(ServiceKind::Routing))?,
        ))
    }

    /// Fails when any process has exited.
    pub fn ensure_running(&mut self) -> Result<(), BenchError> {
        self.processes
            .iter_mut()
            .try_for_each(SuiteProcess::ensure_running)
    }

    /// Stops the processes and removes the scratch database, keys and folder.
    pub async fn finish(mut self) -> Result<(), BenchError> {
        self.processes.clear();
        if let (Some(admin_url), Some(name)) = (&self.admin_database_url, &self.database_name) {
            let mut admin = PgConnection::connect(admin_url).await?;
            admin
                .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                .await?;
            admin.close().await?;
        }
        if let Some((redis_url, prefix)) = &self.redis {
            remove_keys(redis_url, prefix).await?;
        }
        let _ = std::fs::remove_dir_all(&self.directory);
        Ok(())
    }
}

/// A lazily connecting channel to `address`.
pub fn channel(address: SocketAddr) -> Result<Channel, BenchError> {
    Ok(Channel::from_shared(format!("http://{address}"))
        .map_err(|error| BenchError::Suite(error.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Every key under `prefix`, walked with SCAN so Redis never blocks on a KEYS.
pub async fn keys_under(
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Result<Vec<String>, BenchError> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(connection)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Deletes every key under `prefix`.
async fn remove_keys(redis_url: &str, prefix: &str) -> Result<(), BenchError> {
    let client = redis::Client::open(redis_url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    for keys in keys_under(&mut connection, prefix).await?.chunks(1_000) {
        let _: () = redis::cmd("UNLINK")
            .arg(keys)
            .query_async(&mut connection)
            .await?;
    }
    Ok(())
}

/// A process spawned but not yet known to serve.
struct Starting {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

fn spawn(
    mut command: Command,
    name: &'static str,
    directory: &Path,
    settings: &[(&str, &str)],
) -> Result<Starting, BenchError> {
    let log = directory.join(format!("{name}.log"));
    let stdout = std::fs::File::create(&log)?;
    let stderr = stdout.try_clone()?;
    // The caller's environment must not reconfigure the suite under measurement.
    crate::without_inherited_configuration(&mut command);
    command.envs(settings.iter().copied());
    command
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        // Info logs per call would measure the terminal, not the suite.
        .env("LEADFLOW_LOG__FILTER", "warn,leadflow=info")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let child = command.spawn()?;
    Ok(Starting { name, child, log })
}

/// Waits until `starting` has logged its address and reports SERVING.
async fn ready(
    mut starting: Starting,
    kind: Option<ServiceKind>,
) -> Result<SuiteProcess, BenchError> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let failed = |starting: &Starting, why: String| {
        BenchError::Suite(format!(
            "{} did not come up: {why}; its log ends:\n{}",
            starting.name,
            log_tail(&starting.log)
        ))
    };
    let address = loop {
        if let Some(address) = listening_address(&starting.log) {
            break address;
        }
        if let Ok(Some(status)) = starting.child.try_wait() {
            return Err(failed(&starting, format!("it exited with {status}")));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(failed(&starting, "it never logged its address".to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut health = HealthClient::new(channel(address)?);
    let service = kind.map(ServiceKind::grpc_name).unwrap_or_default();
    loop {
        let answer = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await;
        if matches!(
            answer.map(|response| response.into_inner().status()),
            Ok(ServingStatus::Serving)
        ) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(failed(&starting, "it never reported SERVING".to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The process is handed on whole; `Starting` has no Drop of its own to undo.
    let Starting { name, child, log } = starting;
    Ok(SuiteProcess {
        name,
        child,
        address,
        log,
    })
}

/// The address in the "leadflow listening" line of a JSON log, once it is there.
fn listening_address(log: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| entry["message"] == LISTENING_MESSAGE)
        .and_then(|entry| {
            entry["address"]
                .as_str()
                .and_then(|address| address.parse().ok())
        })
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The resident set size of process `pid`, from /proc/PID/status.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    proc_bytes(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS",
    )
}

/// The field `name` of a /proc text such as status or meminfo (`Name:   1234 kB`), in bytes.
pub fn proc_bytes(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kilobytes| kilobytes * 1_024)
}

/// `url` with its database name replaced by `database`.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_end = base.find("://").map_or(0, |scheme| scheme + 3);
    let without_path = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{without_path}/{database}?{query}"),
        None => format!("{without_path}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scratch_database_replaces_the_path_and_keeps_the_options() {
        assert_eq!(
            replace_database("postgres://u@h:5432/postgres?sslmode=require", "bench"),
            "postgres://u@h:5432/bench?sslmode=require"
        );
        assert_eq!(
            replace_database("postgres://u@h", "bench"),
            "postgres://u@h/bench"
        );
    }

    #[test]
    fn a_proc_field_is_read_in_bytes() {
        let status = "Name:\tleadflow\nVmRSSX:\t1 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(proc_bytes(status, "VmRSS"), Some(2 * 1024 * 1024));
        assert_eq!(proc_bytes(status, "VmSwap"), None);
    }
}
