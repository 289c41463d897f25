//! Routing choices: which rule sends a lead to which team, which reps of the team can take
//! it now and why the others cannot, which of the available reps the team's strategy picks,
//! and when an assignment's SLA runs out on a rep's working-hours clock.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::{HeatMapCell, LeadClass};

/// How far ahead a working-hours clock looks for working time before it gives up and
/// counts wall time: a schedule without any working minute in two years is a mistake, not
/// a reason never to breach.
const WORKING_CLOCK_HORIZON_DAYS: i64 = 731;

/// One block of working time on a day of the week, in minutes after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingSpan {
    /// The day.
    pub day: Weekday,
    /// The first minute of work.
    pub start_minute: u32,
    /// The first minute after work, at most 1440.
    pub end_minute: u32,
}

/// A period of absence; open-ended while `end` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absence {
    /// When it starts.
    pub start: DateTime<Utc>,
    /// When it ends.
    pub end: Option<DateTime<Utc>>,
}

impl Absence {
    fn covers(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && self.end.is_none_or(|end| at < end)
    }
}

/// When a rep works: weekly hours in the rep's time zone, and absences.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The zone working hours are read in.
    pub time_zone: Tz,
    /// The weekly working hours; empty means no restriction.
    pub working_hours: Vec<WorkingSpan>,
    /// Absences.
    pub out_of_office: Vec<Absence>,
}

impl Schedule {
    /// Whether `at` lies in the rep's working hours (always, without any).
    pub fn is_working_time(&self, at: DateTime<Utc>) -> bool {
        if self.working_hours.is_empty() {
            return true;
        }
        let local = at.with_timezone(&self.time_zone);
        let minute = local.time().num_seconds_from_midnight_minutes();
        let day = local.weekday();
        self.working_hours
            .iter()
            .any(|span| span.day == day && span.start_minute <= minute && minute < span.end_minute)
    }

    /// Whether `at` lies in one of the rep's absences.
    pub fn is_out_of_office(&self, at: DateTime<Utc>) -> bool {
        self.out_of_office.iter().any(|absence| absence.covers(at))
    }

    /// The moment `budget` of working time has passed after `start`: time counts only
    /// inside working hours and outside absences. Without working hours every moment
    /// outside absences counts.
    pub fn add_working_time(&self, start: DateTime<Utc>, budget: Duration) -> DateTime<Utc> {
        let mut left = budget;
        let mut cursor = start;
        for (from, to) in self.working_intervals(start) {
            let from = from.max(cursor);
            if to <= from {
                continue;
            }
            for (free_from, free_to) in self.present_parts(from, to) {
                let span = free_to - free_from;
                if span >= left {
                    return free_from + left;
                }
                left -= span;
                cursor = free_to;
            }
        }
        // No working time within the horizon: count the rest on the wall clock.
        cursor.max(start) + left
    }

    /// Working intervals in UTC from the local day of `start` on, in order, up to the
    /// horizon. Without working hours, one interval per day covering the whole day.
    fn working_intervals(
        &self,
        start: DateTime<Utc>,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let first_day = start.with_timezone(&self.time_zone).date_naive();
        (0..WORKING_CLOCK_HORIZON_DAYS).flat_map(move |offset| {
            let day = first_day + Duration::days(offset);
            let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = if self.working_hours.is_empty() {
                vec![(self.local(day, 0), self.local(day, 1_440))]
            } else {
                self.working_hours
                    .iter()
                    .filter(|span| span.day == day.weekday())
                    .map(|span| {
                        (
                            self.local(day, span.start_minute),
                            self.local(day, span.end_minute),
                        )
                    })
                    .collect()
            };
            spans.sort();
            spans
        })
    }

    /// The instant of `minute` minutes after local midnight of `day`; a local time that
    /// does not exist (a clock change) is read as the first instant after the gap.
    fn local(&self, day: NaiveDate, minute: u32) -> DateTime<Utc> {
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        let naive = midnight + Duration::minutes(i64::from(minute));
        let mut probe = naive;
        for _ in 0..=180 {
            if let Some(instant) = self.time_zone.from_local_datetime(&probe).earliest() {
                return instant.with_timezone(&Utc);
            }
            probe += Duration::minutes(1);
        }
        Utc.from_utc_datetime(&naive)
    }

