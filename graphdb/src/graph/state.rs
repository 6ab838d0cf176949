//! The in-memory state of one namespace: nodes, adjacency, and the reachability index.
//!
//! The index is a full transitive closure kept in both directions:
//! `anc[x]` holds every group that `x` is a member of through active membership edges (the
//! groups reachable upward), and `desc[g]` the transpose (every node below `g`). A group's
//! `anc` is a roaring bitmap; a leaf's is only its `probe` (sorted ids in one flat array),
//! which [`State::anc`] reads back. `desc` keeps the groups below each group only; the leaves
//! below it are the direct members of it and of those groups, which [`State::desc_of`]
//! gathers from the adjacency lists. Only the groups' `anc` is persisted; `desc` is rebuilt
//! at load by transposition. In a general graph with hubs both are *cut* closures, which stop
//! at the hubs (`hubs.rs`). See `DESIGN.md`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};
use roaring::RoaringBitmap;

use super::hubs::Hubs;
use super::names::Names;
use super::order::{MemberLists, NameOrder};
use super::probes::merge;
pub(crate) use super::probes::Probes;
pub(crate) use super::records::{active_at, compact, Edge, Link, NodeRec, Probe};
use super::{NodeKind, Role};

/// `desc` updates collected as `group << 32 | member` pairs.
#[derive(Debug, Default)]
struct DescChanges {
    lost: Vec<u64>,
    gained: Vec<u64>,
    /// Collect nothing: `desc` is transposed from `anc` afresh once the recomputation ends
    /// (for a recomputation over most of the namespace, such as an import into an empty
    /// one, one linear transposition is cheaper than sorting millions of pairs).
    transpose: bool,
}

/// One namespace in memory.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Nodes by id; `None` for ids not in use.
    pub nodes: Vec<Option<NodeRec>>,
    /// The nodes' names, both ways (`names.rs`).
    pub names: Names,
    /// Live leaves (persons, packages).
    pub leaves: RoaringBitmap,
    /// Live groups (teams, sets).
    pub groups: RoaringBitmap,
    /// The closure upward of the groups: `anc[g]` = groups `g` belongs to through active
    /// membership edges; only groups with some have an entry. A leaf's closure is its `probe`
    /// alone (read it with [`State::anc`]): a bitmap per person duplicated it, 33 MB at
    /// 500,000 persons (DESIGN.md, memory).
    pub anc: HashMap<u32, RoaringBitmap>,
    /// Every node's closure upward (groups and leaves) in the layout of the is-member hot
    /// path; equal to `anc` for groups, the only copy for leaves.
    pub probe: Probes,
    /// The closure downward, the transpose of `anc`, whole for the `big` groups and
    /// restricted to groups for the others: `desc[g]` = the groups below `g`; only groups
    /// with some have an entry. The leaves below a small group are not kept: they are the
    /// direct members of `g` and of these groups ([`State::desc_of`]). Kept for every group,
    /// they cost 11.4 B per closure pair, more than the rest of the index (DESIGN.md, memory,
    /// fourth pass); for the few large teams they cost about 2 (dense containers) and save
    /// gathering thousands of members on every uncached answer.
    pub desc: HashMap<u32, RoaringBitmap>,
    /// The groups whose `desc` holds their leaves too: those with at least [`super::desc::BIG`] nodes
    /// below them when `desc` was last transposed (at load, after an import or a rebuild).
    /// A group keeps its side until then, whatever its size becomes: either is exact.
    pub big: RoaringBitmap,
    /// Relation edges: (relation, target, holder) -> expiry.
    pub relations: BTreeMap<(Box<str>, u32, u32), Option<i64>>,
    /// The expiry of every membership edge that has one, by (member, group): the links say
    /// only whether there is one.
    pub expiries: HashMap<(u32, u32), i64>,
    /// Active membership edges that will expire: (expires, member, group).
    pub expiry: BTreeSet<(i64, u32, u32)>,
    /// The time the index is exact for: edges with `expires <= applied` are not in it.
    pub applied: i64,
    /// Nodes whose `anc` changed since the last persisted write.
    pub dirty: RoaringBitmap,
    /// Edge labels by number; number 0 (no label) is the empty string. Never shrinks.
    pub labels: Vec<Box<str>>,
    /// Label numbers by label.
    pub label_ids: HashMap<Box<str>, u16>,
    /// Groups of an acyclic namespace that opted into cycles: an edge may close a cycle when
    /// every node on the cycles it closes is one of them.
    pub cycles_allowed: RoaringBitmap,
    /// Ranks in name order, for pages sorted by name (and, for general graphs, positions).
    pub order: NameOrder,
    /// Transitive member lists sorted by name, dropped when a group's `desc` changes.
    pub lists: MemberLists,
    /// The hubs of a general graph (empty elsewhere): with hubs, `anc` and `desc` are the
    /// cut closures of `hubs.rs`, not the full ones.
    pub hubs: Hubs,
    /// The hubs in each `anc[x]` (empty when there are no hubs).
    pub via: Vec<Probe>,
}

