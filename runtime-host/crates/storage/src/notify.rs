//! Metadata change notifications between hosts: PostgreSQL `LISTEN`/`NOTIFY` on the
//! `weir_metadata` channel.
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
    changes: mpsc::Receiver<MetadataChange>,
    task: JoinHandle<()>,
}

impl MetadataListener {
    /// The next change (waits for one). Starts with [`MetadataChange::All`].
    pub async fn next_change(&mut self) -> Option<MetadataChange> {
        self.changes.recv().await
    }
}

impl Stream for MetadataListener {
    type Item = MetadataChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MetadataChange>> {
        self.changes.poll_recv(cx)
    }
}

impl Drop for MetadataListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens for metadata changes on a dedicated connection to `url`, reconnecting by itself.
///
/// The first connection is made now: an unreachable server fails here (as
/// [`StorageError::Unavailable`]); later outages are retried in the background.
pub async fn listen_metadata_changes(url: &str) -> Result<MetadataListener> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|err| StorageError::Config(format!("invalid PostgreSQL URL: {err}")))?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .application_name("weir-metadata-listener");
    let first = connect_and_listen(&config).await?;
    let (sender, changes) = mpsc::channel(BUFFERED_CHANGES);
    let task = tokio::spawn(listen(config, first, sender));
    Ok(MetadataListener { changes, task })
}

type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// Opens a connection and subscribes it to the channel. The connection's messages (which also
/// drive it) come back as a stream; the client must be kept alive with it.
async fn connect_and_listen(config: &tokio_postgres::Config) -> Result<(Client, Messages)> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages: Messages = Box::pin(futures_util::stream::poll_fn(move |cx| {
        connection.poll_message(cx)
    }));
    {
        // The channel name is a constant: LISTEN takes an identifier, not a parameter.
        let listen = client.batch_execute("LISTEN weir_metadata");
        tokio::pin!(listen);
        loop {
            tokio::select! {
                done = &mut listen => {
                    done?;
                    break;
                }
                message = messages.next() => match message {
                    // Nothing can be missed here: `All` follows right after.
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(err.into()),
                    None => {
                        return Err(StorageError::Unavailable(
                            "PostgreSQL closed the metadata listener's connection".into(),
                        ));
                    }
                },
            }
        }
    }
    Ok((client, messages))
}

/// The background task: forwards notifications, and reconnects after the connection drops.
async fn listen(
    config: tokio_postgres::Config,
    first: (Client, Messages),
    sender: mpsc::Sender<MetadataChange>,
) {
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
                match connect_and_listen(&config).await {
                    Ok(connection) => connection,
                    Err(err) => {
                        debug!(error = %err, "metadata listener cannot reconnect yet");
                        continue;
                    }
                }
            }
        };
        let connected_at = Instant::now();
        if !forward(&sender, MetadataChange::All).await {
            return;
        }
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = sender.closed() => return,
            };
            match message {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if !forward(&sender, parse_payload(notification.payload())).await {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    warn!(error = %err, "metadata listener lost its connection; reconnecting");
                    break;
                }
                None => {
                    warn!("metadata listener's connection closed; reconnecting");
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

/// Hands a change to the consumer; a full buffer collapses into `All` (sent once there is room).
/// False when the consumer is gone.
async fn forward(sender: &mpsc::Sender<MetadataChange>, change: MetadataChange) -> bool {
    match sender.try_send(change) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => sender.send(MetadataChange::All).await.is_ok(),
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
