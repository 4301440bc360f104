//! What a stored batch still owes after its commit, kept in tier one so that nothing is lost
//! when a request is cancelled, a store fails or a host dies.
//!
//! [`Storage::store_batch_owing`] writes one `batch_followups` row in the batch's own
//! transaction: the region that took the batch (whose Redis holds the latest values) and, when
//! alert rules watch its keys, the points the alerter must evaluate. The host that took the
//! batch does the work at once and deletes the row ([`Storage::followups_done`]); a failure
//! leaves it for a retry ([`Storage::retry_followups`]), and a dead host's rows are claimed by
//! another host of the region once their `retry_at` passed ([`Storage::claim_followups`]).
//!
//! Evaluation is exactly once: [`Storage::settle_evaluation`] records the events (with their
//! webhook deliveries), stores the alerter's new states and clears the rows' `alert_points` in
//! one transaction, refusing when another evaluation cleared any of them first. The latest
//! values are idempotent (newest timestamp wins), so repairing them twice is harmless.

use std::time::Duration;

use deadpool_postgres::Transaction;

use crate::alert_states::AlertState;
use crate::error::{Result, StorageError};
use crate::events::AlertChange;
use crate::model::DeviceRef;
use crate::postgres::Storage;

/// What a batch about to be stored will owe after its commit.
#[derive(Debug, Clone, Default)]
pub struct Followup {
    /// The points the alerter must evaluate, as the pipeline encodes them (a JSON array);
    /// `None` when no rule watches the batch's keys.
    pub alert_points: Option<String>,
    /// How long the host taking the batch has to do the work before another host of its region
    /// may take it over.
    pub takeover_after: Duration,
}

/// A stored batch whose points still wait for the alerter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvaluation {
    /// The follow-up row.
    pub id: i64,
    /// The batch's id, for logs.
    pub batch_id: String,
    /// The points, as [`Followup::alert_points`] gave them.
    pub points_json: String,
}

/// A follow-up row a host claimed to work off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedFollowup {
    /// The row.
    pub id: i64,
    /// The device whose batch it is.
    pub device: DeviceRef,
    /// The batch's id, for logs.
    pub batch_id: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// How long ago the batch was stored.
    pub age: Duration,
    /// Whether its points still wait for the alerter.
    pub evaluation_pending: bool,
}

/// How many follow-ups a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FollowupCounts {
    /// Not done yet (in progress or waiting for a retry).
    pub pending: i64,
    /// Given up after the maximum age; kept for operators.
    pub failed: i64,
}

/// Records the follow-up of `batch_id` in the batch's transaction; returns its id.
pub(crate) async fn record_followup(
    tx: &Transaction<'_>,
    region: &str,
    device: &DeviceRef,
    batch_id: &str,
    followup: &Followup,
) -> Result<i64> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO batch_followups (region, org, device, batch_id, alert_points, retry_at) \
             VALUES ($1, $2, $3, $4, $5::text::jsonb, now() + $6::bigint * interval '1 millisecond') \
             RETURNING id",
        )
        .await?;
    let row = tx
        .query_one(
            &insert,
            &[
                &region,
                &device.org,
                &device.device,
                &batch_id,
                &followup.alert_points,
                &millis(followup.takeover_after),
            ],
        )
        .await?;
    Ok(row.try_get(0)?)
}

