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
//! [`Storage::claim_webhook_deliveries`], webhook by webhook: it locks the webhooks it claims for
//! (`FOR NO KEY UPDATE SKIP LOCKED`, so two workers never count one webhook's requests in flight
//! together), takes at most as many of each one's due rows as its cap leaves free (the rows with
//! a live lease are its requests in flight, every host's), and leases them (`leased_until`, and
//! `next_attempt_at` pushed to the same time), so a row whose worker died is claimed again once
//! the lease ends. `attempts`, counted at the claim, is the claim's fencing token: the worker
//! marks the row delivered, failed (with the time of its next attempt) or dead only while no
//! later claim took it over. A delivery whose success was not recorded (the worker died between
//! the POST and the mark) is sent again: receivers deduplicate.
//!
//! A delivery is given up (dead-lettered, `dead_at`) when it is older than the maximum age
//! (counted from `queued_at`), after the maximum number of attempts, or when its destination is
//! refused; `weir webhooks redrive` queues a webhook's dead deliveries again. Delivered rows are
//! purged after a retention.
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
    /// Deliveries not yet made (queued, or waiting for a retry), dead ones excepted.
    pub pending: i64,
    /// Deliveries given up (see `weir webhooks redrive`).
    pub dead: i64,
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
    /// Attempts so far, this one included; also the claim's fencing token (see
    /// [`Storage::mark_webhook_delivered`]).
    pub attempts: i32,
    /// The webhook's URL.
    pub url: String,
    /// The webhook's signing secret.
    pub secret: String,
}

/// The outbox at a glance, every webhook's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookOutbox {
    /// Deliveries not made yet and not given up.
    pub pending: i64,
    /// Deliveries given up, waiting for a re-drive.
    pub dead: i64,
}

