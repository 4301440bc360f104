//! `weir serve`: brings the host up, keeps it running, and reloads functions on SIGHUP; also
//! the validator self-check every new version passes before it serves.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::functions::ValidatorFunction;
use crate::functions::validator::{DataType, KeyMetadata, Point, Value, Verdict};
use crate::host::Host;

/// Runs the host until SIGINT or SIGTERM; SIGHUP reloads the validator, the query function and
/// the alert rules.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let host = Host::start(config).await?;
    tracing::info!(
        device = %host.device_addr(),
        api = %host.api_addr(),
        validator = %host.ingest().validator.current().digest(),
        "weir is up with the validator loaded; SIGHUP reloads functions, Ctrl-C stops"
    );
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => {
                if let Err(error) = host.reload_validator().await {
                    tracing::error!(error = format!("{error:#}"), "new validator refused; the old one keeps serving");
                }
                if let Err(error) = host.reload_query().await {
                    tracing::error!(error = format!("{error:#}"), "new query function refused; the old one keeps serving");
                }
                if let Err(error) = host.reload_alert_rules().await {
                    tracing::error!(error = format!("{error:#}"), "alert rules not reloaded; the old ones stay");
                }
            }
        }
    }
    host.shutdown().await;
    tracing::info!("weir stopped");
    Ok(())
}

/// Runs one known-good point through a validator, so a broken one never starts serving.
pub async fn self_check(validator: &ValidatorFunction, config: &Config) -> anyhow::Result<()> {
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
