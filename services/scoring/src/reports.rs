//! Scoring's reports: the funnel of a product per calendar period with its segments, the
//! trend of its conversion durations and its campaigns' costs and returns, and the forecast
//! of closes from the leads in hand. Every figure is computed from the class and stage
//! history, the deals and the recorded marketing costs of one consistent snapshot; the
//! funnel follows the leads that moved within its range one by one, and takes the many that
//! did not as counts per standing from the database.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use leadflow_domain::{
    LeadClass, LifecycleStage,
    funnel::{self, DealValue, FunnelFigures, FunnelStep, Journey, PeriodLength, Span},
};
use leadflow_platform::{
    FieldViolations,
    time::{from_timestamp, to_duration, to_timestamp},
    validate,
};
use leadflow_proto::{
    common::v1 as common,
    domain::{lead_class, proto_class},
    scoring::v1 as pb,
};
use uuid::Uuid;

use crate::{
    error::ScoringError,
    hot::{class_value, stage_of},
    records::{FunnelRecords, FunnelSlice, MarketingCostRow},
};

/// The most periods one funnel report holds.
pub const MAX_REPORT_PERIODS: usize = 1_000;
/// The employee-count bands of a company-size segmentation when the request names none.
const DEFAULT_SIZE_BOUNDARIES: [u32; 5] = [1, 10, 50, 250, 1000];
/// The campaign of a lead with neither a utm_campaign nor a source.
const NO_CAMPAIGN: &str = "(none)";
/// The segment of a lead that lacks the segmented attribute.
const UNKNOWN_SEGMENT: &str = "(unknown)";
/// The longest campaign name.
pub const MAX_CAMPAIGN_CHARS: usize = 200;
/// The longest note of a marketing cost.
pub const MAX_COST_NOTE_CHARS: usize = 500;
/// How many past periods a forecast measures its rates over when the request names none.
const DEFAULT_RATE_PERIODS: u32 = 4;

/// The period length a request asks for.
pub fn period_length(
    violations: &mut FieldViolations,
    field: &str,
    value: i32,
) -> Option<PeriodLength> {
    match pb::ReportPeriod::try_from(value) {
        Ok(pb::ReportPeriod::Week) => Some(PeriodLength::Week),
        Ok(pb::ReportPeriod::Month) => Some(PeriodLength::Month),
        Ok(pb::ReportPeriod::Quarter) => Some(PeriodLength::Quarter),
        Ok(pb::ReportPeriod::HalfYear) => Some(PeriodLength::HalfYear),
        Ok(pb::ReportPeriod::Unspecified) | Err(_) => {
            violations.add(field, "is required: a week, month, quarter or half-year");
            None
        }
    }
}

/// A time range of a request as a span: the start is required, an unset end means `now`.
fn span(
    violations: &mut FieldViolations,
    field: &str,
    range: Option<&common::TimeRange>,
    now: DateTime<Utc>,
) -> Option<Span> {
    let start = range
        .and_then(|range| range.start_time.as_ref())
        .and_then(from_timestamp);
    let Some(start) = start else {
        violations.add(format!("{field}.start_time"), "is required");
        return None;
    };
    let end = range
        .and_then(|range| range.end_time.as_ref())
        .and_then(from_timestamp)
        .unwrap_or(now);
    if end < start {
        violations.add(
            format!("{field}.end_time"),
            "must not lie before start_time",
        );
        return None;
    }
    Some(Span { start, end })
}

/// The proto time range of a span.
fn time_range(span: &Span) -> common::TimeRange {
    common::TimeRange {
        start_time: Some(to_timestamp(span.start)),
        end_time: Some(to_timestamp(span.end)),
    }
}

/// One lead of the product with its journey and what it is segmented by.
struct ReportedLead {
    journey: Journey,
    profile: common::LeadProfile,
    campaign: String,
}

/// The changes of one lead: when, which change (for ties), and what it changed to.
type Changes<T> = Vec<(DateTime<Utc>, Uuid, T)>;

