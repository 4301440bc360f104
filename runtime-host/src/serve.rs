//! `weir serve`: brings the host up, keeps it running, and reloads functions on SIGHUP.

use tokio::signal::unix::{SignalKind, signal};
use weir_config::Config;

use crate::host::Host;

/// Runs the host until SIGINT or SIGTERM; SIGHUP reloads the validator, the query function and
/// the alert rules.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let host = Host::start(config).await?;
    tracing::info!(
        device = %host.device_addr(),
        api = %host.api_addr(),
        validator = %host.validator().current().digest(),
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
