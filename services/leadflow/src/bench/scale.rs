//! Figure 6, scale: scoring's records seeded with millions of contacts and activities straight
//! in SQL, then the funnel report and GetScore measured over the gRPC API beside a bare
//! aggregate and a bare key lookup on the same data.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use leadflow_proto::{
    common::v1 as common,
    scoring::v1::{self as scoring, scoring_service_client::ScoringServiceClient},
};
use prost::Message;
use sqlx::{
    ConnectOptions, Connection, Executor, PgConnection, SqliteConnection,
    postgres::PgConnectOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::{sync::Mutex, task::JoinSet};
use uuid::Uuid;

use crate::{ServiceKind, console::CallResult};

use super::{
    BenchError, Figure, Profile, figures::PRODUCT, figures::percentiles, progress, suite::Suite,
};

/// How far back the seeded leads were created: three years.
const HISTORY_SECONDS: i64 = 3 * 365 * 86_400;
/// The months the measured report covers, the current one included.
const REPORT_MONTHS: u32 = 6;
/// The seeded leads GetScore is asked about: first cold, then again and again warm.
const SAMPLED_LEADS: usize = 1_000;
/// GetScore calls in flight.
const SCORE_CONCURRENCY: usize = 16;
/// The lead profiles the seeded leads take in turn, so segments and campaigns vary.
const PROFILE_VARIANTS: i64 = 8;

/// Leads seeded per transaction: big enough that the statements dominate, small enough that
/// the progress moves and the embedded suite's writers never wait long for the file.
fn leads_per_chunk(postgres: bool) -> i64 {
    if postgres { 250_000 } else { 25_000 }
}

/// The id of the `number`th seeded row of `kind`, the same in SQL and here, so the bench
/// can ask about a seeded lead without reading the ids back.
fn seeded_id(kind: u32, number: i64) -> Uuid {
    Uuid::parse_str(&format!("5ca1e{kind:03x}-0000-4000-8000-{number:012x}"))
        .expect("a seeded id is a UUID")
}

const LEAD: u32 = 1;
const CONTACT: u32 = 2;
const ACTIVITY: u32 = 3;
const LEDGER_ENTRY: u32 = 4;
const DEAL: u32 = 5;
const CLASS_CHANGE: u32 = 6;
const STAGE_CHANGE: u32 = 7;
const MARKETING_COST: u32 = 8;

/// The statements' spelling of what PostgreSQL and SQLite write differently.
#[derive(Debug, Clone, Copy)]
struct Dialect {
    postgres: bool,
}

impl Dialect {
    /// A CTE `s(n)` counting from `$1` to `$2`.
    fn series(self) -> &'static str {
        if self.postgres {
            "s(n) AS (SELECT generate_series(CAST($1 AS BIGINT), CAST($2 AS BIGINT)))"
        } else {
            "RECURSIVE s(n) AS (SELECT CAST($1 AS INTEGER) UNION ALL SELECT n + 1 FROM s WHERE n < $2)"
        }
    }

    /// The SQL of [`seeded_id`].
    fn id(self, kind: u32, number: &str) -> String {
        if self.postgres {
            format!(
                "CAST('5ca1e{kind:03x}-0000-4000-8000-' || lpad(to_hex({number}), 12, '0') AS UUID)"
            )
        } else {
            format!("unhex('5ca1e{kind:03x}000040008000' || printf('%012x', {number}))")
        }
    }

    /// The stored time of `seconds` since the epoch (RFC 3339 text on SQLite).
    fn time(self, seconds: &str) -> String {
        if self.postgres {
            format!("to_timestamp({seconds})")
        } else {
            format!("strftime('%Y-%m-%dT%H:%M:%S+00:00', {seconds}, 'unixepoch')")
        }
    }

    fn least(self) -> &'static str {
        if self.postgres { "LEAST" } else { "min" }
    }

    /// The CTEs every seeding statement starts from: `journey` has, per seeded lead `n` of
    /// `source`, when it was created, the days between its steps, a free draw, and how many
    /// steps it got through by `$3` (now, in seconds). Every table derives from these same
    /// values, so the current standing is always the history's last word.
    fn journeys(self, source: &str) -> String {
        let draw = |salt: u32| format!("((n * 2654435761 + {salt} * 40503) % 1000003)");
        format!(
            "WITH {series}, {source}, \
             drawn AS (SELECT src.*, \
                 $3 - {HISTORY_SECONDS} + {created} * {HISTORY_SECONDS} / 1000003 AS created, \
                 86400 * (1 + {gap} % 45) AS step, \
                 CASE WHEN {depth} % 100 < 20 THEN 0 WHEN {depth} % 100 < 50 THEN 1 \
                      WHEN {depth} % 100 < 70 THEN 2 WHEN {depth} % 100 < 85 THEN 3 \
                      WHEN {depth} % 100 < 93 THEN 4 ELSE 5 END AS depth, \
                 {free} AS draw \
                 FROM src), \
             journey AS (SELECT drawn.*, {least}(depth, ($3 - created - 1) / step) AS reached \
                 FROM drawn), \
             steps(i) AS (VALUES (0), (1), (2), (3), (4), (5)) ",
            series = self.series(),
            created = draw(1),
            gap = draw(2),
            depth = draw(3),
            free = draw(4),
            least = self.least(),
        )
    }
}

