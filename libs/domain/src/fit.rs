//! Profile fit: rules on the attributes of a lead and its contacts add points, take them
//! away or disqualify, and the fit score maps to a profile grade A-D.

use std::collections::BTreeMap;

use crate::company::is_free_mail_domain;

/// A profile attribute of a lead or of one of its contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attribute {
    /// The lead's company name.
    CompanyName,
    /// The lead's web domain.
    WebDomain,
    /// The lead's industry.
    Industry,
    /// The lead's number of employees.
    EmployeeCount,
    /// The lead's annual revenue band.
    RevenueBand,
    /// The lead's country code.
    CountryCode,
    /// The lead's region.
    Region,
    /// The lead's first source.
    Source,
    /// A contact's buyer role.
    BuyerRole,
    /// A contact's seniority.
    Seniority,
    /// A contact's job title.
    JobTitle,
    /// A contact's department.
    Department,
    /// A contact's email address.
    Email,
    /// A contact's given name.
    FirstName,
    /// A contact's family name.
    LastName,
    /// A contact's phone number.
    Phone,
    /// A contact's postal address.
    PostalAddress,
}

impl Attribute {
    /// Whether the attribute belongs to a contact rather than to the lead.
    pub fn is_contact_attribute(self) -> bool {
        !matches!(
            self,
            Self::CompanyName
                | Self::WebDomain
                | Self::Industry
                | Self::EmployeeCount
                | Self::RevenueBand
                | Self::CountryCode
                | Self::Region
                | Self::Source
        )
    }
}

/// How a fit rule compares an attribute with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitOperator {
    /// Equals one of the values, ignoring case.
    In,
    /// Is set and equals none of the values, ignoring case.
    NotIn,
    /// Contains one of the values, ignoring case.
    Contains,
    /// A number within `[values[0], values[1]]`; an empty upper bound is open.
    Between,
    /// Is set (not empty, not zero).
    IsSet,
    /// Is missing (empty or zero).
    IsMissing,
    /// An email whose domain is a free-mail provider (built in, or one of the values).
    FreeMail,
}

/// One rule of a model's fit score.
#[derive(Debug, Clone, PartialEq)]
pub struct FitRule {
    /// The rule's id within the model; it names the rule in explanations.
    pub rule_id: String,
    /// The attribute looked at.
    pub attribute: Attribute,
    /// How it is compared.
    pub operator: FitOperator,
    /// What it is compared with.
    pub values: Vec<String>,
    /// Points added on a match; negative for penalties.
    pub points: i32,
    /// Whether a match disqualifies the lead.
    pub disqualifier: bool,
}

/// The attribute values of a lead or a contact; a missing or empty value is not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile(BTreeMap<Attribute, String>);

impl Profile {
    /// An empty profile.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `attribute` to `value` (trimmed); an empty value leaves it unset.
    pub fn with(mut self, attribute: Attribute, value: impl Into<String>) -> Self {
        self.set(attribute, value);
        self
    }

    /// Sets `attribute` to `value` (trimmed); an empty value unsets it.
    pub fn set(&mut self, attribute: Attribute, value: impl Into<String>) {
        let value = value.into().trim().to_owned();
        if value.is_empty() {
            self.0.remove(&attribute);
        } else {
            self.0.insert(attribute, value);
        }
    }

    /// The value of `attribute`, if set.
    pub fn get(&self, attribute: Attribute) -> Option<&str> {
        self.0
            .get(&attribute)
            .map(String::as_str)
            .filter(|value| !is_blank(value))
    }
}

/// Empty, or a number that is zero: both mean "not known".
fn is_blank(value: &str) -> bool {
    let value = value.trim();
    value.is_empty() || value.parse::<f64>().is_ok_and(|number| number == 0.0)
}

/// A rule that matched, with what it matched on.
#[derive(Debug, Clone, PartialEq)]
pub struct FitMatch {
    /// The rule's id.
    pub rule_id: String,
    /// The attribute it looked at.
    pub attribute: Attribute,
    /// The value that matched; empty for a missing attribute.
    pub matched_value: String,
    /// The contact whose attribute matched; `None` for lead attributes.
    pub contact_id: Option<String>,
    /// The points the rule added.
    pub points: i32,
    /// Whether the rule disqualifies.
    pub disqualifier: bool,
}

