//! The write path: one device batch stored exactly once, in one transaction.
//!
//! Devices deliver at least once, so the same batch, and the same points, arrive again after a
//! lost acknowledgement. [`Storage::store_batch`] turns that into exactly-once storage:
//!
//! 1. create the `series` rows of new keys (ids cached after commit) as far as the
//!    [`KeyLimits`](crate::KeyLimits) allow; the points of refused keys are left out
//!    ([`OverKeyLimit`]);
//! 2. insert all points in one statement from arrays, skipping `(series, ts)` already stored;
//! 3. in a second statement (which sees rows committed meanwhile by other transactions), compare
//!    each skipped point with the stored value: the same value is an idempotent duplicate, a
//!    different one a [`Conflict`] — the first value stored wins and is never overwritten;
//! 4. record the batch id with the receipt built from the outcome
//!    (`INSERT INTO batches ... ON CONFLICT DO NOTHING`): if a copy of the batch was recorded
//!    before, roll back and answer with that copy's receipt. Two copies racing each other meet
//!    on the points' primary key first; the second waits for the first, and then on the batch
//!    row sees it and rolls back;
//! 5. commit.
//!
//! Only when `store_batch` returns `Ok` is the batch durable: the caller acknowledges the device
//! after that, never before.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::error::SqlState;
use tracing::warn;

use crate::error::{Result, StorageError};
use crate::followups::{Followup, record_followup};
use crate::model::{
    BatchOutcome, BatchWrite, Conflict, DeviceRef, NewPoint, OverKeyLimit, StoredValue,
};
use crate::postgres::Storage;
use crate::series::create_series;
use crate::timestamp::{Month, from_system_time, timestamp_in_range, to_system_time};
use crate::values::{ValueArrays, value_from_row};

/// How one attempt at writing a batch ended.
enum Attempt {
    Done(BatchWrite),
    /// A partition the batch needs is gone although this process knew it: check and retry.
    MissingPartition,
}

impl Storage {
    /// Stores the batch `batch_id` of `device` exactly once and returns what happened.
    ///
    /// `receipt` builds, from the outcome, the JSON receipt kept with the batch: a re-sent batch
    /// is answered with [`BatchWrite::Duplicate`] carrying that first receipt, and nothing is
    /// stored twice (also when two copies race). Points whose series already holds a value at
    /// their timestamp are idempotent when the value is the same and [`Conflict`]s otherwise;
    /// neither fails the batch. Timestamps must lie in
    /// [`MIN_TIMESTAMP_MS`](crate::MIN_TIMESTAMP_MS)..[`MAX_TIMESTAMP_MS`](crate::MAX_TIMESTAMP_MS)
    /// (the ingest layer validates them first); months not partitioned yet are created first.
    ///
    /// The batch is durable once this returns `Ok`; acknowledge the device only then. On `Err`
    /// nothing of the batch is stored ([`StorageError::is_retryable`] says whether a retry
    /// later may succeed).
    pub async fn store_batch<F>(
        &self,
        device: &DeviceRef,
        batch_id: &str,
        points: &[NewPoint],
        receipt: F,
    ) -> Result<BatchWrite>
    where
        F: FnOnce(&BatchOutcome) -> serde_json::Value,
    {
        self.store_batch_owing(device, batch_id, points, |outcome| (receipt(outcome), None))
            .await
    }

