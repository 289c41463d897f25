//! When a lead becomes marketing qualified (MQL) and when it is handed over to sales:
//! neither too early (the "green banana") nor twice for one crossing of the threshold.

use crate::{
    LeadClass, LifecycleStage,
    engagement::whole_points,
    fit::{Attribute, Profile, ProfileGrade},
};

/// When a lead is marketing qualified: opt-in, a complete profile and enough score.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqlRule {
    /// At least one contact must have opted in.
    pub require_opt_in: bool,
    /// Attributes the lead and at least one contact must have (the same contact for all
    /// contact attributes).
    pub required: Vec<Attribute>,
    /// The lowest total score, in whole points; 0 means none.
    pub min_total_points: u32,
    /// The worst grade allowed; `None` allows any.
    pub min_grade: Option<ProfileGrade>,
}

/// When an MQL goes to sales, beyond reaching the threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SalesReadyRule {
    /// The worst grade a lead handed over on its score or class may have.
    pub min_grade: Option<ProfileGrade>,
    /// Class A is handed over even below the threshold.
    pub on_class_a: bool,
    /// A contact's request to be contacted is handed over at once, whatever the score.
    pub on_contact_request: bool,
}

/// Why a lead is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalesReadyReason {
    /// The total score reached the threshold.
    ScoreThreshold,
    /// The lead is class A.
    ClassA,
    /// A contact asked for sales.
    ContactRequested,
}

/// A contact as the MQL rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactStanding {
    /// The contact's profile.
    pub profile: Profile,
    /// Whether the contact opted in to mail.
    pub opted_in: bool,
}

/// Where a lead stands for one product after a change.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing<'a> {
    /// The total score (fit plus decayed engagement).
    pub total: f64,
    /// The model's hand-off threshold.
    pub threshold: u32,
    /// The profile grade.
    pub grade: ProfileGrade,
    /// The class, if the lead has one.
    pub class: Option<LeadClass>,
    /// A disqualifier fit rule matches.
    pub disqualified: bool,
    /// A contact asked to be contacted by sales.
    pub contact_requested: bool,
    /// The lead's profile.
    pub lead: &'a Profile,
    /// The lead's contacts.
    pub contacts: &'a [ContactStanding],
}

/// Where the lead is in the hand-off for one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandOffState {
    /// The lifecycle stage.
    pub stage: LifecycleStage,
    /// Whether the lead was handed over and not recycled since.
    pub handed_over: bool,
    /// Whether the lead was recycled and has earned no engagement since: it must engage
    /// again before its score alone hands it over again.
    pub awaiting_new_engagement: bool,
}

/// What the change does to the lead's hand-off, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOffStep {
    /// The lead moves to a stage, for a reason.
    Stage(LifecycleStage, &'static str),
    /// The lead is handed over to sales.
    SalesReady(SalesReadyReason),
}

impl MqlRule {
    /// Whether the lead meets the rule.
    pub fn is_met(&self, standing: &Standing<'_>) -> bool {
        if self.require_opt_in && !standing.contacts.iter().any(|contact| contact.opted_in) {
            return false;
        }
        if whole_points(standing.total) < i64::from(self.min_total_points) {
            return false;
        }
        if self
            .min_grade
            .is_some_and(|worst| !standing.grade.at_least(worst))
        {
            return false;
        }
        let (contact_attributes, lead_attributes): (Vec<Attribute>, Vec<Attribute>) = self
            .required
            .iter()
            .partition(|attribute| attribute.is_contact_attribute());
        let lead_complete = lead_attributes
            .iter()
            .all(|attribute| standing.lead.get(*attribute).is_some());
        let some_contact_complete = contact_attributes.is_empty()
            || standing.contacts.iter().any(|contact| {
                contact_attributes
                    .iter()
                    .all(|attribute| contact.profile.get(*attribute).is_some())
            });
        lead_complete && some_contact_complete
    }
}