/// The leads of the report's product with their journeys, in lead id order.
fn reported_leads(records: &FunnelRecords) -> Vec<ReportedLead> {
    let mut classes: HashMap<Uuid, Changes<Option<LeadClass>>> = HashMap::new();
    for change in &records.class_changes {
        classes.entry(change.lead_id).or_default().push((
            change.change_time,
            change.change_id,
            lead_class(class_value(&change.to_class)),
        ));
    }
    let mut stages: HashMap<Uuid, Changes<_>> = HashMap::new();
    for change in &records.stage_changes {
        stages.entry(change.lead_id).or_default().push((
            change.change_time,
            change.change_id,
            stage_of(&change.to_stage),
        ));
    }
    let mut deals: HashMap<Uuid, Vec<DealValue>> = HashMap::new();
    for deal in records
        .deals
        .iter()
        .filter(|deal| deal.won && !deal.currency.is_empty())
    {
        deals.entry(deal.lead_id).or_default().push(DealValue {
            closed_at: deal.closed_at,
            currency: deal.currency.clone(),
            amount_minor: deal.amount_minor,
        });
    }
    let profiles: HashMap<Uuid, &common::LeadProfile> = records
        .leads
        .iter()
        .map(|lead| (lead.lead_id, &lead.profile))
        .collect();
    let campaigns: HashMap<Uuid, &str> = records
        .campaigns
        .iter()
        .map(|(lead_id, campaign)| (*lead_id, campaign.as_str()))
        .collect();
    records
        .standings
        .iter()
        .map(|standing| {
            let lead_id = standing.lead_id;
            let mut lead_classes = classes.remove(&lead_id).unwrap_or_default();
            lead_classes.sort_by_key(|(time, id, _)| (*time, *id));
            let mut lead_stages = stages.remove(&lead_id).unwrap_or_default();
            lead_stages.sort_by_key(|(time, id, _)| (*time, *id));
            let profile = profiles
                .get(&lead_id)
                .map(|profile| (*profile).clone())
                .unwrap_or_default();
            let campaign = campaigns
                .get(&lead_id)
                .map(|campaign| (*campaign).to_owned())
                .or_else(|| {
                    Some(profile.source.trim().to_owned()).filter(|source| !source.is_empty())
                })
                .unwrap_or_else(|| NO_CAMPAIGN.to_owned());
            ReportedLead {
                journey: Journey {
                    created: standing.create_time,
                    classes: lead_classes
                        .into_iter()
                        .map(|(time, _, class)| (time, class))
                        .collect(),
                    stages: lead_stages
                        .into_iter()
                        .map(|(time, _, stage)| (time, stage))
                        .collect(),
                    won_deals: deals.remove(&lead_id).unwrap_or_default(),
                },
                profile,
                campaign,
            }
        })
        .collect()
}

/// Leads of the report's product that did not move within its range, of one standing and
/// one segment (empty when the report is not segmented).
struct SettledLeads {
    class: Option<LeadClass>,
    stage: LifecycleStage,
    segment: String,
    count: u32,
}

/// The leads created before `since` that did not move since, counted by standing and segment:
/// the counts of all leads created before `since`, less the moving ones among them.
fn settled_leads(
    slice: &FunnelSlice,
    segmentation: Option<&Segmentation>,
    since: DateTime<Utc>,
) -> Vec<SettledLeads> {
    let unknown = common::LeadProfile::default();
    let segment_of = |profile: Option<&common::LeadProfile>| {
        segmentation.map_or_else(String::new, |segmentation| {
            segmentation.segment_of(profile.unwrap_or(&unknown))
        })
    };
    let mut counts: BTreeMap<(&str, &str, String), i64> = BTreeMap::new();
    for group in &slice.before {
        *counts
            .entry((
                &group.lead_class,
                &group.stage,
                segment_of(group.profile.as_ref()),
            ))
            .or_insert(0) += i64::from(group.lead_count);
    }
    let profiles: HashMap<Uuid, &common::LeadProfile> = slice
        .moving
        .leads
        .iter()
        .map(|lead| (lead.lead_id, &lead.profile))
        .collect();
    for standing in slice
        .moving
        .standings
        .iter()
        .filter(|standing| standing.create_time < since)
    {
        *counts
            .entry((
                &standing.lead_class,
                &standing.stage,
                segment_of(profiles.get(&standing.lead_id).copied()),
            ))
            .or_insert(0) -= 1;
    }
    counts
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|((class, stage, segment), count)| SettledLeads {
            class: lead_class(class_value(class)),
            stage: stage_of(stage),
            segment,
            count: u32::try_from(count).unwrap_or(u32::MAX),
        })
        .collect()
}

