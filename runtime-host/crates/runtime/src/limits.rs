//! The sandbox limits every function call runs under, and the memory limiter that enforces
//! the memory cap and remembers that it did (so a failed call can say why it failed).

use std::time::Duration;

/// Per-call limits shared by every function of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget for one call, instantiation included.
    pub deadline: Duration,
    /// Most linear memory one instance may hold, in bytes.
    pub memory_bytes: usize,
    /// Most instances alive at once; further calls wait for a free one. A quarter (at least
    /// one) is reserved for HTTP (query) functions, the rest for validators.
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(200),
            memory_bytes: 64 << 20,
            max_instances: 32,
        }
    }
}

/// Refuses memory growth past the cap and records that it did.
pub(crate) struct MemoryCap {
    limit_bytes: usize,
    exceeded: bool,
}

impl MemoryCap {
    pub(crate) fn new(limit_bytes: usize) -> Self {
        MemoryCap {
            limit_bytes,
            exceeded: false,
        }
    }

    /// Whether the instance asked for more memory than its cap.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }
}

/// Tables only hold function references; this bound stops a runaway `table.grow` without
/// ever limiting a real program.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
