//! Routing's records on both SQL stores: PostgreSQL for production and SQLite for the
//! embedded mode. The statements are written in the dialect both understand, so one
//! implementation is expanded for each driver; only row locks, the read snapshot, the inbox,
//! the outbox, the idempotency claim and the rep lists (arrays on PostgreSQL, JSON text on
//! SQLite) differ.

use std::{collections::HashMap, str::FromStr};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_bus::{Delivery, inbox::Recorded};
use leadflow_domain::{EmailAddress, routing::Rotation};
use leadflow_proto::{common::v1 as common, events::v1::EventEnvelope, routing::v1 as pb};
use leadflow_storage::{
    BeginSafely, Begun, IdempotencyKey, StorageError,
    sqlite::{list_from_json, list_to_json},
};
use prost::Message;
use sqlx::{PgPool, QueryBuilder, SqlitePool};
use uuid::Uuid;

use crate::{
    records::{
        AccountOwnerRecord, AssignmentFilter, AssignmentRecord, HandOver, HandOverState,
        RoutingStore, RoutingUnit, RuleSetRecord, SalesOutcomeRecord, TeamRecord,
    },
    reps::{Absence, NewRep, Rep, WorkingHours},
};

/// Routing's records in its PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresRoutingStore {
    pool: PgPool,
}

impl PostgresRoutingStore {
    /// A store on `pool`, whose search path is routing's schema.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Routing's records in the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteRoutingStore {
    pool: SqlitePool,
}

