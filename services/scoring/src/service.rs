//! Scoring at work: applying capture's, routing's and nurturing's events to the ledger and
//! the standing of leads, erasing the contacts capture erased, keeping the hot state in step
//! (rebuilding it whenever it was lost), and the model activation that rescores a product.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use leadflow_bus::{
    Applied, Delivery, EventHandler, HandlerError, apply_span, inbox::Recorded, new_envelope,
};
use leadflow_domain::LifecycleStage;
use leadflow_platform::time::{Clock, from_timestamp};
use leadflow_proto::{
    common::v1 as common,
    events::v1::{self as events, ConsentState, RejectionReason, event_envelope::Payload},
};
use leadflow_storage::StorageError;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    engine::{self, Cause, PRODUCER},
    hot::{HotScores, ScoreSnapshot, stage_of},
    models::{NewScoringModel, ScoringModelRecord},
    records::{
        ActivityFact, ContactErasure, ContactFacts, DealRow, LeadFacts, LeadProduct, ScoringStore,
        ScoringUnit,
    },
    rules::{DEFAULT_PRODUCT, ScoringRules, activity_key, seed_model},
};

/// The consumer group scoring reads events in.
pub const CONSUMER_GROUP: &str = "scoring";

/// The producers whose events scoring reads: capture's contacts and activities, routing's
/// outcomes and nurturing's exhausted leads.
pub const SOURCES: [&str; 3] = ["capture", "routing", "nurturing"];

/// How often the hot state is checked for a loss.
const HOT_STATE_CHECK: Duration = Duration::from_secs(2);

/// Scoring's records and hot state, shared by the API, the event handler and maintenance.
#[derive(Debug, Clone)]
pub struct Scoring {
    pub(crate) store: Arc<dyn ScoringStore>,
    pub(crate) hot: Arc<dyn HotScores>,
    clock: Arc<dyn Clock>,
}

/// The rules of the product's active model. A product without any model gets the seed
/// model, active; a product whose models are all inactive is not scored.
pub(crate) async fn active_rules(
    unit: &mut dyn ScoringUnit,
    product: &str,
    now: DateTime<Utc>,
) -> Result<Option<ScoringRules>, StorageError> {
    if let Some(record) = unit.active_model(product).await? {
        return Ok(Some(ScoringRules::from_record(&record)));
    }
    if unit.lock_product_models(product).await? > 0 {
        // Another writer may have created the seed while this one waited.
        return Ok(unit
            .active_model(product)
            .await?
            .map(|record| ScoringRules::from_record(&record)));
    }
    let model = NewScoringModel::parse(Some(&seed_model(product)))
        .map_err(|violations| StorageError::Corrupt(format!("seed model: {violations:?}")))?;
    let record = ScoringModelRecord {
        model_id: Uuid::now_v7(),
        version: 1,
        active: true,
        create_time: now,
        model,
    };
    unit.insert_model(&record).await?;
    unit.activate_model(product, record.model_id).await?;
    tracing::info!(product, model_id = %record.model_id, "seed scoring model activated");
    Ok(Some(ScoringRules::from_record(&record)))
}

/// Brings one lead's score for `product` up to date; publishes what changed and returns
/// the new snapshot (none when the product has no active model).
pub(crate) async fn refresh_product(
    unit: &mut dyn ScoringUnit,
    lead: &LeadFacts,
    product: &str,
    cause: &Cause,
) -> Result<Option<ScoreSnapshot>, StorageError> {
    let Some(rules) = active_rules(unit, product, cause.now).await? else {
        if unit.lead_product(lead.lead_id, product).await?.is_none() {
            let standing = engine::new_standing(lead.lead_id, product, cause.now);
            unit.put_lead_product(&standing).await?;
            let event = engine::start_lifecycle(unit, &standing, cause).await?;
            publish(unit, lead.lead_id, vec![event], cause.now).await?;
        }
        return Ok(None);
    };
    let inputs =
        engine::load_inputs(unit, lead.clone(), product, rules.model_id, cause.now).await?;
    let plan = engine::plan(&inputs, &rules, cause);
    let applied = engine::apply(unit, &inputs, plan, &rules, cause).await?;
    publish(unit, lead.lead_id, applied.events, cause.now).await?;
    Ok(Some(applied.snapshot))
}

pub(crate) async fn publish(
    unit: &mut dyn ScoringUnit,
    lead_id: Uuid,
    payloads: Vec<Payload>,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    for payload in payloads {
        let envelope = new_envelope(PRODUCER, &lead_id.to_string(), payload, now);
        unit.publish(&envelope).await?;
    }
    Ok(())
}

