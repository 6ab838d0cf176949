//! Name order: a rank per node that sorts as the names do, so that a page of names sorted by
//! name is a sort of integers, not of strings spread over memory, and lists of members kept
//! in name order per group. One order for every namespace: teams and package sets page
//! through the gapped ranks, general graphs through positions built from the same `sorted`.
//!
//! Why: names are not in id order in real data (a person's name has nothing to do with when
//! the account was made), so sorting a team's 18,000 members by comparing their names costs
//! milliseconds of cache misses, on every request. Ranks are kept with gaps (order
//! maintenance): a new name takes the midpoint between its neighbours' ranks, found by a
//! binary search of `sorted`, and only when no gap is left are all ranks renumbered (order
//! kept, so lists sorted by rank stay sorted).
//!
//! General graphs page whole bitmaps (descendants, ancestors) with a seeking cursor
//! ([`NameOrder::page`]); that needs each id's *position* in `sorted` (dense, so a set's
//! positions mark a plain bit set), which the gapped ranks are not. The positions are built
//! from `sorted` by the first such page (no string compared) and kept by every insertion and
//! removal after it (a linear renumbering of the `u32`s behind the change); namespaces that
//! never page this way (teams, package sets) never build them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use roaring::RoaringBitmap;

use super::types::Filter;

/// The distance between consecutive ranks after a renumbering: room for 2^24 inserts
/// between two names before the next renumbering, and for 2^40 names.
const GAP: u64 = 1 << 24;

/// Ranks of the live nodes in name order.
#[derive(Debug, Default)]
pub(crate) struct NameOrder {
    /// Live ids sorted by name.
    sorted: Vec<u32>,
    /// `rank[id]`: increasing with the name; meaningless for ids not in `sorted`.
    rank: Vec<u64>,
    /// Set while a load or an import inserts many nodes: they are placed by one sort at
    /// [`NameOrder::rebuild`] instead of one by one.
    deferred: bool,
    /// `positions[id]`: the index of `id` in `sorted` (`u32::MAX` for ids not in it), built by
    /// the first [`NameOrder::page`] and then kept by `insert` and `remove`.
    positions: OnceLock<Vec<u32>>,
}

impl NameOrder {
    /// Stops placing inserted nodes until [`NameOrder::rebuild`].
    pub fn defer(&mut self) {
        self.deferred = true;
        self.positions.take();
    }

    /// Drops the positions before inserting many nodes one by one (each insertion renumbers
    /// them linearly); the next [`NameOrder::page`] builds them again in one pass.
    pub fn forget_positions(&mut self) {
        self.positions.take();
    }

