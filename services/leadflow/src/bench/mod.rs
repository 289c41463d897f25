//! `leadflow bench`: starts the suite as it is deployed (four processes on PostgreSQL and
//! Redis, or one embedded), loads it through its gRPC API with many concurrent clients, and
//! measures each figure beside a baseline taken in the same run on the same machine: what
//! PostgreSQL, SQLite or tonic alone do. Prints a table and writes every figure and ratio
//! as JSON.

mod baseline;
mod dispatch;
mod figures;
mod scale;
mod suite;

use std::{path::PathBuf, time::Instant};

use serde::Serialize;

use crate::{cli::BenchArgs, console::ConsoleError};

pub use baseline::serve_empty_capture;
use suite::{ProductionBackends, Suite};

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The suite or a baseline could not be started or driven.
    #[error("{0}")]
    Suite(String),
    /// The suite refused work the bench sent.
    #[error("the suite refused {0}")]
    Refused(String),
    /// A call failed.
    #[error(transparent)]
    Call(#[from] ConsoleError),
    /// PostgreSQL or SQLite failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A file or process could not be used.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How much load a run generates.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// The profile's name.
    pub name: &'static str,
    /// Leads imported before the figures run, that activities are about.
    pub leads: usize,
    /// Concurrent client connections.
    pub clients: usize,
    /// Activities streamed for the ingest figure.
    pub ingest_activities: usize,
    /// Activities per TrackActivities stream.
    pub ingest_batch: usize,
    /// How long each unary run lasts.
    pub unary_seconds: f64,
    /// Calls in flight in the unary runs.
    pub unary_concurrency: usize,
    /// Activities per second offered in the latency figure.
    pub latency_rate: u32,
    /// How long the latency figure offers them.
    pub latency_seconds: f64,
    /// Leads handed over in each speed-to-lead run.
    pub leads_to_route: usize,
    /// Hand-overs per second offered while speed to lead is measured.
    pub route_rate: f64,
    /// Reps the hand-overs are spread over.
    pub reps: usize,
    /// Nurture enrollments seeded for the dispatch figure.
    pub dispatch_enrollments: usize,
    /// How many of them fall due at once.
    pub dispatch_due: usize,
    /// Contacts (one lead each) seeded in SQL for the scale figure.
    pub scale_contacts: usize,
    /// Activities, each with its ledger entry, seeded for the scale figure.
    pub scale_activities: usize,
    /// Funnel reports asked for in the scale figure.
    pub scale_report_runs: usize,
    /// GetScore calls on seeded leads in the scale figure.
    pub scale_score_calls: usize,
}

impl Profile {
    /// The full profile.
    pub const FULL: Self = Self {
        name: "full",
        leads: 20_000,
        clients: 8,
        ingest_activities: 200_000,
        ingest_batch: 500,
        unary_seconds: 20.0,
        unary_concurrency: 64,
        latency_rate: 10_000,
        latency_seconds: 20.0,
        leads_to_route: 2_000,
        route_rate: 50.0,
        reps: 20,
        dispatch_enrollments: 1_000_000,
        dispatch_due: 100_000,
        scale_contacts: 10_000_000,
        scale_activities: 100_000_000,
        scale_report_runs: 5,
        scale_score_calls: 10_000,
    };

    /// The quick profile, about two minutes.
    pub const QUICK: Self = Self {
        name: "quick",
        leads: 1_000,
        clients: 4,
        ingest_activities: 6_000,
        ingest_batch: 500,
        unary_seconds: 3.0,
        unary_concurrency: 32,
        latency_rate: 10_000,
        latency_seconds: 1.0,
        leads_to_route: 200,
        route_rate: 50.0,
        reps: 10,
        dispatch_enrollments: 20_000,
        dispatch_due: 2_000,
        scale_contacts: 20_000,
        scale_activities: 200_000,
        scale_report_runs: 3,
        scale_score_calls: 10_000,
    };
}

/// One measured figure, with its baseline and target.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// A short stable name, e.g. `ingest`.
    pub name: String,
    /// What was measured.
    pub what: String,
    /// The measured value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// What the baseline is.
    pub baseline_what: Option<String>,
    /// The baseline's value, in the same unit.
    pub baseline: Option<f64>,
    /// value / baseline.
    pub ratio: Option<f64>,
    /// The target, in words.
    pub target: Option<String>,
    /// Whether the target is met.
    pub met: Option<bool>,
    /// Further numbers: sizes, percentiles, rates.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Figure {
    fn new(name: &str, what: &str, value: f64, unit: &str) -> Self {
        Self {
            name: name.to_owned(),
            what: what.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline_what: None,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
            details: serde_json::Map::new(),
        }
    }

    fn beside(mut self, what: &str, baseline: f64) -> Self {
        self.baseline_what = Some(what.to_owned());
        self.baseline = Some(baseline);
        self.ratio = Some(self.value / baseline);
        self
    }

    fn target_ratio(mut self, at_least: f64) -> Self {
        self.target = Some(format!("ratio >= {at_least}"));
        self.met = self.ratio.map(|ratio| ratio >= at_least);
        self
    }

    fn target_at_most(mut self, limit: f64) -> Self {
        self.target = Some(format!("<= {limit} {}", self.unit));
        self.met = Some(self.value <= limit);
        self
    }

    fn detail(mut self, name: &str, value: f64) -> Self {
        self.details
            .insert(name.to_owned(), serde_json::json!(value));
        self
    }
}

/// What one run measured, as written to the JSON summary.
#[derive(Debug, Serialize)]
struct Summary {
    mode: &'static str,
    profile: Profile,
    machine: Machine,
    started_at: String,
    seconds: f64,
    figures: Vec<Figure>,
}