/// The stored name of the `index`th lifecycle stage a seeded lead goes through.
fn stage(index: &str) -> String {
    format!(
        "CASE {index} WHEN 0 THEN 'LIFECYCLE_STAGE_NEW' WHEN 1 THEN 'LIFECYCLE_STAGE_MQL' \
         WHEN 2 THEN 'LIFECYCLE_STAGE_SAL' WHEN 3 THEN 'LIFECYCLE_STAGE_SQL' \
         WHEN 4 THEN 'LIFECYCLE_STAGE_OPPORTUNITY' ELSE 'LIFECYCLE_STAGE_CUSTOMER' END"
    )
}

/// The stored name of the `index`th class a seeded lead goes through: B1 up to A.
fn class(index: &str) -> String {
    format!(
        "CASE {index} WHEN 0 THEN 'LEAD_CLASS_B1' WHEN 1 THEN 'LEAD_CLASS_B2' \
         WHEN 2 THEN 'LEAD_CLASS_B3' ELSE 'LEAD_CLASS_A' END"
    )
}

/// The statements that seed the leads `$1` to `$2`: their facts, standings, class and stage
/// histories, won deals and campaigns.
fn lead_statements(dialect: Dialect) -> Vec<String> {
    let with = dialect.journeys("src AS (SELECT n FROM s)");
    let lead = dialect.id(LEAD, "n");
    let created = dialect.time("created");
    let least = dialect.least();
    vec![
        format!(
            "{with} INSERT INTO leads (lead_id, account_id, profile, update_time) \
             SELECT {lead}, NULL, p.lead_profile, {created} FROM journey \
             JOIN bench_profiles p ON p.variant = journey.n % {PROFILE_VARIANTS}"
        ),
        format!(
            "{with} INSERT INTO contacts (contact_id, lead_id, profile, opted_in, update_time) \
             SELECT {contact}, {lead}, p.contact_profile, TRUE, {created} FROM journey \
             JOIN bench_profiles p ON p.variant = journey.n % {PROFILE_VARIANTS}",
            contact = dialect.id(CONTACT, "n"),
        ),
        format!(
            "{with} INSERT INTO lead_products (lead_id, product, stage, lead_class, class_since, \
             manual_since, handed_over, awaiting_new_engagement, contact_requested, create_time, \
             update_time) \
             SELECT {lead}, '{PRODUCT}', {stage}, {class}, {class_since}, NULL, FALSE, FALSE, \
             FALSE, {created}, {updated} FROM journey",
            stage = stage("reached"),
            class = class(&format!("{least}(reached, 3)")),
            class_since = dialect.time(&format!("created + {least}(reached, 3) * step")),
            updated = dialect.time("created + reached * step"),
        ),
        format!(
            "{with} INSERT INTO stage_changes (change_id, lead_id, product, from_stage, to_stage, \
             actor, reason, event_id, change_time) \
             SELECT {change}, {lead}, '{PRODUCT}', \
             CASE WHEN i = 0 THEN 'LIFECYCLE_STAGE_UNSPECIFIED' ELSE {from} END, {to}, '', '', \
             NULL, {when} FROM journey JOIN steps ON steps.i <= journey.reached",
            change = dialect.id(STAGE_CHANGE, "n * 8 + i"),
            from = stage("i - 1"),
            to = stage("i"),
            when = dialect.time("created + i * step"),
        ),
        format!(
            "{with} INSERT INTO class_changes (change_id, lead_id, product, from_class, to_class, \
             origin, actor, reason, event_id, change_time) \
             SELECT {change}, {lead}, '{PRODUCT}', \
             CASE WHEN i = 0 THEN 'LEAD_CLASS_UNSPECIFIED' ELSE {from} END, {to}, \
             'CLASS_CHANGE_ORIGIN_CONTENT_STAGE', '', '', NULL, {when} \
             FROM journey JOIN steps ON steps.i <= {least}(journey.reached, 3)",
            change = dialect.id(CLASS_CHANGE, "n * 8 + i"),
            from = class("i - 1"),
            to = class("i"),
            when = dialect.time("created + i * step"),
        ),
        format!(
            "{with} INSERT INTO deals (deal_id, lead_id, product, won, amount_minor, currency, \
             closed_at) \
             SELECT {deal}, {lead}, '{PRODUCT}', TRUE, (1000 + draw % 49000) * 100, 'EUR', \
             {closed} FROM journey WHERE reached = 5",
            deal = dialect.id(DEAL, "n"),
            closed = dialect.time("created + 5 * step"),
        ),
        // A quarter of the leads came with no campaign: their source stands in.
        format!(
            "{with} INSERT INTO lead_campaigns (lead_id, campaign, first_time) \
             SELECT {lead}, 'campaign-' || (draw % 12), {created} FROM journey \
             WHERE draw % 4 <> 0"
        ),
    ]
}

