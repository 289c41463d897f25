//! `leadflow report`: the funnel with its conversions, durations, segments and campaigns,
//! the forecast, the heat map, nurture mail and routing, read from the services that own
//! them and printed as tables or as the contracts' JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use leadflow_domain::funnel::{PeriodLength, midnight};
use leadflow_platform::time::{from_timestamp, to_timestamp};
use leadflow_proto::{
    common::v1::{self as common, LeadClass, LifecycleStage, ProfileGrade},
    nurturing::v1 as nurturing,
    routing::v1 as routing,
    scoring::v1::{self as scoring, FunnelStep},
};

use super::{
    CallResult, Clients, ConsoleError, print, print_json,
    table::{Table, days, human_duration, money, percent},
    to_json,
};
use crate::cli::{OutputFormat, PeriodArg, ReportCommand, SegmentArg};

/// The class steps and the close, in the order the funnel reads.
const CLASS_STEPS: [(FunnelStep, &str); 4] = [
    (FunnelStep::B1ToB2, "B1>B2"),
    (FunnelStep::B2ToB3, "B2>B3"),
    (FunnelStep::B3ToA, "B3>A"),
    (FunnelStep::AToClose, "A>CLOSE"),
];

/// The steps sales takes a lead through.
const STAGE_STEPS: [(FunnelStep, &str); 4] = [
    (FunnelStep::MqlToSal, "MQL>SAL"),
    (FunnelStep::SalToSql, "SAL>SQL"),
    (FunnelStep::SqlToOpportunity, "SQL>OPP"),
    (FunnelStep::OpportunityToCustomer, "OPP>WON"),
];

/// The contract's period of a period flag.
pub fn report_period(period: PeriodArg) -> scoring::ReportPeriod {
    match period {
        PeriodArg::Week => scoring::ReportPeriod::Week,
        PeriodArg::Month => scoring::ReportPeriod::Month,
        PeriodArg::Quarter => scoring::ReportPeriod::Quarter,
        PeriodArg::HalfYear => scoring::ReportPeriod::HalfYear,
    }
}

fn segment_dimension(segment: SegmentArg) -> scoring::SegmentDimension {
    match segment {
        SegmentArg::Source => scoring::SegmentDimension::Source,
        SegmentArg::CompanySize => scoring::SegmentDimension::CompanySize,
        SegmentArg::Industry => scoring::SegmentDimension::Industry,
        SegmentArg::Region => scoring::SegmentDimension::Region,
    }
}

/// The domain's period length of a period flag.
fn period_length(period: PeriodArg) -> PeriodLength {
    match period {
        PeriodArg::Week => PeriodLength::Week,
        PeriodArg::Month => PeriodLength::Month,
        PeriodArg::Quarter => PeriodLength::Quarter,
        PeriodArg::HalfYear => PeriodLength::HalfYear,
    }
}

/// The default reach of a funnel report: this period and the five before.
fn default_start(period: PeriodArg, now: DateTime<Utc>) -> DateTime<Utc> {
    period_length(period).start_back(now, 5)
}

/// The funnel request for a product over `[from, to)`.
pub fn funnel_request(
    product: &str,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
    period: PeriodArg,
    segment_by: Option<SegmentArg>,
) -> scoring::GetFunnelReportRequest {
    scoring::GetFunnelReportRequest {
        product: product.to_owned(),
        time_range: Some(common::TimeRange {
            start_time: Some(to_timestamp(from)),
            end_time: to.map(to_timestamp),
        }),
        period: report_period(period).into(),
        segment_by: segment_by.map_or(0, |segment| segment_dimension(segment).into()),
        company_size_boundaries: Vec::new(),
    }
}

