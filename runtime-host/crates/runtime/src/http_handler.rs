//! HTTP functions: WASI 0.2 proxy components, which export `wasi:http/incoming-handler@0.2.x`
//! (what spin-sdk 5's `#[http_component]` builds). The query API runs its handlers this way.
//!
//! Such a component is linked with the WASI interfaces a Rust guest imports through std (stdio,
//! environment, exit, clocks, random, streams; no files, no sockets), `wasi:http/types`, and the
//! Spin capabilities of [`crate::capabilities`]. Not `wasi:http/outgoing-handler`: a component
//! that wants outbound HTTP is refused at load. Each request runs in a fresh instance from the
//! same [`FunctionEngine`] as the validators (same instance slots, memory cap and epoch
//! deadline), and its response body is collected before the deadline too, so a handler that
//! traps, loops or streams for ever fails alone, with a [`CallError`].

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HOST, HeaderValue};
use tokio::task::JoinHandle;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::p2::bindings::{cli, random};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttp, WasiHttpView};

use super::engine::FunctionEngine;
use super::error::{CallError, LoadError};
use super::instance::InstanceState;
use super::version::FunctionVersion;
use crate::capabilities::{self, Granted};

/// A buffered HTTP response: what a call of an HTTP function answers with.
pub type Response = hyper::Response<http_body_util::Full<bytes::Bytes>>;

/// The world an HTTP function must export.
pub const WORLD: &str = "wasi:http/proxy@0.2";

/// The largest response body a handler may produce.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Time past the deadline before the host stops waiting on a handler that sits in a host call
/// (the epoch deadline interrupts only guest code).
const DEADLINE_GRACE: Duration = Duration::from_millis(50);

/// Links what HTTP functions may import into `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    type T = InstanceState;
    // `wasi:io`, clocks, `random`, stdin/stdout/stderr: the `wasi:http/proxy` world's WASI.
    wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(linker)?;
    // What Rust's std imports besides: environment, exit, terminals, HashMap seeds.
    let l = &mut *linker;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<T, WasiHttp>(
        l,
        &options.into(),
        T::http,
    )?;
    capabilities::add_to_linker(linker)
}

/// One loaded version of an HTTP function, ready to serve requests concurrently.
pub struct HttpFunction {
    version: FunctionVersion,
    deadline: Duration,
    engine: FunctionEngine,
    pre: ProxyPre<InstanceState>,
}

impl std::ops::Deref for HttpFunction {
    type Target = FunctionVersion;

    fn deref(&self) -> &FunctionVersion {
        &self.version
    }
}

impl HttpFunction {
    /// Compiles and links `bytes` as the HTTP function `name`, checking that it exports the
    /// WASI 0.2 HTTP handler and imports nothing the host does not provide. Calls get the
    /// engine's deadline until [`with_deadline`](Self::with_deadline) says otherwise.
    pub fn load(engine: &FunctionEngine, name: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        let (version, pre) = engine
            .prepare_http(name, bytes)?
            .typed(name, WORLD, ProxyPre::new)?;
        Ok(HttpFunction {
            version,
            deadline: engine.limits().deadline,
            engine: engine.clone(),
            pre,
        })
    }

    /// Reads and loads a component file; the function is named after the file.
    pub fn load_file(engine: &FunctionEngine, path: &Path) -> Result<Self, LoadError> {
        let (name, bytes) = super::engine::read_component_file(path, "http")?;
        Self::load(engine, &name, &bytes)
    }

    /// The same function with calls limited to `deadline` (instantiation, handling and the
    /// whole response body).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The deadline of one call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Runs the handler on `request` in a fresh instance with the capabilities of `granted`,
    /// and returns its whole response. The request needs an authority (URI or `Host`); without
    /// one `localhost` is assumed.
    pub async fn handle<B>(
        &self,
        mut request: hyper::Request<B>,
        granted: &Granted,
    ) -> Result<Response, CallError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let authority_ok = request.uri().authority().is_some()
            || request
                .headers()
                .get(HOST)
                .is_some_and(|h| h.to_str().is_ok());
        if !authority_ok {
            request
                .headers_mut()
                .insert(HOST, HeaderValue::from_static("localhost"));
        }
        let request = request.map(|body| {
            body.map_err(|error| wasmtime_wasi_http::Error::InternalError(Some(error.to_string())))
        });

        let mut call = self
            .engine
            .begin_http_call(self.deadline, granted.instance_state())
            .await?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let resources = {
            let mut http = call.store.data_mut().http();
            http.new_incoming_request(Scheme::Http, request)
                .and_then(|request| Ok((request, http.new_response_outparam(sender)?)))
        };
        let (request, outparam) = resources.map_err(|error| CallError::Trapped {
            function: self.version.name.clone(),
            message: format!("cannot hand the request over: {error:#}"),
        })?;

        // The guest may go on writing the body after it sent the head: it runs on a task of its
        // own while this one reads the response.
        let pre = self.pre.clone();
        let name = self.version.name.clone();
        let task = tokio::spawn(async move {
            let outcome = async {
                let proxy = pre.instantiate_async(&mut call.store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut call.store, request, outparam)
                    .await
            }
            .await;
            call.finish(&name, outcome)
        });
        let abort = task.abort_handle();
        match tokio::time::timeout(self.deadline + DEADLINE_GRACE, self.respond(receiver, task))
            .await
        {
            Ok(result) => result,
            Err(_) => {
                abort.abort();
                Err(CallError::DeadlineExceeded {
                    function: self.version.name.clone(),
                    deadline: self.deadline,
                })
            }
        }
    }

    /// Waits for the response head, then collects the body.
    async fn respond(
        &self,
        head: tokio::sync::oneshot::Receiver<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>,
        task: JoinHandle<Result<(), CallError>>,
    ) -> Result<Response, CallError> {
        let response = match head.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => {
                return Err(self.invalid(format!("it answered with error code {code:?}")));
            }
            // The outparam was dropped unset: the call ended, and its outcome says why.
            Err(_) => {
                self.outcome(task).await?;
                return Err(self.invalid("it returned without setting a response".into()));
            }
        };
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                task.abort();
                return Err(self.invalid(format!(
                    "its response body is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            Err(error) => {
                // Usually the guest trapped mid-body: its outcome names the reason.
                self.outcome(task).await?;
                return Err(self.invalid(format!("its response body failed: {error}")));
            }
        };
        // A failure after the whole response was written is only logged.
        let name = self.version.name.clone();
        tokio::spawn(async move {
            if let Ok(Err(error)) = task.await {
                tracing::warn!(function = %name, %error, "HTTP function failed after responding");
            }
        });
        Ok(hyper::Response::from_parts(parts, Full::new(body)))
    }

    async fn outcome(&self, task: JoinHandle<Result<(), CallError>>) -> Result<(), CallError> {
        task.await.unwrap_or_else(|error| {
            Err(CallError::Trapped {
                function: self.version.name.clone(),
                message: format!("its task ended abnormally: {error}"),
            })
        })
    }

    fn invalid(&self, message: String) -> CallError {
        CallError::InvalidAnswer {
            function: self.version.name.clone(),
            message,
        }
    }
}
