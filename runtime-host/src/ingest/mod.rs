//! The ingest pipeline, independent of HTTP: a device's batch is parsed, judged by the
//! validator component in one call, written with its batch record in one PostgreSQL
//! transaction, acknowledged only after the commit, and then merged into Redis "latest" and
//! evaluated by the alerter (when alerting is on; its failures never fail the batch).
//!
//! Overload pushes back: a bounded number of batches are processed at once, the validator has
//! its own instance bound, and the PostgreSQL pool waits only briefly; each answers 503 with
//! `Retry-After`, and nothing is acknowledged that is not durable.

pub mod metadata;
pub mod metadata_cache;
pub mod rate_limit;
pub mod request;
pub mod units;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value as Json, json};
use tokio::sync::Semaphore;
use weir_storage::{
    BatchOutcome, BatchWrite, DeviceRef, LatestCache, LatestRepair, NewPoint, Storage,
    StorageError, StoredValue,
};

use crate::alerting::Alerting;
use crate::api::answer_cache::{AnswerCache, Series};
use crate::config::Config;
use crate::functions::validator::{KeyMetadata, Point, Value, Verdict};
use crate::functions::{CallError, FunctionSlot, ValidatorFunction};
use crate::http::ApiError;
use crate::metrics::Metrics;
use metadata_cache::MetadataCache;
use request::parse_submit;

/// How long a batch may wait for a processing slot before the device is told to come back.
const INFLIGHT_WAIT: Duration = Duration::from_secs(2);

/// Everything a batch needs on its way to disk; shared by all device connections.
pub struct Ingest {
    /// The validator new batches are judged by (hot-swappable).
    pub validator: Arc<FunctionSlot<ValidatorFunction>>,
    /// PostgreSQL.
    pub storage: Storage,
    /// Redis latest values.
    pub latest: LatestCache,
    /// Devices whose Redis latest values need recomputing.
    pub repair: Arc<LatestRepair>,
    /// Key metadata per device.
    pub metadata: MetadataCache,
    /// Host metrics.
    pub metrics: Arc<Metrics>,
    /// The query API's answer cache, told of every stored point before the batch is acknowledged.
    pub answers: Arc<AnswerCache>,
    /// Alert evaluation of accepted points, when alerting is configured.
    pub alerting: Option<Arc<Alerting>>,
    config: Arc<Config>,
    inflight: Semaphore,
}

