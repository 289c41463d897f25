//! A form submission read against its form: each value checked by its field's kind and
//! limits and put where the field maps it, merged with the typed profiles of the request,
//! the email normalised, the company told from the web domain or the email (never from a
//! free-mail domain). Everything wrong is reported at once, each under its field.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use leadflow_domain::{CompanyDomain, DomainError, EmailAddress};
use leadflow_platform::{FieldViolations, time::from_timestamp, validate};
use leadflow_proto::{capture::v1 as pb, common::v1 as common};
use uuid::Uuid;

use crate::forms::{Form, FormField};

/// The source of a submission that names none.
pub const DEFAULT_SOURCE: &str = "website";
/// How far a submission time may lie ahead of the server's clock (clients' clocks drift).
const CLOCK_SKEW: Duration = Duration::minutes(5);
/// The longest value of a field without a limit of its own, in characters.
pub(crate) const DEFAULT_MAX_CHARS: usize = 200;
/// The longest value of a text area without a limit of its own, in characters.
const DEFAULT_TEXTAREA_MAX_CHARS: usize = 4_000;
/// The longest anonymous visitor id.
const MAX_VISITOR_ID_CHARS: usize = 128;

/// A submission that passed validation against its form.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The form submitted.
    pub form_id: Uuid,
    /// The contact's normalised email, which identifies the contact.
    pub email: EmailAddress,
    /// The contact values submitted (typed and from fields); blanks were not submitted.
    pub contact: common::ContactProfile,
    /// The lead values submitted; blanks were not submitted.
    pub lead: common::LeadProfile,
    /// Values of fields that map to no profile path, by field name.
    pub custom_fields: BTreeMap<String, String>,
    /// The company the lead belongs to; none for a free-mail address without a company
    /// domain.
    pub company: Option<CompanyDomain>,
    /// Where the submission came from.
    pub source: String,
    /// The campaign attribution of the visit.
    pub attribution: Option<common::CampaignAttribution>,
    /// Whether the person ticked the opt-in box.
    pub consent_given: bool,
    /// The anonymous visitor id of the browser.
    pub visitor_id: Option<String>,
    /// The browser it came from, kept as consent evidence.
    pub client: Option<pb::ClientInfo>,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
}

/// Where a violation about `field` is reported: under `values["name"]`.
fn value_path(field: &FormField) -> String {
    format!("values[{:?}]", field.name)
}

/// The value at a profile path of `contact` or `lead`, as text; empty when blank.
pub fn profile_value(
    contact: &common::ContactProfile,
    lead: &common::LeadProfile,
    path: &str,
) -> String {
    let address = contact.address.clone().unwrap_or_default();
    match path {
        "contact.email" => contact.email.clone(),
        "contact.first_name" => contact.first_name.clone(),
        "contact.last_name" => contact.last_name.clone(),
        "contact.buyer_role" => contact.buyer_role.clone(),
        "contact.job_title" => contact.job_title.clone(),
        "contact.seniority" => contact.seniority.clone(),
        "contact.department" => contact.department.clone(),
        "contact.phone" => contact.phone.clone(),
        "contact.language" => contact.language.clone(),
        "contact.time_zone" => contact.time_zone.clone(),
        "contact.preferred_channels" => contact
            .preferred_channels()
            .map(|channel| channel.as_str_name().to_owned())
            .collect::<Vec<_>>()
            .join(","),
        "contact.address.street" => address.street,
        "contact.address.postal_code" => address.postal_code,
        "contact.address.city" => address.city,
        "contact.address.country_code" => address.country_code,
        "lead.company_name" => lead.company_name.clone(),
        "lead.web_domain" => lead.web_domain.clone(),
        "lead.site" => lead.site.clone(),
        "lead.industry" => lead.industry.clone(),
        "lead.employee_count" if lead.employee_count > 0 => lead.employee_count.to_string(),
        "lead.employee_count" => String::new(),
        "lead.revenue_band" => lead.revenue_band.clone(),
        "lead.country_code" => lead.country_code.clone(),
        "lead.region" => lead.region.clone(),
        "lead.source" => lead.source.clone(),
        _ => String::new(),
    }
}

