//! Alert webhooks: the worker that POSTs recorded events from the outbox (`webhook_deliveries`,
//! see `weir_storage`'s `webhooks`) to their webhooks, at least once.
//!
//! Every host with alerting runs one. It wakes when a delivery is queued (LISTEN
//! `weir_webhooks`, notified at the commit that recorded the event) and every second besides
//! (for retries falling due, and notifications missed while its connection was down), claims the
//! due deliveries (`FOR UPDATE SKIP LOCKED` with a lease, so hosts never claim the same one
//! together, and a host that dies mid-delivery leaves it due again once the lease ends), and
//! POSTs each. A 2xx answer marks it delivered; any other answer, a timeout or a connection
//! error marks it failed, due again after an exponential backoff with jitter
//! (`alerting.webhook_retry_min_ms` doubling up to `alerting.webhook_retry_max_s`). A webhook
//! down for an hour gets every event when it returns, within one maximum backoff.
//!
//! Each request carries `Weir-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! keyed with the webhook's secret, `Weir-Event-Id` and `Weir-Delivery-Id` (receivers
//! deduplicate on it: a delivery whose success was not recorded is sent again). At most
//! [`PER_WEBHOOK`] requests to one webhook are in flight from one host.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use weir_storage::{DueDelivery, Storage, WebhookListener, listen_webhook_deliveries};

use weir_config::Config;
use weir_metrics::Metrics;

/// How often due deliveries are looked for without a notification.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a lost LISTEN connection is opened again (polling goes on meanwhile).
const LISTEN_RETRY: Duration = Duration::from_secs(10);
/// Deliveries claimed at a time.
const CLAIM_BATCH: i64 = 64;
/// Requests in flight to one webhook from one host.
pub const PER_WEBHOOK: usize = 4;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "weir-signature";
/// The header naming the alert event (`alert_events.id`).
pub const EVENT_ID_HEADER: &str = "weir-event-id";
/// The header naming the delivery: the same on every retry of it.
pub const DELIVERY_ID_HEADER: &str = "weir-delivery-id";

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

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

/// The delivery worker of one host.
pub struct WebhookWorker {
    storage: Storage,
    database_url: String,
    client: HttpClient,
    timeout: Duration,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

impl WebhookWorker {
    /// A worker delivering from `storage`'s outbox with the `[alerting]` webhook settings.
    pub fn new(config: &Config, storage: Storage, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let tls = weir_pki::public_client_config().context("the webhooks' TLS config")?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(WebhookWorker {
            storage,
            database_url: config.database_url.clone(),
            client,
            timeout: Duration::from_millis(config.alerting.webhook_timeout_ms),
            backoff: Backoff {
                min: Duration::from_millis(config.alerting.webhook_retry_min_ms),
                max: Duration::from_secs(config.alerting.webhook_retry_max_s),
            },
            metrics,
        })
    }

    /// Delivers until shutdown. A delivery cut short by the shutdown is due again when its
    /// lease ends.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener: Option<WebhookListener> = None;
        let mut listen_tried: Option<Instant> = None;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listener.is_none() && listen_tried.is_none_or(|at| at.elapsed() >= LISTEN_RETRY) {
                listen_tried = Some(Instant::now());
                tokio::select! {
                    listening = listen_webhook_deliveries(&self.database_url) => match listening {
                        Ok(listening) => listener = Some(listening),
                        Err(error) => tracing::warn!(%error, "cannot listen for webhook deliveries; polling every second"),
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
            tokio::select! {
                _ = tick.tick() => {}
                notified = notification(&mut listener) => {
                    if notified.is_none() {
                        listener = None;
                    }
                }
                _ = shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = self.deliver_due() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Claims and attempts every due delivery, then counts what is pending.
    async fn deliver_due(&self) {
        loop {
            let due = match self
                .storage
                .claim_webhook_deliveries(CLAIM_BATCH, self.lease())
                .await
            {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim webhook deliveries; will retry");
                    return;
                }
            };
            let more = due.len() as i64 == CLAIM_BATCH;
            let mut by_webhook: BTreeMap<i64, Vec<DueDelivery>> = BTreeMap::new();
            for delivery in due {
                by_webhook
                    .entry(delivery.webhook_id)
                    .or_default()
                    .push(delivery);
            }
            let mut webhooks = FuturesUnordered::new();
            for deliveries in by_webhook.into_values() {
                webhooks.push(self.deliver_to_one_webhook(deliveries));
            }
            while webhooks.next().await.is_some() {}
            if !more {
                break;
            }
        }
        match self.storage.pending_webhook_deliveries().await {
            Ok(pending) => {
                self.metrics.webhook_pending.set(pending);
            }
            Err(error) => tracing::debug!(%error, "cannot count pending webhook deliveries"),
        }
    }

    /// Attempts `deliveries` (all to one webhook), [`PER_WEBHOOK`] at a time.
    async fn deliver_to_one_webhook(&self, deliveries: Vec<DueDelivery>) {
        let mut waiting = deliveries.into_iter();
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < PER_WEBHOOK {
                match waiting.next() {
                    Some(delivery) => running.push(self.deliver(delivery)),
                    None => break,
                }
            }
            if running.next().await.is_none() {
                return;
            }
        }
    }

    /// How long a claimed delivery is this worker's: the request's timeout, with room for
    /// recording the outcome.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(10)
    }

    /// Attempts one delivery and records the outcome.
    async fn deliver(&self, delivery: DueDelivery) {
        match self.post(&delivery).await {
            Ok(()) => {
                self.metrics.webhook_delivery("delivered");
                if let Err(error) = self.storage.mark_webhook_delivered(delivery.id).await {
                    tracing::warn!(delivery = delivery.id, %error, "webhook delivered but not recorded; it will be sent again");
                }
            }
            Err(reason) => {
                self.metrics.webhook_delivery("failed");
                let retry_in = self.backoff.delay(delivery.attempts, random(delivery.id));
                tracing::info!(delivery = delivery.id, webhook = delivery.webhook_id, attempts = delivery.attempts, %reason, retry_in_ms = retry_in.as_millis() as u64, "webhook delivery failed; will retry");
                if let Err(error) = self
                    .storage
                    .mark_webhook_failed(delivery.id, retry_in, &reason)
                    .await
                {
                    tracing::warn!(delivery = delivery.id, %error, "webhook failure not recorded; retried when its lease ends");
                }
            }
        }
    }

    /// POSTs `delivery`; `Err` says why it did not succeed.
    async fn post(&self, delivery: &DueDelivery) -> Result<(), String> {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let body = Bytes::from(delivery.payload.clone());
        let request = Request::post(delivery.url.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("weir/", env!("CARGO_PKG_VERSION")))
            .header(
                SIGNATURE_HEADER,
                signature_header(&delivery.secret, t, &body),
            )
            .header(EVENT_ID_HEADER, delivery.event_id)
            .header(DELIVERY_ID_HEADER, delivery.id)
            .body(Full::new(body))
            .map_err(|error| format!("invalid request: {error}"))?;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
            Ok(Err(error)) => Err(chain(&error)),
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("answered {}", response.status())),
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
}
