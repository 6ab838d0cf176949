//! Bulk loads (TSV imports): validated whole, applied with one index update, one batch.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use super::namespace::Namespace;
use super::state::{active_at, State};
use super::storage;
use super::types::{
    validate_label, validate_name, validate_relation, NamespaceKind, NodeKind, Role,
};
use crate::{Error, Result};

impl Namespace {
    /// Applies a bulk load: nodes first, then membership and relation edges (added or
    /// changed), validated entirely before anything changes, then one index update over
    /// everything below the new edges and one atomic batch. `progress` is told of each edge.
    /// The load is freed before the batch is written (the engine then holds a copy of the
    /// batch, and its memtable, at once: what an import's peak is made of).
    ///
    /// It records **one** event with the counts, not one per row; returns its revision.
    pub(crate) fn bulk(
        &self,
        actor: &str,
        mut load: BulkLoad,
        progress: &dyn Fn(u64),
    ) -> Result<u64> {
        for (name, _) in &load.nodes {
            validate_name(name)?;
        }
        for relation in &load.relations {
            validate_relation(relation)?;
        }
        for label in load.labels.iter().flatten() {
            validate_label(label)?;
        }
        self.write(actor, move |state, batch, events| {
            // Validation: kinds of existing nodes, edge ends, cycles.
            let mut kinds = Vec::with_capacity(load.nodes.len());
            for (name, kind) in &load.nodes {
                let found = state.id(name).and_then(|id| state.node(id)).map(|n| n.kind);
                if let Some(found) = found.filter(|f| f != kind) {
                    return Err(self.wrong_kind(name, found, *kind));
                }
                kinds.push(*kind);
            }
            for edge in &load.edges {
                let g = kinds[edge.group as usize];
                if matches!(edge.kind, BulkKind::Membership(_)) && g != NodeKind::Group {
                    return Err(self.wrong_kind(load.node(edge.group), g, NodeKind::Group));
                }
            }
            drop(kinds);
            if self.kind == NamespaceKind::Acyclic {
                self.check_bulk_acyclic(state, &load)?;
            }
            // Interning labels changes nothing the index or the disk sees.
            let label_ids = load
                .labels
                .iter()
                .map(|l| {
                    state.label_id(*l).ok_or_else(|| Error::LabelsExhausted {
                        namespace: self.name.clone(),
                    })
                })
                .collect::<Result<Vec<u16>>>()?;
            // Mutation.
            let ns = self.id;
            let mut next = state.next_id().unwrap_or(u32::MAX);
            // Each insertion would renumber the general graphs' positions: built again
            // by the next page instead.
            state.order.forget_positions();
            // Many new names: one sort of all of them beats a binary search and shift each.
            let many = load.nodes.len() > 1024;
            if many {
                state.order.defer();
                // Room for the new names at once: grown by doubling, the names' text, spans
                // and table raised the import's peak by their spare halves.
                let (count, bytes) = load
                    .nodes
                    .iter()
                    .filter(|(name, _)| state.id(name).is_none())
                    .fold((0, 0), |(count, bytes), (name, _)| {
                        (count + 1, bytes + name.len())
                    });
                state.names.reserve(count, bytes);
            }
            // The store's id of each node of the load, by its index there.
            let mut ids = Vec::with_capacity(load.nodes.len());
            for (name, kind) in &load.nodes {
                if let Some(id) = state.id(name) {
                    ids.push(id);
                    continue;
                }
                if next == u32::MAX {
                    if many {
                        state.rebuild_order();
                    }
                    return Err(Error::IdsExhausted {
                        namespace: self.name.clone(),
                    });
                }
                state.insert_node(next, name, *kind);
                batch.put(
                    self.ks.nodes,
                    storage::node_key(ns, next),
                    storage::node_value(*kind, name),
                );
                ids.push(next);
                next += 1;
            }
            if many {
                state.rebuild_order();
            }
            let nodes = load.nodes.len() as u64;
            // The edges name their ends by `ids` from here on.
            drop(std::mem::take(&mut load.nodes));
            // A general graph without edges chooses its hubs at its first import (so its
            // closures are computed once, cut at the hubs); later imports keep them.
            let choose_hubs = self.kind == NamespaceKind::General && state.probe.all_empty();
            let mut sources = Vec::new();
            let mut affected = RoaringBitmap::new();
            for (i, edge) in load.edges.iter().enumerate() {
                let m = ids[edge.member as usize];
                let g = ids[edge.group as usize];
                match edge.kind {
                    BulkKind::Membership(role) => {
                        if let Some(old) = state.remove_link(m, g) {
                            if state.active(&old) {
                                affected |= state.affected_by_loss(m);
                            }
                        }
                        let label = load.labels.get(i).copied().flatten();
                        let label_id = label_ids.get(i).copied().unwrap_or(0);
                        state.insert_labelled_link(m, g, role, label_id, edge.expires);
                        if active_at(edge.expires, state.applied) {
                            sources.push(m);
                        }
                        batch.put(
                            self.ks.edges,
                            storage::membership_key(ns, m, g),
                            storage::labelled_edge_value(Some(role), label, edge.expires),
                        );
                    }
                    BulkKind::Relation(r) => {
                        let relation = load.relations[r as usize];
                        state
                            .relations
                            .insert((relation.into(), g, m), edge.expires);
                        batch.put(
                            self.ks.edges,
                            storage::relation_key(ns, m, g, relation),
                            storage::edge_value(None, edge.expires),
                        );
                    }
                }
                if i % 4096 == 0 {
                    progress(i as u64);
                }
            }
            progress(load.edges.len() as u64);
            events.import(nodes, load.edges.len() as u64);
            drop((load, ids, label_ids));
            if choose_hubs {
                let hubs = state.choose_hubs();
                state.set_hubs(hubs);
            }
            affected |= state.bfs_down(sources);
            if !affected.is_empty() {
                state.recompute(&affected);
            }
            if many {
                state.compact_closure(&affected);
                state.shrink();
            }
            Ok(())
        })
        .map(|((), revision)| revision)
    }

