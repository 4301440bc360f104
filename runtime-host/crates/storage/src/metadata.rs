//! Key metadata: what each device declares about its keys (type, name, unit, description, enum
//! labels, range), kept on the `series` rows, and the change notification other hosts listen to.
//!
//! A change is written and announced in one transaction: `pg_notify` inside it is delivered only
//! if it commits, so listeners never reload metadata that was rolled back. See
//! [`crate::notify`] for the receiving side.

use std::collections::BTreeMap;

use crate::error::{Result, StorageError};
use crate::model::{DeviceRef, KeyMetadataRecord};
use crate::notify::{METADATA_CHANNEL, notification_payload};
use crate::postgres::Storage;

impl Storage {
    /// Sets the metadata of `records`' keys for `device` (creating their series if needed) and
    /// notifies listeners of the device's change, atomically. A key listed twice takes its last
    /// record.
    pub async fn put_metadata(
        &self,
        device: &DeviceRef,
        records: &[KeyMetadataRecord],
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Sorted and unique: one statement may not update a row twice, and a fixed order keeps
        // concurrent writers of one device from deadlocking.
        let by_key: BTreeMap<&str, &KeyMetadataRecord> = records
            .iter()
            .map(|record| (record.key.as_str(), record))
            .collect();
        let keys: Vec<&str> = by_key.keys().copied().collect();
        let types: Vec<&str> = by_key.values().map(|r| r.data_type.as_str()).collect();
        let names: Vec<Option<&str>> = by_key.values().map(|r| r.name.as_deref()).collect();
        let units: Vec<Option<&str>> = by_key.values().map(|r| r.unit.as_deref()).collect();
        let descriptions: Vec<Option<&str>> =
            by_key.values().map(|r| r.description.as_deref()).collect();
        let value_maps: Vec<Option<String>> = by_key
            .values()
            .map(|r| value_map_json(&r.value_map))
            .collect();
        let mins: Vec<Option<f64>> = by_key.values().map(|r| r.min).collect();
        let maxs: Vec<Option<f64>> = by_key.values().map(|r| r.max).collect();

        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let existing = crate::series::series_ids(&tx, device, &keys).await?;
        let new = keys
            .iter()
            .filter(|key| !existing.contains_key(**key))
            .count();
        if new > 0 {
            let room = crate::series::key_room(&tx, device, self.key_limits).await?;
            if new > room {
                tx.rollback().await?;
                return Err(StorageError::KeyLimitExceeded(format!(
                    "{new} new keys, room for {room}: a device may have {} keys and an \
                     organisation {}",
                    self.key_limits.per_device, self.key_limits.per_org
                )));
            }
        }
        let upsert = tx
            .prepare_cached(
                "INSERT INTO series (org, device, key, data_type, name, unit, description, \
                                     value_map, min, max, metadata_updated_at) \
                 SELECT $1, $2, k, t, n, u, d, m::jsonb, lo, hi, now() \
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                             $8::text[], $9::float8[], $10::float8[]) \
                      AS r (k, t, n, u, d, m, lo, hi) \
                 ON CONFLICT (org, device, key) DO UPDATE SET \
                     data_type = EXCLUDED.data_type, name = EXCLUDED.name, \
                     unit = EXCLUDED.unit, description = EXCLUDED.description, \
                     value_map = EXCLUDED.value_map, min = EXCLUDED.min, max = EXCLUDED.max, \
                     metadata_updated_at = EXCLUDED.metadata_updated_at \
                 RETURNING (xmax = 0)",
            )
            .await?;
        let written = tx
            .query(
                &upsert,
                &[
                    &device.org,
                    &device.device,
                    &keys,
                    &types,
                    &names,
                    &units,
                    &descriptions,
                    &value_maps,
                    &mins,
                    &maxs,
                ],
            )
            .await?;
        // `xmax = 0`: the row was inserted, not updated.
        let created = written.iter().filter(|row| row.get::<_, bool>(0)).count();
        crate::series::keys_created(&tx, &device.org, created).await?;
        let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        tx.execute(&notify, &[&METADATA_CHANNEL, &notification_payload(device)])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The metadata of every key of `device` that has a declared type, sorted by key.
    pub async fn device_metadata(&self, device: &DeviceRef) -> Result<Vec<KeyMetadataRecord>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT key, data_type, name, unit, description, value_map::text, min, max \
                 FROM series WHERE org = $1 AND device = $2 AND data_type IS NOT NULL \
                 ORDER BY key",
            )
            .await?;
        let rows = client
            .query(&select, &[&device.org, &device.device])
            .await?;
        rows.iter()
            .map(|row| {
                let value_map: Option<String> = row.try_get(5)?;
                Ok(KeyMetadataRecord {
                    key: row.try_get(0)?,
                    data_type: row.try_get(1)?,
                    name: row.try_get(2)?,
                    unit: row.try_get(3)?,
                    description: row.try_get(4)?,
                    value_map: value_map
                        .as_deref()
                        .map(parse_value_map)
                        .transpose()?
                        .unwrap_or_default(),
                    min: row.try_get(6)?,
                    max: row.try_get(7)?,
                })
            })
            .collect()
    }
}

/// The value map as stored: a JSON object from the value (as a string) to its label, or NULL
/// when empty.
fn value_map_json(value_map: &[(i64, String)]) -> Option<String> {
    if value_map.is_empty() {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = value_map
        .iter()
        .map(|(value, label)| (value.to_string(), serde_json::Value::String(label.clone())))
        .collect();
    Some(serde_json::Value::Object(object).to_string())
}

fn parse_value_map(json: &str) -> Result<Vec<(i64, String)>> {
    let corrupt = || StorageError::Corrupt(format!("value_map {json} is not an object of labels"));
    let object: BTreeMap<String, String> = serde_json::from_str(json).map_err(|_| corrupt())?;
    let mut entries = object
        .into_iter()
        .map(|(value, label)| {
            value
                .parse()
                .map(|value| (value, label))
                .map_err(|_| corrupt())
        })
        .collect::<Result<Vec<(i64, String)>>>()?;
    entries.sort_by_key(|(value, _)| *value);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_maps_round_trip_sorted_by_value() {
        let map = vec![
            (-1, "fault".to_owned()),
            (0, "off".to_owned()),
            (10, "on".to_owned()),
        ];
        let json = value_map_json(&map).unwrap();
        assert_eq!(parse_value_map(&json).unwrap(), map);
        assert_eq!(value_map_json(&[]), None);
    }
}
