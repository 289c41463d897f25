//! Nurture tracks and their immutable versions: the request parsed into a track and a
//! policy with the contract's defaults applied, and both shown as the contract shows them.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use leadflow_domain::nurture::{NurturePolicy, QuietHours};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::{common::v1 as common, nurturing::v1 as pb};
use uuid::Uuid;

/// The longest track name.
const MAX_NAME_CHARS: usize = 200;
/// The longest description or change note.
const MAX_NOTE_CHARS: usize = 2_000;
/// The last minute of a day, the highest a quiet-hours bound may name.
const LAST_MINUTE_OF_DAY: u32 = 1_439;
/// The longest duration a version may set: ten years is longer than any nurture runs, and
/// the bound keeps every duration storable as nanoseconds.
const MAX_DURATION_DAYS: i64 = 3_660;
/// The time zone of a version that names none.
const DEFAULT_TIME_ZONE: &str = "UTC";

/// A track's own fields, checked and ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrack {
    /// Unique per product.
    pub name: String,
    /// For the marketing team; may be empty.
    pub description: String,
    /// The product whose contacts the track nurtures.
    pub product: String,
}

/// The templates of one content kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindTemplates {
    /// The content kind.
    pub kind: pb::ContentKind,
    /// The first try's template.
    pub offer_template_id: Uuid,
    /// The alternative offers' template; `None` means `offer_template_id`.
    pub alternative_offer_template_id: Option<Uuid>,
}

/// The policy of one track version, with the contract's defaults applied, so that what
/// is stored is what the engine follows even if a later release changed the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackPolicy {
    /// Between a reaction and the next step.
    pub cadence: TimeDelta,
    /// The longest time between two mails.
    pub max_interval: TimeDelta,
    /// How long an offer waits for a reaction.
    pub reaction_window: TimeDelta,
    /// Tries per step, the first offer included.
    pub max_attempts: u32,
    /// When nothing is sent; `None` means never quiet.
    pub quiet_hours: Option<QuietHours>,
    /// Whose time zone the quiet hours follow; never unspecified once parsed.
    pub time_zone_mode: pb::TimeZoneMode,
    /// An IANA name `chrono_tz` knows.
    pub default_time_zone: String,
    /// The language offered when the contact's is missing from the cell.
    pub fallback_language: Option<String>,
    /// The first try's template.
    pub offer_template_id: Uuid,
    /// The alternative offers' template; `None` means `offer_template_id`.
    pub alternative_offer_template_id: Option<Uuid>,
    /// Templates for particular content kinds, at most one entry per kind.
    pub kind_templates: Vec<KindTemplates>,
    /// The lead classes enrolled automatically, each once.
    pub auto_enroll_classes: Vec<common::LeadClass>,
    /// What changed in this version.
    pub change_note: String,
}

/// A stored track; its policy lives in its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The track's id.
    pub track_id: Uuid,
    /// Name, description and product.
    pub track: NewTrack,
    /// The highest published version.
    pub latest_version: u32,
    /// When the track was created.
    pub create_time: DateTime<Utc>,
    /// When its latest version was published.
    pub update_time: DateTime<Utc>,
}

/// One published, immutable version of a track.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackVersion {
    /// The track it belongs to.
    pub track_id: Uuid,
    /// Counted from 1.
    pub version: u32,
    /// What the engine follows for enrollments started on it.
    pub policy: TrackPolicy,
    /// When it was published.
    pub publish_time: DateTime<Utc>,
}

impl Track {
    /// The track as it stood right after `version` was published: what the call that
    /// published it answered, since name, description and product never change.
    pub fn as_of(&self, version: &TrackVersion) -> Self {
        Self {
            latest_version: version.version,
            update_time: version.publish_time,
            ..self.clone()
        }
    }
}

impl NewTrack {
    /// Parses the `track` of a create request; every problem is reported under its field path.
    pub fn parse(track: Option<&pb::Track>) -> Result<Self, FieldViolations> {
        let Some(track) = track else {
            return Err(FieldViolations::single("track", "is required"));
        };
        let mut violations = FieldViolations::new();
        let name =
            validate::required_text(&mut violations, "track.name", &track.name, MAX_NAME_CHARS);
        let description = validate::optional_text(
            &mut violations,
            "track.description",
            &track.description,
            MAX_NOTE_CHARS,
        );
        // Spelt like a content item's product, so that the track finds its items.
        let product = validate::identifier(&mut violations, "track.product", &track.product);
        violations.into_result()?;
        Ok(Self {
            name,
            description,
            product,
        })
    }
}

