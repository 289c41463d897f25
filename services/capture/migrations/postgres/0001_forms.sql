-- Capture forms and the idempotency keys of capture's mutating calls.

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request BYTEA NOT NULL,
    resource_id UUID,
    create_time TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE forms (
    form_id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    product TEXT NOT NULL,
    state TEXT NOT NULL,
    consent_wording TEXT NOT NULL,
    consent_wording_version TEXT NOT NULL,
    consent_purpose TEXT NOT NULL,
    consent_required BOOLEAN NOT NULL,
    double_opt_in BOOLEAN NOT NULL,
    ask_next_fields TEXT[] NOT NULL,
    ask_next_limit INTEGER NOT NULL CHECK (ask_next_limit >= 0),
    allowed_origins TEXT[] NOT NULL,
    success_url TEXT NOT NULL,
    revision BIGINT NOT NULL CHECK (revision > 0),
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL
);

CREATE INDEX forms_by_product ON forms (product);

CREATE TABLE form_fields (
    form_id UUID NOT NULL REFERENCES forms (form_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    required BOOLEAN NOT NULL,
    kind TEXT NOT NULL,
    maps_to TEXT NOT NULL,
    options TEXT[] NOT NULL,
    max_length INTEGER NOT NULL CHECK (max_length >= 0),
    PRIMARY KEY (form_id, position),
    UNIQUE (form_id, name)
);
