//! `SledEngine`: the alternative embedded backend, over sled 0.34.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use sled::transaction::{ConflictableTransactionResult, TransactionError};
use sled::{Transactional, Tree};

use crate::config::Poison;
use crate::{
    counter, Backend, BatchOp, Direction, Durability, Engine, Error, Keyspace, KvIter, ReadView,
    Result, ScanRange, WriteBatch,
};

/// An engine over sled 0.34: one tree per keyspace.
///
/// sled has neither merge operators that work inside multi-tree transactions nor snapshots, so
/// this backend serialises its writers behind one gate: under it a batch is resolved against
/// the trees (counter adds read the current value; delete-range lists the keys it removes)
/// and then applied as one sled transaction across the trees, which sled makes atomic on crash.
/// A snapshot holds the gate shared, so writers wait while one lives.
pub struct SledEngine {
    db: sled::Db,
    /// sled's log file, opened again only to fsync it (see [`SledEngine::sync`]).
    log: std::fs::File,
    path: PathBuf,
    names: Vec<String>,
    trees: Vec<Tree>,
    gate: RwLock<()>,
    poison: Poison,
}

impl std::fmt::Debug for SledEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledEngine")
            .field("path", &self.path)
            .field("keyspaces", &self.names)
            .finish_non_exhaustive()
    }
}

/// The final value (or deletion) of each (keyspace index, key) a batch touches.
type Overlay = BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>;

/// How long [`SledEngine::open`] waits for a lock still held by a store being closed.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the sled database, waiting a bounded time for its file lock: sled's background
/// flusher keeps the previous handle (and its lock) alive for a moment after the last
/// `SledEngine` in this process is dropped, so an immediate reopen would otherwise fail.
/// A lock held by another process is still reported, after the wait.
fn open_waiting_for_lock(path: &Path) -> sled::Result<sled::Db> {
    remove_unfinished_snapshots(path)?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            // sled reports the lock as an `Other` error whose text names it.
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Removes the `snap.*.generating` files a crash left in `path`. sled 0.34 writes a snapshot
/// under that name, fsyncs it and renames it, but when it opens it takes the last file whose
/// name starts with `snap.` as the latest snapshot, `.generating` ones included (its filter
/// still names an older suffix), and refuses to open when that one was cut short by the
/// crash. A `.generating` file is one whose rename did not happen, so the snapshot before it,
/// or the log from its start, is what sled is to recover from (the crash-state test in
/// `blobstore/tests/it/crash_states.rs` found a store that no longer opened).
fn remove_unfinished_snapshots(path: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(path.join(&*name))?;
        }
    }
    Ok(())
}

impl SledEngine {
    /// Makes everything written so far durable: `Db::flush`, then an fsync of sled's log file.
    /// sled 0.34 makes its log "stable" with `sync_file_range` on Linux, which writes the
    /// pages but neither the file's new length and extents nor the device's write cache, so
    /// after a power loss an appended log tail can be gone (`sync_file_range(2)`: "there are
    /// no guarantees that the data will be available after a crash"). The crash-state test
    /// found acknowledged synced batches lost without this fsync.
    fn sync(&self, operation: &'static str) -> Result<()> {
        self.db.flush().map_err(|e| self.error(operation, e))?;
        self.log.sync_all().map_err(|e| self.error(operation, e))
    }

    /// Opens or creates the store at `path` with the given keyspaces.
    ///
    /// # Errors
    /// [`Error::Backend`] when sled cannot open the store (for example, another process has
    /// held it for longer than 5 seconds).
    pub fn open(path: &Path, keyspaces: &[&str]) -> Result<Self> {
        let fail = |source: sled::Error| Error::Backend {
            backend: Backend::Sled,
            operation: "open",
            path: path.to_path_buf(),
            source: source.into(),
        };
        let db = open_waiting_for_lock(path).map_err(fail)?;
        let log = std::fs::File::open(path.join("db")).map_err(|e| fail(e.into()))?;
        let trees = keyspaces
            .iter()
            .map(|name| db.open_tree(name.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(SledEngine {
            db,
            log,
            path: path.to_path_buf(),
            names: keyspaces.iter().map(|s| s.to_string()).collect(),
            trees,
            gate: RwLock::new(()),
            poison: Poison::default(),
        })
    }

    fn tree(&self, keyspace: Keyspace) -> Result<&Tree> {
        self.trees
            .get(keyspace.index())
            .ok_or_else(|| Error::UnknownKeyspace {
                name: format!("#{}", keyspace.index()),
            })
    }

    fn error(&self, operation: &'static str, source: impl Into<crate::error::BoxError>) -> Error {
        Error::Backend {
            backend: Backend::Sled,
            operation,
            path: self.path.clone(),
            source: source.into(),
        }
    }

    fn read(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tree = self.tree(keyspace)?;
        tree.get(key)
            .map(|value| value.map(|v| v.to_vec()))
            .map_err(|e| self.error("read", e))
    }

    fn range(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        let tree = self.tree(keyspace)?;
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let iter = match range.end {
            Some(end) => tree.range(range.start..end),
            None => tree.range(range.start..),
        };
        let convert = move |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| self.error("scan", e))
        };
        Ok(match direction {
            Direction::Forward => Box::new(iter.map(convert)),
            Direction::Reverse => Box::new(iter.rev().map(convert)),
        })
    }

