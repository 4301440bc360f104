//! The query API end to end: readings sent through the real device submit path, then read back
//! with `GET /v1/devices/{device}/latest` from the query component (`target/functions/query.wasm`,
//! a spin-sdk 5 HTTP component) running on the host's Spin capabilities. Also what may not
//! happen: no token, another organisation's token, a client naming its own organisation, a
//! component that is not an HTTP handler, a handler that traps, loops or hogs memory.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Method, StatusCode};
use serde_json::{Value as Json, json};
use weir_runtime::capabilities::{ComponentGrants, HostCapabilities};
use weir_runtime::{CallError, FunctionEngine, HttpFunction, Limits, LoadError};

use crate::ingest::harness::{Device, TestHost, batch, now_ms, ok, point};
use crate::support::{HOSTILE, component_bytes, component_path};

/// The query component as `cargo xtask components` installs it.
const QUERY: &str = "query.wasm";

/// Sends readings of four types (one key twice); returns the timestamp of the newest.
async fn send_readings(meter: &mut Device) -> i64 {
    let ts = now_ms() - 1000;
    let body = batch(
        "query-readings",
        vec![
            point("power", 1234.5, ts - 10),
            point("power", 1500.25, ts),
            point("energy", 42, ts),
            point("door.open", true, ts),
            point("status", "running | ok", ts),
        ],
    );
    assert_eq!(ok(&meter.submit(&body).await)["accepted"], json!(5));
    ts
}

/// The latest values the component should answer after [`send_readings`].
fn expected_latest(device: &str, ts: i64) -> Json {
    json!({
        "device": device,
        "keys": {
            "power": {"value": 1500.25, "ts": ts},
            "energy": {"value": 42, "ts": ts},
            "door.open": {"value": true, "ts": ts},
            "status": {"value": "running | ok", "ts": ts},
        }
    })
}

/// `GET path` with `Authorization: Bearer <token>` and `extra` headers: status and JSON body.
async fn get(
    host: &TestHost,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Json) {
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("authorization", authorization.as_str())];
    headers.extend_from_slice(extra);
    let (status, body) = host.api_request(Method::GET, path, &headers).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, json)
}

