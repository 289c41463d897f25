//! The funnel in numbers: calendar reporting periods, the classes and stages leads were in
//! at a period's end, the conversion of each funnel step with its durations, the trend of
//! those durations, and the forecast of closes from the leads in hand.
//!
//! A lead's journey is its class and stage history; every figure here follows from it, so a
//! report of any past period can be computed again and gives the same answer.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use crate::{LeadClass, LifecycleStage};

/// The length of one reporting period; each starts at a calendar boundary in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodLength {
    /// A calendar week, Monday to Sunday (ISO 8601).
    Week,
    /// A calendar month.
    Month,
    /// A calendar quarter.
    Quarter,
    /// A calendar half-year: January to June, July to December.
    HalfYear,
}

impl PeriodLength {
    /// The start of the period that holds `time`.
    pub fn start_of(self, time: DateTime<Utc>) -> DateTime<Utc> {
        let date = time.date_naive();
        let first = match self {
            Self::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
            Self::Month => first_of_month(date.year(), date.month()),
            Self::Quarter => first_of_month(date.year(), (date.month() - 1) / 3 * 3 + 1),
            Self::HalfYear => first_of_month(date.year(), (date.month() - 1) / 6 * 6 + 1),
        };
        midnight(first)
    }

    /// The start of the period after the one starting at `start`.
    pub fn next_start(self, start: DateTime<Utc>) -> DateTime<Utc> {
        let date = start.date_naive();
        let months = match self {
            Self::Week => return midnight(date + Duration::days(7)),
            Self::Month => 1,
            Self::Quarter => 3,
            Self::HalfYear => 6,
        };
        let index = date.year() * 12 + i32::try_from(date.month0()).unwrap_or(0) + months;
        let month = u32::try_from(index.rem_euclid(12)).unwrap_or(0) + 1;
        midnight(first_of_month(index.div_euclid(12), month))
    }

    /// The start of the period before the one starting at `start`.
    pub fn previous_start(self, start: DateTime<Utc>) -> DateTime<Utc> {
        self.start_of(start - Duration::seconds(1))
    }

    /// The start of the period `periods` before the one that holds `time`.
    pub fn start_back(self, time: DateTime<Utc>, periods: u32) -> DateTime<Utc> {
        (0..periods).fold(self.start_of(time), |start, _| self.previous_start(start))
    }
}

fn first_of_month(year: i32, month: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN)
}

/// The first instant of `date`, in UTC.
pub fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

/// A half-open span of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// The first instant inside.
    pub start: DateTime<Utc>,
    /// The first instant after.
    pub end: DateTime<Utc>,
}

impl Span {
    /// Whether `time` lies inside.
    pub fn contains(&self, time: DateTime<Utc>) -> bool {
        self.start <= time && time < self.end
    }

    /// How long the span lasts.
    pub fn length(&self) -> Duration {
        self.end - self.start
    }

    /// How much of this span lies inside `other`.
    pub fn overlap(&self, other: &Span) -> Duration {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (end - start).max(Duration::zero())
    }
}

/// The calendar periods covering `range`, oldest first; the first and the last are cut to
/// the range, so they may be partial. Empty when the range is empty.
pub fn periods(range: Span, length: PeriodLength) -> Vec<Span> {
    let mut periods = Vec::new();
    let mut start = length.start_of(range.start);
    while start < range.end {
        let end = length.next_start(start);
        periods.push(Span {
            start: start.max(range.start),
            end: end.min(range.end),
        });
        start = end;
    }
    periods
}

/// A won deal's value in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealValue {
    /// When the deal was closed.
    pub closed_at: DateTime<Utc>,
    /// The ISO 4217 currency code.
    pub currency: String,
    /// The amount in the currency's minor unit.
    pub amount_minor: i64,
}

/// One lead's way through the funnel for one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journey {
    /// When the lead was first scored for the product.
    pub created: DateTime<Utc>,
    /// Its class changes, oldest first: when, and the class after (none: unclassified).
    pub classes: Vec<(DateTime<Utc>, Option<LeadClass>)>,
    /// Its stage changes, oldest first: when, and the stage after. Before the first it is new.
    pub stages: Vec<(DateTime<Utc>, LifecycleStage)>,
    /// The values of its won deals.
    pub won_deals: Vec<DealValue>,
}

