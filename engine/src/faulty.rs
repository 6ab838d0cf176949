//! `FaultyEngine`: an in-memory engine that fails on command and forgets what was not synced.
//!
//! The stores' fault-tolerance tests run their scripts under it: fail the Nth write or sync,
//! then [`FaultyEngine::crash`] to get the store as the next process would find it. Every
//! operation must either have succeeded and survive, or have failed and left no trace.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::config::Poison;
use crate::{
    Backend, Direction, Durability, Engine, Error, Keyspace, KvIter, MemEngine, ReadView, Result,
    ScanRange, WriteBatch,
};

/// How the planned fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The write fails before anything is applied (a failed `write(2)`).
    Write,
    /// The write reaches the live state but its sync fails: readers in this process may see
    /// it, a crash loses it (a failed `fsync(2)`). For a `flush`, nothing pending becomes
    /// durable.
    Sync,
}

/// An in-memory engine with a live state, a durable image, and a planned fault.
///
/// Each `write` and `flush` call is one *operation*, numbered from 1; the operation numbered
/// `fail_at` fails with `fault`, and the engine is poisoned from then on, as a real backend is.
/// Synced writes and flushes copy the live state into the durable image; buffered writes wait
/// for the next one.
#[derive(Debug)]
pub struct FaultyEngine {
    names: Vec<String>,
    live: MemEngine,
    durable: Mutex<MemEngine>,
    operations: AtomicU64,
    /// How many of the operations were `flush` calls.
    flushes: AtomicU64,
    fail_at: Option<(u64, Fault)>,
    /// Serialises writes so that the durable image is always a prefix of the live history.
    writer: Mutex<()>,
    poison: Poison,
}

impl FaultyEngine {
    /// An empty store that never fails.
    pub fn new(keyspaces: &[&str]) -> Self {
        Self::from_image(MemEngine::new(keyspaces), keyspaces, None)
    }

    fn from_image(image: MemEngine, keyspaces: &[&str], fail_at: Option<(u64, Fault)>) -> Self {
        FaultyEngine {
            names: keyspaces.iter().map(|s| s.to_string()).collect(),
            live: image.fork(keyspaces),
            durable: Mutex::new(image),
            operations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            fail_at,
            writer: Mutex::new(()),
            poison: Poison::default(),
        }
    }

    /// Plans `fault` for operation number `n` (1-based), counting from now.
    pub fn fail_at(mut self, n: u64, fault: Fault) -> Self {
        let done = self.operations.load(Ordering::SeqCst);
        self.fail_at = Some((done + n, fault));
        self
    }

    /// The number of `write` and `flush` calls so far.
    pub fn operations(&self) -> u64 {
        self.operations.load(Ordering::SeqCst)
    }

    /// How many of the [`operations`](Self::operations) were `flush` calls (a planned fault
    /// strikes a flush the same way whatever its kind, so tests count such a fault once).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// The store as a process restarted after a crash now would find it: only what was synced.
    /// The new engine has no planned fault and is not poisoned.
    pub fn crash(&self) -> FaultyEngine {
        let durable = self.durable.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        FaultyEngine::from_image(durable.fork(&names), &names, None)
    }

    fn make_durable(&self) {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        *self.durable.lock().unwrap_or_else(|e| e.into_inner()) = self.live.fork(&names);
    }

    fn injected(&self, operation: &'static str, fault: Fault) -> Error {
        let error = Error::Backend {
            backend: Backend::Memory,
            operation,
            path: Path::new("faulty-engine").to_path_buf(),
            source: format!(
                "injected {fault:?} fault at operation {}",
                self.operations()
            )
            .into(),
        };
        self.poison.set(&error);
        error
    }

    /// Counts an operation and says whether the planned fault strikes it.
    fn next_fault(&self) -> Option<Fault> {
        let n = self.operations.fetch_add(1, Ordering::SeqCst) + 1;
        self.fail_at
            .and_then(|(at, fault)| (at == n).then_some(fault))
    }
}

impl ReadView for FaultyEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.live.get(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        self.live.scan(keyspace, range, direction)
    }
}

impl Engine for FaultyEngine {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn keyspace(&self, name: &str) -> Result<Keyspace> {
        self.live.keyspace(name)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.poison
            .check(Backend::Memory, Path::new("faulty-engine"))?;
        match self.next_fault() {
            Some(Fault::Write) => Err(self.injected("write", Fault::Write)),
            Some(Fault::Sync) => {
                self.live.write(batch, durability)?;
                Err(self.injected("sync", Fault::Sync))
            }
            None => {
                self.live.write(batch, durability)?;
                if durability == Durability::Sync {
                    self.make_durable();
                }
                Ok(())
            }
        }
    }

    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>> {
        self.live.snapshot()
    }

    fn flush(&self) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.poison
            .check(Backend::Memory, Path::new("faulty-engine"))?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        match self.next_fault() {
            Some(fault) => Err(self.injected("flush", fault)),
            None => {
                self.make_durable();
                Ok(())
            }
        }
    }
}
