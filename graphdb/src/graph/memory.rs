//! Where a namespace's memory goes: an estimate of the heap each in-memory structure holds,
//! for the memory table of `DESIGN.md` (issue 18, part 5). Estimated from lengths and
//! capacities with jemalloc's size classes (the servers' allocator), not measured: compare
//! the total with the process's resident memory to see the engine's and the allocator's share.

use roaring::RoaringBitmap;

use super::state::{Link, NodeRec, State};

/// Estimated heap bytes of one namespace's in-memory state, by structure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Live nodes.
    pub nodes: u64,
    /// Membership edges (each is held twice: in its member's `up` and its group's `down`).
    pub edges: u64,
    /// (member, group) pairs in the closure.
    pub pairs: u64,
    /// The node slots (`Option<NodeRec>`: kind, one adjacency `Vec` header).
    pub node_slots: u64,
    /// The names: their text end to end, dead bytes included, and each id's span of it.
    pub names: u64,
    /// The name -> id table (12-byte slots, `names.rs`).
    pub name_map: u64,
    /// The adjacency lists' allocations, both directions, and the side table of expiries.
    pub adjacency: u64,
    /// `anc`: the groups' bitmaps (a hash table of headers and their containers; leaves have
    /// none: their closure is their probe).
    pub closure_up: u64,
    /// `probe`: the is-member copy of `anc` (every node's sorted groups in one flat array,
    /// a start per node, and the side table of the sets changed since the last fold).
    pub probe: u64,
    /// `desc`: the transpose restricted to groups, per group with groups below it (the
    /// leaves below a group are gathered from the adjacency lists when asked for).
    pub closure_down: u64,
    /// The hubs of a general graph: their full reach both ways, and `via` (the hubs in each
    /// node's cut closure).
    pub hubs: u64,
    /// The name order (sorted ids and ranks) and the kept member lists.
    pub name_order: u64,
    /// Expiry queue, relations, kind sets, labels.
    pub other: u64,
}

impl MemoryStats {
    /// The sum of every structure.
    pub fn total(&self) -> u64 {
        self.node_slots
            + self.names
            + self.name_map
            + self.adjacency
            + self.closure_up
            + self.probe
            + self.closure_down
            + self.hubs
            + self.name_order
            + self.other
    }
}

/// The bytes jemalloc hands out for a request of `n` bytes (its size classes: 8, multiples of
/// 16 up to 128, then four classes per doubling).
pub(crate) fn allocated(n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    if n <= 8 {
        return 8;
    }
    if n <= 128 {
        return n.div_ceil(16) as u64 * 16;
    }
    let group = usize::BITS - (n - 1).leading_zeros() - 1; // 2^group < n <= 2^(group+1)
    let step = 1usize << group.saturating_sub(2);
    (n.div_ceil(step) * step) as u64
}

/// Heap bytes of a roaring bitmap's containers (the header is counted by its holder).
fn bitmap_heap(set: &RoaringBitmap) -> u64 {
    if set.is_empty() {
        return 0;
    }
    let stats = set.statistics();
    // One `Container` (key, length and store) per container in the bitmap's vector.
    let headers = allocated(stats.n_containers as usize * 32);
    headers
        + stats.n_bytes_array_containers
        + stats.n_bytes_bitset_containers
        + stats.n_bytes_run_containers
}

impl State {
    /// Estimates where this namespace's memory goes.
    pub fn memory(&self) -> MemoryStats {
        let mut m = MemoryStats {
            nodes: self.leaves.len() + self.groups.len(),
            node_slots: (self.nodes.capacity() * std::mem::size_of::<Option<NodeRec>>()) as u64,
            ..MemoryStats::default()
        };
        for node in self.nodes.iter().flatten() {
            m.edges += node.up().len() as u64;
            let link = std::mem::size_of::<Link>();
            m.adjacency += allocated(node.links_capacity() * link);
        }
        (m.names, m.name_map) = self.names.heap_bytes();
        let buckets = (self.expiries.capacity() * 8 / 7).next_power_of_two();
        m.adjacency += (buckets * (std::mem::size_of::<((u32, u32), i64)>() + 1)) as u64;
        let buckets = (self.anc.capacity() * 8 / 7).next_power_of_two();
        m.closure_up = (buckets * (std::mem::size_of::<(u32, RoaringBitmap)>() + 1)) as u64;
        for anc in self.anc.values() {
            m.closure_up += bitmap_heap(anc);
        }
        m.probe = self.probe.heap_bytes();
        m.pairs = self.probe.pairs();
        let buckets = (self.desc.capacity() * 8 / 7).next_power_of_two();
        m.closure_down = (buckets * (std::mem::size_of::<(u32, RoaringBitmap)>() + 1)) as u64;
        for desc in self.desc.values() {
            m.closure_down += bitmap_heap(desc);
        }
        m.hubs = self.hub_bytes(bitmap_heap);
        m.name_order = self.order.heap_bytes() + self.lists.heap_bytes();
        // A B-tree entry costs about its size again in node overhead.
        m.other = (self.expiry.len() * 2 * std::mem::size_of::<(i64, u32, u32)>()) as u64
            + self
                .relations
                .keys()
                .map(|(r, _, _)| 2 * 40 + allocated(r.len()))
                .sum::<u64>()
            + bitmap_heap(&self.leaves)
            + bitmap_heap(&self.groups)
            + bitmap_heap(&self.dirty)
            + bitmap_heap(&self.big)
            + self
                .labels
                .iter()
                .map(|l| 2 * allocated(l.len()) + 40)
                .sum::<u64>();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::allocated;

    #[test]
    fn size_classes_are_jemallocs() {
        let classes: Vec<u64> = [
            1, 8, 9, 16, 17, 32, 33, 48, 49, 64, 65, 80, 129, 160, 161, 1000,
        ]
        .iter()
        .map(|&n| allocated(n))
        .collect();
        assert_eq!(
            classes,
            [8, 8, 16, 16, 32, 32, 48, 48, 64, 64, 80, 80, 160, 160, 192, 1024]
        );
    }
}
