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
    /// The batch was refused, nothing applied, because the store's lease moved on: another
    /// instance took over as leader since this engine was given `epoch` with
    /// [`Leadership::fence`](crate::Leadership::fence). Not a poisoning: reads go on, and the
    /// engine writes again once fenced with a current epoch.
    #[error(
        "refused: this instance is no longer the writer of {name:?} (fenced at epoch {epoch}, \
         the lease is at {})",
        current_epoch(.current)
    )]
    Fenced {
        /// The lease's name.
        name: String,
        /// The epoch this engine was fenced with.
        epoch: u64,
        /// The lease's epoch now, as read after the refusal (`None`: no lease row).
        current: Option<u64>,
    },
    /// The batch was refused, nothing applied, because an earlier batch it depends on failed
    /// (a [`Chain`](crate::Chain) of the change log): writing it alone would store a change
    /// computed from one the engine does not hold.
    #[error("refused: an earlier write this one depends on failed: {cause}")]
    EarlierWriteFailed {
        /// The message of the earlier failure.
        cause: String,
        /// Whether that failure was transient ([`Error::is_transient`]: fenced, the database
        /// out of reach, a commit found not landed), so that the writer may go on once it has
        /// reloaded what the engine holds.
        transient: bool,
    },
    /// The backend cannot do this (a checkpoint of sled, of memory, of PostgreSQL).
    #[error("{backend} cannot {operation}: {hint}")]
    Unsupported {
        /// Which backend.
        backend: Backend,
        /// What was asked: "checkpoint", ...
        operation: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The configuration cannot be used.
    #[error("invalid engine configuration: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whether the store's database could not be reached: a network engine gave up after
    /// its retries (`retry_ms`) of lost connections, nothing applied. A server answers it with
    /// 503 and `Retry-After`, not 500: the store is fine, the database is away.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Backend { source, .. } => source.is::<Unreachable>(),
            _ => false,
        }
    }

    /// Whether the write is known to have left nothing behind with the engine still sound:
    /// this instance was fenced, the database was out of reach, a commit cut by a lost
    /// connection was found on a new one not to have landed ([`NotLanded`]), or an earlier
    /// write of the chain failed so. An owner whose memory ran ahead of the engine goes back
    /// to what the engine holds and writes again; after any other failure (a failed sync, an
    /// outcome it could not resolve) it refuses writes until reopened.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Fenced { .. } => true,
            Error::EarlierWriteFailed { transient, .. } => *transient,
            Error::Backend { source, .. } => source.is::<Unreachable>() || source.is::<NotLanded>(),
            _ => false,
        }
    }
}

/// The cause of an [`Error::Backend`] when a commit's connection was lost and a new
/// connection found the batch not applied: nothing of it will ever land.
#[derive(Debug, thiserror::Error)]
#[error(
    "the connection was lost while the batch was committing, and on a new connection the \
     batch was found not to have landed (it can no longer land): the batch is refused"
)]
pub struct NotLanded;

/// The cause of an [`Error::Backend`] when the database could not be reached within the
/// engine's retries ([`Error::is_unavailable`]).
#[derive(Debug, thiserror::Error)]
#[error("gave up after {waited:?} of lost connections: {last}")]
pub struct Unreachable {
    /// How long the engine tried.
    pub waited: std::time::Duration,
    /// The last connection error.
    pub last: String,
}

fn current_epoch(current: &Option<u64>) -> String {
    match current {
        Some(epoch) => format!("epoch {epoch}"),
        None => "no epoch: the lease row is gone".to_string(),
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(source: BoxError) -> Error {
        Error::Backend {
            backend: Backend::Postgres,
            operation: "write",
            path: PathBuf::from("x"),
            source,
        }
    }

    #[test]
    fn transient_failures_are_those_that_applied_nothing_and_left_the_engine_sound() {
        let unreachable = Unreachable {
            waited: std::time::Duration::from_secs(1),
            last: "refused".into(),
        };
        assert!(backend(Box::new(unreachable)).is_transient());
        assert!(backend(Box::new(NotLanded)).is_transient());
        let fenced = Error::Fenced {
            name: "l".into(),
            epoch: 1,
            current: Some(2),
        };
        assert!(fenced.is_transient());
        for transient in [true, false] {
            let earlier = Error::EarlierWriteFailed {
                cause: "c".into(),
                transient,
            };
            assert_eq!(earlier.is_transient(), transient);
        }
        // A failed sync, an unresolved commit, a poisoned engine: memory cannot simply go back.
        assert!(!backend("fsync failed".into()).is_transient());
        let poisoned = Error::Poisoned {
            backend: Backend::Rocksdb,
            path: PathBuf::from("x"),
            cause: "c".into(),
        };
        assert!(!poisoned.is_transient());
        assert!(!backend(Box::new(NotLanded)).is_unavailable());
    }
}
