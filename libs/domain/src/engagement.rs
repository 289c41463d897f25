//! Engagement: the points a tracked action earns by default (the field's seed table) and
//! how they fade with age, by half-life, so that old activity weighs less.

use std::time::Duration;

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

    proptest! {
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
