//! The lifecycle of a lead: new -> MQL -> SAL -> SQL -> opportunity -> customer, plus
//! recycled (back to nurturing) and disqualified, with the transitions sales and marketing
//! may make between them.

use std::fmt;

/// A lifecycle stage, orthogonal to the lead class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleStage {
    /// Captured, not yet qualified.
    New,
    /// Marketing qualified.
    Mql,
    /// Sales accepted after review.
    Sal,
    /// Sales qualified.
    Sql,
    /// In the sales pipeline.
    Opportunity,
    /// The deal was won.
    Customer,
    /// Sent back from sales to nurturing.
    Recycled,
    /// Out of the target group.
    Disqualified,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a lead cannot move from {from} to {to}")]
pub struct TransitionError {
    /// The stage the lead is in.
    pub from: LifecycleStage,
    /// The stage asked for.
    pub to: LifecycleStage,
}

impl LifecycleStage {
    /// Every stage.
    pub const ALL: [Self; 8] = [
        Self::New,
        Self::Mql,
        Self::Sal,
        Self::Sql,
        Self::Opportunity,
        Self::Customer,
        Self::Recycled,
        Self::Disqualified,
    ];

    /// Whether a lead in this stage may move to `to`. Forward steps follow the funnel
    /// (skipping MQL only for a lead that asked for sales itself); sales may recycle or
    /// disqualify a lead it holds; a recycled lead is nurtured back to MQL; a customer may
    /// buy again (opportunity); a disqualified lead comes back only as new.
    pub fn can_move_to(self, to: Self) -> bool {
        use LifecycleStage::{Customer, Disqualified, Mql, New, Opportunity, Recycled, Sal, Sql};
        matches!(
            (self, to),
            (New, Mql | Sal | Disqualified)
                | (Mql, Sal | Recycled | Disqualified)
                | (Sal, Sql | Recycled | Disqualified)
                | (Sql, Opportunity | Recycled | Disqualified)
                | (Opportunity, Customer | Recycled | Disqualified)
                | (Customer, Opportunity)
                | (Recycled, Mql | Sal | Disqualified)
                | (Disqualified, New)
        )
    }

    /// The stage after moving to `to`, or why that is not allowed.
    pub fn transition(self, to: Self) -> Result<Self, TransitionError> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// The name used in reports, e.g. `MQL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Mql => "MQL",
            Self::Sal => "SAL",
            Self::Sql => "SQL",
            Self::Opportunity => "opportunity",
            Self::Customer => "customer",
            Self::Recycled => "recycled",
            Self::Disqualified => "disqualified",
        }
    }
}

impl fmt::Display for LifecycleStage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::LifecycleStage::*;
    use super::*;

    #[test]
    fn the_funnel_walks_forward() {
        let mut stage = New;
        for next in [Mql, Sal, Sql, Opportunity, Customer] {
            stage = stage.transition(next).expect("forward step");
        }
        assert_eq!(stage, Customer);
    }

    #[test]
    fn a_rejected_lead_is_recycled_and_can_qualify_again() {
        let stage = Mql.transition(Recycled).and_then(|s| s.transition(Mql));
        assert_eq!(stage, Ok(Mql));
    }

    #[test]
    fn no_stage_is_skipped_backwards_or_repeated() {
        assert_eq!(
            Customer.transition(New),
            Err(TransitionError {
                from: Customer,
                to: New
            })
        );
        assert!(!Sql.can_move_to(Mql));
        for stage in LifecycleStage::ALL {
            assert!(!stage.can_move_to(stage), "{stage} -> {stage}");
        }
    }

    #[test]
    fn every_stage_but_customer_can_reach_disqualified_or_is_it() {
        for stage in LifecycleStage::ALL {
            let reachable =
                stage.can_move_to(Disqualified) || matches!(stage, Customer | Disqualified);
            assert!(reachable, "{stage}");
        }
    }
}
