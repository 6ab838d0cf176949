//! A namespace's maintenance and inspection: rebuilding and checking the index against a
//! fresh BFS, its sizes and memory, and the listings of its nodes and edges. Apart from
//! `namespace.rs` (the writes), as these only read the state (or, `rebuild`, replace the index
//! wholesale) and a reader looking for how a write works need not page through them.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use super::namespace::Namespace;
use super::state;
use super::types::{
    CheckReport, Difference, EdgeKind, EdgeRecord, IndexStats, NamespaceKind, NodeKind,
};
use crate::Result;

impl Namespace {
    /// Recomputes the whole index from the edges and persists it.
    ///
    /// # Errors
    /// Engine errors.
    pub fn rebuild(&self) -> Result<()> {
        self.write(crate::changes::SYSTEM_ACTOR, |state, _, _| {
            if self.kind == NamespaceKind::General {
                let hubs = state.choose_hubs();
                state.set_hubs(hubs);
            }
            state.rebuild();
            Ok(())
        })
        .map(drop)
    }

    /// Recomputes the index of a general graph with `hubs` as its hub set instead of the one
    /// [`Namespace::rebuild`] and a first import choose (`DESIGN.md`, "Hubs"): every answer
    /// is the same whatever the set, only the cost of queries and writes differs. For tests
    /// and tuning; the set is kept until the next rebuild.
    ///
    /// # Errors
    /// [`crate::Error::NamespaceKind`] when the namespace is not general,
    /// [`crate::Error::UnknownNode`], engine errors.
    pub fn rebuild_with_hubs(&self, hubs: &[&str]) -> Result<()> {
        if self.kind != NamespaceKind::General {
            return Err(crate::Error::NamespaceKind {
                namespace: self.name.clone(),
                found: self.kind,
                requested: NamespaceKind::General,
            });
        }
        self.write(crate::changes::SYSTEM_ACTOR, |state, _, _| {
            let set = hubs
                .iter()
                .map(|h| self.resolve(state, h))
                .collect::<Result<RoaringBitmap>>()?;
            state.set_hubs(set);
            state.rebuild();
            Ok(())
        })
        .map(drop)
    }

    /// The names of the hubs, sorted (empty outside general graphs).
    pub fn hubs(&self) -> Vec<String> {
        let state = self.read_state();
        let mut names: Vec<String> = state
            .hubs
            .set
            .iter()
            .map(|h| state.name(h).to_owned())
            .collect();
        names.sort_unstable();
        names
    }