/// Sets the value at a profile path from checked text; says why when it does not fit.
pub(crate) fn set_profile_value(
    contact: &mut common::ContactProfile,
    lead: &mut common::LeadProfile,
    path: &str,
    value: &str,
) -> Result<(), String> {
    let text = value.to_owned();
    let address = || common::PostalAddress::default();
    match path {
        "contact.email" => contact.email = text,
        "contact.first_name" => contact.first_name = text,
        "contact.last_name" => contact.last_name = text,
        "contact.buyer_role" => contact.buyer_role = text,
        "contact.job_title" => contact.job_title = text,
        "contact.seniority" => contact.seniority = text,
        "contact.department" => contact.department = text,
        "contact.phone" => contact.phone = text,
        "contact.language" => contact.language = text,
        "contact.time_zone" => contact.time_zone = text,
        "contact.preferred_channels" => {
            let mut channels = Vec::new();
            for name in value
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
            {
                let upper = name.to_uppercase();
                let channel = common::Channel::from_str_name(&upper)
                    .or_else(|| common::Channel::from_str_name(&format!("CHANNEL_{upper}")))
                    .filter(|channel| *channel != common::Channel::Unspecified)
                    .ok_or_else(|| {
                        format!("{name:?} is not a channel (email, social, web, events, phone)")
                    })?;
                channels.push(i32::from(channel));
            }
            contact.preferred_channels = channels;
        }
        "contact.address.street" => contact.address.get_or_insert_with(address).street = text,
        "contact.address.postal_code" => {
            contact.address.get_or_insert_with(address).postal_code = text
        }
        "contact.address.city" => contact.address.get_or_insert_with(address).city = text,
        "contact.address.country_code" => {
            contact.address.get_or_insert_with(address).country_code = text
        }
        "lead.company_name" => lead.company_name = text,
        "lead.web_domain" => lead.web_domain = text,
        "lead.site" => lead.site = text,
        "lead.industry" => lead.industry = text,
        "lead.employee_count" => {
            lead.employee_count = value
                .parse()
                .map_err(|_| "must be a whole number of employees".to_owned())?
        }
        "lead.revenue_band" => lead.revenue_band = text,
        "lead.country_code" => lead.country_code = text,
        "lead.region" => lead.region = text,
        "lead.source" => lead.source = text,
        other => return Err(format!("{other:?} is not a known profile path")),
    }
    Ok(())
}

/// Reads a time that must not lie in the future (beyond clock drift); `now` when unset.
pub(crate) fn past_time(
    violations: &mut FieldViolations,
    field: &str,
    time: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match time.map(from_timestamp) {
        None => now,
        Some(Some(time)) if time <= now + CLOCK_SKEW => time,
        Some(Some(_)) => {
            violations.add(field, "is in the future");
            now
        }
        Some(None) => {
            violations.add(field, "is not a valid time");
            now
        }
    }
}

/// Checks an anonymous visitor id (e.g. a first-party cookie value); None when blank.
pub(crate) fn visitor_id(
    violations: &mut FieldViolations,
    field: &str,
    value: &str,
) -> Option<String> {
    let visitor = value.trim();
    if visitor.is_empty() {
        return None;
    }
    let valid = visitor.chars().count() <= MAX_VISITOR_ID_CHARS
        && visitor.chars().all(|c| c.is_ascii_graphic());
    if !valid {
        violations.add(
            field,
            format!("must be at most {MAX_VISITOR_ID_CHARS} printable characters without spaces"),
        );
    }
    Some(visitor.to_owned())
}

/// A country code as ISO 3166-1 alpha-2 in upper case, or why `value` is not one.
pub(crate) fn country_code(value: &str) -> Result<String, String> {
    if value.len() == 2 && value.chars().all(|c| c.is_ascii_alphabetic()) {
        Ok(value.to_uppercase())
    } else {
        Err("must be an ISO 3166-1 alpha-2 country code such as \"DE\"".to_owned())
    }
}