/// The figures of `journeys` and `settled` over `span`.
fn figures_with<'a>(
    journeys: impl IntoIterator<Item = &'a Journey>,
    settled: &[&SettledLeads],
    span: Span,
) -> FunnelFigures {
    let mut figures = funnel::figures(journeys, span);
    for leads in settled {
        funnel::add_settled(&mut figures, leads.class, leads.stage, leads.count);
    }
    figures
}

/// What a lead is segmented by.
#[derive(Debug, Clone)]
enum Segmentation {
    Source,
    CompanySize(Vec<u32>),
    Industry,
    Region,
}

impl Segmentation {
    fn segment_of(&self, profile: &common::LeadProfile) -> String {
        let known = |value: &str| {
            let value = value.trim();
            if value.is_empty() {
                UNKNOWN_SEGMENT.to_owned()
            } else {
                value.to_owned()
            }
        };
        match self {
            Self::Source => known(&profile.source),
            Self::Industry => known(&profile.industry),
            Self::Region => known(&profile.region),
            Self::CompanySize(boundaries) => size_band(boundaries, profile.employee_count),
        }
    }
}

/// The employee-count band of a company, e.g. "50-249" or "1000+".
fn size_band(boundaries: &[u32], employees: u32) -> String {
    if employees == 0 {
        return UNKNOWN_SEGMENT.to_owned();
    }
    let Some(lower) = boundaries.iter().rposition(|bound| *bound <= employees) else {
        return format!("<{}", boundaries.first().copied().unwrap_or(1));
    };
    match boundaries.get(lower + 1) {
        Some(next) => format!("{}-{}", boundaries[lower], next - 1),
        None => format!("{}+", boundaries[lower]),
    }
}

fn segmentation(
    violations: &mut FieldViolations,
    request: &pb::GetFunnelReportRequest,
) -> Option<Segmentation> {
    let boundaries = if request.company_size_boundaries.is_empty() {
        DEFAULT_SIZE_BOUNDARIES.to_vec()
    } else {
        let ascending = request
            .company_size_boundaries
            .windows(2)
            .all(|pair| pair[0] < pair[1]);
        if !ascending {
            violations.add("company_size_boundaries", "must be strictly ascending");
        }
        request.company_size_boundaries.clone()
    };
    match pb::SegmentDimension::try_from(request.segment_by) {
        Ok(pb::SegmentDimension::Source) => Some(Segmentation::Source),
        Ok(pb::SegmentDimension::CompanySize) => Some(Segmentation::CompanySize(boundaries)),
        Ok(pb::SegmentDimension::Industry) => Some(Segmentation::Industry),
        Ok(pb::SegmentDimension::Region) => Some(Segmentation::Region),
        Ok(pb::SegmentDimension::Unspecified) => None,
        Err(_) => {
            violations.add("segment_by", "is not a segment dimension");
            None
        }
    }
}

/// A checked funnel report request.
#[derive(Debug, Clone)]
pub struct FunnelQuery {
    /// The product.
    pub product: String,
    range: Span,
    length: PeriodLength,
    segmentation: Option<Segmentation>,
}

