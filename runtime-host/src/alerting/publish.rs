//! Live alert events on Redis pub/sub: every recorded change is published as one JSON message on
//! `weir:events:<org>` (the organisation escaped as in the state hashes), for dashboards and
//! relays that want events as they happen. Pub/sub is at most once: a subscriber that is not
//! connected misses the message; `GET /v1/events` (PostgreSQL) is the record.

use redis::aio::ConnectionManager;
use serde_json::{Value as Json, json};
use weir_storage::{AlertChange, AlertChangeKind};

use super::state::{escape, within_deadline};

/// Publishes alert changes of one organisation on its channel.
#[derive(Clone)]
pub struct EventPublisher {
    connection: ConnectionManager,
}

impl EventPublisher {
    /// Publishes over `connection` (shared with the alerter's state store).
    pub fn new(connection: ConnectionManager) -> Self {
        EventPublisher { connection }
    }

    /// Publishes each of `changes` of `org`, in order, in one round trip.
    pub async fn publish(&self, org: &str, changes: &[AlertChange]) -> anyhow::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let channel = channel(org);
        let mut pipeline = redis::pipe();
        for change in changes {
            pipeline
                .cmd("PUBLISH")
                .arg(&channel)
                .arg(message(change).to_string())
                .ignore();
        }
        let mut connection = self.connection.clone();
        within_deadline(pipeline.query_async::<()>(&mut connection)).await
    }
}

/// The pub/sub channel of `org`'s alert events.
pub fn channel(org: &str) -> String {
    format!("weir:events:{}", escape(org))
}

/// One change as the message subscribers receive.
fn message(change: &AlertChange) -> Json {
    let kind = match change.kind {
        AlertChangeKind::Raise => "raise",
        AlertChangeKind::Escalate => "escalate",
        AlertChangeKind::Clear => "clear",
    };
    let value = change
        .value_json
        .as_deref()
        .and_then(|text| serde_json::from_str::<Json>(text).ok());
    json!({
        "kind": kind,
        "device": change.device,
        "key": change.key,
        "rule_id": change.rule_id,
        "rule_version": change.rule_version,
        "trigger": change.trigger,
        "severity": change.severity,
        "ts": change.ts_ms,
        "value": value,
        "message": change.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_escape_the_organisation_like_the_state_hashes() {
        assert_eq!(channel("acme"), "weir:events:acme");
        assert_eq!(channel("a:b%"), "weir:events:a%3Ab%25");
    }
}
