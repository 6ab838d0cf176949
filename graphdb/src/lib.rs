//! A graph store with exact reachability indexes, on top of [`engine`].
//!
//! A [`GraphStore`] holds named namespaces of nodes (leaves and groups, with string names
//! mapped to dense `u32` ids) and typed edges: membership edges (roles `member` and `admin`)
//! and relation edges (`audits`, ...), each with an optional expiry. For every namespace an
//! in-memory index — the transitive closure over active membership edges, as roaring bitmaps
//! in both directions — answers "is P in T", "members of T" and "teams of P" without touching
//! the engine; the upward half of the closure is persisted with every write, so reopening
//! loads it instead of rebuilding it. Expired edges leave the index at the second they expire,
//! as told by a [`Clock`]. [`Teams`] and [`PackageSets`] are the two typed façades.
//!
//! Every write records its [`Change`] in the store's change feed in the same engine batch and
//! returns its revision; [`GraphStore::changes`], [`GraphStore::team_history`] and
//! [`GraphStore::person_history`] read it (see [`changes`]).
//!
//! Every call blocks (on a lock, on the CPU, or on the engine for writes): call it from
//! `spawn_blocking` or a dedicated thread in async code. `graphdb/DESIGN.md` describes the
//! layout, the index and its update rules.
//!
//! ```
//! use std::sync::Arc;
//! use graphdb::{Depth, GraphStore, ManualClock, Role, TeamFilter};
//!
//! # fn main() -> Result<(), graphdb::Error> {
//! let engine = engine::EngineConfig::memory().open(graphdb::KEYSPACES)?;
//! let clock = Arc::new(ManualClock::at_seconds(1_000));
//! let store = GraphStore::builder(engine).clock(clock.clone()).open()?;
//! let teams = graphdb::Teams::open(&store)?;
//! teams.add_person("alice")?;
//! teams.add_team("ubuntu-dev")?;
//! teams.add_team("core-dev")?;
//! teams.set_membership("ubuntu-dev", "core-dev", Role::Member, None)?;
//! teams.set_membership("core-dev", "alice", Role::Admin, Some(2_000))?;
//!
//! assert!(teams.is_member("alice", "ubuntu-dev")?);
//! let page = teams.members("ubuntu-dev", Depth::Transitive, TeamFilter::Persons, None, 10)?;
//! assert_eq!(page.items, ["alice"]);
//! assert_eq!(teams.path("alice", "ubuntu-dev")?.unwrap(), ["alice", "core-dev", "ubuntu-dev"]);
//!
//! clock.set_seconds(2_000); // the membership expires at this second
//! assert!(!teams.is_member("alice", "ubuntu-dev")?);
//! # Ok(())
//! # }
//! ```

pub mod changes;
mod error;
mod event_codec;
pub mod generate;
mod graph;
pub mod graphs;
pub mod import;
mod packagesets;
mod teams;

pub use changes::{Change, ChangeKind, EdgeState, SYSTEM_ACTOR};
pub use engine::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use graph::{
    validate_label, validate_relation, ChangesPage, CheckReport, Depth, Difference, Direction,
    EdgeKind, EdgeRecord, Filter, Followed, GraphStore, GraphStoreBuilder, HistoryOf, HistoryPage,
    IndexStats, LabelledEdge, MemoryStats, Namespace, NamespaceKind, NodeId, NodeKind, Page,
    RawHistoryPage, Role, View, DEFAULT_RETENTION,
};
pub use graphs::{Graph, NodeEdges, Reach, Traversal};
pub use packagesets::{PackageSets, SetFilter, SetItem};
pub use teams::{TeamFilter, Teams};

/// The keyspaces this crate's graph store uses; declare them when opening the engine (the
/// directory server adds those of the other modules).
pub const KEYSPACES: &[&str] = graph::KEYSPACES;

// The handles are shared between the directory server's threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<GraphStore>();
    shareable::<Namespace>();
    shareable::<Teams>();
    shareable::<PackageSets>();
    shareable::<Graph>();
    shareable::<Error>();
};