/// The snapshot of a standing from the records, as a rebuild computes it.
pub(crate) async fn compute_snapshot(
    unit: &mut dyn ScoringUnit,
    standing: &LeadProduct,
    now: DateTime<Utc>,
) -> Result<Option<ScoreSnapshot>, StorageError> {
    let Some(record) = unit.active_model(&standing.product).await? else {
        return Ok(None);
    };
    let rules = ScoringRules::from_record(&record);
    let Some(lead) = unit.lead(standing.lead_id).await? else {
        return Ok(None);
    };
    let inputs = engine::load_inputs(unit, lead, &standing.product, rules.model_id, now).await?;
    let evaluation = engine::evaluate(&rules, &inputs.ledger, None);
    Ok(Some(engine::snapshot(
        &rules,
        &inputs.standing,
        &evaluation,
        inputs.bant.as_ref(),
    )))
}

fn parse_id(text: &str, field: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text).map_err(|_| HandlerError(format!("{field} {text:?} is not a UUID")))
}

fn optional_id(text: &str, field: &str) -> Result<Option<Uuid>, HandlerError> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_id(text, field).map(Some)
    }
}

/// The products an event counts for: its own, or every product the lead is scored for (the
/// default product for a lead scored for none); a profile change counts for all of them.
async fn products_for(
    unit: &mut dyn ScoringUnit,
    lead_id: Uuid,
    product: &str,
    all_known: bool,
) -> Result<Vec<String>, StorageError> {
    let mut products = unit.products_of_lead(lead_id).await?;
    let product = product.trim();
    if !product.is_empty() {
        if !all_known {
            products.clear();
        }
        if !products.iter().any(|known| known == product) {
            products.push(product.to_owned());
        }
    } else if products.is_empty() {
        products.push(DEFAULT_PRODUCT.to_owned());
    }
    Ok(products)
}

