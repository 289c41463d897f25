//! Routing's records port: a unit of work (one database transaction) over reps, teams, rule
//! sets, account owners, hand-overs and assignments. `records_sql` implements it on
//! PostgreSQL and SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_bus::{Delivery, inbox::Recorded};
use leadflow_domain::routing::Rotation;
use leadflow_proto::{events::v1::EventEnvelope, routing::v1 as pb};
use leadflow_storage::{Begun, IdempotencyKey, StorageError};
use uuid::Uuid;

use crate::reps::{NewRep, Rep};

/// A stored team.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamRecord {
    /// The team's id.
    pub team_id: Uuid,
    /// The unique name.
    pub name: String,
    /// The members in team order, with their place in weighted round robin.
    pub members: Vec<Rotation>,
    /// The rep escalated leads go to.
    pub team_lead_rep_id: Option<Uuid>,
    /// How the team picks a rep.
    pub strategy: pb::RoutingStrategy,
    /// Whether account owners come first.
    pub account_ownership_first: bool,
    /// The time a rep has to accept.
    pub sla: chrono::Duration,
    /// The clock the SLA runs on.
    pub sla_clock: pb::SlaClock,
    /// Breaches of one lead before it goes to the team lead; 0 never escalates.
    pub escalate_after_breaches: u32,
    /// The member round robin chose last.
    pub last_chosen_rep_id: Option<Uuid>,
    /// When the team was created.
    pub create_time: DateTime<Utc>,
    /// When the team was last changed.
    pub update_time: DateTime<Utc>,
}

impl TeamRecord {
    /// The member ids in team order.
    pub fn member_ids(&self) -> Vec<Uuid> {
        self.members.iter().map(|member| member.rep_id).collect()
    }
}

/// One published rule set version.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSetRecord {
    /// The version, from 1.
    pub version: u32,
    /// The rule set as published, with its rule ids; `active` and `create_time` unset.
    pub definition: pb::RuleSet,
    /// When it was published.
    pub create_time: DateTime<Utc>,
}

/// The rep who owns an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountOwnerRecord {
    /// The account.
    pub account_id: String,
    /// The owner; `None` once cleared.
    pub rep_id: Option<Uuid>,
    /// When it was last set or cleared.
    pub update_time: DateTime<Utc>,
}

/// Where a hand-over stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOverState {
    /// Waiting in its team's queue.
    Queued,
    /// With a rep, not yet accepted.
    Assigned,
    /// Accepted by a rep (SAL or further).
    Accepted,
    /// Rejected, closed or cancelled.
    Ended,
}

impl HandOverState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Assigned => "ASSIGNED",
            Self::Accepted => "ACCEPTED",
            Self::Ended => "ENDED",
        }
    }

    /// The state of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "QUEUED" => Self::Queued,
            "ASSIGNED" => Self::Assigned,
            "ACCEPTED" => Self::Accepted,
            "ENDED" => Self::Ended,
            _ => return None,
        })
    }
}

/// The sales outcome the CRM reported on a hand-over.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SalesOutcomeRecord {
    /// When the lead was qualified.
    pub qualify_time: Option<DateTime<Utc>>,
    /// When the opportunity was opened.
    pub opportunity_open_time: Option<DateTime<Utc>>,
    /// The CRM's opportunity id, or empty.
    pub crm_opportunity_id: String,
    /// The expected order value in minor units.
    pub expected_amount_minor: i64,
    /// When the deal is expected to close.
    pub expected_close_time: Option<DateTime<Utc>>,
    /// The outcome once closed.
    pub deal_outcome: pb::DealOutcome,
    /// The order value of a won deal in minor units.
    pub amount_minor: i64,
    /// The ISO 4217 code of the amounts, or empty.
    pub currency: String,
    /// When the deal was closed.
    pub close_time: Option<DateTime<Utc>>,
    /// Why a lost deal was lost.
    pub lost_reason: String,
}

