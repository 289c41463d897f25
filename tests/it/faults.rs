//! The fault suite: the four services as four `leadflow` processes on a PostgreSQL and a
//! Redis of the suite's own, under a load of form submissions and activities, while one
//! fault after another strikes: kill -9 of each service and its restart, FLUSHALL and a
//! restart of Redis, a crash of PostgreSQL, client connections dropped mid-call. After each
//! fault the system settles and the suite checks, with counts, that every acknowledged
//! submission and activity exists exactly once, every event was applied exactly once, the
//! hot scores equal a recompute from the ledger, no lead went to two reps or a rep over its
//! capacity, and no mail went out twice. It prints what it did and what it checked.
//!
//! It runs alone, after the main suite (`scripts/test.sh`), since it loads the machine
//! and times its faults: `cargo test -p leadflow-tests --test it -- faults:: --ignored
//! --nocapture`.
#![allow(
    clippy::print_stdout,
    reason = "the suite's report of what it did and checked is its output"
)]

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use leadflow::ServiceKind;
use leadflow_proto::{
    capture::v1::{
        ActivityInput, CreateFormRequest, SubmitFormRequest, TrackActivityRequest, activity_input,
        capture_service_client::CaptureServiceClient,
    },
    common::v1::{ActivityType, BuyingStage, LeadClass},
    nurturing::v1::{
        ContentItem, ContentKind, CreateContentItemRequest, CreateTemplateRequest,
        CreateTrackRequest, MailTemplate, Track, TrackVersion,
    },
    scoring::v1::{GetScoreRequest, LeadScore},
};
use leadflow_tests::{Backing, OwnPostgres, OwnRedis, ProcessSuite, SmtpSink, eventually};
use mail_parser::MessageParser;
use sqlx::PgPool;
use tonic::{Code, transport::Channel};

use crate::closed_loop::{always_available_rep, buyers_guide_form, route_to_inside_sales};

const PRODUCT: &str = "erp";
const BUYER_ROLE: &str = "it-manager";
/// Few reps with a small capacity, so that the sales-ready leads outnumber the places and
/// routing has to queue: the capacity check then has something to refuse.
const REPS: usize = 3;
const REP_CAPACITY: u32 = 4;
/// Concurrent clients of the load, each walking leads through their journeys, with a pause
/// between calls: enough calls under way when a fault strikes, and few enough leads that
/// every check can look at every one of them after each fault.
const LOAD_WORKERS: usize = 2;
const LOAD_PAUSE: Duration = Duration::from_millis(25);
/// How long the load runs before a fault strikes, and after it before the load pauses.
const LOAD_BEFORE_FAULT: Duration = Duration::from_secs(2);
const LOAD_AFTER_FAULT: Duration = Duration::from_secs(2);
/// How long an event waits with a dead consumer before the restarted one claims it; the
/// default (30 s) would make every fault cost half a minute of waiting.
const EVENT_CLAIM_IDLE_MS: &str = "2000";
/// How long one try of a call may take before the client gives up on it and tries again.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client keeps retrying one call before the suite fails: far longer than any
/// fault lasts.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// How long the system may take to settle after a fault until every check holds.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The activities of every lead's journey, then the ones that make every second lead
/// sales-ready: 60 points, then 190 more, the seed model's threshold of 250.
const WARM_UP: [ActivityType; 3] = [
    ActivityType::TeaserRead,
    ActivityType::VideoCompleted,
    ActivityType::FactSheetRequested,
];
const TO_SALES: [ActivityType; 3] = [
    ActivityType::SlideDeckDownloaded,
    ActivityType::KnowledgeTestPassed,
    ActivityType::ContentCommented,
];

/// The seed model's points of the activity types the load tracks (README, "Scoring").
fn seed_points(activity_type: ActivityType) -> f64 {
    match activity_type {
        ActivityType::TeaserRead => 10.0,
        ActivityType::FactSheetRequested => 20.0,
        ActivityType::VideoCompleted => 30.0,
        ActivityType::ContentCommented => 40.0,
        ActivityType::SlideDeckDownloaded => 50.0,
        ActivityType::KnowledgeTestPassed => 100.0,
        other => panic!("the load tracks no {other:?}"),
    }
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A number below `bound` from the random bits of a v4 UUID: enough for spreading faults
/// and cuts, without a random-number crate.
fn random_below(bound: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(bound.max(1))) as u64
}

/// What the clients saw acknowledged, and what it cost them.
#[derive(Debug, Default)]
struct Acknowledged {
    submissions: Vec<Submission>,
    /// Tracked activities, without the form-submitted activity of each submission.
    activities: Vec<TrackedActivity>,
    /// Tries of calls that failed or were abandoned and then retried with the same key.
    retried_tries: u64,
    /// Tries abandoned by the client on purpose, mid-call.
    abandoned_tries: u64,
}

#[derive(Debug, Clone)]
struct Submission {
    contact_id: String,
    lead_id: String,
    /// The form-submitted activity the submission recorded.
    activity_id: String,
}

#[derive(Debug, Clone)]
struct TrackedActivity {
    activity_id: String,
    lead_id: String,
    activity_type: ActivityType,
}

/// How a load client treats the first try of each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patience {
    /// Waits up to [`CALL_TIMEOUT`] for every try.
    Normal,
    /// Abandons the first try after 1-40 ms (the call is dropped mid-flight), then retries.
    Abandoning,
}