/// One point the validator rejected, or storage found in conflict.
#[derive(Debug, Clone, serde::Serialize)]
struct Rejected {
    index: usize,
    key: String,
    code: &'static str,
    message: String,
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
        Ingest {
            inflight: Semaphore::new(config.ingest.max_inflight_batches),
            validator,
            storage,
            latest,
            repair: Arc::new(LatestRepair::new()),
            metadata: MetadataCache::default(),
            metrics,
            answers: Arc::new(AnswerCache::new(config.query.answer_cache_entries)),
            alerting: None,
            config,
        }
    }

    /// The pipeline with alerting: accepted points are evaluated after they are stored.
    pub fn with_alerting(mut self, alerting: Option<Arc<Alerting>>) -> Self {
        self.alerting = alerting;
        self
    }

    /// Processes one submit body of `device` and returns the receipt to answer with. `Ok`
    /// means the batch is durable (or was already).
    pub async fn submit(&self, device: &DeviceRef, body: &[u8]) -> Result<Json, ApiError> {
        let started = Instant::now();
        let result = self.submit_inner(device, body).await;
        match &result {
            Ok(receipt) if receipt["duplicate"] == json!(true) => self.metrics.batch("duplicate"),
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

    async fn submit_inner(&self, device: &DeviceRef, body: &[u8]) -> Result<Json, ApiError> {
        let _slot = tokio::time::timeout(INFLIGHT_WAIT, self.inflight.acquire())
            .await
            .map_err(|_| {
                ApiError::unavailable("overloaded", "too many batches in progress; retry later", 1)
            })?
            .expect("the inflight semaphore is never closed");
        let request = parse_submit(body, self.config.ingest.max_batch_points)?;
        let known = self
            .metadata
            .get(&self.storage, device)
            .await
            .map_err(storage_error)?;
        let metadata = batch_metadata(&request.points, &known);

        let now = crate::serve::now_ms();
        let validator = self.validator.current();
        let validated = Instant::now();
        let verdicts = validator
            .validate(&request.points, &metadata, self.config.policy(now))
            .await
            .map_err(|error| self.function_error(error))?;
        self.metrics
            .validator_seconds
            .observe(validated.elapsed().as_secs_f64());

        let mut rejected = Vec::new();
        let mut accepted = Vec::with_capacity(request.points.len());
        let mut alert_points = Vec::new();
        for (index, (point, verdict)) in request.points.iter().zip(verdicts).enumerate() {
            match verdict {
                Verdict::Accepted(value) if self.alerting.is_some() => {
                    alert_points.push((
                        index,
                        Point {
                            key: point.key.clone(),
                            value: value.clone(),
                            ts: point.ts,
                        },
                    ));
                    accepted.push(NewPoint {
                        index,
                        key: point.key.clone(),
                        ts_ms: point.ts,
                        value: stored_value(value),
                    })
                }
                Verdict::Accepted(value) => accepted.push(NewPoint {
                    index,
                    key: point.key.clone(),
                    ts_ms: point.ts,
                    value: stored_value(value),
                }),
                Verdict::Rejected(rejection) => rejected.push(Rejected {
                    index,
                    key: point.key.clone(),
                    code: rejection.reason.code(),
                    message: rejection.message,
                }),
            }
        }

        let mut receipt = None;
        let write = self
            .storage
            .store_batch(device, &request.batch, &accepted, |outcome| {
                let built = build_receipt(&request.batch, outcome, &rejected);
                receipt = Some(built.clone());
                built
            })
            .await
            .map_err(storage_error)?;
        match write {
            BatchWrite::Duplicate { mut receipt } => {
                receipt["duplicate"] = json!(true);
                Ok(receipt)
            }
            BatchWrite::Stored {
                stored,
                idempotent,
                conflicts,
            } => {
                // Durable from here on: count, then update the cache (which may fail alone).
                self.metrics
                    .points_accepted
                    .inc_by((stored + idempotent) as u64);
                for r in &rejected {
                    self.metrics.rejected(r.code);
                }
                for _ in &conflicts {
                    self.metrics.rejected(weir_storage::Conflict::CODE);
                }
                let conflicted: std::collections::HashSet<usize> =
                    conflicts.iter().map(|c| c.index).collect();
                self.update_latest(device, &accepted, &conflicted).await;
                self.invalidate_answers(device, &accepted);
                if let Some(alerting) = &self.alerting {
                    let points: Vec<Point> = alert_points
                        .into_iter()
                        .filter(|(index, _)| !conflicted.contains(index))
                        .map(|(_, point)| point)
                        .collect();
                    alerting.batch_accepted(device, &points).await;
                }
                Ok(receipt.expect("store_batch builds the receipt of a stored batch"))
            }
        }
    }

    async fn update_latest(
        &self,
        device: &DeviceRef,
        accepted: &[NewPoint],
        conflicted: &std::collections::HashSet<usize>,
    ) {
        let points: Vec<_> = accepted
            .iter()
            .filter(|p| !conflicted.contains(&p.index))
            .map(|p| (p.key.clone(), p.ts_ms, p.value.clone()))
            .collect();
        if let Err(error) = self.latest.update(device, &points).await {
            self.metrics.redis_failures.inc();
            self.repair.mark_dirty(device);
            tracing::warn!(%device, %error, "Redis latest update failed; will repair from PostgreSQL");
        }
    }

    /// Drops the cached query answers the accepted points change: per key, the span from its
    /// earliest to its latest point.
    fn invalidate_answers(&self, device: &DeviceRef, accepted: &[NewPoint]) {
        let mut spans: std::collections::HashMap<&str, (i64, i64)> = Default::default();
        for point in accepted {
            let span = spans
                .entry(point.key.as_str())
                .or_insert((point.ts_ms, point.ts_ms));
            *span = (span.0.min(point.ts_ms), span.1.max(point.ts_ms));
        }
        for (key, (first, last)) in spans {
            let series = Series {
                org: device.org.clone(),
                device: device.device.clone(),
                key: key.to_owned(),
            };
            self.answers.points_stored(&series, first, last);
        }
    }

    fn function_error(&self, error: CallError) -> ApiError {
        self.metrics
            .function_errors
            .get_or_create(&crate::metrics::CodeLabel {
                code: error.code().into(),
            })
            .inc();
        tracing::error!(code = error.code(), %error, "validator call failed");
        match error {
            CallError::Busy { .. } => ApiError::unavailable(error.code(), error.to_string(), 1),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                other.code(),
                format!("the batch could not be validated: {other}"),
            ),
        }
    }
}

/// The metadata of the batch's keys that have any.
fn batch_metadata(
    points: &[crate::functions::validator::Point],
    known: &std::collections::HashMap<String, KeyMetadata>,
) -> Vec<KeyMetadata> {
    let mut seen = std::collections::HashSet::new();
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

fn build_receipt(batch: &str, outcome: &BatchOutcome, rejected: &[Rejected]) -> Json {
    let mut all: Vec<Rejected> = rejected.to_vec();
    all.extend(outcome.conflicts.iter().map(|c| Rejected {
        index: c.index,
        key: c.key.clone(),
        code: weir_storage::Conflict::CODE,
        message: c.message.clone(),
    }));
    all.sort_by_key(|r| r.index);
    json!({
        "batch": batch,
        "accepted": outcome.stored + outcome.idempotent,
        "rejected": all,
        "duplicate": false,
    })
}

/// Storage errors: unavailability is the device's cue to retry later; nothing was stored.
pub fn storage_error(error: StorageError) -> ApiError {
    tracing::warn!(code = error.code(), %error, "storage error");
    if error.is_unavailable() || error.is_retryable() {
        ApiError::unavailable(
            "storage_unavailable",
            format!("storage is unavailable, nothing was stored; retry later ({error})"),
            2,
        )
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            format!("the batch could not be stored: {error}"),
        )
    }
}
