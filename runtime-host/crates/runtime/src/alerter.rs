//! Alerter functions: components of the `weir:functions/alerter` world, which check alert rule
//! files and evaluate a device's accepted points (or the passing of time) against them.
//!
//! Calls run on the ingest path's share of the instance pool, each in a fresh instance under
//! the memory cap and a deadline of its own (by default the engine's).

use std::path::Path;
use std::time::Duration;

use wasmtime::Store;

use super::engine::FunctionEngine;
use super::error::{CallError, LoadError};
use super::instance::InstanceState;
use super::version::FunctionVersion;

mod bindings {
    wasmtime::component::bindgen!({
        world: "alerter",
        path: "../../../wit",
        exports: { default: async },
        additional_derives: [PartialEq],
        // The shared types are the validator world's, so accepted points need no conversion.
        with: { "weir:functions/types": crate::validator::bindings::weir::functions::types },
    });
}

pub use super::validator::{Point, Value};
pub use bindings::exports::weir::functions::alert::{
    Evaluation, Event, EventKind, Rule, RuleError, RuleState, RuleSummary, Severity, Trigger,
};

/// The WIT world an alerter must implement.
pub const WORLD: &str = "weir:functions/alerter@0.1.0";

/// One loaded version of an alerter, ready to be called concurrently.
pub struct AlerterFunction {
    version: FunctionVersion,
    engine: FunctionEngine,
    deadline: Duration,
    pre: bindings::AlerterPre<InstanceState>,
}

impl std::ops::Deref for AlerterFunction {
    type Target = FunctionVersion;

    fn deref(&self) -> &FunctionVersion {
        &self.version
    }
}

impl AlerterFunction {
    /// Compiles and links `bytes` as the alerter `name`, checking it against the world.
    pub fn load(engine: &FunctionEngine, name: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        let (version, pre) =
            engine
                .prepare(name, bytes)?
                .typed(name, WORLD, bindings::AlerterPre::new)?;
        Ok(AlerterFunction {
            version,
            engine: engine.clone(),
            deadline: engine.limits().deadline,
            pre,
        })
    }

    /// Reads and loads a component file; the alerter is named after the file.
    pub fn load_file(engine: &FunctionEngine, path: &Path) -> Result<Self, LoadError> {
        let (name, bytes) = super::engine::read_component_file(path, "alerter")?;
        Self::load(engine, &name, &bytes)
    }

    /// How long one call may take, instantiation included.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The same function with calls limited to `deadline`, instantiation included.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Parses and checks a rule file; `Err(Ok(message))` names the rule and field at fault.
    pub async fn check_rules(
        &self,
        rules: &str,
    ) -> Result<Result<Vec<RuleSummary>, String>, CallError> {
        self.call(async |alert, store| alert.call_check_rules(store, rules).await)
            .await
    }

    /// Evaluates `device`'s accepted points against `rules` and their stored `states`.
    pub async fn evaluate(
        &self,
        device: &str,
        points: &[Point],
        rules: &[Rule],
        states: &[RuleState],
    ) -> Result<Evaluation, CallError> {
        self.call(async |alert, store| {
            alert
                .call_evaluate(store, device, points, rules, states)
                .await
        })
        .await
    }

    /// The staleness check: raises a no-data alert for every key silent for its rule's
    /// `stale_after` at `now` (unix milliseconds).
    pub async fn evaluate_stale(
        &self,
        device: &str,
        now: i64,
        rules: &[Rule],
        states: &[RuleState],
    ) -> Result<Evaluation, CallError> {
        self.call(async |alert, store| {
            alert
                .call_evaluate_stale(store, device, now, rules, states)
                .await
        })
        .await
    }

    /// A manual clear: the stored `state` with the active alert of `key` for `trigger` ended;
    /// `Err(Ok(message))` when the component cannot read the state.
    pub async fn manual_clear(
        &self,
        state: &[u8],
        key: &str,
        trigger: Trigger,
    ) -> Result<Result<Vec<u8>, String>, CallError> {
        self.call(async |alert, store| alert.call_manual_clear(store, state, key, trigger).await)
            .await
    }

    /// Runs `export` on a fresh instance, within the deadline and the ingest budget.
    async fn call<R>(
        &self,
        export: impl AsyncFnOnce(&AlertGuest, &mut Store<InstanceState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let mut call = self.engine.begin_call_within(self.deadline).await?;
        let outcome = async {
            let instance = self.pre.instantiate_async(&mut call.store).await?;
            export(instance.weir_functions_alert(), &mut call.store).await
        }
        .await;
        call.finish(&self.version.name, outcome)
    }
}

/// The guest's `alert` exports.
type AlertGuest = bindings::exports::weir::functions::alert::Guest;

impl Severity {
    /// The severity's name, as events store and show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
        }
    }
}

impl Trigger {
    /// The trigger's name, as events store and show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Condition => "condition",
            Trigger::NoData => "no_data",
        }
    }

    /// The trigger named `name` ([`Trigger::as_str`]).
    pub fn from_name(name: &str) -> Option<Trigger> {
        match name {
            "condition" => Some(Trigger::Condition),
            "no_data" => Some(Trigger::NoData),
            _ => None,
        }
    }
}
