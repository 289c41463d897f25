//! The pure rules of lead management. No I/O, no async, no clock reads: time is passed in,
//! so every rule is tested in microseconds.

pub mod classification;
pub mod company;
pub mod email;
pub mod engagement;
pub mod lifecycle;

pub use classification::LeadClass;
pub use company::{CompanyDomain, DomainError, is_free_mail_domain, site_key};
pub use email::{EmailAddress, EmailError};
pub use engagement::{ActivityKind, decayed_points};
pub use lifecycle::{LifecycleStage, TransitionError};
