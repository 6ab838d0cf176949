//! Writers parked by ticket, so that the leader of a group wakes only the writers its work
//! covered, and one more to lead the next group.
//!
//! Why not a `Condvar`: [`crate::GroupCommit::sync`] and [`crate::ChangeLog::finish`] used
//! `notify_all`, which wakes every waiter after each sync or combined write, including those
//! that arrived during it and must sleep again; with 64 writers each woken thread then also
//! queues on the mutex. Thread switches were the largest single cost of a durable 4 KiB
//! upload over HTTP (`benches/servers/RESULTS.md`, issue 18): here a writer is woken once for
//! its outcome, or once to lead.
//!
//! Every method is called under the caller's mutex, which also guards the condition the
//! sleepers wait for; a sleeper added under it cannot miss its wake-up, because
//! [`std::thread::Thread::unpark`] before [`std::thread::park`] makes the park return.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Thread;

/// One parked writer, and the answer it is woken with.
#[derive(Debug)]
pub(crate) struct Sleeper<T> {
    ticket: u64,
    thread: Thread,
    woken: AtomicBool,
    answer: Mutex<Option<T>>,
}

impl<T> Sleeper<T> {
    /// Parks the calling thread until it is woken (call it with the caller's mutex released)
    /// and returns the answer it was woken with; `None` means "take the mutex and look again"
    /// (lead the next group, or see a failure).
    pub(crate) fn wait(&self) -> Option<T> {
        while !self.woken.load(Ordering::Acquire) {
            std::thread::park();
        }
        self.answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The writers parked on one condition, by ticket (tickets grow with arrival).
pub(crate) struct Sleepers<T> {
    parked: Vec<Arc<Sleeper<T>>>,
}

impl<T> Default for Sleepers<T> {
    fn default() -> Self {
        Sleepers { parked: Vec::new() }
    }
}

impl<T> fmt::Debug for Sleepers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleepers")
            .field("parked", &self.parked.len())
            .finish()
    }
}

/// Writers taken off the list under the mutex, to be woken once it is released: a thread
/// woken while the waker still holds the mutex would run only to block on it again (two
/// more switches, and on two cores the waker itself is often preempted by the wake-up).
#[must_use = "the taken sleepers stay parked until woken"]
pub(crate) struct Wakeups<T>(Vec<(Arc<Sleeper<T>>, Option<T>)>);

impl<T> Wakeups<T> {
    /// Wakes them, each with its answer. Call it after releasing the mutex.
    pub(crate) fn wake(self) {
        for (sleeper, answer) in self.0 {
            *sleeper
                .answer
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = answer;
            sleeper.woken.store(true, Ordering::Release);
            sleeper.thread.unpark();
        }
    }
}

impl<T> Sleepers<T> {
    /// Parks the current thread's writer of `ticket`: call [`Sleeper::wait`] on the answer
    /// after releasing the mutex.
    pub(crate) fn add(&mut self, ticket: u64) -> Arc<Sleeper<T>> {
        let sleeper = Arc::new(Sleeper {
            ticket,
            thread: std::thread::current(),
            woken: AtomicBool::new(false),
            answer: Mutex::new(None),
        });
        self.parked.push(Arc::clone(&sleeper));
        sleeper
    }

    /// Takes every writer whose ticket is below `bound` (their work is done), each with
    /// `answer(ticket)`, and the writer with the lowest ticket at or above it with no answer:
    /// it finds no group running and leads the next one (the others stay parked: that group
    /// covers them).
    pub(crate) fn take_below(
        &mut self,
        bound: u64,
        mut answer: impl FnMut(u64) -> Option<T>,
    ) -> Wakeups<T> {
        let mut taken = Vec::new();
        let mut next: Option<usize> = None;
        let mut i = 0;
        while i < self.parked.len() {
            let ticket = self.parked[i].ticket;
            if ticket < bound {
                taken.push((self.parked.swap_remove(i), answer(ticket)));
                continue;
            }
            if next.is_none_or(|n| ticket < self.parked[n].ticket) {
                next = Some(i);
            }
            i += 1;
        }
        if let Some(n) = next {
            taken.push((self.parked.swap_remove(n), None));
        }
        Wakeups(taken)
    }

    /// Takes every writer, with no answer (a failure they must all see).
    pub(crate) fn take_all(&mut self) -> Wakeups<T> {
        Wakeups(self.parked.drain(..).map(|s| (s, None)).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn wakes_the_covered_and_one_leader_and_leaves_the_rest_parked() {
        let sleepers = Mutex::new(Sleepers::<u64>::default());
        let woken = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for ticket in [3u64, 1, 5, 2, 4] {
                let (sleepers, woken) = (&sleepers, &woken);
                scope.spawn(move || {
                    let sleeper = sleepers.lock().unwrap().add(ticket);
                    let answer = sleeper.wait();
                    woken.lock().unwrap().push((ticket, answer));
                });
            }
            while sleepers.lock().unwrap().parked.len() < 5 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let wakeups = sleepers.lock().unwrap().take_below(3, |t| Some(t * 10));
            wakeups.wake();
            // Tickets 1 and 2 are covered, 3 leads next; 4 and 5 must stay parked.
            while woken.lock().unwrap().len() < 3 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut first = woken.lock().unwrap().clone();
            first.sort_unstable();
            // The covered get their answers, the leader none.
            assert_eq!(first, [(1, Some(10)), (2, Some(20)), (3, None)]);
            let mut left: Vec<u64> = sleepers
                .lock()
                .unwrap()
                .parked
                .iter()
                .map(|s| s.ticket)
                .collect();
            left.sort_unstable();
            assert_eq!(left, [4, 5]);
            let wakeups = sleepers.lock().unwrap().take_all();
            wakeups.wake();
        });
        assert_eq!(woken.lock().unwrap().len(), 5);
    }
}