impl TrackPolicy {
    /// Parses a version of a request, found under the request field `field` (e.g.
    /// `first_version`), applying the contract's defaults to unset durations and zero numbers.
    pub fn parse(version: Option<&pb::TrackVersion>, field: &str) -> Result<Self, FieldViolations> {
        let Some(version) = version else {
            return Err(FieldViolations::single(field, "is required"));
        };
        let mut violations = FieldViolations::new();
        let path = |name: &str| format!("{field}.{name}");
        let defaults = NurturePolicy::default();
        let cadence = duration_or_default(
            &mut violations,
            &path("cadence"),
            version.cadence.as_ref(),
            defaults.cadence,
        );
        let max_interval = duration_or_default(
            &mut violations,
            &path("max_interval"),
            version.max_interval.as_ref(),
            defaults.max_interval,
        );
        let reaction_window = duration_or_default(
            &mut violations,
            &path("reaction_window"),
            version.reaction_window.as_ref(),
            defaults.reaction_window,
        );
        // Compared after the defaults, so an unset max_interval bounds a set window too.
        if reaction_window > max_interval {
            violations.add(
                path("reaction_window"),
                format!(
                    "must not be longer than max_interval ({} days)",
                    max_interval.num_days()
                ),
            );
        }
        let max_attempts = match version.max_attempts {
            0 => defaults.max_attempts,
            attempts if i32::try_from(attempts).is_err() => {
                violations.add(path("max_attempts"), "is too large");
                defaults.max_attempts
            }
            attempts => attempts,
        };
        let quiet_hours = version.quiet_hours.as_ref().map(|quiet| {
            for (name, minute) in [
                ("quiet_hours.start_minute", quiet.start_minute),
                ("quiet_hours.end_minute", quiet.end_minute),
            ] {
                if minute > LAST_MINUTE_OF_DAY {
                    violations.add(
                        path(name),
                        format!("must be a minute of the day, 0 to {LAST_MINUTE_OF_DAY}"),
                    );
                }
            }
            QuietHours {
                start_minute: quiet.start_minute,
                end_minute: quiet.end_minute,
                skip_weekends: quiet.skip_weekends,
            }
        });
        let time_zone_mode = match pb::TimeZoneMode::try_from(version.time_zone_mode) {
            // The contract treats an unset mode as the contact's time zone; stored as such.
            Ok(pb::TimeZoneMode::Unspecified) => pb::TimeZoneMode::Contact,
            Ok(mode) => mode,
            Err(_) => {
                violations.add(path("time_zone_mode"), "must be a known time zone mode");
                pb::TimeZoneMode::Contact
            }
        };
        let default_time_zone = match version.default_time_zone.trim() {
            "" => DEFAULT_TIME_ZONE.to_owned(),
            name => match Tz::from_str(name) {
                Ok(time_zone) => time_zone.name().to_owned(),
                Err(_) => {
                    violations.add(
                        path("default_time_zone"),
                        "must be an IANA time zone name such as \"Europe/Berlin\"",
                    );
                    name.to_owned()
                }
            },
        };
        let fallback_language = (!version.fallback_language.trim().is_empty()).then(|| {
            validate::language_tag(
                &mut violations,
                &path("fallback_language"),
                &version.fallback_language,
            )
        });
        let offer_template_id = validate::uuid(
            &mut violations,
            &path("offer_template_id"),
            &version.offer_template_id,
        );
        let alternative_offer_template_id = optional_uuid(
            &mut violations,
            &path("alternative_offer_template_id"),
            &version.alternative_offer_template_id,
        );
        let mut kind_templates: Vec<KindTemplates> = Vec::new();
        for (index, entry) in version.kind_templates.iter().enumerate() {
            let entry_path = |name: &str| path(&format!("kind_templates[{index}].{name}"));
            let kind = match pb::ContentKind::try_from(entry.kind) {
                Ok(pb::ContentKind::Unspecified) | Err(_) => {
                    violations.add(entry_path("kind"), "must be a known content kind");
                    None
                }
                Ok(kind) if kind_templates.iter().any(|earlier| earlier.kind == kind) => {
                    violations.add(entry_path("kind"), "is named by an earlier entry");
                    None
                }
                Ok(kind) => Some(kind),
            };
            let offer = validate::uuid(
                &mut violations,
                &entry_path("offer_template_id"),
                &entry.offer_template_id,
            );
            let alternative = optional_uuid(
                &mut violations,
                &entry_path("alternative_offer_template_id"),
                &entry.alternative_offer_template_id,
            );
            if let (Some(kind), Some(offer_template_id)) = (kind, offer) {
                kind_templates.push(KindTemplates {
                    kind,
                    offer_template_id,
                    alternative_offer_template_id: alternative,
                });
            }
        }
        let mut auto_enroll_classes: Vec<common::LeadClass> = Vec::new();
        for (index, class) in version.auto_enroll_classes.iter().enumerate() {
            match common::LeadClass::try_from(*class) {
                Ok(common::LeadClass::Unspecified) | Err(_) => violations.add(
                    path(&format!("auto_enroll_classes[{index}]")),
                    "must be a known lead class",
                ),
                Ok(class) if !auto_enroll_classes.contains(&class) => {
                    auto_enroll_classes.push(class);
                }
                Ok(_) => {}
            }
        }
        let change_note = validate::optional_text(
            &mut violations,
            &path("change_note"),
            &version.change_note,
            MAX_NOTE_CHARS,
        );
        violations.into_result()?;
        Ok(Self {
            cadence,
            max_interval,
            reaction_window,
            max_attempts,
            quiet_hours,
            time_zone_mode,
            default_time_zone,
            fallback_language,
            offer_template_id: offer_template_id.expect("no violations means an offer template"),
            alternative_offer_template_id,
            kind_templates,
            auto_enroll_classes,
            change_note,
        })
    }

