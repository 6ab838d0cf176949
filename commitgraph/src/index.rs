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

    /// Adds a batch of commits, parents before children, all or nothing: see
    /// [`super::CommitGraphs::append`] for the rules.
    ///
    /// # Errors
    /// [`CommitError::UnknownParent`], [`CommitError::ConflictingParents`],
    /// [`CommitError::TooManyCommits`]; the index is unchanged then.
    pub fn append(&mut self, commits: &[NewCommit]) -> Result<AppendSummary, CommitError> {
        let plan = self.plan(commits, &HashSet::new())?;
        let summary = AppendSummary {
            added: plan.nodes.len(),
            known: plan.known,
        };
        self.apply(plan);
        Ok(summary)
    }

    fn labels_of(&self, plan: &[PlannedNode], first: u32, node: u32) -> Labels {
        if node < first {
            self.labels[node as usize]
        } else {
            plan[(node - first) as usize].labels
        }
    }

    /// Checks a batch and computes the labels of its new commits without changing the index.
    /// A new commit whose first parent is in `protected` (tips of branches that the push does
    /// not move) starts a new chain rather than taking that branch's chain.
    pub(crate) fn plan(
        &self,
        commits: &[NewCommit],
        protected: &HashSet<u32>,
    ) -> Result<Plan, CommitError> {
        let first = self.ids.len() as u32;
        let id_len = self
            .ids
            .id_len()
            .or_else(|| commits.first().map(|c| c.id.as_bytes().len()));
        let mut nodes: Vec<PlannedNode> = Vec::with_capacity(commits.len());
        let mut batch_ids: IdMap<u32> =
            IdMap::with_capacity_and_hasher(commits.len(), Default::default());
        // Lengths of the chains that this batch extends or creates.
        let mut chain_len: HashMap<u32, u32> = HashMap::new();
        let mut next_chain = self.chains.len() as u32;
        let mut known = 0;
        for (index, commit) in commits.iter().enumerate() {
            if Some(commit.id.as_bytes().len()) != id_len {
                return Err(CommitError::IdLength {
                    repo: self.repo,
                    index,
                    commit: commit.id,
                    expected: id_len.unwrap_or_default(),
                });
            }
            let mut parents = Vec::with_capacity(commit.parents.len());
            for parent in &commit.parents {
                let node = self
                    .ids
                    .find(parent)
                    .or_else(|| batch_ids.get(parent).copied())
                    .ok_or(CommitError::UnknownParent {
                        repo: self.repo,
                        index,
                        commit: commit.id,
                        parent: *parent,
                    })?;
                parents.push(node);
            }
            let existing = self
                .ids
                .find(&commit.id)
                .map(|n| self.parent_nodes(n).eq(parents.iter().copied()));
            let existing = existing.or_else(|| {
                batch_ids
                    .get(&commit.id)
                    .map(|&n| nodes[(n - first) as usize].parents == parents)
            });
            match existing {
                Some(true) => {
                    known += 1;
                    continue;
                }
                Some(false) => {
                    return Err(CommitError::ConflictingParents {
                        repo: self.repo,
                        index,
                        commit: commit.id,
                    })
                }
                None => {}
            }
            let node = first as usize + nodes.len();
            if node >= NONE as usize - 1 {
                return Err(CommitError::TooManyCommits { repo: self.repo });
            }
            let node = node as u32;
            let mut generation = 1;
            for &p in &parents {
                generation = generation.max(self.labels_of(&nodes, first, p).generation + 1);
            }
            let extended = parents
                .first()
                .filter(|fp| !protected.contains(fp))
                .and_then(|&fp| {
                    let l = self.labels_of(&nodes, first, fp);
                    let len = chain_len
                        .get(&l.chain)
                        .copied()
                        .unwrap_or_else(|| self.chains.get(l.chain as usize).map_or(0, |c| c.len));
                    (l.position + 1 == len).then_some((l.chain, len))
                });
            let (chain, position) = extended.unwrap_or_else(|| {
                next_chain += 1;
                (next_chain - 1, 0)
            });
            chain_len.insert(chain, position + 1);
            batch_ids.insert(commit.id, node);
            nodes.push(PlannedNode {
                id: commit.id,
                parents,
                labels: Labels {
                    generation,
                    chain,
                    position,
                    rank: 0,
                },
            });
        }
        self.rank(first, &mut nodes);
        Ok(Plan {
            first,
            nodes,
            known,
        })
    }

    /// Gives the new commits ranks after every stored rank, in a topological order that takes
    /// the largest ready id first.
    fn rank(&self, first: u32, nodes: &mut [PlannedNode]) {
        let n = nodes.len();
        let mut pending = vec![0u32; n];
        let mut child_start = vec![0u32; n + 1];
        for node in nodes.iter() {
            for &p in &node.parents {
                if p >= first {
                    child_start[(p - first) as usize + 1] += 1;
                }
            }
        }
        for i in 0..n {
            child_start[i + 1] += child_start[i];
        }
        let mut fill = child_start.clone();
        let mut children = vec![0u32; child_start[n] as usize];
        for (i, node) in nodes.iter().enumerate() {
            for &p in &node.parents {
                if p >= first {
                    let slot = &mut fill[(p - first) as usize];
                    children[*slot as usize] = i as u32;
                    *slot += 1;
                    pending[i] += 1;
                }
            }
        }
        let mut ready: BinaryHeap<u32> = (0..n as u32)
            .filter(|&i| pending[i as usize] == 0)
            .collect();
        let mut rank = self.next_rank;
        while let Some(i) = ready.pop() {
            nodes[i as usize].labels.rank = rank;
            rank += 1;
            let i = i as usize;
            for &child in &children[child_start[i] as usize..child_start[i + 1] as usize] {
                pending[child as usize] -= 1;
                if pending[child as usize] == 0 {
                    ready.push(child);
                }
            }
        }
    }

    /// Where the index stands now, for [`CommitIndex::rollback`].
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            len: self.ids.len(),
            extras: self.extras.len(),
            next_rank: self.next_rank,
        }
    }

    /// Removes every commit applied since `mark` (the index must only have grown since), as
    /// if they had never been applied: the rollback of a push whose write or sync failed.
    /// Checkpoints of the remaining commits stay (their ancestry did not change; entries for
    /// removed chains are 0, as for a chain made later).
    pub(crate) fn rollback(&mut self, mark: Mark) {
        let len = mark.len;
        if len >= self.ids.len() {
            return;
        }
        // Newest first, so each removed commit is the last of its chain.
        for node in (len..self.ids.len()).rev() {
            let labels = self.labels[node];
            let every = self.checkpoint_every;
            if let Some(chain) = self.chains.get_mut(labels.chain as usize) {
                chain.len -= 1;
                if chain.merges.last().map(|m| m.position) == Some(labels.position) {
                    chain.merges.pop();
                }
                if let Some(slots) = &mut chain.checkpoints {
                    slots.truncate(chain.len as usize / every);
                }
            }
        }
        while self.chains.last().is_some_and(|c| c.len == 0) {
            self.chains.pop();
        }
        self.ids.truncate(len);
        self.labels.truncate(len);
        self.first_parent.truncate(len);
        self.extras.truncate(mark.extras);
        self.next_rank = mark.next_rank;
    }

    /// Makes room for about `commits` commits in all (a load that knows how many are stored),
    /// at most a block of commits more than needed.
    pub(crate) fn reserve(&mut self, commits: usize, id_len: usize) {
        let more = commits.saturating_sub(self.len());
        self.ids.reserve(more, id_len);
        self.labels.reserve_exact(more);
        self.first_parent.reserve_exact(more);
    }

    /// Applies a plan made by [`CommitIndex::plan`] on this index, unchanged since.
    pub(crate) fn apply(&mut self, plan: Plan) {
        debug_assert_eq!(plan.first as usize, self.ids.len());
        let n = plan.nodes.len();
        if let Some(node) = plan.nodes.first() {
            self.ids.reserve(n, node.id.as_bytes().len());
        }
        reserve_gently(&mut self.labels, n);
        reserve_gently(&mut self.first_parent, n);
        // A bulk load computes its checkpoints now; a small push leaves them to the first walk.
        let eager = n >= 4 * self.checkpoint_every;
        for node in plan.nodes {
            self.push_node(node.id, &node.parents, node.labels, eager);
        }
    }

    fn push_node(&mut self, id: CommitId, parents: &[u32], labels: Labels, eager: bool) {
        let node = self.ids.push(&id);
        reserve_gently(&mut self.labels, 1);
        self.labels.push(labels);
        reserve_gently(&mut self.first_parent, 1);
        self.first_parent
            .push(parents.first().copied().unwrap_or(NONE));
        if labels.chain as usize == self.chains.len() {
            reserve_gently(&mut self.chains, 1);
            self.chains.push(Chain {
                first: node,
                len: 0,
                merges: Vec::new(),
                checkpoints: None,
            });
        }
        let extras_at = self.extras.len() as u32;
        if parents.len() > 1 {
            reserve_gently(&mut self.extras, parents.len());
            self.extras.push(parents.len() as u32 - 1);
            self.extras.extend(&parents[1..]);
        }
        let chain = &mut self.chains[labels.chain as usize];
        chain.len += 1;
        if parents.len() > 1 {
            reserve_gently(&mut chain.merges, 1);
            chain.merges.push(Merge {
                position: labels.position,
                node,
                extras: extras_at,
            });
        }
        self.next_rank = self.next_rank.max(labels.rank + 1);
        if chain.len as usize % self.checkpoint_every == 0 {
            let slots = chain.checkpoints.get_or_insert_with(Box::default);
            slots.push(Slot {
                node,
                checkpoint: OnceLock::new(),
            });
            let index = slots.len() - 1;
            if eager {
                self.checkpoint(labels.chain, index);
            }
        }
    }

    /// Adds a stored commit: its parents, whether it starts a first-parent chain and its rank
    /// (the generation, chain and position follow from those), checking them against the
    /// commits before it; `Err` names the first inconsistency.
    pub(crate) fn load_node(
        &mut self,
        id: CommitId,
        parents: &[u32],
        starts_chain: bool,
        rank: u32,
    ) -> Result<(), &'static str> {
        let node = self.ids.len() as u32;
        if node >= NONE - 1 {
            return Err("more commits than dense ids");
        }
        if self.ids.find(&id).is_some() {
            return Err("commit id stored twice");
        }
        if self
            .ids
            .id_len()
            .is_some_and(|len| len != id.as_bytes().len())
        {
            return Err("commit ids of two lengths");
        }
        let mut generation = 1;
        for &p in parents {
            let parent = self
                .labels
                .get(p as usize)
                .ok_or("parent id not below the commit's")?;
            generation = generation.max(parent.generation + 1);
            if parent.rank >= rank {
                return Err("rank not above a parent's rank");
            }
        }
        let (chain, position) = if starts_chain {
            (self.chains.len() as u32, 0)
        } else {
            let fp = *parents.first().ok_or("a root does not start a chain")?;
            let l = self.labels[fp as usize];
            if self.chains[l.chain as usize].len != l.position + 1 {
                return Err("commit extends a chain whose last commit is not its first parent");
            }
            (l.chain, l.position + 1)
        };
        let labels = Labels {
            generation,
            chain,
            position,
            rank,
        };
        self.push_node(id, parents, labels, true);
        Ok(())
    }

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

    /// The reach vector of `tip` (what [`super::CommitGraphs`] caches per target branch tip),
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
