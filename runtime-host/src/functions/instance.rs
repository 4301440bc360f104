//! The state each function instance carries in its `Store`: a WASI context that grants nothing
//! (no files, no network, no environment), the memory limiter, and a small buffer that catches
//! what the guest writes to stderr (a Rust panic message) so errors can quote it.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::MemoryCap;

/// How much of a guest's stderr is kept for error messages.
const STDERR_CAPTURE_BYTES: usize = 4096;

/// Store data of one function instance.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    stderr: MemoryOutputPipe,
}

impl InstanceState {
    pub(crate) fn new(memory_limit_bytes: usize) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_limit_bytes),
            stderr,
        }
    }

    /// What the guest wrote to stderr, trimmed; empty when it wrote nothing.
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
