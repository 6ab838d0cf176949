//! The namespace side of general graphs ([`crate::Graph`]): labelled edges, their bulk load,
//! and the queries that follow only some labels or stop at a depth.
//!
//! An edge `from -> to` is stored as the membership edge "`from` is a member of `to`" between
//! two groups, with its label: so `anc[from]` is everything `from` reaches (its descendants)
//! and `desc[to]` everything that reaches `to` (its ancestors), up to the graph's hubs, whose
//! full reach completes them (`hubs.rs`), and the index's update rules (which condense
//! strongly connected components) keep both exact with cycles.

use std::collections::{HashMap, VecDeque};

use roaring::RoaringBitmap;

use super::bulk::{BulkEdge, BulkKind, BulkLoad};
use super::namespace::Namespace;
use super::state::Link;
use super::storage;
use super::types::{validate_label, validate_name, NamespaceKind, NodeKind, Role};
use super::view::View;
use crate::{Error, Result};

/// Which way a traversal follows the edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Along the edges: what a node reaches.
    Descendants,
    /// Against them: what reaches a node.
    Ancestors,
}

/// One edge of a general graph, by names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelledEdge {
    /// Where it starts.
    pub from: String,
    /// Where it ends.
    pub to: String,
    /// Its label, if any.
    pub label: Option<String>,
}

impl Namespace {
    /// Puts the edge `from -> to` with `label`, creating either end if missing (as a group),
    /// in one batch. Self-loops are accepted in a general namespace.
    pub(crate) fn put_labelled_edge(
        &self,
        actor: &str,
        from: &str,
        to: &str,
        label: Option<&str>,
    ) -> Result<u64> {
        validate_name(from)?;
        validate_name(to)?;
        if let Some(label) = label {
            validate_label(label)?;
        }
        self.write(actor, |state, batch, events| {
            for name in [from, to] {
                if let Some(id) = state.id(name) {
                    let found = state.node(id).map_or(NodeKind::Group, |n| n.kind);
                    if found != NodeKind::Group {
                        return Err(self.wrong_kind(name, found, NodeKind::Group));
                    }
                }
            }
            // A cycle can only be refused between existing nodes, so creating first is safe.
            if self.kind == NamespaceKind::Acyclic && from == to {
                if let Some(x) = state.id(from) {
                    self.check_no_cycle(state, x, x)?;
                }
            }
            let mut ids = [0; 2];
            for (slot, name) in ids.iter_mut().zip([from, to]) {
                *slot = match state.id(name) {
                    Some(id) => id,
                    None => self.create_node(state, batch, events, name, NodeKind::Group)?,
                };
            }
            let edge = (ids[0], ids[1]);
            self.apply_membership(state, batch, events, edge, (Role::Member, None), label)
        })
        .map(|((), revision)| revision)
    }

    /// Adds the group `name` and, with `allow`, lets it lie on cycles in this acyclic
    /// namespace (an edge may close a cycle when every node on it allows cycles). The choice
    /// is made at creation: an existing group answers [`crate::Error::CyclesFixed`] when it
    /// differs, and nothing else. Returns the revision.
    pub fn add_group_with_cycles(&self, actor: &str, name: &str, allow: bool) -> Result<u64> {
        validate_name(name)?;
        self.write(actor, |state, batch, events| {
            if let Some(id) = state.id(name) {
                let found = state.node(id).map_or(NodeKind::Group, |n| n.kind);
                if found != NodeKind::Group {
                    return Err(self.wrong_kind(name, found, NodeKind::Group));
                }
                if state.cycles_allowed.contains(id) != allow {
                    return Err(crate::Error::CyclesFixed {
                        namespace: self.name.clone(),
                        name: name.to_owned(),
                    });
                }
                return Ok(());
            }
            let id = self.create_node(state, batch, events, name, NodeKind::Group)?;
            if allow {
                state.cycles_allowed.insert(id);
                batch.put(self.ks.meta, storage::cycles_key(self.id, id), []);
                events.cycles_allowed();
            }
            Ok(())
        })
        .map(|((), revision)| revision)
    }

    /// Whether the group `name` opted into cycles.
    pub fn allows_cycles(&self, name: &str) -> bool {
        let state = self.read_state();
        state
            .id(name)
            .is_some_and(|id| state.cycles_allowed.contains(id))
    }

    /// Loads nodes and labelled edges at once, all or nothing, with one index update and one
    /// event with the counts (see [`Namespace::bulk`]). `progress`, when given, is told
    /// `(edges applied, edges in all)`.
    pub(crate) fn load_labelled(
        &self,
        actor: &str,
        nodes: &[String],
        edges: &[LabelledEdge],
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<u64> {
        for e in edges {
            if let Some(label) = &e.label {
                validate_label(label)?;
            }
        }
        let mut load = BulkLoad::default();
        // Each name's index in `load.nodes`.
        let mut declared: HashMap<&str, u32> = HashMap::new();
        for name in nodes
            .iter()
            .map(String::as_str)
            .chain(edges.iter().flat_map(|e| [e.from.as_str(), e.to.as_str()]))
        {
            let next = load.nodes.len();
            if let std::collections::hash_map::Entry::Vacant(slot) = declared.entry(name) {
                slot.insert(u32::try_from(next).map_err(|_| Error::IdsExhausted {
                    namespace: self.name.clone(),
                })?);
                load.nodes.push((name, NodeKind::Group));
            }
        }
        load.edges = edges
            .iter()
            .map(|e| BulkEdge {
                member: declared[e.from.as_str()],
                group: declared[e.to.as_str()],
                kind: BulkKind::Membership(Role::Member),
                expires: None,
            })
            .collect();
        load.labels = edges.iter().map(|e| e.label.as_deref()).collect();
        let total = edges.len() as u64;
        self.bulk(actor, load, &|done| {
            if let Some(progress) = progress {
                progress(done, total);
            }
        })
    }

    /// Every edge, sorted, and the nodes without any edge.
    pub(crate) fn labelled_edges(&self) -> (Vec<LabelledEdge>, Vec<String>) {
        let state = self.read_state();
        let mut edges = Vec::new();
        let mut isolated = Vec::new();
        for (x, node) in state.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let name = state.name(x as u32);
            if node.up().is_empty() && node.down().is_empty() {
                isolated.push(name.to_string());
            }
            for l in node.up() {
                edges.push(LabelledEdge {
                    from: name.to_string(),
                    to: state.name(l.other).to_owned(),
                    label: state.label(l.label).map(str::to_owned),
                });
            }
        }
        edges.sort_unstable();
        isolated.sort_unstable();
        (edges, isolated)
    }
}

