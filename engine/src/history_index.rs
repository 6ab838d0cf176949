//! The change log's history indexer: writes the history keys of events after their write.
//!
//! An event's batch carries the change and the event only; the event's value lists its
//! history keys (`(keyspace, prefix)`, as [`crate::LogEntry::index`] gave them). The indexer
//! reads durable events after the log's *indexed mark* and writes their history keys in its
//! own batches, each with the new mark (the key of revision 0 in the log's keyspace, never an
//! event), so a crash between an event and its indexing leaves a mark below it and the next
//! run indexes it again (a crash loses keys and mark together). The feed's writers pay one
//! key per event; the history of many events goes to the engine as one batch, off the
//! writers' path, with **one key per prefix per batch** (a *group*): `prefix ++` the group's
//! highest revision, its value the other revisions as varint gaps ([`group_entry`]). A key
//! with an empty value is a group of one, as every key of the builds that wrote one per
//! event.
//!
//! Readers never wait for it: [`crate::ChangeLog::read_index`] reads the keys up to the mark
//! and matches the events above it (the *tail*, a few milliseconds of writes) against their
//! lists. A process that does not write (a follower) never indexes: the tail is read the same
//! way, and the writer's indexer moves the mark.
//!
//! A log without a mark was written by builds that wrote history keys in the write's batch:
//! everything in it is indexed. The first write of this build puts the mark (the newest
//! revision before it) in its batch.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::changelog::{decode_revision, decode_value, revision_key};
use crate::{ChangeLog, Direction, FeedError, GroupCommit, Keyspace, ScanRange, WriteBatch};

/// The key of the indexed mark in the log's keyspace: revision 0, which no event takes.
pub(crate) const MARK_KEY: [u8; 8] = [0; 8];

/// Events indexed per batch of the indexer: bounds the batch (a few hundred KiB).
const CHUNK: usize = 1024;

/// How long the indexer lets events gather after a wake-up before indexing them, unless
/// `CHUNK` are waiting: larger batches cost the engine less per key, and the readers' tail
/// stays short.
const GATHER: Duration = Duration::from_millis(10);

/// How long the indexer waits before trying again after an engine error.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// The newest durable revision the writer reported.
    target: u64,
    /// The revision the indexer reached (in memory; the engine's mark is the truth).
    done: u64,
    /// Whether the background thread indexes (on unless a test turned it off).
    off: bool,
    /// Whether the thread waits for work (only then does an advance wake it: while it lets
    /// events gather, waking it at every write would cost each write a futex call).
    idle: bool,
    stop: bool,
    /// The last error of the background thread, until a later run succeeds.
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Held while indexing a range and while pruning, so that no history key is written for
    /// an event being pruned.
    indexing: Mutex<()>,
}

/// The indexer of one log: its background thread and the lock its runs take.
#[derive(Debug, Default)]
pub(crate) struct Indexer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The mark stored in `keyspace`: `None` when the log has none (see the module's docs).
pub(crate) fn read_mark(
    committer: &GroupCommit,
    keyspace: Keyspace,
) -> Result<Option<u64>, FeedError> {
    match committer.engine().get(keyspace, &MARK_KEY)? {
        None => Ok(None),
        Some(value) => decode_revision(&value)
            .map(Some)
            .ok_or(FeedError::Corrupt { revision: 0 }),
    }
}

/// The history key of a group (`prefix ++` its highest revision) and its value: the group's
/// other revisions as LEB128 varint gaps, each from the revision above it, newest first. A
/// group of one has an empty value, as every key of the builds that wrote one key per event.
/// `revisions` is ascending and not empty.
pub(crate) fn group_entry(prefix: &[u8], revisions: &[u64]) -> (Vec<u8>, Vec<u8>) {
    let high = revisions.last().copied().unwrap_or(0);
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&revision_key(high));
    let mut value = Vec::new();
    for pair in revisions.windows(2).rev() {
        if let [lower, upper] = pair {
            let mut gap = upper - lower;
            while gap >= 0x80 {
                // Seven bits a byte, the high bit set while more follow.
                value.push((gap & 0x7f) as u8 | 0x80);
                gap >>= 7;
            }
            value.push(gap as u8);
        }
    }
    (key, value)
}

