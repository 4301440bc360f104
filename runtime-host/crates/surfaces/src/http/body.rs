//! Bodies: reading request bodies, capped at a configured size before and after gzip decoding
//! so that neither a large upload nor a small gzip bomb can exhaust memory; and the API
//! listener's response body, [`ResponseBody`], which is either a whole buffered answer or a
//! stream fed through a channel (the server-sent events of `GET /v1/events/stream`).

use std::convert::Infallible;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use tokio::sync::mpsc;

use super::ApiError;

/// Reads the whole body of `request`, decoding `Content-Encoding: gzip`; at most `limit` bytes
/// both on the wire and decoded, within `timeout`. A body that announces more than `limit`
/// (`Content-Length`) is refused before any of it is read.
pub async fn read_body(
    request: hyper::Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = announced.filter(|length| *length > limit as u64) {
        if request.version() < hyper::Version::HTTP_2 {
            linger(request.into_body(), length);
        }
        return Err(too_large(limit));
    }
    let (parts, body) = request.into_parts();
    let raw = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} s", timeout.as_secs_f64()),
            )
        })?
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

/// How long an HTTP/1.1 body refused unread is still read and discarded, and how much of it at
/// most (nginx's "lingering close"): a client that writes its whole body before it reads the
/// answer would otherwise hit a reset and never see the `413`.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// Reads and discards `body` (announced as `length` bytes) in the background, within
/// [`LINGER_TIME`] and if it is at most [`LINGER_BYTES`]; otherwise the connection just closes.
fn linger(mut body: Incoming, length: u64) {
    if length > LINGER_BYTES {
        return;
    }
    tokio::spawn(async move {
        let discard = async { while let Some(Ok(_)) = body.frame().await {} };
        let _ = tokio::time::timeout(LINGER_TIME, discard).await;
    });
}

pub(crate) fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, ApiError> {
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
        format!("the body is larger than the {limit}-byte limit (ingest.max_body_bytes); split it"),
    )
}

/// A response of the API listener: buffered, or streamed.
pub type StreamingResponse = hyper::Response<ResponseBody>;

/// The API listener's response body: a whole answer (every endpoint but one), or chunks sent
/// by a task through a channel until the task drops its sender. Without a known length, HTTP/1.1
/// sends a stream chunked and HTTP/2 as DATA frames, each chunk as soon as it is sent; when the
/// client goes away, hyper drops the body and the sending task sees its channel closed.
#[derive(Debug)]
pub enum ResponseBody {
    /// A buffered answer.
    Full(Full<Bytes>),
    /// A stream: each received chunk is one data frame; the body ends when every sender is gone.
    Stream(mpsc::Receiver<Bytes>),
}

impl ResponseBody {
    /// A streamed body and the sender that feeds it; the channel holds up to `buffer` chunks
    /// not yet written to the client.
    pub fn channel(buffer: usize) -> (mpsc::Sender<Bytes>, ResponseBody) {
        let (sender, receiver) = mpsc::channel(buffer);
        (sender, ResponseBody::Stream(receiver))
    }
}

impl From<Full<Bytes>> for ResponseBody {
    fn from(body: Full<Bytes>) -> Self {
        ResponseBody::Full(body)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(body) => Pin::new(body).poll_frame(cx),
            ResponseBody::Stream(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(body) => body.is_end_stream(),
            ResponseBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(body) => body.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}
