-- The hand-overs that name a contact, found when capture erases it.

CREATE INDEX hand_overs_by_primary_contact ON hand_overs (primary_contact_id)
    WHERE primary_contact_id <> '';