    /// The parts of `[from, to)` outside every absence.
    fn present_parts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut parts = vec![(from, to)];
        for absence in &self.out_of_office {
            let absent_to = absence.end.unwrap_or(DateTime::<Utc>::MAX_UTC);
            parts = parts
                .into_iter()
                .flat_map(|(start, end)| {
                    let mut kept = Vec::with_capacity(2);
                    if absent_to <= start || absence.start >= end {
                        kept.push((start, end));
                    } else {
                        if start < absence.start {
                            kept.push((start, absence.start));
                        }
                        if absent_to < end {
                            kept.push((absent_to, end));
                        }
                    }
                    kept
                })
                .collect();
        }
        parts
    }
}

trait MinutesOfDay {
    fn num_seconds_from_midnight_minutes(&self) -> u32;
}

impl MinutesOfDay for chrono::NaiveTime {
    fn num_seconds_from_midnight_minutes(&self) -> u32 {
        use chrono::Timelike;
        self.num_seconds_from_midnight() / 60
    }
}

/// Why a rep cannot take a lead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The moment lies outside the rep's working hours.
    OutsideWorkingHours,
    /// The rep is out of office.
    OutOfOffice,
    /// The rep holds as many open assignments as its capacity.
    AtCapacity,
    /// The rep does not sell the lead's product.
    WrongProduct,
    /// The rep does not speak the lead's language.
    WrongLanguage,
    /// The rep takes no leads.
    Inactive,
    /// The rep let this lead's SLA run out before.
    AlreadyBreached,
}

/// A rep as routing weighs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The rep.
    pub rep_id: Uuid,
    /// Whether the rep takes leads.
    pub active: bool,
    /// When the rep works.
    pub schedule: Schedule,
    /// The products the rep sells; empty means all.
    pub products: Vec<String>,
    /// The languages the rep speaks (BCP 47); empty means all.
    pub languages: Vec<String>,
    /// The most open assignments at once.
    pub capacity: u32,
    /// The open assignments now.
    pub open_assignments: u32,
    /// The share in weighted round robin; 0 counts as 1.
    pub weight: u32,
    /// When the rep was last given a lead.
    pub last_assign_time: Option<DateTime<Utc>>,
}

/// What a lead needs from a rep at the moment of routing.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    /// The product the lead is ready for.
    pub product: &'a str,
    /// The language of the lead's primary contact (BCP 47), or empty when unknown.
    pub language: &'a str,
    /// The moment of routing.
    pub at: DateTime<Utc>,
    /// The reps that let this lead's SLA run out in the current hand-over.
    pub breached: &'a [Uuid],
    /// Whether working hours and absences count (a manual assignment ignores them).
    pub respect_schedule: bool,
}

/// Whether two BCP 47 tags share the primary language subtag.
pub fn same_language(rep: &str, lead: &str) -> bool {
    let primary = |tag: &str| {
        tag.split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    primary(rep) == primary(lead)
}

impl Candidate {
    /// Every reason the rep cannot take the lead; empty when it can.
    pub fn skip_reasons(&self, need: &Need<'_>) -> Vec<SkipReason> {
        let mut reasons = Vec::new();
        if !self.active {
            reasons.push(SkipReason::Inactive);
        }
        if need.breached.contains(&self.rep_id) {
            reasons.push(SkipReason::AlreadyBreached);
        }
        if !self.products.is_empty()
            && !self
                .products
                .iter()
                .any(|product| product.eq_ignore_ascii_case(need.product))
        {
            reasons.push(SkipReason::WrongProduct);
        }
        if !need.language.is_empty()
            && !self.languages.is_empty()
            && !self
                .languages
                .iter()
                .any(|language| same_language(language, need.language))
        {
            reasons.push(SkipReason::WrongLanguage);
        }
        if need.respect_schedule {
            if !self.schedule.is_working_time(need.at) {
                reasons.push(SkipReason::OutsideWorkingHours);
            }
            if self.schedule.is_out_of_office(need.at) {
                reasons.push(SkipReason::OutOfOffice);
            }
        }
        if self.open_assignments >= self.capacity {
            reasons.push(SkipReason::AtCapacity);
        }
        reasons
    }
}

/// How a team picks among its available reps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The next available member after the last one chosen, in member order.
    RoundRobin,
    /// Smooth weighted round robin: each member gets leads in proportion to its weight.
    WeightedRoundRobin,
    /// The member with the fewest open assignments; ties go to the one assigned longest ago.
    LeastLoaded,
}

