//! The data a validator works on: the data types a key can declare, and the metadata that gives
//! a key its type, range and enum labels (mirrors of the `weir:functions/types` WIT records that
//! only the validator needs; the component wrapper maps them). Points and values are
//! `weir-guest`'s, shared with every component.

pub use weir_guest::{Point, Value};

/// The data type of a key, down to the precision the hardware gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// 64-bit float (`f64`).
    F64,
    /// 32-bit float (`f32`); values are stored at `f32` precision.
    F32,
    /// Signed 8-bit integer (`i8`).
    I8,
    /// Unsigned 8-bit integer (`u8`).
    U8,
    /// Signed 16-bit integer (`i16`).
    I16,
    /// Unsigned 16-bit integer (`u16`).
    U16,
    /// Signed 32-bit integer (`i32`).
    I32,
    /// Unsigned 32-bit integer (`u32`).
    U32,
    /// Signed 64-bit integer (`i64`).
    I64,
    /// Unsigned 64-bit integer (`u64`).
    U64,
    /// A boolean; devices send `true`/`false` or `0`/`1` (`bool`).
    Bool,
    /// Text with a length cap (`string`).
    Text,
    /// An integer code with a label in the key's value map (`enum`).
    Enum,
}

impl DataType {
    /// Every data type, in declaration order.
    pub const ALL: [DataType; 13] = [
        DataType::F64,
        DataType::F32,
        DataType::I8,
        DataType::U8,
        DataType::I16,
        DataType::U16,
        DataType::I32,
        DataType::U32,
        DataType::I64,
        DataType::U64,
        DataType::Bool,
        DataType::Text,
        DataType::Enum,
    ];

    /// The name used in key metadata and in messages: `"f64"`, `"u16"`, `"bool"`, `"string"`,
    /// `"enum"`...
    pub fn name(self) -> &'static str {
        match self {
            DataType::F64 => "f64",
            DataType::F32 => "f32",
            DataType::I8 => "i8",
            DataType::U8 => "u8",
            DataType::I16 => "i16",
            DataType::U16 => "u16",
            DataType::I32 => "i32",
            DataType::U32 => "u32",
            DataType::I64 => "i64",
            DataType::U64 => "u64",
            DataType::Bool => "bool",
            DataType::Text => "string",
            DataType::Enum => "enum",
        }
    }

    /// The data type with this exact (case-sensitive) [`name`](Self::name), if any.
    ///
    /// ```
    /// use weir_validate::DataType;
    /// assert_eq!(DataType::parse("u16"), Some(DataType::U16));
    /// assert_eq!(DataType::parse("uint16"), None);
    /// ```
    pub fn parse(s: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// What a validator needs to know about one key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyMetadata {
    /// The key this metadata describes.
    pub key: String,
    /// The key's declared data type.
    pub data_type: DataType,
    /// Inclusive lower bound for numeric types (integers and floats).
    pub min: Option<f64>,
    /// Inclusive upper bound for numeric types (integers and floats).
    pub max: Option<f64>,
    /// Enum codes and their labels; empty for other types.
    pub value_map: Vec<(i64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn data_type_names_match_the_metadata_vocabulary() {
        let names: Vec<&str> = DataType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "f64", "f32", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "bool",
                "string", "enum"
            ]
        );
    }

    #[test]
    fn all_lists_every_data_type_once() {
        let distinct: HashSet<DataType> = DataType::ALL.into_iter().collect();
        assert_eq!(distinct.len(), DataType::ALL.len());
    }

    #[test]
    fn parse_is_the_inverse_of_name() {
        for data_type in DataType::ALL {
            assert_eq!(DataType::parse(data_type.name()), Some(data_type));
        }
    }

    #[test]
    fn parse_rejects_names_outside_the_vocabulary() {
        for name in ["", "F64", "float", "text", "u128", "int16", " u16", "u16 "] {
            assert_eq!(DataType::parse(name), None, "{name:?}");
        }
    }
}
