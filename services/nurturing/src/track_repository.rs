//! Nurturing's persistence port for mail templates and nurture tracks with their versions,
//! and its PostgreSQL adapter (the embedded one is in `sqlite_track_repository`).

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use leadflow_domain::nurture::QuietHours;
use leadflow_proto::{common::v1 as common, nurturing::v1 as pb};
use leadflow_storage::{Begun, IdempotencyKey, Page, StorageError, Stored, idempotency};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    error::NurturingError,
    templates::{NewMailTemplate, StoredMailTemplate},
    tracks::{KindTemplates, NewTrack, Track, TrackPolicy, TrackVersion},
};

/// A track together with the version a call published, the track as that call left it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedVersion {
    /// The track, its latest version the one published.
    pub track: Track,
    /// The version published.
    pub version: TrackVersion,
}

/// Where nurturing keeps its mail templates and tracks. Templates and track versions are
/// never changed once stored.
#[async_trait]
pub trait TrackRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new template; a retry with the same key returns the template the first
    /// call stored.
    async fn create_template(
        &self,
        template: NewMailTemplate,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<StoredMailTemplate>, StorageError>;

    /// The template with this id, if any.
    async fn get_template(
        &self,
        template_id: Uuid,
    ) -> Result<Option<StoredMailTemplate>, StorageError>;

    /// Templates of `language` (all when `None`), newest first, `limit` at a time after the
    /// cursor `after`; `None` when `after` is not a template this listing holds.
    async fn list_templates(
        &self,
        language: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Option<Page<StoredMailTemplate>>, StorageError>;

    /// Stores a new track with `first_version` as its version 1. Refuses with
    /// [`NurturingError::TemplatesMissing`] when the version names templates that do not
    /// exist and [`NurturingError::TrackNameTaken`] when the product has a track of that
    /// name. A retry with the same key returns what the first call returned.
    async fn create_track(
        &self,
        track: NewTrack,
        first_version: TrackPolicy,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<PublishedVersion>, NurturingError>;

    /// The track with this id, if any.
    async fn get_track(&self, track_id: Uuid) -> Result<Option<Track>, StorageError>;

    /// Version `version` of the track, if both exist.
    async fn get_track_version(
        &self,
        track_id: Uuid,
        version: u32,
    ) -> Result<Option<TrackVersion>, StorageError>;

    /// Tracks of `product` (all when `None`) by name, `limit` at a time after the cursor
    /// `after`; `None` when `after` is not a track this listing holds.
    async fn list_tracks(
        &self,
        product: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Option<Page<Track>>, StorageError>;

    /// Publishes `policy` as the track's next version, with the track locked so that two
    /// publishers never get the same number. Refuses with
    /// [`NurturingError::TrackNotFound`], with [`NurturingError::StaleLatestVersion`] when
    /// `expected_latest_version` is given and no longer the latest, and with
    /// [`NurturingError::TemplatesMissing`]. A retry with the same key returns what the
    /// first call returned, even after later versions.
    async fn publish_track_version(
        &self,
        track_id: Uuid,
        policy: TrackPolicy,
        expected_latest_version: Option<u32>,
        key: IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Stored<PublishedVersion>, NurturingError>;
}

/// Templates and tracks in nurturing's PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresTrackRepository {
    pool: PgPool,
}

impl PostgresTrackRepository {
    /// A repository on `pool`, whose search path is nurturing's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// One stored template, as both adapters read it.
#[derive(sqlx::FromRow)]
pub(crate) struct TemplateRow {
    pub(crate) template_id: Uuid,
    pub(crate) name: String,
    pub(crate) language: String,
    pub(crate) subject: String,
    pub(crate) html_body: String,
    pub(crate) text_body: String,
    pub(crate) merge_fields: Vec<String>,
    pub(crate) create_time: DateTime<Utc>,
}

impl From<TemplateRow> for StoredMailTemplate {
    fn from(row: TemplateRow) -> Self {
        Self {
            template_id: row.template_id,
            template: NewMailTemplate {
                name: row.name,
                language: row.language,
                subject: row.subject,
                html_body: row.html_body,
                text_body: row.text_body,
                merge_fields: row.merge_fields,
            },
            create_time: row.create_time,
        }
    }
}

/// One stored track, as both adapters read it.
#[derive(sqlx::FromRow)]
pub(crate) struct TrackRow {
    pub(crate) track_id: Uuid,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) product: String,
    pub(crate) latest_version: i32,
    pub(crate) create_time: DateTime<Utc>,
    pub(crate) update_time: DateTime<Utc>,
}

impl TryFrom<TrackRow> for Track {
    type Error = StorageError;

    fn try_from(row: TrackRow) -> Result<Self, StorageError> {
        Ok(Self {
            track_id: row.track_id,
            latest_version: u32::try_from(row.latest_version).map_err(|_| {
                StorageError::Corrupt(format!("track {}: latest version", row.track_id))
            })?,
            track: NewTrack {
                name: row.name,
                description: row.description,
                product: row.product,
            },
            create_time: row.create_time,
            update_time: row.update_time,
        })
    }
}

/// One stored track version without its kind templates, as both adapters read it.
#[derive(sqlx::FromRow)]
pub(crate) struct VersionRow {
    pub(crate) track_version_id: Uuid,
    pub(crate) track_id: Uuid,
    pub(crate) version: i32,
    pub(crate) cadence_nanos: i64,
    pub(crate) max_interval_nanos: i64,
    pub(crate) reaction_window_nanos: i64,
    pub(crate) max_attempts: i32,
    pub(crate) quiet_start_minute: Option<i32>,
    pub(crate) quiet_end_minute: Option<i32>,
    pub(crate) quiet_skip_weekends: Option<bool>,
    pub(crate) time_zone_mode: String,
    pub(crate) default_time_zone: String,
    pub(crate) fallback_language: Option<String>,
    pub(crate) offer_template_id: Uuid,
    pub(crate) alternative_offer_template_id: Option<Uuid>,
    pub(crate) auto_enroll_classes: Vec<String>,
    pub(crate) change_note: String,
    pub(crate) publish_time: DateTime<Utc>,
}

/// One kind's templates of a stored version.
#[derive(sqlx::FromRow)]
pub(crate) struct KindTemplatesRow {
    pub(crate) kind: String,
    pub(crate) offer_template_id: Uuid,
    pub(crate) alternative_offer_template_id: Option<Uuid>,
}

impl VersionRow {
    /// The version with its kind templates, in their stored order.
    pub(crate) fn into_version(
        self,
        kind_rows: Vec<KindTemplatesRow>,
    ) -> Result<TrackVersion, StorageError> {
        let record = format!("track {} version {}", self.track_id, self.version);
        let corrupt = |what: &str| StorageError::Corrupt(format!("{record}: {what}"));
        let quiet_hours = match (
            self.quiet_start_minute,
            self.quiet_end_minute,
            self.quiet_skip_weekends,
        ) {
            (Some(start), Some(end), Some(skip_weekends)) => Some(QuietHours {
                start_minute: u32::try_from(start).map_err(|_| corrupt("quiet hours"))?,
                end_minute: u32::try_from(end).map_err(|_| corrupt("quiet hours"))?,
                skip_weekends,
            }),
            (None, None, None) => None,
            _ => return Err(corrupt("quiet hours")),
        };
        let kind_templates = kind_rows
            .into_iter()
            .map(|row| {
                Ok(KindTemplates {
                    kind: pb::ContentKind::from_str_name(&row.kind)
                        .ok_or_else(|| corrupt("kind templates"))?,
                    offer_template_id: row.offer_template_id,
                    alternative_offer_template_id: row.alternative_offer_template_id,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        let auto_enroll_classes = self
            .auto_enroll_classes
            .iter()
            .map(|class| {
                common::LeadClass::from_str_name(class).ok_or_else(|| corrupt("lead class"))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(TrackVersion {
            track_id: self.track_id,
            version: u32::try_from(self.version).map_err(|_| corrupt("version"))?,
            policy: TrackPolicy {
                cadence: TimeDelta::nanoseconds(self.cadence_nanos),
                max_interval: TimeDelta::nanoseconds(self.max_interval_nanos),
                reaction_window: TimeDelta::nanoseconds(self.reaction_window_nanos),
                max_attempts: u32::try_from(self.max_attempts)
                    .map_err(|_| corrupt("max attempts"))?,
                quiet_hours,
                time_zone_mode: pb::TimeZoneMode::from_str_name(&self.time_zone_mode)
                    .ok_or_else(|| corrupt("time zone mode"))?,
                default_time_zone: self.default_time_zone,
                fallback_language: self.fallback_language,
                offer_template_id: self.offer_template_id,
                alternative_offer_template_id: self.alternative_offer_template_id,
                kind_templates,
                auto_enroll_classes,
                change_note: self.change_note,
            },
            publish_time: self.publish_time,
        })
    }
}

pub(crate) const SELECT_TEMPLATE: &str = "SELECT template_id, name, language, subject, html_body, \
     text_body, merge_fields, create_time FROM mail_templates";

pub(crate) const INSERT_TEMPLATE: &str = "INSERT INTO mail_templates (template_id, name, \
     language, subject, html_body, text_body, merge_fields, create_time) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(crate) const SELECT_TRACK: &str = "SELECT track_id, name, description, product, \
     latest_version, create_time, update_time FROM tracks";

/// Creates track `$1` named `$2` with description `$3` for product `$4` at `$5`.
pub(crate) const INSERT_TRACK: &str = "INSERT INTO tracks (track_id, name, description, product, \
     latest_version, create_time, update_time) VALUES ($1, $2, $3, $4, 1, $5, $5)";

/// Makes `$2`, published at `$3`, the latest version of track `$1`.
pub(crate) const ADVANCE_TRACK: &str =
    "UPDATE tracks SET latest_version = $2, update_time = $3 WHERE track_id = $1";

pub(crate) const SELECT_VERSION: &str = "SELECT track_version_id, track_id, version, \
     cadence_nanos, max_interval_nanos, reaction_window_nanos, max_attempts, \
     quiet_start_minute, quiet_end_minute, quiet_skip_weekends, time_zone_mode, \
     default_time_zone, fallback_language, offer_template_id, alternative_offer_template_id, \
     auto_enroll_classes, change_note, publish_time FROM track_versions";

pub(crate) const INSERT_VERSION: &str = "INSERT INTO track_versions (track_version_id, track_id, \
     version, cadence_nanos, max_interval_nanos, reaction_window_nanos, max_attempts, \
     quiet_start_minute, quiet_end_minute, quiet_skip_weekends, time_zone_mode, \
     default_time_zone, fallback_language, offer_template_id, alternative_offer_template_id, \
     auto_enroll_classes, change_note, publish_time) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";

pub(crate) const SELECT_KIND_TEMPLATES: &str = "SELECT kind, offer_template_id, \
     alternative_offer_template_id FROM track_version_kind_templates \
     WHERE track_version_id = $1 ORDER BY position";

pub(crate) const INSERT_KIND_TEMPLATES: &str = "INSERT INTO track_version_kind_templates \
     (track_version_id, position, kind, offer_template_id, alternative_offer_template_id) \
     VALUES ($1, $2, $3, $4, $5)";

pub(crate) const TEMPLATE_EXISTS: &str =
    "SELECT template_id FROM mail_templates WHERE template_id = $1";

pub(crate) const TRACK_NAMED: &str = "SELECT track_id FROM tracks WHERE product = $1 AND name = $2";

/// A duration as the nanoseconds a version row keeps; parsing bounds every duration far
/// below what overflows.
pub(crate) fn nanos(duration: TimeDelta) -> i64 {
    duration.num_nanoseconds().unwrap_or(i64::MAX)
}

/// A number as an INTEGER column keeps it; parsing bounds versions and attempts below
/// `i32::MAX`.
pub(crate) fn integer(number: u32) -> i32 {
    i32::try_from(number).unwrap_or(i32::MAX)
}

/// The lead classes of a policy by their contract names.
pub(crate) fn class_names(policy: &TrackPolicy) -> Vec<String> {
    policy
        .auto_enroll_classes
        .iter()
        .map(|class| class.as_str_name().to_owned())
        .collect()
}

/// The storage error of a track insert, which can only collide on the product's name
/// (the id is new), as the refusal the contract names.
pub(crate) fn name_taken(error: sqlx::Error, track: &NewTrack) -> NurturingError {
    match StorageError::from(error) {
        StorageError::UniqueViolation { .. } => NurturingError::TrackNameTaken {
            product: track.product.clone(),
            name: track.name.clone(),
        },
        other => other.into(),
    }
}

/// The refusal for the references whose template is not in `existing`, if any.
pub(crate) fn missing_templates(
    references: Vec<(String, Uuid)>,
    existing: impl Fn(&Uuid) -> bool,
) -> Result<(), NurturingError> {
    let missing: Vec<(String, Uuid)> = references
        .into_iter()
        .filter(|(_, template_id)| !existing(template_id))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(NurturingError::TemplatesMissing(missing))
    }
}

#[async_trait]
impl TrackRepository for PostgresTrackRepository {
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
            .bind(&template.merge_fields)
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
        Ok(
            sqlx::query_as::<_, TemplateRow>(&format!("{SELECT_TEMPLATE} WHERE template_id = $1"))
                .bind(template_id)
                .fetch_optional(&self.pool)
                .await?
                .map(StoredMailTemplate::from),
        )
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
        let rows = sqlx::query_as::<_, TemplateRow>(&format!(
            "{SELECT_TEMPLATE} WHERE ($1::text IS NULL OR language = $1) \
             AND ($2::uuid IS NULL OR template_id < $2) \
             ORDER BY template_id DESC LIMIT $3"
        ))
        .bind(language)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let templates = rows.into_iter().map(StoredMailTemplate::from).collect();
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
        let Some(row) = sqlx::query_as::<_, VersionRow>(&format!(
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
        // Byte order, as SQLite compares, so both stores list alike whatever the locale.
        let rows = sqlx::query_as::<_, TrackRow>(&format!(
            "{SELECT_TRACK} WHERE ($1::text IS NULL OR product = $1) \
             AND ($2::uuid IS NULL OR (name COLLATE \"C\", track_id) > \
                 (SELECT name COLLATE \"C\", track_id FROM tracks WHERE track_id = $2)) \
             ORDER BY name COLLATE \"C\", track_id LIMIT $3"
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
        let track = sqlx::query_as::<_, TrackRow>(&format!(
            "{SELECT_TRACK} WHERE track_id = $1 FOR UPDATE"
        ))
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

impl PostgresTrackRepository {
    /// The answer of the call that published version row `track_version_id`: the version,
    /// and the track as it stood right after.
    async fn published(&self, track_version_id: Uuid) -> Result<PublishedVersion, StorageError> {
        let row = sqlx::query_as::<_, VersionRow>(&format!(
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

    async fn with_kind_templates(&self, row: VersionRow) -> Result<TrackVersion, StorageError> {
        let kind_rows = sqlx::query_as::<_, KindTemplatesRow>(SELECT_KIND_TEMPLATES)
            .bind(row.track_version_id)
            .fetch_all(&self.pool)
            .await?;
        row.into_version(kind_rows)
    }
}

/// Refuses a policy that names templates that do not exist. Templates are never deleted,
/// so what this finds holds until the transaction commits.
async fn check_templates(
    connection: &mut PgConnection,
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
    connection: &mut PgConnection,
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
        .bind(class_names(policy))
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