/// The steps a change brings: disqualification, qualification as MQL, and the hand-off to
/// sales, which happens once per crossing: a handed-over lead is not handed over again
/// until it was recycled and engaged anew.
pub fn next_steps(
    mql: &MqlRule,
    sales_ready: &SalesReadyRule,
    standing: &Standing<'_>,
    state: HandOffState,
) -> Vec<HandOffStep> {
    use LifecycleStage::{Disqualified, Mql, New, Recycled};
    let mut steps = Vec::new();
    if standing.disqualified {
        if state.stage.can_move_to(Disqualified) {
            steps.push(HandOffStep::Stage(Disqualified, "a disqualifier matched"));
        }
        return steps;
    }
    let mut stage = state.stage;
    // A recycled lead qualifies again once it engages anew, not the moment it comes back.
    let may_qualify = stage == New || (stage == Recycled && !state.awaiting_new_engagement);
    if may_qualify && mql.is_met(standing) {
        steps.push(HandOffStep::Stage(Mql, "the MQL rule is met"));
        stage = Mql;
    }
    if state.handed_over || !matches!(stage, New | Recycled | Mql) {
        return steps;
    }
    let grade_ok = sales_ready
        .min_grade
        .is_none_or(|worst| standing.grade.at_least(worst));
    let reason = if sales_ready.on_contact_request && standing.contact_requested {
        Some(SalesReadyReason::ContactRequested)
    } else if sales_ready.on_class_a && standing.class == Some(LeadClass::A) && grade_ok {
        Some(SalesReadyReason::ClassA)
    } else if stage == Mql
        && grade_ok
        && !state.awaiting_new_engagement
        && whole_points(standing.total) >= i64::from(standing.threshold)
    {
        Some(SalesReadyReason::ScoreThreshold)
    } else {
        None
    };
    steps.extend(reason.map(HandOffStep::SalesReady));
    steps
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn standing<'a>(
        total: f64,
        lead: &'a Profile,
        contacts: &'a [ContactStanding],
    ) -> Standing<'a> {
        Standing {
            total,
            threshold: 250,
            grade: ProfileGrade::B,
            class: None,
            disqualified: false,
            contact_requested: false,
            lead,
            contacts,
        }
    }

    fn fresh(stage: LifecycleStage) -> HandOffState {
        HandOffState {
            stage,
            handed_over: false,
            awaiting_new_engagement: false,
        }
    }

    #[test]
    fn reaching_the_threshold_qualifies_and_hands_over_once() {
        let lead = Profile::new();
        let rule = MqlRule::default();
        let ready = SalesReadyRule::default();
        let steps = next_steps(
            &rule,
            &ready,
            &standing(249.9998, &lead, &[]),
            fresh(LifecycleStage::New),
        );
        assert_eq!(
            steps,
            [
                HandOffStep::Stage(LifecycleStage::Mql, "the MQL rule is met"),
                HandOffStep::SalesReady(SalesReadyReason::ScoreThreshold)
            ]
        );
        let handed_over = HandOffState {
            stage: LifecycleStage::Mql,
            handed_over: true,
            awaiting_new_engagement: false,
        };
        assert!(next_steps(&rule, &ready, &standing(400.0, &lead, &[]), handed_over).is_empty());
        assert!(
            next_steps(
                &rule,
                &ready,
                &standing(249.4, &lead, &[]),
                fresh(LifecycleStage::Mql)
            )
            .is_empty()
        );
    }

    #[test]
    fn an_incomplete_profile_is_no_mql_and_is_not_handed_over() {
        let lead = Profile::new().with(Attribute::CompanyName, "Acme");
        let rule = MqlRule {
            require_opt_in: true,
            required: vec![Attribute::CompanyName, Attribute::Email, Attribute::Phone],
            ..MqlRule::default()
        };
        let partial = [ContactStanding {
            profile: Profile::new().with(Attribute::Email, "a@acme.example"),
            opted_in: true,
        }];
        let steps = next_steps(
            &rule,
            &SalesReadyRule::default(),
            &standing(300.0, &lead, &partial),
            fresh(LifecycleStage::New),
        );
        assert!(steps.is_empty(), "the green banana stays with marketing");
        let complete = [ContactStanding {
            profile: Profile::new()
                .with(Attribute::Email, "a@acme.example")
                .with(Attribute::Phone, "+49401"),
            opted_in: false,
        }];
        assert!(
            !rule.is_met(&standing(300.0, &lead, &complete)),
            "opt-in is required"
        );
        let opted_in = [ContactStanding {
            opted_in: true,
            ..complete[0].clone()
        }];
        assert!(rule.is_met(&standing(300.0, &lead, &opted_in)));
    }

    #[test]
    fn a_contact_request_goes_to_sales_whatever_the_score() {
        let lead = Profile::new();
        let ready = SalesReadyRule {
            on_contact_request: true,
            ..SalesReadyRule::default()
        };
        let mql = MqlRule {
            min_total_points: 100,
            ..MqlRule::default()
        };
        let standing = Standing {
            contact_requested: true,
            ..standing(20.0, &lead, &[])
        };
        assert_eq!(
            next_steps(&mql, &ready, &standing, fresh(LifecycleStage::New)),
            [HandOffStep::SalesReady(SalesReadyReason::ContactRequested)]
        );
    }

    #[test]
    fn a_disqualified_lead_leaves_the_funnel_and_a_customer_stays() {
        let lead = Profile::new();
        let standing = Standing {
            disqualified: true,
            ..standing(900.0, &lead, &[])
        };
        assert_eq!(
            next_steps(
                &MqlRule::default(),
                &SalesReadyRule::default(),
                &standing,
                fresh(LifecycleStage::Mql)
            ),
            [HandOffStep::Stage(
                LifecycleStage::Disqualified,
                "a disqualifier matched"
            )]
        );
        assert!(
            next_steps(
                &MqlRule::default(),
                &SalesReadyRule::default(),
                &standing,
                fresh(LifecycleStage::Customer)
            )
            .is_empty()
        );
    }

    #[test]
    fn a_recycled_lead_must_engage_again_before_its_score_hands_it_over() {
        let lead = Profile::new();
        let recycled = HandOffState {
            stage: LifecycleStage::Recycled,
            handed_over: false,
            awaiting_new_engagement: true,
        };
        let steps = next_steps(
            &MqlRule::default(),
            &SalesReadyRule::default(),
            &standing(300.0, &lead, &[]),
            recycled,
        );
        assert!(
            steps.is_empty(),
            "a recycled lead stays recycled until it engages again"
        );
        let engaged = HandOffState {
            awaiting_new_engagement: false,
            ..recycled
        };
        let steps = next_steps(
            &MqlRule::default(),
            &SalesReadyRule::default(),
            &standing(300.0, &lead, &[]),
            engaged,
        );
        assert_eq!(
            steps.first(),
            Some(&HandOffStep::Stage(
                LifecycleStage::Mql,
                "the MQL rule is met"
            ))
        );
        assert_eq!(
            steps.last(),
            Some(&HandOffStep::SalesReady(SalesReadyReason::ScoreThreshold))
        );
    }

    proptest! {
        #[test]
        fn a_lead_hovering_around_the_threshold_is_handed_over_once(
            totals in proptest::collection::vec(200.0f64..300.0, 1..50),
        ) {
            let lead = Profile::new();
            let mut state = fresh(LifecycleStage::New);
            let mut hand_offs = 0;
            for total in totals {
                for step in next_steps(&MqlRule::default(), &SalesReadyRule::default(), &standing(total, &lead, &[]), state) {
                    match step {
                        HandOffStep::Stage(stage, _) => state.stage = stage,
                        HandOffStep::SalesReady(_) => { hand_offs += 1; state.handed_over = true; }
                    }
                }
            }
            prop_assert!(hand_offs <= 1);
        }

        #[test]
        fn every_stage_step_is_an_allowed_transition(
            stage in 0usize..8, total in 0.0f64..600.0, disqualified: bool, requested: bool,
        ) {
            let lead = Profile::new();
            let from = LifecycleStage::ALL[stage];
            let standing = Standing { disqualified, contact_requested: requested, ..standing(total, &lead, &[]) };
            let ready = SalesReadyRule { on_contact_request: true, on_class_a: true, min_grade: None };
            let mut current = from;
            for step in next_steps(&MqlRule::default(), &ready, &standing, fresh(from)) {
                if let HandOffStep::Stage(to, _) = step {
                    prop_assert!(current.can_move_to(to), "{current} -> {to}");
                    current = to;
                }
            }
        }
    }
}
