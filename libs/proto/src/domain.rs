//! Conversions between the contracts' enums and the domain's types, shared by every
//! service that speaks both.

use leadflow_domain::{HeatMapCell, LeadClass, ProfileGrade};

use crate::common;

/// The domain's grade of an API grade; `None` for unspecified.
pub fn grade(value: i32) -> Option<ProfileGrade> {
    match common::v1::ProfileGrade::try_from(value).ok()? {
        common::v1::ProfileGrade::A => Some(ProfileGrade::A),
        common::v1::ProfileGrade::B => Some(ProfileGrade::B),
        common::v1::ProfileGrade::C => Some(ProfileGrade::C),
        common::v1::ProfileGrade::D => Some(ProfileGrade::D),
        common::v1::ProfileGrade::Unspecified => None,
    }
}

/// The API's grade of a domain grade.
pub fn proto_grade(grade: ProfileGrade) -> common::v1::ProfileGrade {
    match grade {
        ProfileGrade::A => common::v1::ProfileGrade::A,
        ProfileGrade::B => common::v1::ProfileGrade::B,
        ProfileGrade::C => common::v1::ProfileGrade::C,
        ProfileGrade::D => common::v1::ProfileGrade::D,
    }
}

/// The domain's class of an API class; `None` for unspecified.
pub fn lead_class(value: i32) -> Option<LeadClass> {
    match common::v1::LeadClass::try_from(value).ok()? {
        common::v1::LeadClass::A => Some(LeadClass::A),
        common::v1::LeadClass::B1 => Some(LeadClass::B1),
        common::v1::LeadClass::B2 => Some(LeadClass::B2),
        common::v1::LeadClass::B3 => Some(LeadClass::B3),
        common::v1::LeadClass::C => Some(LeadClass::C),
        common::v1::LeadClass::Unspecified => None,
    }
}

/// The API's class of a domain class.
pub fn proto_class(class: Option<LeadClass>) -> common::v1::LeadClass {
    match class {
        Some(LeadClass::A) => common::v1::LeadClass::A,
        Some(LeadClass::B1) => common::v1::LeadClass::B1,
        Some(LeadClass::B2) => common::v1::LeadClass::B2,
        Some(LeadClass::B3) => common::v1::LeadClass::B3,
        Some(LeadClass::C) => common::v1::LeadClass::C,
        None => common::v1::LeadClass::Unspecified,
    }
}

/// The domain's heat-map cell of an API cell; `None` when the grade is unspecified or the
/// level is outside 1-4.
pub fn cell(cell: &common::v1::HeatMapCell) -> Option<HeatMapCell> {
    let level = u8::try_from(cell.engagement_level).ok()?;
    (1..=4).contains(&level).then_some(())?;
    Some(HeatMapCell {
        grade: grade(cell.grade)?,
        level,
    })
}
