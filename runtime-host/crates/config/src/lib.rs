//! The host's one configuration type, [`Config`], and how it is loaded: defaults, then an
//! optional TOML file, then `WEIR_*` environment variables, each layer overriding the one before.
//!
//! The layers are merged by `figment` and read into [`Config`] in one pass, so every struct's
//! `deny_unknown_fields` and field types hold for all of them. The variables' names do not follow
//! the field paths (`WEIR_DEVICE_RATE` sets `ingest.device_rate_per_second`): `ENV_VARS` is the
//! one table that pairs each variable with its field, and the only place that knows the names.
//! A bad value is reported under the variable's name, a bad file with its line and column; the
//! checks across fields ([`Config::load_from`]) run once all layers are in.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

use weir_runtime::Limits;
use weir_runtime::capabilities::ComponentGrants;
use weir_runtime::signature::PublicKey;
use weir_runtime::validator::{Policy, UnknownKeyPolicy};

/// Everything `weir serve` can be told.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Region this host serves (`WEIR_REGION`).
    pub region: String,
    /// Directory holding the function components, e.g. `validate.wasm` (`WEIR_FUNCTIONS_DIR`).
    pub functions_dir: PathBuf,
    /// Directory for the host's own state, such as compiled artifacts (`WEIR_STATE_DIR`).
    pub state_dir: PathBuf,
    /// PostgreSQL connection URL (`WEIR_DATABASE_URL`).
    pub database_url: String,
    /// Redis connection URL (`WEIR_REDIS_URL`).
    pub redis_url: String,
    /// Address of the device listener, mutual TLS always (`WEIR_DEVICE_LISTEN`).
    pub device_listen: String,
    /// Address of the API listener: health, readiness, metrics (`WEIR_API_LISTEN`).
    pub api_listen: String,
    /// Device TLS: certificates and keys.
    pub tls: TlsConfig,
    /// Sandbox limits of function calls.
    pub functions: FunctionsConfig,
    /// Rules the default validator applies.
    pub validation: ValidationConfig,
    /// Limits of the device surface.
    pub ingest: IngestConfig,
    /// The query API's HTTP function and what it may reach.
    pub query: QueryConfig,
    /// Alert rules and the alerter component that evaluates them.
    pub alerting: AlertingConfig,
    /// Timeouts and caps of the device and API listeners.
    pub server: ServerConfig,
}

/// Timeouts and caps of the device and API listeners: what keeps a slow, idle or hostile
/// client from holding the host's connections, memory or tasks. Each limit counts in
/// `weir_listener_limits_hit_total{listener,reason}` when it bites.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds a client has to send a request's headers, and the longest an HTTP/1.1
    /// connection may sit idle between requests (`WEIR_HEADER_READ_TIMEOUT_S`).
    pub header_read_timeout_s: u64,
    /// Seconds a request body may take to arrive; then `408 body_timeout`
    /// (`WEIR_BODY_READ_TIMEOUT_S`).
    pub body_read_timeout_s: u64,
    /// Seconds between HTTP/2 PINGs to a quiet peer; one unanswered within as long again
    /// closes the connection (`WEIR_KEEPALIVE_INTERVAL_S`).
    pub keepalive_interval_s: u64,
    /// Open connections per listener; more are closed at once (`WEIR_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// TLS handshakes in progress per listener; more are closed at once
    /// (`WEIR_MAX_HANDSHAKES`).
    pub max_handshakes: usize,
    /// Concurrent HTTP/2 streams per device connection (`WEIR_DEVICE_MAX_STREAMS`).
    pub device_max_streams: u32,
    /// Seconds a device connection may live; then it is closed and the device reconnects,
    /// proving its certificate again (`WEIR_DEVICE_CONNECTION_MAX_AGE_S`).
    pub device_connection_max_age_s: u64,
    /// Open connections per device on this host; requests on more get
    /// `429 too_many_connections` (`WEIR_DEVICE_MAX_CONNECTIONS`).
    pub device_max_connections: usize,
    /// Requests of one device in progress at once on this host, over all its connections;
    /// more get `429 too_many_requests` (`WEIR_DEVICE_MAX_REQUESTS`).
    pub device_max_requests: usize,
    /// Seconds a bearer token's verdict is remembered: the longest a revoked token keeps
    /// working, and how often a live event stream re-checks its token (`WEIR_TOKEN_CACHE_S`).
    pub token_cache_s: u64,
    /// Token lookups in PostgreSQL at once, so that a flood of made-up tokens holds at most
    /// this many pool connections; callers beyond it get `503 overloaded`
    /// (`WEIR_MAX_TOKEN_LOOKUPS`).
    pub max_token_lookups: usize,
    /// Live event streams open at once per API token; more get `429 too_many_streams`
    /// (`WEIR_EVENT_STREAMS_PER_TOKEN`).
    pub event_streams_per_token: usize,
    /// Live event streams open at once on this host (`WEIR_MAX_EVENT_STREAMS`).
    pub max_event_streams: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout_s: 10,
            body_read_timeout_s: 30,
            keepalive_interval_s: 30,
            max_connections: 10_000,
            max_handshakes: 256,
            device_max_streams: 16,
            device_connection_max_age_s: 3600,
            device_max_connections: 4,
            device_max_requests: 8,
            token_cache_s: 30,
            max_token_lookups: 4,
            event_streams_per_token: 8,
            max_event_streams: 1000,
        }
    }
}

