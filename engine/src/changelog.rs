// About 790 lines of code (the history reads are in `history_index.rs`); the rest of the file is its unit tests, which reach its private parts.
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::batch::CombinedBatch;
use crate::history_index::{prune_group_keys, Indexer, MARK_KEY};
use crate::sleepers::Sleepers;
use crate::{Direction, GroupCommit, Keyspace, ScanRange, WriteBatch, Written};

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
struct Sequencer {
    /// The last revision handed out (durable or not).
    last: u64,
    /// Whether the log holds the indexer's mark (`history_index`): until it does, the next
    /// write puts it, so that the events written without their history keys are indexed.
    marked: bool,
}

/// Writers whose batches wait to be written, and what became of those written: the write
/// combining of [`ChangeLog::append`].
#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<Queued>,
    next_ticket: u64,
    /// Whether a writer is writing a combined batch now.
    writing: bool,
    outcomes: HashMap<u64, crate::Result<Appended>>,
    /// Writers waiting while another writes, by ticket: the writer of a group wakes the
    /// group's and one more to write the next (`sleepers.rs` says why not a condition
    /// variable).
    sleepers: Sleepers<crate::Result<Appended>>,
    /// What the combined writes did so far.
    stats: WriteStats,
}

/// What the log's combined writes ([`ChangeLog::append`]) did so far: for benchmarks that
/// ask which stage of a synced write is busy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Groups written (one combined engine write each, unless it failed).
    pub groups: u64,
    /// Batches in those groups.
    pub batches: u64,
    /// Time spent writing them (one group at a time, so against the wall time it says how
    /// busy the log's serial stage was).
    pub writing: Duration,
}

#[derive(Debug)]
struct Queued {
    ticket: u64,
    batch: WriteBatch,
    entries: Vec<LogEntry>,
    chain: Option<Arc<Chain>>,
}

/// A batch handed to [`ChangeLog::enqueue`], not yet known to be written: hand it to
/// [`ChangeLog::finish`].
#[derive(Debug)]
#[must_use = "an enqueued batch is written only by ChangeLog::finish (its own or a later one's)"]
pub struct Enqueued {
    ticket: u64,
}

/// Batches that depend on one another, in their queue order: each was computed from state that
/// the earlier ones changed (a namespace's writes, each applied in memory after the previous
/// one). Once one of them fails, every later batch of the chain is refused unwritten with
/// [`crate::Error::EarlierWriteFailed`], so that the engine never holds a batch without the
/// one it was computed after; its owner, having gone back to what the engine holds, starts a
/// new chain.
#[derive(Debug, Default)]
pub struct Chain {
    /// The failure that broke the chain: its message, and whether it was transient
    /// (fenced, or the database out of reach: nothing said about the engine's health).
    broken: Mutex<Option<(String, bool)>>,
}

impl Chain {
    fn refusal(&self) -> Option<crate::Error> {
        lock(&self.broken)
            .as_ref()
            .map(|(cause, transient)| crate::Error::EarlierWriteFailed {
                cause: cause.clone(),
                transient: *transient,
            })
    }

