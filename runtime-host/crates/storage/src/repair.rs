//! Repairing the latest-value cache after Redis missed updates.
//!
//! A submit whose Redis update fails still succeeds (the points are in PostgreSQL); the caller
//! logs the error and calls [`LatestRepair::mark_dirty`]. A timer task then calls
//! [`LatestRepair::repair_pending`], which recomputes each marked device's latest values from
//! PostgreSQL and writes them through the same newest-wins script as submits. A submit racing
//! with a repair is therefore harmless: whichever timestamp is newer stays.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tracing::{debug, warn};

use crate::error::Result;
use crate::latest::LatestCache;
use crate::model::DeviceRef;
use crate::postgres::Storage;

/// The devices whose cached latest values may be stale.
#[derive(Debug, Default)]
pub struct LatestRepair {
    dirty: Mutex<BTreeSet<DeviceRef>>,
}

/// What one [`LatestRepair::repair_pending`] run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepairReport {
    /// Devices whose cache was rewritten from PostgreSQL.
    pub repaired: usize,
    /// Devices still waiting (Redis or PostgreSQL failed during the run).
    pub remaining: usize,
}

impl LatestRepair {
    /// An empty set.
    pub fn new() -> LatestRepair {
        LatestRepair::default()
    }

    /// Remembers that `device`'s cached latest values missed an update.
    pub fn mark_dirty(&self, device: &DeviceRef) {
        self.devices().insert(device.clone());
    }

    /// How many devices wait for repair.
    pub fn pending(&self) -> usize {
        self.devices().len()
    }

    /// Rewrites the cache of every marked device from PostgreSQL, clearing each once done. Stops
    /// at the first failure (Redis or PostgreSQL is likely down: the rest would fail too), keeps
    /// the devices not repaired, and returns that error.
    pub async fn repair_pending(
        &self,
        storage: &Storage,
        cache: &LatestCache,
    ) -> Result<RepairReport> {
        let pending: Vec<DeviceRef> = std::mem::take(&mut *self.devices()).into_iter().collect();
        let mut report = RepairReport::default();
        for (position, device) in pending.iter().enumerate() {
            if let Err(err) = repair_device(storage, cache, device).await {
                warn!(%device, error = %err, "cannot repair the latest-value cache yet");
                self.devices().extend(pending[position..].iter().cloned());
                return Err(err);
            }
            debug!(%device, "latest-value cache repaired");
            report.repaired += 1;
        }
        report.remaining = self.pending();
        Ok(report)
    }

    fn devices(&self) -> std::sync::MutexGuard<'_, BTreeSet<DeviceRef>> {
        self.dirty
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Rewrites `device`'s cached latest values from PostgreSQL now (newest wins, as always).
pub async fn repair_device(
    storage: &Storage,
    cache: &LatestCache,
    device: &DeviceRef,
) -> Result<()> {
    let latest = storage.latest_from_postgres(device).await?;
    let points: Vec<_> = latest
        .into_iter()
        .map(|(key, latest)| (key, latest.ts_ms, latest.value))
        .collect();
    cache.update(device, &points).await
}
