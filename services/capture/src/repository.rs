//! Capture's persistence port and its PostgreSQL adapter (the embedded one is in
//! `sqlite_repository`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_platform::time::to_timestamp;
use leadflow_proto::capture::v1 as pb;
use leadflow_storage::{Begun, IdempotencyKey, Page, StorageError, Stored, idempotency};
use sqlx::PgPool;
use uuid::Uuid;

use crate::forms::{Form, FormField, NewForm};

/// Where capture keeps its forms.
#[async_trait]
pub trait FormRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new form; a retry with the same key returns the form the first call stored.
    async fn create_form(
        &self,
        form: NewForm,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<Form>, StorageError>;

    /// The form with this id, if any.
    async fn get_form(&self, form_id: Uuid) -> Result<Option<Form>, StorageError>;

    /// Replaces a form's definition and increments its revision; when the consent wording
    /// version changes, the previous wording joins the form's history. A retry with the same
    /// key returns the form as it is now.
    async fn update_form(
        &self,
        form_id: Uuid,
        definition: NewForm,
        expected_revision: Option<i64>,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<FormUpdate>, StorageError>;

    /// Up to `limit` forms matching `filter`, most recently created first, after the form
    /// `after` when continuing a listing.
    async fn list_forms(
        &self,
        filter: &FormFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<Form>, StorageError>;
}

/// What an update found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormUpdate {
    /// The form after the update.
    Updated(Box<Form>),
    /// No form has this id.
    NotFound,
    /// The caller read another revision than the form has now.
    RevisionMismatch {
        /// The form's revision now.
        actual: i64,
    },
}

/// Which forms a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormFilter {
    /// Only forms about this product.
    pub product: Option<String>,
    /// Only forms in this state.
    pub state: Option<pb::FormState>,
}

/// Reads each listed form whole, in the listing's order (a page holds at most a few hundred
/// forms, read by primary key).
pub(crate) async fn forms_by_id(
    repository: &(impl FormRepository + ?Sized),
    form_ids: Vec<Uuid>,
    limit: u32,
) -> Result<Page<Form>, StorageError> {
    let mut forms = Vec::with_capacity(form_ids.len());
    for form_id in form_ids {
        // A form is never deleted, so a listed id always reads back.
        let form = repository
            .get_form(form_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        forms.push(form);
    }
    Ok(Page::from_overfetch(forms, limit, |form| form.form_id))
}

/// Forms in capture's PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresFormRepository {
    pool: PgPool,
}

impl PostgresFormRepository {
    /// A repository on `pool`, whose search path is capture's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// A stored form, as both adapters read it.
#[derive(sqlx::FromRow)]
pub(crate) struct FormRow {
    pub(crate) form_id: Uuid,
    pub(crate) name: String,
    pub(crate) product: String,
    pub(crate) state: String,
    pub(crate) consent_wording: String,
    pub(crate) consent_wording_version: String,
    pub(crate) consent_purpose: String,
    pub(crate) consent_required: bool,
    pub(crate) double_opt_in: bool,
    pub(crate) ask_next_fields: Vec<String>,
    pub(crate) ask_next_limit: i32,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) success_url: String,
    pub(crate) revision: i64,
    pub(crate) create_time: DateTime<Utc>,
    pub(crate) update_time: DateTime<Utc>,
}

/// A stored form field, as both adapters read it.
#[derive(sqlx::FromRow)]
pub(crate) struct FieldRow {
    pub(crate) name: String,
    pub(crate) label: String,
    pub(crate) required: bool,
    pub(crate) kind: String,
    pub(crate) maps_to: String,
    pub(crate) options: Vec<String>,
    pub(crate) max_length: i32,
}

#[async_trait]
impl FormRepository for PostgresFormRepository {
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
        .bind(&form.ask_next_fields)
        .bind(i32::try_from(form.ask_next_limit).unwrap_or(i32::MAX))
        .bind(&form.allowed_origins)
        .bind(&form.success_url)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        insert_fields(&mut transaction, form_id, &form.fields).await?;
        idempotency::complete(&mut transaction, &key, form_id).await?;
        transaction.commit().await?;
        // Read back what was committed, so a first answer and a replay are identical.
        let form = self
            .get_form(form_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(Stored::Done(form))
    }