impl Scoring {
    /// Scoring on its records store and hot state, reading the time from `clock`.
    pub fn new(
        store: Arc<dyn ScoringStore>,
        hot: Arc<dyn HotScores>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, hot, clock }
    }

    /// Now, as scoring's clock tells it (to the microsecond both stores keep).
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The current snapshot of the lead for the product: from the hot state, or computed
    /// from the records (and put back) when the hot state lost it.
    pub(crate) async fn snapshot(
        &self,
        lead_id: Uuid,
        product: &str,
    ) -> Result<Option<ScoreSnapshot>, StorageError> {
        if let Some(snapshot) = self.hot.get(lead_id, product).await? {
            return Ok(Some(snapshot));
        }
        let mut unit = self.store.read().await?;
        let Some(standing) = unit.lead_product(lead_id, product).await? else {
            return Ok(None);
        };
        let snapshot = compute_snapshot(unit.as_mut(), &standing, self.now()).await?;
        drop(unit);
        if let Some(snapshot) = &snapshot {
            self.hot.put(std::slice::from_ref(snapshot)).await?;
        }
        Ok(snapshot)
    }

    /// The snapshots of one lead or all, of one product or all (empty: all), computed from
    /// the records in `unit`.
    pub(crate) async fn compute_snapshots(
        &self,
        unit: &mut dyn ScoringUnit,
        lead_id: Option<Uuid>,
        product: &str,
    ) -> Result<Vec<ScoreSnapshot>, StorageError> {
        let standings: Vec<LeadProduct> = match lead_id {
            Some(lead_id) => {
                let mut standings = Vec::new();
                for known in unit.products_of_lead(lead_id).await? {
                    if product.is_empty() || known == product {
                        standings.extend(unit.lead_product(lead_id, &known).await?);
                    }
                }
                standings
            }
            None => unit.lead_products(product).await?,
        };
        let now = self.now();
        let mut snapshots = Vec::with_capacity(standings.len());
        for standing in &standings {
            snapshots.extend(compute_snapshot(unit, standing, now).await?);
        }
        Ok(snapshots)
    }

    /// Recomputes the hot state of one lead or all, of one product or all, from the
    /// records; returns how many scores were recomputed.
    pub async fn rebuild(&self, lead_id: Option<Uuid>, product: &str) -> Result<u32, StorageError> {
        let mut unit = self.store.read().await?;
        let snapshots = self
            .compute_snapshots(unit.as_mut(), lead_id, product)
            .await?;
        drop(unit);
        for chunk in snapshots.chunks(500) {
            self.hot.put(chunk).await?;
        }
        Ok(u32::try_from(snapshots.len()).unwrap_or(u32::MAX))
    }

    /// Rebuilds the whole hot state when it is not built (at start, or after Redis lost it).
    pub async fn rebuild_if_lost(&self) -> Result<Option<u32>, StorageError> {
        if self.hot.is_built().await? {
            return Ok(None);
        }
        let rebuilt = self.rebuild(None, "").await?;
        self.hot.mark_built().await?;
        tracing::info!(rebuilt, "hot score state rebuilt from the ledger");
        Ok(Some(rebuilt))
    }

    /// Keeps the hot state built until `stop` fires.
    pub fn spawn_hot_state_keeper(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !*stop.borrow() {
                if let Err(error) = self.rebuild_if_lost().await {
                    tracing::warn!(%error, "cannot rebuild the hot score state yet");
                }
                tokio::select! {
                    () = tokio::time::sleep(HOT_STATE_CHECK) => {}
                    _ = stop.changed() => {}
                }
            }
        })
    }

    /// Erases the contact in `unit` (see [`ScoringUnit::erase_contact`]) and computes the
    /// snapshots of its leads as the unit leaves them. The points stay, so the scores do
    /// not change; the snapshots replace the hot state all the same, which then holds
    /// nothing read before the erasure.
    pub(crate) async fn erase_contact(
        &self,
        unit: &mut dyn ScoringUnit,
        contact_id: Uuid,
        visitor_ids: &[String],
    ) -> Result<(ContactErasure, Vec<ScoreSnapshot>), StorageError> {
        let erasure = unit.erase_contact(contact_id, visitor_ids).await?;
        let mut snapshots = Vec::new();
        for lead_id in &erasure.leads {
            snapshots.extend(self.compute_snapshots(unit, Some(*lead_id), "").await?);
        }
        Ok((erasure, snapshots))
    }

    async fn recompute_lead(&self, lead_id: Uuid) -> Result<Vec<ScoreSnapshot>, StorageError> {
        let mut unit = self.store.read().await?;
        self.compute_snapshots(unit.as_mut(), Some(lead_id), "")
            .await
    }

    /// Applies one event in `unit`; returns the lead it touched and its new snapshots.
    async fn apply_event(
        &self,
        unit: &mut dyn ScoringUnit,
        event_id: Uuid,
        payload: &Payload,
    ) -> Result<Option<(Uuid, Vec<ScoreSnapshot>)>, HandlerError> {
        let now = self.now();
        let cause = |kind| Cause {
            event_id: Some(event_id),
            ..Cause::new(kind, now)
        };
        match payload {
            Payload::ContactCaptured(captured) => {
                let lead_id = parse_id(&captured.lead_id, "lead_id")?;
                let contact_id = parse_id(&captured.contact_id, "contact_id")?;
                let account_id = optional_id(&captured.account_id, "account_id")?;
                unit.lock_lead(lead_id, now).await?;
                let lead = LeadFacts {
                    lead_id,
                    account_id,
                    profile: captured.lead.clone().unwrap_or_default(),
                    update_time: now,
                };
                unit.put_lead(&lead).await?;
                let opted_in = matches!(
                    ConsentState::try_from(captured.consent_state),
                    Ok(ConsentState::Granted | ConsentState::Confirmed)
                );
                unit.put_contact(&ContactFacts {
                    contact_id,
                    lead_id,
                    profile: captured.contact.clone().unwrap_or_default(),
                    opted_in,
                    update_time: now,
                })
                .await?;
                unit.attach_visitor_activities(&captured.merged_visitor_ids, contact_id, lead_id)
                    .await?;
                let campaign = captured
                    .attribution
                    .as_ref()
                    .map_or("", |attribution| attribution.campaign.trim());
                if !campaign.is_empty() {
                    unit.note_campaign(lead_id, campaign, now).await?;
                }
                let cause = cause(events::ScoreChangeCause::Profile);
                let mut snapshots = Vec::new();
                for product in products_for(unit, lead_id, &captured.product, true).await? {
                    snapshots.extend(refresh_product(unit, &lead, &product, &cause).await?);
                }
                Ok(Some((lead_id, snapshots)))
            }
            Payload::ContactErased(erased) => {
                let contact_id = parse_id(&erased.contact_id, "contact_id")?;
                let (erasure, snapshots) = self
                    .erase_contact(unit, contact_id, &erased.visitor_ids)
                    .await?;
                tracing::info!(%contact_id, anonymised_entries = erasure.anonymised_entries, "contact erased from scoring");
                Ok(erasure.leads.first().map(|lead_id| (*lead_id, snapshots)))
            }
            Payload::ActivityRecorded(recorded) => {
                let occurred_at = recorded
                    .occurred_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .map_or(now, |time| time.trunc_subsecs(6));
                let fact = ActivityFact {
                    activity_id: parse_id(&recorded.activity_id, "activity_id")?,
                    event_id,
                    lead_id: optional_id(&recorded.lead_id, "lead_id")?,
                    contact_id: optional_id(&recorded.contact_id, "contact_id")?,
                    visitor_id: recorded.visitor_id.clone(),
                    activity_key: activity_key(recorded.r#type, &recorded.custom_type)
                        .as_str()
                        .to_owned(),
                    content_id: recorded.content_item_id.clone(),
                    buying_stage: common::BuyingStage::try_from(recorded.stage)
                        .unwrap_or_default()
                        .as_str_name()
                        .to_owned(),
                    product: recorded.product.trim().to_owned(),
                    occurred_at,
                };
                let Some(lead_id) = fact.lead_id else {
                    // An anonymous visitor's activity waits for the visitor's merge.
                    unit.insert_activity(&fact).await?;
                    return Ok(None);
                };
                let lead = unit.lock_lead(lead_id, now).await?;
                if !unit.insert_activity(&fact).await? {
                    return Ok(None);
                }
                let cause = Cause {
                    fresh_activities: vec![fact.activity_id],
                    ..cause(events::ScoreChangeCause::Activity)
                };
                let mut snapshots = Vec::new();
                for product in products_for(unit, lead_id, &fact.product, false).await? {
                    snapshots.extend(refresh_product(unit, &lead, &product, &cause).await?);
                }
                Ok(Some((lead_id, snapshots)))
            }
            _ => {
                let Some(outcome) = routing_outcome(payload) else {
                    return Ok(None);
                };
                let lead_id = parse_id(outcome.lead_id, "lead_id")?;
                if unit.lead(lead_id).await?.is_none() {
                    tracing::warn!(%lead_id, "routing outcome for a lead scoring does not know");
                    return Ok(None);
                }
                let lead = unit.lock_lead(lead_id, now).await?;
                let Some(mut standing) = unit.lead_product(lead_id, outcome.product).await? else {
                    tracing::warn!(%lead_id, product = outcome.product, "routing outcome for a product the lead is not scored for");
                    return Ok(None);
                };
                if let Payload::DealClosed(closed) = payload {
                    unit.insert_deal(&DealRow {
                        deal_id: event_id,
                        lead_id,
                        product: outcome.product.to_owned(),
                        won: closed.won,
                        amount_minor: closed.amount_minor,
                        currency: closed.currency.trim().to_uppercase(),
                        closed_at: closed
                            .closed_at
                            .as_ref()
                            .and_then(from_timestamp)
                            .map_or(now, |time| time.trunc_subsecs(6)),
                    })
                    .await?;
                }
                let from = stage_of(&standing.stage);
                let Some(path) = engine::stage_path(from, outcome.to) else {
                    tracing::warn!(%lead_id, %from, to = %outcome.to, "routing outcome does not fit the lifecycle; ignored");
                    return Ok(None);
                };
                let cause = cause(events::ScoreChangeCause::Unspecified);
                let changes = engine::move_stage(
                    unit,
                    &mut standing,
                    &path,
                    outcome.by,
                    &outcome.reason,
                    &cause,
                )
                .await?;
                unit.put_lead_product(&standing).await?;
                let payloads = changes.into_iter().map(|(_, event)| event).collect();
                publish(unit, lead_id, payloads, now).await?;
                let snapshots = refresh_product(unit, &lead, outcome.product, &cause).await?;
                Ok(Some((lead_id, snapshots.into_iter().collect())))
            }
        }
    }
}