/// Whether a failed call may succeed when tried again with the same key: what a fault
/// causes (unavailable, cut, timed out, a failed storage round) may, a refusal of the
/// request itself may not.
fn retryable(status: &tonic::Status) -> bool {
    !matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// Calls `call` until it is acknowledged, as a client with an idempotency key does: every
/// retry sends the very same request.
async fn until_acknowledged<T, F, Fut>(
    what: &str,
    patience: Patience,
    acknowledged: &Mutex<Acknowledged>,
    mut call: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let give_up = Instant::now() + GIVE_UP_AFTER;
    let mut tries = 0_u32;
    let mut last_error;
    loop {
        tries += 1;
        let abandon = patience == Patience::Abandoning && tries == 1;
        let timeout = if abandon {
            Duration::from_millis(1 + random_below(40))
        } else {
            CALL_TIMEOUT
        };
        match tokio::time::timeout(timeout, call()).await {
            Ok(Ok(answer)) => return Ok(answer.into_inner()),
            Ok(Err(status)) if !retryable(&status) => {
                anyhow::bail!("{what}: refused on try {tries}, which no retry mends: {status:?}")
            }
            Ok(Err(status)) => last_error = format!("{status:?}"),
            Err(_) => {
                last_error = format!("no answer within {timeout:?}");
                if abandon {
                    acknowledged.lock().expect("not poisoned").abandoned_tries += 1;
                }
            }
        }
        acknowledged.lock().expect("not poisoned").retried_tries += 1;
        anyhow::ensure!(
            Instant::now() < give_up,
            "{what}: not acknowledged within {GIVE_UP_AFTER:?} ({tries} tries); last: {last_error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One load client: walks new leads through their journeys (a form submission, three
/// activities, for every second lead three more that make it sales-ready) until `stop`
/// fires; a call under way when it fires is still retried until acknowledged.
async fn walk_journeys(
    capture: CaptureServiceClient<Channel>,
    form_id: String,
    patience: Patience,
    next_lead: Arc<AtomicU64>,
    acknowledged: Arc<Mutex<Acknowledged>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    while !*stop.borrow() {
        let number = next_lead.fetch_add(1, Ordering::Relaxed);
        let submission = submission(&form_id, number);
        tokio::time::sleep(LOAD_PAUSE).await;
        let submitted = until_acknowledged("SubmitForm", patience, &acknowledged, || {
            let (mut capture, submission) = (capture.clone(), submission.clone());
            async move { capture.submit_form(submission).await }
        })
        .await?;
        let email = submission.values["email"].clone();
        acknowledged
            .lock()
            .expect("not poisoned")
            .submissions
            .push(Submission {
                contact_id: submitted.contact_id,
                lead_id: submitted.lead_id.clone(),
                activity_id: submitted.activity_id,
            });
        let journey: Vec<ActivityType> = if number.is_multiple_of(2) {
            WARM_UP.iter().chain(TO_SALES.iter()).copied().collect()
        } else {
            WARM_UP.to_vec()
        };
        for activity_type in journey {
            if *stop.borrow() {
                return Ok(());
            }
            tokio::time::sleep(LOAD_PAUSE).await;
            let request = TrackActivityRequest {
                activity: Some(ActivityInput {
                    subject: Some(activity_input::Subject::Email(email.clone())),
                    r#type: activity_type.into(),
                    product: PRODUCT.to_owned(),
                    source: "website".to_owned(),
                    ..Default::default()
                }),
                idempotency_key: key(),
            };
            let tracked = until_acknowledged("TrackActivity", patience, &acknowledged, || {
                let (mut capture, request) = (capture.clone(), request.clone());
                async move { capture.track_activity(request).await }
            })
            .await?;
            let activity = tracked
                .activity
                .ok_or_else(|| anyhow::anyhow!("a TrackActivity answer without the activity"))?;
            acknowledged
                .lock()
                .expect("not poisoned")
                .activities
                .push(TrackedActivity {
                    activity_id: activity.activity_id,
                    lead_id: submitted.lead_id.clone(),
                    activity_type,
                });
        }
    }
    Ok(())
}

/// The submission of lead number `number`: a complete profile with opt-in (an MQL by the
/// seed model's rule), a company of its own, so every submission makes a lead.
fn submission(form_id: &str, number: u64) -> SubmitFormRequest {
    let values = [
        ("email", format!("buyer{number}@firm{number}.example")),
        ("first_name", "Alex".to_owned()),
        ("last_name", format!("Buyer{number}")),
        ("job_title", "Head of IT".to_owned()),
        ("department", "IT".to_owned()),
        ("role", BUYER_ROLE.to_owned()),
        ("phone", "+49 711 1234567".to_owned()),
        ("street", "Industriestraße 7".to_owned()),
        ("postal_code", "70565".to_owned()),
        ("city", "Stuttgart".to_owned()),
        ("country", "de".to_owned()),
        ("company", format!("Firm {number}")),
        ("industry", "Manufacturing".to_owned()),
        ("employees", "240".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    SubmitFormRequest {
        form_id: form_id.to_owned(),
        values,
        source: "website".to_owned(),
        consent_given: true,
        idempotency_key: key(),
        ..Default::default()
    }
}

/// The load while it runs.
struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    fn start(
        capture: &CaptureServiceClient<Channel>,
        form_id: &str,
        patience: Patience,
        next_lead: &Arc<AtomicU64>,
        acknowledged: &Arc<Mutex<Acknowledged>>,
    ) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = (0..LOAD_WORKERS)
            .map(|_| {
                tokio::spawn(walk_journeys(
                    capture.clone(),
                    form_id.to_owned(),
                    patience,
                    Arc::clone(next_lead),
                    Arc::clone(acknowledged),
                    stopped.clone(),
                ))
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops the load and waits until every call under way was acknowledged.
    async fn pause(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for worker in self.workers {
            worker.await??;
        }
        Ok(())
    }
}

/// A TCP proxy in front of a service that can cut every connection through it at once,
/// as a failing load balancer or network does to calls under way.
struct CuttingProxy {
    address: SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cut, cuts) = tokio::sync::watch::channel(0_u64);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cuts = cuts.clone();
                // Only the cuts from now on concern this connection.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    // Dropping both ends mid-stream is the cut.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            address,
            cut,
            accept,
        })
    }

    /// Cuts every connection open now.
    fn cut_all(&self) {
        self.cut.send_modify(|cuts| *cuts += 1);
    }

    fn cuts(&self) -> u64 {
        *self.cut.borrow()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// One invariant as checked once, with the counts it compared.
#[derive(Debug, Clone)]
struct Check {
    name: &'static str,
    holds: bool,
    /// A violation that no amount of settling mends (a duplicate, an overfull rep): the
    /// suite fails at once instead of waiting.
    broken_for_good: bool,
    counts: String,
}

impl Check {
    /// A check that may hold only once the events have travelled.
    fn settling(name: &'static str, holds: bool, counts: String) -> Self {
        Self {
            name,
            holds,
            broken_for_good: false,
            counts,
        }
    }

    /// A check that must hold whenever the load pauses.
    fn safety(name: &'static str, holds: bool, counts: String) -> Self {
        Self {
            name,
            holds,
            broken_for_good: !holds,
            counts,
        }
    }
}

fn print_checks(checks: &[Check]) {
    for check in checks {
        println!(
            "    [{}] {:<52} {}",
            if check.holds { " ok " } else { "FAIL" },
            check.name,
            check.counts
        );
    }
}

/// The suite, its servers and the state of the scenario.
struct Rig {
    // Declared first: its processes stop, and its database is dropped, while the servers
    // below still run.
    suite: ProcessSuite,
    postgres: OwnPostgres,
    redis: OwnRedis,
    sink: SmtpSink,
    /// A direct pool to the suite's database, for counting what the services wrote.
    pool: PgPool,
    form_id: String,
    next_lead: Arc<AtomicU64>,
    acknowledged: Arc<Mutex<Acknowledged>>,
}

/// What one phase did, for the summary.
struct PhaseReport {
    name: &'static str,
    fault: String,
    submissions: usize,
    activities: usize,
    retried_tries: u64,
    settle: Duration,
    checks: usize,
}

impl Rig {
    async fn start() -> anyhow::Result<Self> {
        let postgres = OwnPostgres::start().await?;
        let redis = OwnRedis::start().await?;
        let sink = SmtpSink::start().await?;
        let backing = Backing {
            redis_url: redis.url(),
            admin_database_url: postgres.admin_url(),
        };
        let mut settings = sink.relay_settings();
        settings.push((
            "LEADFLOW_EVENT_CLAIM_IDLE_MS",
            EVENT_CLAIM_IDLE_MS.to_owned(),
        ));
        let suite = ProcessSuite::start_on(&settings, backing).await?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(suite.database().url())
            .await?;
        let form_id = suite.explain(set_up(&suite).await)?;
        Ok(Self {
            suite,
            postgres,
            redis,
            sink,
            pool,
            form_id,
            next_lead: Arc::new(AtomicU64::new(0)),
            acknowledged: Arc::new(Mutex::new(Acknowledged::default())),
        })
    }

    fn start_load(&self, capture: &CaptureServiceClient<Channel>, patience: Patience) -> Load {
        Load::start(
            capture,
            &self.form_id,
            patience,
            &self.next_lead,
            &self.acknowledged,
        )
    }

    fn counts(&self) -> (usize, usize, u64) {
        let acknowledged = self.acknowledged.lock().expect("not poisoned");
        (
            acknowledged.submissions.len(),
            acknowledged.activities.len(),
            acknowledged.retried_tries,
        )
    }

    /// Runs the load, lets `fault` strike mid-load, pauses the load, waits until every
    /// check holds and prints them.
    async fn phase<F>(
        &mut self,
        name: &'static str,
        patience: Patience,
        fault: F,
    ) -> anyhow::Result<PhaseReport>
    where
        F: AsyncFnOnce(&mut Self) -> anyhow::Result<String>,
    {
        println!("\n== {name}");
        let (submissions_before, activities_before, retried_before) = self.counts();
        let load = self.start_load(&self.suite.capture(), patience);
        tokio::time::sleep(LOAD_BEFORE_FAULT).await;
        let fault = match fault(self).await {
            Ok(fault) => fault,
            Err(error) => {
                let _ = load.stop.send(true);
                return self.suite.explain(Err(error));
            }
        };
        println!("    fault: {fault}");
        tokio::time::sleep(LOAD_AFTER_FAULT).await;
        self.suite.explain(load.pause().await)?;
        let (submissions, activities, retried) = self.counts();
        println!(
            "    load: {} submissions and {} activities acknowledged in this phase, {} tries \
             retried with the same key",
            submissions - submissions_before,
            activities - activities_before,
            retried - retried_before
        );
        let settle_started = Instant::now();
        let checks = self.suite.explain(self.settle().await)?;
        let settle = settle_started.elapsed();
        println!("    settled in {:.1} s; checked:", settle.as_secs_f64());
        print_checks(&checks);
        Ok(PhaseReport {
            name,
            fault,
            submissions: submissions - submissions_before,
            activities: activities - activities_before,
            retried_tries: retried - retried_before,
            settle,
            checks: checks.len(),
        })
    }

    /// Waits until every check holds; fails at once on a violation that cannot mend.
    async fn settle(&self) -> anyhow::Result<Vec<Check>> {
        let last: Mutex<anyhow::Result<Vec<Check>>> =
            Mutex::new(Err(anyhow::anyhow!("not checked yet")));
        let last_ref = &last;
        let settled = eventually(SETTLE_TIMEOUT, || async move {
            let checks = self.checks().await;
            let done = match &checks {
                Ok(checks) => checks
                    .iter()
                    .all(|check| check.holds || check.broken_for_good)
                    .then_some(()),
                Err(_) => None,
            };
            *last_ref.lock().expect("not poisoned") = checks;
            done.is_some()
        })
        .await;
        let checks = last.into_inner().expect("not poisoned");
        let checks = match checks {
            Ok(checks) => checks,
            Err(error) => {
                anyhow::bail!("the checks could not run within {SETTLE_TIMEOUT:?}: {error:#}")
            }
        };
        if !settled || checks.iter().any(|check| !check.holds) {
            print_checks(&checks);
            let failed: Vec<&str> = checks
                .iter()
                .filter(|check| !check.holds)
                .map(|check| check.name)
                .collect();
            anyhow::bail!(
                "{} {failed:?}",
                if settled {
                    "broken for good:"
                } else {
                    "not settled within the timeout:"
                }
            );
        }
        Ok(checks)
    }

    /// Every invariant, once: the records counted in one consistent snapshot of the
    /// database, the scores asked of scoring, the mails read from the sink.
    async fn checks(&self) -> anyhow::Result<Vec<Check>> {
        let (submissions, activities) = {
            let acknowledged = self.acknowledged.lock().expect("not poisoned");
            (
                acknowledged.submissions.clone(),
                acknowledged.activities.clone(),
            )
        };
        let mut checks = Vec::new();
        let mut snapshot = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *snapshot)
            .await?;
        let database = &mut *snapshot;

        // Capture: each acknowledged call's record exactly once, nothing unacknowledged.
        let contact_ids: Vec<uuid::Uuid> = submissions
            .iter()
            .map(|submission| submission.contact_id.parse())
            .collect::<Result<_, _>>()?;
        let distinct_contacts = contact_ids.iter().collect::<HashSet<_>>().len();
        let contacts: i64 = scalar(database, "SELECT count(*) FROM capture.contacts").await?;
        let found: i64 =
            sqlx::query_scalar("SELECT count(*) FROM capture.contacts WHERE contact_id = ANY($1)")
                .bind(&contact_ids)
                .fetch_one(&mut *database)
                .await?;
        let acknowledged = submissions.len() as i64;
        checks.push(Check::safety(
            "acknowledged submissions exist exactly once",
            distinct_contacts as i64 == acknowledged
                && contacts == acknowledged
                && found == acknowledged,
            format!(
                "acknowledged {acknowledged} (distinct contacts {distinct_contacts}), contacts \
                 in capture {contacts}, of them acknowledged {found}"
            ),
        ));
        let activity_ids: Vec<uuid::Uuid> = submissions
            .iter()
            .map(|submission| submission.activity_id.parse())
            .chain(
                activities
                    .iter()
                    .map(|activity| activity.activity_id.parse()),
            )
            .collect::<Result<_, _>>()?;
        let acknowledged_activities = activity_ids.len() as i64;
        let distinct_activities = activity_ids.iter().collect::<HashSet<_>>().len() as i64;
        let stored: i64 = scalar(database, "SELECT count(*) FROM capture.activities").await?;
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM capture.activities WHERE activity_id = ANY($1)",
        )
        .bind(&activity_ids)
        .fetch_one(&mut *database)
        .await?;
        checks.push(Check::safety(
            "acknowledged activities exist exactly once",
            distinct_activities == acknowledged_activities
                && stored == acknowledged_activities
                && found == acknowledged_activities,
            format!(
                "acknowledged {acknowledged_activities} ({} form, {} tracked), activities in \
                 capture {stored}, of them acknowledged {found}",
                submissions.len(),
                activities.len()
            ),
        ));
        let recorded_events: i64 = scalar(
            database,
            "SELECT count(*) FROM capture.outbox \
             WHERE event_type = 'leadflow.events.v1.ActivityRecorded'",
        )
        .await?;
        checks.push(Check::safety(
            "each activity published one event",
            recorded_events == stored,
            format!("ActivityRecorded in capture's outbox {recorded_events}, activities {stored}"),
        ));

        // Events: each consumer group applied each of its events once.
        for (group, producer, types) in [
            (
                "scoring",
                "capture",
                &["ContactCaptured", "ActivityRecorded"][..],
            ),
            (
                "nurturing",
                "capture",
                &["ContactCaptured", "ConsentChanged"][..],
            ),
            ("nurturing", "scoring", &["ClassChanged", "SalesReady"][..]),
            ("routing", "scoring", &["SalesReady"][..]),
        ] {
            let types: Vec<String> = types
                .iter()
                .map(|name| format!("leadflow.events.v1.{name}"))
                .collect();
            let (published, applied): (i64, i64) = sqlx::query_as(&format!(
                "SELECT count(*), count(p.event_id) FROM {producer}.outbox o \
                 LEFT JOIN {group}.processed_events p \
                   ON p.event_id = o.event_id AND p.consumer_group = $1 \
                 WHERE o.event_type = ANY($2)"
            ))
            .bind(group)
            .bind(&types)
            .fetch_one(&mut *database)
            .await?;
            checks.push(Check::settling(
                match (group, producer) {
                    ("scoring", _) => "scoring applied capture's events once each",
                    ("nurturing", "capture") => "nurturing applied capture's events once each",
                    ("nurturing", _) => "nurturing applied scoring's events once each",
                    _ => "routing applied scoring's events once each",
                },
                published == applied,
                format!("published {published}, applied {applied}"),
            ));
        }
        let scored_activities: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM scoring.activities WHERE activity_id = ANY($1)",
        )
        .bind(&activity_ids)
        .fetch_one(&mut *database)
        .await?;
        let tracked_ids: Vec<uuid::Uuid> = activities
            .iter()
            .map(|activity| activity.activity_id.parse())
            .collect::<Result<_, _>>()?;
        let (entries, distinct_entries, tracked_with_entry): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT (model_id, lead_id, product, activity_id)), \
                    count(DISTINCT activity_id) FILTER (WHERE activity_id = ANY($1)) \
             FROM scoring.ledger_entries WHERE activity_id IS NOT NULL",
        )
        .bind(&tracked_ids)
        .fetch_one(&mut *database)
        .await?;
        checks.push(Check::safety(
            "no activity earned points twice",
            entries == distinct_entries,
            format!("ledger entries of activities {entries}, distinct {distinct_entries}"),
        ));
        checks.push(Check::settling(
            "every activity scored once",
            scored_activities == acknowledged_activities
                && tracked_with_entry == tracked_ids.len() as i64,
            format!(
                "activities in scoring {scored_activities} of {acknowledged_activities}, tracked \
                 activities with a ledger entry {tracked_with_entry} of {}",
                tracked_ids.len()
            ),
        ));

        // Routing: one hand-over per sales-ready event, no lead with two reps, no rep over
        // its capacity, and every free place taken while leads queue.
        let sales_ready: i64 = scalar(
            database,
            "SELECT count(*) FROM scoring.outbox WHERE event_type = 'leadflow.events.v1.SalesReady'",
        )
        .await?;
        let (hand_offs, handed_off_leads): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT (lead_id, product)) FROM scoring.hand_offs",
        )
        .fetch_one(&mut *database)
        .await?;
        checks.push(Check::safety(
            "no lead handed over to sales twice",
            hand_offs == handed_off_leads && hand_offs == sales_ready,
            format!(
                "hand-offs {hand_offs}, leads handed off {handed_off_leads}, SalesReady events \
                 {sales_ready}"
            ),
        ));
        let (hand_overs, hand_over_events): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM routing.hand_overs")
                .fetch_one(&mut *database)
                .await?;
        let (open_assignments, assigned_leads, assigned_hand_overs, all_assignments): (
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN \
                        ('ASSIGNMENT_STATE_PENDING', 'ASSIGNMENT_STATE_ACCEPTED')), \
                    count(DISTINCT (lead_id, product)) FILTER (WHERE state IN \
                        ('ASSIGNMENT_STATE_PENDING', 'ASSIGNMENT_STATE_ACCEPTED')), \
                    count(DISTINCT hand_over_id), count(*) \
             FROM routing.assignments",
        )
        .fetch_one(&mut *database)
        .await?;
        let queued: i64 = scalar(
            database,
            "SELECT count(*) FROM routing.hand_overs WHERE state = 'QUEUED'",
        )
        .await?;
        let places = i64::from(REP_CAPACITY) * REPS as i64;
        checks.push(Check::safety(
            "no lead assigned twice",
            open_assignments == assigned_leads
                && all_assignments == assigned_hand_overs
                && hand_overs == hand_over_events,
            format!(
                "open assignments {open_assignments} for {assigned_leads} leads, assignments \
                 {all_assignments} for {assigned_hand_overs} hand-overs, hand-overs {hand_overs} \
                 for {hand_over_events} events"
            ),
        ));
        checks.push(Check::settling(
            "every sales-ready lead routed, places filled",
            hand_overs == sales_ready
                && open_assignments == sales_ready.min(places)
                && queued == hand_overs - open_assignments,
            format!(
                "SalesReady {sales_ready}, hand-overs {hand_overs}, assigned {open_assignments} \
                 of {places} places, queued {queued}"
            ),
        ));
        let reps: Vec<(uuid::Uuid, i32, i32, i64)> = sqlx::query_as(
            "SELECT r.rep_id, r.capacity, r.open_assignments, count(a.assignment_id) \
             FROM routing.reps r LEFT JOIN routing.assignments a ON a.rep_id = r.rep_id \
               AND a.state IN ('ASSIGNMENT_STATE_PENDING', 'ASSIGNMENT_STATE_ACCEPTED') \
             GROUP BY r.rep_id ORDER BY r.rep_id",
        )
        .fetch_all(&mut *database)
        .await?;
        checks.push(Check::safety(
            "no rep over capacity",
            reps.len() == REPS
                && reps.iter().all(|(_, capacity, load, open)| {
                    *open <= i64::from(*capacity) && i64::from(*load) == *open
                }),
            format!(
                "open assignments per rep {:?} (capacity {REP_CAPACITY}), load counters {:?}",
                reps.iter().map(|rep| rep.3).collect::<Vec<_>>(),
                reps.iter().map(|rep| rep.2).collect::<Vec<_>>()
            ),
        ));

        // Nurturing: each send mailed once, nothing left pending. A send may also end
        // cancelled (its lead went to sales first) or failed, and then was never mailed.
        let sends: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT send_id, state FROM nurturing.sends")
                .fetch_all(&mut *database)
                .await?;
        snapshot.commit().await?;
        let sent: HashSet<String> = sends
            .iter()
            .filter(|(_, state)| state == "SEND_STATE_SENT")
            .map(|(send_id, _)| send_id.to_string())
            .collect();
        let pending = sends
            .iter()
            .filter(|(_, state)| state == "SEND_STATE_PENDING")
            .count();
        let mails = self.sink.messages()?;
        let mut per_send: HashMap<String, usize> = HashMap::new();
        for raw in &mails {
            let message = MessageParser::default()
                .parse(raw)
                .ok_or_else(|| anyhow::anyhow!("an unparseable mail in the sink"))?;
            let send_id = message
                .header_raw(leadflow_nurturing::mail::SEND_ID_HEADER)
                .map(|value| value.trim().to_owned())
                .ok_or_else(|| anyhow::anyhow!("a nurture mail without its send id"))?;
            *per_send.entry(send_id).or_default() += 1;
        }
        let mailed_twice = per_send.values().filter(|count| **count > 1).count();
        checks.push(Check::safety(
            "no mail sent twice",
            mailed_twice == 0,
            format!(
                "mails in the sink {}, distinct sends {}, sends mailed more than once \
                 {mailed_twice}",
                mails.len(),
                per_send.len()
            ),
        ));
        let mailed_and_sent = per_send
            .keys()
            .filter(|send_id| sent.contains(*send_id))
            .count();
        checks.push(Check::settling(
            "every sent send mailed, none pending",
            pending == 0 && mailed_and_sent == sent.len() && mailed_and_sent == per_send.len(),
            format!(
                "sends {}, sent {}, pending {pending}, cancelled or failed {}, mailed {}, of \
                 them sent {mailed_and_sent}",
                sends.len(),
                sent.len(),
                sends.len() - sent.len() - pending,
                per_send.len()
            ),
        ));

        // Scoring: the hot score of every lead is the ledger's, and the ledger holds the
        // points of what the clients sent. Two calls per lead: compared once the records
        // have settled, not on every round of waiting.
        if checks.iter().all(|check| check.holds) {
            checks.push(self.score_check(&submissions, &activities).await?);
        } else {
            checks.push(Check::settling(
                SCORE_CHECK,
                false,
                "not compared while the records settle".to_owned(),
            ));
        }
        Ok(checks)
    }

    /// Compares, for every acknowledged lead, the hot score (GetScore now) with scoring's
    /// recompute from the ledger for the same moment (GetScore as of that moment), and the
    /// engagement with the points of the activities the clients had acknowledged.
    async fn score_check(
        &self,
        submissions: &[Submission],
        activities: &[TrackedActivity],
    ) -> anyhow::Result<Check> {
        let mut sent: HashMap<&str, f64> = HashMap::new();
        for activity in activities {
            *sent.entry(activity.lead_id.as_str()).or_default() +=
                seed_points(activity.activity_type);
        }
        let leads: Vec<(String, f64)> = submissions
            .iter()
            .map(|submission| {
                let lead_id = submission.lead_id.as_str();
                (
                    lead_id.to_owned(),
                    sent.get(lead_id).copied().unwrap_or(0.0),
                )
            })
            .collect();
        let mut comparing = tokio::task::JoinSet::new();
        for chunk in leads.chunks(leads.len().div_ceil(SCORE_CLIENTS).max(1)) {
            let (chunk, mut scoring) = (chunk.to_vec(), self.suite.scoring());
            comparing.spawn(async move {
                let mut compared = Vec::with_capacity(chunk.len());
                for (lead_id, sent) in chunk {
                    let hot = score(&mut scoring, &lead_id, None).await?;
                    let recomputed = score(&mut scoring, &lead_id, hot.as_of_time).await?;
                    compared.push((lead_id, sent, hot, recomputed));
                }
                anyhow::Ok(compared)
            });
        }
        let (mut equal, mut as_sent, mut engagement_total) = (0, 0, 0.0);
        let mut first_difference = None;
        while let Some(compared) = comparing.join_next().await {
            for (lead_id, sent, hot, recomputed) in compared?? {
                let same = hot.fit_points == recomputed.fit_points
                    && close(hot.engagement_points, recomputed.engagement_points, 1e-9)
                    && close(hot.total_points, recomputed.total_points, 1e-9)
                    && hot.stage == recomputed.stage
                    && hot.lead_class == recomputed.lead_class
                    && hot.model_id == recomputed.model_id;
                // Decay over the minutes the suite runs is far below a tenth of a percent.
                let matches_sent = close(hot.engagement_points, sent, 1e-3);
                equal += usize::from(same);
                as_sent += usize::from(matches_sent);
                engagement_total += hot.engagement_points;
                if (!same || !matches_sent) && first_difference.is_none() {
                    first_difference = Some(format!(
                        "; first difference: lead {lead_id} hot (fit {}, engagement {:.3}, stage \
                         {}, class {}) recomputed (fit {}, engagement {:.3}, stage {}, class {}) \
                         sent {sent}",
                        hot.fit_points,
                        hot.engagement_points,
                        hot.stage,
                        hot.lead_class,
                        recomputed.fit_points,
                        recomputed.engagement_points,
                        recomputed.stage,
                        recomputed.lead_class
                    ));
                }
            }
        }
        Ok(Check::settling(
            SCORE_CHECK,
            equal == leads.len() && as_sent == leads.len(),
            format!(
                "leads {}, equal to the recompute {equal}, engagement as the clients sent it \
                 {as_sent}, engagement in all {engagement_total:.0}{}",
                leads.len(),
                first_difference.unwrap_or_default()
            ),
        ))
    }
}

