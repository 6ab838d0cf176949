// About 350 lines of code: the write combining (`append`, `enqueue`, `finish`) is in `changelog/combine.rs`, the history reads in `history_index.rs`, the unit tests in `changelog/tests.rs`.
//! The change log: every change of a store gets a revision, written in the same batch.
//!
//! A store that keeps a change feed (the librarian's files, the directory's teams and
//! repositories) owns one [`ChangeLog`]. Every write of the store goes through it: under the
//! store's own locks the store hands its batch and the batch's events to
//! [`ChangeLog::append`], which gives each event the next revision and writes events and batch
//! as **one** engine batch (buffered, through the store's [`GroupCommit`]); after releasing its
//! locks the store calls [`ChangeLog::sync`], which waits for a group sync covering the batch
//! and only then moves the durable *head* forward. So:
//!
//! - no change without its event and no event without its change, across any crash: they are
//!   one atomic batch;
//! - revisions are strictly increasing in log order: they are taken and the batch is written
//!   under one sequencer mutex, so the batch with revision `r` reaches the engine's log before
//!   the one with `r + 1` (a group's events take consecutive revisions in commit order);
//!   writers that queue while another writes are written together as one engine batch, in
//!   queue order, with their adds to one counter folded (fewer keys for the engine), and each
//!   returns only once its own batch is applied. A store may also split the append in two:
//!   [`ChangeLog::enqueue`] under its lock (which fixes the batch's place in the log) and
//!   [`ChangeLog::finish`] after releasing it, so its next writer need not wait for the
//!   engine write; batches computed from one another then go on one [`Chain`], and a failed
//!   one refuses those queued behind it;
//! - readers never observe a gap or an event a crash could still undo: [`ChangeLog::read`]
//!   stops at the head, and the head only covers batches that a completed sync made durable.
//!   On open the engine is flushed first, so every event visible after a restart is durable.
//!
//! An event's key is its revision, 8 bytes big-endian, in the log's keyspace. Its value is the
//! list of its history-index keys (for the indexer, and so pruning can remove them) followed
//! by the store's payload, which the log does not interpret. A history index is a set of keys
//! `prefix ++ revision`, in a keyspace of the store's choosing, each holding the revisions of
//! a group of events up to its own (`history_index`), so "every event of this file" is one
//! range scan ([`ChangeLog::read_index`]). The history keys are
//! not in the write's batch: the log's indexer writes them after it, in its own batches
//! (`history_index`), and readers match the events it has not reached yet themselves, so a
//! history read sees every durable event all the same.
//!
//! Retention: [`ChangeLog::prune_through`] deletes old events but never the newest one, so the
//! head found on reopen is never lower than a revision already handed out. A reader asking for
//! events after a pruned revision gets [`FeedError::Compacted`] (etcd's `ErrCompacted`, HTTP
//! 410), never silence.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use engine::{ChangeLog, EngineConfig, GroupCommit, LogEntry, WriteBatch};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = EngineConfig::memory().open(&["data", "changes", "history"])?;
//! let data = engine.keyspace("data")?;
//! let history = engine.keyspace("history")?;
//! let log = ChangeLog::open(Arc::new(GroupCommit::new(engine.clone())), engine.keyspace("changes")?)?;
//!
//! let mut batch = WriteBatch::new();
//! batch.put(data, b"file/1", b"hello");
//! let entry = LogEntry::new(b"created file 1".to_vec()).index(history, b"file/1/".to_vec());
//! let revision = log.commit(batch, vec![entry])?;
//! assert_eq!(revision, 1);
//! assert_eq!(log.head(), 1);
//! assert_eq!(log.read(0, 10)?, vec![(1, b"created file 1".to_vec())]);
//! assert_eq!(log.read_index(history, b"file/1/", 0, 10, engine::Direction::Forward)?.len(), 1);
//! assert_eq!(log.wait(0, Duration::ZERO), 1);
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::history_index::{prune_group_keys, Indexer, MARK_KEY};
use crate::{Direction, GroupCommit, Keyspace, ScanRange, WriteBatch, Written};