/// The fit of a lead: its points, the rules that matched, and whether it is disqualified.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FitOutcome {
    /// The fit score.
    pub points: i32,
    /// The matched rules, lead rules first, in model order.
    pub matches: Vec<FitMatch>,
    /// Whether a disqualifier matched the lead, or every contact.
    pub disqualified: bool,
}

impl FitRule {
    /// The value this rule matched in `profile`, if it matches; `Some("")` for a match
    /// on a missing attribute.
    pub fn matches(&self, profile: &Profile) -> Option<String> {
        let value = profile.get(self.attribute);
        let lowered = value.map(str::to_lowercase);
        let wanted = || {
            self.values
                .iter()
                .map(|value| value.trim().to_lowercase())
                .filter(|value| !value.is_empty())
        };
        let matched = match self.operator {
            FitOperator::In => lowered.as_ref().is_some_and(|v| wanted().any(|w| *v == w)),
            FitOperator::NotIn => lowered.as_ref().is_some_and(|v| !wanted().any(|w| *v == w)),
            FitOperator::Contains => lowered
                .as_ref()
                .is_some_and(|v| wanted().any(|w| v.contains(&w))),
            FitOperator::Between => value
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|number| self.within_bounds(number)),
            FitOperator::IsSet => value.is_some(),
            FitOperator::IsMissing => value.is_none(),
            FitOperator::FreeMail => lowered.as_ref().is_some_and(|email| {
                let domain = email.rsplit_once('@').map_or("", |(_, domain)| domain);
                if self.values.iter().all(|value| value.trim().is_empty()) {
                    is_free_mail_domain(domain)
                } else {
                    wanted().any(|w| w == domain)
                }
            }),
        };
        matched.then(|| value.unwrap_or_default().to_owned())
    }

    fn within_bounds(&self, number: f64) -> bool {
        let bound = |index: usize| {
            self.values
                .get(index)
                .and_then(|value| value.trim().parse::<f64>().ok())
        };
        let above_low = bound(0).is_none_or(|low| number >= low);
        let below_high = bound(1).is_none_or(|high| number <= high);
        above_low && below_high
    }
}

/// Scores the fit of a lead. Lead rules count once; contact rules count for the contact
/// that fits best (not disqualified before any other, then the most points, then the first
/// in `contacts`). A lead without contacts is judged on an empty contact profile.
pub fn score_fit(rules: &[FitRule], lead: &Profile, contacts: &[(String, Profile)]) -> FitOutcome {
    let mut outcome = FitOutcome::default();
    for rule in rules
        .iter()
        .filter(|rule| !rule.attribute.is_contact_attribute())
    {
        if let Some(matched_value) = rule.matches(lead) {
            outcome.add(rule, matched_value, None);
        }
    }
    let contact_rules: Vec<&FitRule> = rules
        .iter()
        .filter(|rule| rule.attribute.is_contact_attribute())
        .collect();
    if contact_rules.is_empty() {
        return outcome;
    }
    let judge = |contact_id: Option<&String>, profile: &Profile| {
        let mut contact = FitOutcome::default();
        for rule in &contact_rules {
            if let Some(matched_value) = rule.matches(profile) {
                contact.add(rule, matched_value, contact_id.cloned());
            }
        }
        contact
    };
    let best = if contacts.is_empty() {
        judge(None, &Profile::new())
    } else {
        contacts
            .iter()
            .map(|(contact_id, profile)| judge(Some(contact_id), profile))
            .reduce(|best, next| {
                let rank = |o: &FitOutcome| (!o.disqualified, o.points);
                if rank(&next) > rank(&best) {
                    next
                } else {
                    best
                }
            })
            .unwrap_or_default()
    };
    outcome.points = outcome.points.saturating_add(best.points);
    outcome.disqualified |= best.disqualified;
    outcome.matches.extend(best.matches);
    outcome
}

impl FitOutcome {
    fn add(&mut self, rule: &FitRule, matched_value: String, contact_id: Option<String>) {
        self.points = self.points.saturating_add(rule.points);
        self.disqualified |= rule.disqualifier;
        self.matches.push(FitMatch {
            rule_id: rule.rule_id.clone(),
            attribute: rule.attribute,
            matched_value,
            contact_id,
            points: rule.points,
            disqualifier: rule.disqualifier,
        });
    }
}

