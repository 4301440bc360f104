//! Alert events: what the alerter raised, escalated and cleared, and what people did about it
//! (acknowledge, clear by hand). The `alert_events` table (see `schema`) holds one row per
//! alert: a raise inserts it, an escalation raises its severity, a clear closes it. At most one
//! row per `(org, device, rule, key, trigger)` is open (`raised` or `acknowledged`), which a
//! partial unique index enforces.
//!
//! The alerter's state (in Redis) is the truth about which alerts are active; these rows follow
//! it. So a raise while a row is still open (its clear was lost, or the state was) closes the old
//! row first, and an escalation or clear without an open row is tolerated: the escalation opens
//! one, the clear changes nothing.
//!
//! Recording a change, an acknowledgement or a manual clear also queues its webhook deliveries
//! (the outbox of `webhooks`) in the same transaction, so a change on record is never one no
//! webhook will hear of.

use deadpool_postgres::Transaction;
use serde_json::{Value as Json, json};

use crate::error::{Result, StorageError};
use crate::postgres::Storage;
use crate::webhooks::WEBHOOK_CHANNEL;

/// What happened to an alert, as the alerter reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertChangeKind {
    /// A new alert.
    Raise,
    /// The open alert moved to a stronger severity.
    Escalate,
    /// The open alert ended.
    Clear,
}

/// One event of an evaluation, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    /// The organisation of the device.
    pub org: String,
    /// The device.
    pub device: String,
    /// The alerting key.
    pub key: String,
    /// The rule's id.
    pub rule_id: String,
    /// The version of the rule that was evaluated.
    pub rule_version: i32,
    /// `condition` or `no_data`.
    pub trigger: String,
    /// What happened.
    pub kind: AlertChangeKind,
    /// The severity after the event (for a clear, the one the alert had).
    pub severity: String,
    /// When: the point's timestamp (or the staleness check's `now`), unix milliseconds.
    pub ts_ms: i64,
    /// The point's value as JSON text; `None` for a no-data raise.
    pub value_json: Option<String>,
    /// A sentence for people.
    pub message: String,
}

impl AlertChangeKind {
    /// The kind's name in messages: `raise`, `escalate` or `clear`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertChangeKind::Raise => "raise",
            AlertChangeKind::Escalate => "escalate",
            AlertChangeKind::Clear => "clear",
        }
    }
}

impl AlertChange {
    /// The change as the one JSON document every channel sends (Redis pub/sub, webhooks):
    /// `event_id` is the `alert_events` row it raised, escalated or closed (`null` for a clear
    /// that found no open row), `by` is `alerter`, `ts` the change's time in unix milliseconds,
    /// `value` the point's value (`null` for no-data). What people do through the API has the
    /// same shape (see [`AlertEvent::action_json`]).
    pub fn to_json(&self, event_id: Option<i64>) -> Json {
        ChangeDocument {
            event_id,
            kind: self.kind.as_str(),
            by: "alerter",
            org: &self.org,
            device: &self.device,
            key: &self.key,
            rule_id: &self.rule_id,
            rule_version: self.rule_version,
            trigger: &self.trigger,
            severity: &self.severity,
            ts: self.ts_ms,
            value_json: self.value_json.as_deref(),
            message: &self.message,
        }
        .to_json()
    }
}

/// The fields of a change document, in the one place that shapes it, so that what the alerter
/// and what people do stay one kind of document.
struct ChangeDocument<'a> {
    event_id: Option<i64>,
    kind: &'a str,
    by: &'a str,
    org: &'a str,
    device: &'a str,
    key: &'a str,
    rule_id: &'a str,
    rule_version: i32,
    trigger: &'a str,
    severity: &'a str,
    ts: i64,
    /// The point's value as stored JSON text; `null` in the document when there is none (a
    /// no-data raise).
    value_json: Option<&'a str>,
    message: &'a str,
}

impl ChangeDocument<'_> {
    fn to_json(&self) -> Json {
        let value = self
            .value_json
            .and_then(|text| serde_json::from_str::<Json>(text).ok())
            .unwrap_or(Json::Null);
        json!({
            "event_id": self.event_id,
            "kind": self.kind,
            "by": self.by,
            "org": self.org,
            "device": self.device,
            "key": self.key,
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "trigger": self.trigger,
            "severity": self.severity,
            "ts": self.ts,
            "value": value,
            "message": self.message,
        })
    }
}

