//! The Redis cache of each key's latest value, so that "last value of sensor X" never scans
//! PostgreSQL.
//!
//! One hash per device, `weir:latest:<org>:<device>`, one field per key holding
//! `<ts_ms>|<type>|<value>`: the names and the format are `weir_contract::latest`, which the
//! query function reads with.
//!
//! "Latest" means the newest timestamp, not the last received: a Lua script updates every field
//! of a batch in one call and replaces a field only when the new timestamp is strictly newer, so
//! back-filled points never move a latest value backwards and racing writers converge.
//!
//! Redis is a cache: an outage must not fail a submit. Calls time out quickly; the caller logs
//! the error and leaves the batch's follow-up row for [`repair_device`](crate::repair_device).

use std::collections::HashMap;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::warn;
use weir_contract::latest::{self as contract, CachedValue};

use crate::error::{Result, StorageError, redis_unavailable};
use crate::model::{DeviceRef, LatestValue, StoredValue};

/// How long connecting, and each command, may take before Redis counts as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// An upper bound for a whole call, reconnection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Sets each field whose stored timestamp is older than the new one. KEYS[1]: the device's hash;
/// ARGV: (field, ts_ms, encoded value) triples. Returns how many fields changed.
static NEWEST_WINS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local changed = 0
for i = 1, #ARGV, 3 do
    local stored = redis.call('HGET', KEYS[1], ARGV[i])
    local newer = true
    if stored then
        local bar = string.find(stored, '|', 1, true)
        local stored_ts = bar and tonumber(string.sub(stored, 1, bar - 1))
        if stored_ts and stored_ts >= tonumber(ARGV[i + 1]) then
            newer = false
        end
    end
    if newer then
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
        changed = changed + 1
    end
end
return changed
",
    )
});

/// The Redis latest-value cache. Cheap to clone; reconnects by itself after an outage.
#[derive(Clone)]
pub struct LatestCache {
    connection: ConnectionManager,
}

impl LatestCache {
    /// Connects to Redis at `url` (`redis://host:port/db`). Fails with
    /// [`StorageError::Unavailable`] if it cannot be reached within a second or so.
    pub async fn connect(url: &str) -> Result<LatestCache> {
        let client = redis::Client::open(url)
            .map_err(|err| StorageError::Config(format!("invalid Redis URL: {err}")))?;
        // One connection attempt per reconnection, no backoff sleeps: a caller waiting on a dead
        // Redis is worse than an error (the repair task catches up once it is back), and the
        // next call starts the next attempt.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(0);
        let connection = within_deadline(client.get_connection_manager_with_config(config)).await?;
        Ok(LatestCache { connection })
    }

    /// Merges points into `device`'s latest values, newest timestamp wins (an equal timestamp
    /// keeps the stored value). Pass only points that storage accepted (stored or idempotent),
    /// not conflicts.
    pub async fn update(
        &self,
        device: &DeviceRef,
        points: &[(String, i64, StoredValue)],
    ) -> Result<()> {
        // Only the newest point per key can matter; the first one wins a tie, as in PostgreSQL.
        let mut newest: HashMap<&str, (i64, &StoredValue)> = HashMap::new();
        for (key, ts_ms, value) in points {
            newest
                .entry(key.as_str())
                .and_modify(|current| {
                    if *ts_ms > current.0 {
                        *current = (*ts_ms, value);
                    }
                })
                .or_insert((*ts_ms, value));
        }
        if newest.is_empty() {
            return Ok(());
        }
        let mut invocation = NEWEST_WINS.key(hash_key(device));
        for (key, (ts_ms, value)) in &newest {
            invocation.arg(*key).arg(*ts_ms).arg(encode(*ts_ms, value));
        }
        self.retrying(|mut connection| {
            let invocation = &invocation;
            async move { invocation.invoke_async::<i64>(&mut connection).await }
        })
        .await?;
        Ok(())
    }

