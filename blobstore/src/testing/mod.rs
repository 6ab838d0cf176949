//! The blob store's testing kit (feature `testing`), shared by its own tests, the object-store
//! crate's, the servers' and the fuzz bodies:
//!
//! - [`MemBackend`]: blob bytes in memory, the model backend for property tests and fuzzing;
//! - [`FaultyBackend`]: wraps any backend and injects a full disk or a failed fsync;
//! - [`suite`]: the store's behaviour as functions generic over a [`suite::Harness`], stamped
//!   out per engine backend here and per object store (Swift, S3, SeaweedFS) by objectstore;
//! - [`model`]: the reference model that the property test and the `blob_model` fuzz target
//!   run the store against, with the replay check of the change feed;
//! - test data and the consistency check ([`content`], [`bucket`], [`assert_consistent`], ...).
//!
//! Nothing here is for production: it panics on failures, as tests should.

mod faulty;
mod mem;
pub mod model;
pub mod suite;
mod support;

pub use engine::Backend;

/// A data directory for a store whose blob bytes are in a [`MemBackend`]: such a store writes
/// nothing there unless a resumable upload begins, so the model and the fuzz targets pass this
/// path, which does not exist, instead of making a temporary directory per run (a resumable
/// upload would fail on it, loudly).
pub const UNUSED_DATA_DIR: &str = "/nonexistent/blobstore-testing";
pub use faulty::{Fault, FaultyBackend};
pub use mem::MemBackend;
pub use support::{
    assert_consistent, bucket, content, corrupt_blob, plant_orphan, read_all, Settings,
};
