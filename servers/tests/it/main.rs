//! The integration tests of the servers crate: one binary (see STYLE.md).

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod backup;
mod badinput;
mod binaries;
mod directory;
mod directory_feed;
mod directory_graphs;
mod download_clients;
mod feed;
mod ha;
mod ha_subscriptions;
mod hot;
mod idempotency;
mod infra;
mod librarian;
mod object_store;
mod proxies;
mod scrub;
mod soak;
mod support;
mod tus;
mod tus_clients;
mod usage;