/// A team member's standing in its team's rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The rep.
    pub rep_id: Uuid,
    /// Its current weight in smooth weighted round robin.
    pub current_weight: i64,
}

/// The strategy's pick among the available members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// The chosen rep.
    pub rep_id: Uuid,
    /// The available members in the order the strategy considered them.
    pub considered: Vec<Uuid>,
    /// The members' new current weights (weighted round robin only).
    pub rotation: Vec<Rotation>,
}

/// The team's pick for one lead. `members` are every member in team order with their
/// rotation, `available` the candidates that passed [`Candidate::skip_reasons`], and
/// `last_chosen` the member the team chose last. `None` when nobody is available.
pub fn pick(
    strategy: Strategy,
    members: &[Rotation],
    available: &[&Candidate],
    last_chosen: Option<Uuid>,
) -> Option<Pick> {
    if available.is_empty() {
        return None;
    }
    let is_available = |rep_id: Uuid| available.iter().any(|rep| rep.rep_id == rep_id);
    match strategy {
        Strategy::RoundRobin => {
            let start = last_chosen
                .and_then(|last| members.iter().position(|member| member.rep_id == last))
                .map_or(0, |position| position + 1);
            let considered: Vec<Uuid> = (0..members.len())
                .map(|offset| members[(start + offset) % members.len()].rep_id)
                .filter(|&rep_id| is_available(rep_id))
                .collect();
            // A candidate outside the member list (never the case for a team) goes last.
            let rep_id = considered
                .first()
                .copied()
                .unwrap_or_else(|| available[0].rep_id);
            Some(Pick {
                rep_id,
                considered,
                rotation: Vec::new(),
            })
        }
        Strategy::WeightedRoundRobin => {
            let in_rotation: Vec<(Rotation, i64)> = members
                .iter()
                .filter_map(|member| {
                    available
                        .iter()
                        .find(|rep| rep.rep_id == member.rep_id)
                        .map(|rep| (*member, i64::from(rep.weight.max(1))))
                })
                .collect();
            if in_rotation.is_empty() {
                return None;
            }
            let total: i64 = in_rotation.iter().map(|(_, weight)| weight).sum();
            let mut rotation: Vec<Rotation> = in_rotation
                .iter()
                .map(|(member, weight)| Rotation {
                    rep_id: member.rep_id,
                    current_weight: member.current_weight + weight,
                })
                .collect();
            let mut best = 0;
            for (index, member) in rotation.iter().enumerate() {
                if member.current_weight > rotation[best].current_weight {
                    best = index;
                }
            }
            rotation[best].current_weight -= total;
            let rep_id = rotation[best].rep_id;
            let mut considered: Vec<Uuid> = rotation.iter().map(|member| member.rep_id).collect();
            considered.sort_by_key(|&id| id != rep_id);
            Some(Pick {
                rep_id,
                considered,
                rotation,
            })
        }
        Strategy::LeastLoaded => {
            // Each rep's place in the team, looked up once: searching the members from the
            // comparator made the sort grow with the square of the team.
            let mut positions = HashMap::with_capacity(members.len());
            for (index, member) in members.iter().enumerate() {
                positions.entry(member.rep_id).or_insert(index);
            }
            let mut ordered: Vec<&Candidate> = available.to_vec();
            ordered.sort_by_key(|rep| {
                (
                    rep.open_assignments,
                    rep.last_assign_time,
                    positions.get(&rep.rep_id).copied().unwrap_or(usize::MAX),
                )
            });
            Some(Pick {
                rep_id: ordered[0].rep_id,
                considered: ordered.iter().map(|rep| rep.rep_id).collect(),
                rotation: Vec::new(),
            })
        }
    }
}

