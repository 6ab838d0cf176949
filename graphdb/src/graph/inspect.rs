//! A namespace's maintenance and inspection: rebuilding and checking the index against a
//! fresh BFS, its sizes and memory, and the listings of its nodes and edges. Apart from
//! `namespace.rs` (the writes), as these only read the state (or, `rebuild`, replace the index
//! wholesale) and a reader looking for how a write works need not page through them.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use super::namespace::Namespace;
use super::state;
use super::types::{CheckReport, Difference, EdgeKind, EdgeRecord, IndexStats, NodeKind};
use crate::Result;

impl Namespace {
    /// Recomputes the whole index from the edges and persists it.
    ///
    /// # Errors
    /// Engine errors.
    pub fn rebuild(&self) -> Result<()> {
        self.write(crate::changes::SYSTEM_ACTOR, |state, _, _| {
            state.rebuild();
            Ok(())
        })
        .map(drop)
    }

    /// Compares the index with a fresh BFS from every node over the active edges. It holds a
    /// read lock throughout (writers wait), for a time proportional to the closure's size.
    pub fn check(&self) -> CheckReport {
        let view = self.view();
        let state = &view.state;
        let mut report = CheckReport::default();
        let mut transpose: HashMap<u32, RoaringBitmap> = HashMap::new();
        for x in 0..state.nodes.len() as u32 {
            if state.node(x).is_none() {
                continue;
            }
            report.nodes += 1;
            let expected = state.bfs_up(x);
            report.pairs += expected.len();
            let actual = &state.anc[x as usize];
            if state.probe[x as usize] != state::Probe::of(actual) {
                report.differences.push(Difference {
                    member: state.name(x).to_owned(),
                    group: "(probe differs from closure)".to_owned(),
                    in_index: true,
                });
            }
            for (set, in_index) in [(actual - &expected, true), (&expected - actual, false)] {
                for g in set {
                    report.differences.push(Difference {
                        member: state.name(x).to_owned(),
                        group: state.name(g).to_owned(),
                        in_index,
                    });
                }
            }
            for g in &expected {
                transpose.entry(g).or_default().insert(x);
            }
        }
        for (g, expected) in &transpose {
            let actual = state.desc.get(g).cloned().unwrap_or_default();
            for (set, in_index) in [(&actual - expected, true), (expected - &actual, false)] {
                for x in set {
                    report.differences.push(Difference {
                        member: state.name(x).to_owned(),
                        group: state.name(*g).to_owned(),
                        in_index,
                    });
                }
            }
        }
        for (g, actual) in &state.desc {
            if !transpose.contains_key(g) {
                for x in actual {
                    report.differences.push(Difference {
                        member: state.name(x).to_owned(),
                        group: state.name(*g).to_owned(),
                        in_index: true,
                    });
                }
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
        for (x, anc) in state.anc.iter().enumerate() {
            let Some(node) = state.node(x as u32) else {
                continue;
            };
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
            .map(|n| n.up.len() as u64)
            .sum();
        stats
    }

    /// Every stored edge, expired ones included, sorted by (group, member, kind).
    pub fn edges(&self) -> Vec<EdgeRecord> {
        let state = self.read_state();
        let mut out = Vec::new();
        for node in state.nodes.iter().flatten() {
            for l in &node.up {
                out.push(EdgeRecord {
                    group: state.name(l.other).to_owned(),
                    member: node.name.to_string(),
                    kind: EdgeKind::Membership(l.role),
                    expires: l.expires(),
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
            .flatten()
            .map(|n| (n.name.to_string(), n.kind))
            .collect();
        out.sort();
        out
    }
}
