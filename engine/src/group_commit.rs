//! Group commit: concurrent writers share fsyncs.
//!
//! A store makes its decisions under its own locks and writes its batch with
//! [`GroupCommit::write`] ([`Durability::Buffered`]) while still holding them: the batch is
//! applied (visible to the next lock holder) and appended to the engine's log in order, but not
//! yet fsynced. It then releases its locks and calls [`GroupCommit::sync`], which returns once a
//! log sync that *started after the batch was written* has completed. One caller leads each
//! sync (it calls [`Engine::flush`]); everyone who wrote before that sync started is covered by
//! it, so many concurrent writers pay for one fsync, and a writer that arrives while a sync is
//! running waits for it and then leads (or joins) the next one: at most two syncs' time.
//!
//! A caller that keeps its locks until the batch is durable anyway (or holds none) calls
//! [`GroupCommit::commit`] instead: alone, it writes its batch synced in one engine call (which
//! covers every batch written before it); while a sync runs, it joins the next group.
//!
//! Because the log is ordered, a batch that depends on an earlier decision is never durable
//! without it, and nothing is acknowledged before it is durable. Locks need not be held across
//! an fsync, so the writers of one store overlap.
//!
//! A failed sync poisons the engine (the [`Engine::flush`] contract); the leader gets the
//! backend's error, and every caller waiting on that sync or any later one gets
//! [`Error::Poisoned`] with its cause, so no writer whose batch was not covered by a successful
//! sync is told it is durable.
//!
//! ```
//! use std::sync::Arc;
//! use engine::{EngineConfig, GroupCommit, WriteBatch};
//!
//! # fn main() -> Result<(), engine::Error> {
//! let engine = EngineConfig::memory().open(&["k"])?;
//! let keyspace = engine.keyspace("k")?;
//! let committer = GroupCommit::new(Arc::clone(&engine));
//! let mut batch = WriteBatch::new();
//! batch.put(keyspace, b"key", b"value");
//! // Under the caller's locks: write in order, visible at once, not yet durable.
//! let written = committer.write(batch)?;
//! // After releasing them: wait for a sync that covers the batch.
//! committer.sync(written)?;
//! assert_eq!(engine.get(keyspace, b"key")?.as_deref(), Some(&b"value"[..]));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sleepers::{Sleepers, Wakeups};
use crate::{Durability, Engine, Error, Result, WriteBatch};

#[derive(Debug, Default)]
struct State {
    /// Batches written so far (a ticket counter).
    written: u64,
    /// Every batch with a ticket up to this one is durable.
    synced: u64,
    /// Whether a sync is in progress.
    syncing: bool,
    /// The message of the sync that failed: every later call fails with it.
    failed: Option<String>,
    /// Syncs completed (flushes and synced writes), for tests and statistics.
    syncs: u64,
    /// Batches written (buffered or synced), for statistics.
    batches: u64,
    /// Time spent in the engine's syncs (flushes and synced writes), for statistics.
    syncing_time: Duration,
    /// Writers waiting for a sync, by ticket: a sync wakes those it covered and one more to
    /// lead the next (`sleepers.rs` says why not a condition variable).
    sleepers: Sleepers<()>,
}

impl State {
    /// After a sync or a failure: the writers it settled (woken with an answer: no need to
    /// look at the state again), and one to lead the next sync. Wake them once the lock is
    /// released.
    fn settled(&mut self) -> Wakeups<()> {
        if self.failed.is_some() {
            self.sleepers.take_all()
        } else {
            self.sleepers.take_below(self.synced + 1, |_| Some(()))
        }
    }
}

/// The group fsync of one store over one engine.
pub struct GroupCommit {
    engine: Arc<dyn Engine>,
    state: Mutex<State>,
}

impl fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit")
            .field("backend", &self.engine.backend())
            .field("state", &*self.lock())
            .finish()
    }
}

/// A batch that was written but may not be durable yet: hand it to [`GroupCommit::sync`].
#[derive(Debug)]
#[must_use = "a written batch is durable only after GroupCommit::sync"]
pub struct Written(u64);

impl Written {
    /// Another handle on the same write, for each writer whose batch it carried
    /// ([`crate::ChangeLog::append`] writes several writers' batches as one).
    pub(crate) fn share(&self) -> Written {
        Written(self.0)
    }
}

