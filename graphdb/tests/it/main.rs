//! The integration tests of `graphdb`: one binary, one suite stamped out per engine backend.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod commits;
mod concurrency;
mod crash;
mod faults;
mod feed;
mod generated;
mod model;
mod parse;
mod suite;
mod support;

/// Stamps out a test per backend for each generic test function of a module.
macro_rules! backend_tests {
    ($module:ident: $($name:ident),* $(,)?) => {
        mod rocksdb {
            $( #[test] fn $name() { crate::$module::$name(crate::support::Fixture::new(engine::Backend::Rocksdb)) } )*
        }
        #[cfg(feature = "sled")]
        mod sled {
            $( #[test] fn $name() { crate::$module::$name(crate::support::Fixture::new(engine::Backend::Sled)) } )*
        }
        mod memory {
            $( #[test] fn $name() { crate::$module::$name(crate::support::Fixture::new(engine::Backend::Memory)) } )*
        }
    };
}
pub(crate) use backend_tests;
