//! Sales reps: who they are, when they work, when they are away, what they sell, which
//! languages they speak, how many open leads they can hold and their share in weighted
//! round robin.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use leadflow_domain::EmailAddress;
use leadflow_platform::{
    FieldViolations,
    time::{from_timestamp, to_timestamp},
    validate,
};
use leadflow_proto::{common::v1 as common, routing::v1 as pb};
use uuid::Uuid;

/// The most open assignments one rep may be given.
const MAX_CAPACITY: u32 = 10_000;
/// The largest weight in weighted round robin.
const MAX_WEIGHT: u32 = 1_000;

/// A rep that passed validation and is ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRep {
    /// The rep's work address, normalised.
    pub email: EmailAddress,
    /// The name leads and reports show.
    pub display_name: String,
    /// The IANA time zone working hours are read in.
    pub time_zone: chrono_tz::Tz,
    /// Weekly working hours in the rep's time zone.
    pub working_hours: Vec<WorkingHours>,
    /// Absences.
    pub out_of_office: Vec<Absence>,
    /// The products the rep sells; empty means all.
    pub products: Vec<String>,
    /// The languages the rep speaks (BCP 47).
    pub languages: Vec<String>,
    /// The most open assignments at once.
    pub capacity: u32,
    /// The share in weighted round robin.
    pub weight: u32,
    /// Whether the rep takes leads.
    pub active: bool,
}

/// One span of working time on a day of the week, in minutes after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingHours {
    /// The day.
    pub day_of_week: pb::DayOfWeek,
    /// The first minute of work.
    pub start_minute: u32,
    /// The first minute after work.
    pub end_minute: u32,
}

/// A period of absence; open-ended while `end_time` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absence {
    /// When it starts.
    pub start_time: DateTime<Utc>,
    /// When it ends.
    pub end_time: Option<DateTime<Utc>>,
}

/// A stored rep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rep {
    /// The rep's id.
    pub rep_id: Uuid,
    /// The rep.
    pub rep: NewRep,
    /// The open (pending or accepted) assignments the rep holds.
    pub open_assignments: u32,
    /// When the rep was last given a lead.
    pub last_assign_time: Option<DateTime<Utc>>,
    /// When the rep was created.
    pub create_time: DateTime<Utc>,
    /// When the rep was last changed.
    pub update_time: DateTime<Utc>,
}

impl NewRep {
    /// Parses the `rep` of a create request; every problem is reported under its field path.
    pub fn parse(rep: Option<&pb::Rep>) -> Result<Self, FieldViolations> {
        let Some(rep) = rep else {
            return Err(FieldViolations::single("rep", "is required"));
        };
        let mut violations = FieldViolations::new();
        let email = EmailAddress::parse(&rep.email)
            .map_err(|error| violations.add("rep.email", error.to_string()))
            .ok();
        let display_name =
            validate::required_text(&mut violations, "rep.display_name", &rep.display_name, 200);
        let time_zone = if rep.time_zone.trim().is_empty() {
            violations.add("rep.time_zone", "is required");
            None
        } else {
            chrono_tz::Tz::from_str(rep.time_zone.trim())
                .map_err(|_| {
                    violations.add(
                        "rep.time_zone",
                        "must be an IANA time zone such as \"Europe/Berlin\"",
                    )
                })
                .ok()
        };
        let working_hours = parse_working_hours(&mut violations, &rep.working_hours);
        let out_of_office = parse_absences(&mut violations, &rep.out_of_office);
        let products = rep
            .products
            .iter()
            .enumerate()
            .map(|(index, product)| {
                validate::identifier(&mut violations, &format!("rep.products[{index}]"), product)
            })
            .collect();
        let languages = rep
            .languages
            .iter()
            .enumerate()
            .map(|(index, language)| {
                validate::language_tag(
                    &mut violations,
                    &format!("rep.languages[{index}]"),
                    language,
                )
            })
            .collect();
        if !(1..=MAX_CAPACITY).contains(&rep.capacity) {
            violations.add(
                "rep.capacity",
                format!("must be between 1 and {MAX_CAPACITY}"),
            );
        }
        if rep.weight > MAX_WEIGHT {
            violations.add("rep.weight", format!("must be at most {MAX_WEIGHT}"));
        }
        violations.into_result()?;
        Ok(Self {
            email: email.expect("no violations means the email parsed"),
            display_name,
            time_zone: time_zone.expect("no violations means the time zone parsed"),
            working_hours,
            out_of_office,
            products,
            languages,
            capacity: rep.capacity,
            weight: rep.weight.max(1),
            active: rep.active,
        })
    }
}

