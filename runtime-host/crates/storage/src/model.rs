//! The values that cross the storage boundary: devices, points, batch outcomes, key metadata,
//! latest values and API tokens. Plain data; the modules that store them know how.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A device: the organisation (certificate O) and device name (certificate CN) it connects as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceRef {
    /// The organisation, from the certificate's O.
    pub org: String,
    /// The device name, from the certificate's CN.
    pub device: String,
}

impl DeviceRef {
    /// A device of `org` named `device`.
    pub fn new(org: impl Into<String>, device: impl Into<String>) -> DeviceRef {
        DeviceRef {
            org: org.into(),
            device: device.into(),
        }
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.device)
    }
}

/// A point's value, as validated for its key's type.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredValue {
    /// A float (`f32` and `f64` keys).
    Float(f64),
    /// A signed integer (`i8`..`i64` keys, unsigned ones up to `i64::MAX`, enums).
    Int(i64),
    /// An unsigned integer above `i64::MAX`. Smaller values are stored, and read back, as
    /// [`StoredValue::Int`]; [`StoredValue::unsigned`] picks the right variant.
    Uint(u64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Text(String),
}

impl StoredValue {
    /// `value` as an [`Int`](StoredValue::Int) when it fits, a [`Uint`](StoredValue::Uint) above.
    pub fn unsigned(value: u64) -> StoredValue {
        match i64::try_from(value) {
            Ok(value) => StoredValue::Int(value),
            Err(_) => StoredValue::Uint(value),
        }
    }

    /// The canonical form storage keeps: a `Uint` that fits an `i64` becomes an `Int`.
    pub fn normalized(&self) -> StoredValue {
        match self {
            StoredValue::Uint(value) => StoredValue::unsigned(*value),
            other => other.clone(),
        }
    }

    /// Whether two values count as the same point value: equal after normalisation, with NaN
    /// equal to NaN (a re-sent NaN is a duplicate, not a conflict).
    pub fn same_as(&self, other: &StoredValue) -> bool {
        match (self.normalized(), other.normalized()) {
            (StoredValue::Float(a), StoredValue::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for StoredValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredValue::Float(value) => write!(f, "{value:?}"),
            StoredValue::Int(value) => write!(f, "{value}"),
            StoredValue::Uint(value) => write!(f, "{value}"),
            StoredValue::Bool(value) => write!(f, "{value}"),
            StoredValue::Text(value) => write!(f, "{value:?}"),
        }
    }
}

/// A validated point of a batch, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPoint {
    /// The point's position in the device's batch (reported back with conflicts).
    pub index: usize,
    /// The key (series name within the device).
    pub key: String,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The value.
    pub value: StoredValue,
}

/// A point refused because its series already holds a different value at that timestamp.
///
/// Policy: the first value stored for a series and timestamp wins. A later, different value is
/// rejected with code [`Conflict::CODE`] and never overwrites it; an identical value is accepted
/// as an idempotent duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The point's position in its batch.
    pub index: usize,
    /// The point's key.
    pub key: String,
    /// A message naming the kept and the rejected value.
    pub message: String,
}

impl Conflict {
    /// The error code of a conflicting point (`"conflict"`, from `weir_contract::reasons`).
    pub const CODE: &'static str = weir_contract::reasons::Reason::Conflict.code();
}

/// A point refused because its key is new and its device or organisation already has as many
/// keys as [`KeyLimits`] allow; the rest of its batch is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverKeyLimit {
    /// The point's position in its batch.
    pub index: usize,
    /// The point's key.
    pub key: String,
    /// A message naming the limit.
    pub message: String,
}

impl OverKeyLimit {
    /// The error code (`"key_limit_exceeded"`, from `weir_contract::reasons`).
    pub const CODE: &'static str = weir_contract::reasons::Reason::KeyLimitExceeded.code();
}

/// How many keys (series) one device and one organisation may have; new keys beyond them are
/// refused ([`OverKeyLimit`]). Unlimited by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// Keys of one device.
    pub per_device: i64,
    /// Keys of all devices of one organisation.
    pub per_org: i64,
}

impl Default for KeyLimits {
    fn default() -> Self {
        KeyLimits {
            per_device: i64::MAX,
            per_org: i64::MAX,
        }
    }
}

/// What storing one batch did, handed to the receipt builder before commit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// Points newly stored.
    pub stored: usize,
    /// Points already stored with the same value (re-sent): accepted, not stored twice.
    pub idempotent: usize,
    /// Points refused because a different value is stored for their series and timestamp.
    pub conflicts: Vec<Conflict>,
    /// Points refused because their key is new and over a [`KeyLimits`] limit.
    pub over_key_limit: Vec<OverKeyLimit>,
}

/// The result of [`Storage::store_batch`](crate::Storage::store_batch).
#[derive(Debug, Clone, PartialEq)]
pub enum BatchWrite {
    /// The batch was new and is committed.
    Stored {
        /// Points newly stored.
        stored: usize,
        /// Points already stored with the same value.
        idempotent: usize,
        /// Points refused because a different value is stored for their series and timestamp.
        conflicts: Vec<Conflict>,
        /// Points refused because their key is new and over a [`KeyLimits`] limit.
        over_key_limit: Vec<OverKeyLimit>,
        /// The region the device wrote through before, when this batch moved it to this
        /// storage's region ([`Storage::in_region`](crate::Storage::in_region)); `None` when it
        /// stayed, on its first batch, or when no region is set.
        moved_from: Option<String>,
        /// The batch's follow-up row, when it was stored with one
        /// ([`Storage::store_batch_owing`](crate::Storage::store_batch_owing)).
        followup: Option<i64>,
    },
    /// The device already sent a batch with this id: nothing was stored again; this is the
    /// receipt recorded the first time.
    Duplicate {
        /// The receipt JSON stored with the first copy of the batch.
        receipt: serde_json::Value,
    },
}

/// The metadata of one key, as set by the device that owns it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyMetadataRecord {
    /// The key.
    pub key: String,
    /// The data type: `f64`, `f32`, `i16`, `u32`, `u64`, `bool`, `string`, `enum`...
    pub data_type: String,
    /// A short human name.
    pub name: Option<String>,
    /// The unit (SenML or one of Weir's extras).
    pub unit: Option<String>,
    /// A longer human description.
    pub description: Option<String>,
    /// Labels of enum values, sorted by value.
    pub value_map: Vec<(i64, String)>,
    /// The lowest plausible value.
    pub min: Option<f64>,
    /// The highest plausible value.
    pub max: Option<f64>,
}

/// The value of a key with the newest timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestValue {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The value.
    pub value: StoredValue,
}

/// A token just created: the only time its secret is known (storage keeps its hash).
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The token's id, for listing and revoking.
    pub id: i64,
    /// The organisation whose data the token may read.
    pub org: String,
    /// What the token is for, for people.
    pub name: Option<String>,
    /// The bearer secret: `weir_` and 64 hex digits. Show it once; it cannot be recovered.
    pub secret: String,
}

/// Debug output leaves the secret out, so that logging a token does not leak it.
impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("org", &self.org)
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token's id.
    pub id: i64,
    /// The organisation whose data the token may read.
    pub org: String,
    /// What the token is for, for people.
    pub name: Option<String>,
    /// When it was created, in ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Whether it has been revoked (a revoked token authenticates nothing).
    pub revoked: bool,
}