    /// [`store_batch`](Self::store_batch), where `receipt` also says what the batch owes after
    /// its commit (see `followups`), recorded in the same transaction: the follow-up's id comes
    /// back in [`BatchWrite::Stored`]. A duplicate records nothing.
    pub async fn store_batch_owing<F>(
        &self,
        device: &DeviceRef,
        batch_id: &str,
        points: &[NewPoint],
        receipt: F,
    ) -> Result<BatchWrite>
    where
        F: FnOnce(&BatchOutcome) -> (serde_json::Value, Option<Followup>),
    {
        if let Some(point) = points.iter().find(|point| !timestamp_in_range(point.ts_ms)) {
            return Err(StorageError::TimestampOutOfRange {
                index: point.index,
                ts_ms: point.ts_ms,
            });
        }
        let months: BTreeSet<Month> = points
            .iter()
            .map(|point| Month::of_ms(point.ts_ms))
            .collect();
        self.ensure_months(months.iter().copied()).await?;
        let mut receipt = Some(receipt);
        let mut partitions_checked = false;
        let mut contention_retried = false;
        loop {
            match self
                .write_batch(device, batch_id, points, &mut receipt)
                .await
            {
                Ok(Attempt::Done(write)) => return Ok(write),
                Ok(Attempt::MissingPartition) if !partitions_checked => {
                    partitions_checked = true;
                    self.inner.partitions.forget(months.iter().copied());
                    self.ensure_months(months.iter().copied()).await?;
                }
                Ok(Attempt::MissingPartition) => {
                    return Err(StorageError::Query(
                        "a partition of points disappeared twice while storing a batch".into(),
                    ));
                }
                // Rolled back before the receipt was built: running it again is safe.
                Err(StorageError::Contention(reason))
                    if !contention_retried && receipt.is_some() =>
                {
                    contention_retried = true;
                    warn!(%device, batch_id, %reason, "retrying a batch that lost a race");
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One transaction writing the batch; `receipt` is taken only once the points are written.
    async fn write_batch<F>(
        &self,
        device: &DeviceRef,
        batch_id: &str,
        points: &[NewPoint],
        receipt: &mut Option<F>,
    ) -> Result<Attempt>
    where
        F: FnOnce(&BatchOutcome) -> (serde_json::Value, Option<Followup>),
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;

        let keys: Vec<&str> = points.iter().map(|point| point.key.as_str()).collect();
        let mut ids = self.inner.series.cached(device, keys.iter().copied());
        let uncached: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|key| !ids.contains_key(*key))
            .collect();
        let (created, refused) = if uncached.is_empty() {
            (HashMap::new(), Vec::new())
        } else {
            let series = create_series(&tx, device, &uncached, self.key_limits).await?;
            (series.ids, series.refused)
        };
        ids.extend(created.iter().map(|(key, id)| (key.clone(), *id)));

        // Points of refused keys are left out; the rest of the batch is stored.
        let kept: Vec<NewPoint>;
        let mut over_key_limit = Vec::new();
        let points = if refused.is_empty() {
            points
        } else {
            let refused: HashSet<&str> = refused.iter().map(String::as_str).collect();
            let (out, keep): (Vec<&NewPoint>, Vec<&NewPoint>) = points
                .iter()
                .partition(|point| refused.contains(point.key.as_str()));
            over_key_limit = out
                .into_iter()
                .map(|point| OverKeyLimit {
                    index: point.index,
                    key: point.key.clone(),
                    message: format!(
                        "{} is a new key and {device} or its organisation has as many keys as \
                         allowed ({} per device, {} per organisation)",
                        point.key, self.key_limits.per_device, self.key_limits.per_org
                    ),
                })
                .collect();
            kept = keep.into_iter().cloned().collect();
            &kept
        };

        let Some(mut outcome) = insert_points(&tx, points, &ids).await? else {
            tx.rollback().await?;
            return Ok(Attempt::MissingPartition);
        };
        outcome.over_key_limit = over_key_limit;

        let build_receipt = receipt.take().ok_or_else(|| {
            StorageError::Query("internal: the batch receipt was built twice".into())
        })?;
        let (receipt, followup) = build_receipt(&outcome);
        let receipt_json = serde_json::to_string(&receipt).map_err(|err| {
            StorageError::Query(format!("cannot encode the batch receipt: {err}"))
        })?;
        // The batch row goes in last, with its receipt: one statement instead of a claim and an
        // update. A copy of this batch committed meanwhile (or before) makes it conflict; then
        // this attempt stores nothing and answers with that copy's receipt.
        if !record_batch(&tx, device, batch_id, &receipt_json).await? {
            tx.rollback().await?;
            let receipt = stored_receipt(&client, device, batch_id).await?;
            return Ok(Attempt::Done(BatchWrite::Duplicate { receipt }));
        }
        let moved_from = match &self.region {
            Some(region) => crate::regions::track(&tx, device, region).await?,
            None => None,
        };
        let followup = match &followup {
            Some(followup) => {
                let region = self.region.as_deref().unwrap_or("");
                Some(record_followup(&tx, region, device, batch_id, followup).await?)
            }
            None => None,
        };
        tx.commit().await?;
        self.inner.series.remember(device, created);

        let BatchOutcome {
            stored,
            idempotent,
            conflicts,
            over_key_limit,
        } = outcome;
        Ok(Attempt::Done(BatchWrite::Stored {
            stored,
            idempotent,
            conflicts,
            over_key_limit,
            moved_from,
            followup,
        }))
    }
}

/// Records `batch_id` of `device` with its receipt; false when a copy was recorded before (the
/// batch is a resend).
async fn record_batch(
    tx: &Transaction<'_>,
    device: &DeviceRef,
    batch_id: &str,
    receipt_json: &str,
) -> Result<bool> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO batches (org, device, batch_id, receipt) VALUES ($1, $2, $3, $4::text::jsonb) \
             ON CONFLICT (org, device, batch_id) DO NOTHING RETURNING 1",
        )
        .await?;
    let row = tx
        .query_opt(
            &insert,
            &[&device.org, &device.device, &batch_id, &receipt_json],
        )
        .await?;
    Ok(row.is_some())
}

