//! The store: an engine, its group commit, and the namespaces opened on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use engine::{Durability, Engine, GroupCommit, WriteBatch};

use super::namespace::Namespace;
use super::storage;
use super::types::NamespaceKind;
use crate::clock::{Clock, SystemClock};
use crate::{Error, Result};

/// Opens a [`GraphStore`]: engine first, then optional settings.
#[derive(Debug)]
pub struct GraphStoreBuilder {
    engine: Arc<dyn Engine>,
    clock: Arc<dyn Clock>,
    durability: Durability,
}

impl GraphStoreBuilder {
    /// The clock used for expiry. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The durability of every write. Default: [`Durability::Sync`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Opens the store. Namespaces are loaded when first asked for.
    ///
    /// # Errors
    /// [`Error::Engine`] when the engine lacks one of [`crate::KEYSPACES`].
    pub fn open(self) -> Result<GraphStore> {
        let ks = storage::Keyspaces::of(&*self.engine)?;
        Ok(GraphStore {
            committer: Arc::new(GroupCommit::new(Arc::clone(&self.engine))),
            engine: self.engine,
            ks,
            clock: self.clock,
            durability: self.durability,
            namespaces: Mutex::new(HashMap::new()),
        })
    }
}

/// The graph store over one engine: a set of named namespaces.
#[derive(Debug)]
pub struct GraphStore {
    engine: Arc<dyn Engine>,
    /// Shared by every namespace: concurrent synced writes share fsyncs.
    committer: Arc<GroupCommit>,
    ks: storage::Keyspaces,
    clock: Arc<dyn Clock>,
    durability: Durability,
    namespaces: Mutex<HashMap<String, Arc<Namespace>>>,
}

impl GraphStore {
    /// Settings for a store over `engine`, which must declare [`crate::KEYSPACES`].
    pub fn builder(engine: Arc<dyn Engine>) -> GraphStoreBuilder {
        GraphStoreBuilder {
            engine,
            clock: Arc::new(SystemClock),
            durability: Durability::Sync,
        }
    }

    /// The store over `engine` with the system clock and synced writes.
    ///
    /// # Errors
    /// As for [`GraphStoreBuilder::open`].
    pub fn open(engine: Arc<dyn Engine>) -> Result<GraphStore> {
        GraphStore::builder(engine).open()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The group commit shared by the namespaces' synced writes (its counters show how many
    /// batches each fsync covered).
    pub fn committer(&self) -> &GroupCommit {
        &self.committer
    }

    /// The namespace `name`, created empty if absent and loaded on first use (nodes, edges and
    /// the persisted closure: no index rebuild).
    ///
    /// # Errors
    /// [`Error::NamespaceKind`] when it exists with the other kind; engine and corruption
    /// errors while loading.
    pub fn namespace(&self, name: &str, kind: NamespaceKind) -> Result<Arc<Namespace>> {
        let mut open = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ns) = open.get(name) {
            return check_kind(ns, kind).map(|()| Arc::clone(ns));
        }
        let key = storage::namespace_key(name);
        let (id, found) = match self.engine.get(self.ks.meta, &key)? {
            Some(value) => storage::decode_namespace(&key, &value)?,
            None => {
                let counter = storage::namespace_counter_key();
                let id = self.engine.counter(self.ks.meta, &counter)?;
                let id = u32::try_from(id).map_err(|_| Error::Corrupt {
                    keyspace: storage::META,
                    key: counter.clone(),
                    reason: "namespace counter out of range",
                })?;
                let mut batch = WriteBatch::new();
                batch.put(self.ks.meta, &key, storage::encode_namespace(id, kind));
                batch.counter_add(self.ks.meta, counter, 1);
                self.committer.commit(batch)?;
                (id, kind)
            }
        };
        let state = {
            let snapshot = self.engine.snapshot()?;
            storage::load(&*snapshot, &self.ks, id)?
        };
        let ns = Arc::new(Namespace {
            name: name.to_owned(),
            id,
            kind: found,
            engine: Arc::clone(&self.engine),
            committer: Arc::clone(&self.committer),
            ks: self.ks,
            clock: Arc::clone(&self.clock),
            durability: self.durability,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            poisoned: Mutex::new(None),
        });
        check_kind(&ns, kind)?;
        open.insert(name.to_owned(), Arc::clone(&ns));
        Ok(ns)
    }
}

fn check_kind(ns: &Namespace, requested: NamespaceKind) -> Result<()> {
    if ns.kind == requested {
        Ok(())
    } else {
        Err(Error::NamespaceKind {
            namespace: ns.name.clone(),
            found: ns.kind,
            requested,
        })
    }
}
