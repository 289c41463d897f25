//! Capture forms through the gRPC API: stored and read back, listed page by page, created
//! once per idempotency key, refused with each wrong field named.

use leadflow_proto::capture::v1::{
    CreateFormRequest, Form, FormField, FormFieldKind, FormState, GetFormRequest, ListFormsRequest,
};
use leadflow_tests::TestSuite;
use tonic::Code;
use tonic_types::StatusExt;

pub(crate) fn field(name: &str, kind: FormFieldKind, maps_to: &str, required: bool) -> FormField {
    FormField {
        name: name.to_owned(),
        label: name.replace('_', " "),
        required,
        kind: kind.into(),
        maps_to: maps_to.to_owned(),
        ..Default::default()
    }
}

pub(crate) fn whitepaper_form() -> Form {
    Form {
        name: "Whitepaper ERP (de)".to_owned(),
        product: "erp".to_owned(),
        fields: vec![
            field("email", FormFieldKind::Email, "contact.email", true),
            field(
                "first_name",
                FormFieldKind::Text,
                "contact.first_name",
                true,
            ),
            field("industry", FormFieldKind::Text, "lead.industry", false),
            field("job_title", FormFieldKind::Text, "contact.job_title", false),
        ],
        consent_wording: "Ich möchte Informationen per E-Mail erhalten.".to_owned(),
        consent_wording_version: "2026-01".to_owned(),
        double_opt_in: true,
        ask_next_fields: vec!["industry".to_owned(), "job_title".to_owned()],
        allowed_origins: vec!["https://www.example.com".to_owned()],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_form_is_stored_with_server_fields_and_read_back() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut capture = suite.capture();
    let created = capture
        .create_form(CreateFormRequest {
            form: Some(whitepaper_form()),
            idempotency_key: "form-1".to_owned(),
        })
        .await?
        .into_inner()
        .form
        .expect("form");
    assert!(uuid::Uuid::parse_str(&created.form_id).is_ok());
    assert_eq!(created.revision, 1);
    assert_eq!(created.state(), FormState::Active);
    assert_eq!(
        created.consent_purpose, "nurture-email",
        "the default purpose"
    );
    assert_eq!(created.fields, whitepaper_form().fields);
    assert_eq!(created.create_time, created.update_time);

    let fetched = capture
        .get_form(GetFormRequest {
            form_id: created.form_id.clone(),
        })
        .await?
        .into_inner()
        .form
        .expect("form");
    assert_eq!(fetched, created);
    suite.stop().await
}

#[tokio::test]
async fn concurrent_retries_create_one_form_and_a_reused_key_is_refused() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let request = CreateFormRequest {
        form: Some(whitepaper_form()),
        idempotency_key: "form-retry".to_owned(),
    };
    let mut calls = Vec::new();
    for _ in 0..10 {
        let mut client = suite.capture();
        let request = request.clone();
        calls.push(tokio::spawn(
            async move { client.create_form(request).await },
        ));
    }
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await??.into_inner().form.expect("form").form_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "ten retries, one form: {ids:?}");

    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM capture.forms")
        .fetch_one(&suite.database_pool().await?)
        .await?;
    assert_eq!(count, 1);

    let mut other = whitepaper_form();
    other.name = "Another form".to_owned();
    let reused = suite
        .capture()
        .create_form(CreateFormRequest {
            form: Some(other),
            idempotency_key: "form-retry".to_owned(),
        })
        .await
        .expect_err("same key, other payload");
    assert_eq!(reused.code(), Code::AlreadyExists);
    suite.stop().await
}

#[tokio::test]
async fn an_invalid_form_names_each_wrong_field_and_writes_nothing() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut form = whitepaper_form();
    form.name = String::new();
    form.fields[0].maps_to = "contact.mail".to_owned();
    form.fields[2].name = "first_name".to_owned();
    form.fields.push(field(
        "size",
        FormFieldKind::Select,
        "lead.employee_count",
        false,
    ));
    form.consent_wording_version = String::new();
    form.ask_next_fields = vec!["budget".to_owned()];
    form.success_url = "/thanks".to_owned();
    let status = suite
        .capture()
        .create_form(CreateFormRequest {
            form: Some(form),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status
        .get_details_bad_request()
        .expect("bad request details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "idempotency_key",
            "form.name",
            "form.fields[0].maps_to",
            "form.fields[2].name",
            "form.fields[4].options",
            "form.fields",
            "form.consent_wording_version",
            "form.ask_next_fields[0]",
            "form.success_url",
        ]
    );
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM capture.forms")
        .fetch_one(&suite.database_pool().await?)
        .await?;
    assert_eq!(count, 0, "nothing half-written");

    let unknown = suite
        .capture()
        .get_form(GetFormRequest {
            form_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    suite.stop().await
}

#[tokio::test]
async fn forms_are_listed_page_by_page_newest_first() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut capture = suite.capture();
    for index in 0..3 {
        let mut form = whitepaper_form();
        form.name = format!("Form {index}");
        capture
            .create_form(CreateFormRequest {
                form: Some(form),
                idempotency_key: format!("form-{index}"),
            })
            .await?;
    }
    let first = capture
        .list_forms(ListFormsRequest {
            product: "erp".to_owned(),
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    let names: Vec<&str> = first.forms.iter().map(|form| form.name.as_str()).collect();
    assert_eq!(names, ["Form 2", "Form 1"]);
    let second = capture
        .list_forms(ListFormsRequest {
            product: "erp".to_owned(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let names: Vec<&str> = second.forms.iter().map(|form| form.name.as_str()).collect();
    assert_eq!(names, ["Form 0"]);
    assert!(second.next_page_token.is_empty());

    let status = capture
        .list_forms(ListFormsRequest {
            page_size: -1,
            page_token: "not-a-token".to_owned(),
            state: 99,
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status
        .get_details_bad_request()
        .expect("bad request details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["state", "page_size", "page_token"]);
    suite.stop().await
}
