//! Routing rule sets: the ordered rules a lead is matched against, checked when published
//! or simulated, and compiled into the domain's conditions.

use leadflow_domain::routing::{LeadTraits, RuleConditions, first_match};
use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::{common::v1 as common, domain, routing::v1 as pb};
use uuid::Uuid;

/// The most rules one set may hold.
const MAX_RULES: usize = 500;

/// One compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    /// The rule's id; `None` in a proposed set that was never published.
    pub rule_id: Option<Uuid>,
    /// The unique name.
    pub name: String,
    /// What must hold.
    pub conditions: RuleConditions,
    /// Where a matching lead goes.
    pub team_id: Uuid,
}

/// A rule set ready to route with.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRuleSet {
    /// The version; 0 for a proposal.
    pub version: u32,
    /// The rules in order.
    pub rules: Vec<CompiledRule>,
    /// The team that gets every lead no rule matches.
    pub default_team_id: Uuid,
}

/// Where the rules send a lead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleMatch<'a> {
    /// The matching rule; `None` for the default team.
    pub rule: Option<&'a CompiledRule>,
    /// The team.
    pub team_id: Uuid,
}

impl CompiledRuleSet {
    /// Checks `rule_set` under `path` and compiles it; rule ids are kept where present.
    pub fn parse(path: &str, rule_set: Option<&pb::RuleSet>) -> Result<Self, FieldViolations> {
        let Some(rule_set) = rule_set else {
            return Err(FieldViolations::single(path, "is required"));
        };
        let mut violations = FieldViolations::new();
        let default_team_id = if rule_set.default_team_id.is_empty() {
            violations.add(format!("{path}.default_team_id"), "is required");
            None
        } else {
            validate::uuid(
                &mut violations,
                &format!("{path}.default_team_id"),
                &rule_set.default_team_id,
            )
        };
        if rule_set.rules.len() > MAX_RULES {
            violations.add(
                format!("{path}.rules"),
                format!(
                    "holds {} rules; at most {MAX_RULES} are allowed",
                    rule_set.rules.len()
                ),
            );
        }
        validate::optional_text(
            &mut violations,
            &format!("{path}.description"),
            &rule_set.description,
            2_000,
        );
        validate::optional_text(
            &mut violations,
            &format!("{path}.published_by"),
            &rule_set.published_by,
            200,
        );
        let mut rules: Vec<CompiledRule> = Vec::with_capacity(rule_set.rules.len());
        for (index, rule) in rule_set.rules.iter().enumerate() {
            let path = format!("{path}.rules[{index}]");
            if let Some(compiled) = parse_rule(&mut violations, &path, rule) {
                if rules
                    .iter()
                    .any(|other| other.name.eq_ignore_ascii_case(&compiled.name))
                {
                    violations.add(format!("{path}.name"), "repeats the name of another rule");
                }
                rules.push(compiled);
            }
        }
        violations.into_result()?;
        Ok(Self {
            version: rule_set.version,
            rules,
            default_team_id: default_team_id.expect("no violations means a default team"),
        })
    }

    /// Every team the set refers to.
    pub fn referenced_teams(&self) -> Vec<Uuid> {
        let mut teams = vec![self.default_team_id];
        for rule in &self.rules {
            if !teams.contains(&rule.team_id) {
                teams.push(rule.team_id);
            }
        }
        teams
    }

    /// Where the first matching rule, or the default team, sends the lead.
    pub fn route(&self, lead: &LeadTraits<'_>) -> RuleMatch<'_> {
        match first_match(self.rules.iter().map(|rule| &rule.conditions), lead) {
            Some(index) => RuleMatch {
                rule: Some(&self.rules[index]),
                team_id: self.rules[index].team_id,
            },
            None => RuleMatch {
                rule: None,
                team_id: self.default_team_id,
            },
        }
    }
}

fn parse_rule(
    violations: &mut FieldViolations,
    path: &str,
    rule: &pb::RoutingRule,
) -> Option<CompiledRule> {
    let before = violations.iter().count();
    let name = validate::required_text(violations, &format!("{path}.name"), &rule.name, 200);
    let team_id = if rule.team_id.is_empty() {
        violations.add(format!("{path}.team_id"), "is required");
        None
    } else {
        validate::uuid(violations, &format!("{path}.team_id"), &rule.team_id)
    };
    let rule_id = if rule.rule_id.is_empty() {
        None
    } else {
        validate::uuid(violations, &format!("{path}.rule_id"), &rule.rule_id)
    };
    for (index, code) in rule.country_codes.iter().enumerate() {
        if code.len() != 2 || !code.chars().all(|c| c.is_ascii_uppercase()) {
            violations.add(
                format!("{path}.country_codes[{index}]"),
                "must be an ISO 3166-1 alpha-2 country code in upper case, such as \"DE\"",
            );
        }
    }
    let texts = |violations: &mut FieldViolations, field: &str, values: &[String]| {
        values
            .iter()
            .enumerate()
            .map(|(index, value)| {
                validate::required_text(violations, &format!("{path}.{field}[{index}]"), value, 200)
            })
            .collect::<Vec<_>>()
    };
    let regions = texts(violations, "regions", &rule.regions);
    let industries = texts(violations, "industries", &rule.industries);
    let sources = texts(violations, "sources", &rule.sources);
    let products = rule
        .products
        .iter()
        .enumerate()
        .map(|(index, product)| {
            validate::identifier(violations, &format!("{path}.products[{index}]"), product)
        })
        .collect();
    let company_size = rule.company_size.as_ref().and_then(|size| {
        if size.max_employees != 0 && size.max_employees < size.min_employees {
            violations.add(
                format!("{path}.company_size.max_employees"),
                "must not be below min_employees",
            );
        }
        (size.min_employees != 0 || size.max_employees != 0)
            .then_some((size.min_employees, size.max_employees))
    });
    let mut classes = Vec::with_capacity(rule.lead_classes.len());
    for (index, class) in rule.lead_classes.iter().enumerate() {
        match domain::lead_class(*class) {
            Some(class) => classes.push(class),
            None => violations.add(format!("{path}.lead_classes[{index}]"), "must be a class"),
        }
    }
    let mut cells = Vec::with_capacity(rule.cells.len());
    for (index, cell) in rule.cells.iter().enumerate() {
        match domain::cell(cell) {
            Some(cell) => cells.push(cell),
            None => violations.add(
                format!("{path}.cells[{index}]"),
                "must have a grade A-D and an engagement level of 1-4",
            ),
        }
    }
    if violations.iter().count() > before {
        return None;
    }
    Some(CompiledRule {
        rule_id,
        name,
        conditions: RuleConditions {
            country_codes: rule.country_codes.clone(),
            regions,
            industries,
            company_size,
            products,
            sources,
            classes,
            cells,
        },
        team_id: team_id?,
    })
}

/// What the rules see of a lead.
pub fn traits<'a>(
    profile: &'a common::LeadProfile,
    product: &'a str,
    lead_class: common::LeadClass,
    cell: &common::HeatMapCell,
) -> LeadTraits<'a> {
    LeadTraits {
        country_code: &profile.country_code,
        region: &profile.region,
        industry: &profile.industry,
        employee_count: profile.employee_count,
        product,
        source: &profile.source,
        class: domain::lead_class(lead_class as i32),
        cell: domain::cell(cell),
    }
}
