//! Who is calling the query API: the bearer token of `Authorization: Bearer <token>`, checked
//! against the tokens `weir token create` issues (stored hashed by `weir_storage`), and the
//! organisation it belongs to. A caller sees its organisation's devices only; the query handlers
//! enforce that with [`ApiCaller::org`].
//!
//! Answers, every 401 with a `WWW-Authenticate` challenge (RFC 6750):
//! - no credentials → 401 `unauthenticated`;
//! - a token that is unknown, revoked or malformed → 401 `invalid_token`, the same answer for
//!   each, so that probing reveals nothing about which tokens exist;
//! - too many lookups already in progress → 503 `overloaded`; PostgreSQL out of reach → 503
//!   `storage_unavailable` (retry later).
//!
//! Unauthenticated work stays cheap, so that a flood of made-up tokens cannot starve device
//! submits of PostgreSQL connections: strings not shaped like a token are refused without a
//! query; verdicts, valid and refused, are remembered for `server.token_cache_s` (30 s) keyed by
//! the token's SHA-256 (no secret stays in memory); and at most `server.max_token_lookups`
//! lookups run at once, so the flood holds that many pool connections and no more. The price of
//! the cache: **revoking a token takes effect within `token_cache_s`** on each host, not at once.
//! A made-up token cannot become valid later (secrets are 256 random bits), so caching refusals
//! refuses nothing that should pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use tokio::sync::Semaphore;
use weir_metrics::Metrics;
use weir_storage::{Storage, StorageError};

use crate::http::ApiError;

/// Most verdicts of each kind cached at once; beyond it, expired entries are dropped (and, if
/// that is not enough, all of them).
const CACHE_CAPACITY: usize = 10_000;
/// How long a request waits for a lookup place before `503 overloaded`.
const LOOKUP_WAIT: Duration = Duration::from_millis(500);

/// The challenge of a request without credentials.
const CHALLENGE: &str = "Bearer";
/// The challenge of a request whose token was refused.
const INVALID_TOKEN_CHALLENGE: &str = "Bearer error=\"invalid_token\"";

/// An authenticated caller of the query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCaller {
    /// The organisation the token belongs to: the only one whose devices the caller sees.
    pub org: String,
    /// The token's id (as `weir token list` shows it), for logs, audit and re-checks.
    pub token_id: i64,
}

/// Checks bearer tokens against storage, with the verdict caches and the lookup bound.
pub struct Authenticator {
    storage: Storage,
    ttl: Duration,
    valid: VerdictCache<ApiCaller>,
    refused: VerdictCache<()>,
    lookups: Semaphore,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Tokens of `storage`, verdicts kept for `ttl`, at most `max_lookups` lookups at once.
    pub fn new(storage: Storage, ttl: Duration, max_lookups: usize, metrics: Arc<Metrics>) -> Self {
        Authenticator {
            storage,
            ttl,
            valid: VerdictCache::new(ttl),
            refused: VerdictCache::new(ttl),
            lookups: Semaphore::new(max_lookups),
            metrics,
        }
    }

    /// How long a verdict is trusted: the longest a revoked token keeps working here.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Authenticates the request with `headers` by its bearer token.
    ///
    /// Errors are ready to answer: 401 `unauthenticated` or `invalid_token`, or 503 when the
    /// token cannot be looked up now. A token revoked less than [`ttl`](Self::ttl) ago may
    /// still be accepted.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<ApiCaller, ApiError> {
        let secret = bearer_token(headers)?;
        let hash = weir_storage::token_hash(secret);
        let now = Instant::now();
        if let Some(caller) = self.valid.get(&hash, now) {
            return Ok(caller);
        }
        if self.refused.get(&hash, now).is_some() {
            return Err(invalid_token());
        }
        let found = {
            let Ok(Ok(_lookup)) = tokio::time::timeout(LOOKUP_WAIT, self.lookups.acquire()).await
            else {
                self.metrics.limit_hit("api", "token_lookups");
                return Err(ApiError::unavailable(
                    "overloaded",
                    "too many token checks in progress; retry shortly",
                    1,
                ));
            };
            self.storage.find_token(secret).await?
        };
        match found {
            Some(token) if !token.revoked => {
                let caller = ApiCaller {
                    org: token.org,
                    token_id: token.id,
                };
                self.valid.insert(hash, caller.clone(), Instant::now());
                Ok(caller)
            }
            refused => {
                if let Some(token) = refused {
                    tracing::debug!(token_id = token.id, "revoked API token refused");
                }
                self.refused.insert(hash, (), Instant::now());
                Err(invalid_token())
            }
        }
    }

    /// Whether `caller`'s token is still valid, asked of PostgreSQL now (no cache): what a
    /// long-lived answer such as an event stream checks every [`ttl`](Self::ttl).
    pub async fn still_valid(&self, caller: &ApiCaller) -> Result<bool, StorageError> {
        self.storage.token_is_active(caller.token_id).await
    }
}

/// The token of the request's `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 9110); what follows it is returned as sent, for storage to judge.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(unauthenticated());
    };
    if values.next().is_some() {
        // Proxies and servers disagree on which of several copies counts: take none.
        return Err(ApiError::unauthorized(
            "invalid_token",
            "send one Authorization header, not several",
            INVALID_TOKEN_CHALLENGE,
        ));
    }
    let value = value.to_str().map_err(|_| invalid_token())?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated());
    }
    match token.trim() {
        "" => Err(unauthenticated()),
        token => Ok(token),
    }
}

