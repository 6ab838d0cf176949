//! Bulk loads (TSV imports): validated whole, applied with one index update, one batch.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use super::namespace::Namespace;
use super::state::{active_at, State};
use super::storage;
use super::types::{
    validate_label, validate_name, validate_relation, EdgeKind, NamespaceKind, NodeKind,
};
use crate::{Error, Result};

impl Namespace {
    /// Applies a bulk load: nodes first, then membership and relation edges (added or
    /// changed), validated entirely before anything changes, then one index update over
    /// everything below the new edges and one atomic batch. `progress` is told of each edge.
    ///
    /// It records **one** event with the counts, not one per row; returns its revision.
    pub(crate) fn bulk(&self, actor: &str, load: &BulkLoad, progress: &dyn Fn(u64)) -> Result<u64> {
        for (name, _) in &load.nodes {
            validate_name(name)?;
        }
        for (_, _, kind, _) in &load.edges {
            if let EdgeKind::Relation(r) = kind {
                validate_relation(r)?;
            }
        }
        for label in load.labels.iter().flatten() {
            validate_label(label)?;
        }
        self.write(actor, |state, batch, events| {
            // Validation: kinds of existing nodes, edge ends, cycles.
            let mut new_nodes: HashMap<&str, NodeKind> = HashMap::new();
            for (name, kind) in &load.nodes {
                let found = match state.id(name) {
                    Some(&id) => state.node(id).map(|n| n.kind),
                    None => new_nodes.insert(name, *kind),
                };
                if let Some(found) = found.filter(|f| f != kind) {
                    return Err(self.wrong_kind(name, found, *kind));
                }
            }
            let kind_of = |name: &str| -> Result<NodeKind> {
                match state.id(name) {
                    Some(&id) => Ok(state.node(id).map_or(NodeKind::Leaf, |n| n.kind)),
                    None => new_nodes
                        .get(name)
                        .copied()
                        .ok_or_else(|| self.unknown(name)),
                }
            };
            for (member, group, kind, _) in &load.edges {
                kind_of(member)?;
                let g = kind_of(group)?;
                if matches!(kind, EdgeKind::Membership(_)) && g != NodeKind::Group {
                    return Err(self.wrong_kind(group, g, NodeKind::Group));
                }
            }
            if self.kind == NamespaceKind::Acyclic {
                self.check_bulk_acyclic(state, load)?;
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
            }
            for (name, kind) in &load.nodes {
                if state.id(name).is_some() {
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
                next += 1;
            }
            if many {
                state.rebuild_order();
            }
            // A general graph without edges chooses its hubs at its first import (so its
            // closures are computed once, cut at the hubs); later imports keep them.
            let choose_hubs = self.kind == NamespaceKind::General && state.probe.all_empty();
            let mut sources = Vec::new();
            let mut affected = RoaringBitmap::new();
            for (i, (member, group, kind, expires)) in load.edges.iter().enumerate() {
                let m = *state.id(member).expect("validated above");
                let g = *state.id(group).expect("validated above");
                match kind {
                    EdgeKind::Membership(role) => {
                        if let Some(old) = state.remove_link(m, g) {
                            if state.active(&old) {
                                affected |= state.affected_by_loss(m);
                            }
                        }
                        let label = load.labels.get(i).copied().flatten();
                        let label_id = label_ids.get(i).copied().unwrap_or(0);
                        state.insert_labelled_link(m, g, *role, label_id, *expires);
                        if active_at(*expires, state.applied) {
                            sources.push(m);
                        }
                        batch.put(
                            self.ks.edges,
                            storage::membership_key(ns, m, g),
                            storage::labelled_edge_value(Some(*role), label, *expires),
                        );
                    }
                    EdgeKind::Relation(relation) => {
                        state
                            .relations
                            .insert((relation.as_str().into(), g, m), *expires);
                        batch.put(
                            self.ks.edges,
                            storage::relation_key(ns, m, g, relation),
                            storage::edge_value(None, *expires),
                        );
                    }
                }
                if i % 4096 == 0 {
                    progress(i as u64);
                }
            }
            progress(load.edges.len() as u64);
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
            events.import(load.nodes.len() as u64, load.edges.len() as u64);
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
        for (member, group, kind, expires) in &load.edges {
            if let EdgeKind::Membership(_) = kind {
                replaced.insert((member, group));
                if active_at(*expires, state.applied) {
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
                if !replaced.contains(&(&*node.name, group)) {
                    let m = add(&mut graph, &mut index, &node.name);
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
                    .is_some_and(|&id| state.cycles_allowed.contains(id))
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
/// the parsed rows: owned copies held every name of an import twice (2.3 million small
/// allocations for 880,000 edges).
#[derive(Debug, Default)]
pub(crate) struct BulkLoad<'a> {
    /// Nodes to create (existing ones must have the same kind).
    pub nodes: Vec<(&'a str, NodeKind)>,
    /// (member or holder, group or target, kind, expires).
    pub edges: Vec<(&'a str, &'a str, EdgeKind, Option<i64>)>,
    /// The label of each membership edge, by index in `edges` (general graphs; missing: no
    /// label).
    pub labels: Vec<Option<&'a str>>,
}
