//! The per-repository cache of reach vectors (one per branch tip asked about as a target),
//! bounded in bytes, its entries stored as differences from a checkpoint of the default branch.
//!
//! A whole reach vector is one `u32` per chain of the repository: with many short topic
//! branches (100,000 branches, 106,000 chains at 10^6 commits) that is 424 KB per target, and a
//! cache bounded in entries grows as targets × chains. Vectors are kept whole while one per
//! branch fits the cache (one read per lookup), in byte entries where they fit
//! ([`Reach::Narrow`]: about 1.2 bytes a chain, the few long chains' entries in the same cache
//! line). Beyond that: a target forked from the default
//! branch reaches everything that the default branch's checkpoint below its fork reaches, and
//! differs from it only in the chains reached since: the commits of the default branch between
//! the checkpoint and the fork (with what they merged), and the target's own work. So an entry
//! keeps the `(chain, reached positions)` pairs that exceed the nearest *whole* checkpoint of
//! the default branch that the target reaches (whole checkpoints are kept in memory anyway, see
//! `checkpoint.rs`), sorted by chain; a lookup is a binary search in them and, when the chain is
//! not there, one read of the checkpoint's vector. A vector whose differences would not be at
//! most half its size is kept whole.
//!
//! The cache holds at most its budget of entries (the larger of [`crate::REACH_CACHE_BYTES`]
//! and [`crate::REACH_CACHE_BYTES_PER_COMMIT`] per commit, unless
//! [`crate::CommitGraphs::with_reach_cache_bytes`] says otherwise), evicting arbitrary ones
//! first. `is_merged` admits a target as a rent-or-buy choice: a miss is answered by the
//! pruned walk (about a microsecond), and the target's vector (O(chains) to compute: tens of
//! microseconds with 100,000 chains) is computed and cached only once the walks spent on that
//! target would have paid for it, after `max(2, chains / 2048)` misses ([`admit_after`]). So
//! with a few targets asked about often, every question after the first few is one lookup;
//! with 100,000 targets asked about at random, no question pays for a vector that no later
//! question uses.

use std::collections::HashMap;
use std::sync::Arc;

use super::index::CommitIndex;

mod narrow;

use narrow::Narrow;

/// A cached reach vector.
#[derive(Debug)]
pub(crate) enum Reach {
    /// One entry per chain.
    Whole(Vec<u32>),
    /// A byte per chain, the few long chains' entries beside them in the same cache line:
    /// about 1.2 bytes per chain (see [`Narrow`]).
    Narrow(Narrow),
    /// The entries that exceed `base` (a whole checkpoint of the default branch, shared with
    /// it), sorted by chain.
    OverCheckpoint {
        base: Arc<[u32]>,
        delta: Box<[(u32, u32)]>,
    },
}

impl Reach {
    /// Heap bytes held (the checkpoint is the index's, not counted here).
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Reach::Whole(v) => v.capacity() * 4,
            Reach::Narrow(narrow) => narrow.bytes(),
            Reach::OverCheckpoint { delta, .. } => delta.len() * 8,
        }
    }
}

/// Fixed cost counted per entry besides its vector: the map slot, the `Arc`'s header.
const ENTRY_OVERHEAD: usize = 64;

/// Misses are counted in this many counters, a target's chosen by a hash of its tip.
const MISS_SLOTS: usize = 4096;

/// The counters start over after this many misses, so that the misses of targets that share a
/// counter do not add up forever.
const MISS_WINDOW: u32 = 1 << 16;

/// After how many misses `is_merged` computes and caches a target's vector, in a repository
/// of `chains` chains: when the walks (about 1 µs each) would have cost what the vector does
/// (about 0.5 ns per chain, so 2,048 chains per walk).
pub(crate) fn admit_after(chains: usize) -> u32 {
    u32::try_from(chains / 2048).unwrap_or(u32::MAX).max(2)
}

/// The miss counter of `tip`: Fibonacci hashing, whose top bits spread consecutive tips.
fn miss_slot(tip: u32) -> usize {
    (tip.wrapping_mul(0x9E37_79B9) >> (32 - MISS_SLOTS.trailing_zeros())) as usize
}