/// Alerting: the alerter component evaluates every accepted batch against its organisation's
/// rules (the rules directory's files, overlaid by the region's rule sets in the function
/// registry). On whenever there is an alerter (the region's from the registry, or the
/// component file), with or without a rules directory; off (and logged) without one.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// The alerter component, relative to `functions_dir` (`WEIR_ALERT_COMPONENT`).
    pub component: PathBuf,
    /// Directory of rule files, one per organisation: `<org>.toml` or `<org>.json`
    /// (`WEIR_ALERT_RULES_DIR`).
    pub rules_dir: Option<PathBuf>,
    /// Deadline of one alerter call in milliseconds; unset, `functions.deadline_ms`
    /// (`WEIR_ALERT_DEADLINE_MS`).
    pub deadline_ms: Option<u64>,
    /// Seconds between staleness checks, which raise the no-data alerts of rules with a
    /// `stale_after` (`WEIR_ALERT_STALE_CHECK_S`).
    pub stale_check_s: u64,
    /// Longest a webhook POST may take, connection included, in milliseconds
    /// (`WEIR_WEBHOOK_TIMEOUT_MS`).
    pub webhook_timeout_ms: u64,
    /// Wait before a failed webhook delivery's first retry, in milliseconds; it doubles per
    /// attempt (`WEIR_WEBHOOK_RETRY_MIN_MS`).
    pub webhook_retry_min_ms: u64,
    /// Longest wait between two attempts of a webhook delivery, in seconds
    /// (`WEIR_WEBHOOK_RETRY_MAX_S`).
    pub webhook_retry_max_s: u64,
    /// Requests in flight to one webhook, every host's together
    /// (`WEIR_WEBHOOK_CONCURRENCY_PER_WEBHOOK`).
    pub webhook_concurrency_per_webhook: u32,
    /// Age, in seconds from its queueing (or re-drive), after which a delivery is given up
    /// (dead-lettered) (`WEIR_WEBHOOK_MAX_AGE_S`).
    pub webhook_max_age_s: u64,
    /// Attempts after which a failing delivery is given up; 0: no limit but the age
    /// (`WEIR_WEBHOOK_MAX_ATTEMPTS`).
    pub webhook_max_attempts: u32,
    /// Seconds a delivered delivery is kept before it is purged
    /// (`WEIR_WEBHOOK_DELIVERED_RETENTION_S`).
    pub webhook_delivered_retention_s: u64,
    /// Whether webhooks may point at loopback, private, link-local and other non-public
    /// addresses (`WEIR_WEBHOOK_ALLOW_PRIVATE`); off, such a delivery is refused and given up.
    pub webhook_allow_private: bool,
}

/// The query API: a Spin HTTP component serving `/v1/` on the API listener, and its grants
/// (the equivalent of its `spin.toml` component section).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// The component, relative to `functions_dir`; the query API is served only when the file
    /// exists (`WEIR_QUERY_COMPONENT`).
    pub component: PathBuf,
    /// Deadline of one query request in milliseconds, response body included
    /// (`WEIR_QUERY_DEADLINE_MS`).
    pub deadline_ms: u64,
    /// `scheme://host:port` entries the component may connect to; unset, the host's own
    /// database and Redis (`WEIR_QUERY_ALLOWED_HOSTS`, comma-separated).
    pub allowed_outbound_hosts: Option<Vec<String>>,
    /// Variables the component reads, added to (or replacing) the defaults `database_url`
    /// (the read-only URL without its password), `redis_url` (the host's, without password) and
    /// `lateness_window_ms`.
    pub variables: BTreeMap<String, String>,
    /// The database as query components reach it: a role that may only read
    /// (`WEIR_QUERY_DATABASE_URL`). Unset: the host's `database_url` with user `weir_query`
    /// and no password, the role the migrations create when they may.
    pub database_url: Option<String>,
    /// A file holding the read-only role's password (`WEIR_QUERY_DATABASE_PASSWORD_FILE`): the
    /// query pool logs in with it, and a host whose database user may alter roles sets it on
    /// `weir_query` at start. The password never appears in a URL, a variable or a log.
    pub database_password_file: Option<PathBuf>,
    /// Connections of the query components' read-only pool (`WEIR_QUERY_DB_CONNECTIONS`).
    pub database_connections: usize,
    /// How late points may still arrive, in seconds: a history or trend range that closed
    /// longer ago is answered as immutable (`WEIR_LATENESS_WINDOW_S`).
    pub lateness_window_s: u64,
    /// Answers the host keeps for repeated history and trend requests (`WEIR_ANSWER_CACHE`);
    /// 0 turns the cache off.
    pub answer_cache_entries: usize,
}

/// Device TLS files. With `pki_dir` set, unset paths default to that directory's files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// A directory made by `weir pki init` (`WEIR_PKI_DIR`): the host takes `server.pem`,
    /// `server-key.pem` and `ca.pem` from it; `weir ca serve` also its `ca-key.pem`.
    pub pki_dir: Option<PathBuf>,
    /// Server certificate chain, PEM (`WEIR_TLS_CERT`).
    pub cert: Option<PathBuf>,
    /// Server private key, PEM (`WEIR_TLS_KEY`).
    pub key: Option<PathBuf>,
    /// CA bundle device certificates must chain to, PEM (`WEIR_DEVICE_CA`).
    pub device_ca: Option<PathBuf>,
    /// Validity of renewed device certificates in days (`WEIR_RENEW_DAYS`; applied by
    /// `weir ca serve`).
    pub renew_days: u32,
    /// Shortest time between two renewals of one device, in seconds
    /// (`WEIR_RENEW_MIN_INTERVAL_S`; applied by `weir ca serve`); sooner ones are answered 429
    /// `renewal_too_soon`.
    pub renew_min_interval_s: u64,
    /// How long a host waits for the issuing service to answer a renewal, in seconds
    /// (`WEIR_RENEW_WAIT_S`); then the device gets 503 `renewal_unavailable`.
    pub renew_wait_s: u64,
    /// What the device endpoint does once the CRL's nextUpdate has passed (`WEIR_EXPIRED_CRL`):
    /// `refuse` every device, or `keep` enforcing the last CRL and raise the alarm.
    pub expired_crl: weir_pki::ExpiredCrlPolicy,
    /// How often `weir ca serve` re-signs the CRL, in minutes (`WEIR_CRL_REFRESH_MINUTES`; at
    /// least 1). It also lists certificates whose supersession grace has passed.
    pub crl_refresh_minutes: u64,
    /// Certificate chain of the API listener, PEM (`WEIR_API_TLS_CERT`): with `api_key`, the
    /// API speaks HTTPS (h2 and HTTP/1.1); without, plain HTTP/1.1 and h2c.
    pub api_cert: Option<PathBuf>,
    /// Private key of the API listener, PEM (`WEIR_API_TLS_KEY`).
    pub api_key: Option<PathBuf>,
}