/// Rows a purge deletes per statement, so that one purge never holds a long transaction.
const PURGE_BATCH: i64 = 10_000;

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
                dead: 0,
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
                  WHERE d.webhook_id = w.id AND d.delivered_at IS NULL AND d.dead_at IS NULL), \
                 (SELECT count(*) FROM webhook_deliveries d \
                  WHERE d.webhook_id = w.id AND d.delivered_at IS NULL AND d.dead_at IS NOT NULL) \
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
                    dead: row.try_get(6)?,
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

    /// Claims due deliveries for `lease`, at most `limit` in all and, per webhook, at most
    /// `per_webhook` in flight counting every worker's live leases; the webhooks waiting longest
    /// first, each one's deliveries oldest first. Deliveries queued more than `max_age` ago are
    /// not claimed (see [`Storage::dead_letter_expired_webhook_deliveries`]). Each claimed
    /// delivery's attempt is counted now, and no other worker claims it before the lease ends
    /// (then it is due again, should this worker never report).
    pub async fn claim_webhook_deliveries(
        &self,
        limit: i64,
        per_webhook: i64,
        lease: Duration,
        max_age: Duration,
    ) -> Result<Vec<DueDelivery>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // First the webhooks, locked, so that no other worker claims for them until this
        // transaction ends; the second statement then sees every lease committed before.
        let hooks = tx
            .prepare_cached(
                "SELECT w.id FROM webhooks w \
                 WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id \
                     AND d.delivered_at IS NULL AND d.dead_at IS NULL AND d.next_attempt_at <= now()) \
                 AND (SELECT count(*) FROM webhook_deliveries l WHERE l.webhook_id = w.id \
                     AND l.delivered_at IS NULL AND l.dead_at IS NULL AND l.leased_until > now()) < $2 \
                 ORDER BY (SELECT min(d.next_attempt_at) FROM webhook_deliveries d \
                     WHERE d.webhook_id = w.id AND d.delivered_at IS NULL AND d.dead_at IS NULL), w.id \
                 LIMIT $1 FOR NO KEY UPDATE OF w SKIP LOCKED",
            )
            .await?;
        let hooks: Vec<i64> = tx
            .query(&hooks, &[&limit, &per_webhook])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        if hooks.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let claim = tx
            .prepare_cached(
                "WITH hooks AS ( \
                     SELECT h.id, h.n, $2::bigint - (SELECT count(*) FROM webhook_deliveries l \
                         WHERE l.webhook_id = h.id AND l.delivered_at IS NULL \
                         AND l.dead_at IS NULL AND l.leased_until > now()) AS free \
                     FROM unnest($1::bigint[]) WITH ORDINALITY AS h(id, n) \
                 ), due AS ( \
                     SELECT d.id FROM hooks h CROSS JOIN LATERAL ( \
                         SELECT d.id FROM webhook_deliveries d \
                         WHERE d.webhook_id = h.id AND d.delivered_at IS NULL \
                         AND d.dead_at IS NULL AND d.next_attempt_at <= now() \
                         AND d.queued_at > now() - $4::bigint * interval '1 millisecond' \
                         ORDER BY d.id LIMIT greatest(h.free, 0) \
                         FOR UPDATE SKIP LOCKED \
                     ) d ORDER BY h.n LIMIT $3 \
                 ), claimed AS ( \
                     UPDATE webhook_deliveries d SET attempts = d.attempts + 1, \
                     leased_until = now() + $5::bigint * interval '1 millisecond', \
                     next_attempt_at = now() + $5::bigint * interval '1 millisecond' \
                     FROM due WHERE d.id = due.id \
                     RETURNING d.id, d.webhook_id, d.event_id, d.payload::text, d.attempts \
                 ) \
                 SELECT c.id, c.webhook_id, c.event_id, c.payload, c.attempts, w.url, w.secret \
                 FROM claimed c JOIN webhooks w ON w.id = c.webhook_id ORDER BY c.id",
            )
            .await?;
        let rows = tx
            .query(
                &claim,
                &[
                    &hooks,
                    &per_webhook,
                    &limit,
                    &millis(max_age),
                    &millis(lease),
                ],
            )
            .await?;
        tx.commit().await?;
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

    /// Records that delivery `id`, claimed at attempt `attempts`, was accepted by its webhook;
    /// `false` (and nothing recorded) when a later claim took it over or it is settled.
    pub async fn mark_webhook_delivered(&self, id: i64, attempts: i32) -> Result<bool> {
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE webhook_deliveries SET delivered_at = now(), last_error = NULL, \
                 leased_until = NULL \
                 WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND dead_at IS NULL",
            )
            .await?;
        Ok(client.execute(&update, &[&id, &attempts]).await? == 1)
    }

    /// Records that delivery `id`, claimed at attempt `attempts`, failed with `error`: due again
    /// after `retry_in`, or given up when `give_up` (then `error` should say why). `false` (and
    /// nothing recorded) when a later claim took it over or it is settled.
    pub async fn mark_webhook_failed(
        &self,
        id: i64,
        attempts: i32,
        retry_in: Duration,
        error: &str,
        give_up: bool,
    ) -> Result<bool> {
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE webhook_deliveries SET last_error = $4, leased_until = NULL, \
                 next_attempt_at = now() + $3::bigint * interval '1 millisecond', \
                 dead_at = CASE WHEN $5 THEN now() END \
                 WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND dead_at IS NULL",
            )
            .await?;
        Ok(client
            .execute(
                &update,
                &[&id, &attempts, &millis(retry_in), &error, &give_up],
            )
            .await?
            == 1)
    }

    /// Gives up the deliveries queued more than `max_age` ago that no worker holds; returns how
    /// many. Their `last_error` says so, after the last attempt's error.
    pub async fn dead_letter_expired_webhook_deliveries(&self, max_age: Duration) -> Result<u64> {
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE webhook_deliveries SET dead_at = now(), \
                 last_error = 'max_age: ' || coalesce(last_error, 'never attempted') \
                 WHERE delivered_at IS NULL AND dead_at IS NULL \
                 AND queued_at <= now() - $1::bigint * interval '1 millisecond' \
                 AND (leased_until IS NULL OR leased_until <= now())",
            )
            .await?;
        Ok(client.execute(&update, &[&millis(max_age)]).await?)
    }

    /// Queues webhook `webhook_id`'s dead deliveries again: due now, their attempts and age
    /// counted afresh. Returns how many.
    pub async fn redrive_webhook_deliveries(&self, webhook_id: i64) -> Result<u64> {
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE webhook_deliveries SET dead_at = NULL, attempts = 0, leased_until = NULL, \
                 next_attempt_at = now(), queued_at = now() \
                 WHERE webhook_id = $1 AND delivered_at IS NULL AND dead_at IS NOT NULL",
            )
            .await?;
        Ok(client.execute(&update, &[&webhook_id]).await?)
    }

    /// Deletes the deliveries delivered more than `retention` ago; returns how many.
    pub async fn purge_delivered_webhook_deliveries(&self, retention: Duration) -> Result<u64> {
        let client = self.client().await?;
        let delete = client
            .prepare_cached(
                "DELETE FROM webhook_deliveries WHERE id IN ( \
                     SELECT id FROM webhook_deliveries \
                     WHERE delivered_at < now() - $1::bigint * interval '1 millisecond' \
                     LIMIT $2)",
            )
            .await?;
        let mut purged = 0;
        loop {
            let deleted = client
                .execute(&delete, &[&millis(retention), &PURGE_BATCH])
                .await?;
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    /// Deliveries not made yet, every webhook's, dead ones excepted.
    pub async fn pending_webhook_deliveries(&self) -> Result<i64> {
        Ok(self.webhook_outbox().await?.pending)
    }

    /// Deliveries pending and dead, every webhook's.
    pub async fn webhook_outbox(&self) -> Result<WebhookOutbox> {
        let client = self.client().await?;
        let count = client
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE dead_at IS NULL), \
                 count(*) FILTER (WHERE dead_at IS NOT NULL) \
                 FROM webhook_deliveries WHERE delivered_at IS NULL",
            )
            .await?;
        let row = client.query_one(&count, &[]).await?;
        Ok(WebhookOutbox {
            pending: row.try_get(0)?,
            dead: row.try_get(1)?,
        })
    }
}
