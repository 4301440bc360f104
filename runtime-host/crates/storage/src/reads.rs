//! Reads the ingest host needs from PostgreSQL: a device's latest values (to rebuild the Redis
//! cache) and its point count.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::error::Result;
use crate::model::{DeviceRef, LatestValue};
use crate::postgres::Storage;
use crate::timestamp::from_system_time;
use crate::values::value_from_row;

impl Storage {
    /// The value with the newest timestamp of every key of `device` that has points.
    ///
    /// One backward primary-key probe per series (`ORDER BY ts DESC LIMIT 1` in a lateral join):
    /// the partitions are range-ordered, so the newest one holding the series answers.
    pub async fn latest_from_postgres(
        &self,
        device: &DeviceRef,
    ) -> Result<HashMap<String, LatestValue>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT s.key, p.ts, p.v_float, p.v_int, p.v_numeric::text, p.v_bool, p.v_text \
                 FROM series s \
                 CROSS JOIN LATERAL ( \
                     SELECT ts, v_float, v_int, v_numeric, v_bool, v_text \
                     FROM points WHERE series_id = s.id ORDER BY ts DESC LIMIT 1 \
                 ) p \
                 WHERE s.org = $1 AND s.device = $2",
            )
            .await?;
        let rows = client
            .query(&select, &[&device.org, &device.device])
            .await?;
        let mut latest = HashMap::with_capacity(rows.len());
        for row in rows {
            let ts: SystemTime = row.try_get(1)?;
            let value = LatestValue {
                ts_ms: from_system_time(ts),
                value: value_from_row(&row, 2)?,
            };
            latest.insert(row.try_get(0)?, value);
        }
        Ok(latest)
    }

    /// How many points `device` has stored, over all its keys.
    pub async fn count_points(&self, device: &DeviceRef) -> Result<i64> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT count(*) FROM points p JOIN series s ON s.id = p.series_id \
                 WHERE s.org = $1 AND s.device = $2",
            )
            .await?;
        let row = client
            .query_one(&select, &[&device.org, &device.device])
            .await?;
        Ok(row.try_get(0)?)
    }
}