/// The machine the figures come from.
#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_bytes: u64,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            memory_bytes: suite::proc_bytes(&meminfo, "MemTotal").unwrap_or(0),
        }
    }
}

/// Runs the benchmark.
pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let mut profile = if args.quick {
        Profile::QUICK
    } else {
        Profile::FULL
    };
    if let Some(contacts) = args.scale_contacts {
        profile.scale_activities =
            profile.scale_activities / profile.scale_contacts.max(1) * contacts;
        profile.scale_contacts = contacts;
    }
    let backends = match (&args.database_url, &args.redis_url) {
        (Some(database), Some(redis)) => Some(ProductionBackends {
            admin_database_url: database.clone(),
            redis_url: redis.clone(),
        }),
        _ => None,
    };
    let mode = if backends.is_some() {
        "production"
    } else {
        "embedded"
    };
    let started_at = chrono::Utc::now().to_rfc3339();
    let clock = Instant::now();
    progress(&format!(
        "starting the suite ({mode}, {} profile)",
        profile.name
    ));
    let mut suite = Suite::start(backends.as_ref()).await?;
    let outcome = measure(&mut suite, &profile, args.only.as_deref()).await;
    let finished = suite.finish().await;
    let figures = outcome?;
    finished?;
    let summary = Summary {
        mode,
        profile,
        machine: Machine::read(),
        started_at,
        seconds: clock.elapsed().as_secs_f64(),
        figures,
    };
    print_table(&summary)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench-{mode}.json")));
    std::fs::write(
        &output,
        serde_json::to_vec_pretty(&summary).map_err(std::io::Error::other)?,
    )?;
    progress(&format!("wrote {}", output.display()));
    Ok(())
}

async fn measure(
    suite: &mut Suite,
    profile: &Profile,
    only: Option<&str>,
) -> Result<Vec<Figure>, BenchError> {
    let wanted = |figure: &str| only.is_none_or(|only| only == figure);
    let clients = suite.clients()?;
    let form_id = figures::install(&clients, profile.reps).await?;
    let capture_channels = suite.channels(crate::ServiceKind::Capture, profile.clients)?;
    let mut leads = figures::Leads::default();
    let mut probes = figures::Leads::default();
    if wanted("ingest") || wanted("unary") || wanted("score_latency") {
        progress(&format!("importing {} leads", profile.leads));
        leads = figures::preload(&capture_channels, profile.leads, "warm").await?;
        let probe_count = (profile.latency_seconds * 100.0) as usize;
        probes = figures::preload(&capture_channels, probe_count, "probe").await?;
    }
    let mut figures = Vec::new();
    if wanted("ingest") {
        progress("ingest");
        figures.push(figures::ingest(suite, profile, &leads).await?);
        suite.ensure_running()?;
    }
    if wanted("unary") {
        progress("unary");
        figures.push(figures::unary(suite, profile, &leads).await?);
        suite.ensure_running()?;
    }
    if wanted("score_latency") {
        progress("score latency");
        figures.push(figures::score_latency(suite, profile, &leads, &probes).await?);
        suite.ensure_running()?;
    }
    if wanted("speed_to_lead") {
        progress("speed to lead");
        figures.extend(figures::speed_to_lead(suite, profile, &form_id).await?);
        suite.ensure_running()?;
    }
    if wanted("nurture_dispatch") {
        progress("nurture dispatch");
        figures.extend(dispatch::nurture_dispatch(suite, profile).await?);
        suite.ensure_running()?;
    }
    if wanted("memory") {
        progress("memory");
        let hot_leads = leads.rows.len() + probes.rows.len() + 2 * profile.leads_to_route;
        figures.extend(figures::memory(suite, hot_leads).await?);
    }
    // Last: the millions of rows it seeds would weigh on every figure after it.
    if wanted("scale") {
        progress("scale");
        figures.extend(scale::scale(suite, profile).await?);
        suite.ensure_running()?;
    }
    Ok(figures)
}

/// Prints a step with the seconds since the first step, so a slow phase shows.
fn progress(message: &str) {
    use std::io::Write;
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let seconds = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    let _ = writeln!(std::io::stderr(), "bench: {seconds:>6.1} s  {message}");
}

fn number(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn print_table(summary: &Summary) -> Result<(), BenchError> {
    let mut table = crate::console::table::Table::new(&[
        "FIGURE", "LEADFLOW", "UNIT", "BASELINE", "RATIO", "TARGET", "MET",
    ]);
    for figure in &summary.figures {
        table.row([
            figure.name.clone(),
            number(figure.value),
            figure.unit.clone(),
            figure.baseline.map_or_else(|| "-".to_owned(), number),
            figure
                .ratio
                .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}")),
            figure.target.clone().unwrap_or_else(|| "-".to_owned()),
            match figure.met {
                Some(true) => "yes".to_owned(),
                Some(false) => "no".to_owned(),
                None => "-".to_owned(),
            },
        ]);
    }
    let mut text = format!(
        "leadflow bench: {} mode, {} profile, {} CPUs ({}), {:.0} s\n\n",
        summary.mode,
        summary.profile.name,
        summary.machine.cpus,
        summary.machine.cpu_model,
        summary.seconds
    );
    text.push_str(&table.render());
    text.push('\n');
    for figure in &summary.figures {
        if let Some(what) = &figure.baseline_what {
            text.push_str(&format!(
                "  {}: {} (baseline: {what})\n",
                figure.name, figure.what
            ));
        } else {
            text.push_str(&format!("  {}: {}\n", figure.name, figure.what));
        }
    }
    crate::console::print(&text)?;
    Ok(())
}