fn parse_working_hours(
    violations: &mut FieldViolations,
    hours: &[pb::WorkingHours],
) -> Vec<WorkingHours> {
    let mut parsed: Vec<WorkingHours> = Vec::with_capacity(hours.len());
    for (index, span) in hours.iter().enumerate() {
        let path = format!("rep.working_hours[{index}]");
        let day_of_week = match pb::DayOfWeek::try_from(span.day_of_week) {
            Ok(pb::DayOfWeek::Unspecified) | Err(_) => {
                violations.add(format!("{path}.day_of_week"), "must be a day of the week");
                continue;
            }
            Ok(day) => day,
        };
        if span.start_minute >= 1_440 {
            violations.add(format!("{path}.start_minute"), "must be below 1440");
            continue;
        }
        if span.end_minute <= span.start_minute || span.end_minute > 1_440 {
            violations.add(
                format!("{path}.end_minute"),
                "must be after start_minute and at most 1440",
            );
            continue;
        }
        let overlaps = parsed.iter().any(|other| {
            other.day_of_week == day_of_week
                && other.start_minute < span.end_minute
                && span.start_minute < other.end_minute
        });
        if overlaps {
            violations.add(path, "overlaps other working hours of the same day");
            continue;
        }
        parsed.push(WorkingHours {
            day_of_week,
            start_minute: span.start_minute,
            end_minute: span.end_minute,
        });
    }
    parsed
}

fn parse_absences(violations: &mut FieldViolations, ranges: &[common::TimeRange]) -> Vec<Absence> {
    let mut parsed = Vec::with_capacity(ranges.len());
    for (index, range) in ranges.iter().enumerate() {
        let path = format!("rep.out_of_office[{index}]");
        let Some(start_time) = range.start_time.as_ref().and_then(from_timestamp) else {
            violations.add(format!("{path}.start_time"), "is required");
            continue;
        };
        let end_time = match range.end_time.as_ref() {
            None => None,
            Some(end) => match from_timestamp(end) {
                Some(end) if end > start_time => Some(end),
                _ => {
                    violations.add(format!("{path}.end_time"), "must be after start_time");
                    continue;
                }
            },
        };
        parsed.push(Absence {
            start_time,
            end_time,
        });
    }
    parsed
}

impl From<&Rep> for pb::Rep {
    fn from(stored: &Rep) -> Self {
        let rep = &stored.rep;
        Self {
            rep_id: stored.rep_id.to_string(),
            email: rep.email.to_string(),
            display_name: rep.display_name.clone(),
            time_zone: rep.time_zone.name().to_owned(),
            working_hours: rep
                .working_hours
                .iter()
                .map(|span| pb::WorkingHours {
                    day_of_week: span.day_of_week.into(),
                    start_minute: span.start_minute,
                    end_minute: span.end_minute,
                })
                .collect(),
            out_of_office: rep
                .out_of_office
                .iter()
                .map(|absence| common::TimeRange {
                    start_time: Some(to_timestamp(absence.start_time)),
                    end_time: absence.end_time.map(to_timestamp),
                })
                .collect(),
            products: rep.products.clone(),
            languages: rep.languages.clone(),
            capacity: rep.capacity,
            weight: rep.weight,
            active: rep.active,
            create_time: Some(to_timestamp(stored.create_time)),
            update_time: Some(to_timestamp(stored.update_time)),
            open_assignments: stored.open_assignments,
            team_ids: Vec::new(),
        }
    }
}
