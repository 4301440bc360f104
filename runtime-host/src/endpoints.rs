//! Which region a device uploads to: an ordered list of region endpoints, the nearest preferred.
//!
//! A device is given its regions' endpoints in a configured order. It measures the handshake
//! round trip of each (TCP connect plus mutual-TLS handshake, through whatever is in front of the
//! hosts), uploads to the nearest, and re-measures the others every
//! [`SelectionPolicy::remeasure_every`]. Round trips within [`SelectionPolicy::tie_margin`] of
//! the fastest are a tie, won by the configured order, so jitter between two equally near
//! regions does not move devices.
//!
//! On a connect error, a TLS failure, a `503`, or a lost connection (GOAWAY, reset, timeout)
//! that reconnecting once did not cure, the device marks the
//! endpoint down for a cooldown (doubling on each failure in a row, up to
//! [`SelectionPolicy::max_cooldown`]) and moves to the best endpoint still up at once; its
//! unacknowledged batches stay queued and are resent with their ids. It comes back to a nearer
//! endpoint only after [`SelectionPolicy::return_after`] measurements in a row have found it
//! healthy and best: hysteresis, so a flapping region does not drag devices back and forth.
//!
//! This module is the decision only: plain state driven by the device loop with explicit
//! instants, so every rule is unit-tested without a network. `weir simulate`'s devices use it.

use std::fmt;
use std::time::{Duration, Instant};

/// One region endpoint: `host:port`, with an optional label for reports (`eu=10.0.0.5:7443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The label shown in progress lines and reports; the address when none was given.
    pub label: String,
    /// `host:port` of the device listener (or the region's load balancer).
    pub addr: String,
}

impl Endpoint {
    /// Parses `label=host:port` or `host:port`.
    ///
    /// ```
    /// use weir::endpoints::Endpoint;
    /// let eu = Endpoint::parse("eu=10.0.0.5:7443");
    /// assert_eq!((eu.label.as_str(), eu.addr.as_str()), ("eu", "10.0.0.5:7443"));
    /// assert_eq!(Endpoint::parse("10.0.0.6:7443").label, "10.0.0.6:7443");
    /// ```
    pub fn parse(text: &str) -> Endpoint {
        match text.split_once('=') {
            Some((label, addr)) if !label.is_empty() => Endpoint {
                label: label.to_owned(),
                addr: addr.to_owned(),
            },
            _ => Endpoint {
                label: text.to_owned(),
                addr: text.to_owned(),
            },
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// The knobs of endpoint selection; [`Default`] is what devices use unless told otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionPolicy {
    /// Round trips at most this much above the fastest count as a tie (configured order wins).
    pub tie_margin: Duration,
    /// How often the other endpoints are re-measured.
    pub remeasure_every: Duration,
    /// How long an endpoint is skipped after its first failure in a row.
    pub cooldown: Duration,
    /// The longest cooldown (it doubles with each failure in a row).
    pub max_cooldown: Duration,
    /// Measurements in a row that must find a nearer endpoint healthy and best before the
    /// device moves back to it.
    pub return_after: u32,
}

impl Default for SelectionPolicy {
    fn default() -> Self {
        SelectionPolicy {
            tie_margin: Duration::from_millis(5),
            remeasure_every: Duration::from_secs(15),
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(5),
            return_after: 2,
        }
    }
}

#[derive(Debug, Clone)]
struct EndpointState {
    endpoint: Endpoint,
    /// Smoothed handshake round trip; `None` until measured.
    rtt: Option<Duration>,
    /// Failures in a row.
    failures: u32,
    /// Skipped until then.
    down_until: Option<Instant>,
    /// Measurement rounds in a row that found this endpoint the best one while the device used
    /// another.
    best_streak: u32,
}

impl EndpointState {
    fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|until| now >= until)
    }
}

/// A device's view of its region endpoints; see the module doc for the rules.
#[derive(Debug, Clone)]
pub struct EndpointSelector {
    states: Vec<EndpointState>,
    current: usize,
    policy: SelectionPolicy,
    /// When the others were last measured; `None` before the first round.
    last_round: Option<Instant>,
}

/// Why the device moved to another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// The endpoint in use failed.
    Failover,
    /// A nearer endpoint was healthy and best for long enough.
    Return,
}

