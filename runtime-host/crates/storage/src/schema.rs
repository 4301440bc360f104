//! The PostgreSQL schema: the one place that defines tables, as numbered migrations, and the DDL
//! of monthly `points` partitions.
//!
//! Migrations are append-only: a released migration is never edited; a change is a new entry at
//! the end of [`MIGRATIONS`]. Each runs once, in its own transaction, recorded in
//! `schema_migrations`. A transaction-scoped advisory lock serialises hosts that start together,
//! so the second one finds the work done and applies nothing.
//!
//! Tables:
//! - `series`: one row per `(org, device, key)`, with the key's metadata (`data_type` NULL until
//!   the device declares it);
//! - `points`: `(series_id, ts)` → one value column set, partitioned by month of `ts` into
//!   `points_yYYYYmMM`;
//! - `batches`: every batch id a device sent, with the receipt returned for it, so that a re-sent
//!   batch is answered with the same receipt and stored once.
//! - `api_tokens`: the query API's bearer tokens, one org each, stored as the SHA-256 of the
//!   secret (never the secret), revoked by setting `revoked_at`.
//! - `function_versions`: every deployed artifact (validator, query, alerter component, rule
//!   set), content-addressed by SHA-256; `function_assignments`: the append-only history of which
//!   version each region runs under each name (see `registry`).
//! - `alert_events`: the alerts the alerter raised, one row each from its raise to its clear,
//!   with at most one open row per `(org, device, rule_id, key, trigger)` (see `events`).
//! - `webhooks`: where an organisation's alert events are POSTed (all its rules, or one), with
//!   the signing secret; `webhook_deliveries`: the outbox, one row per event and webhook,
//!   written in the transaction that records the event, until delivered (see `webhooks`).
//! - `batch_followups`: what a stored batch still owes after its commit (latest values, alert
//!   evaluation), written in the batch's transaction and deleted once done (see `followups`).
//! - `org_key_counts`: the number of series of each organisation, kept by the transactions that
//!   create series, for the key limits (see `series`).
//!
//! Role `weir_query` is what query components log in as: `SELECT` on `series` and `points`
//! (partitions are read through the parent, which is all that is checked), nothing else. The
//! migration creates it when the migrating user may create roles, and only grants otherwise;
//! a table a query component should read needs a `GRANT SELECT … TO weir_query` of its own.

use deadpool_postgres::Client;
use tracing::info;

use crate::error::Result;
use crate::timestamp::Month;

/// Advisory lock key held while migrating ("WEIR" and 1).
const MIGRATION_LOCK: i64 = 0x5745_4952_0001;
/// Advisory lock key held while creating partitions ("WEIR" and 2).
pub(crate) const PARTITION_LOCK: i64 = 0x5745_4952_0002;

/// One schema change.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "series, points partitioned by month, batches",
        sql: r#"
CREATE TABLE series (
    id                  bigserial PRIMARY KEY,
    org                 text NOT NULL,
    device              text NOT NULL,
    key                 text NOT NULL,
    data_type           text,
    name                text,
    unit                text,
    description         text,
    value_map           jsonb,
    min                 float8,
    max                 float8,
    metadata_updated_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org, device, key)
);

-- Exactly one value column is set: float8 for floats, int8 for integers up to i64::MAX,
-- numeric for unsigned integers above it, bool, text.
-- series_id has no FOREIGN KEY on purpose: it would lock the series row (FOR KEY SHARE) for
-- every inserted point, on the hottest path. Ids reach points only from committed series rows,
-- and series rows are never deleted.
CREATE TABLE points (
    series_id bigint NOT NULL,
    ts        timestamptz NOT NULL,
    v_float   float8,
    v_int     int8,
    v_numeric numeric,
    v_bool    bool,
    v_text    text,
    PRIMARY KEY (series_id, ts),
    CHECK (num_nonnulls(v_float, v_int, v_numeric, v_bool, v_text) = 1)
) PARTITION BY RANGE (ts);

