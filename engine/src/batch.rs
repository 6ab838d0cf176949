//! Write batches: a list of operations applied atomically and in order.

use std::collections::HashMap;

use crate::Keyspace;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `key` to `value`.
    Put {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key` (a no-op when absent).
    Delete {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key.
        key: Vec<u8>,
    },
    /// Removes every key `k` with `start <= k < end`.
    DeleteRange {
        /// The keyspace.
        keyspace: Keyspace,
        /// The first key removed.
        start: Vec<u8>,
        /// The first key kept past the range.
        end: Vec<u8>,
    },
    /// Adds `delta` to the counter at `key` (an absent counter counts as 0). The addition wraps
    /// on overflow, as RocksDB's merge operator must not fail.
    CounterAdd {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key.
        key: Vec<u8>,
        /// The signed amount added.
        delta: i64,
    },
}

/// A key or value handed to a [`WriteBatch`]: an owned `Vec<u8>` (or `String`) is moved in,
/// anything borrowed is copied. The keys and values a write builds are then not copied a
/// second time (two allocations and copies fewer per operation).
pub trait IntoBytes {
    /// The bytes, owned.
    fn into_bytes(self) -> Vec<u8>;
}

impl IntoBytes for Vec<u8> {
    fn into_bytes(self) -> Vec<u8> {
        self
    }
}

impl IntoBytes for String {
    fn into_bytes(self) -> Vec<u8> {
        String::into_bytes(self)
    }
}

impl<const N: usize> IntoBytes for [u8; N] {
    fn into_bytes(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl<T: AsRef<[u8]> + ?Sized> IntoBytes for &T {
    fn into_bytes(self) -> Vec<u8> {
        self.as_ref().to_vec()
    }
}

/// Operations applied atomically by [`crate::Engine::write`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Sets `key` to `value` (see [`IntoBytes`]: owned bytes are moved in).
    pub fn put(&mut self, keyspace: Keyspace, key: impl IntoBytes, value: impl IntoBytes) {
        self.ops.push(BatchOp::Put {
            keyspace,
            key: key.into_bytes(),
            value: value.into_bytes(),
        });
    }

    /// Removes `key`.
    pub fn delete(&mut self, keyspace: Keyspace, key: impl IntoBytes) {
        self.ops.push(BatchOp::Delete {
            keyspace,
            key: key.into_bytes(),
        });
    }

    /// Removes every key `k` with `start <= k < end`.
    pub fn delete_range(
        &mut self,
        keyspace: Keyspace,
        start: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
    ) {
        self.ops.push(BatchOp::DeleteRange {
            keyspace,
            start: start.as_ref().to_vec(),
            end: end.as_ref().to_vec(),
        });
    }

    /// Adds `delta` to the counter at `key`.
    pub fn counter_add(&mut self, keyspace: Keyspace, key: impl IntoBytes, delta: i64) {
        self.ops.push(BatchOp::CounterAdd {
            keyspace,
            key: key.into_bytes(),
            delta,
        });
    }

    /// Appends the operations of `other`.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Consumes the batch into its operations.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Several writers' batches combined into one, in order, with the counter adds of one
/// counter folded into one operation: 64 uploads into one bucket add to the same seven
/// statistics counters, and one add of the sum costs the engine one key instead of 64 (a
/// memtable insert each, then a merge operand to read and compact).
///
/// An add is folded into an earlier add of the same counter only when no other operation on
/// that key (a put, a delete, a delete-range over its keyspace) comes between them, so the
/// combined batch leaves every key as the batches applied one after the other would: adds
/// commute with operations on other keys, and the addition wraps in every engine.
#[derive(Debug, Default)]
pub(crate) struct CombinedBatch {
    batch: WriteBatch,
    /// Per keyspace, per counter key: the index in `batch` of the add others fold into.
    counters: HashMap<Keyspace, HashMap<Vec<u8>, usize>>,
}

impl CombinedBatch {
    /// Appends `batch`'s operations.
    pub(crate) fn push(&mut self, batch: WriteBatch) {
        for op in batch.into_ops() {
            match op {
                BatchOp::CounterAdd {
                    keyspace,
                    key,
                    delta,
                } => {
                    let counters = self.counters.entry(keyspace).or_default();
                    if let Some(&index) = counters.get(&key) {
                        if let Some(BatchOp::CounterAdd { delta: sum, .. }) =
                            self.batch.ops.get_mut(index)
                        {
                            *sum = sum.wrapping_add(delta);
                            continue;
                        }
                    }
                    counters.insert(key.clone(), self.batch.ops.len());
                    self.batch.ops.push(BatchOp::CounterAdd {
                        keyspace,
                        key,
                        delta,
                    });
                }
                BatchOp::Put {
                    keyspace, ref key, ..
                }
                | BatchOp::Delete { keyspace, ref key } => {
                    if let Some(counters) = self.counters.get_mut(&keyspace) {
                        counters.remove(key);
                    }
                    self.batch.ops.push(op);
                }
                BatchOp::DeleteRange { keyspace, .. } => {
                    self.counters.remove(&keyspace);
                    self.batch.ops.push(op);
                }
            }
        }
    }

    /// The combined batch.
    pub(crate) fn finish(self) -> WriteBatch {
        self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    #[test]
    fn folded_counters_leave_what_the_batches_one_after_the_other_leave() {
        let engine = EngineConfig::memory().open(&["a", "b"]).unwrap();
        let a = engine.keyspace("a").unwrap();
        let b = engine.keyspace("b").unwrap();
        let mut batches = Vec::new();
        for i in 0..4i64 {
            let mut batch = WriteBatch::new();
            batch.counter_add(a, b"n", i + 1);
            batch.counter_add(b, b"n", 10);
            batch.counter_add(a, b"m", i64::MAX);
            if i == 1 {
                // A counter deleted at zero, then counted again: the later adds must not
                // move before the delete.
                batch.delete(a, b"n");
                batch.put(a, b"m", crate::counter::encode(7));
            }
            if i == 2 {
                batch.delete_range(b, b"", b"z");
            }
            batches.push(batch);
        }
        let one_by_one = EngineConfig::memory().open(&["a", "b"]).unwrap();
        let mut combined = CombinedBatch::default();
        for batch in &batches {
            one_by_one
                .write(batch.clone(), crate::Durability::Buffered)
                .unwrap();
            combined.push(batch.clone());
        }
        let combined = combined.finish();
        let total: usize = batches.iter().map(WriteBatch::len).sum();
        assert!(combined.len() < total, "{combined:?}");
        engine.write(combined, crate::Durability::Buffered).unwrap();
        for (keyspace, key) in [(a, &b"n"[..]), (a, b"m"), (b, b"n")] {
            assert_eq!(
                engine.get(keyspace, key).unwrap(),
                one_by_one.get(keyspace, key).unwrap(),
                "{keyspace:?} {key:?}"
            );
        }
        assert_eq!(
            engine
                .get(a, b"n")
                .unwrap()
                .map(|v| crate::counter::decode(&v)),
            Some(Some(3 + 4))
        );
    }
}
