//! Erasure (GDPR article 17): a contact and everything recorded about it are removed in one
//! unit of work, a tombstone with the keyed hash of its email is kept, and `ContactErased`
//! tells the other services to erase what they hold. The retention policy erases contacts
//! inactive for longer than the configured period the same way.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use leadflow_platform::{links::LinkSigner, time::Clock};
use leadflow_proto::events::v1::{ContactErased, ErasureReason, event_envelope::Payload};

use crate::{
    consent::PRODUCER,
    error::CaptureError,
    records::{CaptureStore, CaptureUnit, ContactRow, ErasedRecords, TombstoneRow},
};

/// What the keyed email hashes of tombstones are for; bound into each hash.
const EMAIL_PSEUDONYM: &str = "erased-contact-email";

/// Who the tombstones of the retention policy name as the eraser.
pub const RETENTION_ERASER: &str = "retention-policy";

/// The keyed hash a tombstone keeps of a normalised email.
pub fn email_hash(signer: &LinkSigner, email: &str) -> String {
    signer.pseudonym(EMAIL_PSEUDONYM, email)
}

/// The hashes an email had under the current and every earlier link key, to find the
/// tombstones written before a key rotation.
pub(crate) fn email_hashes(signer: &LinkSigner, email: &str) -> Vec<String> {
    signer.pseudonyms(EMAIL_PSEUDONYM, email)
}

/// Why and by whom a contact is erased.
#[derive(Debug, Clone)]
pub(crate) struct Erasure {
    pub reason: ErasureReason,
    pub erased_by: String,
    pub note: String,
}

/// Erases `contact` inside `unit`: removes its records, keeps its tombstone and publishes
/// `ContactErased`, all committed together or not at all.
pub(crate) async fn erase(
    unit: &mut dyn CaptureUnit,
    signer: &LinkSigner,
    contact: &ContactRow,
    erasure: &Erasure,
    now: DateTime<Utc>,
) -> Result<(TombstoneRow, ErasedRecords), CaptureError> {
    let visitor_ids = unit.visitors_of_contact(contact.contact_id).await?;
    let erased = unit.erase_contact(contact.contact_id, &visitor_ids).await?;
    let tombstone = TombstoneRow {
        contact_id: contact.contact_id,
        email_hash: email_hash(signer, &contact.profile.email),
        reason: erasure.reason.as_str_name().to_owned(),
        erase_time: now,
        erased_by: erasure.erased_by.clone(),
        note: erasure.note.clone(),
    };
    unit.insert_tombstone(&tombstone).await?;
    let lead_id = contact.lead_id.to_string();
    unit.publish(&leadflow_bus::new_envelope(
        PRODUCER,
        &lead_id,
        Payload::ContactErased(ContactErased {
            contact_id: contact.contact_id.to_string(),
            lead_id: lead_id.clone(),
            reason: erasure.reason as i32,
            visitor_ids,
        }),
        now,
    ))
    .await?;
    Ok((tombstone, erased))
}

/// How many contacts the retention policy erases in one unit of work.
const RETENTION_BATCH: u32 = 100;

/// The longest wait between two retention sweeps.
const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(3_600);

/// Erases the contacts that were inactive for longer than the retention period.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    records: Arc<dyn CaptureStore>,
    signer: LinkSigner,
    retention: Duration,
    clock: Arc<dyn Clock>,
}

impl RetentionPolicy {
    /// Contacts inactive for longer than `retention` by `clock` are erased; a retention of
    /// zero keeps every contact.
    pub(crate) fn new(
        records: Arc<dyn CaptureStore>,
        signer: LinkSigner,
        retention: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            records,
            signer,
            retention,
            clock,
        }
    }

    /// Erases every contact inactive since before the retention period; answers how many.
    pub async fn sweep_once(&self) -> Result<u64, CaptureError> {
        if self.retention.is_zero() {
            return Ok(0);
        }
        let now = self.clock.now();
        let Some(before) = chrono::Duration::from_std(self.retention)
            .ok()
            .and_then(|retention| now.checked_sub_signed(retention))
        else {
            return Ok(0);
        };
        let erasure = Erasure {
            reason: ErasureReason::RetentionPolicy,
            erased_by: RETENTION_ERASER.to_owned(),
            note: format!("inactive since before {}", before.format("%Y-%m-%d")),
        };
        let mut erased = 0;
        loop {
            let mut unit = self.records.begin_batch().await?;
            let inactive = unit.inactive_contacts(before, RETENTION_BATCH).await?;
            for &contact_id in &inactive {
                if let Some(contact) = unit.contact(contact_id).await? {
                    erase(unit.as_mut(), &self.signer, &contact, &erasure, now).await?;
                }
            }
            unit.commit().await?;
            erased += inactive.len() as u64;
            if inactive.len() < RETENTION_BATCH as usize {
                return Ok(erased);
            }
        }
    }

    /// Sweeps until `stop` fires; a failed sweep is logged and tried again at the next one.
    pub fn spawn(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let interval = (self.retention / 4).clamp(Duration::from_secs(1), RETENTION_SWEEP_INTERVAL);
        tokio::spawn(async move {
            while !*stop.borrow() {
                match self.sweep_once().await {
                    Ok(0) => {}
                    Ok(erased) => {
                        tracing::info!(erased, "inactive contacts erased by the retention policy")
                    }
                    Err(error) => tracing::warn!(%error, "cannot apply the retention policy"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => {}
                }
            }
        })
    }
}