/// The revisions of the group stored under highest revision `high` with `value`, ascending;
/// `None` for a malformed value (a truncated varint, a gap of 0 or past revision 1).
pub(crate) fn decode_group(high: u64, value: &[u8]) -> Option<Vec<u64>> {
    let mut revisions = vec![high];
    let mut current = high;
    let mut gap = 0u64;
    let mut shift = 0u32;
    for &byte in value {
        gap |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 != 0 {
            shift += 7;
            if shift >= 64 {
                return None;
            }
            continue;
        }
        current = current.checked_sub(gap).filter(|&r| r >= 1 && gap > 0)?;
        revisions.push(current);
        gap = 0;
        shift = 0;
    }
    if shift != 0 {
        return None;
    }
    revisions.reverse();
    Some(revisions)
}

/// The key `prefix ++ revision`: a bound of the group keys of `prefix`.
fn group_bound(prefix: &[u8], revision: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&revision_key(revision));
    key
}

/// Adds to `batch` the deletion of every event's history up to `through` under `prefix` in
/// `keyspace`: the groups whose highest revision is at most `through` are deleted, and the
/// group straddling it is rewritten with its kept revisions. Call it under [`Indexer::lock`],
/// with every event up to `through` deleted in the same batch.
pub(crate) fn prune_group_keys(
    engine: &dyn crate::Engine,
    batch: &mut WriteBatch,
    keyspace: Keyspace,
    prefix: &[u8],
    through: u64,
) -> Result<(), FeedError> {
    let pruned = ScanRange::between(&group_bound(prefix, 0), &group_bound(prefix, through + 1));
    for item in engine.scan(keyspace, pruned, Direction::Forward)? {
        let (key, _) = item?;
        batch.delete(keyspace, key);
    }
    let kept = ScanRange::between(
        &group_bound(prefix, through + 1),
        &group_bound(prefix, u64::MAX),
    );
    if let Some(item) = engine.scan(keyspace, kept, Direction::Forward)?.next() {
        let (key, value) = item?;
        let high = key
            .get(prefix.len()..)
            .and_then(decode_revision)
            .ok_or(FeedError::Corrupt { revision: 0 })?;
        let revisions = decode_group(high, &value).ok_or(FeedError::Corrupt { revision: high })?;
        if revisions.first().is_some_and(|&r| r <= through) {
            let kept: Vec<u64> = revisions.into_iter().filter(|&r| r > through).collect();
            let (key, value) = group_entry(prefix, &kept);
            batch.put(keyspace, key, value);
        }
    }
    Ok(())
}

/// Indexes the events after the mark up to `through`, in batches of [`CHUNK`] events, each
/// with its new mark. Returns the mark reached. Call it under [`Indexer::lock`].
fn index_through(
    committer: &GroupCommit,
    keyspace: Keyspace,
    through: u64,
) -> Result<u64, FeedError> {
    let Some(mut mark) = read_mark(committer, keyspace)? else {
        // No mark: the log's events were indexed in their own batches.
        return Ok(through);
    };
    while mark < through {
        let range = ScanRange::between(&revision_key(mark + 1), &revision_key(through + 1));
        let mut last = mark;
        let events = committer
            .engine()
            .scan(keyspace, range, Direction::Forward)?
            .take(CHUNK)
            .collect::<crate::Result<Vec<_>>>()?;
        let count = events.len();
        // One key per history prefix for the whole chunk: its revisions in this chunk,
        // ascending (the scan's order).
        let mut groups: HashMap<(Keyspace, &[u8]), Vec<u64>> = HashMap::new();
        for (key, value) in &events {
            let revision = decode_revision(key).ok_or(FeedError::Corrupt { revision: 0 })?;
            let decoded = decode_value(value).ok_or(FeedError::Corrupt { revision })?;
            for index in decoded.indexes {
                groups.entry(index).or_default().push(revision);
            }
            last = revision;
        }
        let mut batch = WriteBatch::new();
        for ((index_keyspace, prefix), revisions) in &groups {
            let (key, value) = group_entry(prefix, revisions);
            batch.put(*index_keyspace, key, value);
        }
        // A short chunk reached `through` (events pruned meanwhile leave gaps: the mark
        // moves past them).
        let reached = if count < CHUNK { through } else { last };
        batch.put(keyspace, MARK_KEY, revision_key(reached));
        // Derived: a crash or a database failover that loses this batch loses its mark too,
        // and the next run, which reads the mark again, indexes the events again; a later
        // synced write of the store makes it durable. (Buffered, a failover that lost it
        // would stop a PostgreSQL-backed writer until its restart.)
        committer
            .engine()
            .write(batch, crate::Durability::Derived)?;
        mark = reached;
    }
    Ok(mark)
}