/// The statements that seed the activities `$1` to `$2` (`per_lead` to a lead, spread from
/// its creation until now) and the ledger entry each earned under model `$4`.
fn activity_statements(dialect: Dialect, per_lead: i64) -> Vec<String> {
    let with = dialect.journeys(&format!(
        "src AS (SELECT s.n AS activity, s.n / {per_lead} + 1 AS n, s.n % {per_lead} AS j FROM s)"
    ));
    let activity = dialect.id(ACTIVITY, "activity");
    let lead = dialect.id(LEAD, "n");
    let contact = dialect.id(CONTACT, "n");
    let key = "CASE WHEN j % 10 = 9 THEN 'ACTIVITY_TYPE_WHITEPAPER_DOWNLOADED' \
               ELSE 'ACTIVITY_TYPE_PAGE_VISITED' END";
    let occurred = dialect.time(&format!("created + ($3 - created) * j / {per_lead}"));
    vec![
        format!(
            "{with} INSERT INTO activities (activity_id, event_id, lead_id, contact_id, \
             visitor_id, activity_key, content_id, buying_stage, product, occurred_at) \
             SELECT {activity}, {activity}, {lead}, {contact}, '', {key}, '', \
             'BUYING_STAGE_UNSPECIFIED', '{PRODUCT}', {occurred} FROM journey"
        ),
        format!(
            "{with} INSERT INTO ledger_entries (entry_id, lead_id, product, model_id, contact_id, \
             event_id, activity_id, activity_key, content_id, rule, points, capped, cause, \
             occurred_at, create_time) \
             SELECT {entry}, {lead}, '{PRODUCT}', $4, {contact}, {activity}, {activity}, {key}, \
             '', 'engagement:' || {key}, CASE WHEN j % 10 = 9 THEN 30 ELSE 5 END, FALSE, \
             'SCORE_CHANGE_CAUSE_ACTIVITY', {occurred}, {occurred} FROM journey",
            entry = dialect.id(LEDGER_ENTRY, "activity"),
        ),
    ]
}