/// Limits of the device surface.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest request body, after gzip decoding, in bytes (`WEIR_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Most points in one batch (`WEIR_MAX_BATCH_POINTS`).
    pub max_batch_points: usize,
    /// Requests per second a device may make on average (`WEIR_DEVICE_RATE`).
    pub device_rate_per_second: f64,
    /// Requests a device may make in a burst (`WEIR_DEVICE_BURST`).
    pub device_burst: f64,
    /// PostgreSQL connections of this host (`WEIR_DATABASE_POOL`).
    pub database_pool: usize,
    /// Batches processed at once; more wait briefly, then get 503 (`WEIR_MAX_INFLIGHT`).
    pub max_inflight_batches: usize,
    /// How long a batch id is remembered for duplicate detection, in hours
    /// (`WEIR_BATCH_RETENTION_HOURS`).
    pub batch_retention_hours: u64,
    /// Seconds the host that stored a batch has for its follow-up (latest values, alert
    /// evaluation) before another host of the region may take it over
    /// (`WEIR_FOLLOWUP_TAKEOVER_S`).
    pub followup_takeover_s: u64,
    /// Seconds after which a batch's follow-up that keeps failing is given up: counted in
    /// `weir_followups_failed_total` and logged with its batch id (`WEIR_FOLLOWUP_MAX_AGE_S`).
    pub followup_max_age_s: u64,
    /// Keys (series) one device may have; the points of further new keys are rejected with
    /// `key_limit_exceeded`, the rest of their batch stored (`WEIR_MAX_KEYS_PER_DEVICE`).
    pub max_keys_per_device: i64,
    /// Keys (series) all devices of one organisation may have together
    /// (`WEIR_MAX_KEYS_PER_ORG`).
    pub max_keys_per_org: i64,
    /// Longest one SQL statement of the host's PostgreSQL pool may run before it is cancelled
    /// and its request answered 503 (`WEIR_STATEMENT_TIMEOUT_MS`): a stalled database holds
    /// an in-flight slot that long at most.
    pub statement_timeout_ms: u64,
    /// Times the alerter may fail (trap, deadline, memory, invalid answer) on one batch before
    /// that batch's evaluation is given up, so that a poison batch holds up its device's
    /// later batches only briefly (`WEIR_FOLLOWUP_EVALUATION_ATTEMPTS`).
    pub followup_evaluation_attempts: u32,
}

/// Sandbox limits of function calls.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    /// Deadline of one call in milliseconds (`WEIR_FUNCTION_DEADLINE_MS`).
    pub deadline_ms: u64,
    /// Memory cap of one instance in MiB (`WEIR_FUNCTION_MEMORY_MB`).
    pub memory_mb: u64,
    /// Most instances alive at once (`WEIR_FUNCTION_INSTANCES`).
    pub max_instances: u32,
    /// The operator's Ed25519 public key, 64 hex digits: when set, every component must carry
    /// its signature (`weir functions sign`), or it is refused at deploy and at load
    /// (`WEIR_SIGNING_PUBLIC_KEY`).
    pub signing_public_key: Option<String>,
}

/// Validation policy handed to the validator with every batch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// How far ahead of the server clock a timestamp may be (`WEIR_MAX_CLOCK_SKEW_MS`).
    pub max_clock_skew_ms: i64,
    /// How old a point may be, in days (`WEIR_MAX_POINT_AGE_DAYS`).
    pub max_point_age_days: i64,
    /// `accept` stores points of keys without metadata untyped; `reject` refuses them
    /// (`WEIR_UNKNOWN_KEYS`).
    pub unknown_keys: UnknownKeys,
    /// Longest text value in characters (`WEIR_MAX_TEXT_LENGTH`).
    pub max_text_length: u32,
}

/// Policy for points whose key has no metadata.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnknownKeys {
    /// Store them untyped.
    Accept,
    /// Refuse them.
    Reject,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: "local".into(),
            functions_dir: PathBuf::from("target/functions"),
            state_dir: PathBuf::from(".weir"),
            database_url: "postgres://postgres@127.0.0.1:5432/weir".into(),
            redis_url: "redis://127.0.0.1:6379/".into(),
            device_listen: "0.0.0.0:7443".into(),
            api_listen: "127.0.0.1:7080".into(),
            tls: TlsConfig::default(),
            functions: FunctionsConfig::default(),
            validation: ValidationConfig::default(),
            ingest: IngestConfig::default(),
            query: QueryConfig::default(),
            alerting: AlertingConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            component: PathBuf::from("alert.wasm"),
            rules_dir: None,
            deadline_ms: None,
            stale_check_s: 30,
            webhook_timeout_ms: 5000,
            webhook_retry_min_ms: 1000,
            webhook_retry_max_s: 300,
            webhook_concurrency_per_webhook: 4,
            webhook_max_age_s: 86_400,
            webhook_max_attempts: 0,
            webhook_delivered_retention_s: 7 * 86_400,
            webhook_allow_private: false,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            component: PathBuf::from("query.wasm"),
            deadline_ms: 1000,
            allowed_outbound_hosts: None,
            variables: BTreeMap::new(),
            database_url: None,
            database_password_file: None,
            database_connections: 8,
            lateness_window_s: 24 * 3600,
            answer_cache_entries: 4096,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            pki_dir: None,
            cert: None,
            key: None,
            device_ca: None,
            renew_days: 7,
            renew_min_interval_s: 600,
            renew_wait_s: 10,
            expired_crl: weir_pki::ExpiredCrlPolicy::Refuse,
            crl_refresh_minutes: 60,
            api_cert: None,
            api_key: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: 1 << 20,
            max_batch_points: 1000,
            device_rate_per_second: 20.0,
            device_burst: 40.0,
            database_pool: 16,
            max_inflight_batches: 64,
            batch_retention_hours: 24 * 7,
            followup_takeover_s: 30,
            followup_max_age_s: 24 * 3600,
            followup_evaluation_attempts: 3,
            statement_timeout_ms: 10_000,
            max_keys_per_device: 10_000,
            max_keys_per_org: 1_000_000,
        }
    }
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        FunctionsConfig {
            deadline_ms: limits.deadline.as_millis() as u64,
            memory_mb: (limits.memory_bytes >> 20) as u64,
            max_instances: limits.max_instances,
            signing_public_key: None,
        }
    }
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            max_clock_skew_ms: 5 * 60 * 1000,
            max_point_age_days: 3650,
            unknown_keys: UnknownKeys::Accept,
            max_text_length: 1024,
        }
    }
}

