//! End-to-end tests that run the real Builtiful binaries together; see `tests/`.
//!
//! The package's binaries `e2e-builtiful` and `e2e-builtiful-server` are the CLI and the server
//! built from their libraries, so that the tests can find them (`CARGO_BIN_EXE_…`).
