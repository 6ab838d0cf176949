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
}

impl TestStore {
    pub fn new(backend: Backend) -> Self {
        TestStore {
            backend,
            dir: tempfile::tempdir().expect("create a temporary directory"),
            memory: None,
        }
    }

    /// Opens the store (reopens it if it was opened before). The caller must have dropped the
    /// previous engine: RocksDB and sled hold a lock on the directory.
    pub fn open(&mut self) -> Arc<dyn Engine> {
        match self.backend {
            Backend::Memory => {
                let root = self.memory.get_or_insert_with(|| MemEngine::new(KEYSPACES));
                Arc::new(root.reopen(KEYSPACES))
            }
            backend => EngineConfig::new(backend, self.dir.path().join("db"))
                .open(KEYSPACES)
                .unwrap_or_else(|e| panic!("open {backend}: {e}")),
        }
    }
}

/// Stamps out one `#[test]` per compiled backend for each named generic test function, which
/// takes a `Backend`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::$name(engine::Backend::Memory) } )*
        }
        #[cfg(feature = "rocksdb")]
        mod rocksdb {
            $( #[test] fn $name() { super::$name(engine::Backend::Rocksdb) } )*
        }
        #[cfg(feature = "sled")]
        mod sled {
            $( #[test] fn $name() { super::$name(engine::Backend::Sled) } )*
        }
    };
}
