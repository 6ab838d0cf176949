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
use std::sync::Arc;
use std::thread::Thread;

/// One parked writer.
#[derive(Debug)]
pub(crate) struct Sleeper {
    ticket: u64,
    thread: Thread,
    woken: AtomicBool,
}

impl Sleeper {
    /// Parks the calling thread until it is woken. Call it with the caller's mutex released,
    /// then take the mutex again and look at the condition: a wake-up says "look", not what
    /// was found.
    pub(crate) fn wait(&self) {
        while !self.woken.load(Ordering::Acquire) {
            std::thread::park();
        }
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// The writers parked on one condition, by ticket (tickets grow with arrival).
#[derive(Default)]
pub(crate) struct Sleepers {
    parked: Vec<Arc<Sleeper>>,
}

impl fmt::Debug for Sleepers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleepers")
            .field("parked", &self.parked.len())
            .finish()
    }
}

impl Sleepers {
    /// Parks the current thread's writer of `ticket`: call [`Sleeper::wait`] on the answer
    /// after releasing the mutex.
    pub(crate) fn add(&mut self, ticket: u64) -> Arc<Sleeper> {
        let sleeper = Arc::new(Sleeper {
            ticket,
            thread: std::thread::current(),
            woken: AtomicBool::new(false),
        });
        self.parked.push(Arc::clone(&sleeper));
        sleeper
    }

    /// Wakes every writer whose ticket is below `bound` (their work is done), and the writer
    /// with the lowest ticket at or above it, which finds no group running and leads the next
    /// one (the others stay parked: that group covers them).
    pub(crate) fn wake_below(&mut self, bound: u64) {
        let mut next: Option<usize> = None;
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].ticket < bound {
                self.parked.swap_remove(i).wake();
                continue;
            }
            if next.is_none_or(|n| self.parked[i].ticket < self.parked[n].ticket) {
                next = Some(i);
            }
            i += 1;
        }
        if let Some(n) = next {
            self.parked.swap_remove(n).wake();
        }
    }

    /// Wakes every writer (a failure they must all see).
    pub(crate) fn wake_all(&mut self) {
        for sleeper in self.parked.drain(..) {
            sleeper.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[test]
    fn wakes_the_covered_and_one_leader_and_leaves_the_rest_parked() {
        let sleepers = Mutex::new(Sleepers::default());
        let woken = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for ticket in [3u64, 1, 5, 2, 4] {
                let (sleepers, woken) = (&sleepers, &woken);
                scope.spawn(move || {
                    let sleeper = sleepers.lock().unwrap().add(ticket);
                    sleeper.wait();
                    woken.lock().unwrap().push(ticket);
                });
            }
            while sleepers.lock().unwrap().parked.len() < 5 {
                std::thread::sleep(Duration::from_millis(1));
            }
            sleepers.lock().unwrap().wake_below(3);
            // Tickets 1 and 2 are covered, 3 leads next; 4 and 5 must stay parked.
            while woken.lock().unwrap().len() < 3 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut first = woken.lock().unwrap().clone();
            first.sort_unstable();
            assert_eq!(first, [1, 2, 3]);
            let mut left: Vec<u64> = sleepers
                .lock()
                .unwrap()
                .parked
                .iter()
                .map(|s| s.ticket)
                .collect();
            left.sort_unstable();
            assert_eq!(left, [4, 5]);
            sleepers.lock().unwrap().wake_all();
        });
        assert_eq!(woken.lock().unwrap().len(), 5);
    }
}