impl FunnelQuery {
    /// Checks a request, naming every wrong field.
    pub fn parse(
        request: &pb::GetFunnelReportRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, ScoringError> {
        let mut violations = FieldViolations::new();
        let product = validate::identifier(&mut violations, "product", &request.product);
        let range = span(
            &mut violations,
            "time_range",
            request.time_range.as_ref(),
            now,
        );
        let length = period_length(&mut violations, "period", request.period);
        let segmentation = segmentation(&mut violations, request);
        if let (Some(range), Some(length)) = (range, length)
            && funnel::periods(range, length).len() > MAX_REPORT_PERIODS
        {
            violations.add(
                "time_range",
                format!("spans more than {MAX_REPORT_PERIODS} periods; ask for longer periods"),
            );
        }
        violations.into_result()?;
        Ok(Self {
            product,
            range: range.expect("no violations means a range"),
            length: length.expect("no violations means a period"),
            segmentation,
        })
    }

    /// The start of the range: the leads that moved from then on are followed one by one.
    pub fn since(&self) -> DateTime<Utc> {
        self.range.start
    }

    /// Whether the report is segmented, so the leads that did not move are counted by
    /// profile too.
    pub fn segmented(&self) -> bool {
        self.segmentation.is_some()
    }
}

/// The funnel report of `slice` for `query`.
pub fn funnel_report(slice: &FunnelSlice, query: &FunnelQuery) -> pb::GetFunnelReportResponse {
    let records = &slice.moving;
    let leads = reported_leads(records);
    let settled = settled_leads(slice, query.segmentation.as_ref(), query.since());
    let all_settled: Vec<&SettledLeads> = settled.iter().collect();
    let journeys = || leads.iter().map(|lead| &lead.journey);
    let spans = funnel::periods(query.range, query.length);
    let mut per_period = Vec::with_capacity(spans.len());
    let mut periods = Vec::with_capacity(spans.len());
    for period in &spans {
        let figures = figures_with(journeys(), &all_settled, *period);
        let costs = prorated_costs(records.costs.iter(), period);
        let segments = match &query.segmentation {
            Some(segmentation) => segment_metrics(&leads, &settled, segmentation, period),
            None => Vec::new(),
        };
        periods.push(pb::FunnelPeriod {
            time_range: Some(time_range(period)),
            totals: Some(metrics(&figures, &costs)),
            segments,
        });
        per_period.push(figures);
    }
    let totals = figures_with(journeys(), &all_settled, query.range);
    let total_costs = prorated_costs(records.costs.iter(), &query.range);
    pb::GetFunnelReportResponse {
        periods,
        totals: Some(metrics(&totals, &total_costs)),
        duration_trends: funnel::duration_trends(&per_period)
            .into_iter()
            .map(|trend| pb::DurationTrend {
                step: proto_step(trend.step) as i32,
                change_per_period: Some(to_duration(trend.change_per_period)),
                periods_measured: trend.periods_measured,
            })
            .collect(),
        // Leads that did not move within the range add no new lead, close or won deal to
        // any campaign.
        campaigns: campaigns(&leads, &records.costs, &query.range),
    }
}

fn segment_metrics(
    leads: &[ReportedLead],
    settled: &[SettledLeads],
    segmentation: &Segmentation,
    period: &Span,
) -> Vec<pb::FunnelSegment> {
    type Members<'a> = (Vec<&'a Journey>, Vec<&'a SettledLeads>);
    let mut by_segment: BTreeMap<String, Members<'_>> = BTreeMap::new();
    for lead in leads
        .iter()
        .filter(|lead| lead.journey.created < period.end)
    {
        by_segment
            .entry(segmentation.segment_of(&lead.profile))
            .or_default()
            .0
            .push(&lead.journey);
    }
    for leads in settled {
        by_segment
            .entry(leads.segment.clone())
            .or_default()
            .1
            .push(leads);
    }
    by_segment
        .into_iter()
        .map(|(segment_value, (journeys, settled))| pb::FunnelSegment {
            segment_value,
            metrics: Some(metrics(
                &figures_with(journeys, &settled, *period),
                &BTreeMap::new(),
            )),
        })
        .collect()
}

/// The costs per currency, each prorated by how much of its time lies in `span`.
fn prorated_costs<'a>(
    costs: impl Iterator<Item = &'a MarketingCostRow>,
    span: &Span,
) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for cost in costs {
        let spent_over = Span {
            start: cost.start_time,
            end: cost.end_time,
        };
        let length = spent_over.length().num_milliseconds();
        let inside = spent_over.overlap(span).num_milliseconds();
        let share = if length <= 0 {
            // A cost spent at an instant counts whole where that instant lies.
            if span.contains(cost.start_time) {
                cost.amount_minor
            } else {
                0
            }
        } else {
            let exact = i128::from(cost.amount_minor) * i128::from(inside) / i128::from(length);
            i64::try_from(exact).unwrap_or(i64::MAX)
        };
        if share > 0 {
            *totals.entry(cost.currency.clone()).or_insert(0) += share;
        }
    }
    totals
}

