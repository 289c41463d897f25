//! The scoring engine: brings the ledger of a lead for a product up to date with its model
//! (fit-rule differences, points for activities not scored yet), re-judges its class and its
//! hand-off to sales, records every change and says which events to publish. Planning is
//! pure, so a dry run plans without applying; every path ends in the same snapshot function,
//! so a rebuild from the ledger gives exactly what the events gave.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use leadflow_domain::{
    ActivityKey, Attribute, BuyingStage, ClassEvidence, ClassOrigin, ContactStanding, DecayingSum,
    FitOutcome, HandOffState, HandOffStep, LeadClass, LifecycleStage, Profile, SalesReadyReason,
    ScoredActivity, Standing, infer_class, next_steps, score_fit,
};
use leadflow_proto::{
    common::v1 as common,
    events::v1::{self as events, event_envelope::Payload},
    scoring::v1 as pb,
};
use leadflow_storage::StorageError;
use uuid::Uuid;

use crate::{
    hot::{ScoreSnapshot, class_name, class_value, stage_name, stage_of, stage_value},
    records::{
        ActivityFact, ClassChangeRow, ContactFacts, HandOffRow, LeadFacts, LeadProduct, LedgerRow,
        ScoringUnit, StageChangeRow,
    },
    rules::{ScoringRules, lead_class, proto_class},
};

/// The producer name of scoring's events, and the actor of its automatic changes.
pub const PRODUCER: &str = "scoring";

/// What caused a refresh.
#[derive(Debug, Clone)]
pub struct Cause {
    /// The kind of score change it is.
    pub kind: events::ScoreChangeCause,
    /// The event that caused it, if any.
    pub event_id: Option<Uuid>,
    /// Activities that arrived with the cause: they are new engagement and new evidence.
    pub fresh_activities: Vec<Uuid>,
    /// When.
    pub now: DateTime<Utc>,
}

impl Cause {
    /// A cause of `kind` at `now`, without an event.
    pub fn new(kind: events::ScoreChangeCause, now: DateTime<Utc>) -> Self {
        Self {
            kind,
            event_id: None,
            fresh_activities: Vec::new(),
            now,
        }
    }
}

/// Everything a lead's score for one product is computed from.
#[derive(Debug, Clone)]
pub struct LeadInputs {
    /// The lead.
    pub lead: LeadFacts,
    /// Its contacts.
    pub contacts: Vec<ContactFacts>,
    /// Its standing for the product.
    pub standing: LeadProduct,
    /// Its ledger for the product under the model planned with.
    pub ledger: Vec<LedgerRow>,
    /// Its activities that count for the product.
    pub activities: Vec<ActivityFact>,
    /// Its BANT qualification for the product.
    pub bant: Option<pb::Bant>,
    /// Whether scoring sees the lead for the product for the first time.
    pub first_seen: bool,
}

/// A standing for a lead newly seen for a product: stage new, unclassified.
pub fn new_standing(lead_id: Uuid, product: &str, now: DateTime<Utc>) -> LeadProduct {
    LeadProduct {
        lead_id,
        product: product.to_owned(),
        stage: stage_name(LifecycleStage::New).to_owned(),
        lead_class: class_name(None).to_owned(),
        class_since: None,
        manual_since: None,
        handed_over: false,
        awaiting_new_engagement: false,
        contact_requested: false,
        create_time: now,
        update_time: now,
    }
}

/// Reads what the lead's score for `product` under `model_id` is computed from.
pub async fn load_inputs(
    unit: &mut dyn ScoringUnit,
    lead: LeadFacts,
    product: &str,
    model_id: Uuid,
    now: DateTime<Utc>,
) -> Result<LeadInputs, StorageError> {
    let lead_id = lead.lead_id;
    let known = unit.lead_product(lead_id, product).await?;
    let first_seen = known.is_none();
    let standing = known.unwrap_or_else(|| new_standing(lead_id, product, now));
    let bant = unit.bant(lead_id, product).await?;
    Ok(LeadInputs {
        contacts: unit.contacts_of_lead(lead_id).await?,
        ledger: unit.ledger(lead_id, product, model_id).await?,
        activities: unit.activities_of_lead(lead_id, product).await?,
        standing,
        bant,
        lead,
        first_seen,
    })
}

/// Fit and engagement summed from ledger entries.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// The fit score.
    pub fit_points: i32,
    /// The engagement, decaying.
    pub engagement: DecayingSum,
}

