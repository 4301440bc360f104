//! HTTP plumbing shared by the device and API surfaces: the error body every surface answers
//! with, request bodies with size limits and gzip, and the connection accept loops.

pub mod body;
pub mod error;
pub mod server;

pub use error::ApiError;

use bytes::Bytes;
use http_body_util::Full;

/// The response type of every Weir handler: buffered. (The API listener answers
/// [`body::StreamingResponse`], which also carries its one stream, `/v1/events/stream`.)
pub type Response = hyper::Response<Full<Bytes>>;

/// A JSON response with `status`.
pub fn json_response<T: serde::Serialize + ?Sized>(
    status: hyper::StatusCode,
    value: &T,
) -> Response {
    let body = serde_json::to_vec(value).expect("Weir's answers serialise to JSON");
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