/// Runs one `leadflow report` subcommand.
pub async fn run(command: &ReportCommand) -> Result<(), ConsoleError> {
    match command {
        ReportCommand::Funnel(args) => {
            let console = &args.product.console;
            let clients = Clients::for_console(console).await?;
            let from = args
                .from
                .map_or_else(|| default_start(args.period, Utc::now()), midnight);
            let request = funnel_request(
                &args.product.product,
                from,
                args.to.map(midnight),
                args.period,
                args.segment_by,
            );
            let report = clients
                .scoring()
                .get_funnel_report(request)
                .await
                .or_fail("GetFunnelReport")?;
            match console.format {
                OutputFormat::Json => print_json(&to_json(&report)),
                OutputFormat::Table => {
                    print(&render_funnel(&args.product.product, args.period, &report))
                }
            }
        }
        ReportCommand::Forecast(args) => {
            let console = &args.product.console;
            let clients = Clients::for_console(console).await?;
            let forecast = clients
                .scoring()
                .get_forecast(scoring::GetForecastRequest {
                    product: args.product.product.clone(),
                    period: report_period(args.period).into(),
                    rate_window: None,
                    target_closes: args.target_closes,
                })
                .await
                .or_fail("GetForecast")?;
            match console.format {
                OutputFormat::Json => print_json(&to_json(&forecast)),
                OutputFormat::Table => print(&render_forecast(&args.product.product, &forecast)),
            }
        }
        ReportCommand::HeatMap(args) => {
            let clients = Clients::for_console(&args.console).await?;
            let map = clients
                .scoring()
                .get_heat_map(scoring::GetHeatMapRequest {
                    product: args.product.clone(),
                    stages: Vec::new(),
                })
                .await
                .or_fail("GetHeatMap")?;
            match args.console.format {
                OutputFormat::Json => print_json(&to_json(&map)),
                OutputFormat::Table => print(&render_heat_map(&args.product, &map)),
            }
        }
        ReportCommand::Nurture(args) => {
            let console = &args.product.console;
            let clients = Clients::for_console(console).await?;
            let report = clients
                .nurturing()
                .get_nurture_report(nurturing::GetNurtureReportRequest {
                    product: args.product.product.clone(),
                    time_range: Some(window(args.from, args.to)),
                    track_id: String::new(),
                })
                .await
                .or_fail("GetNurtureReport")?;
            match console.format {
                OutputFormat::Json => print_json(&to_json(&report)),
                OutputFormat::Table => print(&render_nurture(&report)),
            }
        }
        ReportCommand::Routing(args) => {
            let console = &args.product.console;
            let clients = Clients::for_console(console).await?;
            let metrics = clients
                .routing()
                .get_routing_metrics(routing::GetRoutingMetricsRequest {
                    product: args.product.product.clone(),
                    time_range: Some(window(args.from, args.to)),
                    team_id: String::new(),
                })
                .await
                .or_fail("GetRoutingMetrics")?;
            let reps = super::reps::all_reps(&clients).await?;
            match console.format {
                OutputFormat::Json => print_json(&to_json(&metrics)),
                OutputFormat::Table => print(&render_routing(&metrics, &rep_names(&reps))),
            }
        }
    }
}

/// The days `[from, to)`; all time up to now by default.
pub fn window(from: Option<NaiveDate>, to: Option<NaiveDate>) -> common::TimeRange {
    common::TimeRange {
        start_time: Some(to_timestamp(from.map_or(DateTime::UNIX_EPOCH, midnight))),
        end_time: to.map(|to| to_timestamp(midnight(to))),
    }
}

/// The display name of every rep, by id.
pub fn rep_names(reps: &[routing::Rep]) -> BTreeMap<String, String> {
    reps.iter()
        .map(|rep| (rep.rep_id.clone(), rep.display_name.clone()))
        .collect()
}

/// The label of a period of `period`'s length, e.g. `2026-03`, `2026-W10`, `2026-Q1`.
fn period_label(range: Option<&common::TimeRange>, period: PeriodArg) -> String {
    let Some(start) = range
        .and_then(|range| range.start_time.as_ref())
        .and_then(from_timestamp)
    else {
        return "-".to_owned();
    };
    let date = start.date_naive();
    match period {
        PeriodArg::Week => {
            let week = date.iso_week();
            format!("{}-W{:02}", week.year(), week.week())
        }
        PeriodArg::Quarter => format!("{}-Q{}", date.year(), date.month0() / 3 + 1),
        PeriodArg::HalfYear => format!("{}-H{}", date.year(), date.month0() / 6 + 1),
        PeriodArg::Month => format!("{}-{:02}", date.year(), date.month()),
    }
}

