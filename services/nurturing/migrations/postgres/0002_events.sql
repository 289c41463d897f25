-- The transactional outbox this service publishes its events from, and the ids of the
-- events it has applied (so a redelivered event changes nothing twice).

CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    create_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    publish_time TIMESTAMPTZ
);

CREATE INDEX outbox_unpublished ON outbox (seq) WHERE publish_time IS NULL;
CREATE INDEX outbox_published ON outbox (publish_time) WHERE publish_time IS NOT NULL;

CREATE TABLE processed_events (
    consumer_group TEXT NOT NULL,
    event_id UUID NOT NULL,
    process_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