fn money(amounts: &BTreeMap<String, i64>) -> Vec<pb::Money> {
    amounts
        .iter()
        .map(|(currency, minor)| pb::Money {
            currency_code: currency.clone(),
            minor_units: *minor,
        })
        .collect()
}

/// Each amount divided by `count`, none when `count` is 0.
fn per(amounts: &BTreeMap<String, i64>, count: u32) -> BTreeMap<String, i64> {
    if count == 0 {
        return BTreeMap::new();
    }
    amounts
        .iter()
        .map(|(currency, minor)| (currency.clone(), minor / i64::from(count)))
        .collect()
}

fn metrics(figures: &FunnelFigures, costs: &BTreeMap<String, i64>) -> pb::FunnelMetrics {
    pb::FunnelMetrics {
        new_lead_count: figures.new_leads,
        class_counts: LeadClass::ALL
            .iter()
            .rev()
            .map(|class| pb::ClassCount {
                lead_class: proto_class(Some(*class)) as i32,
                lead_count: figures.class_counts.get(class).copied().unwrap_or(0),
            })
            .collect(),
        stage_counts: figures
            .stage_counts
            .iter()
            .map(|(stage, count)| pb::StageCount {
                stage: common::LifecycleStage::from_str_name(crate::hot::stage_name(*stage))
                    .unwrap_or_default() as i32,
                lead_count: *count,
            })
            .collect(),
        class_a_share: figures.class_a_share(),
        closed_deal_count: figures.closes,
        conversions: figures.steps.iter().map(conversion).collect(),
        won_deal_values: money(&figures.won_values),
        average_deal_values: money(&figures.average_won_values()),
        marketing_costs: money(costs),
        cost_per_lead: money(&per(costs, figures.new_leads)),
    }
}

fn conversion(step: &funnel::StepFigures) -> pb::StepConversion {
    pb::StepConversion {
        step: proto_step(step.step) as i32,
        entered_count: step.entered,
        converted_count: step.converted,
        rate: step.rate(),
        median_duration: step.median_duration().map(to_duration),
        mean_duration: step.mean_duration().map(to_duration),
    }
}

fn proto_step(step: FunnelStep) -> pb::FunnelStep {
    match step {
        FunnelStep::B1ToB2 => pb::FunnelStep::B1ToB2,
        FunnelStep::B2ToB3 => pb::FunnelStep::B2ToB3,
        FunnelStep::B3ToA => pb::FunnelStep::B3ToA,
        FunnelStep::AToClose => pb::FunnelStep::AToClose,
        FunnelStep::MqlToSal => pb::FunnelStep::MqlToSal,
        FunnelStep::SalToSql => pb::FunnelStep::SalToSql,
        FunnelStep::SqlToOpportunity => pb::FunnelStep::SqlToOpportunity,
        FunnelStep::OpportunityToCustomer => pb::FunnelStep::OpportunityToCustomer,
    }
}