impl Journey {
    /// The class just before `time` (changes at `time` not yet made).
    pub fn class_before(&self, time: DateTime<Utc>) -> Option<LeadClass> {
        self.classes
            .iter()
            .take_while(|(when, _)| *when < time)
            .last()
            .and_then(|(_, class)| *class)
    }

    /// The stage just before `time`.
    pub fn stage_before(&self, time: DateTime<Utc>) -> LifecycleStage {
        self.stages
            .iter()
            .take_while(|(when, _)| *when < time)
            .last()
            .map_or(LifecycleStage::New, |(_, stage)| *stage)
    }

    /// Each class change as (when, from, to).
    fn class_moves(
        &self,
    ) -> impl Iterator<Item = (DateTime<Utc>, Option<LeadClass>, Option<LeadClass>)> {
        let befores = std::iter::once(None).chain(self.classes.iter().map(|(_, class)| *class));
        self.classes
            .iter()
            .zip(befores)
            .map(|((when, to), from)| (*when, from, *to))
    }

    /// Each stage change as (when, from, to).
    fn stage_moves(&self) -> impl Iterator<Item = (DateTime<Utc>, LifecycleStage, LifecycleStage)> {
        let befores =
            std::iter::once(LifecycleStage::New).chain(self.stages.iter().map(|(_, stage)| *stage));
        self.stages
            .iter()
            .zip(befores)
            .map(|((when, to), from)| (*when, from, *to))
    }

    /// The closes (stage changes to customer) inside `span`.
    fn closes_in(&self, span: &Span) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let span = *span;
        self.stage_moves()
            .filter(move |(when, from, to)| {
                span.contains(*when)
                    && *to == LifecycleStage::Customer
                    && *from != LifecycleStage::Customer
            })
            .map(|(when, _, _)| when)
    }
}

/// A step of the funnel whose conversion is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FunnelStep {
    /// Problem awareness to solution search.
    B1ToB2,
    /// Solution search to requesting offers.
    B2ToB3,
    /// Requesting offers to ready to buy.
    B3ToA,
    /// Ready to buy to a won deal: the close rate.
    AToClose,
    /// Marketing qualified to sales accepted.
    MqlToSal,
    /// Sales accepted to sales qualified.
    SalToSql,
    /// Sales qualified to an opportunity.
    SqlToOpportunity,
    /// An opportunity to a customer.
    OpportunityToCustomer,
}

impl FunnelStep {
    /// Every step, in funnel order.
    pub const ALL: [Self; 8] = [
        Self::B1ToB2,
        Self::B2ToB3,
        Self::B3ToA,
        Self::AToClose,
        Self::MqlToSal,
        Self::SalToSql,
        Self::SqlToOpportunity,
        Self::OpportunityToCustomer,
    ];
}

/// Where a step starts and what counts as getting through it.
enum StepKind {
    /// From a class to any class closer to a purchase (a lead may skip one).
    Class(LeadClass),
    /// From class A to a close.
    Close,
    /// From one stage to the next.
    Stage(LifecycleStage, LifecycleStage),
}

impl FunnelStep {
    fn kind(self) -> StepKind {
        use LifecycleStage::{Customer, Mql, Opportunity, Sal, Sql};
        match self {
            Self::B1ToB2 => StepKind::Class(LeadClass::B1),
            Self::B2ToB3 => StepKind::Class(LeadClass::B2),
            Self::B3ToA => StepKind::Class(LeadClass::B3),
            Self::AToClose => StepKind::Close,
            Self::MqlToSal => StepKind::Stage(Mql, Sal),
            Self::SalToSql => StepKind::Stage(Sal, Sql),
            Self::SqlToOpportunity => StepKind::Stage(Sql, Opportunity),
            Self::OpportunityToCustomer => StepKind::Stage(Opportunity, Customer),
        }
    }
}

