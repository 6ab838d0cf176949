//! Striped locks that serialise the store's read-modify-write decisions.
//!
//! Counters make every statistic exact without locking, but some decisions need the current
//! value: whether a blob goes from 0 to 1 reference (create or revive it) or from 1 to 0
//! (enter the zero-ref index) — under the lock of the blob's stripe; whether a bucket starts
//! or stops linking to a blob (its unique bytes) — under the lock of the (bucket, blob) pair's
//! stripe; and whether an upload fits the bucket's quota — under the bucket's lock, taken
//! only when the bucket has a quota. They are taken in that order (blob, pair, bucket), each
//! from its own array, and held until the batch carrying the decision has been applied.

use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

/// A fixed array of mutexes; a key maps to one of them.
#[derive(Debug)]
pub(crate) struct Stripes {
    locks: Vec<Mutex<()>>,
}

impl Stripes {
    pub(crate) fn new(count: usize) -> Self {
        Stripes {
            locks: (0..count).map(|_| Mutex::new(())).collect(),
        }
    }

    pub(crate) fn lock<K: Hash + ?Sized>(&self, key: &K) -> MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let index = (hasher.finish() % self.locks.len() as u64) as usize;
        self.locks[index].lock().unwrap_or_else(|e| e.into_inner())
    }
}
