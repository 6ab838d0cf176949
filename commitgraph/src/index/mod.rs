//! The in-memory reachability index of one repository's commit graph.
//!
//! Every commit gets a dense id in insertion order (parents before children, so the id order is
//! a topological order) and four `u32` labels. What cannot be recomputed from the parents is
//! persisted with the commit (whether it starts a chain, and its rank), so that opening a
//! repository derives the rest in one pass instead of re-running the batches:
//!
//! - `generation`: 1 + the largest generation of its parents (1 for a root). A commit can reach
//!   (have as ancestor) only commits of a smaller generation.
//! - `chain`, `position`: a decomposition of the graph into first-parent chains. A commit whose
//!   first parent is the last commit of its chain extends that chain; any other commit starts a
//!   new chain. Along a chain, each commit's first parent is the commit before it, so every
//!   commit reaches all commits below it on its chain: "A is an ancestor of B" when they share a
//!   chain is one comparison.
//! - `rank`: a second topological order (Kahn's algorithm choosing the *largest* ready id first,
//!   as FELINE does) so that `A` ancestor of `B` implies `id(A) < id(B)` *and*
//!   `rank(A) < rank(B)`: two cheap negative cuts besides the generation.
//!
//! A reachability question that the labels do not settle is answered exactly by a walk over
//! chains rather than commits: the state is, per chain, how many of its lowest positions are
//! known to be reachable, and only the merge commits (and the chain's start) inside a newly
//! reached segment lead elsewhere. Segments below the target's generation are skipped by binary
//! search, and parents that the labels rule out are never entered.
//!
//! The same walk without a target computes a *reach vector* for a commit: for every chain, the
//! number of its positions that the commit reaches. It is the per-target label of the issue
//! (the first-parent positions that reach each commit) folded per chain: with the reach vector
//! of branch `Y`'s tip, "is `X` merged into `Y`" is one comparison, and when `Y` moves forward
//! the vector is extended from where it was, visiting only newly reachable segments.

use std::cell::RefCell;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::OnceLock;

use super::checkpoint::Checkpoint;
use super::error::CommitError;
use super::id::{CommitId, IdMap, RepoId};
use super::idtable::{reserve_gently, IdTable};

mod append;
mod query;

/// No commit: the first parent of a root.
pub(crate) const NONE: u32 = u32::MAX;

/// What one commit reaches, folded per first-parent chain: for each chain, how many of its
/// lowest positions are ancestors of the commit. Made by [`CommitIndex::reach_vector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReachVector(Vec<u32>);

impl ReachVector {
    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.0.capacity() * 4
    }
}

/// A commit to add: its id and its parents, first parent first.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewCommit {
    /// The commit.
    pub id: CommitId,
    /// Its parents in order (the first parent first); empty for a root commit.
    pub parents: Vec<CommitId>,
}

/// The persisted labels of one commit (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Labels {
    pub(crate) generation: u32,
    pub(crate) chain: u32,
    pub(crate) position: u32,
    pub(crate) rank: u32,
}

/// The default checkpoint interval `K`: a chain gets a checkpoint (the reach vector of its
/// commit at position `i * K - 1`) every `K` positions.
pub const CHECKPOINT_EVERY: usize = 1024;

/// At most this many checkpoints serve as negative covers in one walk.
const MAX_COVERS: usize = 16;

/// One first-parent chain. Most chains are short (a topic branch), so a chain holds no array
/// of its commits (each commit's first parent is the commit below it on its chain, kept per
/// commit) and allocates only for its merge commits and, once at least K long, checkpoints:
/// 40 bytes for a chain without merges.
#[derive(Debug)]
pub(crate) struct Chain {
    /// The chain's first commit.
    pub(crate) first: u32,
    /// How many commits the chain has.
    pub(crate) len: u32,
    /// The commits of the chain that have more than one parent, by position.
    pub(crate) merges: Vec<Merge>,
    /// The checkpoints, when the chain has any (see [`Chain::slots`]). Boxed on purpose: 8
    /// bytes in every chain instead of a 24-byte `Vec`, where only chains at least K long have
    /// checkpoints (and the extra allocation is one per such chain).
    #[allow(clippy::box_collection)]
    checkpoints: Option<Box<Vec<Slot>>>,
}

/// A merge commit of a chain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Merge {
    pub(crate) position: u32,
    pub(crate) node: u32,
    /// Where its parents after the first are in [`CommitIndex`]'s `extras`: their count there,
    /// then the parents.
    extras: u32,
}

/// A checkpoint slot: the commit at position `(i + 1) * K - 1` and its reach vector (as a delta
/// from the one before: see `checkpoint.rs`), computed when the slot is made (bulk loads) or by
/// the first walk that wants it (small pushes), so that a push never waits for one.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) node: u32,
    pub(crate) checkpoint: OnceLock<Checkpoint>,
}

