//! The alerter's state in Redis: one hash per device, `weir:alert:<org>:<device>` (`%` and `:`
//! inside the names escaped as `%25` and `%3A`, as for the latest values), one field per rule
//! id holding that rule's opaque state bytes.
//!
//! A batch costs one `HGETALL` and, when states changed, one `HSET`, inside a per-device lock
//! (`weir:alert-lock:<org>:<device>`, `SET NX PX` with a random token, released by a script that
//! deletes only its own token): two batches of one device evaluated at once (two hosts, or a
//! device sending in parallel) take turns instead of overwriting each other's state. The lock
//! expires by itself should its host die while holding it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use weir_contract::redis_name::{escape, unescape};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use weir_runtime::alerter::RuleState;

/// How long connecting, and each command, may take.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// An upper bound for a whole call, reconnection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The per-(rule, device) states of the alerter. Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct AlertStates {
    connection: ConnectionManager,
}

impl AlertStates {
    /// Connects to Redis at `url`.
    pub async fn connect(url: &str) -> anyhow::Result<AlertStates> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(0);
        let connection = within_deadline(client.get_connection_manager_with_config(config)).await?;
        Ok(AlertStates { connection })
    }

    /// The connection, for other users of the same Redis (the event publisher).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Every stored state of `device` of `org`.
    pub async fn get(&self, org: &str, device: &str) -> anyhow::Result<Vec<RuleState>> {
        let mut connection = self.connection.clone();
        let fields: HashMap<String, Vec<u8>> = within_deadline(
            redis::cmd("HGETALL")
                .arg(hash_key(org, device))
                .query_async(&mut connection),
        )
        .await?;
        Ok(fields
            .into_iter()
            .map(|(rule_id, state)| RuleState { rule_id, state })
            .collect())
    }

    /// Stores `states` of `device` of `org`, replacing those of the same rules.
    pub async fn put(&self, org: &str, device: &str, states: &[RuleState]) -> anyhow::Result<()> {
        if states.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("HSET");
        command.arg(hash_key(org, device));
        for state in states {
            command.arg(&state.rule_id).arg(&state.state);
        }
        let mut connection = self.connection.clone();
        within_deadline(command.query_async::<i64>(&mut connection)).await?;
        Ok(())
    }

    /// The devices of `org` with any stored state.
    pub async fn devices(&self, org: &str) -> anyhow::Result<Vec<String>> {
        let prefix = format!("weir:alert:{}:", escape(org));
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut connection = self.connection.clone();
        let mut devices = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = within_deadline(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection),
            )
            .await?;
            devices.extend(
                keys.iter()
                    .filter_map(|key| key.strip_prefix(&prefix))
                    .map(unescape),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        devices.sort();
        devices.dedup();
        Ok(devices)
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

/// A device's evaluation lock, held until [`release`](DeviceLock::release)d or expired.
#[must_use = "a lock is held until released or expired"]
pub struct DeviceLock {
    key: String,
    token: String,
    connection: ConnectionManager,
}

/// How long to wait between two tries of a taken device lock.
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// Deletes the lock only while it still holds the caller's token.
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"#;

impl AlertStates {
    /// Takes the evaluation lock of `device` of `org`, held at most `ttl` (then it expires),
    /// waiting up to `wait` while another evaluation of the device holds it.
    pub async fn lock_device(
        &self,
        org: &str,
        device: &str,
        ttl: Duration,
        wait: Duration,
    ) -> anyhow::Result<DeviceLock> {
        let key = format!("weir:alert-lock:{}:{}", escape(org), escape(device));
        let token = lock_token();
        let mut connection = self.connection.clone();
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let set: Option<String> = within_deadline(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .query_async(&mut connection),
            )
            .await?;
            if set.is_some() {
                return Ok(DeviceLock {
                    key,
                    token,
                    connection,
                });
            }
            if tokio::time::Instant::now() >= give_up {
                anyhow::bail!(
                    "device {device:?} of {org:?} stayed locked by another evaluation for {} ms",
                    wait.as_millis()
                );
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }
}

impl DeviceLock {
    /// Releases the lock if it is still this one's (it may have expired and been taken since).
    pub async fn release(self) -> anyhow::Result<()> {
        let mut connection = self.connection;
        within_deadline(
            redis::Script::new(RELEASE_SCRIPT)
                .key(&self.key)
                .arg(&self.token)
                .invoke_async::<i64>(&mut connection),
        )
        .await?;
        Ok(())
    }
}

/// A token no other lock holder has: a per-process random number and a counter.
fn lock_token() -> String {
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    format!("{process:016x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
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

/// The hash holding the states of `device` of `org`.
pub fn hash_key(org: &str, device: &str) -> String {
    format!("weir:alert:{}:{}", escape(org), escape(device))
}

/// `text` as a literal in a Redis `MATCH` pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_keep_devices_apart() {
        assert_ne!(hash_key("a:b", "c"), hash_key("a", "b:c"));
        assert_eq!(hash_key("acme", "m-1"), "weir:alert:acme:m-1");
        for name in ["a:b", "%3A", "a%25:", "%%::"] {
            assert_eq!(unescape(&escape(name)), name);
        }
        assert_eq!(glob_escape("a*b[c]"), "a\\*b\\[c\\]");
    }
}
