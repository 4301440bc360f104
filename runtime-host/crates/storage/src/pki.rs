//! The device PKI's ledger in tier one, shared by every host of every region: the certificates
//! the CA issued (`pki_certificates`), the CRL in force (`pki_crl`, its number only grows) and
//! the renewal requests edge hosts pass to the issuing service (`pki_renewals`).
//!
//! Nothing here signs: the issuing service (`weir ca serve`, the only holder of the CA key)
//! answers renewals with [`Storage::answer_renewals`] and publishes CRLs with
//! [`Storage::publish_crl`], both handing the signing to a closure inside the transaction that
//! records the result. Changes are announced on the `weir_pki` channel ([`listen_pki`]):
//! `crl:<number>` when a CRL is published, `renewal` when a request is queued and
//! `answered:<id>` when one is answered.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use deadpool_postgres::Transaction;
use futures_util::Stream;
use tokio_postgres::Row;

use crate::Storage;
use crate::error::Result;
use crate::notify::{Channel, ChannelListener, listen_channel};

/// The notification channel of the PKI ledger.
const PKI_CHANNEL: &str = "weir_pki";
/// Serialises CRL publications (the first one has no row to lock).
const CRL_LOCK: i64 = 0x5745_4952_0002;

/// A device certificate the CA issued, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Organisation (the certificate's O).
    pub org: String,
    /// Device id (the certificate's CN).
    pub device: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Whether a renewal issued it (rather than the operator).
    pub renewed: bool,
    /// When the operator revoked it.
    pub revoked_at: Option<SystemTime>,
    /// The serial that replaced it as the device's current certificate.
    pub superseded_by: Option<String>,
    /// When it was replaced.
    pub superseded_at: Option<SystemTime>,
}

/// One certificate a CRL lists, with the time it left service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// When it was revoked, or superseded.
    pub at: SystemTime,
}

/// A CRL the issuing service signed, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCrl {
    /// The CRL, PEM.
    pub pem: String,
    /// Its thisUpdate.
    pub this_update: SystemTime,
    /// Its nextUpdate.
    pub next_update: SystemTime,
}

/// The CRL in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCrl {
    /// Its CRL number.
    pub number: u64,
    /// The CRL, PEM.
    pub pem: String,
    /// Its thisUpdate.
    pub this_update: SystemTime,
    /// Its nextUpdate.
    pub next_update: SystemTime,
}

/// A renewal a device asked for through an edge host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalRequest {
    /// The request's id.
    pub id: i64,
    /// The organisation the device authenticated as.
    pub org: String,
    /// The device id it authenticated as.
    pub device: String,
    /// The serial (hex) of the certificate it authenticated with.
    pub presented_serial: String,
    /// Its CSR for the new key, PEM.
    pub csr: String,
}

/// What the issuing service made of a renewal request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewalOutcome {
    /// A new certificate, now the device's current one.
    Issued {
        /// The certificate, PEM.
        certificate: String,
        /// Its serial, lowercase hex.
        serial: String,
        /// Its end of validity.
        not_after: SystemTime,
    },
    /// No certificate, with a stable code for the device.
    Refused {
        /// Stable code (`certificate_superseded`, `renewal_too_soon`, ...).
        code: String,
        /// What was wrong, for the device.
        message: String,
        /// When to try again, for refusals that pass.
        retry_after_s: Option<u64>,
    },
}

/// The issuing service's answer to one request, recorded by [`Storage::answer_renewals`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewalAnswer {
    /// Record `record` as the device's current certificate and hand out `pem`.
    Issued {
        /// The new certificate's ledger row.
        record: IssuedCertificate,
        /// The certificate, PEM.
        pem: String,
    },
    /// Refuse, with a stable code.
    Refused {
        /// Stable code.
        code: String,
        /// What was wrong, for the device.
        message: String,
        /// When to try again, if the refusal passes.
        retry_after_s: Option<u64>,
    },
}

/// A change in the PKI ledger, or word that some may have been missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiEvent {
    /// CRL number `n` was published.
    Crl(u64),
    /// A renewal request was queued.
    RenewalRequested,
    /// Renewal request `id` was answered.
    Answered(i64),
    /// Events may have been missed (start, reconnection, overflow): look at the ledger.
    Missed,
}

const CERTIFICATE_COLUMNS: &str = "serial, org, device, not_before, not_after, renewed, \
     revoked_at, superseded_by, superseded_at";

