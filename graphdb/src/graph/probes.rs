//! `probe`: every node's closure upward as sorted group ids, in one flat array with a `u32`
//! start per node (4 bytes per pair and 4 per node; a 24-byte slot per node held up to four
//! inline before: 11.5 B per closure pair on a Launchpad-shaped graph, 5.5 B now; DESIGN.md,
//! memory, fourth pass).
//!
//! Writes change a few nodes' sets at a time, and a set cannot grow in place in a flat array:
//! a changed set goes to a side table (`moved`), its node's start is flagged, and its old
//! range in `flat` is left unused until the side table is folded back into a new flat array,
//! once it holds more than 1/64 of the nodes (at least 1,024). A fold is linear in the
//! namespace (9 ms at 530,000 nodes and 1.4 million pairs, measured: DESIGN.md), so its cost
//! per changed node is about 1 µs, paid by the write that triggers it.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use super::memory::allocated;

/// The flag on `starts[x]` saying that `x`'s set is in `moved`, not in `flat`.
const MOVED: u32 = 1 << 31;

/// Every node's sorted groups.
#[derive(Clone, Debug)]
pub(crate) struct Probes {
    /// Node `x`'s groups are `flat[starts[x]..starts[x + 1]]` (flags masked off), unless
    /// `starts[x]` has the `MOVED` flag. One more entry than nodes; the last is `flat.len()`.
    starts: Vec<u32>,
    flat: Vec<u32>,
    /// The sets changed since the last fold.
    moved: HashMap<u32, Box<[u32]>>,
}

impl Default for Probes {
    fn default() -> Self {
        Probes {
            starts: vec![0],
            flat: Vec::new(),
            moved: HashMap::new(),
        }
    }
}

impl Probes {
    /// The number of nodes (ids `0..len`).
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// The groups of `x`, sorted (empty for an id past the end).
    #[inline]
    pub fn get(&self, x: u32) -> &[u32] {
        let i = x as usize;
        let (Some(&start), Some(&end)) = (self.starts.get(i), self.starts.get(i + 1)) else {
            return &[];
        };
        if start & MOVED != 0 {
            return self.moved.get(&x).map_or(&[], |set| set);
        }
        &self.flat[start as usize..(end & !MOVED) as usize]
    }

    /// Whether `g` is one of `x`'s groups: a scan for the few groups most nodes have, a
    /// binary search past them.
    #[inline]
    pub fn contains(&self, x: u32, g: u32) -> bool {
        let set = self.get(x);
        if set.len() <= 8 {
            set.contains(&g)
        } else {
            set.binary_search(&g).is_ok()
        }
    }

    /// The groups of `x` as a bitmap.
    pub fn bitmap(&self, x: u32) -> RoaringBitmap {
        RoaringBitmap::from_sorted_iter(self.get(x).iter().copied()).expect("a probe is sorted")
    }

    /// Appends a node (id `len()`) whose groups are `sorted` (increasing): how a load fills
    /// the table, with no side table.
    pub fn push(&mut self, sorted: impl IntoIterator<Item = u32>) {
        self.flat.extend(sorted);
        let end = u32::try_from(self.flat.len()).expect("under 2^31 closure pairs");
        assert!(end < MOVED, "under 2^31 closure pairs");
        self.starts.push(end);
    }

    /// Makes room for ids up to `n` (new ones empty), or drops the ids from `n` on.
    pub fn resize(&mut self, n: usize) {
        if n >= self.len() {
            let end = self.starts[self.len()];
            self.starts.resize(n + 1, end);
            return;
        }
        self.moved.retain(|&x, _| (x as usize) < n);
        self.starts.truncate(n + 1);
        self.starts[n] &= !MOVED;
        self.flat.truncate(self.starts[n] as usize);
    }

    /// Sets the groups of `x` (`sorted`, increasing); returns whether they changed.
    pub fn set(&mut self, x: u32, sorted: Vec<u32>) -> bool {
        let changed = self.set_unfolded(x, sorted);
        if changed && self.moved.len() > (self.len() / 64).max(1024) {
            self.fold();
        }
        changed
    }

    /// [`Probes::set`] without folding, for a recomputation of most of the namespace (an
    /// import, a rebuild), which folds once at its end: folding every 1/64 of the nodes made
    /// a rebuild of 530,000 nodes 2.7x slower.
    pub fn set_unfolded(&mut self, x: u32, sorted: Vec<u32>) -> bool {
        if self.get(x) == sorted.as_slice() {
            return false;
        }
        self.moved.insert(x, sorted.into_boxed_slice());
        self.starts[x as usize] |= MOVED;
        true
    }

    /// Empties every set (a rebuild starts from nothing), keeping the ids.
    pub fn clear(&mut self) {
        let n = self.len();
        *self = Probes::default();
        self.resize(n);
    }

    /// Writes every set into a new flat array, the side table's included (unless the pairs
    /// reach 2^31, where the flag bit would be needed: then the side table keeps them).
    pub fn fold(&mut self) {
        if self.moved.is_empty() {
            return;
        }
        let pairs: usize = (0..self.len() as u32).map(|x| self.get(x).len()).sum();
        if pairs >= MOVED as usize {
            return;
        }
        let mut flat = Vec::with_capacity(pairs);
        let mut starts = Vec::with_capacity(self.starts.len());
        for x in 0..self.len() as u32 {
            starts.push(flat.len() as u32);
            flat.extend_from_slice(self.get(x));
        }
        starts.push(flat.len() as u32);
        self.flat = flat;
        self.starts = starts;
        self.moved = HashMap::new();
    }