/// The cache of one repository (see the module docs).
#[derive(Debug)]
pub(crate) struct ReachCache {
    entries: HashMap<u32, Arc<Reach>, foldhash::fast::RandomState>,
    bytes: usize,
    /// A fixed budget, or `None` for the default (see [`ReachCache::budget`]).
    budget: Option<usize>,
    /// Misses in `is_merged` per counter (made at the first miss): targets that share one add
    /// up, which only admits them sooner. A fixed array in cache rather than a map with an
    /// entry per target: with 100,000 targets asked about at random, almost every question
    /// misses, and counting it is on its path.
    misses: Option<Box<[u16]>>,
    /// Misses counted since the counters started over.
    counted: u32,
}

impl ReachCache {
    pub(crate) fn new(budget: Option<usize>) -> Self {
        ReachCache {
            entries: HashMap::default(),
            bytes: 0,
            budget,
            misses: None,
            counted: 0,
        }
    }

    pub(crate) fn get(&self, tip: u32) -> Option<&Arc<Reach>> {
        self.entries.get(&tip)
    }

    /// The most bytes the entries may hold in a repository of `commits` commits.
    pub(crate) fn budget(&self, commits: usize) -> usize {
        self.budget.unwrap_or_else(|| {
            crate::REACH_CACHE_BYTES
                .max(commits.saturating_mul(crate::REACH_CACHE_BYTES_PER_COMMIT))
        })
    }

    /// Bytes held by the entries.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts a miss of `tip`: whether it has now missed `admit` times (its vector is to be
    /// computed and cached).
    pub(crate) fn admit(&mut self, tip: u32, admit: u32) -> bool {
        let misses = self
            .misses
            .get_or_insert_with(|| vec![0; MISS_SLOTS].into_boxed_slice());
        self.counted += 1;
        if self.counted >= MISS_WINDOW {
            misses.fill(0);
            self.counted = 0;
        }
        let count = &mut misses[miss_slot(tip)];
        *count = count.saturating_add(1);
        u32::from(*count) >= admit.min(u32::from(u16::MAX))
    }

    /// Caches `reach` for `tip`, evicting entries until the cache fits `budget` (an entry
    /// larger than the whole budget is not kept).
    pub(crate) fn insert(&mut self, tip: u32, reach: Arc<Reach>, budget: usize) {
        let size = reach.bytes() + ENTRY_OVERHEAD;
        if size > budget {
            return;
        }
        if let Some(old) = self.entries.remove(&tip) {
            self.bytes -= old.bytes() + ENTRY_OVERHEAD;
        }
        while self.bytes + size > budget {
            let Some(&evict) = self.entries.keys().next() else {
                break;
            };
            if let Some(old) = self.entries.remove(&evict) {
                self.bytes -= old.bytes() + ENTRY_OVERHEAD;
            }
        }
        self.bytes += size;
        self.entries.insert(tip, reach);
    }

    /// Drops the entries of tips at or above `len` (commits a failed write took back).
    pub(crate) fn retain_below(&mut self, len: usize) {
        let mut bytes = 0;
        self.entries.retain(|&tip, reach| {
            let keep = (tip as usize) < len;
            if keep {
                bytes += reach.bytes() + ENTRY_OVERHEAD;
            }
            keep
        });
        self.bytes = bytes;
    }
}

impl CommitIndex {
    /// `vector` (a reach vector made by [`CommitIndex::reach`]) in its cached form: whole when
    /// `whole_fits` (whole vectors for every branch fit the cache: one read per lookup), else
    /// as differences from the highest whole checkpoint of chain `base` that it reaches, when
    /// those are at most half the vector's bytes.
    pub(crate) fn compact(&self, vector: Vec<u32>, base: Option<u32>, whole_fits: bool) -> Reach {
        if whole_fits {
            return narrow(vector);
        }
        let found = base.and_then(|c| {
            let reached = *vector.get(c as usize)? as usize;
            // Slot i holds the commit at position (i + 1) K - 1, reached when below `reached`.
            let below =
                (reached / self.checkpoint_every).min(self.chains[c as usize].slots().len());
            let top = below.checked_sub(1)?;
            self.checkpoint(c, top);
            (0..=top).rev().find_map(|i| self.whole_checkpoint(c, i))
        });
        let Some(whole) = found else {
            return Reach::Whole(vector);
        };
        let mut delta = Vec::new();
        for (x, &v) in vector.iter().enumerate() {
            if v > whole.get(x).copied().unwrap_or(0) {
                if delta.len() * 4 >= vector.len() {
                    return Reach::Whole(vector);
                }
                delta.push((x as u32, v));
            }
        }
        Reach::OverCheckpoint {
            base: Arc::clone(whole),
            delta: delta.into_boxed_slice(),
        }
    }