const SCORE_CHECK: &str = "hot scores equal the recompute from the ledger";
/// Concurrent clients comparing scores.
const SCORE_CLIENTS: usize = 4;

fn close(left: f64, right: f64, relative: f64) -> bool {
    (left - right).abs() <= relative * left.abs().max(right.abs()).max(1.0)
}

async fn scalar(database: &mut sqlx::PgConnection, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(database).await?)
}

/// The score of a lead: now, from the hot state, or as of a moment, from the ledger.
async fn score(
    scoring: &mut leadflow_proto::scoring::v1::scoring_service_client::ScoringServiceClient<
        Channel,
    >,
    lead_id: &str,
    as_of_time: Option<prost_types::Timestamp>,
) -> anyhow::Result<LeadScore> {
    scoring
        .get_score(GetScoreRequest {
            lead_id: lead_id.to_owned(),
            product: PRODUCT.to_owned(),
            as_of_time,
        })
        .await?
        .into_inner()
        .score
        .ok_or_else(|| anyhow::anyhow!("a GetScore answer without a score"))
}

/// The form, the content grid with a track that enrolls B1 leads, the reps, their team
/// and the rule set that routes the product's leads there; returns the form id.
async fn set_up(suite: &ProcessSuite) -> anyhow::Result<String> {
    let form = suite
        .capture()
        .create_form(CreateFormRequest {
            form: Some(buyers_guide_form()),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .form
        .ok_or_else(|| anyhow::anyhow!("a CreateForm answer without the form"))?;

    let mut nurturing = suite.nurturing();
    let mut template_ids = Vec::new();
    for (name, subject) in [
        ("Offer (en)", "{{ item.title }}"),
        ("Alternative (en)", "Another pick for you: {{ item.title }}"),
    ] {
        let template = nurturing
            .create_template(CreateTemplateRequest {
                template: Some(MailTemplate {
                    name: name.to_owned(),
                    language: "en".to_owned(),
                    subject: subject.to_owned(),
                    html_body: "<p><a href=\"{{ item.url }}\">{{ item.title }}</a></p>".to_owned(),
                    text_body: "{{ item.title }}: {{ item.url }}\n".to_owned(),
                    ..Default::default()
                }),
                idempotency_key: key(),
            })
            .await?
            .into_inner()
            .template
            .ok_or_else(|| anyhow::anyhow!("a CreateTemplate answer without the template"))?;
        template_ids.push(template.template_id);
    }
    for (priority, title) in [(1, "The 2026 ERP study"), (2, "Five signs")] {
        nurturing
            .create_content_item(CreateContentItemRequest {
                item: Some(ContentItem {
                    title: title.to_owned(),
                    kind: ContentKind::Article.into(),
                    url: format!("https://www.example.com/erp/{priority}"),
                    buyer_roles: vec![BUYER_ROLE.to_owned()],
                    stage: BuyingStage::ProblemAwareness.into(),
                    product: PRODUCT.to_owned(),
                    language: "en".to_owned(),
                    priority,
                    ..Default::default()
                }),
                idempotency_key: key(),
            })
            .await?;
    }
    nurturing
        .create_track(CreateTrackRequest {
            track: Some(Track {
                name: "ERP problem awareness".to_owned(),
                product: PRODUCT.to_owned(),
                ..Default::default()
            }),
            first_version: Some(TrackVersion {
                offer_template_id: template_ids[0].clone(),
                alternative_offer_template_id: template_ids[1].clone(),
                auto_enroll_classes: vec![LeadClass::B1.into()],
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?;

    let mut routing = suite.routing();
    let mut rep_ids = Vec::new();
    for number in 0..REPS {
        let email = format!("rep{number}@example.com");
        let name = format!("Rep {number}");
        rep_ids.push(always_available_rep(&mut routing, &email, &name, REP_CAPACITY).await?);
    }
    route_to_inside_sales(&mut routing, rep_ids).await?;
    Ok(form.form_id)
}

/// Kills `kind` with SIGKILL and starts it again on its ports; says how long it was gone.
async fn kill_and_restart(rig: &mut Rig, kind: ServiceKind) -> anyhow::Result<String> {
    let killed = Instant::now();
    rig.suite.kill(kind)?;
    // Calls keep failing a moment against the dead port before it comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.suite.restart(kind).await?;
    Ok(format!(
        "killed {} with SIGKILL mid-load, started it again on {}, SERVING {:.1} s after the \
         kill",
        kind.schema(),
        rig.suite.address(kind),
        killed.elapsed().as_secs_f64()
    ))
}

#[tokio::test]
#[ignore = "the fault suite: scripts/test.sh runs it alone after the main suite"]
async fn every_invariant_holds_through_every_fault() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut rig = Rig::start().await?;
    println!(
        "fault suite: 4 leadflow processes on a PostgreSQL ({}) and a Redis ({}) of its own, \
         {LOAD_WORKERS} load clients, {REPS} reps of capacity {REP_CAPACITY}; up in {:.1} s",
        rig.postgres.admin_url(),
        rig.redis.url(),
        started.elapsed().as_secs_f64()
    );
    let mut reports = Vec::new();
    reports.push(
        rig.phase("1 the load alone", Patience::Normal, async |_| {
            Ok("none".to_owned())
        })
        .await?,
    );
    for (name, kind) in [
        ("2 kill -9 capture", ServiceKind::Capture),
        ("3 kill -9 scoring", ServiceKind::Scoring),
        ("4 kill -9 nurturing", ServiceKind::Nurturing),
        ("5 kill -9 routing", ServiceKind::Routing),
    ] {
        reports.push(
            rig.phase(name, Patience::Normal, async move |rig| {
                kill_and_restart(rig, kind).await
            })
            .await?,
        );
    }
    reports.push(
        rig.phase(
            "6 FLUSHALL Redis, then kill -9 Redis and start it again empty",
            Patience::Normal,
            async |rig| {
                rig.redis.flush_all().await?;
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                let killed = Instant::now();
                rig.redis.kill()?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                rig.redis.start_again().await?;
                Ok(format!(
                    "FLUSHALL mid-load; 1.5 s later SIGKILL, back (empty) after {:.1} s",
                    killed.elapsed().as_secs_f64()
                ))
            },
        )
        .await?,
    );
    reports.push(
        rig.phase(
            "7 crash PostgreSQL and start it again",
            Patience::Normal,
            async |rig| {
                let crashed = Instant::now();
                rig.postgres.crash()?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                rig.postgres.start_again().await?;
                Ok(format!(
                    "immediate stop (no checkpoint: crash recovery on start) mid-load, \
                     accepting connections again after {:.1} s",
                    crashed.elapsed().as_secs_f64()
                ))
            },
        )
        .await?,
    );
    // Connections dropped mid-call: the load goes through a proxy that cuts every
    // connection every 100-400 ms, and abandons the first try of every call after 1-40 ms.
    let proxy = CuttingProxy::start(rig.suite.address(ServiceKind::Capture)).await?;
    let through_proxy = CaptureServiceClient::new(
        Channel::from_shared(format!("http://{}", proxy.address))?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy(),
    );
    let (abandoned_before, cuts_before) = (
        rig.acknowledged
            .lock()
            .expect("not poisoned")
            .abandoned_tries,
        proxy.cuts(),
    );
    let cutting = async {
        let deadline = Instant::now() + LOAD_BEFORE_FAULT + LOAD_AFTER_FAULT;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100 + random_below(300))).await;
            proxy.cut_all();
        }
    };
    println!("\n== 8 drop client connections mid-call");
    let (submissions_before, activities_before, retried_before) = rig.counts();
    let load = rig.start_load(&through_proxy, Patience::Abandoning);
    cutting.await;
    rig.suite.explain(load.pause().await)?;
    let (submissions, activities, retried) = rig.counts();
    let abandoned = rig
        .acknowledged
        .lock()
        .expect("not poisoned")
        .abandoned_tries
        - abandoned_before;
    let fault = format!(
        "{} cuts of every connection through the proxy, {abandoned} first tries abandoned \
         mid-call",
        proxy.cuts() - cuts_before
    );
    println!("    fault: {fault}");
    println!(
        "    load: {} submissions and {} activities acknowledged in this phase, {} tries \
         retried with the same key",
        submissions - submissions_before,
        activities - activities_before,
        retried - retried_before
    );
    let settle_started = Instant::now();
    let checks = rig.suite.explain(rig.settle().await)?;
    let settle = settle_started.elapsed();
    println!("    settled in {:.1} s; checked:", settle.as_secs_f64());
    print_checks(&checks);
    reports.push(PhaseReport {
        name: "8 drop client connections mid-call",
        fault,
        submissions: submissions - submissions_before,
        activities: activities - activities_before,
        retried_tries: retried - retried_before,
        settle,
        checks: checks.len(),
    });
    anyhow::ensure!(
        abandoned > 0 && proxy.cuts() > cuts_before,
        "the connection phase dropped no call"
    );
    let mails = rig.sink.messages()?.len();
    anyhow::ensure!(
        mails > 0,
        "no nurture mail was sent: the mail check checked nothing"
    );

    println!("\n== summary (all checks held after every phase)");
    println!(
        "    {:<62} {:>6} {:>6} {:>7} {:>7} {:>6}",
        "phase", "subm.", "activ.", "retried", "settle", "checks"
    );
    for report in &reports {
        println!(
            "    {:<62} {:>6} {:>6} {:>7} {:>6.1}s {:>6}",
            report.name,
            report.submissions,
            report.activities,
            report.retried_tries,
            report.settle.as_secs_f64(),
            report.checks
        );
        println!("        {}", report.fault);
    }
    let (submissions, activities, retried) = rig.counts();
    println!(
        "    in all: {submissions} submissions, {activities} tracked activities, {retried} \
         retried tries, {mails} mails; {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
