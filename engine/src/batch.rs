//! Write batches: a list of operations applied atomically and in order.

use std::collections::HashMap;

use crate::Keyspace;

/// One operation of a [`WriteBatch`], its bytes borrowed from the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// Sets `key` to `value`.
    Put {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
    },
    /// Removes `key` (a no-op when absent).
    Delete {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key.
        key: &'a [u8],
    },
    /// Removes every key `k` with `start <= k < end`.
    DeleteRange {
        /// The keyspace.
        keyspace: Keyspace,
        /// The first key removed.
        start: &'a [u8],
        /// The first key kept past the range.
        end: &'a [u8],
    },
    /// Adds `delta` to the counter at `key` (an absent counter counts as 0). The addition wraps
    /// on overflow, as RocksDB's merge operator must not fail.
    CounterAdd {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key.
        key: &'a [u8],
        /// The signed amount added.
        delta: i64,
    },
}

impl BatchOp<'_> {
    /// The keyspace the operation changes.
    pub fn keyspace(&self) -> Keyspace {
        match *self {
            BatchOp::Put { keyspace, .. }
            | BatchOp::Delete { keyspace, .. }
            | BatchOp::DeleteRange { keyspace, .. }
            | BatchOp::CounterAdd { keyspace, .. } => keyspace,
        }
    }
}

const PUT: u8 = 0;
const DELETE: u8 = 1;
const DELETE_RANGE: u8 = 2;
const COUNTER_ADD: u8 = 3;

/// Operations applied atomically by [`crate::Engine::write`].
///
/// The operations are stored flat, back to back in one buffer (a tag byte, the keyspace, then
/// each key or value as a 4-byte length and its bytes; a counter's delta as 8 bytes), the way
/// RocksDB keeps its own batches: a list of operations each owning its key and value cost two
/// allocations per operation on every write, and an import of 1.4 million operations held
/// 56 bytes of list plus two heap blocks per operation (graphdb/DESIGN.md, "The import's
/// peak"). [`WriteBatch::ops`] reads them back in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    bytes: Vec<u8>,
    len: usize,
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ops()).finish()
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    fn header(&mut self, tag: u8, keyspace: Keyspace) {
        self.bytes.push(tag);
        self.bytes
            .extend_from_slice(&(keyspace.index() as u32).to_le_bytes());
        self.len += 1;
    }

    fn field(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("a key or value under 4 GiB");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(bytes);
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, keyspace: Keyspace, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.header(PUT, keyspace);
        self.field(key.as_ref());
        self.field(value.as_ref());
    }

    /// Removes `key`.
    pub fn delete(&mut self, keyspace: Keyspace, key: impl AsRef<[u8]>) {
        self.header(DELETE, keyspace);
        self.field(key.as_ref());
    }

    /// Removes every key `k` with `start <= k < end`.
    pub fn delete_range(
        &mut self,
        keyspace: Keyspace,
        start: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
    ) {
        self.header(DELETE_RANGE, keyspace);
        self.field(start.as_ref());
        self.field(end.as_ref());
    }

    /// Adds `delta` to the counter at `key`.
    pub fn counter_add(&mut self, keyspace: Keyspace, key: impl AsRef<[u8]>, delta: i64) {
        self.header(COUNTER_ADD, keyspace);
        self.field(key.as_ref());
        self.bytes.extend_from_slice(&delta.to_le_bytes());
    }

    /// Appends the operations of `other`.
    pub fn extend(&mut self, other: WriteBatch) {
        if self.bytes.is_empty() {
            *self = other;
        } else {
            self.bytes.extend_from_slice(&other.bytes);
            self.len += other.len;
        }
    }

    /// The operations, in order.
    pub fn ops(&self) -> Ops<'_> {
        Ops { rest: &self.bytes }
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes the batch takes: its keys and values and a few bytes per operation.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// The operations of a [`WriteBatch`], in order.
#[derive(Clone, Debug)]
pub struct Ops<'a> {
    rest: &'a [u8],
}

impl<'a> Ops<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        head
    }

    fn field(&mut self) -> &'a [u8] {
        let len = u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"));
        self.take(len as usize)
    }
}

impl<'a> Iterator for Ops<'a> {
    type Item = BatchOp<'a>;

