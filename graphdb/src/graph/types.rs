//! The graph's value types: ids, kinds, roles, pages, edge records, reports, name checks.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A node's dense id inside its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Whether a node can have members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// A node without members: a person, a package.
    Leaf,
    /// A node with members: a team, a package set.
    Group,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Leaf => "leaf",
            NodeKind::Group => "group",
        })
    }
}

/// Whether a namespace rejects cycles of membership edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceKind {
    /// A membership edge that would close a cycle is rejected with [`crate::Error::Cycle`].
    Acyclic,
    /// Cycles are accepted; the index treats a strongly connected component as one group.
    General,
}

/// The role of a membership edge; both confer membership.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary member.
    Member,
    /// A member who administers the group.
    Admin,
}

impl Role {
    /// The name used in TSV files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// Direct edges only, or the transitive closure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Depth {
    /// Only nodes joined by one active edge.
    Direct,
    /// Every node reachable over active edges.
    Transitive,
}

/// Which kinds of members a query returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Leaves only (persons, packages).
    Leaves,
    /// Groups only (teams, sets).
    Groups,
    /// Both.
    All,
}

/// One page of names sorted by byte order, with the cursor for the next page.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Page {
    /// The names.
    pub items: Vec<String>,
    /// Pass this as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A stored edge, expired or not, by names: what export writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeRecord {
    /// The group (membership) or target (relation).
    pub group: String,
    /// The member (membership) or holder (relation).
    pub member: String,
    /// The role, or the relation name.
    pub kind: EdgeKind,
    /// When it stops counting.
    pub expires: Option<i64>,
}

/// The kind of an edge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeKind {
    /// A membership edge with its role.
    Membership(Role),
    /// A relation edge (`audits`, `administers`, ...), never membership.
    Relation(String),
}

impl EdgeKind {
    /// `member` and `admin` name a membership role; any other name a relation (checked when
    /// the edge is written, see [`validate_relation`]).
    pub fn named(name: &str) -> EdgeKind {
        match name.parse::<Role>() {
            Ok(role) => EdgeKind::Membership(role),
            Err(()) => EdgeKind::Relation(name.to_owned()),
        }
    }
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeKind::Membership(role) => role.fmt(f),
            EdgeKind::Relation(name) => f.write_str(name),
        }
    }
}

/// A pair on which the index and a fresh BFS disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The member.
    pub member: String,
    /// The group.
    pub group: String,
    /// Whether the index holds the pair (and BFS does not), or the reverse.
    pub in_index: bool,
}

/// What [`crate::Namespace::check`] found.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// Nodes checked.
    pub nodes: u64,
    /// (member, group) pairs found by BFS.
    pub pairs: u64,
    /// Every difference between the index and BFS (empty when the index is exact).
    pub differences: Vec<Difference>,
}

impl CheckReport {
    /// Whether the index agrees with BFS.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Sizes of the index, for capacity planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IndexStats {
    /// Live nodes.
    pub nodes: u64,
    /// Stored membership edges (expired ones included).
    pub membership_edges: u64,
    /// (member, group) pairs in the closure: in a general graph with hubs, the *cut* closure
    /// that is stored (pairs through a hub are answered by the hub's full set, not counted).
    pub pairs: u64,
    /// (member, group) pairs whose member is a group: what the persisted closure holds.
    pub group_pairs: u64,
    /// Bytes of the persisted closure values: the groups' serialised roaring bitmaps, keys
    /// excluded (leaves are derived at load).
    pub closure_bytes: u64,
    /// Bytes the closure of every node would take serialised the same way (for comparison).
    pub full_closure_bytes: u64,
}

/// Checks a node name: not empty, no control characters (tabs and newlines would break TSV).
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "empty",
        });
    }
    if name.len() > 1024 {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "longer than 1024 bytes",
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "contains a control character",
        });
    }
    Ok(())
}

/// Checks an edge label: 1 to 255 bytes, no control characters.
///
/// # Errors
/// [`crate::Error::InvalidLabel`] with the reason.
pub fn validate_label(label: &str) -> Result<()> {
    let reason = if label.is_empty() || label.len() > 255 {
        "must be 1 to 255 bytes long"
    } else if label.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidLabel {
        label: label.into(),
        reason,
    })
}

/// Checks a relation name: 1 to 64 bytes of `[a-z0-9_-]`, and not a role.
///
/// # Errors
/// [`crate::Error::InvalidRelation`] with the reason.
pub fn validate_relation(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > 64 {
        "must be 1 to 64 bytes long"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        "must be made of a-z, 0-9, '_' and '-'"
    } else if name.parse::<Role>().is_ok() {
        "is a membership role"
    } else {
        return Ok(());
    };
    Err(Error::InvalidRelation {
        name: name.into(),
        reason,
    })
}
