//! The crate's error type, shared by every module.

use crate::graph::NodeKind;

/// What went wrong in the graph store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine failed a read or a write.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// A read of the change feed was refused (pruned, or beyond the head).
    #[error(transparent)]
    Feed(engine::FeedError),
    /// A node name that the namespace does not hold.
    #[error("namespace {namespace:?} has no node named {name:?}")]
    UnknownNode {
        /// The namespace.
        namespace: String,
        /// The name asked for.
        name: String,
    },
    /// A node exists already with another kind (a person where a team was asked for, ...).
    #[error("node {name:?} in namespace {namespace:?} is a {found}, not a {expected}")]
    WrongKind {
        /// The namespace.
        namespace: String,
        /// The node.
        name: String,
        /// Its kind.
        found: NodeKind,
        /// The kind the operation needs.
        expected: NodeKind,
    },
    /// A leaf (a person, a package) was given members.
    #[error("node {name:?} in namespace {namespace:?} is a leaf and has no members")]
    HasNoMembers {
        /// The namespace.
        namespace: String,
        /// The leaf.
        name: String,
    },
    /// A membership edge would close a cycle in a namespace that must stay acyclic.
    #[error("in namespace {namespace:?}, making {member:?} a member of {group:?} would close the cycle {}", cycle.join(" -> "))]
    Cycle {
        /// The namespace.
        namespace: String,
        /// The member side of the rejected edge.
        member: String,
        /// The group side of the rejected edge.
        group: String,
        /// The cycle, each name a member of the next, first and last equal.
        cycle: Vec<String>,
    },
    /// A node name that cannot be stored (empty, or with a control character).
    #[error("invalid node name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A relation name that cannot be used (empty, too long, not `[a-z0-9_-]`, or a role).
    #[error("invalid relation name {name:?}: {reason}")]
    InvalidRelation {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// An edge label that cannot be used (empty, longer than 255 bytes, a control character).
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel {
        /// The label.
        label: String,
        /// Why.
        reason: &'static str,
    },
    /// The namespace uses 65,535 distinct edge labels already.
    #[error("namespace {namespace:?} has no label number left")]
    LabelsExhausted {
        /// The namespace.
        namespace: String,
    },
    /// A group exists already with the other choice about cycles (made at creation).
    #[error("{name:?} in namespace {namespace:?} exists with the other choice about cycles")]
    CyclesFixed {
        /// The namespace.
        namespace: String,
        /// The group.
        name: String,
    },
    /// A graph name that the store does not hold.
    #[error("no graph named {name:?}")]
    UnknownGraph {
        /// The name asked for.
        name: String,
    },
    /// A namespace exists already with the other acyclicity.
    #[error("namespace {namespace:?} exists as {found:?}, not {requested:?}")]
    NamespaceKind {
        /// The namespace.
        namespace: String,
        /// How it is stored.
        found: crate::graph::NamespaceKind,
        /// How it was asked for.
        requested: crate::graph::NamespaceKind,
    },
    /// The namespace holds 2^32 node ids already.
    #[error("namespace {namespace:?} has no node id left")]
    IdsExhausted {
        /// The namespace.
        namespace: String,
    },
    /// A stored record cannot be decoded.
    #[error("corrupt record in keyspace {keyspace} at key {key:02x?}: {reason}")]
    Corrupt {
        /// The keyspace.
        keyspace: &'static str,
        /// The key.
        key: Vec<u8>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An earlier write failed after the in-memory index had changed; the namespace reloaded
    /// what the engine holds and refuses further writes until the store is reopened.
    #[error("namespace {namespace:?} refuses writes after an earlier failure: {cause}")]
    Poisoned {
        /// The namespace.
        namespace: String,
        /// The first failure.
        cause: String,
    },
    /// A TSV import could not be parsed or applied.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// Reading or writing a TSV stream failed.
    #[error("i/o error during {operation}: {source}")]
    Io {
        /// "import" or "export".
        operation: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<engine::FeedError> for Error {
    fn from(error: engine::FeedError) -> Self {
        match error {
            engine::FeedError::Engine(error) => Error::Engine(error),
            other => Error::Feed(other),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