    fn next(&mut self) -> Option<BatchOp<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        // Only `WriteBatch`'s own methods wrote these bytes, so they are well formed.
        let tag = self.take(1)[0];
        let index = u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"));
        let keyspace = Keyspace::from_index(index as usize);
        Some(match tag {
            PUT => BatchOp::Put {
                keyspace,
                key: self.field(),
                value: self.field(),
            },
            DELETE => BatchOp::Delete {
                keyspace,
                key: self.field(),
            },
            DELETE_RANGE => BatchOp::DeleteRange {
                keyspace,
                start: self.field(),
                end: self.field(),
            },
            _ => BatchOp::CounterAdd {
                keyspace,
                key: self.field(),
                delta: i64::from_le_bytes(self.take(8).try_into().expect("8 bytes")),
            },
        })
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
    /// Per keyspace, per counter key: where the delta of the add that others fold into sits
    /// in `batch`'s bytes.
    counters: HashMap<Keyspace, HashMap<Vec<u8>, usize>>,
}

impl CombinedBatch {
    /// Appends `batch`'s operations.
    pub(crate) fn push(&mut self, batch: WriteBatch) {
        for op in batch.ops() {
            match op {
                BatchOp::CounterAdd {
                    keyspace,
                    key,
                    delta,
                } => {
                    let counters = self.counters.entry(keyspace).or_default();
                    if let Some(&at) = counters.get(key) {
                        let slot = &mut self.batch.bytes[at..at + 8];
                        let sum = i64::from_le_bytes((&*slot).try_into().expect("8 bytes"))
                            .wrapping_add(delta);
                        slot.copy_from_slice(&sum.to_le_bytes());
                        continue;
                    }
                    self.batch.counter_add(keyspace, key, delta);
                    counters.insert(key.to_vec(), self.batch.bytes.len() - 8);
                }
                BatchOp::Put {
                    keyspace,
                    key,
                    value,
                } => {
                    self.forget(keyspace, key);
                    self.batch.put(keyspace, key, value);
                }
                BatchOp::Delete { keyspace, key } => {
                    self.forget(keyspace, key);
                    self.batch.delete(keyspace, key);
                }
                BatchOp::DeleteRange {
                    keyspace,
                    start,
                    end,
                } => {
                    self.counters.remove(&keyspace);
                    self.batch.delete_range(keyspace, start, end);
                }
            }
        }
    }

    /// A later add of `key` must not fold into an add made before this operation on it.
    fn forget(&mut self, keyspace: Keyspace, key: &[u8]) {
        if let Some(counters) = self.counters.get_mut(&keyspace) {
            counters.remove(key);
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
    fn operations_read_back_in_order_with_their_bytes() {
        let (a, b) = (Keyspace::from_index(0), Keyspace::from_index(7));
        let mut batch = WriteBatch::new();
        batch.put(a, b"key", b"value");
        batch.put(b, Vec::new(), String::from("owned"));
        batch.delete(b, [0u8, 1, 2]);
        batch.delete_range(a, b"", b"\xff");
        batch.counter_add(b, "n", i64::MIN);
        let mut other = WriteBatch::new();
        other.put(a, b"last", []);
        batch.extend(other);
        assert_eq!(batch.len(), 6);
        assert!(!batch.is_empty() && WriteBatch::new().is_empty());
        let ops: Vec<BatchOp<'_>> = batch.ops().collect();
        assert_eq!(
            ops,
            vec![
                BatchOp::Put {
                    keyspace: a,
                    key: b"key",
                    value: b"value"
                },
                BatchOp::Put {
                    keyspace: b,
                    key: b"",
                    value: b"owned"
                },
                BatchOp::Delete {
                    keyspace: b,
                    key: &[0, 1, 2]
                },
                BatchOp::DeleteRange {
                    keyspace: a,
                    start: b"",
                    end: b"\xff"
                },
                BatchOp::CounterAdd {
                    keyspace: b,
                    key: b"n",
                    delta: i64::MIN
                },
                BatchOp::Put {
                    keyspace: a,
                    key: b"last",
                    value: b""
                },
            ]
        );
        assert_eq!(
            ops.iter().map(BatchOp::keyspace).collect::<Vec<_>>(),
            [a, b, b, a, b, a]
        );
    }

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
