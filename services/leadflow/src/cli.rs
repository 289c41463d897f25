//! The command line: `leadflow serve` and `leadflow migrate`, whose flags override the
//! configuration file and the `LEADFLOW_*` environment variables.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use leadflow_platform::LogFormat;
use serde::Serialize;

use crate::ServiceKind;

/// leadflow: B2B lead management. Captures leads from forms and imports, scores their fit
/// and engagement, nurtures them with the right content, and routes sales-ready leads to
/// the right rep within seconds.
#[derive(Debug, Parser)]
#[command(name = "leadflow", version, propagate_version = true)]
pub struct Cli {
    /// A TOML configuration file; its values sit between the defaults and the
    /// LEADFLOW_* environment variables.
    #[arg(long, global = true, env = "LEADFLOW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the services: all four in one process, or one with --service.
    Serve(ServeArgs),
    /// Apply the database migrations of every service (or one) and exit.
    Migrate(MigrateArgs),
    /// Inspect the event streams.
    Events(EventsArgs),
}

/// Flags of `leadflow events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: EventsCommand,
}

impl EventsArgs {
    /// The backend flags of whichever subcommand was given.
    pub fn backends(&self) -> &BackendArgs {
        match &self.command {
            EventsCommand::Lag(backends) => backends,
            EventsCommand::DeadLetters(args) => &args.backends,
        }
    }
}

/// The `leadflow events` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum EventsCommand {
    /// Per consumer group and stream: entries pending (delivered, not acknowledged), the
    /// age of the oldest, entries not yet delivered, and events in the dead-letter stream.
    Lag(BackendArgs),
    /// The newest events each consumer group gave up on, with the error that made it.
    DeadLetters(DeadLetterArgs),
}

/// Flags of `leadflow events dead-letters`.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterArgs {
    /// How many entries to show per group.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,

    /// Redis and logs.
    #[command(flatten)]
    pub backends: BackendArgs,
}

/// Flags shared by every subcommand that reaches the databases.
#[derive(Debug, Clone, Args, Serialize)]
pub struct BackendArgs {
    /// The PostgreSQL URL, e.g. postgres://leadflow@db:5432/leadflow.
    #[arg(
        long,
        env = "LEADFLOW_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,

    /// The Redis URL, e.g. redis://cache:6379.
    #[arg(
        long,
        env = "LEADFLOW_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,

    /// The prefix of every Redis key, so that several installations can share one Redis.
    #[arg(long, env = "LEADFLOW_REDIS_KEY_PREFIX", value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_key_prefix: Option<String>,

    /// Log output: human-readable lines or one JSON object per line.
    #[arg(long, env = "LEADFLOW_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(skip)]
    pub log_format: Option<LogFormat>,
}

/// Flags of `leadflow serve`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ServeArgs {
    /// Run only this service (one process per service, as on Kubernetes); by default all
    /// four run in this process on one port.
    #[arg(long, value_enum, value_name = "NAME")]
    #[serde(skip)]
    pub service: Option<ServiceKind>,

    /// The address to listen on for gRPC; port 0 picks a free port.
    #[arg(long, env = "LEADFLOW_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,

    /// The address capture's HTTP ingress (form posts, mail links) listens on; port 0
    /// picks a free port.
    #[arg(long, env = "LEADFLOW_INGRESS__LISTEN", value_name = "ADDR")]
    #[serde(skip)]
    pub ingress_listen: Option<SocketAddr>,

    /// Where files of the embedded mode are kept.
    #[arg(long, env = "LEADFLOW_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,

    /// Databases and logs.
    #[command(flatten)]
    #[serde(flatten)]
    pub backends: BackendArgs,
}

/// Flags of `leadflow migrate`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct MigrateArgs {
    /// Migrate only this service's schema.
    #[arg(long, value_enum, value_name = "NAME")]
    #[serde(skip)]
    pub service: Option<ServiceKind>,

    /// Databases and logs.
    #[command(flatten)]
    #[serde(flatten)]
    pub backends: BackendArgs,
}

impl ServeArgs {
    /// The services this process runs.
    pub fn services(&self) -> Vec<ServiceKind> {
        self.service
            .map_or_else(|| ServiceKind::ALL.to_vec(), |one| vec![one])
    }
}

impl MigrateArgs {
    /// The services whose schemas are migrated.
    pub fn services(&self) -> Vec<ServiceKind> {
        self.service
            .map_or_else(|| ServiceKind::ALL.to_vec(), |one| vec![one])
    }
}
