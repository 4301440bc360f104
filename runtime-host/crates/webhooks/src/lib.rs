//! Alert webhooks: the worker that POSTs recorded events from the outbox (`webhook_deliveries`,
//! see `weir_storage`'s `webhooks`) to their webhooks, at least once.
//!
//! Every host with alerting runs one. It wakes when a delivery is queued (LISTEN
//! `weir_webhooks`, notified at the commit that recorded the event), when one of its requests
//! ends (a slot is free), and every second besides (for retries falling due, and notifications
//! missed while its connection was down). Then it claims what it can send at once: per webhook,
//! at most `alerting.webhook_concurrency_per_webhook` requests in flight, every host's together
//! (the outbox's live leases count them), and at most [`MAX_IN_FLIGHT`] from this host. Each
//! claimed delivery is POSTed right away on its own task; the worker does not wait for a round to
//! end before claiming more, so a webhook that never answers only ever holds its own slots, and
//! every other webhook's deliveries go on meanwhile.
//!
//! The lease always outlives the request: a delivery is claimed only to be sent at once, for
//! `alerting.webhook_timeout_ms` plus [`LEASE_MARGIN`], and its POST is cut off [`LEASE_MARGIN`]
//! before the lease ends even if it started late. So no delivery is sent by two workers at the
//! same time; a worker that dies leaves its deliveries due again once their leases end. The
//! claim's attempt count fences the outcome: a late report of a lease taken over is dropped.
//!
//! A 2xx answer marks a delivery delivered; any other answer, a timeout or a connection error
//! marks it failed, due again after an exponential backoff with jitter
//! (`alerting.webhook_retry_min_ms` doubling up to `alerting.webhook_retry_max_s`), until it is
//! given up (dead-lettered): after `alerting.webhook_max_attempts` attempts (when set), or once
//! older than `alerting.webhook_max_age_s`. A destination the policy refuses (see
//! [`destination`]) is given up at once with `destination_refused`: retrying cannot change the
//! policy; `weir webhooks redrive` queues it again once the webhook or the policy is fixed.
//! Delivered rows are purged after `alerting.webhook_delivered_retention_s`.
//!
//! Each request carries `Weir-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! keyed with the webhook's secret, `Weir-Event-Id` and `Weir-Delivery-Id` (receivers
//! deduplicate on it: a delivery whose success was not recorded is sent again).

#![warn(missing_docs)]

pub mod destination;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weir_storage::{DueDelivery, Storage, WebhookListener, listen_webhook_deliveries};

use weir_config::Config;
use weir_metrics::Metrics;

use crate::destination::{CheckedResolver, DestinationRefused};

/// How often due deliveries are looked for without a notification, and the outbox counted.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a lost LISTEN connection is opened again (polling goes on meanwhile).
const LISTEN_RETRY: Duration = Duration::from_secs(10);
/// How often expired deliveries are given up.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(5);
/// Longest interval between two purges of delivered rows (shorter when the retention is).
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Requests in flight from one host, every webhook's together.
pub const MAX_IN_FLIGHT: usize = 256;
/// How much longer than the request's timeout a lease lasts: room for a request that starts
/// late and for recording its outcome. A request is cut off this long before its lease ends.
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// The signature header.
pub const SIGNATURE_HEADER: &str = "weir-signature";
/// The header naming the alert event (`alert_events.id`).
pub const EVENT_ID_HEADER: &str = "weir-event-id";
/// The header naming the delivery: the same on every retry of it.
pub const DELIVERY_ID_HEADER: &str = "weir-delivery-id";

type HttpClient = Client<HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>;

/// `secret`'s HMAC-SHA256 of `"<t>.<body>"`, in lowercase hex.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Weir-Signature` value: `t=<t>,v1=<signature>`. The timestamp is signed too, so a
/// receiver can refuse old replays.
pub fn signature_header(secret: &str, t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", signature(secret, t, body))
}