mod combine;
#[cfg(test)]
mod tests;

pub use combine::{Chain, Enqueued, WriteStats};
use combine::{Queue, Sequencer};

/// One event to append: the store's payload and the history indexes it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The store's encoded event. The revision is the key, so the payload need not hold it.
    pub payload: Vec<u8>,
    /// For each `(keyspace, prefix)`, the event's revision is written under a key `prefix ++
    /// revision` (8 bytes big-endian: the highest of a group of the prefix's events, which
    /// its value lists), for [`ChangeLog::read_index`], by the log's indexer shortly after
    /// the event (`engine/DESIGN.md`, "The change log's history indexer"). A prefix must not
    /// be a prefix of another object's prefix: build it with [`crate::keys`] (terminated
    /// strings).
    pub indexes: Vec<(Keyspace, Vec<u8>)>,
}

impl LogEntry {
    /// An entry with no history index.
    pub fn new(payload: Vec<u8>) -> Self {
        LogEntry {
            payload,
            indexes: Vec::new(),
        }
    }

    /// Adds a history index under `prefix` in `keyspace`.
    #[must_use]
    pub fn index(mut self, keyspace: Keyspace, prefix: Vec<u8>) -> Self {
        self.indexes.push((keyspace, prefix));
        self
    }
}

/// A batch written with its events but perhaps not durable yet: hand it to
/// [`ChangeLog::sync`].
#[derive(Debug)]
#[must_use = "an appended batch is acknowledged only after ChangeLog::sync"]
pub struct Appended {
    written: Written,
    /// The last revision the batch took, or `None` when it carried no event.
    last: Option<u64>,
}

impl Appended {
    /// The last revision the batch took (`None` when it had no events).
    pub fn last_revision(&self) -> Option<u64> {
        self.last
    }
}

/// Why a read of the log was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// Events after the revision asked for were pruned; the reader must resynchronise from a
    /// snapshot and read on from `oldest - 1` or later.
    #[error("revisions after {after} were pruned; the oldest kept is {oldest}")]
    Compacted {
        /// The revision asked for.
        after: u64,
        /// The oldest revision still kept.
        oldest: u64,
    },
    /// The revision asked for is newer than the newest durable one.
    #[error("revision {after} is beyond the newest revision {head}")]
    BeyondHead {
        /// The revision asked for.
        after: u64,
        /// The newest durable revision.
        head: u64,
    },
    /// A stored event could not be decoded (the log's own framing, not the payload).
    #[error("event {revision} in the change log is malformed")]
    Corrupt {
        /// Its revision.
        revision: u64,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] crate::Error),
}

type Listener = Box<dyn Fn(u64) + Send + Sync>;

#[derive(Debug, Default)]
struct Head {
    /// The newest revision that a completed sync made durable.
    durable: u64,
    /// The threads blocked in [`ChangeLog::wait`]: an advance with none skips the condvar's
    /// wake (a futex call per write, for nobody, when every watcher is a listener).
    waiters: usize,
}

/// The change log of one store: revisions, events and history written with the changes.
pub struct ChangeLog {
    pub(crate) committer: Arc<GroupCommit>,
    pub(crate) keyspace: Keyspace,
    sequencer: Mutex<Sequencer>,
    queue: Mutex<Queue>,
    head: Mutex<Head>,
    advanced: Condvar,
    listeners: Mutex<Vec<Listener>>,
    pub(crate) indexer: Indexer,
}

impl fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeLog")
            .field("keyspace", &self.keyspace)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn revision_key(revision: u64) -> [u8; 8] {
    revision.to_be_bytes()
}

