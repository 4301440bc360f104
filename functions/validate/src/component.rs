//! The WASM component face of the validator: maps the `weir:functions/validate` WIT types to the
//! library's types and back. Compiled only for `wasm32`; all logic lives in the library so that
//! `cargo test` exercises it natively.

wit_bindgen::generate!({
    world: "validator",
    path: "../../wit",
    with: { "weir:functions/types@0.1.0": weir_guest::wit::types },
});

use exports::weir::functions::validate as wit;
use weir_guest::wit::types as wit_types;

struct Component;

impl wit::Guest for Component {
    fn validate(
        points: Vec<wit_types::Point>,
        metadata: Vec<wit_types::KeyMetadata>,
        policy: wit::Policy,
    ) -> Vec<wit::Verdict> {
        let points: Vec<crate::Point> = points.into_iter().map(Into::into).collect();
        let metadata: Vec<crate::KeyMetadata> =
            metadata.into_iter().map(metadata_from_wit).collect();
        crate::validate_batch(&points, &metadata, &policy_from_wit(policy))
            .into_iter()
            .map(verdict_to_wit)
            .collect()
    }
}

export!(Component);

fn metadata_from_wit(meta: wit_types::KeyMetadata) -> crate::KeyMetadata {
    use crate::DataType as D;
    use wit_types::DataType as W;
    let data_type = match meta.data_type {
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
    };
    crate::KeyMetadata {
        key: meta.key,
        data_type,
        min: meta.min,
        max: meta.max,
        value_map: meta.value_map,
    }
}

fn policy_from_wit(policy: wit::Policy) -> crate::Policy {
    crate::Policy {
        now_ms: policy.now,
        max_future_skew_ms: policy.max_future_skew_ms,
        max_age_ms: policy.max_age_ms,
        unknown_keys: match policy.unknown_keys {
            wit::UnknownKeyPolicy::AcceptUntyped => crate::UnknownKeyPolicy::AcceptUntyped,
            wit::UnknownKeyPolicy::Reject => crate::UnknownKeyPolicy::Reject,
        },
        max_text_length: policy.max_text_length,
    }
}

fn verdict_to_wit(verdict: crate::Verdict) -> wit::Verdict {
    match verdict {
        crate::Verdict::Accepted(value) => wit::Verdict::Accepted(value.into()),
        crate::Verdict::Rejected(rejection) => wit::Verdict::Rejected(wit::Rejection {
            reason: reason_to_wit(rejection.reason),
            message: rejection.message,
        }),
    }
}

fn reason_to_wit(reason: crate::Reason) -> wit::Reason {
    use crate::Reason as R;
    match reason {
        R::InvalidKey => wit::Reason::InvalidKey,
        R::ReservedKey => wit::Reason::ReservedKey,
        R::UnknownKey => wit::Reason::UnknownKey,
        R::TypeMismatch => wit::Reason::TypeMismatch,
        R::OutOfRange => wit::Reason::OutOfRange,
        R::NotFinite => wit::Reason::NotFinite,
        R::TextTooLong => wit::Reason::TextTooLong,
        R::UnknownEnumValue => wit::Reason::UnknownEnumValue,
        R::FutureTimestamp => wit::Reason::FutureTimestamp,
        R::AncientTimestamp => wit::Reason::AncientTimestamp,
    }
}
