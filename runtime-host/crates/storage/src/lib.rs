//! Weir's storage layer: PostgreSQL as tier one (series, points partitioned by month, batch
//! receipts, key metadata, API tokens) and Redis as the cache of each key's latest value.
//!
//! The ingest host uses it like this: [`Storage::connect`] and [`Storage::migrate`] at start;
//! per device batch, [`Storage::store_batch`] (exactly-once, acknowledged only after it returns
//! `Ok`; [`Storage::store_batch_owing`] also records what the batch owes after its commit),
//! then [`LatestCache::update`] with the accepted points; on timers, [`Storage::maintain`], and
//! [`Storage::claim_followups`] with [`repair_device`] for the follow-ups that failed or whose
//! host died. Metadata goes through [`Storage::put_metadata`] and
//! [`Storage::device_metadata`], and every host follows changes with
//! [`listen_metadata_changes`]. The query API's bearer tokens are created, found, listed and
//! revoked with [`Storage::create_token`], [`Storage::find_token`], [`Storage::list_tokens`] and
//! [`Storage::revoke_token`]. The function registry (which version of each function and rule set
//! each region runs) is [`Storage::store_artifact`], [`Storage::assign_artifact`],
//! [`Storage::deploy_artifact`] (both at once), [`Storage::roll_back_artifact`],
//! [`Storage::current_artifacts`], [`Storage::artifact_bytes`], [`Storage::artifact_history`],
//! followed by hosts with [`listen_registry_changes`]; a deploy first stages its version
//! ([`Storage::stage_artifact`]), hosts enrolled with [`Storage::host_seen`] prepare it and
//! record it ([`Storage::record_prepared`]), and the deploy assigns once [`Storage::readiness`]
//! shows them ready. Alert events are recorded with
//! [`Storage::record_alert_changes`], which also queues their webhook deliveries; a host's
//! delivery worker claims and settles them ([`Storage::claim_webhook_deliveries`],
//! [`Storage::mark_webhook_delivered`], [`Storage::mark_webhook_failed`]), woken by
//! [`listen_webhook_deliveries`].
//!
//! Code map: `schema` is the one place that defines tables (migrations, partition DDL);
//! `batches` is the write path; `partitions`, `series` and `values` serve it; `metadata` and
//! `notify` handle key metadata (`notify` also listens for `registry`, the function registry;
//! `staging` holds its staged versions and the roll of hosts); `tokens` the API tokens; `followups` what stored batches owe after their commit (latest values, alert evaluation); `events` the alert events; `webhooks` the webhooks and their outbox; `pki` the device PKI's ledger (certificates, CRL, renewal queue); `reads` and `maintenance` hold the
//! remaining PostgreSQL operations; `latest` and `repair` are the Redis side; `model` holds the plain data types,
//! `timestamp` the accepted time range and month arithmetic, `error` classifies every failure.
//! Every SQL statement is static text with bind parameters, prepared once per connection
//! (`prepare_cached`); the only exception is partition DDL, built from integers (see `schema`).

#![warn(missing_docs)]

mod alert_states;
mod batches;
mod error;
mod events;
mod followups;
mod latest;
mod maintenance;
mod metadata;
mod model;
mod notify;
mod partitions;
mod pki;
mod postgres;
mod reads;
mod regions;
mod registry;
mod repair;
mod schema;
mod series;
mod staging;
mod timestamp;
mod tokens;
mod values;
mod webhooks;

pub use alert_states::{AlertDeviceLock, AlertState};
pub use error::{Result, StorageError};
pub use events::{
    AlertAction, AlertChange, AlertChangeKind, AlertEvent, AlertEventFilter, EventUpdate,
};
pub use followups::{ClaimedFollowup, Followup, FollowupCounts, PendingEvaluation};
pub use latest::LatestCache;
pub use maintenance::MaintenanceReport;
pub use model::{
    BatchOutcome, BatchWrite, Conflict, DeviceRef, KeyLimits, KeyMetadataRecord, LatestValue,
    NewPoint, NewToken, OverKeyLimit, StoredValue, TokenInfo,
};
pub use notify::{MetadataChange, MetadataListener, listen_metadata_changes};
pub use pki::{
    CrlEntry, IssuedCertificate, PkiEvent, PkiListener, PublishedCrl, RenewalAnswer,
    RenewalOutcome, RenewalRequest, SignedCrl, listen_pki,
};
pub use postgres::{DEFAULT_STATEMENT_TIMEOUT, PoolStatus, Storage};
pub use regions::{DeviceMove, DeviceMoveListener, listen_device_moves};
pub use registry::{
    ArtifactKind, Assignment, AssignmentRecord, CurrentArtifact, RegistryChange, RegistryListener,
    artifact_sha256, listen_registry_changes,
};
pub use repair::repair_device;
pub use staging::{HostReadiness, PrepareOutcome, StagedArtifact};
pub use timestamp::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, timestamp_in_range};
pub use tokens::{TOKEN_PREFIX, token_hash};
pub use webhooks::{
    DueDelivery, NewWebhook, Webhook, WebhookListener, WebhookOutbox, listen_webhook_deliveries,
};
