//! A stored model version as the domain's rules, and the seed model a product gets when it
//! has none: the field's point table, threshold 250, and the MQL rule of DOMAIN.md.

use std::{collections::BTreeMap, time::Duration};

use leadflow_domain::{
    ActivityKey, ActivityKind, Attribute, EngagementModel, EngagementRule, FitOperator, FitRule,
    GradeBands, LeadClass, LevelBands, MqlRule, ProfileGrade, SalesReadyRule,
};
use leadflow_proto::{common::v1 as common, scoring::v1 as pb};
use uuid::Uuid;

use crate::models::ScoringModelRecord;

/// A model version ready to score with.
#[derive(Debug, Clone)]
pub struct ScoringRules {
    /// The version's id.
    pub model_id: Uuid,
    /// Its number within the product.
    pub version: u32,
    /// The hand-off threshold.
    pub threshold: u32,
    /// Engagement points, overrides, caps and half-lives.
    pub engagement: EngagementModel,
    /// The fit rules, in model order.
    pub fit_rules: Vec<FitRule>,
    /// Each fit rule's description, by rule id.
    pub fit_descriptions: BTreeMap<String, String>,
    /// Fit score to grade.
    pub grade_bands: GradeBands,
    /// Engagement score to level.
    pub level_bands: LevelBands,
    /// When a lead is MQL.
    pub mql: MqlRule,
    /// When an MQL goes to sales.
    pub sales_ready: SalesReadyRule,
    /// Only stage evidence this recent counts; `None` counts all.
    pub evidence_window: Option<Duration>,
    /// How long a lead typically stays in each class.
    pub expected_class_durations: BTreeMap<LeadClass, Duration>,
}

/// The product events without a product are scored for when the lead has no product yet.
pub const DEFAULT_PRODUCT: &str = "default";

/// The half-life of the seed model's engagement points.
const SEED_HALF_LIFE: Duration = Duration::from_secs(90 * 86_400);

fn duration(value: Option<&prost_types::Duration>) -> Option<Duration> {
    value.and_then(|value| {
        let seconds = u64::try_from(value.seconds).ok()?;
        let nanos = u32::try_from(value.nanos).ok()?;
        Some(Duration::new(seconds, nanos)).filter(|duration| !duration.is_zero())
    })
}

fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// The engagement rule key of an activity type, as the ledger and explanations name it.
pub fn activity_key(activity_type: i32, custom_type: &str) -> ActivityKey {
    match common::ActivityType::try_from(activity_type) {
        Ok(common::ActivityType::Custom) => ActivityKey::custom(custom_type),
        Ok(known) => ActivityKey::new(known.as_str_name()),
        Err(_) => ActivityKey::new(format!("ACTIVITY_TYPE_{activity_type}")),
    }
}

/// The activity type and custom type name of a rule key.
pub fn activity_type_of(key: &str) -> (common::ActivityType, String) {
    match key.strip_prefix("custom:") {
        Some(custom) => (common::ActivityType::Custom, custom.to_owned()),
        None => (
            common::ActivityType::from_str_name(key).unwrap_or(common::ActivityType::Unspecified),
            String::new(),
        ),
    }
}

/// The domain's attribute of a profile attribute of the API.
pub fn attribute(value: i32) -> Option<Attribute> {
    use pb::ProfileAttribute as P;
    Some(match P::try_from(value).ok()? {
        P::Unspecified => return None,
        P::CompanyName => Attribute::CompanyName,
        P::WebDomain => Attribute::WebDomain,
        P::Industry => Attribute::Industry,
        P::EmployeeCount => Attribute::EmployeeCount,
        P::RevenueBand => Attribute::RevenueBand,
        P::CountryCode => Attribute::CountryCode,
        P::Region => Attribute::Region,
        P::Source => Attribute::Source,
        P::BuyerRole => Attribute::BuyerRole,
        P::Seniority => Attribute::Seniority,
        P::JobTitle => Attribute::JobTitle,
        P::Department => Attribute::Department,
        P::Email => Attribute::Email,
        P::FirstName => Attribute::FirstName,
        P::LastName => Attribute::LastName,
        P::Phone => Attribute::Phone,
        P::PostalAddress => Attribute::PostalAddress,
    })
}

