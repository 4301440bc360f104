//! Change notifications between hosts: PostgreSQL `LISTEN`/`NOTIFY`. Metadata changes go on the
//! `weir_metadata` channel; the listening machinery ([`listen_channel`]) also serves the function
//! registry's `weir_functions` channel (see `registry`).
//!
//! [`Storage::put_metadata`](crate::Storage::put_metadata) notifies with the device as JSON.
//! [`listen_metadata_changes`] keeps a dedicated connection (notifications need one connection
//! that stays open, so not a pooled one) and turns notifications into [`MetadataChange`]s. When
//! the connection drops it reconnects with backoff; notifications sent meanwhile are lost, so
//! after every (re)connection it yields [`MetadataChange::All`]: reload everything. The first
//! `All` arrives once listening has begun, which also closes the gap between a host's initial
//! load and its `LISTEN`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tracing::{debug, warn};

use crate::error::{Result, StorageError};
use crate::model::DeviceRef;

/// The notification channel of metadata changes.
pub(crate) const METADATA_CHANNEL: &str = "weir_metadata";
/// The payload meaning "reload everything" (also used when a device does not fit a payload).
const ALL_PAYLOAD: &str = "*";
/// PostgreSQL refuses payloads of 8000 bytes and more.
const MAX_PAYLOAD: usize = 7900;
/// Changes buffered for a slow consumer; beyond this they collapse into one `All`.
const BUFFERED_CHANGES: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// What changed in key metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataChange {
    /// The metadata of this device's keys changed.
    Device(DeviceRef),
    /// Changes may have been missed (start, reconnection, overflow): reload all metadata.
    All,
}

/// The payload announcing a change of `device`'s metadata.
pub(crate) fn notification_payload(device: &DeviceRef) -> String {
    match serde_json::to_string(device) {
        Ok(json) if json.len() < MAX_PAYLOAD => json,
        _ => ALL_PAYLOAD.to_owned(),
    }
}

fn parse_payload(payload: &str) -> MetadataChange {
    match serde_json::from_str(payload) {
        Ok(device) => MetadataChange::Device(device),
        Err(_) => {
            if payload != ALL_PAYLOAD {
                warn!(
                    payload,
                    "unexpected metadata notification; reloading all metadata"
                );
            }
            MetadataChange::All
        }
    }
}

/// A stream of metadata changes made by any host. Stops listening when dropped.
pub struct MetadataListener {
    inner: ChannelListener<MetadataChange>,
}

impl MetadataListener {
    /// The next change (waits for one). Starts with [`MetadataChange::All`].
    pub async fn next_change(&mut self) -> Option<MetadataChange> {
        self.inner.next().await
    }
}

impl Stream for MetadataListener {
    type Item = MetadataChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MetadataChange>> {
        self.inner.changes.poll_recv(cx)
    }
}

/// Listens for metadata changes on a dedicated connection to `url`, reconnecting by itself.
///
/// The first connection is made now: an unreachable server fails here (as
/// [`StorageError::Unavailable`]); later outages are retried in the background.
pub async fn listen_metadata_changes(url: &str) -> Result<MetadataListener> {
    let channel = Channel {
        listen: "LISTEN weir_metadata",
        application_name: "weir-metadata-listener",
        missed: MetadataChange::All,
        parse: parse_payload,
    };
    Ok(MetadataListener {
        inner: listen_channel(url, channel).await?,
    })
}

/// One notification channel as a listener sees it. Other modules (the function registry) listen
/// to channels of their own through [`listen_channel`].
pub(crate) struct Channel<T> {
    /// `LISTEN <channel>`: a constant, since LISTEN takes an identifier, not a parameter.
    pub(crate) listen: &'static str,
    /// The connection's `application_name`, also naming the listener in logs.
    pub(crate) application_name: &'static str,
    /// The change meaning "some may have been missed": sent after every (re)connection and when
    /// the consumer falls behind.
    pub(crate) missed: T,
    /// A notification's payload as a change.
    pub(crate) parse: fn(&str) -> T,
}