impl Storage {
    /// The oldest batches of `device` whose points wait for the alerter, at most `limit`.
    pub async fn pending_evaluations(
        &self,
        device: &DeviceRef,
        limit: i64,
    ) -> Result<Vec<PendingEvaluation>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT id, batch_id, alert_points::text FROM batch_followups \
                 WHERE org = $1 AND device = $2 AND alert_points IS NOT NULL AND failed_at IS NULL \
                 ORDER BY id LIMIT $3",
            )
            .await?;
        let rows = client
            .query(&select, &[&device.org, &device.device, &limit])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PendingEvaluation {
                    id: row.try_get(0)?,
                    batch_id: row.try_get(1)?,
                    points_json: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Stores an evaluation of `device` in one transaction: its events (with their webhook
    /// deliveries, see [`Storage::record_alert_changes`]), the alerter's new `states`, and the
    /// follow-ups in `evaluated` marked evaluated. Refused with
    /// [`StorageError::Contention`] (and nothing stored) when any of them was evaluated
    /// already, so a batch's points are evaluated exactly once. Returns each change's event id.
    pub async fn settle_evaluation(
        &self,
        device: &DeviceRef,
        changes: &[AlertChange],
        states: &[AlertState],
        evaluated: &[i64],
    ) -> Result<Vec<Option<i64>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !evaluated.is_empty() {
            let mark = tx
                .prepare_cached(
                    "UPDATE batch_followups SET alert_points = NULL \
                     WHERE id = ANY($1) AND alert_points IS NOT NULL",
                )
                .await?;
            let marked = tx.execute(&mark, &[&evaluated]).await?;
            if marked != evaluated.len() as u64 {
                tx.rollback().await?;
                return Err(StorageError::Contention(format!(
                    "batches of device {device} were evaluated by another host meanwhile"
                )));
            }
        }
        let ids = crate::events::record_changes(&tx, changes).await?;
        crate::alert_states::upsert_states(&tx, device, states).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Records that the alerter failed (with `error`, a stable code) on the batch of follow-up
    /// `id` evaluated alone; at the `give_up_after`-th failure its evaluation is given up
    /// (its points cleared). Returns whether it was given up.
    pub async fn evaluation_failed(
        &self,
        id: i64,
        error: &str,
        give_up_after: u32,
    ) -> Result<bool> {
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE batch_followups SET evaluation_failures = evaluation_failures + 1, \
                 last_error = $2, \
                 alert_points = CASE WHEN evaluation_failures + 1 >= $3 THEN NULL \
                 ELSE alert_points END \
                 WHERE id = $1 AND alert_points IS NOT NULL \
                 RETURNING alert_points IS NULL",
            )
            .await?;
        let limit = i32::try_from(give_up_after).unwrap_or(i32::MAX);
        let row = client.query_opt(&update, &[&id, &error, &limit]).await?;
        Ok(match row {
            Some(row) => row.try_get(0)?,
            // Settled by someone else meanwhile: nothing left to give up.
            None => false,
        })
    }

    /// Deletes the follow-ups in `ids` whose evaluation is done (or was never needed): their
    /// batches owe nothing any more.
    pub async fn followups_done(&self, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        let delete = client
            .prepare_cached(
                "DELETE FROM batch_followups WHERE id = ANY($1) AND alert_points IS NULL",
            )
            .await?;
        Ok(client.execute(&delete, &[&ids]).await?)
    }

    /// Records a failed attempt at the follow-ups in `ids` (`error` is a stable code): they
    /// are due again after `retry_in`.
    pub async fn retry_followups(
        &self,
        ids: &[i64],
        error: &str,
        retry_in: Duration,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE batch_followups SET last_error = $2, \
                 retry_at = now() + $3::bigint * interval '1 millisecond' \
                 WHERE id = ANY($1) AND failed_at IS NULL",
            )
            .await?;
        client
            .execute(&update, &[&ids, &error, &millis(retry_in)])
            .await?;
        Ok(())
    }

    /// Claims at most `limit` due follow-ups of `region`, oldest first, for `lease`: no other
    /// host claims them before the lease ends, and each one's attempt is counted now.
    pub async fn claim_followups(
        &self,
        region: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<ClaimedFollowup>> {
        let client = self.client().await?;
        let claim = client
            .prepare_cached(
                "WITH due AS ( \
                     SELECT id FROM batch_followups \
                     WHERE region = $1 AND failed_at IS NULL AND retry_at <= now() \
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED \
                 ) \
                 UPDATE batch_followups f SET attempts = f.attempts + 1, \
                 retry_at = now() + $3::bigint * interval '1 millisecond' \
                 FROM due WHERE f.id = due.id \
                 RETURNING f.id, f.org, f.device, f.batch_id, f.attempts, \
                 (extract(epoch FROM now() - f.created_at) * 1000)::bigint, \
                 f.alert_points IS NOT NULL",
            )
            .await?;
        let mut rows = client
            .query(&claim, &[&region, &limit, &millis(lease)])
            .await?;
        rows.sort_by_key(|row| row.get::<_, i64>(0));
        rows.iter()
            .map(|row| {
                let age_ms: i64 = row.try_get(5)?;
                Ok(ClaimedFollowup {
                    id: row.try_get(0)?,
                    device: DeviceRef::new(
                        row.try_get::<_, String>(1)?,
                        row.try_get::<_, String>(2)?,
                    ),
                    batch_id: row.try_get(3)?,
                    attempts: row.try_get(4)?,
                    age: Duration::from_millis(age_ms.max(0) as u64),
                    evaluation_pending: row.try_get(6)?,
                })
            })
            .collect()
    }

    /// Gives up the follow-ups in `ids` (kept, marked failed with `error`, never retried).
    pub async fn fail_followups(&self, ids: &[i64], error: &str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE batch_followups SET failed_at = now(), last_error = $2 \
                 WHERE id = ANY($1) AND failed_at IS NULL",
            )
            .await?;
        client.execute(&update, &[&ids, &error]).await?;
        Ok(())
    }

    /// How many follow-ups `region` holds, pending and failed.
    pub async fn followup_counts(&self, region: &str) -> Result<FollowupCounts> {
        let client = self.client().await?;
        let count = client
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE failed_at IS NULL), \
                 count(*) FILTER (WHERE failed_at IS NOT NULL) \
                 FROM batch_followups WHERE region = $1",
            )
            .await?;
        let row = client.query_one(&count, &[&region]).await?;
        Ok(FollowupCounts {
            pending: row.try_get(0)?,
            failed: row.try_get(1)?,
        })
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
