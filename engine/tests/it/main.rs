//! The engine's integration tests: one conformance suite stamped out for every compiled
//! backend, property tests against `MemEngine`, and crash tests with a killed child process.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod conformance;
mod crash;
mod faults;
mod harness;
mod model;
