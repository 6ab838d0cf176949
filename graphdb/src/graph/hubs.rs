//! Hubs: general graphs stop expanding closures through a few nodes that most of the graph
//! reaches (libc6 in a distribution), so an edge that merges two large components changes a
//! handful of sets instead of every closure upstream (`DESIGN.md`, "Hubs").
//!
//! With a hub set `H`, `anc[x]` is the *cut* closure: the nodes `x` reaches by a path whose
//! interior nodes are not hubs (hubs appear in it as endpoints), and `desc` its transpose.
//! Every hub `h` also has `full[h]` (everything it reaches) and `full_in[h]` (everything that
//! reaches it), kept in memory only and derived from the cut sets over the small hub graph.
//! Then `x` reaches `y` iff `y ∈ anc[x]` or `y ∈ full[h]` for a hub `h ∈ anc[x]`: a path
//! from `x` either has no hub inside, or its first interior hub `h` is in `anc[x]` and the
//! rest of the path is in `full[h]`. Any `H` gives exact answers; `H` only decides the speed.
//! An empty `H` (teams, package sets, acyclic graphs, small graphs) is the plain closure.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};
use roaring::RoaringBitmap;

use super::state::{Probe, State};

/// The hubs of a namespace and their full reach both ways.
#[derive(Debug, Default)]
pub(crate) struct Hubs {
    /// `H`: chosen when a general graph is first imported or rebuilt, never incrementally.
    pub set: RoaringBitmap,
    /// Everything each hub reaches over one or more edges.
    pub full: HashMap<u32, RoaringBitmap>,
    /// Everything that reaches each hub over one or more edges.
    pub full_in: HashMap<u32, RoaringBitmap>,
    /// `set` changed since it was last persisted.
    pub dirty: bool,
}

/// A node is made a hub when at least this many active edges point to it...
const MIN_IN_DEGREE: u64 = 64;
/// ...and at least one live node in this many does.
const IN_DEGREE_SHARE: u64 = 500;

impl State {
    /// Whether `x` is a hub.
    #[inline]
    pub fn is_hub(&self, x: u32) -> bool {
        self.hubs.set.contains(x)
    }

