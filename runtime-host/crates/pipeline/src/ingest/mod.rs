//! The ingest pipeline, independent of HTTP: a device's batch is parsed, judged by the
//! validator component in one call, written with its batch record and its follow-up row in one
//! PostgreSQL transaction, acknowledged only after the commit ([`Receipt`]), and then merged
//! into Redis "latest" and evaluated by the alerter (when alerting is on) by `follow_up`, in a
//! task the request cannot cancel; their failures never fail the batch, and are retried from the
//! follow-up row.
//!
//! Overload pushes back: a bounded number of batches are processed at once, the validator has
//! its own instance bound, and the PostgreSQL pool waits only briefly; each is an
//! [`ErrorKind::Unavailable`] error, and nothing is acknowledged that is not durable.
//!
//! [`Ingest`] also owns a device's key metadata: storing it (`PUT /v1/metadata`) and the
//! per-host cache the validator reads, so that every write invalidates what it changes.

pub mod error;
pub mod follow_up;
pub mod metadata;
pub mod metadata_cache;
pub mod rate_limit;
pub mod receipt;
pub mod request;
pub mod units;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use weir_config::Config;
use weir_metrics::Metrics;
use weir_runtime::validator::{KeyMetadata, Point, Value, Verdict};
use weir_runtime::{FunctionSlot, ValidatorFunction};
use weir_storage::{
    BatchOutcome, BatchWrite, DeviceMove, DeviceRef, Followup, KeyMetadataRecord, LatestCache,
    MetadataChange, NewPoint, Storage, StorageError, StoredValue,
};

use crate::alerting::Alerting;
pub use error::{ErrorKind, IngestError};
use follow_up::{AfterCommit, FollowUps};
use metadata_cache::MetadataCache;
pub use receipt::{Receipt, Rejected};
use request::parse_submit;

/// How long a batch may wait for a processing slot before the device is told to come back.
const INFLIGHT_WAIT: Duration = Duration::from_secs(2);

/// Told of the points of every batch once they are durable and before the batch is
/// acknowledged (the query API's answer cache drops the answers they change).
pub trait StoredPointsObserver: Send + Sync {
    /// `device` stored points of `key` between `first_ms` and `last_ms`, both inclusive.
    fn points_stored(&self, device: &DeviceRef, key: &str, first_ms: i64, last_ms: i64);
}

/// Everything a batch needs on its way to disk; shared by all device connections.
pub struct Ingest {
    validator: Arc<FunctionSlot<ValidatorFunction>>,
    storage: Storage,
    latest: LatestCache,
    metadata: MetadataCache,
    metrics: Arc<Metrics>,
    follow_ups: Arc<FollowUps>,
    config: Arc<Config>,
    inflight: Semaphore,
}

impl Ingest {
    /// Wires the pipeline.
    pub fn new(
        config: Arc<Config>,
        validator: Arc<FunctionSlot<ValidatorFunction>>,
        storage: Storage,
        latest: LatestCache,
        metrics: Arc<Metrics>,
    ) -> Self {
        let follow_ups = FollowUps::new(
            storage.clone(),
            latest.clone(),
            metrics.clone(),
            &config.region,
            Duration::from_secs(config.ingest.followup_max_age_s),
        );
        Ingest {
            inflight: Semaphore::new(config.ingest.max_inflight_batches),
            validator,
            storage,
            latest,
            metadata: MetadataCache::default(),
            metrics,
            follow_ups: Arc::new(follow_ups),
            config,
        }
    }

    /// The pipeline with alerting: accepted points are evaluated after they are stored.
    pub fn with_alerting(mut self, alerting: Option<Arc<Alerting>>) -> Self {
        self.follow_ups_mut().set_alerting(alerting);
        self
    }

    /// The pipeline telling `observer` of every stored span before acknowledging.
    pub fn with_observer(mut self, observer: Arc<dyn StoredPointsObserver>) -> Self {
        self.follow_ups_mut().set_observer(observer);
        self
    }

    fn follow_ups_mut(&mut self) -> &mut FollowUps {
        Arc::get_mut(&mut self.follow_ups).expect("the pipeline is configured before it is shared")
    }

    /// What stored batches still owe (latest values, alert evaluation), for the timer that
    /// works it off and for shutdown.
    pub fn follow_ups(&self) -> &Arc<FollowUps> {
        &self.follow_ups
    }

