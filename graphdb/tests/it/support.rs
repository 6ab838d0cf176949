//! Fixtures: a store on any backend that can be closed and reopened, with a manual clock.

use std::sync::Arc;

use engine::testing::TestStore;
use engine::{Backend, Engine};
use graphdb::{GraphStore, ManualClock};

/// A store location on one backend: a kept map, a directory, or a PostgreSQL schema.
pub struct Fixture {
    pub backend: Backend,
    store: TestStore,
    pub clock: Arc<ManualClock>,
}

impl Fixture {
    pub fn new(backend: Backend) -> Fixture {
        Fixture {
            backend,
            store: TestStore::new(backend, graphdb::KEYSPACES),
            clock: Arc::new(ManualClock::at_seconds(1_000_000)),
        }
    }

    /// Opens the engine (again): drop the previous store first.
    pub fn engine(&self) -> Arc<dyn Engine> {
        self.store.open()
    }

    /// Opens the graph store (again): drop the previous one first.
    pub fn open(&self) -> GraphStore {
        GraphStore::builder(self.engine())
            .clock(self.clock.clone())
            .open()
            .expect("open store")
    }
}
