//! Forgets the idempotency keys past their retention in every store of this process, so a
//! key answers retries for the configured time and then no longer holds a row.

use std::{sync::Arc, time::Duration};

use leadflow_platform::time::Clock;
use leadflow_storage::{ServiceStore, StorageError};

/// The longest wait between two sweeps; a shorter retention sweeps more often.
const LONGEST_SWEEP_INTERVAL: Duration = Duration::from_secs(3_600);

/// The stores whose keys expire, and after how long.
#[derive(Debug)]
pub struct KeyExpiry {
    stores: Vec<ServiceStore>,
    retention: Duration,
    clock: Arc<dyn Clock>,
}

impl KeyExpiry {
    /// Keys older than `retention` by `clock` expire.
    pub fn new(retention: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            stores: Vec::new(),
            retention,
            clock,
        }
    }

    /// Adds a service's store to the sweep.
    pub fn watch(&mut self, store: ServiceStore) {
        self.stores.push(store);
    }

    /// Removes every key claimed more than the retention ago; answers how many it removed.
    pub async fn expire_once(&self) -> Result<u64, StorageError> {
        // A retention beyond the calendar keeps every key.
        let Some(before) = chrono::Duration::from_std(self.retention)
            .ok()
            .and_then(|retention| self.clock.now().checked_sub_signed(retention))
        else {
            return Ok(0);
        };
        let mut removed = 0;
        for store in &self.stores {
            removed += store.expire_idempotency_keys(before).await?;
        }
        Ok(removed)
    }

    /// Sweeps until `stop` fires; a failed sweep is logged and tried again at the next one.
    pub fn spawn(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let interval = (self.retention / 4).clamp(Duration::from_secs(1), LONGEST_SWEEP_INTERVAL);
        tokio::spawn(async move {
            while !*stop.borrow() {
                match self.expire_once().await {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(removed, "expired idempotency keys removed"),
                    Err(error) => tracing::warn!(%error, "cannot remove expired idempotency keys"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => {}
                }
            }
        })
    }
}