/// One row of `alert_events`, timestamps in unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// The event's id, as the API names it.
    pub id: i64,
    /// The organisation.
    pub org: String,
    /// The device.
    pub device: String,
    /// The alerting key.
    pub key: String,
    /// The rule's id.
    pub rule_id: String,
    /// The rule version of the latest change.
    pub rule_version: i32,
    /// The current (strongest) severity.
    pub severity: String,
    /// `condition` or `no_data`.
    pub trigger: String,
    /// `raised`, `acknowledged` or `cleared`.
    pub state: String,
    /// The value that raised it, as JSON text.
    pub value_json: Option<String>,
    /// The raise's sentence.
    pub message: String,
    /// The timestamp of the point that raised it.
    pub raised_at_ms: i64,
    /// When the row last changed.
    pub updated_at_ms: i64,
    /// When it escalated last.
    pub escalated_at_ms: Option<i64>,
    /// When someone acknowledged it.
    pub acknowledged_at_ms: Option<i64>,
    /// When it cleared (the clearing point's timestamp, or the manual clear's time).
    pub cleared_at_ms: Option<i64>,
}

/// What a person did to an alert through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertAction {
    /// Raised → acknowledged.
    Acknowledge,
    /// Ended by hand.
    Clear,
}

impl AlertAction {
    /// The action's `kind` in change documents: `acknowledge` or `clear`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAction::Acknowledge => "acknowledge",
            AlertAction::Clear => "clear",
        }
    }
}

impl AlertEvent {
    /// The document of `action` just done to this event, shaped like [`AlertChange::to_json`]
    /// (so every channel carries one kind of document): `kind` is the action, `by` is `api`,
    /// `ts` the action's time, `value` and `message` the raise's.
    pub fn action_json(&self, action: AlertAction) -> Json {
        let ts = match action {
            AlertAction::Acknowledge => self.acknowledged_at_ms,
            AlertAction::Clear => self.cleared_at_ms,
        };
        ChangeDocument {
            event_id: Some(self.id),
            kind: action.as_str(),
            by: "api",
            org: &self.org,
            device: &self.device,
            key: &self.key,
            rule_id: &self.rule_id,
            rule_version: self.rule_version,
            trigger: &self.trigger,
            severity: &self.severity,
            ts: ts.unwrap_or(self.updated_at_ms),
            value_json: self.value_json.as_deref(),
            message: &self.message,
        }
        .to_json()
    }
}

/// Which events to list, newest first; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertEventFilter {
    /// Only this device's.
    pub device: Option<String>,
    /// Only this key's.
    pub key: Option<String>,
    /// Only of this severity.
    pub severity: Option<String>,
    /// Only in this state.
    pub state: Option<String>,
    /// Raised at or after, unix milliseconds.
    pub from_ms: Option<i64>,
    /// Raised before, unix milliseconds.
    pub to_ms: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// What acknowledging or clearing an event found.
#[derive(Debug, Clone, PartialEq)]
pub enum EventUpdate {
    /// The event changed; here it is now.
    Changed(AlertEvent),
    /// The event was already in the requested state (or past it, for a clear); unchanged.
    Unchanged(AlertEvent),
    /// Acknowledging an event that has cleared.
    Cleared(AlertEvent),
    /// No event with that id in that organisation.
    NotFound,
}

/// A statement parameter.
type Param = dyn tokio_postgres::types::ToSql + Sync;

/// The columns of [`AlertEvent`], in its order.
const COLUMNS: &str = "id, org, device, key, rule_id, rule_version, severity, trigger, state, \
     value::text, message, \
     (extract(epoch FROM raised_at) * 1000)::bigint, \
     (extract(epoch FROM updated_at) * 1000)::bigint, \
     (extract(epoch FROM escalated_at) * 1000)::bigint, \
     (extract(epoch FROM acknowledged_at) * 1000)::bigint, \
     (extract(epoch FROM cleared_at) * 1000)::bigint";

/// Queues a change document (`$4`, event `$3`) for every webhook of organisation `$1` that takes
/// every rule or rule `$2`.
const ENQUEUE: &str = "INSERT INTO webhook_deliveries (webhook_id, event_id, payload) \
     SELECT id, $3, $4::text::jsonb FROM webhooks \
     WHERE org = $1 AND (rule_id IS NULL OR rule_id = $2)";

/// The condition selecting the open row of an alert, parameters `$1..$5` being org, device,
/// rule id, key and trigger.
const OPEN_ROW: &str = "org = $1 AND device = $2 AND rule_id = $3 AND key = $4 AND trigger = $5 \
     AND state IN ('raised', 'acknowledged')";

