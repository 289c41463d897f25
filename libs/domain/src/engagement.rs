//! Engagement: the points a tracked action earns (by default the field's seed table), the
//! per-content overrides and caps of a scoring model, how points fade with age by
//! half-life, and the engagement levels 1-4 of the heat map.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};

use crate::fit::ProfileGrade;

/// The actions of the seed scoring table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivityKind {
    /// A teaser was read.
    TeaserRead,
    /// A mail was opened.
    EmailOpened,
    /// A fact sheet was actively requested.
    FactSheetRequested,
    /// A video was watched completely.
    VideoCompleted,
    /// Content was commented.
    ContentCommented,
    /// A slide deck was downloaded.
    SlideDeckDownloaded,
    /// A knowledge test was passed.
    KnowledgeTestPassed,
    /// A survey was answered.
    SurveyAnswered,
}

impl ActivityKind {
    /// The seed table, in the field's order.
    pub const SEED_TABLE: [Self; 8] = [
        Self::TeaserRead,
        Self::EmailOpened,
        Self::FactSheetRequested,
        Self::VideoCompleted,
        Self::ContentCommented,
        Self::SlideDeckDownloaded,
        Self::KnowledgeTestPassed,
        Self::SurveyAnswered,
    ];

    /// The default hand-off threshold of the seed model.
    pub const DEFAULT_THRESHOLD: u32 = 250;

    /// The engagement rule key of this action.
    pub fn key(self) -> ActivityKey {
        ActivityKey::new(match self {
            Self::TeaserRead => "ACTIVITY_TYPE_TEASER_READ",
            Self::EmailOpened => "ACTIVITY_TYPE_EMAIL_OPENED",
            Self::FactSheetRequested => "ACTIVITY_TYPE_FACT_SHEET_REQUESTED",
            Self::VideoCompleted => "ACTIVITY_TYPE_VIDEO_COMPLETED",
            Self::ContentCommented => "ACTIVITY_TYPE_CONTENT_COMMENTED",
            Self::SlideDeckDownloaded => "ACTIVITY_TYPE_SLIDE_DECK_DOWNLOADED",
            Self::KnowledgeTestPassed => "ACTIVITY_TYPE_KNOWLEDGE_TEST_PASSED",
            Self::SurveyAnswered => "ACTIVITY_TYPE_SURVEY_ANSWERED",
        })
    }

    /// Points the seed model gives this action.
    pub fn default_points(self) -> u32 {
        match self {
            Self::TeaserRead | Self::EmailOpened => 10,
            Self::FactSheetRequested => 20,
            Self::VideoCompleted => 30,
            Self::ContentCommented => 40,
            Self::SlideDeckDownloaded => 50,
            Self::KnowledgeTestPassed | Self::SurveyAnswered => 100,
        }
    }
}

/// What `points` earned `age` ago are worth now, halving every `half_life`. A zero
/// half-life means the points never fade.
pub fn decayed_points(points: f64, age: Duration, half_life: Duration) -> f64 {
    if half_life.is_zero() {
        return points;
    }
    points * 0.5_f64.powf(age.as_secs_f64() / half_life.as_secs_f64())
}

/// What an engagement rule is keyed by: the activity type as the API names it, e.g.
/// `ACTIVITY_TYPE_TEASER_READ`, or `custom:<name>` for a custom activity type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActivityKey(String);

