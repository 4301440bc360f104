//! Alerting: every accepted batch is evaluated by the alerter component against its
//! organisation's rules; the alerter's states and events live in PostgreSQL (tier one, shared
//! by the regions).
//!
//! - `rules.rs` — the rule book: one rule set per organisation (the rules directory's files,
//!   overlaid by the region's rule sets from the registry), checked by the running alerter;
//! - `state.rs` — the per-(rule, device) states and the per-device evaluation lock;
//! - `pending.rs` — the points a stored batch owes the alerter, as its follow-up row keeps them;
//! - `stale.rs` — the timer raising no-data alerts (`evaluate-stale`);
//! - `publish.rs` — every recorded event, live on Redis pub/sub (`weir:events:<org>`);
//! - the outbox rows recorded with every event are delivered by `weir-webhooks`;
//! - this module — [`Alerting`]: loading at start, evaluating stored batches, manual clears.
//!
//! Alerting never fails a submit, and never loses one: a batch whose keys rules watch is stored
//! with its points in a follow-up row (same transaction), and [`Alerting::evaluate_pending`]
//! evaluates a device's pending batches, oldest first, under the device's evaluation lock. The
//! events (with their webhook deliveries), the new states and the rows marked evaluated are one
//! transaction, so each batch is evaluated exactly once; a failure (alerter trap, lock held too
//! long, PostgreSQL) leaves the rows for a retry (see `crate::ingest::follow_up`), counted in
//! `weir_alert_failures_total{code}`.

pub mod pending;
pub mod publish;
pub mod rules;
pub mod stale;
pub mod state;

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value as Json;
use weir_storage::{
    AlertAction, AlertChange, AlertChangeKind, AlertEvent, AlertState, DeviceRef,
    PendingEvaluation, Storage, StorageError,
};

use publish::EventPublisher;
use rules::{RuleSet, RuleSets};
use state::{AlertStates, DeviceLock};
use weir_config::Config;
use weir_metrics::Metrics;
use weir_runtime::alerter::{Evaluation, Event, EventKind, Rule, RuleState, Trigger, Value};
use weir_runtime::{AlerterFunction, CallError, FunctionSlot};

/// How much longer than the alerter's deadline a device's evaluation lock is held at most:
/// room for the Redis and PostgreSQL work around the call.
const LOCK_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Most stored batches one evaluation takes: a backlog is worked off in several calls, each
/// well within the alerter's deadline.
pub const PENDING_PER_EVALUATION: i64 = 64;

