//! Nurturing's reactions to the other services' events: capture's contacts, consents,
//! erasures and tracked opens and clicks, scoring's class changes and hand-overs, and
//! sales' answers.
//! Each event is applied in one unit of work that also records it, so a redelivery changes
//! nothing twice.

use chrono::{DateTime, Utc};
use leadflow_bus::{Applied, Delivery, EventHandler, HandlerError};
use leadflow_domain::LeadClass;
use leadflow_platform::time::from_timestamp;
use leadflow_proto::{
    common::v1 as common,
    events::v1::{self as events, ConsentState, RejectionReason, event_envelope::Payload},
    nurturing::v1 as pb,
};
use leadflow_storage::StorageError;
use uuid::Uuid;

use crate::{
    engine::{
        self, NURTURE_PURPOSE, Nurturing, halt, move_to_stage, nurture_policy, progress,
        reactivate, stage_of,
    },
    records::{ContactFacts, NurtureUnit},
    tracks::TrackVersion,
};

/// The consumer group nurturing reads events in.
pub const CONSUMER_GROUP: &str = "nurturing";

/// The producers whose events nurturing reads.
pub const SOURCES: [&str; 3] = ["capture", "scoring", "routing"];

/// The most tracks of one product read for an auto-enrollment.
const TRACKS_PAGE: u32 = 500;

fn parse_id(text: &str, field: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text).map_err(|_| HandlerError(format!("{field} {text:?} is not a UUID")))
}