/// One hand-over of a lead for a product to sales: from its SalesReady until it is rejected
/// or closed, through queueing, assignments and reassignments.
#[derive(Debug, Clone, PartialEq)]
pub struct HandOver {
    /// The hand-over's id.
    pub hand_over_id: Uuid,
    /// The lead.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// The SalesReady event it came from, if any.
    pub event_id: Option<Uuid>,
    /// When the lead became ready for sales.
    pub sales_ready_time: DateTime<Utc>,
    /// The lead's account, or empty.
    pub account_id: String,
    /// The contact sales should talk to first, or empty.
    pub primary_contact_id: String,
    /// The primary contact's language, or empty.
    pub language: String,
    /// The lead's class at hand-over.
    pub lead_class: leadflow_proto::common::v1::LeadClass,
    /// The lead's heat-map cell at hand-over.
    pub cell: leadflow_proto::common::v1::HeatMapCell,
    /// The total score at hand-over.
    pub total_score: f64,
    /// The lead's profile at hand-over.
    pub profile: leadflow_proto::common::v1::LeadProfile,
    /// The rule set version that routed it; 0 for a manual assignment without one.
    pub rule_set_version: u32,
    /// The rule that matched; `None` for the default team.
    pub rule_id: Option<Uuid>,
    /// The team it was routed to; `None` while no rule set is published.
    pub team_id: Option<Uuid>,
    /// Where it stands.
    pub state: HandOverState,
    /// The lifecycle stage as routing last set it.
    pub stage: leadflow_proto::common::v1::LifecycleStage,
    /// The SLA breaches in this hand-over.
    pub breach_count: u32,
    /// When it entered the queue it waits in; `None` unless queued.
    pub queued_time: Option<DateTime<Utc>>,
    /// When it first waited in a queue.
    pub first_queued_time: Option<DateTime<Utc>>,
    /// When it was first assigned.
    pub first_assign_time: Option<DateTime<Utc>>,
    /// When a rep accepted it.
    pub accept_time: Option<DateTime<Utc>>,
    /// What the CRM reported.
    pub outcome: SalesOutcomeRecord,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// When it was created.
    pub create_time: DateTime<Utc>,
}

/// One assignment of a hand-over to a rep.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentRecord {
    /// The assignment's id.
    pub assignment_id: Uuid,
    /// Its hand-over.
    pub hand_over_id: Uuid,
    /// The lead.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// The rep.
    pub rep_id: Uuid,
    /// The team the lead was routed to.
    pub team_id: Uuid,
    /// The state.
    pub state: pb::AssignmentState,
    /// How the rep was chosen.
    pub method: pb::AssignmentMethod,
    /// The strategy that picked the rep, for the strategy method.
    pub strategy: pb::RoutingStrategy,
    /// The rule that matched; `None` for the default team or a manual assignment.
    pub rule_id: Option<Uuid>,
    /// The rule set version; 0 for a manual assignment.
    pub rule_set_version: u32,
    /// The assignment this one replaces.
    pub previous_assignment_id: Option<Uuid>,
    /// The hand-over's SLA breaches before this assignment.
    pub breach_count: u32,
    /// When it was made.
    pub create_time: DateTime<Utc>,
    /// When its SLA runs out; `None` when it has none (escalations, manual ones without).
    pub sla_due_time: Option<DateTime<Utc>>,
    /// When it was accepted.
    pub accept_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// The reason of a rejection; unspecified otherwise.
    pub rejection_reason: pb::RejectionReason,
    /// The free text of a rejection or manual reassignment.
    pub note: String,
    /// Who assigned it by hand.
    pub assigned_by: String,
    /// Who accepted or rejected it.
    pub decided_by: String,
    /// Why this rep: the rule, the method and every skipped rep.
    pub explanation: pb::ExplainAssignmentResponse,
}

/// The filters of an assignment listing; every one that is set must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssignmentFilter {
    /// Only this rep's.
    pub rep_id: Option<Uuid>,
    /// Only this lead's.
    pub lead_id: Option<Uuid>,
    /// Only this team's.
    pub team_id: Option<Uuid>,
    /// Only for this product.
    pub product: Option<String>,
    /// Only in these states.
    pub states: Vec<pb::AssignmentState>,
}

