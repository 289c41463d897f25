//! Progressive profiling: which fields of a form to show a visitor or a known contact, so
//! that each visit asks a little more and never asks again what is already known.

use std::collections::BTreeMap;

use leadflow_proto::common::v1 as common;

use crate::{
    forms::{Form, FormField, PROFILE_PATHS},
    submission::{profile_value, set_profile_value},
};

/// The paths that identify a contact or its lead: filled in when blank, never changed by a
/// capture (moving a contact or re-keying a lead is an explicit update).
const IDENTITY_PATHS: &[&str] = &["contact.email", "lead.web_domain", "lead.site"];

/// What merging a capture into known profiles changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    pub contact: bool,
    pub lead: bool,
}

/// Merges the values of a capture into the known profiles: every value the capture carries
/// replaces the known one (people change titles and companies grow), a blank never erases a
/// known value, and identity values are only filled in where none was known.
pub fn merge_profiles(
    known_contact: &mut common::ContactProfile,
    known_lead: &mut common::LeadProfile,
    captured_contact: &common::ContactProfile,
    captured_lead: &common::LeadProfile,
) -> Changed {
    let mut changed = Changed::default();
    for path in PROFILE_PATHS {
        let captured = profile_value(captured_contact, captured_lead, path);
        if captured.is_empty() {
            continue;
        }
        let known = profile_value(known_contact, known_lead, path);
        if known == captured || (IDENTITY_PATHS.contains(path) && !known.is_empty()) {
            continue;
        }
        // Captured values were checked when they were read, so they always fit their path.
        if set_profile_value(known_contact, known_lead, path, &captured).is_ok() {
            if path.starts_with("contact.") {
                changed.contact = true;
            } else {
                changed.lead = true;
            }
        }
    }
    changed
}

/// What is known of a contact whose form is being resolved.
#[derive(Debug, Clone, Copy)]
pub struct KnownProfile<'a> {
    pub contact: &'a common::ContactProfile,
    pub lead: &'a common::LeadProfile,
    pub custom_fields: &'a BTreeMap<String, String>,
}

impl KnownProfile<'_> {
    /// Whether the contact already has a value for `field`.
    fn answers(&self, field: &FormField) -> bool {
        if field.maps_to.is_empty() {
            self.custom_fields
                .get(&field.name)
                .is_some_and(|value| !value.trim().is_empty())
        } else {
            !profile_value(self.contact, self.lead, &field.maps_to).is_empty()
        }
    }
}

