//! The integration tests of `commitgraph`: one binary.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod commits;
mod faults;