/// What an event asks of the lead's enrollments.
enum LeadChange {
    /// SalesReady: a rep has it.
    PauseForSales,
    /// Sales took it (accepted, or won the deal).
    Complete(&'static str),
    /// Sales disqualified it.
    Stop(&'static str),
    /// Sales sent it back: take it up again.
    Recycle,
}

impl Nurturing {
    /// The latest versions of the product's tracks.
    async fn product_tracks(&self, product: &str) -> Result<Vec<TrackVersion>, StorageError> {
        let mut versions = Vec::new();
        let mut after = None;
        loop {
            let Some(page) = self
                .tracks
                .list_tracks(Some(product), after, TRACKS_PAGE)
                .await?
            else {
                return Ok(versions);
            };
            for track in &page.items {
                if let Some(version) = self
                    .tracks
                    .get_track_version(track.track_id, track.latest_version)
                    .await?
                {
                    versions.push(version);
                }
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(versions),
            }
        }
    }

    /// Enrolls the lead's contacts that may get nurture mail into the product's tracks that
    /// enroll the lead's class automatically, or into `also` whatever the class; contacts
    /// with an open enrollment in a track stay as they are.
    async fn auto_enroll(
        unit: &mut dyn NurtureUnit,
        lead_id: Uuid,
        product: &str,
        versions: &[TrackVersion],
        also: &[Uuid],
        now: DateTime<Utc>,
    ) -> Result<usize, StorageError> {
        let class = unit
            .lead_products(lead_id)
            .await?
            .into_iter()
            .find(|(known, _)| known == product)
            .and_then(|(_, class)| class);
        // A lead scoring has not classified yet is at the start of its journey: B1.
        let proto_class = leadflow_proto::domain::proto_class(Some(class.unwrap_or(LeadClass::B1)));
        let chosen: Vec<&TrackVersion> = versions
            .iter()
            .filter(|version| {
                also.contains(&version.track_id)
                    || version.policy.auto_enroll_classes.contains(&proto_class)
            })
            .collect();
        if chosen.is_empty() {
            return Ok(0);
        }
        let mut enrolled = 0;
        for contact in unit.contacts_of_lead(lead_id).await? {
            if contact.consent != ConsentState::Confirmed || contact.buyer_role.is_empty() {
                continue;
            }
            for version in &chosen {
                let reason = if also.contains(&version.track_id) {
                    "recycled by sales"
                } else {
                    "enrolled for its class"
                };
                if engine::enroll(unit, &contact, version, product, now, reason, now)
                    .await?
                    .is_some()
                {
                    enrolled += 1;
                }
            }
        }
        Ok(enrolled)
    }

    async fn contact_captured(
        &self,
        delivery: &Delivery,
        captured: &events::ContactCaptured,
    ) -> Result<Applied, HandlerError> {
        let contact_id = parse_id(&captured.contact_id, "contact_id")?;
        let lead_id = parse_id(&captured.lead_id, "lead_id")?;
        let profile = captured.contact.clone().unwrap_or_default();
        let lead = captured.lead.clone().unwrap_or_default();
        let versions = if captured.product.is_empty() {
            Vec::new()
        } else {
            self.product_tracks(&captured.product).await?
        };
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        if !recorded.is_first() {
            unit.commit().await?;
            return Ok(recorded.into_applied());
        }
        let consent =
            ConsentState::try_from(captured.consent_state).unwrap_or(ConsentState::Unspecified);
        let known = unit.contact(contact_id).await?;
        let contact = ContactFacts {
            contact_id,
            lead_id,
            email: profile.email,
            first_name: profile.first_name,
            last_name: profile.last_name,
            job_title: profile.job_title,
            buyer_role: profile.buyer_role.trim().to_ascii_lowercase(),
            language: profile.language,
            time_zone: profile.time_zone,
            company_name: lead.company_name,
            consent,
            frequency: known.as_ref().and_then(|known| known.frequency),
            update_time: now,
        };
        unit.upsert_contact(&contact).await?;
        if !captured.product.is_empty() {
            unit.upsert_lead_product(lead_id, &captured.product, None, now)
                .await?;
        }
        for mut enrollment in unit.enrollments_of_contact(contact_id).await? {
            if !enrollment.is_open() {
                continue;
            }
            if consent == ConsentState::Withdrawn {
                halt(
                    &mut *unit,
                    &mut enrollment,
                    pb::EnrollmentState::Stopped,
                    "consent withdrawn",
                    now,
                )
                .await?;
            } else if !contact.buyer_role.is_empty() && enrollment.buyer_role != contact.buyer_role
            {
                // A new role is a new grid row; a flagged enrollment may find content there.
                enrollment.buyer_role = contact.buyer_role.clone();
                if enrollment.state == pb::EnrollmentState::Flagged {
                    reactivate(&mut *unit, &mut enrollment, "buyer role changed", now).await?;
                } else {
                    unit.update_enrollment(&enrollment).await?;
                }
            }
        }
        if consent == ConsentState::Confirmed && !captured.product.is_empty() {
            Self::auto_enroll(&mut *unit, lead_id, &captured.product, &versions, &[], now).await?;
        }
        unit.commit().await?;
        Ok(recorded.into_applied())
    }

    async fn consent_changed(
        &self,
        delivery: &Delivery,
        changed: &events::ConsentChanged,
    ) -> Result<Applied, HandlerError> {
        if changed.purpose != NURTURE_PURPOSE {
            return Ok(Applied::nothing_to_do());
        }
        let contact_id = parse_id(&changed.contact_id, "contact_id")?;
        let state = ConsentState::try_from(changed.state).unwrap_or(ConsentState::Unspecified);
        // The contact's products, read before the unit for the auto-enrollment.
        let lead_products = {
            let mut unit = self.store.read().await?;
            match unit.contact(contact_id).await? {
                Some(contact) => unit.lead_products(contact.lead_id).await?,
                None => Vec::new(),
            }
        };
        let mut versions = Vec::new();
        if state == ConsentState::Confirmed {
            for (product, _) in &lead_products {
                versions.push((product.clone(), self.product_tracks(product).await?));
            }
        }
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        if !recorded.is_first() {
            unit.commit().await?;
            return Ok(recorded.into_applied());
        }
        if !unit.set_consent(contact_id, state, now).await? {
            // Consent of a contact nurturing never heard of: its capture brings the state.
            unit.commit().await?;
            return Ok(recorded.into_applied());
        }
        if state != ConsentState::Confirmed {
            // Withdrawn stops everything at once; a consent no longer confirmed sends nothing.
            for mut enrollment in unit.enrollments_of_contact(contact_id).await? {
                if enrollment.is_open() {
                    let reason = if state == ConsentState::Withdrawn {
                        "consent withdrawn"
                    } else {
                        "no confirmed opt-in"
                    };
                    halt(
                        &mut *unit,
                        &mut enrollment,
                        pb::EnrollmentState::Stopped,
                        reason,
                        now,
                    )
                    .await?;
                }
            }
        } else if let Some(contact) = unit.contact(contact_id).await? {
            for (product, product_versions) in &versions {
                Self::auto_enroll(
                    &mut *unit,
                    contact.lead_id,
                    product,
                    product_versions,
                    &[],
                    now,
                )
                .await?;
            }
        }
        unit.commit().await?;
        Ok(recorded.into_applied())
    }

    async fn class_changed(
        &self,
        delivery: &Delivery,
        changed: &events::ClassChanged,
    ) -> Result<Applied, HandlerError> {
        let lead_id = parse_id(&changed.lead_id, "lead_id")?;
        let class = leadflow_proto::domain::lead_class(changed.new_class);
        let versions = self.product_tracks(&changed.product).await?;
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        if !recorded.is_first() {
            unit.commit().await?;
            return Ok(recorded.into_applied());
        }
        unit.upsert_lead_product(lead_id, &changed.product, class, now)
            .await?;
        if class.is_some_and(|class| class != LeadClass::C) {
            let stage = stage_of(class);
            for mut enrollment in unit
                .enrollments_of_lead(lead_id, Some(&changed.product))
                .await?
            {
                if enrollment.is_open() && move_to_stage(&mut enrollment, stage, now) {
                    unit.update_enrollment(&enrollment).await?;
                }
            }
        }
        Self::auto_enroll(&mut *unit, lead_id, &changed.product, &versions, &[], now).await?;
        unit.commit().await?;
        Ok(recorded.into_applied())
    }

    async fn lead_changed(
        &self,
        delivery: &Delivery,
        lead_id: &str,
        product: &str,
        change: LeadChange,
    ) -> Result<Applied, HandlerError> {
        let lead_id = parse_id(lead_id, "lead_id")?;
        let versions = match change {
            LeadChange::Recycle => self.product_tracks(product).await?,
            _ => Vec::new(),
        };
        let now = self.clock.now();
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        if !recorded.is_first() {
            unit.commit().await?;
            return Ok(recorded.into_applied());
        }
        let enrollments = unit.enrollments_of_lead(lead_id, Some(product)).await?;
        let mut earlier_tracks = Vec::new();
        for mut enrollment in enrollments {
            if !earlier_tracks.contains(&enrollment.track_id) {
                earlier_tracks.push(enrollment.track_id);
            }
            let halt_as = match change {
                LeadChange::PauseForSales => {
                    Some((pb::EnrollmentState::PausedForSales, "sales ready"))
                }
                LeadChange::Complete(reason) => Some((pb::EnrollmentState::Completed, reason)),
                LeadChange::Stop(reason) => Some((pb::EnrollmentState::Stopped, reason)),
                LeadChange::Recycle => None,
            };
            match halt_as {
                Some((state, reason)) if enrollment.is_open() => {
                    halt(&mut *unit, &mut enrollment, state, reason, now).await?;
                }
                None if enrollment.state == pb::EnrollmentState::PausedForSales => {
                    reactivate(&mut *unit, &mut enrollment, "recycled by sales", now).await?;
                }
                _ => {}
            }
        }
        if let LeadChange::Recycle = change {
            // Contacts whose enrollment ended meanwhile start again in the tracks they were
            // in, at their latest versions, and in those that enroll the lead's class.
            let enrolled = Self::auto_enroll(
                &mut *unit,
                lead_id,
                product,
                &versions,
                &earlier_tracks,
                now,
            )
            .await?;
            tracing::info!(%lead_id, product, enrolled, "recycled lead taken up by nurturing");
        }
        unit.commit().await?;
        Ok(recorded.into_applied())
    }

    async fn activity(
        &self,
        delivery: &Delivery,
        activity: &events::ActivityRecorded,
    ) -> Result<Applied, HandlerError> {
        let reaction = match common::ActivityType::try_from(activity.r#type) {
            Ok(common::ActivityType::EmailOpened) => Reaction::Open,
            Ok(common::ActivityType::LinkClicked) => Reaction::Click,
            _ => return Ok(Applied::nothing_to_do()),
        };
        let Ok(send_id) = Uuid::parse_str(&activity.send_id) else {
            return Ok(Applied::nothing_to_do());
        };
        let Some(peek) = self.store.read().await?.send(send_id, false).await? else {
            // A mail of another sender (a confirmation, a campaign): not nurturing's.
            return Ok(Applied::nothing_to_do());
        };
        let version = self.version_of(peek.track_id, peek.track_version).await?;
        let now = self.clock.now();
        let at = activity
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .map_or(now, |occurred| occurred.min(now));
        let mut unit = self.store.begin_work().await?;
        let recorded = unit.record_delivery(delivery).await?;
        if !recorded.is_first() {
            unit.commit().await?;
            return Ok(recorded.into_applied());
        }
        let enrollment = match peek.enrollment_id {
            Some(enrollment_id) => unit.enrollment(enrollment_id, true).await?,
            None => None,
        };
        // An erased contact's send counts no reactions: they would tell about the contact.
        let Some(mut enrollment) = enrollment else {
            unit.commit().await?;
            return Ok(recorded.into_applied());
        };
        let Some(mut send) = unit.send(send_id, true).await? else {
            unit.commit().await?;
            return Ok(recorded.into_applied());
        };
        match reaction {
            Reaction::Open => {
                send.open_count += 1;
                send.first_open_time = Some(send.first_open_time.map_or(at, |first| first.min(at)));
            }
            Reaction::Click => {
                send.click_count += 1;
                send.first_click_time =
                    Some(send.first_click_time.map_or(at, |first| first.min(at)));
            }
        }
        unit.update_send(&send).await?;
        enrollment.last_reaction_time = Some(
            enrollment
                .last_reaction_time
                .map_or(at, |last| last.max(at)),
        );
        // Only a reaction to the mail the enrollment waits on moves it on.
        let latest = send.step == enrollment.step && send.attempt == enrollment.attempt;
        if latest && enrollment.state == pb::EnrollmentState::Active {
            let progress = progress(&enrollment);
            if progress.reacted() {
                enrollment.next_due_time =
                    Some(progress.next_due(&nurture_policy(&version.policy)));
            }
        }
        unit.update_enrollment(&enrollment).await?;
        unit.commit().await?;
        Ok(recorded.into_applied())
    }
}

#[derive(Clone, Copy)]
enum Reaction {
    Open,
    Click,
}

#[async_trait::async_trait]
impl EventHandler for Nurturing {
    async fn handle(&self, delivery: &Delivery) -> Result<Applied, HandlerError> {
        match delivery.envelope().payload.as_ref() {
            Some(Payload::ContactCaptured(captured)) => {
                self.contact_captured(delivery, captured).await
            }
            Some(Payload::ConsentChanged(changed)) => self.consent_changed(delivery, changed).await,
            Some(Payload::ContactErased(erased)) => self.contact_erased(delivery, erased).await,
            Some(Payload::ActivityRecorded(activity)) => self.activity(delivery, activity).await,
            Some(Payload::ClassChanged(changed)) => self.class_changed(delivery, changed).await,
            Some(Payload::SalesReady(ready)) => {
                self.lead_changed(
                    delivery,
                    &ready.lead_id,
                    &ready.product,
                    LeadChange::PauseForSales,
                )
                .await
            }
            Some(Payload::AssignmentAccepted(accepted)) => {
                self.lead_changed(
                    delivery,
                    &accepted.lead_id,
                    &accepted.product,
                    LeadChange::Complete("accepted by sales"),
                )
                .await
            }
            Some(Payload::AssignmentRejected(rejected))
                if matches!(
                    RejectionReason::try_from(rejected.reason),
                    Ok(RejectionReason::NotAFit | RejectionReason::Duplicate)
                ) =>
            {
                self.lead_changed(
                    delivery,
                    &rejected.lead_id,
                    &rejected.product,
                    LeadChange::Stop("disqualified by sales"),
                )
                .await
            }
            Some(Payload::LeadRecycled(recycled)) => {
                self.lead_changed(
                    delivery,
                    &recycled.lead_id,
                    &recycled.product,
                    LeadChange::Recycle,
                )
                .await
            }
            Some(Payload::DealClosed(closed)) if closed.won => {
                self.lead_changed(
                    delivery,
                    &closed.lead_id,
                    &closed.product,
                    LeadChange::Complete("became a customer"),
                )
                .await
            }
            _ => Ok(Applied::nothing_to_do()),
        }
    }
}