impl Evaluation {
    /// The total score at `now`.
    pub fn total_at(&self, now: DateTime<Utc>) -> f64 {
        f64::from(self.fit_points) + self.engagement.value_at(now)
    }
}

/// Sums `ledger` (in ledger order) under `rules`, counting only what happened up to `until`.
pub fn evaluate(
    rules: &ScoringRules,
    ledger: &[LedgerRow],
    until: Option<DateTime<Utc>>,
) -> Evaluation {
    let mut evaluation = Evaluation::default();
    for entry in ledger
        .iter()
        .filter(|entry| until.is_none_or(|until| entry.occurred_at <= until))
    {
        if entry.is_fit() {
            evaluation.fit_points = evaluation.fit_points.saturating_add(entry.points);
        } else {
            evaluation.engagement.add(
                f64::from(entry.points),
                entry.occurred_at,
                rules.half_life(&entry.activity_key),
            );
        }
    }
    evaluation
}

/// The fit rules' view of a lead's profile.
pub fn lead_profile(profile: &common::LeadProfile) -> Profile {
    let employees = if profile.employee_count == 0 {
        String::new()
    } else {
        profile.employee_count.to_string()
    };
    Profile::new()
        .with(Attribute::CompanyName, &profile.company_name)
        .with(Attribute::WebDomain, &profile.web_domain)
        .with(Attribute::Industry, &profile.industry)
        .with(Attribute::EmployeeCount, employees)
        .with(Attribute::RevenueBand, &profile.revenue_band)
        .with(Attribute::CountryCode, &profile.country_code)
        .with(Attribute::Region, &profile.region)
        .with(Attribute::Source, &profile.source)
}

/// The fit rules' view of a contact's profile.
pub fn contact_profile(profile: &common::ContactProfile) -> Profile {
    let address = profile
        .address
        .as_ref()
        .map(|address| {
            [
                address.street.as_str(),
                address.postal_code.as_str(),
                address.city.as_str(),
                address.country_code.as_str(),
            ]
            .iter()
            .filter(|part| !part.trim().is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
        })
        .unwrap_or_default();
    Profile::new()
        .with(Attribute::BuyerRole, &profile.buyer_role)
        .with(Attribute::Seniority, &profile.seniority)
        .with(Attribute::JobTitle, &profile.job_title)
        .with(Attribute::Department, &profile.department)
        .with(Attribute::Email, &profile.email)
        .with(Attribute::FirstName, &profile.first_name)
        .with(Attribute::LastName, &profile.last_name)
        .with(Attribute::Phone, &profile.phone)
        .with(Attribute::PostalAddress, address)
}

/// The fit of the lead under `rules`.
pub fn fit_of(rules: &ScoringRules, inputs: &LeadInputs) -> FitOutcome {
    let contacts: Vec<(String, Profile)> = inputs
        .contacts
        .iter()
        .map(|contact| {
            (
                contact.contact_id.to_string(),
                contact_profile(&contact.profile),
            )
        })
        .collect();
    score_fit(
        &rules.fit_rules,
        &lead_profile(&inputs.lead.profile),
        &contacts,
    )
}

/// A class change a plan makes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedClassChange {
    /// The class before.
    pub from: Option<LeadClass>,
    /// The class after.
    pub to: LeadClass,
    /// The origin, as the API names it.
    pub origin: pb::ClassChangeOrigin,
    /// Why.
    pub reason: String,
}

/// What a refresh would do to one lead and product.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Ledger entries to append.
    pub new_entries: Vec<LedgerRow>,
    /// The sums before.
    pub before: Evaluation,
    /// The sums after.
    pub after: Evaluation,
    /// The class change, if any.
    pub class_change: Option<PlannedClassChange>,
    /// Stage changes and the hand-off, in order.
    pub steps: Vec<HandOffStep>,
    /// The standing after.
    pub standing: LeadProduct,
}

const CONTACT_REQUESTED: &str = "ACTIVITY_TYPE_CONTACT_REQUESTED";
const QUALIFICATION_CALL: &str = "ACTIVITY_TYPE_QUALIFICATION_CALL";

