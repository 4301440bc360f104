//! The in-host cache of key metadata the validator needs with every batch. Entries are loaded
//! per device on first use and dropped when that device's metadata changes: on this host at
//! once, on every other host through PostgreSQL's `NOTIFY weir_metadata`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weir_storage::{DeviceRef, KeyMetadataRecord, Storage, StorageError};

use weir_runtime::validator::{DataType, KeyMetadata};

/// One device's typed keys.
pub type DeviceMetadata = Arc<HashMap<String, KeyMetadata>>;

/// Metadata per device, shared by every request of the host.
#[derive(Default)]
pub struct MetadataCache {
    devices: Mutex<HashMap<DeviceRef, DeviceMetadata>>,
}

impl MetadataCache {
    /// The metadata of `device`, from the cache or PostgreSQL.
    pub async fn get(
        &self,
        storage: &Storage,
        device: &DeviceRef,
    ) -> Result<DeviceMetadata, StorageError> {
        if let Some(found) = self.devices.lock().expect("cache lock").get(device) {
            return Ok(found.clone());
        }
        let records = storage.device_metadata(device).await?;
        let metadata: DeviceMetadata = Arc::new(
            records
                .iter()
                .filter_map(to_validator_metadata)
                .map(|meta| (meta.key.clone(), meta))
                .collect(),
        );
        self.devices
            .lock()
            .expect("cache lock")
            .insert(device.clone(), metadata.clone());
        Ok(metadata)
    }

    /// Forgets `device`'s metadata; the next batch reloads it.
    pub fn invalidate(&self, device: &DeviceRef) {
        self.devices.lock().expect("cache lock").remove(device);
    }

    /// Forgets everything (after missing notifications, e.g. a lost listener connection).
    pub fn invalidate_all(&self) {
        self.devices.lock().expect("cache lock").clear();
    }
}

/// The validator's view of a stored record; `None` for an untyped key.
fn to_validator_metadata(record: &KeyMetadataRecord) -> Option<KeyMetadata> {
    use weir_validate::DataType as T;
    let data_type = match weir_validate::DataType::parse(&record.data_type)? {
        T::F64 => DataType::Float64,
        T::F32 => DataType::Float32,
        T::I8 => DataType::Int8,
        T::U8 => DataType::Uint8,
        T::I16 => DataType::Int16,
        T::U16 => DataType::Uint16,
        T::I32 => DataType::Int32,
        T::U32 => DataType::Uint32,
        T::I64 => DataType::Int64,
        T::U64 => DataType::Uint64,
        T::Bool => DataType::Boolean,
        T::Text => DataType::Text,
        T::Enum => DataType::Enumeration,
    };
    Some(KeyMetadata {
        key: record.key.clone(),
        data_type,
        min: record.min,
        max: record.max,
        value_map: record.value_map.clone(),
    })
}