impl Chain {
    /// The checkpoint slots, lowest first.
    pub(crate) fn slots(&self) -> &[Slot] {
        self.checkpoints.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// The size of an index at one moment, to roll back to ([`CommitIndex::rollback`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    pub(crate) len: usize,
    extras: usize,
    next_rank: u32,
}

/// A commit of a [`Plan`].
#[derive(Clone, Debug)]
pub(crate) struct PlannedNode {
    pub(crate) id: CommitId,
    pub(crate) parents: Vec<u32>,
    pub(crate) labels: Labels,
}

/// The new commits of a batch with their dense ids (from `first`) and labels, checked against
/// the index but not applied yet.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) first: u32,
    pub(crate) nodes: Vec<PlannedNode>,
    /// How many commits of the batch were already known with the same parents.
    pub(crate) known: usize,
}

/// How many commits an append added and how many it found already present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendSummary {
    /// Commits added.
    pub added: usize,
    /// Commits of the batch that were already known with the same parents (skipped).
    pub known: usize,
}

/// Sizes of an index, as reported by [`CommitIndex::stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitIndexStats {
    /// Commits held.
    pub commits: usize,
    /// First-parent chains.
    pub chains: usize,
    /// Commits with two or more parents.
    pub merges: usize,
    /// The length of the longest first-parent chain.
    pub longest_chain: usize,
    /// Checkpoints computed so far (reach vectors kept along long chains).
    pub checkpoints: usize,
    /// Heap bytes held by the index, ids and id map included (from capacities, an estimate of
    /// the allocator's view): `memory.total()`.
    pub bytes: usize,
    /// The same bytes per part.
    pub memory: IndexMemory,
}

/// The heap bytes of a [`CommitIndex`] per part, counted from the capacities of its arrays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexMemory {
    /// The commit ids.
    pub ids: usize,
    /// The table from commit id to dense id.
    pub id_map: usize,
    /// Generation, chain, position and rank.
    pub labels: usize,
    /// The parents beyond the first (first parents are implied by the chains): merge
    /// positions and the extra parents.
    pub parents: usize,
    /// The chains: their commits by position.
    pub chains: usize,
    /// The checkpoints' reach vectors.
    pub checkpoints: usize,
}

impl IndexMemory {
    /// All parts.
    pub fn total(&self) -> usize {
        self.ids + self.id_map + self.labels + self.parents + self.chains + self.checkpoints
    }
}

/// The reachability index of one repository's commit graph, in memory. [`super::CommitGraphs`]
/// keeps one per loaded repository and persists what it appends; it is public for tools and
/// benchmarks that want the index without storage.
#[derive(Debug)]
pub struct CommitIndex {
    repo: RepoId,
    /// The ids in dense-id order and the table from id to dense id.
    ids: IdTable,
    pub(crate) labels: Vec<Labels>,
    /// Each commit's first parent ([`NONE`] for a root).
    first_parent: Vec<u32>,
    /// The parents of merge commits after the first, each merge's run led by its count (see
    /// [`Merge`]).
    extras: Vec<u32>,
    pub(crate) chains: Vec<Chain>,
    next_rank: u32,
    pub(crate) checkpoint_every: usize,
}