pub(crate) fn decode_revision(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// An event's stored value: `count: u32`, then per index `keyspace: u32, len: u32, prefix`,
/// then the payload (all integers big-endian).
pub(crate) fn encode_value(entry: &LogEntry) -> Vec<u8> {
    let index_bytes: usize = entry.indexes.iter().map(|(_, p)| 8 + p.len()).sum();
    let mut value = Vec::with_capacity(4 + index_bytes + entry.payload.len());
    value.extend_from_slice(&len_u32(entry.indexes.len()).to_be_bytes());
    for (keyspace, prefix) in &entry.indexes {
        value.extend_from_slice(&len_u32(keyspace.index()).to_be_bytes());
        value.extend_from_slice(&len_u32(prefix.len()).to_be_bytes());
        value.extend_from_slice(prefix);
    }
    value.extend_from_slice(&entry.payload);
    value
}

fn len_u32(len: usize) -> u32 {
    // Index counts, keyspace numbers and key prefixes are far below 4 GiB.
    u32::try_from(len).unwrap_or(u32::MAX)
}

pub(crate) struct DecodedValue<'a> {
    pub(crate) indexes: Vec<(Keyspace, &'a [u8])>,
    pub(crate) payload: &'a [u8],
}

pub(crate) fn decode_value(value: &[u8]) -> Option<DecodedValue<'_>> {
    fn take_u32(bytes: &mut &[u8]) -> Option<usize> {
        let (head, rest) = bytes.split_at_checked(4)?;
        *bytes = rest;
        usize::try_from(u32::from_be_bytes(head.try_into().ok()?)).ok()
    }
    let mut rest = value;
    let count = take_u32(&mut rest)?;
    let mut indexes = Vec::with_capacity(count.min(16));
    for _ in 0..count {
        let keyspace = Keyspace::from_index(take_u32(&mut rest)?);
        let len = take_u32(&mut rest)?;
        let (prefix, tail) = rest.split_at_checked(len)?;
        indexes.push((keyspace, prefix));
        rest = tail;
    }
    Some(DecodedValue {
        indexes,
        payload: rest,
    })
}

impl ChangeLog {
    /// Opens the log kept in `keyspace` of `committer`'s engine.
    ///
    /// The engine is flushed first, so that every event visible now is durable: the head is
    /// the newest revision present.
    ///
    /// # Errors
    /// The engine's flush or scan error.
    pub fn open(committer: Arc<GroupCommit>, keyspace: Keyspace) -> crate::Result<Arc<ChangeLog>> {
        committer.engine().flush()?;
        let newest = committer
            .engine()
            .scan(keyspace, ScanRange::all(), Direction::Reverse)?
            .next()
            .transpose()?;
        let last = match newest {
            None => 0,
            Some((key, _)) => decode_revision(&key).ok_or_else(|| crate::Error::Config {
                reason: format!("change-log key {key:02x?} is not an 8-byte revision"),
            })?,
        };
        let marked = committer.engine().get(keyspace, &MARK_KEY)?.is_some();
        Ok(Arc::new(ChangeLog {
            committer,
            keyspace,
            sequencer: Mutex::new(Sequencer { last, marked }),
            queue: Mutex::new(Queue::default()),
            head: Mutex::new(Head {
                durable: last,
                waiters: 0,
            }),
            advanced: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
            indexer: Indexer::default(),
        }))
    }

    /// The keyspace holding the events.
    pub fn keyspace(&self) -> Keyspace {
        self.keyspace
    }

    /// The group commit the log writes through.
    pub fn committer(&self) -> &Arc<GroupCommit> {
        &self.committer
    }

    /// Waits until a sync covers `appended`, then moves the durable head to (at least) its last
    /// revision and wakes watchers. Returns that revision, or the head when it had no events.
    ///
    /// # Errors
    /// The sync's error: the batch must not be acknowledged.
    pub fn sync(&self, appended: Appended) -> crate::Result<u64> {
        self.committer.sync(appended.written)?;
        let Some(last) = appended.last else {
            return Ok(self.head());
        };
        let (advanced, waiters) = {
            let mut head = lock(&self.head);
            if last > head.durable {
                // Every batch with a lower revision was written before this one, so the sync
                // that covered this one covered them too.
                head.durable = last;
                (true, head.waiters > 0)
            } else {
                (false, false)
            }
        };
        if advanced {
            if waiters {
                self.advanced.notify_all();
            }
            for listener in lock(&self.listeners).iter() {
                listener(last);
            }
            self.indexer.advanced(last, &self.committer, self.keyspace);
        }
        Ok(last)
    }