impl Config {
    /// Loads the configuration: defaults, then `file` if given, then the process's `WEIR_*`
    /// variables (see [`Config::load_from`]).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        // Only the table's variables are read: `std::env::vars` would panic on any variable of
        // the process that is not Unicode, and one of ours that is not is ignored, as unset.
        let vars = ENV_VARS.iter().filter_map(|&(name, _, _)| {
            std::env::var(name)
                .ok()
                .map(|value| (name.to_owned(), value))
        });
        Config::load_from(file, vars)
    }

    /// Loads the configuration from defaults, then `file` if given, then `vars`: the
    /// environment's `(name, value)` pairs, of which only the documented `WEIR_*` variables
    /// count. Tests hand their own pairs instead of changing the process's environment.
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let text = match file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?,
            ),
            None => None,
        };
        let config = Config::layered(file.zip(text.as_deref()), vars)?;
        config.check()?;
        Ok(config)
    }

    /// Defaults, overridden by the file's text if given, then by the `WEIR_*` variables of
    /// `vars`; without the checks across fields.
    fn layered(
        file: Option<(&Path, &str)>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let vars: BTreeMap<&'static str, String> = vars
            .into_iter()
            .filter_map(|(name, text)| {
                let (known, _, _) = ENV_VARS.iter().find(|(known, _, _)| *known == name)?;
                Some((*known, text))
            })
            .collect();
        // Missing fields are the defaults: every struct is `#[serde(default)]`.
        let mut figment = Figment::new();
        if let Some((path, text)) = file {
            figment = figment.merge(file_layer(path, text)?);
        }
        figment
            .merge(env_layer(&vars))
            .extract()
            .map_err(|error| env_error(error, &vars))
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.functions.deadline_ms == 0 {
            bail!("functions.deadline_ms must be at least 1");
        }
        if self.functions.memory_mb < 2 {
            bail!("functions.memory_mb must be at least 2 (a Rust component starts with ~1 MiB)");
        }
        if self.query.deadline_ms == 0 {
            bail!("query.deadline_ms must be at least 1");
        }
        if self.functions.max_instances == 0 {
            bail!("functions.max_instances must be at least 1");
        }
        self.signing_key()
            .context("functions.signing_public_key (WEIR_SIGNING_PUBLIC_KEY)")?;
        if self.ingest.device_rate_per_second <= 0.0 || self.ingest.device_burst < 1.0 {
            bail!("ingest.device_rate_per_second must be > 0 and ingest.device_burst >= 1");
        }
        if self.ingest.followup_takeover_s == 0 || self.ingest.followup_max_age_s == 0 {
            bail!("ingest.followup_takeover_s and ingest.followup_max_age_s must be at least 1");
        }
        if self.ingest.followup_evaluation_attempts == 0 || self.ingest.statement_timeout_ms == 0 {
            bail!(
                "ingest.followup_evaluation_attempts and ingest.statement_timeout_ms must be at least 1"
            );
        }
        if self.ingest.max_keys_per_device < 1 || self.ingest.max_keys_per_org < 1 {
            bail!("ingest.max_keys_per_device and ingest.max_keys_per_org must be at least 1");
        }
        if self.ingest.database_pool == 0 || self.ingest.max_inflight_batches == 0 {
            bail!("ingest.database_pool and ingest.max_inflight_batches must be at least 1");
        }
        if self.tls.api_cert.is_some() != self.tls.api_key.is_some() {
            bail!("tls.api_cert and tls.api_key (WEIR_API_TLS_CERT, WEIR_API_TLS_KEY) go together");
        }
        let server = &self.server;
        if server.header_read_timeout_s == 0
            || server.body_read_timeout_s == 0
            || server.keepalive_interval_s == 0
            || server.max_connections == 0
            || server.max_handshakes == 0
            || server.device_max_streams == 0
            || server.device_connection_max_age_s == 0
            || server.device_max_connections == 0
            || server.device_max_requests == 0
            || server.token_cache_s == 0
            || server.max_token_lookups == 0
            || server.event_streams_per_token == 0
            || server.max_event_streams == 0
        {
            bail!("every server.* limit must be at least 1");
        }
        if self.tls.renew_wait_s == 0 || self.tls.crl_refresh_minutes == 0 {
            bail!("tls.renew_wait_s and tls.crl_refresh_minutes must be at least 1");
        }
        if self.alerting.deadline_ms == Some(0) || self.alerting.stale_check_s == 0 {
            bail!("alerting.deadline_ms and alerting.stale_check_s must be at least 1");
        }
        let webhooks = &self.alerting;
        if webhooks.webhook_timeout_ms == 0
            || webhooks.webhook_retry_min_ms == 0
            || webhooks.webhook_retry_min_ms > webhooks.webhook_retry_max_s.saturating_mul(1000)
        {
            bail!(
                "alerting.webhook_timeout_ms and alerting.webhook_retry_min_ms must be at least 1, \
                 and webhook_retry_min_ms at most webhook_retry_max_s (in ms)"
            );
        }
        if !(1..=1000).contains(&webhooks.webhook_concurrency_per_webhook) {
            bail!("alerting.webhook_concurrency_per_webhook must be between 1 and 1000");
        }
        if webhooks.webhook_max_age_s == 0 || webhooks.webhook_delivered_retention_s == 0 {
            bail!(
                "alerting.webhook_max_age_s and alerting.webhook_delivered_retention_s must be \
                 at least 1"
            );
        }
        if self.query.database_connections == 0 {
            bail!("query.database_connections must be at least 1");
        }
        Ok(())
    }

    /// The device TLS files: explicit paths, else the PKI directory's standard files.
    pub fn device_tls_files(&self) -> anyhow::Result<weir_pki::DeviceTlsFiles> {
        let defaults = self
            .tls
            .pki_dir
            .as_deref()
            .map(weir_pki::DeviceTlsFiles::in_pki_dir);
        let pick = |explicit: &Option<PathBuf>,
                    default: Option<PathBuf>,
                    what: &str|
         -> anyhow::Result<PathBuf> {
            explicit.clone().or(default).with_context(|| {
                format!("no {what}: set WEIR_PKI_DIR (see `weir pki init`) or the explicit path")
            })
        };
        Ok(weir_pki::DeviceTlsFiles {
            server_cert: pick(
                &self.tls.cert,
                defaults.as_ref().map(|d| d.server_cert.clone()),
                "server certificate (WEIR_TLS_CERT)",
            )?,
            server_key: pick(
                &self.tls.key,
                defaults.as_ref().map(|d| d.server_key.clone()),
                "server key (WEIR_TLS_KEY)",
            )?,
            client_ca: pick(
                &self.tls.device_ca,
                defaults.as_ref().map(|d| d.client_ca.clone()),
                "device CA bundle (WEIR_DEVICE_CA)",
            )?,
            expired_crl: self.tls.expired_crl,
        })
    }

    /// The sandbox limits for the function engine.
    pub fn limits(&self) -> Limits {
        Limits {
            deadline: Duration::from_millis(self.functions.deadline_ms),
            memory_bytes: (self.functions.memory_mb as usize) << 20,
            max_instances: self.functions.max_instances,
        }
    }

    /// The validation policy at time `now_ms` (unix milliseconds).
    pub fn policy(&self, now_ms: i64) -> Policy {
        let v = &self.validation;
        Policy {
            now: now_ms,
            max_future_skew_ms: v.max_clock_skew_ms,
            max_age_ms: v.max_point_age_days.saturating_mul(24 * 3600 * 1000),
            unknown_keys: match v.unknown_keys {
                UnknownKeys::Accept => UnknownKeyPolicy::AcceptUntyped,
                UnknownKeys::Reject => UnknownKeyPolicy::Reject,
            },
            max_text_length: v.max_text_length,
        }
    }

    /// The query component's file (`query.component` inside `functions_dir`).
    pub fn query_component(&self) -> PathBuf {
        self.functions_dir.join(&self.query.component)
    }

    /// The deadline of one query request.
    pub fn query_deadline(&self) -> Duration {
        Duration::from_millis(self.query.deadline_ms)
    }

    /// What the query component may reach. `host_endpoints` are the `allowed_outbound_hosts`
    /// entries of the host's own database and Redis, used when none are configured.
    pub fn query_grants(&self, host_endpoints: Vec<String>) -> ComponentGrants {
        let mut variables = HashMap::from([
            (
                "database_url".to_owned(),
                redact_url(&self.query_database_url()),
            ),
            ("redis_url".to_owned(), redact_url(&self.redis_url)),
            (
                "lateness_window_ms".to_owned(),
                (self.query.lateness_window_s.saturating_mul(1000)).to_string(),
            ),
        ]);
        variables.extend(self.query.variables.clone());
        ComponentGrants {
            allowed_outbound_hosts: self
                .query
                .allowed_outbound_hosts
                .clone()
                .unwrap_or(host_endpoints),
            variables,
        }
    }

    /// The database URL of the query components' read-only pool (see
    /// [`QueryConfig::database_url`]).
    pub fn query_database_url(&self) -> String {
        match &self.query.database_url {
            Some(url) => url.clone(),
            None => with_user(&redact_url(&self.database_url), QUERY_ROLE),
        }
    }

    /// The read-only role's password, read from `query.database_password_file` (trailing
    /// newline trimmed); `None` when no file is configured.
    pub fn query_database_password(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.query.database_password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading query.database_password_file {} (WEIR_QUERY_DATABASE_PASSWORD_FILE)",
                path.display()
            )
        })?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            bail!(
                "query.database_password_file {} is empty (WEIR_QUERY_DATABASE_PASSWORD_FILE)",
                path.display()
            );
        }
        Ok(Some(password.to_owned()))
    }

    /// The alerter component's file (`alerting.component` inside `functions_dir`).
    pub fn alert_component(&self) -> PathBuf {
        self.functions_dir.join(&self.alerting.component)
    }

    /// The function engine this configuration describes: its limits, its compiled-artifact
    /// cache and, when a signing key is configured, signed components only.
    pub fn function_engine(&self) -> anyhow::Result<weir_runtime::FunctionEngine> {
        weir_runtime::FunctionEngine::with_signing_key(
            self.limits(),
            Some(&self.artifact_dir()),
            self.signing_key()?,
        )
    }

    /// The public key components must be signed for, when one is configured.
    pub fn signing_key(&self) -> anyhow::Result<Option<PublicKey>> {
        self.functions
            .signing_public_key
            .as_deref()
            .map(PublicKey::from_hex)
            .transpose()
    }

    /// The deadline of one alerter call.
    pub fn alert_deadline(&self) -> Duration {
        Duration::from_millis(
            self.alerting
                .deadline_ms
                .unwrap_or(self.functions.deadline_ms),
        )
    }

    /// Where compiled component artifacts are cached.
    pub fn artifact_dir(&self) -> PathBuf {
        self.state_dir.join("artifacts")
    }
}

