//! The host's cache of hot query answers: history and trend answers of canonical ranges, kept
//! per organisation and URL for as long as their `Cache-Control: max-age` says (at most
//! [`MAX_TTL`]), and dropped as soon as a stored point falls into their range.
//!
//! Invalidation is what keeps read-your-writes: the ingest path calls
//! [`AnswerCache::points_stored`] after a batch is durable and before it is acknowledged, so an
//! answer that misses an acknowledged point is never served by this host. An answer computed
//! while a point of its series was being stored may miss it; a ticket taken before the
//! component runs ([`AnswerCache::ticket`]: the cache's store counter) keeps such an answer out
//! of the cache when its series was stored to since. Other replicas learn of the point only
//! through expiry: open ranges carry a short max-age.
//!
//! The bookkeeping is bounded: a series is remembered only while it has answers or was stored
//! to recently ([`SERIES_LIMIT`] of them at most, then those without answers are forgotten and
//! the tickets taken before are refused), and a cache of capacity 0 keeps nothing at all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::CACHE_CONTROL;
use weir_contract::routes::Endpoint;

/// The longest an answer stays, whatever its max-age (an immutable answer can still be changed
/// by a point later than the lateness window, stored through another replica).
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// The series an answer reads: organisation, device and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Series {
    /// The organisation.
    pub org: String,
    /// The device.
    pub device: String,
    /// The key.
    pub key: String,
}

/// A cacheable request: its series and `[from, to)` range in unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheableRequest {
    /// The series read.
    pub series: Series,
    /// Range start, inclusive.
    pub from: i64,
    /// Range end, exclusive.
    pub to: i64,
}

impl CacheableRequest {
    /// Reads `path` and `query` of a history or trend request with explicit `from` and `to`;
    /// `None` for anything else (other endpoints, percent-encoded names, missing bounds).
    pub fn parse(org: &str, path: &str, query: Option<&str>) -> Option<Self> {
        let route = weir_contract::routes::parse(path)?;
        if !matches!(route.endpoint, Endpoint::History | Endpoint::Trend) {
            return None;
        }
        let (device, key) = (route.device?, route.key?);
        if [device, key]
            .iter()
            .any(|s| s.is_empty() || s.contains('%'))
        {
            return None;
        }
        let (mut from, mut to) = (None, None);
        for pair in query?.split('&') {
            match pair.split_once('=') {
                Some(("from", value)) => from = value.parse().ok(),
                Some(("to", value)) => to = value.parse().ok(),
                _ => {}
            }
        }
        Some(CacheableRequest {
            series: Series {
                org: org.to_owned(),
                device: device.to_owned(),
                key: key.to_owned(),
            },
            from: from?,
            to: to?,
        })
    }
}

/// A stored answer: what is sent again, headers and body.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    /// The answer's headers (content type, ETag, Cache-Control…).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Series remembered without answers before they are forgotten (see the module documentation).
pub const SERIES_LIMIT: usize = 4096;

/// The cache's store counter when an answer began to be computed (see the module
/// documentation).
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Hot answers by organisation and URL, bounded in number.
pub struct AnswerCache {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<(String, String), Entry>,
    /// Per series: when it was last stored to and the URLs cached for it.
    series: HashMap<Series, SeriesEntry>,
    /// Counts [`AnswerCache::points_stored`] calls: a ticket is its value.
    stores: u64,
    /// The latest store of the series forgotten so far: a ticket older than it may have missed
    /// a store of a series no longer remembered.
    forgotten: u64,
    /// Insertion counter, to evict the oldest entry when full.
    inserted: u64,
}

#[derive(Default)]
struct SeriesEntry {
    /// The value of `stores` at this series' latest store.
    stored_at: u64,
    urls: Vec<(String, i64, i64)>,
}

struct Entry {
    answer: CachedAnswer,
    series: Series,
    expires: Instant,
    inserted: u64,
}

impl AnswerCache {
    /// A cache of at most `capacity` answers; 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        AnswerCache {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves no broken invariant worth refusing service.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer stored for `url` of `org`, if still fresh.
    pub fn get(&self, org: &str, url: &str) -> Option<CachedAnswer> {
        let mut state = self.state();
        let key = (org.to_owned(), url.to_owned());
        let entry = state.entries.get(&key)?;
        if entry.expires > Instant::now() {
            return Some(entry.answer.clone());
        }
        state.remove(&key);
        None
    }

    /// A ticket for an answer of `series` about to be computed, to hand to
    /// [`insert`](Self::insert) after computing.
    pub fn ticket(&self, _series: &Series) -> Ticket {
        Ticket(self.state().stores)
    }