fn unauthenticated() -> ApiError {
    ApiError::unauthorized(
        "unauthenticated",
        "this API needs a token: send `Authorization: Bearer <token>` \
         (an operator creates one with `weir token create`)",
        CHALLENGE,
    )
}

/// One answer for unknown, revoked and malformed tokens alike.
fn invalid_token() -> ApiError {
    ApiError::unauthorized(
        "invalid_token",
        "the API token is not valid",
        INVALID_TOKEN_CHALLENGE,
    )
}

/// Verdicts by the SHA-256 of a token's secret, with when they were reached.
struct VerdictCache<T> {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (T, Instant)>>,
}

impl<T: Clone> VerdictCache<T> {
    fn new(ttl: Duration) -> Self {
        VerdictCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict on the token hashing to `hash`, if reached less than the TTL before `now`.
    fn get(&self, hash: &[u8; 32], now: Instant) -> Option<T> {
        let mut entries = self.entries.lock().expect("token cache lock");
        match entries.get(hash) {
            Some((verdict, at)) if now.duration_since(*at) < self.ttl => Some(verdict.clone()),
            Some(_) => {
                entries.remove(hash);
                None
            }
            None => None,
        }
    }

    /// Remembers the verdict on the token hashing to `hash`, reached at `now`.
    fn insert(&self, hash: [u8; 32], verdict: T, now: Instant) {
        let mut entries = self.entries.lock().expect("token cache lock");
        if entries.len() >= CACHE_CAPACITY && !entries.contains_key(&hash) {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(hash, (verdict, now));
    }
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;
    use hyper::header::{HeaderValue, WWW_AUTHENTICATE};

    use super::*;

    fn with_authorization(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn parse(values: &[&[u8]]) -> Result<String, &'static str> {
        bearer_token(&with_authorization(values))
            .map(str::to_owned)
            .map_err(|error| error.code)
    }

    #[test]
    fn bearer_token_is_taken_from_the_authorization_header() {
        assert_eq!(parse(&[b"Bearer weir_abc"]), Ok("weir_abc".into()));
        assert_eq!(parse(&[b"bearer weir_abc"]), Ok("weir_abc".into()));
        assert_eq!(parse(&[b"BEARER   weir_abc  "]), Ok("weir_abc".into()));
        // Whatever follows the scheme is the token; storage refuses what is not one.
        assert_eq!(parse(&[b"Bearer a b"]), Ok("a b".into()));
    }

    #[test]
    fn missing_credentials_are_unauthenticated() {
        assert_eq!(parse(&[]), Err("unauthenticated"));
        assert_eq!(parse(&[b"Bearer"]), Err("unauthenticated"));
        assert_eq!(parse(&[b"Bearer   "]), Err("unauthenticated"));
        assert_eq!(parse(&[b""]), Err("unauthenticated"));
        assert_eq!(parse(&[b"Basic dXNlcjpwYXNz"]), Err("unauthenticated"));
        assert_eq!(parse(&[b"Bearerweir_abc"]), Err("unauthenticated"));
    }

    #[test]
    fn unreadable_or_repeated_headers_are_invalid_tokens() {
        assert_eq!(parse(&[b"Bearer weir_\xff"]), Err("invalid_token"));
        assert_eq!(
            parse(&[b"Bearer weir_a", b"Bearer weir_b"]),
            Err("invalid_token")
        );
    }

    #[test]
    fn refusals_are_401_with_a_bearer_challenge() {
        let missing = unauthenticated().into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers()[WWW_AUTHENTICATE], "Bearer");

        let invalid = invalid_token().into_response();
        assert_eq!(invalid.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            invalid.headers()[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }

    fn caller(org: &str) -> ApiCaller {
        ApiCaller {
            org: org.into(),
            token_id: 1,
        }
    }

    const CACHE_TTL: Duration = Duration::from_secs(30);

    #[test]
    fn cached_tokens_expire_after_the_ttl() {
        let cache = VerdictCache::new(CACHE_TTL);
        let start = Instant::now();
        cache.insert([1; 32], caller("acme"), start);

        assert_eq!(
            cache.get(&[1; 32], start + CACHE_TTL - Duration::from_millis(1)),
            Some(caller("acme"))
        );
        assert_eq!(cache.get(&[2; 32], start), None);
        assert_eq!(cache.get(&[1; 32], start + CACHE_TTL), None);
        assert!(
            cache.entries.lock().unwrap().is_empty(),
            "expired entry kept"
        );
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first() {
        let cache = VerdictCache::new(CACHE_TTL);
        let start = Instant::now();
        let later = start + CACHE_TTL / 2;
        for i in 0..CACHE_CAPACITY {
            let mut hash = [0; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let at = if i == 0 { later } else { start };
            cache.insert(hash, caller("acme"), at);
        }

        cache.insert([9; 32], caller("globex"), start + CACHE_TTL);

        let entries = cache.entries.lock().unwrap();
        assert_eq!(entries.len(), 2, "only the unexpired entries remain");
        assert!(entries.contains_key(&[9; 32]));
        assert!(entries.contains_key(&[0; 32]));
    }
}
