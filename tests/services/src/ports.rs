//! Picking a free TCP port on 127.0.0.1 for a private server.
//!
//! Ports come from below the kernel's ephemeral range (`ip_local_port_range`), where outgoing
//! connections never take a local port: a test that stops a server and restarts it cannot lose
//! the port to one of its own clients meanwhile. A port is handed out at most once per process,
//! so parallel tests in one process never race for it; across processes the pick is random and a
//! server that still loses the race is started again on another port by its caller.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use anyhow::{Context, Result};

/// Ports already handed out by this process: never handed out twice.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The lowest port picked: clear of the well-known and registered-service crowd below it.
const LOWEST: u16 = 10_000;

/// A TCP port that is free on 127.0.0.1 now and that this process has not handed out before.
pub fn free_port() -> Result<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let range = quiet_range();
    for _ in 0..200 {
        let port = match &range {
            Some((low, high)) => low + (random() % u64::from(high - low + 1)) as u16,
            None => any_free_port()?,
        };
        if !handed_out.contains(&port) && is_free(port) {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("found no free TCP port on 127.0.0.1 after 200 tries")
}

/// Whether something could listen on 127.0.0.1:`port` right now.
pub(crate) fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether 127.0.0.1:`port` becomes free within half a second.
///
/// A port checked a moment ago can look taken for a few milliseconds: a process forked by another
/// thread holds a copy of the checking listener until it execs. A port still taken after half a
/// second has a real owner.
pub(crate) fn is_free_soon(port: u16) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        if is_free(port) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn any_free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The ports outside the ephemeral range to pick from, or `None` to let the kernel choose.
fn quiet_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>());
    let (ephemeral_low, ephemeral_high) = (bounds.next()?.ok()?, bounds.next()?.ok()?);
    if ephemeral_low >= LOWEST + 2_000 {
        Some((LOWEST, ephemeral_low - 1))
    } else if ephemeral_high <= 63_000 {
        Some((ephemeral_high + 1, u16::MAX))
    } else {
        None
    }
}

/// A random number from std's randomly keyed hasher; good enough to spread picks over processes.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one((
        SystemTime::now(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|&port| is_free(port)));
    }

    #[test]
    fn ports_avoid_the_ephemeral_range() {
        let Some((low, high)) = quiet_range() else {
            return;
        };
        let port = free_port().unwrap();
        assert!((low..=high).contains(&port), "{port} not in {low}..={high}");
    }
}
