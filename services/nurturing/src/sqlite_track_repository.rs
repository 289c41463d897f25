//! Mail templates and nurture tracks on the embedded SQLite store: the same port, the same
//! contract suite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_storage::{
    IdempotencyKey, Page, StorageError, Stored,
    idempotency::sqlite::{self as idempotency, Begun},
    sqlite::{list_from_json, list_to_json},
};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::{
    error::NurturingError,
    templates::{NewMailTemplate, StoredMailTemplate},
    track_repository::{
        ADVANCE_TRACK, INSERT_KIND_TEMPLATES, INSERT_TEMPLATE, INSERT_TRACK, INSERT_VERSION,
        KindTemplatesRow, PublishedVersion, SELECT_KIND_TEMPLATES, SELECT_TEMPLATE, SELECT_TRACK,
        SELECT_VERSION, TEMPLATE_EXISTS, TRACK_NAMED, TemplateRow, TrackRepository, TrackRow,
        VersionRow, class_names, integer, missing_templates, name_taken, nanos,
    },
    tracks::{NewTrack, Track, TrackPolicy, TrackVersion},
};

/// Templates and tracks in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteTrackRepository {
    pool: SqlitePool,
}

impl SqliteTrackRepository {
    /// A repository on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// A template row as SQLite returns it: the merge fields are a JSON array.
#[derive(sqlx::FromRow)]
struct SqliteTemplateRow {
    template_id: Uuid,
    name: String,
    language: String,
    subject: String,
    html_body: String,
    text_body: String,
    merge_fields: String,
    create_time: DateTime<Utc>,
}

impl TryFrom<SqliteTemplateRow> for StoredMailTemplate {
    type Error = StorageError;

    fn try_from(row: SqliteTemplateRow) -> Result<Self, StorageError> {
        let merge_fields = list_from_json(
            &row.merge_fields,
            &format!("mail template {}: merge fields", row.template_id),
        )?;
        Ok(StoredMailTemplate::from(TemplateRow {
            template_id: row.template_id,
            name: row.name,
            language: row.language,
            subject: row.subject,
            html_body: row.html_body,
            text_body: row.text_body,
            merge_fields,
            create_time: row.create_time,
        }))
    }
}

/// A version row as SQLite returns it: the lead classes are a JSON array.
#[derive(sqlx::FromRow)]
struct SqliteVersionRow {
    track_version_id: Uuid,
    track_id: Uuid,
    version: i32,
    cadence_nanos: i64,
    max_interval_nanos: i64,
    reaction_window_nanos: i64,
    max_attempts: i32,
    quiet_start_minute: Option<i32>,
    quiet_end_minute: Option<i32>,
    quiet_skip_weekends: Option<bool>,
    time_zone_mode: String,
    default_time_zone: String,
    fallback_language: Option<String>,
    offer_template_id: Uuid,
    alternative_offer_template_id: Option<Uuid>,
    auto_enroll_classes: String,
    change_note: String,
    publish_time: DateTime<Utc>,
}

impl TryFrom<SqliteVersionRow> for VersionRow {
    type Error = StorageError;

