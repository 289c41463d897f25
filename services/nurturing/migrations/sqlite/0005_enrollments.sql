-- Contacts, leads, enrollments, sends and the frequency policy on the embedded store: the
-- same records as on PostgreSQL. The one connection serialises the scheduler's claims.

CREATE TABLE contacts (
    contact_id BLOB PRIMARY KEY,
    lead_id BLOB NOT NULL,
    email TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    job_title TEXT NOT NULL,
    buyer_role TEXT NOT NULL,
    language TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    company_name TEXT NOT NULL,
    -- The state of the nurture-mail consent, as events.v1.ConsentState names it.
    consent_state TEXT NOT NULL,
    -- The contact's own frequency policy, all there or not at all.
    frequency_max_sends INTEGER CHECK (frequency_max_sends >= 1),
    frequency_window_nanos INTEGER CHECK (frequency_window_nanos > 0),
    frequency_min_gap_nanos INTEGER CHECK (frequency_min_gap_nanos > 0),
    frequency_update_time TEXT,
    update_time TEXT NOT NULL,
    CHECK ((frequency_max_sends IS NULL) = (frequency_window_nanos IS NULL)
        AND (frequency_max_sends IS NULL) = (frequency_min_gap_nanos IS NULL)
        AND (frequency_max_sends IS NULL) = (frequency_update_time IS NULL))
);

CREATE INDEX contacts_by_lead ON contacts (lead_id);

-- The products a lead is known for, with its class for each once scoring classified it.
CREATE TABLE lead_products (
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    lead_class TEXT,
    update_time TEXT NOT NULL,
    PRIMARY KEY (lead_id, product)
);

-- The global frequency policy: one row, written on first change.
CREATE TABLE frequency_policy (
    policy_id INTEGER PRIMARY KEY CHECK (policy_id = 1),
    max_sends INTEGER NOT NULL CHECK (max_sends >= 1),
    window_nanos INTEGER NOT NULL CHECK (window_nanos > 0),
    min_gap_nanos INTEGER NOT NULL CHECK (min_gap_nanos > 0),
    update_time TEXT NOT NULL
);

CREATE TABLE enrollments (
    enrollment_id BLOB PRIMARY KEY,
    contact_id BLOB NOT NULL REFERENCES contacts (contact_id),
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    track_id BLOB NOT NULL REFERENCES tracks (track_id),
    track_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    state_reason TEXT NOT NULL,
    buyer_role TEXT NOT NULL,
    stage TEXT NOT NULL,
    step INTEGER NOT NULL CHECK (step >= 0),
    attempt INTEGER NOT NULL CHECK (attempt >= 0),
    next_due_time TEXT,
    last_send_time TEXT,
    last_reaction_time TEXT,
    enroll_time TEXT NOT NULL,
    state_change_time TEXT NOT NULL,
    end_time TEXT,
    FOREIGN KEY (track_id, track_version) REFERENCES track_versions (track_id, version)
);

-- At most one open enrollment of a contact per track.
CREATE UNIQUE INDEX enrollments_open_per_track ON enrollments (contact_id, track_id)
    WHERE state IN ('ENROLLMENT_STATE_ACTIVE', 'ENROLLMENT_STATE_PAUSED',
                    'ENROLLMENT_STATE_PAUSED_FOR_SALES', 'ENROLLMENT_STATE_FLAGGED');
-- The scheduler's claim: active enrollments by due time.
CREATE INDEX enrollments_due ON enrollments (next_due_time)
    WHERE state = 'ENROLLMENT_STATE_ACTIVE';
CREATE INDEX enrollments_by_lead ON enrollments (lead_id, product);
CREATE INDEX enrollments_by_contact ON enrollments (contact_id, enroll_time);
CREATE INDEX enrollments_by_enroll_time ON enrollments (enroll_time, enrollment_id);

CREATE TABLE sends (
    send_id BLOB PRIMARY KEY,
    enrollment_id BLOB NOT NULL REFERENCES enrollments (enrollment_id),
    contact_id BLOB NOT NULL,
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

CREATE INDEX sends_by_contact ON sends (contact_id, due_time);
CREATE INDEX sends_by_send_time ON sends (send_time) WHERE send_time IS NOT NULL;
-- A claimed send not yet delivered, found when its enrollment falls due again.
CREATE INDEX sends_pending ON sends (enrollment_id) WHERE state = 'SEND_STATE_PENDING';

-- The stored answers of mutating enrollment calls, replayed on a retry with the same key.
CREATE TABLE call_responses (
    response_id BLOB PRIMARY KEY,
    response BLOB NOT NULL
);
