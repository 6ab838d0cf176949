//! A failed engine write: the namespace goes back to what the engine holds and refuses
//! further writes; reopening recovers a consistent index.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use engine::{
    Backend, Direction, Durability, Engine, Keyspace, KvIter, MemEngine, ReadView, ScanRange,
    WriteBatch,
};
use graphdb::{Error, GraphStore, Role};

/// Delegates to a `MemEngine` and fails the write numbered `fail_at` (0-based).
#[derive(Debug)]
struct FailingEngine {
    inner: MemEngine,
    writes: AtomicUsize,
    fail_at: usize,
}

impl ReadView for FailingEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> engine::Result<Option<Vec<u8>>> {
        self.inner.get(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> engine::Result<KvIter<'_>> {
        self.inner.scan(keyspace, range, direction)
    }
}

impl Engine for FailingEngine {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn keyspace(&self, name: &str) -> engine::Result<Keyspace> {
        self.inner.keyspace(name)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> engine::Result<()> {
        if self.writes.fetch_add(1, Ordering::SeqCst) == self.fail_at {
            return Err(engine::Error::Config {
                reason: "injected write failure".into(),
            });
        }
        self.inner.write(batch, durability)
    }

    fn snapshot(&self) -> engine::Result<Box<dyn ReadView + '_>> {
        self.inner.snapshot()
    }

    fn flush(&self) -> engine::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn failed_write_leaves_memory_as_the_engine() {
    let root = MemEngine::new(graphdb::KEYSPACES);
    // Writes: namespace creation, 3 nodes, 2 memberships; the 7th write (index 6) fails.
    let engine = Arc::new(FailingEngine {
        inner: root.reopen(graphdb::KEYSPACES),
        writes: AtomicUsize::new(0),
        fail_at: 6,
    });
    let store = GraphStore::open(engine).unwrap();
    let teams = store.teams().unwrap();
    teams.add_person("p").unwrap();
    teams.add_team("a").unwrap();
    teams.add_team("b").unwrap();
    teams.set_membership("b", "p", Role::Member, None).unwrap();
    teams.set_membership("a", "b", Role::Member, None).unwrap();
    assert!(teams.is_member("p", "a").unwrap());
    let err = teams.remove_membership("a", "b").unwrap_err();
    assert!(matches!(err, Error::Engine(_)), "{err}");
    // The failed removal is not visible: memory was reloaded from the engine.
    assert!(teams.is_member("p", "a").unwrap());
    assert!(teams.check().is_clean());
    let err = teams.add_person("q").unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    drop(teams);
    drop(store);

    let store = GraphStore::open(Arc::new(root.reopen(graphdb::KEYSPACES))).unwrap();
    let teams = store.teams().unwrap();
    assert!(teams.is_member("p", "a").unwrap());
    assert!(teams.remove_membership("a", "b").unwrap());
    assert!(!teams.is_member("p", "a").unwrap());
    assert!(teams.check().is_clean());
}
