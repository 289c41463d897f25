//! Mail templates: a subject, an HTML part and a text part with merge fields, checked by
//! the template engine before they are stored, and never changed afterwards.

use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::nurturing::v1 as pb;
use uuid::Uuid;

use crate::mail::{MailTemplate, TemplateError};

/// The longest template name.
const MAX_NAME_CHARS: usize = 200;
/// The longest subject template; a subject line is short, its template not much longer.
const MAX_SUBJECT_CHARS: usize = 1_000;
/// The longest body template, which bounds what every send renders.
const MAX_BODY_CHARS: usize = 200_000;

/// A template that compiled against the merge fields and is ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMailTemplate {
    /// The name the marketing team knows it by.
    pub name: String,
    /// Its language (BCP 47).
    pub language: String,
    /// The subject line template.
    pub subject: String,
    /// The HTML part template.
    pub html_body: String,
    /// The plain-text part template.
    pub text_body: String,
    /// The merge fields the parts name, sorted.
    pub merge_fields: Vec<String>,
}

/// A stored mail template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMailTemplate {
    /// The template's id.
    pub template_id: Uuid,
    /// What it says.
    pub template: NewMailTemplate,
    /// When it was created.
    pub create_time: DateTime<Utc>,
}

impl NewMailTemplate {
    /// Parses the `template` of a create request; every problem is reported under its
    /// field path, each part's template errors under that part.
    pub fn parse(template: Option<&pb::MailTemplate>) -> Result<Self, FieldViolations> {
        let Some(template) = template else {
            return Err(FieldViolations::single("template", "is required"));
        };
        let mut violations = FieldViolations::new();
        let name = validate::required_text(
            &mut violations,
            "template.name",
            &template.name,
            MAX_NAME_CHARS,
        );
        let language =
            validate::language_tag(&mut violations, "template.language", &template.language);
        // The parts are kept as written: a text body's leading blank line or trailing newline
        // is the author's layout.
        let mut parts_present = true;
        for (field, source, max_chars) in [
            ("template.subject", &template.subject, MAX_SUBJECT_CHARS),
            ("template.html_body", &template.html_body, MAX_BODY_CHARS),
            ("template.text_body", &template.text_body, MAX_BODY_CHARS),
        ] {
            if source.trim().is_empty() {
                violations.add(field, "is required");
                parts_present = false;
            } else if source.chars().count() > max_chars {
                violations.add(field, format!("must be at most {max_chars} characters"));
                parts_present = false;
            }
        }
        let mut merge_fields = Vec::new();
        // An empty part would only add the engine's complaint to "is required".
        if parts_present {
            match MailTemplate::compile(&template.subject, &template.html_body, &template.text_body)
            {
                Ok(compiled) => merge_fields = compiled.merge_fields(),
                Err(errors) => {
                    for error in errors.errors() {
                        violations.add(
                            format!("template.{}", error.part()),
                            template_error_description(error),
                        );
                    }
                }
            }
        }
        violations.into_result()?;
        Ok(Self {
            name,
            language,
            subject: template.subject.clone(),
            html_body: template.html_body.clone(),
            text_body: template.text_body.clone(),
            merge_fields,
        })
    }
}

/// What a client is told about one template error.
fn template_error_description(error: &TemplateError) -> String {
    match error {
        TemplateError::UnknownField { field, .. } => format!(
            "names the unknown merge field {field:?}; known fields are {}",
            crate::mail::MERGE_FIELDS.join(", ")
        ),
        TemplateError::Syntax { message, .. } => format!("does not parse: {message}"),
        TemplateError::Render { message, .. } => {
            format!("cannot be rendered with sample values: {message}")
        }
    }
}

impl From<&StoredMailTemplate> for pb::MailTemplate {
    fn from(stored: &StoredMailTemplate) -> Self {
        let template = &stored.template;
        Self {
            template_id: stored.template_id.to_string(),
            name: template.name.clone(),
            language: template.language.clone(),
            subject: template.subject.clone(),
            html_body: template.html_body.clone(),
            text_body: template.text_body.clone(),
            merge_fields: template.merge_fields.clone(),
            create_time: Some(to_timestamp(stored.create_time)),
        }
    }
}
