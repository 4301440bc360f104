//! The points a stored batch owes the alerter, as kept in its follow-up row (see
//! `weir_storage`'s `followups`) until they are evaluated: a JSON array of
//! `{"k": key, "t": ts, "v": {type: value}}`. Floats are written as text (`"NaN"`, `"inf"`,
//! `"1.5"`), which JSON numbers cannot all carry, and read back bit for bit.

use serde::{Deserialize, Serialize};
use weir_runtime::alerter::{Point, Value};

#[derive(Serialize, Deserialize)]
struct Encoded {
    k: String,
    t: i64,
    v: EncodedValue,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EncodedValue {
    Int(i64),
    Uint(u64),
    Float(String),
    Bool(bool),
    Text(String),
}

/// `points` as their follow-up row keeps them.
pub fn encode(points: &[Point]) -> String {
    let encoded: Vec<Encoded> = points
        .iter()
        .map(|point| Encoded {
            k: point.key.clone(),
            t: point.ts,
            v: match &point.value {
                Value::Int(v) => EncodedValue::Int(*v),
                Value::Uint(v) => EncodedValue::Uint(*v),
                Value::Float(v) => EncodedValue::Float(format!("{v:?}")),
                Value::Boolean(v) => EncodedValue::Bool(*v),
                Value::Text(v) => EncodedValue::Text(v.clone()),
            },
        })
        .collect();
    serde_json::to_string(&encoded).expect("points encode as JSON")
}

/// The points of a follow-up row; an error names what is wrong.
pub fn decode(json: &str) -> Result<Vec<Point>, String> {
    let encoded: Vec<Encoded> =
        serde_json::from_str(json).map_err(|error| format!("unreadable alert points: {error}"))?;
    encoded
        .into_iter()
        .map(|point| {
            let value = match point.v {
                EncodedValue::Int(v) => Value::Int(v),
                EncodedValue::Uint(v) => Value::Uint(v),
                EncodedValue::Float(text) => Value::Float(
                    text.parse()
                        .map_err(|_| format!("unreadable float {text:?} in alert points"))?,
                ),
                EncodedValue::Bool(v) => Value::Boolean(v),
                EncodedValue::Text(v) => Value::Text(v),
            };
            Ok(Point {
                key: point.k,
                value,
                ts: point.t,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(key: &str, value: Value, ts: i64) -> Point {
        Point {
            key: key.into(),
            value,
            ts,
        }
    }

    fn same(a: &Point, b: &Point) -> bool {
        a.key == b.key
            && a.ts == b.ts
            && match (&a.value, &b.value) {
                (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
                (Value::Int(x), Value::Int(y)) => x == y,
                (Value::Uint(x), Value::Uint(y)) => x == y,
                (Value::Boolean(x), Value::Boolean(y)) => x == y,
                (Value::Text(x), Value::Text(y)) => x == y,
                _ => false,
            }
    }

    #[test]
    fn every_value_comes_back_bit_for_bit() {
        let points = vec![
            point("a", Value::Int(i64::MIN), -1),
            point("b", Value::Uint(u64::MAX), 0),
            point("c", Value::Float(f64::NAN), 1),
            point("c", Value::Float(f64::NEG_INFINITY), 2),
            point("c", Value::Float(-0.0), 3),
            point("c", Value::Float(0.1 + 0.2), 4),
            point("d", Value::Boolean(true), 5),
            point("e", Value::Text("\"quoted\" \u{263a}".into()), i64::MAX),
        ];
        let back = decode(&encode(&points)).unwrap();
        assert_eq!(back.len(), points.len());
        for (a, b) in points.iter().zip(&back) {
            assert!(same(a, b), "{a:?} came back as {b:?}");
        }
    }

    #[test]
    fn a_damaged_row_is_an_error_not_a_panic() {
        assert!(decode("[{\"k\":\"a\"}]").is_err());
        assert!(decode("[{\"k\":\"a\",\"t\":1,\"v\":{\"float\":\"x\"}}]").is_err());
    }
}
