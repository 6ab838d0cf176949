//! The engine's integration tests: one conformance suite stamped out for every compiled
//! backend, property tests against `MemEngine`, and crash tests with a killed child process.

mod conformance;
mod crash;
mod faults;
mod harness;
mod model;
