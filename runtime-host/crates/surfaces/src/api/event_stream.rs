//! Live alert events as server-sent events: `GET /v1/events/stream`, authenticated and scoped to
//! the token's organisation like `GET /v1/events`.
//!
//! One relay per host ([`EventStreams::run`]) holds a Redis pub/sub connection with
//! `PSUBSCRIBE weir:events:*` (where alerting publishes every recorded event, one JSON message
//! each) and reconnects with backoff when Redis drops it. It hands each message to the
//! `tokio::sync::broadcast` channel of the exact channel name it came on, which is
//! [`publish::channel`] of one organisation: a stream subscribes to its organisation's channel
//! only, so it never sees another organisation's events, whatever a message says. A
//! broadcast channel exists while an organisation has streams open; the last one to leave drops
//! it.
//!
//! The stream (`text/event-stream`, `Cache-Control: private, no-store`) opens with `retry:` and a
//! `: connected` comment, then sends each event as `event: alert`, `id: <event_id>` (when the
//! message has one) and `data: <the message, verbatim>`, and a `: keep-alive` comment every
//! [`KEEP_ALIVE`]. Pub/sub is at most once, so a stream never skips events silently: when it
//! falls behind (a slow client) or the relay was cut off from Redis, it gets
//! `event: lagged` with `{"reason": ..., "reread": "/v1/events"}`, telling the client to re-read
//! the record. Optional filters `device`, `key` and `severity` pick events by those fields of the
//! message.
//!
//! A stream re-checks its token in PostgreSQL every `server.token_cache_s` (as often as a
//! request's cached verdict expires): once the token is revoked, the stream sends
//! `event: end` with `{"reason": "token_revoked"}` and closes. A token may hold
//! `server.event_streams_per_token` streams at once and a host `server.max_event_streams`;
//! beyond either, `429 too_many_streams`. Streams also end when the host shuts down.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_contract::routes::percent_decode;

