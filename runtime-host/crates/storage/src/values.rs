//! How a [`StoredValue`] maps onto the value columns of `points` (`v_float`, `v_int`,
//! `v_numeric`, `v_bool`, `v_text`: exactly one is set) and back.
//!
//! Integers above `i64::MAX` go to `numeric`, which the driver cannot bind without extra
//! dependencies, so they travel as decimal text and are cast in SQL (`$n::text[]` then
//! `::numeric`); reads select `v_numeric::text`. Every statement that reads values selects the
//! five columns in this order: `v_float, v_int, v_numeric::text, v_bool, v_text`.

use tokio_postgres::Row;

use crate::error::{Result, StorageError};
use crate::model::StoredValue;

/// Values laid out as one array per column, for `unnest` in a single INSERT.
#[derive(Default)]
pub(crate) struct ValueArrays<'a> {
    pub(crate) float: Vec<Option<f64>>,
    pub(crate) int: Vec<Option<i64>>,
    pub(crate) numeric: Vec<Option<String>>,
    pub(crate) boolean: Vec<Option<bool>>,
    pub(crate) text: Vec<Option<&'a str>>,
}

impl<'a> ValueArrays<'a> {
    /// Appends one row's values.
    pub(crate) fn push(&mut self, value: &'a StoredValue) {
        let (mut float, mut int, mut numeric, mut boolean, mut text) =
            (None, None, None, None, None);
        match value {
            StoredValue::Float(value) => float = Some(*value),
            StoredValue::Int(value) => int = Some(*value),
            StoredValue::Uint(value) => match i64::try_from(*value) {
                Ok(small) => int = Some(small),
                Err(_) => numeric = Some(value.to_string()),
            },
            StoredValue::Bool(value) => boolean = Some(*value),
            StoredValue::Text(value) => text = Some(value.as_str()),
        }
        self.float.push(float);
        self.int.push(int);
        self.numeric.push(numeric);
        self.boolean.push(boolean);
        self.text.push(text);
    }
}

/// The value in columns `first..first + 5` of `row` (`v_float, v_int, v_numeric::text, v_bool,
/// v_text`).
pub(crate) fn value_from_row(row: &Row, first: usize) -> Result<StoredValue> {
    if let Some(value) = row.try_get::<_, Option<f64>>(first)? {
        return Ok(StoredValue::Float(value));
    }
    if let Some(value) = row.try_get::<_, Option<i64>>(first + 1)? {
        return Ok(StoredValue::Int(value));
    }
    if let Some(text) = row.try_get::<_, Option<String>>(first + 2)? {
        return text.parse().map(StoredValue::unsigned).map_err(|_| {
            StorageError::Corrupt(format!(
                "v_numeric {text} is not an unsigned 64-bit integer"
            ))
        });
    }
    if let Some(value) = row.try_get::<_, Option<bool>>(first + 3)? {
        return Ok(StoredValue::Bool(value));
    }
    if let Some(value) = row.try_get::<_, Option<String>>(first + 4)? {
        return Ok(StoredValue::Text(value));
    }
    Err(StorageError::Corrupt("a point has no value".into()))
}