/// What routing rules look at.
#[derive(Debug, Clone, Copy)]
pub struct LeadTraits<'a> {
    /// ISO 3166-1 alpha-2 country code, or empty.
    pub country_code: &'a str,
    /// Region, or empty.
    pub region: &'a str,
    /// Industry, or empty.
    pub industry: &'a str,
    /// Employees; 0 when unknown.
    pub employee_count: u32,
    /// The product the lead is ready for.
    pub product: &'a str,
    /// Where the lead came from, or empty.
    pub source: &'a str,
    /// The lead's class, if classified.
    pub class: Option<LeadClass>,
    /// The lead's heat-map cell, if scored.
    pub cell: Option<HeatMapCell>,
}

/// The conditions of one routing rule; within a list any value may match, an empty list
/// places no condition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleConditions {
    /// Country codes (upper case).
    pub country_codes: Vec<String>,
    /// Regions (compared case-insensitively).
    pub regions: Vec<String>,
    /// Industries (compared case-insensitively).
    pub industries: Vec<String>,
    /// The inclusive employee range; 0 at either end means unbounded.
    pub company_size: Option<(u32, u32)>,
    /// Products.
    pub products: Vec<String>,
    /// Sources (compared case-insensitively).
    pub sources: Vec<String>,
    /// Classes.
    pub classes: Vec<LeadClass>,
    /// Heat-map cells.
    pub cells: Vec<HeatMapCell>,
}

fn any_text(values: &[String], value: &str) -> bool {
    values.is_empty()
        || values
            .iter()
            .any(|wanted| wanted.eq_ignore_ascii_case(value))
}

impl RuleConditions {
    /// Whether every condition holds for the lead. An unknown value fails a condition that
    /// is set.
    pub fn matches(&self, lead: &LeadTraits<'_>) -> bool {
        let size_holds = self.company_size.is_none_or(|(min, max)| {
            lead.employee_count > 0
                && lead.employee_count >= min
                && (max == 0 || lead.employee_count <= max)
        });
        any_text(&self.country_codes, lead.country_code)
            && any_text(&self.regions, lead.region)
            && any_text(&self.industries, lead.industry)
            && size_holds
            && any_text(&self.products, lead.product)
            && any_text(&self.sources, lead.source)
            && (self.classes.is_empty() || lead.class.is_some_and(|c| self.classes.contains(&c)))
            && (self.cells.is_empty() || lead.cell.is_some_and(|c| self.cells.contains(&c)))
    }
}

