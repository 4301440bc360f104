//! The deploying side of staged deploys: before a function version is assigned to a region,
//! [`FunctionRegistry::stage`] announces it, waits until every live host of the region has
//! compiled and checked it (see [`prepare`](super::prepare)), and reports the progress, so that
//! the assignment which follows is a swap on every host at once rather than a compile on each.

use std::time::Instant;

use weir_storage::{HostReadiness, PrepareOutcome};

use super::prepare::LIVE_WITHIN;
use super::*;

/// How long a deploy waits by default for the region's hosts to prepare a version before it
/// assigns it anyway (the hosts not ready then compile it when they switch).
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a deploy looks at the hosts' progress.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A deploy reports every change of the hosts' readiness, and this often while nothing changes.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Where a staged version stands on the live hosts of its region.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// Every live host of the region and its outcome so far.
    pub hosts: Vec<HostReadiness>,
    /// Since the version was staged.
    pub elapsed: Duration,
}

impl Readiness {
    /// How many hosts are done with the version (ready, or running nothing under its name).
    pub fn done(&self) -> usize {
        self.hosts
            .iter()
            .filter(|host| {
                matches!(
                    host.outcome,
                    Some(PrepareOutcome::Ready | PrepareOutcome::Skipped)
                )
            })
            .count()
    }

    /// Whether every live host is done with the version.
    pub fn complete(&self) -> bool {
        self.done() == self.hosts.len()
    }

    /// The first host that refused the version, if any.
    pub fn refusal(&self) -> Option<&HostReadiness> {
        self.hosts
            .iter()
            .find(|host| host.outcome == Some(PrepareOutcome::Refused))
    }

    /// The hosts still preparing.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .iter()
            .filter(|host| host.outcome.is_none())
            .map(|host| host.host_id.as_str())
    }
}

/// What a deploy reports its progress to: called with every change of the hosts' readiness,
/// and every few seconds while there is none.
pub type Progress<'a> = &'a mut (dyn FnMut(&Readiness) + Send);

impl FunctionRegistry {
    /// Stages version `sha256` (stored already) as the next `name` of `region` and waits until
    /// every live host of the region has prepared it, or [`prepare_timeout`] has passed (then
    /// the hosts still preparing are logged, and the deploy goes on). A version a host refuses
    /// is withdrawn and the error names the host and its reason: nothing is assigned.
    ///
    /// [`prepare_timeout`]: FunctionRegistry::with_prepare_timeout
    pub(super) async fn stage(
        &self,
        region: &str,
        name: FunctionName,
        sha256: &str,
        progress: Progress<'_>,
    ) -> anyhow::Result<Readiness> {
        self.storage
            .stage_artifact(region, name.as_str(), sha256)
            .await?;
        let started = Instant::now();
        let mut reported: Option<(Vec<HostReadiness>, Instant)> = None;
        loop {
            let readiness = Readiness {
                hosts: self.storage.readiness(region, sha256, LIVE_WITHIN).await?,
                elapsed: started.elapsed(),
            };
            let report = match &reported {
                Some((hosts, at)) => *hosts != readiness.hosts || at.elapsed() >= REPORT_EVERY,
                None => true,
            };
            if report {
                progress(&readiness);
                reported = Some((readiness.hosts.clone(), Instant::now()));
            }
            if let Some(refusal) = readiness.refusal() {
                self.storage
                    .unstage_artifact(region, name.as_str(), sha256)
                    .await?;
                anyhow::bail!(
                    "refused: host {} of region {region} cannot run this {name}: {}",
                    refusal.host_id,
                    refusal.detail.as_deref().unwrap_or("no reason given")
                );
            }
            if readiness.complete() {
                return Ok(readiness);
            }
            if readiness.elapsed >= self.prepare_timeout {
                let pending: Vec<&str> = readiness.pending().collect();
                tracing::warn!(%region, function = %name, version = %sha256, ?pending, "hosts did not prepare the version in time; assigning it anyway: they compile it when they switch");
                return Ok(readiness);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, outcome: Option<PrepareOutcome>) -> HostReadiness {
        HostReadiness {
            host_id: id.into(),
            outcome,
            detail: None,
        }
    }

    #[test]
    fn readiness_counts_ready_and_skipped_hosts_as_done() {
        let readiness = Readiness {
            hosts: vec![
                host("a", Some(PrepareOutcome::Ready)),
                host("b", Some(PrepareOutcome::Skipped)),
                host("c", None),
            ],
            elapsed: Duration::ZERO,
        };
        assert_eq!(readiness.done(), 2);
        assert!(!readiness.complete());
        assert_eq!(readiness.pending().collect::<Vec<_>>(), ["c"]);
        assert!(readiness.refusal().is_none());
        let empty = Readiness {
            hosts: vec![],
            elapsed: Duration::ZERO,
        };
        assert!(empty.complete(), "a region without hosts waits for nobody");
    }

    #[test]
    fn a_refusing_host_is_found() {
        let readiness = Readiness {
            hosts: vec![
                host("a", Some(PrepareOutcome::Ready)),
                host("b", Some(PrepareOutcome::Refused)),
            ],
            elapsed: Duration::ZERO,
        };
        assert_eq!(readiness.refusal().map(|h| h.host_id.as_str()), Some("b"));
        assert!(!readiness.complete());
    }
}
