//! Where the alerter's state lives: the per-(rule, device) states and the per-device evaluation
//! lock in PostgreSQL (tier one, shared by every region, so a device's alerts follow it between
//! regions; see `weir_storage`'s `alert_states`), and the region-wide lock of the staleness
//! check in the region's Redis (one host per region checks per interval).

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use weir_runtime::alerter::RuleState;
use weir_storage::{AlertDeviceLock, AlertState, DeviceRef, Storage};

/// How long connecting, and each command, may take.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// An upper bound for a whole call, reconnection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The per-(rule, device) states of the alerter and their locks. Cheap to clone.
#[derive(Clone)]
pub struct AlertStates {
    storage: Storage,
    region: String,
    connection: ConnectionManager,
}

impl AlertStates {
    /// States in `storage`; the staleness lock in the Redis at `redis_url`, for `region`.
    pub async fn connect(
        storage: Storage,
        redis_url: &str,
        region: &str,
    ) -> anyhow::Result<AlertStates> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(0);
        let connection = within_deadline(client.get_connection_manager_with_config(config)).await?;
        Ok(AlertStates {
            storage,
            region: region.to_owned(),
            connection,
        })
    }

    /// The Redis connection, for other users of the region's Redis (the event publisher).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Every stored state of `device`.
    pub async fn get(&self, device: &DeviceRef) -> anyhow::Result<Vec<RuleState>> {
        Ok(self
            .storage
            .alert_states(device)
            .await?
            .into_iter()
            .map(|s| RuleState {
                rule_id: s.rule_id,
                state: s.state,
            })
            .collect())
    }

    /// Stores `states` of `device`, replacing those of the same rules.
    pub async fn put(&self, device: &DeviceRef, states: &[RuleState]) -> anyhow::Result<()> {
        let states: Vec<AlertState> = states
            .iter()
            .map(|s| AlertState {
                rule_id: s.rule_id.clone(),
                state: s.state.clone(),
            })
            .collect();
        Ok(self.storage.put_alert_states(device, &states).await?)
    }

    /// The devices of `org` with any stored state that this region checks: those writing
    /// through it (or through no region yet).
    pub async fn devices(&self, org: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.storage.alert_state_devices(org, &self.region).await?)
    }

    /// Takes the evaluation lock of `device`, waiting up to `wait` while another evaluation
    /// (any host, any region) holds it.
    pub async fn lock_device(
        &self,
        device: &DeviceRef,
        wait: Duration,
    ) -> anyhow::Result<DeviceLock> {
        Ok(DeviceLock(
            self.storage.lock_alert_device(device, wait).await?,
        ))
    }

    /// Takes the region-wide lock of one staleness check for `ttl`: whether this host got it.
    /// Hosts of a region share Redis, so one of them checks per interval.
    pub async fn lock_stale_check(&self, ttl: Duration) -> anyhow::Result<bool> {
        let mut connection = self.connection.clone();
        let set: Option<String> = within_deadline(
            redis::cmd("SET")
                .arg("weir:alert-stale-check")
                .arg(std::process::id())
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .query_async(&mut connection),
        )
        .await?;
        Ok(set.is_some())
    }
}

/// A device's evaluation lock, held until [`release`](DeviceLock::release)d (or its
/// connection closes).
#[must_use = "a lock is held until released"]
pub struct DeviceLock(AlertDeviceLock);

impl DeviceLock {
    /// Releases the lock.
    pub async fn release(self) -> anyhow::Result<()> {
        Ok(self.0.release().await?)
    }
}

/// `call`, failing when Redis does not answer within [`CALL_TIMEOUT`].
pub(super) async fn within_deadline<T>(
    call: impl Future<Output = redis::RedisResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => anyhow::bail!(
            "Redis unavailable: no answer within {} ms",
            CALL_TIMEOUT.as_millis()
        ),
    }
}
