//! What every loaded function version has, whatever its world: its name, its identity (the
//! SHA-256 of the component) and whether its compiled code came from the artifact cache. The
//! function types (`ValidatorFunction`, `HttpFunction`, `AlerterFunction`) dereference to it.

use wasmtime::component::InstancePre;

use super::engine::PreparedComponent;
use super::error::LoadError;
use super::instance::InstanceState;

/// A loaded version's name and identity.
#[derive(Debug, Clone)]
pub struct FunctionVersion {
    pub(crate) name: String,
    digest: String,
    from_cache: bool,
}

impl FunctionVersion {
    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the component, hex: the version's identity.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether the compiled artifact came from the on-disk cache rather than Cranelift.
    pub fn was_cached(&self) -> bool {
        self.from_cache
    }
}

impl PreparedComponent {
    /// Checks the prepared component against `world` with the world's typed constructor
    /// (`typed`, e.g. `ValidatorPre::new`); a mismatch is [`LoadError::WorldMismatch`].
    pub(crate) fn typed<P>(
        self,
        name: &str,
        world: &'static str,
        typed: impl FnOnce(InstancePre<InstanceState>) -> wasmtime::Result<P>,
    ) -> Result<(FunctionVersion, P), LoadError> {
        let pre = typed(self.instance_pre).map_err(|error| LoadError::WorldMismatch {
            function: name.to_string(),
            world,
            reason: format!("{error:#}"),
        })?;
        let version = FunctionVersion {
            name: name.to_string(),
            digest: self.digest,
            from_cache: self.from_cache,
        };
        Ok((version, pre))
    }
}
