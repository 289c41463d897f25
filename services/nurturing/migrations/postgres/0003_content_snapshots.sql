-- The item as each UpdateContentItem or RetireContentItem call answered with it: the call's
-- idempotency key names its snapshot, so that a retry answers exactly as the first call
-- did even after later changes to the item. And why an item was retired, for the record.

ALTER TABLE content_items ADD COLUMN retire_reason TEXT NOT NULL DEFAULT '';

CREATE TABLE content_item_snapshots (
    snapshot_id UUID PRIMARY KEY,
    content_item_id UUID NOT NULL REFERENCES content_items (content_item_id),
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    summary TEXT NOT NULL,
    buyer_roles TEXT[] NOT NULL,
    stage TEXT NOT NULL,
    product TEXT NOT NULL,
    language TEXT NOT NULL,
    priority INTEGER NOT NULL,
    retired BOOLEAN NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    retire_time TIMESTAMPTZ
);