impl SqliteRoutingStore {
    /// A store on `pool`, migrated with [`crate::SQLITE_MIGRATOR`].
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// The most ids bound in one `IN (...)` list: far below the parameter limits of both
/// drivers (65535 on PostgreSQL, 32766 on SQLite), so longer lists take a few statements.
const IDS_PER_STATEMENT: usize = 1_000;

macro_rules! rep_columns {
    () => {
        "r.rep_id, r.email, r.display_name, r.time_zone, r.products, r.languages, r.capacity, \
         r.weight, r.active, r.open_assignments, r.last_assign_time, r.create_time, \
         r.update_time"
    };
}

macro_rules! team_columns {
    () => {
        "team_id, name, team_lead_rep_id, strategy, account_ownership_first, sla_millis, \
         sla_clock, escalate_after_breaches, last_chosen_rep_id, create_time, update_time"
    };
}

macro_rules! hand_over_columns {
    () => {
        "hand_over_id, lead_id, product, event_id, sales_ready_time, account_id, \
         primary_contact_id, language, lead_class, cell_grade, cell_level, total_score, profile, \
         rule_set_version, rule_id, team_id, state, stage, breach_count, queued_time, \
         first_queued_time, first_assign_time, accept_time, qualify_time, opportunity_open_time, \
         crm_opportunity_id, expected_amount_minor, expected_close_time, deal_outcome, \
         amount_minor, currency, close_time, lost_reason, end_time, create_time"
    };
}

macro_rules! assignment_columns {
    () => {
        "assignment_id, hand_over_id, lead_id, product, rep_id, team_id, state, method, \
         strategy, rule_id, rule_set_version, previous_assignment_id, breach_count, create_time, \
         sla_due_time, accept_time, end_time, rejection_reason, note, assigned_by, decided_by, \
         explanation"
    };
}

/// Binds a [`HandOverRow`] in the order of `hand_over_columns!`, for the insert and the
/// update alike.
/// `SELECT <columns> FROM <table> WHERE <key> = $1`, as one literal.
macro_rules! select_by_id {
    ($columns:expr, $table:literal, $key:literal) => {
        concat!(
            "SELECT ", $columns, " FROM ", $table, " WHERE ", $key, " = $1"
        )
    };
}

macro_rules! bind_hand_over {
    ($query:expr, $row:expr) => {{
        let row = $row;
        $query
            .bind(row.hand_over_id)
            .bind(row.lead_id)
            .bind(&row.product)
            .bind(row.event_id)
            .bind(row.sales_ready_time)
            .bind(&row.account_id)
            .bind(&row.primary_contact_id)
            .bind(&row.language)
            .bind(&row.lead_class)
            .bind(&row.cell_grade)
            .bind(row.cell_level)
            .bind(row.total_score)
            .bind(&row.profile)
            .bind(row.rule_set_version)
            .bind(row.rule_id)
            .bind(row.team_id)
            .bind(&row.state)
            .bind(&row.stage)
            .bind(row.breach_count)
            .bind(row.queued_time)
            .bind(row.first_queued_time)
            .bind(row.first_assign_time)
            .bind(row.accept_time)
            .bind(row.qualify_time)
            .bind(row.opportunity_open_time)
            .bind(&row.crm_opportunity_id)
            .bind(row.expected_amount_minor)
            .bind(row.expected_close_time)
            .bind(&row.deal_outcome)
            .bind(row.amount_minor)
            .bind(&row.currency)
            .bind(row.close_time)
            .bind(&row.lost_reason)
            .bind(row.end_time)
            .bind(row.create_time)
    }};
}

fn corrupt(what: String) -> StorageError {
    StorageError::Corrupt(what)
}

/// The enum stored under `name`; an unknown name means a record from an unknown version.
fn named<T>(name: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, StorageError> {
    parse(name).ok_or_else(|| corrupt(format!("{what}: unknown name {name:?}")))
}

/// Like [`named`], for columns whose empty default stands for "none yet".
fn named_or_unspecified<T: Default>(
    name: &str,
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> Result<T, StorageError> {
    if name.is_empty() {
        Ok(T::default())
    } else {
        named(name, parse, what)
    }
}

fn to_u32(value: impl TryInto<u32>, what: &str) -> Result<u32, StorageError> {
    value
        .try_into()
        .map_err(|_| corrupt(format!("{what}: out of range")))
}

fn to_i32(value: impl TryInto<i32>, what: &str) -> Result<i32, StorageError> {
    value
        .try_into()
        .map_err(|_| corrupt(format!("{what}: out of range")))
}

fn decode_message<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, StorageError> {
    M::decode(bytes).map_err(|error| corrupt(format!("{what}: {error}")))
}

/// Names the violated constraint where the driver does not: SQLite reports the columns, not
/// the index, and callers go by the names PostgreSQL gives.
fn name_unique_violation(constraint: &'static str) -> impl Fn(sqlx::Error) -> StorageError {
    move |error| match StorageError::from(error) {
        StorageError::UniqueViolation { constraint: found } if found.is_empty() => {
            StorageError::UniqueViolation {
                constraint: constraint.to_owned(),
            }
        }
        other => other,
    }
}

/// PostgreSQL keeps rep lists as `TEXT[]`.
fn array_list(list: &[String]) -> &[String] {
    list
}

fn from_array(list: Vec<String>, _record: &str) -> Result<Vec<String>, StorageError> {
    Ok(list)
}

/// SQLite has no arrays: rep lists are JSON text.
fn from_json(text: String, record: &str) -> Result<Vec<String>, StorageError> {
    list_from_json(&text, record)
}

/// A rep as stored; `L` is how the driver returns a list of strings.
#[derive(sqlx::FromRow)]
struct RepRow<L> {
    rep_id: Uuid,
    email: String,
    display_name: String,
    time_zone: String,
    products: L,
    languages: L,
    capacity: i32,
    weight: i32,
    active: bool,
    open_assignments: i32,
    last_assign_time: Option<DateTime<Utc>>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct HoursRow {
    rep_id: Uuid,
    day_of_week: String,
    start_minute: i32,
    end_minute: i32,
}

#[derive(sqlx::FromRow)]
struct AbsenceRow {
    rep_id: Uuid,
    start_time: DateTime<Utc>,
    end_time: Option<DateTime<Utc>>,
}

/// Assembles reps from their rows, in row order, with the working hours and absences found
/// for them (rows of other reps are ignored; each rep's rows come in position order).
fn build_reps<L>(
    rows: Vec<RepRow<L>>,
    hours: Vec<HoursRow>,
    absences: Vec<AbsenceRow>,
    list: fn(L, &str) -> Result<Vec<String>, StorageError>,
) -> Result<Vec<Rep>, StorageError> {
    let mut hours_of: HashMap<Uuid, Vec<HoursRow>> = HashMap::new();
    for span in hours {
        hours_of.entry(span.rep_id).or_default().push(span);
    }
    let mut absences_of: HashMap<Uuid, Vec<AbsenceRow>> = HashMap::new();
    for absence in absences {
        absences_of.entry(absence.rep_id).or_default().push(absence);
    }
    rows.into_iter()
        .map(|row| {
            let what = |field: &str| format!("rep {}: {field}", row.rep_id);
            let working_hours = hours_of
                .remove(&row.rep_id)
                .unwrap_or_default()
                .into_iter()
                .map(|span| {
                    Ok(WorkingHours {
                        day_of_week: named(
                            &span.day_of_week,
                            pb::DayOfWeek::from_str_name,
                            &what("day of week"),
                        )?,
                        start_minute: to_u32(span.start_minute, &what("start minute"))?,
                        end_minute: to_u32(span.end_minute, &what("end minute"))?,
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()?;
            let out_of_office = absences_of
                .remove(&row.rep_id)
                .unwrap_or_default()
                .into_iter()
                .map(|absence| Absence {
                    start_time: absence.start_time,
                    end_time: absence.end_time,
                })
                .collect();
            Ok(Rep {
                rep_id: row.rep_id,
                rep: NewRep {
                    email: EmailAddress::parse(&row.email).map_err(|_| corrupt(what("email")))?,
                    display_name: row.display_name,
                    time_zone: chrono_tz::Tz::from_str(&row.time_zone)
                        .map_err(|_| corrupt(what("time zone")))?,
                    working_hours,
                    out_of_office,
                    products: list(row.products, &what("products"))?,
                    languages: list(row.languages, &what("languages"))?,
                    capacity: to_u32(row.capacity, &what("capacity"))?,
                    weight: to_u32(row.weight, &what("weight"))?,
                    active: row.active,
                },
                open_assignments: to_u32(row.open_assignments, &what("open assignments"))?,
                last_assign_time: row.last_assign_time,
                create_time: row.create_time,
                update_time: row.update_time,
            })
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct TeamRow {
    team_id: Uuid,
    name: String,
    team_lead_rep_id: Option<Uuid>,
    strategy: String,
    account_ownership_first: bool,
    sla_millis: i64,
    sla_clock: String,
    escalate_after_breaches: i32,
    last_chosen_rep_id: Option<Uuid>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    team_id: Uuid,
    rep_id: Uuid,
    current_weight: i64,
}

/// Assembles teams from their rows, in row order, with their members (in position order).
fn build_teams(
    rows: Vec<TeamRow>,
    members: Vec<MemberRow>,
) -> Result<Vec<TeamRecord>, StorageError> {
    let mut members_of: HashMap<Uuid, Vec<Rotation>> = HashMap::new();
    for member in members {
        members_of
            .entry(member.team_id)
            .or_default()
            .push(Rotation {
                rep_id: member.rep_id,
                current_weight: member.current_weight,
            });
    }
    rows.into_iter()
        .map(|row| {
            let what = |field: &str| format!("team {}: {field}", row.team_id);
            Ok(TeamRecord {
                team_id: row.team_id,
                members: members_of.remove(&row.team_id).unwrap_or_default(),
                name: row.name,
                team_lead_rep_id: row.team_lead_rep_id,
                strategy: named(
                    &row.strategy,
                    pb::RoutingStrategy::from_str_name,
                    &what("strategy"),
                )?,
                account_ownership_first: row.account_ownership_first,
                sla: chrono::Duration::try_milliseconds(row.sla_millis)
                    .ok_or_else(|| corrupt(what("sla")))?,
                sla_clock: named(
                    &row.sla_clock,
                    pb::SlaClock::from_str_name,
                    &what("sla clock"),
                )?,
                escalate_after_breaches: to_u32(
                    row.escalate_after_breaches,
                    &what("escalate after breaches"),
                )?,
                last_chosen_rep_id: row.last_chosen_rep_id,
                create_time: row.create_time,
                update_time: row.update_time,
            })
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct RuleSetRow {
    version: i32,
    definition: Vec<u8>,
    create_time: DateTime<Utc>,
}

impl TryFrom<RuleSetRow> for RuleSetRecord {
    type Error = StorageError;

    fn try_from(row: RuleSetRow) -> Result<Self, StorageError> {
        let what = format!("rule set {}", row.version);
        Ok(Self {
            version: to_u32(row.version, &what)?,
            definition: decode_message(&row.definition, &what)?,
            create_time: row.create_time,
        })
    }
}

/// A hand-over as stored; also what is written, so that inserts and updates bind alike.
#[derive(sqlx::FromRow)]
struct HandOverRow {
    hand_over_id: Uuid,
    lead_id: Uuid,
    product: String,
    event_id: Option<Uuid>,
    sales_ready_time: DateTime<Utc>,
    account_id: String,
    primary_contact_id: String,
    language: String,
    lead_class: String,
    cell_grade: String,
    cell_level: i32,
    total_score: f64,
    profile: Vec<u8>,
    rule_set_version: i32,
    rule_id: Option<Uuid>,
    team_id: Option<Uuid>,
    state: String,
    stage: String,
    breach_count: i32,
    queued_time: Option<DateTime<Utc>>,
    first_queued_time: Option<DateTime<Utc>>,
    first_assign_time: Option<DateTime<Utc>>,
    accept_time: Option<DateTime<Utc>>,
    qualify_time: Option<DateTime<Utc>>,
    opportunity_open_time: Option<DateTime<Utc>>,
    crm_opportunity_id: String,
    expected_amount_minor: i64,
    expected_close_time: Option<DateTime<Utc>>,
    deal_outcome: String,
    amount_minor: i64,
    currency: String,
    close_time: Option<DateTime<Utc>>,
    lost_reason: String,
    end_time: Option<DateTime<Utc>>,
    create_time: DateTime<Utc>,
}

impl TryFrom<&HandOver> for HandOverRow {
    type Error = StorageError;

    fn try_from(hand_over: &HandOver) -> Result<Self, StorageError> {
        let what = |field: &str| format!("hand-over {}: {field}", hand_over.hand_over_id);
        let grade = common::ProfileGrade::try_from(hand_over.cell.grade)
            .map_err(|_| corrupt(what("cell grade")))?;
        let outcome = &hand_over.outcome;
        Ok(Self {
            hand_over_id: hand_over.hand_over_id,
            lead_id: hand_over.lead_id,
            product: hand_over.product.clone(),
            event_id: hand_over.event_id,
            sales_ready_time: hand_over.sales_ready_time,
            account_id: hand_over.account_id.clone(),
            primary_contact_id: hand_over.primary_contact_id.clone(),
            language: hand_over.language.clone(),
            lead_class: hand_over.lead_class.as_str_name().to_owned(),
            cell_grade: grade.as_str_name().to_owned(),
            cell_level: to_i32(hand_over.cell.engagement_level, &what("cell level"))?,
            total_score: hand_over.total_score,
            profile: hand_over.profile.encode_to_vec(),
            rule_set_version: to_i32(hand_over.rule_set_version, &what("rule set version"))?,
            rule_id: hand_over.rule_id,
            team_id: hand_over.team_id,
            state: hand_over.state.as_str().to_owned(),
            stage: hand_over.stage.as_str_name().to_owned(),
            breach_count: to_i32(hand_over.breach_count, &what("breach count"))?,
            queued_time: hand_over.queued_time,
            first_queued_time: hand_over.first_queued_time,
            first_assign_time: hand_over.first_assign_time,
            accept_time: hand_over.accept_time,
            qualify_time: outcome.qualify_time,
            opportunity_open_time: outcome.opportunity_open_time,
            crm_opportunity_id: outcome.crm_opportunity_id.clone(),
            expected_amount_minor: outcome.expected_amount_minor,
            expected_close_time: outcome.expected_close_time,
            deal_outcome: outcome.deal_outcome.as_str_name().to_owned(),
            amount_minor: outcome.amount_minor,
            currency: outcome.currency.clone(),
            close_time: outcome.close_time,
            lost_reason: outcome.lost_reason.clone(),
            end_time: hand_over.end_time,
            create_time: hand_over.create_time,
        })
    }
}

impl TryFrom<HandOverRow> for HandOver {
    type Error = StorageError;

    fn try_from(row: HandOverRow) -> Result<Self, StorageError> {
        let what = |field: &str| format!("hand-over {}: {field}", row.hand_over_id);
        Ok(Self {
            hand_over_id: row.hand_over_id,
            lead_id: row.lead_id,
            event_id: row.event_id,
            sales_ready_time: row.sales_ready_time,
            lead_class: named(
                &row.lead_class,
                common::LeadClass::from_str_name,
                &what("lead class"),
            )?,
            cell: common::HeatMapCell {
                grade: named(
                    &row.cell_grade,
                    common::ProfileGrade::from_str_name,
                    &what("cell grade"),
                )?
                .into(),
                engagement_level: to_u32(row.cell_level, &what("cell level"))?,
            },
            total_score: row.total_score,
            profile: decode_message(&row.profile, &what("profile"))?,
            rule_set_version: to_u32(row.rule_set_version, &what("rule set version"))?,
            rule_id: row.rule_id,
            team_id: row.team_id,
            state: HandOverState::parse(&row.state).ok_or_else(|| corrupt(what("state")))?,
            stage: named(
                &row.stage,
                common::LifecycleStage::from_str_name,
                &what("stage"),
            )?,
            breach_count: to_u32(row.breach_count, &what("breach count"))?,
            queued_time: row.queued_time,
            first_queued_time: row.first_queued_time,
            first_assign_time: row.first_assign_time,
            accept_time: row.accept_time,
            outcome: SalesOutcomeRecord {
                qualify_time: row.qualify_time,
                opportunity_open_time: row.opportunity_open_time,
                crm_opportunity_id: row.crm_opportunity_id,
                expected_amount_minor: row.expected_amount_minor,
                expected_close_time: row.expected_close_time,
                deal_outcome: named_or_unspecified(
                    &row.deal_outcome,
                    pb::DealOutcome::from_str_name,
                    &what("deal outcome"),
                )?,
                amount_minor: row.amount_minor,
                currency: row.currency,
                close_time: row.close_time,
                lost_reason: row.lost_reason,
            },
            end_time: row.end_time,
            create_time: row.create_time,
            product: row.product,
            account_id: row.account_id,
            primary_contact_id: row.primary_contact_id,
            language: row.language,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AssignmentRow {
    assignment_id: Uuid,
    hand_over_id: Uuid,
    lead_id: Uuid,
    product: String,
    rep_id: Uuid,
    team_id: Uuid,
    state: String,
    method: String,
    strategy: String,
    rule_id: Option<Uuid>,
    rule_set_version: i32,
    previous_assignment_id: Option<Uuid>,
    breach_count: i32,
    create_time: DateTime<Utc>,
    sla_due_time: Option<DateTime<Utc>>,
    accept_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    rejection_reason: String,
    note: String,
    assigned_by: String,
    decided_by: String,
    explanation: Vec<u8>,
}

impl TryFrom<AssignmentRow> for AssignmentRecord {
    type Error = StorageError;

    fn try_from(row: AssignmentRow) -> Result<Self, StorageError> {
        let what = |field: &str| format!("assignment {}: {field}", row.assignment_id);
        Ok(Self {
            assignment_id: row.assignment_id,
            hand_over_id: row.hand_over_id,
            lead_id: row.lead_id,
            rep_id: row.rep_id,
            team_id: row.team_id,
            state: named(
                &row.state,
                pb::AssignmentState::from_str_name,
                &what("state"),
            )?,
            method: named(
                &row.method,
                pb::AssignmentMethod::from_str_name,
                &what("method"),
            )?,
            strategy: named(
                &row.strategy,
                pb::RoutingStrategy::from_str_name,
                &what("strategy"),
            )?,
            rule_id: row.rule_id,
            rule_set_version: to_u32(row.rule_set_version, &what("rule set version"))?,
            previous_assignment_id: row.previous_assignment_id,
            breach_count: to_u32(row.breach_count, &what("breach count"))?,
            create_time: row.create_time,
            sla_due_time: row.sla_due_time,
            accept_time: row.accept_time,
            end_time: row.end_time,
            rejection_reason: named_or_unspecified(
                &row.rejection_reason,
                pb::RejectionReason::from_str_name,
                &what("rejection reason"),
            )?,
            explanation: decode_message(&row.explanation, &what("explanation"))?,
            product: row.product,
            note: row.note,
            assigned_by: row.assigned_by,
            decided_by: row.decided_by,
        })
    }
}

fn assignments(rows: Vec<AssignmentRow>) -> Result<Vec<AssignmentRecord>, StorageError> {
    rows.into_iter().map(AssignmentRecord::try_from).collect()
}

fn hand_overs(rows: Vec<HandOverRow>) -> Result<Vec<HandOver>, StorageError> {
    rows.into_iter().map(HandOver::try_from).collect()
}

macro_rules! sql_routing_store {
    (
        store: $store:ident,
        unit: $unit:ident,
        database: $database:ty,
        idempotency: $idempotency:path,
        inbox: $inbox:path,
        outbox: $outbox:path,
        rep_list: $rep_list:ty,
        encode_list: $encode_list:path,
        decode_list: $decode_list:path,
        for_update: $for_update:literal,
        skip_locked: $skip_locked:literal,
        snapshot: [$($snapshot:literal)?],
    ) => {
        struct $unit {
            transaction: sqlx::Transaction<'static, $database>,
        }

        #[async_trait]
        impl RoutingStore for $store {
            async fn begin(
                &self,
                key: &IdempotencyKey,
            ) -> Result<Begun<Box<dyn RoutingUnit>>, StorageError> {
                use $idempotency as idempotency;
                Ok(match idempotency::begin(&self.pool, key).await? {
                    Begun::Fresh(transaction) => Begun::Fresh(Box::new($unit { transaction })),
                    Begun::Replay(resource_id) => Begun::Replay(resource_id),
                    Begun::KeyReused => Begun::KeyReused,
                })
            }

            async fn begin_work(&self) -> Result<Box<dyn RoutingUnit>, StorageError> {
                Ok(Box::new($unit {
                    transaction: self.pool.begin_safely().await?,
                }))
            }

            async fn read(&self) -> Result<Box<dyn RoutingUnit>, StorageError> {
                #[allow(unused_mut, reason = "only one dialect sets up a snapshot")]
                let mut transaction = self.pool.begin_safely().await?;
                $(sqlx::query($snapshot).execute(&mut *transaction).await?;)?
                Ok(Box::new($unit { transaction }))
            }

            async fn response(&self, response_id: Uuid) -> Result<Option<Vec<u8>>, StorageError> {
                Ok(
                    sqlx::query_scalar("SELECT response FROM call_responses WHERE response_id = $1")
                        .bind(response_id)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }
        }

        impl $unit {
            // Each record is read by one statement, with the dialect's row lock appended when
            // the unit must hold the row until it ends.

            async fn rep_by_id(
                &mut self,
                rep_id: Uuid,
                locked: bool,
            ) -> Result<Option<Rep>, StorageError> {
                let sql = if locked {
                    concat!(select_by_id!(rep_columns!(), "reps r", "r.rep_id"), $for_update)
                } else {
                    select_by_id!(rep_columns!(), "reps r", "r.rep_id")
                };
                let rows = sqlx::query_as::<_, RepRow<$rep_list>>(sql)
                    .bind(rep_id)
                    .fetch_all(&mut *self.transaction)
                    .await?;
                Ok(self.assemble_reps(rows).await?.pop())
            }

            async fn team_by_id(
                &mut self,
                team_id: Uuid,
                locked: bool,
            ) -> Result<Option<TeamRecord>, StorageError> {
                // The team row alone is locked: every change to its members goes through it.
                let sql = if locked {
                    concat!(select_by_id!(team_columns!(), "teams", "team_id"), $for_update)
                } else {
                    select_by_id!(team_columns!(), "teams", "team_id")
                };
                let row = sqlx::query_as::<_, TeamRow>(sql)
                    .bind(team_id)
                    .fetch_optional(&mut *self.transaction)
                    .await?;
                self.one_team(row).await
            }

            async fn hand_over_by_id(
                &mut self,
                hand_over_id: Uuid,
                locked: bool,
            ) -> Result<Option<HandOver>, StorageError> {
                let sql = if locked {
                    concat!(
                        select_by_id!(hand_over_columns!(), "hand_overs", "hand_over_id"),
                        $for_update
                    )
                } else {
                    select_by_id!(hand_over_columns!(), "hand_overs", "hand_over_id")
                };
                sqlx::query_as::<_, HandOverRow>(sql)
                    .bind(hand_over_id)
                    .fetch_optional(&mut *self.transaction)
                    .await?
                    .map(HandOver::try_from)
                    .transpose()
            }

            async fn assignment_by_id(
                &mut self,
                assignment_id: Uuid,
                locked: bool,
            ) -> Result<Option<AssignmentRecord>, StorageError> {
                let sql = if locked {
                    concat!(
                        select_by_id!(assignment_columns!(), "assignments", "assignment_id"),
                        $for_update
                    )
                } else {
                    select_by_id!(assignment_columns!(), "assignments", "assignment_id")
                };
                sqlx::query_as::<_, AssignmentRow>(sql)
                    .bind(assignment_id)
                    .fetch_optional(&mut *self.transaction)
                    .await?
                    .map(AssignmentRecord::try_from)
                    .transpose()
            }

            /// Appends `ids` to `query` as a parenthesised list of parameters.
            fn push_ids(query: &mut QueryBuilder<'_, $database>, ids: &[Uuid]) {
                query.push(" (");
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                query.push(")");
            }

            /// The reps of `rows` with their working hours and absences.
            async fn assemble_reps(
                &mut self,
                rows: Vec<RepRow<$rep_list>>,
            ) -> Result<Vec<Rep>, StorageError> {
                let ids: Vec<Uuid> = rows.iter().map(|row| row.rep_id).collect();
                let mut hours = Vec::new();
                let mut absences = Vec::new();
                for chunk in ids.chunks(IDS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(
                        "SELECT rep_id, day_of_week, start_minute, end_minute \
                         FROM rep_working_hours WHERE rep_id IN",
                    );
                    Self::push_ids(&mut query, chunk);
                    query.push(" ORDER BY rep_id, position");
                    hours.extend(
                        query
                            .build_query_as::<HoursRow>()
                            // Lists of every length would crowd out the statement cache.
                            .persistent(false)
                            .fetch_all(&mut *self.transaction)
                            .await?,
                    );
                    let mut query = QueryBuilder::new(
                        "SELECT rep_id, start_time, end_time FROM rep_out_of_office \
                         WHERE rep_id IN",
                    );
                    Self::push_ids(&mut query, chunk);
                    query.push(" ORDER BY rep_id, position");
                    absences.extend(
                        query
                            .build_query_as::<AbsenceRow>()
                            .persistent(false)
                            .fetch_all(&mut *self.transaction)
                            .await?,
                    );
                }
                build_reps(rows, hours, absences, $decode_list)
            }

            /// The teams of `rows` with their members.
            async fn assemble_teams(
                &mut self,
                rows: Vec<TeamRow>,
            ) -> Result<Vec<TeamRecord>, StorageError> {
                let ids: Vec<Uuid> = rows.iter().map(|row| row.team_id).collect();
                let mut members = Vec::new();
                for chunk in ids.chunks(IDS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(
                        "SELECT team_id, rep_id, current_weight FROM team_members WHERE team_id IN",
                    );
                    Self::push_ids(&mut query, chunk);
                    query.push(" ORDER BY team_id, position, rep_id");
                    members.extend(
                        query
                            .build_query_as::<MemberRow>()
                            .persistent(false)
                            .fetch_all(&mut *self.transaction)
                            .await?,
                    );
                }
                build_teams(rows, members)
            }

            async fn one_team(
                &mut self,
                row: Option<TeamRow>,
            ) -> Result<Option<TeamRecord>, StorageError> {
                match row {
                    None => Ok(None),
                    Some(row) => Ok(self.assemble_teams(vec![row]).await?.pop()),
                }
            }

            /// Runs `statement`, which takes the rep's id, its fields and `now` as `$1` to
            /// `$10`.
            async fn write_rep(
                &mut self,
                statement: &'static str,
                rep_id: Uuid,
                rep: &NewRep,
                now: DateTime<Utc>,
            ) -> Result<u64, StorageError> {
                let what = |field: &str| format!("rep {rep_id}: {field}");
                Ok(sqlx::query(statement)
                    .bind(rep_id)
                    .bind(rep.email.as_str())
                    .bind(&rep.display_name)
                    .bind(rep.time_zone.name())
                    .bind($encode_list(&rep.products))
                    .bind($encode_list(&rep.languages))
                    .bind(to_i32(rep.capacity, &what("capacity"))?)
                    .bind(to_i32(rep.weight, &what("weight"))?)
                    .bind(rep.active)
                    .bind(now)
                    .execute(&mut *self.transaction)
                    .await
                    .map_err(name_unique_violation("reps_email_key"))?
                    .rows_affected())
            }

            async fn insert_schedule(
                &mut self,
                rep_id: Uuid,
                rep: &NewRep,
            ) -> Result<(), StorageError> {
                let what = |field: &str| format!("rep {rep_id}: {field}");
                for (position, span) in rep.working_hours.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO rep_working_hours \
                         (rep_id, position, day_of_week, start_minute, end_minute) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(rep_id)
                    .bind(to_i32(position, &what("working hours position"))?)
                    .bind(span.day_of_week.as_str_name())
                    .bind(to_i32(span.start_minute, &what("start minute"))?)
                    .bind(to_i32(span.end_minute, &what("end minute"))?)
                    .execute(&mut *self.transaction)
                    .await?;
                }
                for (position, absence) in rep.out_of_office.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO rep_out_of_office (rep_id, position, start_time, end_time) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(rep_id)
                    .bind(to_i32(position, &what("absence position"))?)
                    .bind(absence.start_time)
                    .bind(absence.end_time)
                    .execute(&mut *self.transaction)
                    .await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl RoutingUnit for $unit {
            async fn insert_rep(
                &mut self,
                rep_id: Uuid,
                rep: &NewRep,
                now: DateTime<Utc>,
            ) -> Result<(), StorageError> {
                self.write_rep(
                    "INSERT INTO reps (rep_id, email, display_name, time_zone, products, \
                     languages, capacity, weight, active, open_assignments, last_assign_time, \
                     create_time, update_time) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, NULL, $10, $10)",
                    rep_id,
                    rep,
                    now,
                )
                .await?;
                self.insert_schedule(rep_id, rep).await
            }

            async fn replace_rep(
                &mut self,
                rep_id: Uuid,
                rep: &NewRep,
                now: DateTime<Utc>,
            ) -> Result<(), StorageError> {
                let updated = self
                    .write_rep(
                        "UPDATE reps SET email = $2, display_name = $3, time_zone = $4, \
                         products = $5, languages = $6, capacity = $7, weight = $8, \
                         active = $9, update_time = $10 WHERE rep_id = $1",
                        rep_id,
                        rep,
                        now,
                    )
                    .await?;
                if updated == 0 {
                    return Err(StorageError::NotFound);
                }
                sqlx::query("DELETE FROM rep_working_hours WHERE rep_id = $1")
                    .bind(rep_id)
                    .execute(&mut *self.transaction)
                    .await?;
                sqlx::query("DELETE FROM rep_out_of_office WHERE rep_id = $1")
                    .bind(rep_id)
                    .execute(&mut *self.transaction)
                    .await?;
                self.insert_schedule(rep_id, rep).await
            }

            async fn rep(&mut self, rep_id: Uuid) -> Result<Option<Rep>, StorageError> {
                self.rep_by_id(rep_id, false).await
            }

            async fn lock_rep(&mut self, rep_id: Uuid) -> Result<Option<Rep>, StorageError> {
                self.rep_by_id(rep_id, true).await
            }

            async fn reps_by_ids(&mut self, rep_ids: &[Uuid]) -> Result<Vec<Rep>, StorageError> {
                let mut ids = rep_ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                let mut rows = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(IDS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(concat!(
                        "SELECT ",
                        rep_columns!(),
                        " FROM reps r WHERE r.rep_id IN"
                    ));
                    Self::push_ids(&mut query, chunk);
                    rows.extend(
                        query
                            .build_query_as::<RepRow<$rep_list>>()
                            .persistent(false)
                            .fetch_all(&mut *self.transaction)
                            .await?,
                    );
                }
                self.assemble_reps(rows).await
            }

            async fn all_reps(&mut self) -> Result<Vec<Rep>, StorageError> {
                // Rep ids are UUIDv7: id order is creation order.
                let rows = sqlx::query_as::<_, RepRow<$rep_list>>(concat!(
                    "SELECT ",
                    rep_columns!(),
                    " FROM reps r ORDER BY r.rep_id"
                ))
                .fetch_all(&mut *self.transaction)
                .await?;
                self.assemble_reps(rows).await
            }

            async fn reps_page(
                &mut self,
                team: Option<Uuid>,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<Rep>, StorageError> {
                // Rep ids are UUIDv7: id order is creation order.
                let rows = sqlx::query_as::<_, RepRow<$rep_list>>(concat!(
                    "SELECT ",
                    rep_columns!(),
                    " FROM reps r WHERE ($1 IS NULL OR EXISTS (SELECT 1 FROM team_members m \
                     WHERE m.team_id = $1 AND m.rep_id = r.rep_id)) \
                     AND ($2 IS NULL OR r.rep_id > $2) ORDER BY r.rep_id LIMIT $3"
                ))
                .bind(team)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?;
                self.assemble_reps(rows).await
            }

            async fn teams_of_rep(&mut self, rep_id: Uuid) -> Result<Vec<Uuid>, StorageError> {
                Ok(sqlx::query_scalar(
                    "SELECT t.team_id FROM team_members m JOIN teams t ON t.team_id = m.team_id \
                     WHERE m.rep_id = $1 ORDER BY lower(t.name), t.team_id",
                )
                .bind(rep_id)
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn take_capacity(
                &mut self,
                rep_id: Uuid,
                now: DateTime<Utc>,
            ) -> Result<bool, StorageError> {
                // One conditional update: the check and the increment cannot be split by a
                // concurrent unit.
                let taken = sqlx::query(
                    "UPDATE reps SET open_assignments = open_assignments + 1, \
                     last_assign_time = $2 \
                     WHERE rep_id = $1 AND open_assignments < capacity",
                )
                .bind(rep_id)
                .bind(now)
                .execute(&mut *self.transaction)
                .await?
                .rows_affected();
                Ok(taken == 1)
            }

            async fn release_capacity(&mut self, rep_id: Uuid) -> Result<(), StorageError> {
                sqlx::query(
                    "UPDATE reps SET open_assignments = open_assignments - 1 \
                     WHERE rep_id = $1 AND open_assignments > 0",
                )
                .bind(rep_id)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn insert_team(&mut self, team: &TeamRecord) -> Result<(), StorageError> {
                let what = |field: &str| format!("team {}: {field}", team.team_id);
                sqlx::query(concat!(
                    "INSERT INTO teams (",
                    team_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(team.team_id)
                .bind(&team.name)
                .bind(team.team_lead_rep_id)
                .bind(team.strategy.as_str_name())
                .bind(team.account_ownership_first)
                .bind(team.sla.num_milliseconds())
                .bind(team.sla_clock.as_str_name())
                .bind(to_i32(team.escalate_after_breaches, &what("escalate after breaches"))?)
                .bind(team.last_chosen_rep_id)
                .bind(team.create_time)
                .bind(team.update_time)
                .execute(&mut *self.transaction)
                .await
                .map_err(name_unique_violation("teams_name_key"))?;
                for (position, member) in team.members.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO team_members (team_id, rep_id, position, current_weight) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(team.team_id)
                    .bind(member.rep_id)
                    .bind(to_i32(position, &what("member position"))?)
                    .bind(member.current_weight)
                    .execute(&mut *self.transaction)
                    .await?;
                }
                Ok(())
            }

            async fn replace_team(&mut self, team: &TeamRecord) -> Result<(), StorageError> {
                let what = |field: &str| format!("team {}: {field}", team.team_id);
                let updated = sqlx::query(
                    "UPDATE teams SET name = $2, team_lead_rep_id = $3, strategy = $4, \
                     account_ownership_first = $5, sla_millis = $6, sla_clock = $7, \
                     escalate_after_breaches = $8, last_chosen_rep_id = $9, update_time = $10 \
                     WHERE team_id = $1",
                )
                .bind(team.team_id)
                .bind(&team.name)
                .bind(team.team_lead_rep_id)
                .bind(team.strategy.as_str_name())
                .bind(team.account_ownership_first)
                .bind(team.sla.num_milliseconds())
                .bind(team.sla_clock.as_str_name())
                .bind(to_i32(team.escalate_after_breaches, &what("escalate after breaches"))?)
                .bind(team.last_chosen_rep_id)
                .bind(team.update_time)
                .execute(&mut *self.transaction)
                .await
                .map_err(name_unique_violation("teams_name_key"))?
                .rows_affected();
                if updated == 0 {
                    return Err(StorageError::NotFound);
                }
                let current: Vec<Uuid> =
                    sqlx::query_scalar("SELECT rep_id FROM team_members WHERE team_id = $1")
                        .bind(team.team_id)
                        .fetch_all(&mut *self.transaction)
                        .await?;
                for departed in current
                    .into_iter()
                    .filter(|rep_id| !team.members.iter().any(|member| member.rep_id == *rep_id))
                {
                    sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND rep_id = $2")
                        .bind(team.team_id)
                        .bind(departed)
                        .execute(&mut *self.transaction)
                        .await?;
                }
                // Members that stay keep their place in weighted round robin: only their
                // position changes. Newcomers start from zero.
                for (position, member) in team.members.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO team_members (team_id, rep_id, position, current_weight) \
                         VALUES ($1, $2, $3, 0) ON CONFLICT (team_id, rep_id) \
                         DO UPDATE SET position = excluded.position",
                    )
                    .bind(team.team_id)
                    .bind(member.rep_id)
                    .bind(to_i32(position, &what("member position"))?)
                    .execute(&mut *self.transaction)
                    .await?;
                }
                Ok(())
            }

            async fn team(&mut self, team_id: Uuid) -> Result<Option<TeamRecord>, StorageError> {
                self.team_by_id(team_id, false).await
            }

            async fn lock_team(
                &mut self,
                team_id: Uuid,
            ) -> Result<Option<TeamRecord>, StorageError> {
                self.team_by_id(team_id, true).await
            }

            async fn all_teams(&mut self) -> Result<Vec<TeamRecord>, StorageError> {
                let rows = sqlx::query_as::<_, TeamRow>(concat!(
                    "SELECT ",
                    team_columns!(),
                    " FROM teams ORDER BY lower(name), team_id"
                ))
                .fetch_all(&mut *self.transaction)
                .await?;
                self.assemble_teams(rows).await
            }

            async fn teams_page(
                &mut self,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<TeamRecord>, StorageError> {
                // Names are unique regardless of case, so the lowered name orders teams; the
                // id only makes the order total.
                let rows = sqlx::query_as::<_, TeamRow>(concat!(
                    "SELECT ",
                    team_columns!(),
                    " FROM teams WHERE $1 IS NULL OR (lower(name), team_id) > \
                     (SELECT lower(a.name), a.team_id FROM teams a WHERE a.team_id = $1) \
                     ORDER BY lower(name), team_id LIMIT $2"
                ))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?;
                self.assemble_teams(rows).await
            }

            async fn save_rotation(
                &mut self,
                team_id: Uuid,
                last_chosen_rep_id: Uuid,
                rotation: &[Rotation],
            ) -> Result<(), StorageError> {
                sqlx::query("UPDATE teams SET last_chosen_rep_id = $2 WHERE team_id = $1")
                    .bind(team_id)
                    .bind(last_chosen_rep_id)
                    .execute(&mut *self.transaction)
                    .await?;
                for member in rotation {
                    sqlx::query(
                        "UPDATE team_members SET current_weight = $3 \
                         WHERE team_id = $1 AND rep_id = $2",
                    )
                    .bind(team_id)
                    .bind(member.rep_id)
                    .bind(member.current_weight)
                    .execute(&mut *self.transaction)
                    .await?;
                }
                Ok(())
            }

            async fn latest_rule_set(&mut self) -> Result<Option<RuleSetRecord>, StorageError> {
                sqlx::query_as::<_, RuleSetRow>(
                    "SELECT version, definition, create_time FROM rule_sets \
                     ORDER BY version DESC LIMIT 1",
                )
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(RuleSetRecord::try_from)
                .transpose()
            }

            async fn rule_set(
                &mut self,
                version: u32,
            ) -> Result<Option<RuleSetRecord>, StorageError> {
                // No stored version lies beyond the column's range.
                let Ok(version) = i32::try_from(version) else {
                    return Ok(None);
                };
                sqlx::query_as::<_, RuleSetRow>(
                    "SELECT version, definition, create_time FROM rule_sets WHERE version = $1",
                )
                .bind(version)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(RuleSetRecord::try_from)
                .transpose()
            }

            async fn rule_sets_page(
                &mut self,
                before: Option<u32>,
                limit: u32,
            ) -> Result<Vec<RuleSetRecord>, StorageError> {
                // Bound wide: every u32 cursor compares, even one beyond the column's range.
                let before = before.map(i64::from);
                sqlx::query_as::<_, RuleSetRow>(
                    "SELECT version, definition, create_time FROM rule_sets \
                     WHERE $1 IS NULL OR version < $1 ORDER BY version DESC LIMIT $2",
                )
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?
                .into_iter()
                .map(RuleSetRecord::try_from)
                .collect()
            }

            async fn insert_rule_set(
                &mut self,
                record: &RuleSetRecord,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO rule_sets (version, definition, create_time) VALUES ($1, $2, $3)",
                )
                .bind(to_i32(record.version, &format!("rule set {}", record.version))?)
                .bind(record.definition.encode_to_vec())
                .bind(record.create_time)
                .execute(&mut *self.transaction)
                .await
                .map_err(name_unique_violation("rule_sets_pkey"))?;
                Ok(())
            }

            async fn account_owner(
                &mut self,
                account_id: &str,
            ) -> Result<Option<AccountOwnerRecord>, StorageError> {
                let row: Option<(String, Option<Uuid>, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT account_id, rep_id, update_time FROM account_owners \
                     WHERE account_id = $1",
                )
                .bind(account_id)
                .fetch_optional(&mut *self.transaction)
                .await?;
                Ok(row.map(|(account_id, rep_id, update_time)| AccountOwnerRecord {
                    account_id,
                    rep_id,
                    update_time,
                }))
            }

            async fn put_account_owner(
                &mut self,
                owner: &AccountOwnerRecord,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO account_owners (account_id, rep_id, update_time) \
                     VALUES ($1, $2, $3) ON CONFLICT (account_id) DO UPDATE SET \
                     rep_id = excluded.rep_id, update_time = excluded.update_time",
                )
                .bind(&owner.account_id)
                .bind(owner.rep_id)
                .bind(owner.update_time)
                .execute(&mut *self.transaction)
                .await?;
                Ok(())
            }

            async fn insert_hand_over(
                &mut self,
                hand_over: &HandOver,
            ) -> Result<bool, StorageError> {
                let row = HandOverRow::try_from(hand_over)?;
                // The conflict target names the partial index of open hand-overs: a second
                // open one for the lead and product is skipped, not an error.
                let query = sqlx::query(concat!(
                    "INSERT INTO hand_overs (",
                    hand_over_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, \
                     $31, $32, $33, $34, $35) \
                     ON CONFLICT (lead_id, product) WHERE state <> 'ENDED' DO NOTHING"
                ));
                let inserted = bind_hand_over!(query, &row)
                    .execute(&mut *self.transaction)
                    .await?
                    .rows_affected();
                Ok(inserted == 1)
            }

            async fn update_hand_over(&mut self, hand_over: &HandOver) -> Result<(), StorageError> {
                let row = HandOverRow::try_from(hand_over)?;
                // Every column is written, the unchanging ones with the values they have, so
                // that the update binds exactly what the insert binds.
                let query = sqlx::query(
                    "UPDATE hand_overs SET lead_id = $2, product = $3, event_id = $4, \
                     sales_ready_time = $5, account_id = $6, primary_contact_id = $7, \
                     language = $8, lead_class = $9, cell_grade = $10, cell_level = $11, \
                     total_score = $12, profile = $13, rule_set_version = $14, rule_id = $15, \
                     team_id = $16, state = $17, stage = $18, breach_count = $19, \
                     queued_time = $20, first_queued_time = $21, first_assign_time = $22, \
                     accept_time = $23, qualify_time = $24, opportunity_open_time = $25, \
                     crm_opportunity_id = $26, expected_amount_minor = $27, \
                     expected_close_time = $28, deal_outcome = $29, amount_minor = $30, \
                     currency = $31, close_time = $32, lost_reason = $33, end_time = $34, \
                     create_time = $35 WHERE hand_over_id = $1",
                );
                let updated = bind_hand_over!(query, &row)
                    .execute(&mut *self.transaction)
                    .await?
                    .rows_affected();
                if updated == 0 {
                    return Err(StorageError::NotFound);
                }
                Ok(())
            }

            async fn erase_contact(&mut self, contact_id: Uuid) -> Result<u64, StorageError> {
                // Scoring writes the id as a UUID prints; an upper-case copy would be a
                // foreign one, but erasing it too costs nothing.
                let id = contact_id.to_string();
                Ok(sqlx::query(
                    "UPDATE hand_overs SET primary_contact_id = '' \
                     WHERE primary_contact_id IN ($1, $2)",
                )
                .bind(&id)
                .bind(id.to_uppercase())
                .execute(&mut *self.transaction)
                .await?
                .rows_affected())
            }

            async fn hand_over(
                &mut self,
                hand_over_id: Uuid,
            ) -> Result<Option<HandOver>, StorageError> {
                self.hand_over_by_id(hand_over_id, false).await
            }

            async fn lock_hand_over(
                &mut self,
                hand_over_id: Uuid,
            ) -> Result<Option<HandOver>, StorageError> {
                self.hand_over_by_id(hand_over_id, true).await
            }

            async fn lock_latest_hand_over(
                &mut self,
                lead_id: Uuid,
                product: &str,
            ) -> Result<Option<HandOver>, StorageError> {
                sqlx::query_as::<_, HandOverRow>(concat!(
                    "SELECT ",
                    hand_over_columns!(),
                    " FROM hand_overs WHERE lead_id = $1 AND product = $2 \
                     ORDER BY create_time DESC, hand_over_id DESC LIMIT 1",
                    $for_update
                ))
                .bind(lead_id)
                .bind(product)
                .fetch_optional(&mut *self.transaction)
                .await?
                .map(HandOver::try_from)
                .transpose()
            }

            async fn lock_queued(
                &mut self,
                team_id: Uuid,
                limit: u32,
            ) -> Result<Vec<HandOver>, StorageError> {
                let rows = sqlx::query_as::<_, HandOverRow>(concat!(
                    "SELECT ",
                    hand_over_columns!(),
                    " FROM hand_overs WHERE team_id = $1 AND state = 'QUEUED' \
                     ORDER BY queued_time, hand_over_id LIMIT $2",
                    $skip_locked
                ))
                .bind(team_id)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?;
                hand_overs(rows)
            }

            async fn unrouted_hand_overs(&mut self, limit: u32) -> Result<Vec<Uuid>, StorageError> {
                Ok(sqlx::query_scalar(
                    "SELECT hand_over_id FROM hand_overs WHERE team_id IS NULL \
                     AND state = 'QUEUED' ORDER BY create_time, hand_over_id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn queue_page(
                &mut self,
                team_id: Uuid,
                after: Option<(DateTime<Utc>, Uuid)>,
                limit: u32,
            ) -> Result<Vec<HandOver>, StorageError> {
                let rows = sqlx::query_as::<_, HandOverRow>(concat!(
                    "SELECT ",
                    hand_over_columns!(),
                    " FROM hand_overs WHERE team_id = $1 AND state = 'QUEUED' \
                     AND ($2 IS NULL OR (queued_time, hand_over_id) > ($2, $3)) \
                     ORDER BY queued_time, hand_over_id LIMIT $4"
                ))
                .bind(team_id)
                .bind(after.map(|(time, _)| time))
                .bind(after.map(|(_, id)| id))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?;
                hand_overs(rows)
            }

            async fn queued_up_to(
                &mut self,
                team_id: Uuid,
                cursor: (DateTime<Utc>, Uuid),
            ) -> Result<u32, StorageError> {
                let count: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM hand_overs WHERE team_id = $1 AND state = 'QUEUED' \
                     AND (queued_time, hand_over_id) <= ($2, $3)",
                )
                .bind(team_id)
                .bind(cursor.0)
                .bind(cursor.1)
                .fetch_one(&mut *self.transaction)
                .await?;
                to_u32(count, "queue position")
            }

            async fn queue_length(&mut self, team_id: Option<Uuid>) -> Result<u32, StorageError> {
                // Without a team, the hand-overs waiting for their first rule set count too.
                let count: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM hand_overs WHERE state = 'QUEUED' \
                     AND ($1 IS NULL OR team_id = $1)",
                )
                .bind(team_id)
                .fetch_one(&mut *self.transaction)
                .await?;
                to_u32(count, "queue length")
            }

            async fn teams_with_queue(&mut self) -> Result<Vec<Uuid>, StorageError> {
                Ok(sqlx::query_scalar(
                    "SELECT DISTINCT team_id FROM hand_overs \
                     WHERE state = 'QUEUED' AND team_id IS NOT NULL ORDER BY team_id",
                )
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn hand_overs_ready_between(
                &mut self,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<HandOver>, StorageError> {
                let rows = sqlx::query_as::<_, HandOverRow>(concat!(
                    "SELECT ",
                    hand_over_columns!(),
                    " FROM hand_overs WHERE sales_ready_time >= $1 AND sales_ready_time < $2 \
                     ORDER BY sales_ready_time, hand_over_id"
                ))
                .bind(from)
                .bind(to)
                .fetch_all(&mut *self.transaction)
                .await?;
                hand_overs(rows)
            }

            async fn insert_assignment(
                &mut self,
                assignment: &AssignmentRecord,
            ) -> Result<(), StorageError> {
                let what =
                    |field: &str| format!("assignment {}: {field}", assignment.assignment_id);
                sqlx::query(concat!(
                    "INSERT INTO assignments (",
                    assignment_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     $16, $17, $18, $19, $20, $21, $22)"
                ))
                .bind(assignment.assignment_id)
                .bind(assignment.hand_over_id)
                .bind(assignment.lead_id)
                .bind(&assignment.product)
                .bind(assignment.rep_id)
                .bind(assignment.team_id)
                .bind(assignment.state.as_str_name())
                .bind(assignment.method.as_str_name())
                .bind(assignment.strategy.as_str_name())
                .bind(assignment.rule_id)
                .bind(to_i32(assignment.rule_set_version, &what("rule set version"))?)
                .bind(assignment.previous_assignment_id)
                .bind(to_i32(assignment.breach_count, &what("breach count"))?)
                .bind(assignment.create_time)
                .bind(assignment.sla_due_time)
                .bind(assignment.accept_time)
                .bind(assignment.end_time)
                .bind(assignment.rejection_reason.as_str_name())
                .bind(&assignment.note)
                .bind(&assignment.assigned_by)
                .bind(&assignment.decided_by)
                .bind(assignment.explanation.encode_to_vec())
                .execute(&mut *self.transaction)
                .await
                .map_err(name_unique_violation("assignments_open"))?;
                Ok(())
            }

            async fn update_assignment(
                &mut self,
                assignment: &AssignmentRecord,
            ) -> Result<(), StorageError> {
                let what =
                    |field: &str| format!("assignment {}: {field}", assignment.assignment_id);
                let updated = sqlx::query(
                    "UPDATE assignments SET state = $2, breach_count = $3, sla_due_time = $4, \
                     accept_time = $5, end_time = $6, rejection_reason = $7, note = $8, \
                     assigned_by = $9, decided_by = $10 WHERE assignment_id = $1",
                )
                .bind(assignment.assignment_id)
                .bind(assignment.state.as_str_name())
                .bind(to_i32(assignment.breach_count, &what("breach count"))?)
                .bind(assignment.sla_due_time)
                .bind(assignment.accept_time)
                .bind(assignment.end_time)
                .bind(assignment.rejection_reason.as_str_name())
                .bind(&assignment.note)
                .bind(&assignment.assigned_by)
                .bind(&assignment.decided_by)
                .execute(&mut *self.transaction)
                .await
                .map_err(name_unique_violation("assignments_open"))?
                .rows_affected();
                if updated == 0 {
                    return Err(StorageError::NotFound);
                }
                Ok(())
            }

            async fn assignment(
                &mut self,
                assignment_id: Uuid,
            ) -> Result<Option<AssignmentRecord>, StorageError> {
                self.assignment_by_id(assignment_id, false).await
            }

            async fn lock_assignment(
                &mut self,
                assignment_id: Uuid,
            ) -> Result<Option<AssignmentRecord>, StorageError> {
                self.assignment_by_id(assignment_id, true).await
            }

            async fn assignments_of_hand_over(
                &mut self,
                hand_over_id: Uuid,
            ) -> Result<Vec<AssignmentRecord>, StorageError> {
                let rows = sqlx::query_as::<_, AssignmentRow>(concat!(
                    "SELECT ",
                    assignment_columns!(),
                    " FROM assignments WHERE hand_over_id = $1 ORDER BY create_time, assignment_id"
                ))
                .bind(hand_over_id)
                .fetch_all(&mut *self.transaction)
                .await?;
                assignments(rows)
            }

            async fn assignments_page(
                &mut self,
                filter: &AssignmentFilter,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<AssignmentRecord>, StorageError> {
                // Only the filters that are set go into the statement, so each can use its
                // index.
                let mut query = QueryBuilder::new(concat!(
                    "SELECT ",
                    assignment_columns!(),
                    " FROM assignments"
                ));
                let mut clause = " WHERE ";
                let mut next = |query: &mut QueryBuilder<'_, $database>, condition: &str| {
                    query.push(clause).push(condition);
                    clause = " AND ";
                };
                if let Some(rep_id) = filter.rep_id {
                    next(&mut query, "rep_id = ");
                    query.push_bind(rep_id);
                }
                if let Some(lead_id) = filter.lead_id {
                    next(&mut query, "lead_id = ");
                    query.push_bind(lead_id);
                }
                if let Some(team_id) = filter.team_id {
                    next(&mut query, "team_id = ");
                    query.push_bind(team_id);
                }
                if let Some(product) = &filter.product {
                    next(&mut query, "product = ");
                    query.push_bind(product.as_str());
                }
                if !filter.states.is_empty() {
                    next(&mut query, "state IN (");
                    let mut states = query.separated(", ");
                    for state in &filter.states {
                        states.push_bind(state.as_str_name());
                    }
                    query.push(")");
                }
                if let Some(after) = after {
                    // Assignment ids are UUIDv7: a smaller id is an older assignment.
                    next(&mut query, "assignment_id < ");
                    query.push_bind(after);
                }
                query
                    .push(" ORDER BY assignment_id DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = query
                    .build_query_as::<AssignmentRow>()
                    .persistent(false)
                    .fetch_all(&mut *self.transaction)
                    .await?;
                assignments(rows)
            }

            async fn due_assignments(
                &mut self,
                now: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Uuid>, StorageError> {
                // No row locks: the tick lists these in a read-only unit (where PostgreSQL
                // refuses FOR UPDATE) and handles each in a unit of its own, which locks it.
                Ok(sqlx::query_scalar(
                    "SELECT assignment_id FROM assignments \
                     WHERE state = 'ASSIGNMENT_STATE_PENDING' AND sla_due_time IS NOT NULL \
                     AND sla_due_time <= $1 ORDER BY sla_due_time, assignment_id LIMIT $2",
                )
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn pending_of_inactive_reps(
                &mut self,
                limit: u32,
            ) -> Result<Vec<Uuid>, StorageError> {
                Ok(sqlx::query_scalar(
                    "SELECT a.assignment_id FROM assignments a JOIN reps r ON r.rep_id = a.rep_id \
                     WHERE a.state = 'ASSIGNMENT_STATE_PENDING' AND NOT r.active \
                     ORDER BY a.create_time, a.assignment_id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *self.transaction)
                .await?)
            }

            async fn assignments_touching(
                &mut self,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<AssignmentRecord>, StorageError> {
                let rows = sqlx::query_as::<_, AssignmentRow>(concat!(
                    "SELECT ",
                    assignment_columns!(),
                    " FROM assignments WHERE (create_time >= $1 AND create_time < $2) \
                     OR (accept_time >= $1 AND accept_time < $2) \
                     OR (end_time >= $1 AND end_time < $2) \
                     ORDER BY create_time, assignment_id"
                ))
                .bind(from)
                .bind(to)
                .fetch_all(&mut *self.transaction)
                .await?;
                assignments(rows)
            }

            async fn record_delivery(
                &mut self,
                delivery: &Delivery,
            ) -> Result<Recorded, StorageError> {
                $inbox(&mut self.transaction, delivery).await
            }

            async fn publish(&mut self, envelope: &EventEnvelope) -> Result<(), StorageError> {
                $outbox(&mut self.transaction, envelope).await
            }

            async fn save_response(
                &mut self,
                key: &IdempotencyKey,
                response_id: Uuid,
                response: &[u8],
            ) -> Result<(), StorageError> {
                use $idempotency as idempotency;
                sqlx::query("INSERT INTO call_responses (response_id, response) VALUES ($1, $2)")
                    .bind(response_id)
                    .bind(response)
                    .execute(&mut *self.transaction)
                    .await?;
                idempotency::complete(&mut self.transaction, key, response_id).await
            }

            async fn commit(self: Box<Self>) -> Result<(), StorageError> {
                self.transaction.commit().await?;
                Ok(())
            }
        }
    };
}

sql_routing_store! {
    store: PostgresRoutingStore,
    unit: PostgresRoutingUnit,
    database: sqlx::Postgres,
    idempotency: leadflow_storage::idempotency,
    inbox: leadflow_bus::inbox::record,
    outbox: leadflow_bus::outbox::append,
    rep_list: Vec<String>,
    encode_list: array_list,
    decode_list: from_array,
    for_update: " FOR UPDATE",
    // Queue workers of one team take different hand-overs instead of waiting on each other.
    skip_locked: " FOR UPDATE SKIP LOCKED",
    // One consistent snapshot for everything a read answers from.
    snapshot: ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"],
}

sql_routing_store! {
    store: SqliteRoutingStore,
    unit: SqliteRoutingUnit,
    database: sqlx::Sqlite,
    idempotency: leadflow_storage::idempotency::sqlite,
    inbox: leadflow_bus::inbox::sqlite::record,
    outbox: leadflow_bus::outbox::sqlite::append,
    rep_list: String,
    encode_list: list_to_json,
    decode_list: from_json,
    // The one connection serialises transactions: rows need no locks, reads no snapshot.
    for_update: "",
    skip_locked: "",
    snapshot: [],
}