impl State {
    pub fn node(&self, id: u32) -> Option<&NodeRec> {
        self.nodes.get(id as usize).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, id: u32) -> &mut NodeRec {
        self.nodes[id as usize]
            .as_mut()
            .expect("callers pass live node ids")
    }

    pub fn name(&self, id: u32) -> &str {
        self.names.name(id).unwrap_or("")
    }

    /// The id of the live node named `name`.
    #[inline]
    pub fn id(&self, name: &str) -> Option<u32> {
        self.names.id(name)
    }

    /// `anc[x]`: a group's bitmap borrowed, or a leaf's read back from its probe.
    pub fn anc(&self, x: u32) -> Cow<'_, RoaringBitmap> {
        match self.anc.get(&x) {
            Some(set) => Cow::Borrowed(set),
            None => Cow::Owned(self.probe.bitmap(x)),
        }
    }

    /// Whether `x` keeps its closure in its probe only (a leaf: no bitmap in `anc`).
    fn probe_only(&self, x: u32) -> bool {
        self.leaves.contains(x)
    }

    /// Whether a stored edge counts now.
    pub fn active(&self, edge: &Edge) -> bool {
        active_at(edge.expires, self.applied)
    }

    /// The expiry of the edge `member -> group` whose link is `link`.
    fn expires_of(&self, member: u32, group: u32, link: &Link) -> Option<i64> {
        link.timed
            .then(|| self.expiries.get(&(member, group)).copied())
            .flatten()
    }

    /// Whether `link`, in `member`'s `up` list, counts now.
    #[inline]
    pub fn active_up(&self, member: u32, link: &Link) -> bool {
        !link.timed || active_at(self.expires_of(member, link.other, link), self.applied)
    }

    /// Whether `link`, in `group`'s `down` list, counts now.
    #[inline]
    pub fn active_down(&self, group: u32, link: &Link) -> bool {
        !link.timed || active_at(self.expires_of(link.other, group, link), self.applied)
    }

    /// The edge of `link`, in `member`'s `up` list.
    pub fn edge_up(&self, member: u32, link: &Link) -> Edge {
        Edge {
            role: link.role,
            label: link.label,
            expires: self.expires_of(member, link.other, link),
        }
    }

    /// The first id not in use past the highest one.
    pub fn next_id(&self) -> Option<u32> {
        u32::try_from(self.nodes.len())
            .ok()
            .filter(|&n| n < u32::MAX)
    }

    /// Adds a node under a fresh id (the caller checked that the name is free).
    pub fn insert_node(&mut self, id: u32, name: &str, kind: NodeKind) {
        let index = id as usize;
        if self.nodes.len() <= index {
            self.nodes.resize_with(index + 1, || None);
            self.probe.resize(index + 1);
            if !self.hubs.set.is_empty() {
                self.via.resize_with(index + 1, Probe::default);
            }
        }
        self.nodes[index] = Some(NodeRec::new(kind));
        self.names.insert(id, name);
        let names = &self.names;
        self.order
            .insert(id, name, |x| names.name(x).unwrap_or_default());
        match kind {
            NodeKind::Leaf => self.leaves.insert(id),
            NodeKind::Group => self.groups.insert(id),
        };
    }

    /// The number of `label` (`None`: 0), interned on first use; `None` when all 65,535
    /// numbers are taken.
    pub fn label_id(&mut self, label: Option<&str>) -> Option<u16> {
        let Some(label) = label else { return Some(0) };
        if let Some(&id) = self.label_ids.get(label) {
            return Some(id);
        }
        if self.labels.is_empty() {
            self.labels.push("".into());
        }
        let id = u16::try_from(self.labels.len()).ok()?;
        self.labels.push(label.into());
        self.label_ids.insert(label.into(), id);
        Some(id)
    }

    /// The label of a number (`None` for 0).
    pub fn label(&self, id: u16) -> Option<&str> {
        (id != 0).then(|| self.labels.get(usize::from(id)).map_or("", |l| &**l))
    }

    /// The membership edge `member -> group`, if stored.
    pub fn link(&self, member: u32, group: u32) -> Option<Edge> {
        let node = self.node(member)?;
        let link = node.up().iter().find(|l| l.other == group)?;
        Some(self.edge_up(member, link))
    }

    /// Stores a membership edge in the adjacency lists and the expiry queue; the index is
    /// updated by the caller.
    /// `label` is a number from [`State::label_id`] (0: none).
    pub fn insert_labelled_link(
        &mut self,
        member: u32,
        group: u32,
        role: Role,
        label: u16,
        expires: Option<i64>,
    ) {
        let link = |other| Link {
            other,
            label,
            role,
            timed: expires.is_some(),
        };
        self.node_mut(member).push_up(link(group));
        self.node_mut(group).push_down(link(member));
        if let Some(e) = expires {
            self.expiries.insert((member, group), e);
            if e > self.applied {
                self.expiry.insert((e, member, group));
            }
        }
    }

    /// Removes a membership edge from the adjacency lists and the expiry queue.
    pub fn remove_link(&mut self, member: u32, group: u32) -> Option<Edge> {
        let link = self.node_mut(member).remove_up(group)?;
        self.node_mut(group).remove_down(member);
        let expires = if link.timed {
            self.expiries.remove(&(member, group))
        } else {
            None
        };
        if let Some(e) = expires {
            self.expiry.remove(&(e, member, group));
        }
        Some(Edge {
            role: link.role,
            label: link.label,
            expires,
        })
    }

    /// Replaces `anc[x]`, keeping `desc` its transpose and marking `x` dirty.
    fn set_anc(&mut self, x: u32, new: RoaringBitmap) {
        let mut changes = DescChanges::default();
        self.set_anc_deferred(x, new, &mut changes);
        self.apply_desc_changes(changes);
    }

    /// Replaces `anc[x]`, recording the `desc` changes to apply in bulk (removing ids one by
    /// one from a large bitmap shifts its array containers each time; a difference does not).
    fn set_anc_deferred(&mut self, x: u32, new: RoaringBitmap, changes: &mut DescChanges) {
        let leaf = self.probe_only(x);
        if leaf {
            if self.probe.get(x).iter().copied().eq(new.iter()) {
                return;
            }
        } else if self.anc(x).as_ref() == &new {
            return;
        }
        let old = if changes.transpose {
            RoaringBitmap::new()
        } else {
            self.anc(x).into_owned()
        };
        if changes.transpose {
            self.probe.set_unfolded(x, new.iter().collect());
        } else {
            self.probe.set(x, new.iter().collect());
        }
        if let Some(via) = self.via.get_mut(x as usize) {
            *via = Probe::of(&(&new & &self.hubs.set));
        }
        self.dirty.insert(x);
        if !changes.transpose {
            // A small group's `desc` keeps groups only: its lists change when a leaf joins
            // or leaves it, its `desc` does not.
            for g in &old ^ &new {
                if leaf && !self.big.contains(g) {
                    self.lists.invalidate(g);
                } else if old.contains(g) {
                    changes.lost.push(u64::from(g) << 32 | u64::from(x));
                } else {
                    changes.gained.push(u64::from(g) << 32 | u64::from(x));
                }
            }
        }
        if self.probe_only(x) || new.is_empty() {
            self.anc.remove(&x);
        } else {
            self.anc.insert(x, new);
        }
    }

    fn apply_desc_changes(&mut self, mut changes: DescChanges) {
        if changes.transpose {
            self.transpose_desc();
            return;
        }
        changes.lost.sort_unstable();
        changes.gained.sort_unstable();
        for chunk in changes.lost.chunk_by(|a, b| a >> 32 == b >> 32) {
            let g = (chunk[0] >> 32) as u32;
            self.lists.invalidate(g);
            if let Some(d) = self.desc.get_mut(&g) {
                let gone = RoaringBitmap::from_sorted_iter(chunk.iter().map(|&p| p as u32))
                    .expect("sorted pairs");
                *d -= gone;
                if d.is_empty() {
                    self.desc.remove(&g);
                }
            }
        }
        for chunk in changes.gained.chunk_by(|a, b| a >> 32 == b >> 32) {
            let g = (chunk[0] >> 32) as u32;
            self.lists.invalidate(g);
            let new = RoaringBitmap::from_sorted_iter(chunk.iter().map(|&p| p as u32))
                .expect("sorted pairs");
            *self.desc.entry(g).or_default() |= new;
        }
    }

    /// Updates the index for a membership edge `member -> group` that became active. The rule:
    /// every `x` in `{member} ∪ desc[member]` gains `{group} ∪ anc[group]` (old values on both
    /// sides; this holds with cycles too, as a new path need use the new edge only once).
    /// With hubs (cut closures) a hub is never inside a path: a hub `member` alone gains, and
    /// a hub `group` is gained alone; then the hubs' full sets gain the new pairs.
    pub fn add_active(&mut self, member: u32, group: u32) {
        let hubs = !self.hubs.set.is_empty();
        let full_pairs = hubs.then(|| {
            let mut ra = self.reached_by(member);
            ra.insert(member);
            let mut rb = self.reach_set(group);
            rb.insert(group);
            (ra, rb)
        });
        let mut gained = if self.is_hub(group) {
            RoaringBitmap::new()
        } else {
            self.anc(group).into_owned()
        };
        gained.insert(group);
        let below = if self.is_hub(member) {
            RoaringBitmap::from_iter([member])
        } else {
            self.self_and_desc(member)
        };
        let new_hubs = hubs && gained.intersection_len(&self.hubs.set) > 0;
        let below_groups = &below & &self.groups;
        for g in &gained {
            self.lists.invalidate(g);
            let added = if self.big.contains(g) {
                &below
            } else {
                &below_groups
            };
            if !added.is_empty() {
                *self.desc.entry(g).or_default() |= added;
            }
        }
        for x in &below {
            let changed = if self.probe_only(x) {
                let merged = merge(self.probe.get(x), &gained);
                merged.map(|probe| self.probe.set(x, probe)).is_some()
            } else {
                let anc = self.anc.entry(x).or_default();
                let before = anc.len();
                *anc |= &gained;
                let changed = anc.len() != before;
                if changed {
                    let probe = anc.iter().collect();
                    self.probe.set(x, probe);
                }
                changed
            };
            if changed {
                if new_hubs {
                    self.refresh_via(x);
                }
                self.dirty.insert(x);
            }
        }
        if let Some((ra, rb)) = full_pairs {
            self.add_full(&ra, &rb);
            self.lists.clear();
        }
    }

    /// Recomputes `anc` for every node of `affected` from the active edges, assuming that the
    /// nodes outside `affected` are exact. `affected` must be closed downward (it holds every
    /// node below each of its nodes). The groups of the affected subgraph are condensed into
    /// strongly connected components and processed parents first; then every leaf (which has
    /// no members, so no cycle and no affected node depends on it) from its direct groups.
    pub fn recompute(&mut self, affected: &RoaringBitmap) {
        let groups = affected & &self.groups;
        let leaves = affected - &groups;
        let live = self.groups.len() + self.leaves.len();
        let mut changes = DescChanges {
            transpose: affected.len() * 2 > live,
            ..DescChanges::default()
        };
        if !groups.is_empty() {
            let mut graph: DiGraph<u32, ()> = DiGraph::with_capacity(groups.len() as usize, 0);
            for x in &groups {
                graph.add_node(x);
            }
            let index_of = |x: u32| -> Option<NodeIndex> {
                groups
                    .contains(x)
                    .then(|| NodeIndex::new(groups.rank(x) as usize - 1))
            };
            let mut edges = Vec::new();
            for (i, x) in groups.iter().enumerate() {
                if let Some(node) = self.node(x) {
                    // A hub's cut closure is not part of its members' (no path has it
                    // inside), so an edge to a hub is no dependency.
                    for l in node.up().iter().filter(|l| self.active_up(x, l)) {
                        if let Some(p) = index_of(l.other).filter(|_| !self.is_hub(l.other)) {
                            edges.push((p, NodeIndex::new(i)));
                        }
                    }
                }
            }
            graph.extend_with_edges(edges);
            let sccs = petgraph::algo::kosaraju_scc(&graph);
            // Reverse topological order: children first, so walk it backwards. A component's
            // parents outside it come earlier, so their `anc` is final when it is read.
            for scc in sccs.iter().rev() {
                let members: Vec<u32> = scc.iter().map(|&i| graph[i]).collect();
                let cyclic = members.len() > 1;
                let new = self.union_of_parents(&members, cyclic.then_some(&members));
                for &x in &members {
                    self.set_anc_deferred(x, new.clone(), &mut changes);
                }
            }
        }
        for x in &leaves {
            let new = self.union_of_parents(&[x], None);
            self.set_anc_deferred(x, new, &mut changes);
        }
        if changes.transpose {
            self.probe.fold();
        }
        self.apply_desc_changes(changes);
        if !self.hubs.set.is_empty() {
            self.rebuild_full();
            self.lists.clear();
        }
    }

    /// The union of `{p} ∪ anc[p]` over the active parents `p` of `members` outside the
    /// component; with `component`, its members too (they reach one another).
    fn union_of_parents(&self, members: &[u32], component: Option<&Vec<u32>>) -> RoaringBitmap {
        let mut new = RoaringBitmap::new();
        let mut self_loop = false;
        for &x in members {
            let Some(node) = self.node(x) else { continue };
            for l in node.up().iter().filter(|l| self.active_up(x, l)) {
                if l.other == x || component.is_some_and(|c| c.contains(&l.other)) {
                    self_loop = true;
                } else {
                    new.insert(l.other);
                    if !self.is_hub(l.other) {
                        new |= self.anc(l.other).as_ref();
                    }
                }
            }
        }
        if self_loop || component.is_some() {
            new.extend(members.iter().copied());
        }
        new
    }

    /// Moves the index to time `now`: every active edge with `expires <= now` leaves it.
    /// Returns whether the index changed.
    pub fn advance(&mut self, now: i64) -> bool {
        if now > self.applied {
            self.applied = now;
        }
        let mut affected = RoaringBitmap::new();
        while let Some(&(e, member, group)) = self.expiry.first() {
            if e > self.applied {
                break;
            }
            self.expiry.pop_first();
            debug_assert!(self.link(member, group).is_some());
            affected |= self.affected_by_loss(member);
        }
        if affected.is_empty() {
            return false;
        }
        self.recompute(&affected);
        true
    }

    /// Whether queries at `now` need [`State::advance`] first.
    pub fn needs_advance(&self, now: i64) -> bool {
        self.expiry.first().is_some_and(|&(e, _, _)| e <= now)
    }

    /// The nodes reachable downward from `sources` (included) over active edges, by BFS.
    pub fn bfs_down(&self, sources: impl IntoIterator<Item = u32>) -> RoaringBitmap {
        self.bfs(sources, false)
    }

    /// The nodes reachable upward from `x` over at least one active edge, by BFS.
    pub fn bfs_up(&self, x: u32) -> RoaringBitmap {
        let starts: Vec<u32> = self.node(x).map_or_else(Vec::new, |n| {
            n.up()
                .iter()
                .filter(|l| self.active_up(x, l))
                .map(|l| l.other)
                .collect()
        });
        self.bfs(starts, true)
    }

    fn bfs(&self, sources: impl IntoIterator<Item = u32>, up: bool) -> RoaringBitmap {
        let mut seen = RoaringBitmap::new();
        let mut queue: VecDeque<u32> = VecDeque::new();
        for s in sources {
            if seen.insert(s) {
                queue.push_back(s);
            }
        }
        while let Some(x) = queue.pop_front() {
            let Some(node) = self.node(x) else { continue };
            let (links, active): (_, fn(&State, u32, &Link) -> bool) = if up {
                (node.up(), State::active_up)
            } else {
                (node.down(), State::active_down)
            };
            for l in links.iter().filter(|l| active(self, x, l)) {
                if seen.insert(l.other) {
                    queue.push_back(l.other);
                }
            }
        }
        seen
    }

    /// A shortest chain `[member, g1, ..., group]` of active membership edges, each node a
    /// member of the next, or `None` when `member` does not reach `group`.
    pub fn path(&self, member: u32, group: u32) -> Option<Vec<u32>> {
        if !self.reaches(member, group) {
            return None;
        }
        let mut parent: HashMap<u32, u32> = HashMap::new();
        let mut queue = VecDeque::from([member]);
        while let Some(x) = queue.pop_front() {
            let node = self.node(x)?;
            for l in node.up().iter().filter(|l| self.active_up(x, l)) {
                let p = l.other;
                if (p != group && !self.reaches(p, group)) || parent.contains_key(&p) {
                    continue;
                }
                parent.insert(p, x);
                if p == group {
                    let mut chain = vec![group];
                    let mut at = group;
                    loop {
                        at = parent[&at];
                        chain.push(at);
                        if at == member {
                            break;
                        }
                    }
                    chain.reverse();
                    return Some(chain);
                }
                queue.push_back(p);
            }
        }
        None
    }

    /// Removes a node with all its edges and relations, updating the index.
    pub fn remove_node(&mut self, x: u32) {
        let affected = self.self_and_desc(x);
        let node = self.nodes[x as usize].clone().expect("live node");
        for l in node.up() {
            self.remove_link(x, l.other);
        }
        for l in node.down() {
            self.remove_link(l.other, x);
        }
        self.relations
            .retain(|(_, target, holder), _| *target != x && *holder != x);
        if self.hubs.set.remove(x) {
            self.hubs.dirty = true;
        }
        let mut rest = affected;
        rest.remove(x);
        if !rest.is_empty() {
            self.recompute(&rest);
        }
        self.set_anc(x, RoaringBitmap::new());
        self.desc.remove(&x);
        self.big.remove(x);
        self.lists.clear();
        self.dirty.insert(x);
        let names = &self.names;
        let name = names.name(x).unwrap_or_default();
        self.order
            .remove(x, name, |y| names.name(y).unwrap_or_default());
        self.nodes[x as usize] = None;
        self.names.remove(x);
        self.leaves.remove(x);
        self.groups.remove(x);
        self.cycles_allowed.remove(x);
        while self.nodes.last().is_some_and(Option::is_none) {
            self.nodes.pop();
        }
        self.probe.resize(self.nodes.len());
        self.via.truncate(self.nodes.len());
        if !self.hubs.set.is_empty() {
            self.rebuild_full();
        }
    }

    /// Recomputes the whole index from the edges.
    pub fn rebuild(&mut self) {
        let live: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&x| self.node(x).is_some())
            .collect();
        let had: Vec<u32> = live
            .iter()
            .copied()
            .filter(|&x| !self.probe.get(x).is_empty())
            .collect();
        self.probe.clear();
        for x in had {
            self.anc.remove(&x);
            self.refresh_via(x);
            self.dirty.insert(x);
        }
        self.desc.clear();
        self.big.clear();
        self.lists.clear();
        let all: RoaringBitmap = live.into_iter().collect();
        self.recompute(&all);
    }

    /// Fills every node's probe in one pass, in one flat array: a group's from its loaded
    /// `anc`, a leaf's from its active direct groups, whose closures are exact (after loading
    /// the persisted closures of the groups).
    pub fn derive_probes(&mut self) {
        let mut probes = Probes::default();
        for x in 0..self.nodes.len() as u32 {
            if self.leaves.contains(x) {
                probes.push(self.union_of_parents(&[x], None));
            } else {
                probes.push(self.anc.get(&x).into_iter().flatten());
            }
        }
        self.probe = probes;
    }

    /// Rebuilds `desc` as the transpose (after loading and [`State::derive_probes`]).
    pub fn transpose(&mut self) {
        self.transpose_desc();
        self.refresh_all_via();
        self.rebuild_full();
    }

    /// Gives back the spare capacity that growing one node at a time left in the per-node
    /// vectors and adjacency lists (up to half of them: `Vec` doubles), after a load or an
    /// import: measured 75 MB of node slots for 38 MB of nodes at 530,000 nodes.
    pub fn shrink(&mut self) {
        self.nodes.shrink_to_fit();
        self.names.shrink();
        self.anc.shrink_to_fit();
        self.probe.shrink();
        self.via.shrink_to_fit();
        for node in self.nodes.iter_mut().flatten() {
            node.shrink();
        }
    }

    /// Reallocates the closure of `nodes` and every `desc` at their exact sizes (see
    /// [`compact`]), after an import that recomputed many of them.
    pub fn compact_closure(&mut self, nodes: &RoaringBitmap) {
        let mut buffer = Vec::new();
        for x in nodes {
            if let Some(set) = self.anc.get_mut(&x) {
                *set = compact(set, &mut buffer);
            }
        }
        for set in self.desc.values_mut() {
            *set = compact(set, &mut buffer);
        }
    }

    /// Places every node in name order at once (after a load or an import that deferred it).
    pub fn rebuild_order(&mut self) {
        self.order.rebuild(self.names.iter());
    }
}

