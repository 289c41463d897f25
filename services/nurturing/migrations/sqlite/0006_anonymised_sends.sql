-- A send outlives its contact's erasure, anonymised, as on PostgreSQL: it keeps counting in
-- the reports but names neither the contact nor the (deleted) enrollment any more. SQLite
-- cannot drop a NOT NULL, so the table is built anew with the same rows.

CREATE TABLE sends_anonymisable (
    send_id BLOB PRIMARY KEY,
    enrollment_id BLOB REFERENCES enrollments (enrollment_id),
    contact_id BLOB,
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    track_id BLOB NOT NULL,
    track_version INTEGER NOT NULL,
    step INTEGER NOT NULL CHECK (step >= 1),
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    content_item_id BLOB NOT NULL REFERENCES content_items (content_item_id),
    template_id BLOB NOT NULL REFERENCES mail_templates (template_id),
    buyer_role TEXT NOT NULL,
    stage TEXT NOT NULL,
    state TEXT NOT NULL,
    message_id TEXT NOT NULL,
    due_time TEXT NOT NULL,
    claim_time TEXT NOT NULL,
    send_time TEXT,
    first_open_time TEXT,
    first_click_time TEXT,
    open_count INTEGER NOT NULL DEFAULT 0,
    click_count INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT NOT NULL DEFAULT '',
    -- A send is idempotent per (enrollment, step, attempt).
    CONSTRAINT sends_once_per_try UNIQUE (enrollment_id, step, attempt)
);

INSERT INTO sends_anonymisable (send_id, enrollment_id, contact_id, lead_id, product, track_id,
    track_version, step, attempt, content_item_id, template_id, buyer_role, stage, state,
    message_id, due_time, claim_time, send_time, first_open_time, first_click_time, open_count,
    click_count, failure_reason)
SELECT send_id, enrollment_id, contact_id, lead_id, product, track_id, track_version, step,
    attempt, content_item_id, template_id, buyer_role, stage, state, message_id, due_time,
    claim_time, send_time, first_open_time, first_click_time, open_count, click_count,
    failure_reason
FROM sends;

DROP TABLE sends;
ALTER TABLE sends_anonymisable RENAME TO sends;

CREATE INDEX sends_by_contact ON sends (contact_id, due_time);
CREATE INDEX sends_by_send_time ON sends (send_time) WHERE send_time IS NOT NULL;
-- A claimed send not yet delivered, found when its enrollment falls due again.
CREATE INDEX sends_pending ON sends (enrollment_id) WHERE state = 'SEND_STATE_PENDING';
