//! Commit graphs: per repository, commits with their parents and branches as named pointers to
//! tips, with exact and fast answers to "is commit A an ancestor of commit B", "is branch X
//! merged into branch Y", "which branches are merged into Y" and "which branches changed
//! merged-status when a branch moved".
//!
//! [`CommitGraphs`] stores every repository's graph in the engine keyspaces [`KEYSPACES`] and
//! keeps, per repository touched since open, a [`CommitIndex`] in memory. Commits arrive in
//! batches ([`CommitGraphs::push`]), parents before children; every batch is checked first and
//! then written as one atomic engine batch, the commits 256 to a record with what their labels
//! need (about 25 bytes per SHA-1 commit), so opening a repository derives the labels in one
//! pass. How the index works (generation numbers, first-parent
//! chains, a second topological rank, reach vectors and checkpoints, a walk over chain segments
//! as the exact fallback) is described in `commitgraph/DESIGN.md`.
//!
//! Every write also appends its events to a change feed ([`engine::ChangeLog`]) in the same
//! engine batch: `commits.pushed`, `branch.set`, `branch.deleted` and `import.repo`, JSON
//! payloads described in [`RepoEvent`], recorded as made by the [`Writer`] the caller names.
//! [`CommitGraphs::branch_history`], [`CommitGraphs::repo_history`] and
//! [`CommitGraphs::actor_history`] page through a branch's, a repository's or a person's
//! events; [`CommitGraphs::replay`] applies an event as its write.
//!
//! ```
//! use std::sync::Arc;
//! use commitgraph::{BranchUpdate, CommitGraphs, CommitId, NewCommit, RepoId, Writer, KEYSPACES};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keyspaces = [KEYSPACES, &["changes"]].concat();
//! let engine = engine::EngineConfig::memory().open(&keyspaces)?;
//! let committer = Arc::new(engine::GroupCommit::new(engine.clone()));
//! let log = engine::ChangeLog::open(committer, engine.keyspace("changes")?)?;
//! let graphs = CommitGraphs::open(engine, log)?;
//! let repo = RepoId(1);
//! let by = Writer::new("alice", "hello");
//! let id = |n: u8| CommitId::from_bytes(&[n; 20]).unwrap();
//! let commit = |n: u8, parents: &[u8]| NewCommit {
//!     id: id(n),
//!     parents: parents.iter().map(|&p| id(p)).collect(),
//! };
//! graphs.push(
//!     repo,
//!     &[commit(1, &[]), commit(2, &[1]), commit(3, &[1])],
//!     &[BranchUpdate::set("main", id(2)), BranchUpdate::set("topic", id(3))],
//!     by,
//! )?;
//! assert!(!graphs.is_merged(repo, "topic", "main")?);
//!
//! // Merging topic into main reports the change, and records it in the feed.
//! let outcome = graphs.push(repo, &[commit(4, &[2, 3])], &[BranchUpdate::set("main", id(4))], by)?;
//! assert_eq!(outcome.changes.len(), 1);
//! assert!(outcome.changes[0].merged);
//! assert_eq!(outcome.revision, 5); // pushed, set, set; pushed, set
//! assert_eq!(graphs.merged_into(repo, "main")?, vec!["topic".to_string()]);
//! assert!(graphs.is_ancestor(repo, &id(3), &id(4))?);
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod codec;
mod error;
mod event;
pub mod gen;
mod history;
mod id;
mod idtable;
pub mod import;
mod index;
mod load;
mod reach;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use engine::{ChangeLog, Direction, Engine, Keyspace, LogEntry, ScanRange, WriteBatch};
use reach::{Reach, ReachCache};

pub use error::{CommitError, ImportInput, LineError};
pub use event::{RepoChange, RepoEvent, Writer, EVENT_KINDS, PUSHED_V1};
pub use id::{CommitId, ParseIdError, RepoId};
pub use index::{
    AppendSummary, CommitIndex, CommitIndexStats, IndexMemory, NewCommit, ReachVector,
    CHECKPOINT_EVERY,
};

/// The engine keyspaces of commit graphs; open the engine with them (and any others, such as
/// the change log's): the commits, the branches, and the history indexes into the change log.
pub const KEYSPACES: &[&str] = &["commits.nodes", "commits.branches", "commits.history"];

