//! Where each device writes: the `device_regions` table, and the `weir_device_moved`
//! notifications that keep every region's Redis latest values right when devices move.
//!
//! Regions share tier-one PostgreSQL but each has its own Redis. A batch stored through a
//! region-aware [`Storage`](crate::Storage::in_region) records the device's region in its own
//! transaction; when that changes, it announces `{device, from, to}` on `weir_device_moved`
//! (delivered at commit). The region left drops its cached latest values of the device (its
//! readers then fall back to PostgreSQL); the region arrived at rebuilds them from PostgreSQL.
//! Notifications missed while a listener reconnects are covered by [`DeviceMove::Missed`]: drop
//! the cache of every device that now writes elsewhere ([`Storage::devices_elsewhere`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use deadpool_postgres::Transaction;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::Storage;
use crate::error::Result;
use crate::model::DeviceRef;
use crate::notify::{Channel, ChannelListener, listen_channel};

/// The notification channel of device moves.
const MOVED_CHANNEL: &str = "weir_device_moved";

/// A device's move between regions, or word that some may have been missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceMove {
    /// `device` wrote through `from` and now writes through `to`.
    Moved {
        /// The device.
        device: DeviceRef,
        /// The region it left.
        from: String,
        /// The region it writes through now.
        to: String,
    },
    /// Moves may have been missed (start, reconnection, overflow).
    Missed,
}

/// Records that `device` writes through `region`, in the batch's transaction; announces a
/// change of region and returns the region it came from.
pub(crate) async fn track(
    tx: &Transaction<'_>,
    device: &DeviceRef,
    region: &str,
) -> Result<Option<String>> {
    // The upsert locks the device's row, so concurrent batches of one device through two
    // regions are ordered; the row is rewritten only when the region changes.
    let upsert = tx
        .prepare_cached(
            "WITH previous AS ( \
                 SELECT region FROM device_regions WHERE org = $1 AND device = $2 FOR UPDATE \
             ), changed AS ( \
                 INSERT INTO device_regions (org, device, region) VALUES ($1, $2, $3) \
                 ON CONFLICT (org, device) DO UPDATE SET region = EXCLUDED.region, since = now() \
                 WHERE device_regions.region <> EXCLUDED.region \
                 RETURNING 1 \
             ) \
             SELECT (SELECT region FROM previous), EXISTS (SELECT 1 FROM changed)",
        )
        .await?;
    let row = tx
        .query_one(&upsert, &[&device.org, &device.device, &region])
        .await?;
    let previous: Option<String> = row.get(0);
    let changed: bool = row.get(1);
    let Some(from) = previous.filter(|from| changed && from != region) else {
        return Ok(None);
    };
    let announcement = DeviceMove::Moved {
        device: device.clone(),
        from: from.clone(),
        to: region.to_owned(),
    };
    let payload = serde_json::to_string(&announcement).unwrap_or_default();
    // A payload PostgreSQL refuses (8000 bytes and more) is not sent: listeners then miss this
    // move, which only leaves the region left serving from PostgreSQL a little later.
    if payload.len() < 7900 {
        tx.execute("SELECT pg_notify($1, $2)", &[&MOVED_CHANNEL, &payload])
            .await?;
    }
    Ok(Some(from))
}

impl Storage {
    /// The region `device` last wrote through, if it ever wrote through a region-aware host.
    pub async fn device_region(&self, device: &DeviceRef) -> Result<Option<String>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT region FROM device_regions WHERE org = $1 AND device = $2")
            .await?;
        let row = client
            .query_opt(&select, &[&device.org, &device.device])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// The devices that last wrote through a region other than `region`, at most `limit` after
    /// `after` in (org, device) order: page through them to drop stale caches.
    pub async fn devices_elsewhere(
        &self,
        region: &str,
        after: Option<&DeviceRef>,
        limit: i64,
    ) -> Result<Vec<DeviceRef>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT org, device FROM device_regions \
                 WHERE region <> $1 AND (org, device) > ($2, $3) \
                 ORDER BY org, device LIMIT $4",
            )
            .await?;
        let (org, device) = after.map_or(("", ""), |d| (d.org.as_str(), d.device.as_str()));
        let rows = client
            .query(&select, &[&region, &org, &device, &limit])
            .await?;
        Ok(rows
            .iter()
            .map(|row| DeviceRef::new(row.get::<_, String>(0), row.get::<_, String>(1)))
            .collect())
    }
}

fn parse_payload(payload: &str) -> DeviceMove {
    serde_json::from_str(payload).unwrap_or_else(|error| {
        warn!(payload, %error, "unexpected device-move notification");
        DeviceMove::Missed
    })
}

/// A stream of device moves between regions. Stops listening when dropped.
pub struct DeviceMoveListener {
    inner: ChannelListener<DeviceMove>,
}

impl DeviceMoveListener {
    /// The next move (waits for one). Starts with [`DeviceMove::Missed`].
    pub async fn next_move(&mut self) -> Option<DeviceMove> {
        self.inner.next().await
    }
}

impl Stream for DeviceMoveListener {
    type Item = DeviceMove;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DeviceMove>> {
        self.inner.poll_recv(cx)
    }
}

/// Listens for device moves on a dedicated connection to `url`, reconnecting by itself.
pub async fn listen_device_moves(url: &str) -> Result<DeviceMoveListener> {
    let channel = Channel {
        listen: "LISTEN weir_device_moved",
        application_name: "weir-device-moves",
        missed: DeviceMove::Missed,
        parse: parse_payload,
    };
    Ok(DeviceMoveListener {
        inner: listen_channel(url, channel).await?,
    })
}
