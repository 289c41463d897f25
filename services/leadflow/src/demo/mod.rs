//! `leadflow demo`: the whole suite embedded in this process on a clock the demo moves, a
//! realistic setup made through the APIs (scoring model, content grid, track, teams of reps
//! in their territories), months of synthetic leads run through it, and then the funnel,
//! the heat map, nurture mail, speed to lead and the forecast as the services report them,
//! checked against what the simulation itself did.

mod dice;
mod setup;
mod world;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use chrono::{DateTime, Duration, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use leadflow_domain::funnel::{PeriodLength, midnight};
use leadflow_platform::{IngressSettings, Settings, time::ManualClock};
use leadflow_proto::{nurturing::v1 as nurturing, routing::v1 as routing, scoring::v1 as scoring};

use crate::{
    Application, ServiceKind,
    cli::{DemoArgs, OutputFormat, PeriodArg, SegmentArg},
    console::{
        CallResult, Clients, ConsoleError, print, print_json, report, table::Table, to_json,
    },
};
use world::{Tally, World, WorldPlan};

/// The data folder of one demo: the caller's, or a temporary one removed afterwards.
struct DataDir {
    path: PathBuf,
    remove: bool,
}

impl DataDir {
    fn new(requested: Option<&Path>) -> Result<Self, ConsoleError> {
        match requested {
            Some(path) => {
                let empty =
                    std::fs::read_dir(path).map_or(true, |mut entries| entries.next().is_none());
                if !empty {
                    return Err(ConsoleError::Input(format!(
                        "--data-dir {} is not empty; the demo needs a fresh folder",
                        path.display()
                    )));
                }
                Ok(Self {
                    path: path.to_path_buf(),
                    remove: false,
                })
            }
            None => {
                // A throwaway simulation needs no disk: in memory it runs a third faster.
                let memory = Path::new("/dev/shm");
                let parent = if memory.is_dir() {
                    memory.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                Ok(Self {
                    path: parent.join(format!("leadflow-demo-{}", uuid::Uuid::new_v4())),
                    remove: true,
                })
            }
        }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the demo.
pub async fn run(args: &DemoArgs) -> Result<(), ConsoleError> {
    let data_dir = DataDir::new(args.data_dir.as_deref())?;
    let today = midnight(Utc::now().date_naive());
    // The first of the month `months - 1` months before this one.
    let start = PeriodLength::Month.start_back(today, args.months.saturating_sub(1));
    let days = u32::try_from((today - start).num_days())
        .unwrap_or(0)
        .max(1);
    let clock = ManualClock::new(start);
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.path.clone(),
        ingress: IngressSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..IngressSettings::default()
        },
        ..Settings::default()
    };
    let failed =
        |error: crate::AppError| ConsoleError::Input(format!("the suite did not start: {error}"));
    let application =
        Application::build_with_clock(&settings, &ServiceKind::ALL, Arc::new(clock.clone()))
            .await
            .map_err(failed)?;
    let simulation = application.into_simulation().await;
    let clients = Clients::connect(&format!("http://{}", simulation.local_addr())).await?;
    let setup = setup::install(&clients).await?;
    let plan = WorldPlan {
        start,
        days,
        leads: args.leads,
        seed: args.seed,
    };
    let progress = if args.format == OutputFormat::Table {
        ProgressBar::new(u64::from(days))
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("simulating {msg} {bar:40} {pos}/{len} days, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let began = Instant::now();
    let tally = World::new(&simulation, &clients, &clock, &setup, plan, &data_dir.path)
        .run(&progress)
        .await?;
    progress.finish_and_clear();
    let elapsed = began.elapsed();
    let end = start + Duration::days(i64::from(days));
    let reports = Reports::read(&clients, start, end).await?;
    let checks = checks(&tally, &reports);
    match args.format {
        OutputFormat::Json => print_json(&serde_json::json!({
            "simulation": {
                "start": start.to_rfc3339(),
                "end": end.to_rfc3339(),
                "days": days,
                "seed": args.seed,
                "seconds": elapsed.as_secs_f64(),
                "tally": tally,
                "reps": setup.rep_count,
                "contentItems": setup.content_items,
            },
            "funnel": to_json(&reports.funnel),
            "heatMap": to_json(&reports.heat_map),
            "nurture": to_json(&reports.nurture),
            "routing": to_json(&reports.routing),
            "forecast": reports.forecast.as_ref().map(to_json),
            "checks": checks.iter().map(|check| serde_json::json!({
                "figure": check.figure,
                "simulated": check.simulated,
                "reported": check.reported,
            })).collect::<Vec<_>>(),
        }))?,
        OutputFormat::Table => print(&render(
            &tally, &reports, &checks, start, end, elapsed, &setup,
        ))?,
    }
    if let Err(error) = simulation.stop().await {
        tracing::warn!(%error, "the demo suite did not stop cleanly");
    }
    let wrong: Vec<&str> = checks
        .iter()
        .filter(|check| check.simulated != check.reported)
        .map(|check| check.figure)
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(ConsoleError::Input(format!(
            "the reports disagree with the simulation on: {}",
            wrong.join(", ")
        )))
    }
}

/// What the services report after the simulation.
struct Reports {
    funnel: scoring::GetFunnelReportResponse,
    heat_map: scoring::GetHeatMapResponse,
    nurture: nurturing::GetNurtureReportResponse,
    routing: routing::GetRoutingMetricsResponse,
    rep_names: std::collections::BTreeMap<String, String>,
    forecast: Option<scoring::GetForecastResponse>,
    /// Why there is no forecast, when there is none.
    no_forecast: Option<String>,
}

impl Reports {
    async fn read(
        clients: &Clients,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Self, ConsoleError> {
        let funnel = clients
            .scoring()
            .get_funnel_report(report::funnel_request(
                setup::PRODUCT,
                start,
                Some(end),
                PeriodArg::Month,
                Some(SegmentArg::Source),
            ))
            .await
            .or_fail("GetFunnelReport")?;
        let heat_map = clients
            .scoring()
            .get_heat_map(scoring::GetHeatMapRequest {
                product: setup::PRODUCT.to_owned(),
                stages: Vec::new(),
            })
            .await
            .or_fail("GetHeatMap")?;
        let range = leadflow_proto::common::v1::TimeRange {
            start_time: Some(leadflow_platform::time::to_timestamp(start)),
            end_time: Some(leadflow_platform::time::to_timestamp(end)),
        };
        let nurture = clients
            .nurturing()
            .get_nurture_report(nurturing::GetNurtureReportRequest {
                time_range: Some(range),
                product: setup::PRODUCT.to_owned(),
                track_id: String::new(),
            })
            .await
            .or_fail("GetNurtureReport")?;
        let routing = clients
            .routing()
            .get_routing_metrics(routing::GetRoutingMetricsRequest {
                time_range: Some(range),
                team_id: String::new(),
                product: setup::PRODUCT.to_owned(),
            })
            .await
            .or_fail("GetRoutingMetrics")?;
        let rep_names = report::rep_names(&crate::console::reps::all_reps(clients).await?);
        // The target: half again the closes of the last whole month.
        let last_month_closes = funnel
            .periods
            .iter()
            .rev()
            .nth(1)
            .and_then(|period| period.totals.as_ref())
            .map_or(0, |totals| totals.closed_deal_count);
        let (forecast, no_forecast) = match clients
            .scoring()
            .get_forecast(scoring::GetForecastRequest {
                product: setup::PRODUCT.to_owned(),
                period: scoring::ReportPeriod::Month.into(),
                rate_window: None,
                target_closes: (last_month_closes * 3).div_ceil(2).max(1),
            })
            .await
        {
            Ok(forecast) => (Some(forecast.into_inner()), None),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                (None, Some(status.message().to_owned()))
            }
            Err(status) => return Err(ConsoleError::call("GetForecast", &status)),
        };
        Ok(Self {
            funnel,
            heat_map,
            nurture,
            routing,
            rep_names,
            forecast,
            no_forecast,
        })
    }
}

/// One figure as the simulation counted it and as a service reported it.
struct Check {
    figure: &'static str,
    simulated: i64,
    reported: i64,
}

fn checks(tally: &Tally, reports: &Reports) -> Vec<Check> {
    let totals = reports.funnel.totals.clone().unwrap_or_default();
    let euros = |values: &[scoring::Money]| {
        values
            .iter()
            .filter(|value| value.currency_code == "EUR")
            .map(|value| value.minor_units)
            .sum::<i64>()
    };
    let nurture = reports.nurture.totals.unwrap_or_default();
    vec![
        Check {
            figure: "new leads (scoring)",
            simulated: i64::from(tally.leads),
            reported: i64::from(totals.new_lead_count),
        },
        Check {
            figure: "deals won (scoring)",
            simulated: i64::from(tally.won),
            reported: i64::from(totals.closed_deal_count),
        },
        Check {
            figure: "value won, EUR cents (scoring)",
            simulated: tally.won_value_minor,
            reported: euros(&totals.won_deal_values),
        },
        Check {
            figure: "marketing costs, EUR cents (scoring)",
            simulated: tally.costs_minor,
            reported: euros(&totals.marketing_costs),
        },
        Check {
            figure: "nurture mails sent (nurturing)",
            simulated: i64::try_from(tally.mails_received).unwrap_or(i64::MAX),
            reported: i64::from(nurture.sent_count),
        },
        Check {
            figure: "mails opened (nurturing)",
            simulated: i64::try_from(tally.opens).unwrap_or(i64::MAX),
            reported: i64::from(nurture.opened_count),
        },
        Check {
            figure: "mails clicked (nurturing)",
            simulated: i64::try_from(tally.clicks).unwrap_or(i64::MAX),
            reported: i64::from(nurture.clicked_count),
        },
        Check {
            figure: "hand-overs accepted (routing)",
            simulated: i64::from(tally.accepted),
            reported: i64::from(reports.routing.accepted_count),
        },
    ]
}

fn render(
    tally: &Tally,
    reports: &Reports,
    checks: &[Check],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    elapsed: std::time::Duration,
    setup: &setup::Setup,
) -> String {
    let money = |minor: i64| crate::console::table::money(minor, "EUR");
    let mut text = format!(
        "leadflow demo: {} to {} simulated in {:.0} s\n\n\
         Setup: the product {}, a scoring model (the field's point table, threshold 250, fit \
         rules for industry, size and seniority), {} content items in a {}-role x 4-stage grid, \
         one nurture track, {} reps in 3 territories with office hours.\n\n\
         What the simulated world did: {} leads came in ({} by the web form, {} from 2 trade \
         fairs) and did {} things; {} nurture mails arrived, {} were opened and {} clicked. \
         Sales accepted {} hand-overs, sent {} back as not ready yet and {} as not a fit, and \
         let {} lie past the SLA; {} leads were qualified, {} opportunities opened, {} deals won \
         ({}) and {} lost. Marketing spent {}.\n\n",
        start.format("%Y-%m-%d"),
        (end - Duration::days(1)).format("%Y-%m-%d"),
        elapsed.as_secs_f64(),
        setup::PRODUCT,
        setup.content_items,
        setup::ROLES.len(),
        setup.rep_count,
        tally.leads,
        tally.submitted,
        tally.imported,
        tally.activities,
        tally.mails_received,
        tally.opens,
        tally.clicks,
        tally.accepted,
        tally.sent_back,
        tally.not_a_fit,
        tally.left_lying,
        tally.qualified,
        tally.opportunities,
        tally.won,
        money(tally.won_value_minor),
        tally.lost,
        money(tally.costs_minor),
    );
    text.push_str(&report::render_funnel(
        setup::PRODUCT,
        PeriodArg::Month,
        &reports.funnel,
    ));
    text.push('\n');
    text.push_str(&report::render_heat_map(setup::PRODUCT, &reports.heat_map));
    text.push('\n');
    text.push_str(&report::render_nurture(&reports.nurture));
    text.push('\n');
    text.push_str(&report::render_routing(
        &reports.routing,
        &reports.rep_names,
    ));
    text.push('\n');
    match (&reports.forecast, &reports.no_forecast) {
        (Some(forecast), _) => text.push_str(&report::render_forecast(setup::PRODUCT, forecast)),
        (None, Some(why)) => text.push_str(&format!("No forecast: {why}\n")),
        (None, None) => {}
    }
    let mut table = Table::new(&["FIGURE", ">SIMULATED", ">REPORTED", "AGREE"]);
    for check in checks {
        table.row([
            check.figure.to_owned(),
            check.simulated.to_string(),
            check.reported.to_string(),
            if check.simulated == check.reported {
                "yes"
            } else {
                "NO"
            }
            .to_owned(),
        ]);
    }
    text.push_str("\nThe reports against what the simulation did\n");
    text.push_str(&table.render());
    text.push_str(
        "\nNext: run `leadflow serve`, then `leadflow import`, `leadflow lead show`, \
         `leadflow reps list` and `leadflow report funnel|forecast|heat-map|nurture|routing` \
         against your own suite (--help on each).\n",
    );
    text
}