    /// Drops `device`'s cached latest values, so that readers fall back to PostgreSQL (the
    /// device now writes through another region, whose Redis this is not).
    pub async fn forget(&self, device: &DeviceRef) -> Result<()> {
        let key = hash_key(device);
        self.retrying(|mut connection| {
            let key = key.clone();
            async move {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<i64>(&mut connection)
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// `device`'s cached latest values (empty when nothing is cached).
    pub async fn get(&self, device: &DeviceRef) -> Result<HashMap<String, LatestValue>> {
        let key = hash_key(device);
        let fields: HashMap<String, String> = self
            .retrying(|mut connection| {
                let key = &key;
                async move {
                    redis::cmd("HGETALL")
                        .arg(key)
                        .query_async(&mut connection)
                        .await
                }
            })
            .await?;
        let mut latest = HashMap::with_capacity(fields.len());
        for (field, encoded) in fields {
            match decode(&encoded) {
                Some(value) => {
                    latest.insert(field, value);
                }
                None => warn!(%device, key = %field, "ignoring a malformed latest value in Redis"),
            }
        }
        Ok(latest)
    }

    /// Checks that Redis answers (for readiness probes).
    pub async fn ping(&self) -> Result<()> {
        self.retrying(|mut connection| async move {
            redis::cmd("PING").query_async::<()>(&mut connection).await
        })
        .await
    }

    /// Runs `call`, once more if the connection had dropped (the first failure after an outage
    /// only triggers reconnection). Both commands are idempotent.
    async fn retrying<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        within_deadline(async {
            match call(self.connection.clone()).await {
                Err(err) if redis_unavailable(&err) => call(self.connection.clone()).await,
                other => other,
            }
        })
        .await
    }
}

/// Awaits a Redis operation for at most [`CALL_TIMEOUT`].
async fn within_deadline<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StorageError::Unavailable(format!(
            "Redis unavailable: no answer within {} ms",
            CALL_TIMEOUT.as_millis()
        ))),
    }
}

/// The hash holding `device`'s latest values.
fn hash_key(device: &DeviceRef) -> String {
    contract::hash_name(&device.org, &device.device)
}

/// `<ts_ms>|<type>|<value>`.
fn encode(ts_ms: i64, value: &StoredValue) -> String {
    let value = match value {
        StoredValue::Float(value) => CachedValue::Float(*value),
        StoredValue::Int(value) => CachedValue::Int(*value),
        StoredValue::Uint(value) => CachedValue::Uint(*value),
        StoredValue::Bool(value) => CachedValue::Bool(*value),
        StoredValue::Text(value) => CachedValue::Text(value),
    };
    contract::encode(ts_ms, value)
}

fn decode(encoded: &str) -> Option<LatestValue> {
    let (ts_ms, value) = contract::decode(encoded)?;
    let value = match value {
        CachedValue::Float(value) => StoredValue::Float(value),
        CachedValue::Int(value) => StoredValue::Int(value),
        CachedValue::Uint(value) => StoredValue::unsigned(value),
        CachedValue::Bool(value) => StoredValue::Bool(value),
        CachedValue::Text(value) => StoredValue::Text(value.to_owned()),
    };
    Some(LatestValue { ts_ms, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_exactly() {
        let values = [
            StoredValue::Float(0.1 + 0.2),
            StoredValue::Float(f64::MIN_POSITIVE),
            StoredValue::Float(-1e300),
            StoredValue::Float(f64::INFINITY),
            StoredValue::Int(i64::MIN),
            StoredValue::Uint(u64::MAX),
            StoredValue::Bool(true),
            StoredValue::Bool(false),
            StoredValue::Text("a|b|c".into()),
            StoredValue::Text(String::new()),
        ];
        for value in values {
            let decoded = decode(&encode(-5, &value)).unwrap();
            assert_eq!(decoded, LatestValue { ts_ms: -5, value });
        }
        let nan = decode(&encode(1, &StoredValue::Float(f64::NAN))).unwrap();
        assert!(nan.value.same_as(&StoredValue::Float(f64::NAN)));
    }

    #[test]
    fn hash_keys_keep_devices_apart() {
        assert_ne!(
            hash_key(&DeviceRef::new("a:b", "c")),
            hash_key(&DeviceRef::new("a", "b:c"))
        );
        assert_eq!(
            hash_key(&DeviceRef::new("acme", "m-1")),
            "weir:latest:acme:m-1"
        );
    }
}
