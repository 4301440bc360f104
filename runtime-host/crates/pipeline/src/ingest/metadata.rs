//! Parsing `PUT /v1/metadata`: a JSON array of key metadata objects. Each entry is checked on
//! its own; valid ones are stored, invalid ones come back with the field, a code and a reason.

use serde::Serialize;
use serde_json::{Map, Value as Json};
use weir_storage::KeyMetadataRecord;
use weir_validate::DataType;

use super::error::IngestError;
use super::units::is_known_unit;

/// Longest `name`, in characters.
const MAX_NAME_LEN: usize = 64;
/// Longest `description`, in characters.
const MAX_DESCRIPTION_LEN: usize = 1024;
/// Most entries in an enum's value map.
const MAX_VALUE_MAP_LEN: usize = 256;
/// Most entries in one request.
pub const MAX_METADATA_ENTRIES: usize = 1000;

const FIELDS: &[&str] = &[
    "key",
    "type",
    "name",
    "unit",
    "description",
    "value_map",
    "min",
    "max",
];

/// Why one metadata entry was refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetadataRejection {
    /// Position in the request array.
    pub index: usize,
    /// The entry's key, when it had a string one.
    pub key: Option<String>,
    /// The offending field.
    pub field: String,
    /// Stable code.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

/// The entries to store and the ones refused.
#[derive(Debug, Default)]
pub struct ParsedMetadata {
    /// Valid entries.
    pub records: Vec<KeyMetadataRecord>,
    /// Refused entries.
    pub rejected: Vec<MetadataRejection>,
}

/// Parses a metadata body. A body that is not a JSON array is a 400 for the whole request.
pub fn parse_metadata(body: &[u8]) -> Result<ParsedMetadata, IngestError> {
    let json: Json = serde_json::from_slice(body).map_err(|error| {
        IngestError::invalid(
            "malformed_json",
            format!("the body is not valid JSON: {error}"),
        )
    })?;
    let entries = json.as_array().ok_or_else(|| {
        IngestError::invalid("invalid_field", "body must be a JSON array of key metadata")
    })?;
    if entries.len() > MAX_METADATA_ENTRIES {
        return Err(IngestError::too_large(
            "too_many_entries",
            format!("at most {MAX_METADATA_ENTRIES} metadata entries per request"),
        ));
    }
    let mut parsed = ParsedMetadata::default();
    for (index, entry) in entries.iter().enumerate() {
        match parse_entry(entry) {
            Ok(record) => parsed.records.push(record),
            Err((field, code, message)) => parsed.rejected.push(MetadataRejection {
                index,
                key: entry.get("key").and_then(Json::as_str).map(str::to_string),
                field: field.to_string(),
                code,
                message,
            }),
        }
    }
    Ok(parsed)
}

type EntryError = (String, &'static str, String);

fn parse_entry(entry: &Json) -> Result<KeyMetadataRecord, EntryError> {
    let object = entry.as_object().ok_or_else(|| {
        (
            "entry".to_string(),
            "invalid_field",
            "must be an object".to_string(),
        )
    })?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err((
            unknown.clone(),
            "unknown_field",
            format!("unknown field; known fields are {}", FIELDS.join(", ")),
        ));
    }
    let key = required_string(object, "key")?;
    weir_validate::check_key(&key).map_err(|rejection| {
        (
            "key".to_string(),
            rejection.reason.code(),
            rejection.message,
        )
    })?;
    let type_name = required_string(object, "type")?;
    let data_type = DataType::parse(&type_name).ok_or_else(|| {
        let known: Vec<_> = DataType::ALL.iter().map(|t| t.name()).collect();
        (
            "type".to_string(),
            "unknown_type",
            format!(
                "unknown type {type_name:?}; use one of {}",
                known.join(", ")
            ),
        )
    })?;
    let name = optional_string(object, "name", MAX_NAME_LEN)?;
    let description = optional_string(object, "description", MAX_DESCRIPTION_LEN)?;
    let unit = optional_string(object, "unit", 16)?;
    if let Some(unit) = &unit
        && !is_known_unit(unit)
    {
        return Err((
            "unit".into(),
            "unknown_unit",
            format!("unit {unit:?} is not a SenML unit (e.g. W, kWh, Cel, V, %RH, count)"),
        ));
    }
    let min = optional_number(object, "min")?;
    let max = optional_number(object, "max")?;
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err((
            "min".into(),
            "invalid_range",
            format!("min {min} is above max {max}"),
        ));
    }
    let value_map = value_map(object, data_type)?;
    Ok(KeyMetadataRecord {
        key,
        data_type: data_type.name().to_string(),
        name,
        unit,
        description,
        value_map,
        min,
        max,
    })
}

