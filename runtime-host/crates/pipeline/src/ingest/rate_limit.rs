//! Per-device request rate limiting: a token bucket per device on this host. A device over its
//! rate gets 429 with `Retry-After`, which the device's store-and-forward honours.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use weir_storage::DeviceRef;

/// Token buckets keyed by device.
pub struct RateLimiter {
    rate_per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<DeviceRef, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets untouched this long are dropped, so the map does not grow with every device ever seen.
const IDLE_BUCKET: Duration = Duration::from_secs(600);

impl RateLimiter {
    /// A limiter allowing `rate_per_second` on average and `burst` at once, per device.
    pub fn new(rate_per_second: f64, burst: f64) -> Self {
        RateLimiter {
            rate_per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `device`; `Err(wait)` when the device must wait that long.
    pub fn check(&self, device: &DeviceRef) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.updated) < IDLE_BUCKET);
        }
        let bucket = buckets.entry(device.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate_per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.rate_per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_device_waits() {
        let limiter = RateLimiter::new(1.0, 3.0);
        let device = DeviceRef::new("org", "dev");
        for _ in 0..3 {
            assert!(limiter.check(&device).is_ok());
        }
        let wait = limiter.check(&device).unwrap_err();
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        assert!(
            limiter.check(&DeviceRef::new("org", "other")).is_ok(),
            "per device"
        );
    }
}
