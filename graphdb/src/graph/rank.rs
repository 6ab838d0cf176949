//! A name-order rank of a namespace's nodes, so that a set of ids (a bitmap from the index) is
//! emitted in name order without comparing strings per request, and a page after a cursor
//! starts with one binary search (a seeking cursor) instead of filtering every name.
//!
//! General graphs use it for their sorted, paged descendants and ancestors. It is built on the
//! first sorted query (`State::name_rank`, a `OnceLock`) and then kept up to date by every
//! node insertion and removal, on the same code path as a local write; a bulk load drops it
//! (inserting thousands of names one by one would cost `O(n)` each) and the next query builds
//! it again in one sort. Namespaces that never ask for it (teams, package sets) never build it.

use roaring::RoaringBitmap;

use super::state::NodeRec;

/// Ids ordered by name, and each id's position in that order.
#[derive(Debug, Default)]
pub(crate) struct NameRank {
    /// Live ids, sorted by name.
    by_rank: Vec<u32>,
    /// `rank[id]`: the position of `id` in `by_rank`; `u32::MAX` for ids not in use.
    rank: Vec<u32>,
}

fn name_of(nodes: &[Option<NodeRec>], id: u32) -> &str {
    nodes
        .get(id as usize)
        .and_then(Option::as_ref)
        .map_or("", |n| &n.name)
}

impl NameRank {
    /// The rank of every live node: one sort of the names.
    pub fn build(nodes: &[Option<NodeRec>]) -> NameRank {
        let mut by_rank: Vec<u32> = (0..nodes.len() as u32)
            .filter(|&x| nodes[x as usize].is_some())
            .collect();
        by_rank.sort_unstable_by(|&a, &b| name_of(nodes, a).cmp(name_of(nodes, b)));
        let mut rank = vec![u32::MAX; nodes.len()];
        for (r, &x) in by_rank.iter().enumerate() {
            rank[x as usize] = r as u32;
        }
        NameRank { by_rank, rank }
    }

    /// Takes the new node `id` (already in `nodes`) into the order: a binary search, then the
    /// ranks after it move up by one (a linear pass over `u32`s, no string compared).
    pub fn insert(&mut self, nodes: &[Option<NodeRec>], id: u32) {
        let name = name_of(nodes, id);
        let at = self.by_rank.partition_point(|&x| name_of(nodes, x) < name);
        self.by_rank.insert(at, id);
        if self.rank.len() <= id as usize {
            self.rank.resize(id as usize + 1, u32::MAX);
        }
        for (r, &x) in self.by_rank.iter().enumerate().skip(at) {
            self.rank[x as usize] = r as u32;
        }
    }

    /// Drops the node `id` from the order.
    pub fn remove(&mut self, id: u32) {
        let Some(&at) = self.rank.get(id as usize).filter(|&&r| r != u32::MAX) else {
            return;
        };
        self.by_rank.remove(at as usize);
        self.rank[id as usize] = u32::MAX;
        for (r, &x) in self.by_rank.iter().enumerate().skip(at as usize) {
            self.rank[x as usize] = r as u32;
        }
    }

    /// The names of `ids` greater than `after`, in name order, at most `limit` (at least 1),
    /// and whether more follow.
    ///
    /// Two ways, whichever touches fewer ids: a dense set (a first page of a large set) walks
    /// the order from the cursor and keeps the members of `ids` until the page is full; a
    /// sparse one marks its ids' ranks in a bit set and reads the page from there in rank
    /// order.
    pub fn page<'s>(
        &self,
        nodes: &'s [Option<NodeRec>],
        ids: &RoaringBitmap,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<&'s str>, bool) {
        let limit = limit.max(1);
        let start = after.map_or(0, |a| {
            self.by_rank.partition_point(|&x| name_of(nodes, x) <= a)
        });
        let total = self.by_rank.len().max(1) as u64;
        let members = ids.len().max(1);
        // Expected ids walked before a page is full, against the ids to map.
        let walk = (limit as u64).saturating_mul(total) / members;
        let mut names = Vec::with_capacity(limit.min(ids.len() as usize));
        if walk < members {
            let mut rest = self.by_rank[start.min(self.by_rank.len())..]
                .iter()
                .filter(|&&x| ids.contains(x));
            for &x in rest.by_ref().take(limit) {
                names.push(name_of(nodes, x));
            }
            let more = rest.next().is_some();
            return (names, more);
        }
        // Ranks marked in a plain bit set over the whole order (|graph| / 8 bytes: 12 KB at
        // Debian's scale), then read word by word from the cursor: an O(1) mark per id, where
        // inserting into a bitmap costs a search per id.
        let mut marked = vec![0u64; self.by_rank.len().div_ceil(64)];
        for x in ids {
            if let Some(&r) = self.rank.get(x as usize) {
                if r != u32::MAX && r as usize >= start {
                    marked[r as usize / 64] |= 1 << (r % 64);
                }
            }
        }
        for (w, &word) in marked.iter().enumerate().skip(start / 64) {
            let mut word = word;
            while word != 0 {
                let r = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                if names.len() == limit {
                    return (names, true);
                }
                names.push(name_of(nodes, self.by_rank[r]));
            }
        }
        (names, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::NodeKind;

    fn node(name: &str) -> Option<NodeRec> {
        Some(NodeRec {
            name: name.into(),
            kind: NodeKind::Group,
            up: Vec::new(),
            down: Vec::new(),
        })
    }

    /// The page the slow way: sort the names of `ids` and cut.
    fn expected(
        nodes: &[Option<NodeRec>],
        ids: &RoaringBitmap,
        after: Option<&str>,
    ) -> Vec<String> {
        let mut names: Vec<String> = ids
            .iter()
            .map(|x| name_of(nodes, x).to_owned())
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn pages_follow_name_order_through_inserts_and_removals() {
        // Names in an order unrelated to their ids.
        let mut nodes: Vec<Option<NodeRec>> = (0..40u32)
            .map(|i| node(&format!("n{:02}", (i * 17) % 40)))
            .collect();
        let mut rank = NameRank::build(&nodes);
        nodes.push(node("m"));
        rank.insert(&nodes, 40);
        nodes.push(node("a"));
        rank.insert(&nodes, 41);
        nodes[7] = None;
        rank.remove(7);
        rank.remove(7); // twice: nothing more happens
        assert_eq!(rank.by_rank.len(), 41);
        assert_eq!(rank.by_rank, NameRank::build(&nodes).by_rank);
        let live: RoaringBitmap = (0..42).filter(|&x| x != 7).collect();
        // A dense set (walks the order) and a sparse one (maps ranks), paged by 3 and whole.
        let sparse: RoaringBitmap = [3, 41, 40, 12, 30].into_iter().collect();
        for ids in [&live, &sparse] {
            for limit in [1, 3, usize::MAX] {
                let mut got = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let (page, more) = rank.page(&nodes, ids, after.as_deref(), limit);
                    assert!(!page.is_empty() || !more);
                    got.extend(page.iter().map(|n| (*n).to_owned()));
                    if !more {
                        break;
                    }
                    after = page.last().map(|n| (*n).to_owned());
                }
                assert_eq!(got, expected(&nodes, ids, None), "limit {limit}");
            }
            // A cursor that is no node's name seeks to the next one.
            let (page, _) = rank.page(&nodes, ids, Some("n10x"), usize::MAX);
            assert_eq!(page, expected(&nodes, ids, Some("n10x")));
        }
    }
}