/// The keyspace of the change log that [`CommitGraphs::open_standalone`] opens.
pub const STANDALONE_LOG: &str = "commits.changes";

/// [`KEYSPACES`] and [`STANDALONE_LOG`]: the keyspaces of commit graphs used alone.
pub const STANDALONE_KEYSPACES: &[&str] = &[
    "commits.nodes",
    "commits.branches",
    "commits.history",
    STANDALONE_LOG,
];

/// How many bytes of reach vectors (one per branch tip asked about as a target: whole while one
/// per branch fits, else as differences from a checkpoint of the default branch, see
/// `commitgraph/DESIGN.md`) a repository's cache may hold at least; a larger repository's may
/// hold [`REACH_CACHE_BYTES_PER_COMMIT`] per commit, about the index's own size.
pub const REACH_CACHE_BYTES: usize = 64 << 20;

/// The reach-vector cache's bytes per commit of the repository, when that is more than
/// [`REACH_CACHE_BYTES`].
pub const REACH_CACHE_BYTES_PER_COMMIT: usize = 48;

/// A branch to create, move or delete in a [`CommitGraphs::push`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchUpdate {
    /// The branch name, without `refs/heads/`.
    pub name: String,
    /// The new tip, or `None` to delete the branch.
    pub target: Option<CommitId>,
}

impl BranchUpdate {
    /// Creates or moves `name` to `target`.
    pub fn set(name: impl Into<String>, target: CommitId) -> Self {
        BranchUpdate {
            name: name.into(),
            target: Some(target),
        }
    }

    /// Deletes `name`.
    pub fn delete(name: impl Into<String>) -> Self {
        BranchUpdate {
            name: name.into(),
            target: None,
        }
    }
}

/// A change of merged-status caused by a push: `branch` became merged into `target`
/// (`merged == true`) or stopped being merged into it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct MergedChange {
    /// The branch whose tip is (or was) an ancestor of the target's tip.
    pub branch: String,
    /// The branch it is merged into.
    pub target: String,
    /// The status after the push.
    pub merged: bool,
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Commits added and commits already known.
    pub appended: AppendSummary,
    /// Every pair of branches, one of which the push created, moved or deleted, whose
    /// merged-status changed, sorted. A branch that does not exist counts as merged into
    /// nothing and as having nothing merged into it.
    pub changes: Vec<MergedChange>,
    /// The revision of the push's last event in the change feed (the feed's head when the
    /// push changed nothing and wrote no event).
    pub revision: u64,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Commits added and commits already known.
    pub appended: AppendSummary,
    /// Branches (`refs/heads/*`) set.
    pub branches: usize,
    /// Other refs (tags, remotes, ...), ignored.
    pub other_refs: usize,
    /// The revision of the import's event in the change feed.
    pub revision: u64,
}

/// A step of an import, reported to the callback of [`CommitGraphs::import_with_progress`]
/// (a binary may show it as a spinner's message: its `Display` is a short phrase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportProgress {
    /// Parsing the rev-list text.
    ParsingRevList,
    /// Parsing the refs text; the rev-list held `commits` lines.
    ParsingRefs {
        /// Commits parsed.
        commits: usize,
    },
    /// Ordering the commits parents first.
    Ordering {
        /// Commits parsed.
        commits: usize,
    },
    /// Writing the commits not stored yet.
    Writing {
        /// Commits to write.
        commits: usize,
    },
    /// The import is durable and applied.
    Done,
}

impl fmt::Display for ImportProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportProgress::ParsingRevList => f.write_str("parsing rev-list"),
            ImportProgress::ParsingRefs { commits } => {
                write!(f, "parsing refs ({commits} commits)")
            }
            ImportProgress::Ordering { commits } => write!(f, "ordering {commits} commits"),
            ImportProgress::Writing { commits } => write!(f, "writing {commits} commits"),
            ImportProgress::Done => f.write_str("imported"),
        }
    }
}