use bytes::Bytes;
use futures_util::StreamExt as _;
use hyper::Method;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::{Value as Json, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use weir_config::ServerConfig;

use super::auth::{ApiCaller, Authenticator};
use super::events;
use crate::http::ApiError;
use crate::http::body::{ResponseBody, StreamingResponse};
use weir_metrics::Metrics;
use weir_pipeline::alerting::publish;

/// The stream's path.
pub const PATH: &str = "/v1/events/stream";
/// How often an idle stream sends a comment, so that proxies and clients see it alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The reconnection delay the stream asks clients to use, in milliseconds.
const RETRY_MS: u64 = 2000;
/// The pattern the relay subscribes to: every organisation's event channel.
const PATTERN: &str = weir_contract::events::CHANNEL_PATTERN;
/// Messages an organisation's broadcast channel keeps for its slowest stream before that
/// stream lags.
const BROADCAST_CAPACITY: usize = 256;
/// Chunks of one stream waiting for the client's socket.
const STREAM_BUFFER: usize = 16;
/// The relay's first wait before reconnecting, doubled after each failure up to the next.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The relay's longest wait before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the relay pings Redis, so that a dead connection is noticed even without traffic.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long connecting, subscribing or a ping may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// The filters a stream takes.
const PARAMETERS: &[&str] = &["device", "key", "severity"];
/// Tells proxies such as nginx not to buffer the stream.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// What the relay hands to an organisation's streams.
#[derive(Debug, Clone)]
enum Relayed {
    /// One event message, verbatim.
    Event(Arc<str>),
    /// The relay (re)subscribed after a time without a subscription: events may be missing.
    Resubscribed,
}

/// How many live streams may be open at once.
#[derive(Debug, Clone, Copy)]
pub struct EventStreamLimits {
    /// Per API token.
    pub per_token: usize,
    /// On the whole host.
    pub per_host: usize,
}

impl EventStreamLimits {
    /// The limits `server` configures.
    pub fn of(server: &ServerConfig) -> Self {
        EventStreamLimits {
            per_token: server.event_streams_per_token,
            per_host: server.max_event_streams,
        }
    }
}

/// The host's live event relay and the streams it feeds.
pub struct EventStreams {
    /// Open broadcast channels by pub/sub channel name (one organisation each).
    channels: Mutex<HashMap<String, broadcast::Sender<Relayed>>>,
    /// Open streams by token id, and in all.
    seats: Mutex<Seats>,
    limits: EventStreamLimits,
    metrics: Arc<Metrics>,
    /// Cancelled when the host shuts down; every stream then ends.
    closing: CancellationToken,
}

/// The streams open now.
#[derive(Default)]
struct Seats {
    by_token: HashMap<i64, usize>,
    total: usize,
}

impl EventStreams {
    /// No streams yet; [`run`](Self::run) connects the relay.
    pub fn new(metrics: Arc<Metrics>, limits: EventStreamLimits) -> Arc<EventStreams> {
        Arc::new(EventStreams {
            channels: Mutex::new(HashMap::new()),
            seats: Mutex::new(Seats::default()),
            limits,
            metrics,
            closing: CancellationToken::new(),
        })
    }

    /// Answers `GET /v1/events/stream`.
    pub async fn handle(
        self: &Arc<Self>,
        auth: &Arc<Authenticator>,
        request: hyper::Request<Incoming>,
    ) -> StreamingResponse {
        match self.open(auth, request).await {
            Ok(response) => response,
            Err(error) => error.into_response().map(ResponseBody::from),
        }
    }

    async fn open(
        self: &Arc<Self>,
        auth: &Arc<Authenticator>,
        request: hyper::Request<Incoming>,
    ) -> Result<StreamingResponse, ApiError> {
        if request.method() != Method::GET {
            return Err(ApiError::method_not_allowed(request.method(), PATH));
        }
        let caller = auth.authenticate(request.headers()).await?;
        let filter = StreamFilter::parse(request.uri().query().unwrap_or(""))?;
        if self.closing.is_cancelled() {
            return Err(ApiError::unavailable(
                "shutting_down",
                "the host is shutting down; connect to another",
                1,
            ));
        }
        let seat = self.take_seat(caller.token_id)?;
        let subscription = self.subscribe(&publish::channel(&caller.org));
        let (sender, body) = ResponseBody::channel(STREAM_BUFFER);
        tokio::spawn(pump(
            subscription,
            filter,
            sender,
            self.closing.clone(),
            revoked(auth.clone(), caller),
            Some(seat),
        ));

        let mut response = hyper::Response::new(body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
        Ok(response)
    }

    /// A place for one more stream of token `token_id`, or `429 too_many_streams`.
    fn take_seat(self: &Arc<Self>, token_id: i64) -> Result<Seat, ApiError> {
        let mut seats = self.seats.lock().expect("event stream seats lock");
        let of_token = seats.by_token.get(&token_id).copied().unwrap_or(0);
        let refused = if of_token >= self.limits.per_token {
            Some((
                "event_streams_per_token",
                format!(
                    "this token already has {of_token} live event streams open on this host, \
                     the most allowed: close one first"
                ),
            ))
        } else if seats.total >= self.limits.per_host {
            Some((
                "event_streams",
                "this host has as many live event streams open as it allows; \
                 retry later or on another host"
                    .to_owned(),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = refused {
            drop(seats);
            self.metrics.limit_hit("api", reason);
            return Err(ApiError::new(
                hyper::StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                message,
            )
            .retry_after(5));
        }
        *seats.by_token.entry(token_id).or_default() += 1;
        seats.total += 1;
        Ok(Seat {
            streams: self.clone(),
            token_id,
        })
    }

    /// A new stream's receiver on `channel`, creating the broadcast channel if it is the first.
    fn subscribe(self: &Arc<Self>, channel: &str) -> Subscription {
        let receiver = self
            .channels
            .lock()
            .expect("event channels lock")
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(BROADCAST_CAPACITY).0)
            .subscribe();
        self.metrics.event_streams.inc();
        Subscription {
            streams: self.clone(),
            channel: channel.to_owned(),
            receiver: Some(receiver),
        }
    }

    /// Hands `message` of pub/sub `channel` to the streams of that channel, if any.
    fn deliver(&self, channel: &str, message: Relayed) {
        if let Some(sender) = self
            .channels
            .lock()
            .expect("event channels lock")
            .get(channel)
        {
            // No receiver left is not an error: the last stream is leaving.
            let _ = sender.send(message);
        }
    }

    /// Tells every stream that events may have been missed.
    fn announce_gap(&self) {
        for sender in self.channels.lock().expect("event channels lock").values() {
            let _ = sender.send(Relayed::Resubscribed);
        }
    }

    /// The relay: subscribes to every organisation's event channel on `redis_url` and hands the
    /// messages on until `shutdown` is cancelled, reconnecting with backoff; then ends every
    /// stream.
    pub async fn run(self: Arc<Self>, redis_url: String, shutdown: CancellationToken) {
        tokio::select! {
            () = self.relay(&redis_url) => {}
            _ = shutdown.cancelled() => {}
        }
        self.closing.cancel();
        // Dropping the senders ends the streams that are waiting for an event.
        self.channels.lock().expect("event channels lock").clear();
    }

    /// Relays forever, reconnecting after each failure.
    async fn relay(&self, redis_url: &str) {
        let client = match redis::Client::open(redis_url) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "the Redis URL is unusable; no live event streams");
                return std::future::pending().await;
            }
        };
        let mut backoff = BACKOFF_MIN;
        loop {
            let error = self.follow(&client, &mut backoff).await;
            self.metrics.event_relay_reconnects.inc();
            tracing::warn!(%error, retry_in = ?backoff, "live event relay lost Redis; reconnecting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One subscription, from connecting until it fails; resets `backoff` once subscribed.
    async fn follow(&self, client: &redis::Client, backoff: &mut Duration) -> anyhow::Error {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(PATTERN).await?;
            anyhow::Ok(pubsub)
        };
        let pubsub = match tokio::time::timeout(REDIS_TIMEOUT, subscribed).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => return error,
            Err(_) => return anyhow::anyhow!("subscribing took longer than {REDIS_TIMEOUT:?}"),
        };
        tracing::info!(pattern = PATTERN, "live event relay subscribed");
        *backoff = BACKOFF_MIN;
        // Whatever was published while there was no subscription is lost to the streams.
        self.announce_gap();
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => {
                        let payload = String::from_utf8_lossy(message.get_payload_bytes());
                        self.deliver(message.get_channel_name(), Relayed::Event(payload.into()));
                    }
                    None => return anyhow::anyhow!("the subscription connection closed"),
                },
                _ = ping.tick() => {
                    // A subscribed connection answers PING with an array: any answer will do.
                    match tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return error.into(),
                        Err(_) => return anyhow::anyhow!("Redis did not answer a ping within {REDIS_TIMEOUT:?}"),
                    }
                }
            }
        }
    }
}

