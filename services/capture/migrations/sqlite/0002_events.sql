-- The events of the embedded mode: this service's outbox, the ids of the events it has
-- applied (so a redelivered event changes nothing twice), and, as a consumer group, how far
-- it has read each producer's outbox, the events waiting for a retry and its dead letters.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    envelope BLOB NOT NULL,
    create_time INTEGER NOT NULL
);

CREATE TABLE processed_events (
    consumer_group TEXT NOT NULL,
    event_id BLOB NOT NULL,
    process_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (consumer_group, event_id)
);

CREATE TABLE event_cursors (
    consumer_group TEXT NOT NULL,
    producer TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, producer)
);

CREATE TABLE event_failures (
    consumer_group TEXT NOT NULL,
    producer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    envelope BLOB NOT NULL,
    attempts INTEGER NOT NULL CHECK (attempts > 0),
    error TEXT NOT NULL,
    last_attempt_time INTEGER NOT NULL,
    retry_time INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, producer, seq)
);

CREATE INDEX event_failures_due ON event_failures (consumer_group, retry_time);

CREATE TABLE dead_letters (
    dead_letter_id INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer_group TEXT NOT NULL,
    producer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    error TEXT NOT NULL,
    envelope BLOB NOT NULL,
    create_time INTEGER NOT NULL
);

CREATE INDEX dead_letters_by_group ON dead_letters (consumer_group, dead_letter_id);
