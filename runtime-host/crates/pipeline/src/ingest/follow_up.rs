//! What a batch owes after its commit — the region's Redis latest values, the answer cache's
//! invalidation, the alerter's evaluation — done so that neither a cancelled request nor a
//! failing store nor a dead host loses it.
//!
//! The batch's transaction wrote a follow-up row (`weir_storage`'s `followups`). [`FollowUps::run`]
//! does the work in a task of its own (tracked, so shutdown waits for it), which the request
//! awaits but does not own: a device that resets the stream or disconnects after the commit
//! cancels only its wait. When everything succeeded the row is deleted (in bulk, by the next
//! [`FollowUps::work_off`]); otherwise it is due again after [`RETRY_SOON`]. [`FollowUps::work_off`]
//! runs on a timer: it claims the region's due rows — retries, and the rows of a host that died
//! (after `ingest.followup_takeover_s`) — rebuilds their devices' latest values from PostgreSQL,
//! evaluates their pending points, and gives up a row only after `ingest.followup_max_age_s`,
//! counted in `weir_followups_failed_total` and logged with its batch id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;
use weir_metrics::Metrics;
use weir_storage::{
    ClaimedFollowup, DeviceRef, LatestCache, NewPoint, Storage, StorageError, StoredValue,
};

use super::StoredPointsObserver;
use crate::alerting::Alerting;

/// How soon a follow-up that failed on its first attempt is due again.
pub const RETRY_SOON: Duration = Duration::from_secs(1);
/// Longest wait between two attempts of a failing follow-up.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Evaluation calls a request's follow-up makes at most: its own batch and a short backlog
/// before it; a longer backlog is the timer's.
const INLINE_ROUNDS: u32 = 4;
/// Follow-ups one [`FollowUps::work_off`] claims at most.
const CLAIM_LIMIT: i64 = 64;
/// How long a claim is held: longer than any device's work (a lock wait, an alerter call
/// and the Redis rebuild).
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// The work one stored batch owes.
pub struct AfterCommit {
    /// The device that sent it.
    pub device: DeviceRef,
    /// Its follow-up row.
    pub followup: i64,
    /// Its points that were stored (or already were, with the same value).
    pub points: Vec<(String, i64, StoredValue)>,
    /// The region the device wrote through before, when this batch moved it here: then all
    /// its latest values are rebuilt.
    pub moved_from: Option<String>,
    /// Whether its points wait for the alerter.
    pub evaluate: bool,
}

/// What one [`FollowUps::work_off`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkReport {
    /// Follow-ups completed.
    pub done: usize,
    /// Follow-ups that failed again and wait for a retry.
    pub retried: usize,
    /// Follow-ups given up.
    pub failed: usize,
}

/// The follow-ups of this host's region.
pub struct FollowUps {
    storage: Storage,
    latest: LatestCache,
    metrics: Arc<Metrics>,
    region: String,
    max_age: Duration,
    observer: Option<Arc<dyn StoredPointsObserver>>,
    alerting: Option<Arc<Alerting>>,
    tasks: TaskTracker,
    /// Rows whose work is done, deleted in bulk by the next `work_off`.
    done: Mutex<Vec<i64>>,
}

impl FollowUps {
    /// Follow-ups stored by `storage` for `region`, given up after `max_age`.
    pub fn new(
        storage: Storage,
        latest: LatestCache,
        metrics: Arc<Metrics>,
        region: &str,
        max_age: Duration,
    ) -> Self {
        FollowUps {
            storage,
            latest,
            metrics,
            region: region.to_owned(),
            max_age,
            observer: None,
            alerting: None,
            tasks: TaskTracker::new(),
            done: Mutex::new(Vec::new()),
        }
    }

    /// With the answer cache told of every stored span.
    pub fn set_observer(&mut self, observer: Arc<dyn StoredPointsObserver>) {
        self.observer = Some(observer);
    }

    /// With alerting, which evaluates the batches whose keys its rules watch.
    pub fn set_alerting(&mut self, alerting: Option<Arc<Alerting>>) {
        self.alerting = alerting;
    }