/// The profiles the seeded leads take in turn: sources, industries, regions and sizes.
fn profile_variants() -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    const SOURCES: [&str; 4] = ["webinar", "trade-fair", "search", ""];
    const INDUSTRIES: [&str; 3] = ["manufacturing", "software", "logistics"];
    const REGIONS: [&str; 2] = ["EMEA", "AMER"];
    const EMPLOYEES: [u32; 4] = [8, 40, 300, 2_500];
    (0..PROFILE_VARIANTS)
        .map(|variant| {
            let index = variant as usize;
            let lead = common::LeadProfile {
                company_name: format!("Scale Company {variant}"),
                industry: INDUSTRIES[index % INDUSTRIES.len()].to_owned(),
                employee_count: EMPLOYEES[index % EMPLOYEES.len()],
                country_code: "DE".to_owned(),
                region: REGIONS[index % REGIONS.len()].to_owned(),
                source: SOURCES[index % SOURCES.len()].to_owned(),
                ..Default::default()
            };
            let contact = common::ContactProfile {
                first_name: "Scale".to_owned(),
                last_name: format!("Buyer {variant}"),
                ..Default::default()
            };
            (variant, lead.encode_to_vec(), contact.encode_to_vec())
        })
        .collect()
}

/// A connection to scoring's records of the suite: its schema on PostgreSQL, its file
/// embedded.
enum Records {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl Records {
    async fn open(suite: &Suite) -> Result<Self, BenchError> {
        if let Some(url) = &suite.database_url {
            // Seeding statements run for seconds by design: no slow-statement warnings.
            let options = url.parse::<PgConnectOptions>()?.disable_statement_logging();
            let mut connection = PgConnection::connect_with(&options).await?;
            // Seeding is setup: a commit need not wait for the disk.
            connection
                .execute("SET search_path TO scoring; SET synchronous_commit TO off")
                .await?;
            return Ok(Self::Postgres(connection));
        }
        let options = SqliteConnectOptions::new()
            .filename(scoring_file(suite))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(60))
            .disable_statement_logging();
        Ok(Self::Sqlite(
            SqliteConnection::connect_with(&options).await?,
        ))
    }

    fn dialect(&self) -> Dialect {
        Dialect {
            postgres: matches!(self, Self::Postgres(_)),
        }
    }

    /// Runs `statements` in one transaction with the bindings of a seeding range: its first
    /// and last number as `$1` and `$2`, now as `$3`, and the model as `$4` if given.
    async fn seed(
        &mut self,
        statements: &[String],
        range: (i64, i64),
        now: i64,
        model_id: Option<Uuid>,
    ) -> Result<u64, BenchError> {
        macro_rules! run {
            ($connection:expr) => {{
                let mut transaction = $connection.begin().await?;
                let mut rows = 0;
                for statement in statements {
                    let mut query = sqlx::query(statement).bind(range.0).bind(range.1).bind(now);
                    // PostgreSQL refuses a binding the statement does not use.
                    if let Some(model_id) = model_id {
                        query = query.bind(model_id);
                    }
                    rows += query.execute(&mut *transaction).await?.rows_affected();
                }
                transaction.commit().await?;
                rows
            }};
        }
        Ok(match self {
            Self::Postgres(connection) => run!(connection),
            Self::Sqlite(connection) => run!(connection),
        })
    }

    async fn execute(&mut self, statement: &str) -> Result<(), BenchError> {
        match self {
            Self::Postgres(connection) => {
                connection.execute(statement).await?;
            }
            Self::Sqlite(connection) => {
                connection.execute(statement).await?;
            }
        }
        Ok(())
    }

    async fn add_profile(
        &mut self,
        variant: i64,
        lead: &[u8],
        contact: &[u8],
    ) -> Result<(), BenchError> {
        let statement = "INSERT INTO bench_profiles (variant, lead_profile, contact_profile) \
                         VALUES ($1, $2, $3)";
        match self {
            Self::Postgres(connection) => {
                sqlx::query(statement)
                    .bind(variant)
                    .bind(lead)
                    .bind(contact)
                    .execute(connection)
                    .await?;
            }
            Self::Sqlite(connection) => {
                sqlx::query(statement)
                    .bind(variant)
                    .bind(lead)
                    .bind(contact)
                    .execute(connection)
                    .await?;
            }
        }
        Ok(())
    }

