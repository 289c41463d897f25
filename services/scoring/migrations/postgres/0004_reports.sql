-- What the funnel reports need beyond the class and stage history: the deals routing
-- reported closed with their values, the campaign that brought each lead first, the
-- marketing costs per campaign, and indexes that read a product's history at once.

CREATE TABLE deals (
    -- The id of the DealClosed event that reported the deal.
    deal_id UUID PRIMARY KEY,
    lead_id UUID NOT NULL,
    product TEXT NOT NULL,
    won BOOLEAN NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    closed_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX deals_by_product ON deals (product, closed_at);

-- The campaign of a lead: the utm_campaign of the first capture that named one. Written
-- once; a later campaign does not take the lead over.
CREATE TABLE lead_campaigns (
    lead_id UUID PRIMARY KEY,
    campaign TEXT NOT NULL,
    first_time TIMESTAMPTZ NOT NULL
);

CREATE TABLE marketing_costs (
    cost_id UUID PRIMARY KEY,
    product TEXT NOT NULL,
    campaign TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    start_time TIMESTAMPTZ NOT NULL,
    end_time TIMESTAMPTZ NOT NULL,
    note TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL
);

CREATE INDEX marketing_costs_by_product ON marketing_costs (product, campaign, cost_id);

CREATE INDEX class_changes_by_product ON class_changes (product, lead_id, change_id);
CREATE INDEX stage_changes_by_product ON stage_changes (product, lead_id, change_id);