    /// Sorts every live node by name and spaces the ranks evenly.
    pub fn rebuild<'a>(&mut self, live: impl Iterator<Item = (u32, &'a str)>) {
        let mut named: Vec<(&str, u32)> = live.map(|(id, name)| (name, id)).collect();
        named.sort_unstable();
        self.sorted = named.into_iter().map(|(_, id)| id).collect();
        self.renumber();
        self.deferred = false;
        self.positions.take();
    }

    fn renumber(&mut self) {
        let len = self.sorted.iter().max().map_or(0, |&m| m as usize + 1);
        self.rank.clear();
        self.rank.resize(len, 0);
        for (i, &id) in self.sorted.iter().enumerate() {
            self.rank[id as usize] = (i as u64 + 1) * GAP;
        }
    }

    /// The position in `sorted` of the first name `>= name` (`> name` when `after`).
    fn position<'a>(&self, name: &str, after: bool, names: impl Fn(u32) -> &'a str) -> usize {
        self.sorted.partition_point(|&id| {
            let n = names(id);
            n < name || (after && n == name)
        })
    }

    /// Places a new node (its name is not in the order yet).
    pub fn insert<'a>(&mut self, id: u32, name: &str, names: impl Fn(u32) -> &'a str) {
        if self.deferred {
            return;
        }
        let at = self.position(name, false, names);
        let below = at
            .checked_sub(1)
            .map_or(0, |i| self.rank[self.sorted[i] as usize]);
        let above = self
            .sorted
            .get(at)
            .map_or(below + 2 * GAP, |&next| self.rank[next as usize]);
        self.sorted.insert(at, id);
        if self.rank.len() <= id as usize {
            self.rank.resize(id as usize + 1, 0);
        }
        if let Some(positions) = self.positions.get_mut() {
            if positions.len() <= id as usize {
                positions.resize(id as usize + 1, u32::MAX);
            }
            renumber_positions(positions, &self.sorted, at);
        }
        if above - below >= 2 {
            self.rank[id as usize] = below + (above - below) / 2;
        } else {
            self.renumber();
        }
    }

    /// Forgets a node about to lose its name.
    pub fn remove<'a>(&mut self, id: u32, name: &str, names: impl Fn(u32) -> &'a str) {
        if self.deferred {
            return;
        }
        let at = self.position(name, false, names);
        if self.sorted.get(at) == Some(&id) {
            self.sorted.remove(at);
            if let Some(positions) = self.positions.get_mut() {
                positions[id as usize] = u32::MAX;
                renumber_positions(positions, &self.sorted, at);
            }
        }
    }

    /// The rank of a live node.
    #[inline]
    pub fn rank(&self, id: u32) -> u64 {
        debug_assert!(!self.deferred, "name order used while deferred");
        self.rank[id as usize]
    }

    /// The smallest rank of a name after `after`: every live node with a name `> after` has a
    /// rank at least this, every other one a smaller rank.
    pub fn rank_after<'a>(&self, after: &str, names: impl Fn(u32) -> &'a str) -> u64 {
        let at = self.position(after, true, names);
        self.sorted
            .get(at)
            .map_or(u64::MAX, |&id| self.rank[id as usize])
    }

    /// Bytes held (for [`super::memory::MemoryStats`]).
    pub fn heap_bytes(&self) -> u64 {
        let positions = self.positions.get().map_or(0, Vec::capacity);
        (self.sorted.capacity() * 4 + self.rank.capacity() * 8 + positions * 4) as u64
    }

    /// Each live id's index in `sorted`, built on first use.
    fn positions(&self) -> &[u32] {
        debug_assert!(!self.deferred, "name order used while deferred");
        self.positions.get_or_init(|| {
            let mut positions = vec![u32::MAX; self.rank.len()];
            renumber_positions(&mut positions, &self.sorted, 0);
            positions
        })
    }

    /// The names of `ids` greater than `after`, in name order, at most `limit` (at least 1),
    /// and whether more follow.
    ///
    /// Two ways, whichever touches fewer ids: a dense set (a first page of a large set) walks
    /// the order from the cursor and keeps the members of `ids` until the page is full; a
    /// sparse one marks its ids' positions in a bit set and reads the page from there in name
    /// order.
    pub fn page<'s>(
        &self,
        ids: &RoaringBitmap,
        after: Option<&str>,
        limit: usize,
        names: impl Fn(u32) -> &'s str,
    ) -> (Vec<&'s str>, bool) {
        let limit = limit.max(1);
        let start = after.map_or(0, |a| self.position(a, true, &names));
        let total = self.sorted.len().max(1) as u64;
        let members = ids.len().max(1);
        // Expected ids walked before a page is full, against the ids to map.
        let walk = (limit as u64).saturating_mul(total) / members;
        let mut page = Vec::with_capacity(limit.min(ids.len() as usize));
        if walk < members {
            let mut rest = self.sorted[start.min(self.sorted.len())..]
                .iter()
                .filter(|&&x| ids.contains(x));
            for &x in rest.by_ref().take(limit) {
                page.push(names(x));
            }
            let more = rest.next().is_some();
            return (page, more);
        }
        // Positions marked in a plain bit set over the whole order (|graph| / 8 bytes: 12 KB
        // at Debian's scale), then read word by word from the cursor: an O(1) mark per id,
        // where inserting into a bitmap costs a search per id.
        let positions = self.positions();
        let mut marked = vec![0u64; self.sorted.len().div_ceil(64)];
        for x in ids {
            if let Some(&r) = positions.get(x as usize) {
                if r != u32::MAX && r as usize >= start {
                    marked[r as usize / 64] |= 1 << (r % 64);
                }
            }
        }
        // The ids first, then their names: the scan stays a tight loop over integers (with
        // the name lookups inside it, this path measured slower than the general graphs'
        // former order; DESIGN.md, "Name-ordered pages of whole sets").
        let mut chosen: Vec<u32> = Vec::with_capacity(page.capacity());
        let mut more = false;
        'scan: for (w, &word) in marked.iter().enumerate().skip(start / 64) {
            let mut word = word;
            while word != 0 {
                let r = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                if chosen.len() == limit {
                    more = true;
                    break 'scan;
                }
                chosen.push(self.sorted[r]);
            }
        }
        page.extend(chosen.into_iter().map(names));
        (page, more)
    }

    /// `ids` sorted by name.
    pub fn sort(&self, ids: impl IntoIterator<Item = u32>) -> Vec<u32> {
        // Rank in the high bits is not possible (ranks are u64), so sort pairs; ids given in
        // increasing order keep the rank loads sequential in `rank`.
        let mut keyed: Vec<(u64, u32)> = ids.into_iter().map(|id| (self.rank(id), id)).collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, id)| id).collect()
    }
}

