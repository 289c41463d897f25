-- The content library and the idempotency keys of nurturing's mutating calls.

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request BYTEA NOT NULL,
    resource_id UUID,
    create_time TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE content_items (
    content_item_id UUID PRIMARY KEY,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    summary TEXT NOT NULL,
    buyer_roles TEXT[] NOT NULL CHECK (cardinality(buyer_roles) > 0),
    stage TEXT NOT NULL,
    product TEXT NOT NULL,
    language TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    retired BOOLEAN NOT NULL DEFAULT false,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    retire_time TIMESTAMPTZ
);

-- The role x stage grid is read per product and stage; roles are matched with ANY().
CREATE INDEX content_items_by_cell ON content_items (product, stage) WHERE NOT retired;
CREATE INDEX content_items_by_role ON content_items USING GIN (buyer_roles);