/// The history reads and the indexer's controls of [`ChangeLog`].
impl ChangeLog {
    /// Up to `limit` events recorded under the history index `prefix` in `keyspace`, with a
    /// revision above `after` (forward) or below it (reverse; `after = u64::MAX` starts at the
    /// newest), never past the head. Every durable event is found, indexed or not: the keys
    /// cover the events up to the indexer's mark, and the events above it (the tail) are
    /// matched against their lists of history keys here.
    ///
    /// # Errors
    /// The engine's error, or [`FeedError::Corrupt`] for an index key without its event.
    pub fn read_index(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        after: u64,
        limit: usize,
        direction: Direction,
    ) -> Result<Vec<(u64, Vec<u8>)>, FeedError> {
        let head = self.head();
        // Read before the keys: the indexer writes keys and mark in one batch, so every
        // event up to this mark has its key now.
        let mark = read_mark(&self.committer, self.keyspace)?.unwrap_or(u64::MAX);
        // Revisions in (low, high]: the range asked for.
        let (low, high) = match direction {
            Direction::Forward => (after, head),
            Direction::Reverse => (0, after.saturating_sub(1).min(head)),
        };
        if low >= high || limit == 0 {
            return Ok(Vec::new());
        }
        let revisions = if low < mark {
            self.indexed_revisions(
                keyspace,
                prefix,
                low,
                high.min(mark),
                mark,
                limit,
                direction,
            )?
        } else {
            Vec::new()
        };
        let engine = self.committer.engine();
        let keys: Vec<[u8; 8]> = revisions.iter().map(|&r| revision_key(r)).collect();
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let values = engine.multi_get(self.keyspace, &key_refs)?;
        let mut events = Vec::with_capacity(revisions.len());
        let mut oldest = None;
        for (revision, value) in revisions.into_iter().zip(values) {
            let Some(value) = value else {
                // A group partly pruned since this read began has revisions whose events
                // are gone: skipped, like those pruned; any other missing event is corrupt.
                let oldest = match oldest {
                    Some(oldest) => oldest,
                    None => *oldest.insert(self.oldest()?.unwrap_or(u64::MAX)),
                };
                if revision < oldest {
                    continue;
                }
                return Err(FeedError::Corrupt { revision });
            };
            let decoded = decode_value(&value).ok_or(FeedError::Corrupt { revision })?;
            events.push((revision, decoded.payload.to_vec()));
        }
        if mark < high {
            let tail = self.match_tail(keyspace, prefix, low.max(mark), high)?;
            events.extend(tail);
            match direction {
                Direction::Forward => events.sort_unstable_by_key(|(revision, _)| *revision),
                Direction::Reverse => {
                    events.sort_unstable_by_key(|(revision, _)| std::cmp::Reverse(*revision));
                }
            }
            events.truncate(limit);
        }
        Ok(events)
    }