fn certificate_from(row: &Row) -> Result<IssuedCertificate> {
    Ok(IssuedCertificate {
        serial: row.try_get(0)?,
        org: row.try_get(1)?,
        device: row.try_get(2)?,
        not_before: row.try_get(3)?,
        not_after: row.try_get(4)?,
        renewed: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        superseded_by: row.try_get(7)?,
        superseded_at: row.try_get(8)?,
    })
}

/// Records `record` as its device's current certificate, superseding the one that was.
async fn record_in(tx: &Transaction<'_>, record: &IssuedCertificate) -> Result<()> {
    let supersede = tx
        .prepare_cached(
            "UPDATE pki_certificates SET superseded_by = $3, superseded_at = now() \
             WHERE org = $1 AND device = $2 AND superseded_by IS NULL",
        )
        .await?;
    tx.execute(&supersede, &[&record.org, &record.device, &record.serial])
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO pki_certificates \
             (serial, org, device, not_before, not_after, renewed, revoked_at, superseded_by, \
              superseded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &record.serial,
            &record.org,
            &record.device,
            &record.not_before,
            &record.not_after,
            &record.renewed,
            &record.revoked_at,
            &record.superseded_by,
            &record.superseded_at,
        ],
    )
    .await?;
    Ok(())
}

async fn notify(tx: &Transaction<'_>, payload: &str) -> Result<()> {
    tx.execute("SELECT pg_notify($1, $2)", &[&PKI_CHANNEL, &payload])
        .await?;
    Ok(())
}

