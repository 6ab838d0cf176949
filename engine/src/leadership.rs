//! Leader election through the store's database, with a fencing epoch: one writer per store
//! at a time among several instances on one PostgreSQL (`engine/DESIGN.md`, "Leadership and
//! fencing").
//!
//! A lease is a row per name (holder, epoch, expiry in the database's clock). An instance
//! [`acquire`](Leadership::acquire)s it, [`renew`](Leadership::renew)s it while it leads and
//! [`release`](Leadership::release)s it on a graceful shutdown; whoever takes over an expired
//! or released lease gets the next epoch. Then the instance [`fence`](Leadership::fence)s its
//! engine with that epoch: from then on every write transaction checks the lease row under a
//! share lock and is refused with [`Error::Fenced`](crate::Error::Fenced) once the epoch moved,
//! so an old leader that was paused or partitioned can never commit after a new one took over.
//!
//! The embedded backends (one process owns the store: RocksDB and sled lock their directory)
//! have no leases: [`Engine::leadership`](crate::Engine::leadership) answers `None`, and the
//! process is always the writer.

use std::fmt;
use std::time::Duration;

use crate::Result;

/// A lease's epoch: it grows by one at every change of holder (and when a holder takes its own
/// lease again after it expired), never goes back, and fences the writes of older holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Leases with fencing epochs, kept in the store's database. Implemented by `PgEngine`.
///
/// `holder` names one instance for the life of its process (host, process id and a random
/// part, say): two processes must never share a holder name. Times are the database's: a
/// lease is expired when its expiry, set from the database's clock at the last acquire or
/// renewal plus `ttl`, is past by the database's clock; the instances' clocks are never
/// compared. An instance should count itself leader no longer than `ttl` after it *sent* the
/// acquire or renewal that succeeded (measured on its monotonic clock), which ends no later
/// than the database's expiry; the fence makes even a wrong count harmless.
pub trait Leadership: Send + Sync + fmt::Debug {
    /// Takes the lease `name` for `holder` for `ttl` if it is free (absent, expired or
    /// released) or already `holder`'s, and answers its epoch: the next epoch on a takeover,
    /// the same one when `holder` held it unexpired (then this is a renewal). `None` when
    /// another holder's lease is live.
    ///
    /// A takeover waits for the write transactions in flight under the old epoch (they commit
    /// or fail first) and for at most a few seconds (an old leader paused inside a
    /// transaction has it ended by the database first).
    ///
    /// # Errors
    /// The backend's error (the database unreachable within the engine's retry time, a lock
    /// wait over its limit): the caller tries again later.
    fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Epoch>>;

    /// Extends `holder`'s lease `name` at `epoch` by `ttl` from now (the database's now);
    /// `false` when the lease moved to another epoch (another holder took over): the caller is
    /// no longer the leader. A lease that expired but that nobody took over is extended.
    ///
    /// # Errors
    /// The backend's error.
    fn renew(&self, name: &str, holder: &str, epoch: Epoch, ttl: Duration) -> Result<bool>;

    /// Ends `holder`'s lease `name` at `epoch` now, so that another instance takes over at
    /// its next attempt instead of waiting for the expiry (a graceful shutdown). Nothing
    /// happens when the lease moved on already.
    ///
    /// # Errors
    /// The backend's error.
    fn release(&self, name: &str, holder: &str, epoch: Epoch) -> Result<()>;

    /// Fences this engine's writes with lease `name` at `epoch`: every later batch with at
    /// least one operation checks, in its own transaction and under a share lock on the lease
    /// row, that the lease is still at `epoch`, and is refused with
    /// [`Error::Fenced`](crate::Error::Fenced) (nothing applied, the engine not poisoned)
    /// when it is not. Calling it again replaces the fence (after a new acquisition).
    fn fence(&self, name: &str, epoch: Epoch);
}
