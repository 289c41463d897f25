//! Capture forms: what a form asks for and where each answer goes in the contact or lead
//! profile, which fields are required, the consent wording it shows (and its version),
//! double opt-in, the product it is about, and what to ask a known contact next.

use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::capture::v1 as pb;
use uuid::Uuid;

/// The most fields one form may have.
const MAX_FIELDS: usize = 100;
/// The most options a select field may offer.
const MAX_OPTIONS: usize = 500;
/// The consent purpose of a form that names none.
pub const DEFAULT_CONSENT_PURPOSE: &str = "nurture-email";

/// The profile values a form field may fill.
pub(crate) const PROFILE_PATHS: &[&str] = &[
    "contact.email",
    "contact.first_name",
    "contact.last_name",
    "contact.buyer_role",
    "contact.job_title",
    "contact.seniority",
    "contact.department",
    "contact.phone",
    "contact.language",
    "contact.time_zone",
    "contact.preferred_channels",
    "contact.address.street",
    "contact.address.postal_code",
    "contact.address.city",
    "contact.address.country_code",
    "lead.company_name",
    "lead.web_domain",
    "lead.site",
    "lead.industry",
    "lead.employee_count",
    "lead.revenue_band",
    "lead.country_code",
    "lead.region",
    "lead.source",
];

/// A form definition that passed validation and is ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewForm {
    /// The name the marketing team knows it by.
    pub name: String,
    /// The product it is about; empty for none.
    pub product: String,
    /// Whether it takes submissions.
    pub state: pb::FormState,
    /// The fields, in display order.
    pub fields: Vec<FormField>,
    /// The consent wording shown beside the opt-in box; empty for no consent.
    pub consent_wording: String,
    /// The version of that wording, kept with every consent as evidence.
    pub consent_wording_version: String,
    /// What the consent covers.
    pub consent_purpose: String,
    /// Whether a submission without consent is refused.
    pub consent_required: bool,
    /// Whether consent must be confirmed by a link in a mail.
    pub double_opt_in: bool,
    /// The fields to ask a known contact next (progressive profiling).
    pub ask_next_fields: Vec<String>,
    /// How many of them at once; 0 for all.
    pub ask_next_limit: u32,
    /// The web origins that may post the form.
    pub allowed_origins: Vec<String>,
    /// Where a browser goes after a successful post; empty for a JSON answer.
    pub success_url: String,
}

/// One field of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormField {
    /// The field's key in submissions, such as `job_title`.
    pub name: String,
    /// The label shown to the visitor.
    pub label: String,
    /// Whether a submission without it is refused (unless the contact has the value).
    pub required: bool,
    /// The kind of input.
    pub kind: pb::FormFieldKind,
    /// The profile path it fills; empty for a custom value.
    pub maps_to: String,
    /// The values a select field offers.
    pub options: Vec<String>,
    /// The longest value, in characters; 0 for the default limit.
    pub max_length: u32,
}

/// A stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// The form's id.
    pub form_id: Uuid,
    /// The definition.
    pub definition: NewForm,
    /// 1 when created, one more with every update.
    pub revision: i64,
    /// When it was created.
    pub create_time: DateTime<Utc>,
    /// When it last changed.
    pub update_time: DateTime<Utc>,
    /// The consent wordings it showed before the current one, oldest first.
    pub consent_wording_history: Vec<pb::ConsentWording>,
}

fn field_name(violations: &mut FieldViolations, path: &str, value: &str) -> String {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if value.is_empty() {
        violations.add(path, "is required");
    } else if !valid {
        violations.add(path, "must be at most 64 letters, digits, '_' or '-'");
    }
    value.to_owned()
}

fn origin(violations: &mut FieldViolations, path: &str, value: &str) -> String {
    let valid = value.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && uri
                .path_and_query()
                .is_none_or(|path| path.as_str().is_empty() || path.as_str() == "/")
    });
    if !valid {
        violations.add(
            path,
            "must be an http or https origin such as \"https://www.example.com\"",
        );
    }
    value.trim_end_matches('/').to_owned()
}