    async fn get_form(&self, form_id: Uuid) -> Result<Option<Form>, StorageError> {
        let Some(row) = sqlx::query_as::<_, FormRow>(
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
        let field_rows = sqlx::query_as::<_, FieldRow>(
            "SELECT name, label, required, kind, maps_to, options, max_length FROM form_fields \
             WHERE form_id = $1 ORDER BY position",
        )
        .bind(form_id)
        .fetch_all(&self.pool)
        .await?;
        let history = sqlx::query_as::<_, WordingRow>(READ_WORDINGS)
            .bind(form_id)
            .fetch_all(&self.pool)
            .await?;
        assemble_form(row, field_rows, history).map(Some)
    }

    async fn update_form(
        &self,
        form_id: Uuid,
        definition: NewForm,
        expected_revision: Option<i64>,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<FormUpdate>, StorageError> {
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
        let Some(current) =
            sqlx::query_as::<_, CurrentWording>(&format!("{LOCK_REVISION} FOR UPDATE"))
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
            .bind(&definition.ask_next_fields)
            .bind(i32::try_from(definition.ask_next_limit).unwrap_or(i32::MAX))
            .bind(&definition.allowed_origins)
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
        // Form ids are time-ordered (UUIDv7): the newest first is the highest id first.
        let form_ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT form_id FROM forms WHERE ($1::text IS NULL OR product = $1) \
             AND ($2::text IS NULL OR state = $2) AND ($3::uuid IS NULL OR form_id < $3) \
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

/// The form's revision and wording, read (and locked) before an update.
#[derive(sqlx::FromRow)]
pub(crate) struct CurrentWording {
    pub(crate) revision: i64,
    pub(crate) consent_wording: String,
    pub(crate) consent_wording_version: String,
    pub(crate) create_time: DateTime<Utc>,
}

/// Writes a form's fields in display order.
async fn insert_fields(
    connection: &mut sqlx::PgConnection,
    form_id: Uuid,
    fields: &[FormField],
) -> Result<(), StorageError> {
    for (position, field) in fields.iter().enumerate() {
        sqlx::query(
            "INSERT INTO form_fields (form_id, position, name, label, required, kind, maps_to, \
                 options, max_length) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(form_id)
        .bind(position as i32)
        .bind(&field.name)
        .bind(&field.label)
        .bind(field.required)
        .bind(field.kind.as_str_name())
        .bind(&field.maps_to)
        .bind(&field.options)
        .bind(i32::try_from(field.max_length).unwrap_or(i32::MAX))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Builds a form from its stored row and its fields in order.
pub(crate) fn assemble_form(
    row: FormRow,
    field_rows: Vec<FieldRow>,
    history: Vec<WordingRow>,
) -> Result<Form, StorageError> {
    let form_id = row.form_id;
    let corrupt = |what: &str| StorageError::Corrupt(format!("form {form_id}: {what}"));
    let fields = field_rows
        .into_iter()
        .map(|field| {
            Ok(FormField {
                kind: pb::FormFieldKind::from_str_name(&field.kind)
                    .ok_or_else(|| corrupt("field kind"))?,
                max_length: u32::try_from(field.max_length).map_err(|_| corrupt("max length"))?,
                name: field.name,
                label: field.label,
                required: field.required,
                maps_to: field.maps_to,
                options: field.options,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(Form {
        form_id: row.form_id,
        definition: NewForm {
            name: row.name,
            product: row.product,
            state: pb::FormState::from_str_name(&row.state).ok_or_else(|| corrupt("state"))?,
            fields,
            consent_wording: row.consent_wording,
            consent_wording_version: row.consent_wording_version,
            consent_purpose: row.consent_purpose,
            consent_required: row.consent_required,
            double_opt_in: row.double_opt_in,
            ask_next_fields: row.ask_next_fields,
            ask_next_limit: u32::try_from(row.ask_next_limit)
                .map_err(|_| corrupt("ask next limit"))?,
            allowed_origins: row.allowed_origins,
            success_url: row.success_url,
        },
        revision: row.revision,
        create_time: row.create_time,
        update_time: row.update_time,
        consent_wording_history: history.into_iter().map(Into::into).collect(),
    })
}

/// A consent wording a form showed before its current one.
#[derive(sqlx::FromRow)]
pub(crate) struct WordingRow {
    pub(crate) version: String,
    pub(crate) text: String,
    pub(crate) effective_time: DateTime<Utc>,
    pub(crate) superseded_time: DateTime<Utc>,
}

impl From<WordingRow> for pb::ConsentWording {
    fn from(wording: WordingRow) -> Self {
        Self {
            version: wording.version,
            text: wording.text,
            effective_time: Some(to_timestamp(wording.effective_time)),
            superseded_time: Some(to_timestamp(wording.superseded_time)),
        }
    }
}

/// The statements of an update, the same in both dialects.
pub(crate) const LOCK_REVISION: &str = "SELECT revision, consent_wording, consent_wording_version, create_time \
     FROM forms WHERE form_id = $1";
pub(crate) const KEEP_WORDING: &str = "INSERT INTO form_consent_wordings \
     (form_id, version, text, effective_time, superseded_time) \
     SELECT $1, $2, $3, COALESCE((SELECT max(superseded_time) FROM form_consent_wordings \
     WHERE form_id = $1), $4), $5";
pub(crate) const READ_WORDINGS: &str = "SELECT version, text, effective_time, superseded_time \
     FROM form_consent_wordings WHERE form_id = $1 ORDER BY effective_time, superseded_time";
pub(crate) const DROP_FIELDS: &str = "DELETE FROM form_fields WHERE form_id = $1";
pub(crate) const UPDATE_FORM: &str = "UPDATE forms SET name = $2, product = $3, state = $4, \
     consent_wording = $5, consent_wording_version = $6, consent_purpose = $7, \
     consent_required = $8, double_opt_in = $9, ask_next_fields = $10, ask_next_limit = $11, \
     allowed_origins = $12, success_url = $13, revision = revision + 1, update_time = $14 \
     WHERE form_id = $1";
