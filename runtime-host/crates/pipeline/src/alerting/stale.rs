//! The staleness timer: every `alerting.stale_check_s` one host of the region (whichever takes
//! the Redis lock of that interval) runs `evaluate-stale` for every device with alerter state in
//! an organisation whose rules have a `stale_after`. The alerter raises a no-data alert for each
//! key silent that long; the key's next point clears it (on the ingest path).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use weir_storage::DeviceRef;

use super::Alerting;

/// Checks staleness every interval until shutdown.
pub async fn run(alerting: Arc<Alerting>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(alerting.stale_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        alerting.check_staleness().await;
    }
}

impl Alerting {
    /// One staleness check of every device with state, if this host takes the interval's lock.
    /// Failures are logged and counted; the next check tries again.
    pub async fn check_staleness(&self) {
        let orgs = self.rules.load().orgs_with_stale_rules();
        if orgs.is_empty() {
            return;
        }
        // A little shorter than the interval, so that the next check's lock is free.
        let ttl = self.stale_interval.mul_f64(0.9);
        match self.states.lock_stale_check(ttl).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                self.metrics.alert_failure("alert_state_unavailable");
                tracing::warn!(error = format!("{error:#}"), "staleness check skipped");
                return;
            }
        }
        let now = crate::clock::now_ms();
        for org in orgs {
            let devices = match self.states.devices(&org).await {
                Ok(devices) => devices,
                Err(error) => {
                    self.metrics.alert_failure("alert_state_unavailable");
                    tracing::warn!(%org, error = format!("{error:#}"), "staleness check skipped");
                    continue;
                }
            };
            for device in devices {
                let device = DeviceRef::new(org.clone(), device);
                if let Err(error) = self.evaluate_stale(&device, now).await {
                    self.failed(&error);
                    tracing::error!(%device, code = error.code(), %error, "staleness check failed");
                }
            }
        }
    }
}