fn buying_stage(name: &str) -> Option<BuyingStage> {
    match common::BuyingStage::from_str_name(name)? {
        common::BuyingStage::ProblemAwareness => Some(BuyingStage::ProblemAwareness),
        common::BuyingStage::SolutionSearch => Some(BuyingStage::SolutionSearch),
        common::BuyingStage::RequestingOffers => Some(BuyingStage::RequestingOffers),
        common::BuyingStage::ChoosingOffer => Some(BuyingStage::ChoosingOffer),
        common::BuyingStage::Unspecified => None,
    }
}

fn class_origin(origin: ClassOrigin) -> pb::ClassChangeOrigin {
    match origin {
        ClassOrigin::ContentStage => pb::ClassChangeOrigin::ContentStage,
        ClassOrigin::Disqualifier => pb::ClassChangeOrigin::Disqualifier,
        ClassOrigin::Bant => pb::ClassChangeOrigin::Bant,
        ClassOrigin::ContactRequest => pb::ClassChangeOrigin::ContactRequest,
        ClassOrigin::Manual => pb::ClassChangeOrigin::Manual,
    }
}

/// Whether all four BANT criteria are met.
pub fn bant_complete(bant: Option<&pb::Bant>) -> bool {
    bant.is_some_and(|bant| {
        [&bant.budget, &bant.authority, &bant.need, &bant.time]
            .iter()
            .all(|criterion| criterion.as_ref().is_some_and(|c| c.met))
    })
}

