//! Waiting for what happens in the background (a host swapping in a new version, a webhook
//! delivered, a metric counted, a revocation reaching new connections) by checking it at an
//! interval until a deadline. It is the one way the tests and benchmarks wait: a condition that
//! never comes fails the run with what was awaited, for how long, and why not yet when the check
//! says, instead of hanging it.
//!
//! How long to wait is the caller's: a functional test waits generously (a loaded 2-core machine
//! is slow, not broken); how soon something happens is measured by the benchmarks.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

/// Calls `check` every `every` until it is satisfied, and answers what it settled on.
///
/// Panics naming `what` and `timeout` (and the reason the last check gave, if any) once
/// `timeout` has passed without it; the last check is made at the deadline. `every` is the
/// caller's because checks differ in cost: reading a host's memory is cheap, a request, a query
/// or a TLS handshake is not, and some checks send a batch each time.
pub async fn eventually<O: Outcome>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> O,
) -> O::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let reason = match check().await.settle() {
            Ok(value) => return value,
            Err(reason) => reason,
        };
        let now = Instant::now();
        if now >= deadline {
            match reason {
                Some(reason) => panic!("{what}: not within {timeout:?} (last check: {reason})"),
                None => panic!("{what}: not within {timeout:?}"),
            }
        }
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}

/// What a check of [`eventually`] answers: whether the condition holds yet (`bool`), the value
/// waited for (`Option<T>`), or that value or why not yet (`Result<T, E>`, the reason shown if
/// the deadline passes).
pub trait Outcome {
    /// What [`eventually`] answers once the check is satisfied.
    type Value;

    /// The value, or not yet (with a reason if the check gave one).
    fn settle(self) -> Result<Self::Value, Option<String>>;
}

impl Outcome for bool {
    type Value = ();

    fn settle(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;

    fn settle(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;

    fn settle(self) -> Result<T, Option<String>> {
        self.map_err(|reason| Some(reason.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::eventually;

    #[tokio::test]
    async fn answers_the_value_once_the_check_is_satisfied() {
        let mut calls = 0;
        let value = eventually(
            "the third call",
            Duration::from_secs(5),
            Duration::from_millis(1),
            async || {
                calls += 1;
                (calls == 3).then_some(calls * 10)
            },
        )
        .await;
        assert_eq!((value, calls), (30, 3));
    }

    #[tokio::test]
    #[should_panic(expected = "a miracle: not within 20ms (last check: still 7)")]
    async fn panics_naming_what_the_timeout_and_the_last_reason() {
        eventually(
            "a miracle",
            Duration::from_millis(20),
            Duration::from_millis(5),
            async || Err::<(), _>("still 7"),
        )
        .await;
    }
}
