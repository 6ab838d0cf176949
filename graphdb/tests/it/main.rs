//! The integration tests of `graphdb`: one binary, one suite stamped out per engine backend.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod concurrency;
mod crash;
mod faults;
mod feed;
mod follow;
mod generated;
mod graphs;
mod model;
mod parse;
mod suite;
mod support;

/// Stamps out a test per backend for each generic test function of a module, with engine's
/// testing kit (which guards each backend by engine's own features, and skips PostgreSQL,
/// saying so, when no test server is given: `scripts/with-postgres.sh`).
macro_rules! backend_tests {
    ($module:ident: $($name:ident),* $(,)?) => {
        engine::backend_tests!(backends [memory, rocksdb, sled, postgres]; in $module;
            with crate::support::Fixture::new; $($name),*);
    };
}
pub(crate) use backend_tests;