    fn try_from(row: SqliteVersionRow) -> Result<Self, StorageError> {
        let auto_enroll_classes = list_from_json(
            &row.auto_enroll_classes,
            &format!(
                "track {} version {}: lead classes",
                row.track_id, row.version
            ),
        )?;
        Ok(VersionRow {
            track_version_id: row.track_version_id,
            track_id: row.track_id,
            version: row.version,
            cadence_nanos: row.cadence_nanos,
            max_interval_nanos: row.max_interval_nanos,
            reaction_window_nanos: row.reaction_window_nanos,
            max_attempts: row.max_attempts,
            quiet_start_minute: row.quiet_start_minute,
            quiet_end_minute: row.quiet_end_minute,
            quiet_skip_weekends: row.quiet_skip_weekends,
            time_zone_mode: row.time_zone_mode,
            default_time_zone: row.default_time_zone,
            fallback_language: row.fallback_language,
            offer_template_id: row.offer_template_id,
            alternative_offer_template_id: row.alternative_offer_template_id,
            auto_enroll_classes,
            change_note: row.change_note,
            publish_time: row.publish_time,
        })
    }
}

#[async_trait]
impl TrackRepository for SqliteTrackRepository {
    async fn create_template(
        &self,
        template: NewMailTemplate,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<StoredMailTemplate>, StorageError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(template_id) => {
                let stored = self
                    .get_template(template_id)
                    .await?
                    .ok_or(StorageError::NotFound)?;
                return Ok(Stored::Done(stored));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        let template_id = Uuid::now_v7();
        sqlx::query(INSERT_TEMPLATE)
            .bind(template_id)
            .bind(&template.name)
            .bind(&template.language)
            .bind(&template.subject)
            .bind(&template.html_body)
            .bind(&template.text_body)
            .bind(list_to_json(&template.merge_fields))
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        idempotency::complete(&mut transaction, &key, template_id).await?;
        transaction.commit().await?;
        let stored = self
            .get_template(template_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(Stored::Done(stored))
    }

    async fn get_template(
        &self,
        template_id: Uuid,
    ) -> Result<Option<StoredMailTemplate>, StorageError> {
        sqlx::query_as::<_, SqliteTemplateRow>(&format!("{SELECT_TEMPLATE} WHERE template_id = $1"))
            .bind(template_id)
            .fetch_optional(&self.pool)
            .await?
            .map(StoredMailTemplate::try_from)
            .transpose()
    }

    async fn list_templates(
        &self,
        language: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Option<Page<StoredMailTemplate>>, StorageError> {
        if let Some(after) = after {
            let cursor = self.get_template(after).await?;
            let in_listing = cursor.is_some_and(|cursor| {
                language.is_none_or(|language| cursor.template.language == language)
            });
            if !in_listing {
                return Ok(None);
            }
        }
        let rows = sqlx::query_as::<_, SqliteTemplateRow>(&format!(
            "{SELECT_TEMPLATE} WHERE ($1 IS NULL OR language = $1) \
             AND ($2 IS NULL OR template_id < $2) \
             ORDER BY template_id DESC LIMIT $3"
        ))
        .bind(language)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let templates = rows
            .into_iter()
            .map(StoredMailTemplate::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Page::from_overfetch(templates, limit, |template| {
            template.template_id
        })))
    }

    async fn create_track(
        &self,
        track: NewTrack,
        first_version: TrackPolicy,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<PublishedVersion>, NurturingError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(track_version_id) => {
                return Ok(Stored::Done(self.published(track_version_id).await?));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        check_templates(&mut transaction, &first_version).await?;
        let taken = sqlx::query_scalar::<_, Uuid>(TRACK_NAMED)
            .bind(&track.product)
            .bind(&track.name)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StorageError::from)?;
        if taken.is_some() {
            return Err(NurturingError::TrackNameTaken {
                product: track.product,
                name: track.name,
            });
        }
        let track_id = Uuid::now_v7();
        sqlx::query(INSERT_TRACK)
            .bind(track_id)
            .bind(&track.name)
            .bind(&track.description)
            .bind(&track.product)
            .bind(now)
            .execute(&mut *transaction)
            .await
            .map_err(|error| name_taken(error, &track))?;
        let track_version_id =
            insert_version(&mut transaction, track_id, 1, &first_version, now).await?;
        idempotency::complete(&mut transaction, &key, track_version_id).await?;
        transaction.commit().await.map_err(StorageError::from)?;
        Ok(Stored::Done(self.published(track_version_id).await?))
    }

    async fn get_track(&self, track_id: Uuid) -> Result<Option<Track>, StorageError> {
        sqlx::query_as::<_, TrackRow>(&format!("{SELECT_TRACK} WHERE track_id = $1"))
            .bind(track_id)
            .fetch_optional(&self.pool)
            .await?
            .map(Track::try_from)
            .transpose()
    }

    async fn get_track_version(
        &self,
        track_id: Uuid,
        version: u32,
    ) -> Result<Option<TrackVersion>, StorageError> {
        let Ok(version) = i32::try_from(version) else {
            return Ok(None);
        };
        let Some(row) = sqlx::query_as::<_, SqliteVersionRow>(&format!(
            "{SELECT_VERSION} WHERE track_id = $1 AND version = $2"
        ))
        .bind(track_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        self.with_kind_templates(row).await.map(Some)
    }

    async fn list_tracks(
        &self,
        product: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Option<Page<Track>>, StorageError> {
        if let Some(after) = after {
            let cursor = self.get_track(after).await?;
            let in_listing = cursor.is_some_and(|cursor| {
                product.is_none_or(|product| cursor.track.product == product)
            });
            if !in_listing {
                return Ok(None);
            }
        }
        let rows = sqlx::query_as::<_, TrackRow>(&format!(
            "{SELECT_TRACK} WHERE ($1 IS NULL OR product = $1) \
             AND ($2 IS NULL OR (name, track_id) > \
                 (SELECT name, track_id FROM tracks WHERE track_id = $2)) \
             ORDER BY name, track_id LIMIT $3"
        ))
        .bind(product)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let tracks = rows
            .into_iter()
            .map(Track::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Page::from_overfetch(tracks, limit, |track| {
            track.track_id
        })))
    }

    async fn publish_track_version(
        &self,
        track_id: Uuid,
        policy: TrackPolicy,
        expected_latest_version: Option<u32>,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<PublishedVersion>, NurturingError> {
        let mut transaction = match idempotency::begin(&self.pool, &key).await? {
            Begun::Fresh(transaction) => transaction,
            Begun::Replay(track_version_id) => {
                return Ok(Stored::Done(self.published(track_version_id).await?));
            }
            Begun::KeyReused => return Ok(Stored::KeyReused),
        };
        // The single connection serialises transactions: nobody publishes meanwhile.
        let track = sqlx::query_as::<_, TrackRow>(&format!("{SELECT_TRACK} WHERE track_id = $1"))
            .bind(track_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StorageError::from)?
            .map(Track::try_from)
            .transpose()?
            .ok_or(NurturingError::TrackNotFound(track_id))?;
        if let Some(expected) = expected_latest_version
            && expected != track.latest_version
        {
            return Err(NurturingError::StaleLatestVersion {
                track_id,
                expected,
                latest: track.latest_version,
            });
        }
        check_templates(&mut transaction, &policy).await?;
        let version = track.latest_version + 1;
        let track_version_id =
            insert_version(&mut transaction, track_id, version, &policy, now).await?;
        sqlx::query(ADVANCE_TRACK)
            .bind(track_id)
            .bind(integer(version))
            .bind(now)
            .execute(&mut *transaction)
            .await
            .map_err(StorageError::from)?;
        idempotency::complete(&mut transaction, &key, track_version_id).await?;
        transaction.commit().await.map_err(StorageError::from)?;
        Ok(Stored::Done(self.published(track_version_id).await?))
    }
}

impl SqliteTrackRepository {
    /// The answer of the call that published version row `track_version_id`: the version,
    /// and the track as it stood right after.
    async fn published(&self, track_version_id: Uuid) -> Result<PublishedVersion, StorageError> {
        let row = sqlx::query_as::<_, SqliteVersionRow>(&format!(
            "{SELECT_VERSION} WHERE track_version_id = $1"
        ))
        .bind(track_version_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound)?;
        let version = self.with_kind_templates(row).await?;
        let track = self
            .get_track(version.track_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(PublishedVersion {
            track: track.as_of(&version),
            version,
        })
    }

    async fn with_kind_templates(
        &self,
        row: SqliteVersionRow,
    ) -> Result<TrackVersion, StorageError> {
        let kind_rows = sqlx::query_as::<_, KindTemplatesRow>(SELECT_KIND_TEMPLATES)
            .bind(row.track_version_id)
            .fetch_all(&self.pool)
            .await?;
        VersionRow::try_from(row)?.into_version(kind_rows)
    }
}

/// Refuses a policy that names templates that do not exist.
async fn check_templates(
    connection: &mut SqliteConnection,
    policy: &TrackPolicy,
) -> Result<(), NurturingError> {
    let references = policy.template_references();
    let mut existing = Vec::with_capacity(references.len());
    for (_, template_id) in &references {
        let found = sqlx::query_scalar::<_, Uuid>(TEMPLATE_EXISTS)
            .bind(template_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(StorageError::from)?;
        existing.extend(found);
    }
    missing_templates(references, |template_id| existing.contains(template_id))
}

/// Stores version `version` of track `track_id`; returns the version row's id.
async fn insert_version(
    connection: &mut SqliteConnection,
    track_id: Uuid,
    version: u32,
    policy: &TrackPolicy,
    now: DateTime<Utc>,
) -> Result<Uuid, StorageError> {
    let track_version_id = Uuid::now_v7();
    let quiet = policy.quiet_hours;
    sqlx::query(INSERT_VERSION)
        .bind(track_version_id)
        .bind(track_id)
        .bind(integer(version))
        .bind(nanos(policy.cadence))
        .bind(nanos(policy.max_interval))
        .bind(nanos(policy.reaction_window))
        .bind(integer(policy.max_attempts))
        .bind(quiet.map(|quiet| integer(quiet.start_minute)))
        .bind(quiet.map(|quiet| integer(quiet.end_minute)))
        .bind(quiet.map(|quiet| quiet.skip_weekends))
        .bind(policy.time_zone_mode.as_str_name())
        .bind(&policy.default_time_zone)
        .bind(policy.fallback_language.as_deref())
        .bind(policy.offer_template_id)
        .bind(policy.alternative_offer_template_id)
        .bind(list_to_json(&class_names(policy)))
        .bind(&policy.change_note)
        .bind(now)
        .execute(&mut *connection)
        .await?;
    for (position, entry) in policy.kind_templates.iter().enumerate() {
        sqlx::query(INSERT_KIND_TEMPLATES)
            .bind(track_version_id)
            .bind(i32::try_from(position).unwrap_or(i32::MAX))
            .bind(entry.kind.as_str_name())
            .bind(entry.offer_template_id)
            .bind(entry.alternative_offer_template_id)
            .execute(&mut *connection)
            .await?;
    }
    Ok(track_version_id)
}
