//! Reachability questions: the label cuts first, then the exact walk over chains, and the
//! reach vectors of branch tips (the module documentation of `index` explains both).

use super::*;

impl CommitIndex {
    /// Whether commit `a` is an ancestor of commit `b` (`a == b` counts), or `None` when either
    /// is unknown.
    pub fn is_ancestor(&self, a: &CommitId, b: &CommitId) -> Option<bool> {
        Some(self.is_ancestor_node(self.node(a)?, self.node(b)?))
    }

    /// Whether node `a` is an ancestor of node `b` (`a == b` counts).
    pub(crate) fn is_ancestor_node(&self, a: u32, b: u32) -> bool {
        if a == b {
            return true;
        }
        let la = self.labels[a as usize];
        let lb = self.labels[b as usize];
        if a > b || la.generation >= lb.generation || la.rank >= lb.rank {
            return false;
        }
        if la.chain == lb.chain {
            return la.position < lb.position;
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let found = self.search(&mut scratch, a, la, b);
            let Scratch {
                reach,
                touched,
                stack,
                covers,
            } = &mut *scratch;
            for &c in touched.iter() {
                reach[c as usize] = 0;
            }
            touched.clear();
            stack.clear();
            covers.clear();
            found
        })
    }

    /// Whether the walk should enter `e` on its way to `a`: `Some(true)` when `e` is known to
    /// reach `a`, `Some(false)` when it cannot, `None` when it must be entered.
    #[inline]
    fn triage(&self, e: u32, a: u32, la: Labels) -> Option<bool> {
        if e == a {
            return Some(true);
        }
        let le = self.labels[e as usize];
        if e < a || le.generation <= la.generation || le.rank <= la.rank {
            return Some(false);
        }
        if le.chain == la.chain {
            return Some(le.position > la.position);
        }
        None
    }

    /// The index of the highest checkpoint of `chain` strictly below position `end - 1` (so
    /// that a checkpoint is never used while it is being computed), if any.
    pub(crate) fn checkpoint_below(&self, chain: &Chain, end: u32) -> Option<usize> {
        let count =
            ((end as usize).saturating_sub(1) / self.checkpoint_every).min(chain.slots().len());
        count.checked_sub(1)
    }

    fn search(&self, scratch: &mut Scratch, a: u32, la: Labels, b: u32) -> bool {
        if scratch.reach.len() < self.chains.len() {
            scratch.reach.resize(self.chains.len(), 0);
        }
        let lb = self.labels[b as usize];
        scratch.stack.push((lb.chain, lb.position + 1));
        while let Some((c, end)) = scratch.stack.pop() {
            let old = scratch.reach[c as usize];
            if end <= old {
                continue;
            }
            // Inside a checkpoint that does not reach `a`: nothing below reaches it either.
            if scratch
                .covers
                .iter()
                .any(|&(cc, i)| self.checkpoint_value(cc, i as usize, c) >= end)
            {
                continue;
            }
            if old == 0 {
                scratch.touched.push(c);
            }
            scratch.reach[c as usize] = end;
            if c == la.chain && end > la.position {
                return true;
            }
            let chain = &self.chains[c as usize];
            // The highest checkpoint below `end - 1` settles everything up to it.
            let mut floor = 0;
            if let Some(index) = self.checkpoint_below(chain, end) {
                if self.checkpoint_value(c, index, la.chain) > la.position {
                    return true;
                }
                let index = index as u32;
                if scratch.covers.len() < MAX_COVERS && !scratch.covers.contains(&(c, index)) {
                    scratch.covers.push((c, index));
                }
                floor = (index + 1) * self.checkpoint_every as u32;
            }
            // Commits at or below `a`'s generation cannot reach it, nor can their parents; the
            // generation grows along the chain, so those are the lowest merges.
            let start = old.max(floor);
            let low = |m: &Merge| self.labels[m.node as usize].generation <= la.generation;
            let from = chain
                .merges
                .partition_point(|m| m.position < start || low(m));
            let to = chain.merges.partition_point(|m| m.position < end);
            for merge in chain.merges[from.min(to)..to].iter().rev() {
                for &e in self.merge_parents(merge) {
                    match self.triage(e, a, la) {
                        Some(true) => return true,
                        Some(false) => {}
                        None => {
                            let le = self.labels[e as usize];
                            scratch.stack.push((le.chain, le.position + 1));
                        }
                    }
                }
            }
            if start == 0 && self.labels[chain.first as usize].generation > la.generation {
                let base = self.first_parent[chain.first as usize];
                if base != NONE {
                    match self.triage(base, a, la) {
                        Some(true) => return true,
                        Some(false) => {}
                        None => {
                            let lbase = self.labels[base as usize];
                            scratch.stack.push((lbase.chain, lbase.position + 1));
                        }
                    }
                }
            }
        }
        false
    }

    /// The reach vector of node `tip`: for each chain, how many of its lowest positions `tip`
    /// reaches. When `base` is the reach vector of an ancestor of `tip`, only what `tip` reaches
    /// beyond it is walked.
    pub(crate) fn reach(&self, tip: u32, base: Option<&[u32]>) -> Vec<u32> {
        let mut reach = base.map(<[u32]>::to_vec).unwrap_or_default();
        reach.resize(self.chains.len(), 0);
        let lt = self.labels[tip as usize];
        let mut stack = vec![(lt.chain, lt.position + 1)];
        while let Some((c, end)) = stack.pop() {
            let mut old = reach[c as usize];
            if end <= old {
                continue;
            }
            let chain = &self.chains[c as usize];
            // A checkpoint well above what is known is a closed set: take it whole.
            let index = self.checkpoint_below(chain, end);
            let worth = |i: usize| i * self.checkpoint_every > old as usize;
            if let Some(index) = index.filter(|&i| worth(i)) {
                self.merge_checkpoint(c, index, &mut reach);
                old = reach[c as usize];
                if end <= old {
                    continue;
                }
            }
            reach[c as usize] = end;
            let from = chain.merges.partition_point(|m| m.position < old);
            let to = chain.merges.partition_point(|m| m.position < end);
            for merge in &chain.merges[from..to] {
                for &e in self.merge_parents(merge) {
                    let le = self.labels[e as usize];
                    if reach[le.chain as usize] <= le.position {
                        stack.push((le.chain, le.position + 1));
                    }
                }
            }
            if old == 0 {
                let base = self.first_parent[chain.first as usize];
                if base != NONE {
                    let lbase = self.labels[base as usize];
                    stack.push((lbase.chain, lbase.position + 1));
                }
            }
        }
        reach
    }

    /// The reach vector of `tip` (what [`crate::CommitGraphs`] caches per target branch tip),
    /// or `None` when `tip` is unknown.
    pub fn reach_vector(&self, tip: &CommitId) -> Option<ReachVector> {
        Some(ReachVector(self.reach(self.node(tip)?, None)))
    }

    /// Whether the commit whose reach vector is `reach` has `id` as an ancestor (or is `id`),
    /// or `None` when `id` is unknown. One comparison.
    pub fn reaches(&self, reach: &ReachVector, id: &CommitId) -> Option<bool> {
        Some(self.reached(&reach.0, self.node(id)?))
    }

    /// Whether a commit with the reach vector `reach` reaches `node`.
    #[inline]
    pub(crate) fn reached(&self, reach: &[u32], node: u32) -> bool {
        let l = self.labels[node as usize];
        reach.get(l.chain as usize).is_some_and(|&r| r > l.position)
    }
}
