//! The change log's history indexer: writes the history keys of events after their write.
//!
//! An event's batch carries the change and the event only; the event's value lists its
//! history keys (`(keyspace, prefix)`, as [`crate::LogEntry::index`] gave them). The indexer
//! reads durable events after the log's *indexed mark* and writes their history keys in its
//! own batches, each with the new mark (the key of revision 0 in the log's keyspace, never an
//! event), so a crash between an event and its indexing leaves a mark below it and the next
//! run indexes it again (writing an empty value twice changes nothing). The feed's writers pay
//! one key per event; the history keys of many events go to the engine as one batch, off the
//! writers' path.
//!
//! Readers never wait for it: [`crate::ChangeLog::read_index`] reads the keys up to the mark
//! and matches the events above it (the *tail*, a few milliseconds of writes) against their
//! lists. A process that does not write (a follower) never indexes: the tail is read the same
//! way, and the writer's indexer moves the mark.
//!
//! A log without a mark was written by builds that wrote history keys in the write's batch:
//! everything in it is indexed. The first write of this build puts the mark (the newest
//! revision before it) in its batch.

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
        let mut batch = WriteBatch::new();
        let mut last = mark;
        let mut count = 0;
        let events = committer
            .engine()
            .scan(keyspace, range, Direction::Forward)?;
        for item in events.take(CHUNK) {
            count += 1;
            let (key, value) = item?;
            let revision = decode_revision(&key).ok_or(FeedError::Corrupt { revision: 0 })?;
            let decoded = decode_value(&value).ok_or(FeedError::Corrupt { revision })?;
            for (index_keyspace, prefix) in decoded.indexes {
                let mut index_key = Vec::with_capacity(prefix.len() + 8);
                index_key.extend_from_slice(prefix);
                index_key.extend_from_slice(&key);
                batch.put(index_keyspace, &index_key, b"");
            }
            last = revision;
        }
        // A short chunk reached `through` (events pruned meanwhile leave gaps: the mark
        // moves past them).
        let reached = if count < CHUNK { through } else { last };
        batch.put(keyspace, MARK_KEY, revision_key(reached));
        // Buffered: a crash that loses this batch loses its mark too, and the events are
        // indexed again; a later synced write of the store makes it durable.
        let _written = committer.write(batch)?;
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
        let bound = |revision: u64| {
            let mut key = prefix.to_vec();
            key.extend_from_slice(&revision_key(revision));
            key
        };
        // Revisions in (low, high]: the range asked for.
        let (low, high) = match direction {
            Direction::Forward => (after, head),
            Direction::Reverse => (0, after.saturating_sub(1).min(head)),
        };
        if low >= high || limit == 0 {
            return Ok(Vec::new());
        }
        let range = ScanRange::between(&bound(low + 1), &bound(high.min(mark) + 1));
        let engine = self.committer.engine();
        let mut revisions = Vec::new();
        if low < mark {
            for item in engine.scan(keyspace, range, direction)?.take(limit) {
                let (key, _) = item?;
                let tail = key.get(prefix.len()..).unwrap_or_default();
                revisions.push(decode_revision(tail).ok_or(FeedError::Corrupt { revision: 0 })?);
            }
        }
        let keys: Vec<[u8; 8]> = revisions.iter().map(|&r| revision_key(r)).collect();
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let values = engine.multi_get(self.keyspace, &key_refs)?;
        let mut events = revisions
            .into_iter()
            .zip(values)
            .map(|(revision, value)| {
                let value = value.ok_or(FeedError::Corrupt { revision })?;
                let decoded = decode_value(&value).ok_or(FeedError::Corrupt { revision })?;
                Ok((revision, decoded.payload.to_vec()))
            })
            .collect::<Result<Vec<_>, FeedError>>()?;
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
mod tests {
    use crate::{ChangeLog, Engine, FaultyEngine, LogEntry};

    use super::*;

    struct Setup {
        engine: Arc<FaultyEngine>,
        data: Keyspace,
        changes: Keyspace,
        history: Keyspace,
    }

    fn setup() -> Setup {
        let engine = Arc::new(FaultyEngine::new(&["data", "changes", "history"]));
        Setup {
            data: engine.keyspace("data").unwrap(),
            changes: engine.keyspace("changes").unwrap(),
            history: engine.keyspace("history").unwrap(),
            engine,
        }
    }

    fn open(engine: Arc<dyn Engine>, changes: Keyspace, background: bool) -> Arc<ChangeLog> {
        let log = ChangeLog::open(Arc::new(GroupCommit::new(engine)), changes).unwrap();
        log.set_background_indexing(background);
        log
    }

    /// Commits one event per name, indexed under `all/` and under the name.
    fn commit(log: &ChangeLog, s: &Setup, names: &[&str]) {
        for name in names {
            let mut batch = WriteBatch::new();
            batch.put(s.data, name.as_bytes(), b"v");
            let entry = LogEntry::new(name.as_bytes().to_vec())
                .index(s.history, b"all/".to_vec())
                .index(s.history, format!("{name}/").into_bytes());
            log.commit(batch, vec![entry]).unwrap();
        }
    }

    fn history(log: &ChangeLog, s: &Setup, prefix: &[u8], direction: Direction) -> Vec<u64> {
        let after = match direction {
            Direction::Forward => 0,
            Direction::Reverse => u64::MAX,
        };
        let events = log.read_index(s.history, prefix, after, 100, direction);
        events
            .unwrap()
            .into_iter()
            .map(|(revision, _)| revision)
            .collect()
    }

    fn history_keys(engine: &dyn Engine, s: &Setup) -> usize {
        engine
            .scan(s.history, ScanRange::all(), Direction::Forward)
            .unwrap()
            .count()
    }

