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
