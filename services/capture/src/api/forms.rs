//! Form handlers: define, read, list and change capture forms, and say which fields a form
//! should ask one visitor or contact right now.

use leadflow_platform::{FieldViolations, validate};
use leadflow_proto::capture::v1::{self as pb, resolve_form_fields_request::Subject};
use leadflow_storage::{IdempotencyKey, Stored};

use super::CaptureApi;
use crate::{
    error::CaptureError,
    forms::NewForm,
    profiling::{KnownProfile, fields_to_ask},
    repository::{FormFilter, FormUpdate},
    submission::visitor_id,
};

/// The page size of a listing that asks for none.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page a listing returns.
const MAX_PAGE_SIZE: u32 = 200;

/// The form fields an update may change.
const UPDATABLE_PATHS: &[&str] = &[
    "name",
    "product",
    "state",
    "fields",
    "consent_wording",
    "consent_wording_version",
    "consent_purpose",
    "consent_required",
    "double_opt_in",
    "ask_next_fields",
    "ask_next_limit",
    "allowed_origins",
    "success_url",
];

/// The form fields the server keeps.
const FIXED_PATHS: &[&str] = &[
    "form_id",
    "revision",
    "create_time",
    "update_time",
    "consent_wording_history",
];

pub(super) async fn create_form(
    api: &CaptureApi,
    request: pb::CreateFormRequest,
) -> Result<pb::CreateFormResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let form = NewForm::parse(request.form.as_ref())
        .map_err(|form_violations| violations.extend(form_violations))
        .ok();
    violations.into_result()?;
    let form = form.expect("no violations means the form parsed");
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    match api.forms.create_form(form, key, api.now()).await? {
        Stored::Done(form) => {
            tracing::info!(form_id = %form.form_id, "form created");
            Ok(pb::CreateFormResponse {
                form: Some((&form).into()),
            })
        }
        Stored::KeyReused => Err(CaptureError::IdempotencyKeyReused),
    }
}

pub(super) async fn get_form(
    api: &CaptureApi,
    request: pb::GetFormRequest,
) -> Result<pb::GetFormResponse, CaptureError> {
    let form_id = validate::required_uuid("form_id", &request.form_id)?;
    let form = api
        .forms
        .get_form(form_id)
        .await?
        .ok_or(CaptureError::FormNotFound(form_id))?;
    Ok(pb::GetFormResponse {
        form: Some((&form).into()),
    })
}

pub(super) async fn list_forms(
    api: &CaptureApi,
    request: pb::ListFormsRequest,
) -> Result<pb::ListFormsResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let product = match request.product.trim() {
        "" => None,
        product => Some(validate::identifier(&mut violations, "product", product)),
    };
    let state = match pb::FormState::try_from(request.state) {
        Ok(pb::FormState::Unspecified) => None,
        Ok(state) => Some(state),
        Err(_) => {
            violations.add("state", "must be a known form state");
            None
        }
    };
    let limit = validate::page_size(
        &mut violations,
        "page_size",
        request.page_size,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    );
    let after = validate::page_token(&mut violations, &request.page_token);
    violations.into_result()?;
    let page = api
        .forms
        .list_forms(&FormFilter { product, state }, after, limit)
        .await?;
    Ok(pb::ListFormsResponse {
        forms: page.items.iter().map(Into::into).collect(),
        next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
    })
}

/// Copies the field at `path` of `from` into `into`.
fn apply_path(into: &mut pb::Form, from: &pb::Form, path: &str) {
    match path {
        "name" => into.name.clone_from(&from.name),
        "product" => into.product.clone_from(&from.product),
        "state" => into.state = from.state,
        "fields" => into.fields.clone_from(&from.fields),
        "consent_wording" => into.consent_wording.clone_from(&from.consent_wording),
        "consent_wording_version" => into
            .consent_wording_version
            .clone_from(&from.consent_wording_version),
        "consent_purpose" => into.consent_purpose.clone_from(&from.consent_purpose),
        "consent_required" => into.consent_required = from.consent_required,
        "double_opt_in" => into.double_opt_in = from.double_opt_in,
        "ask_next_fields" => into.ask_next_fields.clone_from(&from.ask_next_fields),
        "ask_next_limit" => into.ask_next_limit = from.ask_next_limit,
        "allowed_origins" => into.allowed_origins.clone_from(&from.allowed_origins),
        "success_url" => into.success_url.clone_from(&from.success_url),
        _ => {}
    }
}

