//! `GET /readyz`: 200 when PostgreSQL and Redis both answer, 503 naming which does not
//! (`unavailable`; the reason goes to the log, not to the caller).
//!
//! The verdict is reused for [`FRESH_FOR`], and only one check runs at a time, so that however
//! often probes (or anyone else, unauthenticated) call it, the stores see at most one ping each
//! per second from this host.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use hyper::header::{HeaderValue, RETRY_AFTER};
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;
use weir_storage::{LatestCache, Storage, StorageError};

use crate::http::{Response, json_response};

/// How long a verdict is answered again without asking the stores.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The readiness check and its last verdict.
pub struct Readiness {
    storage: Storage,
    latest: LatestCache,
    last: Mutex<Option<Verdict>>,
}

/// One check's outcome.
#[derive(Clone)]
struct Verdict {
    at: Instant,
    ready: bool,
    body: Json,
}

impl Readiness {
    /// Checks `storage` and `latest`.
    pub fn new(storage: Storage, latest: LatestCache) -> Self {
        Readiness {
            storage,
            latest,
            last: Mutex::new(None),
        }
    }

    /// The answer to `GET /readyz`.
    pub async fn answer(&self) -> Response {
        let verdict = {
            let mut last = self.last.lock().await;
            match &*last {
                Some(verdict) if verdict.at.elapsed() < FRESH_FOR => verdict.clone(),
                _ => {
                    let verdict = self.check().await;
                    *last = Some(verdict.clone());
                    verdict
                }
            }
        };
        if verdict.ready {
            json_response(StatusCode::OK, &verdict.body)
        } else {
            let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &verdict.body);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(2u64));
            response
        }
    }

    async fn check(&self) -> Verdict {
        let postgres = self.storage.ping().await;
        let redis = self.latest.ping().await;
        let status = |store: &str, r: &Result<(), StorageError>| match r {
            Ok(()) => json!("ok"),
            Err(error) => {
                tracing::warn!(store, %error, "readiness check failed");
                json!("unavailable")
            }
        };
        Verdict {
            at: Instant::now(),
            ready: postgres.is_ok() && redis.is_ok(),
            body: json!({
                "postgres": status("postgres", &postgres),
                "redis": status("redis", &redis),
            }),
        }
    }
}
