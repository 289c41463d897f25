-- What scoring knows about leads and what it made of it, as on PostgreSQL: profile and
-- activity facts, the append-only score ledger, the class and stage history with the
-- current standing per lead and product, BANT, hand-offs, and stored call answers. Times
-- are RFC 3339 UTC text, whose text order is time order.

CREATE TABLE leads (
    lead_id BLOB PRIMARY KEY,
    account_id BLOB,
    -- An encoded leadflow.common.v1.LeadProfile.
    profile BLOB NOT NULL,
    update_time TEXT NOT NULL
);

CREATE TABLE contacts (
    contact_id BLOB PRIMARY KEY,
    lead_id BLOB NOT NULL REFERENCES leads (lead_id),
    -- An encoded leadflow.common.v1.ContactProfile.
    profile BLOB NOT NULL,
    opted_in INTEGER NOT NULL,
    update_time TEXT NOT NULL
);

CREATE INDEX contacts_by_lead ON contacts (lead_id, contact_id);

-- Activities as scored; those of anonymous visitors wait here for the visitor's merge.
CREATE TABLE activities (
    activity_id BLOB PRIMARY KEY,
    event_id BLOB NOT NULL,
    lead_id BLOB,
    contact_id BLOB,
    visitor_id TEXT NOT NULL,
    -- The engagement rule key: an ActivityType name, or custom:<name>.
    activity_key TEXT NOT NULL,
    content_id TEXT NOT NULL,
    -- A BuyingStage name; BUYING_STAGE_UNSPECIFIED when the content has no stage tag.
    buying_stage TEXT NOT NULL,
    -- Empty when the activity is about no product in particular: it counts for all.
    product TEXT NOT NULL,
    occurred_at TEXT NOT NULL
);

CREATE INDEX activities_by_lead ON activities (lead_id, occurred_at, activity_id);
CREATE INDEX activities_by_visitor ON activities (visitor_id) WHERE lead_id IS NULL;

-- The current standing of a lead for a product; the history tables below are its truth.
CREATE TABLE lead_products (
    lead_id BLOB NOT NULL REFERENCES leads (lead_id),
    product TEXT NOT NULL,
    stage TEXT NOT NULL,
    -- A LeadClass name; LEAD_CLASS_UNSPECIFIED while unclassified.
    lead_class TEXT NOT NULL,
    class_since TEXT,
    -- Set while a manual class is in force: evidence older than this is not looked at.
    manual_since TEXT,
    handed_over INTEGER NOT NULL,
    awaiting_new_engagement INTEGER NOT NULL,
    contact_requested INTEGER NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    PRIMARY KEY (lead_id, product)
);

CREATE INDEX lead_products_by_product ON lead_products (product, lead_id);

-- Every score change: fit entries carry the point difference of one fit rule, engagement
-- entries the points one activity earned. Never updated; a new model version gets entries
-- of its own.
CREATE TABLE ledger_entries (
    entry_id BLOB PRIMARY KEY,
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    model_id BLOB NOT NULL REFERENCES scoring_models (model_id),
    contact_id BLOB,
    event_id BLOB,
    activity_id BLOB,
    activity_key TEXT NOT NULL,
    content_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    points INTEGER NOT NULL,
    capped INTEGER NOT NULL,
    -- A ScoreChangeCause name.
    cause TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    create_time TEXT NOT NULL
);

CREATE INDEX ledger_by_lead ON ledger_entries (lead_id, product, model_id, occurred_at);
CREATE INDEX ledger_by_contact ON ledger_entries (contact_id) WHERE contact_id IS NOT NULL;
-- An activity earns points once per model version.
CREATE UNIQUE INDEX ledger_once_per_activity ON ledger_entries (model_id, lead_id, product, activity_id)
    WHERE activity_id IS NOT NULL;

CREATE TABLE class_changes (
    change_id BLOB PRIMARY KEY,
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    from_class TEXT NOT NULL,
    to_class TEXT NOT NULL,
    -- A ClassChangeOrigin name.
    origin TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    event_id BLOB,
    change_time TEXT NOT NULL
);

CREATE INDEX class_changes_by_lead ON class_changes (lead_id, product, change_id);

CREATE TABLE stage_changes (
    change_id BLOB PRIMARY KEY,
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    event_id BLOB,
    change_time TEXT NOT NULL
);

CREATE INDEX stage_changes_by_lead ON stage_changes (lead_id, product, change_id);

CREATE TABLE bant (
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    -- An encoded leadflow.scoring.v1.Bant.
    qualification BLOB NOT NULL,
    update_time TEXT NOT NULL,
    PRIMARY KEY (lead_id, product)
);

CREATE TABLE hand_offs (
    hand_off_id BLOB PRIMARY KEY,
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    -- A SalesReadyReason name.
    reason TEXT NOT NULL,
    total_points REAL NOT NULL,
    model_id BLOB NOT NULL,
    event_id BLOB,
    hand_off_time TEXT NOT NULL
);

CREATE INDEX hand_offs_by_lead ON hand_offs (lead_id, product, hand_off_time);

CREATE TABLE call_responses (
    response_id BLOB PRIMARY KEY,
    response BLOB NOT NULL
);