impl ActivityKey {
    /// The key of an activity type name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The key of a custom activity type.
    pub fn custom(name: &str) -> Self {
        Self(format!("custom:{name}"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The points one activity type earns, how fast they fade and how many a lead can earn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngagementRule {
    /// Points per activity when it happens.
    pub points: u32,
    /// The points halve each time this much time passed; `None` never decays.
    pub half_life: Option<Duration>,
    /// The most points (before decay) per lead within `cap_period`; 0 means no cap.
    pub cap_points: u32,
    /// The rolling window of the cap; `None` with a cap means for all time.
    pub cap_period: Option<Duration>,
}

/// An activity as engagement scoring sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoredActivity {
    /// Its type.
    pub key: ActivityKey,
    /// The content item it concerns, if any.
    pub content_id: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// The points an activity earned and the rule that gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Award {
    /// The points after the cap (before decay).
    pub points: u32,
    /// The rule: `engagement:<key>` or `override:<content id>`.
    pub rule: String,
    /// Whether the cap took some or all of the points.
    pub capped: bool,
}

/// A model's engagement rules and per-content overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngagementModel {
    rules: BTreeMap<ActivityKey, EngagementRule>,
    overrides: BTreeMap<(String, ActivityKey), u32>,
}

impl EngagementModel {
    /// A model with no rules: nothing scores.
    pub fn new() -> Self {
        Self::default()
    }

    /// The seed table of the field, every type with the same half-life.
    pub fn seed(half_life: Option<Duration>) -> Self {
        let mut model = Self::new();
        for kind in ActivityKind::SEED_TABLE {
            model = model.with_rule(
                kind.key(),
                EngagementRule {
                    points: kind.default_points(),
                    half_life,
                    cap_points: 0,
                    cap_period: None,
                },
            );
        }
        model
    }

    /// Adds (or replaces) the rule of `key`.
    pub fn with_rule(mut self, key: ActivityKey, rule: EngagementRule) -> Self {
        self.rules.insert(key, rule);
        self
    }

    /// Makes activities of `key` on `content_id` earn `points` instead of the rule's.
    pub fn with_override(mut self, content_id: &str, key: ActivityKey, points: u32) -> Self {
        self.overrides.insert((content_id.to_owned(), key), points);
        self
    }

    /// The rule of `key`, if the model scores it.
    pub fn rule(&self, key: &ActivityKey) -> Option<&EngagementRule> {
        self.rules.get(key)
    }

    /// The rules, by key.
    pub fn rules(&self) -> impl Iterator<Item = (&ActivityKey, &EngagementRule)> {
        self.rules.iter()
    }

    /// The points `activity` earns, given what activities of the same type at the same
    /// lead earned before (`earlier`: when, and the points after their cap). `None` when
    /// the model has no rule for the type. The cap counts the points earned within the cap
    /// period up to the activity's time.
    pub fn award(
        &self,
        activity: &ScoredActivity,
        earlier: &[(DateTime<Utc>, u32)],
    ) -> Option<Award> {
        let rule = self.rules.get(&activity.key)?;
        let content_points = activity.content_id.as_ref().and_then(|content_id| {
            self.overrides
                .get(&(content_id.clone(), activity.key.clone()))
                .map(|points| (*points, format!("override:{content_id}")))
        });
        let (points, rule_name) = content_points
            .unwrap_or_else(|| (rule.points, format!("engagement:{}", activity.key.as_str())));
        if rule.cap_points == 0 {
            return Some(Award {
                points,
                rule: rule_name,
                capped: false,
            });
        }
        let window_start = rule.cap_period.map(|period| {
            activity.occurred_at
                - chrono::TimeDelta::from_std(period).unwrap_or(chrono::TimeDelta::MAX)
        });
        let earned: u64 = earlier
            .iter()
            .filter(|(at, _)| *at <= activity.occurred_at)
            .filter(|(at, _)| window_start.is_none_or(|start| *at > start))
            .map(|(_, points)| u64::from(*points))
            .sum();
        let room = u64::from(rule.cap_points).saturating_sub(earned);
        let allowed = u64::from(points).min(room) as u32;
        Some(Award {
            points: allowed,
            rule: rule_name,
            capped: allowed < points,
        })
    }
}

/// An engagement score that decays: one running sum per half-life, each kept as its value
/// at a reference time, so the score of any later moment is one multiplication per
/// half-life away and adding an activity never needs the earlier ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecayingSum {
    /// Half-life in milliseconds (0: no decay) -> (value at the reference time, the
    /// reference time in milliseconds since the epoch).
    groups: BTreeMap<u64, (f64, i64)>,
}

impl DecayingSum {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `points` earned at `at`, fading with `half_life`.
    pub fn add(&mut self, points: f64, at: DateTime<Utc>, half_life: Option<Duration>) {
        let half_life_ms = half_life.map_or(0, |h| h.as_millis() as u64);
        let at_ms = at.timestamp_millis();
        let group = self.groups.entry(half_life_ms).or_insert((0.0, at_ms));
        let (value, reference) = *group;
        *group = if at_ms >= reference {
            (
                decay_ms(value, at_ms - reference, half_life_ms) + points,
                at_ms,
            )
        } else {
            (
                value + decay_ms(points, reference - at_ms, half_life_ms),
                reference,
            )
        };
    }

    /// The sum at `now`; activities are worth their full points at their own time, so a
    /// moment before the latest one is counted as that moment.
    pub fn value_at(&self, now: DateTime<Utc>) -> f64 {
        let now_ms = now.timestamp_millis();
        self.groups
            .iter()
            .map(|(half_life_ms, (value, reference))| {
                decay_ms(*value, (now_ms - reference).max(0), *half_life_ms)
            })
            .sum()
    }

    /// The groups as (half-life ms, value, reference ms), for storing.
    pub fn groups(&self) -> impl Iterator<Item = (u64, f64, i64)> + '_ {
        self.groups
            .iter()
            .map(|(half_life, (value, reference))| (*half_life, *value, *reference))
    }

