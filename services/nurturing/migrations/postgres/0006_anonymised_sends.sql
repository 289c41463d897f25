-- A send outlives its contact's erasure, anonymised: it keeps counting in the reports but
-- names neither the contact nor the (deleted) enrollment any more.

ALTER TABLE sends ALTER COLUMN enrollment_id DROP NOT NULL;
ALTER TABLE sends ALTER COLUMN contact_id DROP NOT NULL;