fn class_count(metrics: &scoring::FunnelMetrics, class: LeadClass) -> u32 {
    metrics
        .class_counts
        .iter()
        .find(|count| count.lead_class == class as i32)
        .map_or(0, |count| count.lead_count)
}

fn stage_count(metrics: &scoring::FunnelMetrics, stage: LifecycleStage) -> u32 {
    metrics
        .stage_counts
        .iter()
        .find(|count| count.stage == stage as i32)
        .map_or(0, |count| count.lead_count)
}

fn conversion(
    metrics: &scoring::FunnelMetrics,
    step: FunnelStep,
) -> Option<&scoring::StepConversion> {
    metrics
        .conversions
        .iter()
        .find(|conversion| conversion.step == step as i32)
}

/// A conversion as `35.0% (7/20)`, or `-` when nobody entered the step.
fn rate(metrics: &scoring::FunnelMetrics, step: FunnelStep) -> String {
    match conversion(metrics, step) {
        Some(conversion) if conversion.entered_count > 0 => format!(
            "{} ({}/{})",
            percent(conversion.rate),
            conversion.converted_count,
            conversion.entered_count
        ),
        _ => "-".to_owned(),
    }
}

fn median(metrics: &scoring::FunnelMetrics, step: FunnelStep) -> String {
    days(conversion(metrics, step).and_then(|conversion| conversion.median_duration.as_ref()))
}

fn amounts(values: &[scoring::Money]) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    values
        .iter()
        .map(|value| money(value.minor_units, &value.currency_code))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The funnel report as tables: leads and conversions per period, the durations with their
