//! Alert webhooks and their outbox.
//!
//! `webhooks` says where an organisation's alert events go: a URL, the secret that signs each
//! delivery, and `rule_id` (one rule's events) or none (every rule's). `webhook_deliveries` is
//! the outbox: [`Storage::record_alert_changes`] inserts one row per event change and matching
//! webhook in the transaction that records the change, and notifies [`WEBHOOK_CHANNEL`] at
//! commit. So a delivery exists exactly when its event does, whatever happens to the host
//! afterwards.
//!
//! Delivery is at least once. A worker (any host, several at a time) claims due rows with
//! [`Storage::claim_webhook_deliveries`]: `FOR UPDATE SKIP LOCKED`, so two workers never claim
//! the same row together, and a lease (the row's `next_attempt_at` pushed forward), so a row
//! whose worker died is claimed again once the lease ends. Then it marks the row delivered, or
//! failed with the time of its next attempt. A delivery whose success was not recorded (the
//! worker died between the POST and the mark) is sent again: receivers deduplicate.
//!
//! The secret is kept in clear (it signs, so it must be read back), which is why it is never
//! listed and `weir_query` has no grant on these tables.

use std::time::{Duration, SystemTime};

use crate::error::{Result, StorageError};
use crate::notify::{Channel, ChannelListener, listen_channel};
use crate::postgres::Storage;
use crate::timestamp::from_system_time;

/// The notification channel announcing new deliveries (payload empty).
pub(crate) const WEBHOOK_CHANNEL: &str = "weir_webhooks";
/// Random bytes of a generated secret: 256 bits, hex-encoded.
const SECRET_BYTES: usize = 32;

/// A webhook as listings show it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id, as `weir webhooks list` shows it.
    pub id: i64,
    /// The organisation whose events it receives.
    pub org: String,
    /// Only this rule's events; `None`: every rule's of the organisation.
    pub rule_id: Option<String>,
    /// Where deliveries are POSTed.
    pub url: String,
    /// When it was added, unix milliseconds.
    pub created_at_ms: i64,
    /// Deliveries not yet made (queued, or waiting for a retry).
    pub pending: i64,
}

/// A webhook just added, with its secret (shown this once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// The webhook.
    pub webhook: Webhook,
    /// The signing secret: the one given, or 32 random bytes in hex.
    pub secret: String,
}

/// A delivery a worker claimed: what to POST, where, signed with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// The delivery's id (`Weir-Delivery-Id`).
    pub id: i64,
    /// The webhook it goes to.
    pub webhook_id: i64,
    /// The alert event it is about (`Weir-Event-Id`).
    pub event_id: i64,
    /// The JSON document to POST.
    pub payload: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// The webhook's URL.
    pub url: String,
    /// The webhook's signing secret.
    pub secret: String,
}

/// Notifications that deliveries were queued. Stops listening when dropped.
pub struct WebhookListener {
    inner: ChannelListener<()>,
}

impl WebhookListener {
    /// Waits for the next notification (the first one comes once listening has begun, and
    /// one after every reconnection: deliveries may have been queued meanwhile).
    pub async fn next_notification(&mut self) -> Option<()> {
        self.inner.next().await
    }
}

/// Listens for queued deliveries on a dedicated connection to `url`, reconnecting by itself. The
/// first connection is made now: an unreachable server fails here.
pub async fn listen_webhook_deliveries(url: &str) -> Result<WebhookListener> {
    let channel = Channel {
        listen: "LISTEN weir_webhooks",
        application_name: "weir-webhook-listener",
        missed: (),
        parse: |_| (),
    };
    Ok(WebhookListener {
        inner: listen_channel(url, channel).await?,
    })
}

