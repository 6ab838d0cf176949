//! A small pool of threads for short blocking store calls (a metadata lookup, a small read).
//!
//! Tokio's blocking pool is built for long and rare jobs: with many requests in flight it
//! grows a thread per job and parks and wakes them one by one, and that handoff cost more
//! than the store call itself for a 4 KiB download. A few dedicated threads that take jobs
//! from one queue stay busy under load and are woken far less often. Long jobs (streaming an
//! upload or a large download) still go to Tokio's blocking pool, so they cannot starve
//! this one.

use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of threads running short blocking jobs in submission order.
#[derive(Clone)]
pub struct BlockingPool {
    sender: mpsc::SyncSender<Job>,
    threads: usize,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// The pool was shut down, or the job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the blocking pool could not run the job")]
pub struct PoolError;

impl BlockingPool {
    /// Starts `threads` threads named `name-N`, with a queue of `queue` jobs. With no
    /// threads every job goes to Tokio's blocking pool: for in-process harnesses (the fuzz
    /// targets build a service per input, and a thread spawned per input was most of their
    /// setup), not for a server under load.
    pub fn new(name: &str, threads: usize, queue: usize) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Job>(queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        // Without threads the receiver is dropped here: every `try_send` finds the queue
        // disconnected and takes Tokio's blocking pool.
        for n in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || loop {
                    let job = {
                        let receiver = receiver.lock().unwrap_or_else(|e| e.into_inner());
                        receiver.recv()
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawning a pool thread");
        }
        BlockingPool { sender, threads }
    }

    /// Runs `f` on the pool and awaits its result. When the queue is full the job goes to
    /// Tokio's blocking pool instead, so a burst never waits on a full queue.
    ///
    /// # Errors
    /// [`PoolError`] when the job panicked.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.sender.try_send(job) {
            Ok(()) => rx.await.map_err(|_| PoolError),
            Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) => {
                tokio::task::spawn_blocking(job)
                    .await
                    .map_err(|_| PoolError)?;
                rx.await.map_err(|_| PoolError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_overflows_to_tokio() {
        let pool = BlockingPool::new("test", 2, 1);
        let results = futures_util::future::join_all((0..50).map(|i| {
            let pool = pool.clone();
            async move { pool.run(move || i * 2).await.unwrap() }
        }))
        .await;
        assert_eq!(results, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        let panicked = pool.run(|| -> u32 { panic!("boom") }).await;
        assert!(panicked.is_err());
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn without_threads_runs_jobs_on_tokio() {
        let pool = BlockingPool::new("none", 0, 1);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_ne!(name.as_deref(), Some("none-0"));
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
        assert!(pool.run(|| -> u32 { panic!("boom") }).await.is_err());
    }
}