/// Where routing keeps its records.
#[async_trait]
pub trait RoutingStore: Send + Sync + std::fmt::Debug {
    /// Opens a unit of work for a mutating call and claims its idempotency key in it.
    async fn begin(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Begun<Box<dyn RoutingUnit>>, StorageError>;

    /// Opens a unit of work for applying an event or maintenance.
    async fn begin_work(&self) -> Result<Box<dyn RoutingUnit>, StorageError>;

    /// Opens a unit of work that only reads, on one consistent snapshot.
    async fn read(&self) -> Result<Box<dyn RoutingUnit>, StorageError>;

    /// The stored answer of an earlier call.
    async fn response(&self, response_id: Uuid) -> Result<Option<Vec<u8>>, StorageError>;
}

/// One unit of work: a database transaction. Dropping it without [`RoutingUnit::commit`]
/// rolls everything back. Locks are taken in one order everywhere (assignment or hand-over,
/// then team, then rep) so that concurrent units never wait on each other in a circle.
#[async_trait]
pub trait RoutingUnit: Send {
    /// Stores a new rep with its hours and absences. Fails with a unique violation on
    /// `reps_email_key` when the email is taken.
    async fn insert_rep(
        &mut self,
        rep_id: Uuid,
        rep: &NewRep,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;
    /// Replaces a rep's fields, hours and absences (not its load).
    async fn replace_rep(
        &mut self,
        rep_id: Uuid,
        rep: &NewRep,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;
    /// The rep, if any.
    async fn rep(&mut self, rep_id: Uuid) -> Result<Option<Rep>, StorageError>;
    /// The rep, if any, locked against concurrent changes until the unit ends.
    async fn lock_rep(&mut self, rep_id: Uuid) -> Result<Option<Rep>, StorageError>;
    /// The reps with these ids, in no particular order; unknown ids are left out.
    async fn reps_by_ids(&mut self, rep_ids: &[Uuid]) -> Result<Vec<Rep>, StorageError>;
    /// Every rep, oldest first.
    async fn all_reps(&mut self) -> Result<Vec<Rep>, StorageError>;
    /// Up to `limit` reps (members of `team`, when given) in creation order after `after`.
    async fn reps_page(
        &mut self,
        team: Option<Uuid>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Rep>, StorageError>;
    /// The teams the rep is a member of, in name order.
    async fn teams_of_rep(&mut self, rep_id: Uuid) -> Result<Vec<Uuid>, StorageError>;
    /// Adds one open assignment to the rep if it is below its capacity and records `now` as
    /// its last assignment; false when the rep is at capacity.
    async fn take_capacity(
        &mut self,
        rep_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError>;
    /// Removes one open assignment from the rep.
    async fn release_capacity(&mut self, rep_id: Uuid) -> Result<(), StorageError>;

    /// Stores a new team with its members. Fails with a unique violation on
    /// `teams_name_key` when the name is taken.
    async fn insert_team(&mut self, team: &TeamRecord) -> Result<(), StorageError>;
    /// Replaces a team's fields and members; members that stay keep their rotation.
    async fn replace_team(&mut self, team: &TeamRecord) -> Result<(), StorageError>;
    /// The team, if any.
    async fn team(&mut self, team_id: Uuid) -> Result<Option<TeamRecord>, StorageError>;
    /// The team, if any, locked until the unit ends: one routing choice per team at a time.
    async fn lock_team(&mut self, team_id: Uuid) -> Result<Option<TeamRecord>, StorageError>;
    /// Every team, by name.
    async fn all_teams(&mut self) -> Result<Vec<TeamRecord>, StorageError>;
    /// Up to `limit` teams in name order after the team `after`.
    async fn teams_page(
        &mut self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<TeamRecord>, StorageError>;
    /// Records the team's last round-robin choice and new weighted round-robin weights.
    async fn save_rotation(
        &mut self,
        team_id: Uuid,
        last_chosen_rep_id: Uuid,
        rotation: &[Rotation],
    ) -> Result<(), StorageError>;

    /// The latest published rule set, if any.
    async fn latest_rule_set(&mut self) -> Result<Option<RuleSetRecord>, StorageError>;
    /// One rule set version.
    async fn rule_set(&mut self, version: u32) -> Result<Option<RuleSetRecord>, StorageError>;
    /// Up to `limit` versions, newest first, below `before` when given.
    async fn rule_sets_page(
        &mut self,
        before: Option<u32>,
        limit: u32,
    ) -> Result<Vec<RuleSetRecord>, StorageError>;
    /// Stores a new version. Fails with a unique violation on the version when another
    /// publisher took it.
    async fn insert_rule_set(&mut self, record: &RuleSetRecord) -> Result<(), StorageError>;

    /// The account's owner record, if one was ever set.
    async fn account_owner(
        &mut self,
        account_id: &str,
    ) -> Result<Option<AccountOwnerRecord>, StorageError>;
    /// Sets or clears the account's owner.
    async fn put_account_owner(&mut self, owner: &AccountOwnerRecord) -> Result<(), StorageError>;

    /// Stores a new hand-over; false (and nothing written) when the lead already has an open
    /// one for the product.
    async fn insert_hand_over(&mut self, hand_over: &HandOver) -> Result<bool, StorageError>;
    /// Writes the hand-over's mutable fields.
    async fn update_hand_over(&mut self, hand_over: &HandOver) -> Result<(), StorageError>;
    /// Takes the contact out of the hand-overs that name it as the one sales should talk to
    /// first; the hand-overs, their assignments and the lead's company profile stay, so the
    /// routing metrics do. Returns how many hand-overs named it.
    async fn erase_contact(&mut self, contact_id: Uuid) -> Result<u64, StorageError>;
    /// The hand-over, if any.
    async fn hand_over(&mut self, hand_over_id: Uuid) -> Result<Option<HandOver>, StorageError>;
    /// The hand-over, if any, locked until the unit ends.
    async fn lock_hand_over(
        &mut self,
        hand_over_id: Uuid,
    ) -> Result<Option<HandOver>, StorageError>;
    /// The lead's most recent hand-over for the product, locked until the unit ends.
    async fn lock_latest_hand_over(
        &mut self,
        lead_id: Uuid,
        product: &str,
    ) -> Result<Option<HandOver>, StorageError>;
    /// Up to `limit` hand-overs waiting in the team's queue that no other unit holds, in
    /// arrival order (`queued_time`, then id), locked until the unit ends.
    async fn lock_queued(
        &mut self,
        team_id: Uuid,
        limit: u32,
    ) -> Result<Vec<HandOver>, StorageError>;
    /// Up to `limit` queued hand-overs without a team (they arrived before any rule set was
    /// published), oldest first.
    async fn unrouted_hand_overs(&mut self, limit: u32) -> Result<Vec<Uuid>, StorageError>;
    /// Up to `limit` hand-overs waiting in the team's queue, in arrival order, after the
    /// cursor `after` (an arrival time and a hand-over id), which need not be waiting still.
    async fn queue_page(
        &mut self,
        team_id: Uuid,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: u32,
    ) -> Result<Vec<HandOver>, StorageError>;
    /// How many hand-overs wait in the team's queue at or before the cursor.
    async fn queued_up_to(
        &mut self,
        team_id: Uuid,
        cursor: (DateTime<Utc>, Uuid),
    ) -> Result<u32, StorageError>;
    /// The number of hand-overs waiting in the team's queue (every queue when `None`).
    async fn queue_length(&mut self, team_id: Option<Uuid>) -> Result<u32, StorageError>;
    /// The teams with at least one waiting hand-over.
    async fn teams_with_queue(&mut self) -> Result<Vec<Uuid>, StorageError>;
    /// The hand-overs whose lead became sales-ready in `[from, to)`, oldest first.
    async fn hand_overs_ready_between(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HandOver>, StorageError>;

    /// Stores a new assignment. Fails with a unique violation on `assignments_open` when the
    /// hand-over already has an open one.
    async fn insert_assignment(
        &mut self,
        assignment: &AssignmentRecord,
    ) -> Result<(), StorageError>;
    /// Writes the assignment's mutable fields (state, times, decision).
    async fn update_assignment(
        &mut self,
        assignment: &AssignmentRecord,
    ) -> Result<(), StorageError>;
    /// The assignment, if any.
    async fn assignment(
        &mut self,
        assignment_id: Uuid,
    ) -> Result<Option<AssignmentRecord>, StorageError>;
    /// The assignment, if any, locked until the unit ends.
    async fn lock_assignment(
        &mut self,
        assignment_id: Uuid,
    ) -> Result<Option<AssignmentRecord>, StorageError>;
    /// The hand-over's assignments, oldest first.
    async fn assignments_of_hand_over(
        &mut self,
        hand_over_id: Uuid,
    ) -> Result<Vec<AssignmentRecord>, StorageError>;
    /// Up to `limit` assignments matching `filter`, newest first, after the assignment
    /// `after` (assignment ids grow with time).
    async fn assignments_page(
        &mut self,
        filter: &AssignmentFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<AssignmentRecord>, StorageError>;
    /// Up to `limit` pending assignments whose SLA ran out by `now`, earliest due first.
    async fn due_assignments(
        &mut self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StorageError>;
    /// Up to `limit` pending assignments held by inactive reps.
    async fn pending_of_inactive_reps(&mut self, limit: u32) -> Result<Vec<Uuid>, StorageError>;
    /// Every assignment whose creation, acceptance or end falls in `[from, to)`.
    async fn assignments_touching(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AssignmentRecord>, StorageError>;

    /// Records the delivery of an event to the consuming group.
    async fn record_delivery(&mut self, delivery: &Delivery) -> Result<Recorded, StorageError>;
    /// Adds an event to the outbox.
    async fn publish(&mut self, envelope: &EventEnvelope) -> Result<(), StorageError>;
    /// Keeps the answer of a call under its idempotency key.
    async fn save_response(
        &mut self,
        key: &IdempotencyKey,
        response_id: Uuid,
        response: &[u8],
    ) -> Result<(), StorageError>;
    /// Commits.
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
}