    /// A sum from stored groups.
    pub fn from_groups(groups: impl IntoIterator<Item = (u64, f64, i64)>) -> Self {
        Self {
            groups: groups
                .into_iter()
                .map(|(half_life, value, reference)| (half_life, (value, reference)))
                .collect(),
        }
    }
}

fn decay_ms(points: f64, age_ms: i64, half_life_ms: u64) -> f64 {
    if half_life_ms == 0 || age_ms <= 0 {
        return points;
    }
    points * 0.5_f64.powf(age_ms as f64 / half_life_ms as f64)
}

/// The lowest engagement score of levels 2, 3 and 4; anything below level 2's is level 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelBands {
    /// The lowest engagement of levels 2, 3 and 4.
    pub minimums: [u32; 3],
}

impl Default for LevelBands {
    /// Level 2 from 60, 3 from 150, 4 from 250.
    fn default() -> Self {
        Self {
            minimums: [60, 150, 250],
        }
    }
}

impl LevelBands {
    /// The level, 1 (low) to 4 (high), of an engagement score in whole points.
    pub fn level(&self, engagement: f64) -> u8 {
        let points = whole_points(engagement);
        1 + self
            .minimums
            .iter()
            .filter(|minimum| points >= i64::from(**minimum))
            .count() as u8
    }
}

/// A score in whole points, as thresholds and bands compare it: decay over the seconds
/// between an activity and its scoring must not keep a lead a fraction below a threshold.
pub fn whole_points(score: f64) -> i64 {
    score.round() as i64
}

/// A cell of the heat map: profile grade by engagement level, e.g. `A4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeatMapCell {
    /// The row.
    pub grade: ProfileGrade,
    /// The column, 1 to 4.
    pub level: u8,
}

