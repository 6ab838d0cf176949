//! The generic graph store: namespaces of named nodes and typed, expiring edges, with an exact
//! reachability index over membership edges.
//!
//! A [`GraphStore`] opens on an engine and hands out [`Namespace`]s. Every node is a *leaf*
//! (a person, a package: it has no members) or a *group* (a team, a package set). A
//! membership edge `member -> group` carries a [`Role`] and an optional expiry; a relation
//! edge `holder -(relation)-> target` (such as `audits`) carries a name and an optional expiry
//! and never counts as membership.

mod bulk;
mod desc;
mod follow;
mod general;
mod hubs;
mod inspect;
mod memory;
mod names;
mod namespace;
mod order;
mod probes;
mod records;
mod state;
pub(crate) mod storage;
mod store;
mod types;
mod view;

pub(crate) use bulk::{BulkEdge, BulkKind, BulkLoad};
pub use follow::Followed;
pub use general::{Direction, LabelledEdge};
pub use memory::MemoryStats;
pub use namespace::Namespace;
pub use store::{
    ChangesPage, GraphStore, GraphStoreBuilder, HistoryOf, HistoryPage, RawHistoryPage,
    DEFAULT_RETENTION,
};
pub use types::validate_label;
pub(crate) use types::validate_name;
pub use types::{
    validate_relation, CheckReport, Depth, Difference, EdgeKind, EdgeRecord, Filter, IndexStats,
    NamespaceKind, NodeId, NodeKind, Page, Role,
};
pub use view::View;

/// The keyspaces of the graph store; declare them when opening the engine.
pub const KEYSPACES: &[&str] = &[
    storage::META,
    storage::NODES,
    storage::EDGES,
    storage::CLOSURE,
    storage::CHANGES,
    storage::HISTORY,
    storage::CONSUMERS,
];
