//! `desc`, the closure downward: kept whole for the big groups and for their groups only for
//! the others, whose leaves are gathered from the adjacency lists when asked for
//! (`DESIGN.md`, "The index" and "Memory, fourth pass"). The update rules that change it are
//! in `state.rs`.

use std::borrow::Cow;

use roaring::RoaringBitmap;

use super::probes::set_of;
use super::state::{compact, State};

/// Groups with at least this many nodes below them keep their leaves in `desc` (see
/// [`State::big`]): about a dozen teams of a Launchpad-shaped graph, about 50,000 of its 1.4
/// million pairs.
pub(crate) const BIG: usize = 1_600;

impl State {
    /// `x` and every node below it.
    pub fn self_and_desc(&self, x: u32) -> RoaringBitmap {
        let mut set = self.desc_of(x).into_owned();
        set.insert(x);
        set
    }

    /// `desc[g]` whole: every node below `g`, groups and leaves. A node is below `g` when one
    /// of its active direct groups `p` is `g`, or is below `g` and no hub (the rule that
    /// builds `anc` from the parents' sets: `union_of_parents`). So the nodes below `g` are
    /// the active direct members of `g` and of the non-hub groups below it, the kept
    /// `desc[g]`: one pass over their `down` links, proportional to the answer. Borrowed
    /// when the namespace has no leaves (general graphs), where the kept `desc` is whole.
    pub fn desc_of(&self, g: u32) -> Cow<'_, RoaringBitmap> {
        let groups = self.desc.get(&g);
        if self.leaves.is_empty() || self.big.contains(g) {
            return groups.map_or_else(|| Cow::Owned(RoaringBitmap::new()), Cow::Borrowed);
        }
        if groups.is_none() && self.node(g).is_none_or(|n| n.down().is_empty()) {
            return Cow::Owned(RoaringBitmap::new());
        }
        let mut ids = Vec::new();
        let from = std::iter::once(g).chain(
            groups
                .into_iter()
                .flatten()
                .filter(|&p| p != g && !self.is_hub(p)),
        );
        for p in from {
            if let Some(node) = self.node(p) {
                let down = node.down().iter().filter(|l| self.active_down(p, l));
                ids.extend(down.map(|l| l.other));
            }
        }
        Cow::Owned(set_of(ids))
    }

    /// Rebuilds `desc` from `anc` (whole for the groups with at least [`BIG`] nodes below
    /// them, which become `big`; their groups only for the others): ids are visited in
    /// increasing order, so every insertion is an append.
    pub(super) fn transpose_desc(&mut self) {
        // Members gathered per group as plain sorted vectors first (ids are visited in
        // increasing order), then one bitmap built from each: `RoaringBitmap::push` looks up
        // the current maximum on every call, which for a dense bitmap container is a scan.
        let mut below = vec![0u32; self.probe.len()];
        for x in (0..self.probe.len() as u32).filter(|&x| self.node(x).is_some()) {
            for &g in self.probe.get(x) {
                if let Some(n) = below.get_mut(g as usize) {
                    *n += 1;
                }
            }
        }
        self.big = (0..below.len() as u32)
            .filter(|&g| below[g as usize] as usize >= BIG && self.groups.contains(g))
            .collect();
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); self.probe.len()];
        let mut buffer = Vec::new();
        for x in (0..self.probe.len() as u32).filter(|&x| self.node(x).is_some()) {
            let leaf = self.leaves.contains(x);
            for &g in self.probe.get(x) {
                if leaf && !self.big.contains(g) {
                    continue;
                }
                if let Some(m) = members.get_mut(g as usize) {
                    m.push(x);
                }
            }
        }
        self.desc = members
            .into_iter()
            .enumerate()
            .filter(|(_, m)| !m.is_empty())
            .map(|(g, m)| {
                let set = RoaringBitmap::from_sorted_iter(m).expect("ids visited in order");
                (g as u32, compact(&set, &mut buffer))
            })
            .collect();
        self.lists.clear();
    }
}