pub(super) async fn update_form(
    api: &CaptureApi,
    request: pb::UpdateFormRequest,
) -> Result<pb::UpdateFormResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let key = validate::idempotency_key(&mut violations, &request.idempotency_key);
    let changes = request.form.clone().unwrap_or_default();
    let form_id = validate::uuid(&mut violations, "form.form_id", &changes.form_id);
    let paths = request
        .update_mask
        .as_ref()
        .map(|mask| mask.paths.clone())
        .unwrap_or_default();
    if paths.is_empty() {
        violations.add("update_mask", "is required: name the fields to change");
    }
    for path in &paths {
        if FIXED_PATHS.contains(&path.as_str()) {
            violations.add("update_mask", format!("{path:?} cannot be changed"));
        } else if !UPDATABLE_PATHS.contains(&path.as_str()) {
            violations.add("update_mask", format!("{path:?} is not a field of a form"));
        }
    }
    if request.expected_revision < 0 {
        violations.add("expected_revision", "must not be negative");
    }
    violations.into_result()?;
    let form_id = form_id.expect("no violations means the id parsed");
    let current = api
        .forms
        .get_form(form_id)
        .await?
        .ok_or(CaptureError::FormNotFound(form_id))?;

    let mut updated = pb::Form::from(&current);
    for path in &paths {
        apply_path(&mut updated, &changes, path);
    }
    let definition = NewForm::parse(Some(&updated))?;
    let before = &current.definition;
    let mut wording = FieldViolations::new();
    if definition.consent_wording != before.consent_wording
        && definition.consent_wording_version == before.consent_wording_version
        && !definition.consent_wording.is_empty()
    {
        wording.add(
            "form.consent_wording_version",
            "must change when consent_wording changes, so consent given under the earlier \
             wording stays provable",
        );
    }
    if definition.consent_wording_version != before.consent_wording_version
        && current
            .consent_wording_history
            .iter()
            .any(|earlier| earlier.version == definition.consent_wording_version)
    {
        wording.add(
            "form.consent_wording_version",
            "was used by an earlier wording of this form: choose a new version",
        );
    }
    wording.into_result()?;

    let expected = (request.expected_revision > 0).then_some(request.expected_revision);
    let key = IdempotencyKey::for_request(key, &request, |request| request.idempotency_key.clear());
    match api
        .forms
        .update_form(form_id, definition, expected, key, api.now())
        .await?
    {
        Stored::Done(FormUpdate::Updated(form)) => {
            tracing::info!(%form_id, revision = form.revision, "form updated");
            Ok(pb::UpdateFormResponse {
                form: Some(form.as_ref().into()),
            })
        }
        Stored::Done(FormUpdate::NotFound) => Err(CaptureError::FormNotFound(form_id)),
        Stored::Done(FormUpdate::RevisionMismatch { actual }) => {
            Err(CaptureError::RevisionMismatch {
                expected: request.expected_revision,
                actual,
            })
        }
        Stored::KeyReused => Err(CaptureError::IdempotencyKeyReused),
    }
}

pub(super) async fn resolve_form_fields(
    api: &CaptureApi,
    request: pb::ResolveFormFieldsRequest,
) -> Result<pb::ResolveFormFieldsResponse, CaptureError> {
    let mut violations = FieldViolations::new();
    let form_id = validate::uuid(&mut violations, "form_id", &request.form_id);
    let contact_id = match &request.subject {
        Some(Subject::ContactId(contact_id)) => {
            validate::uuid(&mut violations, "contact_id", contact_id)
        }
        _ => None,
    };
    let visitor = match &request.subject {
        Some(Subject::VisitorId(visitor)) => visitor_id(&mut violations, "visitor_id", visitor),
        _ => None,
    };
    violations.into_result()?;
    let form_id = form_id.expect("no violations means the id parsed");
    let form = api
        .forms
        .get_form(form_id)
        .await?
        .ok_or(CaptureError::FormNotFound(form_id))?;

    let mut unit = api.read().await?;
    let contact_id = match (contact_id, visitor) {
        (Some(contact_id), _) => Some(contact_id),
        // A visitor that identified itself before is the contact it turned out to be.
        (None, Some(visitor)) => unit
            .visitor(&visitor)
            .await?
            .and_then(|visitor| visitor.contact_id),
        (None, None) => None,
    };
    let known = match contact_id {
        Some(contact_id) => {
            let contact = unit
                .contact(contact_id)
                .await?
                .ok_or(CaptureError::ContactNotFound)?;
            let lead = unit
                .lead(contact.lead_id)
                .await?
                .map(|lead| lead.profile)
                .unwrap_or_default();
            Some((contact, lead))
        }
        None => None,
    };
    let fields = fields_to_ask(
        &form,
        known.as_ref().map(|(contact, lead)| KnownProfile {
            contact: &contact.profile,
            lead,
            custom_fields: &contact.custom_fields,
        }),
    );
    Ok(pb::ResolveFormFieldsResponse {
        fields: fields.iter().map(Into::into).collect(),
        known_contact: known.is_some(),
    })
}
