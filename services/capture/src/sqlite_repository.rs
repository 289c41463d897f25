//! Capture forms on the embedded SQLite store: the same port, the same contract suite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_storage::{
    IdempotencyKey, Page, StorageError, Stored,
    idempotency::sqlite::{self as idempotency, Begun},
    sqlite::{list_from_json, list_to_json},
};
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::{
    forms::FormField,
    forms::{Form, NewForm},
    repository::{
        CurrentWording, DROP_FIELDS, FieldRow, FormFilter, FormRepository, FormRow, FormUpdate,
        KEEP_WORDING, LOCK_REVISION, READ_WORDINGS, UPDATE_FORM, WordingRow, assemble_form,
        forms_by_id,
    },
};

/// Forms in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteFormRepository {
    pool: SqlitePool,
}

impl SqliteFormRepository {
    /// A repository on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// A form row as SQLite returns it: lists are JSON arrays.
#[derive(sqlx::FromRow)]
struct SqliteFormRow {
    form_id: Uuid,
    name: String,
    product: String,
    state: String,
    consent_wording: String,
    consent_wording_version: String,
    consent_purpose: String,
    consent_required: bool,
    double_opt_in: bool,
    ask_next_fields: String,
    ask_next_limit: i32,
    allowed_origins: String,
    success_url: String,
    revision: i64,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

/// A field row as SQLite returns it.
#[derive(sqlx::FromRow)]
struct SqliteFieldRow {
    name: String,
    label: String,
    required: bool,
    kind: String,
    maps_to: String,
    options: String,
    max_length: i32,
}

#[async_trait]
impl FormRepository for SqliteFormRepository {
    async fn create_form(
        &self,
        form: NewForm,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<Form>, StorageError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(form_id) => {
                let form = self
                    .get_form(form_id)
                    .await?
                    .ok_or(StorageError::NotFound)?;
                return Ok(Stored::Done(form));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        let form_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO forms (form_id, name, product, state, consent_wording, consent_wording_version, \
             consent_purpose, consent_required, double_opt_in, ask_next_fields, ask_next_limit, \
             allowed_origins, success_url, revision, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, $14, $14)",
        )
        .bind(form_id)
        .bind(&form.name)
        .bind(&form.product)
        .bind(form.state.as_str_name())
        .bind(&form.consent_wording)
        .bind(&form.consent_wording_version)
        .bind(&form.consent_purpose)
        .bind(form.consent_required)
        .bind(form.double_opt_in)
        .bind(list_to_json(&form.ask_next_fields))
        .bind(i64::from(form.ask_next_limit))
        .bind(list_to_json(&form.allowed_origins))
        .bind(&form.success_url)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        insert_fields(&mut transaction, form_id, &form.fields).await?;
        idempotency::complete(&mut transaction, &key, form_id).await?;
        transaction.commit().await?;
        let form = self
            .get_form(form_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(Stored::Done(form))
    }

    async fn get_form(&self, form_id: Uuid) -> Result<Option<Form>, StorageError> {
        let Some(row) = sqlx::query_as::<_, SqliteFormRow>(
            "SELECT form_id, name, product, state, consent_wording, consent_wording_version, \
             consent_purpose, consent_required, double_opt_in, ask_next_fields, ask_next_limit, \
             allowed_origins, success_url, revision, create_time, update_time \
             FROM forms WHERE form_id = $1",
        )
        .bind(form_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let fields = sqlx::query_as::<_, SqliteFieldRow>(
            "SELECT name, label, required, kind, maps_to, options, max_length FROM form_fields \
             WHERE form_id = $1 ORDER BY position",
        )
        .bind(form_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|field| {
            Ok(FieldRow {
                options: list_from_json(&field.options, &format!("form {form_id}: options"))?,
                name: field.name,
                label: field.label,
                required: field.required,
                kind: field.kind,
                maps_to: field.maps_to,
                max_length: field.max_length,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        let row = FormRow {
            ask_next_fields: list_from_json(
                &row.ask_next_fields,
                &format!("form {form_id}: ask next fields"),
            )?,
            allowed_origins: list_from_json(
                &row.allowed_origins,
                &format!("form {form_id}: allowed origins"),
            )?,
            form_id: row.form_id,
            name: row.name,
            product: row.product,
            state: row.state,
            consent_wording: row.consent_wording,
            consent_wording_version: row.consent_wording_version,
            consent_purpose: row.consent_purpose,
            consent_required: row.consent_required,
            double_opt_in: row.double_opt_in,
            ask_next_limit: row.ask_next_limit,
            success_url: row.success_url,
            revision: row.revision,
            create_time: row.create_time,
            update_time: row.update_time,
        };
        let history = sqlx::query_as::<_, WordingRow>(READ_WORDINGS)
            .bind(form_id)
            .fetch_all(&self.pool)
            .await?;
        assemble_form(row, fields, history).map(Some)
    }

    async fn update_form(
        &self,
        form_id: Uuid,
        definition: NewForm,
        expected_revision: Option<i64>,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<FormUpdate>, StorageError> {
        // The embedded store's one connection serialises transactions: no row lock needed.
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(form_id) => {
                let form = self
                    .get_form(form_id)
                    .await?
                    .ok_or(StorageError::NotFound)?;
                return Ok(Stored::Done(FormUpdate::Updated(Box::new(form))));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        let Some(current) = sqlx::query_as::<_, CurrentWording>(LOCK_REVISION)
            .bind(form_id)
            .fetch_optional(&mut *transaction)
            .await?
        else {
            return Ok(Stored::Done(FormUpdate::NotFound));
        };
        if let Some(expected) = expected_revision
            && expected != current.revision
        {
            return Ok(Stored::Done(FormUpdate::RevisionMismatch {
                actual: current.revision,
            }));
        }
        if current.consent_wording_version != definition.consent_wording_version
            && !current.consent_wording.is_empty()
        {
            sqlx::query(KEEP_WORDING)
                .bind(form_id)
                .bind(&current.consent_wording_version)
                .bind(&current.consent_wording)
                .bind(current.create_time)
                .bind(now)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query(UPDATE_FORM)
            .bind(form_id)
            .bind(&definition.name)
            .bind(&definition.product)
            .bind(definition.state.as_str_name())
            .bind(&definition.consent_wording)
            .bind(&definition.consent_wording_version)
            .bind(&definition.consent_purpose)
            .bind(definition.consent_required)
            .bind(definition.double_opt_in)
            .bind(list_to_json(&definition.ask_next_fields))
            .bind(i64::from(definition.ask_next_limit))
            .bind(list_to_json(&definition.allowed_origins))
            .bind(&definition.success_url)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(DROP_FIELDS)
            .bind(form_id)
            .execute(&mut *transaction)
            .await?;
        insert_fields(&mut transaction, form_id, &definition.fields).await?;
        idempotency::complete(&mut transaction, &key, form_id).await?;
        transaction.commit().await?;
        let form = self
            .get_form(form_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(Stored::Done(FormUpdate::Updated(Box::new(form))))
    }

    async fn list_forms(
        &self,
        filter: &FormFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<Form>, StorageError> {
        let form_ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT form_id FROM forms WHERE ($1 IS NULL OR product = $1) \
             AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR form_id < $3) \
             ORDER BY form_id DESC LIMIT $4",
        )
        .bind(filter.product.as_deref())
        .bind(filter.state.map(|state| state.as_str_name()))
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        forms_by_id(self, form_ids, limit).await
    }
}

/// Writes a form's fields in display order.
async fn insert_fields(
    connection: &mut sqlx::SqliteConnection,
    form_id: Uuid,
    fields: &[FormField],
) -> Result<(), StorageError> {
    for (position, field) in fields.iter().enumerate() {
        sqlx::query(
                "INSERT INTO form_fields (form_id, position, name, label, required, kind, maps_to, options, \
                 max_length) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(form_id)
            .bind(position as i64)
            .bind(&field.name)
            .bind(&field.label)
            .bind(field.required)
            .bind(field.kind.as_str_name())
            .bind(&field.maps_to)
            .bind(list_to_json(&field.options))
            .bind(i64::from(field.max_length))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}
