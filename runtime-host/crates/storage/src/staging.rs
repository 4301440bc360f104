//! Staged deploys: a version is announced to a region before it is assigned, the region's hosts
//! compile it ahead and say so, and the deploy assigns it once they are ready, so the switch
//! itself is a swap of something already compiled.
//!
//! `registry_hosts` is the roll of hosts following the registry (each refreshes its row with
//! [`Storage::host_seen`] every few seconds and removes it with [`Storage::host_gone`]);
//! `function_staged` holds the announced versions (a stage notifies the region on the registry
//! channel, like an assignment; the assignment of `(region, name)` deletes its stages); and
//! `function_prepared` what each host made of each staged version. [`Storage::readiness`] is
//! what the deploying side polls.

use std::time::{Duration, SystemTime};

use crate::error::{Result, StorageError};
use crate::postgres::Storage;
use crate::registry::{ArtifactKind, REGISTRY_CHANNEL, notification_payload};
use crate::timestamp::from_system_time;

/// A version staged in a region, not yet assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedArtifact {
    /// The name it is staged under (`validator`, `alerter`, ...).
    pub name: String,
    /// The version (SHA-256, hex).
    pub sha256: String,
    /// What it is.
    pub kind: ArtifactKind,
    /// When it was (last) staged, in unix milliseconds: staging again is a new request.
    pub staged_at_ms: i64,
}

/// What a host made of a staged version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepareOutcome {
    /// Compiled and checked: the host swaps it in as soon as it is assigned.
    Ready,
    /// The host cannot run it (the detail says why).
    Refused,
    /// The host runs nothing under that name (say, it started without alerting).
    Skipped,
}

impl PrepareOutcome {
    /// The outcome as stored in `function_prepared.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            PrepareOutcome::Ready => "ready",
            PrepareOutcome::Refused => "refused",
            PrepareOutcome::Skipped => "skipped",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "ready" => PrepareOutcome::Ready,
            "refused" => PrepareOutcome::Refused,
            "skipped" => PrepareOutcome::Skipped,
            other => {
                return Err(StorageError::Corrupt(format!(
                    "unknown prepare outcome {other:?}"
                )));
            }
        })
    }
}

/// One live host of a region and what it made of a staged version so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReadiness {
    /// The host (see `registry_hosts`).
    pub host_id: String,
    /// `None` while the host has not finished with the version.
    pub outcome: Option<PrepareOutcome>,
    /// The host's reason, for a refusal.
    pub detail: Option<String>,
}

impl Storage {
    /// Enrols `host_id` as a live host of `region`, or refreshes it.
    pub async fn host_seen(&self, host_id: &str, region: &str) -> Result<()> {
        let client = self.client().await?;
        let upsert = client
            .prepare_cached(
                "INSERT INTO registry_hosts (host_id, region) VALUES ($1, $2) \
                 ON CONFLICT (host_id) DO UPDATE SET region = $2, seen_at = now()",
            )
            .await?;
        client.execute(&upsert, &[&host_id, &region]).await?;
        Ok(())
    }

    /// Removes `host_id` from the roll (and what it prepared): deploys stop waiting for it.
    pub async fn host_gone(&self, host_id: &str) -> Result<()> {
        let client = self.client().await?;
        let delete = client
            .prepare_cached("DELETE FROM registry_hosts WHERE host_id = $1")
            .await?;
        client.execute(&delete, &[&host_id]).await?;
        Ok(())
    }

    /// Removes the hosts not seen for `older_than`: those that died without saying so.
    pub async fn forget_silent_hosts(&self, older_than: Duration) -> Result<u64> {
        let client = self.client().await?;
        let delete = client
            .prepare_cached(
                "DELETE FROM registry_hosts \
                 WHERE seen_at < now() - $1::float8 * interval '1 second'",
            )
            .await?;
        Ok(client
            .execute(&delete, &[&older_than.as_secs_f64()])
            .await?)
    }