impl Storage {
    /// Records an evaluation's events, in order, in one transaction, with a webhook delivery
    /// per change and matching webhook (same organisation, every rule or the change's). Returns
    /// each change's event id, in order: the row it inserted, escalated or closed (`None` for a
    /// clear without an open row, which changes nothing and is delivered to no webhook).
    pub async fn record_alert_changes(&self, changes: &[AlertChange]) -> Result<Vec<Option<i64>>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ids = record_changes(&tx, changes).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// `org`'s events matching `filter`, newest raise first.
    pub async fn list_alert_events(
        &self,
        org: &str,
        filter: &AlertEventFilter,
    ) -> Result<Vec<AlertEvent>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM alert_events WHERE org = $1 \
                 AND ($2::text IS NULL OR device = $2) \
                 AND ($3::text IS NULL OR key = $3) \
                 AND ($4::text IS NULL OR severity = $4) \
                 AND ($5::text IS NULL OR state = $5) \
                 AND ($6::bigint IS NULL OR raised_at >= to_timestamp($6::bigint / 1000.0)) \
                 AND ($7::bigint IS NULL OR raised_at < to_timestamp($7::bigint / 1000.0)) \
                 ORDER BY raised_at DESC, id DESC LIMIT $8"
            ))
            .await?;
        let rows = client
            .query(
                &select,
                &[
                    &org,
                    &filter.device,
                    &filter.key,
                    &filter.severity,
                    &filter.state,
                    &filter.from_ms,
                    &filter.to_ms,
                    &filter.limit,
                ],
            )
            .await?;
        rows.iter().map(alert_event).collect()
    }

    /// `org`'s event `id`, if there is one.
    pub async fn alert_event(&self, org: &str, id: i64) -> Result<Option<AlertEvent>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM alert_events WHERE id = $1 AND org = $2"
            ))
            .await?;
        let row = client.query_opt(&select, &[&id, &org]).await?;
        row.as_ref().map(alert_event).transpose()
    }

    /// Acknowledges `org`'s event `id`: raised → acknowledged, queuing the change's webhook
    /// deliveries in the same transaction. Acknowledging it again changes nothing; a cleared
    /// event stays cleared.
    pub async fn acknowledge_alert_event(&self, org: &str, id: i64) -> Result<EventUpdate> {
        let update = format!(
            "UPDATE alert_events SET state = 'acknowledged', acknowledged_at = now(), \
             updated_at = now() WHERE id = $1 AND org = $2 AND state = 'raised' \
             RETURNING {COLUMNS}"
        );
        if let Some(event) = self
            .act_on_alert_event(&update, org, id, AlertAction::Acknowledge)
            .await?
        {
            return Ok(EventUpdate::Changed(event));
        }
        Ok(match self.alert_event(org, id).await? {
            None => EventUpdate::NotFound,
            Some(event) if event.state == "cleared" => EventUpdate::Cleared(event),
            Some(event) => EventUpdate::Unchanged(event),
        })
    }

    /// Clears `org`'s open event `id` by hand, queuing the change's webhook deliveries in the
    /// same transaction. Clearing a cleared event changes nothing.
    pub async fn clear_alert_event(&self, org: &str, id: i64) -> Result<EventUpdate> {
        let update = format!(
            "UPDATE alert_events SET state = 'cleared', cleared_at = now(), \
             updated_at = now() WHERE id = $1 AND org = $2 \
             AND state IN ('raised', 'acknowledged') RETURNING {COLUMNS}"
        );
        if let Some(event) = self
            .act_on_alert_event(&update, org, id, AlertAction::Clear)
            .await?
        {
            return Ok(EventUpdate::Changed(event));
        }
        Ok(match self.alert_event(org, id).await? {
            None => EventUpdate::NotFound,
            Some(event) => EventUpdate::Unchanged(event),
        })
    }

    /// Runs `update` (parameters id and org, returning the row) and, when it changed the row,
    /// queues `action`'s document for every matching webhook, in one transaction.
    async fn act_on_alert_event(
        &self,
        update: &str,
        org: &str,
        id: i64,
        action: AlertAction,
    ) -> Result<Option<AlertEvent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let update = tx.prepare_cached(update).await?;
        let Some(row) = tx.query_opt(&update, &[&id, &org]).await? else {
            return Ok(None);
        };
        let event = alert_event(&row)?;
        let payload = event.action_json(action).to_string();
        let enqueue = tx.prepare_cached(ENQUEUE).await?;
        let enqueued = tx
            .execute(&enqueue, &[&event.org, &event.rule_id, &event.id, &payload])
            .await?;
        if enqueued > 0 {
            let notify = tx.prepare_cached("SELECT pg_notify($1, '')").await?;
            tx.execute(&notify, &[&WEBHOOK_CHANNEL]).await?;
        }
        tx.commit().await?;
        Ok(Some(event))
    }
}

