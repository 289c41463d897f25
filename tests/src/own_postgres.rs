//! A PostgreSQL server of the test's own: a cluster made with `initdb` in a temporary
//! directory and run with `pg_ctl` on a free port, so that a test can crash and restart it
//! without disturbing the tests that share the machine's server.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// Where the PostgreSQL programs are installed, newest version first: Debian and Ubuntu
/// keep them out of PATH, under `/usr/lib/postgresql/<version>/bin`.
const INSTALL_ROOT: &str = "/usr/lib/postgresql";

/// How long starting or stopping the server may take on a loaded machine.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster of the test's own; stopped, and its directory removed, when dropped.
#[derive(Debug)]
pub struct OwnPostgres {
    bin: PathBuf,
    /// Holds the data directory; it also holds the server's socket and log.
    directory: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root: as root, its programs run as this user.
    run_as: Option<&'static str>,
}

impl OwnPostgres {
    /// Makes a cluster with trust authentication for the user `postgres` and starts it.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = install_bin()?;
        let run_as = is_root()?.then_some("postgres");
        let directory =
            std::env::temp_dir().join(format!("leadflow-postgres-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory)?;
        if let Some(user) = run_as {
            let chowned = Command::new("chown").arg(user).arg(&directory).status()?;
            anyhow::ensure!(chowned.success(), "chown {user} {}", directory.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let postgres = Self {
            bin,
            directory,
            port,
            run_as,
        };
        postgres.run(
            "initdb",
            &[
                "-D",
                &postgres.data().display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ],
        )?;
        postgres.start_again().await?;
        Ok(postgres)
    }

    fn data(&self) -> PathBuf {
        self.directory.join("data")
    }

    /// Runs one PostgreSQL program, as the `postgres` user when we are root; fails with
    /// its output when it fails.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        let output = command.args(args).current_dir(&self.directory).output()?;
        anyhow::ensure!(
            output.status.success(),
            "{program} {args:?} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Starts the server on its port and waits until it accepts connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let data = self.data().display().to_string();
        // fsync off: the data outlives a server crash in the page cache, which is all a
        // test needs, and a loaded CI disk stays out of the timings. Commits stay
        // synchronous, so what a client saw committed survives an immediate stop.
        let options = format!(
            "-p {} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port
        );
        let log = self.directory.join("server.log").display().to_string();
        let timeout = PG_CTL_TIMEOUT.as_secs().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", &timeout, "start",
            ],
        )
        .map_err(|error| anyhow::anyhow!("{error:#}\n----- server log -----\n{}", self.log()))
    }

    /// Stops the server at once, without a checkpoint, as a crash would: its next start
    /// recovers from the write-ahead log. Every connection breaks.
    pub fn crash(&self) -> anyhow::Result<()> {
        let data = self.data().display().to_string();
        let timeout = PG_CTL_TIMEOUT.as_secs().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "-t", &timeout, "stop"],
        )
    }

    /// The URL of the server's `postgres` database, which test databases are made from.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log, to explain a start that failed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.directory.join("server.log"))
            .unwrap_or_else(|error| format!("[no server log: {error}]"))
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// The `bin` directory of the newest PostgreSQL installed under [`INSTALL_ROOT`], or the
/// one of `pg_config` on PATH.
fn install_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(INSTALL_ROOT)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let output = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|error| {
            anyhow::anyhow!("no PostgreSQL under {INSTALL_ROOT} and no pg_config: {error}")
        })?;
    let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    anyhow::ensure!(
        Path::new(&bin).join("initdb").is_file(),
        "no initdb in {} (pg_config --bindir)",
        bin.display()
    );
    Ok(bin)
}

fn is_root() -> anyhow::Result<bool> {
    let output = Command::new("id").arg("-u").output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}