impl GroupCommit {
    /// A committer over `engine`. Several committers over one engine are correct (each sync
    /// covers every write before it), they just share less.
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        GroupCommit {
            engine,
            state: Mutex::new(State::default()),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `batch` (atomically, visible at once) without waiting for the disk. Call it
    /// under the locks of the decisions the batch carries, so batches reach the log in the
    /// order of those decisions.
    ///
    /// # Errors
    /// The engine's write error (the engine is poisoned then), or [`Error::Poisoned`].
    pub fn write(&self, batch: WriteBatch) -> Result<Written> {
        self.engine.write(batch, Durability::Buffered)?;
        let mut state = self.lock();
        state.written += 1;
        state.batches += 1;
        Ok(Written(state.written))
    }

    /// Returns once `written` is durable, sharing the fsync with concurrent callers.
    ///
    /// # Errors
    /// The backend's error for the caller that led the failed sync; [`Error::Poisoned`] naming
    /// that failure for every other caller not covered by an earlier successful sync.
    pub fn sync(&self, written: Written) -> Result<()> {
        let ticket = written.0;
        let mut state = self.lock();
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if let Some(cause) = &state.failed {
                let cause = cause.clone();
                drop(state);
                return Err(self.poisoned(cause));
            }
            if !state.syncing {
                state.syncing = true;
                let target = state.written;
                drop(state);
                let started = Instant::now();
                let result = self.engine.flush();
                state = self.lock();
                state.syncing = false;
                state.syncing_time += started.elapsed();
                match &result {
                    Ok(()) => {
                        state.synced = state.synced.max(target);
                        state.syncs += 1;
                    }
                    Err(error) => state.failed = Some(error.to_string()),
                }
                let wakeups = state.settled();
                drop(state);
                wakeups.wake();
                // `ticket` was written before `target` was read, so a successful sync covers it.
                return result;
            }
            let sleeper = state.sleepers.add(ticket);
            drop(state);
            if sleeper.wait().is_some() {
                return Ok(());
            }
            state = self.lock();
        }
    }

    /// Writes `batch` and waits until it is durable: for callers that need not release locks
    /// between the write and the sync (they hold them across it, or hold none).
    ///
    /// When no sync is running, the caller leads with a synced write of its own batch, which
    /// also makes every batch written before it durable (the [`Durability::Buffered`]
    /// contract): one engine call instead of a write and a flush, which for large batches is
    /// measurably cheaper on RocksDB. Otherwise the batch is written buffered at once and
    /// waits for the next group sync, like [`GroupCommit::write`] + [`GroupCommit::sync`].
    ///
    /// # Errors
    /// As for [`GroupCommit::write`] and [`GroupCommit::sync`].
    pub fn commit(&self, batch: WriteBatch) -> Result<()> {
        let mut state = self.lock();
        if state.syncing || state.failed.is_some() {
            drop(state);
            let written = self.write(batch)?;
            return self.sync(written);
        }
        state.syncing = true;
        let covered = state.written;
        drop(state);
        let started = Instant::now();
        let result = self.engine.write(batch, Durability::Sync);
        let mut state = self.lock();
        state.syncing = false;
        state.syncing_time += started.elapsed();
        match &result {
            Ok(()) => {
                state.synced = state.synced.max(covered);
                state.syncs += 1;
                state.batches += 1;
            }
            // Batches written before this one counted on it: they cannot be confirmed now.
            // Without such batches this is one failed write, as with `Engine::write` (a real
            // backend is poisoned by it and refuses the next one itself).
            Err(error) if covered > state.synced => state.failed = Some(error.to_string()),
            Err(_) => {}
        }
        let wakeups = state.settled();
        drop(state);
        wakeups.wake();
        result
    }

    /// The number of successful syncs so far (each may have covered many batches).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The number of batches written so far.
    pub fn batches(&self) -> u64 {
        self.lock().batches
    }

    /// The time spent in the engine's syncs so far (at most one runs at a time, so against
    /// the wall time it says how busy the sync stage was).
    pub fn syncing_time(&self) -> Duration {
        self.lock().syncing_time
    }

