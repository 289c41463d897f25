//! Scoring models: per product, versioned and immutable once created. A model holds the
//! fit rules, the engagement points with decay and caps, the grade and level bands and the
//! hand-off threshold.

use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::{common::v1 as common, scoring::v1 as pb};
use uuid::Uuid;

/// A model definition that passed validation, with every server-assigned field cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScoringModel {
    definition: pb::ScoringModel,
}

/// A stored model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringModelRecord {
    /// The version's id.
    pub model_id: Uuid,
    /// Its number within the product, from 1.
    pub version: u32,
    /// Whether it is the product's active version.
    pub active: bool,
    /// When it was created.
    pub create_time: DateTime<Utc>,
    /// The validated definition.
    pub model: NewScoringModel,
}

impl NewScoringModel {
    /// Parses the `model` of a create request; every problem is reported under its field path.
    pub fn parse(model: Option<&pb::ScoringModel>) -> Result<Self, FieldViolations> {
        let Some(model) = model else {
            return Err(FieldViolations::single("model", "is required"));
        };
        let mut violations = FieldViolations::new();
        let mut definition = model.clone();
        definition.model_id.clear();
        definition.version = 0;
        definition.active = false;
        definition.create_time = None;
        definition.creator.clear();
        definition.product = validate::identifier(&mut violations, "model.product", &model.product);
        definition.name = validate::required_text(&mut violations, "model.name", &model.name, 200);
        definition.description = validate::optional_text(
            &mut violations,
            "model.description",
            &model.description,
            2_000,
        );
        if model.threshold == 0 {
            violations.add("model.threshold", "must be greater than 0");
        }
        check_engagement_rules(&mut violations, &model.engagement_rules);
        check_fit_rules(&mut violations, &model.fit_rules);
        check_grade_bands(&mut violations, &model.grade_bands);
        check_level_bands(&mut violations, &model.engagement_level_bands);
        for (index, item) in model.content_overrides.iter().enumerate() {
            let path = format!("model.content_overrides[{index}]");
            if item.content_id.trim().is_empty() {
                violations.add(format!("{path}.content_id"), "is required");
            }
            check_activity_type(
                &mut violations,
                &path,
                item.activity_type,
                &item.custom_type,
            );
        }
        violations.into_result()?;
        Ok(Self { definition })
    }

    /// Rebuilds a model from its stored definition.
    pub fn from_stored(definition: pb::ScoringModel) -> Self {
        Self { definition }
    }

    /// The product it scores for.
    pub fn product(&self) -> &str {
        &self.definition.product
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// The hand-off threshold.
    pub fn threshold(&self) -> u32 {
        self.definition.threshold
    }

    /// The definition as stored (no server-assigned fields).
    pub fn definition(&self) -> &pb::ScoringModel {
        &self.definition
    }
}

impl From<&ScoringModelRecord> for pb::ScoringModel {
    fn from(record: &ScoringModelRecord) -> Self {
        let mut model = record.model.definition.clone();
        model.model_id = record.model_id.to_string();
        model.version = record.version;
        model.active = record.active;
        model.create_time = Some(to_timestamp(record.create_time));
        model
    }
}

fn check_activity_type(
    violations: &mut FieldViolations,
    path: &str,
    activity_type: i32,
    custom_type: &str,
) {
    match common::ActivityType::try_from(activity_type) {
        Ok(common::ActivityType::Unspecified) | Err(_) => {
            violations.add(
                format!("{path}.activity_type"),
                "must be a known activity type",
            );
        }
        Ok(common::ActivityType::Custom) => {
            validate::identifier(violations, &format!("{path}.custom_type"), custom_type);
        }
        Ok(_) if !custom_type.is_empty() => {
            violations.add(
                format!("{path}.custom_type"),
                "is only allowed with ACTIVITY_TYPE_CUSTOM",
            );
        }
        Ok(_) => {}
    }
}

fn is_positive(duration: &prost_types::Duration) -> bool {
    duration.seconds > 0 || (duration.seconds == 0 && duration.nanos > 0)
}

fn check_engagement_rules(violations: &mut FieldViolations, rules: &[pb::EngagementRule]) {
    if rules.is_empty() {
        violations.add("model.engagement_rules", "must have at least one rule");
    }
    let mut seen: Vec<(i32, &str)> = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let path = format!("model.engagement_rules[{index}]");
        check_activity_type(violations, &path, rule.activity_type, &rule.custom_type);
        let identity = (rule.activity_type, rule.custom_type.as_str());
        if seen.contains(&identity) {
            violations.add(format!("{path}.activity_type"), "has a rule already");
        }
        seen.push(identity);
        if rule
            .half_life
            .as_ref()
            .is_some_and(|half_life| !is_positive(half_life))
        {
            violations.add(format!("{path}.half_life"), "must be positive when set");
        }
        if rule
            .cap_period
            .as_ref()
            .is_some_and(|period| !is_positive(period))
        {
            violations.add(format!("{path}.cap_period"), "must be positive when set");
        }
        if rule.cap_points == 0 && rule.cap_period.is_some() {
            violations.add(
                format!("{path}.cap_points"),
                "is required with a cap_period",
            );
        }
    }
}