/// The fields of `form` to show, in display order: every field to an unknown visitor; to a
/// known contact the email field (a submission is matched by it), the required fields it
/// has not answered, and the next unanswered entries of `ask_next_fields` up to
/// `ask_next_limit` (0 = all of them).
pub fn fields_to_ask(form: &Form, known: Option<KnownProfile<'_>>) -> Vec<FormField> {
    let definition = &form.definition;
    let Some(known) = known else {
        return definition.fields.clone();
    };
    let limit = match definition.ask_next_limit {
        0 => usize::MAX,
        limit => usize::try_from(limit).unwrap_or(usize::MAX),
    };
    let ask_next: Vec<&str> = definition
        .ask_next_fields
        .iter()
        .filter(|name| {
            definition
                .fields
                .iter()
                .find(|field| &field.name == *name)
                .is_some_and(|field| !known.answers(field))
        })
        .take(limit)
        .map(String::as_str)
        .collect();
    definition
        .fields
        .iter()
        .filter(|field| {
            field.maps_to == "contact.email"
                || (field.required && !known.answers(field))
                || ask_next.contains(&field.name.as_str())
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use leadflow_proto::capture::v1 as pb;
    use uuid::Uuid;

    use super::*;
    use crate::forms::NewForm;

    fn field(name: &str, maps_to: &str, required: bool) -> FormField {
        FormField {
            name: name.to_owned(),
            label: name.to_owned(),
            required,
            kind: pb::FormFieldKind::Text,
            maps_to: maps_to.to_owned(),
            options: Vec::new(),
            max_length: 0,
        }
    }

    fn form(ask_next_limit: u32) -> Form {
        Form {
            form_id: Uuid::now_v7(),
            definition: NewForm {
                name: "Whitepaper".to_owned(),
                product: "erp".to_owned(),
                state: pb::FormState::Active,
                fields: vec![
                    field("email", "contact.email", true),
                    field("first_name", "contact.first_name", true),
                    field("company", "lead.company_name", false),
                    field("industry", "lead.industry", false),
                    field("job_title", "contact.job_title", false),
                    field("budget", "", false),
                ],
                consent_wording: String::new(),
                consent_wording_version: String::new(),
                consent_purpose: "nurture-email".to_owned(),
                consent_required: false,
                double_opt_in: false,
                ask_next_fields: vec![
                    "industry".to_owned(),
                    "budget".to_owned(),
                    "job_title".to_owned(),
                ],
                ask_next_limit,
                allowed_origins: Vec::new(),
                success_url: String::new(),
            },
            revision: 1,
            create_time: Utc::now(),
            update_time: Utc::now(),
            consent_wording_history: Vec::new(),
        }
    }

    fn names(fields: &[FormField]) -> Vec<&str> {
        fields.iter().map(|field| field.name.as_str()).collect()
    }

    #[test]
    fn a_capture_fills_in_and_updates_but_never_blanks_or_rekeys() {
        let mut contact = common::ContactProfile {
            email: "ada@example.com".to_owned(),
            first_name: "Ada".to_owned(),
            job_title: "Engineer".to_owned(),
            ..Default::default()
        };
        let mut lead = common::LeadProfile {
            web_domain: "example.com".to_owned(),
            site: "Berlin".to_owned(),
            ..Default::default()
        };
        let captured_contact = common::ContactProfile {
            email: "ada@example.com".to_owned(),
            job_title: "Head of IT".to_owned(),
            ..Default::default()
        };
        let captured_lead = common::LeadProfile {
            site: "Munich".to_owned(),
            industry: "manufacturing".to_owned(),
            employee_count: 250,
            ..Default::default()
        };
        let changed = merge_profiles(&mut contact, &mut lead, &captured_contact, &captured_lead);
        assert_eq!(
            changed,
            Changed {
                contact: true,
                lead: true
            }
        );
        assert_eq!(contact.first_name, "Ada", "a blank never erases");
        assert_eq!(contact.job_title, "Head of IT", "a new value replaces");
        assert_eq!(lead.site, "Berlin", "identity is not changed by a capture");
        assert_eq!(lead.industry, "manufacturing");
        assert_eq!(lead.employee_count, 250);

        let again = merge_profiles(&mut contact, &mut lead, &captured_contact, &captured_lead);
        assert_eq!(
            again,
            Changed::default(),
            "the same capture twice changes nothing"
        );
    }

    #[test]
    fn an_unknown_visitor_sees_every_field() {
        let form = form(1);
        assert_eq!(fields_to_ask(&form, None), form.definition.fields);
    }

    #[test]
    fn a_known_contact_is_asked_the_next_unanswered_fields_only() {
        let contact = common::ContactProfile {
            email: "ada@example.com".to_owned(),
            first_name: "Ada".to_owned(),
            ..Default::default()
        };
        let lead = common::LeadProfile {
            industry: "manufacturing".to_owned(),
            ..Default::default()
        };
        let custom = BTreeMap::new();
        let known = KnownProfile {
            contact: &contact,
            lead: &lead,
            custom_fields: &custom,
        };
        // industry is known, so the next two are budget and job_title, one at a time.
        assert_eq!(
            names(&fields_to_ask(&form(1), Some(known))),
            ["email", "budget"]
        );
        assert_eq!(
            names(&fields_to_ask(&form(0), Some(known))),
            ["email", "job_title", "budget"],
            "display order, all of the remaining ones"
        );
    }

    #[test]
    fn a_required_field_the_contact_lacks_is_asked_again() {
        let contact = common::ContactProfile {
            email: "ada@example.com".to_owned(),
            ..Default::default()
        };
        let lead = common::LeadProfile::default();
        let custom = BTreeMap::from([("budget".to_owned(), "50k".to_owned())]);
        let known = KnownProfile {
            contact: &contact,
            lead: &lead,
            custom_fields: &custom,
        };
        assert_eq!(
            names(&fields_to_ask(&form(1), Some(known))),
            ["email", "first_name", "industry"]
        );
    }

    /// Text profile paths and a generated profile pair: each path blank or one of a few
    /// values, so known and captured values often collide.
    fn profiles()
    -> impl proptest::strategy::Strategy<Value = (common::ContactProfile, common::LeadProfile)>
    {
        use proptest::prelude::*;
        let text_paths: Vec<&str> = PROFILE_PATHS
            .iter()
            .copied()
            .filter(|path| !matches!(*path, "contact.preferred_channels" | "lead.employee_count"))
            .collect();
        let count = text_paths.len();
        (
            proptest::collection::vec(prop_oneof![Just(""), Just("a"), Just("b")], count),
            0_u32..3,
        )
            .prop_map(move |(values, employees)| {
                let mut contact = common::ContactProfile::default();
                let mut lead = common::LeadProfile::default();
                for (path, value) in text_paths.iter().zip(values) {
                    set_profile_value(&mut contact, &mut lead, path, value)
                        .expect("a text path takes any text");
                }
                lead.employee_count = employees * 100;
                (contact, lead)
            })
    }

    proptest::proptest! {
        #[test]
        fn a_merge_never_blanks_and_never_changes_identity(
            (known_contact, known_lead) in profiles(),
            (captured_contact, captured_lead) in profiles(),
        ) {
            let (mut contact, mut lead) = (known_contact.clone(), known_lead.clone());
            let changed = merge_profiles(&mut contact, &mut lead, &captured_contact, &captured_lead);
            for path in PROFILE_PATHS {
                let before = profile_value(&known_contact, &known_lead, path);
                let captured = profile_value(&captured_contact, &captured_lead, path);
                let after = profile_value(&contact, &lead, path);
                if captured.is_empty() || (IDENTITY_PATHS.contains(path) && !before.is_empty()) {
                    proptest::prop_assert_eq!(&after, &before, "{} kept", path);
                } else {
                    proptest::prop_assert_eq!(&after, &captured, "{} taken", path);
                }
            }
            proptest::prop_assert_eq!(changed.contact, contact != known_contact);
            proptest::prop_assert_eq!(changed.lead, lead != known_lead);
        }
    }
}
