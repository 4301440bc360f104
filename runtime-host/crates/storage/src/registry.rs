//! The function registry: every version of every artifact a host runs (validator, query and
//! alerter components, rule sets), stored content-addressed, and which version each region runs
//! under each name.
//!
//! `function_versions` holds the bytes, keyed by their SHA-256, with the artifact's kind;
//! `function_assignments` is an append-only history of `(region, name) → sha256`, whose newest
//! row is the current version. A deploy appends a row; a rollback appends one re-assigning the
//! previous distinct version. Both notify the `weir_functions` channel with the region in the same
//! transaction, so listeners hear of a change only once it is committed, and
//! [`listen_registry_changes`] turns those notifications into [`RegistryChange`]s for the hosts.
//! Checking that an artifact is valid for its kind (it compiles, matches its world) is the
//! caller's business, before it deploys.

use std::time::SystemTime;

use deadpool_postgres::Transaction;
use sha2::{Digest, Sha256};

use crate::error::{Result, StorageError};
use crate::notify::{Channel, ChannelListener, listen_channel};
use crate::postgres::Storage;
use crate::timestamp::from_system_time;

/// The notification channel of registry changes; the payload is the region.
pub(crate) const REGISTRY_CHANNEL: &str = "weir_functions";
/// The payload meaning "every region" (also what a region too long for a payload becomes).
const ALL_PAYLOAD: &str = "*";
/// PostgreSQL refuses payloads of 8000 bytes and more.
const MAX_PAYLOAD: usize = 7900;

/// What an artifact is, which decides how a host checks and runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// A component of the `weir:functions/validator` world.
    Validator,
    /// A WASI HTTP proxy component serving the query API.
    Query,
    /// A component of the `weir:functions/alerter` world.
    Alerter,
    /// A rule set.
    Rules,
}

impl ArtifactKind {
    /// The kind as stored in `function_versions.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Validator => "validator",
            ArtifactKind::Query => "query",
            ArtifactKind::Alerter => "alerter",
            ArtifactKind::Rules => "rules",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "validator" => ArtifactKind::Validator,
            "query" => ArtifactKind::Query,
            "alerter" => ArtifactKind::Alerter,
            "rules" => ArtifactKind::Rules,
            other => {
                return Err(StorageError::Corrupt(format!(
                    "unknown artifact kind {other:?}"
                )));
            }
        })
    }
}

/// The outcome of a deploy or a rollback of `(region, name)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The version now assigned (SHA-256 of its bytes, hex).
    pub sha256: String,
    /// The version assigned before, if any.
    pub previous: Option<String>,
    /// Whether the registry changed: false when the version was already the current one.
    pub changed: bool,
}

/// The version a region runs under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentArtifact {
    /// The name (`validator`, `query`, ...).
    pub name: String,
    /// The version (SHA-256 of its bytes, hex).
    pub sha256: String,
    /// What it is.
    pub kind: ArtifactKind,
}

/// One row of the assignment history, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRecord {
    /// The region.
    pub region: String,
    /// The name.
    pub name: String,
    /// The version assigned (SHA-256, hex).
    pub sha256: String,
    /// What it is.
    pub kind: ArtifactKind,
    /// The artifact's size in bytes.
    pub size: i64,
    /// `deploy` or `rollback`.
    pub action: String,
    /// When it was assigned, in unix milliseconds.
    pub assigned_at_ms: i64,
    /// Whether this is the current version of its region and name.
    pub current: bool,
}

/// A change of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChange {
    /// An assignment of this region changed.
    Region(String),
    /// Changes may have been missed (start, reconnection, overflow): check every assignment.
    All,
}

impl RegistryChange {
    /// Whether a host of `region` must look at its assignments again.
    pub fn concerns(&self, region: &str) -> bool {
        match self {
            RegistryChange::Region(changed) => changed == region,
            RegistryChange::All => true,
        }
    }
}

pub(crate) fn notification_payload(region: &str) -> &str {
    if region.len() < MAX_PAYLOAD && region != ALL_PAYLOAD {
        region
    } else {
        ALL_PAYLOAD
    }
}

fn parse_payload(payload: &str) -> RegistryChange {
    if payload == ALL_PAYLOAD {
        RegistryChange::All
    } else {
        RegistryChange::Region(payload.to_owned())
    }
}

/// A stream of registry changes made by anyone. Stops listening when dropped.
pub struct RegistryListener {
    inner: ChannelListener<RegistryChange>,
}

impl RegistryListener {
    /// The next change (waits for one). Starts with [`RegistryChange::All`].
    pub async fn next_change(&mut self) -> Option<RegistryChange> {
        self.inner.next().await
    }
}

/// Listens for registry changes on a dedicated connection to `url`, reconnecting by itself
/// (and yielding [`RegistryChange::All`] after each reconnection). The first connection is
/// made now: an unreachable server fails here.
pub async fn listen_registry_changes(url: &str) -> Result<RegistryListener> {
    let channel = Channel {
        listen: "LISTEN weir_functions",
        application_name: "weir-registry-listener",
        missed: RegistryChange::All,
        parse: parse_payload,
    };
    Ok(RegistryListener {
        inner: listen_channel(url, channel).await?,
    })
}

