//! Per-device request rate limiting on this host: a GCRA limiter (a token bucket without a
//! refill task) per device, from `governor`. A device over its rate gets 429 with
//! `Retry-After`, which the device's store-and-forward honours.
//!
//! Each check is O(1): one entry of a sharded map, no global lock and no scan. Devices that
//! have been quiet long enough to be back at a full burst are dropped by
//! [`RateLimiter::forget_idle`], which the host runs on a timer, not on the request path.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use weir_storage::DeviceRef;

/// How often the host should call [`RateLimiter::forget_idle`].
pub const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

/// Rate limits keyed by device.
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<DeviceRef>,
    clock: DefaultClock,
}

impl RateLimiter {
    /// A limiter allowing `rate_per_second` on average and `burst` at once, per device. Both
    /// are checked by the configuration (`rate > 0`, `burst >= 1`); out-of-range values are
    /// clamped to the nearest usable ones.
    pub fn new(rate_per_second: f64, burst: f64) -> Self {
        let period =
            Duration::from_secs_f64(1.0 / rate_per_second.max(1e-6)).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(burst.clamp(1.0, f64::from(u32::MAX)) as u32)
            .unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .expect("the period is not zero")
            .allow_burst(burst);
        RateLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request's share for `device`; `Err(wait)` when the device must wait that long.
    pub fn check(&self, device: &DeviceRef) -> Result<(), Duration> {
        self.limiter
            .check_key(device)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops the state of devices back at a full burst (indistinguishable from new ones), so
    /// the map does not grow with every device ever seen. O(devices): run it on a timer.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Devices with state held (an estimate while requests run).
    pub fn devices(&self) -> usize {
        self.limiter.len()
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
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            limiter.check(&DeviceRef::new("org", "other")).is_ok(),
            "per device"
        );
    }

    #[test]
    fn fractional_rates_are_kept() {
        let limiter = RateLimiter::new(0.5, 1.0);
        let device = DeviceRef::new("org", "slow");
        assert!(limiter.check(&device).is_ok());
        let wait = limiter.check(&device).unwrap_err();
        assert!(
            wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
    }

    #[test]
    fn idle_devices_are_forgotten_busy_ones_kept() {
        let limiter = RateLimiter::new(1000.0, 1.0);
        let busy = DeviceRef::new("org", "busy");
        for i in 0..100 {
            let _ = limiter.check(&DeviceRef::new("org", format!("d{i}")));
        }
        std::thread::sleep(Duration::from_millis(5));
        let slow = RateLimiter::new(0.001, 1.0);
        assert!(slow.check(&busy).is_ok());
        assert!(slow.check(&busy).is_err());
        limiter.forget_idle();
        slow.forget_idle();
        assert_eq!(
            limiter.devices(),
            0,
            "devices back at a full burst are dropped"
        );
        assert_eq!(slow.devices(), 1, "a device still waiting is kept");
        assert!(slow.check(&busy).is_err(), "and still limited");
    }
}