/// The commit graphs of every repository, over one engine. Cheap to share behind an `Arc`;
/// every method takes `&self`. Methods block on the engine: call them from a blocking thread,
/// not an async worker.
///
/// A repository is loaded on first use (a scan of its stored commits, about 1 s per
/// million commits from RocksDB) while the table of loaded repositories is locked, and stays
/// loaded until [`CommitGraphs::unload`]. Queries on one repository share a read lock; a push
/// holds its write lock from the checks to the reported changes.
#[derive(Debug)]
pub struct CommitGraphs {
    engine: Arc<dyn Engine>,
    /// The change feed every write appends its events to, in the write's own batch; its group
    /// commit lets pushes to different repositories (and the other writers of the log) share
    /// fsyncs.
    log: Arc<ChangeLog>,
    nodes: Keyspace,
    branches: Keyspace,
    history: Keyspace,
    repos: Mutex<HashMap<RepoId, Arc<Repo>>>,
    checkpoint_every: usize,
    /// `None`: the default budget ([`REACH_CACHE_BYTES`], or per commit).
    reach_cache_bytes: Option<usize>,
    /// Whether writes record their events ([`CommitGraphs::set_record_changes`]).
    record_changes: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Repo {
    id: RepoId,
    state: RwLock<RepoState>,
    /// Reach vectors by tip node; a commit's ancestors never change, so entries never go
    /// stale, they are only evicted.
    reach: Mutex<ReachCache>,
}

/// A reach vector as [`Repo::cached_or_computed`] found it.
enum Found {
    Cached(Arc<Reach>),
    /// One entry per chain, not cached yet.
    Computed(Vec<u32>),
}

/// Branch names to tips. foldhash rather than SipHash: two lookups are most of a cached
/// `is_merged`, and foldhash's seed, random per process, still keeps colliding names hard to
/// choose.
type Branches = HashMap<String, u32, foldhash::fast::RandomState>;

#[derive(Debug)]
struct RepoState {
    index: CommitIndex,
    branches: Branches,
}

impl CommitGraphs {
    /// Commit graphs over `engine`, which must have been opened with [`KEYSPACES`], writing
    /// their events into `log` (a change log over the same engine, usually shared with the
    /// other stores of the service). Repositories are loaded on first use.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use commitgraph::{CommitGraphs, KEYSPACES};
    /// use engine::{ChangeLog, GroupCommit};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut keyspaces = KEYSPACES.to_vec();
    /// keyspaces.push("changes");
    /// let engine = engine::EngineConfig::memory().open(&keyspaces)?;
    /// let log = ChangeLog::open(
    ///     Arc::new(GroupCommit::new(engine.clone())),
    ///     engine.keyspace("changes")?,
    /// )?;
    /// let graphs = CommitGraphs::open(engine, log)?;
    /// assert_eq!(graphs.change_log().head(), 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`CommitError::Engine`] when a keyspace is missing.
    pub fn open(engine: Arc<dyn Engine>, log: Arc<ChangeLog>) -> Result<Self, CommitError> {
        Self::with_checkpoint_interval(engine, log, CHECKPOINT_EVERY)
    }