/// A routing or nurturing outcome as a stage to move to.
struct RoutingOutcome<'a> {
    lead_id: &'a str,
    product: &'a str,
    to: LifecycleStage,
    reason: String,
    /// The service whose decision it was.
    by: &'static str,
}

fn with_note(reason: &str, note: &str) -> String {
    if note.trim().is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}: {}", note.trim())
    }
}

fn outcome<'a>(
    lead_id: &'a str,
    product: &'a str,
    to: LifecycleStage,
    reason: String,
) -> RoutingOutcome<'a> {
    RoutingOutcome {
        lead_id,
        product,
        to,
        reason,
        by: "routing",
    }
}

fn routing_outcome(payload: &Payload) -> Option<RoutingOutcome<'_>> {
    Some(match payload {
        Payload::AssignmentAccepted(accepted) => outcome(
            &accepted.lead_id,
            &accepted.product,
            LifecycleStage::Sal,
            "assignment accepted".to_owned(),
        ),
        Payload::AssignmentRejected(rejected)
            if rejected.reason == RejectionReason::NotAFit as i32
                || rejected.reason == RejectionReason::Duplicate as i32 =>
        {
            let reason = if rejected.reason == RejectionReason::Duplicate as i32 {
                "rejected: duplicate"
            } else {
                "rejected: not a fit"
            };
            outcome(
                &rejected.lead_id,
                &rejected.product,
                LifecycleStage::Disqualified,
                with_note(reason, &rejected.note),
            )
        }
        // Nurturing gives a lead back to the lead database when it reacted to no try.
        Payload::NurtureExhausted(exhausted) => RoutingOutcome {
            by: "nurturing",
            ..outcome(
                &exhausted.lead_id,
                &exhausted.product,
                LifecycleStage::Recycled,
                format!(
                    "nurture exhausted: no reaction to {} tries",
                    exhausted.tries
                ),
            )
        },
        Payload::LeadRecycled(recycled) => {
            let reason = match RejectionReason::try_from(recycled.reason) {
                Ok(RejectionReason::NoBudget) => "rejected: no budget",
                Ok(RejectionReason::NotReadyYet) => "rejected: not ready yet",
                Ok(RejectionReason::WrongContact) => "rejected: wrong contact",
                _ => "recycled by sales",
            };
            outcome(
                &recycled.lead_id,
                &recycled.product,
                LifecycleStage::Recycled,
                with_note(reason, &recycled.note),
            )
        }
        Payload::LeadQualified(qualified) => outcome(
            &qualified.lead_id,
            &qualified.product,
            LifecycleStage::Sql,
            "qualified by sales".to_owned(),
        ),
        Payload::OpportunityOpened(opened) => outcome(
            &opened.lead_id,
            &opened.product,
            LifecycleStage::Opportunity,
            "opportunity opened".to_owned(),
        ),
        Payload::DealClosed(closed) if closed.won => outcome(
            &closed.lead_id,
            &closed.product,
            LifecycleStage::Customer,
            "deal won".to_owned(),
        ),
        Payload::DealClosed(closed) => outcome(
            &closed.lead_id,
            &closed.product,
            LifecycleStage::Recycled,
            "deal lost".to_owned(),
        ),
        _ => return None,
    })
}

