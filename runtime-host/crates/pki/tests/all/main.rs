//! Integration tests of weir-pki, in one binary: real certificates from a CA in a temporary
//! directory, real TLS handshakes over loopback TCP. Each test has its own directory and
//! server, so they run in parallel.

mod csr_properties;
mod directory;
mod handshake;
mod renewal;
mod support;