/// The receipt stored with an earlier copy of the batch (`null` if it has since been removed by
/// retention).
async fn stored_receipt(
    client: &impl GenericClient,
    device: &DeviceRef,
    batch_id: &str,
) -> Result<serde_json::Value> {
    let select = client
        .prepare_cached(
            "SELECT receipt::text FROM batches WHERE org = $1 AND device = $2 AND batch_id = $3",
        )
        .await?;
    let row = client
        .query_opt(&select, &[&device.org, &device.device, &batch_id])
        .await?;
    let Some(text) = row.and_then(|row| row.get::<_, Option<String>>(0)) else {
        return Ok(serde_json::Value::Null);
    };
    serde_json::from_str(&text)
        .map_err(|err| StorageError::Corrupt(format!("stored batch receipt is not JSON: {err}")))
}

/// Inserts the points (steps 3 and 4) and sorts each into stored, idempotent or conflicting.
/// `None` when a partition the points need does not exist.
async fn insert_points(
    tx: &Transaction<'_>,
    points: &[NewPoint],
    ids: &HashMap<String, i64>,
) -> Result<Option<BatchOutcome>> {
    // The first point of each (series, ts) in the batch is a candidate for insertion; later ones
    // are compared with whatever ends up stored, like points re-sent in another batch.
    let mut first_seen = HashSet::new();
    let mut candidates = Vec::new();
    let mut repeats = Vec::new();
    for point in points {
        let series_id = *ids.get(&point.key).ok_or_else(|| {
            StorageError::Query(format!("internal: no series id for key {}", point.key))
        })?;
        if first_seen.insert((series_id, point.ts_ms)) {
            candidates.push((series_id, point));
        } else {
            repeats.push((series_id, point));
        }
    }
    // Sorted rows take row locks in one order, so concurrent batches cannot deadlock.
    candidates.sort_by_key(|(series_id, point)| (*series_id, point.ts_ms));

    let mut outcome = BatchOutcome::default();
    let mut inserted = HashSet::new();
    if !candidates.is_empty() {
        let series_ids: Vec<i64> = candidates.iter().map(|(id, _)| *id).collect();
        let times: Vec<SystemTime> = candidates
            .iter()
            .map(|(_, point)| to_system_time(point.ts_ms))
            .collect();
        let mut values = ValueArrays::default();
        for (_, point) in &candidates {
            values.push(&point.value);
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO points (series_id, ts, v_float, v_int, v_numeric, v_bool, v_text) \
                 SELECT s, t, f, i, n::numeric, b, x \
                 FROM unnest($1::int8[], $2::timestamptz[], $3::float8[], $4::int8[], \
                             $5::text[], $6::bool[], $7::text[]) AS u (s, t, f, i, n, b, x) \
                 ON CONFLICT (series_id, ts) DO NOTHING \
                 RETURNING series_id, ts",
            )
            .await?;
        let inserted_rows = tx
            .query(
                &insert,
                &[
                    &series_ids,
                    &times,
                    &values.float,
                    &values.int,
                    &values.numeric,
                    &values.boolean,
                    &values.text,
                ],
            )
            .await;
        let rows = match inserted_rows {
            Ok(rows) => rows,
            Err(err) if is_missing_partition(&err) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        for row in rows {
            let time: SystemTime = row.try_get(1)?;
            inserted.insert((row.try_get::<_, i64>(0)?, from_system_time(time)));
        }
        outcome.stored = inserted.len();
    }

    let mut to_compare: Vec<(i64, &NewPoint)> = candidates
        .into_iter()
        .filter(|(series_id, point)| !inserted.contains(&(*series_id, point.ts_ms)))
        .collect();
    to_compare.extend(repeats);
    if to_compare.is_empty() {
        return Ok(Some(outcome));
    }

    let stored = stored_values(tx, &to_compare).await?;
    for (series_id, point) in to_compare {
        match stored.get(&(series_id, point.ts_ms)) {
            Some(existing) if existing.same_as(&point.value) => outcome.idempotent += 1,
            Some(existing) => outcome.conflicts.push(Conflict {
                index: point.index,
                key: point.key.clone(),
                message: format!(
                    "{} at {} ms already has the value {existing}; the different value {} is \
                     rejected (the first value stored for a timestamp wins)",
                    point.key, point.ts_ms, point.value
                ),
            }),
            // Skipped by ON CONFLICT yet not found: only possible if the row was deleted in
            // between. Failing the batch (the device retries) beats guessing.
            None => {
                return Err(StorageError::Query(format!(
                    "the stored point of {} at {} ms vanished while the batch was written",
                    point.key, point.ts_ms
                )));
            }
        }
    }
    outcome.conflicts.sort_by_key(|conflict| conflict.index);
    Ok(Some(outcome))
}

/// The stored values at the `(series, ts)` of `points`, read by a statement of its own so that
/// rows committed by concurrent transactions after the insert began are visible.
async fn stored_values(
    tx: &Transaction<'_>,
    points: &[(i64, &NewPoint)],
) -> Result<HashMap<(i64, i64), StoredValue>> {
    let mut pairs: Vec<(i64, i64)> = points
        .iter()
        .map(|(id, point)| (*id, point.ts_ms))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let series_ids: Vec<i64> = pairs.iter().map(|(id, _)| *id).collect();
    let times: Vec<SystemTime> = pairs.iter().map(|(_, ts)| to_system_time(*ts)).collect();
    // The bounds let PostgreSQL skip partitions outside the batch's time span.
    let earliest = times.iter().min().copied();
    let latest = times.iter().max().copied();
    let select = tx
        .prepare_cached(
            "SELECT p.series_id, p.ts, p.v_float, p.v_int, p.v_numeric::text, p.v_bool, p.v_text \
             FROM unnest($1::int8[], $2::timestamptz[]) AS u (s, t) \
             JOIN points p ON p.series_id = u.s AND p.ts = u.t \
             WHERE p.ts BETWEEN $3 AND $4",
        )
        .await?;
    let rows = tx
        .query(&select, &[&series_ids, &times, &earliest, &latest])
        .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        let time: SystemTime = row.try_get(1)?;
        let value = value_from_row(&row, 2)?;
        stored.insert((row.try_get(0)?, from_system_time(time)), value);
    }
    Ok(stored)
}

/// Whether an insert failed because no partition of `points` covers a row.
fn is_missing_partition(err: &tokio_postgres::Error) -> bool {
    // The table's own CHECK constraint is named; "no partition of relation" errors name none.
    err.as_db_error()
        .is_some_and(|db| *db.code() == SqlState::CHECK_VIOLATION && db.constraint().is_none())
}
