//! Live alert events on Redis pub/sub: every recorded change is published as one JSON message on
//! `weir:events:<org>` (the organisation escaped as in the state hashes), for dashboards and
//! relays that want events as they happen. The message is [`AlertChange::to_json`] (or, for an
//! acknowledgement or a manual clear through the API, [`AlertEvent::action_json`]), the
//! document webhooks receive too. Pub/sub is at most once: a subscriber that is not connected misses the
//! message; `GET /v1/events` (PostgreSQL) is the record, webhooks the at-least-once channel.

use redis::aio::ConnectionManager;
use weir_storage::{AlertAction, AlertChange, AlertEvent};

use super::state::within_deadline;

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

    /// Publishes each of `changes` of `org`, in order, in one round trip, with its event id
    /// (`event_ids[i]` is `changes[i]`'s, as `record_alert_changes` returned them).
    pub async fn publish(
        &self,
        org: &str,
        changes: &[AlertChange],
        event_ids: &[Option<i64>],
    ) -> anyhow::Result<()> {
        let documents = changes
            .iter()
            .enumerate()
            .map(|(i, change)| change.to_json(event_ids.get(i).copied().flatten()));
        self.publish_documents(org, documents).await
    }

    /// Publishes what a person just did to `event` through the API
    /// ([`AlertEvent::action_json`]).
    pub async fn publish_action(
        &self,
        event: &AlertEvent,
        action: AlertAction,
    ) -> anyhow::Result<()> {
        self.publish_documents(&event.org, [event.action_json(action)])
            .await
    }

    /// Publishes `documents` on `org`'s channel, in order, in one round trip.
    async fn publish_documents(
        &self,
        org: &str,
        documents: impl IntoIterator<Item = serde_json::Value>,
    ) -> anyhow::Result<()> {
        let channel = channel(org);
        let mut pipeline = redis::pipe();
        let mut empty = true;
        for document in documents {
            pipeline
                .cmd("PUBLISH")
                .arg(&channel)
                .arg(document.to_string())
                .ignore();
            empty = false;
        }
        if empty {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        if let Err(first) = within_deadline(pipeline.query_async::<()>(&mut connection)).await {
            // The connection may have broken since its last use (Redis restarted): the failed
            // command made the manager reconnect, so one more try reaches the new connection.
            // A reply lost after a delivered PUBLISH means a duplicate on the live channel,
            // which readers tell by event id; a lost event is worse.
            tracing::debug!(error = %first, "publish failed; retrying once on a new connection");
            return within_deadline(pipeline.query_async::<()>(&mut connection)).await;
        }
        Ok(())
    }
}

/// The pub/sub channel of `org`'s alert events.
pub use weir_contract::events::channel;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_escape_the_organisation_like_the_state_hashes() {
        assert_eq!(channel("acme"), "weir:events:acme");
        assert_eq!(channel("a:b%"), "weir:events:a%3Ab%25");
    }
}