    async fn active_model(&mut self) -> Result<Uuid, BenchError> {
        let statement = "SELECT model_id FROM scoring_models WHERE product = $1 AND active";
        let found: Option<(Uuid,)> = match self {
            Self::Postgres(connection) => {
                sqlx::query_as(statement)
                    .bind(PRODUCT)
                    .fetch_optional(connection)
                    .await?
            }
            Self::Sqlite(connection) => {
                sqlx::query_as(statement)
                    .bind(PRODUCT)
                    .fetch_optional(connection)
                    .await?
            }
        };
        found
            .map(|(model_id,)| model_id)
            .ok_or_else(|| BenchError::Suite(format!("product {PRODUCT} has no active model")))
    }

    async fn add_cost(
        &mut self,
        number: i64,
        campaign: &str,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), BenchError> {
        let statement = "INSERT INTO marketing_costs (cost_id, product, campaign, currency, \
                         amount_minor, start_time, end_time, note, create_time) \
                         VALUES ($1, $2, $3, 'EUR', $4, $5, $6, '', $5)";
        macro_rules! run {
            ($connection:expr) => {{
                sqlx::query(statement)
                    .bind(seeded_id(MARKETING_COST, number))
                    .bind(PRODUCT)
                    .bind(campaign)
                    .bind(5_000_000 + number * 100_000)
                    .bind(start)
                    .bind(end)
                    .execute($connection)
                    .await?;
            }};
        }
        match self {
            Self::Postgres(connection) => run!(connection),
            Self::Sqlite(connection) => run!(connection),
        }
        Ok(())
    }

    /// Runs the bare aggregate the report is measured against, once.
    async fn count_by_stage(&mut self) -> Result<i64, BenchError> {
        let statement = "SELECT stage, count(*) FROM lead_products WHERE product = $1 \
                         GROUP BY stage";
        let rows: Vec<(String, i64)> = match self {
            Self::Postgres(connection) => {
                sqlx::query_as(statement)
                    .bind(PRODUCT)
                    .fetch_all(connection)
                    .await?
            }
            Self::Sqlite(connection) => {
                sqlx::query_as(statement)
                    .bind(PRODUCT)
                    .fetch_all(connection)
                    .await?
            }
        };
        Ok(rows.iter().map(|(_, count)| count).sum())
    }

    async fn close(self) -> Result<(), BenchError> {
        match self {
            Self::Postgres(connection) => connection.close().await?,
            Self::Sqlite(connection) => connection.close().await?,
        }
        Ok(())
    }
}

fn scoring_file(suite: &Suite) -> std::path::PathBuf {
    suite.directory.join("data").join("scoring.sqlite3")
}

/// What was seeded, and how long it took.
struct Seeded {
    leads: i64,
    activities: i64,
    rows: u64,
    seconds: f64,
}

