//! Group commit: concurrent writers share one synced engine write.
//!
//! A writer appends its batch to the queue. If no write is in flight it becomes the leader:
//! it takes every queued batch, merges them into one [`WriteBatch`] and writes it with
//! [`Durability::Sync`]: one fsync for the whole group. Writers that arrived meanwhile wait
//! for the leader, then one of them leads the next group. Batches touch disjoint decisions
//! (each was made under its own striped locks, still held), and counter adds commute, so
//! merging them is the same as writing them one after the other.

use std::sync::{Arc, Condvar, Mutex};

use engine::{Durability, Engine, WriteBatch};

#[derive(Debug, Default)]
struct Queue {
    pending: Vec<(u64, WriteBatch)>,
    next_ticket: u64,
    /// Tickets below this were written (or failed with `failures`).
    done_below: u64,
    leader_active: bool,
    failures: Vec<(u64, String)>,
}

/// The group committer of one store.
#[derive(Debug)]
pub(crate) struct Committer {
    engine: Arc<dyn Engine>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Committer {
    pub(crate) fn new(engine: Arc<dyn Engine>) -> Self {
        Committer {
            engine,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        }
    }

    /// Writes `batch` durably, sharing the fsync with concurrent callers.
    pub(crate) fn commit(&self, batch: WriteBatch) -> Result<(), engine::Error> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push((ticket, batch));
        loop {
            if queue.done_below > ticket {
                if let Some(pos) = queue.failures.iter().position(|(t, _)| *t == ticket) {
                    let (_, cause) = queue.failures.swap_remove(pos);
                    // The engine is poisoned by the failed write: asking it again reports the
                    // typed error.
                    return Err(self.engine.flush().err().unwrap_or(engine::Error::Config {
                        reason: format!("group commit failed: {cause}"),
                    }));
                }
                return Ok(());
            }
            if !queue.leader_active {
                queue.leader_active = true;
                let group = std::mem::take(&mut queue.pending);
                drop(queue);
                let last = group.last().map_or(0, |(t, _)| *t);
                let tickets: Vec<u64> = group.iter().map(|(t, _)| *t).collect();
                let mut merged = WriteBatch::new();
                for (_, batch) in group {
                    merged.extend(batch);
                }
                let result = self.engine.write(merged, Durability::Sync);
                queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                queue.leader_active = false;
                queue.done_below = queue.done_below.max(last + 1);
                if let Err(error) = &result {
                    let cause = error.to_string();
                    for t in tickets {
                        if t != ticket {
                            queue.failures.push((t, cause.clone()));
                        }
                    }
                }
                self.wake.notify_all();
                result?;
                continue;
            }
            queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }
}
