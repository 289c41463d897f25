-- The content library on the embedded store: the same records as on PostgreSQL, with
-- lists kept as JSON arrays.

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    resource_id BLOB,
    create_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE content_items (
    content_item_id BLOB PRIMARY KEY,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    summary TEXT NOT NULL,
    buyer_roles TEXT NOT NULL CHECK (json_array_length(buyer_roles) > 0),
    stage TEXT NOT NULL,
    product TEXT NOT NULL,
    language TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    retired INTEGER NOT NULL DEFAULT 0,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    retire_time TEXT
);

CREATE INDEX content_items_by_cell ON content_items (product, stage) WHERE NOT retired;
