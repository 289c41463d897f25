-- Scoring models on the embedded store: the same records as on PostgreSQL, in SQLite's types.

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    resource_id BLOB,
    create_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE scoring_models (
    model_id BLOB PRIMARY KEY,
    product TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    name TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    threshold INTEGER NOT NULL CHECK (threshold > 0),
    definition BLOB NOT NULL,
    create_time TEXT NOT NULL,
    UNIQUE (product, version)
);

CREATE UNIQUE INDEX scoring_models_one_active_per_product ON scoring_models (product) WHERE active;