#[derive(Debug, Default)]
struct Scratch {
    reach: Vec<u32>,
    touched: Vec<u32>,
    stack: Vec<(u32, u32)>,
    /// Checkpoints (chain, index) known not to reach the target.
    covers: Vec<(u32, u32)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl CommitIndex {
    /// An empty index with checkpoints every [`CHECKPOINT_EVERY`] positions; `repo` only names
    /// the repository in errors.
    pub fn new(repo: RepoId) -> Self {
        Self::with_checkpoint_interval(repo, CHECKPOINT_EVERY)
    }

    /// An empty index with checkpoints every `every` positions of a chain (at least 2):
    /// smaller means faster walks and more memory (one `u32` per chain per checkpoint).
    pub fn with_checkpoint_interval(repo: RepoId, every: usize) -> Self {
        CommitIndex {
            checkpoint_every: every.max(2),
            repo,
            ids: IdTable::default(),
            labels: Vec::new(),
            first_parent: Vec::new(),
            extras: Vec::new(),
            chains: Vec::new(),
            next_rank: 0,
        }
    }

    /// The number of commits.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no commit.
    pub fn is_empty(&self) -> bool {
        self.ids.len() == 0
    }

    /// Whether the index holds `id`.
    pub fn contains(&self, id: &CommitId) -> bool {
        self.ids.find(id).is_some()
    }

    /// The dense id of a commit.
    pub(crate) fn node(&self, id: &CommitId) -> Option<u32> {
        self.ids.find(id)
    }

    /// The commit id of a dense id.
    pub(crate) fn commit_id(&self, node: u32) -> CommitId {
        self.ids.get(node)
    }

    /// The raw bytes of a dense id's commit id.
    pub(crate) fn raw_id(&self, node: u32) -> &[u8] {
        self.ids.raw(node)
    }

    /// The rank label of a dense id.
    pub(crate) fn rank_of(&self, node: u32) -> u32 {
        self.labels[node as usize].rank
    }

    /// The parents of a commit in order, or `None` when unknown.
    pub fn parents(&self, id: &CommitId) -> Option<Vec<CommitId>> {
        let node = self.node(id)?;
        Some(self.parent_nodes(node).map(|p| self.ids.get(p)).collect())
    }

    /// The generation number of a commit (1 for a root), or `None` when unknown.
    pub fn generation(&self, id: &CommitId) -> Option<u32> {
        self.node(id).map(|n| self.labels[n as usize].generation)
    }

    /// The parents after the first of a merge commit.
    #[inline]
    pub(crate) fn merge_parents(&self, merge: &Merge) -> &[u32] {
        let at = merge.extras as usize;
        &self.extras[at + 1..at + 1 + self.extras[at] as usize]
    }

    /// The parents of a stored commit in order.
    pub(crate) fn parent_nodes(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let l = self.labels[node as usize];
        let chain = &self.chains[l.chain as usize];
        let first = self.first_parent[node as usize];
        let extras = match chain
            .merges
            .binary_search_by_key(&l.position, |m| m.position)
        {
            Ok(i) => self.merge_parents(&chain.merges[i]),
            Err(_) => &[],
        };
        (first != NONE)
            .then_some(first)
            .into_iter()
            .chain(extras.iter().copied())
    }

    /// The heap bytes the index holds, per part (from capacities: what is allocated, not
    /// only what is used).
    pub fn memory(&self) -> IndexMemory {
        use std::mem::size_of;
        let (ids, id_map) = self.ids.memory();
        let mut memory = IndexMemory {
            ids,
            id_map,
            labels: self.labels.capacity() * size_of::<Labels>(),
            parents: (self.first_parent.capacity() + self.extras.capacity()) * 4,
            chains: self.chains.capacity() * size_of::<Chain>(),
            ..IndexMemory::default()
        };
        for c in &self.chains {
            memory.parents += c.merges.capacity() * size_of::<Merge>();
            if let Some(slots) = &c.checkpoints {
                memory.checkpoints += size_of::<Vec<Slot>>()
                    + slots.capacity() * size_of::<Slot>()
                    + slots
                        .iter()
                        .filter_map(|s| s.checkpoint.get())
                        .map(Checkpoint::heap_bytes)
                        .sum::<usize>();
            }
        }
        memory
    }

    /// Sizes of the index.
    pub fn stats(&self) -> CommitIndexStats {
        let memory = self.memory();
        CommitIndexStats {
            commits: self.len(),
            chains: self.chains.len(),
            merges: self.chains.iter().map(|c| c.merges.len()).sum(),
            longest_chain: self
                .chains
                .iter()
                .map(|c| c.len as usize)
                .max()
                .unwrap_or(0),
            checkpoints: self
                .chains
                .iter()
                .map(|c| {
                    c.slots()
                        .iter()
                        .filter(|s| s.checkpoint.get().is_some())
                        .count()
                })
                .sum(),
            bytes: memory.total(),
            memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> CommitId {
        let mut bytes = [0u8; 20];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        bytes[19] = 1;
        CommitId::from_bytes(&bytes).unwrap()
    }

    fn commit(n: u32, parents: &[u32]) -> NewCommit {
        NewCommit {
            id: id(n),
            parents: parents.iter().map(|&p| id(p)).collect(),
        }
    }

    #[test]
    fn chains_generations_and_queries() {
        let mut index = CommitIndex::new(RepoId(1));
        //   0 - 1 - 2 - 5 (merge of 2 and 4)
        //        \- 3 - 4
        let summary = index
            .append(&[
                commit(0, &[]),
                commit(1, &[0]),
                commit(2, &[1]),
                commit(3, &[1]),
                commit(4, &[3]),
                commit(5, &[2, 4]),
            ])
            .unwrap();
        assert_eq!(summary, AppendSummary { added: 6, known: 0 });
        assert_eq!(index.generation(&id(5)), Some(5));
        assert_eq!(index.stats().chains, 2);
        assert_eq!(index.stats().merges, 1);
        assert_eq!(index.is_ancestor(&id(3), &id(5)), Some(true));
        assert_eq!(index.is_ancestor(&id(3), &id(2)), Some(false));
        assert_eq!(index.is_ancestor(&id(0), &id(4)), Some(true));
        assert_eq!(index.is_ancestor(&id(5), &id(5)), Some(true));
        assert_eq!(index.is_ancestor(&id(9), &id(5)), None);
        let reach = index.reach(5, None);
        assert!((0..6).all(|n| index.reached(&reach, n)));
        let reach2 = index.reach(2, None);
        assert!(!index.reached(&reach2, 3));
        let extended = index.reach(5, Some(&reach2));
        assert_eq!(extended, reach);
    }

    #[test]
    fn rejected_batches_change_nothing() {
        let mut index = CommitIndex::new(RepoId(1));
        index.append(&[commit(0, &[])]).unwrap();
        let err = index
            .append(&[commit(1, &[0]), commit(2, &[7])])
            .unwrap_err();
        assert!(matches!(
            err,
            CommitError::UnknownParent { index: 1, parent, .. } if parent == id(7)
        ));
        assert_eq!(index.len(), 1);
        let again = index.append(&[commit(0, &[]), commit(1, &[0])]).unwrap();
        assert_eq!(again, AppendSummary { added: 1, known: 1 });
        let err = index.append(&[commit(1, &[])]).unwrap_err();
        assert!(matches!(
            err,
            CommitError::ConflictingParents { index: 0, .. }
        ));
        // A commit naming itself as parent is unknown (or conflicting), never a cycle.
        assert!(index.append(&[commit(8, &[8])]).is_err());
        assert_eq!(index.len(), 2);
    }

    /// Many chains and a long main line merging them, with checkpoints every 4 positions: most
    /// checkpoints are deltas, and every answer still agrees with a plain closure.
    #[test]
    fn delta_checkpoints_agree_with_closure() {
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        let n = 3_000u32;
        let mut parents: Vec<Vec<u32>> = vec![vec![]];
        let mut tips = vec![0u32; 300]; // tips[0] is main
        for v in 1..n {
            let branch = if next(3) == 0 { 0 } else { next(tips.len()) };
            let mut ps = vec![tips[branch]];
            if branch == 0 && next(2) == 0 {
                let other = tips[next(tips.len())];
                if other != ps[0] {
                    ps.push(other);
                }
            }
            tips[branch] = v;
            parents.push(ps);
        }
        let commits: Vec<NewCommit> = (0..n).map(|v| commit(v, &parents[v as usize])).collect();
        let mut index = CommitIndex::with_checkpoint_interval(RepoId(1), 4);
        for batch in commits.chunks(97) {
            index.append(batch).unwrap();
        }
        // The closure, as bit sets.
        let words = (n as usize).div_ceil(64);
        let mut anc = vec![0u64; words * n as usize];
        for v in 0..n as usize {
            anc[v * words + v / 64] |= 1 << (v % 64);
            for &p in &parents[v] {
                for w in 0..words {
                    let bits = anc[p as usize * words + w];
                    anc[v * words + w] |= bits;
                }
            }
        }
        let is_anc = |a: usize, b: usize| anc[b * words + a / 64] & (1 << (a % 64)) != 0;
        for _ in 0..30_000 {
            let (a, b) = (next(n as usize), next(n as usize));
            assert_eq!(
                index.is_ancestor(&id(a as u32), &id(b as u32)),
                Some(is_anc(a, b)),
                "{a} -> {b}"
            );
        }
        let main = index.labels[tips[0] as usize].chain;
        let mut compacted = 0;
        for tip in (0..n).step_by(97) {
            let reach = index.reach(tip, None);
            assert!((0..n).all(|v| index.reached(&reach, v) == is_anc(v as usize, tip as usize)));
            // Cached as differences from a whole checkpoint of main, the same answers.
            let cached = index.compact(reach.clone(), Some(main), false);
            if let crate::reach::Reach::OverCheckpoint { delta, .. } = &cached {
                compacted += 1;
                assert!(delta.len() * 4 < reach.len());
            }
            assert!(
                (0..n).all(|v| index.reached_by(&cached, v) == is_anc(v as usize, tip as usize))
            );
            let mut expanded = index.expand(&cached);
            expanded.resize(reach.len(), 0);
            assert_eq!(expanded, reach);
            // Cached whole, in byte entries: the same answers.
            let narrow = index.compact(reach.clone(), Some(main), true);
            assert!(!matches!(
                narrow,
                crate::reach::Reach::OverCheckpoint { .. }
            ));
            assert!(
                (0..n).all(|v| index.reached_by(&narrow, v) == is_anc(v as usize, tip as usize))
            );
            assert_eq!(index.expand(&narrow), reach);
        }
        assert!(compacted > 5, "{compacted} vectors kept as differences");
        let (mut deltas, mut all) = (0, 0);
        for chain in &index.chains {
            for cp in chain.slots().iter().filter_map(|s| s.checkpoint.get()) {
                all += 1;
                deltas += usize::from(cp.is_delta());
            }
        }
        assert!(
            all > 100 && deltas * 2 > all,
            "{deltas} deltas of {all} checkpoints"
        );
    }
}
