//! The host's one configuration type: defaults, then an optional TOML file, then `WEIR_*`
//! environment variables, each layer overriding the one before.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
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
    /// A directory made by `weir pki init` (`WEIR_PKI_DIR`); needed for certificate renewal.
    pub pki_dir: Option<PathBuf>,
    /// Server certificate chain, PEM (`WEIR_TLS_CERT`).
    pub cert: Option<PathBuf>,
    /// Server private key, PEM (`WEIR_TLS_KEY`).
    pub key: Option<PathBuf>,
    /// CA bundle device certificates must chain to, PEM (`WEIR_DEVICE_CA`).
    pub device_ca: Option<PathBuf>,
    /// Certificate revocation list, PEM (`WEIR_DEVICE_CRL`); re-read when it changes.
    pub device_crl: Option<PathBuf>,
    /// Validity of renewed device certificates in days (`WEIR_RENEW_DAYS`).
    pub renew_days: u32,
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
    Accept,
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
            device_crl: None,
            renew_days: 7,
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
    /// Loads the configuration: defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("in config file {}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.check()?;
        Ok(config)
    }

    /// Overrides fields from `WEIR_*` variables, read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("WEIR_REGION") {
            self.region = v;
        }
        if let Some(v) = var("WEIR_FUNCTIONS_DIR") {
            self.functions_dir = v.into();
        }
        if let Some(v) = var("WEIR_STATE_DIR") {
            self.state_dir = v.into();
        }
        if let Some(v) = var("WEIR_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = var("WEIR_REDIS_URL") {
            self.redis_url = v;
        }
        if let Some(v) = var("WEIR_DEVICE_LISTEN") {
            self.device_listen = v;
        }
        if let Some(v) = var("WEIR_API_LISTEN") {
            self.api_listen = v;
        }
        if let Some(v) = var("WEIR_SIGNING_PUBLIC_KEY") {
            self.functions.signing_public_key = Some(v);
        }
        let tls = &mut self.tls;
        for (name, field) in [
            ("WEIR_PKI_DIR", &mut tls.pki_dir),
            ("WEIR_TLS_CERT", &mut tls.cert),
            ("WEIR_TLS_KEY", &mut tls.key),
            ("WEIR_DEVICE_CA", &mut tls.device_ca),
            ("WEIR_DEVICE_CRL", &mut tls.device_crl),
            ("WEIR_API_TLS_CERT", &mut tls.api_cert),
            ("WEIR_API_TLS_KEY", &mut tls.api_key),
        ] {
            if let Some(v) = var(name) {
                *field = Some(v.into());
            }
        }
        parse_env(&var, "WEIR_RENEW_DAYS", &mut self.tls.renew_days)?;
        let ingest = &mut self.ingest;
        parse_env(&var, "WEIR_MAX_BODY_BYTES", &mut ingest.max_body_bytes)?;
        parse_env(&var, "WEIR_MAX_BATCH_POINTS", &mut ingest.max_batch_points)?;
        parse_env(&var, "WEIR_DEVICE_RATE", &mut ingest.device_rate_per_second)?;
        parse_env(&var, "WEIR_DEVICE_BURST", &mut ingest.device_burst)?;
        parse_env(&var, "WEIR_DATABASE_POOL", &mut ingest.database_pool)?;
        parse_env(&var, "WEIR_MAX_INFLIGHT", &mut ingest.max_inflight_batches)?;
        parse_env(
            &var,
            "WEIR_BATCH_RETENTION_HOURS",
            &mut ingest.batch_retention_hours,
        )?;
        parse_env(
            &var,
            "WEIR_FUNCTION_DEADLINE_MS",
            &mut self.functions.deadline_ms,
        )?;
        parse_env(
            &var,
            "WEIR_FUNCTION_MEMORY_MB",
            &mut self.functions.memory_mb,
        )?;
        parse_env(
            &var,
            "WEIR_FUNCTION_INSTANCES",
            &mut self.functions.max_instances,
        )?;
        parse_env(
            &var,
            "WEIR_MAX_CLOCK_SKEW_MS",
            &mut self.validation.max_clock_skew_ms,
        )?;
        parse_env(
            &var,
            "WEIR_MAX_POINT_AGE_DAYS",
            &mut self.validation.max_point_age_days,
        )?;
        parse_env(
            &var,
            "WEIR_MAX_TEXT_LENGTH",
            &mut self.validation.max_text_length,
        )?;
        if let Some(v) = var("WEIR_QUERY_COMPONENT") {
            self.query.component = v.into();
        }
        parse_env(&var, "WEIR_QUERY_DEADLINE_MS", &mut self.query.deadline_ms)?;
        if let Some(v) = var("WEIR_QUERY_DATABASE_URL") {
            self.query.database_url = Some(v);
        }
        parse_env(
            &var,
            "WEIR_QUERY_DB_CONNECTIONS",
            &mut self.query.database_connections,
        )?;
        parse_env(
            &var,
            "WEIR_LATENESS_WINDOW_S",
            &mut self.query.lateness_window_s,
        )?;
        parse_env(
            &var,
            "WEIR_ANSWER_CACHE",
            &mut self.query.answer_cache_entries,
        )?;
        if let Some(v) = var("WEIR_QUERY_ALLOWED_HOSTS") {
            self.query.allowed_outbound_hosts = Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|entry| !entry.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        if let Some(v) = var("WEIR_ALERT_COMPONENT") {
            self.alerting.component = v.into();
        }
        if let Some(v) = var("WEIR_ALERT_RULES_DIR") {
            self.alerting.rules_dir = Some(v.into());
        }
        parse_env(
            &var,
            "WEIR_ALERT_STALE_CHECK_S",
            &mut self.alerting.stale_check_s,
        )?;
        parse_env(
            &var,
            "WEIR_WEBHOOK_TIMEOUT_MS",
            &mut self.alerting.webhook_timeout_ms,
        )?;
        parse_env(
            &var,
            "WEIR_WEBHOOK_RETRY_MIN_MS",
            &mut self.alerting.webhook_retry_min_ms,
        )?;
        parse_env(
            &var,
            "WEIR_WEBHOOK_RETRY_MAX_S",
            &mut self.alerting.webhook_retry_max_s,
        )?;
        if var("WEIR_ALERT_DEADLINE_MS").is_some() {
            let mut deadline = 0u64;
            parse_env(&var, "WEIR_ALERT_DEADLINE_MS", &mut deadline)?;
            self.alerting.deadline_ms = Some(deadline);
        }
        if let Some(v) = var("WEIR_UNKNOWN_KEYS") {
            self.validation.unknown_keys = match v.as_str() {
                "accept" => UnknownKeys::Accept,
                "reject" => UnknownKeys::Reject,
                other => bail!("WEIR_UNKNOWN_KEYS must be `accept` or `reject`, not `{other}`"),
            };
        }
        Ok(())
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
        if self.ingest.database_pool == 0 || self.ingest.max_inflight_batches == 0 {
            bail!("ingest.database_pool and ingest.max_inflight_batches must be at least 1");
        }
        if self.tls.api_cert.is_some() != self.tls.api_key.is_some() {
            bail!("tls.api_cert and tls.api_key (WEIR_API_TLS_CERT, WEIR_API_TLS_KEY) go together");
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
            crl: self
                .tls
                .device_crl
                .clone()
                .or_else(|| defaults.and_then(|d| d.crl)),
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

fn parse_env<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    field: &mut T,
) -> anyhow::Result<()>
where
    T::Err: std::fmt::Display,
{
    if let Some(text) = var(name) {
        *field = text
            .parse()
            .map_err(|error| anyhow::anyhow!("{name}=`{text}` is not valid: {error}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file() {
        let mut config: Config =
            toml::from_str("region = \"eu-north\"\n[functions]\ndeadline_ms = 50\n").unwrap();
        config
            .apply_env(|name| (name == "WEIR_FUNCTION_DEADLINE_MS").then(|| "75".to_string()))
            .unwrap();
        assert_eq!(config.region, "eu-north");
        assert_eq!(config.functions.deadline_ms, 75);
        assert_eq!(config.functions.memory_mb, 64);
    }

    #[test]
    fn query_grants_default_to_the_hosts_stores_without_passwords() {
        let mut config: Config = toml::from_str(
            "database_url = \"postgres://weir:secret@db:5432/weir\"\n\
             redis_url = \"redis://:pw@cache:6379/0\"\n\
             [query.variables]\nunit = \"kWh\"\n",
        )
        .unwrap();
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
        config.query.database_url = None;
        config
            .apply_env(|name| {
                (name == "WEIR_QUERY_ALLOWED_HOSTS").then(|| "redis://a:1, postgres://b".into())
            })
            .unwrap();
        assert_eq!(
            config.query_grants(vec![]).allowed_outbound_hosts,
            ["redis://a:1", "postgres://b"]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = toml::from_str::<Config>("regoin = \"x\"").unwrap_err();
        assert!(error.to_string().contains("regoin"), "{error}");
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let mut config = Config::default();
        let error = config
            .apply_env(|name| (name == "WEIR_FUNCTION_MEMORY_MB").then(|| "lots".to_string()))
            .unwrap_err();
        assert!(
            error.to_string().contains("WEIR_FUNCTION_MEMORY_MB"),
            "{error}"
        );
    }
}