fn check_fit_rules(violations: &mut FieldViolations, rules: &[pb::FitRule]) {
    use pb::FitOperator;
    let mut rule_ids: Vec<&str> = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let path = format!("model.fit_rules[{index}]");
        let rule_id = validate::identifier(violations, &format!("{path}.rule_id"), &rule.rule_id);
        if !rule_id.is_empty() && rule_ids.contains(&rule.rule_id.as_str()) {
            violations.add(format!("{path}.rule_id"), "is used by another fit rule");
        }
        rule_ids.push(rule.rule_id.as_str());
        let attribute = pb::ProfileAttribute::try_from(rule.attribute);
        if matches!(attribute, Ok(pb::ProfileAttribute::Unspecified) | Err(_)) {
            violations.add(
                format!("{path}.attribute"),
                "must be a known profile attribute",
            );
        }
        match FitOperator::try_from(rule.operator) {
            Ok(FitOperator::Unspecified) | Err(_) => {
                violations.add(format!("{path}.operator"), "must be a known operator");
            }
            Ok(FitOperator::In | FitOperator::NotIn | FitOperator::Contains) => {
                if rule.values.iter().all(|value| value.trim().is_empty()) {
                    violations.add(format!("{path}.values"), "must name at least one value");
                }
            }
            Ok(FitOperator::Between) => {
                let bounds: Vec<Option<f64>> = rule
                    .values
                    .iter()
                    .map(|value| value.trim().parse().ok())
                    .collect();
                let open_ended = rule
                    .values
                    .get(1)
                    .is_some_and(|high| high.trim().is_empty());
                match bounds.as_slice() {
                    [Some(low), Some(high)] if low <= high => {}
                    [Some(_), None] if open_ended => {}
                    _ => violations.add(
                        format!("{path}.values"),
                        "must be two numbers, the lower bound first (an empty upper bound is open)",
                    ),
                }
            }
            Ok(FitOperator::IsSet | FitOperator::IsMissing) => {
                if !rule.values.is_empty() {
                    violations.add(format!("{path}.values"), "must be empty for this operator");
                }
            }
            Ok(FitOperator::FreeMail) => {
                if attribute != Ok(pb::ProfileAttribute::Email) {
                    violations.add(
                        format!("{path}.attribute"),
                        "must be PROFILE_ATTRIBUTE_EMAIL for FIT_OPERATOR_FREE_MAIL",
                    );
                }
            }
        }
        if rule.points == 0 && !rule.disqualifier {
            violations.add(
                format!("{path}.points"),
                "must not be 0 unless the rule disqualifies",
            );
        }
    }
}

fn check_grade_bands(violations: &mut FieldViolations, bands: &[pb::GradeBand]) {
    let mut by_grade: Vec<(common::ProfileGrade, i32)> = Vec::new();
    for (index, band) in bands.iter().enumerate() {
        match common::ProfileGrade::try_from(band.grade) {
            Ok(common::ProfileGrade::Unspecified) | Err(_) => {
                violations.add(
                    format!("model.grade_bands[{index}].grade"),
                    "must be a known grade",
                );
            }
            Ok(grade) if by_grade.iter().any(|(seen, _)| *seen == grade) => {
                violations.add(
                    format!("model.grade_bands[{index}].grade"),
                    "has a band already",
                );
            }
            Ok(grade) => by_grade.push((grade, band.min_fit_points)),
        }
    }
    // A better grade (lower enum number) must need more fit points.
    by_grade.sort_by_key(|(grade, _)| *grade as i32);
    if by_grade.windows(2).any(|pair| pair[0].1 <= pair[1].1) {
        violations.add(
            "model.grade_bands",
            "minimums must rise from grade D to grade A",
        );
    }
}

fn check_level_bands(violations: &mut FieldViolations, bands: &[pb::EngagementLevelBand]) {
    let mut by_level: Vec<(u32, u32)> = Vec::new();
    for (index, band) in bands.iter().enumerate() {
        let path = format!("model.engagement_level_bands[{index}].engagement_level");
        if !(1..=4).contains(&band.engagement_level) {
            violations.add(path, "must be 1, 2, 3 or 4");
        } else if by_level
            .iter()
            .any(|(level, _)| *level == band.engagement_level)
        {
            violations.add(path, "has a band already");
        } else {
            by_level.push((band.engagement_level, band.min_engagement_points));
        }
    }
    by_level.sort_unstable();
    if by_level.windows(2).any(|pair| pair[0].1 >= pair[1].1) {
        violations.add(
            "model.engagement_level_bands",
            "minimums must rise from level 1 to level 4",
        );
    }
}
