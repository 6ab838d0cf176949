//! Write batches: a list of operations applied atomically and in order.

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

    /// Sets `key` to `value`.
    pub fn put(&mut self, keyspace: Keyspace, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops.push(BatchOp::Put {
            keyspace,
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        });
    }

    /// Removes `key`.
    pub fn delete(&mut self, keyspace: Keyspace, key: impl AsRef<[u8]>) {
        self.ops.push(BatchOp::Delete {
            keyspace,
            key: key.as_ref().to_vec(),
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
    pub fn counter_add(&mut self, keyspace: Keyspace, key: impl AsRef<[u8]>, delta: i64) {
        self.ops.push(BatchOp::CounterAdd {
            keyspace,
            key: key.as_ref().to_vec(),
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
