//! What a host starts with: its region's assigned versions and rule sets, else its files.

use super::*;

/// The validator a host starts with: its region's assigned version, else `validate.wasm` of the
/// functions directory (also when the assigned version does not load here).
pub async fn initial_validator(
    registry: &FunctionRegistry,
    metrics: &Metrics,
) -> anyhow::Result<ValidatorFunction> {
    let config = &registry.config;
    if let Some(CheckedFunction::Validator(validator)) =
        initial_assigned(registry, metrics, FunctionName::Validator).await
    {
        return Ok(validator);
    }
    let path = config.functions_dir.join(crate::registry::VALIDATOR_FILE);
    let validator = ValidatorFunction::load_file(&registry.engine, &path).with_context(|| {
        format!(
            "loading the default validator (build it with `cargo xtask components`, or set \
             WEIR_FUNCTIONS_DIR to the directory holding {})",
            crate::registry::VALIDATOR_FILE
        )
    })?;
    crate::self_check::self_check(&validator, config).await?;
    Ok(validator)
}

/// The query function a host starts with: its region's assigned version, else the configured
/// file if it exists; `None` (no query API) without either.
pub async fn initial_query(
    registry: &FunctionRegistry,
    metrics: &Metrics,
) -> anyhow::Result<Option<HttpFunction>> {
    let config = &registry.config;
    if let Some(CheckedFunction::Query(function)) =
        initial_assigned(registry, metrics, FunctionName::Query).await
    {
        return Ok(Some(function));
    }
    let path = config.query_component();
    if !path.exists() {
        tracing::info!(path = %path.display(), "no query component: /v1/ answers 404");
        return Ok(None);
    }
    let function = HttpFunction::load_file(&registry.engine, &path)
        .with_context(|| format!("loading the query component {}", path.display()))?
        .with_deadline(config.query_deadline());
    Ok(Some(function))
}

/// The alerter a host starts with: its region's assigned version, else the configured file if
/// it exists; `None` (no alerting) without either.
pub async fn initial_alerter(
    registry: &FunctionRegistry,
    metrics: &Metrics,
) -> anyhow::Result<Option<AlerterFunction>> {
    let config = &registry.config;
    if let Some(CheckedFunction::Alerter(function)) =
        initial_assigned(registry, metrics, FunctionName::Alerter).await
    {
        return Ok(Some(function));
    }
    let path = config.alert_component();
    if !path.exists() {
        return Ok(None);
    }
    let function = AlerterFunction::load_file(&registry.engine, &path)
        .with_context(|| format!("loading the alerter {}", path.display()))?
        .with_deadline(config.alert_deadline());
    Ok(Some(function))
}

/// The rule sets the region assigns, checked by `alerter`, that a host starts with. A set the
/// alerter refuses here is logged and counted, and the rules directory's file of its
/// organisation (if any) stays in force.
pub async fn initial_rule_sets(
    registry: &FunctionRegistry,
    alerter: Option<&AlerterFunction>,
    metrics: &Metrics,
) -> Vec<RuleSet> {
    let region = &registry.config.region;
    let versions = match registry.rule_set_versions(region).await {
        Ok(versions) => versions,
        Err(error) => {
            tracing::error!(%region, error = format!("{error:#}"), "cannot read the region's rule sets; starting without them");
            return Vec::new();
        }
    };
    let Some(alerter) = alerter else {
        if !versions.is_empty() {
            tracing::warn!(%region, "the region assigns alert rule sets, but this host has no alerter: alerting is off");
        }
        return Vec::new();
    };
    let mut sets = Vec::new();
    for (org, sha256) in versions {
        let checked =
            async { RuleSet::check(registry.rule_source(&org, &sha256).await?, alerter).await };
        match checked.await {
            Ok(set) => {
                metrics.function_registry_load("swapped");
                tracing::info!(%region, %org, version = %&sha256[..12], "running the registry's rule set");
                sets.push(set);
            }
            Err(error) => {
                metrics.function_registry_load("refused");
                tracing::error!(%region, %org, version = %sha256, error = format!("{error:#}"), "the registry's rule set is refused here; starting without it");
            }
        }
    }
    sets
}

/// The region's assigned version of `name`, if there is one and it loads (logged either way).
async fn initial_assigned(
    registry: &FunctionRegistry,
    metrics: &Metrics,
    name: FunctionName,
) -> Option<CheckedFunction> {
    let region = &registry.config.region;
    match registry.load_assigned(region, name).await {
        Ok(Some(function)) => {
            tracing::info!(%region, function = %name, digest = %function.digest(), "running the registry's version");
            metrics.function_registry_load("swapped");
            Some(function)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%region, function = %name, error = format!("{error:#}"), "the registry's version does not load here; starting with the file");
            metrics.function_registry_load("refused");
            None
        }
    }
}
