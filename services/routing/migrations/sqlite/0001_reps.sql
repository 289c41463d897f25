-- Sales reps, their hours and absences, and teams on the embedded store: the same records
-- as on PostgreSQL, with lists kept as JSON arrays.

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    resource_id BLOB,
    create_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE reps (
    rep_id BLOB PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    products TEXT NOT NULL,
    languages TEXT NOT NULL,
    capacity INTEGER NOT NULL CHECK (capacity > 0),
    weight INTEGER NOT NULL CHECK (weight >= 0),
    active INTEGER NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL
);

CREATE TABLE rep_working_hours (
    rep_id BLOB NOT NULL REFERENCES reps (rep_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    day_of_week TEXT NOT NULL,
    start_minute INTEGER NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute INTEGER NOT NULL CHECK (end_minute BETWEEN 1 AND 1440 AND end_minute > start_minute),
    PRIMARY KEY (rep_id, position)
);

CREATE TABLE rep_out_of_office (
    rep_id BLOB NOT NULL REFERENCES reps (rep_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    start_time TEXT NOT NULL,
    end_time TEXT CHECK (end_time IS NULL OR end_time > start_time),
    PRIMARY KEY (rep_id, position)
);

CREATE TABLE teams (
    team_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    create_time TEXT NOT NULL
);

CREATE TABLE team_members (
    team_id BLOB NOT NULL REFERENCES teams (team_id) ON DELETE CASCADE,
    rep_id BLOB NOT NULL REFERENCES reps (rep_id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, rep_id)
);

CREATE INDEX team_members_by_rep ON team_members (rep_id);