fn assert_error(answer: &(StatusCode, Json), status: StatusCode, code: &str) {
    assert_eq!(
        (answer.0, answer.1["error"]["code"].as_str()),
        (status, Some(code)),
        "{}",
        answer.1
    );
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_values_sent_by_a_device_are_read_back_with_a_token() {
    let host = TestHost::start().await;
    assert!(
        host.host().query().is_some(),
        "the query component is loaded"
    );
    let mut meter = host.device("meter-q1", "acme").await;
    let ts = send_readings(&mut meter).await;
    let token = host.api_token("acme").await;

    let answer = get(&host, "/v1/devices/meter-q1/latest", &token, &[]).await;
    assert_eq!(answer, (StatusCode::OK, expected_latest("meter-q1", ts)));
    assert_eq!(
        host.latest_in_redis(meter.id()).await.len(),
        4,
        "this answer came from the Redis cache"
    );
    // The health endpoints stay the host's own.
    assert_eq!(host.api_get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_valid_token_the_query_api_answers_401() {
    let host = TestHost::start().await;
    let (status, body) = host.api_get("/v1/devices/meter-q2/latest").await;
    assert_error(
        &(status, serde_json::from_str(&body).unwrap()),
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let forged = format!("weir_{}", "0".repeat(64));
    let answer = get(
        &host,
        "/v1/devices/meter-q2/latest",
        &forged,
        &[("weir-org", "acme")],
    )
    .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_organisations_device_is_not_found_like_a_missing_one() {
    let host = TestHost::start().await;
    let mut meter = host.device("meter-q3", "acme").await;
    send_readings(&mut meter).await;
    let acme = host.api_token("acme").await;
    let globex = host.api_token("globex").await;

    let foreign = get(&host, "/v1/devices/meter-q3/latest", &globex, &[]).await;
    assert_error(&foreign, StatusCode::NOT_FOUND, "not_found");
    // A client cannot pick its organisation: the host replaces any `weir-org` it sends.
    let claimed = get(
        &host,
        "/v1/devices/meter-q3/latest",
        &globex,
        &[("weir-org", "acme")],
    )
    .await;
    assert_eq!(claimed, foreign);
    let missing = get(&host, "/v1/devices/meter-q3x/latest", &acme, &[]).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    // Same answer but for the name: nothing tells a foreign device from a missing one.
    assert_eq!(
        serde_json::to_string(&foreign.1).unwrap(),
        serde_json::to_string(&missing.1)
            .unwrap()
            .replace("meter-q3x", "meter-q3")
    );
    let (status, _) = get(&host, "/v1/nothing-here", &acme, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_stopped_latest_values_come_from_postgres() {
    let mut host = TestHost::start().await;
    let mut meter = host.device("meter-q4", "acme").await;
    let ts = send_readings(&mut meter).await;
    let token = host.api_token("acme").await;

    host.stop_redis();
    let answer = get(&host, "/v1/devices/meter-q4/latest", &token, &[]).await;
    assert_eq!(answer, (StatusCode::OK, expected_latest("meter-q4", ts)));
    let missing = get(&host, "/v1/devices/meter-q4x/latest", &token, &[]).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");

    // Back but empty (before the repair task refills it): PostgreSQL still answers.
    host.start_redis_again();
    let answer = get(&host, "/v1/devices/meter-q4/latest", &token, &[]).await;
    assert_eq!(answer, (StatusCode::OK, expected_latest("meter-q4", ts)));
}

/// What a Spin host provides to a spin-sdk 5 HTTP component (Spin's `platform` world).
fn provided_by_spin(name: &str) -> bool {
    const SPIN_ONLY: &[&str] = &[
        "spin:postgres/postgres@4.0.0",
        "fermyon:spin/redis@2.0.0",
        "fermyon:spin/variables@2.0.0",
    ];
    let wasi = [
        "wasi:io/",
        "wasi:cli/",
        "wasi:clocks/",
        "wasi:random/",
        "wasi:http/types@",
    ];
    SPIN_ONLY.contains(&name)
        || wasi
            .iter()
            .any(|prefix| name.starts_with(prefix) && name.contains("@0.2."))
}

#[test]
fn the_query_component_imports_only_what_spin_provides() {
    let engine = wasmtime::Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
    let component = wasmtime::component::Component::new(&engine, component_bytes(QUERY)).unwrap();
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports: Vec<String> = ty
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let foreign: Vec<&String> = imports.iter().filter(|n| !provided_by_spin(n)).collect();
    assert!(
        foreign.is_empty(),
        "imports Spin does not provide: {foreign:?}"
    );
    for spin in [
        "spin:postgres/postgres@4.0.0",
        "fermyon:spin/redis@2.0.0",
        "fermyon:spin/variables@2.0.0",
    ] {
        assert!(
            imports.iter().any(|i| i == spin),
            "{spin} not in {imports:?}"
        );
    }
    assert!(
        !imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler")),
        "no outbound HTTP"
    );
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert!(
        exports[0].starts_with("wasi:http/incoming-handler@0.2."),
        "{exports:?}"
    );
}

fn engine(deadline: Duration) -> FunctionEngine {
    FunctionEngine::new(
        Limits {
            deadline,
            memory_bytes: 16 << 20,
            max_instances: 4,
        },
        None,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_is_not_an_http_handler_is_refused_at_load() {
    let engine = engine(Duration::from_secs(1));
    let error = HttpFunction::load_file(&engine, &component_path(HOSTILE))
        .err()
        .expect("a validator is no HTTP handler");
    assert!(matches!(error, LoadError::WorldMismatch { .. }), "{error}");

    let started = weir_tests::stack::Stack::start(|config| {
        config.query.component = HOSTILE.into();
    })
    .await;
    let error = format!("{:#}", started.err().expect("the host refuses to start"));
    assert!(error.contains("query component"), "{error}");
}

/// A minimal WASI 0.2 HTTP handler whose `handle` runs the core function `body`.
fn handler_wat(body: &str) -> String {
    format!(
        r#"(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $request))
  (alias export $types "response-outparam" (type $outparam))
  (core module $m
    (memory 1)
    (func (export "handle") (param i32 i32) {body}))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $request)) (param "response-out" (own $outparam))
    (canon lift (core func $i "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#
    )
}

const TRAPS: &str = "unreachable";
const LOOPS: &str = "(loop $l (br $l))";
const HOGS_MEMORY: &str =
    "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
const NEVER_ANSWERS: &str = "";

#[tokio::test(flavor = "multi_thread")]
async fn failing_handlers_fail_alone_with_their_reason() {
    let engine = engine(Duration::from_millis(200));
    let granted = HostCapabilities::default()
        .grant(&ComponentGrants::default())
        .unwrap();
    for (name, body, code) in [
        ("traps", TRAPS, "function_trapped"),
        ("loops", LOOPS, "function_deadline_exceeded"),
        ("hogs-memory", HOGS_MEMORY, "function_memory_exhausted"),
        ("never-answers", NEVER_ANSWERS, "function_invalid_answer"),
    ] {
        let function = HttpFunction::load(&engine, name, handler_wat(body).as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let request = hyper::Request::get("http://weir.test/v1/x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let started = std::time::Instant::now();
        let error: CallError = function
            .handle(request, &granted)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} answered"));
        assert_eq!(error.code(), code, "{name}: {error}");
        // Generous on purpose: how far past its 200 ms deadline a call ends depends on how
        // loaded the machine is, not on the sandbox; a handler never stopped never returns.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} was not stopped in time"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_query_calls_leaves_validator_slots_free() {
    // Four instances: with one shared budget, two looping handlers and three validator calls
    // would not fit, and a validator would give up after its 1 s wait while the handlers hold
    // their slots for 3 s. (1 s rather than less: 80 tests share two cores.)
    let engine = engine(Duration::from_secs(1));
    let looping = std::sync::Arc::new(
        HttpFunction::load(&engine, "loops", handler_wat(LOOPS).as_bytes())
            .unwrap()
            .with_deadline(Duration::from_secs(3)),
    );
    let granted = std::sync::Arc::new(
        HostCapabilities::default()
            .grant(&ComponentGrants::default())
            .unwrap(),
    );
    let mut flood = Vec::new();
    for _ in 0..2 {
        let (looping, granted) = (looping.clone(), granted.clone());
        flood.push(tokio::spawn(async move {
            let request = hyper::Request::get("http://weir.test/v1/x")
                .body(Empty::<Bytes>::new())
                .unwrap();
            looping.handle(request, &granted).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let validator = std::sync::Arc::new(crate::support::load(&engine, crate::support::VALIDATOR));
    let mut batches = Vec::new();
    for i in 0..3 {
        let validator = validator.clone();
        batches.push(tokio::spawn(async move {
            validator
                .validate(
                    &[crate::support::point(
                        &format!("meter.k{i}"),
                        weir_runtime::validator::Value::Float(1.0),
                    )],
                    &[],
                    crate::support::policy(
                        weir_runtime::validator::UnknownKeyPolicy::AcceptUntyped,
                    ),
                )
                .await
        }));
    }
    for batch in batches {
        batch
            .await
            .unwrap()
            .expect("validators get their own slots while queries flood in");
    }
    for call in flood {
        let outcome = call.await.unwrap();
        assert!(outcome.is_err(), "a looping handler never answers");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_query_handler_answers_500_and_is_hot_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("query.wasm");
    std::fs::write(&path, handler_wat(TRAPS)).unwrap();
    let component = path.clone();
    let host = TestHost::start_with(move |config| config.query.component = component).await;
    let token = host.api_token("acme").await;

    for _ in 0..2 {
        let answer = get(&host, "/v1/devices/m/latest", &token, &[]).await;
        assert_error(
            &answer,
            StatusCode::INTERNAL_SERVER_ERROR,
            "function_trapped",
        );
    }
    assert_eq!(host.api_get("/healthz").await.0, StatusCode::OK);

    // The real component replaces it on reload; requests from then on run on it.
    std::fs::write(&path, component_bytes(QUERY)).unwrap();
    host.host()
        .reload_query()
        .await
        .expect("reloading the query function");
    let answer = get(&host, "/v1/devices/m/latest", &token, &[]).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
}