    /// The final state of every key the batch touches, computed against the current trees.
    fn resolve(&self, batch: WriteBatch) -> Result<Overlay> {
        let mut overlay = Overlay::new();
        for op in batch.ops() {
            match op {
                BatchOp::Put {
                    keyspace,
                    key,
                    value,
                } => {
                    self.tree(keyspace)?;
                    overlay.insert((keyspace.index(), key.to_vec()), Some(value.to_vec()));
                }
                BatchOp::Delete { keyspace, key } => {
                    self.tree(keyspace)?;
                    overlay.insert((keyspace.index(), key.to_vec()), None);
                }
                BatchOp::DeleteRange {
                    keyspace,
                    start,
                    end,
                } => {
                    if start >= end {
                        self.tree(keyspace)?;
                        continue;
                    }
                    let stored = self.tree(keyspace)?.range(start..end);
                    let mut doomed = Vec::new();
                    for item in stored {
                        doomed.push(item.map_err(|e| self.error("scan", e))?.0.to_vec());
                    }
                    let index = keyspace.index();
                    doomed.extend(
                        overlay
                            .range((index, start.to_vec())..(index, end.to_vec()))
                            .map(|((_, key), _)| key.clone()),
                    );
                    for key in doomed {
                        overlay.insert((index, key), None);
                    }
                }
                BatchOp::CounterAdd {
                    keyspace,
                    key,
                    delta,
                } => {
                    let slot = (keyspace.index(), key.to_vec());
                    let existing = match overlay.get(&slot) {
                        Some(value) => value.clone(),
                        None => self.read(keyspace, &slot.1)?,
                    };
                    let value = counter::add(existing.as_deref(), delta).ok_or_else(|| {
                        Error::CorruptCounter {
                            key: slot.1.clone(),
                            len: existing.as_ref().map_or(0, Vec::len),
                        }
                    })?;
                    overlay.insert(slot, Some(counter::encode(value).to_vec()));
                }
            }
        }
        Ok(overlay)
    }
}

impl ReadView for SledEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        self.range(keyspace, range, direction)
    }
}

/// Reads while holding the write gate shared: no write lands while it lives.
struct SledSnapshot<'a> {
    engine: &'a SledEngine,
    _gate: RwLockReadGuard<'a, ()>,
}

impl ReadView for SledSnapshot<'_> {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine.read(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        self.engine.range(keyspace, range, direction)
    }
}

impl Engine for SledEngine {
    fn backend(&self) -> Backend {
        Backend::Sled
    }

    fn keyspace(&self, name: &str) -> Result<Keyspace> {
        Keyspace::lookup(&self.names, name)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        self.poison.check(Backend::Sled, &self.path)?;
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let overlay = self.resolve(batch)?;
        let result: Result<(), TransactionError<()>> =
            self.trees
                .as_slice()
                .transaction(|trees| -> ConflictableTransactionResult<(), ()> {
                    for ((index, key), value) in &overlay {
                        match value {
                            Some(value) => {
                                trees[*index].insert(key.as_slice(), value.as_slice())?
                            }
                            None => trees[*index].remove(key.as_slice())?,
                        };
                    }
                    Ok(())
                });
        let outcome = match result {
            Ok(()) if durability == Durability::Sync => self.sync("sync"),
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(self.error("write", e)),
            Err(TransactionError::Abort(())) => Err(self.error("write", "transaction aborted")),
        };
        outcome.inspect_err(|error| self.poison.set(error))
    }

    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>> {
        Ok(Box::new(SledSnapshot {
            engine: self,
            _gate: self.gate.read().unwrap_or_else(|e| e.into_inner()),
        }))
    }

    fn flush(&self) -> Result<()> {
        self.poison.check(Backend::Sled, &self.path)?;
        self.sync("flush")
            .inspect_err(|error| self.poison.set(error))
    }
}
