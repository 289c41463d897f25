-- What scoring knows about leads and what it made of it: the profile and activity facts
-- from capture's events, the append-only score ledger, the class and stage history with
-- the current class and stage per lead and product, BANT, the hand-offs to sales, and the
-- stored answers of calls that a retry with the same idempotency key gets again.

CREATE TABLE leads (
    lead_id UUID PRIMARY KEY,
    account_id UUID,
    -- An encoded leadflow.common.v1.LeadProfile.
    profile BYTEA NOT NULL,
    update_time TIMESTAMPTZ NOT NULL
);

CREATE TABLE contacts (
    contact_id UUID PRIMARY KEY,
    lead_id UUID NOT NULL REFERENCES leads (lead_id),
    -- An encoded leadflow.common.v1.ContactProfile.
    profile BYTEA NOT NULL,
    opted_in BOOLEAN NOT NULL,
    update_time TIMESTAMPTZ NOT NULL
);

CREATE INDEX contacts_by_lead ON contacts (lead_id, contact_id);

-- Activities as scored; those of anonymous visitors wait here for the visitor's merge.
CREATE TABLE activities (
    activity_id UUID PRIMARY KEY,
    event_id UUID NOT NULL,
    lead_id UUID,
    contact_id UUID,
    visitor_id TEXT NOT NULL,
    -- The engagement rule key: an ActivityType name, or custom:<name>.
    activity_key TEXT NOT NULL,
    content_id TEXT NOT NULL,
    -- A BuyingStage name; BUYING_STAGE_UNSPECIFIED when the content has no stage tag.
    buying_stage TEXT NOT NULL,
    -- Empty when the activity is about no product in particular: it counts for all.
    product TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX activities_by_lead ON activities (lead_id, occurred_at, activity_id);
CREATE INDEX activities_by_visitor ON activities (visitor_id) WHERE lead_id IS NULL;

-- The current standing of a lead for a product; the history tables below are its truth.
CREATE TABLE lead_products (
    lead_id UUID NOT NULL REFERENCES leads (lead_id),
    product TEXT NOT NULL,
    stage TEXT NOT NULL,
    -- A LeadClass name; LEAD_CLASS_UNSPECIFIED while unclassified.
    lead_class TEXT NOT NULL,
    class_since TIMESTAMPTZ,
    -- Set while a manual class is in force: evidence older than this is not looked at.
    manual_since TIMESTAMPTZ,
    handed_over BOOLEAN NOT NULL,
    awaiting_new_engagement BOOLEAN NOT NULL,
    contact_requested BOOLEAN NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (lead_id, product)
);

CREATE INDEX lead_products_by_product ON lead_products (product, lead_id);

-- Every score change: fit entries carry the point difference of one fit rule, engagement
-- entries the points one activity earned. Never updated; a new model version gets entries
-- of its own.
CREATE TABLE ledger_entries (
    entry_id UUID PRIMARY KEY,
    lead_id UUID NOT NULL,
    product TEXT NOT NULL,
    model_id UUID NOT NULL REFERENCES scoring_models (model_id),
    contact_id UUID,
    event_id UUID,
    activity_id UUID,
    activity_key TEXT NOT NULL,
    content_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    points INTEGER NOT NULL,
    capped BOOLEAN NOT NULL,
    -- A ScoreChangeCause name.
    cause TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    create_time TIMESTAMPTZ NOT NULL
);

CREATE INDEX ledger_by_lead ON ledger_entries (lead_id, product, model_id, occurred_at);
CREATE INDEX ledger_by_contact ON ledger_entries (contact_id) WHERE contact_id IS NOT NULL;
-- An activity earns points once per model version.
CREATE UNIQUE INDEX ledger_once_per_activity ON ledger_entries (model_id, lead_id, product, activity_id)
    WHERE activity_id IS NOT NULL;

CREATE TABLE class_changes (
    change_id UUID PRIMARY KEY,
    lead_id UUID NOT NULL,
    product TEXT NOT NULL,
    from_class TEXT NOT NULL,
    to_class TEXT NOT NULL,
    -- A ClassChangeOrigin name.
    origin TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    event_id UUID,
    change_time TIMESTAMPTZ NOT NULL
);

CREATE INDEX class_changes_by_lead ON class_changes (lead_id, product, change_id);

CREATE TABLE stage_changes (
    change_id UUID PRIMARY KEY,
    lead_id UUID NOT NULL,
    product TEXT NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    event_id UUID,
    change_time TIMESTAMPTZ NOT NULL
);

CREATE INDEX stage_changes_by_lead ON stage_changes (lead_id, product, change_id);

CREATE TABLE bant (
    lead_id UUID NOT NULL,
    product TEXT NOT NULL,
    -- An encoded leadflow.scoring.v1.Bant.
    qualification BYTEA NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (lead_id, product)
);

CREATE TABLE hand_offs (
    hand_off_id UUID PRIMARY KEY,
    lead_id UUID NOT NULL,
    product TEXT NOT NULL,
    -- A SalesReadyReason name.
    reason TEXT NOT NULL,
    total_points DOUBLE PRECISION NOT NULL,
    model_id UUID NOT NULL,
    event_id UUID,
    hand_off_time TIMESTAMPTZ NOT NULL
);

CREATE INDEX hand_offs_by_lead ON hand_offs (lead_id, product, hand_off_time);

CREATE TABLE call_responses (
    response_id UUID PRIMARY KEY,
    response BYTEA NOT NULL
);