/// A profile grade, A (best fit) to D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileGrade {
    /// The best fit.
    A,
    /// A good fit.
    B,
    /// A weak fit.
    C,
    /// No fit.
    D,
}

impl ProfileGrade {
    /// Every grade, best first.
    pub const ALL: [Self; 4] = [Self::A, Self::B, Self::C, Self::D];

    /// The letter, e.g. `B`.
    pub fn letter(self) -> char {
        match self {
            Self::A => 'A',
            Self::B => 'B',
            Self::C => 'C',
            Self::D => 'D',
        }
    }

    /// Whether this grade is `worst` or better.
    pub fn at_least(self, worst: Self) -> bool {
        self <= worst
    }
}

/// The lowest fit score of grades A, B and C; anything below C's is D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradeBands {
    /// The lowest fit score of grade A.
    pub a: i32,
    /// The lowest fit score of grade B.
    pub b: i32,
    /// The lowest fit score of grade C.
    pub c: i32,
}

impl Default for GradeBands {
    /// A from 60, B from 30, C from 0, D below.
    fn default() -> Self {
        Self { a: 60, b: 30, c: 0 }
    }
}

impl GradeBands {
    /// The grade of a fit score.
    pub fn grade(&self, fit_points: i32) -> ProfileGrade {
        if fit_points >= self.a {
            ProfileGrade::A
        } else if fit_points >= self.b {
            ProfileGrade::B
        } else if fit_points >= self.c {
            ProfileGrade::C
        } else {
            ProfileGrade::D
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rule(
        id: &str,
        attribute: Attribute,
        operator: FitOperator,
        values: &[&str],
        points: i32,
    ) -> FitRule {
        FitRule {
            rule_id: id.to_owned(),
            attribute,
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            points,
            disqualifier: false,
        }
    }

    fn target_rules() -> Vec<FitRule> {
        vec![
            rule(
                "core-industry",
                Attribute::Industry,
                FitOperator::In,
                &["Manufacturing", "logistics"],
                30,
            ),
            rule(
                "mid-size",
                Attribute::EmployeeCount,
                FitOperator::Between,
                &["50", "999"],
                20,
            ),
            rule(
                "head",
                Attribute::Seniority,
                FitOperator::In,
                &["head-of-department"],
                20,
            ),
            rule(
                "free-mail",
                Attribute::Email,
                FitOperator::FreeMail,
                &[],
                -20,
            ),
            FitRule {
                disqualifier: true,
                ..rule(
                    "student",
                    Attribute::JobTitle,
                    FitOperator::Contains,
                    &["student"],
                    0,
                )
            },
        ]
    }

    #[test]
    fn a_head_of_department_in_the_core_industry_outranks_a_clerk_elsewhere() {
        let rules = target_rules();
        let target = Profile::new()
            .with(Attribute::Industry, "manufacturing")
            .with(Attribute::EmployeeCount, "120");
        let head = Profile::new()
            .with(Attribute::Seniority, "Head-of-Department")
            .with(Attribute::Email, "anna@acme.example");
        let other = Profile::new().with(Attribute::Industry, "retail");
        let clerk = Profile::new()
            .with(Attribute::Seniority, "clerk")
            .with(Attribute::Email, "bob@gmail.com");
        let good = score_fit(&rules, &target, &[("anna".into(), head)]);
        let weak = score_fit(&rules, &other, &[("bob".into(), clerk)]);
        assert_eq!(good.points, 70);
        assert_eq!(weak.points, -20);
        assert_eq!(GradeBands::default().grade(good.points), ProfileGrade::A);
        assert_eq!(GradeBands::default().grade(weak.points), ProfileGrade::D);
        let ids: Vec<_> = good.matches.iter().map(|m| m.rule_id.as_str()).collect();
        assert_eq!(ids, ["core-industry", "mid-size", "head"]);
        assert_eq!(good.matches[2].contact_id.as_deref(), Some("anna"));
        assert_eq!(good.matches[0].matched_value, "manufacturing");
    }

    #[test]
    fn contact_rules_count_for_the_best_fitting_contact_only() {
        let rules = target_rules();
        let lead = Profile::new();
        let contacts = vec![
            (
                "clerk".to_owned(),
                Profile::new().with(Attribute::Email, "x@gmail.com"),
            ),
            (
                "head".to_owned(),
                Profile::new().with(Attribute::Seniority, "head-of-department"),
            ),
            (
                "student".to_owned(),
                Profile::new().with(Attribute::JobTitle, "Working Student"),
            ),
        ];
        let outcome = score_fit(&rules, &lead, &contacts);
        assert_eq!(outcome.points, 20);
        assert!(
            !outcome.disqualified,
            "one disqualified contact does not disqualify the lead"
        );
        let only_student = score_fit(&rules, &lead, &contacts[2..]);
        assert!(only_student.disqualified);
    }

    #[test]
    fn a_disqualifier_on_a_lead_attribute_disqualifies() {
        let rules = vec![FitRule {
            disqualifier: true,
            ..rule(
                "competitor",
                Attribute::WebDomain,
                FitOperator::In,
                &["rival.example"],
                0,
            )
        }];
        let lead = Profile::new().with(Attribute::WebDomain, "rival.example");
        assert!(score_fit(&rules, &lead, &[]).disqualified);
        assert!(!score_fit(&rules, &Profile::new(), &[]).disqualified);
    }

    #[test]
    fn operators_follow_their_definitions() {
        let p = Profile::new()
            .with(Attribute::Industry, " Retail ")
            .with(Attribute::EmployeeCount, "5000")
            .with(Attribute::Region, "0");
        let check = |operator, attribute, values: &[&str]| {
            rule("r", attribute, operator, values, 1)
                .matches(&p)
                .is_some()
        };
        assert!(check(
            FitOperator::NotIn,
            Attribute::Industry,
            &["manufacturing"]
        ));
        assert!(
            !check(FitOperator::NotIn, Attribute::CountryCode, &["DE"]),
            "NOT_IN needs the attribute set"
        );
        assert!(
            check(
                FitOperator::Between,
                Attribute::EmployeeCount,
                &["1000", ""]
            ),
            "an empty upper bound is open"
        );
        assert!(!check(
            FitOperator::Between,
            Attribute::EmployeeCount,
            &["10", "999"]
        ));
        assert!(
            check(FitOperator::IsMissing, Attribute::Region, &[]),
            "zero counts as missing"
        );
        assert!(check(FitOperator::IsSet, Attribute::Industry, &[]));
        assert!(check(FitOperator::Contains, Attribute::Industry, &["tai"]));
        let own_list = rule(
            "r",
            Attribute::Email,
            FitOperator::FreeMail,
            &["corp-mail.example"],
            -5,
        );
        assert!(
            own_list
                .matches(&Profile::new().with(Attribute::Email, "a@Corp-Mail.example"))
                .is_some()
        );
        assert!(
            own_list
                .matches(&Profile::new().with(Attribute::Email, "a@gmail.com"))
                .is_none()
        );
    }

    proptest! {
        #[test]
        fn grades_never_improve_as_fit_falls(a in -1000i32..1000, b in -1000i32..1000) {
            let bands = GradeBands::default();
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(bands.grade(high) <= bands.grade(low));
        }

        #[test]
        fn the_fit_score_is_the_sum_of_the_matches(
            industry in "[a-c]{1,2}",
            employees in 0u32..2000,
            seniority in "[a-c]{1,2}",
        ) {
            let rules = vec![
                rule("i", Attribute::Industry, FitOperator::In, &["a", "b"], 30),
                rule("e", Attribute::EmployeeCount, FitOperator::Between, &["50", "500"], 20),
                rule("s", Attribute::Seniority, FitOperator::NotIn, &["c"], 15),
                rule("m", Attribute::Region, FitOperator::IsMissing, &[], -5),
            ];
            let lead = Profile::new().with(Attribute::Industry, industry).with(Attribute::EmployeeCount, employees.to_string());
            let contacts = vec![("x".to_owned(), Profile::new().with(Attribute::Seniority, seniority))];
            let outcome = score_fit(&rules, &lead, &contacts);
            prop_assert_eq!(outcome.points, outcome.matches.iter().map(|m| m.points).sum::<i32>());
            prop_assert!(!outcome.disqualified);
        }
    }
}
