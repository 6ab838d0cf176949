//! Blob bytes on an OpenStack Swift or S3-compatible object store, for the blob store.
//!
//! [`ObjectStoreBackend`] implements [`blobstore::BlobBackend`] over Swift's native API
//! (tempauth or Keystone v1-style auth) or any S3 endpoint, chosen by [`ObjectStoreConfig`]:
//! objects spread over containers of bounded size, large objects uploaded in segments and read
//! back as one, uploads verified before they are acknowledged, transient errors retried with
//! backoff within a bounded time. [`CachedBackend`] puts a bounded least-recently-used cache
//! on local disk in front of any backend; its index lives in a small engine, so it survives
//! restarts without a scan. [`MigratingBackend`] and [`migrate`] move the blobs of a local
//! store to the object store while reads keep working.
//!
//! Every call blocks, as the blob store's trait does: the Swift and S3 clients drive their own
//! small tokio runtimes inside. Call them from blocking threads (`spawn_blocking` in an async
//! server), never from an async task: `block_on` inside a runtime panics.
//!
//! The server builds the backend from its configuration with [`open_backend`] and hands it
//! to [`blobstore::StoreBuilder::backend`]; the engine must have been opened with
//! [`KEYSPACES`] beside [`blobstore::KEYSPACES`]:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use engine::EngineConfig;
//! use objectstore::{open_backend, ObjectStoreConfig};
//!
//! let config: ObjectStoreConfig = ObjectStoreConfig::swift(
//!     "http://127.0.0.1:8080/auth/v1.0", "test:tester", "testing");
//! let keyspaces: Vec<&str> =
//!     blobstore::KEYSPACES.iter().chain(objectstore::KEYSPACES).copied().collect();
//! let engine = EngineConfig::rocksdb("/srv/librarian/meta").open(&keyspaces)?;
//! let backends = open_backend(&config, engine.clone())?;
//! let store = blobstore::StoreBuilder::with_engine(engine, "/srv/librarian")
//!     .backend(backends.blob_backend.clone())
//!     .open()?;
//! // In /health: `backends.object_store.probe()`; an `is_unavailable()` error names Swift.
//! # drop(store);
//! # Ok(())
//! # }
//! ```

mod backend;
mod cache;
mod client;
mod config;
mod error;
mod migration;
mod s3;
mod swift;
mod transport;

use std::sync::Arc;

pub use backend::{ObjectStoreBackend, KEYSPACES};
pub use cache::{CacheStats, CachedBackend};
pub use config::{
    CacheConfig, ObjectStoreConfig, Protocol, RetryConfig, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LARGE_OBJECT_THRESHOLD, DEFAULT_OBJECTS_PER_CONTAINER, DEFAULT_SEGMENT_CONCURRENCY,
    DEFAULT_SEGMENT_SIZE,
};
pub use error::{is_unavailable, Error, Result};
pub use migration::{migrate, MigrateOptions, MigrateReport, MigratingBackend};

/// What [`open_backend`] builds: the backend to give the store, and handles on its parts for
/// `/health` and statistics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Backends {
    /// For [`blobstore::StoreBuilder::backend`]: the object store, behind the cache if any.
    pub blob_backend: Arc<dyn blobstore::BlobBackend>,
    /// The object store itself ([`ObjectStoreBackend::probe`] for `/health`).
    pub object_store: ObjectStoreBackend,
    /// The read cache, when configured ([`CachedBackend::stats`]).
    pub cache: Option<Arc<CachedBackend>>,
}

/// The backend `config` describes: the object store, behind the read cache when
/// `config.cache` is set.
///
/// # Errors
/// [`Error::Config`], the engine's error, or an I/O error preparing the spool or cache
/// directories.
pub fn open_backend(
    config: &ObjectStoreConfig,
    engine: Arc<dyn engine::Engine>,
) -> Result<Backends> {
    let object_store = ObjectStoreBackend::open(config, engine)?;
    let cache = match &config.cache {
        Some(cache) => Some(Arc::new(CachedBackend::open(
            Arc::new(object_store.clone()),
            cache,
        )?)),
        None => None,
    };
    let blob_backend: Arc<dyn blobstore::BlobBackend> = match &cache {
        Some(cache) => cache.clone(),
        None => Arc::new(object_store.clone()),
    };
    Ok(Backends {
        blob_backend,
        object_store,
        cache,
    })
}