    /// Up to `limit` revisions in `(low, top]` from the group keys of `prefix` in `keyspace`
    /// (`top` at most `mark`, above which no key is written), in `direction`'s order.
    /// Forward, the scan starts at the first group whose highest revision is above `low`; in
    /// reverse it ends with the group holding `top` (the first whose highest revision is at
    /// least `top`). A revision out of order (groups of an indexing repeated over other
    /// bounds) is skipped.
    #[allow(clippy::too_many_arguments)]
    fn indexed_revisions(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        low: u64,
        top: u64,
        mark: u64,
        limit: usize,
        direction: Direction,
    ) -> Result<Vec<u64>, FeedError> {
        let engine = self.committer.engine();
        let end = group_bound(prefix, mark.saturating_add(1));
        let decode = |(key, value): (Vec<u8>, Vec<u8>)| {
            let high = key
                .get(prefix.len()..)
                .and_then(decode_revision)
                .ok_or(FeedError::Corrupt { revision: 0 })?;
            decode_group(high, &value).ok_or(FeedError::Corrupt { revision: high })
        };
        let mut revisions = Vec::new();
        match direction {
            Direction::Forward => {
                let range = ScanRange::between(&group_bound(prefix, low + 1), &end);
                'groups: for item in engine.scan(keyspace, range, direction)? {
                    for revision in decode(item?)? {
                        if revision > top {
                            break 'groups;
                        }
                        if revision > low && revisions.last().is_none_or(|&last| revision > last) {
                            revisions.push(revision);
                            if revisions.len() == limit {
                                break 'groups;
                            }
                        }
                    }
                }
            }
            Direction::Reverse => {
                let holding_top = ScanRange::between(&group_bound(prefix, top), &end);
                let first_above = engine
                    .scan(keyspace, holding_top, Direction::Forward)?
                    .next()
                    .transpose()?;
                let end = match first_above {
                    Some((mut key, _)) => {
                        key.push(0);
                        key
                    }
                    None => group_bound(prefix, top),
                };
                let range = ScanRange::between(&group_bound(prefix, low + 1), &end);
                'groups: for item in engine.scan(keyspace, range, direction)? {
                    for revision in decode(item?)?.into_iter().rev() {
                        if revision <= low {
                            break 'groups;
                        }
                        if revision <= top && revisions.last().is_none_or(|&last| revision < last) {
                            revisions.push(revision);
                            if revisions.len() == limit {
                                break 'groups;
                            }
                        }
                    }
                }
            }
        }
        Ok(revisions)
    }

    /// The events in `(after, through]` whose history keys include `prefix` in `keyspace`:
    /// those the indexer has not reached.
    fn match_tail(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        after: u64,
        through: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, FeedError> {
        let range = ScanRange::between(&revision_key(after + 1), &revision_key(through + 1));
        let mut events = Vec::new();
        let scan = self
            .committer
            .engine()
            .scan(self.keyspace, range, Direction::Forward)?;
        for item in scan {
            let (key, value) = item?;
            let revision = decode_revision(&key).ok_or(FeedError::Corrupt { revision: 0 })?;
            let decoded = decode_value(&value).ok_or(FeedError::Corrupt { revision })?;
            if decoded
                .indexes
                .iter()
                .any(|&(k, p)| k == keyspace && p == prefix)
            {
                events.push((revision, decoded.payload.to_vec()));
            }
        }
        Ok(events)
    }

    /// Writes the history keys of every event up to the head now, on the caller's thread
    /// (the background indexer does it shortly after each write); returns the revision
    /// indexed through. Only the writer may call it: it writes.
    ///
    /// # Errors
    /// The engine's error, or [`FeedError::Corrupt`] for an undecodable event.
    pub fn index_pending(&self) -> Result<u64, FeedError> {
        self.indexer
            .index_now(&self.committer, self.keyspace, self.head())
    }

    /// The revision through which the history keys are written (the head when the log holds
    /// no mark: everything in it was indexed in its own batch).
    ///
    /// # Errors
    /// The engine's error, or [`FeedError::Corrupt`] for a malformed mark.
    pub fn indexed_through(&self) -> Result<u64, FeedError> {
        Ok(read_mark(&self.committer, self.keyspace)?.unwrap_or_else(|| self.head()))
    }

    /// Turns the background indexer off or on again (on from the start; it starts with this
    /// process's first durable event, so a follower never runs it). Off, the history keys are
    /// written only by [`ChangeLog::index_pending`]: for tests that count the engine's writes.
    pub fn set_background_indexing(&self, on: bool) {
        self.indexer.set_background(on);
    }

    /// The background indexer's last error, while its runs fail (they are retried; readers
    /// still find every event).
    pub fn indexing_error(&self) -> Option<String> {
        self.indexer.error()
    }
}

