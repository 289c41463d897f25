//! The command line: `leadflow serve` and `leadflow migrate`, whose flags override the
//! configuration file and the `LEADFLOW_*` environment variables; the console commands that
//! call a running suite (import, lead, reps, report); and `leadflow demo`.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use leadflow_platform::LogFormat;
use secrecy::SecretString;
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
    /// Seed a realistic setup, simulate months of synthetic leads through it, and print the
    /// funnel it produced: the quickest way to see what leadflow does.
    Demo(DemoArgs),
    /// Import leads from a CSV file through a running suite, one row per lead.
    Import(ImportArgs),
    /// Show one lead: its profile and contacts, score with its explanation, class and stage
    /// history, and its assignments.
    Lead(LeadArgs),
    /// List the reps with their load, and the teams with their queues.
    Reps(RepsArgs),
    /// Print a report: the funnel, the forecast, the heat map, nurture mail or routing.
    Report(ReportArgs),
    /// Measure throughput, latency and memory of a suite it starts, each figure beside a
    /// baseline of PostgreSQL, SQLite or gRPC alone measured in the same run.
    Bench(BenchArgs),
}

/// Flags of `leadflow bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The small profile: fewer leads and shorter runs, about two minutes.
    #[arg(long)]
    pub quick: bool,

    /// Measure the production mode on this PostgreSQL server: the bench creates a scratch
    /// database there (the user needs CREATEDB) and drops it afterwards. Without it the
    /// embedded mode is measured.
    #[arg(long, value_name = "URL", requires = "redis_url")]
    pub database_url: Option<String>,

    /// The Redis server of the production mode; the bench uses a key prefix of its own and
    /// removes its keys afterwards.
    #[arg(long, value_name = "URL", requires = "database_url")]
    pub redis_url: Option<String>,

    /// Where the JSON summary is written; bench-MODE.json when absent.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Serve the empty TrackActivity handler the unary figure is measured against, and print
    /// its address; the bench starts this itself.
    #[arg(long, hide = true)]
    pub empty_server: bool,

    /// Measure only the figure of this name (ingest, unary, score_latency, speed_to_lead,
    /// nurture_dispatch, memory, scale), for iterating on one.
    #[arg(long, value_name = "NAME", hide = true)]
    pub only: Option<String>,

    /// Seed this many contacts for the scale figure instead of the profile's, with as many
    /// activities each, to show how the figure scales.
    #[arg(long, value_name = "COUNT", hide = true)]
    pub scale_contacts: Option<usize>,
}

/// How a console command prints what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Tables for a person at a terminal.
    #[default]
    Table,
    /// The contract's own JSON mapping of the answers, for scripts.
    Json,
}

/// Flags of every command that calls a running suite.
#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// The suite's gRPC address.
    #[arg(
        long,
        env = "LEADFLOW_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,

    /// Tables or JSON.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,

    /// The bearer token sent with every call, when the suite requires one (its tokens
    /// file names the scopes it has). Prefer the variable: a flag shows in the process list.
    #[arg(
        long,
        env = "LEADFLOW_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        value_parser = secret
    )]
    pub token: Option<SecretString>,

    /// For an `https://` server: the PEM CA its certificate must chain to (mutual TLS).
    #[arg(long, env = "LEADFLOW_TLS__CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// For an `https://` server that requires client certificates: this client's PEM
    /// certificate, signed by the server's CA.
    #[arg(long, env = "LEADFLOW_TLS__CERT_FILE", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,

    /// The PEM private key of `--cert-file`.
    #[arg(long, env = "LEADFLOW_TLS__KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// A flag's value held as a secret, so it never prints.
fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// Flags of `leadflow demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many synthetic leads arrive over the simulated time.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub leads: u32,

    /// How many months are simulated, ending with the current month.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub months: u32,

    /// The seed of the simulation: the same seed simulates the same leads.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,

    /// Keep the suite's files here (SQLite stores and mails) instead of a temporary folder
    /// removed afterwards; must be empty or absent.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Tables or JSON.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Flags of `leadflow import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The CSV file: a header row naming the columns (email, first_name, last_name,
    /// buyer_role, job_title, seniority, department, phone, language, time_zone,
    /// company_name, web_domain, site, industry, employee_count, revenue_band, country_code,
    /// region, utm_source, utm_medium, utm_campaign, consent_wording_version, consent_given_at,
    /// consent_confirmed, consent_evidence; any other column becomes a custom field).
    pub file: PathBuf,

    /// The product (offering) the leads are about.
    #[arg(long)]
    pub product: Option<String>,

    /// Where the leads came from, e.g. trade-fair.
    #[arg(long, default_value = "import")]
    pub source: String,

    /// Check every row without writing anything.
    #[arg(long)]
    pub validate_only: bool,

    /// The suite and the output.
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// Flags of `leadflow lead`.
#[derive(Debug, Clone, Args)]
pub struct LeadArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LeadCommand,
}