#[cfg(test)]
mod tests {
    use super::{compact, State};
    use crate::graph::{NodeKind, Role};
    use roaring::RoaringBitmap;

    #[test]
    fn an_edge_keeps_every_expiry_and_its_links_their_ends() {
        let mut state = State::default();
        state.insert_node(0, "p", NodeKind::Leaf);
        for expires in [
            None,
            Some(0),
            Some(-1),
            Some(1_767_225_600),
            Some(i64::from(u32::MAX) + 1),
            Some(i64::MIN),
            Some(i64::MAX),
        ] {
            state.insert_node(7, "t", NodeKind::Group);
            state.insert_labelled_link(0, 7, Role::Admin, 3, expires);
            let edge = state.link(0, 7).expect("stored");
            assert_eq!(edge.expires(), expires);
            assert_eq!((edge.role, edge.label), (Role::Admin, 3));
            let down = state.node(7).expect("live").down()[0];
            assert_eq!((down.other, down.timed), (0, expires.is_some()));
            assert_eq!(
                state.active_down(7, &down),
                expires.is_none_or(|e| e > state.applied)
            );
            assert_eq!(state.remove_link(0, 7).map(|e| e.expires()), Some(expires));
            assert!(state.expiries.is_empty() && state.expiry.is_empty());
            state.remove_node(7);
        }
    }

    #[test]
    fn a_compacted_bitmap_holds_the_same_set() {
        let mut buffer = Vec::new();
        let set: RoaringBitmap = [1, 5, 70_000, 1 << 20].into_iter().chain(0..5000).collect();
        assert_eq!(compact(&set, &mut buffer), set);
        assert!(compact(&RoaringBitmap::new(), &mut buffer).is_empty());
    }
}