#[async_trait::async_trait]
impl EventHandler for Scoring {
    async fn handle(&self, delivery: &Delivery) -> Result<Applied, HandlerError> {
        let Some(payload) = delivery.envelope().payload.as_ref() else {
            return Ok(Applied::nothing_to_do());
        };
        if !is_scored(payload) {
            return Ok(Applied::nothing_to_do());
        }
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        let touched = if recorded.is_first() {
            self.apply_event(unit.as_mut(), delivery.event_id(), payload)
                .await?
        } else {
            None
        };
        unit.commit().await?;
        // The hot state follows the records; on a redelivery it is recomputed, which also
        // heals it when an earlier delivery committed but could not update it.
        let snapshots = match touched {
            Some((_, snapshots)) => snapshots,
            None => match event_lead(payload) {
                Some(lead_id) => self.recompute_lead(lead_id).await?,
                None => Vec::new(),
            },
        };
        self.hot.put(&snapshots).await?;
        Ok(recorded.into_applied())
    }

    /// Applies a read's events in one transaction, one savepoint each, and updates the hot
    /// state in one round trip: one synced commit for up to a whole read instead of one per
    /// event. An event that fails is undone alone and then applied on its own, so it cannot
    /// hold back the others.
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Result<Applied, HandlerError>> {
        let mut outcomes: Vec<Result<Applied, HandlerError>> = deliveries
            .iter()
            .map(|_| Ok(Applied::nothing_to_do()))
            .collect();
        let scored: Vec<(usize, &Delivery, &Payload)> = deliveries
            .iter()
            .enumerate()
            .filter_map(|(index, delivery)| {
                let payload = delivery.envelope().payload.as_ref()?;
                is_scored(payload).then_some((index, delivery, payload))
            })
            .collect();
        if scored.len() < 2 {
            for (index, delivery, _) in scored {
                outcomes[index] = self.handle(delivery).instrument(apply_span(delivery)).await;
            }
            return outcomes;
        }
        let in_batch = match self.apply_in_one_unit(&scored).await {
            Ok(in_batch) => in_batch,
            Err(error) => {
                tracing::warn!(%error, events = scored.len(), "batch could not be committed; applying its events one by one");
                for (index, delivery, _) in scored {
                    outcomes[index] = self.handle(delivery).instrument(apply_span(delivery)).await;
                }
                return outcomes;
            }
        };
        let mut snapshots = Vec::new();
        let mut to_recompute = Vec::new();
        let mut proofs = Vec::new();
        let mut alone = Vec::new();
        for ((index, _, payload), outcome) in scored.iter().zip(in_batch) {
            match outcome {
                InBatch::Recorded { recorded, touched } => {
                    match touched {
                        Some(touched) => snapshots.extend(touched),
                        None => to_recompute.extend(event_lead(payload)),
                    }
                    proofs.push((*index, recorded));
                }
                InBatch::Undone => alone.push(*index),
            }
        }
        // A recompute reads what is committed now, the newest state, so it goes last.
        to_recompute.sort_unstable();
        to_recompute.dedup();
        let hot_state = async {
            for lead_id in to_recompute {
                snapshots.extend(self.recompute_lead(lead_id).await?);
            }
            self.hot.put(&snapshots).await
        }
        .await;
        match hot_state {
            Ok(()) => {
                for (index, recorded) in proofs {
                    outcomes[index] = Ok(recorded.into_applied());
                }
            }
            // Not acknowledged: the redelivery recomputes the hot state from the records.
            Err(error) => {
                for (index, _) in proofs {
                    outcomes[index] = Err(HandlerError(error.to_string()));
                }
            }
        }
        for index in alone {
            let delivery = &deliveries[index];
            outcomes[index] = self.handle(delivery).instrument(apply_span(delivery)).await;
        }
        outcomes
    }
}