/// trend, the sales steps, the segments and the campaigns.
pub fn render_funnel(
    product: &str,
    period: PeriodArg,
    report: &scoring::GetFunnelReportResponse,
) -> String {
    let mut text = format!("Funnel of {product}\n\n");
    let mut counts = Table::new(&[
        "PERIOD",
        ">NEW",
        ">C",
        ">B1",
        ">B2",
        ">B3",
        ">A",
        ">A SHARE",
        ">B1>B2",
        ">B2>B3",
        ">B3>A",
        ">CLOSE RATE",
        ">WON",
        "WON VALUE",
        "COST PER LEAD",
    ]);
    let rows = report
        .periods
        .iter()
        .map(|period_report| {
            (
                period_label(period_report.time_range.as_ref(), period),
                period_report.totals.clone().unwrap_or_default(),
            )
        })
        .chain(std::iter::once((
            "all".to_owned(),
            report.totals.clone().unwrap_or_default(),
        )));
    let rows: Vec<(String, scoring::FunnelMetrics)> = rows.collect();
    for (label, metrics) in &rows {
        counts.row([
            label.clone(),
            metrics.new_lead_count.to_string(),
            class_count(metrics, LeadClass::C).to_string(),
            class_count(metrics, LeadClass::B1).to_string(),
            class_count(metrics, LeadClass::B2).to_string(),
            class_count(metrics, LeadClass::B3).to_string(),
            class_count(metrics, LeadClass::A).to_string(),
            percent(metrics.class_a_share),
            rate(metrics, FunnelStep::B1ToB2),
            rate(metrics, FunnelStep::B2ToB3),
            rate(metrics, FunnelStep::B3ToA),
            rate(metrics, FunnelStep::AToClose),
            metrics.closed_deal_count.to_string(),
            amounts(&metrics.won_deal_values),
            amounts(&metrics.cost_per_lead),
        ]);
    }
    text.push_str("Leads per class at each period's end, and conversions within it\n");
    text.push_str(&counts.render());

    let mut durations = Table::new(&["PERIOD", ">B1>B2", ">B2>B3", ">B3>A", ">A>CLOSE"]);
    for (label, metrics) in &rows {
        durations.row(
            std::iter::once(label.clone())
                .chain(CLASS_STEPS.iter().map(|(step, _)| median(metrics, *step))),
        );
    }
    durations.row(
        std::iter::once("trend/period".to_owned()).chain(CLASS_STEPS.iter().map(|(step, _)| {
            report
                .duration_trends
                .iter()
                .find(|trend| trend.step == *step as i32 && trend.periods_measured >= 2)
                .map_or_else(
                    || "-".to_owned(),
                    |trend| {
                        let change = days(trend.change_per_period.as_ref());
                        if change.starts_with('-') {
                            change
                        } else {
                            format!("+{change}")
                        }
                    },
                )
        })),
    );
    text.push_str("\nMedian conversion durations, and how they move per period\n");
    text.push_str(&durations.render());

    let mut sales = Table::new(&[
        "PERIOD",
        ">MQL",
        ">SAL",
        ">SQL",
        ">OPPORTUNITY",
        ">CUSTOMER",
        ">RECYCLED",
        ">DISQUALIFIED",
        ">MQL>SAL",
        ">SAL>SQL",
        ">SQL>OPP",
        ">OPP>WON",
    ]);
    for (label, metrics) in &rows {
        let mut cells = vec![label.clone()];
        for stage in [
            LifecycleStage::Mql,
            LifecycleStage::Sal,
            LifecycleStage::Sql,
            LifecycleStage::Opportunity,
            LifecycleStage::Customer,
            LifecycleStage::Recycled,
            LifecycleStage::Disqualified,
        ] {
            cells.push(stage_count(metrics, stage).to_string());
        }
        cells.extend(STAGE_STEPS.iter().map(|(step, _)| rate(metrics, *step)));
        sales.row(cells);
    }
    text.push_str("\nLeads per stage at each period's end, and the sales steps\n");
    text.push_str(&sales.render());

    let mut segments = Table::new(&[
        "PERIOD",
        "SEGMENT",
        ">NEW",
        ">A",
        ">B1>B2",
        ">B2>B3",
        ">B3>A",
        ">CLOSE RATE",
        ">WON",
        "AVERAGE DEAL",
    ]);
    for period_report in &report.periods {
        let label = period_label(period_report.time_range.as_ref(), period);
        for segment in &period_report.segments {
            let metrics = segment.metrics.clone().unwrap_or_default();
            segments.row([
                label.clone(),
                segment.segment_value.clone(),
                metrics.new_lead_count.to_string(),
                class_count(&metrics, LeadClass::A).to_string(),
                rate(&metrics, FunnelStep::B1ToB2),
                rate(&metrics, FunnelStep::B2ToB3),
                rate(&metrics, FunnelStep::B3ToA),
                rate(&metrics, FunnelStep::AToClose),
                metrics.closed_deal_count.to_string(),
                amounts(&metrics.average_deal_values),
            ]);
        }
    }
    if !segments.is_empty() {
        text.push_str("\nSegments\n");
        text.push_str(&segments.render());
    }

    let mut campaigns = Table::new(&[
        "CAMPAIGN",
        ">LEADS",
        ">WON",
        "COST",
        "COST PER LEAD",
        "WON VALUE",
        ">ROI",
    ]);
    for campaign in &report.campaigns {
        let roi = campaign
            .returns
            .iter()
            .map(|r| format!("{} {}", percent(r.return_on_investment), r.currency_code))
            .collect::<Vec<_>>()
            .join(", ");
        campaigns.row([
            campaign.campaign.clone(),
            campaign.new_lead_count.to_string(),
            campaign.closed_deal_count.to_string(),
            amounts(&campaign.costs),
            amounts(&campaign.cost_per_lead),
            amounts(&campaign.won_deal_values),
            if roi.is_empty() { "-".to_owned() } else { roi },
        ]);
    }
    if !campaigns.is_empty() {
        text.push_str("\nCampaigns over the whole time\n");
        text.push_str(&campaigns.render());
    }
    text
}

fn class_code(value: i32) -> &'static str {
    match LeadClass::try_from(value).unwrap_or_default() {
        LeadClass::A => "A",
        LeadClass::B1 => "B1",
        LeadClass::B2 => "B2",
        LeadClass::B3 => "B3",
        LeadClass::C => "C",
        LeadClass::Unspecified => "-",
    }
}

fn time_label(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(from_timestamp).map_or_else(
        || "-".to_owned(),
        |time| time.format("%Y-%m-%d").to_string(),
    )
}

