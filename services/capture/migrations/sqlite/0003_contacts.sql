-- Accounts, leads (buying units), contacts, anonymous visitors, the activity stream,
-- consent records with their evidence, confirmation mails waiting for delivery, the
-- consent wordings forms showed before their current one, and the stored answers of
-- calls that a retry with the same idempotency key must get again byte for byte.
--
-- The same records as on PostgreSQL. Profiles and attribution are kept as encoded protobuf
-- messages (leadflow.common.v1), beside the columns that identity matching and listings
-- search by.

CREATE TABLE accounts (
    account_id BLOB PRIMARY KEY,
    web_domain TEXT NOT NULL UNIQUE CHECK (web_domain <> ''),
    name TEXT NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL
);

CREATE TABLE leads (
    lead_id BLOB PRIMARY KEY,
    account_id BLOB REFERENCES accounts (account_id),
    -- Empty for a lead without a company domain (a private person on free mail).
    web_domain TEXT NOT NULL,
    site_key TEXT NOT NULL,
    source TEXT NOT NULL,
    country_code TEXT NOT NULL,
    profile BLOB NOT NULL,
    first_attribution BLOB,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    CHECK ((web_domain = '') = (account_id IS NULL))
);

-- One buying unit per company domain and site.
CREATE UNIQUE INDEX leads_by_site ON leads (web_domain, site_key) WHERE web_domain <> '';
CREATE INDEX leads_by_account ON leads (account_id, lead_id);

CREATE TABLE contacts (
    contact_id BLOB PRIMARY KEY,
    -- Normalised: trimmed, domain lower-cased.
    email TEXT NOT NULL UNIQUE,
    lead_id BLOB NOT NULL REFERENCES leads (lead_id),
    source TEXT NOT NULL,
    profile BLOB NOT NULL,
    -- A JSON object of custom form values by field name.
    custom_fields TEXT NOT NULL,
    first_attribution BLOB,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    last_activity_time TEXT
);

CREATE INDEX contacts_by_lead ON contacts (lead_id, contact_id);

CREATE TABLE visitors (
    visitor_id TEXT PRIMARY KEY,
    -- Set once the visitor identified itself; never changes after that.
    contact_id BLOB REFERENCES contacts (contact_id),
    first_seen_time TEXT NOT NULL,
    merge_time TEXT
);

CREATE INDEX visitors_by_contact ON visitors (contact_id) WHERE contact_id IS NOT NULL;

CREATE TABLE activities (
    activity_id BLOB PRIMARY KEY,
    contact_id BLOB REFERENCES contacts (contact_id),
    lead_id BLOB REFERENCES leads (lead_id),
    visitor_id TEXT REFERENCES visitors (visitor_id),
    activity_type TEXT NOT NULL,
    custom_type TEXT NOT NULL,
    content_item_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    product TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    source TEXT NOT NULL,
    send_id TEXT NOT NULL,
    attribution BLOB,
    -- A JSON object of further facts.
    attributes TEXT NOT NULL,
    form_id BLOB,
    recorded_at TEXT NOT NULL,
    CHECK (contact_id IS NOT NULL OR visitor_id IS NOT NULL)
);

CREATE INDEX activities_by_contact ON activities (contact_id, occurred_at DESC, activity_id DESC);
CREATE INDEX activities_by_lead ON activities (lead_id, occurred_at DESC, activity_id DESC);
CREATE INDEX activities_by_visitor ON activities (visitor_id, occurred_at DESC, activity_id DESC);

CREATE TABLE consent_records (
    consent_id BLOB PRIMARY KEY,
    contact_id BLOB NOT NULL REFERENCES contacts (contact_id),
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    previous_state TEXT NOT NULL,
    wording_version TEXT NOT NULL,
    wording TEXT NOT NULL,
    form_id BLOB,
    channel TEXT NOT NULL,
    client BLOB,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    send_id TEXT NOT NULL,
    confirms_consent_id BLOB REFERENCES consent_records (consent_id),
    note TEXT NOT NULL
);

-- The rowid gives the order records were written in, which is the order of the evidence.
CREATE INDEX consent_by_contact ON consent_records (contact_id);

CREATE TABLE outbound_mails (
    mail_id BLOB PRIMARY KEY,
    contact_id BLOB NOT NULL REFERENCES contacts (contact_id),
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    link TEXT NOT NULL,
    create_time TEXT NOT NULL,
    send_time TEXT
);

CREATE INDEX outbound_mails_unsent ON outbound_mails (create_time) WHERE send_time IS NULL;

CREATE TABLE form_consent_wordings (
    form_id BLOB NOT NULL REFERENCES forms (form_id),
    version TEXT NOT NULL,
    text TEXT NOT NULL,
    effective_time TEXT NOT NULL,
    superseded_time TEXT NOT NULL,
    PRIMARY KEY (form_id, version)
);

CREATE TABLE call_responses (
    response_id BLOB PRIMARY KEY,
    response BLOB NOT NULL,
    create_time TEXT NOT NULL
);
