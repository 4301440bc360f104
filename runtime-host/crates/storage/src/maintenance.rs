//! Periodic upkeep for a timer task: partitions created ahead of time, and old batch ids (with
//! the follow-ups given up for them) forgotten.
//!
//! A batch id only needs to be remembered for as long as a device may re-send that batch. Once
//! forgotten, a very late resend is stored as a new batch, which is still harmless: its points
//! are already stored, so they count as idempotent duplicates.

use std::time::Duration;

use tracing::info;

use crate::error::Result;
use crate::postgres::Storage;

/// How many batch rows one DELETE removes, so retention never holds long locks.
const DELETE_CHUNK: i64 = 10_000;
/// How long renewal requests are kept (answered ones are read once, within seconds).
const RENEWAL_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What one [`Storage::maintain`] run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaintenanceReport {
    /// Batch ids forgotten because they were older than the retention window.
    pub batches_deleted: u64,
    /// Renewal requests forgotten (older than a day).
    pub renewals_deleted: u64,
    /// Follow-ups given up longer ago than the batch retention, forgotten with their batch ids.
    pub followups_deleted: u64,
}

impl Storage {
    /// Creates the partitions from last month to three months ahead, and deletes the `batches`
    /// rows received more than `batch_retention` ago (in chunks), the follow-ups given up that
    /// long ago, and renewal requests older than a day.
    pub async fn maintain(&self, batch_retention: Duration) -> Result<MaintenanceReport> {
        self.ensure_partitions_around_now().await?;
        let client = self.client().await?;
        let delete = client
            .prepare_cached(
                "DELETE FROM batches WHERE (org, device, batch_id) IN ( \
                     SELECT org, device, batch_id FROM batches \
                     WHERE received_at < now() - make_interval(secs => $1::float8) \
                     LIMIT $2)",
            )
            .await?;
        let retention_secs = batch_retention.as_secs_f64();
        let mut report = MaintenanceReport::default();
        loop {
            let deleted = client
                .execute(&delete, &[&retention_secs, &DELETE_CHUNK])
                .await?;
            report.batches_deleted += deleted;
            if deleted < DELETE_CHUNK as u64 {
                break;
            }
        }
        let forget_failed = client
            .prepare_cached(
                "DELETE FROM batch_followups \
                 WHERE failed_at < now() - make_interval(secs => $1::float8)",
            )
            .await?;
        report.followups_deleted = client.execute(&forget_failed, &[&retention_secs]).await?;
        report.renewals_deleted = self.forget_renewals(RENEWAL_RETENTION).await?;
        if report.batches_deleted > 0 {
            info!(
                batches_deleted = report.batches_deleted,
                "forgot old batch ids"
            );
        }
        Ok(report)
    }
}