    /// Folds, and gives back the spare capacity (after a load or a large import).
    pub fn shrink(&mut self) {
        self.fold();
        self.starts.shrink_to_fit();
        self.flat.shrink_to_fit();
    }

    /// Whether every set is empty.
    pub fn all_empty(&self) -> bool {
        (0..self.len() as u32).all(|x| self.get(x).is_empty())
    }

    /// The number of (node, group) pairs held.
    pub fn pairs(&self) -> u64 {
        (0..self.len() as u32)
            .map(|x| self.get(x).len() as u64)
            .sum()
    }

    /// Estimated heap bytes (see `memory.rs`).
    pub fn heap_bytes(&self) -> u64 {
        let buckets = if self.moved.capacity() == 0 {
            0
        } else {
            (self.moved.capacity() * 8 / 7).next_power_of_two()
        };
        ((self.starts.capacity() + self.flat.capacity()) * 4) as u64
            + (buckets * (std::mem::size_of::<(u32, Box<[u32]>)>() + 1)) as u64
            + self
                .moved
                .values()
                .map(|s| allocated(s.len() * 4))
                .sum::<u64>()
    }
}

/// `mine` (sorted) and `gained`, or `None` when `gained` adds nothing: a merge of two sorted
/// sequences (a leaf gaining a nested team's ancestors, with no bitmap built).
pub(crate) fn merge(mine: &[u32], gained: &RoaringBitmap) -> Option<Vec<u32>> {
    let mut out = Vec::with_capacity(mine.len() + gained.len() as usize);
    let mut a = mine.iter().copied().peekable();
    let mut b = gained.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some(&x), Some(&y)) => {
                out.push(x.min(y));
                if x <= y {
                    a.next();
                }
                if y <= x {
                    b.next();
                }
            }
            (Some(_), None) => out.extend(a.by_ref()),
            (None, Some(_)) => out.extend(b.by_ref()),
            (None, None) => break,
        }
    }
    (out.len() != mine.len()).then_some(out)
}

/// The set of `ids` (any order, repeats allowed) as a bitmap: sorted for a few ids, through
/// a bitset over their range when they are dense in it (sorting the 30,000 member links of
/// the largest team's subteams costs more than setting bits in a 66 KB array).
pub(crate) fn set_of(mut ids: Vec<u32>) -> RoaringBitmap {
    let (Some(&min), Some(&max)) = (ids.iter().min(), ids.iter().max()) else {
        return RoaringBitmap::new();
    };
    let low = min & !7;
    let bytes = ((max - low) / 8 + 1) as usize;
    if ids.len() < 512 || bytes > ids.len() * 16 {
        ids.sort_unstable();
        ids.dedup();
        return RoaringBitmap::from_sorted_iter(ids).expect("sorted, no repeats");
    }
    let mut bits = vec![0u8; bytes];
    for x in ids {
        let i = x - low;
        bits[(i / 8) as usize] |= 1 << (i % 8);
    }
    RoaringBitmap::from_lsb0_bytes(low, &bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets changed one at a time (through folds), nodes added and dropped: every set reads
    /// back as the model's.
    #[test]
    fn sets_read_back_through_moves_and_folds() {
        let mut probes = Probes::default();
        let mut model: Vec<Vec<u32>> = Vec::new();
        for x in 0..3000u32 {
            let set: Vec<u32> = (0..x % 7).map(|i| i * 3 + x % 5).collect();
            probes.push(set.iter().copied());
            model.push(set);
        }
        for round in 0..5000u32 {
            let x = (round * 7919) % model.len() as u32;
            let set: Vec<u32> = (0..(round % 11)).map(|i| i * 2 + round % 3).collect();
            assert_eq!(probes.set(x, set.clone()), model[x as usize] != set);
            model[x as usize] = set;
            if round % 1000 == 999 {
                probes.resize(model.len() - 10);
                model.truncate(model.len() - 10);
                probes.resize(model.len() + 3);
                model.resize(model.len() + 3, Vec::new());
            }
        }
        let check = |probes: &Probes| {
            assert_eq!(probes.len(), model.len());
            for (x, set) in model.iter().enumerate() {
                assert_eq!(probes.get(x as u32), set.as_slice());
                for g in 0..30 {
                    assert_eq!(probes.contains(x as u32, g), set.contains(&g));
                }
            }
            assert_eq!(probes.get(model.len() as u32), &[] as &[u32]);
        };
        check(&probes);
        probes.shrink();
        assert!(probes.moved.is_empty());
        check(&probes);
        probes.clear();
        assert_eq!(probes.len(), model.len());
        assert!(probes.all_empty() && probes.pairs() == 0);
    }

    #[test]
    fn merges_and_sets_are_exact() {
        let gained: RoaringBitmap = [2, 5, 9].into_iter().collect();
        assert_eq!(merge(&[1, 5, 7], &gained), Some(vec![1, 2, 5, 7, 9]));
        assert_eq!(merge(&[2, 5, 9], &gained), None);
        for ids in [
            vec![],
            vec![7, 3, 3],
            (0..5000).map(|i| (i * 7919) % 6000).collect(),
            (0..600).map(|i| i * 1000 + 70_000).collect(),
        ] {
            let expected: RoaringBitmap = ids.iter().copied().collect();
            assert_eq!(set_of(ids), expected);
        }
    }
}