    /// [`ChangeLog::append`] then [`ChangeLog::sync`], for a caller that holds no locks.
    ///
    /// # Errors
    /// As for those two.
    pub fn commit(&self, batch: WriteBatch, entries: Vec<LogEntry>) -> crate::Result<u64> {
        let appended = self.append(batch, entries)?;
        self.sync(appended)
    }

    /// The newest durable revision (0 before the first event). On a follower: the newest
    /// revision it has applied ([`ChangeLog::follow_to`]).
    pub fn head(&self) -> u64 {
        lock(&self.head).durable
    }

    /// The newest revision in the database now, read from it (a reverse scan of one key),
    /// not from this process's own appends: what a follower polls, since another instance
    /// writes the log. On a network engine a committed event is visible to every instance;
    /// a buffered one may still be lost by a crash of the database server (its WAL not yet
    /// flushed), as for the writer itself.
    ///
    /// # Errors
    /// The engine's scan error, or [`crate::Error::Config`] for a malformed key.
    pub fn newest_stored(&self) -> crate::Result<u64> {
        self.newest_in(&**self.committer.engine())
    }

    /// The newest revision `view` holds (0 before the first event): read in the snapshot a
    /// store loads its memory from, it says which events that memory already reflects, so a
    /// follower does not apply them a second time.
    ///
    /// # Errors
    /// As for [`ChangeLog::newest_stored`].
    pub fn newest_in<V: crate::ReadView + ?Sized>(&self, view: &V) -> crate::Result<u64> {
        let newest = view
            .scan(self.keyspace, ScanRange::all(), Direction::Reverse)?
            .next()
            .transpose()?;
        match newest {
            None => Ok(0),
            Some((key, _)) => decode_revision(&key).ok_or_else(|| crate::Error::Config {
                reason: format!("change-log key {key:02x?} is not an 8-byte revision"),
            }),
        }
    }

    /// For a follower that has applied every event up to `revision` (written by another
    /// instance): moves the head there, wakes [`ChangeLog::wait`]ers and listeners, and moves
    /// the sequencer too, so that if this instance becomes the writer its first append takes
    /// `revision + 1`: revisions another writer used are never handed out again. A revision
    /// at or below the head changes nothing. Call it only while this instance does not
    /// write (a follower, or a new leader before its first write).
    pub fn follow_to(&self, revision: u64) {
        {
            let mut sequencer = lock(&self.sequencer);
            sequencer.last = sequencer.last.max(revision);
        }
        let (advanced, waiters) = {
            let mut head = lock(&self.head);
            let advanced = revision > head.durable;
            head.durable = head.durable.max(revision);
            (advanced, head.waiters > 0)
        };
        if advanced {
            if waiters {
                self.advanced.notify_all();
            }
            for listener in lock(&self.listeners).iter() {
                listener(revision);
            }
        }
    }

    /// The oldest revision still kept, or `None` when the log is empty.
    ///
    /// # Errors
    /// The engine's scan error, or [`crate::Error::Config`] for a malformed key.
    pub fn oldest(&self) -> crate::Result<Option<u64>> {
        let events = ScanRange::between(&revision_key(1), &[0xff; 9]);
        let first = self
            .committer
            .engine()
            .scan(self.keyspace, events, Direction::Forward)?
            .next()
            .transpose()?;
        first
            .map(|(key, _)| {
                decode_revision(&key).ok_or_else(|| crate::Error::Config {
                    reason: format!("change-log key {key:02x?} is not an 8-byte revision"),
                })
            })
            .transpose()
    }

    fn check_after(&self, after: u64) -> Result<u64, FeedError> {
        let head = self.head();
        if after > head {
            return Err(FeedError::BeyondHead { after, head });
        }
        if let Some(oldest) = self.oldest()? {
            if after + 1 < oldest {
                return Err(FeedError::Compacted { after, oldest });
            }
        }
        Ok(head)
    }