    /// Stores the answer to `request` at `url`, if its `Cache-Control` gives it a `max-age`
    /// (`private` answers included: this cache is keyed by organisation, like a browser's by
    /// user) and no point of its series was stored since `ticket`.
    pub fn insert(
        &self,
        request: &CacheableRequest,
        url: &str,
        ticket: Ticket,
        answer: CachedAnswer,
    ) {
        if self.capacity == 0 {
            return;
        }
        let Some(ttl) = cache_ttl(&answer.headers) else {
            return;
        };
        let mut state = self.state();
        let stored_at = match state.series.get(&request.series) {
            Some(series) => series.stored_at,
            None => state.forgotten,
        };
        if stored_at > ticket.0 {
            return;
        }
        let key = (request.series.org.clone(), url.to_owned());
        state.remove(&key);
        while state.entries.len() >= self.capacity {
            state.evict_oldest();
        }
        state.inserted += 1;
        let inserted = state.inserted;
        let forgotten = state.forgotten;
        state
            .series
            .entry(request.series.clone())
            .or_insert_with(|| SeriesEntry {
                stored_at: forgotten,
                urls: Vec::new(),
            })
            .urls
            .push((url.to_owned(), request.from, request.to));
        state.entries.insert(
            key,
            Entry {
                answer,
                series: request.series.clone(),
                expires: Instant::now() + ttl.min(MAX_TTL),
                inserted,
            },
        );
    }

    /// Forgets every answer of `series` whose range holds a point in `[first, last]`
    /// (milliseconds), and keeps answers being computed now from being stored.
    pub fn points_stored(&self, series: &Series, first: i64, last: i64) {
        if self.capacity == 0 {
            return;
        }
        let mut state = self.state();
        state.stores += 1;
        let stores = state.stores;
        if state.series.len() >= SERIES_LIMIT && !state.series.contains_key(series) {
            state.forget_series_without_answers();
        }
        let entry = state.series.entry(series.clone()).or_default();
        entry.stored_at = stores;
        let mut stale = Vec::new();
        entry.urls.retain(|(url, from, to)| {
            let overlaps = *from <= last && first < *to;
            if overlaps {
                stale.push(url.clone());
            }
            !overlaps
        });
        for url in stale {
            state.entries.remove(&(series.org.clone(), url));
        }
    }

    /// How many answers are stored.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether no answer is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn remove(&mut self, key: &(String, String)) {
        if let Some(entry) = self.entries.remove(key)
            && let Some(series) = self.series.get_mut(&entry.series)
        {
            series.urls.retain(|(url, _, _)| *url != key.1);
        }
    }

    /// Forgets the series that have no answer, remembering only the latest of their stores.
    fn forget_series_without_answers(&mut self) {
        let mut forgotten = self.forgotten;
        self.series.retain(|_, series| {
            let keep = !series.urls.is_empty();
            if !keep {
                forgotten = forgotten.max(series.stored_at);
            }
            keep
        });
        self.forgotten = forgotten;
    }

    /// How many series are remembered (for tests).
    #[cfg(test)]
    fn series_count(&self) -> usize {
        self.series.len()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, entry)| entry.inserted)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.remove(&key);
        }
    }
}

/// How long this cache may keep an answer with these headers: its `max-age`, unless it says
/// `no-store` or `no-cache`.
fn cache_ttl(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(CACHE_CONTROL)?.to_str().ok()?;
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        match directive.split_once('=') {
            Some(("max-age", seconds)) => max_age = seconds.parse().ok(),
            None if ["no-store", "no-cache"].contains(&directive) => return None,
            _ => {}
        }
    }
    max_age.filter(|&s: &u64| s > 0).map(Duration::from_secs)
}

/// The ingest pipeline tells the cache of every stored span before acknowledging a batch.
impl weir_pipeline::ingest::StoredPointsObserver for AnswerCache {
    fn points_stored(
        &self,
        device: &weir_storage::DeviceRef,
        key: &str,
        first_ms: i64,
        last_ms: i64,
    ) {
        let series = Series {
            org: device.org.clone(),
            device: device.device.clone(),
            key: key.to_owned(),
        };
        AnswerCache::points_stored(self, &series, first_ms, last_ms);
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn answer(cache_control: &str) -> CachedAnswer {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_str(cache_control).unwrap());
        CachedAnswer {
            headers,
            body: Bytes::from_static(b"{}"),
        }
    }

    fn request(url: &str) -> CacheableRequest {
        let (path, query) = url.split_once('?').unwrap();
        CacheableRequest::parse("acme", path, Some(query)).unwrap()
    }