    /// Refuses every batch of the chain not written yet, and every later one, naming
    /// `error` (the first break is kept): for an owner that found out about a failure
    /// elsewhere (a failed sync) before going back to what the engine holds.
    pub fn break_with(&self, error: &crate::Error) {
        let mut broken = lock(&self.broken);
        if broken.is_none() {
            let transient = match error {
                crate::Error::Fenced { .. } => true,
                crate::Error::EarlierWriteFailed { transient, .. } => *transient,
                other => other.is_unavailable(),
            };
            *broken = Some((error.to_string(), transient));
        }
    }
}

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

    /// Gives each entry the next revision, adds the events and their history keys to `batch`,
    /// and writes the batch buffered, all under the log's sequencer, so revision order is log
    /// order. Call it under the store's locks; call [`ChangeLog::sync`] after releasing them.
    /// An empty `entries` takes no revision. When it returns, the batch is applied.
    ///
    /// Writers that arrive while another one writes are queued, and the next of them writes
    /// every queued batch as one engine batch, in queue order (revisions in that order too),
    /// with the adds to one counter folded into one: the engine then pays one log record and
    /// one key per counter for the group instead of one per writer. Each writer still waits
    /// until its own batch is applied, so it keeps its locks until then, as before.
    ///
    /// # Errors
    /// The engine's write error (the engine is poisoned then); no revision is taken.
    pub fn append(&self, batch: WriteBatch, entries: Vec<LogEntry>) -> crate::Result<Appended> {
        let enqueued = self.enqueue(batch, entries, None);
        self.finish(enqueued)
    }

    /// The first half of [`ChangeLog::append`]: queues the batch and returns at once. Batches
    /// are written in the order they were queued, so a store may queue under its lock (which
    /// fixes the batch's place, and so its revisions, in the log) and call
    /// [`ChangeLog::finish`] after releasing it: the next writer then applies its change while
    /// this batch is being written, and both may go to the engine as one batch. A batch
    /// queued on a broken `chain` is refused unwritten (see [`Chain`]).
    pub fn enqueue(
        &self,
        batch: WriteBatch,
        entries: Vec<LogEntry>,
        chain: Option<&Arc<Chain>>,
    ) -> Enqueued {
        let mut queue = lock(&self.queue);
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push(Queued {
            ticket,
            batch,
            entries,
            chain: chain.cloned(),
        });
        Enqueued { ticket }
    }

    /// The second half of [`ChangeLog::append`]: waits until the batch is written (writing
    /// it, with every batch queued so far, when no other writer is), and returns its outcome.
    ///
    /// # Errors
    /// The engine's write error (the engine is poisoned then), or
    /// [`crate::Error::EarlierWriteFailed`] when an earlier batch of its chain failed; no
    /// revision is taken.
    pub fn finish(&self, enqueued: Enqueued) -> crate::Result<Appended> {
        let ticket = enqueued.ticket;
        let mut queue = lock(&self.queue);
        loop {
            if let Some(outcome) = queue.outcomes.remove(&ticket) {
                return outcome;
            }
            if queue.writing {
                let sleeper = queue.sleepers.add(ticket);
                drop(queue);
                if let Some(outcome) = sleeper.wait() {
                    return outcome;
                }
                queue = lock(&self.queue);
                continue;
            }
            queue.writing = true;
            let group = std::mem::take(&mut queue.waiting);
            // Every ticket below this one is in the group or was written before it.
            let bound = queue.next_ticket;
            drop(queue);
            let (batches, started) = (group.len() as u64, Instant::now());
            let outcomes = self.write_group(group);
            queue = lock(&self.queue);
            queue.writing = false;
            queue.stats.groups += 1;
            queue.stats.batches += batches;
            queue.stats.writing += started.elapsed();
            queue.outcomes.extend(outcomes);
            // The group's sleepers are woken with their outcomes (those not asleep yet find
            // theirs in `outcomes`), after the lock is released.
            let Queue {
                sleepers, outcomes, ..
            } = &mut *queue;
            let wakeups = sleepers.take_below(bound, |ticket| outcomes.remove(&ticket));
            let own = queue.outcomes.remove(&ticket);
            drop(queue);
            wakeups.wake();
            if let Some(outcome) = own {
                return outcome;
            }
            queue = lock(&self.queue);
        }
    }

    /// Writes a group of queued batches with their events as one engine batch, under the
    /// sequencer. Should that write fail, each batch is written alone, so that each writer
    /// gets its own engine's answer (a fenced or poisoned engine refuses each the same way).
    /// A batch whose chain broke (an earlier batch of it failed, in this group or before) is
    /// refused unwritten.
    fn write_group(&self, group: Vec<Queued>) -> Vec<(u64, crate::Result<Appended>)> {
        let mut sequencer = lock(&self.sequencer);
        let mut outcomes = Vec::with_capacity(group.len());
        let refusal = |queued: &Queued| queued.chain.as_ref().and_then(|c| c.refusal());
        let group: Vec<Queued> = group
            .into_iter()
            .filter_map(|queued| match refusal(&queued) {
                Some(error) => {
                    outcomes.push((queued.ticket, Err(error)));
                    None
                }
                None => Some(queued),
            })
            .collect();
        if let Err(error) = self.check_mark(&mut sequencer) {
            // Nothing written: the first writer gets the engine's error, the others name it.
            let (cause, transient) = (error.to_string(), error.is_unavailable());
            let mut error = Some(error);
            for queued in group {
                let error = error.take().unwrap_or(crate::Error::EarlierWriteFailed {
                    cause: cause.clone(),
                    transient,
                });
                if let Some(chain) = &queued.chain {
                    chain.break_with(&error);
                }
                outcomes.push((queued.ticket, Err(error)));
            }
            return outcomes;
        }
        if group.len() > 1 {
            let mut combined = CombinedBatch::default();
            let mut revisions = Vec::with_capacity(group.len());
            let mut last = sequencer.last;
            for (i, queued) in group.iter().enumerate() {
                let mut batch = queued.batch.clone();
                if i == 0 {
                    self.put_mark(&sequencer, &mut batch);
                }
                let count = self.add_events(&mut batch, last + 1, &queued.entries);
                last += count;
                revisions.push((queued.ticket, (count > 0).then_some(last)));
                combined.push(batch);
            }
            if let Ok(written) = self.committer.write(combined.finish()) {
                sequencer.last = last;
                sequencer.marked = true;
                outcomes.extend(revisions.into_iter().map(|(ticket, last)| {
                    let appended = Appended {
                        written: written.share(),
                        last,
                    };
                    (ticket, Ok(appended))
                }));
                return outcomes;
            }
        }
        for queued in group {
            if let Some(error) = refusal(&queued) {
                outcomes.push((queued.ticket, Err(error)));
                continue;
            }
            let mut batch = queued.batch;
            self.put_mark(&sequencer, &mut batch);
            let count = self.add_events(&mut batch, sequencer.last + 1, &queued.entries);
            let outcome = self.committer.write(batch).map(|written| {
                sequencer.last += count;
                sequencer.marked = true;
                Appended {
                    written,
                    last: (count > 0).then_some(sequencer.last),
                }
            });
            if let (Err(error), Some(chain)) = (&outcome, &queued.chain) {
                chain.break_with(error);
            }
            outcomes.push((queued.ticket, outcome));
        }
        outcomes
    }

    /// Adds `entries` to `batch` as events from revision `first` on (their history keys are
    /// the indexer's: `history_index`); returns how many revisions they take.
    fn add_events(&self, batch: &mut WriteBatch, first: u64, entries: &[LogEntry]) -> u64 {
        for (offset, entry) in (0u64..).zip(entries) {
            batch.put(
                self.keyspace,
                revision_key(first + offset),
                encode_value(entry),
            );
        }
        entries.len() as u64
    }

    /// Before the first write of a log without the indexer's mark: looks again (another
    /// instance, the writer before a take-over, may have put it since the log was opened).
    fn check_mark(&self, sequencer: &mut Sequencer) -> crate::Result<()> {
        if !sequencer.marked
            && self
                .committer
                .engine()
                .get(self.keyspace, &MARK_KEY)?
                .is_some()
        {
            sequencer.marked = true;
        }
        Ok(())
    }

    /// Puts the mark in `batch` when the log has none yet: every event before it was
    /// indexed in its own batch by an earlier build.
    fn put_mark(&self, sequencer: &Sequencer, batch: &mut WriteBatch) {
        if !sequencer.marked {
            batch.put(self.keyspace, MARK_KEY, revision_key(sequencer.last));
        }
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

    /// What the log's combined writes did so far.
    pub fn write_stats(&self) -> WriteStats {
        lock(&self.queue).stats
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
            batch.delete(self.keyspace, &key);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::{Engine, EngineConfig, Fault, FaultyEngine, ReadView as _};

    use super::*;

    fn open_memory() -> (Arc<dyn crate::Engine>, Arc<ChangeLog>, Keyspace, Keyspace) {
        let engine = EngineConfig::memory()
            .open(&["data", "changes", "history"])
            .unwrap();
        let data = engine.keyspace("data").unwrap();
        let history = engine.keyspace("history").unwrap();
        let log = ChangeLog::open(
            Arc::new(GroupCommit::new(engine.clone())),
            engine.keyspace("changes").unwrap(),
        )
        .unwrap();
        (engine, log, data, history)
    }

    impl ChangeLog {
        fn append_on(
            &self,
            batch: WriteBatch,
            entries: Vec<LogEntry>,
            chain: &Arc<Chain>,
        ) -> crate::Result<Appended> {
            self.finish(self.enqueue(batch, entries, Some(chain)))
        }
    }

    #[test]
    fn concurrent_writers_get_gapless_revisions_in_log_order() {
        let (engine, log, data, _) = open_memory();
        const THREADS: u64 = 8;
        const WRITES: u64 = 50;
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let log = &log;
                scope.spawn(move || {
                    for i in 0..WRITES {
                        let mut batch = WriteBatch::new();
                        let key = format!("{t}/{i}");
                        batch.put(data, key.as_bytes(), b"v");
                        let entries = vec![LogEntry::new(key.into_bytes())];
                        log.commit(batch, entries).unwrap();
                    }
                });
            }
        });
        let events = log.read(0, usize::MAX).unwrap();
        assert_eq!(events.len() as u64, THREADS * WRITES);
        for (expected, (revision, payload)) in (1..).zip(&events) {
            assert_eq!(*revision, expected);
            // Each event's change is in the store.
            assert!(engine.get(data, payload).unwrap().is_some());
        }
        // Per writer, its events are in its own order.
        for t in 0..THREADS {
            let mine: Vec<String> = events
                .iter()
                .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
                .filter(|p| p.starts_with(&format!("{t}/")))
                .collect();
            let expected: Vec<String> = (0..WRITES).map(|i| format!("{t}/{i}")).collect();
            assert_eq!(mine, expected);
        }
    }

    /// A memory engine whose first write waits at a gate, and which records each write's
    /// number of operations.
    #[derive(Debug)]
    struct GatedEngine {
        inner: crate::MemEngine,
        gate: Mutex<bool>,
        opened: Condvar,
        writes: Mutex<Vec<usize>>,
    }

    impl crate::ReadView for GatedEngine {
        fn get(&self, keyspace: Keyspace, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
            self.inner.get(keyspace, key)
        }

        fn scan(
            &self,
            keyspace: Keyspace,
            range: ScanRange,
            direction: Direction,
        ) -> crate::Result<crate::KvIter<'_>> {
            self.inner.scan(keyspace, range, direction)
        }
    }

    impl Engine for GatedEngine {
        fn backend(&self) -> crate::Backend {
            crate::Backend::Memory
        }

        fn keyspace(&self, name: &str) -> crate::Result<Keyspace> {
            self.inner.keyspace(name)
        }

        fn write(&self, batch: WriteBatch, durability: crate::Durability) -> crate::Result<()> {
            let mut open = lock(&self.gate);
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            drop(open);
            lock(&self.writes).push(batch.len());
            self.inner.write(batch, durability)
        }

        fn snapshot(&self) -> crate::Result<Box<dyn crate::ReadView + '_>> {
            self.inner.snapshot()
        }

        fn flush(&self) -> crate::Result<()> {
            self.inner.flush()
        }
    }

    #[test]
    fn writers_queued_behind_a_write_are_written_as_one_batch_with_counters_folded() {
        let engine = Arc::new(GatedEngine {
            inner: crate::MemEngine::new(&["data", "changes", "history"]),
            gate: Mutex::new(true),
            opened: Condvar::new(),
            writes: Mutex::new(Vec::new()),
        });
        let data = engine.keyspace("data").unwrap();
        let history = engine.keyspace("history").unwrap();
        let shared: Arc<dyn Engine> = engine.clone();
        let log = ChangeLog::open(
            Arc::new(GroupCommit::new(shared)),
            engine.keyspace("changes").unwrap(),
        )
        .unwrap();
        // This test counts the engine's writes: the indexer's would come in between.
        log.set_background_indexing(false);
        *lock(&engine.gate) = false;
        let append = |name: &str| {
            let mut batch = WriteBatch::new();
            batch.put(data, name, b"v");
            batch.counter_add(data, b"files", 1);
            let entry = LogEntry::new(name.as_bytes().to_vec()).index(history, b"all/".to_vec());
            log.commit(batch, vec![entry]).unwrap()
        };
        std::thread::scope(|scope| {
            // The first writer holds the engine's write; three more queue behind it.
            let first = scope.spawn(|| append("a"));
            while !lock(&log.queue).writing {
                std::thread::yield_now();
            }
            let others: Vec<_> = ["b", "c", "d"]
                .into_iter()
                .map(|name| scope.spawn(move || append(name)))
                .collect();
            while lock(&log.queue).waiting.len() < 3 {
                std::thread::yield_now();
            }
            *lock(&engine.gate) = true;
            engine.opened.notify_all();
            assert_eq!(first.join().unwrap(), 1);
            let mut revisions: Vec<u64> = others.into_iter().map(|t| t.join().unwrap()).collect();
            revisions.sort_unstable();
            assert_eq!(revisions, vec![2, 3, 4]);
        });
        // Two engine writes: "a" alone (put, counter, the indexer's mark of a new log, event),
        // then the three others with their counter adds folded into one: 3 puts + 1 counter
        // + 3 events (their history keys are the indexer's).
        assert_eq!(*lock(&engine.writes), vec![4, 7]);
        assert_eq!(
            engine
                .get(data, b"files")
                .unwrap()
                .map(|v| crate::counter::decode(&v)),
            Some(Some(4))
        );
        let events = log.read(0, 10).unwrap();
        assert_eq!(events.len(), 4);
        for (revision, name) in &events {
            // Each event went with its own change, in revision order.
            assert!(engine.get(data, name).unwrap().is_some(), "{revision}");
        }
        assert_eq!(
            log.read_index(history, b"all/", 0, 10, Direction::Forward)
                .unwrap(),
            events
        );
    }

    /// A memory engine that refuses, unapplied and without poisoning itself (as a fenced
    /// engine does), every batch that puts the key `bad`.
    #[derive(Debug)]
    struct RefusingEngine(crate::MemEngine);

    impl crate::ReadView for RefusingEngine {
        fn get(&self, keyspace: Keyspace, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
            self.0.get(keyspace, key)
        }

        fn scan(
            &self,
            keyspace: Keyspace,
            range: ScanRange,
            direction: Direction,
        ) -> crate::Result<crate::KvIter<'_>> {
            self.0.scan(keyspace, range, direction)
        }
    }

    impl Engine for RefusingEngine {
        fn backend(&self) -> crate::Backend {
            crate::Backend::Memory
        }

        fn keyspace(&self, name: &str) -> crate::Result<Keyspace> {
            self.0.keyspace(name)
        }

        fn write(&self, batch: WriteBatch, durability: crate::Durability) -> crate::Result<()> {
            let bad = batch
                .ops()
                .iter()
                .any(|op| matches!(op, crate::BatchOp::Put { key, .. } if key == b"bad"));
            if bad {
                return Err(crate::Error::Fenced {
                    name: "test".to_owned(),
                    epoch: 1,
                    current: Some(2),
                });
            }
            self.0.write(batch, durability)
        }

        fn snapshot(&self) -> crate::Result<Box<dyn crate::ReadView + '_>> {
            self.0.snapshot()
        }

        fn flush(&self) -> crate::Result<()> {
            self.0.flush()
        }
    }

    #[test]
    fn a_failed_batch_refuses_the_later_batches_of_its_chain_only() {
        let engine = Arc::new(RefusingEngine(crate::MemEngine::new(&["data", "changes"])));
        let data = engine.keyspace("data").unwrap();
        let shared: Arc<dyn Engine> = engine.clone();
        let log = ChangeLog::open(
            Arc::new(GroupCommit::new(shared)),
            engine.keyspace("changes").unwrap(),
        )
        .unwrap();
        let batch = |key: &[u8]| {
            let mut batch = WriteBatch::new();
            batch.put(data, key, b"v");
            batch
        };
        let event = |name: &[u8]| vec![LogEntry::new(name.to_vec())];
        let chain = Arc::new(Chain::default());
        // Queued together, so first tried as one combined batch, which the engine refuses.
        let first = log.enqueue(batch(b"bad"), event(b"1"), Some(&chain));
        let second = log.enqueue(batch(b"after-bad"), event(b"2"), Some(&chain));
        let other = log.enqueue(batch(b"other"), event(b"3"), None);
        assert!(matches!(
            log.finish(first),
            Err(crate::Error::Fenced { .. })
        ));
        let refused = log.finish(second);
        assert!(
            matches!(
                refused,
                Err(crate::Error::EarlierWriteFailed {
                    transient: true,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(log.sync(log.finish(other).unwrap()).unwrap(), 1);
        // Later batches of the broken chain are refused too; a new chain writes.
        let later = log.append_on(batch(b"later"), event(b"4"), &chain);
        assert!(later.is_err());
        let fresh = log.append_on(batch(b"fresh"), event(b"5"), &Arc::default());
        assert_eq!(log.sync(fresh.unwrap()).unwrap(), 2);
        for (key, stored) in [
            (&b"bad"[..], false),
            (b"after-bad", false),
            (b"other", true),
            (b"later", false),
            (b"fresh", true),
        ] {
            assert_eq!(engine.get(data, key).unwrap().is_some(), stored, "{key:?}");
        }
        assert_eq!(
            log.read(0, 10).unwrap(),
            vec![(1, b"3".to_vec()), (2, b"5".to_vec())]
        );
    }

    #[test]
    fn a_batch_of_several_events_takes_consecutive_revisions() {
        let (_, log, data, _) = open_memory();
        let mut batch = WriteBatch::new();
        batch.put(data, b"a", b"1");
        let entries = (0..3).map(|i| LogEntry::new(vec![i])).collect();
        assert_eq!(log.commit(batch, entries).unwrap(), 3);
        assert_eq!(log.commit(WriteBatch::new(), Vec::new()).unwrap(), 3);
        let revisions: Vec<u64> = log.read(0, 10).unwrap().iter().map(|e| e.0).collect();
        assert_eq!(revisions, vec![1, 2, 3]);
        assert_eq!(log.read(1, 1).unwrap(), vec![(2, vec![1])]);
    }

    #[test]
    fn readers_stop_at_the_durable_head() {
        let (_, log, data, _) = open_memory();
        let mut batch = WriteBatch::new();
        batch.put(data, b"a", b"1");
        let appended = log
            .append(batch, vec![LogEntry::new(b"e".to_vec())])
            .unwrap();
        assert_eq!(appended.last_revision(), Some(1));
        // Written, visible in the engine, but not yet synced: not in the feed.
        assert_eq!(log.head(), 0);
        assert!(log.read(0, 10).unwrap().is_empty());
        assert!(matches!(
            log.read(1, 10),
            Err(FeedError::BeyondHead { after: 1, head: 0 })
        ));
        assert_eq!(log.sync(appended).unwrap(), 1);
        assert_eq!(log.read(0, 10).unwrap().len(), 1);
    }

    #[test]
    fn history_indexes_read_both_ways_and_are_pruned_with_their_events() {
        let (engine, log, data, history) = open_memory();
        for i in 0..5u8 {
            let mut batch = WriteBatch::new();
            batch.put(data, [i], b"v");
            let object = if i % 2 == 0 { b"even/" } else { b"odd_/" };
            let entry = LogEntry::new(vec![i]).index(history, object.to_vec());
            log.commit(batch, vec![entry]).unwrap();
        }
        let even = log
            .read_index(history, b"even/", 0, 10, Direction::Forward)
            .unwrap();
        assert_eq!(even, vec![(1, vec![0]), (3, vec![2]), (5, vec![4])]);
        let newest_first = log
            .read_index(history, b"even/", u64::MAX, 2, Direction::Reverse)
            .unwrap();
        assert_eq!(newest_first, vec![(5, vec![4]), (3, vec![2])]);
        let page_two = log
            .read_index(history, b"even/", 3, 2, Direction::Reverse)
            .unwrap();
        assert_eq!(page_two, vec![(1, vec![0])]);

        // Pruning everything keeps the newest event, and removes the index keys of the rest.
        log.index_pending().unwrap();
        assert_eq!(log.prune_through(u64::MAX).unwrap(), 4);
        assert_eq!(log.oldest().unwrap(), Some(5));
        let remaining: usize = engine
            .scan(history, ScanRange::all(), Direction::Forward)
            .unwrap()
            .count();
        assert_eq!(remaining, 1);
        assert!(matches!(
            log.read(3, 10),
            Err(FeedError::Compacted {
                after: 3,
                oldest: 5
            })
        ));
        assert_eq!(log.read(4, 10).unwrap(), vec![(5, vec![4])]);
    }

    #[test]
    fn reopening_continues_after_the_newest_revision() {
        let engine = EngineConfig::memory().open(&["changes"]).unwrap();
        let keyspace = engine.keyspace("changes").unwrap();
        let committer = Arc::new(GroupCommit::new(engine.clone()));
        let log = ChangeLog::open(committer.clone(), keyspace).unwrap();
        for _ in 0..3 {
            log.commit(WriteBatch::new(), vec![LogEntry::new(Vec::new())])
                .unwrap();
        }
        log.prune_through(3).unwrap();
        drop(log);
        let log = ChangeLog::open(committer, keyspace).unwrap();
        assert_eq!(log.head(), 3);
        assert_eq!(
            log.commit(WriteBatch::new(), vec![LogEntry::new(Vec::new())])
                .unwrap(),
            4
        );
    }

    #[test]
    fn watchers_wake_on_durable_events_only() {
        let (_, log, _, _) = open_memory();
        let heard = Arc::new(AtomicU64::new(0));
        let heard_by_listener = Arc::clone(&heard);
        log.subscribe(Box::new(move |head| {
            heard_by_listener.store(head, Ordering::SeqCst);
        }));
        assert_eq!(log.wait(0, Duration::from_millis(10)), 0);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| log.wait(0, Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(20));
            log.commit(WriteBatch::new(), vec![LogEntry::new(Vec::new())])
                .unwrap();
            assert_eq!(waiter.join().unwrap(), 1);
        });
        assert_eq!(heard.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_follower_reads_another_writers_events_and_continues_after_them() {
        let (engine, writer, data, _) = open_memory();
        let changes = writer.keyspace();
        let follower =
            ChangeLog::open(Arc::new(GroupCommit::new(engine.clone())), changes).unwrap();
        for key in [b"a", b"b", b"c"] {
            let mut batch = WriteBatch::new();
            batch.put(data, key, b"v");
            writer
                .commit(batch, vec![LogEntry::new(key.to_vec())])
                .unwrap();
        }
        // The follower's head is what it applied; the database holds more.
        assert_eq!(follower.head(), 0);
        assert_eq!(follower.newest_stored().unwrap(), 3);
        assert!(follower.read(0, 10).unwrap().is_empty());
        let events = follower.read_stored(0, 2, 10).unwrap();
        assert_eq!(events, vec![(1, b"a".to_vec()), (2, b"b".to_vec())]);
        let heard = Arc::new(AtomicU64::new(0));
        let ear = Arc::clone(&heard);
        follower.subscribe(Box::new(move |head| ear.store(head, Ordering::SeqCst)));
        follower.follow_to(2);
        assert_eq!((follower.head(), heard.load(Ordering::SeqCst)), (2, 2));
        assert_eq!(follower.wait(1, Duration::ZERO), 2);
        follower.follow_to(1);
        assert_eq!(follower.head(), 2, "the head never goes back");
        follower.follow_to(3);
        // Promoted: its first revision follows the other writer's last, none reused.
        let mut batch = WriteBatch::new();
        batch.put(data, b"d", b"v");
        assert_eq!(
            follower
                .commit(batch, vec![LogEntry::new(b"d".to_vec())])
                .unwrap(),
            4
        );
        assert_eq!(follower.read(0, 10).unwrap().len(), 4);
    }

    #[test]
    fn a_failed_sync_takes_no_head_and_a_crash_loses_change_and_event_together() {
        // Operations: the open's flush (1), the first commit's write (2) and flush (3), the
        // second commit's write (4) and its failing flush (5).
        let engine = Arc::new(FaultyEngine::new(&["data", "changes"]).fail_at(5, Fault::Sync));
        let data = engine.keyspace("data").unwrap();
        let keyspace = engine.keyspace("changes").unwrap();
        let shared: Arc<dyn crate::Engine> = engine.clone();
        let log = ChangeLog::open(Arc::new(GroupCommit::new(shared)), keyspace).unwrap();
        // The operations are counted: the indexer's write would come in between.
        log.set_background_indexing(false);
        for key in [b"a", b"b"] {
            let mut batch = WriteBatch::new();
            batch.put(data, key, b"v");
            let result = log.commit(batch, vec![LogEntry::new(key.to_vec())]);
            assert_eq!(result.is_ok(), key == b"a", "{result:?}");
        }
        assert_eq!(log.head(), 1);
        assert_eq!(log.read(0, 10).unwrap(), vec![(1, b"a".to_vec())]);

        let restarted: Arc<dyn crate::Engine> = Arc::new(engine.crash());
        assert_eq!(restarted.get(data, b"b").unwrap(), None);
        let log = ChangeLog::open(Arc::new(GroupCommit::new(restarted)), keyspace).unwrap();
        assert_eq!(log.head(), 1);
        assert_eq!(log.read(0, 10).unwrap(), vec![(1, b"a".to_vec())]);
    }
}
