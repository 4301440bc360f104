//! Who is calling the query API: the bearer token of `Authorization: Bearer <token>`, checked
//! against the tokens `weir token create` issues (stored hashed by `weir_storage`), and the
//! organisation it belongs to. A caller sees its organisation's devices only; the query handlers
//! enforce that with [`ApiCaller::org`].
//!
//! Answers, every 401 with a `WWW-Authenticate` challenge (RFC 6750):
//! - no credentials → 401 `unauthenticated`;
//! - a token that is unknown, revoked or malformed → 401 `invalid_token`, the same answer for
//!   each, so that probing reveals nothing about which tokens exist;
//! - PostgreSQL out of reach → 503 `storage_unavailable` (retry later).
//!
//! Valid tokens are remembered for [`CACHE_TTL`] in a process-wide cache keyed by the token's
//! SHA-256 (no secret stays in memory), so a busy client costs one PostgreSQL query per 30
//! seconds rather than one per request. The price: **revoking a token takes effect within 30
//! seconds** on each host, not at once. Unknown and revoked tokens are not cached (a flood of
//! made-up tokens must not fill memory): each costs one indexed query, and strings not shaped
//! like a token are refused without one.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use weir_storage::Storage;

use crate::http::ApiError;

/// How long a token found valid is trusted without asking PostgreSQL again: the longest a
/// revoked token keeps working on a host.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most tokens cached at once; beyond it, expired entries are dropped (and, if that is not
/// enough, all of them).
const CACHE_CAPACITY: usize = 10_000;

/// The challenge of a request without credentials.
const CHALLENGE: &str = "Bearer";
/// The challenge of a request whose token was refused.
const INVALID_TOKEN_CHALLENGE: &str = "Bearer error=\"invalid_token\"";

/// An authenticated caller of the query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCaller {
    /// The organisation the token belongs to: the only one whose devices the caller sees.
    pub org: String,
    /// The token's id (as `weir token list` shows it), for logs and audit.
    pub token_id: i64,
}

/// Authenticates the request with `headers` by its bearer token.
///
/// Errors are ready to answer: 401 `unauthenticated` or `invalid_token`, or 503 when PostgreSQL
/// cannot be asked. A token revoked less than [`CACHE_TTL`] ago may still be accepted.
pub async fn authenticate(storage: &Storage, headers: &HeaderMap) -> Result<ApiCaller, ApiError> {
    let secret = bearer_token(headers)?;
    let hash = weir_storage::token_hash(secret);
    if let Some(caller) = TOKENS.get(&hash, Instant::now()) {
        return Ok(caller);
    }
    match storage.find_token(secret).await? {
        Some(token) if !token.revoked => {
            let caller = ApiCaller {
                org: token.org,
                token_id: token.id,
            };
            TOKENS.insert(hash, caller.clone(), Instant::now());
            Ok(caller)
        }
        Some(token) => {
            tracing::debug!(token_id = token.id, "revoked API token refused");
            Err(invalid_token())
        }
        None => Err(invalid_token()),
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

/// The process-wide cache of valid tokens. Process-wide because [`authenticate`] is handed only
/// the storage; a host has one database, and keys are hashes of 256 random bits, so entries of
/// different databases (as in tests) cannot meet.
static TOKENS: LazyLock<TokenCache> = LazyLock::new(TokenCache::default);

/// Valid tokens by the SHA-256 of their secret, with when they were found valid.
#[derive(Default)]
struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], (ApiCaller, Instant)>>,
}

impl TokenCache {
    /// The caller of the token hashing to `hash`, if found valid less than [`CACHE_TTL`] before
    /// `now`.
    fn get(&self, hash: &[u8; 32], now: Instant) -> Option<ApiCaller> {
        let mut entries = self.entries.lock().expect("token cache lock");
        match entries.get(hash) {
            Some((caller, checked)) if now.duration_since(*checked) < CACHE_TTL => {
                Some(caller.clone())
            }
            Some(_) => {
                entries.remove(hash);
                None
            }
            None => None,
        }
    }

    /// Remembers that the token hashing to `hash` was found valid at `now`.
    fn insert(&self, hash: [u8; 32], caller: ApiCaller, now: Instant) {
        let mut entries = self.entries.lock().expect("token cache lock");
        if entries.len() >= CACHE_CAPACITY && !entries.contains_key(&hash) {
            entries.retain(|_, (_, checked)| now.duration_since(*checked) < CACHE_TTL);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(hash, (caller, now));
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

    #[test]
    fn cached_tokens_expire_after_the_ttl() {
        let cache = TokenCache::default();
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
        let cache = TokenCache::default();
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