    /// Processes one submit body of `device` and returns the receipt to answer with. `Ok`
    /// means the batch is durable (or was already).
    pub async fn submit(&self, device: &DeviceRef, body: &[u8]) -> Result<Receipt, IngestError> {
        let started = Instant::now();
        let result = self.submit_inner(device, body).await;
        match &result {
            Ok(receipt) if receipt.duplicate => self.metrics.batch("duplicate"),
            Ok(_) => {
                self.metrics.batch("stored");
                self.metrics
                    .submit_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(error) => self.metrics.batch(error.code),
        }
        result
    }

    /// Stores `device`'s key metadata and drops what this host cached of it (other hosts learn
    /// of it through PostgreSQL's NOTIFY).
    pub async fn put_metadata(
        &self,
        device: &DeviceRef,
        records: &[KeyMetadataRecord],
    ) -> Result<(), IngestError> {
        if records.is_empty() {
            return Ok(());
        }
        self.storage.put_metadata(device, records).await?;
        self.metadata.invalidate(device);
        Ok(())
    }

    /// `device`'s stored key metadata.
    pub async fn device_metadata(
        &self,
        device: &DeviceRef,
    ) -> Result<Vec<KeyMetadataRecord>, IngestError> {
        Ok(self.storage.device_metadata(device).await?)
    }

    /// Drops cached metadata after a change made through any host.
    pub fn metadata_changed(&self, change: &MetadataChange) {
        match change {
            MetadataChange::Device(device) => self.metadata.invalidate(device),
            MetadataChange::All => self.metadata.invalidate_all(),
        }
    }

    /// Keeps this region's Redis latest values right when a device moves between regions: the
    /// region left drops the device's values (its readers fall back to PostgreSQL), the region
    /// arrived at rebuilds them. After missed notifications, drops the values of every device
    /// that writes elsewhere now.
    pub async fn device_moved(&self, change: &DeviceMove) {
        let region = self.config.region.as_str();
        let outcome = match change {
            DeviceMove::Moved { device, to, .. } if to == region => {
                weir_storage::repair_device(&self.storage, &self.latest, device).await
            }
            DeviceMove::Moved { device, from, .. } if from == region => {
                self.forget_if_elsewhere(device).await
            }
            DeviceMove::Moved { .. } => Ok(()),
            DeviceMove::Missed => self.forget_devices_elsewhere().await,
        };
        if let Err(error) = outcome {
            self.metrics.redis_failures.inc();
            tracing::warn!(?change, %error, "latest values not adjusted to a device move");
        }
    }

    /// Drops `device`'s latest values unless it writes through this region again (a move back
    /// may have been processed before this notification).
    async fn forget_if_elsewhere(&self, device: &DeviceRef) -> Result<(), StorageError> {
        let now = self.storage.device_region(device).await?;
        if now.as_deref() == Some(self.config.region.as_str()) {
            return Ok(());
        }
        self.latest.forget(device).await
    }

    async fn forget_devices_elsewhere(&self) -> Result<(), StorageError> {
        const PAGE: i64 = 1000;
        let mut after: Option<DeviceRef> = None;
        loop {
            let page = self
                .storage
                .devices_elsewhere(&self.config.region, after.as_ref(), PAGE)
                .await?;
            for device in &page {
                self.latest.forget(device).await?;
            }
            if page.len() < PAGE as usize {
                return Ok(());
            }
            after = page.last().cloned();
        }
    }

    async fn submit_inner(&self, device: &DeviceRef, body: &[u8]) -> Result<Receipt, IngestError> {
        let _slot = tokio::time::timeout(INFLIGHT_WAIT, self.inflight.acquire())
            .await
            .map_err(|_| {
                IngestError::unavailable(
                    "overloaded",
                    "too many batches in progress; retry later",
                    1,
                )
            })?
            .expect("the inflight semaphore is never closed");
        let request = parse_submit(body, self.config.ingest.max_batch_points)?;
        let known = self.metadata.get(&self.storage, device).await?;
        let metadata = batch_metadata(&request.points, &known);

        let now = crate::clock::now_ms();
        let validator = self.validator.current();
        let validated = Instant::now();
        let verdicts = validator
            .validate(&request.points, &metadata, self.config.policy(now))
            .await
            .map_err(|error| self.function_error(&error))?;
        self.metrics
            .validator_seconds
            .observe(validated.elapsed().as_secs_f64());

        let mut rejected = Vec::new();
        let mut accepted = Vec::with_capacity(request.points.len());
        let mut alert_points = Vec::new();
        let alerting = self.follow_ups.alerting().filter(|alerting| {
            alerting.watches(device, request.points.iter().map(|p| p.key.as_str()))
        });
        for (index, (point, verdict)) in request.points.iter().zip(verdicts).enumerate() {
            match verdict {
                Verdict::Accepted(value) => {
                    if alerting.is_some() {
                        alert_points.push((
                            index,
                            Point {
                                key: point.key.clone(),
                                value: value.clone(),
                                ts: point.ts,
                            },
                        ));
                    }
                    accepted.push(NewPoint {
                        index,
                        key: point.key.clone(),
                        ts_ms: point.ts,
                        value: stored_value(value),
                    });
                }
                Verdict::Rejected(rejection) => rejected.push(Rejected {
                    index,
                    key: point.key.clone(),
                    code: rejection.reason.code().to_owned(),
                    message: rejection.message,
                }),
            }
        }

        let mut receipt = None;
        let takeover_after = Duration::from_secs(self.config.ingest.followup_takeover_s);
        let write = self
            .storage
            .store_batch_owing(device, &request.batch, &accepted, |outcome| {
                let built = build_receipt(&request.batch, outcome, &rejected);
                let stored = serde_json::to_value(&built).expect("a receipt serialises");
                receipt = Some(built);
                let conflicted = refused_indexes(outcome);
                let alert_points: Vec<Point> = alert_points
                    .into_iter()
                    .filter(|(index, _)| !conflicted.contains(index))
                    .map(|(_, point)| point)
                    .collect();
                let followup = Followup {
                    alert_points: (!alert_points.is_empty())
                        .then(|| crate::alerting::pending::encode(&alert_points)),
                    takeover_after,
                };
                (stored, Some(followup))
            })
            .await?;
        match write {
            BatchWrite::Duplicate { receipt } => {
                let mut receipt: Receipt = serde_json::from_value(receipt).map_err(|error| {
                    tracing::error!(%device, %error, "the stored receipt of a batch is unreadable");
                    IngestError::internal(
                        "storage_error",
                        "the batch was already stored, but its receipt cannot be read",
                    )
                })?;
                receipt.duplicate = true;
                Ok(receipt)
            }
            BatchWrite::Stored {
                stored,
                idempotent,
                conflicts,
                over_key_limit,
                moved_from,
                followup,
            } => {
                // Durable from here on: count, then do what the batch owes (which may fail
                // alone, and is retried from its follow-up row).
                self.metrics
                    .points_accepted
                    .inc_by((stored + idempotent) as u64);
                for r in &rejected {
                    self.metrics.rejected(&r.code);
                }
                for _ in &conflicts {
                    self.metrics.rejected(weir_storage::Conflict::CODE);
                }
                for _ in &over_key_limit {
                    self.metrics.rejected(weir_storage::OverKeyLimit::CODE);
                }
                let conflicted: HashSet<usize> = conflicts
                    .iter()
                    .map(|c| c.index)
                    .chain(over_key_limit.iter().map(|o| o.index))
                    .collect();
                let followup = followup.expect("store_batch_owing records a follow-up");
                self.follow_ups
                    .run(AfterCommit {
                        device: device.clone(),
                        followup,
                        points: follow_up::latest_points(&accepted, &conflicted),
                        moved_from,
                        evaluate: alerting.is_some() && conflicted.len() < accepted.len(),
                    })
                    .await;
                Ok(receipt.expect("store_batch builds the receipt of a stored batch"))
            }
        }
    }

    fn function_error(&self, error: &weir_runtime::CallError) -> IngestError {
        self.metrics
            .function_errors
            .get_or_create(&weir_metrics::CodeLabel {
                code: error.code().into(),
            })
            .inc();
        tracing::error!(code = error.code(), %error, "validator call failed");
        IngestError::validator(error)
    }
}

/// The metadata of the batch's keys that have any.
fn batch_metadata(points: &[Point], known: &HashMap<String, KeyMetadata>) -> Vec<KeyMetadata> {
    let mut seen = HashSet::new();
    points
        .iter()
        .filter(|p| seen.insert(p.key.as_str()))
        .filter_map(|p| known.get(&p.key).cloned())
        .collect()
}

fn stored_value(value: Value) -> StoredValue {
    match value {
        Value::Int(v) => StoredValue::Int(v),
        Value::Uint(v) => StoredValue::unsigned(v),
        Value::Float(v) => StoredValue::Float(v),
        Value::Boolean(v) => StoredValue::Bool(v),
        Value::Text(v) => StoredValue::Text(v),
    }
}

/// The indexes of the points storage refused (conflicts, keys over a limit).
fn refused_indexes(outcome: &BatchOutcome) -> HashSet<usize> {
    outcome
        .conflicts
        .iter()
        .map(|c| c.index)
        .chain(outcome.over_key_limit.iter().map(|o| o.index))
        .collect()
}

fn build_receipt(batch: &str, outcome: &BatchOutcome, rejected: &[Rejected]) -> Receipt {
    let mut all: Vec<Rejected> = rejected.to_vec();
    all.extend(outcome.conflicts.iter().map(|c| Rejected {
        index: c.index,
        key: c.key.clone(),
        code: weir_storage::Conflict::CODE.to_owned(),
        message: c.message.clone(),
    }));
    all.extend(outcome.over_key_limit.iter().map(|o| Rejected {
        index: o.index,
        key: o.key.clone(),
        code: weir_storage::OverKeyLimit::CODE.to_owned(),
        message: o.message.clone(),
    }));
    all.sort_by_key(|r| r.index);
    Receipt {
        batch: batch.to_owned(),
        accepted: (outcome.stored + outcome.idempotent) as u64,
        rejected: all,
        duplicate: false,
    }
}
