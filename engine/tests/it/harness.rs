//! Opening, closing and reopening a store of any backend the same way.

use std::sync::Arc;

use engine::{Backend, Engine, EngineConfig, MemEngine};
use tempfile::TempDir;

/// The keyspaces every test declares.
pub const KEYSPACES: &[&str] = &["alpha", "beta"];

/// A store of one backend that can be closed and reopened at the same place.
pub struct TestStore {
    pub backend: Backend,
    dir: TempDir,
    memory: Option<MemEngine>,
    #[cfg(feature = "postgres")]
    postgres: Option<engine::testing::PgScratch>,
}

impl TestStore {
    pub fn new(backend: Backend) -> Self {
        TestStore {
            backend,
            dir: tempfile::tempdir().expect("create a temporary directory"),
            memory: None,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }

    /// The PostgreSQL schema of the store, once opened on PostgreSQL.
    #[cfg(feature = "postgres")]
    pub fn postgres(&self) -> Option<&engine::testing::PgScratch> {
        self.postgres.as_ref()
    }

    /// Opens the store (reopens it if it was opened before). The caller must have dropped the
    /// previous engine: RocksDB and sled hold a lock on the directory.
    pub fn open(&mut self) -> Arc<dyn Engine> {
        match self.backend {
            Backend::Memory => {
                let root = self.memory.get_or_insert_with(|| MemEngine::new(KEYSPACES));
                Arc::new(root.reopen(KEYSPACES))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => self
                .postgres
                .get_or_insert_with(engine::testing::PgScratch::new)
                .config()
                .open(KEYSPACES)
                .unwrap_or_else(|e| panic!("open postgres: {e}")),
            backend => EngineConfig::new(backend, self.dir.path().join("db"))
                .open(KEYSPACES)
                .unwrap_or_else(|e| panic!("open {backend}: {e}")),
        }
    }
}