/// How a step fared in one span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFigures {
    /// The step.
    pub step: FunnelStep,
    /// Leads in the step's starting class or stage at some time in the span.
    pub entered: u32,
    /// Of those, the leads that got through the step inside the span.
    pub converted: u32,
    /// How long each converted lead took, from entering the start to getting through.
    pub durations: Vec<Duration>,
}

impl StepFigures {
    /// converted / entered, 0 when nobody entered.
    pub fn rate(&self) -> f64 {
        ratio(self.converted, self.entered)
    }

    /// The median duration, when some lead converted.
    pub fn median_duration(&self) -> Option<Duration> {
        median(&self.durations)
    }

    /// The mean duration, when some lead converted.
    pub fn mean_duration(&self) -> Option<Duration> {
        let count = i32::try_from(self.durations.len())
            .ok()
            .filter(|count| *count > 0)?;
        let total: Duration = self.durations.iter().copied().sum();
        Some(total / count)
    }
}

/// `part / whole`, 0 for an empty whole.
pub fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

/// The median of `durations` (the mean of the middle two for an even count).
pub fn median(durations: &[Duration]) -> Option<Duration> {
    let mut sorted = durations.to_vec();
    sorted.sort();
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        count if count % 2 == 1 => Some(sorted[middle]),
        _ => Some(sorted[middle - 1] + (sorted[middle] - sorted[middle - 1]) / 2),
    }
}

/// The funnel figures of a set of leads over one span.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelFigures {
    /// Leads first scored inside the span.
    pub new_leads: u32,
    /// Leads per class at the span's end (classified leads only).
    pub class_counts: BTreeMap<LeadClass, u32>,
    /// Leads per stage at the span's end, in [`LifecycleStage::ALL`] order.
    pub stage_counts: Vec<(LifecycleStage, u32)>,
    /// Closes (moves to customer) inside the span.
    pub closes: u32,
    /// The value of the deals won inside the span, per currency.
    pub won_values: BTreeMap<String, i64>,
    /// The number of won deals with a value, per currency.
    pub won_deal_counts: BTreeMap<String, u32>,
    /// Each funnel step, in [`FunnelStep::ALL`] order.
    pub steps: Vec<StepFigures>,
}

impl FunnelFigures {
    /// The share of A-leads among the classified leads at the span's end.
    pub fn class_a_share(&self) -> f64 {
        let classified: u32 = self.class_counts.values().sum();
        ratio(
            self.class_counts.get(&LeadClass::A).copied().unwrap_or(0),
            classified,
        )
    }

    /// The average value of a won deal, per currency.
    pub fn average_won_values(&self) -> BTreeMap<String, i64> {
        self.won_values
            .iter()
            .filter_map(|(currency, total)| {
                let count = i64::from(*self.won_deal_counts.get(currency)?);
                (count > 0).then(|| (currency.clone(), total / count))
            })
            .collect()
    }

    /// The figures of one step.
    pub fn step(&self, step: FunnelStep) -> Option<&StepFigures> {
        self.steps.iter().find(|figures| figures.step == step)
    }
}

/// The funnel figures of `journeys` over `span`. Leads first scored after the span are left out.
pub fn figures<'a>(journeys: impl IntoIterator<Item = &'a Journey>, span: Span) -> FunnelFigures {
    let mut figures = FunnelFigures {
        new_leads: 0,
        class_counts: BTreeMap::new(),
        stage_counts: LifecycleStage::ALL
            .iter()
            .map(|stage| (*stage, 0))
            .collect(),
        closes: 0,
        won_values: BTreeMap::new(),
        won_deal_counts: BTreeMap::new(),
        steps: FunnelStep::ALL
            .iter()
            .map(|step| StepFigures {
                step: *step,
                entered: 0,
                converted: 0,
                durations: Vec::new(),
            })
            .collect(),
    };
    for journey in journeys {
        if journey.created >= span.end {
            continue;
        }
        if span.contains(journey.created) {
            figures.new_leads += 1;
        }
        if let Some(class) = journey.class_before(span.end) {
            *figures.class_counts.entry(class).or_insert(0) += 1;
        }
        let stage = journey.stage_before(span.end);
        if let Some((_, count)) = figures
            .stage_counts
            .iter_mut()
            .find(|(known, _)| *known == stage)
        {
            *count += 1;
        }
        figures.closes += u32::try_from(journey.closes_in(&span).count()).unwrap_or(u32::MAX);
        for deal in journey
            .won_deals
            .iter()
            .filter(|deal| span.contains(deal.closed_at))
        {
            *figures.won_values.entry(deal.currency.clone()).or_insert(0) += deal.amount_minor;
            *figures
                .won_deal_counts
                .entry(deal.currency.clone())
                .or_insert(0) += 1;
        }
        for step in &mut figures.steps {
            if let Some(outcome) = step_outcome(journey, step.step, &span) {
                step.entered += 1;
                if let Some(duration) = outcome {
                    step.converted += 1;
                    step.durations.push(duration);
                }
            }
        }
    }
    figures
}

