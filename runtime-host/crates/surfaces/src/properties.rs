//! Property tests of the parsers this crate runs on network input before any other part sees
//! it: gzip bodies, the alert events' filter (`GET /v1/events`), the live stream's filter
//! (`GET /v1/events/stream`) and the path guard against encoded control characters. Any input
//! gets a value or a 4xx with a stable code and a message written for the client, never a panic.
//! Bounded (proptest's default case count) in `cargo xtask test`; longer with `PROPTEST_CASES`
//! (docs/FUZZING.md).

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use hyper::StatusCode;
use proptest::prelude::*;

use crate::api::encodes_a_control_character;
use crate::api::event_stream::StreamFilter;
use crate::api::events::{MAX_LIMIT, filter};
use crate::http::ApiError;
use crate::http::body::gunzip;

/// Whether `error` is a client error with a stable code among `codes` and a message free of
/// internal text.
fn is_clean_refusal(error: &ApiError, codes: &[&str]) -> bool {
    let message = error.message.to_lowercase();
    error.status.is_client_error()
        && codes.contains(&error.code)
        && !["sql", "postgres", "redis", "panicked", "/src/", "error {"]
            .iter()
            .any(|internal| message.contains(internal))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Query strings made of the parameters the filters know, odd values and stray text.
fn query_strings() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("device".to_owned()),
        Just("key".to_owned()),
        Just("severity".to_owned()),
        Just("state".to_owned()),
        Just("from".to_owned()),
        Just("to".to_owned()),
        Just("limit".to_owned()),
        Just("before".to_owned()),
        "[a-z%=&]{0,6}",
    ];
    let value = prop_oneof![
        Just(String::new()),
        "-?[0-9]{1,20}",
        Just("critical".to_owned()),
        Just("raised".to_owned()),
        "(%[0-9A-Fa-f]{2}|[a-zA-Z0-9._~+-]){0,12}",
        "[ -~]{0,12}",
    ];
    prop::collection::vec((name, value), 0..6).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

proptest! {
    #[test]
    fn any_gzip_body_decodes_within_the_limit_or_is_refused(
        raw in prop::collection::vec(any::<u8>(), 0..512),
        plain in prop::collection::vec(any::<u8>(), 0..2048),
        limit in 1usize..4096,
        flip in any::<(usize, u8)>(),
    ) {
        let codes = ["invalid_gzip", "body_too_large"];
        // Random bytes, a valid stream, and a valid stream with one byte changed.
        let valid = gzip(&plain);
        let mut damaged = valid.clone();
        let at = flip.0 % damaged.len();
        damaged[at] ^= flip.1 | 1;
        for input in [&raw, &valid, &damaged] {
            match gunzip(input, limit) {
                Ok(decoded) => prop_assert!(decoded.len() <= limit),
                Err(error) => prop_assert!(is_clean_refusal(&error, &codes), "{error:?}"),
            }
        }
        match gunzip(&valid, limit) {
            Ok(decoded) => prop_assert_eq!(&decoded[..], &plain[..]),
            Err(error) => {
                prop_assert!(plain.len() > limit, "{error:?}");
                prop_assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
            }
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_decoding_it_all(zeros in 64usize * 1024..1024 * 1024) {
        let bomb = gzip(&vec![0; zeros]);
        let error = gunzip(&bomb, 16 * 1024).unwrap_err();
        prop_assert_eq!(error.code, "body_too_large");
    }

    #[test]
    fn the_events_filter_takes_any_query(query in query_strings()) {
        match filter(&query) {
            Ok(filter) => {
                prop_assert!((1..=MAX_LIMIT).contains(&filter.limit), "{filter:?}");
                if !encodes_a_control_character(&query) {
                    for text in [&filter.device, &filter.key, &filter.severity, &filter.state]
                        .into_iter()
                        .flatten()
                    {
                        prop_assert!(!text.chars().any(char::is_control), "{text:?}");
                    }
                }
            }
            Err(error) => prop_assert!(is_clean_refusal(&error, &["invalid_parameter"]), "{error:?}"),
        }
    }

    #[test]
    fn the_stream_filter_takes_any_query_and_any_message(
        query in query_strings(),
        message in prop_oneof![
            "[ -~]{0,40}",
            Just(r#"{"device":"m-1","key":"k","severity":"critical"}"#.to_owned()),
            "\\{\"(device|key|severity)\":(\"[a-z0-9-]{0,6}\"|[0-9]{1,3}|null|\\[\\])\\}",
        ],
    ) {
        match StreamFilter::parse(&query) {
            // Any message is judged, whatever its shape.
            Ok(filter) => {
                let _ = filter.admits(&message);
            }
            Err(error) => prop_assert!(is_clean_refusal(&error, &["invalid_parameter"]), "{error:?}"),
        }
    }

    #[test]
    fn the_control_character_guard_finds_every_encoded_one(
        prefix in "[ -~]{0,10}",
        byte in 0u8..0x20,
        upper in any::<bool>(),
        suffix in "[ -~]{0,10}",
    ) {
        let hex = if upper { format!("%{byte:02X}") } else { format!("%{byte:02x}") };
        let text = format!("{prefix}{hex}{suffix}");
        prop_assert!(encodes_a_control_character(&text), "{text}");
        let delete = format!("{prefix}%7f{suffix}");
        prop_assert!(encodes_a_control_character(&delete), "{delete}");
    }
}
