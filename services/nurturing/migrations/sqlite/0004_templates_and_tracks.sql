-- Mail templates and nurture tracks with their immutable versions on the embedded store:
-- the same records as on PostgreSQL, with lists kept as JSON arrays.

CREATE TABLE mail_templates (
    template_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    subject TEXT NOT NULL,
    html_body TEXT NOT NULL,
    text_body TEXT NOT NULL,
    merge_fields TEXT NOT NULL,
    create_time TEXT NOT NULL
);

CREATE INDEX mail_templates_by_language ON mail_templates (language, template_id);

CREATE TABLE tracks (
    track_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    product TEXT NOT NULL,
    latest_version INTEGER NOT NULL CHECK (latest_version >= 1),
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    CONSTRAINT tracks_name_per_product UNIQUE (product, name)
);

CREATE INDEX tracks_by_name ON tracks (name, track_id);

CREATE TABLE track_versions (
    track_version_id BLOB PRIMARY KEY,
    track_id BLOB NOT NULL REFERENCES tracks (track_id),
    version INTEGER NOT NULL CHECK (version >= 1),
    cadence_nanos INTEGER NOT NULL CHECK (cadence_nanos > 0),
    max_interval_nanos INTEGER NOT NULL CHECK (max_interval_nanos > 0),
    reaction_window_nanos INTEGER NOT NULL CHECK (reaction_window_nanos > 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    quiet_start_minute INTEGER CHECK (quiet_start_minute BETWEEN 0 AND 1439),
    quiet_end_minute INTEGER CHECK (quiet_end_minute BETWEEN 0 AND 1439),
    quiet_skip_weekends INTEGER,
    time_zone_mode TEXT NOT NULL,
    default_time_zone TEXT NOT NULL,
    fallback_language TEXT,
    offer_template_id BLOB NOT NULL REFERENCES mail_templates (template_id),
    alternative_offer_template_id BLOB REFERENCES mail_templates (template_id),
    auto_enroll_classes TEXT NOT NULL,
    change_note TEXT NOT NULL,
    publish_time TEXT NOT NULL,
    CONSTRAINT track_versions_number UNIQUE (track_id, version),
    CHECK ((quiet_start_minute IS NULL) = (quiet_end_minute IS NULL)
        AND (quiet_start_minute IS NULL) = (quiet_skip_weekends IS NULL))
);

CREATE TABLE track_version_kind_templates (
    track_version_id BLOB NOT NULL REFERENCES track_versions (track_version_id),
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    offer_template_id BLOB NOT NULL REFERENCES mail_templates (template_id),
    alternative_offer_template_id BLOB REFERENCES mail_templates (template_id),
    PRIMARY KEY (track_version_id, position),
    UNIQUE (track_version_id, kind)
);