/// Seeds `profile.scale_contacts` leads of one contact each and `profile.scale_activities`
/// activities with their ledger entries into scoring's records.
async fn seed(suite: &Suite, profile: &Profile) -> Result<Seeded, BenchError> {
    let started = Instant::now();
    let mut records = Records::open(suite).await?;
    let dialect = records.dialect();
    let model_id = records.active_model().await?;
    let bytes = if dialect.postgres { "BYTEA" } else { "BLOB" };
    records
        .execute(&format!(
            "CREATE TEMPORARY TABLE bench_profiles (variant BIGINT PRIMARY KEY, \
             lead_profile {bytes} NOT NULL, contact_profile {bytes} NOT NULL)"
        ))
        .await?;
    for (variant, lead, contact) in profile_variants() {
        records.add_profile(variant, &lead, &contact).await?;
    }
    let now = chrono::Utc::now();
    let leads = profile.scale_contacts as i64;
    let per_lead = (profile.scale_activities / profile.scale_contacts.max(1)).max(1) as i64;
    let lead_statements = lead_statements(dialect);
    let activity_statements = activity_statements(dialect, per_lead);
    let chunk = leads_per_chunk(dialect.postgres);
    let mut rows = 0;
    let mut first = 1;
    while first <= leads {
        let last = (first + chunk - 1).min(leads);
        rows += records
            .seed(&lead_statements, (first, last), now.timestamp(), None)
            .await?;
        rows += records
            .seed(
                &activity_statements,
                ((first - 1) * per_lead, last * per_lead - 1),
                now.timestamp(),
                Some(model_id),
            )
            .await?;
        progress(&format!(
            "scale: seeded {last} of {leads} contacts, {} activities, in {:.0} s",
            last * per_lead,
            started.elapsed().as_secs_f64()
        ));
        first = last + 1;
    }
    let report_start = report_start(now);
    for number in 0..12 {
        records
            .add_cost(number, &format!("campaign-{number}"), report_start, now)
            .await?;
    }
    // The planner should know the tables' new sizes before anything is measured.
    if dialect.postgres {
        records.execute("ANALYZE").await?;
    }
    records.execute("DROP TABLE bench_profiles").await?;
    records.close().await?;
    Ok(Seeded {
        leads,
        activities: leads * per_lead,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The start of the measured report: the first of the month `REPORT_MONTHS - 1` before now.
fn report_start(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    let month = leadflow_domain::funnel::PeriodLength::Month;
    month.start_back(now, REPORT_MONTHS - 1)
}

/// Figure 6: the funnel report and GetScore over millions of seeded leads and activities.
pub async fn scale(suite: &Suite, profile: &Profile) -> Result<Vec<Figure>, BenchError> {
    progress(&format!(
        "scale: seeding {} contacts and {} activities",
        profile.scale_contacts, profile.scale_activities
    ));
    let seeded = seed(suite, profile).await?;
    let loaded = format!(
        "{} leads of one contact each and {} activities with a ledger entry each, seeded in \
         SQL into scoring's records ({}): the tables the report and GetScore read",
        seeded.leads,
        seeded.activities,
        if suite.database_url.is_some() {
            "PostgreSQL schema scoring"
        } else {
            "scoring.sqlite3"
        }
    );
    let report = report_figure(suite, profile, &seeded, &loaded).await?;
    let score = score_figure(suite, profile, &seeded, &loaded).await?;
    Ok(vec![report, score])
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// The median and the longest of `runs`, in milliseconds.
fn median_and_max(mut runs: Vec<Duration>) -> (f64, f64) {
    runs.sort_unstable();
    let median = runs.get(runs.len() / 2).copied().unwrap_or_default();
    let max = runs.last().copied().unwrap_or_default();
    (milliseconds(median), milliseconds(max))
}

async fn report_figure(
    suite: &Suite,
    profile: &Profile,
    seeded: &Seeded,
    loaded: &str,
) -> Result<Figure, BenchError> {
    let channel = suite.channels(ServiceKind::Scoring, 1)?.remove(0);
    let mut client = ScoringServiceClient::new(channel);
    let now = chrono::Utc::now();
    let request = |segment_by: scoring::SegmentDimension| scoring::GetFunnelReportRequest {
        product: PRODUCT.to_owned(),
        time_range: Some(common::TimeRange {
            start_time: Some(leadflow_platform::time::to_timestamp(report_start(now))),
            end_time: None,
        }),
        period: scoring::ReportPeriod::Month.into(),
        segment_by: segment_by.into(),
        company_size_boundaries: Vec::new(),
    };
    let mut runs = Vec::with_capacity(profile.scale_report_runs);
    let mut reported_leads = 0;
    for run in 0..profile.scale_report_runs {
        let started = Instant::now();
        let report = client
            .get_funnel_report(request(scoring::SegmentDimension::Unspecified))
            .await
            .or_fail("GetFunnelReport")?;
        runs.push(started.elapsed());
        reported_leads = report.totals.map_or(0, |totals| {
            totals.stage_counts.iter().map(|s| s.lead_count).sum()
        });
        progress(&format!(
            "scale: report {} of {} in {:.0} ms",
            run + 1,
            profile.scale_report_runs,
            milliseconds(runs[run])
        ));
    }
    let started = Instant::now();
    client
        .get_funnel_report(request(scoring::SegmentDimension::Source))
        .await
        .or_fail("GetFunnelReport")?;
    let segmented = started.elapsed();
    let mut records = Records::open(suite).await?;
    let mut baseline_runs = Vec::with_capacity(profile.scale_report_runs);
    for _ in 0..profile.scale_report_runs {
        let started = Instant::now();
        records.count_by_stage().await?;
        baseline_runs.push(started.elapsed());
    }
    records.close().await?;
    let (median, max) = median_and_max(runs);
    let (baseline_median, baseline_max) = median_and_max(baseline_runs);
    Ok(Figure::new(
        "scale_report",
        &format!(
            "GetFunnelReport of the last {REPORT_MONTHS} months by month, median of {} runs, \
             over {loaded}",
            profile.scale_report_runs
        ),
        median,
        "ms",
    )
    .beside(
        "SELECT stage, count(*) FROM lead_products GROUP BY stage on the same records, median",
        baseline_median,
    )
    .target_at_most(1_000.0)
    .detail("max_ms", max)
    .detail("baseline_max_ms", baseline_max)
    .detail("segmented_by_source_ms", milliseconds(segmented))
    .detail("reported_leads", f64::from(reported_leads))
    .detail("seeded_leads", seeded.leads as f64)
    .detail("seeded_activities", seeded.activities as f64)
    .detail("seeded_rows", seeded.rows as f64)
    .detail("seed_seconds", seeded.seconds))
}

/// Runs `calls` calls of `call`, `concurrency` at a time, and returns how long each took.
async fn timed_calls<Call, Answer>(
    calls: usize,
    concurrency: usize,
    call: Call,
) -> Result<Vec<Duration>, BenchError>
where
    Call: Fn(usize) -> Answer + Clone + Send + Sync + 'static,
    Answer: Future<Output = Result<(), BenchError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(calls)));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let latencies = latencies.clone();
        let call = call.clone();
        workers.spawn(async move {
            let mut own = Vec::new();
            loop {
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= calls {
                    break;
                }
                let started = Instant::now();
                call(number).await?;
                own.push(started.elapsed());
            }
            latencies.lock().await.extend(own);
            Ok::<(), BenchError>(())
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|error| BenchError::Suite(error.to_string()))??;
    }
    Ok(std::mem::take(&mut *latencies.lock().await))
}

/// `count` distinct seeded lead numbers, spread over all of them.
fn sample_leads(leads: i64, count: usize) -> Vec<i64> {
    // SplitMix64: reproducible enough, and no dependency for a sample.
    let mut state =
        u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1)).unwrap_or(1);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    };
    let mut chosen = std::collections::BTreeSet::new();
    let wanted = count.min(usize::try_from(leads).unwrap_or(usize::MAX));
    while chosen.len() < wanted {
        chosen.insert(1 + (next() % leads.max(1) as u64) as i64);
    }
    let mut sample: Vec<i64> = chosen.into_iter().collect();
    // Asked in a shuffled order, not by id.
    for index in (1..sample.len()).rev() {
        sample.swap(index, (next() % (index as u64 + 1)) as usize);
    }
    sample
}

