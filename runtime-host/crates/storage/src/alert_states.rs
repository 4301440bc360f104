//! The alerter's per-(rule, device) states and the per-device evaluation lock, in PostgreSQL.
//!
//! They live in tier one, which every region shares, so a device's alerts follow it when it
//! moves: the region it writes through next reads the states the last one wrote, and no alert is
//! raised twice or missed after a move. The lock is a session-level advisory lock held on one
//! pooled connection for the length of an evaluation: two evaluations of one device (two hosts,
//! two regions, or a device sending in parallel) take turns. Should a host die holding it, its
//! connection closes and PostgreSQL releases the lock.

use std::time::Duration;

use deadpool_postgres::{Client, GenericClient, Object};

use crate::Storage;
use crate::error::{Result, StorageError};
use crate::model::DeviceRef;

/// How long to wait between two tries of a taken device lock.
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// One rule's opaque state for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertState {
    /// The rule's id.
    pub rule_id: String,
    /// The alerter's state document.
    pub state: Vec<u8>,
}

/// A device's evaluation lock: held until [`release`](Self::release)d. Dropped without a
/// release (a cancelled evaluation), its connection is closed instead of returned to the pool,
/// which releases the lock too.
#[must_use = "a lock is held until released"]
pub struct AlertDeviceLock {
    client: Option<Client>,
    key: String,
}

impl AlertDeviceLock {
    /// Releases the lock.
    pub async fn release(mut self) -> Result<()> {
        let client = self.client.take().expect("a held lock has its connection");
        let released = client
            .query_one(
                "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                &[&self.key],
            )
            .await;
        match released {
            Ok(row) if row.get::<_, bool>(0) => Ok(()),
            Ok(_) => {
                drop(Object::take(client));
                Err(StorageError::Query(
                    "the alert lock was not held at release".into(),
                ))
            }
            Err(error) => {
                // Never return a connection that may still hold the lock to the pool.
                drop(Object::take(client));
                Err(error.into())
            }
        }
    }
}

impl Drop for AlertDeviceLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

/// The advisory lock's name for `device`: length-prefixed so that no two devices share it (their
/// 64-bit hashes may still collide, which only makes two devices take turns).
fn lock_name(device: &DeviceRef) -> String {
    format!(
        "weir-alert:{}:{}/{}",
        device.org.len(),
        device.org,
        device.device
    )
}

impl Storage {
    /// Every stored alert state of `device`.
    pub async fn alert_states(&self, device: &DeviceRef) -> Result<Vec<AlertState>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT rule_id, state FROM alert_states WHERE org = $1 AND device = $2 \
                 ORDER BY rule_id",
            )
            .await?;
        let rows = client
            .query(&select, &[&device.org, &device.device])
            .await?;
        Ok(rows
            .iter()
            .map(|row| AlertState {
                rule_id: row.get(0),
                state: row.get(1),
            })
            .collect())
    }

    /// Stores `states` of `device`, replacing those of the same rules.
    pub async fn put_alert_states(&self, device: &DeviceRef, states: &[AlertState]) -> Result<()> {
        if states.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        upsert_states(&client, device, states).await
    }

    /// The devices of `org` with any alert state that write through `region` (or never wrote
    /// through a region-aware host): those whose staleness `region` checks.
    pub async fn alert_state_devices(&self, org: &str, region: &str) -> Result<Vec<String>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT DISTINCT s.device FROM alert_states s \
                 WHERE s.org = $1 AND NOT EXISTS ( \
                     SELECT 1 FROM device_regions r \
                     WHERE r.org = s.org AND r.device = s.device AND r.region <> $2) \
                 ORDER BY s.device",
            )
            .await?;
        let rows = client.query(&select, &[&org, &region]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Takes `device`'s evaluation lock, waiting up to `wait` while another evaluation holds it.
    pub async fn lock_alert_device(
        &self,
        device: &DeviceRef,
        wait: Duration,
    ) -> Result<AlertDeviceLock> {
        let key = lock_name(device);
        let client = self.client().await?;
        let try_lock = client
            .prepare_cached("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .await?;
        let give_up = tokio::time::Instant::now() + wait;
        // Held from here on: a cancelled wait drops the connection, never pools it locked.
        let mut lock = AlertDeviceLock {
            client: Some(client),
            key,
        };
        loop {
            let client = lock.client.as_ref().expect("held until released");
            let row = client.query_one(&try_lock, &[&lock.key]).await?;
            if row.get::<_, bool>(0) {
                return Ok(lock);
            }
            if tokio::time::Instant::now() >= give_up {
                // Not locked: the connection may go back to the pool.
                drop(lock.client.take());
                return Err(StorageError::Contention(format!(
                    "device {device} stayed locked by another alert evaluation for {} ms",
                    wait.as_millis()
                )));
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }
}

/// Stores `states` of `device` through `client` (a connection or a transaction), replacing
/// those of the same rules.
pub(crate) async fn upsert_states(
    client: &impl GenericClient,
    device: &DeviceRef,
    states: &[AlertState],
) -> Result<()> {
    if states.is_empty() {
        return Ok(());
    }
    let upsert = client
        .prepare_cached(
            "INSERT INTO alert_states (org, device, rule_id, state) \
             SELECT $1, $2, rule_id, state FROM unnest($3::text[], $4::bytea[]) AS s (rule_id, state) \
             ON CONFLICT (org, device, rule_id) DO UPDATE \
             SET state = EXCLUDED.state, updated_at = now()",
        )
        .await?;
    let rule_ids: Vec<&str> = states.iter().map(|s| s.rule_id.as_str()).collect();
    let documents: Vec<&[u8]> = states.iter().map(|s| s.state.as_slice()).collect();
    client
        .execute(
            &upsert,
            &[&device.org, &device.device, &rule_ids, &documents],
        )
        .await?;
    Ok(())
}