    #[test]
    fn only_history_and_trend_with_both_bounds_are_cacheable() {
        let parsed = request("/v1/devices/m1/keys/power/trend?from=0&to=3600000&bucket=1h");
        assert_eq!(
            parsed.series,
            Series {
                org: "acme".into(),
                device: "m1".into(),
                key: "power".into()
            }
        );
        assert_eq!((parsed.from, parsed.to), (0, 3_600_000));
        let parse = |path, query| CacheableRequest::parse("acme", path, query);
        assert!(parse("/v1/devices/m1/keys/power/history", Some("from=0")).is_none());
        assert!(parse("/v1/devices/m1/latest", Some("from=0&to=1")).is_none());
        assert!(parse("/v1/devices/m%2F1/keys/p/history", Some("from=0&to=1")).is_none());
        assert!(parse("/v1/devices/m1/keys/power/history/x", Some("from=0&to=1")).is_none());
    }

    #[test]
    fn a_stored_point_drops_the_answers_whose_range_holds_it() {
        let cache = AnswerCache::new(10);
        let early = "/v1/devices/m1/keys/power/history?from=0&to=1000";
        let late = "/v1/devices/m1/keys/power/history?from=1000&to=2000";
        for url in [early, late] {
            let ticket = cache.ticket(&request(url).series);
            cache.insert(&request(url), url, ticket, answer("public, max-age=5"));
        }
        assert_eq!(cache.len(), 2);
        cache.points_stored(&request(early).series, 1000, 1500);
        assert!(
            cache.get("acme", early).is_some(),
            "range [0, 1000) holds no point at 1000"
        );
        assert!(cache.get("acme", late).is_none());
        assert!(
            cache.get("globex", early).is_none(),
            "answers are per organisation"
        );
    }

    #[test]
    fn an_answer_computed_across_a_store_is_not_kept() {
        let cache = AnswerCache::new(10);
        let url = "/v1/devices/m1/keys/power/history?from=0&to=1000";
        let ticket = cache.ticket(&request(url).series);
        cache.points_stored(&request(url).series, 5, 5);
        cache.insert(&request(url), url, ticket, answer("public, max-age=5"));
        assert!(cache.is_empty());
    }

    #[test]
    fn uncacheable_answers_are_not_kept_and_the_oldest_goes_first() {
        let cache = AnswerCache::new(2);
        let url = |n: i64| format!("/v1/devices/m1/keys/power/history?from={n}&to={}", n + 1);
        for control in [
            "private, no-store",
            "private, no-cache",
            "no-store",
            "public",
            "public, max-age=0",
        ] {
            let ticket = cache.ticket(&request(&url(0)).series);
            cache.insert(&request(&url(0)), &url(0), ticket, answer(control));
        }
        assert!(cache.is_empty());
        for n in 0..3 {
            let ticket = cache.ticket(&request(&url(n)).series);
            cache.insert(
                &request(&url(n)),
                &url(n),
                ticket,
                answer("private, max-age=60"),
            );
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get("acme", &url(0)).is_none());
        assert!(cache.get("acme", &url(2)).is_some());
    }

    #[test]
    fn an_answer_computed_across_a_store_of_its_series_is_not_kept() {
        let cache = AnswerCache::new(10);
        let url = "/v1/devices/m1/keys/power/history?from=0&to=1000";
        let ticket = cache.ticket(&request(url).series);
        cache.points_stored(&request(url).series, 10, 10);
        cache.insert(&request(url), url, ticket, answer("private, max-age=5"));
        assert!(cache.is_empty());
        let ticket = cache.ticket(&request(url).series);
        cache.insert(&request(url), url, ticket, answer("private, max-age=5"));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_series_bookkeeping_is_bounded_and_forgetting_keeps_stale_answers_out() {
        let cache = AnswerCache::new(10);
        let series = |n: usize| Series {
            org: "acme".into(),
            device: format!("m{n}"),
            key: "power".into(),
        };
        let url = "/v1/devices/m0/keys/power/history?from=0&to=1000";
        let ticket = cache.ticket(&request(url).series);
        for n in 0..3 * SERIES_LIMIT {
            cache.points_stored(&series(n), 10, 10);
        }
        assert!(cache.state().series_count() <= SERIES_LIMIT);
        // m0 was stored to after the ticket, then forgotten: its answer is still refused.
        cache.insert(&request(url), url, ticket, answer("private, max-age=5"));
        assert!(cache.is_empty());

        let off = AnswerCache::new(0);
        for n in 0..10 {
            off.points_stored(&series(n), 10, 10);
        }
        assert_eq!(
            off.state().series_count(),
            0,
            "a cache that is off keeps nothing"
        );
    }
}