    #[test]
    fn a_write_carries_its_event_only_and_is_in_its_history_at_once() {
        let s = setup();
        let log = open(s.engine.clone(), s.changes, false);
        commit(&log, &s, &["a", "b", "a"]);
        // No history key yet: the reads match the unindexed events.
        assert_eq!(history_keys(&*s.engine, &s), 0);
        assert_eq!(log.indexed_through().unwrap(), 0);
        assert_eq!(history(&log, &s, b"a/", Direction::Forward), vec![1, 3]);
        assert_eq!(
            history(&log, &s, b"all/", Direction::Reverse),
            vec![3, 2, 1]
        );
        let page = log.read_index(s.history, b"all/", 3, 1, Direction::Reverse);
        assert_eq!(page.unwrap(), vec![(2, b"b".to_vec())]);

        // Indexing part of the history gives the same answers, from keys and tail together.
        assert_eq!(log.index_pending().unwrap(), 3);
        commit(&log, &s, &["a"]);
        assert_eq!(history_keys(&*s.engine, &s), 6);
        assert_eq!(log.indexed_through().unwrap(), 3);
        assert_eq!(history(&log, &s, b"a/", Direction::Forward), vec![1, 3, 4]);
        assert_eq!(history(&log, &s, b"a/", Direction::Reverse), vec![4, 3, 1]);
        let page = log.read_index(s.history, b"all/", 2, 2, Direction::Forward);
        let revisions: Vec<u64> = page.unwrap().into_iter().map(|(r, _)| r).collect();
        assert_eq!(revisions, vec![3, 4]);
        assert_eq!(history(&log, &s, b"b/", Direction::Reverse), vec![2]);
    }

    #[test]
    fn a_crash_between_the_change_and_its_indexing_leaves_a_history_indexed_again() {
        let s = setup();
        let log = open(s.engine.clone(), s.changes, false);
        commit(&log, &s, &["a", "b"]);
        // The indexing batch is buffered: the crash loses it, keys and mark together.
        log.index_pending().unwrap();
        assert_eq!(history_keys(&*s.engine, &s), 4);
        drop(log);
        let restarted: Arc<dyn Engine> = Arc::new(s.engine.crash());
        assert_eq!(history_keys(&*restarted, &s), 0);

        let log = open(restarted.clone(), s.changes, true);
        assert_eq!(log.indexed_through().unwrap(), 0);
        assert_eq!(history(&log, &s, b"all/", Direction::Forward), vec![1, 2]);
        // The first durable write of the restarted writer wakes its indexer, which indexes
        // from the mark: the events of before the crash too.
        commit(&log, &s, &["c"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while log.indexed_through().unwrap() < 3 {
            assert!(
                Instant::now() < deadline,
                "the indexer did not reach the head"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(log.indexing_error(), None);
        assert_eq!(history_keys(&*restarted, &s), 6);
        assert_eq!(
            history(&log, &s, b"all/", Direction::Reverse),
            vec![3, 2, 1]
        );
        // Indexing again writes the same keys: nothing changes.
        restarted
            .write(
                {
                    let mut batch = WriteBatch::new();
                    batch.put(s.changes, MARK_KEY, revision_key(0));
                    batch
                },
                crate::Durability::Sync,
            )
            .unwrap();
        assert_eq!(log.index_pending().unwrap(), 3);
        assert_eq!(history_keys(&*restarted, &s), 6);
    }

    #[test]
    fn pruning_deletes_the_history_keys_of_indexed_and_unindexed_events() {
        let s = setup();
        let log = open(s.engine.clone(), s.changes, false);
        commit(&log, &s, &["a", "b"]);
        log.index_pending().unwrap();
        commit(&log, &s, &["a", "c"]);
        assert_eq!(log.prune_through(3).unwrap(), 3);
        // Only the newest event is left, and indexing it leaves its keys only.
        assert_eq!(log.index_pending().unwrap(), 4);
        assert_eq!(history_keys(&*s.engine, &s), 2);
        assert_eq!(history(&log, &s, b"all/", Direction::Forward), vec![4]);
        assert_eq!(
            history(&log, &s, b"a/", Direction::Forward),
            Vec::<u64>::new()
        );
        assert_eq!(log.oldest().unwrap(), Some(4));
    }

    #[test]
    fn a_log_of_an_earlier_build_is_read_whole_and_marked_by_the_first_write() {
        let s = setup();
        // Two events as builds before the indexer wrote them: history keys in their batch,
        // no mark.
        let mut batch = WriteBatch::new();
        for (revision, name) in [(1u64, "a"), (2, "b")] {
            let entry = LogEntry::new(name.as_bytes().to_vec()).index(s.history, b"all/".to_vec());
            let mut key = b"all/".to_vec();
            key.extend_from_slice(&revision_key(revision));
            batch.put(s.history, &key, b"");
            let value = crate::changelog::encode_value(&entry);
            batch.put(s.changes, revision_key(revision), value);
        }
        s.engine.write(batch, crate::Durability::Sync).unwrap();

        let log = open(s.engine.clone(), s.changes, false);
        assert_eq!(log.head(), 2);
        assert_eq!(log.oldest().unwrap(), Some(1));
        assert_eq!(log.indexed_through().unwrap(), 2);
        assert_eq!(history(&log, &s, b"all/", Direction::Forward), vec![1, 2]);
        commit(&log, &s, &["c"]);
        // The first write put the mark at the revision before it.
        assert_eq!(log.indexed_through().unwrap(), 2);
        assert_eq!(
            history(&log, &s, b"all/", Direction::Forward),
            vec![1, 2, 3]
        );
        assert_eq!(log.index_pending().unwrap(), 3);
        assert_eq!(history_keys(&*s.engine, &s), 4);
        assert_eq!(log.read(0, 10).unwrap().len(), 3);
    }
}