    /// The hubs a general graph would choose now: the nodes with many incoming edges, a
    /// cheap stand-in for "reached by a large part of the graph" (which would need the full
    /// closure this index avoids). A dependency graph's most reached packages are also its
    /// most depended on, directly.
    pub fn choose_hubs(&self) -> RoaringBitmap {
        let live = self.groups.len() + self.leaves.len();
        let min = MIN_IN_DEGREE.max(live / IN_DEGREE_SHARE);
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(x, node)| {
                let node = node.as_ref()?;
                let degree = node
                    .down()
                    .iter()
                    .filter(|l| self.active_down(x as u32, l))
                    .count() as u64;
                (degree >= min).then_some(x as u32)
            })
            .collect()
    }

    /// Replaces the hub set. The cut closures are then stale: the caller recomputes every
    /// node (an import into a namespace without edges, `rebuild`).
    pub fn set_hubs(&mut self, set: RoaringBitmap) {
        if set != self.hubs.set {
            self.hubs.set = set;
            self.hubs.dirty = true;
        }
        self.refresh_all_via();
        self.rebuild_full();
    }

    /// Whether `x` reaches `y` over one or more edges: one probe of `anc[x]`, then one per
    /// hub in it.
    #[inline]
    pub fn reaches(&self, x: u32, y: u32) -> bool {
        if self.probe.contains(x, y) {
            return true;
        }
        self.via.get(x as usize).is_some_and(|via| {
            via.as_slice()
                .iter()
                .any(|h| self.hubs.full.get(h).is_some_and(|f| f.contains(y)))
        })
    }

    /// Everything `x` reaches: `anc[x]` and the full reach of its hubs (a hub's own `full`).
    pub fn reach_set(&self, x: u32) -> RoaringBitmap {
        if let Some(full) = self.hubs.full.get(&x) {
            return full.clone();
        }
        let mut set = self.anc(x).into_owned();
        if let Some(via) = self.via.get(x as usize) {
            for h in via.as_slice() {
                if let Some(full) = self.hubs.full.get(h) {
                    set |= full;
                }
            }
        }
        set
    }

    /// Everything that reaches `y`: `desc[y]` and what reaches its hubs (a hub's own
    /// `full_in`: one copy where the union would take one per hub below it).
    pub fn reached_by(&self, y: u32) -> RoaringBitmap {
        if let Some(full_in) = self.hubs.full_in.get(&y) {
            return full_in.clone();
        }
        let mut set = self.desc_of(y).into_owned();
        if !self.hubs.set.is_empty() {
            for h in &(&set & &self.hubs.set) {
                if let Some(full_in) = self.hubs.full_in.get(&h) {
                    set |= full_in;
                }
            }
        }
        set
    }

    /// The nodes whose `anc` may change when an active edge out of `member` goes: `member`
    /// alone when it is a hub (no path has it inside), else it and everything below it. Closed
    /// downward as [`State::recompute`] needs: what depends on it is in it.
    pub fn affected_by_loss(&self, member: u32) -> RoaringBitmap {
        if self.is_hub(member) {
            RoaringBitmap::from_iter([member])
        } else {
            self.self_and_desc(member)
        }
    }

    /// Updates `via[x]` (the hubs in `anc[x]`) after `anc[x]` changed.
    pub(super) fn refresh_via(&mut self, x: u32) {
        if x as usize >= self.via.len() {
            return;
        }
        self.via[x as usize] = Probe::of(&(self.anc(x).as_ref() & &self.hubs.set));
    }

    /// Sizes `via` to the nodes (empty when there are no hubs: nothing to keep) and fills it.
    pub(super) fn refresh_all_via(&mut self) {
        if self.hubs.set.is_empty() {
            self.via = Vec::new();
            return;
        }
        let set = &self.hubs.set;
        self.via = (0..self.probe.len() as u32)
            .map(|x| Probe::of(&(self.anc(x).as_ref() & set)))
            .collect();
    }

    /// After `a -> b` became active, with `ra = {a} ∪ reached_by(a)` and
    /// `rb = {b} ∪ reach_set(b)` as they were before: the new pairs are `ra × rb`, so every
    /// hub in `ra` gains `rb` and every hub in `rb` gains `ra` in the other direction. A
    /// handful of unions, however many nodes lie upstream.
    pub(super) fn add_full(&mut self, ra: &RoaringBitmap, rb: &RoaringBitmap) {
        for h in &(ra & &self.hubs.set) {
            *self.hubs.full.entry(h).or_default() |= rb;
        }
        for h in &(rb & &self.hubs.set) {
            *self.hubs.full_in.entry(h).or_default() |= ra;
        }
    }

    /// Recomputes `full` and `full_in` from the cut closures over the hub graph (`h -> h'`
    /// when `h' ∈ anc[h]`), condensed into strongly connected components (hubs can form
    /// cycles: libc6 <-> libgcc-s1): a hub's full reach is its cut closure and the full reach
    /// of the hubs in it, successors first; its full ancestry likewise, predecessors first.
    pub fn rebuild_full(&mut self) {
        self.hubs.full.clear();
        self.hubs.full_in.clear();
        if self.hubs.set.is_empty() {
            return;
        }
        let set = &self.hubs.set;
        let hubs: Vec<u32> = set.iter().collect();
        let index = |h: u32| NodeIndex::new(set.rank(h) as usize - 1);
        let mut graph: DiGraph<u32, ()> = DiGraph::with_capacity(hubs.len(), 0);
        for &h in &hubs {
            graph.add_node(h);
        }
        let empty = RoaringBitmap::new();
        let cut = |h: u32| self.anc.get(&h).unwrap_or(&empty);
        // `desc` keeps groups only: each hub's whole cut `desc`, gathered once (borrowed
        // where there are no leaves, as in every general graph built through its API).
        let cut_in: HashMap<u32, Cow<'_, RoaringBitmap>> =
            hubs.iter().map(|&h| (h, self.desc_of(h))).collect();
        let cut_in = |h: u32| cut_in.get(&h).map_or(&empty, |set| &**set);
        let mut edges = Vec::new();
        for &h in &hubs {
            for to in &(cut(h) & set) {
                edges.push((index(h), index(to)));
            }
        }
        graph.extend_with_edges(edges);
        // Kosaraju lists the components sinks first: the order `full` needs.
        let sccs = petgraph::algo::kosaraju_scc(&graph);
        let mut full: HashMap<u32, RoaringBitmap> = HashMap::new();
        let mut full_in: HashMap<u32, RoaringBitmap> = HashMap::new();
        for (forward, sets) in [(true, &mut full), (false, &mut full_in)] {
            let order: Box<dyn Iterator<Item = &Vec<NodeIndex>>> = if forward {
                Box::new(sccs.iter())
            } else {
                Box::new(sccs.iter().rev())
            };
            for scc in order {
                let members: Vec<u32> = scc.iter().map(|&i| graph[i]).collect();
                let mut union = RoaringBitmap::new();
                for &h in &members {
                    let own = if forward { cut(h) } else { cut_in(h) };
                    union |= own;
                    for other in &(own & set) {
                        if let Some(theirs) = sets.get(&other).filter(|_| !members.contains(&other))
                        {
                            union |= theirs;
                        }
                    }
                }
                for &h in &members {
                    sets.insert(h, union.clone());
                }
            }
        }
        self.hubs.full = full;
        self.hubs.full_in = full_in;
    }

    /// The cut closure of `x` by BFS (for `check`): the nodes reached over active edges
    /// without passing through a hub (hubs are reached, not expanded).
    pub fn bfs_cut(&self, x: u32) -> RoaringBitmap {
        let mut seen = RoaringBitmap::new();
        let mut queue = VecDeque::from([x]);
        while let Some(at) = queue.pop_front() {
            let Some(node) = self.node(at) else { continue };
            for l in node.up().iter().filter(|l| self.active_up(at, l)) {
                if seen.insert(l.other) && !self.is_hub(l.other) {
                    queue.push_back(l.other);
                }
            }
        }
        seen
    }

    /// Heap bytes of the hubs' full sets, both ways, and of `via`.
    pub fn hub_bytes(&self, bitmap_heap: impl Fn(&RoaringBitmap) -> u64) -> u64 {
        let sets: u64 = self
            .hubs
            .full
            .values()
            .chain(self.hubs.full_in.values())
            .map(|s| bitmap_heap(s) + std::mem::size_of::<(u32, RoaringBitmap)>() as u64 + 1)
            .sum();
        let via: u64 = self
            .via
            .iter()
            .map(|v| match v {
                Probe::Heap(s) => s.len() as u64 * 4,
                Probe::Inline(..) => 0,
            })
            .sum();
        sets + via + (self.via.capacity() * std::mem::size_of::<Probe>()) as u64
    }
}