-- receipt is written in the transaction that inserts the row, before it commits.
CREATE TABLE batches (
    org         text NOT NULL,
    device      text NOT NULL,
    batch_id    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    receipt     jsonb,
    PRIMARY KEY (org, device, batch_id)
);
CREATE INDEX batches_received_at ON batches (received_at);
"#,
    },
    Migration {
        version: 2,
        name: "api_tokens",
        sql: r#"
-- token_hash is the SHA-256 of the secret; the secret itself is shown once and never stored.
-- Revoked rows stay, so that listings show them and ids are never reused.
CREATE TABLE api_tokens (
    id         bigserial PRIMARY KEY,
    org        text NOT NULL,
    name       text,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
"#,
    },
    Migration {
        version: 3,
        name: "weir_query: the read-only role of query components",
        sql: r#"
-- Roles belong to the cluster: another database of it may have created this one already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'weir_query') THEN
        IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
            CREATE ROLE weir_query LOGIN;
        ELSE
            RAISE WARNING 'role weir_query is missing and % may not create it: query '
                'components cannot read until an administrator runs CREATE ROLE weir_query '
                'LOGIN PASSWORD ...; GRANT SELECT ON series, points TO weir_query', current_user;
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'weir_query') THEN
        GRANT SELECT ON series, points TO weir_query;
    END IF;