/// Checks that `url` can be a webhook's: `http` or `https`, with a host.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let uri: Uri = url
        .parse()
        .map_err(|error| anyhow!("{url:?} is not a URL: {error}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("{url:?}: a webhook URL starts with http:// or https://"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("{url:?}: a webhook URL names a host");
    }
    Ok(())
}

/// Checks that `url` can be a webhook's, as `weir webhooks add` does: [`check_url`], and, unless
/// `allow_private`, a host that is not an IP address the destination policy refuses (a name
/// is checked at each delivery, where it is resolved).
pub fn check_destination(url: &str, allow_private: bool) -> anyhow::Result<()> {
    check_url(url)?;
    if !allow_private {
        let uri: Uri = url.parse().map_err(|error| anyhow!("{url:?}: {error}"))?;
        destination::check_literal_host(&uri).map_err(|refused| {
            anyhow!("{refused} (set alerting.webhook_allow_private to allow it)")
        })?;
    }
    Ok(())
}

/// The wait before a failed delivery's next attempt: `min` doubling per attempt up to `max`,
/// with "equal jitter" (half of it random) so that deliveries failing together spread out,
/// never below `min` nor above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub min: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `attempts`-th failed attempt, `random` being any random number.
    pub fn delay(&self, attempts: i32, random: u64) -> Duration {
        let doublings = attempts.saturating_sub(1).clamp(0, 31) as u32;
        let base = self.min.saturating_mul(1 << doublings).min(self.max);
        let half = base / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = Duration::from_millis(random % spread.saturating_add(1));
        (half + jitter).clamp(self.min, self.max)
    }
}

/// How a delivery attempt ended.
enum Outcome {
    /// Accepted (2xx).
    Delivered,
    /// Not accepted, retried later (or given up when too many attempts were made).
    Failed(String),
    /// The destination policy refuses the address: given up.
    Refused(DestinationRefused),
}

/// The delivery worker of one host.
pub struct WebhookWorker {
    storage: Storage,
    database_url: String,
    client: HttpClient,
    timeout: Duration,
    backoff: Backoff,
    per_webhook: i64,
    max_age: Duration,
    max_attempts: u32,
    retention: Duration,
    allow_private: bool,
    metrics: Arc<Metrics>,
}

impl WebhookWorker {
    /// A worker delivering from `storage`'s outbox with the `[alerting]` webhook settings.
    pub fn new(config: &Config, storage: Storage, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let alerting = &config.alerting;
        let tls = weir_pki::public_client_config().context("the webhooks' TLS config")?;
        let mut http = HttpConnector::new_with_resolver(CheckedResolver {
            allow_private: alerting.webhook_allow_private,
        });
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(WebhookWorker {
            storage,
            database_url: config.database_url.clone(),
            client,
            timeout: Duration::from_millis(alerting.webhook_timeout_ms),
            backoff: Backoff {
                min: Duration::from_millis(alerting.webhook_retry_min_ms),
                max: Duration::from_secs(alerting.webhook_retry_max_s),
            },
            per_webhook: i64::from(alerting.webhook_concurrency_per_webhook.max(1)),
            max_age: Duration::from_secs(alerting.webhook_max_age_s),
            max_attempts: alerting.webhook_max_attempts,
            retention: Duration::from_secs(alerting.webhook_delivered_retention_s),
            allow_private: alerting.webhook_allow_private,
            metrics,
        })
    }