/// Checks one submitted value by its field's kind and limit; returns it normalised.
fn check_value(field: &FormField, value: &str) -> Result<String, String> {
    let value = value.trim();
    let max_chars = match (field.max_length, field.kind) {
        (0, pb::FormFieldKind::Textarea) => DEFAULT_TEXTAREA_MAX_CHARS,
        (0, _) => DEFAULT_MAX_CHARS,
        (limit, _) => usize::try_from(limit).unwrap_or(usize::MAX),
    };
    let length = value.chars().count();
    if length > max_chars {
        return Err(format!(
            "is {length} characters long; at most {max_chars} are allowed"
        ));
    }
    match field.kind {
        pb::FormFieldKind::Email => EmailAddress::parse(value)
            .map(|email| email.to_string())
            .map_err(|error| error.to_string()),
        pb::FormFieldKind::Phone => {
            let digits = value.chars().filter(char::is_ascii_digit).count();
            let allowed = value
                .chars()
                .all(|c| c.is_ascii_digit() || " +-()/.".contains(c));
            if allowed && (5..=20).contains(&digits) {
                Ok(value.to_owned())
            } else {
                Err("must be a phone number such as \"+49 89 1234567\"".to_owned())
            }
        }
        pb::FormFieldKind::Number => value
            .parse::<u64>()
            .map(|number| number.to_string())
            .map_err(|_| "must be a whole number".to_owned()),
        pb::FormFieldKind::Select => {
            if field.options.iter().any(|option| option == value) {
                Ok(value.to_owned())
            } else {
                Err(format!("{value:?} is not one of the field's options"))
            }
        }
        pb::FormFieldKind::MultiSelect => {
            let chosen: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|choice| !choice.is_empty())
                .collect();
            match chosen
                .iter()
                .find(|choice| !field.options.iter().any(|option| option == *choice))
            {
                Some(unknown) => Err(format!("{unknown:?} is not one of the field's options")),
                None => Ok(chosen.join(",")),
            }
        }
        pb::FormFieldKind::Checkbox => match value.to_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok("true".to_owned()),
            "false" | "off" | "no" | "0" => Ok("false".to_owned()),
            _ => Err("must be true or false".to_owned()),
        },
        pb::FormFieldKind::Country => country_code(value),
        pb::FormFieldKind::Url => {
            let mut violations = FieldViolations::new();
            let url = validate::http_url(&mut violations, "", value);
            if violations.is_empty() {
                Ok(url)
            } else {
                Err("must be an absolute http or https URL".to_owned())
            }
        }
        pb::FormFieldKind::Text
        | pb::FormFieldKind::Textarea
        | pb::FormFieldKind::Hidden
        | pb::FormFieldKind::Unspecified => Ok(value.to_owned()),
    }
}

/// The company a capture names: by its web domain when given, else by the email's domain;
/// none for a free-mail domain.
pub(crate) fn company_of(
    violations: &mut FieldViolations,
    web_domain: &str,
    email: Option<&EmailAddress>,
) -> Option<CompanyDomain> {
    if web_domain.trim().is_empty() {
        return email.and_then(CompanyDomain::of_email);
    }
    match CompanyDomain::parse(web_domain) {
        Ok(domain) => Some(domain),
        Err(DomainError::FreeMail) => None,
        Err(error) => {
            violations.add("lead.web_domain", error.to_string());
            None
        }
    }
}

/// The most custom values one contact holds.
pub(crate) const MAX_CUSTOM_FIELDS: usize = 50;

/// Reads custom values given by name (an import row, an update): names are identifiers,
/// values within the length limit, blank values dropped.
pub(crate) fn custom_field_values<'a>(
    violations: &mut FieldViolations,
    values: impl IntoIterator<Item = (&'a String, &'a String)> + Clone,
) -> BTreeMap<String, String> {
    if values.clone().into_iter().count() > MAX_CUSTOM_FIELDS {
        violations.add(
            "custom_fields",
            format!("must hold at most {MAX_CUSTOM_FIELDS} entries"),
        );
    }
    let mut custom_fields = BTreeMap::new();
    for (name, value) in values {
        let field = format!("custom_fields[{name:?}]");
        let name = validate::identifier(violations, &field, name);
        let value = validate::optional_text(violations, &field, value, DEFAULT_MAX_CHARS);
        if !value.is_empty() {
            custom_fields.insert(name, value);
        }
    }
    custom_fields
}

/// Checks the typed profile texts of the request against the default length limit.
pub(crate) fn check_typed_lengths(
    violations: &mut FieldViolations,
    contact: &common::ContactProfile,
    lead: &common::LeadProfile,
) {
    for path in crate::forms::PROFILE_PATHS {
        if *path == "contact.preferred_channels" {
            continue;
        }
        let value = profile_value(contact, lead, path);
        validate::optional_text(violations, path, &value, DEFAULT_MAX_CHARS);
    }
}