/// Plans the refresh of one lead and product under `rules`.
pub fn plan(inputs: &LeadInputs, rules: &ScoringRules, cause: &Cause) -> Plan {
    let now = cause.now;
    let lead_id = inputs.lead.lead_id;
    let product = &inputs.standing.product;
    let entry = |rule: String, points: i32| LedgerRow {
        entry_id: Uuid::now_v7(),
        lead_id,
        product: product.clone(),
        model_id: rules.model_id,
        contact_id: None,
        event_id: cause.event_id,
        activity_id: None,
        activity_key: String::new(),
        content_id: String::new(),
        rule,
        points,
        capped: false,
        cause: cause.kind.as_str_name().to_owned(),
        occurred_at: now,
        create_time: now,
    };
    let mut new_entries = Vec::new();

    // Fit: one entry per rule whose points differ from what the ledger holds for it.
    let fit = fit_of(rules, inputs);
    let mut held: BTreeMap<&str, i32> = BTreeMap::new();
    for row in inputs.ledger.iter().filter(|row| row.is_fit()) {
        *held.entry(row.rule.as_str()).or_default() += row.points;
    }
    let mut wanted: BTreeMap<String, (i32, Option<Uuid>)> = BTreeMap::new();
    for matched in &fit.matches {
        let slot = wanted
            .entry(format!("fit:{}", matched.rule_id))
            .or_insert((0, None));
        slot.0 += matched.points;
        slot.1 = matched
            .contact_id
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok());
    }
    let rule_names: BTreeSet<String> = held
        .keys()
        .map(|rule| (*rule).to_owned())
        .chain(wanted.keys().cloned())
        .collect();
    for rule in rule_names {
        let (points, contact_id) = wanted.get(&rule).copied().unwrap_or((0, None));
        let difference = points - held.get(rule.as_str()).copied().unwrap_or(0);
        if difference != 0 {
            new_entries.push(LedgerRow {
                contact_id,
                ..entry(rule, difference)
            });
        }
    }
    let fit_changed = !new_entries.is_empty();

    // Engagement: points for every activity this model has not scored yet, in the order
    // the activities happened, each cap counting what came before.
    let scored: BTreeSet<Uuid> = inputs
        .ledger
        .iter()
        .filter_map(|row| row.activity_id)
        .collect();
    let mut earlier: BTreeMap<String, Vec<(DateTime<Utc>, u32)>> = BTreeMap::new();
    for row in inputs.ledger.iter().filter(|row| !row.is_fit()) {
        earlier
            .entry(row.activity_key.clone())
            .or_default()
            .push((row.occurred_at, u32::try_from(row.points).unwrap_or(0)));
    }
    let mut engaged_anew = false;
    for activity in inputs
        .activities
        .iter()
        .filter(|activity| !scored.contains(&activity.activity_id))
    {
        let scored_activity = ScoredActivity {
            key: ActivityKey::new(activity.activity_key.clone()),
            content_id: Some(activity.content_id.clone()).filter(|id| !id.is_empty()),
            occurred_at: activity.occurred_at,
        };
        let history = earlier.entry(activity.activity_key.clone()).or_default();
        let Some(award) = rules.engagement.award(&scored_activity, history) else {
            continue;
        };
        history.push((activity.occurred_at, award.points));
        engaged_anew |= award.points > 0 && cause.fresh_activities.contains(&activity.activity_id);
        new_entries.push(LedgerRow {
            contact_id: activity.contact_id,
            event_id: Some(activity.event_id),
            activity_id: Some(activity.activity_id),
            activity_key: activity.activity_key.clone(),
            content_id: activity.content_id.clone(),
            capped: award.capped,
            occurred_at: activity.occurred_at,
            ..entry(award.rule, i32::try_from(award.points).unwrap_or(i32::MAX))
        });
    }
    let before = evaluate(rules, &inputs.ledger, None);
    let mut ledger_after = inputs.ledger.clone();
    ledger_after.extend(new_entries.iter().cloned());
    ledger_after.sort_by_key(|entry| (entry.occurred_at, entry.entry_id));
    let after = evaluate(rules, &ledger_after, None);

    let mut standing = inputs.standing.clone();
    standing.update_time = now;
    if engaged_anew {
        standing.awaiting_new_engagement = false;
    }
    let fresh_request = inputs.activities.iter().any(|activity| {
        activity.activity_key == CONTACT_REQUESTED
            && cause.fresh_activities.contains(&activity.activity_id)
    });
    standing.contact_requested |= fresh_request;

    // Class: the evidence since the manual class in force (all of it without one), within
    // the model's evidence window.
    let current_class = lead_class(class_value(&standing.lead_class));
    let window_start = rules
        .evidence_window
        .and_then(|window| chrono::TimeDelta::from_std(window).ok())
        .map(|window| now - window);
    let since = match (standing.manual_since, window_start) {
        (Some(manual), Some(window)) => Some(manual.max(window)),
        (manual, window) => manual.or(window),
    };
    let recent: Vec<&ActivityFact> = inputs
        .activities
        .iter()
        .filter(|activity| since.is_none_or(|since| activity.occurred_at > since))
        .collect();
    let bant = inputs.bant.as_ref().filter(|bant| {
        let updated = bant
            .update_time
            .as_ref()
            .and_then(leadflow_platform::time::from_timestamp);
        standing
            .manual_since
            .is_none_or(|manual| updated.is_some_and(|updated| updated > manual))
    });
    let evidence = ClassEvidence {
        disqualified: fit.disqualified && (standing.manual_since.is_none() || fit_changed),
        need_missing: bant
            .and_then(|bant| bant.need.as_ref())
            .is_some_and(|need| !need.met && !need.note.trim().is_empty()),
        bant_complete: bant_complete(bant),
        contact_requested: recent
            .iter()
            .any(|activity| activity.activity_key == CONTACT_REQUESTED),
        qualification_call: recent
            .iter()
            .any(|activity| activity.activity_key == QUALIFICATION_CALL),
        furthest_content_stage: recent
            .iter()
            .filter_map(|activity| buying_stage(&activity.buying_stage))
            .max(),
    };
    let mut class_change = None;
    if let Some((class, origin, reason)) = infer_class(&evidence)
        && Some(class) != current_class
    {
        let origin = if cause.kind == events::ScoreChangeCause::ModelActivated {
            pb::ClassChangeOrigin::ModelActivation
        } else {
            class_origin(origin)
        };
        class_change = Some(PlannedClassChange {
            from: current_class,
            to: class,
            origin,
            reason: reason.to_owned(),
        });
        standing.lead_class = class_name(Some(class)).to_owned();
        standing.class_since = Some(now);
        standing.manual_since = None;
    }

    // The hand-off.
    let contacts: Vec<ContactStanding> = inputs
        .contacts
        .iter()
        .map(|contact| ContactStanding {
            profile: contact_profile(&contact.profile),
            opted_in: contact.opted_in,
        })
        .collect();
    let lead = lead_profile(&inputs.lead.profile);
    let judged = Standing {
        total: after.total_at(now),
        threshold: rules.threshold,
        grade: rules.grade_bands.grade(after.fit_points),
        class: lead_class(class_value(&standing.lead_class)),
        disqualified: fit.disqualified,
        contact_requested: standing.contact_requested,
        lead: &lead,
        contacts: &contacts,
    };
    let state = HandOffState {
        stage: stage_of(&standing.stage),
        handed_over: standing.handed_over,
        awaiting_new_engagement: standing.awaiting_new_engagement,
    };
    let steps = next_steps(&rules.mql, &rules.sales_ready, &judged, state);
    for step in &steps {
        match step {
            HandOffStep::Stage(stage, _) => enter_stage(&mut standing, *stage),
            HandOffStep::SalesReady(_) => {
                standing.handed_over = true;
                standing.contact_requested = false;
            }
        }
    }
    Plan {
        new_entries,
        before,
        after,
        class_change,
        steps,
        standing,
    }
}

