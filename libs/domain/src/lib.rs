//! The pure rules of lead management. No I/O, no async, no clock reads: time is passed in,
//! so every rule is tested in microseconds.

pub mod classification;
pub mod company;
pub mod email;
pub mod engagement;
pub mod fit;
pub mod funnel;
pub mod handoff;
pub mod lifecycle;
pub mod nurture;
pub mod routing;

pub use classification::{BuyingStage, ClassEvidence, ClassOrigin, LeadClass, infer_class};
pub use company::{CompanyDomain, DomainError, is_free_mail_domain, site_key};
pub use email::{EmailAddress, EmailError};
pub use engagement::{
    ActivityKey, ActivityKind, Award, DecayingSum, EngagementModel, EngagementRule, HeatMapCell,
    LevelBands, ScoredActivity, decayed_points, whole_points,
};
pub use fit::{
    Attribute, FitMatch, FitOperator, FitOutcome, FitRule, GradeBands, Profile, ProfileGrade,
    score_fit,
};
pub use handoff::{
    ContactStanding, HandOffState, HandOffStep, MqlRule, SalesReadyReason, SalesReadyRule,
    Standing, next_steps,
};
pub use lifecycle::{LifecycleStage, TransitionError};
