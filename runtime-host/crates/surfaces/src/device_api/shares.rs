//! One device's fair share of a host: how many connections it may hold open
//! (`server.device_max_connections`) and how many of its requests may be in progress at once
//! over all of them (`server.device_max_requests`). A device over either cap gets `429` while
//! other devices go on, so one device's burst, or one stolen certificate, cannot take the batch
//! slots, streams and buffers every other device needs.
//!
//! The counts live in one map keyed by device, touched once when a connection opens or a
//! request starts and once when it ends (O(1) each); an entry leaves the map with the device's
//! last connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper::StatusCode;
use weir_metrics::Metrics;
use weir_storage::DeviceRef;

use crate::http::ApiError;

/// The code of a request refused on a connection beyond its device's cap.
pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";

/// The per-device caps of a host and what each device holds now.
pub struct DeviceShares {
    max_connections: usize,
    max_requests: usize,
    held: Mutex<HashMap<DeviceRef, Held>>,
    metrics: Arc<Metrics>,
}

/// What one device holds on this host.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    connections: usize,
    requests: usize,
}

impl DeviceShares {
    /// Caps of `max_connections` open connections and `max_requests` requests in progress per
    /// device; refusals count in `weir_listener_limits_hit_total{listener="devices"}`.
    pub fn new(max_connections: usize, max_requests: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(DeviceShares {
            max_connections,
            max_requests,
            held: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Counts a new connection of `device` until the returned share is dropped. A connection
    /// beyond the device's cap is still counted, but [`ConnectionShare::admit`] refuses each of
    /// its requests.
    pub fn connect(self: &Arc<Self>, device: DeviceRef) -> ConnectionShare {
        let connections = {
            let mut held = self.held.lock().expect("device shares lock");
            let entry = held.entry(device.clone()).or_default();
            entry.connections += 1;
            entry.connections
        };
        ConnectionShare {
            shares: self.clone(),
            over_cap: (connections > self.max_connections).then_some(connections),
            device,
        }
    }

    fn release(&self, device: &DeviceRef, update: impl FnOnce(&mut Held)) {
        let mut held = self.held.lock().expect("device shares lock");
        if let Some(entry) = held.get_mut(device) {
            update(entry);
            if entry.connections == 0 && entry.requests == 0 {
                held.remove(device);
            }
        }
    }

    /// Devices holding a connection or a request on this host.
    pub fn devices(&self) -> usize {
        self.held.lock().expect("device shares lock").len()
    }
}

/// One open device connection's place in its device's count.
pub struct ConnectionShare {
    shares: Arc<DeviceShares>,
    device: DeviceRef,
    /// The device's connection count when this one opened, if that was over the cap.
    over_cap: Option<usize>,
}

impl ConnectionShare {
    /// The device this connection authenticated.
    pub fn device(&self) -> &DeviceRef {
        &self.device
    }

    /// Admits one request on this connection, held until the returned share is dropped:
    /// `429 too_many_connections` on a connection beyond the device's cap,
    /// `429 too_many_requests` when the device already has its most requests in progress.
    pub fn admit(&self) -> Result<RequestShare, ApiError> {
        let shares = &self.shares;
        if let Some(open) = self.over_cap {
            shares.metrics.limit_hit("devices", "device_connections");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                TOO_MANY_CONNECTIONS,
                format!(
                    "{} had {open} connections open to this host, more than the {} allowed: \
                     this one closes; send over one already open",
                    self.device, shares.max_connections
                ),
            )
            .retry_after(1));
        }
        {
            let mut held = shares.held.lock().expect("device shares lock");
            let entry = held.entry(self.device.clone()).or_default();
            if entry.requests >= shares.max_requests {
                drop(held);
                shares.metrics.limit_hit("devices", "device_requests");
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    format!(
                        "{} already has {} requests in progress on this host, the most allowed: \
                         wait for their answers",
                        self.device, shares.max_requests
                    ),
                )
                .retry_after(1));
            }
            entry.requests += 1;
        }
        Ok(RequestShare {
            shares: shares.clone(),
            device: self.device.clone(),
        })
    }
}

impl Drop for ConnectionShare {
    fn drop(&mut self) {
        self.shares
            .release(&self.device, |held| held.connections -= 1);
    }
}

/// One request in progress, counted against its device until dropped.
pub struct RequestShare {
    shares: Arc<DeviceShares>,
    device: DeviceRef,
}

impl Drop for RequestShare {
    fn drop(&mut self) {
        self.shares.release(&self.device, |held| held.requests -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(max_connections: usize, max_requests: usize) -> Arc<DeviceShares> {
        DeviceShares::new(max_connections, max_requests, Arc::new(Metrics::new()))
    }

    #[test]
    fn connections_beyond_the_cap_have_every_request_refused() {
        let shares = shares(2, 8);
        let device = DeviceRef::new("acme", "m-1");
        let first = shares.connect(device.clone());
        let second = shares.connect(device.clone());
        let third = shares.connect(device.clone());
        let other = shares.connect(DeviceRef::new("acme", "m-2"));

        assert!(first.admit().is_ok() && second.admit().is_ok());
        assert_eq!(third.admit().err().unwrap().code, "too_many_connections");
        assert!(other.admit().is_ok(), "other devices are not affected");

        drop((first, second, third, other));
        assert_eq!(
            shares.devices(),
            0,
            "entries leave with the last connection"
        );
    }

    #[test]
    fn requests_in_progress_are_capped_per_device_over_all_its_connections() {
        let shares = shares(4, 3);
        let device = DeviceRef::new("acme", "m-1");
        let (a, b) = (
            shares.connect(device.clone()),
            shares.connect(device.clone()),
        );
        let held: Vec<_> = [&a, &b, &a].iter().map(|c| c.admit().unwrap()).collect();

        let refused = b.admit().err().unwrap();
        assert_eq!(refused.code, "too_many_requests");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        let other = shares.connect(DeviceRef::new("acme", "m-2"));
        assert!(other.admit().is_ok(), "other devices proceed");

        drop(held);
        assert!(a.admit().is_ok(), "finished requests free their places");
    }

    #[test]
    fn a_request_outliving_its_connection_is_still_released() {
        let shares = shares(1, 1);
        let device = DeviceRef::new("acme", "m-1");
        let connection = shares.connect(device.clone());
        let request = connection.admit().unwrap();
        drop(connection);
        assert_eq!(shares.devices(), 1, "the request still counts");
        drop(request);
        assert_eq!(shares.devices(), 0);
    }
}
