//! An ordered key-value layer for the blob store and the graph store.
//!
//! The engine offers what those stores need and nothing more: named keyspaces (RocksDB column
//! families), point and multi-point reads, ordered range scans in both directions, atomic write
//! batches (put, delete, delete-range and a signed 64-bit counter add that needs no
//! read-modify-write by the caller), consistent snapshots across keyspaces, a durability choice
//! per write, and an explicit flush.
//!
//! These backends implement the [`Engine`] trait:
//! - [`RocksEngine`] over RocksDB, the default (cargo feature `rocksdb`, on by default);
//! - [`SledEngine`] over sled 0.34 (cargo feature `sled`);
//! - `PgEngine` over PostgreSQL (cargo feature `postgres`), for several instances of a
//!   service on one replicated database (`engine/DESIGN.md`, "The PostgreSQL backend");
//! - [`MemEngine`] over `BTreeMap`s, always built: the model for tests and the template for a
//!   new backend;
//! - [`FaultyEngine`], an in-memory engine that fails the Nth write or sync on command and, on
//!   a simulated crash, forgets what was not synced: for the stores' fault-tolerance tests.
//!
//! Several instances of a service on one PostgreSQL elect their writer through
//! [`Engine::leadership`]: a lease with a fencing epoch that every write transaction checks
//! ([`Leadership`]).
//!
//! Stores that write synced batches from many threads share fsyncs through [`GroupCommit`];
//! a store with a change feed writes every change with its event through a [`ChangeLog`].
//!
//! A program picks one at run time with [`EngineConfig`]. Keys should be built with the helpers
//! in [`keys`], whose byte order equals the logical order.
//!
//! ```
//! use engine::{Durability, Engine, EngineConfig, WriteBatch, ScanRange, Direction};
//!
//! # fn main() -> Result<(), engine::Error> {
//! let engine = EngineConfig::memory().open(&["files", "stats"])?;
//! let files = engine.keyspace("files")?;
//! let stats = engine.keyspace("stats")?;
//!
//! let mut batch = WriteBatch::new();
//! batch.put(files, b"a/1", b"first");
//! batch.put(files, b"a/2", b"second");
//! batch.counter_add(stats, b"count", 2);
//! engine.write(batch, Durability::Sync)?;
//!
//! assert_eq!(engine.get(files, b"a/2")?.as_deref(), Some(&b"second"[..]));
//! assert_eq!(engine.counter(stats, b"count")?, 2);
//! let keys: Vec<Vec<u8>> = engine
//!     .scan(files, ScanRange::prefix(b"a/"), Direction::Reverse)?
//!     .map(|kv| kv.map(|(k, _)| k))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(keys, vec![b"a/2".to_vec(), b"a/1".to_vec()]);
//! # Ok(())
//! # }
//! ```

pub mod backup;
mod batch;
mod changelog;
mod clock;
pub mod codec;
mod config;
mod consumers;
pub mod counter;
mod error;
mod faulty;
mod group_commit;
mod history_index;
pub mod keys;
mod leadership;
mod mem;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(feature = "sled")]
mod sled_engine;
mod sleepers;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;

pub use batch::{BatchOp, Ops, WriteBatch};
pub use changelog::{Appended, Chain, ChangeLog, Enqueued, FeedError, LogEntry, WriteStats};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Backend, EngineConfig, PostgresConfig};
pub use consumers::{Consumer, Consumers};
pub use error::{Error, NotLanded, Result, Unreachable};
pub use faulty::{Fault, FaultyEngine};
pub use group_commit::{GroupCommit, Written};
pub use leadership::{Epoch, Leadership};
pub use mem::MemEngine;
#[cfg(feature = "postgres")]
pub use postgres::PgEngine;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksEngine;
#[cfg(feature = "sled")]
pub use sled_engine::SledEngine;

/// A handle to a keyspace, obtained from [`Engine::keyspace`] on the engine that declared it.
///
/// Handles are small and `Copy`; using a handle with an engine other than the one that issued
/// it is a programming error that the engine reports as [`Error::UnknownKeyspace`] when the
/// index is out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Keyspace(u32);

impl Keyspace {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }

    pub(crate) fn from_index(index: usize) -> Self {
        Keyspace(u32::try_from(index).expect("fewer than 2^32 keyspaces"))
    }

    /// The handle of `name` among the keyspaces a backend declared, in declaration order.
    pub(crate) fn lookup(declared: &[String], name: &str) -> Result<Self> {
        declared
            .iter()
            .position(|n| n == name)
            .map(Keyspace::from_index)
            .ok_or_else(|| Error::UnknownKeyspace {
                name: name.to_string(),
            })
    }
}

/// How durable a write must be before [`Engine::write`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// On stable storage before the call returns (the write-ahead log is fsynced). Concurrent
    /// synced writers share fsyncs where the backend supports it (RocksDB groups them).
    Sync,
    /// Handed to the backend; survives a crash of the process only where the backend says so
    /// (see `ARCHITECTURE.md`), and is made durable by the next synced write or [`Engine::flush`].
    Buffered,
    /// As [`Durability::Buffered`], for a batch that its writer derives again from durable data
    /// when it is missing (the change log's history keys with their mark, read back before
    /// each run): a crash or a database failover may lose it, and the engine carries on
    /// instead of refusing every later write, as it must when it cannot show that a buffered
    /// batch survived (PostgreSQL after a reconnection).
    Derived,
}

/// The direction of a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Ascending byte order.
    Forward,
    /// Descending byte order.
    Reverse,
}

