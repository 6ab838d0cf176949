//! Name order: a rank per node that sorts as the names do, so that a page of names sorted by
//! name is a sort of integers, not of strings spread over memory, and lists of members kept
//! in name order per group.
//!
//! Why: names are not in id order in real data (a person's name has nothing to do with when
//! the account was made), so sorting a team's 18,000 members by comparing their names costs
//! milliseconds of cache misses, on every request. Ranks are kept with gaps (order
//! maintenance): a new name takes the midpoint between its neighbours' ranks, found by a
//! binary search of `sorted`, and only when no gap is left are all ranks renumbered (order
//! kept, so lists sorted by rank stay sorted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
}

impl NameOrder {
    /// Stops placing inserted nodes until [`NameOrder::rebuild`].
    pub fn defer(&mut self) {
        self.deferred = true;
    }

    /// Sorts every live node by name and spaces the ranks evenly.
    pub fn rebuild<'a>(&mut self, live: impl Iterator<Item = (u32, &'a str)>) {
        let mut named: Vec<(&str, u32)> = live.map(|(id, name)| (name, id)).collect();
        named.sort_unstable();
        self.sorted = named.into_iter().map(|(_, id)| id).collect();
        self.renumber();
        self.deferred = false;
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
        (self.sorted.capacity() * 4 + self.rank.capacity() * 8) as u64
    }

    /// `ids` sorted by name.
    pub fn sort(&self, ids: &RoaringBitmap) -> Vec<u32> {
        // Rank in the high bits is not possible (ranks are u64), so sort pairs; the ids come
        // in increasing order, which keeps the rank loads sequential in `rank`.
        let mut keyed: Vec<(u64, u32)> = ids.iter().map(|id| (self.rank(id), id)).collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, id)| id).collect()
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
}
