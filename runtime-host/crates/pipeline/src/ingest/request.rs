//! Parsing a submit body, `{"batch": "...", "points": [{"key", "value", "ts"}, ...]}`, into
//! typed points. Structural problems answer 400 naming the field; whether a well-formed value
//! fits its key is the validator's call, per point.

use serde_json::Value as Json;

use super::error::IngestError;
use weir_runtime::validator::{Point, Value};

/// Longest accepted batch id.
pub const MAX_BATCH_ID_LEN: usize = 128;

/// A parsed submit request.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitRequest {
    /// The device-chosen batch id: the idempotency key with the device's identity.
    pub batch: String,
    /// The points in the order sent.
    pub points: Vec<Point>,
}

/// Parses a submit body; `max_points` bounds the batch (413 beyond it).
pub fn parse_submit(body: &[u8], max_points: usize) -> Result<SubmitRequest, IngestError> {
    let json: Json = serde_json::from_slice(body).map_err(|error| {
        IngestError::invalid(
            "malformed_json",
            format!("the body is not valid JSON: {error}"),
        )
    })?;
    let object = json
        .as_object()
        .ok_or_else(|| invalid("body", "must be a JSON object"))?;
    let batch = match object.get("batch") {
        Some(Json::String(batch)) => batch.clone(),
        Some(_) => return Err(invalid("batch", "must be a string")),
        None => return Err(invalid("batch", "is missing")),
    };
    if batch.is_empty() || batch.len() > MAX_BATCH_ID_LEN || batch.chars().any(char::is_control) {
        return Err(invalid(
            "batch",
            &format!("must be 1 to {MAX_BATCH_ID_LEN} printable characters"),
        ));
    }
    let raw_points = match object.get("points") {
        Some(Json::Array(points)) => points,
        Some(_) => return Err(invalid("points", "must be an array")),
        None => return Err(invalid("points", "is missing")),
    };
    if raw_points.len() > max_points {
        return Err(IngestError::too_large(
            "too_many_points",
            format!(
                "the batch has {} points; at most {max_points} are accepted per request",
                raw_points.len()
            ),
        ));
    }
    let points = raw_points
        .iter()
        .enumerate()
        .map(|(index, raw)| parse_point(index, raw))
        .collect::<Result<_, _>>()?;
    Ok(SubmitRequest { batch, points })
}

fn parse_point(index: usize, raw: &Json) -> Result<Point, IngestError> {
    let field = |name: &str| format!("points[{index}].{name}");
    let object = raw
        .as_object()
        .ok_or_else(|| invalid(&format!("points[{index}]"), "must be an object"))?;
    let key = match object.get("key") {
        Some(Json::String(key)) => key.clone(),
        Some(_) => return Err(invalid(&field("key"), "must be a string")),
        None => return Err(invalid(&field("key"), "is missing")),
    };
    let ts = match object.get("ts") {
        Some(Json::Number(ts)) => ts
            .as_i64()
            .ok_or_else(|| invalid(&field("ts"), "must be a whole number of unix milliseconds"))?,
        Some(_) => {
            return Err(invalid(
                &field("ts"),
                "must be a number (unix milliseconds)",
            ));
        }
        None => return Err(invalid(&field("ts"), "is missing")),
    };
    let value = match object.get("value") {
        Some(Json::Number(n)) => {
            if let Some(v) = n.as_i64() {
                Value::Int(v)
            } else if let Some(v) = n.as_u64() {
                Value::Uint(v)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Some(Json::Bool(b)) => Value::Boolean(*b),
        // PostgreSQL's text cannot hold NUL: refused here, not as a storage failure.
        Some(Json::String(s)) if s.contains('\0') => {
            return Err(IngestError::invalid(
                "invalid_text",
                format!("{} must not contain NUL characters", field("value")),
            ));
        }
        Some(Json::String(s)) => Value::Text(s.clone()),
        Some(_) => {
            return Err(invalid(
                &field("value"),
                "must be a number, a boolean or a string",
            ));
        }
        None => return Err(invalid(&field("value"), "is missing")),
    };
    Ok(Point { key, value, ts })
}

fn invalid(field: &str, problem: &str) -> IngestError {
    IngestError::invalid("invalid_field", format!("{field} {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_precision() {
        let body = br#"{"batch":"b1","points":[
            {"key":"a.b","value":18446744073709551615,"ts":1},
            {"key":"a.b","value":-5,"ts":2},
            {"key":"a.b","value":1.5,"ts":3},
            {"key":"a.b","value":true,"ts":4},
            {"key":"a.b","value":"on","ts":5}]}"#;
        let request = parse_submit(body, 10).unwrap();
        let values: Vec<_> = request.points.iter().map(|p| p.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                Value::Uint(u64::MAX),
                Value::Int(-5),
                Value::Float(1.5),
                Value::Boolean(true),
                Value::Text("on".into())
            ]
        );
    }

    #[test]
    fn a_nul_character_in_a_text_value_is_invalid_text() {
        let body = br#"{"batch":"b","points":[{"key":"a.b","value":"x\u0000y","ts":1}]}"#;
        let error = parse_submit(body, 10).unwrap_err();
        assert_eq!(error.code, "invalid_text");
        assert!(
            error.message.contains("points[0].value"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_missing_timestamp_names_the_field() {
        let error =
            parse_submit(br#"{"batch":"b","points":[{"key":"a.b","value":1}]}"#, 10).unwrap_err();
        assert_eq!(error.code, "invalid_field");
        assert!(error.message.contains("points[0].ts"), "{}", error.message);
    }

    #[test]
    fn too_many_points_is_413() {
        let error = parse_submit(
            br#"{"batch":"b","points":[{"key":"a.b","value":1,"ts":1},{"key":"a.b","value":1,"ts":2}]}"#,
            1,
        )
        .unwrap_err();
        assert_eq!(error.kind, super::super::error::ErrorKind::TooLarge);
        assert_eq!(error.code, "too_many_points");
    }

    #[test]
    fn broken_json_is_malformed_json() {
        let error = parse_submit(b"{\"batch\":", 10).unwrap_err();
        assert_eq!(error.code, "malformed_json");
    }
}
