//! Validator functions: components of the `weir:functions/validator` world, which judge every
//! point of an uploaded batch.

use std::path::Path;

use super::engine::FunctionEngine;
use super::error::{CallError, LoadError};
use super::instance::InstanceState;
use super::version::FunctionVersion;

/// Also the home of the `weir:functions/types` types every world shares (see `alerter`).
pub(super) mod bindings {
    wasmtime::component::bindgen!({
        world: "validator",
        path: "../../../wit",
        exports: { default: async },
        additional_derives: [PartialEq],
    });
}

pub use bindings::exports::weir::functions::validate::{
    Policy, Reason, Rejection, UnknownKeyPolicy, Verdict,
};
pub use bindings::weir::functions::types::{DataType, KeyMetadata, Point, Value};

/// The WIT world a validator must implement.
pub const WORLD: &str = "weir:functions/validator@0.1.0";

/// One loaded version of a validator, ready to be called concurrently.
pub struct ValidatorFunction {
    version: FunctionVersion,
    engine: FunctionEngine,
    pre: bindings::ValidatorPre<InstanceState>,
}

impl std::ops::Deref for ValidatorFunction {
    type Target = FunctionVersion;

    fn deref(&self) -> &FunctionVersion {
        &self.version
    }
}

impl ValidatorFunction {
    /// Compiles and links `bytes` as the validator `name`, checking it against the world.
    pub fn load(engine: &FunctionEngine, name: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        let (version, pre) =
            engine
                .prepare(name, bytes)?
                .typed(name, WORLD, bindings::ValidatorPre::new)?;
        Ok(ValidatorFunction {
            version,
            engine: engine.clone(),
            pre,
        })
    }

    /// Reads and loads a component file; the validator is named after the file.
    pub fn load_file(engine: &FunctionEngine, path: &Path) -> Result<Self, LoadError> {
        let (name, bytes) = super::engine::read_component_file(path, "validator")?;
        Self::load(engine, &name, &bytes)
    }

    /// Judges a batch in one call of a fresh instance; one verdict per point, in order.
    pub async fn validate(
        &self,
        points: &[Point],
        metadata: &[KeyMetadata],
        policy: Policy,
    ) -> Result<Vec<Verdict>, CallError> {
        let mut call = self.engine.begin_call().await?;
        let outcome = async {
            let instance = self.pre.instantiate_async(&mut call.store).await?;
            instance
                .weir_functions_validate()
                .call_validate(&mut call.store, points, metadata, policy)
                .await
        }
        .await;
        let verdicts = call.finish(&self.version.name, outcome)?;
        if verdicts.len() != points.len() {
            return Err(CallError::InvalidAnswer {
                function: self.version.name.clone(),
                message: format!("{} verdicts for {} points", verdicts.len(), points.len()),
            });
        }
        Ok(verdicts)
    }
}

impl Reason {
    /// Stable snake_case code of the reason, as the device API reports it.
    pub fn code(&self) -> &'static str {
        use weir_contract::reasons::Reason as Contract;
        match self {
            Reason::InvalidKey => Contract::InvalidKey,
            Reason::ReservedKey => Contract::ReservedKey,
            Reason::UnknownKey => Contract::UnknownKey,
            Reason::TypeMismatch => Contract::TypeMismatch,
            Reason::OutOfRange => Contract::OutOfRange,
            Reason::NotFinite => Contract::NotFinite,
            Reason::TextTooLong => Contract::TextTooLong,
            Reason::UnknownEnumValue => Contract::UnknownEnumValue,
            Reason::FutureTimestamp => Contract::FutureTimestamp,
            Reason::AncientTimestamp => Contract::AncientTimestamp,
        }
        .code()
    }
}