impl std::fmt::Display for HeatMapCell {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}{}", self.grade.letter(), self.level)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_seed_example_reaches_the_threshold_exactly() {
        // A teaser, a complete video, a fact sheet, the slide deck, a passed test and a
        // comment: the field's example of a lead that has just become sales-ready.
        let journey = [
            ActivityKind::TeaserRead,
            ActivityKind::VideoCompleted,
            ActivityKind::FactSheetRequested,
            ActivityKind::SlideDeckDownloaded,
            ActivityKind::KnowledgeTestPassed,
            ActivityKind::ContentCommented,
        ];
        let sum: u32 = journey.iter().map(|kind| kind.default_points()).sum();
        assert_eq!(sum, ActivityKind::DEFAULT_THRESHOLD);
        let without_the_test = sum - ActivityKind::KnowledgeTestPassed.default_points();
        assert!(without_the_test < ActivityKind::DEFAULT_THRESHOLD);
    }

    #[test]
    fn one_half_life_halves_the_points() {
        let half_life = Duration::from_secs(30 * 86_400);
        assert!((decayed_points(100.0, half_life, half_life) - 50.0).abs() < 1e-9);
        assert!((decayed_points(100.0, half_life * 2, half_life) - 25.0).abs() < 1e-9);
        assert_eq!(decayed_points(100.0, Duration::ZERO, half_life), 100.0);
        assert_eq!(decayed_points(100.0, half_life, Duration::ZERO), 100.0);
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("time")
    }

    fn activity(kind: ActivityKind, content: Option<&str>, seconds: i64) -> ScoredActivity {
        ScoredActivity {
            key: kind.key(),
            content_id: content.map(str::to_owned),
            occurred_at: at(seconds),
        }
    }

    #[test]
    fn an_override_replaces_the_points_of_one_content_item() {
        let model = EngagementModel::seed(None).with_override(
            "roi-study",
            ActivityKind::SlideDeckDownloaded.key(),
            80,
        );
        let deck = |content| {
            model
                .award(
                    &activity(ActivityKind::SlideDeckDownloaded, content, 0),
                    &[],
                )
                .expect("scored")
        };
        assert_eq!(deck(Some("roi-study")).points, 80);
        assert_eq!(deck(Some("roi-study")).rule, "override:roi-study");
        assert_eq!(deck(Some("other")).points, 50);
        assert_eq!(
            deck(None).rule,
            "engagement:ACTIVITY_TYPE_SLIDE_DECK_DOWNLOADED"
        );
        let unscored = ScoredActivity {
            key: ActivityKey::new("ACTIVITY_TYPE_PAGE_VISITED"),
            content_id: None,
            occurred_at: at(0),
        };
        assert_eq!(model.award(&unscored, &[]), None);
    }

    #[test]
    fn a_cap_limits_the_points_within_its_rolling_window() {
        let day = Duration::from_secs(86_400);
        let model = EngagementModel::new().with_rule(
            ActivityKind::EmailOpened.key(),
            EngagementRule {
                points: 10,
                half_life: None,
                cap_points: 25,
                cap_period: Some(day * 7),
            },
        );
        let mut earned = Vec::new();
        let mut awards = Vec::new();
        for seconds in [0, 3_600, 7_200, 8 * 86_400] {
            let open = activity(ActivityKind::EmailOpened, None, seconds);
            let award = model.award(&open, &earned).expect("scored");
            earned.push((open.occurred_at, award.points));
            awards.push((award.points, award.capped));
        }
        assert_eq!(awards, [(10, false), (10, false), (5, true), (10, false)]);
    }

    #[test]
    fn levels_follow_the_bands_in_whole_points() {
        let bands = LevelBands::default();
        assert_eq!(bands.level(0.0), 1);
        assert_eq!(bands.level(59.4), 1);
        assert_eq!(bands.level(59.6), 2);
        assert_eq!(bands.level(249.9998), 4);
        assert_eq!(
            HeatMapCell {
                grade: ProfileGrade::B,
                level: 3
            }
            .to_string(),
            "B3"
        );
    }

    #[test]
    fn the_decaying_sum_halves_after_one_half_life() {
        let half_life = Duration::from_secs(30 * 86_400);
        let mut sum = DecayingSum::new();
        sum.add(250.0, at(0), Some(half_life));
        sum.add(40.0, at(0), None);
        let later = at(30 * 86_400);
        assert!((sum.value_at(later) - 165.0).abs() < 1e-9);
        let stored = DecayingSum::from_groups(sum.groups().collect::<Vec<_>>());
        assert_eq!(stored, sum);
    }

    proptest! {
        #[test]
        fn the_decaying_sum_equals_the_sum_of_decayed_points_in_any_order(
            items in proptest::collection::vec((0u32..200, 0i64..10_000_000, 0usize..3), 1..30),
            later in 0i64..20_000_000,
        ) {
            let half_lives = [None, Some(Duration::from_secs(86_400)), Some(Duration::from_secs(7 * 86_400))];
            let now = at(10_000_000 + later);
            let mut forward = DecayingSum::new();
            let mut backward = DecayingSum::new();
            for (points, seconds, h) in &items {
                forward.add(f64::from(*points), at(*seconds), half_lives[*h]);
            }
            for (points, seconds, h) in items.iter().rev() {
                backward.add(f64::from(*points), at(*seconds), half_lives[*h]);
            }
            let expected: f64 = items.iter().map(|(points, seconds, h)| {
                let age = Duration::from_secs((10_000_000 + later - seconds) as u64);
                decayed_points(f64::from(*points), age, half_lives[*h].unwrap_or(Duration::ZERO))
            }).sum();
            prop_assert!((forward.value_at(now) - expected).abs() < 1e-6 * expected.max(1.0));
            prop_assert!((backward.value_at(now) - expected).abs() < 1e-6 * expected.max(1.0));
        }

        #[test]
        fn a_capped_type_never_earns_more_than_its_cap(
            times in proptest::collection::vec(0i64..1_000_000, 1..40),
            cap in 1u32..100,
        ) {
            let model = EngagementModel::new().with_rule(ActivityKind::TeaserRead.key(), EngagementRule {
                points: 10, half_life: None, cap_points: cap, cap_period: None,
            });
            let mut times = times;
            times.sort_unstable();
            let mut earned: Vec<(DateTime<Utc>, u32)> = Vec::new();
            for seconds in times {
                let read = activity(ActivityKind::TeaserRead, None, seconds);
                let award = model.award(&read, &earned).expect("scored");
                earned.push((read.occurred_at, award.points));
            }
            prop_assert!(earned.iter().map(|(_, p)| *p).sum::<u32>() <= cap);
        }

        #[test]
        fn decay_never_grows_and_never_goes_negative(
            points in 0.0f64..10_000.0,
            age_a in 0u64..10_000_000,
            age_b in 0u64..10_000_000,
            half_life in 1u64..10_000_000,
        ) {
            let (younger, older) = if age_a <= age_b { (age_a, age_b) } else { (age_b, age_a) };
            let half_life = Duration::from_secs(half_life);
            let young = decayed_points(points, Duration::from_secs(younger), half_life);
            let old = decayed_points(points, Duration::from_secs(older), half_life);
            prop_assert!(old <= young + 1e-9);
            prop_assert!(old >= 0.0);
            prop_assert!(young <= points + 1e-9);
        }
    }
}