    /// Rejects a bulk load whose active membership edges, with the active edges already
    /// stored (less those the load replaces), would form a cycle; the error names one.
    fn check_bulk_acyclic(&self, state: &State, load: &BulkLoad) -> Result<()> {
        use petgraph::graph::{DiGraph, NodeIndex};
        use std::collections::HashSet;

        let mut graph: DiGraph<&str, ()> = DiGraph::new();
        let mut index: HashMap<&str, NodeIndex> = HashMap::new();
        fn add<'a>(
            graph: &mut DiGraph<&'a str, ()>,
            index: &mut HashMap<&'a str, NodeIndex>,
            name: &'a str,
        ) -> NodeIndex {
            *index.entry(name).or_insert_with(|| graph.add_node(name))
        }
        let mut replaced: HashSet<(&str, &str)> = HashSet::new();
        for edge in &load.edges {
            if let BulkKind::Membership(_) = edge.kind {
                let (member, group) = (load.node(edge.member), load.node(edge.group));
                replaced.insert((member, group));
                if active_at(edge.expires, state.applied) {
                    let m = add(&mut graph, &mut index, member);
                    let g = add(&mut graph, &mut index, group);
                    graph.add_edge(m, g, ());
                }
            }
        }
        if graph.edge_count() == 0 {
            return Ok(());
        }
        for (x, node) in state.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            for l in node.up().iter().filter(|l| state.active_up(x as u32, l)) {
                let group = state.name(l.other);
                let name = state.name(x as u32);
                if !replaced.contains(&(name, group)) {
                    let m = add(&mut graph, &mut index, name);
                    let g = add(&mut graph, &mut index, group);
                    graph.add_edge(m, g, ());
                }
            }
        }
        for scc in petgraph::algo::kosaraju_scc(&graph) {
            let start = scc[0];
            let in_scc: HashSet<NodeIndex> = scc.iter().copied().collect();
            let self_loop = graph.contains_edge(start, start);
            if scc.len() == 1 && !self_loop {
                continue;
            }
            let allowed = |i: &NodeIndex| {
                state
                    .id(graph[*i])
                    .is_some_and(|id| state.cycles_allowed.contains(id))
            };
            if scc.iter().all(allowed) {
                continue;
            }
            // Walk inside the component until a node repeats: that closes a cycle.
            let mut walk = vec![start];
            let mut seen: HashMap<NodeIndex, usize> = HashMap::from([(start, 0)]);
            let cycle_start = loop {
                let at = *walk.last().expect("walk is not empty");
                let next = graph
                    .neighbors(at)
                    .find(|n| in_scc.contains(n))
                    .expect("every node of a cyclic component has a successor in it");
                if let Some(&i) = seen.get(&next) {
                    walk.push(next);
                    break i;
                }
                seen.insert(next, walk.len());
                walk.push(next);
            };
            let cycle: Vec<String> = walk[cycle_start..]
                .iter()
                .map(|&i| graph[i].to_owned())
                .collect();
            return Err(Error::Cycle {
                namespace: self.name.clone(),
                member: cycle[cycle.len() - 2].clone(),
                group: cycle[cycle.len() - 1].clone(),
                cycle,
            });
        }
        Ok(())
    }
}

/// A batch of nodes and edges to load at once (from a TSV import), its names borrowed from
/// the parsed file: owned copies held every name of an import twice (2.3 million small
/// allocations for 880,000 edges). Edges name their ends by index in `nodes`.
#[derive(Debug, Default)]
pub(crate) struct BulkLoad<'a> {
    /// Nodes to create (existing ones must have the same kind), each name once.
    pub nodes: Vec<(&'a str, NodeKind)>,
    /// The edges, in order (a later edge between the same pair replaces an earlier one).
    pub edges: Vec<BulkEdge>,
    /// The relation names the edges use, by [`BulkKind::Relation`]'s index.
    pub relations: Vec<&'a str>,
    /// The label of each membership edge, by index in `edges` (general graphs; missing: no
    /// label).
    pub labels: Vec<Option<&'a str>>,
}

impl<'a> BulkLoad<'a> {
    /// The name of node `index` (edges are built with indexes into `nodes`).
    fn node(&self, index: u32) -> &'a str {
        self.nodes[index as usize].0
    }
}

/// An edge of a [`BulkLoad`]: member (or holder) and group (or target) by index in its nodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BulkEdge {
    pub member: u32,
    pub group: u32,
    pub kind: BulkKind,
    pub expires: Option<i64>,
}

/// What a [`BulkEdge`] is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BulkKind {
    Membership(Role),
    /// A relation, by index in [`BulkLoad::relations`].
    Relation(u32),
}