/// The changes of one channel, from a background task that keeps a connection listening.
/// Stops listening when dropped.
pub(crate) struct ChannelListener<T> {
    changes: mpsc::Receiver<T>,
    task: JoinHandle<()>,
}

impl<T> ChannelListener<T> {
    /// The next change (waits for one). Starts with the channel's `missed` change.
    pub(crate) async fn next(&mut self) -> Option<T> {
        self.changes.recv().await
    }

    /// Polls for the next change, for listeners that are streams.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.changes.poll_recv(cx)
    }
}

impl<T> Drop for ChannelListener<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `channel` over a dedicated connection to `url`, reconnecting by itself. The first
/// connection is made now, so an unreachable server fails here.
pub(crate) async fn listen_channel<T: Clone + Send + Sync + 'static>(
    url: &str,
    channel: Channel<T>,
) -> Result<ChannelListener<T>> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|err| StorageError::Config(format!("invalid PostgreSQL URL: {err}")))?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .application_name(channel.application_name);
    let first = connect_and_listen(&config, &channel).await?;
    let (sender, changes) = mpsc::channel(BUFFERED_CHANGES);
    let task = tokio::spawn(listen(config, channel, first, sender));
    Ok(ChannelListener { changes, task })
}

type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// Opens a connection and subscribes it to the channel. The connection's messages (which also
/// drive it) come back as a stream; the client must be kept alive with it.
async fn connect_and_listen<T>(
    config: &tokio_postgres::Config,
    channel: &Channel<T>,
) -> Result<(Client, Messages)> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages: Messages = Box::pin(futures_util::stream::poll_fn(move |cx| {
        connection.poll_message(cx)
    }));
    {
        let listen = client.batch_execute(channel.listen);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                done = &mut listen => {
                    done?;
                    break;
                }
                message = messages.next() => match message {
                    // Nothing can be missed here: `missed` follows right after.
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(err.into()),
                    None => {
                        return Err(StorageError::Unavailable(format!(
                            "PostgreSQL closed the connection of {}",
                            channel.application_name
                        )));
                    }
                },
            }
        }
    }
    Ok((client, messages))
}

/// The background task: forwards notifications, and reconnects after the connection drops.
async fn listen<T: Clone>(
    config: tokio_postgres::Config,
    channel: Channel<T>,
    first: (Client, Messages),
    sender: mpsc::Sender<T>,
) {
    let name = channel.application_name;
    let mut current = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        let (client, mut messages) = match current.take() {
            Some(connection) => connection,
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = sender.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                match connect_and_listen(&config, &channel).await {
                    Ok(connection) => connection,
                    Err(err) => {
                        debug!(listener = name, error = %err, "cannot reconnect yet");
                        continue;
                    }
                }
            }
        };
        let connected_at = Instant::now();
        if !forward(&sender, channel.missed.clone(), &channel.missed).await {
            return;
        }
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = sender.closed() => return,
            };
            match message {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    let change = (channel.parse)(notification.payload());
                    if !forward(&sender, change, &channel.missed).await {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    warn!(listener = name, error = %err, "listener lost its connection; reconnecting");
                    break;
                }
                None => {
                    warn!(
                        listener = name,
                        "listener's connection closed; reconnecting"
                    );
                    break;
                }
            }
        }
        drop(client);
        if connected_at.elapsed() >= STABLE_CONNECTION {
            backoff = MIN_BACKOFF;
        }
    }
}

/// Hands a change to the consumer; a full buffer collapses into `missed` (sent once there is
/// room). False when the consumer is gone.
async fn forward<T: Clone>(sender: &mpsc::Sender<T>, change: T, missed: &T) -> bool {
    match sender.try_send(change) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => sender.send(missed.clone()).await.is_ok(),
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_device_or_everything() {
        let device = DeviceRef::new("acme", "logger-7");
        assert_eq!(
            parse_payload(&notification_payload(&device)),
            MetadataChange::Device(device)
        );
        let huge = DeviceRef::new("acme", "x".repeat(MAX_PAYLOAD));
        assert_eq!(notification_payload(&huge), ALL_PAYLOAD);
        assert_eq!(parse_payload(ALL_PAYLOAD), MetadataChange::All);
    }
}
