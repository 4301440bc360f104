//! Prometheus metrics of the host, served as text at `GET /metrics` on the API listener.

#![warn(missing_docs)]

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A stable error or outcome code as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The code, e.g. `type_mismatch` or `stored`.
    pub code: String,
}

/// A listener (`devices`, `api`) and why it refused or cut something, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// The listener.
    pub listener: String,
    /// Why: `max_connections`, `max_handshakes`, `body_timeout`.
    pub reason: String,
}

/// A webhook delivery attempt's outcome as a label: `delivered`, `failed` or `refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: String,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// Submitted batches by outcome (`stored`, `duplicate`, or the error code).
    pub batches: Family<CodeLabel, Counter>,
    /// Points stored or accepted as idempotent re-sends.
    pub points_accepted: Counter,
    /// Points rejected, by reason code.
    pub points_rejected: Family<CodeLabel, Counter>,
    /// Seconds from a submit request's arrival to its answer (successful ones).
    pub submit_seconds: Histogram,
    /// Seconds a validator call takes.
    pub validator_seconds: Histogram,
    /// Failed function calls by code.
    pub function_errors: Family<CodeLabel, Counter>,
    /// TLS handshakes refused on the device listener.
    pub handshakes_refused: Counter,
    /// Certificate renewals refused, by code; `certificate_superseded` is a suspected clone.
    pub renewals_refused: Family<CodeLabel, Counter>,
    /// 1 while the device endpoint's CRL is past its nextUpdate, else 0.
    pub device_crl_expired: Gauge,
    /// Number of the device CRL in service (it only grows: a lower one is refused).
    pub device_crl_number: Gauge,
    /// Connections and requests a listener's limits refused, by listener and reason.
    pub limits_hit: Family<ListenerLabel, Counter>,
    /// Open device connections cut because their certificate expired or was revoked, by reason.
    pub device_connections_cut: Family<CodeLabel, Counter>,
    /// Redis latest-value updates that failed (the series are repaired later).
    pub redis_failures: Counter,
    /// Batch follow-ups (latest values, alert evaluation) that failed an attempt and wait for a
    /// retry, by code.
    pub followups_retried: Family<CodeLabel, Counter>,
    /// Batch follow-ups given up, by code: `max_age` after `ingest.followup_max_age_s`, or the
    /// alerter's own failure code when it failed one batch `alerting.evaluation_attempts`
    /// times (their batch ids are logged).
    pub followups_failed: Family<CodeLabel, Counter>,
    /// Batch follow-ups of this region not done yet, as last counted.
    pub followups_pending: Gauge,
    /// PostgreSQL pool size, connections available, and tasks waiting for one.
    pub pool_size: Gauge,
    /// Connections idle in the pool.
    pub pool_available: Gauge,
    /// Tasks waiting for a pool connection.
    pub pool_waiting: Gauge,
    /// Cacheable query requests by outcome in the host's answer cache (`hit`, `miss`).
    pub answer_cache: Family<CodeLabel, Counter>,
    /// Function versions from the registry, by outcome (`prepared` ahead, `swapped`, `refused`).
    pub function_registry_loads: Family<CodeLabel, Counter>,
    /// Alerting steps that failed (the batch stays stored), by code.
    pub alert_failures: Family<CodeLabel, Counter>,
    /// Open `GET /v1/events/stream` connections.
    pub event_streams: Gauge,
    /// Times the live-event relay lost its Redis subscription (or could not make one).
    pub event_relay_reconnects: Counter,
    /// Times a slow event stream fell behind and was told to re-read `GET /v1/events`.
    pub event_streams_lagged: Counter,
    /// Event streams ended because their token was revoked.
    pub event_streams_revoked: Counter,
    /// Webhook delivery attempts by outcome (`delivered`, `failed`, `refused`: a destination
    /// the policy refuses).
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
    /// Webhook deliveries not made yet (every host's outbox), as this host last counted.
    pub webhook_pending: Gauge,
    /// Webhook deliveries this host gave up (dead-lettered): too old, too many attempts, or a
    /// refused destination.
    pub webhook_dead_total: Counter,
    /// Webhook deliveries given up and not re-driven (every host's outbox), as this host last
    /// counted.
    pub webhook_dead: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `weir_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weir");
        let metrics_registry = &mut registry;
        let batches = Family::<CodeLabel, Counter>::default();
        metrics_registry.register("batches", "Submitted batches by outcome", batches.clone());
        let points_accepted = Counter::default();
        metrics_registry.register(
            "points_accepted",
            "Points stored (or accepted as identical re-sends)",
            points_accepted.clone(),
        );
        let points_rejected = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "points_rejected",
            "Points rejected, by reason code",
            points_rejected.clone(),
        );
        let answer_cache = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "query_answer_cache",
            "Cacheable query requests by outcome in the host's answer cache",
            answer_cache.clone(),
        );
        let function_registry_loads = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "function_registry_loads",
            "Function versions from the registry, by outcome (prepared ahead, swapped, refused)",
            function_registry_loads.clone(),
        );
        let alert_failures = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "alert_failures",
            "Alerting steps that failed (the batch stays stored), by code",
            alert_failures.clone(),
        );
        let event_streams = Gauge::default();
        metrics_registry.register(
            "event_streams",
            "Open live alert event streams (GET /v1/events/stream)",
            event_streams.clone(),
        );
        let event_relay_reconnects = Counter::default();
        metrics_registry.register(
            "event_relay_reconnects",
            "Times the live-event relay lost or could not make its Redis subscription",
            event_relay_reconnects.clone(),
        );
        let event_streams_lagged = Counter::default();
        metrics_registry.register(
            "event_streams_lagged",
            "Times a slow event stream fell behind and was told to re-read the events",
            event_streams_lagged.clone(),
        );
        let event_streams_revoked = Counter::default();
        metrics_registry.register(
            "event_streams_revoked",
            "Event streams ended because their token was revoked",
            event_streams_revoked.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabel, Counter>::default();
        metrics_registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed, refused)",
            webhook_deliveries.clone(),
        );
        let webhook_pending = Gauge::default();
        metrics_registry.register(
            "webhook_pending_deliveries",
            "Webhook deliveries not made yet, in the outbox",
            webhook_pending.clone(),
        );
        let webhook_dead_total = Counter::default();
        metrics_registry.register(
            "webhook_deliveries_dead",
            "Webhook deliveries given up (too old, too many attempts, refused destination)",
            webhook_dead_total.clone(),
        );
        let webhook_dead = Gauge::default();
        metrics_registry.register(
            "webhook_dead_deliveries",
            "Webhook deliveries given up and not re-driven, in the outbox",
            webhook_dead.clone(),
        );
        let submit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        metrics_registry.register(
            "submit_seconds",
            "Latency of successful submit requests",
            submit_seconds.clone(),
        );
        let validator_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        metrics_registry.register(
            "validator_seconds",
            "Latency of validator calls",
            validator_seconds.clone(),
        );
        let function_errors = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "function_errors",
            "Failed function calls by code",
            function_errors.clone(),
        );
        let handshakes_refused = Counter::default();
        metrics_registry.register(
            "tls_handshakes_refused",
            "TLS handshakes refused on the device listener",
            handshakes_refused.clone(),
        );
        let renewals_refused = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "renewals_refused",
            "Certificate renewals refused, by code (certificate_superseded: a suspected clone)",
            renewals_refused.clone(),
        );
        let device_crl_expired = Gauge::default();
        metrics_registry.register(
            "device_crl_expired",
            "1 while the device endpoint's CRL is past its nextUpdate",
            device_crl_expired.clone(),
        );
        let device_crl_number = Gauge::default();
        metrics_registry.register(
            "device_crl_number",
            "Number of the device CRL in service",
            device_crl_number.clone(),
        );
        let limits_hit = Family::<ListenerLabel, Counter>::default();
        metrics_registry.register(
            "listener_limits_hit",
            "Connections and requests refused by a listener's limits (server.* settings), by listener and reason",
            limits_hit.clone(),
        );
        let device_connections_cut = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "device_connections_cut",
            "Open device connections cut because their certificate expired or was revoked",
            device_connections_cut.clone(),
        );
        let redis_failures = Counter::default();
        metrics_registry.register(
            "redis_failures",
            "Failed Redis latest-value updates",
            redis_failures.clone(),
        );
        let followups_retried = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "followups_retried",
            "Batch follow-up attempts that failed and will be retried, by code",
            followups_retried.clone(),
        );
        let followups_failed = Family::<CodeLabel, Counter>::default();
        metrics_registry.register(
            "followups_failed",
            "Batch follow-ups (or their alert evaluation) given up, by code",
            followups_failed.clone(),
        );
        let followups_pending = Gauge::default();
        metrics_registry.register(
            "followups_pending",
            "Batch follow-ups of this region not done yet",
            followups_pending.clone(),
        );
        let pool_size = Gauge::default();
        metrics_registry.register("db_pool_size", "PostgreSQL pool size", pool_size.clone());
        let pool_available = Gauge::default();
        metrics_registry.register(
            "db_pool_available",
            "Idle PostgreSQL connections",
            pool_available.clone(),
        );
        let pool_waiting = Gauge::default();
        metrics_registry.register(
            "db_pool_waiting",
            "Tasks waiting for a PostgreSQL connection",
            pool_waiting.clone(),
        );
        Metrics {
            registry,
            batches,
            points_accepted,
            points_rejected,
            submit_seconds,
            validator_seconds,
            function_errors,
            handshakes_refused,
            renewals_refused,
            device_crl_expired,
            device_crl_number,
            limits_hit,
            device_connections_cut,
            redis_failures,
            followups_retried,
            followups_failed,
            followups_pending,
            pool_size,
            pool_available,
            pool_waiting,
            answer_cache,
            function_registry_loads,
            alert_failures,
            event_streams,
            event_relay_reconnects,
            event_streams_lagged,
            event_streams_revoked,
            webhook_deliveries,
            webhook_pending,
            webhook_dead_total,
            webhook_dead,
        }
    }

    /// Counts a webhook delivery attempt by outcome.
    pub fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts a failed alerting step by its code.
    pub fn alert_failure(&self, code: &str) {
        self.alert_failures
            .get_or_create(&CodeLabel { code: code.into() })
            .inc();
    }

    /// Counts a registry version by outcome: `prepared` ahead of its assignment, `swapped` in,
    /// or `refused` (it did not load here).
    pub fn function_registry_load(&self, outcome: &str) {
        self.function_registry_loads
            .get_or_create(&CodeLabel {
                code: outcome.into(),
            })
            .inc();
    }

    /// Counts a cacheable query request by its answer cache outcome.
    pub fn answer_cache(&self, outcome: &str) {
        self.answer_cache
            .get_or_create(&CodeLabel {
                code: outcome.into(),
            })
            .inc();
    }

    /// Counts a refused certificate renewal by its code.
    pub fn renewal_refused(&self, code: &str) {
        self.renewals_refused
            .get_or_create(&CodeLabel { code: code.into() })
            .inc();
    }

    /// Counts a connection or request that `listener`'s limits refused, by `reason`.
    pub fn limit_hit(&self, listener: &str, reason: &str) {
        self.limits_hit
            .get_or_create(&ListenerLabel {
                listener: listener.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts an open device connection cut, by reason (`expired`, `revoked`, `max_age`).
    pub fn device_connection_cut(&self, reason: &str) {
        self.device_connections_cut
            .get_or_create(&CodeLabel {
                code: reason.into(),
            })
            .inc();
    }

    /// Counts a batch outcome.
    pub fn batch(&self, code: &str) {
        self.batches
            .get_or_create(&CodeLabel { code: code.into() })
            .inc();
    }

    /// Counts a rejected point.
    pub fn rejected(&self, code: &str) {
        self.points_rejected
            .get_or_create(&CodeLabel { code: code.into() })
            .inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