/// One stream's place on its organisation's broadcast channel; leaving drops the channel when
/// it was the last.
struct Subscription {
    streams: Arc<EventStreams>,
    channel: String,
    receiver: Option<broadcast::Receiver<Relayed>>,
}

impl Subscription {
    fn receiver(&mut self) -> &mut broadcast::Receiver<Relayed> {
        self.receiver.as_mut().expect("present until dropped")
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The receiver goes first, so that the count below no longer includes it; subscribing
        // happens under the same lock, so no stream can join in between.
        drop(self.receiver.take());
        let mut channels = self.streams.channels.lock().expect("event channels lock");
        if channels
            .get(&self.channel)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.channel);
        }
        self.streams.metrics.event_streams.dec();
    }
}

/// One open stream's place in the counts; leaving gives it back.
struct Seat {
    streams: Arc<EventStreams>,
    token_id: i64,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut seats = self.streams.seats.lock().expect("event stream seats lock");
        seats.total -= 1;
        if let Some(count) = seats.by_token.get_mut(&self.token_id) {
            *count -= 1;
            if *count == 0 {
                seats.by_token.remove(&self.token_id);
            }
        }
    }
}

/// Completes once `caller`'s token is revoked, checking it every [`Authenticator::ttl`]. A
/// failed check keeps the stream (the next one decides) and is logged.
async fn revoked(auth: Arc<Authenticator>, caller: ApiCaller) {
    let every = auth.ttl();
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        recheck.tick().await;
        match auth.still_valid(&caller).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(token_id = caller.token_id, %error, "event stream's token not re-checked");
            }
        }
    }
}

