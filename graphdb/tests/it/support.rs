//! Fixtures: a store on any backend that can be closed and reopened, with a manual clock.

use std::sync::Arc;

use engine::{Backend, Engine, EngineConfig, MemEngine};
use graphdb::{GraphStore, ManualClock};

/// A store location on one backend.
pub struct Fixture {
    pub backend: Backend,
    dir: tempfile::TempDir,
    mem: MemEngine,
    pub clock: Arc<ManualClock>,
}

impl Fixture {
    pub fn new(backend: Backend) -> Fixture {
        Fixture {
            backend,
            dir: tempfile::tempdir().expect("temp dir"),
            mem: MemEngine::new(graphdb::KEYSPACES),
            clock: Arc::new(ManualClock::at_seconds(1_000_000)),
        }
    }

    /// Opens the engine (again): drop the previous store first.
    pub fn engine(&self) -> Arc<dyn Engine> {
        match self.backend {
            Backend::Memory => Arc::new(self.mem.reopen(graphdb::KEYSPACES)),
            other => EngineConfig::new(other, self.dir.path())
                .open(graphdb::KEYSPACES)
                .unwrap_or_else(|e| panic!("open engine: {e}")),
        }
    }

    /// Opens the graph store (again): drop the previous one first.
    pub fn open(&self) -> GraphStore {
        GraphStore::builder(self.engine())
            .clock(self.clock.clone())
            .open()
            .expect("open store")
    }
}
