//! Weir's integration tests, gathered in one binary so that a 2-core machine links wasmtime
//! once. Every test uses the real compiled components and real servers; run them all with
//! `cargo xtask test`, which builds the components first.

mod support;

mod alert_failures;
mod alerting;
mod deploy_files;
mod edge;
mod edge_pki;
mod event_stream;
mod followups;
mod function_loading;
mod function_sandbox;
mod hostile;
mod hot_swap;
mod ingest;
mod pki_fleet;
mod query;
mod query_endpoints;
mod query_http;
mod regions;
mod registry;
mod rules_registry;
mod services;
mod shutdown;
mod signing;
mod simulation;
mod spin_manifest;
mod staging;
mod validator_component;
mod webhooks;
