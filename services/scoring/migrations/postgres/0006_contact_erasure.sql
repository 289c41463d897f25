-- What a data-protection export or erasure of one contact reads: its activities, and the
-- class and stage changes the events of its activities caused.

CREATE INDEX activities_by_contact ON activities (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX class_changes_by_event ON class_changes (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX stage_changes_by_event ON stage_changes (event_id) WHERE event_id IS NOT NULL;