/// The API's profile attribute of a domain attribute.
pub fn profile_attribute(attribute: Attribute) -> pb::ProfileAttribute {
    use pb::ProfileAttribute as P;
    match attribute {
        Attribute::CompanyName => P::CompanyName,
        Attribute::WebDomain => P::WebDomain,
        Attribute::Industry => P::Industry,
        Attribute::EmployeeCount => P::EmployeeCount,
        Attribute::RevenueBand => P::RevenueBand,
        Attribute::CountryCode => P::CountryCode,
        Attribute::Region => P::Region,
        Attribute::Source => P::Source,
        Attribute::BuyerRole => P::BuyerRole,
        Attribute::Seniority => P::Seniority,
        Attribute::JobTitle => P::JobTitle,
        Attribute::Department => P::Department,
        Attribute::Email => P::Email,
        Attribute::FirstName => P::FirstName,
        Attribute::LastName => P::LastName,
        Attribute::Phone => P::Phone,
        Attribute::PostalAddress => P::PostalAddress,
    }
}

pub use leadflow_proto::domain::{grade, lead_class, proto_class, proto_grade};

fn fit_operator(value: i32) -> Option<FitOperator> {
    use pb::FitOperator as P;
    Some(match P::try_from(value).ok()? {
        P::Unspecified => return None,
        P::In => FitOperator::In,
        P::NotIn => FitOperator::NotIn,
        P::Contains => FitOperator::Contains,
        P::Between => FitOperator::Between,
        P::IsSet => FitOperator::IsSet,
        P::IsMissing => FitOperator::IsMissing,
        P::FreeMail => FitOperator::FreeMail,
    })
}

impl ScoringRules {
    /// The rules of a stored (validated) model version.
    pub fn from_record(record: &ScoringModelRecord) -> Self {
        let model = record.model.definition();
        let mut engagement = EngagementModel::new();
        for rule in &model.engagement_rules {
            engagement = engagement.with_rule(
                activity_key(rule.activity_type, &rule.custom_type),
                EngagementRule {
                    points: rule.points,
                    half_life: duration(rule.half_life.as_ref()),
                    cap_points: rule.cap_points,
                    cap_period: duration(rule.cap_period.as_ref()),
                },
            );
        }
        for item in &model.content_overrides {
            engagement = engagement.with_override(
                &item.content_id,
                activity_key(item.activity_type, &item.custom_type),
                item.points,
            );
        }
        let fit_rules = model
            .fit_rules
            .iter()
            .filter_map(|rule| {
                Some(FitRule {
                    rule_id: rule.rule_id.clone(),
                    attribute: attribute(rule.attribute)?,
                    operator: fit_operator(rule.operator)?,
                    values: rule.values.clone(),
                    points: rule.points,
                    disqualifier: rule.disqualifier,
                })
            })
            .collect();
        let fit_descriptions = model
            .fit_rules
            .iter()
            .map(|rule| (rule.rule_id.clone(), rule.description.clone()))
            .collect();
        let mut grade_bands = GradeBands::default();
        for band in &model.grade_bands {
            match grade(band.grade) {
                Some(ProfileGrade::A) => grade_bands.a = band.min_fit_points,
                Some(ProfileGrade::B) => grade_bands.b = band.min_fit_points,
                Some(ProfileGrade::C) => grade_bands.c = band.min_fit_points,
                Some(ProfileGrade::D) | None => {}
            }
        }
        let mut level_bands = LevelBands::default();
        for band in &model.engagement_level_bands {
            if let Some(slot) = (band.engagement_level as usize)
                .checked_sub(2)
                .and_then(|index| level_bands.minimums.get_mut(index))
            {
                *slot = band.min_engagement_points;
            }
        }
        let mql = model
            .mql_rule
            .as_ref()
            .map(|rule| MqlRule {
                require_opt_in: rule.require_opt_in,
                required: rule
                    .required_attributes
                    .iter()
                    .filter_map(|value| attribute(*value))
                    .collect(),
                min_total_points: rule.min_total_points,
                min_grade: grade(rule.min_grade),
            })
            .unwrap_or_default();
        let sales_ready = model
            .sales_ready_rule
            .as_ref()
            .map(|rule| SalesReadyRule {
                min_grade: grade(rule.min_grade),
                on_class_a: rule.on_class_a,
                on_contact_request: rule.on_contact_request,
            })
            .unwrap_or_default();
        let policy = model.classification_policy.clone().unwrap_or_default();
        Self {
            model_id: record.model_id,
            version: record.version,
            threshold: model.threshold,
            engagement,
            fit_rules,
            fit_descriptions,
            grade_bands,
            level_bands,
            mql,
            sales_ready,
            evidence_window: duration(policy.evidence_window.as_ref()),
            expected_class_durations: policy
                .expected_class_durations
                .iter()
                .filter_map(|item| {
                    Some((
                        lead_class(item.lead_class)?,
                        duration(item.expected_duration.as_ref())?,
                    ))
                })
                .collect(),
        }
    }

    /// The half-life of an activity key's points; `None` when they never decay.
    pub fn half_life(&self, key: &str) -> Option<Duration> {
        self.engagement
            .rule(&ActivityKey::new(key))
            .and_then(|rule| rule.half_life)
    }
}

