//! Lead classes per lead and product: A (ready to buy), B1/B2/B3 (the buying phases) and
//! C (no need now: kept, never discarded).

use std::fmt;

/// The class of a lead for one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeadClass {
    /// No need now: consultants, students, private persons.
    C,
    /// Recognising the problem.
    B1,
    /// Searching for a solution approach.
    B2,
    /// Requesting offers, specifying the need.
    B3,
    /// Ready to buy.
    A,
}

impl LeadClass {
    /// Every class, from farthest to closest to a purchase.
    pub const ALL: [Self; 5] = [Self::C, Self::B1, Self::B2, Self::B3, Self::A];

    /// Whether sales should get leads of this class (only A-leads, by default).
    pub fn is_sales_ready(self) -> bool {
        self == Self::A
    }

    /// The short code used in reports and the API, e.g. `B2`.
    pub fn code(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B1 => "B1",
            Self::B2 => "B2",
            Self::B3 => "B3",
            Self::C => "C",
        }
    }

    /// Parses a short code such as `b1` or `A`.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|class| class.code().eq_ignore_ascii_case(code.trim()))
    }
}

impl fmt::Display for LeadClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

/// The buying stage a content item is written for, and so what consuming it says about
/// the lead's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuyingStage {
    /// Recognising the problem (B1 content).
    ProblemAwareness,
    /// Searching for a solution approach (B2 content).
    SolutionSearch,
    /// Requesting offers (B3 content).
    RequestingOffers,
    /// Choosing an offer (A content).
    ChoosingOffer,
}

impl BuyingStage {
    /// The class a lead consuming this stage's content is in.
    pub fn class(self) -> LeadClass {
        match self {
            Self::ProblemAwareness => LeadClass::B1,
            Self::SolutionSearch => LeadClass::B2,
            Self::RequestingOffers => LeadClass::B3,
            Self::ChoosingOffer => LeadClass::A,
        }
    }
}

/// Where a class came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClassOrigin {
    /// The stage tags of the content consumed.
    ContentStage,
    /// A disqualifier, or a need found missing.
    Disqualifier,
    /// A complete BANT qualification.
    Bant,
    /// A contact asked to be contacted by sales.
    ContactRequest,
    /// Set by hand, e.g. after a qualification call.
    Manual,
}

/// What is known about a lead for one product that says which class it is in: the
/// evidence since the last manual classification (all of it when there was none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassEvidence {
    /// A disqualifier fit rule matches the lead.
    pub disqualified: bool,
    /// The need was assessed and found missing.
    pub need_missing: bool,
    /// All four BANT criteria are met.
    pub bant_complete: bool,
    /// A contact asked to be contacted by sales.
    pub contact_requested: bool,
    /// A qualification call was recorded.
    pub qualification_call: bool,
    /// The most advanced buying stage of the content the lead's contacts consumed.
    pub furthest_content_stage: Option<BuyingStage>,
}

/// The class the evidence points to, where it came from and why; `None` when there is no
/// evidence at all (the lead stays unclassified, or keeps its class).
pub fn infer_class(evidence: &ClassEvidence) -> Option<(LeadClass, ClassOrigin, &'static str)> {
    if evidence.disqualified {
        return Some((
            LeadClass::C,
            ClassOrigin::Disqualifier,
            "a disqualifier matched",
        ));
    }
    if evidence.need_missing {
        return Some((
            LeadClass::C,
            ClassOrigin::Disqualifier,
            "the need is missing",
        ));
    }
    if evidence.bant_complete {
        return Some((LeadClass::A, ClassOrigin::Bant, "BANT complete"));
    }
    if evidence.contact_requested {
        return Some((
            LeadClass::A,
            ClassOrigin::ContactRequest,
            "a contact asked to be contacted",
        ));
    }
    if evidence.qualification_call {
        return Some((
            LeadClass::A,
            ClassOrigin::ContactRequest,
            "qualification call",
        ));
    }
    evidence.furthest_content_stage.map(|stage| {
        let reason = match stage {
            BuyingStage::ProblemAwareness => "consumed problem-awareness content",
            BuyingStage::SolutionSearch => "consumed solution-search content",
            BuyingStage::RequestingOffers => "consumed requesting-offers content",
            BuyingStage::ChoosingOffer => "consumed choosing-offer content",
        };
        (stage.class(), ClassOrigin::ContentStage, reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strongest_evidence_decides() {
        let content = ClassEvidence {
            furthest_content_stage: Some(BuyingStage::SolutionSearch),
            ..ClassEvidence::default()
        };
        assert_eq!(
            infer_class(&content).map(|(c, o, _)| (c, o)),
            Some((LeadClass::B2, ClassOrigin::ContentStage))
        );
        let bant = ClassEvidence {
            bant_complete: true,
            ..content.clone()
        };
        assert_eq!(
            infer_class(&bant).map(|(c, o, _)| (c, o)),
            Some((LeadClass::A, ClassOrigin::Bant))
        );
        let disqualified = ClassEvidence {
            disqualified: true,
            ..bant.clone()
        };
        assert_eq!(
            infer_class(&disqualified).map(|(c, _, _)| c),
            Some(LeadClass::C)
        );
        let no_need = ClassEvidence {
            need_missing: true,
            ..content
        };
        assert_eq!(infer_class(&no_need).map(|(c, _, _)| c), Some(LeadClass::C));
        assert_eq!(infer_class(&ClassEvidence::default()), None);
    }

    #[test]
    fn content_stages_map_to_the_buying_phases() {
        let classes: Vec<_> = [
            BuyingStage::ProblemAwareness,
            BuyingStage::SolutionSearch,
            BuyingStage::RequestingOffers,
            BuyingStage::ChoosingOffer,
        ]
        .into_iter()
        .map(BuyingStage::class)
        .collect();
        assert_eq!(
            classes,
            [LeadClass::B1, LeadClass::B2, LeadClass::B3, LeadClass::A]
        );
    }

    #[test]
    fn classes_order_by_closeness_to_purchase() {
        assert!(LeadClass::A > LeadClass::B3);
        assert!(LeadClass::B3 > LeadClass::B2);
        assert!(LeadClass::B2 > LeadClass::B1);
        assert!(LeadClass::B1 > LeadClass::C);
    }

    #[test]
    fn codes_round_trip() {
        for class in LeadClass::ALL {
            assert_eq!(LeadClass::from_code(class.code()), Some(class));
            assert_eq!(
                LeadClass::from_code(&class.code().to_lowercase()),
                Some(class)
            );
        }
        assert_eq!(LeadClass::from_code("B4"), None);
    }

    #[test]
    fn only_a_leads_go_to_sales() {
        let ready: Vec<_> = LeadClass::ALL
            .into_iter()
            .filter(|c| c.is_sales_ready())
            .collect();
        assert_eq!(ready, [LeadClass::A]);
    }
}
