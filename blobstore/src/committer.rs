//! Group commit: concurrent writers share fsyncs.
//!
//! A store operation makes its decisions under its striped locks and writes its batch with
//! [`Durability::Buffered`] while still holding them: the batch is applied (visible to the
//! next lock holder) and appended to the engine's log in order, but not yet fsynced. It then
//! releases the locks and calls [`GroupSync::sync`], which returns once a log sync that
//! *started after the batch was written* has completed. One caller leads each sync (it calls
//! [`Engine::flush`]); everyone who wrote before that sync started is covered by it, so many
//! concurrent writers pay for one fsync. Because the log is ordered, a batch that depends on an
//! earlier decision is never durable without it, and nothing is acknowledged before it is
//! durable. Locks are never held across an fsync, so writers to the same bucket overlap.

use std::sync::{Arc, Condvar, Mutex};

use engine::{Durability, Engine, WriteBatch};

#[derive(Debug, Default)]
struct State {
    /// Batches written so far (a ticket counter).
    written: u64,
    /// Every batch with a ticket up to this one is durable.
    synced: u64,
    /// Whether a sync is in progress.
    syncing: bool,
    /// The message of a failed sync: every later call fails with the engine's error.
    failed: bool,
}

/// The group fsync of one store.
#[derive(Debug)]
pub(crate) struct GroupSync {
    engine: Arc<dyn Engine>,
    state: Mutex<State>,
    wake: Condvar,
}

/// A batch that was written but may not be durable yet.
#[derive(Debug)]
#[must_use = "a written batch is durable only after GroupSync::sync"]
pub(crate) struct Written(u64);

impl GroupSync {
    pub(crate) fn new(engine: Arc<dyn Engine>) -> Self {
        GroupSync {
            engine,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }
    }

    /// Applies `batch` (atomically, visible at once) without waiting for the disk. Call it
    /// under the locks of the decisions the batch carries.
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<Written, engine::Error> {
        self.engine.write(batch, Durability::Buffered)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.written += 1;
        Ok(Written(state.written))
    }

    /// Returns once `written` is durable, sharing the fsync with concurrent callers.
    pub(crate) fn sync(&self, written: Written) -> Result<(), engine::Error> {
        let ticket = written.0;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.failed {
                drop(state);
                // The engine is poisoned: asking it again reports the typed error.
                return Err(self.engine.flush().err().unwrap_or(engine::Error::Config {
                    reason: "an earlier group sync failed".to_string(),
                }));
            }
            if state.synced >= ticket {
                return Ok(());
            }
            if !state.syncing {
                state.syncing = true;
                let target = state.written;
                drop(state);
                let result = self.engine.flush();
                state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.syncing = false;
                match &result {
                    Ok(()) => state.synced = state.synced.max(target),
                    Err(_) => state.failed = true,
                }
                self.wake.notify_all();
                result?;
                continue;
            }
            state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Writes `batch` and waits until it is durable (for callers without locks to release).
    pub(crate) fn commit(&self, batch: WriteBatch) -> Result<(), engine::Error> {
        let written = self.write(batch)?;
        self.sync(written)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use engine::{Backend, Direction, Keyspace, KvIter, MemEngine, ReadView, Result, ScanRange};

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
        let sync = GroupSync::new(engine.clone());
        const THREADS: u64 = 16;
        const WRITES: u64 = 20;
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let sync = &sync;
                scope.spawn(move || {
                    for i in 0..WRITES {
                        let mut batch = WriteBatch::new();
                        batch.put(keyspace, (t * WRITES + i).to_be_bytes(), b"v");
                        batch.counter_add(keyspace, b"count", 1);
                        sync.commit(batch).unwrap();
                    }
                });
            }
        });
        let total = THREADS * WRITES;
        assert_eq!(engine.counter(keyspace, b"count").unwrap(), total as i64);
        let flushes = engine.flushes.load(Ordering::SeqCst) as u64;
        assert!(flushes >= 1);
        assert!(
            flushes < total,
            "{flushes} syncs for {total} writes: nothing was shared"
        );
    }
}