    /// Compares the index with a fresh BFS from every node over the active edges: the stored
    /// closure (the cut closure when the namespace has hubs), its transpose, the probes, and
    /// every node's full reach both ways as the queries compute it. It holds a read lock
    /// throughout (writers wait), for a time proportional to the closure's size.
    pub fn check(&self) -> CheckReport {
        let view = self.view();
        let state = &view.state;
        let mut report = CheckReport::default();
        let hubs = !state.hubs.set.is_empty();
        let mut transpose: HashMap<u32, RoaringBitmap> = HashMap::new();
        let mut transpose_full: HashMap<u32, RoaringBitmap> = HashMap::new();
        let differ = |report: &mut CheckReport, x: u32, g: u32, in_index: bool| {
            report.differences.push(Difference {
                member: state.name(x).to_owned(),
                group: state.name(g).to_owned(),
                in_index,
            });
        };
        let compare = |report: &mut CheckReport,
                       x: u32,
                       actual: &RoaringBitmap,
                       expected: &RoaringBitmap,
                       up: bool| {
            for (set, in_index) in [(actual - expected, true), (expected - actual, false)] {
                for g in set {
                    if up {
                        differ(report, x, g, in_index);
                    } else {
                        differ(report, g, x, in_index);
                    }
                }
            }
        };
        let live: Vec<u32> = (0..state.nodes.len() as u32)
            .filter(|&x| state.node(x).is_some())
            .collect();
        for &x in &live {
            report.nodes += 1;
            let full = state.bfs_up(x);
            let cut = if hubs { state.bfs_cut(x) } else { full.clone() };
            report.pairs += full.len();
            let actual = &*state.anc(x);
            let via_ok = !hubs
                || state.via.get(x as usize)
                    == Some(&state::Probe::of(&(actual & &state.hubs.set)));
            if !state.probe.get(x).iter().copied().eq(actual.iter()) || !via_ok {
                report.differences.push(Difference {
                    member: state.name(x).to_owned(),
                    group: "(probe differs from closure)".to_owned(),
                    in_index: true,
                });
            }
            compare(&mut report, x, actual, &cut, true);
            if hubs {
                compare(&mut report, x, &state.reach_set(x), &full, true);
                for g in &full {
                    transpose_full.entry(g).or_default().insert(x);
                }
            }
            for g in &cut {
                transpose.entry(g).or_default().insert(x);
            }
        }
        // The kept `desc` holds the groups below each group; the whole set below it is
        // gathered from the adjacency lists (`desc_of`): both must match the transpose.
        let empty = RoaringBitmap::new();
        for (g, expected) in &transpose {
            let kept = state.desc.get(g).unwrap_or(&empty);
            if state.big.contains(*g) {
                compare(&mut report, *g, kept, expected, false);
            } else {
                compare(&mut report, *g, kept, &(expected & &state.groups), false);
            }
            compare(&mut report, *g, &state.desc_of(*g), expected, false);
        }
        for (g, kept) in &state.desc {
            if !transpose.contains_key(g) {
                compare(&mut report, *g, kept, &empty, false);
            }
        }
        for &g in &live {
            if !transpose.contains_key(&g) {
                compare(&mut report, g, &state.desc_of(g), &empty, false);
            }
        }
        if hubs {
            for &g in &live {
                let expected = transpose_full.get(&g).unwrap_or(&empty);
                compare(&mut report, g, &state.reached_by(g), expected, false);
            }
        }
        report
    }

    /// Where the namespace's memory goes, estimated (see [`MemoryStats`](super::MemoryStats)).
    pub fn memory(&self) -> super::MemoryStats {
        self.read_state().memory()
    }

    /// Sizes of the index.
    pub fn stats(&self) -> IndexStats {
        let state = self.read_state();
        let mut stats = IndexStats {
            nodes: state.leaves.len() + state.groups.len(),
            ..IndexStats::default()
        };
        for x in 0..state.nodes.len() as u32 {
            let Some(node) = state.node(x) else {
                continue;
            };
            let anc = state.anc(x);
            if !anc.is_empty() {
                let bytes = anc.serialized_size() as u64;
                stats.pairs += anc.len();
                stats.full_closure_bytes += bytes;
                if node.kind == NodeKind::Group {
                    stats.group_pairs += anc.len();
                    stats.closure_bytes += bytes;
                }
            }
        }
        stats.membership_edges = state
            .nodes
            .iter()
            .flatten()
            .map(|n| n.up().len() as u64)
            .sum();
        stats
    }

    /// Every stored edge, expired ones included, sorted by (group, member, kind).
    pub fn edges(&self) -> Vec<EdgeRecord> {
        let state = self.read_state();
        let mut out = Vec::new();
        for (x, node) in state.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            for l in node.up() {
                out.push(EdgeRecord {
                    group: state.name(l.other).to_owned(),
                    member: state.name(x as u32).to_string(),
                    kind: EdgeKind::Membership(l.role),
                    expires: state.edge_up(x as u32, l).expires(),
                });
            }
        }
        for ((relation, target, holder), expires) in &state.relations {
            out.push(EdgeRecord {
                group: state.name(*target).to_owned(),
                member: state.name(*holder).to_owned(),
                kind: EdgeKind::Relation(relation.to_string()),
                expires: *expires,
            });
        }
        out.sort();
        out
    }

    /// Every live node's name and kind, sorted by name.
    pub fn nodes(&self) -> Vec<(String, NodeKind)> {
        let state = self.read_state();
        let mut out: Vec<(String, NodeKind)> = state
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(x, n)| {
                n.as_ref()
                    .map(|n| (state.name(x as u32).to_string(), n.kind))
            })
            .collect();
        out.sort();
        out
    }
}
