//! Starting a PostgreSQL `LISTEN` that the host's background duties depend on: the first
//! connection may fail (the database restarting, not yet reachable), so it is retried at an
//! interval, with a warning each time, until it works or the host stops.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Calls `listen` every `interval` until it succeeds and returns its listener, or `None` once
/// `shutdown` is cancelled. `what` names the changes listened for in the warnings.
pub async fn listen_until_stopped<L, E, F, Fut>(
    what: &str,
    interval: Duration,
    shutdown: &CancellationToken,
    mut listen: F,
) -> Option<L>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<L, E>>,
{
    loop {
        match listen().await {
            Ok(listener) => return Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for {what} yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.cancelled() => return None,
                }
            }
        }
    }
}