impl Submission {
    /// Reads `request` against `form` at `now`. Which required fields are still missing
    /// depends on what is known of the contact: see [`Submission::missing_required`].
    pub fn parse(
        form: &Form,
        request: &pb::SubmitFormRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let mut contact = request.contact.clone().unwrap_or_default();
        let mut lead = request.lead.clone().unwrap_or_default();
        check_typed_lengths(&mut violations, &contact, &lead);
        let mut custom_fields = BTreeMap::new();
        let mut email_path = "contact.email".to_owned();
        // A wrong email value is reported once, under its field, not again as missing.
        let mut email_reported = false;

        // Field order, not map order, so that the same request always reports the same way.
        let fields = &form.definition.fields;
        for name in request.values.keys() {
            if !fields.iter().any(|field| &field.name == name) {
                violations.add(format!("values[{name:?}]"), "is not a field of this form");
            }
        }
        for field in fields {
            let Some(raw) = request.values.get(&field.name) else {
                continue;
            };
            if raw.trim().is_empty() {
                continue;
            }
            let path = value_path(field);
            let value = match check_value(field, raw) {
                Ok(value) => value,
                Err(reason) => {
                    email_reported |= field.maps_to == "contact.email";
                    violations.add(&path, reason);
                    continue;
                }
            };
            if field.maps_to.is_empty() {
                custom_fields.insert(field.name.clone(), value);
                continue;
            }
            let typed = profile_value(&contact, &lead, &field.maps_to);
            if !typed.is_empty() && !typed.trim().eq_ignore_ascii_case(&value) {
                violations.add(
                    &path,
                    format!("contradicts {} given as {typed:?}", field.maps_to),
                );
                continue;
            }
            if field.maps_to == "contact.email" {
                email_path = path.clone();
            }
            if let Err(reason) = set_profile_value(&mut contact, &mut lead, &field.maps_to, &value)
            {
                violations.add(&path, reason);
            }
        }

        let email = match EmailAddress::parse(&contact.email) {
            Ok(email) => {
                contact.email = email.to_string();
                Some(email)
            }
            Err(error) => {
                if !email_reported {
                    violations.add(&email_path, error.to_string());
                }
                None
            }
        };
        let company = company_of(&mut violations, &lead.web_domain, email.as_ref());
        lead.web_domain = company
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();

        let source = if request.source.trim().is_empty() {
            DEFAULT_SOURCE.to_owned()
        } else {
            validate::identifier(&mut violations, "source", &request.source)
        };
        let visitor_id = visitor_id(&mut violations, "visitor_id", &request.visitor_id);
        let submitted_at = past_time(
            &mut violations,
            "submitted_at",
            request.submitted_at.as_ref(),
            now,
        );
        if form.definition.consent_required && !request.consent_given {
            violations.add(
                "consent_given",
                "must be true: the form asks for consent before it takes a submission",
            );
        }

        violations.into_result()?;
        let email = email.ok_or_else(|| FieldViolations::single(&email_path, "is required"))?;
        Ok(Self {
            form_id: form.form_id,
            email,
            contact,
            lead,
            custom_fields,
            company,
            source,
            attribution: request.attribution.clone(),
            consent_given: request.consent_given,
            visitor_id,
            client: request.client.clone(),
            submitted_at,
        })
    }