fn parse_field(violations: &mut FieldViolations, index: usize, field: &pb::FormField) -> FormField {
    let path = format!("form.fields[{index}]");
    let name = field_name(violations, &format!("{path}.name"), field.name.trim());
    let label = validate::optional_text(violations, &format!("{path}.label"), &field.label, 200);
    let kind = match pb::FormFieldKind::try_from(field.kind) {
        Ok(pb::FormFieldKind::Unspecified) | Err(_) => {
            violations.add(format!("{path}.kind"), "must be a known field kind");
            pb::FormFieldKind::Unspecified
        }
        Ok(kind) => kind,
    };
    let maps_to = field.maps_to.trim().to_owned();
    if !maps_to.is_empty() && !PROFILE_PATHS.contains(&maps_to.as_str()) {
        violations.add(
            format!("{path}.maps_to"),
            format!("{maps_to:?} is not a known profile path"),
        );
    }
    let is_select = matches!(
        kind,
        pb::FormFieldKind::Select | pb::FormFieldKind::MultiSelect
    );
    if is_select && field.options.is_empty() {
        violations.add(format!("{path}.options"), "are required for a select field");
    } else if !is_select && !field.options.is_empty() {
        violations.add(
            format!("{path}.options"),
            "are only allowed for select fields",
        );
    } else if field.options.len() > MAX_OPTIONS {
        violations.add(
            format!("{path}.options"),
            format!("must be at most {MAX_OPTIONS}"),
        );
    }
    let options = field
        .options
        .iter()
        .enumerate()
        .map(|(option_index, option)| {
            validate::required_text(
                violations,
                &format!("{path}.options[{option_index}]"),
                option,
                200,
            )
        })
        .collect();
    FormField {
        name,
        label,
        required: field.required,
        kind,
        maps_to,
        options,
        max_length: field.max_length,
    }
}