/// Whether the journey entered the step's start in `span` (None if not), and if so whether
/// it got through in the span, with how long it took.
fn step_outcome(journey: &Journey, step: FunnelStep, span: &Span) -> Option<Option<Duration>> {
    match step.kind() {
        StepKind::Class(start) => {
            let was_in = journey.class_before(span.start) == Some(start)
                || journey
                    .classes
                    .iter()
                    .any(|(when, class)| span.contains(*when) && *class == Some(start));
            if !was_in {
                return None;
            }
            let mut entered_at = None;
            for (when, from, to) in journey.class_moves() {
                if to == Some(start) {
                    entered_at = Some(when);
                }
                let onwards = from == Some(start) && to.is_some_and(|to| to > start);
                if onwards && span.contains(when) {
                    return Some(entered_at.map(|entered| when - entered));
                }
            }
            Some(None)
        }
        StepKind::Close => {
            let was_in = journey.class_before(span.start) == Some(LeadClass::A)
                || journey
                    .classes
                    .iter()
                    .any(|(when, class)| span.contains(*when) && *class == Some(LeadClass::A));
            if !was_in {
                return None;
            }
            for close in journey.closes_in(span) {
                let class_then = journey
                    .classes
                    .iter()
                    .take_while(|(when, _)| *when <= close)
                    .last();
                if let Some((since, Some(LeadClass::A))) = class_then {
                    return Some(Some(close - *since));
                }
            }
            Some(None)
        }
        StepKind::Stage(from_stage, to_stage) => {
            let was_in = journey.stage_before(span.start) == from_stage
                || journey
                    .stages
                    .iter()
                    .any(|(when, stage)| span.contains(*when) && *stage == from_stage);
            if !was_in {
                return None;
            }
            let mut entered_at = None;
            for (when, from, to) in journey.stage_moves() {
                if to == from_stage {
                    entered_at = Some(when);
                }
                if from == from_stage && to == to_stage && span.contains(when) {
                    return Some(entered_at.map(|entered| when - entered));
                }
            }
            Some(None)
        }
    }
}

/// Adds to `figures` (of some span) `count` leads that were created before the span and did
/// not move inside it: no class or stage change, no deal. They stand in `class` and `stage`
/// all through it, so this is what [`figures`] makes of their journeys, without them: they
/// are counted where they stand, and enter the step that starts there without getting
/// through it.
pub fn add_settled(
    figures: &mut FunnelFigures,
    class: Option<LeadClass>,
    stage: LifecycleStage,
    count: u32,
) {
    if let Some(class) = class {
        *figures.class_counts.entry(class).or_insert(0) += count;
    }
    if let Some((_, counted)) = figures
        .stage_counts
        .iter_mut()
        .find(|(known, _)| *known == stage)
    {
        *counted += count;
    }
    for step in &mut figures.steps {
        let stands_at_start = match step.step.kind() {
            StepKind::Class(start) => class == Some(start),
            StepKind::Close => class == Some(LeadClass::A),
            StepKind::Stage(from_stage, _) => stage == from_stage,
        };
        if stands_at_start {
            step.entered += count;
        }
    }
}

