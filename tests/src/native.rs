//! Conversions between the host's WIT types and the validator library's native types, so tests
//! and benchmarks can run the same batch through the component and through the library.

use weir_runtime::validator as wit;
use weir_validate as lib;

/// A WIT point as a library point.
pub fn point(point: &wit::Point) -> lib::Point {
    lib::Point {
        key: point.key.clone(),
        value: value(&point.value),
        ts: point.ts,
    }
}

/// A WIT value as a library value.
pub fn value(value: &wit::Value) -> lib::Value {
    match value {
        wit::Value::Int(v) => lib::Value::Int(*v),
        wit::Value::Uint(v) => lib::Value::Uint(*v),
        wit::Value::Float(v) => lib::Value::Float(*v),
        wit::Value::Boolean(v) => lib::Value::Bool(*v),
        wit::Value::Text(v) => lib::Value::Text(v.clone()),
    }
}

/// WIT key metadata as library key metadata.
pub fn metadata(meta: &wit::KeyMetadata) -> lib::KeyMetadata {
    use lib::DataType as D;
    use wit::DataType as W;
    lib::KeyMetadata {
        key: meta.key.clone(),
        data_type: match meta.data_type {
            W::Float64 => D::F64,
            W::Float32 => D::F32,
            W::Int8 => D::I8,
            W::Uint8 => D::U8,
            W::Int16 => D::I16,
            W::Uint16 => D::U16,
            W::Int32 => D::I32,
            W::Uint32 => D::U32,
            W::Int64 => D::I64,
            W::Uint64 => D::U64,
            W::Boolean => D::Bool,
            W::Text => D::Text,
            W::Enumeration => D::Enum,
        },
        min: meta.min,
        max: meta.max,
        value_map: meta.value_map.clone(),
    }
}

/// A WIT policy as a library policy.
pub fn policy(policy: &wit::Policy) -> lib::Policy {
    lib::Policy {
        now_ms: policy.now,
        max_future_skew_ms: policy.max_future_skew_ms,
        max_age_ms: policy.max_age_ms,
        unknown_keys: match policy.unknown_keys {
            wit::UnknownKeyPolicy::AcceptUntyped => lib::UnknownKeyPolicy::AcceptUntyped,
            wit::UnknownKeyPolicy::Reject => lib::UnknownKeyPolicy::Reject,
        },
        max_text_length: policy.max_text_length,
    }
}

/// A comparable one-line summary of a component's verdict: the accepted value, or the code.
pub fn verdict_summary(verdict: &wit::Verdict) -> String {
    match verdict {
        wit::Verdict::Accepted(v) => format!("accepted {:?}", value(v)),
        wit::Verdict::Rejected(r) => format!("rejected {}: {}", r.reason.code(), r.message),
    }
}

/// The same summary for a library verdict.
pub fn native_summary(verdict: &lib::Verdict) -> String {
    match verdict {
        lib::Verdict::Accepted(v) => format!("accepted {v:?}"),
        lib::Verdict::Rejected(r) => format!("rejected {}: {}", r.reason.code(), r.message),
    }
}
