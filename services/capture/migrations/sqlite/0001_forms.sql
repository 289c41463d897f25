-- Capture forms on the embedded store: the same records as on PostgreSQL, with lists kept
-- as JSON arrays.

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    resource_id BLOB,
    create_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE forms (
    form_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    product TEXT NOT NULL,
    state TEXT NOT NULL,
    consent_wording TEXT NOT NULL,
    consent_wording_version TEXT NOT NULL,
    consent_purpose TEXT NOT NULL,
    consent_required INTEGER NOT NULL,
    double_opt_in INTEGER NOT NULL,
    ask_next_fields TEXT NOT NULL,
    ask_next_limit INTEGER NOT NULL CHECK (ask_next_limit >= 0),
    allowed_origins TEXT NOT NULL,
    success_url TEXT NOT NULL,
    revision INTEGER NOT NULL CHECK (revision > 0),
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL
);

CREATE INDEX forms_by_product ON forms (product);

CREATE TABLE form_fields (
    form_id BLOB NOT NULL REFERENCES forms (form_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    required INTEGER NOT NULL,
    kind TEXT NOT NULL,
    maps_to TEXT NOT NULL,
    options TEXT NOT NULL,
    max_length INTEGER NOT NULL CHECK (max_length >= 0),
    PRIMARY KEY (form_id, position),
    UNIQUE (form_id, name)
);
