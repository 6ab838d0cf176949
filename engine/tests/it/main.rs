//! The engine's integration tests: one conformance suite stamped out for every compiled
//! backend (`engine::backend_tests!`), property tests against `MemEngine`, crash tests with a
//! killed child process, PostgreSQL's faults (`pg_faults`) and
//! combined transactions (`pg_combine`).
//!
//! The PostgreSQL tests (feature `postgres`) run against the server named by
//! `LPSTORE_TEST_POSTGRES`, each in a schema of its own: `make test` starts one with
//! `scripts/with-postgres.sh`, and so can a run by hand:
//!
//! ```text
//! scripts/with-postgres.sh cargo test -p engine --all-features --test it
//! ```
//!
//! Without the variable each PostgreSQL test prints "skipped: LPSTORE_TEST_POSTGRES unset"
//! (visible with `--nocapture`) and passes.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod backup;
mod conformance;
mod crash;
mod faults;
mod harness;
#[cfg(feature = "postgres")]
mod leases;
mod model;
#[cfg(feature = "postgres")]
mod pg_combine;
#[cfg(feature = "postgres")]
mod pg_faults;
