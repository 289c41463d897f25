-- What remains of erased contacts: the id they had and the keyed hash of their email,
-- enough to prove the erasure and to stop a re-import without new consent. An email may
-- be erased more than once (captured again with new consent, erased again).
--
-- The retention policy finds contacts by when they were last active.

CREATE TABLE tombstones (
    contact_id UUID PRIMARY KEY,
    email_hash TEXT NOT NULL,
    reason TEXT NOT NULL,
    erase_time TIMESTAMPTZ NOT NULL,
    erased_by TEXT NOT NULL,
    note TEXT NOT NULL
);

CREATE INDEX tombstones_by_email_hash ON tombstones (email_hash);

CREATE INDEX contacts_by_last_activity ON contacts ((COALESCE(last_activity_time, update_time)));
