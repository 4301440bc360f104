//! On-disk cache of compiled components, so a restart does not pay Cranelift again.
//!
//! An artifact is keyed by the component's SHA-256 and by the engine's compatibility hash
//! (wasmtime version, target, and the settings that change generated code), so an upgraded or
//! reconfigured engine never loads a stale artifact. The directory must be private to Weir:
//! deserialising an artifact trusts its contents.
//!
//! The one place in Weir allowed `unsafe` code (`Component::deserialize`); the workspace denies
//! it everywhere else.
#![allow(unsafe_code)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a component came from the cache or had to be compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheOutcome {
    Hit,
    Compiled,
}

/// A directory of precompiled component artifacts for one engine configuration.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache directory for `engine`.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn path_for(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Returns the compiled component for `bytes` (whose SHA-256 is `digest`), from the cache
    /// when present and valid, compiling and storing it otherwise.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.path_for(digest);
        // Read into memory rather than `deserialize_file`'s mmap: a mapped file truncated by
        // another process (an operator clearing the cache) would kill the host with SIGBUS.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: the cache directory is private to Weir and every file in it was written
            // by `precompile_component` of an engine with the same compatibility hash; wasmtime
            // still checks the header and refuses artifacts of another engine configuration.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    error = %error,
                    "discarding unusable compiled artifact"
                ),
            }
        }
        let artifact = engine.precompile_component(bytes)?;
        if let Err(error) = write_atomically(&path, &artifact) {
            tracing::warn!(path = %path.display(), %error, "cannot cache compiled artifact");
        }
        // SAFETY: `artifact` was produced by `precompile_component` of this very engine.
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        Ok((component, CacheOutcome::Compiled))
    }
}

/// Writes via a temporary file and a rename so a reader never sees half an artifact, even
/// with several hosts sharing the directory.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