/// Sets `positions[id]` for every id of `sorted` from index `from` on (ids before it keep
/// theirs): a linear pass over `u32`s, no string compared.
fn renumber_positions(positions: &mut [u32], sorted: &[u32], from: usize) {
    for (r, &x) in sorted.iter().enumerate().skip(from) {
        positions[x as usize] = r as u32;
    }
}

/// Lists of transitive members sorted by name, per (group, filter), computed on first use and
/// dropped when the group's `desc` changes (by the same [`super::state::State`] methods that
/// change it, so every write path, local or replayed, keeps them true).
#[derive(Debug, Default)]
pub(crate) struct MemberLists {
    lists: Mutex<Lists>,
}

/// Sorted member lists by (group, filter key).
type Lists = HashMap<(u32, u8), Arc<[u32]>>;

fn filter_key(filter: Filter) -> u8 {
    match filter {
        Filter::All => 0,
        Filter::Leaves => 1,
        Filter::Groups => 2,
    }
}

impl MemberLists {
    /// The cached list, or `compute`'s, cached.
    pub fn get_or(
        &self,
        group: u32,
        filter: Filter,
        compute: impl FnOnce() -> Vec<u32>,
    ) -> Arc<[u32]> {
        let key = (group, filter_key(filter));
        if let Some(list) = self.lock().get(&key) {
            return Arc::clone(list);
        }
        // Computed outside the lock: readers of other groups do not wait for the sort.
        let list: Arc<[u32]> = compute().into();
        self.lock().insert(key, Arc::clone(&list));
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes held by the kept lists.
    pub fn heap_bytes(&self) -> u64 {
        self.lock().values().map(|l| l.len() as u64 * 4 + 16).sum()
    }

    /// Drops the lists of `group` (its members changed).
    pub fn invalidate(&mut self, group: u32) {
        let lists = self
            .lists
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !lists.is_empty() {
            for f in 0..3 {
                lists.remove(&(group, f));
            }
        }
    }

    /// Drops every list.
    pub fn clear(&mut self) {
        self.lists
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts that exhaust the gaps (always between the same two names), removals, and a
    /// cursor on a name that is gone: ranks keep the name order throughout.
    #[test]
    fn ranks_follow_names_through_renumbering() {
        let mut names: Vec<String> = vec!["m".into(), "a".into(), "z".into()];
        let mut order = NameOrder::default();
        order.rebuild(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i as u32, n.as_str())),
        );
        // "a" < "b", "ba", "baa", ... < "m": each lands between "a" and the previous one, so
        // the gap halves every time and runs out after 24 inserts.
        for k in 0..60 {
            let name = format!("b{}", "a".repeat(60 - k));
            names.push(name);
            let id = (names.len() - 1) as u32;
            let snapshot = names.clone();
            order.insert(id, &names[id as usize], |x| &snapshot[x as usize]);
        }
        let check = |order: &NameOrder, live: &[u32], names: &[String]| {
            let mut by_rank = live.to_vec();
            by_rank.sort_by_key(|&x| order.rank(x));
            let mut by_name = live.to_vec();
            by_name.sort_by(|&x, &y| names[x as usize].cmp(&names[y as usize]));
            assert_eq!(by_rank, by_name);
            let bitmap: RoaringBitmap = live.iter().copied().collect();
            assert_eq!(order.sort(&bitmap), by_name);
        };
        let mut live: Vec<u32> = (0..names.len() as u32).collect();
        check(&order, &live, &names);
        // Remove "m" and a middle one; a cursor on the removed "m" still splits correctly.
        for gone in [0u32, 30] {
            order.remove(gone, &names[gone as usize], |x| &names[x as usize]);
            live.retain(|&x| x != gone);
        }
        check(&order, &live, &names);
        let from = order.rank_after("m", |x| &names[x as usize]);
        let after: Vec<&str> = live
            .iter()
            .filter(|&&x| order.rank(x) >= from)
            .map(|&x| names[x as usize].as_str())
            .collect();
        assert_eq!(after, ["z"]);
        assert_eq!(order.rank_after("zz", |x| &names[x as usize]), u64::MAX);
    }

