//! The records of one namespace's nodes in memory: a node (`NodeRec`) with its membership
//! links both ways, and a small sorted set of ids (`Probe`, for the hubs below a node). `state.rs` keeps them
//! in `State` and maintains the closure over them.

use roaring::RoaringBitmap;

use super::{NodeKind, Role};

/// A membership edge as seen from one of its ends, in an adjacency list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// The node at the other end.
    pub other: u32,
    /// The edge's label in [`State::labels`] (0: none); general graphs label their edges.
    pub label: u16,
    /// The role.
    pub role: Role,
    /// Whether the edge has an expiry, kept in [`State::expiries`]: few edges have one (3% of
    /// a Launchpad-shaped graph), so a link is 8 bytes rather than 16 with the expiry inline
    /// (each edge is held twice: 14 MB at 880,000 edges).
    pub timed: bool,
}

// A link stays 8 bytes (see DESIGN.md, memory per edge).
const _: () = assert!(std::mem::size_of::<Link>() == 8);

/// A stored membership edge, looked up by its two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Edge {
    pub role: Role,
    pub label: u16,
    pub(super) expires: Option<i64>,
}

impl Edge {
    /// When it stops counting (Unix seconds), if ever.
    pub fn expires(&self) -> Option<i64> {
        self.expires
    }
}

/// Whether an edge with this expiry counts at time `t`.
pub(crate) fn active_at(expires: Option<i64>, t: i64) -> bool {
    expires.is_none_or(|e| e > t)
}

/// A small sorted set of ids: up to four inline, more in a sorted boxed slice. `via` (the
/// hubs in each node's cut closure) uses it; the closure's own probe is `probes.rs`'s flat
/// array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// `n` groups inline.
    Inline(u8, [u32; 4]),
    /// Sorted groups.
    Heap(Box<[u32]>),
}

impl Default for Probe {
    fn default() -> Self {
        Probe::Inline(0, [0; 4])
    }
}

impl Probe {
    pub fn of(set: &RoaringBitmap) -> Probe {
        if set.len() <= 4 {
            let mut inline = [0; 4];
            for (slot, g) in inline.iter_mut().zip(set) {
                *slot = g;
            }
            Probe::Inline(set.len() as u8, inline)
        } else {
            Probe::Heap(set.iter().collect())
        }
    }

    /// The groups, sorted.
    pub fn as_slice(&self) -> &[u32] {
        match self {
            Probe::Inline(n, inline) => &inline[..usize::from(*n)],
            Probe::Heap(sorted) => sorted,
        }
    }
}

/// `set` again in allocations of its exact size. A bitmap built by inserting or pushing grows
/// its container vector to four slots (128 bytes) at the first element and its arrays by
/// doubling; read back from its serialized form it holds one 32-byte slot per container and
/// arrays of their length: 48 MB less at 500,000 persons in about three teams each.
pub(crate) fn compact(set: &RoaringBitmap, buffer: &mut Vec<u8>) -> RoaringBitmap {
    buffer.clear();
    set.serialize_into(&mut *buffer)
        .expect("writing into a Vec cannot fail");
    RoaringBitmap::deserialize_unchecked_from(buffer.as_slice())
        .expect("a bitmap just serialized reads back")
}

/// A live node.
#[derive(Clone, Debug)]
pub(crate) struct NodeRec {
    pub kind: NodeKind,
    /// How many of `links` are `up` links (they come first).
    ups: u32,
    /// The membership edges where this node is the member (`up`), then those where it is the
    /// group (`down`): one vector rather than two saves a 24-byte header per node (13 MB at
    /// 530,000 nodes, most of them persons with no `down` at all). Neither part is ordered.
    links: Vec<Link>,
}

// A node slot stays 32 bytes (`Option` uses the pointer's niche; the name is in
// `State::names`; DESIGN.md, memory).
const _: () = assert!(std::mem::size_of::<Option<NodeRec>>() == 32);

impl NodeRec {
    pub fn new(kind: NodeKind) -> NodeRec {
        NodeRec {
            kind,
            ups: 0,
            links: Vec::new(),
        }
    }

    /// Membership edges where this node is the member.
    pub fn up(&self) -> &[Link] {
        &self.links[..self.ups as usize]
    }

    /// Membership edges where this node is the group.
    pub fn down(&self) -> &[Link] {
        &self.links[self.ups as usize..]
    }

    /// The heap bytes the links take (for [`State::memory`]).
    pub fn links_capacity(&self) -> usize {
        self.links.capacity()
    }

    /// Appends an `up` link: the first `down` link moves to the end, so O(1).
    pub(super) fn push_up(&mut self, link: Link) {
        self.links.push(link);
        let last = self.links.len() - 1;
        self.links.swap(self.ups as usize, last);
        self.ups += 1;
    }

    pub(super) fn push_down(&mut self, link: Link) {
        self.links.push(link);
    }

    /// Removes the `up` link to `group`: it swaps with the last `up` link, which then swaps
    /// with the last link, so O(1) as a `swap_remove` was.
    pub(super) fn remove_up(&mut self, group: u32) -> Option<Link> {
        let pos = self.up().iter().position(|l| l.other == group)?;
        let last_up = self.ups as usize - 1;
        self.links.swap(pos, last_up);
        self.ups -= 1;
        Some(self.links.swap_remove(last_up))
    }

    pub(super) fn remove_down(&mut self, member: u32) {
        if let Some(pos) = self.down().iter().position(|l| l.other == member) {
            self.links.swap_remove(self.ups as usize + pos);
        }
    }

    pub(super) fn shrink(&mut self) {
        self.links.shrink_to_fit();
    }
}