    /// Entry `x` of a cached reach vector.
    #[inline]
    pub(crate) fn reach_value(&self, reach: &Reach, x: u32) -> u32 {
        match reach {
            Reach::Whole(v) => v.get(x as usize).copied().unwrap_or(0),
            Reach::Narrow(narrow) => narrow.get(x),
            Reach::OverCheckpoint { base, delta } => {
                match delta.binary_search_by_key(&x, |e| e.0) {
                    Ok(k) => delta[k].1,
                    Err(_) => base.get(x as usize).copied().unwrap_or(0),
                }
            }
        }
    }

    /// Whether the commit whose cached reach vector is `reach` reaches `node`.
    #[inline]
    pub(crate) fn reached_by(&self, reach: &Reach, node: u32) -> bool {
        let l = self.labels[node as usize];
        self.reach_value(reach, l.chain) > l.position
    }

    /// A cached reach vector as one entry per chain.
    pub(crate) fn expand(&self, reach: &Reach) -> Vec<u32> {
        match reach {
            Reach::Whole(v) => v.clone(),
            Reach::Narrow(narrow) => narrow.to_vec(),
            Reach::OverCheckpoint { base, delta } => {
                let mut v = base.to_vec();
                for &(x, value) in delta {
                    if v.len() <= x as usize {
                        v.resize(x as usize + 1, 0);
                    }
                    v[x as usize] = value;
                }
                v
            }
        }
    }
}

/// The most a whole vector of `chains` entries takes in the cache when it is kept in byte
/// entries ([`Narrow::MAX_BYTES`] per `Narrow::PER` chains, rounded up); one kept whole
/// (when byte entries are refused: rare, see [`Narrow::new`]) takes up to twice that, and the
/// cache's byte bound still holds then: it evicts.
pub(crate) fn whole_bytes(chains: usize) -> usize {
    chains
        .saturating_mul(Narrow::MAX_BYTES)
        .div_ceil(Narrow::PER)
}

/// `vector` in byte entries, or whole when too many of its entries are long for them.
fn narrow(vector: Vec<u32>) -> Reach {
    match Narrow::new(&vector) {
        Some(narrow) => Reach::Narrow(narrow),
        None => Reach::Whole(vector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RepoId;

    #[test]
    fn whole_vectors_are_cached_narrow_where_they_fit() {
        let index = CommitIndex::with_checkpoint_interval(RepoId(1), 4);
        let mut vector = vec![0, 300, 65_534, 65_535, 65_536, 3, 4_000_000];
        vector.extend(0..100);
        let reach = index.compact(vector.clone(), None, true);
        assert!(matches!(reach, Reach::Narrow(_)), "kept as {reach:?}");
        assert_eq!(reach.bytes(), 3 * 64 + 3 * 8);
        for (x, &value) in (0u32..).zip(&vector) {
            assert_eq!(index.reach_value(&reach, x), value, "entry {x}");
        }
        assert_eq!(index.expand(&reach), vector);
        // Mostly large entries: whole.
        let wide = vec![70_000; 8];
        assert!(matches!(index.compact(wide, None, true), Reach::Whole(_)));
    }

    #[test]
    fn a_target_is_admitted_after_its_misses_and_random_ones_are_not() {
        let mut cache = ReachCache::new(None);
        assert!(!cache.admit(7, 3));
        assert!(!cache.admit(7, 3));
        assert!(cache.admit(7, 3));
        // 100,000 targets missed once each, as the topic shape's random questions do: with
        // 51 misses to admit (its 106,000 chains), none is admitted by the others' counts.
        let admitted = (1_000..101_000u32).filter(|&t| cache.admit(t, 51)).count();
        assert_eq!(admitted, 0);
        // A target asked about among them is admitted, at the latest after its own 51 misses.
        let mut asked = 0;
        for t in 200_000..300_000u32 {
            if t % 100 == 0 {
                asked += 1;
                if cache.admit(42, 51) {
                    break;
                }
            }
            assert!(!cache.admit(t, 51), "random target {t} admitted");
        }
        assert!(asked > 1 && asked <= 51, "admitted after {asked} misses");
        // The counts start over after a window of misses.
        let mut cache = ReachCache::new(None);
        assert!(!cache.admit(9, 3));
        assert!(!cache.admit(9, 3));
        let other = (10..).find(|&t| miss_slot(t) != miss_slot(9)).unwrap();
        for _ in 0..MISS_WINDOW {
            cache.admit(other, u32::MAX);
        }
        assert!(!cache.admit(9, 3));
    }
}
