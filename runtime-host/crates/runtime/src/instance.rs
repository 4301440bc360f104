//! The state each function instance carries in its `Store`: a WASI context that grants nothing
//! (no files, no network, no environment), the memory limiter, a small buffer that catches what
//! the guest writes to stderr (a Rust panic message) so errors can quote it, and, for HTTP
//! functions, the `wasi:http` context and the state of the Spin capabilities it was granted.
//! A validator's instance gets the same type with no capability granted.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::limits::MemoryCap;
use crate::capabilities::{self, CapabilityState, CapabilityView};

/// How much of a guest's stderr is kept for error messages.
const STDERR_CAPTURE_BYTES: usize = 4096;

/// Store data of one function instance.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    stderr: MemoryOutputPipe,
    http: WasiHttpCtx,
    http_hooks: NoOutgoingHttp,
    capabilities: CapabilityState,
}

impl InstanceState {
    /// State with the per-instance side of a component's granted capabilities (none, the
    /// default, for validators).
    pub(crate) fn with_capabilities(
        memory_limit_bytes: usize,
        capabilities: CapabilityState,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_limit_bytes),
            stderr,
            http: WasiHttpCtx::new(),
            http_hooks: NoOutgoingHttp,
            capabilities,
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

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl CapabilityView for InstanceState {
    fn postgres(&mut self) -> capabilities::postgres::PostgresView<'_> {
        capabilities::postgres::PostgresView {
            state: &mut self.capabilities.postgres,
            table: &mut self.table,
        }
    }

    fn redis(&mut self) -> capabilities::redis::RedisView<'_> {
        capabilities::redis::RedisView {
            state: &mut self.capabilities.redis,
            table: &mut self.table,
        }
    }

    fn variables(&mut self) -> &mut capabilities::variables::VariablesState {
        &mut self.capabilities.variables
    }
}

/// `wasi:http` hooks that refuse every outgoing request. HTTP functions are not linked with
/// `wasi:http/outgoing-handler` at all (a component importing it is refused at load); this is
/// the second lock on the same door.
struct NoOutgoingHttp;

impl WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    hyper::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
