-- What the funnel report reads by time, as on PostgreSQL: the leads of a product that were
-- created, changed class or stage, or closed a deal from a report's start on.

CREATE INDEX lead_products_by_creation ON lead_products (product, create_time);
CREATE INDEX class_changes_by_time ON class_changes (product, change_time);
CREATE INDEX stage_changes_by_time ON stage_changes (product, change_time);