/// The read-only role query components log in as unless configured otherwise.
pub const QUERY_ROLE: &str = "weir_query";

/// `url` (without a password) with its user replaced by `user`.
fn with_user(url: &str, user: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username(user);
            parsed.into()
        }
        // PostgreSQL's `key=value` form.
        _ => {
            let mut pairs: Vec<String> = url
                .split_whitespace()
                .filter(|pair| !pair.starts_with("user="))
                .map(str::to_owned)
                .collect();
            pairs.push(format!("user={user}"));
            pairs.join(" ")
        }
    }
}

/// `url` without the password of its `user:password@` part (or its `password=` pair): what
/// components are handed (the host connects with its own credentials) and what messages and
/// logs may show.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            let _ = parsed.set_password(None);
            parsed.into()
        }
        // PostgreSQL's `key=value` form, or not a URL at all.
        _ => url
            .split_whitespace()
            .filter(|pair| !pair.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Every `WEIR_*` variable: its name, the field it sets (a dotted path, as in the TOML file) and
/// how its text is read. The README's configuration table documents the same pairs.
#[rustfmt::skip]
const ENV_VARS: &[EnvVar] = &[
    ("WEIR_REGION",                "region",                        Text),
    ("WEIR_FUNCTIONS_DIR",         "functions_dir",                 Text),
    ("WEIR_STATE_DIR",             "state_dir",                     Text),
    ("WEIR_DATABASE_URL",          "database_url",                  Text),
    ("WEIR_REDIS_URL",             "redis_url",                     Text),
    ("WEIR_DEVICE_LISTEN",         "device_listen",                 Text),
    ("WEIR_API_LISTEN",            "api_listen",                    Text),
    ("WEIR_PKI_DIR",               "tls.pki_dir",                   Text),
    ("WEIR_TLS_CERT",              "tls.cert",                      Text),
    ("WEIR_TLS_KEY",               "tls.key",                       Text),
    ("WEIR_DEVICE_CA",             "tls.device_ca",                 Text),
    ("WEIR_RENEW_DAYS",            "tls.renew_days",                Number),
    ("WEIR_RENEW_MIN_INTERVAL_S",  "tls.renew_min_interval_s",      Number),
    ("WEIR_RENEW_WAIT_S",          "tls.renew_wait_s",              Number),
    ("WEIR_EXPIRED_CRL",           "tls.expired_crl",               Text),
    ("WEIR_CRL_REFRESH_MINUTES",   "tls.crl_refresh_minutes",       Number),
    ("WEIR_API_TLS_CERT",          "tls.api_cert",                  Text),
    ("WEIR_API_TLS_KEY",           "tls.api_key",                   Text),
    ("WEIR_HEADER_READ_TIMEOUT_S", "server.header_read_timeout_s",  Number),
    ("WEIR_BODY_READ_TIMEOUT_S",   "server.body_read_timeout_s",    Number),
    ("WEIR_KEEPALIVE_INTERVAL_S",  "server.keepalive_interval_s",   Number),
    ("WEIR_MAX_CONNECTIONS",       "server.max_connections",        Number),
    ("WEIR_MAX_HANDSHAKES",        "server.max_handshakes",         Number),
    ("WEIR_DEVICE_MAX_STREAMS",    "server.device_max_streams",     Number),
    ("WEIR_DEVICE_CONNECTION_MAX_AGE_S", "server.device_connection_max_age_s", Number),
    ("WEIR_DEVICE_MAX_CONNECTIONS", "server.device_max_connections", Number),
    ("WEIR_DEVICE_MAX_REQUESTS",   "server.device_max_requests",    Number),
    ("WEIR_TOKEN_CACHE_S",         "server.token_cache_s",          Number),
    ("WEIR_MAX_TOKEN_LOOKUPS",     "server.max_token_lookups",      Number),
    ("WEIR_EVENT_STREAMS_PER_TOKEN", "server.event_streams_per_token", Number),
    ("WEIR_MAX_EVENT_STREAMS",     "server.max_event_streams",      Number),
    ("WEIR_MAX_BODY_BYTES",        "ingest.max_body_bytes",         Number),
    ("WEIR_MAX_BATCH_POINTS",      "ingest.max_batch_points",       Number),
    ("WEIR_DEVICE_RATE",           "ingest.device_rate_per_second", Number),
    ("WEIR_DEVICE_BURST",          "ingest.device_burst",           Number),
    ("WEIR_DATABASE_POOL",         "ingest.database_pool",          Number),
    ("WEIR_MAX_INFLIGHT",          "ingest.max_inflight_batches",   Number),
    ("WEIR_BATCH_RETENTION_HOURS", "ingest.batch_retention_hours",  Number),
    ("WEIR_FOLLOWUP_TAKEOVER_S",   "ingest.followup_takeover_s",    Number),
    ("WEIR_FOLLOWUP_MAX_AGE_S",    "ingest.followup_max_age_s",     Number),
    ("WEIR_FOLLOWUP_EVALUATION_ATTEMPTS", "ingest.followup_evaluation_attempts", Number),
    ("WEIR_STATEMENT_TIMEOUT_MS",  "ingest.statement_timeout_ms",   Number),
    ("WEIR_MAX_KEYS_PER_DEVICE",   "ingest.max_keys_per_device",    Number),
    ("WEIR_MAX_KEYS_PER_ORG",      "ingest.max_keys_per_org",       Number),
    ("WEIR_FUNCTION_DEADLINE_MS",  "functions.deadline_ms",         Number),
    ("WEIR_FUNCTION_MEMORY_MB",    "functions.memory_mb",           Number),
    ("WEIR_FUNCTION_INSTANCES",    "functions.max_instances",       Number),
    ("WEIR_SIGNING_PUBLIC_KEY",    "functions.signing_public_key",  Text),
    ("WEIR_MAX_CLOCK_SKEW_MS",     "validation.max_clock_skew_ms",  Number),
    ("WEIR_MAX_POINT_AGE_DAYS",    "validation.max_point_age_days", Number),
    ("WEIR_UNKNOWN_KEYS",          "validation.unknown_keys",       Text),
    ("WEIR_MAX_TEXT_LENGTH",       "validation.max_text_length",    Number),
    ("WEIR_QUERY_COMPONENT",       "query.component",               Text),
    ("WEIR_QUERY_DEADLINE_MS",     "query.deadline_ms",             Number),
    ("WEIR_QUERY_ALLOWED_HOSTS",   "query.allowed_outbound_hosts",  List),
    ("WEIR_QUERY_DATABASE_URL",    "query.database_url",            Text),
    ("WEIR_QUERY_DATABASE_PASSWORD_FILE", "query.database_password_file", Text),
    ("WEIR_QUERY_DB_CONNECTIONS",  "query.database_connections",    Number),
    ("WEIR_LATENESS_WINDOW_S",     "query.lateness_window_s",       Number),
    ("WEIR_ANSWER_CACHE",          "query.answer_cache_entries",    Number),
    ("WEIR_ALERT_COMPONENT",       "alerting.component",            Text),
    ("WEIR_ALERT_RULES_DIR",       "alerting.rules_dir",            Text),
    ("WEIR_ALERT_DEADLINE_MS",     "alerting.deadline_ms",          Number),
    ("WEIR_ALERT_STALE_CHECK_S",   "alerting.stale_check_s",        Number),
    ("WEIR_WEBHOOK_TIMEOUT_MS",    "alerting.webhook_timeout_ms",   Number),
    ("WEIR_WEBHOOK_RETRY_MIN_MS",  "alerting.webhook_retry_min_ms", Number),
    ("WEIR_WEBHOOK_RETRY_MAX_S",   "alerting.webhook_retry_max_s",  Number),
    ("WEIR_WEBHOOK_CONCURRENCY_PER_WEBHOOK", "alerting.webhook_concurrency_per_webhook", Number),
    ("WEIR_WEBHOOK_MAX_AGE_S",     "alerting.webhook_max_age_s",    Number),
    ("WEIR_WEBHOOK_MAX_ATTEMPTS",  "alerting.webhook_max_attempts", Number),
    ("WEIR_WEBHOOK_DELIVERED_RETENTION_S", "alerting.webhook_delivered_retention_s", Number),
    ("WEIR_WEBHOOK_ALLOW_PRIVATE", "alerting.webhook_allow_private", Bool),
];

/// A row of [`ENV_VARS`]: the variable, the field path it sets, how its text is read.
type EnvVar = (&'static str, &'static str, EnvText);

use EnvText::{Bool, List, Number, Text};

/// How a variable's text becomes the value of its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvText {
    /// Taken as it is, even when it looks like a number: `WEIR_REGION=123` is region `123`
    /// (figment's own `Env` provider would make it an integer and refuse it).
    Text,
    /// A number as Rust's `str::parse` reads it; other text stays text, so the field's type
    /// refuses it and the message names the variable.
    Number,
    /// Comma-separated entries, trimmed, empty ones dropped.
    List,
    /// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case); other text stays
    /// text, so the field's type refuses it and the message names the variable.
    Bool,
}

