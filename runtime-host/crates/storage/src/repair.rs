//! Repairing the latest-value cache after Redis missed updates.
//!
//! A submit whose Redis update fails still succeeds (the points are in PostgreSQL), and its
//! follow-up row (see `followups`) stays until [`repair_device`] has recomputed the device's
//! latest values from PostgreSQL and written them through the same newest-wins script as
//! submits. A submit racing with a repair is therefore harmless: whichever timestamp is newer
//! stays.

use crate::error::Result;
use crate::latest::LatestCache;
use crate::model::DeviceRef;
use crate::postgres::Storage;

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