/// A half-open key range: `start` inclusive, `end` exclusive (`None` means unbounded).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ScanRange {
    /// The first key that may be returned.
    pub start: Vec<u8>,
    /// The first key past the range, or `None` for the end of the keyspace.
    pub end: Option<Vec<u8>>,
    /// The scan reads its keys once (a store loading its in-memory index at open): the
    /// engine keeps none of the blocks it reads in its cache, which such a scan would fill
    /// with what nothing reads again (RocksDB's `fill_cache`; other engines have no cache).
    pub read_once: bool,
}

impl ScanRange {
    /// Every key of the keyspace.
    pub fn all() -> Self {
        ScanRange::default()
    }

    /// The keys that start with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        ScanRange {
            start: prefix.to_vec(),
            end: keys::prefix_successor(prefix),
            read_once: false,
        }
    }

    /// The keys `k` with `start <= k < end`.
    pub fn between(start: &[u8], end: &[u8]) -> Self {
        ScanRange {
            start: start.to_vec(),
            end: Some(end.to_vec()),
            read_once: false,
        }
    }

    /// The keys `k >= start`.
    pub fn from(start: &[u8]) -> Self {
        ScanRange {
            start: start.to_vec(),
            end: None,
            read_once: false,
        }
    }

    /// The same range, read once: see [`ScanRange::read_once`].
    #[must_use]
    pub fn read_once(mut self) -> Self {
        self.read_once = true;
        self
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// Whether no key can lie in the range.
    pub fn is_empty(&self) -> bool {
        self.end
            .as_deref()
            .is_some_and(|end| end <= self.start.as_slice())
    }
}

/// A key and its value, as returned by scans.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An iterator over a scan; each step may fail with an I/O or corruption error.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KeyValue>> + 'a>;

/// Reads, shared by the live engine and its snapshots.
pub trait ReadView {
    /// The value at `key`, if any.
    ///
    /// # Errors
    /// An unknown keyspace, or an I/O or corruption error from the backend.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The values at several keys, in the order of `keys`.
    ///
    /// # Errors
    /// As for [`ReadView::get`].
    fn multi_get(&self, keyspace: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(keyspace, key)).collect()
    }

    /// The entries of `range` in key order (or reverse key order).
    ///
    /// # Errors
    /// An unknown keyspace; errors met while iterating are yielded by the iterator.
    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>>;

    /// The value of the counter at `key`: 0 when absent.
    ///
    /// # Errors
    /// As for [`ReadView::get`], and [`Error::CorruptCounter`] when the value is not a counter.
    fn counter(&self, keyspace: Keyspace, key: &[u8]) -> Result<i64> {
        match self.get(keyspace, key)? {
            None => Ok(0),
            Some(value) => counter::decode(&value).ok_or_else(|| Error::CorruptCounter {
                key: key.to_vec(),
                len: value.len(),
            }),
        }
    }
}

/// An ordered, durable key-value store. Implemented by [`RocksEngine`], [`SledEngine`],
/// `PgEngine` and [`MemEngine`]; the stores hold it as `Arc<dyn Engine>` so that the backend is chosen at run
/// time.
pub trait Engine: ReadView + Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// The handle of a keyspace declared when the engine was opened.
    ///
    /// # Errors
    /// [`Error::UnknownKeyspace`] when `name` was not declared.
    fn keyspace(&self, name: &str) -> Result<Keyspace>;

    /// Applies every operation of `batch`, in order, atomically: after a crash either all of
    /// them are visible or none is. With [`Durability::Sync`] the batch is on stable storage
    /// when this returns `Ok`.
    ///
    /// # Errors
    /// [`Error::Poisoned`] when an earlier write or sync failed; otherwise the backend's error,
    /// after which the engine is poisoned and refuses further writes.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()>;

    /// A consistent read-only view across all keyspaces as of now.
    ///
    /// On sled, which has no snapshots, writers wait while a snapshot lives: do not write from
    /// a thread that holds a snapshot.
    ///
    /// # Errors
    /// The backend's error.
    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>>;

    /// Makes every write acknowledged so far durable, [`Durability::Buffered`] ones included.
    ///
    /// # Errors
    /// [`Error::Poisoned`], or the backend's error (which poisons the engine).
    fn flush(&self) -> Result<()>;

    /// Leases and fencing through the store's database, for several instances of a service
    /// on one store (see [`Leadership`]); `None` for the embedded backends, whose one process
    /// is always the writer (RocksDB and sled lock their directory).
    fn leadership(&self) -> Option<&dyn Leadership> {
        None
    }

    /// Writes a consistent copy of the whole store, as of one moment, into `dir` (which must
    /// not exist; its parent must), while writers go on: a RocksDB checkpoint, whose
    /// immutable table files are hard-linked when `dir` is on the same filesystem. The copy
    /// holds every batch acknowledged before the call and no part of any batch. The copy
    /// opens as a store of the same backend at `dir`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for the backends that cannot (the default: sled, memory; on
    /// PostgreSQL use `pg_dump` or a base backup, `engine/DESIGN.md`), or the backend's
    /// error.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<()> {
        let _ = dir;
        Err(Error::Unsupported {
            backend: self.backend(),
            operation: "checkpoint",
            hint: match self.backend() {
                Backend::Postgres => {
                    "back up the database with pg_dump or pg_basebackup (engine/DESIGN.md, \
                     \"Backup\")"
                }
                _ => "stop the process and copy its data directory, or use the rocksdb backend",
            },
        })
    }
}