/// Every campaign with leads or costs in `range`, most new leads first.
fn campaigns(
    leads: &[ReportedLead],
    costs: &[MarketingCostRow],
    range: &Span,
) -> Vec<pb::CampaignPerformance> {
    let mut by_campaign: BTreeMap<&str, Vec<&Journey>> = BTreeMap::new();
    for lead in leads {
        by_campaign
            .entry(&lead.campaign)
            .or_default()
            .push(&lead.journey);
    }
    for cost in costs {
        by_campaign.entry(&cost.campaign).or_default();
    }
    let mut performances: Vec<pb::CampaignPerformance> = by_campaign
        .into_iter()
        .filter_map(|(campaign, journeys)| {
            let figures = funnel::figures(journeys, *range);
            let spent =
                prorated_costs(costs.iter().filter(|cost| cost.campaign == campaign), range);
            if figures.new_leads == 0 && figures.closes == 0 && spent.is_empty() {
                return None;
            }
            let returns = spent
                .iter()
                .filter(|(_, cost)| **cost > 0)
                .map(|(currency, cost)| {
                    let won = figures.won_values.get(currency).copied().unwrap_or(0);
                    pb::CampaignReturn {
                        currency_code: currency.clone(),
                        return_on_investment: (won - cost) as f64 / *cost as f64,
                    }
                })
                .collect();
            Some(pb::CampaignPerformance {
                campaign: campaign.to_owned(),
                new_lead_count: figures.new_leads,
                closed_deal_count: figures.closes,
                cost_per_lead: money(&per(&spent, figures.new_leads)),
                costs: money(&spent),
                won_deal_values: money(&figures.won_values),
                returns,
            })
        })
        .collect();
    performances.sort_by(|a, b| {
        b.new_lead_count
            .cmp(&a.new_lead_count)
            .then_with(|| a.campaign.cmp(&b.campaign))
    });
    performances
}

/// A checked forecast request.
#[derive(Debug, Clone)]
pub struct ForecastQuery {
    /// The product.
    pub product: String,
    length: PeriodLength,
    window: Span,
    target_closes: u32,
    now: DateTime<Utc>,
}