/// How one event of a batch went in the batch's transaction.
enum InBatch {
    /// Recorded, and applied if it was the first delivery; with the snapshots it produced,
    /// or none when the hot state is to be recomputed from the records.
    Recorded {
        recorded: Recorded,
        touched: Option<Vec<ScoreSnapshot>>,
    },
    /// It failed and its writes were undone; it is applied again on its own.
    Undone,
}

impl Scoring {
    async fn apply_in_one_unit(
        &self,
        scored: &[(usize, &Delivery, &Payload)],
    ) -> Result<Vec<InBatch>, StorageError> {
        let mut unit = self.store.begin_work().await?;
        let mut in_batch = Vec::with_capacity(scored.len());
        for &(_, delivery, payload) in scored {
            unit.savepoint().await?;
            let applied = async {
                let recorded = unit.record_delivery(delivery).await?;
                let touched = if recorded.is_first() {
                    self.apply_event(unit.as_mut(), delivery.event_id(), payload)
                        .await?
                } else {
                    None
                };
                Ok::<_, HandlerError>((recorded, touched))
            }
            .instrument(apply_span(delivery))
            .await;
            match applied {
                Ok((recorded, touched)) => {
                    unit.release_savepoint().await?;
                    in_batch.push(InBatch::Recorded {
                        recorded,
                        touched: touched.map(|(_, snapshots)| snapshots),
                    });
                }
                Err(error) => {
                    tracing::debug!(event_id = %delivery.event_id(), %error, "event failed in its batch; it is applied alone");
                    unit.rollback_to_savepoint().await?;
                    in_batch.push(InBatch::Undone);
                }
            }
        }
        unit.commit().await?;
        Ok(in_batch)
    }
}

/// Whether scoring does anything with the event.
fn is_scored(payload: &Payload) -> bool {
    matches!(
        payload,
        Payload::ContactCaptured(_) | Payload::ActivityRecorded(_) | Payload::ContactErased(_)
    ) || routing_outcome(payload).is_some()
}

fn event_lead(payload: &Payload) -> Option<Uuid> {
    let lead_id = match payload {
        Payload::ContactCaptured(captured) => &captured.lead_id,
        Payload::ActivityRecorded(recorded) => &recorded.lead_id,
        Payload::ContactErased(erased) => &erased.lead_id,
        other => routing_outcome(other)?.lead_id,
    };
    Uuid::parse_str(lead_id).ok()
}