END
$$;
"#,
    },
    Migration {
        version: 4,
        name: "function registry: content-addressed versions, per-region assignments",
        sql: r#"
-- One row per distinct artifact (a component, later a rule set), keyed by the SHA-256 of its
-- bytes; never updated or deleted, so every version ever deployed can be rolled back to.
CREATE TABLE function_versions (
    sha256     text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    kind       text NOT NULL CHECK (kind IN ('validator', 'query', 'alerter', 'rules')),
    bytes      bytea NOT NULL,
    size       int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only history: the current version of (region, name) is its newest row. A deploy or a
-- rollback appends a row; nothing is updated. No grant to weir_query.
CREATE TABLE function_assignments (
    id          bigserial PRIMARY KEY,
    region      text NOT NULL,
    name        text NOT NULL,
    sha256      text NOT NULL REFERENCES function_versions (sha256),
    action      text NOT NULL CHECK (action IN ('deploy', 'rollback')),
    assigned_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX function_assignments_current ON function_assignments (region, name, id DESC);
"#,
    },
    Migration {
        version: 5,
        name: "alert_events: raised, escalated, acknowledged and cleared alerts",
        sql: r#"
-- One row per alert: a raise inserts it, an escalation raises its severity, a clear (by the
-- alerter or by hand) closes it. No grant to weir_query: the host serves events itself.
CREATE TABLE alert_events (
    id              bigserial PRIMARY KEY,
    org             text NOT NULL,
    device          text NOT NULL,
    key             text NOT NULL,
    rule_id         text NOT NULL,
    rule_version    int NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
    trigger         text NOT NULL CHECK (trigger IN ('condition', 'no_data')),
    state           text NOT NULL CHECK (state IN ('raised', 'acknowledged', 'cleared')),
    value           jsonb,
    message         text NOT NULL,
    raised_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    escalated_at    timestamptz,
    acknowledged_at timestamptz,
    cleared_at      timestamptz
);
CREATE INDEX alert_events_org_raised_at ON alert_events (org, raised_at);
-- At most one open alert per device, rule, key and trigger.
CREATE UNIQUE INDEX alert_events_open ON alert_events (org, device, rule_id, key, trigger)
    WHERE state IN ('raised', 'acknowledged');
"#,
    },
    Migration {
        version: 6,
        name: "webhooks and their outbox of deliveries",
        sql: r#"
-- rule_id NULL: every rule of the organisation. The secret signs the deliveries, so it is kept
-- in clear (unlike API tokens); no grant to weir_query, which must never read it.
CREATE TABLE webhooks (
    id         bigserial PRIMARY KEY,
    org        text NOT NULL,
    rule_id    text,
    url        text NOT NULL,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_org ON webhooks (org);

-- The outbox: one row per event change and webhook, inserted with the event. A worker claims
-- due rows (attempts + 1, next_attempt_at pushed by a lease), then marks them delivered or
-- pushes next_attempt_at by the backoff. event_id has no FOREIGN KEY: an event row is
-- updated by later changes, and its deliveries must not lock it.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL,
    payload         jsonb NOT NULL,
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL;
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id);
"#,
    },
    Migration {
        version: 7,
        name: "function registry: hosts, staged versions and what each host prepared",
        sql: r#"
-- Every host following the registry refreshes its row every few seconds and deletes it when it
-- stops; a deploy waits for the hosts of its region seen lately.
CREATE TABLE registry_hosts (
    host_id    text PRIMARY KEY,
    region     text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX registry_hosts_region ON registry_hosts (region, seen_at);

-- A version announced to a region before it is assigned, so that its hosts compile it ahead
-- and the assignment itself only swaps. Deleted when (region, name) is assigned.
CREATE TABLE function_staged (
    region    text NOT NULL,
    name      text NOT NULL,
    sha256    text NOT NULL REFERENCES function_versions (sha256),
    staged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region, name, sha256)
);

-- What each host made of a staged version: ready (compiled and checked, waiting in memory),
-- refused (with the host's reason) or skipped (the host runs nothing under that name).
CREATE TABLE function_prepared (
    host_id     text NOT NULL REFERENCES registry_hosts (host_id) ON DELETE CASCADE,
    sha256      text NOT NULL REFERENCES function_versions (sha256),
    outcome     text NOT NULL CHECK (outcome IN ('ready', 'refused', 'skipped')),
    detail      text,
    prepared_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_id, sha256)
);
"#,
    },
    Migration {
        version: 8,
        name: "the region each device last wrote through",
        sql: r#"
-- Updated in every batch's transaction when the device's region changes; the change is
-- announced on `weir_device_moved` so that each region keeps its Redis latest values right.
CREATE TABLE device_regions (
    org    text NOT NULL,
    device text NOT NULL,
    region text NOT NULL,
    since  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, device)
);
CREATE INDEX device_regions_region ON device_regions (region);
"#,
    },
    Migration {
        version: 9,
        name: "alert states in tier one, shared by the regions",
        sql: r#"
-- The alerter's opaque state per (device, rule); was a Redis hash per device, which a device
-- moving to another region (another Redis) left behind.
CREATE TABLE alert_states (
    org        text NOT NULL,
    device     text NOT NULL,
    rule_id    text NOT NULL,
    state      bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, device, rule_id)
);
"#,
    },
    Migration {
        version: 10,
        name: "the device PKI's ledger, shared by every region",
        sql: r#"
-- Every device certificate the CA issued (by the operator or by renewal). A device is
-- (org, device); its current certificate is the one not superseded, at most one per device.
CREATE TABLE pki_certificates (
    serial        text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]+$'),
    org           text NOT NULL,
    device        text NOT NULL,
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    renewed       boolean NOT NULL,
    revoked_at    timestamptz,
    superseded_by text,
    superseded_at timestamptz,
    issued_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pki_certificates_device ON pki_certificates (org, device);
CREATE UNIQUE INDEX pki_certificates_current ON pki_certificates (org, device)
    WHERE superseded_by IS NULL;
-- What a CRL lists: certificates revoked or superseded, until they expire.
CREATE INDEX pki_certificates_retired ON pki_certificates (not_after)
    WHERE revoked_at IS NOT NULL OR superseded_at IS NOT NULL;

-- The CRL in force: one row, its number only ever grows. Hosts follow it (`weir_pki`).
CREATE TABLE pki_crl (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    number      bigint NOT NULL CHECK (number > 0),
    pem         text NOT NULL,
    this_update timestamptz NOT NULL,
    next_update timestamptz NOT NULL
);

-- Renewals asked by devices through edge hosts, answered by the issuing service (`weir ca
-- serve`), the only holder of the CA key. A row is answered once: a certificate or a refusal.
CREATE TABLE pki_renewals (
    id               bigserial PRIMARY KEY,
    org              text NOT NULL,
    device           text NOT NULL,
    presented_serial text NOT NULL,
    csr              text NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    answered_at      timestamptz,
    certificate      text,
    serial           text,
    not_after        timestamptz,
    refusal_code     text,
    refusal_message  text,
    retry_after_s    bigint
);
CREATE INDEX pki_renewals_pending ON pki_renewals (id) WHERE answered_at IS NULL;
"#,
    },
    Migration {
        version: 11,
        name: "batch follow-ups: what a stored batch still owes after its commit",
        sql: r#"
-- One row per stored batch, written in the batch's own transaction: the work its commit still
-- owes (the region's Redis latest values, and, when `alert_points` is set, the alerter's
-- evaluation of those points). The host that took the batch does it at once and deletes the
-- row; should it fail or die, a host of the same region takes the row over once `retry_at`
-- passed. `alert_points` is set to NULL in the transaction that stores the evaluation's
-- events and states, so a batch is evaluated exactly once, or when the alerter failed on the
-- batch alone `evaluation_failures` times (then `last_error` says why).
CREATE TABLE batch_followups (
    id           bigserial PRIMARY KEY,
    region       text NOT NULL,
    org          text NOT NULL,
    device       text NOT NULL,
    batch_id     text NOT NULL,
    alert_points jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    retry_at     timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    evaluation_failures integer NOT NULL DEFAULT 0,
    last_error   text,
    failed_at    timestamptz
);
CREATE INDEX batch_followups_due ON batch_followups (region, retry_at) WHERE failed_at IS NULL;
CREATE INDEX batch_followups_device ON batch_followups (org, device, id)
    WHERE alert_points IS NOT NULL AND failed_at IS NULL;
"#,
    },
    Migration {
        version: 12,
        name: "webhook deliveries: leases, dead letters, per-webhook claims",
        sql: r#"
-- queued_at: when the delivery entered the outbox, or was last re-driven; its age (for
-- alerting.webhook_max_age_s) counts from it. leased_until: set while a worker holds the row
-- (the rows of a webhook with a live lease are its requests in flight, which
-- alerting.webhook_concurrency_per_webhook caps). dead_at: given up (too old, too many
-- attempts, or a refused destination) until `weir webhooks redrive`.
ALTER TABLE webhook_deliveries
    ADD COLUMN queued_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN leased_until timestamptz,
    ADD COLUMN dead_at      timestamptz;
UPDATE webhook_deliveries SET queued_at = created_at;
-- Claims go webhook by webhook; pending means neither delivered nor dead.
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
-- Delivered rows are purged after alerting.webhook_delivered_retention_s.
CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (delivered_at)
    WHERE delivered_at IS NOT NULL;
"#,
    },
    Migration {
        version: 13,
        name: "key limits: series per organisation, counted",
        sql: r#"
-- How many series (keys) each organisation has, kept by the transactions that create series:
-- they take the organisation's row first, so `ingest.max_keys_per_org` and
-- `ingest.max_keys_per_device` hold under concurrent batches. Series are never deleted.
CREATE TABLE org_key_counts (
    org  text PRIMARY KEY,
    keys bigint NOT NULL
);
INSERT INTO org_key_counts (org, keys) SELECT org, count(*) FROM series GROUP BY org;
"#,
    },
];

