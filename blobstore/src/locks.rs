//! Striped locks that serialise the store's read-modify-write decisions.
//!
//! Counters make every statistic exact without locking, but some decisions need the current
//! value: whether a blob goes from 0 to 1 reference (create or revive it) or from 1 to 0
//! (enter the zero-ref index) — under the lock of the blob's stripe; whether a bucket starts
//! or stops linking to a blob (its unique bytes) — under the lock of the (bucket, blob) pair's
//! stripe; and whether an upload fits the bucket's quota — under the bucket's lock: shared by
//! uploads into a bucket without a quota, exclusive for uploads into a bucket with one and for
//! `set_quota`. They are taken in that order (blob, pair, bucket), each from its own array,
//! and held until the batch carrying the decision has been applied.

use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

fn stripe<K: Hash + ?Sized>(key: &K, stripes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % stripes as u64) as usize
}

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
        self.locks[stripe(key, self.locks.len())]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// A fixed array of reader-writer locks; a key maps to one of them.
#[derive(Debug)]
pub(crate) struct SharedStripes {
    locks: Vec<RwLock<()>>,
}

/// A lock of [`SharedStripes`], held shared or exclusive until dropped (the guards are
/// never read, only held).
#[derive(Debug)]
pub(crate) enum StripeGuard<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

impl SharedStripes {
    pub(crate) fn new(count: usize) -> Self {
        SharedStripes {
            locks: (0..count).map(|_| RwLock::new(())).collect(),
        }
    }

    pub(crate) fn shared<K: Hash + ?Sized>(&self, key: &K) -> StripeGuard<'_> {
        let lock = &self.locks[stripe(key, self.locks.len())];
        StripeGuard::Shared(lock.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn exclusive<K: Hash + ?Sized>(&self, key: &K) -> StripeGuard<'_> {
        let lock = &self.locks[stripe(key, self.locks.len())];
        StripeGuard::Exclusive(lock.write().unwrap_or_else(|e| e.into_inner()))
    }
}