/// Writes one stream until the client leaves, the channel closes, the token is revoked or the
/// host shuts down.
async fn pump(
    mut subscription: Subscription,
    filter: StreamFilter,
    sender: mpsc::Sender<Bytes>,
    closing: CancellationToken,
    revoked: impl Future<Output = ()>,
    _seat: Option<Seat>,
) {
    let metrics = subscription.streams.metrics.clone();
    let mut next = Some(Bytes::from(format!("retry: {RETRY_MS}\n: connected\n\n")));
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let mut keep_alive = tokio::time::interval_at(start, KEEP_ALIVE);
    tokio::pin!(revoked);
    let mut ending = false;
    loop {
        if let Some(chunk) = next.take() {
            tokio::select! {
                sent = sender.send(chunk) => if sent.is_err() { return },
                _ = closing.cancelled() => return,
            }
            if ending {
                return;
            }
            keep_alive.reset();
        }
        tokio::select! {
            () = &mut revoked => {
                metrics.event_streams_revoked.inc();
                next = Some(end_frame("token_revoked"));
                ending = true;
            },
            received = subscription.receiver().recv() => match received {
                Ok(Relayed::Event(message)) => {
                    if filter.admits(&message) {
                        next = Some(alert_frame(&message));
                    }
                }
                Ok(Relayed::Resubscribed) => next = Some(lagged_frame("relay_reconnected", None)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics.event_streams_lagged.inc();
                    next = Some(lagged_frame("slow_client", Some(missed)));
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keep_alive.tick() => next = Some(Bytes::from_static(b": keep-alive\n\n")),
            () = sender.closed() => return,
            _ = closing.cancelled() => return,
        }
    }
}

/// `event: alert`, the `id:` of the message's `event_id` when it has one, and the message.
fn alert_frame(message: &str) -> Bytes {
    let mut frame = String::with_capacity(message.len() + 48);
    frame.push_str("event: alert\n");
    let id =
        serde_json::from_str::<Json>(message)
            .ok()
            .and_then(|event| match &event["event_id"] {
                Json::Number(id) => Some(id.to_string()),
                Json::String(id) => Some(id.clone()),
                _ => None,
            });
    // An SSE id may hold neither a line break nor NUL.
    if let Some(id) = id.filter(|id| !id.contains(['\n', '\r', '\0'])) {
        let _ = writeln!(frame, "id: {id}");
    }
    // A line break would end the field: each line of the message is a `data:` line of its own
    // (compact JSON has none, so this is one line).
    for line in message.split(['\n', '\r']).filter(|line| !line.is_empty()) {
        let _ = writeln!(frame, "data: {line}");
    }
    frame.push('\n');
    Bytes::from(frame)
}

/// `event: end`: the stream closes after it, for `reason`.
fn end_frame(reason: &str) -> Bytes {
    Bytes::from(format!(
        "event: end\ndata: {}\n\n",
        json!({ "reason": reason })
    ))
}

/// `event: lagged`: events were missed, and `GET /v1/events` has them.
fn lagged_frame(reason: &str, missed: Option<u64>) -> Bytes {
    let mut data = json!({"reason": reason, "reread": events::PATH});
    if let Some(missed) = missed {
        data["missed"] = json!(missed);
    }
    Bytes::from(format!("event: lagged\ndata: {data}\n\n"))
}

/// The events a stream wants: those whose `device`, `key` and `severity` match the given ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamFilter {
    device: Option<String>,
    key: Option<String>,
    severity: Option<String>,
}

impl StreamFilter {
    /// The filter of a query string; 400 `invalid_parameter` names the parameter at fault.
    pub(crate) fn parse(query: &str) -> Result<StreamFilter, ApiError> {
        let invalid = |message: String| ApiError::bad_request("invalid_parameter", message);
        let mut filter = StreamFilter::default();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let (Some(name), Some(value)) = (percent_decode(name), percent_decode(value)) else {
                return Err(invalid(format!(
                    "`{part}` is not a valid percent-encoded query parameter"
                )));
            };
            let slot = match name.as_str() {
                "device" => &mut filter.device,
                "key" => &mut filter.key,
                "severity" => &mut filter.severity,
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter `{name}`: this endpoint takes {}",
                        PARAMETERS.join(", ")
                    )));
                }
            };
            if slot.is_some() {
                return Err(invalid(format!(
                    "parameter `{name}` is given more than once"
                )));
            }
            if value.is_empty() {
                return Err(invalid(format!("parameter `{name}` is empty")));
            }
            if name == "severity" && !events::SEVERITIES.contains(&value.as_str()) {
                return Err(invalid(format!(
                    "parameter `severity` must be one of {}, not `{value}`",
                    events::SEVERITIES.join(", ")
                )));
            }
            *slot = Some(value);
        }
        Ok(filter)
    }

    /// Whether `message` passes; a message that is not a JSON object passes only an empty
    /// filter.
    pub(crate) fn admits(&self, message: &str) -> bool {
        if *self == StreamFilter::default() {
            return true;
        }
        let Ok(event) = serde_json::from_str::<Json>(message) else {
            return false;
        };
        let matches = |field: &str, wanted: &Option<String>| {
            wanted
                .as_deref()
                .is_none_or(|wanted| event[field].as_str() == Some(wanted))
        };
        matches("device", &self.device)
            && matches("key", &self.key)
            && matches("severity", &self.severity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: EventStreamLimits = EventStreamLimits {
        per_token: 2,
        per_host: 3,
    };

    fn text(bytes: Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn an_alert_frame_carries_the_message_and_its_event_id() {
        let message = r#"{"event_id":42,"kind":"raise","device":"m1"}"#;
        assert_eq!(
            text(alert_frame(message)),
            format!("event: alert\nid: 42\ndata: {message}\n\n")
        );
        let without_id = r#"{"kind":"clear"}"#;
        assert_eq!(
            text(alert_frame(without_id)),
            format!("event: alert\ndata: {without_id}\n\n")
        );
        assert_eq!(
            text(alert_frame("{\"a\":\n1}")),
            "event: alert\ndata: {\"a\":\ndata: 1}\n\n"
        );
    }

    #[test]
    fn a_lagged_frame_points_to_the_record() {
        let frame = text(lagged_frame("slow_client", Some(7)));
        let data: Json =
            serde_json::from_str(frame.strip_prefix("event: lagged\ndata: ").unwrap()).unwrap();
        assert_eq!(
            data,
            json!({"reason": "slow_client", "missed": 7, "reread": "/v1/events"})
        );
    }

    #[test]
    fn filters_are_checked_and_applied_to_the_message() {
        let filter = StreamFilter::parse("device=m%2D1&severity=critical").unwrap();
        assert!(filter.admits(r#"{"device":"m-1","severity":"critical","key":"k"}"#));
        assert!(!filter.admits(r#"{"device":"m-2","severity":"critical"}"#));
        assert!(!filter.admits(r#"{"device":"m-1","severity":"minor"}"#));
        assert!(!filter.admits("not json"));
        assert!(StreamFilter::parse("").unwrap().admits("not json"));
        for (query, named) in [
            ("severity=bad", "`severity`"),
            ("state=raised", "`state`"),
            ("key=a&key=b", "`key`"),
            ("device=", "`device`"),
        ] {
            let error = StreamFilter::parse(query).unwrap_err();
            assert_eq!(error.code, "invalid_parameter");
            assert!(error.message.contains(named), "{query}: {}", error.message);
        }
    }

    #[tokio::test]
    async fn streams_get_their_channel_only_and_the_last_to_leave_drops_it() {
        let streams = EventStreams::new(Arc::new(Metrics::new()), LIMITS);
        let mut acme = streams.subscribe("weir:events:acme");
        let mut acme_too = streams.subscribe("weir:events:acme");
        let mut globex = streams.subscribe("weir:events:globex");
        streams.deliver("weir:events:acme", Relayed::Event("a".into()));
        streams.deliver("weir:events:globex", Relayed::Event("g".into()));
        streams.deliver("weir:events:nobody", Relayed::Event("n".into()));
        for (subscription, want) in [(&mut acme, "a"), (&mut acme_too, "a"), (&mut globex, "g")] {
            match subscription.receiver().try_recv() {
                Ok(Relayed::Event(got)) => assert_eq!(&*got, want),
                other => panic!("{other:?}"),
            }
            assert!(subscription.receiver().try_recv().is_err());
        }
        assert_eq!(streams.metrics.event_streams.get(), 3);
        drop(acme);
        assert!(
            streams
                .channels
                .lock()
                .unwrap()
                .contains_key("weir:events:acme")
        );
        drop(acme_too);
        drop(globex);
        assert!(streams.channels.lock().unwrap().is_empty());
        assert_eq!(streams.metrics.event_streams.get(), 0);
    }

    #[tokio::test]
    async fn streams_are_capped_per_token_and_per_host() {
        let streams = EventStreams::new(Arc::new(Metrics::new()), LIMITS);
        let first = streams.take_seat(1).unwrap();
        let _second = streams.take_seat(1).unwrap();
        let refused = streams.take_seat(1).err().unwrap();
        assert_eq!(refused.status, hyper::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.code, "too_many_streams");
        let _other = streams.take_seat(2).unwrap();
        assert_eq!(
            streams.take_seat(3).err().unwrap().code,
            "too_many_streams",
            "the host is full"
        );
        drop(first);
        assert!(
            streams.take_seat(3).is_ok(),
            "a closed stream frees its seat"
        );
    }

    #[tokio::test]
    async fn a_revoked_token_ends_its_stream_with_an_end_event() {
        let streams = EventStreams::new(Arc::new(Metrics::new()), LIMITS);
        let subscription = streams.subscribe("weir:events:acme");
        let (sender, mut body) = mpsc::channel(STREAM_BUFFER);
        let (revoke, revoked) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(pump(
            subscription,
            StreamFilter::default(),
            sender,
            CancellationToken::new(),
            async move {
                let _ = revoked.await;
            },
            None,
        ));
        assert!(text(body.recv().await.unwrap()).contains(": connected"));
        revoke.send(()).unwrap();
        assert_eq!(
            text(body.recv().await.unwrap()),
            "event: end\ndata: {\"reason\":\"token_revoked\"}\n\n"
        );
        assert!(body.recv().await.is_none(), "the stream closes after it");
        assert_eq!(streams.metrics.event_streams_revoked.get(), 1);
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_is_told_to_reread() {
        let streams = EventStreams::new(Arc::new(Metrics::new()), LIMITS);
        let subscription = streams.subscribe("weir:events:acme");
        for i in 0..BROADCAST_CAPACITY + 10 {
            streams.deliver(
                "weir:events:acme",
                Relayed::Event(format!("{{\"event_id\":{i}}}").into()),
            );
        }
        let (sender, mut body) = mpsc::channel(STREAM_BUFFER);
        let closed = CancellationToken::new();
        tokio::spawn(pump(
            subscription,
            StreamFilter::default(),
            sender,
            closed,
            std::future::pending(),
            None,
        ));
        let connected = text(body.recv().await.unwrap());
        assert!(connected.contains(": connected"), "{connected}");
        let lagged = text(body.recv().await.unwrap());
        assert!(lagged.starts_with("event: lagged\n"), "{lagged}");
        assert!(lagged.contains("\"missed\":10"), "{lagged}");
        let next = text(body.recv().await.unwrap());
        assert!(next.contains("id: 10\n"), "{next}");
        assert_eq!(streams.metrics.event_streams_lagged.get(), 1);
    }
}