    fn poisoned(&self, cause: String) -> Error {
        // The engine is poisoned by the failed flush and names itself in its error; an engine
        // that forgot would still not get a second chance here.
        match self.engine.flush() {
            Err(error @ Error::Poisoned { .. }) => error,
            _ => Error::Poisoned {
                backend: self.engine.backend(),
                path: Default::default(),
                cause,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::{
        Backend, Direction, Fault, FaultyEngine, Keyspace, KvIter, MemEngine, ReadView, ScanRange,
    };

    use super::*;

    /// A memory engine whose flush is slow and counted, like an fsync.
    #[derive(Debug)]
    struct SlowFlush {
        inner: MemEngine,
        flushes: AtomicUsize,
    }

    impl ReadView for SlowFlush {
        fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.inner.get(keyspace, key)
        }

        fn scan(
            &self,
            keyspace: Keyspace,
            range: ScanRange,
            direction: Direction,
        ) -> Result<KvIter<'_>> {
            self.inner.scan(keyspace, range, direction)
        }
    }

    impl Engine for SlowFlush {
        fn backend(&self) -> Backend {
            Backend::Memory
        }

        fn keyspace(&self, name: &str) -> Result<Keyspace> {
            self.inner.keyspace(name)
        }

        fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
            if durability == Durability::Sync {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            self.inner.write(batch, durability)
        }

        fn snapshot(&self) -> Result<Box<dyn ReadView + '_>> {
            self.inner.snapshot()
        }

        fn flush(&self) -> Result<()> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.inner.flush()
        }
    }

    #[test]
    fn concurrent_writers_share_syncs() {
        let engine = Arc::new(SlowFlush {
            inner: MemEngine::new(&["k"]),
            flushes: AtomicUsize::new(0),
        });
        let keyspace = engine.keyspace("k").unwrap();
        let committer = GroupCommit::new(engine.clone());
        const THREADS: u64 = 16;
        const WRITES: u64 = 20;
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let committer = &committer;
                scope.spawn(move || {
                    for i in 0..WRITES {
                        let mut batch = WriteBatch::new();
                        batch.put(keyspace, (t * WRITES + i).to_be_bytes(), b"v");
                        batch.counter_add(keyspace, b"count", 1);
                        committer.commit(batch).unwrap();
                    }
                });
            }
        });
        let total = THREADS * WRITES;
        assert_eq!(engine.counter(keyspace, b"count").unwrap(), total as i64);
        assert_eq!(committer.batches(), total);
        let flushes = engine.flushes.load(Ordering::SeqCst) as u64;
        let syncs = committer.syncs();
        // Each sync is a flush or a caller's own synced write.
        assert!(syncs >= flushes);
        assert!(syncs >= 1);
        assert!(
            syncs < total,
            "{syncs} syncs for {total} writes: nothing was shared"
        );
    }

    #[test]
    fn a_failed_sync_fails_every_uncovered_writer_and_keeps_only_what_was_synced() {
        // Operations: write 1, write 2, flush (3) fails; write 4 is refused.
        let engine = Arc::new(FaultyEngine::new(&["k"]).fail_at(3, Fault::Sync));
        let keyspace = engine.keyspace("k").unwrap();
        let committer = GroupCommit::new(engine.clone());
        let put = |key: &[u8]| {
            let mut batch = WriteBatch::new();
            batch.put(keyspace, key, b"v");
            batch
        };
        let first = committer.write(put(b"a")).unwrap();
        let second = committer.write(put(b"b")).unwrap();
        let leader = committer.sync(second).unwrap_err();
        assert!(matches!(leader, Error::Backend { .. }), "{leader}");
        let follower = committer.sync(first).unwrap_err();
        assert!(matches!(follower, Error::Poisoned { .. }), "{follower}");
        assert!(committer.commit(put(b"c")).is_err());
        assert_eq!(committer.syncs(), 0);
        let after_crash = engine.crash();
        assert_eq!(after_crash.get(keyspace, b"a").unwrap(), None);
        assert_eq!(after_crash.get(keyspace, b"b").unwrap(), None);
    }

    #[test]
    fn a_leading_commit_is_one_synced_write_that_covers_earlier_batches() {
        let engine = Arc::new(FaultyEngine::new(&["k"]));
        let keyspace = engine.keyspace("k").unwrap();
        let committer = GroupCommit::new(engine.clone());
        let put = |key: &[u8]| {
            let mut batch = WriteBatch::new();
            batch.put(keyspace, key, b"v");
            batch
        };
        let earlier = committer.write(put(b"a")).unwrap();
        committer.commit(put(b"b")).unwrap();
        // One write each, no flush: the synced write of `b` made `a` durable as well.
        assert_eq!(engine.operations(), 2);
        let crashed = engine.crash();
        assert!(crashed.get(keyspace, b"a").unwrap().is_some());
        assert!(crashed.get(keyspace, b"b").unwrap().is_some());
        committer.sync(earlier).unwrap();
        assert_eq!(
            engine.operations(),
            2,
            "the earlier batch needed no flush of its own"
        );
        assert_eq!((committer.batches(), committer.syncs()), (2, 1));
    }

    #[test]
    fn a_failed_leading_commit_fails_the_batches_it_was_to_cover() {
        let engine = Arc::new(FaultyEngine::new(&["k"]).fail_at(2, Fault::Sync));
        let keyspace = engine.keyspace("k").unwrap();
        let committer = GroupCommit::new(engine.clone());
        let mut batch = WriteBatch::new();
        batch.put(keyspace, b"a", b"v");
        let earlier = committer.write(batch).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(keyspace, b"b", b"v");
        assert!(committer.commit(batch).is_err());
        let err = committer.sync(earlier).unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
        assert_eq!(engine.crash().get(keyspace, b"a").unwrap(), None);
    }

    #[test]
    fn a_sync_covers_only_batches_written_before_it_started() {
        let engine = Arc::new(FaultyEngine::new(&["k"]));
        let keyspace = engine.keyspace("k").unwrap();
        let committer = GroupCommit::new(engine.clone());
        let mut batch = WriteBatch::new();
        batch.put(keyspace, b"a", b"v");
        let first = committer.write(batch).unwrap();
        committer.sync(first).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(keyspace, b"b", b"v");
        let second = committer.write(batch).unwrap();
        // Not yet synced: a crash now loses `b` but keeps `a`.
        let crashed = engine.crash();
        assert_eq!(
            crashed.get(keyspace, b"a").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(crashed.get(keyspace, b"b").unwrap(), None);
        committer.sync(second).unwrap();
        assert_eq!(committer.syncs(), 2);
        let crashed = engine.crash();
        assert_eq!(
            crashed.get(keyspace, b"b").unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
}
