//! Errors of the function runtime, each with a stable code for API answers and metrics.

use std::time::Duration;

/// Why a component could not be loaded; the running version, if any, stays.
// Fields are named by what they hold and shown by each variant's message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a component this engine can compile.
    #[error("{function}: not a valid WASM component: {reason}")]
    Invalid { function: String, reason: String },
    /// The component compiled but its imports or exports do not match the world.
    #[error("{function} does not match the `{world}` world: {reason}")]
    WorldMismatch {
        function: String,
        world: &'static str,
        reason: String,
    },
    /// A signing key is configured and the component is not signed with it.
    #[error("{function} is refused: {reason}")]
    Unsigned { function: String, reason: String },
    /// The component file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

impl LoadError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Invalid { .. } => "function_invalid",
            LoadError::WorldMismatch { .. } => "function_world_mismatch",
            LoadError::Unsigned { .. } => "function_signature_refused",
            LoadError::Read { .. } => "function_unreadable",
        }
    }
}

/// Why one call of a function failed. The host and every other call carry on.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error("{function} ran past its {deadline:?} deadline and was stopped")]
    DeadlineExceeded {
        function: String,
        deadline: Duration,
    },
    /// The call asked for more memory than its cap.
    #[error("{function} needed more than its {limit_bytes}-byte memory limit and was stopped")]
    MemoryExhausted {
        function: String,
        limit_bytes: usize,
    },
    /// The guest trapped (a panic, an unreachable, a bad memory access...).
    #[error("{function} crashed: {message}")]
    Trapped { function: String, message: String },
    /// The guest returned an answer that breaks the world's contract.
    #[error("{function} gave an invalid answer: {message}")]
    InvalidAnswer { function: String, message: String },
    /// Every instance slot stayed busy for a whole deadline.
    #[error("all {capacity} function instances stayed busy for {waited:?}")]
    Busy { capacity: u32, waited: Duration },
}

impl CallError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::DeadlineExceeded { .. } => "function_deadline_exceeded",
            CallError::MemoryExhausted { .. } => "function_memory_exhausted",
            CallError::Trapped { .. } => "function_trapped",
            CallError::InvalidAnswer { .. } => "function_invalid_answer",
            CallError::Busy { .. } => "function_busy",
        }
    }
}
