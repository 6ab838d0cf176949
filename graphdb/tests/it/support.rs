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
            clock: Arc::new(ManualClock::new(1_000_000)),
        }
    }

    /// Opens the engine (again): drop the previous store first.
    pub fn engine(&self) -> Arc<dyn Engine> {
        match self.backend {
            Backend::Memory => Arc::new(self.mem.reopen(graphdb::KEYSPACES)),
            other => {
                // sled's background flusher can hold the file lock for a moment after the
                // previous engine is dropped: retry a bounded number of times.
                let mut attempts = 0;
                loop {
                    match EngineConfig::new(other, self.dir.path()).open(graphdb::KEYSPACES) {
                        Ok(engine) => break engine,
                        Err(_) if attempts < 200 => {
                            attempts += 1;
                            std::thread::sleep(std::time::Duration::from_millis(25));
                        }
                        Err(e) => panic!("open engine: {e}"),
                    }
                }
            }
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