    /// Up to `limit` events with a revision above `after` and at most the head, oldest first,
    /// as `(revision, payload)`.
    ///
    /// # Errors
    /// [`FeedError::BeyondHead`] when `after` is newer than the head, [`FeedError::Compacted`]
    /// when events after it were pruned, or the engine's error.
    pub fn read(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, FeedError> {
        let head = self.check_after(after)?;
        self.read_stored(after, head, limit)
    }

    /// Up to `limit` stored events with a revision above `after` and at most `through`,
    /// oldest first, whatever the head: for a follower, which reads what another instance
    /// wrote before it moves its own head there ([`ChangeLog::follow_to`]). Checks nothing
    /// about pruning (compare with [`ChangeLog::oldest`]).
    ///
    /// # Errors
    /// The engine's error, or [`FeedError::Corrupt`] for an undecodable event.
    pub fn read_stored(
        &self,
        after: u64,
        through: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, FeedError> {
        if after >= through || limit == 0 {
            return Ok(Vec::new());
        }
        let range = ScanRange::between(&revision_key(after + 1), &revision_key(through + 1));
        let mut events = Vec::new();
        for item in self
            .committer
            .engine()
            .scan(self.keyspace, range, Direction::Forward)?
            .take(limit)
        {
            let (key, value) = item?;
            let revision = decode_revision(&key).ok_or(FeedError::Corrupt { revision: 0 })?;
            let decoded = decode_value(&value).ok_or(FeedError::Corrupt { revision })?;
            events.push((revision, decoded.payload.to_vec()));
        }
        Ok(events)
    }

    /// Blocks until the head is above `after` or `timeout` has passed; returns the head.
    pub fn wait(&self, after: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut head = lock(&self.head);
        while head.durable <= after {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            head.waiters += 1;
            head = self
                .advanced
                .wait_timeout(head, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            head.waiters -= 1;
        }
        head.durable
    }

    /// Calls `listener` with the new head after each advance, outside the log's locks. Keep it
    /// cheap (it runs on the writer's thread): a `tokio::sync::watch::Sender::send_replace`.
    pub fn subscribe(&self, listener: Box<dyn Fn(u64) + Send + Sync>) {
        lock(&self.listeners).push(listener);
    }

    /// Deletes every event with a revision up to `through`, and their history keys, in one
    /// synced batch, but never the newest event. Returns how many were deleted.
    ///
    /// # Errors
    /// The engine's error, or [`FeedError::Corrupt`] for an undecodable event.
    pub fn prune_through(&self, through: u64) -> Result<u64, FeedError> {
        // Hold the sequencer so no revision is taken while the newest is decided, and the
        // indexer's lock so that it writes no history key for an event deleted here.
        let sequencer = lock(&self.sequencer);
        let _indexing = self.indexer.lock();
        let through = through
            .min(sequencer.last.saturating_sub(1))
            .min(self.head());
        if through == 0 {
            return Ok(0);
        }
        let engine = self.committer.engine();
        let mut batch = WriteBatch::new();
        let mut deleted = 0;
        // The history prefixes of the pruned events: their group keys are pruned once each.
        let mut prefixes = HashSet::new();
        let range = ScanRange::between(&revision_key(1), &revision_key(through + 1));
        for item in engine.scan(self.keyspace, range, Direction::Forward)? {
            let (key, value) = item?;
            let revision = decode_revision(&key).ok_or(FeedError::Corrupt { revision: 0 })?;
            let decoded = decode_value(&value).ok_or(FeedError::Corrupt { revision })?;
            for (keyspace, prefix) in decoded.indexes {
                prefixes.insert((keyspace, prefix.to_vec()));
            }
            batch.delete(self.keyspace, key);
            deleted += 1;
        }
        for (keyspace, prefix) in &prefixes {
            prune_group_keys(engine.as_ref(), &mut batch, *keyspace, prefix, through)?;
        }
        let written = self.committer.write(batch)?;
        drop(sequencer);
        self.committer.sync(written)?;
        Ok(deleted)
    }
}