    /// The alerting this pipeline evaluates with.
    pub fn alerting(&self) -> Option<&Arc<Alerting>> {
        self.alerting.as_ref()
    }

    /// Does `work` in a task of its own and waits for it: dropping this future (a cancelled
    /// request) does not stop the work.
    pub async fn run(self: &Arc<Self>, work: AfterCommit) {
        let this = self.clone();
        let task = self.tasks.spawn(async move { this.complete(work).await });
        if let Err(error) = task.await {
            tracing::error!(%error, "a batch follow-up panicked; its row stays for a retry");
        }
    }

    /// Waits for the follow-ups in progress (at shutdown).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn complete(&self, work: AfterCommit) {
        let device = &work.device;
        self.tell_observer(device, &work.points);
        let latest = match &work.moved_from {
            Some(from) => {
                tracing::info!(%device, from, "device moved to this region; rebuilding its latest values");
                weir_storage::repair_device(&self.storage, &self.latest, device).await
            }
            None => self.latest.update(device, &work.points).await,
        };
        let mut failure = None;
        if let Err(error) = latest {
            self.metrics.redis_failures.inc();
            tracing::warn!(%device, %error, "Redis latest update failed; will repair from PostgreSQL");
            failure = Some("latest_unavailable");
        }
        if work.evaluate
            && let Some(alerting) = &self.alerting
            && let Err(error) = evaluate_backlog(alerting, device, INLINE_ROUNDS).await
        {
            tracing::warn!(%device, code = error.code(), %error, "alert evaluation failed; the batch is stored and will be evaluated again");
            failure = Some(error.code());
        }
        match failure {
            None => self.lock_done().push(work.followup),
            Some(code) => {
                self.metrics
                    .followups_retried
                    .get_or_create(&weir_metrics::CodeLabel { code: code.into() })
                    .inc();
                if let Err(error) = self
                    .storage
                    .retry_followups(&[work.followup], code, RETRY_SOON)
                    .await
                {
                    // The row is due at its takeover time anyway.
                    tracing::warn!(%device, %error, "follow-up retry not recorded");
                }
            }
        }
    }

    /// Deletes the completed rows, then claims the region's due follow-ups and works them
    /// off, device by device.
    pub async fn work_off(&self) -> Result<WorkReport, StorageError> {
        self.flush_done().await?;
        let claimed = self
            .storage
            .claim_followups(&self.region, CLAIM_LIMIT, CLAIM_LEASE)
            .await?;
        let mut report = WorkReport::default();
        let mut by_device: Vec<(DeviceRef, Vec<ClaimedFollowup>)> = Vec::new();
        let mut position: HashMap<DeviceRef, usize> = HashMap::new();
        for row in claimed {
            let index = *position.entry(row.device.clone()).or_insert_with(|| {
                by_device.push((row.device.clone(), Vec::new()));
                by_device.len() - 1
            });
            by_device[index].1.push(row);
        }
        for (device, rows) in by_device {
            self.work_off_device(&device, rows, &mut report).await?;
        }
        Ok(report)
    }

    /// Deletes the rows of the follow-ups completed since the last call.
    pub async fn flush_done(&self) -> Result<(), StorageError> {
        let done = std::mem::take(&mut *self.lock_done());
        if let Err(error) = self.storage.followups_done(&done).await {
            self.lock_done().extend(done);
            return Err(error);
        }
        Ok(())
    }

    async fn work_off_device(
        &self,
        device: &DeviceRef,
        rows: Vec<ClaimedFollowup>,
        report: &mut WorkReport,
    ) -> Result<(), StorageError> {
        let (expired, rows): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|row| row.age > self.max_age);
        if !expired.is_empty() {
            let ids: Vec<i64> = expired.iter().map(|row| row.id).collect();
            let batches: Vec<&str> = expired.iter().map(|row| row.batch_id.as_str()).collect();
            self.storage.fail_followups(&ids, "max_age").await?;
            self.metrics
                .followups_failed
                .get_or_create(&weir_metrics::CodeLabel {
                    code: "max_age".into(),
                })
                .inc_by(ids.len() as u64);
            report.failed += ids.len();
            tracing::error!(%device, ?batches, max_age_s = self.max_age.as_secs(), "batch follow-ups given up: their alert evaluation or latest values were not done");
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut failure = None;
        if rows.iter().any(|row| row.evaluation_pending) {
            match &self.alerting {
                Some(alerting) => {
                    if let Err(error) = evaluate_backlog(alerting, device, u32::MAX).await {
                        tracing::warn!(%device, code = error.code(), %error, "alert evaluation of stored batches failed; will retry");
                        failure = Some(error.code());
                    }
                }
                None => failure = Some("alerting_off"),
            }
        }
        if let Err(error) = self.repair_latest(device).await {
            self.metrics.redis_failures.inc();
            tracing::warn!(%device, %error, "latest values not repaired yet");
            failure = Some("latest_unavailable");
        }
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        match failure {
            None => {
                self.storage.followups_done(&ids).await?;
                report.done += ids.len();
            }
            Some(code) => {
                let attempts = rows.iter().map(|row| row.attempts).max().unwrap_or(1);
                self.storage
                    .retry_followups(&ids, code, backoff(attempts))
                    .await?;
                self.metrics
                    .followups_retried
                    .get_or_create(&weir_metrics::CodeLabel { code: code.into() })
                    .inc_by(ids.len() as u64);
                report.retried += ids.len();
            }
        }
        Ok(())
    }

    /// Rebuilds `device`'s latest values in this region's Redis, unless it writes through
    /// another region now (whose Redis is that region's business).
    async fn repair_latest(&self, device: &DeviceRef) -> Result<(), StorageError> {
        let region = self.storage.device_region(device).await?;
        if region
            .as_deref()
            .is_some_and(|region| region != self.region)
        {
            return Ok(());
        }
        weir_storage::repair_device(&self.storage, &self.latest, device).await
    }

    /// Counts the region's follow-ups not done yet into `weir_followups_pending`.
    pub async fn count_pending(&self) -> Result<(), StorageError> {
        let counts = self.storage.followup_counts(&self.region).await?;
        self.metrics.followups_pending.set(counts.pending);
        Ok(())
    }

    /// Tells the observer the span of the stored points per key.
    fn tell_observer(&self, device: &DeviceRef, points: &[(String, i64, StoredValue)]) {
        let Some(observer) = &self.observer else {
            return;
        };
        let mut spans: HashMap<&str, (i64, i64)> = HashMap::new();
        for (key, ts, _) in points {
            let span = spans.entry(key.as_str()).or_insert((*ts, *ts));
            *span = (span.0.min(*ts), span.1.max(*ts));
        }
        for (key, (first, last)) in spans {
            observer.points_stored(device, key, first, last);
        }
    }

    fn lock_done(&self) -> std::sync::MutexGuard<'_, Vec<i64>> {
        self.done
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Evaluates `device`'s pending batches until none is left (a backlog takes several calls)
/// or `rounds` calls were made; what is left then waits for [`FollowUps::work_off`].
async fn evaluate_backlog(
    alerting: &Alerting,
    device: &DeviceRef,
    rounds: u32,
) -> Result<(), crate::alerting::AlertError> {
    for _ in 0..rounds {
        if alerting.evaluate_pending(device).await? == 0 {
            break;
        }
    }
    Ok(())
}

/// The wait before attempt `attempts + 1`: doubling from [`RETRY_SOON`] up to a minute.
fn backoff(attempts: i32) -> Duration {
    let doublings = attempts.clamp(0, 6) as u32;
    (RETRY_SOON * 2u32.pow(doublings)).min(RETRY_MAX)
}

/// The stored points of a batch as the latest-value cache takes them.
pub(super) fn latest_points(
    accepted: &[NewPoint],
    conflicted: &std::collections::HashSet<usize>,
) -> Vec<(String, i64, StoredValue)> {
    accepted
        .iter()
        .filter(|p| !conflicted.contains(&p.index))
        .map(|p| (p.key.clone(), p.ts_ms, p.value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_minute() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(6), Duration::from_secs(60));
        assert_eq!(backoff(i32::MAX), Duration::from_secs(60));
    }
}