    /// Delivers until shutdown. A delivery cut short by the shutdown is due again when its
    /// lease ends.
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        let mut listener: Option<WebhookListener> = None;
        let mut listen_tried: Option<Instant> = None;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut expired_at: Option<Instant> = None;
        let mut purged_at: Option<Instant> = None;
        let purge_interval = worker.retention.min(PURGE_INTERVAL);
        let mut count = true;
        loop {
            if listener.is_none() && listen_tried.is_none_or(|at| at.elapsed() >= LISTEN_RETRY) {
                listen_tried = Some(Instant::now());
                tokio::select! {
                    listening = listen_webhook_deliveries(&worker.database_url) => match listening {
                        Ok(listening) => listener = Some(listening),
                        Err(error) => tracing::warn!(%error, "cannot listen for webhook deliveries; polling every second"),
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
            // Every wake-up claims: a notification, a tick, or a request that ended.
            if in_flight.len() < MAX_IN_FLIGHT {
                let room = MAX_IN_FLIGHT - in_flight.len();
                let claimed = tokio::select! {
                    claimed = worker.claim(room) => claimed,
                    _ = shutdown.cancelled() => return,
                };
                for (delivery, deadline) in claimed {
                    let worker = worker.clone();
                    in_flight.spawn(async move { worker.deliver(delivery, deadline).await });
                }
            }
            if expired_at.is_none_or(|at| at.elapsed() >= EXPIRY_INTERVAL) {
                expired_at = Some(Instant::now());
                tokio::select! {
                    _ = worker.dead_letter_expired() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            if purged_at.is_none_or(|at| at.elapsed() >= purge_interval) {
                purged_at = Some(Instant::now());
                tokio::select! {
                    _ = worker.purge_delivered() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            if count {
                count = false;
                tokio::select! {
                    _ = worker.count_outbox() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            tokio::select! {
                _ = tick.tick() => count = true,
                notified = notification(&mut listener) => {
                    if notified.is_none() {
                        listener = None;
                    }
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {
                    // Slots freed: collect every request that ended, then claim once.
                    while in_flight.try_join_next().is_some() {}
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Claims what can be sent now, at most `room` deliveries, each with the instant its POST
    /// must be over by (well within its lease).
    async fn claim(&self, room: usize) -> Vec<(DueDelivery, Instant)> {
        let lease = self.timeout + LEASE_MARGIN;
        // Taken before the claim: the lease, counted from the database's clock during the
        // claim, ends later than `claimed_at + lease`.
        let claimed_at = Instant::now();
        match self
            .storage
            .claim_webhook_deliveries(
                i64::try_from(room).unwrap_or(i64::MAX),
                self.per_webhook,
                lease,
                self.max_age,
            )
            .await
        {
            Ok(due) => {
                let deadline = claimed_at + self.timeout;
                due.into_iter()
                    .map(|delivery| (delivery, deadline))
                    .collect()
            }
            Err(error) => {
                tracing::warn!(%error, "cannot claim webhook deliveries; will retry");
                Vec::new()
            }
        }
    }

    /// Attempts one delivery, to be over by `deadline`, and records the outcome.
    async fn deliver(&self, delivery: DueDelivery, deadline: Instant) {
        let outcome = match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => self.post(&delivery, left).await,
            // Claimed but started too late to finish within the lease: leave it to lapse.
            _ => {
                tracing::warn!(
                    delivery = delivery.id,
                    "webhook delivery started too late for its lease; due again when it ends"
                );
                return;
            }
        };
        let recorded = match outcome {
            Outcome::Delivered => {
                self.metrics.webhook_delivery("delivered");
                self.storage
                    .mark_webhook_delivered(delivery.id, delivery.attempts)
                    .await
            }
            Outcome::Refused(refused) => {
                self.metrics.webhook_delivery("refused");
                tracing::warn!(delivery = delivery.id, webhook = delivery.webhook_id, %refused, "webhook destination refused; delivery given up");
                self.give_up(&delivery, &refused.to_string()).await
            }
            Outcome::Failed(reason) => {
                self.metrics.webhook_delivery("failed");
                let attempts = u32::try_from(delivery.attempts).unwrap_or(0);
                if self.max_attempts > 0 && attempts >= self.max_attempts {
                    tracing::warn!(delivery = delivery.id, webhook = delivery.webhook_id, attempts, %reason, "webhook delivery failed its last attempt; given up");
                    self.give_up(&delivery, &format!("max_attempts: {reason}"))
                        .await
                } else {
                    let retry_in = self.backoff.delay(delivery.attempts, random(delivery.id));
                    tracing::info!(delivery = delivery.id, webhook = delivery.webhook_id, attempts, %reason, retry_in_ms = retry_in.as_millis() as u64, "webhook delivery failed; will retry");
                    self.storage
                        .mark_webhook_failed(
                            delivery.id,
                            delivery.attempts,
                            retry_in,
                            &reason,
                            false,
                        )
                        .await
                }
            }
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                delivery = delivery.id,
                "webhook delivery's lease was taken over; its outcome is not recorded"
            ),
            Err(error) => {
                tracing::warn!(delivery = delivery.id, %error, "webhook outcome not recorded; the delivery is due again when its lease ends");
            }
        }
    }

    /// Marks `delivery` dead with `reason`, counting it.
    async fn give_up(&self, delivery: &DueDelivery, reason: &str) -> weir_storage::Result<bool> {
        let given_up = self
            .storage
            .mark_webhook_failed(delivery.id, delivery.attempts, Duration::ZERO, reason, true)
            .await;
        if matches!(given_up, Ok(true)) {
            self.metrics.webhook_dead_total.inc();
        }
        given_up
    }

    /// POSTs `delivery`, giving it at most `left` (and never more than the timeout).
    async fn post(&self, delivery: &DueDelivery, left: Duration) -> Outcome {
        let uri: Uri = match delivery.url.parse() {
            Ok(uri) => uri,
            Err(error) => return Outcome::Failed(format!("invalid URL: {error}")),
        };
        if !self.allow_private {
            // Names are checked by the resolver; an IP address in the URL never reaches it.
            if let Err(refused) = destination::check_literal_host(&uri) {
                return Outcome::Refused(refused);
            }
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let body = Bytes::from(delivery.payload.clone());
        let request = match Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("weir/", env!("CARGO_PKG_VERSION")))
            .header(
                SIGNATURE_HEADER,
                signature_header(&delivery.secret, t, &body),
            )
            .header(EVENT_ID_HEADER, delivery.event_id)
            .header(DELIVERY_ID_HEADER, delivery.id)
            .body(Full::new(body))
        {
            Ok(request) => request,
            Err(error) => return Outcome::Failed(format!("invalid request: {error}")),
        };
        let timeout = self.timeout.min(left);
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Outcome::Failed(format!("no answer within {} ms", timeout.as_millis())),
            Ok(Err(error)) => match destination::refusal(&error) {
                Some(refused) => Outcome::Refused(refused.clone()),
                None => Outcome::Failed(chain(&error)),
            },
            Ok(Ok(response)) if response.status().is_success() => Outcome::Delivered,
            Ok(Ok(response)) => Outcome::Failed(format!("answered {}", response.status())),
        }
    }

    /// Gives up the deliveries older than the maximum age.
    async fn dead_letter_expired(&self) {
        match self
            .storage
            .dead_letter_expired_webhook_deliveries(self.max_age)
            .await
        {
            Ok(0) => {}
            Ok(expired) => {
                self.metrics.webhook_dead_total.inc_by(expired);
                tracing::warn!(
                    expired,
                    max_age_s = self.max_age.as_secs(),
                    "webhook deliveries older than the maximum age given up"
                );
            }
            Err(error) => tracing::warn!(%error, "cannot give up expired webhook deliveries"),
        }
    }

    /// Deletes the deliveries delivered longer ago than the retention.
    async fn purge_delivered(&self) {
        match self
            .storage
            .purge_delivered_webhook_deliveries(self.retention)
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "delivered webhook deliveries purged"),
            Err(error) => tracing::warn!(%error, "cannot purge delivered webhook deliveries"),
        }
    }

    /// Counts what is pending and dead, for the gauges.
    async fn count_outbox(&self) {
        match self.storage.webhook_outbox().await {
            Ok(outbox) => {
                self.metrics.webhook_pending.set(outbox.pending);
                self.metrics.webhook_dead.set(outbox.dead);
            }
            Err(error) => tracing::debug!(%error, "cannot count webhook deliveries"),
        }
    }
}

/// The next notification of `listener`; never, without one.
async fn notification(listener: &mut Option<WebhookListener>) -> Option<()> {
    match listener {
        Some(listener) => listener.next_notification().await,
        None => std::future::pending().await,
    }
}

/// An error with its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A random number for the jitter (the standard library's per-call random hash keys).
fn random(seed: i64) -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i64(seed);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_header_signs_the_timestamp_and_the_body() {
        let header = signature_header("s3cret", 1_700_000_000, br#"{"kind":"raise"}"#);
        let (t, v1) = header.split_once(',').unwrap();
        assert_eq!(t, "t=1700000000");
        let v1 = v1.strip_prefix("v1=").unwrap();
        assert_eq!(v1.len(), 64);
        assert!(
            v1.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // RFC 4231 test case 2: the HMAC is the standard one.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(
            v1,
            signature("other", 1_700_000_000, br#"{"kind":"raise"}"#)
        );
        assert_ne!(
            v1,
            signature("s3cret", 1_700_000_001, br#"{"kind":"raise"}"#)
        );
        assert_ne!(
            v1,
            signature("s3cret", 1_700_000_000, br#"{"kind":"clear"}"#)
        );
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let backoff = Backoff {
            min: Duration::from_millis(1000),
            max: Duration::from_secs(300),
        };
        for random in [0, 1, 499, 12_345, u64::MAX / 3, u64::MAX] {
            let mut previous_ceiling = Duration::ZERO;
            for attempts in [-1, 0, 1, 2, 3, 5, 8, 9, 10, 20, 40, i32::MAX] {
                let delay = backoff.delay(attempts, random);
                assert!(delay >= backoff.min, "{attempts}: {delay:?}");
                assert!(delay <= backoff.max, "{attempts}: {delay:?}");
                let ceiling =
                    (backoff.min * 2u32.pow(attempts.clamp(1, 20) as u32 - 1)).min(backoff.max);
                assert!(delay <= ceiling, "{attempts}: {delay:?} > {ceiling:?}");
                assert!(
                    delay >= ceiling / 2,
                    "{attempts}: {delay:?} < {ceiling:?} / 2"
                );
                assert!(ceiling >= previous_ceiling);
                previous_ceiling = ceiling;
            }
        }
        assert_eq!(backoff.delay(1, 7), Duration::from_secs(1));
        assert_eq!(backoff.delay(40, 0), Duration::from_secs(150));
        assert_eq!(backoff.delay(40, 150_000), Duration::from_secs(300));
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let backoff = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        let waits: std::collections::HashSet<_> =
            (0..50).map(|id| backoff.delay(6, random(id))).collect();
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[test]
    fn webhook_urls_are_http_or_https_with_a_host() {
        check_url("https://hooks.example.com/weir").unwrap();
        check_url("http://127.0.0.1:8080/x?y=1").unwrap();
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "/relative",
            "https://",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhook_destinations_at_refused_addresses_need_the_allowance() {
        check_destination("https://hooks.example.com/weir", false).unwrap();
        check_destination("https://8.8.8.8/weir", false).unwrap();
        for refused in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://10.0.0.5/x",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let error = check_destination(refused, false).unwrap_err().to_string();
            assert!(error.contains("destination_refused"), "{refused}: {error}");
            assert!(
                error.contains("webhook_allow_private"),
                "{refused}: {error}"
            );
            check_destination(refused, true).unwrap();
        }
        assert!(check_destination("ftp://8.8.8.8/", true).is_err());
    }
}