impl Storage {
    /// Records a certificate the operator issued as its device's current one (earlier ones are
    /// superseded).
    pub async fn record_certificate(&self, record: &IssuedCertificate) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        record_in(&tx, record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The certificate with serial `serial` (lowercase hex), if the CA issued it.
    pub async fn certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM pki_certificates WHERE serial = $1"
            ))
            .await?;
        client
            .query_opt(&select, &[&serial])
            .await?
            .map(|row| certificate_from(&row))
            .transpose()
    }

    /// Every certificate of device `device` of `org`, oldest first.
    pub async fn device_certificates(
        &self,
        org: &str,
        device: &str,
    ) -> Result<Vec<IssuedCertificate>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM pki_certificates \
                 WHERE org = $1 AND device = $2 ORDER BY issued_at, serial"
            ))
            .await?;
        client
            .query(&select, &[&org, &device])
            .await?
            .iter()
            .map(certificate_from)
            .collect()
    }

    /// Marks every unrevoked certificate of device `device` of `org` revoked; returns their
    /// serials, or `None` if the ledger knows no certificate of that device. The caller then
    /// publishes a CRL.
    pub async fn revoke_device_certificates(
        &self,
        org: &str,
        device: &str,
    ) -> Result<Option<Vec<String>>> {
        let client = self.client().await?;
        let revoke = client
            .prepare_cached(
                "WITH revoked AS ( \
                     UPDATE pki_certificates SET revoked_at = now() \
                     WHERE org = $1 AND device = $2 AND revoked_at IS NULL RETURNING serial) \
                 SELECT EXISTS (SELECT 1 FROM pki_certificates WHERE org = $1 AND device = $2), \
                        coalesce((SELECT array_agg(serial ORDER BY serial) FROM revoked), '{}')",
            )
            .await?;
        let row = client.query_one(&revoke, &[&org, &device]).await?;
        let known: bool = row.try_get(0)?;
        Ok(known.then(|| row.get(1)))
    }

    /// Publishes the next CRL: in one transaction, takes the next CRL number and the
    /// certificates still valid that were revoked, or superseded before `retired_before`, has
    /// `sign` sign them, records the result and announces `crl:<number>`. Returns the number
    /// published, or `sign`'s error (then nothing changes).
    pub async fn publish_crl<E>(
        &self,
        retired_before: SystemTime,
        sign: impl FnOnce(u64, &[CrlEntry]) -> std::result::Result<SignedCrl, E>,
    ) -> Result<std::result::Result<u64, E>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CRL_LOCK])
            .await?;
        let current = tx
            .query_opt("SELECT number FROM pki_crl", &[])
            .await?
            .map(|row| row.get::<_, i64>(0))
            .unwrap_or(0);
        let select = tx
            .prepare_cached(
                "SELECT serial, coalesce(revoked_at, superseded_at) FROM pki_certificates \
                 WHERE not_after > now() \
                   AND (revoked_at IS NOT NULL OR superseded_at IS NOT NULL) \
                   AND (revoked_at IS NOT NULL OR superseded_at <= $1) \
                 ORDER BY serial",
            )
            .await?;
        let entries = tx
            .query(&select, &[&retired_before])
            .await?
            .iter()
            .map(|row| {
                Ok(CrlEntry {
                    serial: row.try_get(0)?,
                    at: row.try_get(1)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let number = current + 1;
        let signed = match sign(number as u64, &entries) {
            Ok(signed) => signed,
            Err(error) => return Ok(Err(error)),
        };
        let upsert = tx
            .prepare_cached(
                "INSERT INTO pki_crl (singleton, number, pem, this_update, next_update) \
                 VALUES (true, $1, $2, $3, $4) \
                 ON CONFLICT (singleton) DO UPDATE SET number = EXCLUDED.number, \
                     pem = EXCLUDED.pem, this_update = EXCLUDED.this_update, \
                     next_update = EXCLUDED.next_update",
            )
            .await?;
        tx.execute(
            &upsert,
            &[
                &number,
                &signed.pem,
                &signed.this_update,
                &signed.next_update,
            ],
        )
        .await?;
        notify(&tx, &format!("crl:{number}")).await?;
        tx.commit().await?;
        Ok(Ok(number as u64))
    }

    /// The CRL in force, if one was ever published.
    pub async fn current_crl(&self) -> Result<Option<PublishedCrl>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT number, pem, this_update, next_update FROM pki_crl")
            .await?;
        let Some(row) = client.query_opt(&select, &[]).await? else {
            return Ok(None);
        };
        Ok(Some(PublishedCrl {
            number: row.try_get::<_, i64>(0)? as u64,
            pem: row.try_get(1)?,
            this_update: row.try_get(2)?,
            next_update: row.try_get(3)?,
        }))
    }

    /// The number of the CRL in force (a cheap check before fetching it).
    pub async fn crl_number(&self) -> Result<Option<u64>> {
        let client = self.client().await?;
        let select = client.prepare_cached("SELECT number FROM pki_crl").await?;
        Ok(client
            .query_opt(&select, &[])
            .await?
            .map(|row| row.get::<_, i64>(0) as u64))
    }

    /// Queues a renewal request for the issuing service and wakes it; returns the request's id.
    pub async fn request_renewal(
        &self,
        org: &str,
        device: &str,
        presented_serial: &str,
        csr: &str,
    ) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO pki_renewals (org, device, presented_serial, csr) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .await?;
        let id: i64 = tx
            .query_one(&insert, &[&org, &device, &presented_serial, &csr])
            .await?
            .get(0);
        notify(&tx, "renewal").await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The answer to renewal request `id`, once the issuing service gave one.
    pub async fn renewal_outcome(&self, id: i64) -> Result<Option<RenewalOutcome>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT certificate, serial, not_after, refusal_code, refusal_message, \
                        retry_after_s \
                 FROM pki_renewals WHERE id = $1 AND answered_at IS NOT NULL",
            )
            .await?;
        let Some(row) = client.query_opt(&select, &[&id]).await? else {
            return Ok(None);
        };
        let certificate: Option<String> = row.try_get(0)?;
        let serial: Option<String> = row.try_get(1)?;
        let not_after: Option<SystemTime> = row.try_get(2)?;
        Ok(Some(match (certificate, serial, not_after) {
            (Some(certificate), Some(serial), Some(not_after)) => RenewalOutcome::Issued {
                certificate,
                serial,
                not_after,
            },
            _ => RenewalOutcome::Refused {
                code: row
                    .try_get::<_, Option<String>>(3)?
                    .unwrap_or_else(|| "renewal_failed".to_owned()),
                message: row.try_get::<_, Option<String>>(4)?.unwrap_or_default(),
                retry_after_s: row.try_get::<_, Option<i64>>(5)?.map(|s| s.max(0) as u64),
            },
        }))
    }

    /// Answers up to `limit` pending renewal requests, oldest first, in one transaction: for
    /// each, `decide` sees the request and the ledger's row of the presented certificate (as
    /// this transaction left it, so two requests with one certificate see each other), and an
    /// issued certificate becomes the device's current one. Requests another issuer is
    /// answering are skipped. Returns how many were answered.
    pub async fn answer_renewals(
        &self,
        limit: i64,
        mut decide: impl FnMut(&RenewalRequest, Option<&IssuedCertificate>) -> RenewalAnswer,
    ) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let pending = tx
            .prepare_cached(
                "SELECT id, org, device, presented_serial, csr FROM pki_renewals \
                 WHERE answered_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        let requests = tx
            .query(&pending, &[&limit])
            .await?
            .iter()
            .map(|row| {
                Ok(RenewalRequest {
                    id: row.try_get(0)?,
                    org: row.try_get(1)?,
                    device: row.try_get(2)?,
                    presented_serial: row.try_get(3)?,
                    csr: row.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let presented = tx
            .prepare_cached(&format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM pki_certificates WHERE serial = $1 FOR UPDATE"
            ))
            .await?;
        let issued = tx
            .prepare_cached(
                "UPDATE pki_renewals SET answered_at = now(), certificate = $2, serial = $3, \
                 not_after = $4 WHERE id = $1",
            )
            .await?;
        let refused = tx
            .prepare_cached(
                "UPDATE pki_renewals SET answered_at = now(), refusal_code = $2, \
                 refusal_message = $3, retry_after_s = $4 WHERE id = $1",
            )
            .await?;
        for request in &requests {
            let current = tx
                .query_opt(&presented, &[&request.presented_serial])
                .await?
                .map(|row| certificate_from(&row))
                .transpose()?;
            match decide(request, current.as_ref()) {
                RenewalAnswer::Issued { record, pem } => {
                    record_in(&tx, &record).await?;
                    tx.execute(
                        &issued,
                        &[&request.id, &pem, &record.serial, &record.not_after],
                    )
                    .await?;
                }
                RenewalAnswer::Refused {
                    code,
                    message,
                    retry_after_s,
                } => {
                    let retry = retry_after_s.map(|s| s.min(i64::MAX as u64) as i64);
                    tx.execute(&refused, &[&request.id, &code, &message, &retry])
                        .await?;
                }
            }
            notify(&tx, &format!("answered:{}", request.id)).await?;
        }
        tx.commit().await?;
        Ok(requests.len())
    }

    /// Deletes renewal requests made more than `age` ago (answered or not: a device that
    /// waited that long has long asked again).
    pub async fn forget_renewals(&self, age: Duration) -> Result<u64> {
        let client = self.client().await?;
        let delete = client
            .prepare_cached(
                "DELETE FROM pki_renewals \
                 WHERE requested_at < now() - make_interval(secs => $1::float8)",
            )
            .await?;
        Ok(client.execute(&delete, &[&age.as_secs_f64()]).await?)
    }
}

fn parse_payload(payload: &str) -> PkiEvent {
    if payload == "renewal" {
        return PkiEvent::RenewalRequested;
    }
    if let Some(number) = payload.strip_prefix("crl:").and_then(|n| n.parse().ok()) {
        return PkiEvent::Crl(number);
    }
    if let Some(id) = payload
        .strip_prefix("answered:")
        .and_then(|n| n.parse().ok())
    {
        return PkiEvent::Answered(id);
    }
    tracing::warn!(payload, "unexpected PKI notification");
    PkiEvent::Missed
}

/// A stream of PKI ledger changes made by any host or issuer. Stops listening when dropped.
pub struct PkiListener {
    inner: ChannelListener<PkiEvent>,
}

impl PkiListener {
    /// The next event (waits for one). Starts with [`PkiEvent::Missed`].
    pub async fn next_event(&mut self) -> Option<PkiEvent> {
        self.inner.next().await
    }
}

impl Stream for PkiListener {
    type Item = PkiEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PkiEvent>> {
        self.inner.poll_recv(cx)
    }
}

/// Listens for PKI ledger changes on a dedicated connection to `url`, reconnecting by itself.
pub async fn listen_pki(url: &str) -> Result<PkiListener> {
    let channel = Channel {
        listen: "LISTEN weir_pki",
        application_name: "weir-pki-listener",
        missed: PkiEvent::Missed,
        parse: parse_payload,
    };
    Ok(PkiListener {
        inner: listen_channel(url, channel).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_to_events() {
        assert_eq!(parse_payload("crl:42"), PkiEvent::Crl(42));
        assert_eq!(parse_payload("renewal"), PkiEvent::RenewalRequested);
        assert_eq!(parse_payload("answered:7"), PkiEvent::Answered(7));
        assert_eq!(parse_payload("crl:x"), PkiEvent::Missed);
    }
}
