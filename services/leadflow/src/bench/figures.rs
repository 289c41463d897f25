//! The figures: each drives the suite through its public gRPC API with many concurrent
//! clients, waits until the work is durable and visible where a user would look, and
//! measures the matching baseline in the same run.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use leadflow_proto::{
    capture::v1::{self as capture, activity_input},
    common::v1::{ActivityType, BuyingStage},
    routing::v1 as routing,
    scoring::v1 as scoring,
};
use tokio::{sync::Mutex, task::JoinSet};
use tonic::transport::Channel;

use crate::{
    ServiceKind,
    console::{CallResult, Clients},
};

use super::{BenchError, Figure, Profile, baseline, suite::Suite};

/// The product every benchmark lead is about.
pub const PRODUCT: &str = "bench";

/// The preloaded leads: contact and lead ids, in import order.
#[derive(Debug, Clone, Default)]
pub struct Leads {
    /// (contact id, lead id) per imported row.
    pub rows: Vec<(String, String)>,
}

/// Installs what the figures run on: a scoring model that hands a lead over on a contact
/// request, one team of reps that are always available, and a form.
pub async fn install(clients: &Clients, reps: usize) -> Result<String, BenchError> {
    let rule = |activity_type: ActivityType, points: u32| scoring::EngagementRule {
        activity_type: activity_type.into(),
        points,
        ..Default::default()
    };
    let model = clients
        .scoring()
        .create_scoring_model(scoring::CreateScoringModelRequest {
            model: Some(scoring::ScoringModel {
                product: PRODUCT.to_owned(),
                name: "bench".to_owned(),
                threshold: 250,
                engagement_rules: vec![
                    rule(ActivityType::PageVisited, 5),
                    rule(ActivityType::WhitepaperDownloaded, 30),
                    rule(ActivityType::ContactRequested, 100),
                ],
                sales_ready_rule: Some(scoring::SalesReadyRule {
                    on_contact_request: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            idempotency_key: "bench:model".to_owned(),
        })
        .await
        .or_fail("CreateScoringModel")?
        .model
        .unwrap_or_default();
    clients
        .scoring()
        .activate_scoring_model(scoring::ActivateScoringModelRequest {
            model_id: model.model_id,
            idempotency_key: "bench:model-activation".to_owned(),
        })
        .await
        .or_fail("ActivateScoringModel")?;
    let mut rep_ids = Vec::with_capacity(reps);
    for number in 0..reps {
        let rep = clients
            .routing()
            .create_rep(routing::CreateRepRequest {
                rep: Some(routing::Rep {
                    email: format!("rep{number}@sales.example.com"),
                    display_name: format!("Rep {number}"),
                    time_zone: "UTC".to_owned(),
                    languages: vec!["en".to_owned()],
                    capacity: 10_000,
                    weight: 1,
                    active: true,
                    ..Default::default()
                }),
                idempotency_key: format!("bench:rep:{number}"),
            })
            .await
            .or_fail("CreateRep")?
            .rep
            .unwrap_or_default();
        rep_ids.push(rep.rep_id);
    }
    let team = clients
        .routing()
        .create_team(routing::CreateTeamRequest {
            team: Some(routing::Team {
                name: "Inside sales".to_owned(),
                team_lead_rep_id: rep_ids.first().cloned().unwrap_or_default(),
                member_rep_ids: rep_ids,
                strategy: routing::RoutingStrategy::RoundRobin.into(),
                sla: Some(prost_types::Duration {
                    seconds: 3_600,
                    nanos: 0,
                }),
                sla_clock: routing::SlaClock::WallTime.into(),
                ..Default::default()
            }),
            idempotency_key: "bench:team".to_owned(),
        })
        .await
        .or_fail("CreateTeam")?
        .team
        .unwrap_or_default();
    clients
        .routing()
        .publish_rule_set(routing::PublishRuleSetRequest {
            rule_set: Some(routing::RuleSet {
                default_team_id: team.team_id,
                description: "everything to inside sales".to_owned(),
                ..Default::default()
            }),
            base_version: 0,
            idempotency_key: "bench:rules".to_owned(),
        })
        .await
        .or_fail("PublishRuleSet")?;
    let field = |name: &str, kind: capture::FormFieldKind, maps_to: &str| capture::FormField {
        name: name.to_owned(),
        label: name.to_owned(),
        required: true,
        kind: kind.into(),
        maps_to: maps_to.to_owned(),
        ..Default::default()
    };
    let form = clients
        .capture()
        .create_form(capture::CreateFormRequest {
            form: Some(capture::Form {
                name: "Talk to sales".to_owned(),
                product: PRODUCT.to_owned(),
                fields: vec![
                    field("email", capture::FormFieldKind::Email, "contact.email"),
                    field("company", capture::FormFieldKind::Text, "lead.company_name"),
                ],
                consent_wording: "Contact me about the product.".to_owned(),
                consent_wording_version: "1".to_owned(),
                ..Default::default()
            }),
            idempotency_key: "bench:form".to_owned(),
        })
        .await
        .or_fail("CreateForm")?
        .form
        .unwrap_or_default();
    Ok(form.form_id)
}

/// Imports `count` leads, one contact each, through ImportLeads streams.
pub async fn preload(channels: &[Channel], count: usize, tag: &str) -> Result<Leads, BenchError> {
    const ROWS_PER_STREAM: usize = 1_000;
    let mut tasks = JoinSet::new();
    for (chunk, start) in (0..count).step_by(ROWS_PER_STREAM).enumerate() {
        let end = (start + ROWS_PER_STREAM).min(count);
        let channel = channels[chunk % channels.len()].clone();
        let tag = tag.to_owned();
        tasks.spawn(async move {
            let requests: Vec<capture::ImportLeadsRequest> = (start..end)
                .map(|number| capture::ImportLeadsRequest {
                    line_number: number as u64 + 1,
                    contact: Some(leadflow_proto::common::v1::ContactProfile {
                        email: format!("buyer{number}@{tag}-company{number}.example"),
                        first_name: "Bench".to_owned(),
                        last_name: format!("Buyer {number}"),
                        ..Default::default()
                    }),
                    lead: Some(leadflow_proto::common::v1::LeadProfile {
                        company_name: format!("Company {number}"),
                        country_code: "DE".to_owned(),
                        ..Default::default()
                    }),
                    product: PRODUCT.to_owned(),
                    source: "bench".to_owned(),
                    idempotency_key: format!("bench:{tag}:import:{number}"),
                    ..Default::default()
                })
                .collect();
            let mut answers = capture::capture_service_client::CaptureServiceClient::new(channel)
                .import_leads(tokio_stream::iter(requests))
                .await
                .or_fail("ImportLeads")?;
            let mut rows = Vec::with_capacity(end - start);
            while let Some(answer) = answers
                .message()
                .await
                .map_err(|status| crate::console::ConsoleError::call("ImportLeads", &status))?
            {
                if answer.contact_id.is_empty() {
                    let reason = answer
                        .error
                        .map(|error| format!("{} {}", error.field, error.reason))
                        .unwrap_or_default();
                    return Err(BenchError::Refused(format!("an imported row: {reason}")));
                }
                rows.push((answer.line_number, answer.contact_id, answer.lead_id));
            }
            Ok::<_, BenchError>(rows)
        });
    }
    let mut rows = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        rows.extend(joined.map_err(|error| BenchError::Suite(error.to_string()))??);
    }
    rows.sort_by_key(|(line, _, _)| *line);
    Ok(Leads {
        rows: rows
            .into_iter()
            .map(|(_, contact, lead)| (contact, lead))
            .collect(),
    })
}

/// Waits until every consumer group has taken and acknowledged every event, up to
/// `timeout`; fails naming the groups still behind.
pub async fn drained(suite: &Suite, timeout: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let lag = suite.lag().await?;
        let behind: Vec<String> = lag
            .iter()
            .filter(|group| group.pending > 0 || group.undelivered.unwrap_or(0) > 0)
            .map(|group| {
                format!(
                    "{} on {}: {} pending, {:?} undelivered",
                    group.group, group.stream, group.pending, group.undelivered
                )
            })
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Suite(format!(
                "the consumers did not catch up within {timeout:?}: {}",
                behind.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn activity(
    contact_id: &str,
    key: String,
    activity_type: ActivityType,
) -> capture::TrackActivitiesRequest {
    capture::TrackActivitiesRequest {
        activity: Some(capture::ActivityInput {
            subject: Some(activity_input::Subject::ContactId(contact_id.to_owned())),
            r#type: activity_type.into(),
            stage: BuyingStage::ProblemAwareness.into(),
            product: PRODUCT.to_owned(),
            source: "website".to_owned(),
            ..Default::default()
        }),
        idempotency_key: key,
    }
}

/// Sends one TrackActivities stream and checks every activity was accepted.
async fn track_batch(
    channel: Channel,
    batch: Vec<capture::TrackActivitiesRequest>,
) -> Result<(), BenchError> {
    let expected = batch.len();
    let answer = capture::capture_service_client::CaptureServiceClient::new(channel)
        .track_activities(tokio_stream::iter(batch))
        .await
        .or_fail("TrackActivities")?;
    if answer.accepted_count as usize != expected {
        let reason = answer
            .results
            .iter()
            .find_map(|result| result.error.as_ref())
            .map(|error| format!("{} {}", error.field, error.reason))
            .unwrap_or_default();
        return Err(BenchError::Refused(format!(
            "{} of {expected} activities: {reason}",
            expected - answer.accepted_count as usize
        )));
    }
    Ok(())
}

/// Figure 1: activities per second through TrackActivities streams until durable and
/// scored, beside COPY of the same rows.
pub async fn ingest(suite: &Suite, profile: &Profile, leads: &Leads) -> Result<Figure, BenchError> {
    let channels = suite.channels(ServiceKind::Capture, profile.clients)?;
    drained(suite, Duration::from_secs(600)).await?;
    let total = profile.ingest_activities;
    let batch = profile.ingest_batch;
    let batches: Vec<Vec<capture::TrackActivitiesRequest>> = (0..total)
        .step_by(batch)
        .map(|start| {
            (start..(start + batch).min(total))
                .map(|number| {
                    let (contact, _) = &leads.rows[number % leads.rows.len()];
                    activity(
                        contact,
                        format!("bench:ingest:{number}"),
                        ActivityType::PageVisited,
                    )
                })
                .collect()
        })
        .collect();
    let queue = Arc::new(Mutex::new(batches));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for channel in channels.iter().cycle().take(profile.clients) {
        let channel = channel.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            loop {
                let Some(next) = queue.lock().await.pop() else {
                    return Ok::<(), BenchError>(());
                };
                track_batch(channel.clone(), next).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| BenchError::Suite(error.to_string()))??;
    }
    let acknowledged = started.elapsed();
    drained(suite, Duration::from_secs(600)).await?;
    let scored = started.elapsed();
    let (rows, baseline_rate, baseline_what) = match &suite.database_url {
        Some(url) => {
            let (rows, rate) = baseline::postgres_copy_rate(url).await?;
            (
                rows,
                rate,
                "PostgreSQL COPY of the same rows into a scratch table",
            )
        }
        None => {
            let file = suite.directory.join("data").join("capture.sqlite3");
            let (rows, rate) = baseline::sqlite_copy_rate(&file).await?;
            (
                rows,
                rate,
                "SQLite INSERT … SELECT of the same rows, one transaction",
            )
        }
    };
    let rate = total as f64 / scored.as_secs_f64();
    Ok(Figure::new(
        "ingest",
        "activities/s, streamed, durable and scored",
        rate,
        "/s",
    )
    .beside(baseline_what, baseline_rate)
    .target_ratio(0.5)
    .detail("activities", total as f64)
    .detail("batch", batch as f64)
    .detail("clients", profile.clients as f64)
    .detail(
        "acknowledged_per_second",
        total as f64 / acknowledged.as_secs_f64(),
    )
    .detail("baseline_rows", rows as f64))
}

/// Runs `concurrency` loops of TrackActivity, a page visit of each of `contacts` in turn,
/// against `channels` for `duration`; returns calls per second and the latencies.
async fn unary_load(
    channels: &[Channel],
    concurrency: usize,
    duration: Duration,
    contacts: &Arc<Vec<String>>,
) -> Result<(f64, Vec<Duration>), BenchError> {
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for channel in channels.iter().cycle().take(concurrency).cloned() {
        let contacts = contacts.clone();
        let counter = counter.clone();
        tasks.spawn(async move {
            let mut client = capture::capture_service_client::CaptureServiceClient::new(channel);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let number = counter.fetch_add(1, Ordering::Relaxed);
                let request = capture::TrackActivityRequest {
                    activity: activity(
                        &contacts[number % contacts.len()],
                        String::new(),
                        ActivityType::PageVisited,
                    )
                    .activity,
                    idempotency_key: format!("bench:unary:{number}"),
                };
                let sent = Instant::now();
                client
                    .track_activity(request)
                    .await
                    .or_fail("TrackActivity")?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, BenchError>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.map_err(|error| BenchError::Suite(error.to_string()))??);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((latencies.len() as f64 / seconds, latencies))
}

/// Figure 2: TrackActivity calls per second beside an empty handler on the same server
/// bootstrap, driven by the same clients.
pub async fn unary(suite: &Suite, profile: &Profile, leads: &Leads) -> Result<Figure, BenchError> {
    let duration = Duration::from_secs_f64(profile.unary_seconds);
    let contacts: Arc<Vec<String>> = Arc::new(
        leads
            .rows
            .iter()
            .map(|(contact, _)| contact.clone())
            .collect(),
    );
    let channels = suite.channels(ServiceKind::Capture, profile.clients)?;
    let (rate, latencies) =
        unary_load(&channels, profile.unary_concurrency, duration, &contacts).await?;
    let empty = EmptyServer::start()?;
    let empty_channels: Vec<Channel> = (0..profile.clients)
        .map(|_| super::suite::channel(empty.address))
        .collect::<Result<_, _>>()?;
    let (baseline_rate, baseline_latencies) = unary_load(
        &empty_channels,
        profile.unary_concurrency,
        duration,
        &contacts,
    )
    .await?;
    drop(empty);
    let (p50, p99) = percentiles(latencies);
    let (base_p50, base_p99) = percentiles(baseline_latencies);
    Ok(Figure::new("unary", "TrackActivity calls/s", rate, "/s")
        .beside(
            "an empty TrackActivity handler, same server and clients",
            baseline_rate,
        )
        .target_ratio(0.5)
        .detail("concurrency", profile.unary_concurrency as f64)
        .detail("p50_ms", p50)
        .detail("p99_ms", p99)
        .detail("baseline_p50_ms", base_p50)
        .detail("baseline_p99_ms", base_p99))
}

/// The empty-handler server, in a process of its own as the suite is.
struct EmptyServer {
    child: std::process::Child,
    address: std::net::SocketAddr,
}

impl EmptyServer {
    fn start() -> Result<Self, BenchError> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["bench", "--empty-server"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Suite("the empty server has no stdout".to_owned()))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|address| address.parse().ok())
            .ok_or_else(|| BenchError::Suite(format!("the empty server said {line:?}")))?;
        Ok(Self { child, address })
    }
}

impl Drop for EmptyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The median and 99th percentile of `latencies`, in milliseconds.
pub fn percentiles(mut latencies: Vec<Duration>) -> (f64, f64) {
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    latencies.sort_unstable();
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 - 1.0) * quantile).round() as usize;
        latencies[index.min(latencies.len() - 1)].as_secs_f64() * 1_000.0
    };
    (at(0.5), at(0.99))
}

/// How long a probe waits before it asks GetScore again, `waited` after its acknowledgement:
/// fine-grained while the 5 ms target can still be met, then coarser, so that a backlog's
/// hundreds of waiting probes do not poll the suite they measure into the ground.
fn probe_pause(waited: Duration) -> Duration {
    if waited < Duration::from_millis(5) {
        Duration::from_micros(500)
    } else if waited < Duration::from_millis(100) {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(50)
    }
}

/// Figure 3: at a fixed rate of activities, how long after an activity is acknowledged its
/// lead's score shows it. Every batch carries one probe: the first activity of a lead not
/// touched before, whose engagement is polled until it is no longer zero.
pub async fn score_latency(
    suite: &Suite,
    profile: &Profile,
    leads: &Leads,
    probes: &Leads,
) -> Result<Figure, BenchError> {
    drained(suite, Duration::from_secs(600)).await?;
    let rate = profile.latency_rate;
    // A batch every 10 ms: 100 a second, the rate spread across them.
    let batches = (profile.latency_seconds * 100.0) as usize;
    let per_batch = (rate / 100).max(1) as usize;
    let channels = suite.channels(ServiceKind::Capture, profile.clients)?;
    let scoring_channel = suite.channels(ServiceKind::Scoring, 1)?.remove(0);
    let visible = Arc::new(Mutex::new(Vec::<(Duration, Duration)>::new()));
    let late = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for number in 0..batches.min(probes.rows.len()) {
        tick.tick().await;
        let (probe_contact, probe_lead) = probes.rows[number].clone();
        let mut batch = vec![activity(
            &probe_contact,
            format!("bench:probe:{number}"),
            ActivityType::WhitepaperDownloaded,
        )];
        batch.extend((1..per_batch).map(|offset| {
            let index = number * per_batch + offset;
            let (contact, _) = &leads.rows[index % leads.rows.len()];
            activity(
                contact,
                format!("bench:rate:{index}"),
                ActivityType::PageVisited,
            )
        }));
        let channel = channels[number % channels.len()].clone();
        let scoring_channel = scoring_channel.clone();
        let visible = visible.clone();
        let late = late.clone();
        let refused = refused.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            // Refused under overload (UNAVAILABLE when no connection frees up in time): the
            // figure counts the refusals rather than stopping.
            if let Err(error) = track_batch(channel, batch).await {
                tracing::debug!(%error, "a batch was refused");
                refused.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let acknowledged = Instant::now();
            let mut client =
                scoring::scoring_service_client::ScoringServiceClient::new(scoring_channel);
            let deadline = acknowledged + Duration::from_secs(30);
            loop {
                let answer = client
                    .get_score(scoring::GetScoreRequest {
                        lead_id: probe_lead.clone(),
                        product: PRODUCT.to_owned(),
                        as_of_time: None,
                    })
                    .await;
                let engaged = answer
                    .ok()
                    .and_then(|answer| answer.into_inner().score)
                    .is_some_and(|score| score.engagement_points > 0.0);
                if engaged {
                    visible
                        .lock()
                        .await
                        .push((acknowledged.elapsed(), sent.elapsed()));
                    return Ok::<(), BenchError>(());
                }
                if Instant::now() > deadline {
                    late.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                tokio::time::sleep(probe_pause(acknowledged.elapsed())).await;
            }
        });
    }
    let offered = started.elapsed();
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| BenchError::Suite(error.to_string()))??;
    }
    let finished = started.elapsed();
    let measured = std::mem::take(&mut *visible.lock().await);
    let sent_activities = batches.min(probes.rows.len()) * per_batch;
    let (p50, p99) = percentiles(measured.iter().map(|(after_ack, _)| *after_ack).collect());
    let (submit_p50, submit_p99) =
        percentiles(measured.iter().map(|(_, after_send)| *after_send).collect());
    Ok(Figure::new(
        "score_latency",
        "acknowledged activity -> score visible, p99",
        p99,
        "ms",
    )
    .target_at_most(5.0)
    .detail("p50_ms", p50)
    .detail("submit_to_visible_p50_ms", submit_p50)
    .detail("submit_to_visible_p99_ms", submit_p99)
    .detail(
        "offered_rate_per_second",
        sent_activities as f64 / offered.as_secs_f64(),
    )
    .detail(
        "accepted_rate_per_second",
        sent_activities as f64 / finished.as_secs_f64(),
    )
    .detail("target_rate_per_second", f64::from(rate))
    .detail("refused_batches", refused.load(Ordering::Relaxed) as f64)
    .detail("probes", measured.len() as f64)
    .detail(
        "probes_not_visible_in_30s",
        late.load(Ordering::Relaxed) as f64,
    ))
}

/// Figure 4: form submitted with a contact request -> committed assignment, p99 under a
/// steady stream of them, and assignments per second beside a bare SKIP LOCKED loop.
pub async fn speed_to_lead(
    suite: &Suite,
    profile: &Profile,
    form_id: &str,
) -> Result<Vec<Figure>, BenchError> {
    drained(suite, Duration::from_secs(600)).await?;
    let capture_channels = suite.channels(ServiceKind::Capture, profile.clients)?;
    let routing_channel = suite.channels(ServiceKind::Routing, 1)?.remove(0);
    let count = profile.leads_to_route;
    let interval = Duration::from_secs_f64(1.0 / profile.route_rate);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let unassigned = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for number in 0..count {
        tick.tick().await;
        let channel = capture_channels[number % capture_channels.len()].clone();
        let routing_channel = routing_channel.clone();
        let form_id = form_id.to_owned();
        let latencies = latencies.clone();
        let unassigned = unassigned.clone();
        tasks.spawn(async move {
            let submitted = Instant::now();
            let lead_id = ask_for_sales(channel, &form_id, "ready", number).await?;
            let mut routing_client =
                routing::routing_service_client::RoutingServiceClient::new(routing_channel);
            let deadline = submitted + Duration::from_secs(60);
            loop {
                let assignments = routing_client
                    .list_assignments(routing::ListAssignmentsRequest {
                        lead_id: lead_id.clone(),
                        page_size: 1,
                        ..Default::default()
                    })
                    .await
                    .or_fail("ListAssignments")?
                    .assignments;
                if !assignments.is_empty() {
                    latencies.lock().await.push(submitted.elapsed());
                    return Ok::<(), BenchError>(());
                }
                if Instant::now() > deadline {
                    unassigned.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| BenchError::Suite(error.to_string()))??;
    }
    let elapsed = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().await);
    let assigned = latencies.len();
    let (p50, p99) = percentiles(latencies);
    let latency = Figure::new(
        "speed_to_lead",
        "form + contact request -> committed assignment, p99",
        p99,
        "ms",
    )
    .target_at_most(1_000.0)
    .detail("p50_ms", p50)
    .detail("leads", count as f64)
    .detail("offered_rate_per_second", profile.route_rate)
    .detail(
        "not_assigned_in_60s",
        unassigned.load(Ordering::Relaxed) as f64,
    );

    // Throughput: a burst of hand-overs at once, then the time until all are assigned.
    let burst = profile.leads_to_route;
    let channels = capture_channels.clone();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    for channel in channels.iter().cycle().take(profile.clients * 4) {
        let channel = channel.clone();
        let next = next.clone();
        let form_id = form_id.to_owned();
        tasks.spawn(async move {
            loop {
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= burst {
                    return Ok::<(), BenchError>(());
                }
                ask_for_sales(channel.clone(), &form_id, "burst", number).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| BenchError::Suite(error.to_string()))??;
    }
    drained(suite, Duration::from_secs(600)).await?;
    let mut routing_client =
        routing::routing_service_client::RoutingServiceClient::new(routing_channel);
    let expected = assigned + burst;
    loop {
        let total = count_assignments(&mut routing_client).await?;
        if total >= expected {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(BenchError::Suite(format!(
                "only {total} of {expected} leads were assigned"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let assign_rate = burst as f64 / started.elapsed().as_secs_f64();
    let (baseline_rate, baseline_what) = match &suite.database_url {
        Some(url) => (
            baseline::postgres_skip_locked_rate(url, burst, profile.clients).await?,
            "UPDATE … FOR UPDATE SKIP LOCKED loop, one commit per item",
        ),
        None => (
            baseline::sqlite_queue_rate(&suite.directory, burst).await?,
            "SQLite UPDATE … LIMIT 1 loop, one commit per item",
        ),
    };
    let throughput = Figure::new(
        "assignments",
        "hand-overs assigned per second, from submit",
        assign_rate,
        "/s",
    )
    .beside(baseline_what, baseline_rate)
    .target_ratio(0.5)
    .detail("leads", burst as f64)
    .detail("latency_run_seconds", elapsed.as_secs_f64());
    Ok(vec![latency, throughput])
}

/// A buyer of run `run` submits the form and asks for sales; returns the lead's id.
async fn ask_for_sales(
    channel: Channel,
    form_id: &str,
    run: &str,
    number: usize,
) -> Result<String, BenchError> {
    let answer = capture::capture_service_client::CaptureServiceClient::new(channel.clone())
        .submit_form(capture::SubmitFormRequest {
            form_id: form_id.to_owned(),
            values: BTreeMap::from([
                (
                    "email".to_owned(),
                    format!("{run}{number}@{run}-company{number}.example"),
                ),
                ("company".to_owned(), format!("Company {run} {number}")),
            ]),
            consent_given: true,
            idempotency_key: format!("bench:{run}:form:{number}"),
            ..Default::default()
        })
        .await
        .or_fail("SubmitForm")?;
    track_batch(
        channel,
        vec![activity(
            &answer.contact_id,
            format!("bench:{run}:contact-request:{number}"),
            ActivityType::ContactRequested,
        )],
    )
    .await?;
    Ok(answer.lead_id)
}

/// How many assignments routing holds, counted through ListAssignments pages.
async fn count_assignments(
    client: &mut routing::routing_service_client::RoutingServiceClient<Channel>,
) -> Result<usize, BenchError> {
    let mut total = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_assignments(routing::ListAssignmentsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .or_fail("ListAssignments")?;
        total += page.assignments.len();
        if page.next_page_token.is_empty() {
            return Ok(total);
        }
        page_token = page.next_page_token;
    }
}

/// Figure 7: the resident memory of each process, and Redis bytes per hot lead.
pub async fn memory(suite: &Suite, hot_leads: usize) -> Result<Vec<Figure>, BenchError> {
    let mut figures = Vec::new();
    for process in &suite.processes {
        let bytes = process.resident_bytes().unwrap_or(0);
        figures.push(Figure::new(
            &format!("rss_{}", process.name),
            &format!("resident memory of {}", process.name),
            bytes as f64 / (1024.0 * 1024.0),
            "MiB",
        ));
    }
    if let Some((url, prefix)) = &suite.redis {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let mut bytes: u64 = 0;
        let mut keys: u64 = 0;
        for key in super::suite::keys_under(&mut connection, prefix).await? {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut connection)
                .await?;
            // Streams are the bus, not hot state; everything else under the prefix is.
            if kind == "stream" {
                continue;
            }
            let usage: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .query_async(&mut connection)
                .await?;
            bytes += usage.unwrap_or(0);
            keys += 1;
        }
        figures.push(
            Figure::new(
                "redis_bytes_per_hot_lead",
                "Redis bytes per scored lead (hot state, not streams)",
                bytes as f64 / hot_leads.max(1) as f64,
                "B",
            )
            .detail("hot_leads", hot_leads as f64)
            .detail("keys", keys as f64)
            .detail("bytes", bytes as f64),
        );
    }
    Ok(figures)
}