/// The `leadflow lead` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum LeadCommand {
    /// Show one lead.
    Show(LeadShowArgs),
}

/// Flags of `leadflow lead show`.
#[derive(Debug, Clone, Args)]
pub struct LeadShowArgs {
    /// The lead id.
    pub lead_id: String,

    /// The product its score, class and stage are shown for.
    #[arg(long, default_value = "default")]
    pub product: String,

    /// The suite and the output.
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// Flags of `leadflow reps`.
#[derive(Debug, Clone, Args)]
pub struct RepsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RepsCommand,
}

/// The `leadflow reps` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RepsCommand {
    /// List the reps with their load and the teams with their queues.
    List(ConsoleArgs),
}

/// Flags of `leadflow report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Which report.
    #[command(subcommand)]
    pub command: ReportCommand,
}

/// The `leadflow report` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ReportCommand {
    /// Leads per class and stage, conversion rates and durations per period, segments and
    /// campaigns.
    Funnel(FunnelArgs),
    /// The closes expected next period, and the leads needed for a target.
    Forecast(ForecastArgs),
    /// The leads per profile grade and engagement level.
    HeatMap(ProductArgs),
    /// Nurture mail sent, opened and clicked, per track, cell and item.
    Nurture(WindowArgs),
    /// Speed to lead, acceptance, rejections, SLA breaches and the load per rep.
    Routing(WindowArgs),
}

/// Flags of the reports over a time window.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// The first day reported (YYYY-MM-DD); by default all time.
    #[arg(long, value_name = "DATE")]
    pub from: Option<chrono::NaiveDate>,

    /// The first day not reported (YYYY-MM-DD); by default now.
    #[arg(long, value_name = "DATE")]
    pub to: Option<chrono::NaiveDate>,

    /// The product and the suite.
    #[command(flatten)]
    pub product: ProductArgs,
}

/// The length of a report period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeriodArg {
    /// Calendar weeks.
    Week,
    /// Calendar months.
    Month,
    /// Calendar quarters.
    Quarter,
    /// Half-years.
    HalfYear,
}

/// A dimension a funnel is segmented by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SegmentArg {
    /// The lead's first source.
    Source,
    /// Employee-count bands.
    CompanySize,
    /// The industry.
    Industry,
    /// The region.
    Region,
}

/// Flags of the reports that concern one product.
#[derive(Debug, Clone, Args)]
pub struct ProductArgs {
    /// The product.
    #[arg(long, default_value = "default")]
    pub product: String,

    /// The suite and the output.
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// Flags of `leadflow report funnel`.
#[derive(Debug, Clone, Args)]
pub struct FunnelArgs {
    /// The first day reported (YYYY-MM-DD); by default six periods back.
    #[arg(long, value_name = "DATE")]
    pub from: Option<chrono::NaiveDate>,

    /// The first day not reported (YYYY-MM-DD); by default now.
    #[arg(long, value_name = "DATE")]
    pub to: Option<chrono::NaiveDate>,

    /// The length of each period.
    #[arg(long, value_enum, default_value_t = PeriodArg::Month)]
    pub period: PeriodArg,

    /// Also report each segment of this dimension.
    #[arg(long, value_enum)]
    pub segment_by: Option<SegmentArg>,

    /// The product and the suite.
    #[command(flatten)]
    pub product: ProductArgs,
}

/// Flags of `leadflow report forecast`.
#[derive(Debug, Clone, Args)]
pub struct ForecastArgs {
    /// The length of the forecast period (and of the periods its rates are measured over).
    #[arg(long, value_enum, default_value_t = PeriodArg::Month)]
    pub period: PeriodArg,

    /// A target number of closes, to compute the leads it needs.
    #[arg(long, default_value_t = 0)]
    pub target_closes: u32,

    /// The product and the suite.
    #[command(flatten)]
    pub product: ProductArgs,
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