fn alert_event(row: &tokio_postgres::Row) -> Result<AlertEvent> {
    let event = AlertEvent {
        id: row.try_get(0)?,
        org: row.try_get(1)?,
        device: row.try_get(2)?,
        key: row.try_get(3)?,
        rule_id: row.try_get(4)?,
        rule_version: row.try_get(5)?,
        severity: row.try_get(6)?,
        trigger: row.try_get(7)?,
        state: row.try_get(8)?,
        value_json: row.try_get(9)?,
        message: row.try_get(10)?,
        raised_at_ms: row.try_get(11)?,
        updated_at_ms: row.try_get(12)?,
        escalated_at_ms: row.try_get(13)?,
        acknowledged_at_ms: row.try_get(14)?,
        cleared_at_ms: row.try_get(15)?,
    };
    if !matches!(event.state.as_str(), "raised" | "acknowledged" | "cleared") {
        return Err(StorageError::Corrupt(format!(
            "alert event {} has state {:?}",
            event.id, event.state
        )));
    }
    Ok(event)
}

/// Records `changes` in `tx`, in order, with their webhook deliveries; each change's event id.
pub(crate) async fn record_changes(
    tx: &Transaction<'_>,
    changes: &[AlertChange],
) -> Result<Vec<Option<i64>>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let close = tx
        .prepare_cached(&format!(
            "UPDATE alert_events SET state = 'cleared', rule_version = $6, \
                 cleared_at = to_timestamp($7::bigint / 1000.0), updated_at = now() \
                 WHERE {OPEN_ROW} RETURNING id"
        ))
        .await?;
    let escalate = tx
        .prepare_cached(&format!(
            "UPDATE alert_events SET severity = $6, rule_version = $7, \
                 escalated_at = to_timestamp($8::bigint / 1000.0), updated_at = now() \
                 WHERE {OPEN_ROW} RETURNING id"
        ))
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO alert_events (org, device, key, rule_id, rule_version, severity, \
                 trigger, state, value, message, raised_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'raised', $8::text::jsonb, $9, \
                 to_timestamp($10::bigint / 1000.0)) RETURNING id",
        )
        .await?;
    // A raise reported again (its states were not stored after it was recorded, so the next
    // evaluation raised it anew) finds its own open row: recorded and queued already.
    let same_raise = tx
        .prepare_cached(&format!(
            "SELECT id FROM alert_events WHERE {OPEN_ROW} \
                 AND raised_at = to_timestamp($6::bigint / 1000.0)"
        ))
        .await?;
    let enqueue = tx.prepare_cached(ENQUEUE).await?;
    let mut ids = Vec::with_capacity(changes.len());
    let mut enqueued = 0;
    for c in changes {
        let open: [&Param; 5] = [&c.org, &c.device, &c.rule_id, &c.key, &c.trigger];
        let mut id: Option<i64> = None;
        if c.kind == AlertChangeKind::Raise {
            let mut params = open.to_vec();
            params.push(&c.ts_ms);
            if let Some(row) = tx.query_opt(&same_raise, &params).await? {
                ids.push(Some(row.try_get(0)?));
                continue;
            }
        }
        match c.kind {
            AlertChangeKind::Raise | AlertChangeKind::Clear => {
                let mut params = open.to_vec();
                params.extend([&c.rule_version as &Param, &c.ts_ms]);
                let closed = tx.query(&close, &params).await?;
                if c.kind == AlertChangeKind::Clear {
                    id = closed.first().map(|row| row.try_get(0)).transpose()?;
                }
            }
            AlertChangeKind::Escalate => {
                let mut params = open.to_vec();
                params.extend([&c.severity as &Param, &c.rule_version, &c.ts_ms]);
                let escalated = tx.query(&escalate, &params).await?;
                id = escalated.first().map(|row| row.try_get(0)).transpose()?;
            }
        }
        if c.kind != AlertChangeKind::Clear && id.is_none() {
            let row = tx
                .query_one(
                    &insert,
                    &[
                        &c.org,
                        &c.device,
                        &c.key,
                        &c.rule_id,
                        &c.rule_version,
                        &c.severity,
                        &c.trigger,
                        &c.value_json,
                        &c.message,
                        &c.ts_ms,
                    ],
                )
                .await?;
            id = Some(row.try_get(0)?);
        }
        if let Some(id) = id {
            let payload = c.to_json(Some(id)).to_string();
            enqueued += tx
                .execute(&enqueue, &[&c.org, &c.rule_id, &id, &payload])
                .await?;
        }
        ids.push(id);
    }
    if enqueued > 0 {
        // Delivered at commit, to the workers of every host.
        let notify = tx.prepare_cached("SELECT pg_notify($1, '')").await?;
        tx.execute(&notify, &[&WEBHOOK_CHANNEL]).await?;
    }
    Ok(ids)
}
