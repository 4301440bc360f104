//! Series ids: creating `series` rows for keys a device writes, and caching their ids so that a
//! steady stream of batches does not look them up every time.
//!
//! Ids enter the cache only after the transaction that created or read them commits: an id from
//! a rolled-back transaction would name a row that does not exist. `series` rows are never
//! deleted by Weir, so a cached id stays valid. The cache is bounded; when full it starts over.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use deadpool_postgres::Transaction;

use crate::error::Result;
use crate::model::{DeviceRef, KeyLimits};

/// How many series ids the cache holds before it is emptied.
const MAX_CACHED_SERIES: usize = 1_000_000;

/// Cached series ids per device and key.
#[derive(Default)]
pub(crate) struct SeriesIds {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    ids: HashMap<DeviceRef, HashMap<String, i64>>,
    len: usize,
}

impl SeriesIds {
    /// The cached ids of `keys`; keys not cached are left out.
    pub(crate) fn cached<'k>(
        &self,
        device: &DeviceRef,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> HashMap<String, i64> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(known) = cache.ids.get(device) else {
            return HashMap::new();
        };
        keys.into_iter()
            .filter_map(|key| known.get(key).map(|id| (key.to_owned(), *id)))
            .collect()
    }

    /// Remembers committed ids.
    pub(crate) fn remember(&self, device: &DeviceRef, ids: HashMap<String, i64>) {
        if ids.is_empty() {
            return;
        }
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len + ids.len() > MAX_CACHED_SERIES {
            *cache = Cache::default();
        }
        let known = cache.ids.entry(device.clone()).or_default();
        let before = known.len();
        known.extend(ids);
        let added = known.len() - before;
        cache.len += added;
    }
}

/// The series of a batch's keys: the ids of those that exist (or were created), and the new
/// keys refused by the [`KeyLimits`].
pub(crate) struct SeriesOfBatch {
    pub(crate) ids: HashMap<String, i64>,
    pub(crate) refused: Vec<String>,
}

/// Creates the `series` rows of `keys` (in batch order) that do not exist yet, as far as
/// `limits` allow, and returns the ids of all of them with the keys refused.
///
/// Creating keys takes the organisation's row of `org_key_counts` first (the count of its
/// series, kept in the same transaction), so the limits hold under concurrent batches and two
/// transactions creating keys of one organisation wait for each other instead of deadlocking.
pub(crate) async fn create_series(
    tx: &Transaction<'_>,
    device: &DeviceRef,
    keys: &[&str],
    limits: KeyLimits,
) -> Result<SeriesOfBatch> {
    let mut seen = HashSet::new();
    let keys: Vec<&str> = keys.iter().copied().filter(|k| seen.insert(*k)).collect();
    let mut ids = series_ids(tx, device, &keys).await?;
    let new: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|key| !ids.contains_key(*key))
        .collect();
    if new.is_empty() {
        return Ok(SeriesOfBatch {
            ids,
            refused: Vec::new(),
        });
    }
    let room = key_room(tx, device, limits).await?;
    let (mut allowed, refused): (Vec<&str>, Vec<&str>) = if new.len() <= room {
        (new, Vec::new())
    } else {
        let (allowed, refused) = new.split_at(room);
        (allowed.to_vec(), refused.to_vec())
    };
    if !allowed.is_empty() {
        allowed.sort_unstable();
        let insert = tx
            .prepare_cached(
                "INSERT INTO series (org, device, key) \
                 SELECT $1, $2, k FROM unnest($3::text[]) AS k \
                 ON CONFLICT (org, device, key) DO NOTHING RETURNING key, id",
            )
            .await?;
        let rows = tx
            .query(&insert, &[&device.org, &device.device, &allowed])
            .await?;
        for row in &rows {
            ids.insert(row.try_get(0)?, row.try_get(1)?);
        }
        keys_created(tx, &device.org, rows.len()).await?;
        // Keys another transaction created between the first lookup and the lock.
        let missing: Vec<&str> = allowed
            .iter()
            .copied()
            .filter(|key| !ids.contains_key(*key))
            .collect();
        if !missing.is_empty() {
            ids.extend(series_ids(tx, device, &missing).await?);
        }
    }
    Ok(SeriesOfBatch {
        ids,
        refused: refused.into_iter().map(str::to_owned).collect(),
    })
}

/// How many new keys `device` may still create under `limits`. Takes its organisation's row of
/// `org_key_counts` (created at 0 if missing) until the transaction ends, so that concurrent
/// creations of keys of one organisation take turns; the caller reports what it created with
/// [`keys_created`].
pub(crate) async fn key_room(
    tx: &Transaction<'_>,
    device: &DeviceRef,
    limits: KeyLimits,
) -> Result<usize> {
    let lock = tx
        .prepare_cached(
            "INSERT INTO org_key_counts AS c (org, keys) VALUES ($1, 0) \
             ON CONFLICT (org) DO UPDATE SET keys = c.keys RETURNING keys",
        )
        .await?;
    let org_keys: i64 = tx.query_one(&lock, &[&device.org]).await?.try_get(0)?;
    let count = tx
        .prepare_cached("SELECT count(*) FROM series WHERE org = $1 AND device = $2")
        .await?;
    let device_keys: i64 = tx
        .query_one(&count, &[&device.org, &device.device])
        .await?
        .try_get(0)?;
    let room = (limits.per_device.saturating_sub(device_keys))
        .min(limits.per_org.saturating_sub(org_keys))
        .max(0);
    Ok(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Counts `created` new series of `org` (after [`key_room`], in the same transaction).
pub(crate) async fn keys_created(tx: &Transaction<'_>, org: &str, created: usize) -> Result<()> {
    if created == 0 {
        return Ok(());
    }
    let bump = tx
        .prepare_cached("UPDATE org_key_counts SET keys = keys + $2 WHERE org = $1")
        .await?;
    tx.execute(&bump, &[&org, &(created as i64)]).await?;
    Ok(())
}

/// The ids of the existing series of `device` among `keys`.
pub(crate) async fn series_ids(
    tx: &Transaction<'_>,
    device: &DeviceRef,
    keys: &[&str],
) -> Result<HashMap<String, i64>> {
    let select = tx
        .prepare_cached(
            "SELECT key, id FROM series WHERE org = $1 AND device = $2 AND key = ANY($3::text[])",
        )
        .await?;
    let rows = tx
        .query(&select, &[&device.org, &device.device, &keys])
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}
