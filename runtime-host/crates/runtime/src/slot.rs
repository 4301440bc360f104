//! Atomic hot-swap of a loaded function version.
//!
//! A caller takes the current version (an `Arc`) once per call and finishes on it, whatever
//! happens to the slot meanwhile. A new version is only ever put in fully loaded (compiled,
//! linked, checked against its world), so a version that fails to load never replaces one that
//! works.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// Holds the version of a function that new calls use.
pub struct FunctionSlot<F> {
    current: ArcSwap<F>,
}

impl<F> FunctionSlot<F> {
    /// A slot serving `function`.
    pub fn new(function: F) -> Self {
        FunctionSlot {
            current: ArcSwap::from_pointee(function),
        }
    }

    /// The version new calls should run on; calls keep it until they finish.
    pub fn current(&self) -> Arc<F> {
        self.current.load_full()
    }

    /// Makes `function` the version for new calls and returns the one it replaced. Calls
    /// already running finish on the old version.
    pub fn replace(&self, function: F) -> Arc<F> {
        self.current.swap(Arc::new(function))
    }

    /// Loads a new version with `load` and swaps it in only if loading succeeded; on error the
    /// running version stays.
    pub fn replace_with<E>(&self, load: impl FnOnce() -> Result<F, E>) -> Result<Arc<F>, E> {
        let function = load()?;
        Ok(self.replace(function))
    }
}
