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

#[cfg(test)]
mod tests {
    use super::*;

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
