//! The form port: a form reads back exactly as stored, lists and all, and one idempotency
//! key creates one form.

use std::sync::Arc;

use leadflow_capture::{
    Form, FormFilter, FormRepository, FormUpdate, NewForm, PostgresFormRepository,
    SqliteFormRepository,
};
use leadflow_proto::capture::v1::{FormFieldKind, FormState};
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

async fn listings_filter_and_page_newest_first(
    repository: Arc<dyn FormRepository>,
) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for (index, (product, state)) in [
        ("erp", FormState::Active),
        ("crm", FormState::Active),
        ("erp", FormState::Archived),
        ("erp", FormState::Active),
        ("erp", FormState::Active),
    ]
    .into_iter()
    .enumerate()
    {
        let mut definition = form(&format!("Form {index}"));
        definition.product = product.to_owned();
        definition.state = state;
        let Stored::Done(stored) = created(&*repository, definition, &index.to_string()).await?
        else {
            anyhow::bail!("a fresh key");
        };
        ids.push(stored.form_id);
    }
    let names = |page: &leadflow_storage::Page<Form>| -> Vec<String> {
        page.items
            .iter()
            .map(|form| form.definition.name.clone())
            .collect()
    };
    let active_erp = FormFilter {
        product: Some("erp".to_owned()),
        state: Some(FormState::Active),
    };
    let first = repository.list_forms(&active_erp, None, 2).await?;
    assert_eq!(names(&first), ["Form 4", "Form 3"]);
    assert_eq!(first.next_after, Some(ids[3]));
    let second = repository
        .list_forms(&active_erp, first.next_after, 2)
        .await?;
    assert_eq!(names(&second), ["Form 0"]);
    assert_eq!(second.next_after, None);
    assert_eq!(
        second.items[0],
        repository.get_form(ids[0]).await?.expect("stored"),
        "whole forms"
    );

    let all = repository
        .list_forms(&FormFilter::default(), None, 10)
        .await?;
    assert_eq!(
        names(&all),
        ["Form 4", "Form 3", "Form 2", "Form 1", "Form 0"]
    );
    let archived = FormFilter {
        state: Some(FormState::Archived),
        ..Default::default()
    };
    assert_eq!(
        names(&repository.list_forms(&archived, None, 10).await?),
        ["Form 2"]
    );
    let crm = FormFilter {
        product: Some("crm".to_owned()),
        ..Default::default()
    };
    assert_eq!(
        names(&repository.list_forms(&crm, None, 10).await?),
        ["Form 1"]
    );
    Ok(())
}

contract!(listings_filter_and_page_newest_first on postgres_forms, sqlite_forms);

async fn an_update_keeps_the_earlier_wording_and_checks_the_revision(
    repository: Arc<dyn FormRepository>,
) -> anyhow::Result<()> {
    let Stored::Done(original) = created(repository.as_ref(), form("Newsletter"), "create").await?
    else {
        anyhow::bail!("created");
    };
    let key = |name: &str| IdempotencyKey {
        key: name.to_owned(),
        request: name.as_bytes().to_vec(),
    };
    let mut reworded = original.definition.clone();
    reworded.consent_wording = "Send me the newsletter and invitations.".to_owned();
    reworded.consent_wording_version = "2026-12".to_owned();
    reworded.fields.pop();
    let first_update = chrono::Utc::now();
    let Stored::Done(FormUpdate::Updated(updated)) = repository
        .update_form(
            original.form_id,
            reworded.clone(),
            Some(1),
            key("update-1"),
            first_update,
        )
        .await?
    else {
        anyhow::bail!("updated");
    };
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.definition, reworded, "fields replaced, in order");
    assert_eq!(updated.create_time, original.create_time);
    assert_eq!(updated.consent_wording_history.len(), 1);
    let earlier = &updated.consent_wording_history[0];
    assert_eq!(earlier.version, original.definition.consent_wording_version);
    assert_eq!(earlier.text, original.definition.consent_wording);
    assert_eq!(
        earlier.effective_time,
        Some(leadflow_platform::time::to_timestamp(original.create_time))
    );

    let mut renamed = reworded.clone();
    renamed.name = "Newsletter (de)".to_owned();
    let stale = repository
        .update_form(
            original.form_id,
            renamed.clone(),
            Some(1),
            key("update-2"),
            chrono::Utc::now(),
        )
        .await?;
    assert_eq!(
        stale,
        Stored::Done(FormUpdate::RevisionMismatch { actual: 2 })
    );
    let Stored::Done(FormUpdate::Updated(third)) = repository
        .update_form(
            original.form_id,
            renamed,
            None,
            key("update-3"),
            chrono::Utc::now(),
        )
        .await?
    else {
        anyhow::bail!("updated without a revision check");
    };
    assert_eq!(third.revision, 3);
    assert_eq!(
        third.consent_wording_history.len(),
        1,
        "the same wording version adds no history"
    );
    assert_eq!(
        repository
            .update_form(
                uuid::Uuid::now_v7(),
                reworded,
                None,
                key("update-4"),
                chrono::Utc::now()
            )
            .await?,
        Stored::Done(FormUpdate::NotFound)
    );
    Ok(())
}

contract!(an_update_keeps_the_earlier_wording_and_checks_the_revision on postgres_forms, sqlite_forms);
