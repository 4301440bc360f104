//! The validator self-check: one known-good point through a new validator version before it may
//! serve, so a broken validator never reaches a device's batch.

use anyhow::Context as _;
use weir_config::Config;
use weir_runtime::ValidatorFunction;
use weir_runtime::validator::{DataType, KeyMetadata, Point, Value, Verdict};

use crate::clock::now_ms;

/// Runs one plain `f64` point through `validator`; fails if it is not accepted.
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
