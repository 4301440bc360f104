//! `weir serve`: brings the host up, keeps it running, and reloads functions on SIGHUP.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::functions::validator::{DataType, KeyMetadata, Point, Value, Verdict};
use crate::functions::{FunctionEngine, FunctionSlot, ValidatorFunction};

/// File name of the default validator inside the functions directory.
pub const VALIDATOR_FILE: &str = "validate.wasm";

/// Runs the host until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let engine = FunctionEngine::new(config.limits(), Some(&config.artifact_dir()))?;
    let validator_path = config.functions_dir.join(VALIDATOR_FILE);
    let validator = ValidatorFunction::load_file(&engine, &validator_path).with_context(|| {
        format!(
            "loading the default validator (build it with `cargo xtask components`, or set \
             WEIR_FUNCTIONS_DIR to the directory holding {VALIDATOR_FILE})"
        )
    })?;
    let validator = Arc::new(FunctionSlot::new(validator));
    self_check(&validator.current(), &config).await?;
    tracing::info!(
        region = %config.region,
        validator = %validator.current().digest(),
        "weir is up with the validator loaded; SIGHUP reloads functions, Ctrl-C stops"
    );

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => reload_validator(&engine, &validator, &config).await,
        }
    }
    tracing::info!("weir stopped");
    Ok(())
}

/// Loads the validator file again and swaps it in if it loads and passes the self-check.
async fn reload_validator(
    engine: &FunctionEngine,
    slot: &FunctionSlot<ValidatorFunction>,
    config: &Config,
) {
    let path = config.functions_dir.join(VALIDATOR_FILE);
    let candidate = match ValidatorFunction::load_file(engine, &path) {
        Ok(candidate) => candidate,
        Err(error) => {
            tracing::error!(code = error.code(), %error, "new validator refused; the old one keeps serving");
            return;
        }
    };
    if let Err(error) = self_check(&candidate, config).await {
        tracing::error!(%error, "new validator failed its self-check; the old one keeps serving");
        return;
    }
    let old = slot.replace(candidate);
    tracing::info!(old = %old.digest(), new = %slot.current().digest(), "validator swapped");
}

/// Runs one known-good point through a validator, so a broken one never starts serving.
async fn self_check(validator: &ValidatorFunction, config: &Config) -> anyhow::Result<()> {
    let now = now_ms();
    let probe = Point {
        key: "selfcheck.probe".into(),
        value: Value::Float(1.5),
        ts: now,
    };
    let metadata = KeyMetadata {
        key: probe.key.clone(),
        data_type: DataType::Float64,
        min: None,
        max: None,
        value_map: Vec::new(),
    };
    let verdicts = validator
        .validate(
            std::slice::from_ref(&probe),
            &[metadata],
            config.policy(now),
        )
        .await
        .with_context(|| format!("self-check of validator {}", validator.name()))?;
    match &verdicts[0] {
        Verdict::Accepted(_) => Ok(()),
        Verdict::Rejected(rejection) => anyhow::bail!(
            "self-check of validator {}: a plain f64 reading was rejected ({})",
            validator.name(),
            rejection.message
        ),
    }
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