/// The index of the first rule whose conditions all hold, `None` for the default team.
pub fn first_match<'r>(
    rules: impl IntoIterator<Item = &'r RuleConditions>,
    lead: &LeadTraits<'_>,
) -> Option<usize> {
    rules.into_iter().position(|rule| rule.matches(lead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfileGrade;
    use proptest::{prop_assert, proptest};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("an RFC 3339 time")
            .with_timezone(&Utc)
    }

    fn office_hours(time_zone: Tz) -> Schedule {
        Schedule {
            time_zone,
            working_hours: [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ]
            .into_iter()
            .map(|day| WorkingSpan {
                day,
                start_minute: 9 * 60,
                end_minute: 17 * 60,
            })
            .collect(),
            out_of_office: Vec::new(),
        }
    }

    fn candidate(id: u128) -> Candidate {
        Candidate {
            rep_id: Uuid::from_u128(id),
            active: true,
            schedule: Schedule {
                time_zone: chrono_tz::UTC,
                working_hours: Vec::new(),
                out_of_office: Vec::new(),
            },
            products: Vec::new(),
            languages: Vec::new(),
            capacity: 1_000_000,
            open_assignments: 0,
            weight: 1,
            last_assign_time: None,
        }
    }

    fn need(at: DateTime<Utc>) -> Need<'static> {
        Need {
            product: "erp",
            language: "",
            at,
            breached: &[],
            respect_schedule: true,
        }
    }

    #[test]
    fn working_hours_are_read_in_the_reps_time_zone() {
        let berlin = office_hours(chrono_tz::Europe::Berlin);
        // 08:30 UTC on a Monday in winter is 09:30 in Berlin.
        assert!(berlin.is_working_time(at("2026-01-05T08:30:00Z")));
        // 07:30 UTC is 08:30 in Berlin: not yet.
        assert!(!berlin.is_working_time(at("2026-01-05T07:30:00Z")));
        // 16:30 UTC is 17:30 in Berlin: already gone.
        assert!(!berlin.is_working_time(at("2026-01-05T16:30:00Z")));
        // Saturday.
        assert!(!berlin.is_working_time(at("2026-01-10T10:00:00Z")));
        let open = Schedule {
            working_hours: Vec::new(),
            ..berlin
        };
        assert!(open.is_working_time(at("2026-01-10T03:00:00Z")));
    }

    #[test]
    fn absences_cover_their_range_and_open_ones_never_end() {
        let mut schedule = office_hours(chrono_tz::UTC);
        schedule.out_of_office = vec![
            Absence {
                start: at("2026-03-02T00:00:00Z"),
                end: Some(at("2026-03-07T00:00:00Z")),
            },
            Absence {
                start: at("2027-01-01T00:00:00Z"),
                end: None,
            },
        ];
        assert!(schedule.is_out_of_office(at("2026-03-02T00:00:00Z")));
        assert!(!schedule.is_out_of_office(at("2026-03-07T00:00:00Z")));
        assert!(schedule.is_out_of_office(at("2030-01-01T00:00:00Z")));
    }

    #[test]
    fn the_working_hours_clock_pauses_outside_working_time_and_absences() {
        let mut schedule = office_hours(chrono_tz::UTC);
        // Friday 16:00 plus two working hours: one on Friday, one on Monday.
        assert_eq!(
            schedule.add_working_time(at("2026-01-09T16:00:00Z"), Duration::hours(2)),
            at("2026-01-12T10:00:00Z")
        );
        // Assigned on Saturday: the clock starts on Monday morning.
        assert_eq!(
            schedule.add_working_time(at("2026-01-10T12:00:00Z"), Duration::minutes(30)),
            at("2026-01-12T09:30:00Z")
        );
        // Out of office on Monday: the clock starts on Tuesday.
        schedule.out_of_office = vec![Absence {
            start: at("2026-01-12T00:00:00Z"),
            end: Some(at("2026-01-13T00:00:00Z")),
        }];
        assert_eq!(
            schedule.add_working_time(at("2026-01-10T12:00:00Z"), Duration::minutes(30)),
            at("2026-01-13T09:30:00Z")
        );
        // Without working hours only absences pause the clock.
        schedule.working_hours.clear();
        assert_eq!(
            schedule.add_working_time(at("2026-01-11T23:00:00Z"), Duration::hours(2)),
            at("2026-01-13T01:00:00Z")
        );
    }

    #[test]
    fn the_working_hours_clock_crosses_a_clock_change() {
        let schedule = office_hours(chrono_tz::Europe::Berlin);
        // Friday 16:00 Berlin (winter, 15:00 UTC) plus two hours: Monday 10:00 Berlin is
        // 08:00 UTC after the change to summer time on 29 March 2026.
        assert_eq!(
            schedule.add_working_time(at("2026-03-27T15:00:00Z"), Duration::hours(2)),
            at("2026-03-30T08:00:00Z")
        );
    }

    #[test]
    fn every_reason_to_skip_a_rep_is_given() {
        let mut rep = candidate(1);
        rep.active = false;
        rep.products = vec!["crm".into()];
        rep.languages = vec!["de".into()];
        rep.capacity = 2;
        rep.open_assignments = 2;
        rep.schedule = office_hours(chrono_tz::UTC);
        rep.schedule.out_of_office = vec![Absence {
            start: at("2026-01-01T00:00:00Z"),
            end: None,
        }];
        let breached = [rep.rep_id];
        let need = Need {
            language: "en-GB",
            breached: &breached,
            ..need(at("2026-01-10T12:00:00Z"))
        };
        assert_eq!(
            rep.skip_reasons(&need),
            vec![
                SkipReason::Inactive,
                SkipReason::AlreadyBreached,
                SkipReason::WrongProduct,
                SkipReason::WrongLanguage,
                SkipReason::OutsideWorkingHours,
                SkipReason::OutOfOffice,
                SkipReason::AtCapacity,
            ]
        );
        let manual = Need {
            respect_schedule: false,
            ..need
        };
        assert!(
            !rep.skip_reasons(&manual)
                .contains(&SkipReason::OutsideWorkingHours)
        );
    }

    #[test]
    fn languages_match_on_the_primary_subtag() {
        assert!(same_language("de", "de-AT"));
        assert!(same_language("EN-us", "en_GB"));
        assert!(!same_language("de", "en"));
        let mut rep = candidate(1);
        rep.languages = vec!["de".into(), "en".into()];
        let need = Need {
            language: "en-US",
            ..need(at("2026-01-05T10:00:00Z"))
        };
        assert!(rep.skip_reasons(&need).is_empty());
    }

    fn members(count: u128) -> (Vec<Candidate>, Vec<Rotation>) {
        let reps: Vec<Candidate> = (1..=count).map(candidate).collect();
        let rotation = reps
            .iter()
            .map(|rep| Rotation {
                rep_id: rep.rep_id,
                current_weight: 0,
            })
            .collect();
        (reps, rotation)
    }

    #[test]
    fn round_robin_goes_on_after_the_last_chosen_and_skips_the_unavailable() {
        let (reps, rotation) = members(4);
        let all: Vec<&Candidate> = reps.iter().collect();
        let first =
            pick(Strategy::RoundRobin, &rotation, &all, None).expect("someone is available");
        assert_eq!(first.rep_id, reps[0].rep_id);
        let next = pick(Strategy::RoundRobin, &rotation, &all, Some(reps[0].rep_id))
            .expect("someone is available");
        assert_eq!(next.rep_id, reps[1].rep_id);
        let without_third: Vec<&Candidate> = [&reps[0], &reps[1], &reps[3]].into();
        let skipping = pick(
            Strategy::RoundRobin,
            &rotation,
            &without_third,
            Some(reps[1].rep_id),
        )
        .expect("someone is available");
        assert_eq!(skipping.rep_id, reps[3].rep_id);
        assert_eq!(
            skipping.considered,
            vec![reps[3].rep_id, reps[0].rep_id, reps[1].rep_id]
        );
        let wrapped = pick(Strategy::RoundRobin, &rotation, &all, Some(reps[3].rep_id))
            .expect("someone is available");
        assert_eq!(wrapped.rep_id, reps[0].rep_id);
        assert!(pick(Strategy::RoundRobin, &rotation, &[], None).is_none());
    }

    #[test]
    fn least_loaded_takes_the_fewest_open_then_the_longest_idle() {
        let (mut reps, rotation) = members(3);
        reps[0].open_assignments = 3;
        reps[1].open_assignments = 1;
        reps[2].open_assignments = 1;
        reps[1].last_assign_time = Some(at("2026-01-05T10:00:00Z"));
        reps[2].last_assign_time = Some(at("2026-01-05T09:00:00Z"));
        let all: Vec<&Candidate> = reps.iter().collect();
        let chosen =
            pick(Strategy::LeastLoaded, &rotation, &all, None).expect("someone is available");
        assert_eq!(chosen.rep_id, reps[2].rep_id);
        assert_eq!(
            chosen.considered,
            vec![reps[2].rep_id, reps[1].rep_id, reps[0].rep_id]
        );
    }

    fn run_weighted(weights: &[u32], leads: usize) -> Vec<usize> {
        let (mut reps, mut rotation) = members(weights.len() as u128);
        for (rep, weight) in reps.iter_mut().zip(weights) {
            rep.weight = *weight;
        }
        let all: Vec<&Candidate> = reps.iter().collect();
        let mut counts = vec![0; weights.len()];
        for _ in 0..leads {
            let chosen = pick(Strategy::WeightedRoundRobin, &rotation, &all, None)
                .expect("someone is available");
            for updated in &chosen.rotation {
                let member = rotation
                    .iter_mut()
                    .find(|member| member.rep_id == updated.rep_id)
                    .expect("present");
                *member = *updated;
            }
            let index = reps
                .iter()
                .position(|rep| rep.rep_id == chosen.rep_id)
                .expect("present");
            counts[index] += 1;
        }
        counts
    }

    #[test]
    fn weighted_round_robin_spreads_smoothly() {
        // Weights 5:1:1 over one cycle: a, a, b, a, c, a, a in nginx's smooth order.
        assert_eq!(run_weighted(&[5, 1, 1], 7), vec![5, 1, 1]);
        assert_eq!(run_weighted(&[3, 2, 1], 600), vec![300, 200, 100]);
    }

    proptest! {
        #[test]
        fn weighted_round_robin_stays_within_one_lead_of_the_weights(
            weights in proptest::collection::vec(0u32..20, 1..8),
            leads in 1usize..400,
        ) {
            let counts = run_weighted(&weights, leads);
            let effective: Vec<f64> = weights.iter().map(|&w| f64::from(w.max(1))).collect();
            let total: f64 = effective.iter().sum();
            for (count, weight) in counts.iter().zip(&effective) {
                let expected = leads as f64 * weight / total;
                prop_assert!((*count as f64 - expected).abs() < 1.0 + 1e-9,
                    "count {count}, expected {expected}");
            }
        }

        #[test]
        fn round_robin_stays_within_one_lead_of_even(members_count in 1u128..12, leads in 1usize..300) {
            let (reps, rotation) = members(members_count);
            let all: Vec<&Candidate> = reps.iter().collect();
            let mut last = None;
            let mut counts = vec![0usize; reps.len()];
            for _ in 0..leads {
                let chosen = pick(Strategy::RoundRobin, &rotation, &all, last)
            .expect("someone is available");
                last = Some(chosen.rep_id);
                counts[reps.iter().position(|rep| rep.rep_id == chosen.rep_id).expect("present")] += 1;
            }
            let (min, max) = (counts.iter().min().expect("present"), counts.iter().max().expect("present"));
            prop_assert!(max - min <= 1);
        }

        #[test]
        fn the_working_clock_never_runs_faster_than_the_wall(
            start_minutes in 0i64..(60 * 24 * 365),
            budget_minutes in 1i64..(60 * 24 * 10),
        ) {
            let schedule = office_hours(chrono_tz::America::New_York);
            let start = at("2026-01-01T00:00:00Z") + Duration::minutes(start_minutes);
            let due = schedule.add_working_time(start, Duration::minutes(budget_minutes));
            prop_assert!(due >= start + Duration::minutes(budget_minutes));
            // The deadline itself lies in working time, or at the end of a working block.
            let just_before = due - Duration::seconds(1);
            prop_assert!(schedule.is_working_time(just_before));
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_unknown_values_fail_set_conditions() {
        let dach = RuleConditions {
            country_codes: vec!["DE".into(), "AT".into(), "CH".into()],
            company_size: Some((500, 0)),
            ..RuleConditions::default()
        };
        let hot = RuleConditions {
            cells: vec![HeatMapCell {
                grade: ProfileGrade::A,
                level: 4,
            }],
            classes: vec![LeadClass::A],
            ..RuleConditions::default()
        };
        let rules = [dach, hot];
        let mut lead = LeadTraits {
            country_code: "de",
            region: "",
            industry: "",
            employee_count: 1_200,
            product: "erp",
            source: "",
            class: Some(LeadClass::A),
            cell: Some(HeatMapCell {
                grade: ProfileGrade::A,
                level: 4,
            }),
        };
        assert_eq!(first_match(&rules, &lead), Some(0));
        lead.employee_count = 0;
        assert_eq!(first_match(&rules, &lead), Some(1));
        lead.class = None;
        assert_eq!(first_match(&rules, &lead), None);
    }
}