impl Indexer {
    /// The lock of an indexing run, for pruning.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.shared.indexing)
    }

    /// Indexes every event up to `through` now, on the caller's thread.
    pub(crate) fn index_now(
        &self,
        committer: &GroupCommit,
        keyspace: Keyspace,
        through: u64,
    ) -> Result<u64, FeedError> {
        let _indexing = self.lock();
        let reached = index_through(committer, keyspace, through)?;
        let mut state = lock(&self.shared.state);
        state.done = state.done.max(reached);
        Ok(reached)
    }

    /// Turns the background thread's indexing on or off (on by default).
    pub(crate) fn set_background(&self, on: bool) {
        lock(&self.shared.state).off = !on;
        self.shared.wake.notify_all();
    }

    /// The background thread's last error, if its last run failed.
    pub(crate) fn error(&self) -> Option<String> {
        lock(&self.shared.state).error.clone()
    }

    /// The writer made events up to `head` durable: wakes the thread (starting it on the first
    /// call), which indexes them.
    pub(crate) fn advanced(&self, head: u64, committer: &Arc<GroupCommit>, keyspace: Keyspace) {
        let wake = {
            let mut state = lock(&self.shared.state);
            if head <= state.target {
                return;
            }
            state.target = head;
            if state.off {
                return;
            }
            state.idle || head - state.done >= CHUNK as u64
        };
        let mut thread = lock(&self.thread);
        if thread.is_none() {
            let shared = Arc::clone(&self.shared);
            let committer = Arc::clone(committer);
            let spawned = std::thread::Builder::new()
                .name("history-indexer".into())
                .spawn(move || run(&shared, &committer, keyspace));
            match spawned {
                Ok(handle) => *thread = Some(handle),
                // Without the thread the tail grows and readers match it; the next
                // advance tries again.
                Err(error) => lock(&self.shared.state).error = Some(error.to_string()),
            }
        }
        drop(thread);
        if wake {
            self.shared.wake.notify_all();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(handle) = lock(&self.thread).take() {
            // The thread holds the engine: the store is closed only once it has stopped.
            let _ = handle.join();
        }
    }
}

/// The background thread: indexes up to the writer's durable head after each advance.
fn run(shared: &Shared, committer: &GroupCommit, keyspace: Keyspace) {
    loop {
        let target = {
            let mut state = lock(&shared.state);
            while !state.stop && (state.off || state.done >= state.target) {
                state.idle = true;
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.idle = false;
            let deadline = Instant::now() + GATHER;
            while !state.stop && state.target - state.done < CHUNK as u64 {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                state = shared
                    .wake
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if state.stop {
                return;
            }
            state.target
        };
        let outcome = {
            let _indexing = lock(&shared.indexing);
            index_through(committer, keyspace, target)
        };
        let mut state = lock(&shared.state);
        match outcome {
            Ok(reached) => {
                state.done = state.done.max(reached);
                state.error = None;
            }
            Err(error) => {
                state.error = Some(error.to_string());
                let _ = shared
                    .wake
                    .wait_timeout(state, RETRY)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

#[cfg(test)]
mod tests;