async fn score_figure(
    suite: &Suite,
    profile: &Profile,
    seeded: &Seeded,
    loaded: &str,
) -> Result<Figure, BenchError> {
    let leads: Arc<Vec<Uuid>> = Arc::new(
        sample_leads(seeded.leads, SAMPLED_LEADS)
            .into_iter()
            .map(|number| seeded_id(LEAD, number))
            .collect(),
    );
    let clients: Arc<Vec<ScoringServiceClient<tonic::transport::Channel>>> = Arc::new(
        suite
            .channels(ServiceKind::Scoring, 4)?
            .into_iter()
            .map(ScoringServiceClient::new)
            .collect(),
    );
    let get_score = {
        let leads = leads.clone();
        move |number: usize| {
            let mut client = clients[number % clients.len()].clone();
            let lead_id = leads[number % leads.len()].to_string();
            async move {
                let answer = client
                    .get_score(scoring::GetScoreRequest {
                        lead_id,
                        product: PRODUCT.to_owned(),
                        as_of_time: None,
                    })
                    .await
                    .or_fail("GetScore")?;
                if answer.score.is_none() {
                    return Err(BenchError::Refused("GetScore without a score".to_owned()));
                }
                Ok(())
            }
        }
    };
    // The first call per lead finds no hot state and computes it from the ledger.
    let cold = timed_calls(leads.len(), SCORE_CONCURRENCY, get_score.clone()).await?;
    let warm = timed_calls(profile.scale_score_calls, SCORE_CONCURRENCY, get_score).await?;
    let (baseline, baseline_what) = match &suite.redis {
        Some((redis_url, prefix)) => (
            redis_lookups(redis_url, prefix, &leads, profile.scale_score_calls).await?,
            "HGET of the same hot score hash field in Redis, same concurrency",
        ),
        None => (
            sqlite_lookups(suite, &leads, profile.scale_score_calls).await?,
            "SELECT of the lead's standing by primary key in scoring.sqlite3, same concurrency",
        ),
    };
    let (cold_p50, cold_p99) = percentiles(cold);
    let (p50, p99) = percentiles(warm);
    let (baseline_p50, baseline_p99) = percentiles(baseline);
    Ok(Figure::new(
        "scale_get_score",
        &format!(
            "GetScore p99 over {} calls on {} random seeded leads, {SCORE_CONCURRENCY} in \
             flight, hot state warm, over {loaded}",
            profile.scale_score_calls,
            leads.len()
        ),
        p99,
        "ms",
    )
    .beside(baseline_what, baseline_p99)
    .target_at_most(2.0)
    .detail("p50_ms", p50)
    .detail("cold_p50_ms", cold_p50)
    .detail("cold_p99_ms", cold_p99)
    .detail("baseline_p50_ms", baseline_p50)
    .detail("sampled_leads", leads.len() as f64))
}