/// Why an alerting step failed, each with a stable code (the metric's label).
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The alerter call failed (deadline, memory, trap, busy).
    #[error("the alerter failed: {0}")]
    Function(#[from] CallError),
    /// The alerter refused the request (a state it cannot read).
    #[error("the alerter refused: {0}")]
    Refused(String),
    /// Redis, where the states are, failed.
    #[error("alert states unavailable: {0:#}")]
    State(anyhow::Error),
    /// PostgreSQL, where the events are, failed.
    #[error("alert events could not be written: {0}")]
    Storage(#[from] StorageError),
}

impl AlertError {
    /// Whether the alerter itself failed on its input (a trap, its deadline or memory cap, an
    /// answer it should not give, a refusal): trying the same points again likely fails
    /// again. A busy alerter, Redis or PostgreSQL fail for reasons of their own.
    pub fn is_alerter_fault(&self) -> bool {
        match self {
            AlertError::Function(error) => !matches!(error, CallError::Busy { .. }),
            AlertError::Refused(_) => true,
            AlertError::State(_) | AlertError::Storage(_) => false,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AlertError::Function(error) => error.code(),
            AlertError::Refused(_) => "alerter_refused",
            AlertError::State(_) => "alert_state_unavailable",
            AlertError::Storage(error) => error.code(),
        }
    }
}

/// The alerter, the rules and where their state and events go; shared by the ingest path and
/// the events API.
pub struct Alerting {
    /// The alerter component.
    pub function: Arc<FunctionSlot<AlerterFunction>>,
    rules: RuleSets,
    states: AlertStates,
    publisher: EventPublisher,
    storage: Storage,
    metrics: Arc<Metrics>,
    stale_interval: std::time::Duration,
    /// `ingest.followup_evaluation_attempts`.
    evaluation_attempts: u32,
}

impl Alerting {
    /// Starts alerting with `alerter` (the region's from the registry, else the configured file;
    /// see `crate::registry::initial_alerter`) and the rule sets: the rules directory's files,
    /// if one is configured, overlaid by `registry_rules` (the region's, already checked by
    /// `alerter`). `None` (logged) without an alerter. Alerting is on whenever there is an
    /// alerter, rules or not: an empty rule book costs a batch nothing, and the registry may
    /// assign rule sets later. A rule file the component refuses fails the start, naming the
    /// file and the rule.
    pub async fn start(
        config: &Config,
        alerter: Option<AlerterFunction>,
        registry_rules: Vec<RuleSet>,
        storage: &Storage,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Arc<Alerting>>> {
        let Some(function) = alerter else {
            tracing::warn!(component = %config.alert_component().display(), "alerting is off: no alerter component (build it with `cargo xtask components`, or deploy one with `weir functions deploy alerter`)");
            return Ok(None);
        };
        let function = Arc::new(FunctionSlot::new(function));
        let rules = RuleSets::start(
            function.clone(),
            config.alerting.rules_dir.clone(),
            registry_rules,
        )
        .await?;
        let states = AlertStates::connect(storage.clone(), &config.redis_url, &config.region)
            .await
            .with_context(|| {
                format!(
                    "connecting to Redis at {} for alerting",
                    weir_config::redact_url(&config.redis_url)
                )
            })?;
        let (orgs, rule_count) = rules.load().size();
        let alerter = function.current();
        tracing::info!(function = alerter.name(), digest = %&alerter.digest()[..12], rules_dir = ?config.alerting.rules_dir, orgs, rules = rule_count, "alerting enabled");
        Ok(Some(Arc::new(Alerting {
            function,
            rules,
            publisher: EventPublisher::new(states.connection()),
            states,
            storage: storage.clone(),
            metrics: metrics.clone(),
            stale_interval: std::time::Duration::from_secs(config.alerting.stale_check_s),
            evaluation_attempts: config.ingest.followup_evaluation_attempts,
        })))
    }

    /// Reads the rules directory again; the old rules stay if any file is refused. The
    /// registry's rule sets keep winning over the files of their organisations.
    pub async fn reload_rules(&self) -> anyhow::Result<()> {
        let (orgs, rules) = self.rules.reload_files().await?;
        tracing::info!(orgs, rules, "alert rules reloaded");
        Ok(())
    }

    /// The rule sets in force and the alerter that checked them (for the registry's follower,
    /// and tests).
    pub fn rules(&self) -> &RuleSets {
        &self.rules
    }

    /// Whether any rule of `device`'s organisation watches one of `keys` (then a batch with
    /// them owes the alerter an evaluation).
    pub fn watches<'k>(
        &self,
        device: &DeviceRef,
        keys: impl Iterator<Item = &'k str> + Clone,
    ) -> bool {
        !self
            .rules
            .load()
            .for_batch(&device.org, &device.device, keys)
            .is_empty()
    }

    /// Evaluates `device`'s stored batches that wait for the alerter (at most
    /// [`PENDING_PER_EVALUATION`] of them, oldest first, in one call), and stores the events,
    /// the new states and the batches' evaluated mark in one transaction. Returns how many
    /// batches were settled (evaluated, or given up). On an error nothing is stored and the
    /// batches stay pending.
    ///
    /// When the alerter itself fails (trap, deadline, memory, invalid answer), the oldest batch
    /// is tried alone to find the culprit; a batch the alerter failed on
    /// `ingest.followup_evaluation_attempts` times is given up (counted in
    /// `weir_followups_failed_total{code}` and logged with its id), so that one poison batch
    /// does not hold up its device's alerting for good.
    pub async fn evaluate_pending(&self, device: &DeviceRef) -> Result<usize, AlertError> {
        let function = self.function.current();
        let result = match self.lock(device, &function).await {
            Ok(lock) => {
                let result = self.evaluate_locked(device, &function).await;
                unlock(device, lock).await;
                result
            }
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            self.failed(error);
        }
        result
    }

    /// [`Alerting::evaluate_pending`] under the lock; every alerter failure but the one
    /// returned is counted here.
    async fn evaluate_locked(
        &self,
        device: &DeviceRef,
        function: &AlerterFunction,
    ) -> Result<usize, AlertError> {
        let pending = self
            .storage
            .pending_evaluations(device, PENDING_PER_EVALUATION)
            .await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let error = match self.evaluate_and_settle(device, function, &pending).await {
            Ok(()) => return Ok(pending.len()),
            Err(error) if error.is_alerter_fault() => error,
            Err(error) => return Err(error),
        };
        let oldest = &pending[0];
        let error = if pending.len() > 1 {
            self.failed(&error);
            match self
                .evaluate_and_settle(device, function, &pending[..1])
                .await
            {
                Ok(()) => return Ok(1),
                Err(error) if error.is_alerter_fault() => error,
                Err(error) => return Err(error),
            }
        } else {
            error
        };
        let given_up = self
            .storage
            .evaluation_failed(oldest.id, error.code(), self.evaluation_attempts)
            .await?;
        if !given_up {
            return Err(error);
        }
        self.failed(&error);
        self.metrics
            .followups_failed
            .get_or_create(&weir_metrics::CodeLabel {
                code: error.code().into(),
            })
            .inc();
        tracing::error!(%device, batch = %oldest.batch_id, code = error.code(), %error, attempts = self.evaluation_attempts, "alert evaluation of a batch given up: the alerter failed on it every time");
        Ok(1)
    }

    /// Evaluates `batches` in one alerter call and settles them.
    async fn evaluate_and_settle(
        &self,
        device: &DeviceRef,
        function: &AlerterFunction,
        batches: &[PendingEvaluation],
    ) -> Result<(), AlertError> {
        let mut points = Vec::new();
        for batch in batches {
            let mut decoded = pending::decode(&batch.points_json).map_err(|message| {
                AlertError::Refused(format!("batch {}: {message}", batch.batch_id))
            })?;
            points.append(&mut decoded);
        }
        let ids: Vec<i64> = batches.iter().map(|batch| batch.id).collect();
        let rules = self.rules.load().for_batch(
            &device.org,
            &device.device,
            points.iter().map(|p| p.key.as_str()),
        );
        let evaluation = if rules.is_empty() {
            // The rules changed since the batches were stored: nothing watches them now.
            Evaluation {
                states: Vec::new(),
                events: Vec::new(),
                errors: Vec::new(),
            }
        } else {
            let states = self.states_of(device, &rules).await?;
            function
                .evaluate(&device.device, &points, &rules, &states)
                .await?
        };
        self.apply(device, evaluation, &ids).await
    }

    /// Takes `device`'s evaluation lock, so that evaluations of one device (a batch, the
    /// staleness check, a manual clear) read and write its states in turn. The lock outlives
    /// `function`'s deadline by [`LOCK_MARGIN`], and is waited for as long.
    async fn lock(
        &self,
        device: &DeviceRef,
        function: &AlerterFunction,
    ) -> Result<DeviceLock, AlertError> {
        let hold = function.deadline() + LOCK_MARGIN;
        self.states
            .lock_device(device, hold)
            .await
            .map_err(AlertError::State)
    }

    /// Runs the staleness check of `device` at `now` (unix milliseconds) with its rules that
    /// have a `stale_after`.
    async fn evaluate_stale(&self, device: &DeviceRef, now: i64) -> Result<(), AlertError> {
        let rules = self.rules.load().stale_rules(&device.org, &device.device);
        if rules.is_empty() {
            return Ok(());
        }
        let function = self.function.current();
        let lock = self.lock(device, &function).await?;
        let result = async {
            let states = self.states_of(device, &rules).await?;
            if states.is_empty() {
                return Ok(());
            }
            let evaluation = function
                .evaluate_stale(&device.device, now, &rules, &states)
                .await?;
            self.apply(device, evaluation, &[]).await
        }
        .await;
        unlock(device, lock).await;
        result
    }

    /// The stored states of `device` for `rules`.
    async fn states_of(
        &self,
        device: &DeviceRef,
        rules: &[Rule],
    ) -> Result<Vec<RuleState>, AlertError> {
        let states = self.states.get(device).await.map_err(AlertError::State)?;
        Ok(states
            .into_iter()
            .filter(|s| rules.iter().any(|r| r.id == s.rule_id))
            .collect())
    }

    /// Stores an evaluation: its events (with their webhook deliveries), its new states and
    /// the follow-ups it evaluated, in one transaction; then publishes the events.
    async fn apply(
        &self,
        device: &DeviceRef,
        evaluation: Evaluation,
        evaluated: &[i64],
    ) -> Result<(), AlertError> {
        for error in &evaluation.errors {
            self.metrics.alert_failure("rule_error");
            tracing::warn!(%device, rule = %error.rule_id, message = %error.message, "alert rule could not be evaluated");
        }
        let changes: Vec<AlertChange> = evaluation
            .events
            .iter()
            .map(|event| change(&device.org, event))
            .collect();
        let states: Vec<AlertState> = evaluation
            .states
            .iter()
            .map(|s| AlertState {
                rule_id: s.rule_id.clone(),
                state: s.state.clone(),
            })
            .collect();
        let event_ids = self
            .storage
            .settle_evaluation(device, &changes, &states, evaluated)
            .await?;
        // Recorded first: the live channel never shows an event the record lacks.
        if let Err(error) = self
            .publisher
            .publish(&device.org, &changes, &event_ids)
            .await
        {
            self.metrics.alert_failure("publish_failed");
            tracing::warn!(%device, %error, "alert events recorded but not published");
        }
        Ok(())
    }

    /// Publishes what a person just did to `event` through the API (recorded already, with its
    /// webhook deliveries); a failure is logged and counted (`publish_failed`), not returned:
    /// pub/sub is at most once.
    pub async fn publish_action(&self, event: &AlertEvent, action: AlertAction) {
        if let Err(error) = self.publisher.publish_action(event, action).await {
            self.metrics.alert_failure("publish_failed");
            tracing::warn!(id = event.id, action = action.as_str(), %error, "alert event updated but not published");
        }
    }

    /// Ends `event`'s alert in the alerter's state, so that a condition that still holds raises
    /// it again at the next point. Nothing to do when no state is stored for its rule.
    pub async fn manual_clear(&self, event: &AlertEvent) -> Result<(), AlertError> {
        let result = self.clear_state(event).await;
        if let Err(error) = &result {
            self.failed(error);
        }
        result
    }

    async fn clear_state(&self, event: &AlertEvent) -> Result<(), AlertError> {
        let trigger = Trigger::from_name(&event.trigger)
            .ok_or_else(|| AlertError::Refused(format!("unknown trigger {:?}", event.trigger)))?;
        let device = DeviceRef {
            org: event.org.clone(),
            device: event.device.clone(),
        };
        let function = self.function.current();
        let lock = self.lock(&device, &function).await?;
        let result = async {
            let states = self.states.get(&device).await.map_err(AlertError::State)?;
            let Some(stored) = states.into_iter().find(|s| s.rule_id == event.rule_id) else {
                return Ok(());
            };
            let cleared = function
                .manual_clear(&stored.state, &event.key, trigger)
                .await?
                .map_err(AlertError::Refused)?;
            let cleared = RuleState {
                rule_id: stored.rule_id,
                state: cleared,
            };
            self.states
                .put(&device, &[cleared])
                .await
                .map_err(AlertError::State)
        }
        .await;
        unlock(&device, lock).await;
        result
    }

    fn failed(&self, error: &AlertError) {
        self.metrics.alert_failure(error.code());
    }
}

/// Releases `device`'s evaluation lock; one that cannot be released expires by itself, and the
/// device's next evaluation waits for that at worst.
async fn unlock(device: &DeviceRef, lock: DeviceLock) {
    if let Err(error) = lock.release().await {
        tracing::warn!(%device, error = format!("{error:#}"), "alert lock not released");
    }
}

/// An alerter event as a row change of `org`.
fn change(org: &str, event: &Event) -> AlertChange {
    AlertChange {
        org: org.to_owned(),
        device: event.device.clone(),
        key: event.key.clone(),
        rule_id: event.rule_id.clone(),
        rule_version: event.rule_version.try_into().unwrap_or(i32::MAX),
        trigger: event.trigger.as_str().to_owned(),
        kind: match event.kind {
            EventKind::Raise => AlertChangeKind::Raise,
            EventKind::Escalate => AlertChangeKind::Escalate,
            EventKind::Clear => AlertChangeKind::Clear,
        },
        severity: event.severity.as_str().to_owned(),
        ts_ms: event.ts,
        value_json: event.value.as_ref().map(|v| value_json(v).to_string()),
        message: event.message.clone(),
    }
}

/// A point value as JSON.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Int(v) => Json::from(*v),
        Value::Uint(v) => Json::from(*v),
        Value::Float(v) => Json::from(*v),
        Value::Boolean(v) => Json::from(*v),
        Value::Text(v) => Json::from(v.as_str()),
    }
}