impl NewForm {
    /// Parses the `form` of a create request; every problem is reported under its field path.
    pub fn parse(form: Option<&pb::Form>) -> Result<Self, FieldViolations> {
        let Some(form) = form else {
            return Err(FieldViolations::single("form", "is required"));
        };
        let mut violations = FieldViolations::new();
        let name = validate::required_text(&mut violations, "form.name", &form.name, 200);
        let product = if form.product.trim().is_empty() {
            String::new()
        } else {
            validate::identifier(&mut violations, "form.product", &form.product)
        };
        let state = match pb::FormState::try_from(form.state) {
            Ok(pb::FormState::Unspecified) => pb::FormState::Active,
            Ok(state) => state,
            Err(_) => {
                violations.add("form.state", "must be a known form state");
                pb::FormState::Active
            }
        };

        if form.fields.is_empty() {
            violations.add("form.fields", "must have at least one field");
        } else if form.fields.len() > MAX_FIELDS {
            violations.add(
                "form.fields",
                format!("must have at most {MAX_FIELDS} fields"),
            );
        }
        let mut fields: Vec<FormField> = Vec::with_capacity(form.fields.len());
        for (index, field) in form.fields.iter().enumerate() {
            let field = parse_field(&mut violations, index, field);
            if !field.name.is_empty() && fields.iter().any(|earlier| earlier.name == field.name) {
                violations.add(
                    format!("form.fields[{index}].name"),
                    format!("repeats the field name {:?}", field.name),
                );
            }
            if !field.maps_to.is_empty()
                && fields
                    .iter()
                    .any(|earlier| earlier.maps_to == field.maps_to)
            {
                violations.add(
                    format!("form.fields[{index}].maps_to"),
                    "is filled by another field already",
                );
            }
            fields.push(field);
        }
        let email_fields = fields
            .iter()
            .filter(|field| {
                field.required
                    && field.kind == pb::FormFieldKind::Email
                    && field.maps_to == "contact.email"
            })
            .count();
        if !form.fields.is_empty() && email_fields != 1 {
            violations.add(
                "form.fields",
                "must hold exactly one required field of kind FORM_FIELD_KIND_EMAIL mapped to \"contact.email\"",
            );
        }

        let consent_wording = validate::optional_text(
            &mut violations,
            "form.consent_wording",
            &form.consent_wording,
            4_000,
        );
        let consent_wording_version = validate::optional_text(
            &mut violations,
            "form.consent_wording_version",
            &form.consent_wording_version,
            64,
        );
        if !consent_wording.is_empty() && consent_wording_version.is_empty() {
            violations.add(
                "form.consent_wording_version",
                "is required with a consent wording",
            );
        }
        if consent_wording.is_empty() && !consent_wording_version.is_empty() {
            violations.add(
                "form.consent_wording",
                "is required with a consent wording version",
            );
        }
        if (form.double_opt_in || form.consent_required) && consent_wording.is_empty() {
            violations.add(
                "form.consent_wording",
                "is required when the form asks for consent",
            );
        }
        let consent_purpose = if form.consent_purpose.trim().is_empty() {
            DEFAULT_CONSENT_PURPOSE.to_owned()
        } else {
            validate::identifier(
                &mut violations,
                "form.consent_purpose",
                &form.consent_purpose,
            )
        };

        let mut ask_next_fields: Vec<String> = Vec::with_capacity(form.ask_next_fields.len());
        for (index, field) in form.ask_next_fields.iter().enumerate() {
            let path = format!("form.ask_next_fields[{index}]");
            let field = field.trim().to_owned();
            if !fields.iter().any(|known| known.name == field) {
                violations.add(
                    &path,
                    format!("names {field:?}, which is not a field of the form"),
                );
            } else if ask_next_fields.contains(&field) {
                violations.add(&path, "is repeated");
            }
            ask_next_fields.push(field);
        }
        let allowed_origins = form
            .allowed_origins
            .iter()
            .enumerate()
            .map(|(index, value)| {
                origin(
                    &mut violations,
                    &format!("form.allowed_origins[{index}]"),
                    value.trim(),
                )
            })
            .collect();
        let success_url = if form.success_url.trim().is_empty() {
            String::new()
        } else {
            validate::http_url(&mut violations, "form.success_url", &form.success_url)
        };

        violations.into_result()?;
        Ok(Self {
            name,
            product,
            state,
            fields,
            consent_wording,
            consent_wording_version,
            consent_purpose,
            consent_required: form.consent_required,
            double_opt_in: form.double_opt_in,
            ask_next_fields,
            ask_next_limit: form.ask_next_limit,
            allowed_origins,
            success_url,
        })
    }
}

impl From<&FormField> for pb::FormField {
    fn from(field: &FormField) -> Self {
        Self {
            name: field.name.clone(),
            label: field.label.clone(),
            required: field.required,
            kind: field.kind.into(),
            maps_to: field.maps_to.clone(),
            options: field.options.clone(),
            max_length: field.max_length,
        }
    }
}

impl From<&Form> for pb::Form {
    fn from(form: &Form) -> Self {
        let definition = &form.definition;
        Self {
            form_id: form.form_id.to_string(),
            name: definition.name.clone(),
            product: definition.product.clone(),
            fields: definition.fields.iter().map(Into::into).collect(),
            consent_wording: definition.consent_wording.clone(),
            consent_wording_version: definition.consent_wording_version.clone(),
            double_opt_in: definition.double_opt_in,
            ask_next_fields: definition.ask_next_fields.clone(),
            create_time: Some(to_timestamp(form.create_time)),
            update_time: Some(to_timestamp(form.update_time)),
            consent_purpose: definition.consent_purpose.clone(),
            consent_required: definition.consent_required,
            ask_next_limit: definition.ask_next_limit,
            state: definition.state.into(),
            allowed_origins: definition.allowed_origins.clone(),
            success_url: definition.success_url.clone(),
            consent_wording_history: form.consent_wording_history.clone(),
            revision: form.revision,
        }
    }
}
