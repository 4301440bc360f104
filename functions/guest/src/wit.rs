//! The `weir:functions/types` bindings every component reuses, and their conversions to and
//! from [`Value`] and [`Point`].

use crate::{Point, Value};

wit_bindgen::generate!({
    inline: "
        package weir:guest;
        world types-only {
            import weir:functions/types@0.1.0;
        }
    ",
    path: "../../wit",
    generate_all,
});

/// The generated `weir:functions/types` module, for `with:` in the components' `generate!`.
pub use self::weir::functions::types;

impl From<types::Value> for Value {
    fn from(value: types::Value) -> Self {
        match value {
            types::Value::Int(v) => Value::Int(v),
            types::Value::Uint(v) => Value::Uint(v),
            types::Value::Float(v) => Value::Float(v),
            types::Value::Boolean(v) => Value::Bool(v),
            types::Value::Text(v) => Value::Text(v),
        }
    }
}

impl From<Value> for types::Value {
    fn from(value: Value) -> Self {
        match value {
            Value::Int(v) => types::Value::Int(v),
            Value::Uint(v) => types::Value::Uint(v),
            Value::Float(v) => types::Value::Float(v),
            Value::Bool(v) => types::Value::Boolean(v),
            Value::Text(v) => types::Value::Text(v),
        }
    }
}

impl From<types::Point> for Point {
    fn from(point: types::Point) -> Self {
        Point {
            key: point.key,
            value: point.value.into(),
            ts: point.ts,
        }
    }
}