/// Moves the standing to `stage`, with what the stage means for the hand-off.
fn enter_stage(standing: &mut LeadProduct, stage: LifecycleStage) {
    standing.stage = stage_name(stage).to_owned();
    match stage {
        LifecycleStage::Recycled => {
            standing.handed_over = false;
            standing.awaiting_new_engagement = true;
            standing.contact_requested = false;
        }
        LifecycleStage::Disqualified | LifecycleStage::New => standing.handed_over = false,
        _ => {}
    }
}

/// The snapshot of a standing scored with `rules`.
pub fn snapshot(
    rules: &ScoringRules,
    standing: &LeadProduct,
    evaluation: &Evaluation,
    bant: Option<&pb::Bant>,
) -> ScoreSnapshot {
    let class = lead_class(class_value(&standing.lead_class));
    let stage = stage_of(&standing.stage);
    let mut snapshot = ScoreSnapshot {
        lead_id: standing.lead_id,
        product: standing.product.clone(),
        model_id: rules.model_id,
        model_version: rules.version,
        fit_points: evaluation.fit_points,
        grade: rules.grade_bands.grade(evaluation.fit_points).letter(),
        engagement: Vec::new(),
        level_minimums: rules.level_bands.minimums,
        lead_class: proto_class(class) as i32,
        class_since_ms: standing.class_since.map(|since| since.timestamp_millis()),
        expected_class_ms: class
            .and_then(|class| rules.expected_class_durations.get(&class))
            .map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        stage: stage_value(&standing.stage),
        sales_ready: standing.handed_over
            && matches!(
                stage,
                LifecycleStage::New | LifecycleStage::Mql | LifecycleStage::Recycled
            ),
        bant_complete: bant_complete(bant),
    };
    snapshot.set_engagement(&evaluation.engagement);
    snapshot
}

/// What one engagement entry is worth at `at`, after decay.
pub fn entry_value_at(rules: &ScoringRules, entry: &LedgerRow, at: DateTime<Utc>) -> f64 {
    let mut sum = DecayingSum::new();
    sum.add(
        f64::from(entry.points),
        entry.occurred_at,
        rules.half_life(&entry.activity_key),
    );
    sum.value_at(at)
}

/// How much each contact's activities are worth at `now`, largest first.
pub fn contact_shares(
    rules: &ScoringRules,
    ledger: &[LedgerRow],
    now: DateTime<Utc>,
) -> Vec<(Uuid, f64, u32)> {
    let mut by_contact: BTreeMap<Uuid, (f64, u32)> = BTreeMap::new();
    for entry in ledger
        .iter()
        .filter(|entry| !entry.is_fit() && entry.occurred_at <= now)
    {
        let Some(contact_id) = entry.contact_id else {
            continue;
        };
        let slot = by_contact.entry(contact_id).or_default();
        slot.0 += entry_value_at(rules, entry, now);
        slot.1 += 1;
    }
    let mut shares: Vec<(Uuid, f64, u32)> = by_contact
        .into_iter()
        .map(|(contact, (points, count))| (contact, points, count))
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    shares
}

/// What applying a plan produced.
#[derive(Debug)]
pub struct Applied {
    /// The events to publish, in order.
    pub events: Vec<Payload>,
    /// The new hot snapshot.
    pub snapshot: ScoreSnapshot,
}

