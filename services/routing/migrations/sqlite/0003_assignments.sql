-- The embedded store's side of routing's assignments: the same records as on PostgreSQL.
-- Teams with their strategy, SLA and rotation, the versioned rule sets, account owners,
-- hand-overs (one per sales-ready crossing of a lead and product, queued or assigned) and
-- their assignments with the audit of each choice, rep load, and the stored answers of
-- mutating calls.

ALTER TABLE reps ADD COLUMN open_assignments INTEGER NOT NULL DEFAULT 0 CHECK (open_assignments >= 0);
ALTER TABLE reps ADD COLUMN last_assign_time TEXT;

-- No call could create a team before this version: the tables are replaced, not altered.
DROP TABLE team_members;
DROP TABLE teams;

CREATE TABLE teams (
    team_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    team_lead_rep_id BLOB REFERENCES reps (rep_id),
    strategy TEXT NOT NULL,
    account_ownership_first INTEGER NOT NULL,
    sla_millis INTEGER NOT NULL CHECK (sla_millis > 0),
    sla_clock TEXT NOT NULL,
    escalate_after_breaches INTEGER NOT NULL CHECK (escalate_after_breaches >= 0),
    -- Round robin goes on after this member.
    last_chosen_rep_id BLOB,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL
);

CREATE UNIQUE INDEX teams_name_key ON teams (lower(name));

CREATE TABLE team_members (
    team_id BLOB NOT NULL REFERENCES teams (team_id) ON DELETE CASCADE,
    rep_id BLOB NOT NULL REFERENCES reps (rep_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    -- The member's current weight in smooth weighted round robin.
    current_weight INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (team_id, rep_id)
);

CREATE INDEX team_members_by_rep ON team_members (rep_id);

-- Rule sets are immutable; the latest version is the active one.
CREATE TABLE rule_sets (
    version INTEGER PRIMARY KEY CHECK (version > 0),
    definition BLOB NOT NULL,
    create_time TEXT NOT NULL
);

CREATE TABLE account_owners (
    account_id TEXT PRIMARY KEY,
    rep_id BLOB REFERENCES reps (rep_id),
    update_time TEXT NOT NULL
);

CREATE TABLE hand_overs (
    hand_over_id BLOB PRIMARY KEY,
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    event_id BLOB,
    sales_ready_time TEXT NOT NULL,
    account_id TEXT NOT NULL,
    primary_contact_id TEXT NOT NULL,
    language TEXT NOT NULL,
    lead_class TEXT NOT NULL,
    cell_grade TEXT NOT NULL,
    cell_level INTEGER NOT NULL,
    total_score REAL NOT NULL,
    profile BLOB NOT NULL,
    rule_set_version INTEGER NOT NULL,
    rule_id BLOB,
    -- NULL while no rule set is published.
    team_id BLOB REFERENCES teams (team_id),
    -- QUEUED, ASSIGNED (pending), ACCEPTED or ENDED.
    state TEXT NOT NULL,
    -- The lifecycle stage as routing last set it.
    stage TEXT NOT NULL,
    breach_count INTEGER NOT NULL DEFAULT 0,
    queued_time TEXT,
    first_queued_time TEXT,
    first_assign_time TEXT,
    accept_time TEXT,
    qualify_time TEXT,
    opportunity_open_time TEXT,
    crm_opportunity_id TEXT NOT NULL DEFAULT '',
    expected_amount_minor INTEGER NOT NULL DEFAULT 0,
    expected_close_time TEXT,
    deal_outcome TEXT NOT NULL DEFAULT '',
    amount_minor INTEGER NOT NULL DEFAULT 0,
    currency TEXT NOT NULL DEFAULT '',
    close_time TEXT,
    lost_reason TEXT NOT NULL DEFAULT '',
    end_time TEXT,
    create_time TEXT NOT NULL
);

-- A lead is in at most one open hand-over per product: never routed twice at once.
CREATE UNIQUE INDEX hand_overs_open ON hand_overs (lead_id, product) WHERE state <> 'ENDED';
CREATE INDEX hand_overs_queue ON hand_overs (team_id, queued_time, hand_over_id) WHERE state = 'QUEUED';
CREATE INDEX hand_overs_unrouted ON hand_overs (create_time) WHERE team_id IS NULL AND state = 'QUEUED';
CREATE INDEX hand_overs_by_lead ON hand_overs (lead_id, product, create_time);
CREATE INDEX hand_overs_ready ON hand_overs (sales_ready_time);

CREATE TABLE assignments (
    assignment_id BLOB PRIMARY KEY,
    hand_over_id BLOB NOT NULL REFERENCES hand_overs (hand_over_id),
    lead_id BLOB NOT NULL,
    product TEXT NOT NULL,
    rep_id BLOB NOT NULL REFERENCES reps (rep_id),
    team_id BLOB NOT NULL REFERENCES teams (team_id),
    -- AssignmentState, AssignmentMethod and RoutingStrategy names, as in the contract.
    state TEXT NOT NULL,
    method TEXT NOT NULL,
    strategy TEXT NOT NULL,
    rule_id BLOB,
    rule_set_version INTEGER NOT NULL,
    previous_assignment_id BLOB,
    breach_count INTEGER NOT NULL,
    create_time TEXT NOT NULL,
    sla_due_time TEXT,
    accept_time TEXT,
    end_time TEXT,
    rejection_reason TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    assigned_by TEXT NOT NULL DEFAULT '',
    decided_by TEXT NOT NULL DEFAULT '',
    -- The encoded ExplainAssignmentResponse: the rule, the method and every skipped rep.
    explanation BLOB NOT NULL
);

-- A hand-over has at most one open assignment: a lead never sits with two reps.
CREATE UNIQUE INDEX assignments_open ON assignments (hand_over_id) WHERE state IN ('ASSIGNMENT_STATE_PENDING', 'ASSIGNMENT_STATE_ACCEPTED');
CREATE INDEX assignments_sla ON assignments (sla_due_time) WHERE state = 'ASSIGNMENT_STATE_PENDING';
-- A hand-over's assignments are read on every reassignment, breach and escalation.
CREATE INDEX assignments_by_hand_over ON assignments (hand_over_id, create_time);
CREATE INDEX assignments_by_rep ON assignments (rep_id, create_time);
CREATE INDEX assignments_by_lead ON assignments (lead_id, create_time);
CREATE INDEX assignments_created ON assignments (create_time);

CREATE TABLE call_responses (
    response_id BLOB PRIMARY KEY,
    response BLOB NOT NULL
);