/// How the median duration of a step moves from period to period: the least-squares slope
/// over the periods in which some lead converted, with how many periods it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationTrend {
    /// The step.
    pub step: FunnelStep,
    /// How much longer (positive) or shorter (negative) the median gets per period.
    pub change_per_period: Duration,
    /// The periods with conversions that the slope rests on; under two means no trend.
    pub periods_measured: u32,
}

/// The trend of each step's median duration over `periods` (figures in period order).
pub fn duration_trends(periods: &[FunnelFigures]) -> Vec<DurationTrend> {
    FunnelStep::ALL
        .iter()
        .map(|&step| {
            let points: Vec<(f64, f64)> = periods
                .iter()
                .enumerate()
                .filter_map(|(index, figures)| {
                    let median = figures.step(step)?.median_duration()?;
                    Some((index as f64, median.num_milliseconds() as f64))
                })
                .collect();
            DurationTrend {
                step,
                change_per_period: Duration::milliseconds(slope(&points).round() as i64),
                periods_measured: u32::try_from(points.len()).unwrap_or(u32::MAX),
            }
        })
        .collect()
}

/// The least-squares slope of `points`; 0 for fewer than two distinct x values.
fn slope(points: &[(f64, f64)]) -> f64 {
    let count = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / count;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / count;
    let covariance: f64 = points
        .iter()
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    let variance: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

/// The measured chance that a lead of one class closes within a period.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseRate {
    /// The class.
    pub class: LeadClass,
    /// Lead-periods observed: leads of the class in hand at the start of a measured period.
    pub observed: u32,
    /// Of those, how many closed within that period.
    pub closed: u32,
}

impl CloseRate {
    /// closed / observed, 0 without observations.
    pub fn probability(&self) -> f64 {
        ratio(self.closed, self.observed)
    }
}

/// Whether a lead in `stage` is still in hand: neither a customer nor out of the target group.
pub fn in_hand(stage: LifecycleStage) -> bool {
    !matches!(
        stage,
        LifecycleStage::Customer | LifecycleStage::Disqualified
    )
}

/// For each class, how often a lead of that class in hand at a period's start closed within
/// the period, over the measured `periods`.
pub fn close_rates(journeys: &[Journey], periods: &[Span]) -> Vec<CloseRate> {
    let mut rates: Vec<CloseRate> = LeadClass::ALL
        .iter()
        .map(|class| CloseRate {
            class: *class,
            observed: 0,
            closed: 0,
        })
        .collect();
    for period in periods {
        for journey in journeys
            .iter()
            .filter(|journey| journey.created < period.start)
        {
            if !in_hand(journey.stage_before(period.start)) {
                continue;
            }
            let Some(class) = journey.class_before(period.start) else {
                continue;
            };
            if let Some(rate) = rates.iter_mut().find(|rate| rate.class == class) {
                rate.observed += 1;
                if journey.closes_in(period).next().is_some() {
                    rate.closed += 1;
                }
            }
        }
    }
    rates
}

/// The forecast for the next period from the leads in hand and the measured rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// Per class: the leads in hand now, and the chance each closes in the next period.
    pub by_class: Vec<(LeadClass, u32, f64)>,
    /// The closes expected from the leads in hand.
    pub expected_closes: f64,
    /// Closes per new lead over the window, at most 1.
    pub lead_to_close_rate: f64,
    /// New leads needed for the target at that rate; 0 without a target.
    pub leads_needed: u32,
    /// New leads needed beyond what the leads in hand are expected to close.
    pub additional_leads_needed: u32,
}