impl EnvText {
    fn value(self, text: &str) -> Value {
        match self {
            Text => text.into(),
            Number => (text.parse::<u64>().ok().map(Value::from))
                .or_else(|| text.parse::<i64>().ok().map(Value::from))
                .or_else(|| text.parse::<f64>().ok().map(Value::from))
                .unwrap_or_else(|| text.into()),
            Bool => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Value::from(true),
                "false" | "0" | "no" | "off" => Value::from(false),
                _ => text.into(),
            },
            List => text
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(Value::from)
                .collect::<Vec<_>>()
                .into(),
        }
    }
}

/// One layer of the configuration, as figment merges it: a tree of values and where it came
/// from, for figment's messages.
struct Layer {
    metadata: Metadata,
    values: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// The TOML file as a layer. The file is first read into a [`Config`] on its own, so that its
/// mistakes (unknown fields, wrong types) are reported with line and column, as `toml` reports
/// them; figment then merges its values with the others.
fn file_layer(path: &Path, text: &str) -> anyhow::Result<Layer> {
    let context = || format!("in config file {}", path.display());
    toml::from_str::<Config>(text).with_context(context)?;
    Ok(Layer {
        metadata: Metadata::from("TOML file", path),
        values: toml::from_str(text).with_context(context)?,
    })
}

/// The variables of [`ENV_VARS`] that `vars` sets (the last value of each), as a layer.
fn env_layer(vars: &BTreeMap<&'static str, String>) -> Layer {
    let mut values = Dict::new();
    for (name, path, read) in ENV_VARS {
        if let Some(text) = vars.get(name) {
            insert(&mut values, path, read.value(text));
        }
    }
    Layer {
        metadata: Metadata::named("`WEIR_*` environment variables"),
        values,
    }
}

/// Puts `value` at the dotted `path` of `values`, making the tables on the way.
fn insert(values: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        Some((table, rest)) => {
            let entry = values
                .entry(table.to_owned())
                .or_insert_with(|| Dict::new().into());
            if let Value::Dict(_, table) = entry {
                insert(table, rest, value);
            }
        }
        None => {
            values.insert(path.to_owned(), value);
        }
    }
}