/// Applies the migrations this database lacks; returns how many ran.
pub(crate) async fn migrate(client: &mut Client) -> Result<usize> {
    let mut applied = 0;
    for migration in MIGRATIONS {
        let tx = client.transaction().await?;
        // A migration may rewrite a large table: the pool's statement timeout is for traffic.
        tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    int PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&migration.version],
            )
            .await?
            .is_some();
        if done {
            tx.rollback().await?;
            continue;
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        tx.commit().await?;
        info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        applied += 1;
    }
    Ok(applied)
}

/// The name of the partition holding `month`: `points_yYYYYmMM`.
pub(crate) fn partition_name(month: Month) -> String {
    format!("points_y{:04}m{:02}", month.year(), month.month())
}

/// `CREATE TABLE IF NOT EXISTS` for the partition of `month`.
///
/// DDL takes no bind parameters, so this statement is text. It is built only from the two
/// integers of `month` (computed by this crate from `i64` timestamps), never from input text.
pub(crate) fn partition_ddl(month: Month) -> String {
    let next = month.plus(1);
    format!(
        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF points \
         FOR VALUES FROM ('{:04}-{:02}-01 00:00:00+00') TO ('{:04}-{:02}-01 00:00:00+00')",
        month.year(),
        month.month(),
        next.year(),
        next.month(),
        name = partition_name(month),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ddl_covers_one_month() {
        let december = Month::of_ms(1_733_011_200_000); // 2024-12-01
        assert_eq!(partition_name(december), "points_y2024m12");
        assert_eq!(
            partition_ddl(december),
            "CREATE TABLE IF NOT EXISTS points_y2024m12 PARTITION OF points FOR VALUES FROM \
             ('2024-12-01 00:00:00+00') TO ('2025-01-01 00:00:00+00')"
        );
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (position, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, position + 1);
        }
    }
}