/// The SHA-256 of `bytes`, hex: an artifact's identity.
pub fn artifact_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Storage {
    /// Stores `bytes` as a version of kind `kind` (once: versions are content-addressed) and
    /// makes it the current version of `name` in `region`, notifying the region's hosts when the
    /// transaction commits. Deploying the current version again changes nothing.
    pub async fn deploy_artifact(
        &self,
        region: &str,
        name: &str,
        kind: ArtifactKind,
        bytes: &[u8],
    ) -> Result<Assignment> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_assignments(&tx).await?;
        let sha256 = insert_version(&tx, kind, bytes).await?;
        let previous = current_version(&tx, region, name).await?;
        if previous.as_deref() == Some(sha256.as_str()) {
            tx.rollback().await?;
            return Ok(Assignment {
                sha256,
                previous,
                changed: false,
            });
        }
        assign(&tx, region, name, &sha256, "deploy").await?;
        tx.commit().await?;
        Ok(Assignment {
            sha256,
            previous,
            changed: true,
        })
    }

    /// Makes version `sha256` (stored already, see [`store_artifact`](Self::store_artifact)) the
    /// current version of `name` in `region`, notifying the region's hosts when the transaction
    /// commits. Assigning the current version again changes nothing.
    pub async fn assign_artifact(
        &self,
        region: &str,
        name: &str,
        sha256: &str,
    ) -> Result<Assignment> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_assignments(&tx).await?;
        let previous = current_version(&tx, region, name).await?;
        let changed = previous.as_deref() != Some(sha256);
        if changed {
            assign(&tx, region, name, sha256, "deploy").await?;
            tx.commit().await?;
        }
        Ok(Assignment {
            sha256: sha256.to_owned(),
            previous,
            changed,
        })
    }

    /// Makes the version that was current before the current one (the newest earlier assignment
    /// of another version) current again, notifying the region's hosts. `None` when `name` has
    /// no earlier version in `region`. Rolling back twice returns to where the first rollback
    /// started.
    pub async fn roll_back_artifact(&self, region: &str, name: &str) -> Result<Option<Assignment>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_assignments(&tx).await?;
        let Some(current) = current_version(&tx, region, name).await? else {
            return Ok(None);
        };
        let Some(sha256) = earlier_version(&tx, region, name, &current).await? else {
            return Ok(None);
        };
        assign(&tx, region, name, &sha256, "rollback").await?;
        tx.commit().await?;
        Ok(Some(Assignment {
            sha256,
            previous: Some(current),
            changed: true,
        }))
    }

    /// Stores `bytes` as a version of kind `kind` without assigning it anywhere (once: versions
    /// are content-addressed); returns its SHA-256.
    pub async fn store_artifact(&self, kind: ArtifactKind, bytes: &[u8]) -> Result<String> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sha256 = insert_version(&tx, kind, bytes).await?;
        tx.commit().await?;
        Ok(sha256)
    }

    /// The current version of `name` in `region`, if any.
    pub async fn current_artifact(&self, region: &str, name: &str) -> Result<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        current_version(&tx, region, name).await
    }

    /// The version a [`roll_back_artifact`](Self::roll_back_artifact) of `(region, name)` would
    /// make current now, if any.
    pub async fn rollback_target(&self, region: &str, name: &str) -> Result<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(current) = current_version(&tx, region, name).await? else {
            return Ok(None);
        };
        earlier_version(&tx, region, name, &current).await
    }

    /// The current version of every name assigned in `region`, by name.
    pub async fn current_artifacts(&self, region: &str) -> Result<Vec<CurrentArtifact>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT DISTINCT ON (a.name) a.name, a.sha256, v.kind \
                 FROM function_assignments a JOIN function_versions v USING (sha256) \
                 WHERE a.region = $1 ORDER BY a.name, a.id DESC",
            )
            .await?;
        let rows = client.query(&select, &[&region]).await?;
        rows.iter()
            .map(|row| {
                Ok(CurrentArtifact {
                    name: row.try_get(0)?,
                    sha256: row.try_get(1)?,
                    kind: ArtifactKind::parse(row.try_get(2)?)?,
                })
            })
            .collect()
    }

    /// The bytes of version `sha256`, checked against their digest; `None` when not stored.
    pub async fn artifact_bytes(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT bytes FROM function_versions WHERE sha256 = $1")
            .await?;
        let Some(row) = client.query_opt(&select, &[&sha256]).await? else {
            return Ok(None);
        };
        let bytes: Vec<u8> = row.try_get(0)?;
        if artifact_sha256(&bytes) != sha256 {
            return Err(StorageError::Corrupt(format!(
                "the bytes of version {sha256} do not have that digest"
            )));
        }
        Ok(Some(bytes))
    }

    /// The assignment history of `region` (of every region when `None`), by region and name,
    /// newest first, with the current version of each marked.
    pub async fn artifact_history(&self, region: Option<&str>) -> Result<Vec<AssignmentRecord>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT a.region, a.name, a.sha256, v.kind, v.size::int8, a.action, a.assigned_at, \
                        a.id = max(a.id) OVER (PARTITION BY a.region, a.name) \
                 FROM function_assignments a JOIN function_versions v USING (sha256) \
                 WHERE $1::text IS NULL OR a.region = $1 \
                 ORDER BY a.region, a.name, a.id DESC",
            )
            .await?;
        let rows = client.query(&select, &[&region]).await?;
        rows.iter()
            .map(|row| {
                let assigned_at: SystemTime = row.try_get(6)?;
                Ok(AssignmentRecord {
                    region: row.try_get(0)?,
                    name: row.try_get(1)?,
                    sha256: row.try_get(2)?,
                    kind: ArtifactKind::parse(row.try_get(3)?)?,
                    size: row.try_get(4)?,
                    action: row.try_get(5)?,
                    assigned_at_ms: from_system_time(assigned_at),
                    current: row.try_get(7)?,
                })
            })
            .collect()
    }
}

