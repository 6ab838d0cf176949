//! Striped locks that serialise the store's read-modify-write decisions.
//!
//! Counters make every statistic exact without locking, but some decisions need the current
//! value: whether a blob goes from 0 to 1 reference (create or revive it) or from 1 to 0
//! (enter the zero-ref index), whether a bucket starts or stops referencing a blob (its
//! unique bytes), and whether an upload fits the quota. Those are taken under a lock of the
//! blob's stripe and then of the bucket's stripe, always in that order, and held until the
//! batch that carries the decision has been written.

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