    /// Announces version `sha256` (stored already) as the next `name` of `region`: its hosts
    /// prepare it and record what they made of it. Staging again starts over: earlier outcomes
    /// of the region's hosts for this version are forgotten.
    pub async fn stage_artifact(&self, region: &str, name: &str, sha256: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO function_staged (region, name, sha256) VALUES ($1, $2, $3) \
                 ON CONFLICT (region, name, sha256) DO UPDATE SET staged_at = clock_timestamp()",
            )
            .await?;
        tx.execute(&upsert, &[&region, &name, &sha256]).await?;
        let forget = tx
            .prepare_cached(
                "DELETE FROM function_prepared WHERE sha256 = $2 \
                 AND host_id IN (SELECT host_id FROM registry_hosts WHERE region = $1)",
            )
            .await?;
        tx.execute(&forget, &[&region, &sha256]).await?;
        let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        tx.execute(&notify, &[&REGISTRY_CHANNEL, &notification_payload(region)])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Withdraws a stage (a deploy that gave up); the assignment withdraws its own.
    pub async fn unstage_artifact(&self, region: &str, name: &str, sha256: &str) -> Result<()> {
        let client = self.client().await?;
        let delete = client
            .prepare_cached(
                "DELETE FROM function_staged WHERE region = $1 AND name = $2 AND sha256 = $3",
            )
            .await?;
        client.execute(&delete, &[&region, &name, &sha256]).await?;
        Ok(())
    }

    /// The versions staged in `region` within the last `within`, oldest first.
    pub async fn staged_artifacts(
        &self,
        region: &str,
        within: Duration,
    ) -> Result<Vec<StagedArtifact>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT s.name, s.sha256, v.kind, s.staged_at \
                 FROM function_staged s JOIN function_versions v USING (sha256) \
                 WHERE s.region = $1 AND s.staged_at > now() - $2::float8 * interval '1 second' \
                 ORDER BY s.staged_at",
            )
            .await?;
        let rows = client
            .query(&select, &[&region, &within.as_secs_f64()])
            .await?;
        rows.iter()
            .map(|row| {
                let staged_at: SystemTime = row.try_get(3)?;
                Ok(StagedArtifact {
                    name: row.try_get(0)?,
                    sha256: row.try_get(1)?,
                    kind: ArtifactKind::parse(row.try_get(2)?)?,
                    staged_at_ms: from_system_time(staged_at),
                })
            })
            .collect()
    }

    /// Records what host `host_id` of `region` made of version `sha256` (enrolling the host if
    /// its first refresh has not happened yet).
    pub async fn record_prepared(
        &self,
        host_id: &str,
        region: &str,
        sha256: &str,
        outcome: PrepareOutcome,
        detail: Option<&str>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let enrol = tx
            .prepare_cached(
                "INSERT INTO registry_hosts (host_id, region) VALUES ($1, $2) \
                 ON CONFLICT (host_id) DO NOTHING",
            )
            .await?;
        tx.execute(&enrol, &[&host_id, &region]).await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO function_prepared (host_id, sha256, outcome, detail) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (host_id, sha256) \
                 DO UPDATE SET outcome = $3, detail = $4, prepared_at = now()",
            )
            .await?;
        tx.execute(&upsert, &[&host_id, &sha256, &outcome.as_str(), &detail])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The hosts of `region` seen within `live_within`, each with what it made of version
    /// `sha256` so far, by host id.
    pub async fn readiness(
        &self,
        region: &str,
        sha256: &str,
        live_within: Duration,
    ) -> Result<Vec<HostReadiness>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT h.host_id, p.outcome, p.detail FROM registry_hosts h \
                 LEFT JOIN function_prepared p ON p.host_id = h.host_id AND p.sha256 = $2 \
                 WHERE h.region = $1 AND h.seen_at > now() - $3::float8 * interval '1 second' \
                 ORDER BY h.host_id",
            )
            .await?;
        let rows = client
            .query(&select, &[&region, &sha256, &live_within.as_secs_f64()])
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: Option<&str> = row.try_get(1)?;
                Ok(HostReadiness {
                    host_id: row.try_get(0)?,
                    outcome: outcome.map(PrepareOutcome::parse).transpose()?,
                    detail: row.try_get(2)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for outcome in [
            PrepareOutcome::Ready,
            PrepareOutcome::Refused,
            PrepareOutcome::Skipped,
        ] {
            assert_eq!(PrepareOutcome::parse(outcome.as_str()).unwrap(), outcome);
        }
        assert!(PrepareOutcome::parse("done").is_err());
    }
}