/// A move from one endpoint to another, by index into the configured list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The endpoint left.
    pub from: usize,
    /// The endpoint now in use.
    pub to: usize,
    /// Why.
    pub reason: SwitchReason,
}

impl EndpointSelector {
    /// A selector over `endpoints` in their configured order; it starts on the first.
    ///
    /// # Panics
    /// If `endpoints` is empty.
    pub fn new(endpoints: Vec<Endpoint>, policy: SelectionPolicy) -> EndpointSelector {
        assert!(
            !endpoints.is_empty(),
            "a device needs at least one endpoint"
        );
        EndpointSelector {
            states: endpoints
                .into_iter()
                .map(|endpoint| EndpointState {
                    endpoint,
                    rtt: None,
                    failures: 0,
                    down_until: None,
                    best_streak: 0,
                })
                .collect(),
            current: 0,
            policy,
            last_round: None,
        }
    }

    /// The endpoints, in configured order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.states.iter().map(|state| &state.endpoint)
    }

    /// The index of the endpoint in use.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The endpoint in use.
    pub fn current_endpoint(&self) -> &Endpoint {
        &self.states[self.current].endpoint
    }

    /// The smoothed round trip of endpoint `index`, once measured.
    pub fn rtt(&self, index: usize) -> Option<Duration> {
        self.states[index].rtt
    }

    /// Whether endpoint `index` is outside its cooldown at `now`.
    pub fn is_up(&self, index: usize, now: Instant) -> bool {
        self.states[index].is_up(now)
    }

    /// Whether every endpoint is in its cooldown: the device should back off before trying.
    pub fn all_down(&self, now: Instant) -> bool {
        !self.states.iter().any(|state| state.is_up(now))
    }

    /// The endpoints to measure now (none when there is only one): all of them on the first round, then every
    /// `remeasure_every` the ones out of their cooldown (the one in use too: its round trip
    /// changes while its connection stays open). Report each with
    /// [`measured`](Self::measured) and then call [`end_round`](Self::end_round).
    pub fn due_measurements(&self, now: Instant) -> Vec<usize> {
        if self.states.len() == 1 {
            return Vec::new(); // nothing to choose between
        }
        match self.last_round {
            None => (0..self.states.len()).collect(),
            Some(last) if now.duration_since(last) >= self.policy.remeasure_every => {
                (0..self.states.len())
                    .filter(|&index| self.states[index].is_up(now))
                    .collect()
            }
            Some(_) => Vec::new(),
        }
    }

    /// Records a measurement of endpoint `index`: its handshake round trip, or a failure.
    pub fn measured(&mut self, index: usize, outcome: Result<Duration, ()>, now: Instant) {
        match outcome {
            Ok(rtt) => self.record_rtt(index, rtt),
            Err(()) => self.mark_down(index, now),
        }
    }

    /// Closes a measurement round: on the first, picks the best endpoint (not reported as a
    /// move); later, moves away from the endpoint in use if its measurement failed, and back to
    /// a nearer one once it has been best `return_after` rounds in a row.
    pub fn end_round(&mut self, now: Instant) -> Option<Switch> {
        let first = self.last_round.is_none();
        self.last_round = Some(now);
        let best = self.best(now)?;
        for (index, state) in self.states.iter_mut().enumerate() {
            if index != best || best == self.current {
                state.best_streak = 0;
            }
        }
        if best == self.current {
            return None;
        }
        if first {
            // The initial choice, not a move.
            self.current = best;
            return None;
        }
        if !self.states[self.current].is_up(now) {
            return Some(self.switch_to(best, SwitchReason::Failover));
        }
        let state = &mut self.states[best];
        state.best_streak += 1;
        (state.best_streak >= self.policy.return_after)
            .then(|| self.switch_to(best, SwitchReason::Return))
    }

    /// Records a successful connection to endpoint `index` and its handshake round trip.
    pub fn connected(&mut self, index: usize, rtt: Duration) {
        self.record_rtt(index, rtt);
    }

    /// Records that the endpoint in use failed (connect error, TLS failure, `503`, GOAWAY,
    /// timeout): it goes into cooldown and the device moves to the best endpoint still up, if
    /// any. Returns the move.
    pub fn failed(&mut self, now: Instant) -> Option<Switch> {
        self.mark_down(self.current, now);
        self.leave_if_down(now)
    }

    /// If the endpoint in use is cooling down and another is up, moves to the best of those:
    /// after every endpoint failed, the first to come out of its cooldown is used.
    pub fn leave_if_down(&mut self, now: Instant) -> Option<Switch> {
        if self.states[self.current].is_up(now) {
            return None;
        }
        let next = self.best(now)?;
        Some(self.switch_to(next, SwitchReason::Failover))
    }

    /// Records an acknowledged upload on the endpoint in use: its failure streak ends.
    pub fn succeeded(&mut self) {
        let state = &mut self.states[self.current];
        state.failures = 0;
        state.down_until = None;
    }

    /// The best endpoint up at `now`: the lowest configured index among those whose round trip
    /// is within `tie_margin` of the fastest (unmeasured ones rank after measured ones).
    fn best(&self, now: Instant) -> Option<usize> {
        let up = || {
            self.states
                .iter()
                .enumerate()
                .filter(|(_, state)| state.is_up(now))
        };
        let fastest = up().filter_map(|(_, state)| state.rtt).min();
        match fastest {
            Some(fastest) => up()
                .find(|(_, state)| {
                    state
                        .rtt
                        .is_some_and(|rtt| rtt <= fastest + self.policy.tie_margin)
                })
                .map(|(index, _)| index),
            None => up().next().map(|(index, _)| index),
        }
    }

    fn record_rtt(&mut self, index: usize, rtt: Duration) {
        let state = &mut self.states[index];
        // Exponentially smoothed (weight 1/4 for the new sample) so one slow handshake does not
        // reorder the regions.
        state.rtt = Some(match state.rtt {
            Some(old) => (old * 3 + rtt) / 4,
            None => rtt,
        });
        state.failures = 0;
        state.down_until = None;
    }

    fn mark_down(&mut self, index: usize, now: Instant) {
        let state = &mut self.states[index];
        let doublings = state.failures.min(16);
        let cooldown = self
            .policy
            .cooldown
            .saturating_mul(1 << doublings)
            .min(self.policy.max_cooldown);
        state.failures = state.failures.saturating_add(1);
        state.down_until = Some(now + cooldown);
        state.best_streak = 0;
    }

    fn switch_to(&mut self, to: usize, reason: SwitchReason) -> Switch {
        let switch = Switch {
            from: self.current,
            to,
            reason,
        };
        self.current = to;
        self.states[to].best_streak = 0;
        switch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn selector(n: usize) -> EndpointSelector {
        let endpoints = (0..n)
            .map(|i| Endpoint::parse(&format!("r{i}=127.0.0.{}:7443", i + 1)))
            .collect();
        EndpointSelector::new(endpoints, SelectionPolicy::default())
    }

    /// Runs a full measurement round with these round trips (`None`: the endpoint failed).
    fn round(s: &mut EndpointSelector, rtts: &[Option<u64>], now: Instant) -> Option<Switch> {
        for index in s.due_measurements(now) {
            let outcome = rtts[index].map(Duration::from_millis).ok_or(());
            s.measured(index, outcome, now);
        }
        s.end_round(now)
    }

    #[test]
    fn the_first_round_picks_the_nearest_endpoint() {
        let mut s = selector(3);
        let t0 = Instant::now();
        assert_eq!(s.due_measurements(t0), [0, 1, 2]);
        let switch = round(&mut s, &[Some(40), Some(3), Some(20)], t0);
        assert_eq!(s.current(), 1);
        assert_eq!(switch, None, "the first choice is not a move");
    }

    #[test]
    fn a_tie_within_the_margin_goes_to_the_configured_order() {
        let mut s = selector(2);
        let t0 = Instant::now();
        round(&mut s, &[Some(12), Some(9)], t0);
        assert_eq!(s.current(), 0, "3 ms apart is within the 5 ms margin");
    }

    #[test]
    fn no_measurements_between_rounds() {
        let mut s = selector(2);
        let t0 = Instant::now();
        round(&mut s, &[Some(1), Some(30)], t0);
        assert!(
            s.due_measurements(t0 + 14 * Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(s.due_measurements(t0 + Duration::from_secs(15)), [0, 1]);
    }

    #[test]
    fn a_failure_moves_to_the_next_best_endpoint_at_once() {
        let mut s = selector(3);
        let t0 = Instant::now();
        round(&mut s, &[Some(1), Some(30), Some(10)], t0);
        let switch = s.failed(t0 + MS).expect("moved");
        assert_eq!((switch.from, switch.to), (0, 2));
        assert!(!s.is_up(0, t0 + MS));
        assert!(
            s.is_up(0, t0 + Duration::from_secs(1) + MS),
            "cooldown over"
        );
    }

    #[test]
    fn cooldowns_double_up_to_the_maximum() {
        let mut s = selector(1);
        let mut now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..8 {
            assert_eq!(s.failed(now), None, "nowhere else to go");
            let mut wait = Duration::ZERO;
            while !s.is_up(0, now + wait) {
                wait += Duration::from_millis(250);
            }
            seen.push(wait.as_secs_f64());
            now += wait;
        }
        assert_eq!(seen, [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]);
        s.succeeded();
        s.failed(now);
        assert!(s.is_up(0, now + Duration::from_secs(1)), "streak reset");
    }

    #[test]
    fn after_every_endpoint_failed_the_first_out_of_cooldown_is_used() {
        let mut s = selector(2);
        let t0 = Instant::now();
        round(&mut s, &[Some(1), Some(2)], t0);
        s.failed(t0); // 0 down until t0 + 1 s; now on 1
        assert_eq!(s.current(), 1);
        s.failed(t0 + Duration::from_millis(500)); // 1 down until t0 + 1.5 s; nowhere to go
        assert_eq!(s.current(), 1);
        assert_eq!(
            s.leave_if_down(t0 + Duration::from_millis(900)),
            None,
            "all down"
        );
        let switch = s
            .leave_if_down(t0 + Duration::from_secs(1))
            .expect("0 is up first");
        assert_eq!((switch.from, switch.to), (1, 0));
    }

    #[test]
    fn a_single_endpoint_is_never_measured() {
        let s = selector(1);
        assert!(s.due_measurements(Instant::now()).is_empty());
    }

    #[test]
    fn all_down_only_when_every_endpoint_cools_down() {
        let mut s = selector(2);
        let t0 = Instant::now();
        round(&mut s, &[Some(1), Some(2)], t0);
        s.failed(t0);
        assert!(!s.all_down(t0));
        s.failed(t0);
        assert!(s.all_down(t0));
    }

    #[test]
    fn the_device_returns_only_after_the_nearer_endpoint_was_best_twice_in_a_row() {
        let mut s = selector(2);
        let mut now = Instant::now();
        round(&mut s, &[Some(1), Some(30)], now);
        s.failed(now);
        assert_eq!(s.current(), 1);
        let every = SelectionPolicy::default().remeasure_every;
        // Region 0 still down at the next round: the measurement fails.
        now += every;
        assert_eq!(round(&mut s, &[None, Some(30)], now), None);
        // Healthy and best once: not yet.
        now += every;
        assert_eq!(round(&mut s, &[Some(1), Some(30)], now), None);
        assert_eq!(s.current(), 1);
        // Twice in a row: back.
        now += every;
        let switch = round(&mut s, &[Some(1), Some(30)], now).expect("returned");
        assert_eq!((switch.to, switch.reason), (0, SwitchReason::Return));
    }

    #[test]
    fn a_flapping_region_does_not_drag_devices_back() {
        let mut s = selector(2);
        let mut now = Instant::now();
        round(&mut s, &[Some(1), Some(30)], now);
        s.failed(now);
        let every = SelectionPolicy::default().remeasure_every;
        for up in [true, false, true, false, true, false] {
            now += every;
            let outcome = round(&mut s, &[up.then_some(1), Some(30)], now);
            assert_eq!(outcome, None);
            assert_eq!(s.current(), 1);
        }
    }

    #[test]
    fn one_slow_handshake_does_not_reorder_regions() {
        let mut s = selector(2);
        let mut now = Instant::now();
        round(&mut s, &[Some(2), Some(20)], now);
        assert_eq!(s.current(), 0);
        s.connected(0, 60 * MS); // one outlier: smoothed to 16.5 ms, still best
        assert_eq!(s.rtt(0), Some(16_500 * Duration::from_micros(1)));
        now += SelectionPolicy::default().remeasure_every;
        assert_eq!(round(&mut s, &[Some(2), Some(20)], now), None);
        assert_eq!(s.current(), 0);
    }

    #[test]
    fn unmeasured_endpoints_rank_after_measured_ones() {
        let mut s = selector(3);
        let t0 = Instant::now();
        round(&mut s, &[None, None, Some(50)], t0);
        assert_eq!(s.current(), 2);
    }
}
