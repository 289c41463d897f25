-- Scoring models, versioned per product, and the idempotency keys of scoring's mutating calls.

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request BYTEA NOT NULL,
    resource_id UUID,
    create_time TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A model version is immutable once created; its rules are kept as the encoded
-- leadflow.scoring.v1.ScoringModel message, the contract's own schema-evolving format.
CREATE TABLE scoring_models (
    model_id UUID PRIMARY KEY,
    product TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    name TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT false,
    threshold INTEGER NOT NULL CHECK (threshold > 0),
    definition BYTEA NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    UNIQUE (product, version)
);

CREATE UNIQUE INDEX scoring_models_one_active_per_product ON scoring_models (product) WHERE active;
