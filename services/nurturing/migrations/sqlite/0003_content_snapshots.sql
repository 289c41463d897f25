-- The item as each UpdateContentItem or RetireContentItem call answered with it (the
-- call's idempotency key names its snapshot, so a retry answers exactly as the first call
-- did), and why an item was retired: the same records as on PostgreSQL.

ALTER TABLE content_items ADD COLUMN retire_reason TEXT NOT NULL DEFAULT '';

CREATE TABLE content_item_snapshots (
    snapshot_id BLOB PRIMARY KEY,
    content_item_id BLOB NOT NULL REFERENCES content_items (content_item_id),
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    summary TEXT NOT NULL,
    buyer_roles TEXT NOT NULL,
    stage TEXT NOT NULL,
    product TEXT NOT NULL,
    language TEXT NOT NULL,
    priority INTEGER NOT NULL,
    retired INTEGER NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    retire_time TEXT
);