    /// Every template the policy refers to, each with its field path within the version,
    /// so that a missing one can be named.
    pub fn template_references(&self) -> Vec<(String, Uuid)> {
        let mut references = vec![("offer_template_id".to_owned(), self.offer_template_id)];
        if let Some(alternative) = self.alternative_offer_template_id {
            references.push(("alternative_offer_template_id".to_owned(), alternative));
        }
        for (index, entry) in self.kind_templates.iter().enumerate() {
            references.push((
                format!("kind_templates[{index}].offer_template_id"),
                entry.offer_template_id,
            ));
            if let Some(alternative) = entry.alternative_offer_template_id {
                references.push((
                    format!("kind_templates[{index}].alternative_offer_template_id"),
                    alternative,
                ));
            }
        }
        references
    }
}

/// A set duration, or `default` when it is unset or zero (as the contract's "unset means"
/// reads for clients whose encoders cannot tell a zero duration from none).
fn duration_or_default(
    violations: &mut FieldViolations,
    field: &str,
    value: Option<&prost_types::Duration>,
    default: TimeDelta,
) -> TimeDelta {
    let Some(value) = value else {
        return default;
    };
    if value.seconds < 0 || value.nanos < 0 {
        violations.add(field, "must not be negative");
        return default;
    }
    let Ok(nanos) = u32::try_from(value.nanos) else {
        return default;
    };
    if nanos >= 1_000_000_000 {
        violations.add(field, "is not a valid duration (nanos above a second)");
        return default;
    }
    if value.seconds > MAX_DURATION_DAYS * 86_400 {
        violations.add(field, format!("must be at most {MAX_DURATION_DAYS} days"));
        return default;
    }
    match TimeDelta::new(value.seconds, nanos) {
        Some(duration) if !duration.is_zero() => duration,
        _ => default,
    }
}

/// A UUID that may be left empty.
fn optional_uuid(violations: &mut FieldViolations, field: &str, value: &str) -> Option<Uuid> {
    if value.trim().is_empty() {
        None
    } else {
        validate::uuid(violations, field, value)
    }
}

pub(crate) use leadflow_platform::time::to_duration;

impl From<&Track> for pb::Track {
    fn from(stored: &Track) -> Self {
        Self {
            track_id: stored.track_id.to_string(),
            name: stored.track.name.clone(),
            description: stored.track.description.clone(),
            product: stored.track.product.clone(),
            latest_version: stored.latest_version,
            create_time: Some(to_timestamp(stored.create_time)),
            update_time: Some(to_timestamp(stored.update_time)),
        }
    }
}

impl From<&TrackVersion> for pb::TrackVersion {
    fn from(stored: &TrackVersion) -> Self {
        let policy = &stored.policy;
        let id = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
        Self {
            track_id: stored.track_id.to_string(),
            version: stored.version,
            cadence: Some(to_duration(policy.cadence)),
            max_interval: Some(to_duration(policy.max_interval)),
            reaction_window: Some(to_duration(policy.reaction_window)),
            max_attempts: policy.max_attempts,
            quiet_hours: policy.quiet_hours.map(|quiet| pb::QuietHours {
                start_minute: quiet.start_minute,
                end_minute: quiet.end_minute,
                skip_weekends: quiet.skip_weekends,
            }),
            time_zone_mode: policy.time_zone_mode.into(),
            default_time_zone: policy.default_time_zone.clone(),
            fallback_language: policy.fallback_language.clone().unwrap_or_default(),
            offer_template_id: policy.offer_template_id.to_string(),
            alternative_offer_template_id: id(policy.alternative_offer_template_id),
            kind_templates: policy
                .kind_templates
                .iter()
                .map(|entry| pb::KindTemplates {
                    kind: entry.kind.into(),
                    offer_template_id: entry.offer_template_id.to_string(),
                    alternative_offer_template_id: id(entry.alternative_offer_template_id),
                })
                .collect(),
            auto_enroll_classes: policy
                .auto_enroll_classes
                .iter()
                .map(|class| (*class).into())
                .collect(),
            change_note: policy.change_note.clone(),
            publish_time: Some(to_timestamp(stored.publish_time)),
        }
    }
}