/// The latencies of `calls` bare HGETs of the sampled leads' hot score state.
async fn redis_lookups(
    redis_url: &str,
    prefix: &str,
    leads: &Arc<Vec<Uuid>>,
    calls: usize,
) -> Result<Vec<Duration>, BenchError> {
    let client = redis::Client::open(redis_url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let hash = super::suite::keys_under(&mut connection, prefix)
        .await?
        .into_iter()
        .find(|key| key.ends_with(&format!("scoring:scores:{PRODUCT}")))
        .ok_or_else(|| BenchError::Suite("the hot score hash is missing".to_owned()))?;
    let hash = Arc::new(hash);
    let leads = leads.clone();
    timed_calls(calls, SCORE_CONCURRENCY, move |number| {
        let mut connection = connection.clone();
        let hash = hash.clone();
        let lead_id = leads[number % leads.len()].to_string();
        async move {
            let snapshot: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(hash.as_str())
                .arg(lead_id)
                .query_async(&mut connection)
                .await?;
            snapshot
                .map(|_| ())
                .ok_or_else(|| BenchError::Suite("a sampled lead has no hot state".to_owned()))
        }
    })
    .await
}

/// The latencies of `calls` bare primary-key SELECTs of the sampled leads' standings.
async fn sqlite_lookups(
    suite: &Suite,
    leads: &Arc<Vec<Uuid>>,
    calls: usize,
) -> Result<Vec<Duration>, BenchError> {
    let options = SqliteConnectOptions::new()
        .filename(scoring_file(suite))
        .read_only(true)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(SCORE_CONCURRENCY as u32)
        .connect_with(options)
        .await?;
    let leads = leads.clone();
    let latencies = timed_calls(calls, SCORE_CONCURRENCY, {
        let pool = pool.clone();
        move |number| {
            let pool = pool.clone();
            let lead_id = leads[number % leads.len()];
            async move {
                sqlx::query_as::<_, (String, String)>(
                    "SELECT stage, lead_class FROM lead_products WHERE lead_id = $1 AND product = $2",
                )
                .bind(lead_id)
                .bind(PRODUCT)
                .fetch_one(&pool)
                .await?;
                Ok(())
            }
        }
    })
    .await?;
    pool.close().await;
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_id_is_the_same_here_as_in_sql() {
        assert_eq!(
            seeded_id(LEAD, 255).to_string(),
            "5ca1e001-0000-4000-8000-0000000000ff"
        );
    }

    #[test]
    fn a_sample_holds_distinct_leads_within_the_seeded_ones() {
        let sample = sample_leads(50, 40);
        let distinct: std::collections::BTreeSet<_> = sample.iter().collect();
        assert_eq!(distinct.len(), 40);
        assert!(sample.iter().all(|number| (1..=50).contains(number)));
    }
}
