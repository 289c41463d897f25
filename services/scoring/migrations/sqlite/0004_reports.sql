-- What the funnel reports need, as on PostgreSQL: closed deals with their values, the
-- campaign that brought each lead first, marketing costs per campaign, and indexes that
-- read a product's history at once. Times are RFC 3339 UTC text.

CREATE TABLE deals (
    deal_id BLOB PRIMARY KEY,
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    won INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    closed_at TEXT NOT NULL
);

CREATE INDEX deals_by_product ON deals (product, closed_at);

CREATE TABLE lead_campaigns (
    lead_id BLOB PRIMARY KEY,
    campaign TEXT NOT NULL,
    first_time TEXT NOT NULL
);

CREATE TABLE marketing_costs (
    cost_id BLOB PRIMARY KEY,
    product TEXT NOT NULL,
    campaign TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    start_time TEXT NOT NULL,
    end_time TEXT NOT NULL,
    note TEXT NOT NULL,
    create_time TEXT NOT NULL
);

CREATE INDEX marketing_costs_by_product ON marketing_costs (product, campaign, cost_id);

CREATE INDEX class_changes_by_product ON class_changes (product, lead_id, change_id);
CREATE INDEX stage_changes_by_product ON stage_changes (product, lead_id, change_id);
