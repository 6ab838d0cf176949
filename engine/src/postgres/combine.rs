//! Concurrent writers' batches combined into one transaction: PostgreSQL's own group commit
//! shares a WAL flush among concurrent commits, but batches that touch one row (a store's
//! statistics counter, which nearly every batch adds to) serialize on that row's lock from
//! the add to the commit, flush included, so 16 writers of one store paid 16 flushes in a
//! row. Here the batches that queue while a transaction runs go into the next one (in queue
//! order, as one batch would apply them): one transaction, one commit, one flush, each
//! caller told the common outcome (`engine/DESIGN.md`, "Combined transactions").

use std::collections::{HashMap, VecDeque};
use std::sync::Condvar;

use super::plan::Plan;
use super::*;

/// A combined transaction stops taking batches past this many operations or bytes of keys
/// and values (it always takes at least one batch): the statements' arrays and the
/// transaction's locks stay bounded.
const GROUP_OPS: usize = 4096;
const GROUP_BYTES: usize = 16 << 20;

/// Why a transaction failed, and so whether its batches share the failure.
pub(super) enum Failure {
    /// Rolled back for what it held (an SQL error, a corrupt counter): each batch of a
    /// combined transaction runs again alone, so that only a faulty one fails.
    Content(Error),
    /// Whatever it held: the lease moved on (fenced), the database was unreachable for
    /// `retry_ms`, the commit found not landed or left unresolved, the engine poisoned.
    /// Every batch of the transaction fails alike.
    Common(Error),
}

/// A batch waiting to be written.
struct Entry {
    id: u64,
    batch: WriteBatch,
    durability: Durability,
}

/// What a waiting writer is told.
enum Outcome {
    Done(Result<()>),
    /// The combined transaction failed for its content: write the batch on its own.
    Alone(WriteBatch, Durability),
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    waiting: VecDeque<Entry>,
    /// Whether a writer is running a transaction for the queue.
    leading: bool,
    done: HashMap<u64, Outcome>,
}

/// The queue of batches waiting for the transaction in flight to end; one transaction of
/// the queue runs at a time, by one of the waiting writers (the leader).
#[derive(Default)]
pub(super) struct Combiner {
    queue: Mutex<Queue>,
    changed: Condvar,
}

/// The leader's turn: when it ends, the next waiting writer may lead. Should the leader
/// unwind (a bug), the writers of its batches are told so instead of waiting for ever.
struct Leader<'a> {
    engine: &'a PgEngine,
    /// The batches whose outcome is not handed over yet.
    ids: Vec<u64>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let combiner = &self.engine.combiner;
        let mut queue = combiner.queue.lock().unwrap_or_else(|e| e.into_inner());
        for id in self.ids.drain(..) {
            let error = self.engine.error(
                "write",
                "the thread writing this batch with others panicked",
            );
            queue.done.insert(id, Outcome::Done(Err(error)));
        }
        queue.leading = false;
        combiner.changed.notify_all();
    }
}

