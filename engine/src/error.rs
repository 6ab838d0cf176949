//! The engine's error type.

use std::path::PathBuf;

use crate::Backend;

/// The boxed cause of a backend error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A keyspace name that was not declared when the engine was opened, or a handle from
    /// another engine.
    #[error("keyspace {name:?} was not declared when the engine was opened")]
    UnknownKeyspace {
        /// The name asked for (or the handle's index).
        name: String,
    },
    /// The backend failed an operation.
    #[error("{backend} failed to {operation} (store at {path}): {source}")]
    Backend {
        /// Which backend.
        backend: Backend,
        /// What the engine was doing: "open", "write", "read", "scan", "flush", ...
        operation: &'static str,
        /// Where the store lives.
        path: PathBuf,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },
    /// An earlier write or sync failed, so the engine no longer accepts writes: what was
    /// acknowledged before stays readable, and reopening the store recovers.
    #[error("{backend} store at {path} refuses writes after an earlier failure: {cause}")]
    Poisoned {
        /// Which backend.
        backend: Backend,
        /// Where the store lives.
        path: PathBuf,
        /// The message of the failure that poisoned the engine.
        cause: String,
    },
    /// A value read as a counter is not 8 bytes long.
    #[error("value at key {key:02x?} is {len} bytes long, not an 8-byte counter")]
    CorruptCounter {
        /// The key.
        key: Vec<u8>,
        /// The length found.
        len: usize,
    },
    /// The configuration cannot be used.
    #[error("invalid engine configuration: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
