-- Mail templates and nurture tracks with their versions. Templates and versions are never
-- updated: an enrolled contact keeps the version it started on, and a version keeps the
-- templates it names, so a change is always a new row.

CREATE TABLE mail_templates (
    template_id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    subject TEXT NOT NULL,
    html_body TEXT NOT NULL,
    text_body TEXT NOT NULL,
    merge_fields TEXT[] NOT NULL,
    create_time TIMESTAMPTZ NOT NULL
);

-- Listed newest first, optionally of one language.
CREATE INDEX mail_templates_by_language ON mail_templates (language, template_id);

CREATE TABLE tracks (
    track_id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    product TEXT NOT NULL,
    latest_version INTEGER NOT NULL CHECK (latest_version >= 1),
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    CONSTRAINT tracks_name_per_product UNIQUE (product, name)
);

-- Listed by name.
CREATE INDEX tracks_by_name ON tracks (name, track_id);

-- Durations are kept in nanoseconds, as precise as the contract's Duration. The row's own
-- id is what an idempotency key records, so that a retry finds the version it published.
CREATE TABLE track_versions (
    track_version_id UUID PRIMARY KEY,
    track_id UUID NOT NULL REFERENCES tracks (track_id),
    version INTEGER NOT NULL CHECK (version >= 1),
    cadence_nanos BIGINT NOT NULL CHECK (cadence_nanos > 0),
    max_interval_nanos BIGINT NOT NULL CHECK (max_interval_nanos > 0),
    reaction_window_nanos BIGINT NOT NULL CHECK (reaction_window_nanos > 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    quiet_start_minute INTEGER CHECK (quiet_start_minute BETWEEN 0 AND 1439),
    quiet_end_minute INTEGER CHECK (quiet_end_minute BETWEEN 0 AND 1439),
    quiet_skip_weekends BOOLEAN,
    time_zone_mode TEXT NOT NULL,
    default_time_zone TEXT NOT NULL,
    fallback_language TEXT,
    offer_template_id UUID NOT NULL REFERENCES mail_templates (template_id),
    alternative_offer_template_id UUID REFERENCES mail_templates (template_id),
    auto_enroll_classes TEXT[] NOT NULL,
    change_note TEXT NOT NULL,
    publish_time TIMESTAMPTZ NOT NULL,
    CONSTRAINT track_versions_number UNIQUE (track_id, version),
    -- Quiet hours are all there or not at all.
    CHECK ((quiet_start_minute IS NULL) = (quiet_end_minute IS NULL)
        AND (quiet_start_minute IS NULL) = (quiet_skip_weekends IS NULL))
);

-- A version's templates for particular content kinds, in the order the version lists them.
CREATE TABLE track_version_kind_templates (
    track_version_id UUID NOT NULL REFERENCES track_versions (track_version_id),
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    offer_template_id UUID NOT NULL REFERENCES mail_templates (template_id),
    alternative_offer_template_id UUID REFERENCES mail_templates (template_id),
    PRIMARY KEY (track_version_id, position),
    UNIQUE (track_version_id, kind)
);