/// Writes what `plan` decided and says what to publish.
pub async fn apply(
    unit: &mut dyn ScoringUnit,
    inputs: &LeadInputs,
    plan: Plan,
    rules: &ScoringRules,
    cause: &Cause,
) -> Result<Applied, StorageError> {
    let now = cause.now;
    let lead_id = inputs.lead.lead_id;
    let product = inputs.standing.product.clone();
    let mut published = Vec::new();
    if inputs.first_seen {
        published.push(start_lifecycle(unit, &inputs.standing, cause).await?);
    }
    unit.append_ledger(&plan.new_entries).await?;
    if let Some(change) = &plan.class_change {
        let row = ClassChangeRow {
            change_id: Uuid::now_v7(),
            lead_id,
            product: product.clone(),
            from_class: class_name(change.from).to_owned(),
            to_class: class_name(Some(change.to)).to_owned(),
            origin: change.origin.as_str_name().to_owned(),
            actor: String::new(),
            reason: change.reason.clone(),
            event_id: cause.event_id,
            change_time: now,
        };
        unit.insert_class_change(&row).await?;
        published.push(Payload::ClassChanged(events::ClassChanged {
            lead_id: lead_id.to_string(),
            product: product.clone(),
            previous_class: proto_class(change.from).into(),
            new_class: proto_class(Some(change.to)).into(),
            manual: false,
            changed_by: String::new(),
            reason: change.reason.clone(),
        }));
    }
    let total = plan.after.total_at(now);
    let snapshot = snapshot(rules, &plan.standing, &plan.after, inputs.bant.as_ref());
    let score = snapshot.score_at(now);
    let mut stage = stage_of(&inputs.standing.stage);
    for step in &plan.steps {
        match *step {
            HandOffStep::Stage(to, reason) => {
                let mut before = inputs.standing.clone();
                before.stage = stage_name(stage).to_owned();
                let change = stage_change(&before, Some(stage), to, PRODUCER, reason, cause);
                unit.insert_stage_change(&change).await?;
                published.push(stage_event(&change));
                stage = to;
            }
            HandOffStep::SalesReady(reason) => {
                let reason = match reason {
                    SalesReadyReason::ScoreThreshold => events::SalesReadyReason::ScoreThreshold,
                    SalesReadyReason::ClassA => events::SalesReadyReason::ClassA,
                    SalesReadyReason::ContactRequested => {
                        events::SalesReadyReason::ContactRequested
                    }
                };
                unit.insert_hand_off(&HandOffRow {
                    hand_off_id: Uuid::now_v7(),
                    lead_id,
                    product: product.clone(),
                    reason: reason.as_str_name().to_owned(),
                    total_points: total,
                    model_id: rules.model_id,
                    event_id: cause.event_id,
                    hand_off_time: now,
                })
                .await?;
                let mut ledger = inputs.ledger.clone();
                ledger.extend(plan.new_entries.iter().cloned());
                let shares = contact_shares(rules, &ledger, now);
                let requester = inputs
                    .activities
                    .iter()
                    .rev()
                    .find(|activity| activity.activity_key == CONTACT_REQUESTED)
                    .and_then(|activity| activity.contact_id);
                let primary = if reason == events::SalesReadyReason::ContactRequested {
                    requester
                } else {
                    None
                }
                .or_else(|| shares.first().map(|(contact, _, _)| *contact))
                .or_else(|| inputs.contacts.first().map(|contact| contact.contact_id));
                published.push(Payload::SalesReady(events::SalesReady {
                    lead_id: lead_id.to_string(),
                    product: product.clone(),
                    reason: reason.into(),
                    total_score: total,
                    lead_class: score.lead_class,
                    cell: score.cell,
                    account_id: inputs
                        .lead
                        .account_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    lead: Some(inputs.lead.profile.clone()),
                    primary_contact_id: primary.map(|id| id.to_string()).unwrap_or_default(),
                    top_contacts: shares
                        .iter()
                        .take(5)
                        .map(|(contact_id, points, _)| events::ContactContribution {
                            contact_id: contact_id.to_string(),
                            buyer_role: inputs
                                .contacts
                                .iter()
                                .find(|contact| contact.contact_id == *contact_id)
                                .map(|contact| contact.profile.buyer_role.clone())
                                .unwrap_or_default(),
                            engagement_score: *points,
                        })
                        .collect(),
                    model_id: rules.model_id.to_string(),
                    model_version: rules.version,
                    primary_contact_language: primary
                        .and_then(|primary| {
                            inputs
                                .contacts
                                .iter()
                                .find(|contact| contact.contact_id == primary)
                        })
                        .map(|contact| contact.profile.language.clone())
                        .unwrap_or_default(),
                }));
            }
        }
    }
    if !plan.new_entries.is_empty() {
        published.insert(
            0,
            Payload::ScoreChanged(events::ScoreChanged {
                lead_id: lead_id.to_string(),
                product: product.clone(),
                fit_score: f64::from(plan.after.fit_points),
                engagement_score: score.engagement_points,
                total_score: total,
                previous_total_score: plan.before.total_at(now),
                cell: score.cell,
                model_id: rules.model_id.to_string(),
                model_version: rules.version,
                cause: cause.kind.into(),
                cause_event_id: cause.event_id.map(|id| id.to_string()).unwrap_or_default(),
            }),
        );
    }
    unit.put_lead_product(&plan.standing).await?;
    Ok(Applied {
        events: published,
        snapshot,
    })
}