fn required_string(object: &Map<String, Json>, field: &str) -> Result<String, EntryError> {
    match object.get(field) {
        Some(Json::String(s)) => Ok(s.clone()),
        Some(_) => Err((field.into(), "invalid_field", "must be a string".into())),
        None => Err((field.into(), "missing_field", "is required".into())),
    }
}

fn optional_string(
    object: &Map<String, Json>,
    field: &str,
    max_len: usize,
) -> Result<Option<String>, EntryError> {
    match object.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.contains('\0') => Err((
            field.into(),
            "invalid_text",
            "must not contain NUL characters".into(),
        )),
        Some(Json::String(s)) if s.chars().count() <= max_len => Ok(Some(s.clone())),
        Some(Json::String(_)) => Err((
            field.into(),
            "too_long",
            format!("is longer than {max_len} characters"),
        )),
        Some(_) => Err((field.into(), "invalid_field", "must be a string".into())),
    }
}

fn optional_number(object: &Map<String, Json>, field: &str) -> Result<Option<f64>, EntryError> {
    match object.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err((field.into(), "invalid_field", "must be a number".into())),
    }
}

fn value_map(
    object: &Map<String, Json>,
    data_type: DataType,
) -> Result<Vec<(i64, String)>, EntryError> {
    let field = || "value_map".to_string();
    let map = match (object.get("value_map"), data_type) {
        (None | Some(Json::Null), DataType::Enum) => {
            return Err((field(), "missing_field", "is required for type enum".into()));
        }
        (None | Some(Json::Null), _) => return Ok(Vec::new()),
        (Some(_), t) if t != DataType::Enum => {
            return Err((
                field(),
                "invalid_field",
                "is only allowed for type enum".into(),
            ));
        }
        (Some(Json::Object(map)), _) => map,
        (Some(_), _) => {
            return Err((
                field(),
                "invalid_field",
                "must be an object of integer codes to labels, e.g. {\"0\": \"off\"}".into(),
            ));
        }
    };
    if map.is_empty() || map.len() > MAX_VALUE_MAP_LEN {
        return Err((
            field(),
            "invalid_field",
            format!("must have 1 to {MAX_VALUE_MAP_LEN} entries"),
        ));
    }
    let mut entries = Vec::with_capacity(map.len());
    for (code, label) in map {
        let code: i64 = code.parse().map_err(|_| {
            (
                field(),
                "invalid_field",
                format!("code {code:?} is not an integer"),
            )
        })?;
        let label = label.as_str().ok_or_else(|| {
            (
                field(),
                "invalid_field",
                format!("label of code {code} must be a string"),
            )
        })?;
        if label.contains('\0') {
            return Err((
                field(),
                "invalid_text",
                format!("label of code {code} must not contain NUL characters"),
            ));
        }
        entries.push((code, label.to_string()));
    }
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_refused_in_every_text_field() {
        let body = br#"[
            {"key":"meter.a","type":"f64","name":"Po\u0000wer"},
            {"key":"meter.b","type":"f64","description":"\u0000"},
            {"key":"meter.c","type":"enum","value_map":{"0":"of\u0000f"}},
            {"key":"meter.\u0000","type":"f64"}
        ]"#;
        let parsed = parse_metadata(body).unwrap();
        assert!(parsed.records.is_empty(), "{:?}", parsed.records);
        let codes: Vec<_> = parsed.rejected.iter().map(|r| r.code).collect();
        assert_eq!(codes[..3], ["invalid_text"; 3]);
        assert_eq!(parsed.rejected.len(), 4);
    }

    #[test]
    fn good_and_bad_entries_are_judged_apart() {
        let body = br#"[
            {"key":"meter.power","type":"f64","name":"Power","unit":"W","min":0},
            {"key":"meter.state","type":"enum","value_map":{"0":"off","1":"on"}},
            {"key":"meter.bad","type":"f64","unit":"watts"},
            {"key":"meter.state2","type":"enum"},
            {"key":"a..b","type":"f64"},
            {"key":"meter.x","type":"float"},
            {"key":"meter.y","type":"f64","unti":"W"}
        ]"#;
        let parsed = parse_metadata(body).unwrap();
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(
            parsed.records[1].value_map,
            vec![(0, "off".into()), (1, "on".into())]
        );
        let codes: Vec<_> = parsed.rejected.iter().map(|r| (r.index, r.code)).collect();
        assert_eq!(
            codes,
            vec![
                (2, "unknown_unit"),
                (3, "missing_field"),
                (4, "invalid_key"),
                (5, "unknown_type"),
                (6, "unknown_field")
            ]
        );
    }
}