/// Milliseconds of `duration`, as PostgreSQL arithmetic takes them.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Storage {
    /// Adds a webhook for `org` (one rule's events when `rule_id` is given) POSTing to `url`,
    /// signed with `secret`, or with a new random secret when `None`.
    pub async fn add_webhook(
        &self,
        org: &str,
        rule_id: Option<&str>,
        url: &str,
        secret: Option<&str>,
    ) -> Result<NewWebhook> {
        let secret = match secret {
            Some(secret) => secret.to_owned(),
            None => {
                let mut random = [0u8; SECRET_BYTES];
                getrandom::fill(&mut random).map_err(|err| {
                    StorageError::Unavailable(format!(
                        "the operating system's random number generator failed: {err}"
                    ))
                })?;
                hex::encode(random)
            }
        };
        let client = self.client().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO webhooks (org, rule_id, url, secret) VALUES ($1, $2, $3, $4) \
                 RETURNING id, created_at",
            )
            .await?;
        let row = client
            .query_one(&insert, &[&org, &rule_id, &url, &secret])
            .await?;
        let created_at: SystemTime = row.try_get(1)?;
        Ok(NewWebhook {
            webhook: Webhook {
                id: row.try_get(0)?,
                org: org.to_owned(),
                rule_id: rule_id.map(str::to_owned),
                url: url.to_owned(),
                created_at_ms: from_system_time(created_at),
                pending: 0,
            },
            secret,
        })
    }

    /// The webhooks of `org` (every organisation's when `None`), oldest first.
    pub async fn list_webhooks(&self, org: Option<&str>) -> Result<Vec<Webhook>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT w.id, w.org, w.rule_id, w.url, w.created_at, \
                 (SELECT count(*) FROM webhook_deliveries d \
                  WHERE d.webhook_id = w.id AND d.delivered_at IS NULL) \
                 FROM webhooks w WHERE $1::text IS NULL OR w.org = $1 ORDER BY w.id",
            )
            .await?;
        let rows = client.query(&select, &[&org]).await?;
        rows.iter()
            .map(|row| {
                let created_at: SystemTime = row.try_get(4)?;
                Ok(Webhook {
                    id: row.try_get(0)?,
                    org: row.try_get(1)?,
                    rule_id: row.try_get(2)?,
                    url: row.try_get(3)?,
                    created_at_ms: from_system_time(created_at),
                    pending: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// Removes webhook `id` with its pending deliveries; `false` when there is none.
    pub async fn remove_webhook(&self, id: i64) -> Result<bool> {
        let client = self.client().await?;
        let delete = client
            .prepare_cached("DELETE FROM webhooks WHERE id = $1")
            .await?;
        Ok(client.execute(&delete, &[&id]).await? == 1)
    }

    /// Claims at most `limit` due deliveries, oldest first, for `lease`: each one's attempt is
    /// counted now, and no other worker claims it before the lease ends (then it is due again,
    /// should this worker never report).
    pub async fn claim_webhook_deliveries(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>> {
        let client = self.client().await?;
        let claim = client
            .prepare_cached(
                "WITH due AS ( \
                     SELECT id FROM webhook_deliveries \
                     WHERE delivered_at IS NULL AND next_attempt_at <= now() \
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED \
                 ), claimed AS ( \
                     UPDATE webhook_deliveries d SET attempts = d.attempts + 1, \
                     next_attempt_at = now() + $2::bigint * interval '1 millisecond' \
                     FROM due WHERE d.id = due.id \
                     RETURNING d.id, d.webhook_id, d.event_id, d.payload::text, d.attempts \
                 ) \
                 SELECT c.id, c.webhook_id, c.event_id, c.payload, c.attempts, w.url, w.secret \
                 FROM claimed c JOIN webhooks w ON w.id = c.webhook_id ORDER BY c.id",
            )
            .await?;
        let rows = client.query(&claim, &[&limit, &millis(lease)]).await?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    id: row.try_get(0)?,
                    webhook_id: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                    payload: row.try_get(3)?,
                    attempts: row.try_get(4)?,
                    url: row.try_get(5)?,
                    secret: row.try_get(6)?,
                })
            })
            .collect()
    }

    /// Records that delivery `id` was accepted by its webhook.
    pub async fn mark_webhook_delivered(&self, id: i64) -> Result<()> {
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE webhook_deliveries SET delivered_at = now(), last_error = NULL \
                 WHERE id = $1 AND delivered_at IS NULL",
            )
            .await?;
        client.execute(&update, &[&id]).await?;
        Ok(())
    }

    /// Records that delivery `id` failed with `error`; it is due again after `retry_in`.
    pub async fn mark_webhook_failed(
        &self,
        id: i64,
        retry_in: Duration,
        error: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE webhook_deliveries SET last_error = $3, \
                 next_attempt_at = now() + $2::bigint * interval '1 millisecond' \
                 WHERE id = $1 AND delivered_at IS NULL",
            )
            .await?;
        client
            .execute(&update, &[&id, &millis(retry_in), &error])
            .await?;
        Ok(())
    }

    /// Deliveries not made yet, every webhook's.
    pub async fn pending_webhook_deliveries(&self) -> Result<i64> {
        let client = self.client().await?;
        let count = client
            .prepare_cached("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL")
            .await?;
        Ok(client.query_one(&count, &[]).await?.try_get(0)?)
    }
}
