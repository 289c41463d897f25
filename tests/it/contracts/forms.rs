//! The form port: a form reads back exactly as stored, lists and all, and one idempotency
//! key creates one form.

use std::sync::Arc;

use leadflow_capture::{
    Form, FormRepository, NewForm, PostgresFormRepository, SqliteFormRepository,
};
use leadflow_proto::capture::v1::FormFieldKind;
use leadflow_storage::{IdempotencyKey, Stored};

use super::{Backing, contract};
use crate::capture::{field, whitepaper_form};

async fn postgres_forms() -> anyhow::Result<(Backing, Arc<dyn FormRepository>)> {
    let (backing, capture) =
        super::postgres(leadflow_capture::SCHEMA, &leadflow_capture::MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(PostgresFormRepository::new(capture.pool().clone())),
    ))
}

async fn sqlite_forms() -> anyhow::Result<(Backing, Arc<dyn FormRepository>)> {
    let (backing, capture) =
        super::sqlite(leadflow_capture::SCHEMA, &leadflow_capture::SQLITE_MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(SqliteFormRepository::new(capture.pool().clone())),
    ))
}

fn form(name: &str) -> NewForm {
    let mut form = whitepaper_form();
    form.name = name.to_owned();
    let mut size = field(
        "company_size",
        FormFieldKind::Select,
        "lead.employee_count",
        false,
    );
    size.options = vec!["1-49".to_owned(), "50-249".to_owned(), "250+".to_owned()];
    form.fields.push(size);
    form.success_url = "https://www.example.com/thanks".to_owned();
    NewForm::parse(Some(&form)).expect("a valid form")
}

async fn created(
    repository: &dyn FormRepository,
    form: NewForm,
    key: &str,
) -> anyhow::Result<Stored<Form>> {
    let key = IdempotencyKey {
        key: key.to_owned(),
        request: form.name.clone().into_bytes(),
    };
    Ok(repository
        .create_form(form, key, chrono::Utc::now())
        .await?)
}

async fn a_form_reads_back_exactly_as_stored(
    repository: Arc<dyn FormRepository>,
) -> anyhow::Result<()> {
    let Stored::Done(stored) = created(&*repository, form("Whitepaper"), "1").await? else {
        anyhow::bail!("a fresh key");
    };
    assert_eq!(stored.definition, form("Whitepaper"));
    assert_eq!(stored.revision, 1);
    assert_eq!(
        stored.definition.fields[4].options,
        ["1-49", "50-249", "250+"]
    );
    assert_eq!(repository.get_form(stored.form_id).await?, Some(stored));
    assert_eq!(repository.get_form(uuid::Uuid::now_v7()).await?, None);
    Ok(())
}

async fn one_key_creates_one_form(repository: Arc<dyn FormRepository>) -> anyhow::Result<()> {
    let first = created(&*repository, form("Whitepaper"), "k").await?;
    let replay = created(&*repository, form("Whitepaper"), "k").await?;
    assert_eq!(first, replay);
    assert_eq!(
        created(&*repository, form("Other"), "k").await?,
        Stored::KeyReused
    );
    Ok(())
}

contract!(a_form_reads_back_exactly_as_stored on postgres_forms, sqlite_forms);
contract!(one_key_creates_one_form on postgres_forms, sqlite_forms);