/// The seed model of `product`: the field's point table with a 90-day half-life, the
/// hand-off threshold 250, MQL on opt-in and the complete profile DOMAIN.md lists, and
/// contact requests and class A handed over at once.
pub fn seed_model(product: &str) -> pb::ScoringModel {
    let rule = |kind: ActivityKind| {
        let (activity_type, _) = activity_type_of(kind.key().as_str());
        pb::EngagementRule {
            activity_type: activity_type.into(),
            points: kind.default_points(),
            half_life: Some(proto_duration(SEED_HALF_LIFE)),
            ..Default::default()
        }
    };
    let days = |days: u64| Some(proto_duration(Duration::from_secs(days * 86_400)));
    let class_duration = |class: common::LeadClass, days_in_class: u64| pb::ClassDuration {
        lead_class: class.into(),
        expected_duration: days(days_in_class),
    };
    use pb::ProfileAttribute as P;
    pb::ScoringModel {
        product: product.to_owned(),
        name: "Seed model".to_owned(),
        description: "The field's seed table: teaser 10, email opened 10, fact sheet 20, video \
                      completed 30, comment 40, slide deck 50, test passed 100, survey 100; \
                      hand-off at 250"
            .to_owned(),
        threshold: ActivityKind::DEFAULT_THRESHOLD,
        engagement_rules: ActivityKind::SEED_TABLE.into_iter().map(rule).collect(),
        mql_rule: Some(pb::MqlRule {
            require_opt_in: true,
            required_attributes: [
                P::FirstName,
                P::LastName,
                P::JobTitle,
                P::Department,
                P::CompanyName,
                P::EmployeeCount,
                P::Industry,
                P::Email,
                P::Phone,
                P::PostalAddress,
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            ..Default::default()
        }),
        sales_ready_rule: Some(pb::SalesReadyRule {
            on_class_a: true,
            on_contact_request: true,
            ..Default::default()
        }),
        classification_policy: Some(pb::ClassificationPolicy {
            evidence_window: days(180),
            expected_class_durations: vec![
                class_duration(common::LeadClass::B1, 60),
                class_duration(common::LeadClass::B2, 120),
                class_duration(common::LeadClass::B3, 60),
                class_duration(common::LeadClass::A, 30),
            ],
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::NewScoringModel;

    #[test]
    fn the_seed_model_is_valid_and_scores_the_seed_table() {
        let model = NewScoringModel::parse(Some(&seed_model("erp"))).expect("a valid model");
        let record = ScoringModelRecord {
            model_id: Uuid::nil(),
            version: 1,
            active: true,
            create_time: chrono::Utc::now(),
            model,
        };
        let rules = ScoringRules::from_record(&record);
        assert_eq!(rules.threshold, 250);
        for kind in ActivityKind::SEED_TABLE {
            let rule = rules.engagement.rule(&kind.key()).expect("a seed rule");
            assert_eq!(rule.points, kind.default_points());
            assert_eq!(rules.half_life(kind.key().as_str()), Some(SEED_HALF_LIFE));
        }
        assert!(rules.mql.require_opt_in);
        assert_eq!(rules.mql.required.len(), 10);
        assert!(rules.sales_ready.on_contact_request);
    }

    #[test]
    fn activity_keys_round_trip_through_the_api_names() {
        let key = activity_key(common::ActivityType::VideoCompleted.into(), "");
        assert_eq!(key, ActivityKind::VideoCompleted.key());
        assert_eq!(
            activity_type_of(key.as_str()),
            (common::ActivityType::VideoCompleted, String::new())
        );
        let custom = activity_key(common::ActivityType::Custom.into(), "demo-booked");
        assert_eq!(
            activity_type_of(custom.as_str()),
            (common::ActivityType::Custom, "demo-booked".to_owned())
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1_024))]

        /// The seed model's encoding with bytes changed at random, as a careless or hostile
        /// client might send it: what still decodes is accepted or refused with field
        /// violations, never a panic.
        #[test]
        fn a_mangled_model_is_parsed_or_refused_by_field(
            changes in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                1..12,
            ),
        ) {
            use prost::Message;
            let mut bytes = seed_model("erp").encode_to_vec();
            for (at, byte) in changes {
                let index = at.index(bytes.len());
                bytes[index] = byte;
            }
            if let Ok(model) = pb::ScoringModel::decode(bytes.as_slice())
                && let Err(violations) = NewScoringModel::parse(Some(&model))
            {
                proptest::prop_assert!(violations.iter().all(|(field, _)| !field.is_empty()));
            }
        }
    }
}