    /// The required fields of `form` that neither this submission nor what is already known
    /// of the contact (`known_contact`, `known_lead`, `known_custom`) fills.
    pub fn missing_required(
        &self,
        form: &Form,
        known_contact: &common::ContactProfile,
        known_lead: &common::LeadProfile,
        known_custom: &BTreeMap<String, String>,
    ) -> FieldViolations {
        let mut violations = FieldViolations::new();
        for field in form.definition.fields.iter().filter(|field| field.required) {
            let filled = if field.maps_to.is_empty() {
                self.custom_fields.contains_key(&field.name)
                    || known_custom.contains_key(&field.name)
            } else {
                !profile_value(&self.contact, &self.lead, &field.maps_to).is_empty()
                    || !profile_value(known_contact, known_lead, &field.maps_to).is_empty()
            };
            if !filled {
                violations.add(value_path(field), "is required");
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: pb::FormFieldKind, maps_to: &str, required: bool) -> FormField {
        FormField {
            name: name.to_owned(),
            label: name.to_owned(),
            required,
            kind,
            maps_to: maps_to.to_owned(),
            options: Vec::new(),
            max_length: 0,
        }
    }

    fn form(consent_required: bool) -> Form {
        let mut size = field("size", pb::FormFieldKind::Select, "", false);
        size.options = vec!["1-49".to_owned(), "50-249".to_owned()];
        let mut note = field("note", pb::FormFieldKind::Textarea, "", false);
        note.max_length = 10;
        let now = Utc::now();
        Form {
            form_id: Uuid::now_v7(),
            definition: crate::forms::NewForm {
                name: "Whitepaper".to_owned(),
                product: "erp".to_owned(),
                state: pb::FormState::Active,
                fields: vec![
                    field("email", pb::FormFieldKind::Email, "contact.email", true),
                    field(
                        "company",
                        pb::FormFieldKind::Text,
                        "lead.company_name",
                        true,
                    ),
                    field(
                        "job_title",
                        pb::FormFieldKind::Text,
                        "contact.job_title",
                        false,
                    ),
                    field(
                        "employees",
                        pb::FormFieldKind::Number,
                        "lead.employee_count",
                        false,
                    ),
                    field(
                        "country",
                        pb::FormFieldKind::Country,
                        "lead.country_code",
                        false,
                    ),
                    size,
                    note,
                ],
                consent_wording: "Send me news".to_owned(),
                consent_wording_version: "v1".to_owned(),
                consent_purpose: "nurture-email".to_owned(),
                consent_required,
                double_opt_in: true,
                ask_next_fields: Vec::new(),
                ask_next_limit: 0,
                allowed_origins: Vec::new(),
                success_url: String::new(),
            },
            revision: 1,
            create_time: now,
            update_time: now,
            consent_wording_history: Vec::new(),
        }
    }

    fn request(values: &[(&str, &str)]) -> pb::SubmitFormRequest {
        pb::SubmitFormRequest {
            values: values
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            consent_given: true,
            idempotency_key: "key".to_owned(),
            ..Default::default()
        }
    }

    fn fields_of(violations: &FieldViolations) -> Vec<String> {
        violations
            .iter()
            .map(|(field, _)| field.to_owned())
            .collect()
    }

    #[test]
    fn values_land_where_their_fields_map_them() {
        let form = form(false);
        let submission = Submission::parse(
            &form,
            &request(&[
                ("email", " Jana.Novak@ACME.example "),
                ("company", "ACME GmbH"),
                ("employees", "250"),
                ("country", "de"),
                ("size", "50-249"),
            ]),
            Utc::now(),
        )
        .expect("valid");
        assert_eq!(submission.email.as_str(), "jana.novak@acme.example");
        assert_eq!(submission.contact.email, "jana.novak@acme.example");
        assert_eq!(submission.lead.company_name, "ACME GmbH");
        assert_eq!(submission.lead.employee_count, 250);
        assert_eq!(submission.lead.country_code, "DE");
        assert_eq!(
            submission.lead.web_domain, "acme.example",
            "taken from the email"
        );
        assert_eq!(
            submission.company.map(|domain| domain.to_string()),
            Some("acme.example".to_owned())
        );
        assert_eq!(submission.custom_fields["size"], "50-249");
        assert_eq!(submission.source, DEFAULT_SOURCE);
    }

    #[test]
    fn a_free_mail_address_names_no_company() {
        let submission = Submission::parse(
            &form(false),
            &request(&[("email", "jana@gmail.com"), ("company", "-")]),
            Utc::now(),
        )
        .expect("valid");
        assert_eq!(submission.company, None);
        assert_eq!(submission.lead.web_domain, "");
    }

    #[test]
    fn every_wrong_value_is_reported_under_its_field() {
        let mut bad = request(&[
            ("email", "not-an-email"),
            ("employees", "many"),
            ("country", "Germany"),
            ("size", "5000+"),
            ("note", "far too long for ten"),
            ("favourite_colour", "blue"),
        ]);
        bad.visitor_id = "has spaces in it".to_owned();
        bad.submitted_at = Some(leadflow_platform::time::to_timestamp(
            Utc::now() + Duration::days(1),
        ));
        bad.consent_given = false;
        let violations = Submission::parse(&form(true), &bad, Utc::now()).expect_err("invalid");
        let mut fields = fields_of(&violations);
        fields.sort();
        assert_eq!(
            fields,
            [
                "consent_given",
                "submitted_at",
                "values[\"country\"]",
                "values[\"email\"]",
                "values[\"employees\"]",
                "values[\"favourite_colour\"]",
                "values[\"note\"]",
                "values[\"size\"]",
                "visitor_id",
            ]
        );
    }

    #[test]
    fn a_value_that_contradicts_the_typed_profile_is_refused() {
        let mut contradicting = request(&[("email", "jana@acme.example"), ("job_title", "CTO")]);
        contradicting.contact = Some(common::ContactProfile {
            job_title: "CFO".to_owned(),
            ..Default::default()
        });
        let violations =
            Submission::parse(&form(false), &contradicting, Utc::now()).expect_err("invalid");
        assert_eq!(fields_of(&violations), ["values[\"job_title\"]"]);

        let mut agreeing = request(&[("email", "jana@acme.example"), ("job_title", "cto")]);
        agreeing.contact = Some(common::ContactProfile {
            job_title: "CTO".to_owned(),
            ..Default::default()
        });
        assert!(Submission::parse(&form(false), &agreeing, Utc::now()).is_ok());
    }

    #[test]
    fn typed_values_count_and_a_bad_typed_domain_is_named() {
        let mut typed = request(&[]);
        typed.contact = Some(common::ContactProfile {
            email: "jana@gmail.com".to_owned(),
            ..Default::default()
        });
        typed.lead = Some(common::LeadProfile {
            web_domain: "https://www.ACME.example/de".to_owned(),
            ..Default::default()
        });
        let submission = Submission::parse(&form(false), &typed, Utc::now()).expect("valid");
        assert_eq!(
            submission.lead.web_domain, "acme.example",
            "a company domain wins over free mail"
        );

        typed.lead = Some(common::LeadProfile {
            web_domain: "not a domain".to_owned(),
            ..Default::default()
        });
        let violations = Submission::parse(&form(false), &typed, Utc::now()).expect_err("invalid");
        assert_eq!(fields_of(&violations), ["lead.web_domain"]);

        typed.contact = None;
        typed.lead = None;
        let violations = Submission::parse(&form(false), &typed, Utc::now()).expect_err("invalid");
        assert_eq!(fields_of(&violations), ["contact.email"]);
    }

    #[test]
    fn a_required_field_may_be_left_out_when_the_contact_has_it() {
        let form = form(false);
        let submission = Submission::parse(
            &form,
            &request(&[("email", "jana@acme.example")]),
            Utc::now(),
        )
        .expect("valid");
        let unknown = submission.missing_required(
            &form,
            &common::ContactProfile::default(),
            &common::LeadProfile::default(),
            &BTreeMap::new(),
        );
        assert_eq!(fields_of(&unknown), ["values[\"company\"]"]);
        let known_lead = common::LeadProfile {
            company_name: "ACME GmbH".to_owned(),
            ..Default::default()
        };
        let known = submission.missing_required(
            &form,
            &common::ContactProfile::default(),
            &known_lead,
            &BTreeMap::new(),
        );
        assert!(known.is_empty(), "{known}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever a browser posts, the parser answers with a submission or with violations
        /// that each name a field; it never panics.
        #[test]
        fn any_posted_values_parse_or_name_their_fields(
            values in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "email", "company", "job_title", "employees", "country", "size", "note",
                        "unknown",
                    ]),
                    proptest::prelude::any::<String>(),
                ),
                0..10,
            ),
            consent in proptest::prelude::any::<bool>(),
        ) {
            let pairs: Vec<(&str, &str)> =
                values.iter().map(|(name, value)| (*name, value.as_str())).collect();
            let mut posted = request(&pairs);
            posted.consent_given = consent;
            match Submission::parse(&form(consent), &posted, Utc::now()) {
                Ok(submission) => proptest::prop_assert!(submission.email.as_str().contains('@')),
                Err(violations) => proptest::prop_assert!(
                    violations.iter().all(|(field, reason)| !field.is_empty() && !reason.is_empty())
                ),
            }
        }
    }
}