/// The forecast as text.
pub fn render_forecast(product: &str, forecast: &scoring::GetForecastResponse) -> String {
    let range = forecast.forecast_period.as_ref();
    let mut text = format!(
        "Forecast of {product} for {} to {}\n",
        time_label(range.and_then(|range| range.start_time.as_ref())),
        time_label(range.and_then(|range| range.end_time.as_ref())),
    );
    let mut classes = Table::new(&[
        "CLASS",
        ">LEADS IN HAND",
        ">CLOSE PROBABILITY",
        ">EXPECTED CLOSES",
    ]);
    for class in &forecast.by_class {
        classes.row([
            class_code(class.lead_class).to_owned(),
            class.lead_count.to_string(),
            percent(class.close_probability),
            format!("{:.1}", class.expected_closes),
        ]);
    }
    text.push_str(&classes.render());
    text.push_str(&format!(
        "expected closes: {:.1}, worth {}\nnew leads that close: {}\n",
        forecast.expected_closes,
        amounts(&forecast.expected_order_values),
        percent(forecast.lead_to_close_rate),
    ));
    if forecast.leads_needed > 0 {
        text.push_str(&format!(
            "leads needed for the target: {} ({} beyond what the leads in hand bring)\n",
            forecast.leads_needed, forecast.additional_leads_needed
        ));
    }
    text
}

/// The heat map as a grid: profile grade rows by engagement level columns.
pub fn render_heat_map(product: &str, map: &scoring::GetHeatMapResponse) -> String {
    let mut grid = Table::new(&["GRADE", ">1 LOW", ">2", ">3", ">4 HIGH", ">ALL"]);
    for (grade, label) in [
        (ProfileGrade::A, "A best fit"),
        (ProfileGrade::B, "B"),
        (ProfileGrade::C, "C"),
        (ProfileGrade::D, "D weak fit"),
    ] {
        let count = |level: u32| {
            map.cells
                .iter()
                .find(|cell| {
                    cell.cell
                        .is_some_and(|at| at.grade == grade as i32 && at.engagement_level == level)
                })
                .map_or(0, |cell| cell.lead_count)
        };
        let counts: Vec<u32> = (1..=4).map(count).collect();
        grid.row(
            std::iter::once(label.to_owned())
                .chain(counts.iter().map(ToString::to_string))
                .chain(std::iter::once(counts.iter().sum::<u32>().to_string())),
        );
    }
    format!(
        "Heat map of {product}: {} leads in hand by profile grade and engagement level\n{}",
        map.total_lead_count,
        grid.render()
    )
}

fn stats_cells(stats: Option<&nurturing::NurtureStats>) -> [String; 5] {
    let stats = stats.cloned().unwrap_or_default();
    [
        stats.sent_count.to_string(),
        stats.opened_count.to_string(),
        stats.clicked_count.to_string(),
        percent(stats.open_rate),
        percent(stats.click_rate),
    ]
}

fn stage_label(stage: i32) -> &'static str {
    match common::BuyingStage::try_from(stage).unwrap_or_default() {
        common::BuyingStage::ProblemAwareness => "B1",
        common::BuyingStage::SolutionSearch => "B2",
        common::BuyingStage::RequestingOffers => "B3",
        common::BuyingStage::ChoosingOffer => "A",
        common::BuyingStage::Unspecified => "-",
    }
}

