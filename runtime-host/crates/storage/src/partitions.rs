//! Monthly partitions of `points`: creating them, and remembering which exist so that the write
//! path does no DDL for months it has seen.
//!
//! Partitions are created ahead at start-up and by [`Storage::maintain`], and on demand when a
//! batch touches a month not known yet (back-filled data from a device that was offline, a clock
//! corrected after NTP sync). On-demand creation runs before, and outside, the batch's data
//! transaction: `CREATE TABLE ... PARTITION OF` briefly takes a strong lock on `points`, which
//! must not be held while the batch's rows are written. An advisory lock serialises hosts
//! creating the same partition at once (a race `IF NOT EXISTS` alone does not settle).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use tracing::debug;

use crate::error::Result;
use crate::postgres::Storage;
use crate::schema::{PARTITION_LOCK, partition_ddl, partition_name};
use crate::timestamp::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, Month};

/// The months whose partitions this process has created or found to exist.
#[derive(Default)]
pub(crate) struct KnownPartitions {
    months: Mutex<HashSet<Month>>,
}

impl KnownPartitions {
    fn missing(&self, months: impl IntoIterator<Item = Month>) -> BTreeSet<Month> {
        let known = self
            .months
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        months
            .into_iter()
            .filter(|month| !known.contains(month))
            .collect()
    }

    fn remember(&self, months: impl IntoIterator<Item = Month>) {
        let mut known = self
            .months
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        known.extend(months);
    }

    /// Forgets `months`, e.g. after an insert found one of them gone (detached by an operator or
    /// a tiering job), so the next [`Storage::ensure_months`] checks them again.
    pub(crate) fn forget(&self, months: impl IntoIterator<Item = Month>) {
        let mut known = self
            .months
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for month in months {
            known.remove(&month);
        }
    }
}

impl Storage {
    /// Creates every monthly partition of `points` that covers `from_ms..=to_ms` (ms since the
    /// Unix epoch, clamped to the range storage accepts) and does not exist yet.
    pub async fn ensure_partitions(&self, from_ms: i64, to_ms: i64) -> Result<()> {
        let from_ms = from_ms.max(MIN_TIMESTAMP_MS);
        let to_ms = to_ms.min(MAX_TIMESTAMP_MS - 1);
        if from_ms > to_ms {
            return Ok(());
        }
        let last = Month::of_ms(to_ms);
        let mut months = Vec::new();
        let mut month = Month::of_ms(from_ms);
        while month <= last {
            months.push(month);
            month = month.plus(1);
        }
        self.ensure_months(months).await
    }

    /// Creates the partitions of those `months` this process does not know to exist.
    pub(crate) async fn ensure_months(
        &self,
        months: impl IntoIterator<Item = Month>,
    ) -> Result<()> {
        let missing = self.inner.partitions.missing(months);
        if missing.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        tx.execute(&lock, &[&PARTITION_LOCK]).await?;
        for month in &missing {
            tx.batch_execute(&partition_ddl(*month)).await?;
            debug!(partition = %partition_name(*month), "partition ensured");
        }
        tx.commit().await?;
        self.inner.partitions.remember(missing);
        Ok(())
    }
}
