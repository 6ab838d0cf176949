//! The write combining of [`ChangeLog::append`]: writers queued while another writes go to
//! the engine as one batch, in queue order, their revisions taken under the sequencer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{encode_value, lock, revision_key, Appended, ChangeLog, LogEntry};
use crate::batch::CombinedBatch;
use crate::history_index::MARK_KEY;
use crate::sleepers::Sleepers;
use crate::WriteBatch;

#[derive(Debug, Default)]
pub(super) struct Sequencer {
    /// The last revision handed out (durable or not).
    pub(super) last: u64,
    /// Whether the log holds the indexer's mark (`history_index`): until it does, the next
    /// write puts it, so that the events written without their history keys are indexed.
    pub(super) marked: bool,
}

/// Writers whose batches wait to be written, and what became of those written: the write
/// combining of [`ChangeLog::append`].
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) waiting: Vec<Queued>,
    next_ticket: u64,
    /// Whether a writer is writing a combined batch now.
    pub(super) writing: bool,
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
pub(super) struct Queued {
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
            *broken = Some((error.to_string(), error.is_transient()));
        }
    }
}

impl ChangeLog {
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
            let (cause, transient) = (error.to_string(), error.is_transient());
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
    /// What the log's combined writes did so far.
    pub fn write_stats(&self) -> WriteStats {
        lock(&self.queue).stats
    }
}