/// The nurture report as tables: totals, tracks and cells.
pub fn render_nurture(report: &nurturing::GetNurtureReportResponse) -> String {
    let mut text = String::from("Nurture mail\n");
    let mut totals = Table::new(&[">SENT", ">OPENED", ">CLICKED", ">OPEN RATE", ">CLICK RATE"]);
    totals.row(stats_cells(report.totals.as_ref()));
    text.push_str(&totals.render());
    let mut tracks = Table::new(&[
        "TRACK",
        ">SENT",
        ">OPENED",
        ">CLICKED",
        ">OPEN RATE",
        ">CLICK RATE",
        ">ENROLLED",
        ">ACTIVE",
        ">EXHAUSTED",
        ">HANDED OVER",
        ">STOPPED",
        "MEDIAN TIME IN TRACK",
    ]);
    for track in &report.tracks {
        let mut cells = vec![track.name.clone()];
        cells.extend(stats_cells(track.stats.as_ref()));
        cells.extend([
            track.enrolled_count.to_string(),
            track.open_count.to_string(),
            track.exhausted_count.to_string(),
            track.handed_over_count.to_string(),
            track.stopped_count.to_string(),
            days(track.median_time_in_track.as_ref()),
        ]);
        tracks.row(cells);
    }
    if !tracks.is_empty() {
        text.push_str("\nTracks\n");
        text.push_str(&tracks.render());
    }
    let mut cells = Table::new(&[
        "ROLE",
        "STAGE",
        ">SENT",
        ">OPENED",
        ">CLICKED",
        ">OPEN RATE",
        ">CLICK RATE",
    ]);
    for cell in &report.cells {
        let mut row = vec![cell.buyer_role.clone(), stage_label(cell.stage).to_owned()];
        row.extend(stats_cells(cell.stats.as_ref()));
        cells.row(row);
    }
    if !cells.is_empty() {
        text.push_str("\nRole x stage cells\n");
        text.push_str(&cells.render());
    }
    text
}

fn spread(stats: Option<&routing::DurationStats>) -> [String; 4] {
    let stats = stats.cloned().unwrap_or_default();
    [
        stats.count.to_string(),
        human_duration(stats.p50.as_ref()),
        human_duration(stats.p90.as_ref()),
        human_duration(stats.p99.as_ref()),
    ]
}

/// The routing metrics as tables: speed to lead, outcomes, and the load per rep.
pub fn render_routing(
    metrics: &routing::GetRoutingMetricsResponse,
    rep_names: &BTreeMap<String, String>,
) -> String {
    let mut text = String::from("Speed to lead\n");
    let mut speed = Table::new(&["FROM SALES-READY TO", ">LEADS", ">P50", ">P90", ">P99"]);
    let speed_to_lead = metrics.speed_to_lead.unwrap_or_default();
    for (label, stats) in [
        ("assigned", speed_to_lead.ready_to_assigned.as_ref()),
        ("accepted", speed_to_lead.ready_to_accepted.as_ref()),
    ] {
        speed.row(std::iter::once(label.to_owned()).chain(spread(stats)));
    }
    text.push_str(&speed.render());
    let rejections: Vec<String> = metrics
        .rejections
        .iter()
        .map(|rejection| {
            let reason = routing::RejectionReason::try_from(rejection.reason)
                .map_or("unknown", |reason| reason.as_str_name())
                .trim_start_matches("REJECTION_REASON_")
                .to_lowercase()
                .replace('_', " ");
            format!("{reason} {}", rejection.count)
        })
        .collect();
    text.push_str(&format!(
        "assignments {}, accepted {}, rejected: {}; SLA breaches {}, escalations {}, queued now {}\n",
        metrics.assignment_count,
        metrics.accepted_count,
        if rejections.is_empty() { "none".to_owned() } else { rejections.join(", ") },
        metrics.sla_breach_count,
        metrics.escalation_count,
        metrics.queued_lead_count,
    ));
    let mut loads = Table::new(&[
        "REP",
        ">OPEN",
        ">CAPACITY",
        ">ASSIGNED",
        ">ACCEPTED",
        ">REJECTED",
        ">SLA BREACHES",
        ">P50 TO ACCEPT",
    ]);
    for load in &metrics.rep_loads {
        loads.row([
            rep_names
                .get(&load.rep_id)
                .cloned()
                .unwrap_or_else(|| load.rep_id.clone()),
            load.open_assignments.to_string(),
            load.capacity.to_string(),
            load.assigned_count.to_string(),
            load.accepted_count.to_string(),
            load.rejected_count.to_string(),
            load.sla_breach_count.to_string(),
            human_duration(
                load.assigned_to_accepted
                    .as_ref()
                    .and_then(|stats| stats.p50.as_ref()),
            ),
        ]);
    }
    if !loads.is_empty() {
        text.push_str("\nLoad per rep\n");
        text.push_str(&loads.render());
    }
    text
}