/// Records that the lifecycle of a lead newly seen for a product starts at new.
pub async fn start_lifecycle(
    unit: &mut dyn ScoringUnit,
    standing: &LeadProduct,
    cause: &Cause,
) -> Result<Payload, StorageError> {
    let change = stage_change(
        standing,
        None,
        LifecycleStage::New,
        PRODUCER,
        "first seen",
        cause,
    );
    unit.insert_stage_change(&change).await?;
    Ok(stage_event(&change))
}

fn stage_change(
    standing: &LeadProduct,
    from: Option<LifecycleStage>,
    to: LifecycleStage,
    actor: &str,
    reason: &str,
    cause: &Cause,
) -> StageChangeRow {
    StageChangeRow {
        change_id: Uuid::now_v7(),
        lead_id: standing.lead_id,
        product: standing.product.clone(),
        from_stage: from
            .map_or(
                common::LifecycleStage::Unspecified.as_str_name(),
                stage_name,
            )
            .to_owned(),
        to_stage: stage_name(to).to_owned(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        event_id: cause.event_id,
        change_time: cause.now,
    }
}

fn stage_event(change: &StageChangeRow) -> Payload {
    Payload::StageChanged(events::StageChanged {
        lead_id: change.lead_id.to_string(),
        product: change.product.clone(),
        previous_stage: stage_value(&change.from_stage),
        new_stage: stage_value(&change.to_stage),
        reason: change.reason.clone(),
        cause_event_id: change.event_id.map(|id| id.to_string()).unwrap_or_default(),
    })
}

/// The stages a lead passes to get from `from` to `to`: the direct step when the lifecycle
/// allows it, else the shortest walk through the funnel's working stages (a deal won at
/// SQL passes opportunity); `None` when there is no way.
pub fn stage_path(from: LifecycleStage, to: LifecycleStage) -> Option<Vec<LifecycleStage>> {
    use LifecycleStage::{Mql, Opportunity, Sal, Sql};
    if from == to {
        return Some(Vec::new());
    }
    let mut paths: Vec<Vec<LifecycleStage>> = vec![vec![from]];
    let mut seen = vec![from];
    while !paths.is_empty() {
        let mut next = Vec::new();
        for path in paths {
            let last = *path.last().unwrap_or(&from);
            for stage in LifecycleStage::ALL {
                if !last.can_move_to(stage) || seen.contains(&stage) {
                    continue;
                }
                let mut longer = path.clone();
                longer.push(stage);
                if stage == to {
                    return Some(longer.split_off(1));
                }
                if matches!(stage, Mql | Sal | Sql | Opportunity) {
                    seen.push(stage);
                    next.push(longer);
                }
            }
        }
        paths = next;
    }
    None
}

/// Moves the standing through `path`, recording each change; returns the events.
pub async fn move_stage(
    unit: &mut dyn ScoringUnit,
    standing: &mut LeadProduct,
    path: &[LifecycleStage],
    actor: &str,
    reason: &str,
    cause: &Cause,
) -> Result<Vec<(StageChangeRow, Payload)>, StorageError> {
    let mut changes = Vec::with_capacity(path.len());
    for &to in path {
        let from = stage_of(&standing.stage);
        let change = stage_change(standing, Some(from), to, actor, reason, cause);
        unit.insert_stage_change(&change).await?;
        enter_stage(standing, to);
        standing.update_time = cause.now;
        let event = stage_event(&change);
        changes.push((change, event));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleStage::*;

    #[test]
    fn outcomes_walk_the_funnel_where_a_step_was_skipped() {
        assert_eq!(stage_path(Sql, Customer), Some(vec![Opportunity, Customer]));
        assert_eq!(stage_path(Mql, Sal), Some(vec![Sal]));
        assert_eq!(stage_path(New, Sal), Some(vec![Sal]));
        assert_eq!(stage_path(Sal, Sal), Some(vec![]));
        assert_eq!(stage_path(Customer, Mql), None);
        assert_eq!(stage_path(Disqualified, Sal), None);
    }
}