/// A figment error about a variable's value, as `NAME=`text` is not valid: why`. The file's
/// values were read on their own before, so a value that does not fit its field is a variable's.
fn env_error(error: figment::Error, vars: &BTreeMap<&'static str, String>) -> anyhow::Error {
    let key = error.path.join(".");
    let set = ENV_VARS.iter().find_map(|(name, path, _)| {
        let under = key == *path || key.starts_with(&format!("{path}."));
        under.then(|| vars.get(name).map(|text| (name, text)))?
    });
    match set {
        Some((name, text)) => anyhow::anyhow!("{name}=`{text}` is not valid: {}", error.kind),
        None => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, text)| (name.to_string(), text.to_string()))
            .collect()
    }

    /// `WEIR_*` variables over a TOML file's text, checks included, as [`Config::load_from`].
    fn load(toml: &str, pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let config = Config::layered(Some((Path::new("weir.toml"), toml)), vars(pairs))?;
        config.check()?;
        Ok(config)
    }

    /// A value each variable accepts that differs from its default.
    fn sample(name: &str, read: EnvText) -> &'static str {
        match (name, read) {
            ("WEIR_UNKNOWN_KEYS", _) => "reject",
            ("WEIR_EXPIRED_CRL", _) => "keep",
            // Its default is the generic sample.
            ("WEIR_FOLLOWUP_EVALUATION_ATTEMPTS", _) => "5",
            // 64 decimal digits: hex to the signing key, text to the config, not a number.
            ("WEIR_SIGNING_PUBLIC_KEY", _) => {
                "1111111111111111111111111111111111111111111111111111111111111111"
            }
            (_, Text) => "sample",
            (_, Number) => "3",
            (_, List) => "postgres://db:5432, redis://cache:6379",
            (_, Bool) => "true",
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load(
            "region = \"eu-north\"\n[functions]\ndeadline_ms = 50\n",
            &[("WEIR_FUNCTION_DEADLINE_MS", "75")],
        )
        .unwrap();
        assert_eq!(config.region, "eu-north");
        assert_eq!(config.functions.deadline_ms, 75);
        assert_eq!(config.functions.memory_mb, 64);
    }

    #[test]
    fn load_from_reads_the_file_then_the_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "region = \"eu-north\"\n[ingest]\ndevice_burst = 9.0\n",
        )
        .unwrap();
        let config = Config::load_from(
            Some(&path),
            vars(&[("WEIR_DEVICE_BURST", "12"), ("HOME", "/root")]),
        )
        .unwrap();
        assert_eq!(config.region, "eu-north");
        assert_eq!(config.ingest.device_burst, 12.0);
        let missing = Config::load_from(Some(&dir.path().join("none.toml")), vec![]).unwrap_err();
        assert!(
            missing.to_string().contains("reading config file"),
            "{missing}"
        );
    }

    #[test]
    fn query_grants_default_to_the_hosts_stores_without_passwords() {
        let toml = "database_url = \"postgres://weir:secret@db:5432/weir\"\n\
                    redis_url = \"redis://:pw@cache:6379/0\"\n\
                    [query.variables]\nunit = \"kWh\"\n";
        let mut config = load(toml, &[]).unwrap();
        let grants = config.query_grants(vec!["postgres://db:5432".into()]);
        assert_eq!(grants.allowed_outbound_hosts, ["postgres://db:5432"]);
        assert_eq!(
            grants.variables["database_url"], "postgres://weir_query@db:5432/weir",
            "the read-only role, without the host's password"
        );
        assert_eq!(grants.variables["redis_url"], "redis://cache:6379/0");
        assert_eq!(grants.variables["unit"], "kWh");
        assert_eq!(grants.variables["lateness_window_ms"], "86400000");
        assert_eq!(
            redact_url("host=db password=x dbname=weir"),
            "host=db dbname=weir"
        );
        assert_eq!(
            with_user("host=db user=weir dbname=weir", "r"),
            "host=db dbname=weir user=r"
        );
        assert_eq!(with_user("postgres://db/weir", "r"), "postgres://r@db/weir");
        config.query.database_url = Some("postgres://reader:pw@db2/weir".into());
        assert_eq!(config.query_database_url(), "postgres://reader:pw@db2/weir");
        assert_eq!(
            config.query_grants(vec![]).variables["database_url"],
            "postgres://reader@db2/weir"
        );
        let config = load(
            toml,
            &[("WEIR_QUERY_ALLOWED_HOSTS", "redis://a:1, postgres://b,")],
        )
        .unwrap();
        assert_eq!(
            config.query_grants(vec![]).allowed_outbound_hosts,
            ["redis://a:1", "postgres://b"]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = load("regoin = \"x\"", &[]).unwrap_err();
        assert!(format!("{error:#}").contains("regoin"), "{error:#}");
        let error = load("[ingest]\nmax_body = 1", &[]).unwrap_err();
        assert!(format!("{error:#}").contains("max_body"), "{error:#}");
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let error =
            Config::layered(None, vars(&[("WEIR_FUNCTION_MEMORY_MB", "lots")])).unwrap_err();
        assert!(
            error.to_string().contains("WEIR_FUNCTION_MEMORY_MB"),
            "{error}"
        );
        for (name, text) in [
            ("WEIR_MAX_BODY_BYTES", "-1"),
            ("WEIR_RENEW_DAYS", "1.5"),
            ("WEIR_FUNCTION_INSTANCES", "99999999999"),
            ("WEIR_ALERT_DEADLINE_MS", ""),
            ("WEIR_DEVICE_RATE", "fast"),
            ("WEIR_UNKNOWN_KEYS", "maybe"),
        ] {
            let error = Config::layered(None, vars(&[(name, text)])).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("{name}=`{text}` is not valid: ")),
                "{error}"
            );
        }
    }

    #[test]
    fn text_that_looks_like_a_number_stays_text() {
        let config = Config::layered(
            None,
            vars(&[("WEIR_REGION", "123"), ("WEIR_FUNCTIONS_DIR", "2024")]),
        )
        .unwrap();
        assert_eq!(config.region, "123");
        assert_eq!(config.functions_dir, Path::new("2024"));
    }

    #[test]
    fn every_variable_sets_a_field_of_its_own() {
        let mut changed = Vec::new();
        for &(name, path, read) in ENV_VARS {
            let config = Config::layered(None, vars(&[(name, sample(name, read))]))
                .unwrap_or_else(|error| panic!("{name} -> {path}: {error:#}"));
            assert_ne!(config, Config::default(), "{name} changes nothing");
            assert!(!changed.contains(&config), "{name} sets another's field");
            changed.push(config);
        }
    }

    #[test]
    fn every_variable_at_once_passes_the_checks() {
        let all: Vec<(&str, &str)> = ENV_VARS
            .iter()
            .map(|&(name, _, read)| (name, sample(name, read)))
            .collect();
        let config = Config::layered(None, vars(&all)).unwrap();
        config.check().unwrap();
        assert_eq!(config.ingest.device_rate_per_second, 3.0);
        assert_eq!(config.alerting.deadline_ms, Some(3));
        assert_eq!(config.tls.api_key.as_deref(), Some(Path::new("sample")));
        assert_eq!(config.validation.unknown_keys, UnknownKeys::Reject);
        assert_eq!(
            config.query.allowed_outbound_hosts.unwrap(),
            ["postgres://db:5432", "redis://cache:6379"]
        );
    }

    #[test]
    fn the_table_names_each_variable_and_field_once() {
        for (i, (name, path, _)) in ENV_VARS.iter().enumerate() {
            assert!(name.starts_with("WEIR_"), "{name}");
            for (other, other_path, _) in &ENV_VARS[i + 1..] {
                assert_ne!(name, other, "{name} is in the table twice");
                assert_ne!(path, other_path, "{name} and {other} both set {path}");
            }
        }
    }
}