/// Serialises deploys and rollbacks (each reads the current version, then appends), without
/// blocking readers: SHARE ROW EXCLUSIVE conflicts with itself and with writes only.
async fn lock_assignments(tx: &Transaction<'_>) -> Result<()> {
    tx.batch_execute("LOCK TABLE function_assignments IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    Ok(())
}

/// The current version of `(region, name)`, if any.
async fn current_version(tx: &Transaction<'_>, region: &str, name: &str) -> Result<Option<String>> {
    let select = tx
        .prepare_cached(
            "SELECT sha256 FROM function_assignments WHERE region = $1 AND name = $2 \
             ORDER BY id DESC LIMIT 1",
        )
        .await?;
    let row = tx.query_opt(&select, &[&region, &name]).await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Inserts `bytes` as a version of `kind` unless stored already (as that kind); its SHA-256.
async fn insert_version(tx: &Transaction<'_>, kind: ArtifactKind, bytes: &[u8]) -> Result<String> {
    let sha256 = artifact_sha256(bytes);
    let size = i32::try_from(bytes.len()).map_err(|_| {
        StorageError::Query(format!("an artifact of {} bytes is too large", bytes.len()))
    })?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO function_versions (sha256, kind, bytes, size) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&sha256, &kind.as_str(), &bytes, &size])
        .await?;
    let stored_kind = tx
        .prepare_cached("SELECT kind FROM function_versions WHERE sha256 = $1")
        .await?;
    let stored_kind: String = tx.query_one(&stored_kind, &[&sha256]).await?.try_get(0)?;
    if stored_kind != kind.as_str() {
        return Err(StorageError::Query(format!(
            "version {sha256} is already stored as a {stored_kind}, not a {}",
            kind.as_str()
        )));
    }
    Ok(sha256)
}

/// The newest version of `(region, name)` assigned before, other than `current`.
async fn earlier_version(
    tx: &Transaction<'_>,
    region: &str,
    name: &str,
    current: &str,
) -> Result<Option<String>> {
    let earlier = tx
        .prepare_cached(
            "SELECT sha256 FROM function_assignments \
             WHERE region = $1 AND name = $2 AND sha256 <> $3 ORDER BY id DESC LIMIT 1",
        )
        .await?;
    let row = tx.query_opt(&earlier, &[&region, &name, &current]).await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Appends an assignment, ends the staging of `(region, name)` and notifies the region's hosts
/// (delivered when the transaction commits).
async fn assign(
    tx: &Transaction<'_>,
    region: &str,
    name: &str,
    sha256: &str,
    action: &str,
) -> Result<()> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO function_assignments (region, name, sha256, action) \
             VALUES ($1, $2, $3, $4)",
        )
        .await?;
    tx.execute(&insert, &[&region, &name, &sha256, &action])
        .await?;
    let unstage = tx
        .prepare_cached("DELETE FROM function_staged WHERE region = $1 AND name = $2")
        .await?;
    tx.execute(&unstage, &[&region, &name]).await?;
    let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    tx.execute(&notify, &[&REGISTRY_CHANNEL, &notification_payload(region)])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_region_or_every_region() {
        assert_eq!(
            parse_payload(notification_payload("eu-north")),
            RegistryChange::Region("eu-north".into())
        );
        assert_eq!(
            parse_payload(notification_payload(&"x".repeat(MAX_PAYLOAD))),
            RegistryChange::All
        );
        assert!(RegistryChange::All.concerns("eu-north"));
        assert!(!RegistryChange::Region("b".into()).concerns("a"));
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [
            ArtifactKind::Validator,
            ArtifactKind::Query,
            ArtifactKind::Alerter,
            ArtifactKind::Rules,
        ] {
            assert_eq!(ArtifactKind::parse(kind.as_str()).unwrap(), kind);
        }
    }
}