    /// As [`CommitGraphs::open`], with in-memory checkpoints every `every` positions of a chain
    /// (see [`CommitIndex::with_checkpoint_interval`]; checkpoints are not stored, so this may
    /// change from one open to the next).
    ///
    /// # Errors
    /// As for [`CommitGraphs::open`].
    pub fn with_checkpoint_interval(
        engine: Arc<dyn Engine>,
        log: Arc<ChangeLog>,
        every: usize,
    ) -> Result<Self, CommitError> {
        Ok(CommitGraphs {
            checkpoint_every: every,
            reach_cache_bytes: None,
            nodes: engine.keyspace(KEYSPACES[0])?,
            branches: engine.keyspace(KEYSPACES[1])?,
            history: engine.keyspace(KEYSPACES[2])?,
            log,
            engine,
            repos: Mutex::new(HashMap::new()),
            record_changes: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Commit graphs used alone (tools, benchmarks, tests), with a change log of their own in
    /// [`STANDALONE_LOG`]; `engine` must have been opened with [`STANDALONE_KEYSPACES`]. A
    /// service whose stores share one change log uses [`CommitGraphs::open`].
    ///
    /// # Errors
    /// [`CommitError::Engine`] when a keyspace is missing or the log's opening flush fails.
    pub fn open_standalone(engine: Arc<dyn Engine>) -> Result<Self, CommitError> {
        let log = ChangeLog::open(
            Arc::new(engine::GroupCommit::new(Arc::clone(&engine))),
            engine.keyspace(STANDALONE_LOG)?,
        )?;
        Self::open(engine, log)
    }

    /// Bounds each repository's cache of reach vectors to `bytes` (default: the larger of
    /// [`REACH_CACHE_BYTES`] and [`REACH_CACHE_BYTES_PER_COMMIT`] per commit), for the
    /// repositories loaded afterwards. Below what whole vectors for every branch need, vectors
    /// are cached as differences from a checkpoint of the default branch (see
    /// `commitgraph/DESIGN.md`).
    pub fn with_reach_cache_bytes(mut self, bytes: usize) -> Self {
        self.reach_cache_bytes = Some(bytes);
        self
    }

    /// Whether the following writes record their events in the change log (default `true`).
    /// Off, a write takes no revision and answers the head; it exists only so that the
    /// `commits` bench can measure the feed's cost to pushes, alternating on and off in one
    /// run. Graphs that wrote without their feed cannot be followed or replayed.
    pub fn set_record_changes(&self, record: bool) {
        self.record_changes
            .store(record, std::sync::atomic::Ordering::Relaxed);
    }

    /// The change log the graphs write their events into.
    pub fn change_log(&self) -> &Arc<ChangeLog> {
        &self.log
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    fn repo(&self, id: RepoId) -> Result<Arc<Repo>, CommitError> {
        let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(repo) = repos.get(&id) {
            return Ok(repo.clone());
        }
        let repo = Arc::new(self.load(id)?);
        repos.insert(id, repo.clone());
        Ok(repo)
    }

    /// Forgets every repository's in-memory index (each is loaded again on next use): for a
    /// follower that missed events of the change log.
    pub fn unload_all(&self) {
        self.repos.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Drops repository `repo` from memory; it is loaded again on next use.
    pub fn unload(&self, repo: RepoId) {
        self.repos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&repo);
    }

    /// Whether commit `a` is an ancestor of commit `b` (`a == b` counts).
    ///
    /// # Errors
    /// [`CommitError::UnknownCommit`]; [`CommitError::Engine`] when loading the repository
    /// fails.
    pub fn is_ancestor(
        &self,
        repo: RepoId,
        a: &CommitId,
        b: &CommitId,
    ) -> Result<bool, CommitError> {
        let handle = self.repo(repo)?;
        let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
        let node = |id: &CommitId| {
            state
                .index
                .node(id)
                .ok_or(CommitError::UnknownCommit { repo, commit: *id })
        };
        Ok(state.index.is_ancestor_node(node(a)?, node(b)?))
    }

    /// Whether branch `branch` is merged into branch `target`: its tip is an ancestor of (or
    /// equal to) the target's tip. A target tip asked about for the first times is answered by
    /// the pruned walk; once those walks would have paid for its reach vector (after at least
    /// two, more in repositories of many chains: see `commitgraph/DESIGN.md`), the vector is
    /// computed and cached, so later questions against the same target tip are one lookup.
    ///
    /// # Errors
    /// [`CommitError::UnknownBranch`]; [`CommitError::Engine`] when loading the repository
    /// fails.
    pub fn is_merged(&self, repo: RepoId, branch: &str, target: &str) -> Result<bool, CommitError> {
        let handle = self.repo(repo)?;
        let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
        let source = handle.tip(&state, branch)?;
        let target = handle.tip(&state, target)?;
        {
            // Warm path: compare under the cache lock, without touching the vector's count.
            let mut cache = handle.reach.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reach) = cache.get(target) {
                return Ok(state.index.reached_by(reach, source));
            }
            if !cache.admit(target, reach::admit_after(state.index.chains.len())) {
                drop(cache);
                return Ok(state.index.is_ancestor_node(source, target));
            }
        }
        let reach = handle.reach(&state, target, None);
        Ok(state.index.reached_by(&reach, source))
    }

    /// [`CommitGraphs::is_merged`] when it is one lookup: the repository is loaded, its state
    /// free, and the target tip's reach vector cached. `None` otherwise (nothing is loaded or
    /// walked): for a server answering on an async thread what needs no blocking work.
    pub fn try_is_merged(
        &self,
        repo: RepoId,
        branch: &str,
        target: &str,
    ) -> Option<Result<bool, CommitError>> {
        let handle = self
            .repos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&repo)?
            .clone();
        let state = handle.state.try_read().ok()?;
        let (source, target) = match (handle.tip(&state, branch), handle.tip(&state, target)) {
            (Ok(source), Ok(target)) => (source, target),
            (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
        };
        let cache = handle.reach.lock().unwrap_or_else(|e| e.into_inner());
        let reach = cache.get(target)?;
        Some(Ok(state.index.reached_by(reach, source)))
    }

    /// Every branch other than `target` that is merged into `target`, sorted by name.
    ///
    /// # Errors
    /// As for [`CommitGraphs::is_merged`].
    pub fn merged_into(&self, repo: RepoId, target: &str) -> Result<Vec<String>, CommitError> {
        let handle = self.repo(repo)?;
        let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
        let tip = handle.tip(&state, target)?;
        // One lookup per branch: the vector spread out once (O(chains)) rather than a binary
        // search in its differences per branch.
        let reach = handle.reach_spread(&state, tip, None);
        let mut merged: Vec<String> = state
            .branches
            .iter()
            .filter(|(name, &node)| name.as_str() != target && state.index.reached(&reach, node))
            .map(|(name, _)| name.clone())
            .collect();
        merged.sort_unstable();
        Ok(merged)
    }

    /// The branches and their tips, sorted by name.
    ///
    /// # Errors
    /// [`CommitError::Engine`] when loading the repository fails.
    pub fn branches(&self, repo: RepoId) -> Result<Vec<(String, CommitId)>, CommitError> {
        let handle = self.repo(repo)?;
        let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
        let mut branches: Vec<(String, CommitId)> = state
            .branches
            .iter()
            .map(|(name, &node)| (name.clone(), state.index.commit_id(node)))
            .collect();
        branches.sort_unstable();
        Ok(branches)
    }

    /// The tip of a branch, or `None` when there is no such branch.
    ///
    /// # Errors
    /// [`CommitError::Engine`] when loading the repository fails.
    pub fn branch(&self, repo: RepoId, name: &str) -> Result<Option<CommitId>, CommitError> {
        let handle = self.repo(repo)?;
        let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(state.branches.get(name).map(|&n| state.index.commit_id(n)))
    }

    /// Whether the repository holds `commit`.
    ///
    /// # Errors
    /// [`CommitError::Engine`] when loading the repository fails.
    pub fn contains(&self, repo: RepoId, commit: &CommitId) -> Result<bool, CommitError> {
        let handle = self.repo(repo)?;
        let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(state.index.contains(commit))
    }

    /// The parents of a commit, first parent first, or `None` when unknown.
    ///
    /// # Errors
    /// [`CommitError::Engine`] when loading the repository fails.
    pub fn parents(
        &self,
        repo: RepoId,
        commit: &CommitId,
    ) -> Result<Option<Vec<CommitId>>, CommitError> {
        let handle = self.repo(repo)?;
        let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(state.index.parents(commit))
    }

    /// Sizes of the repository's in-memory index.
    ///
    /// # Errors
    /// [`CommitError::Engine`] when loading the repository fails.
    pub fn stats(&self, repo: RepoId) -> Result<CommitIndexStats, CommitError> {
        let handle = self.repo(repo)?;
        let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
        let mut stats = state.index.stats();
        stats.bytes += handle
            .reach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes();
        Ok(stats)
    }
}

impl Repo {
    fn tip(&self, state: &RepoState, name: &str) -> Result<u32, CommitError> {
        state
            .branches
            .get(name)
            .copied()
            .ok_or_else(|| CommitError::UnknownBranch {
                repo: self.id,
                branch: name.to_string(),
            })
    }

    /// The reach vector of `tip`, from the cache or computed (extending the cached vector of
    /// `hint` when `hint` is an ancestor of `tip`) and cached.
    fn reach(&self, state: &RepoState, tip: u32, hint: Option<u32>) -> Arc<Reach> {
        match self.cached_or_computed(state, tip, hint) {
            Found::Cached(cached) => cached,
            Found::Computed(vector) => self.cache_reach(state, tip, vector),
        }
    }

    /// The reach vector of `tip` with one entry per chain (for comparing every branch with
    /// it): spread out from the cache, or computed and cached as [`Repo::reach`] does, then
    /// given as computed rather than spread out from its cached form again.
    fn reach_spread(&self, state: &RepoState, tip: u32, hint: Option<u32>) -> Vec<u32> {
        match self.cached_or_computed(state, tip, hint) {
            Found::Cached(cached) => state.index.expand(&cached),
            Found::Computed(vector) => {
                self.cache_reach(state, tip, vector.clone());
                vector
            }
        }
    }

    /// `tip`'s cached vector, or else its vector computed (not cached yet).
    fn cached_or_computed(&self, state: &RepoState, tip: u32, hint: Option<u32>) -> Found {
        let base = {
            let cache = self.reach.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reach) = cache.get(tip) {
                return Found::Cached(reach.clone());
            }
            hint.and_then(|h| cache.get(h).cloned())
        };
        let base = base
            .filter(|_| hint.is_some_and(|h| state.index.is_ancestor_node(h, tip)))
            .map(|base| state.index.expand(&base));
        Found::Computed(state.index.reach(tip, base.as_deref()))
    }

    /// Caches `vector`, the reach vector of `tip`, in its compact form, which it returns.
    fn cache_reach(&self, state: &RepoState, tip: u32, vector: Vec<u32>) -> Arc<Reach> {
        let cache_budget = self
            .reach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .budget(state.index.len());
        // The default branch's chain: its checkpoints are the bases of the cached differences.
        let default = ["main", "master"]
            .iter()
            .find_map(|name| state.branches.get(*name))
            .map(|&node| state.index.labels[node as usize].chain);
        // Whole vectors when one per branch fits the cache (one read per lookup), else
        // differences from a checkpoint of the default branch. A whole vector is cached in
        // byte entries (`reach::whole_bytes`).
        let whole_fits =
            reach::whole_bytes(vector.len()).saturating_mul(state.branches.len()) <= cache_budget;
        let reach = Arc::new(state.index.compact(vector, default, whole_fits));
        let mut cache = self.reach.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(tip, reach.clone(), cache_budget);
        reach
    }

    /// The merged-status changes between the branches `before` and the current ones, for the
    /// pairs that involve a branch whose tip changed.
    fn changes(&self, state: &RepoState, before: &Branches) -> Vec<MergedChange> {
        let after = &state.branches;
        let moved: BTreeSet<&String> = before
            .keys()
            .chain(after.keys())
            .filter(|name| before.get(*name) != after.get(*name))
            .collect();
        if moved.is_empty() {
            return Vec::new();
        }
        let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        let mut changes = BTreeSet::new();
        for &moved_name in &moved {
            // Branches merged into the moved one: one reach vector before, one after.
            let old = before.get(moved_name).copied();
            let new = after.get(moved_name).copied();
            // Spread out once: each is compared with every branch.
            let old_reach = old.map(|t| self.reach_spread(state, t, None));
            let new_reach = new.map(|t| self.reach_spread(state, t, old));
            for &other in &names {
                if other == moved_name {
                    continue;
                }
                let was = match (&old_reach, before.get(other)) {
                    (Some(r), Some(&n)) => state.index.reached(r, n),
                    _ => false,
                };
                let is = match (&new_reach, after.get(other)) {
                    (Some(r), Some(&n)) => state.index.reached(r, n),
                    _ => false,
                };
                if was != is {
                    changes.insert(MergedChange {
                        branch: other.clone(),
                        target: moved_name.clone(),
                        merged: is,
                    });
                }
                // The moved branch merged into the other one.
                if moved.contains(other) && other < moved_name {
                    continue; // That pair was handled from the other side.
                }
                let was = match (old, before.get(other)) {
                    (Some(o), Some(&t)) => self.ancestor(state, o, t),
                    _ => false,
                };
                let is = match (new, after.get(other)) {
                    (Some(o), Some(&t)) => self.ancestor(state, o, t),
                    _ => false,
                };
                if was != is {
                    changes.insert(MergedChange {
                        branch: moved_name.clone(),
                        target: other.clone(),
                        merged: is,
                    });
                }
            }
        }
        changes.into_iter().collect()
    }

    /// Whether `a` is an ancestor of `b`, through `b`'s cached reach vector when there is one.
    fn ancestor(&self, state: &RepoState, a: u32, b: u32) -> bool {
        let cached = self
            .reach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(b)
            .cloned();
        match cached {
            Some(reach) => state.index.reached_by(&reach, a),
            None => state.index.is_ancestor_node(a, b),
        }
    }
}