/// Forecasts from `journeys` as they stand at `now`, with the rates measured over `window`
/// (split into `periods`), towards `target_closes` (0: no target).
pub fn forecast(
    journeys: &[Journey],
    now: DateTime<Utc>,
    window: &FunnelFigures,
    periods: &[Span],
    target_closes: u32,
) -> Forecast {
    let rates = close_rates(journeys, periods);
    let mut by_class = Vec::with_capacity(rates.len());
    let mut expected_closes = 0.0;
    for rate in &rates {
        let count = journeys
            .iter()
            .filter(|journey| journey.created < now)
            .filter(|journey| in_hand(journey.stage_before(now)))
            .filter(|journey| journey.class_before(now) == Some(rate.class))
            .count();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let probability = rate.probability();
        expected_closes += f64::from(count) * probability;
        by_class.push((rate.class, count, probability));
    }
    let lead_to_close_rate = if window.new_leads == 0 {
        if window.closes > 0 { 1.0 } else { 0.0 }
    } else {
        ratio(window.closes, window.new_leads).min(1.0)
    };
    let needed = |closes: f64| -> u32 {
        if closes <= 0.0 || lead_to_close_rate <= 0.0 {
            0
        } else {
            // A hair below the exact quotient, so that 15.000000000000002 leads are 15.
            let leads = (closes / lead_to_close_rate - 1e-9).ceil();
            if leads >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                leads as u32
            }
        }
    };
    Forecast {
        by_class,
        expected_closes,
        lead_to_close_rate,
        leads_needed: needed(f64::from(target_closes)),
        additional_leads_needed: if target_closes == 0 {
            0
        } else {
            needed(f64::from(target_closes) - expected_closes)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, 12, 0, 0)
            .single()
            .expect("a valid date")
    }

    fn span(start: DateTime<Utc>, end: DateTime<Utc>) -> Span {
        Span { start, end }
    }

    fn journey(created: DateTime<Utc>) -> Journey {
        Journey {
            created,
            classes: Vec::new(),
            stages: vec![(created, LifecycleStage::New)],
            won_deals: Vec::new(),
        }
    }

    #[test]
    fn a_lead_that_did_not_move_in_a_span_counts_as_its_journey_would() {
        let report = span(at(2026, 4, 1), at(2026, 5, 1));
        let classes = [
            None,
            Some(LeadClass::B1),
            Some(LeadClass::B2),
            Some(LeadClass::B3),
            Some(LeadClass::A),
            Some(LeadClass::C),
        ];
        for class in classes {
            for stage in LifecycleStage::ALL {
                let mut settled = journey(at(2026, 1, 10));
                settled.stages.push((at(2026, 2, 1), stage));
                settled.classes.push((at(2026, 2, 2), class));
                let mut counted = figures(std::iter::empty(), report);
                add_settled(&mut counted, class, stage, 1);
                assert_eq!(counted, figures([&settled], report), "{class:?} {stage:?}");
            }
        }
    }

    #[test]
    fn periods_start_at_calendar_boundaries_and_the_ends_are_cut_to_the_range() {
        let range = span(at(2026, 2, 18), at(2026, 5, 3));
        let months = periods(range, PeriodLength::Month);
        assert_eq!(months.len(), 4);
        assert_eq!(months[0].start, at(2026, 2, 18));
        assert_eq!(months[0].end, midnight(first_of_month(2026, 3)));
        assert_eq!(months[3].start, midnight(first_of_month(2026, 5)));
        assert_eq!(months[3].end, at(2026, 5, 3));
        let weeks = periods(span(at(2026, 1, 1), at(2026, 1, 20)), PeriodLength::Week);
        // 1 January 2026 is a Thursday: that week started on Monday 29 December.
        assert_eq!(
            weeks[1].start,
            midnight(NaiveDate::from_ymd_opt(2026, 1, 5).expect("date"))
        );
        assert_eq!(weeks.len(), 4);
        let quarters = periods(
            span(at(2025, 11, 30), at(2026, 8, 1)),
            PeriodLength::Quarter,
        );
        let starts: Vec<u32> = quarters.iter().skip(1).map(|q| q.start.month()).collect();
        assert_eq!(starts, vec![1, 4, 7]);
        let halves = periods(span(at(2025, 3, 1), at(2026, 3, 1)), PeriodLength::HalfYear);
        assert_eq!(halves.len(), 3);
        assert_eq!(halves[1].start, midnight(first_of_month(2025, 7)));
        assert_eq!(
            PeriodLength::HalfYear.next_start(halves[1].start),
            midnight(first_of_month(2026, 1))
        );
        assert_eq!(
            PeriodLength::Month.previous_start(midnight(first_of_month(2026, 1))),
            midnight(first_of_month(2025, 12))
        );
        assert_eq!(
            PeriodLength::Quarter.start_back(at(2026, 5, 20), 2),
            midnight(first_of_month(2025, 10))
        );
        assert_eq!(
            PeriodLength::Week.start_back(at(2026, 1, 7), 0),
            midnight(NaiveDate::from_ymd_opt(2026, 1, 5).expect("date"))
        );
    }

    #[test]
    fn thirty_five_percent_b1_to_b2_means_sixty_five_percent_stayed_or_were_lost() {
        let month = span(at(2026, 3, 1), at(2026, 4, 1));
        let mut journeys = Vec::new();
        for index in 0..20 {
            let mut lead = journey(at(2026, 2, 1));
            lead.classes.push((at(2026, 2, 10), Some(LeadClass::B1)));
            if index < 7 {
                lead.classes.push((at(2026, 3, 11), Some(LeadClass::B2)));
            }
            journeys.push(lead);
        }
        let figures = figures(&journeys, month);
        let step = figures.step(FunnelStep::B1ToB2).expect("the step");
        assert_eq!((step.entered, step.converted), (20, 7));
        assert!((step.rate() - 0.35).abs() < 1e-12);
        assert_eq!(step.median_duration(), Some(Duration::days(29)));
        assert_eq!(figures.class_counts.get(&LeadClass::B1), Some(&13));
        assert_eq!(figures.class_counts.get(&LeadClass::B2), Some(&7));
        assert_eq!(figures.new_leads, 0);
    }

    #[test]
    fn a_lead_that_skips_a_class_converts_the_step_it_left_but_never_entered_the_one_it_skipped() {
        let month = span(at(2026, 3, 1), at(2026, 4, 1));
        let mut lead = journey(at(2026, 3, 2));
        lead.classes.push((at(2026, 3, 2), Some(LeadClass::B1)));
        lead.classes.push((at(2026, 3, 5), Some(LeadClass::A)));
        let figures = figures([&lead], month);
        let b1 = figures.step(FunnelStep::B1ToB2).expect("step");
        assert_eq!((b1.entered, b1.converted), (1, 1));
        assert_eq!(b1.durations, vec![Duration::days(3)]);
        let b2 = figures.step(FunnelStep::B2ToB3).expect("step");
        assert_eq!(b2.entered, 0);
        let b3 = figures.step(FunnelStep::B3ToA).expect("step");
        assert_eq!(b3.entered, 0);
        assert_eq!(figures.new_leads, 1);
        assert!((figures.class_a_share() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_close_rate_counts_a_leads_that_became_customers_with_the_deal_values() {
        let quarter = span(at(2026, 1, 1), at(2026, 4, 1));
        let mut won = journey(at(2025, 12, 1));
        won.classes.push((at(2026, 1, 10), Some(LeadClass::A)));
        for (day, stage) in [
            (11, LifecycleStage::Mql),
            (12, LifecycleStage::Sal),
            (20, LifecycleStage::Sql),
            (25, LifecycleStage::Opportunity),
        ] {
            won.stages.push((at(2026, 1, day), stage));
        }
        won.stages.push((at(2026, 2, 9), LifecycleStage::Customer));
        won.won_deals.push(DealValue {
            closed_at: at(2026, 2, 9),
            currency: "EUR".to_owned(),
            amount_minor: 5_000_000,
        });
        let mut open = journey(at(2026, 1, 3));
        open.classes.push((at(2026, 1, 4), Some(LeadClass::A)));
        let figures = figures([&won, &open], quarter);
        let close = figures.step(FunnelStep::AToClose).expect("step");
        assert_eq!((close.entered, close.converted), (2, 1));
        assert_eq!(close.durations, vec![Duration::days(30)]);
        assert_eq!(figures.closes, 1);
        assert_eq!(figures.won_values.get("EUR"), Some(&5_000_000));
        assert_eq!(figures.average_won_values().get("EUR"), Some(&5_000_000));
        let sal = figures.step(FunnelStep::MqlToSal).expect("step");
        assert_eq!((sal.entered, sal.converted), (1, 1));
        assert_eq!(sal.durations, vec![Duration::days(1)]);
        let customers = figures
            .stage_counts
            .iter()
            .find(|(stage, _)| *stage == LifecycleStage::Customer)
            .map(|(_, count)| *count);
        assert_eq!(customers, Some(1));
    }

    #[test]
    fn a_lead_captured_after_the_span_is_not_counted_and_one_before_is_not_new() {
        let month = span(at(2026, 3, 1), at(2026, 4, 1));
        let figures = figures([&journey(at(2026, 4, 2)), &journey(at(2026, 2, 2))], month);
        assert_eq!(figures.new_leads, 0);
        let news = figures
            .stage_counts
            .iter()
            .find(|(stage, _)| *stage == LifecycleStage::New)
            .map(|(_, count)| *count);
        assert_eq!(news, Some(1));
    }

    #[test]
    fn a_median_that_grows_by_a_day_each_period_has_a_one_day_trend() {
        let months = periods(span(at(2026, 1, 1), at(2026, 5, 1)), PeriodLength::Month);
        let mut journeys = Vec::new();
        for (index, period) in months.iter().enumerate() {
            let mut lead = journey(period.start);
            let entered = period.start + Duration::hours(1);
            lead.classes.push((entered, Some(LeadClass::B2)));
            let days = i64::try_from(index).expect("small") + 3;
            lead.classes
                .push((entered + Duration::days(days), Some(LeadClass::B3)));
            journeys.push(lead);
        }
        let per_period: Vec<FunnelFigures> = months
            .iter()
            .map(|period| figures(&journeys, *period))
            .collect();
        let trends = duration_trends(&per_period);
        let b2 = trends
            .iter()
            .find(|trend| trend.step == FunnelStep::B2ToB3)
            .expect("trend");
        assert_eq!(b2.periods_measured, 4);
        assert_eq!(b2.change_per_period, Duration::days(1));
        let b1 = trends
            .iter()
            .find(|trend| trend.step == FunnelStep::B1ToB2)
            .expect("trend");
        assert_eq!(
            (b1.periods_measured, b1.change_per_period),
            (0, Duration::zero())
        );
    }

    #[test]
    fn the_forecast_multiplies_the_leads_in_hand_by_their_measured_close_rates() {
        let window = span(
            midnight(first_of_month(2026, 1)),
            midnight(first_of_month(2026, 3)),
        );
        let months = periods(window, PeriodLength::Month);
        assert_eq!(months.len(), 2);
        let mut journeys = Vec::new();
        // Ten A-leads in hand at each month's start; four of them close in each month.
        for month in &months {
            for index in 0..10 {
                let mut lead = journey(month.start - Duration::days(20));
                lead.classes
                    .push((month.start - Duration::days(19), Some(LeadClass::A)));
                if index < 4 {
                    lead.stages
                        .push((month.start + Duration::days(5), LifecycleStage::Customer));
                } else {
                    lead.stages.push((
                        month.start + Duration::days(6),
                        LifecycleStage::Disqualified,
                    ));
                }
                journeys.push(lead);
            }
        }
        // Five A-leads in hand now.
        let now = at(2026, 3, 2);
        for _ in 0..5 {
            let mut lead = journey(at(2026, 2, 20));
            lead.classes.push((at(2026, 2, 21), Some(LeadClass::A)));
            journeys.push(lead);
        }
        let window_figures = figures(&journeys, window);
        assert_eq!(window_figures.closes, 8);
        let forecast = forecast(&journeys, now, &window_figures, &months, 10);
        let a = forecast
            .by_class
            .iter()
            .find(|(class, _, _)| *class == LeadClass::A)
            .expect("A");
        assert_eq!(a.1, 5);
        assert!((a.2 - 0.4).abs() < 1e-12);
        assert!((forecast.expected_closes - 2.0).abs() < 1e-12);
        // 8 closes from 15 new leads in the window.
        assert_eq!(window_figures.new_leads, 15);
        assert!((forecast.lead_to_close_rate - 8.0 / 15.0).abs() < 1e-12);
        assert_eq!(forecast.leads_needed, 19);
        assert_eq!(forecast.additional_leads_needed, 15);
    }
}
