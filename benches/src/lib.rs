//! Shared helpers of the criterion benchmarks in `benches/benches/`.
//!
//! Run them with `make bench` (or `cargo bench -p benches`); the figures of the last recorded
//! run are in the README and the stores' `DESIGN.md` files.

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use engine::{Backend, Engine, EngineConfig};

/// Opens a fresh store of `backend` in `dir` with `keyspaces`.
///
/// # Panics
/// When the store cannot be opened: a benchmark has no better answer.
pub fn open_engine(backend: Backend, dir: &std::path::Path, keyspaces: &[&str]) -> Arc<dyn Engine> {
    EngineConfig::new(backend, dir.join(backend.name()))
        .open(keyspaces)
        .unwrap_or_else(|e| panic!("open {backend}: {e}"))
}
