//! Reading request bodies: capped at a configured size before and after gzip decoding, so
//! neither a large upload nor a small gzip bomb can exhaust memory.

use std::io::Read;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::CONTENT_ENCODING;

use super::ApiError;

/// Reads the whole body of `request`, decoding `Content-Encoding: gzip`; at most `limit` bytes
/// both on the wire and decoded.
pub async fn read_body(request: hyper::Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    let raw = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|error| {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large(limit)
            } else {
                ApiError::bad_request("body_unreadable", format!("cannot read the body: {error}"))
            }
        })?
        .to_bytes();
    // Content codings are case-insensitive, and "x-gzip" means gzip (RFC 9110, 8.4.1).
    let encoding = parts
        .headers
        .get(CONTENT_ENCODING)
        .map(|v| v.as_bytes().trim_ascii().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some(b"identity") => Ok(raw),
        Some(b"gzip" | b"x-gzip") => gunzip(&raw, limit),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!(
                "Content-Encoding {:?} is not supported; use gzip or none",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}

fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|error| {
            ApiError::bad_request("invalid_gzip", format!("the gzip body is corrupt: {error}"))
        })?;
    if decoded.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(decoded))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than the {limit}-byte limit"),
    )
}