impl View<'_> {
    /// The nodes reachable from `node` over one or more edges in `direction`, following only
    /// edges whose label is in `labels` (all edges when `None`), at most `depth` edges away
    /// (no limit when `None`). Without either filter this is the index's bitmap; with one, a
    /// BFS over the adjacency lists.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn reach_ids(
        &self,
        node: &str,
        direction: Direction,
        labels: Option<&[&str]>,
        depth: Option<u32>,
    ) -> Result<RoaringBitmap> {
        let x = self.ns.resolve(&self.state, node)?;
        let state = &self.state;
        if labels.is_none() && depth.is_none() {
            return Ok(match direction {
                Direction::Descendants => state.reach_set(x),
                Direction::Ancestors => state.reached_by(x),
            });
        }
        let wanted: Option<Vec<u16>> = labels.map(|labels| {
            labels
                .iter()
                .filter_map(|l| state.label_ids.get(*l).copied())
                .collect()
        });
        let mut seen = RoaringBitmap::new();
        let mut queue = VecDeque::from([(x, 0u32)]);
        while let Some((at, d)) = queue.pop_front() {
            if depth.is_some_and(|max| d >= max) {
                continue;
            }
            let Some(n) = state.node(at) else { continue };
            let links = match direction {
                Direction::Descendants => n.up(),
                Direction::Ancestors => n.down(),
            };
            let active = |l: &&Link| match direction {
                Direction::Descendants => state.active_up(at, l),
                Direction::Ancestors => state.active_down(at, l),
            };
            for l in links.iter().filter(active) {
                if wanted.as_ref().is_some_and(|w| !w.contains(&l.label)) {
                    continue;
                }
                if seen.insert(l.other) {
                    queue.push_back((l.other, d + 1));
                }
            }
        }
        Ok(seen)
    }

    /// The direct edges of `node`: `(out, in)`, each sorted by the other end's name.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn edges_of(&self, node: &str) -> Result<(Vec<LabelledEdge>, Vec<LabelledEdge>)> {
        let x = self.ns.resolve(&self.state, node)?;
        let state = &self.state;
        let n = state.node(x).ok_or_else(|| self.ns.unknown(node))?;
        let edge = |from: u32, to: u32, label: u16| LabelledEdge {
            from: state.name(from).to_owned(),
            to: state.name(to).to_owned(),
            label: state.label(label).map(str::to_owned),
        };
        let mut out: Vec<LabelledEdge> = n.up().iter().map(|l| edge(x, l.other, l.label)).collect();
        let mut into: Vec<LabelledEdge> =
            n.down().iter().map(|l| edge(l.other, x, l.label)).collect();
        out.sort_unstable_by(|a, b| a.to.cmp(&b.to));
        into.sort_unstable_by(|a, b| a.from.cmp(&b.from));
        Ok((out, into))
    }

    /// The strongly connected component of `node` as ids: the nodes it reaches that reach it
    /// (itself included); empty when it lies on no cycle.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn component_ids(&self, node: &str) -> Result<RoaringBitmap> {
        let x = self.ns.resolve(&self.state, node)?;
        let state = &self.state;
        if !state.reaches(x, x) {
            return Ok(RoaringBitmap::new());
        }
        Ok(state.reach_set(x) & state.reached_by(x))
    }

    /// The names of `ids`, sorted.
    pub fn names_sorted(&self, ids: &RoaringBitmap) -> Vec<String> {
        let (names, _) = self.names_page(ids, None, usize::MAX);
        names.into_iter().map(str::to_owned).collect()
    }

    /// One page of the names of `ids`, sorted by name, after `after`, at most `limit` long
    /// (at least 1): the owned form of [`View::names_page`].
    pub fn page_of(
        &self,
        ids: &RoaringBitmap,
        after: Option<&str>,
        limit: usize,
    ) -> super::types::Page {
        let (names, more) = self.names_page(ids, after, limit);
        super::types::Page {
            next: more
                .then(|| names.last().map(|n| (*n).to_owned()))
                .flatten(),
            items: names.into_iter().map(str::to_owned).collect(),
        }
    }

    /// One page of the names of `ids` after `after` in name order, at most `limit` (at least
    /// 1), borrowed from the view, and whether more follow. The order comes from the
    /// namespace's name order (its positions built on the first call after a bulk load), so
    /// no string is sorted here and the cursor seeks by one binary search.
    pub fn names_page(
        &self,
        ids: &RoaringBitmap,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<&str>, bool) {
        let state: &super::state::State = &self.state;
        state.order.page(ids, after, limit, |x| state.name(x))
    }
}