impl PgEngine {
    /// Writes `batch` in a transaction shared with the batches queued with it.
    pub(super) fn write_combined(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        let combiner = &self.combiner;
        let mut queue = combiner.queue.lock().unwrap_or_else(|e| e.into_inner());
        let id = queue.next_id;
        queue.next_id += 1;
        queue.waiting.push_back(Entry {
            id,
            batch,
            durability,
        });
        loop {
            if let Some(outcome) = queue.done.remove(&id) {
                drop(queue);
                return match outcome {
                    Outcome::Done(result) => result,
                    Outcome::Alone(batch, durability) => self.write_alone(&batch, durability),
                };
            }
            if queue.leading {
                queue = combiner
                    .changed
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead: take the batches queued so far (this one among them, unless the queue
            // was long), run them, tell their writers.
            queue.leading = true;
            let mut group = Vec::new();
            let (mut ops, mut bytes) = (0, 0);
            while let Some(entry) = queue.waiting.front() {
                let size = entry.batch.size();
                if !group.is_empty()
                    && (ops + entry.batch.len() > GROUP_OPS || bytes + size > GROUP_BYTES)
                {
                    break;
                }
                ops += entry.batch.len();
                bytes += size;
                group.extend(queue.waiting.pop_front());
            }
            drop(queue);
            let mut leader = Leader {
                engine: self,
                ids: group.iter().map(|e| e.id).collect(),
            };
            let outcomes = self.write_group(group);
            // The outcomes first, then the turn: a writer woken by the end of the turn
            // finds its outcome, or its batch still queued, never neither.
            combiner
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .done
                .extend(outcomes);
            leader.ids.clear();
            drop(leader);
            queue = combiner.queue.lock().unwrap_or_else(|e| e.into_inner());
        }
    }

    /// One transaction for `group`; the outcome of each of its batches.
    fn write_group(&self, group: Vec<Entry>) -> Vec<(u64, Outcome)> {
        if let [entry] = group.as_slice() {
            return vec![(
                entry.id,
                Outcome::Done(self.write_alone(&entry.batch, entry.durability)),
            )];
        }
        // One synced batch makes the transaction synced: a buffered writer is only made to
        // wait for the flush, which it would otherwise have shared later.
        let durability = if group.iter().any(|e| e.durability == Durability::Sync) {
            Durability::Sync
        } else if group.iter().any(|e| e.durability == Durability::Buffered) {
            Durability::Buffered
        } else {
            Durability::Derived
        };
        let result = match Plan::new(group.iter().flat_map(|e| e.batch.ops())) {
            Ok(plan) => self.run(&plan, durability),
            Err(error) => Err(Failure::Content(error)),
        };
        match result {
            Ok(()) => group
                .into_iter()
                .map(|e| (e.id, Outcome::Done(Ok(()))))
                .collect(),
            Err(Failure::Content(_)) => group
                .into_iter()
                .map(|e| (e.id, Outcome::Alone(e.batch, e.durability)))
                .collect(),
            Err(Failure::Common(error)) => group
                .into_iter()
                .map(|e| (e.id, Outcome::Done(Err(self.share(&error)))))
                .collect(),
        }
    }

    /// Writes `batch` in a transaction of its own.
    pub(super) fn write_alone(&self, batch: &WriteBatch, durability: Durability) -> Result<()> {
        self.poison.check(Backend::Postgres, &self.label)?;
        let plan = Plan::new(batch.ops())?;
        self.run(&plan, durability)
            .map_err(|failure| match failure {
                Failure::Content(error) | Failure::Common(error) => error,
            })
    }

    /// The same failure, for another writer of a combined transaction (an error's source
    /// cannot be cloned: the known ones are rebuilt, so that `Error::is_unavailable` and
    /// the messages hold for every writer, and any other becomes its message).
    fn share(&self, error: &Error) -> Error {
        match error {
            Error::Fenced {
                name,
                epoch,
                current,
            } => Error::Fenced {
                name: name.clone(),
                epoch: *epoch,
                current: *current,
            },
            Error::Poisoned {
                backend,
                path,
                cause,
            } => Error::Poisoned {
                backend: *backend,
                path: path.clone(),
                cause: cause.clone(),
            },
            Error::Backend {
                backend,
                operation,
                path,
                source,
            } => {
                let source: BoxError =
                    if let Some(unreachable) = source.downcast_ref::<crate::error::Unreachable>() {
                        Box::new(crate::error::Unreachable {
                            waited: unreachable.waited,
                            last: unreachable.last.clone(),
                        })
                    } else if let Some(failure) = source.downcast_ref::<PgFailure>() {
                        Box::new(failure.clone())
                    } else {
                        source.to_string().into()
                    };
                Error::Backend {
                    backend: *backend,
                    operation,
                    path: path.clone(),
                    source,
                }
            }
            other => self.error("write", other.to_string()),
        }
    }

    /// Writes `plan` in one transaction: retried on a new connection after a lost one (or a
    /// conflict) until `retry_ms`, its outcome resolved when its commit went unanswered.
    pub(super) fn run(&self, plan: &Plan, durability: Durability) -> Result<(), Failure> {
        let token: [u8; 16] = rand::random();
        let mut backoff = Backoff::new(self.retry);
        loop {
            // After a lost connection (this attempt's or any other), the buffered batches
            // still pending are looked for before anything more is committed.
            self.verify_pending().map_err(Failure::Common)?;
            // Synced commits flush the WAL up to themselves, so they cover every buffered
            // commit acknowledged before they started.
            let watermark = self.acknowledged.load(Ordering::SeqCst);
            let mut conn = match self.checkout() {
                Ok(conn) => conn,
                Err(error) => {
                    self.suspect.store(true, Ordering::SeqCst);
                    backoff
                        .wait(self, "write", error)
                        .map_err(Failure::Common)?;
                    continue;
                }
            };
            match self.attempt(&mut conn, plan, &token, durability) {
                Ok(()) => {
                    self.checkin(conn);
                    self.acknowledged_batch(token, durability, watermark);
                    self.prune_tokens();
                    return Ok(());
                }
                Err(Attempt::Refused(error)) => {
                    self.checkin(conn);
                    return Err(match error {
                        Error::Fenced { .. } => Failure::Common(error),
                        error => Failure::Content(error),
                    });
                }
                Err(Attempt::Retry(error)) => {
                    self.release(conn, &error);
                    backoff
                        .wait(self, "write", error)
                        .map_err(Failure::Common)?;
                }
                Err(Attempt::Unknown(error)) => {
                    self.suspect.store(true, Ordering::SeqCst);
                    drop(conn);
                    return match self.resolve(&token) {
                        Ok(true) => {
                            self.acknowledged_batch(token, durability, watermark);
                            Ok(())
                        }
                        // A fenced engine whose lease moved on (its session ended while it
                        // was paused, and another instance took over) is told so: what its
                        // caller must act on is that it no longer leads.
                        Ok(false) => Err(Failure::Common(
                            self.superseded()
                                .unwrap_or_else(|| self.error("write", crate::NotLanded)),
                        )),
                        Err(cause) => {
                            let error = self.error(
                                "write",
                                PgFailure::Unresolved(
                                    self.retry,
                                    format!("{error}; then: {cause}"),
                                ),
                            );
                            self.poison.set(&error);
                            Err(Failure::Common(error))
                        }
                    };
                }
            }
        }
    }
}
