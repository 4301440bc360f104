//! Series ids: creating `series` rows for keys a device writes, and caching their ids so that a
//! steady stream of batches does not look them up every time.
//!
//! Ids enter the cache only after the transaction that created or read them commits: an id from
//! a rolled-back transaction would name a row that does not exist. `series` rows are never
//! deleted by Weir, so a cached id stays valid. The cache is bounded; when full it starts over.

use std::collections::HashMap;
use std::sync::Mutex;

use deadpool_postgres::Transaction;

use crate::error::Result;
use crate::model::DeviceRef;

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

/// Creates the `series` rows of `keys` that do not exist yet, and returns the ids of all of them.
///
/// Keys are inserted in sorted order, so two transactions creating overlapping keys of one
/// device wait for each other instead of deadlocking.
pub(crate) async fn create_series(
    tx: &Transaction<'_>,
    device: &DeviceRef,
    keys: &[&str],
) -> Result<HashMap<String, i64>> {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let insert = tx
        .prepare_cached(
            "INSERT INTO series (org, device, key) \
             SELECT $1, $2, k FROM unnest($3::text[]) AS k \
             ON CONFLICT (org, device, key) DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&device.org, &device.device, &sorted])
        .await?;
    let select = tx
        .prepare_cached(
            "SELECT key, id FROM series WHERE org = $1 AND device = $2 AND key = ANY($3::text[])",
        )
        .await?;
    let rows = tx
        .query(&select, &[&device.org, &device.device, &sorted])
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}