    /// The page the slow way: sort the names of `ids` and cut.
    fn expected(names: &[String], ids: &RoaringBitmap, after: Option<&str>) -> Vec<String> {
        let mut page: Vec<String> = ids
            .iter()
            .map(|x| names[x as usize].clone())
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .collect();
        page.sort_unstable();
        page
    }

    /// Pages (dense and sparse, by 1, by 3 and whole) through inserts and removals made
    /// before and after the positions were built, and a cursor that is no node's name.
    #[test]
    fn pages_follow_name_order_through_inserts_and_removals() {
        // Names in an order unrelated to their ids.
        let mut names: Vec<String> = (0..40u32)
            .map(|i| format!("n{:02}", (i * 17) % 40))
            .collect();
        let mut order = NameOrder::default();
        order.rebuild(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i as u32, n.as_str())),
        );
        let sparse: RoaringBitmap = [3, 41, 40, 12, 30].into_iter().collect();
        // Build the positions now, so that the changes below must keep them.
        let _ = order.page(&sparse, None, usize::MAX, |x| names[x as usize].as_str());
        for name in ["m", "a"] {
            names.push(name.to_owned());
            let id = (names.len() - 1) as u32;
            let snapshot = names.clone();
            order.insert(id, name, |x| &snapshot[x as usize]);
        }
        order.remove(7, &names[7], |x| &names[x as usize]);
        order.remove(7, &names[7], |x| &names[x as usize]); // twice: nothing more happens
        assert_eq!(order.sorted.len(), 41);
        let live: RoaringBitmap = (0..42).filter(|&x| x != 7).collect();
        let name = |x: u32| names[x as usize].as_str();
        for ids in [&live, &sparse] {
            for limit in [1, 3, usize::MAX] {
                let mut got = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let (page, more) = order.page(ids, after.as_deref(), limit, name);
                    assert!(!page.is_empty() || !more);
                    got.extend(page.iter().map(|n| (*n).to_owned()));
                    if !more {
                        break;
                    }
                    after = page.last().map(|n| (*n).to_owned());
                }
                assert_eq!(got, expected(&names, ids, None), "limit {limit}");
            }
            // A cursor that is no node's name seeks to the next one.
            let (page, _) = order.page(ids, Some("n10x"), usize::MAX, name);
            assert_eq!(page, expected(&names, ids, Some("n10x")));
        }
        // The kept positions are the ones a fresh build gives.
        let kept = order.positions().to_vec();
        order.forget_positions();
        assert_eq!(order.positions(), kept.as_slice());
    }
}
