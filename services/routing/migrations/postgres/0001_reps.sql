-- Sales reps with their working hours and absences, the teams they belong to, and the
-- idempotency keys of routing's mutating calls.

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request BYTEA NOT NULL,
    resource_id UUID,
    create_time TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE reps (
    rep_id UUID PRIMARY KEY,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    products TEXT[] NOT NULL DEFAULT '{}',
    languages TEXT[] NOT NULL DEFAULT '{}',
    capacity INTEGER NOT NULL CHECK (capacity > 0),
    weight INTEGER NOT NULL CHECK (weight >= 0),
    active BOOLEAN NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX reps_email_key ON reps (email);

CREATE TABLE rep_working_hours (
    rep_id UUID NOT NULL REFERENCES reps (rep_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    day_of_week TEXT NOT NULL,
    start_minute INTEGER NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute INTEGER NOT NULL CHECK (end_minute BETWEEN 1 AND 1440 AND end_minute > start_minute),
    PRIMARY KEY (rep_id, position)
);

CREATE TABLE rep_out_of_office (
    rep_id UUID NOT NULL REFERENCES reps (rep_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    start_time TIMESTAMPTZ NOT NULL,
    end_time TIMESTAMPTZ CHECK (end_time IS NULL OR end_time > start_time),
    PRIMARY KEY (rep_id, position)
);

CREATE TABLE teams (
    team_id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL
);

CREATE TABLE team_members (
    team_id UUID NOT NULL REFERENCES teams (team_id) ON DELETE CASCADE,
    rep_id UUID NOT NULL REFERENCES reps (rep_id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, rep_id)
);

CREATE INDEX team_members_by_rep ON team_members (rep_id);