impl ForecastQuery {
    /// Checks a request, naming every wrong field; an unset rate window is the last four
    /// whole periods before the current one.
    pub fn parse(
        request: &pb::GetForecastRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, ScoringError> {
        let mut violations = FieldViolations::new();
        let product = validate::identifier(&mut violations, "product", &request.product);
        let length = period_length(&mut violations, "period", request.period);
        let window = match (&request.rate_window, length) {
            (Some(window), _) => span(&mut violations, "rate_window", Some(window), now),
            (None, Some(length)) => Some(Span {
                start: length.start_back(now, DEFAULT_RATE_PERIODS),
                end: length.start_of(now),
            }),
            (None, None) => None,
        };
        if let (Some(window), Some(length)) = (window, length)
            && funnel::periods(window, length).len() > MAX_REPORT_PERIODS
        {
            violations.add(
                "rate_window",
                format!("spans more than {MAX_REPORT_PERIODS} periods; ask for longer periods"),
            );
        }
        violations.into_result()?;
        Ok(Self {
            product,
            length: length.expect("no violations means a period"),
            window: window.expect("no violations means a window"),
            target_closes: request.target_closes,
            now,
        })
    }
}

/// The forecast of `records` for `query`; fails when the window holds no close to measure.
pub fn forecast(
    records: &FunnelRecords,
    query: &ForecastQuery,
) -> Result<pb::GetForecastResponse, ScoringError> {
    let journeys: Vec<Journey> = reported_leads(records)
        .into_iter()
        .map(|lead| lead.journey)
        .collect();
    let window = funnel::figures(&journeys, query.window);
    if window.closes == 0 {
        return Err(ScoringError::FailedPrecondition(format!(
            "the rate window {} to {} holds no closed deal of {} to measure rates from",
            query.window.start.to_rfc3339(),
            query.window.end.to_rfc3339(),
            query.product
        )));
    }
    let periods = funnel::periods(query.window, query.length);
    let forecast = funnel::forecast(&journeys, query.now, &window, &periods, query.target_closes);
    let start = query.length.next_start(query.length.start_of(query.now));
    let forecast_period = Span {
        start,
        end: query.length.next_start(start),
    };
    let expected_order_values = window
        .average_won_values()
        .iter()
        .map(|(currency, average)| pb::Money {
            currency_code: currency.clone(),
            minor_units: (*average as f64 * forecast.expected_closes).round() as i64,
        })
        .collect();
    Ok(pb::GetForecastResponse {
        forecast_period: Some(time_range(&forecast_period)),
        expected_closes: forecast.expected_closes,
        by_class: forecast
            .by_class
            .iter()
            .rev()
            .map(|(class, lead_count, probability)| pb::ClassForecast {
                lead_class: proto_class(Some(*class)) as i32,
                lead_count: *lead_count,
                close_probability: *probability,
                expected_closes: f64::from(*lead_count) * probability,
            })
            .collect(),
        lead_to_close_rate: forecast.lead_to_close_rate,
        leads_needed: forecast.leads_needed,
        additional_leads_needed: forecast.additional_leads_needed,
        rates: window.steps.iter().map(conversion).collect(),
        expected_order_values,
    })
}

/// A checked marketing cost, ready to keep.
pub fn parse_marketing_cost(
    request: &pb::RecordMarketingCostRequest,
    violations: &mut FieldViolations,
    now: DateTime<Utc>,
) -> Option<MarketingCostRow> {
    let product = validate::identifier(violations, "product", &request.product);
    let campaign = validate::required_text(
        violations,
        "campaign",
        &request.campaign,
        MAX_CAMPAIGN_CHARS,
    );
    let note = validate::optional_text(violations, "note", &request.note, MAX_COST_NOTE_CHARS);
    let amount = request.amount.clone().unwrap_or_default();
    validate::currency(violations, "amount.currency_code", &amount.currency_code);
    if amount.minor_units <= 0 {
        violations.add("amount.minor_units", "must be above 0");
    }
    let range = request.time_range.as_ref();
    let start = range
        .and_then(|range| range.start_time.as_ref())
        .and_then(from_timestamp);
    let end = range
        .and_then(|range| range.end_time.as_ref())
        .and_then(from_timestamp);
    if start.is_none() {
        violations.add("time_range.start_time", "is required");
    }
    if end.is_none() {
        violations.add("time_range.end_time", "is required");
    }
    if let (Some(start), Some(end)) = (start, end)
        && end < start
    {
        violations.add("time_range.end_time", "must not lie before start_time");
    }
    Some(MarketingCostRow {
        cost_id: Uuid::now_v7(),
        product,
        campaign,
        currency: amount.currency_code,
        amount_minor: amount.minor_units,
        start_time: start?,
        end_time: end?,
        note,
        create_time: now,
    })
}

/// A marketing cost as the contract shows it.
pub fn marketing_cost(row: &MarketingCostRow) -> pb::MarketingCost {
    pb::MarketingCost {
        cost_id: row.cost_id.to_string(),
        product: row.product.clone(),
        campaign: row.campaign.clone(),
        amount: Some(pb::Money {
            currency_code: row.currency.clone(),
            minor_units: row.amount_minor,
        }),
        time_range: Some(common::TimeRange {
            start_time: Some(to_timestamp(row.start_time)),
            end_time: Some(to_timestamp(row.end_time)),
        }),
        note: row.note.clone(),
        create_time: Some(to_timestamp(row.create_time)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_sizes_fall_into_the_bands_their_boundaries_make() {
        let bounds = DEFAULT_SIZE_BOUNDARIES;
        assert_eq!(size_band(&bounds, 0), UNKNOWN_SEGMENT);
        assert_eq!(size_band(&bounds, 1), "1-9");
        assert_eq!(size_band(&bounds, 49), "10-49");
        assert_eq!(size_band(&bounds, 50), "50-249");
        assert_eq!(size_band(&bounds, 1000), "1000+");
        assert_eq!(size_band(&[20, 100], 5), "<20");
    }

    #[test]
    fn a_cost_counts_by_how_much_of_its_time_lies_in_the_period() {
        let day = |d: u32| {
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, d, 0, 0, 0)
                .single()
                .expect("a date")
        };
        let cost = MarketingCostRow {
            cost_id: Uuid::nil(),
            product: "erp".to_owned(),
            campaign: "spring".to_owned(),
            currency: "EUR".to_owned(),
            amount_minor: 10_000,
            start_time: day(1),
            end_time: day(11),
            note: String::new(),
            create_time: day(1),
        };
        let first_half = Span {
            start: day(1),
            end: day(6),
        };
        assert_eq!(
            prorated_costs([&cost].into_iter(), &first_half).get("EUR"),
            Some(&5_000)
        );
        let after = Span {
            start: day(11),
            end: day(20),
        };
        assert!(prorated_costs([&cost].into_iter(), &after).is_empty());
    }
}
