//! The commit graph's error type.

use super::id::{CommitId, ParseIdError, RepoId};

/// Which import input a parse error is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportInput {
    /// The output of `git rev-list --all --parents`.
    RevList,
    /// The output of `git for-each-ref --format='%(refname) %(objectname)'`.
    Refs,
}

impl std::fmt::Display for ImportInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImportInput::RevList => "rev-list",
            ImportInput::Refs => "for-each-ref",
        })
    }
}

/// What is wrong with one line of an import input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// A token is not a commit id.
    #[error("token {token} is not a commit id: {source}")]
    BadId {
        /// The 1-based token number on the line.
        token: usize,
        /// Why.
        #[source]
        source: ParseIdError,
    },
    /// The line's ids are not all as long as the first id of the input.
    #[error("token {token} has {found} hex digits but the input started with {expected}")]
    MixedIdLength {
        /// The 1-based token number on the line.
        token: usize,
        /// The hex length of the first id of the input.
        expected: usize,
        /// The hex length found.
        found: usize,
    },
    /// A ref line does not have exactly two fields.
    #[error("expected `<refname> <objectname>`, found {fields} field(s)")]
    RefFields {
        /// The number of whitespace-separated fields found.
        fields: usize,
    },
    /// The same commit appears twice with different parents.
    #[error("commit {commit} was listed before (line {first_line}) with other parents")]
    ConflictingDuplicate {
        /// The commit.
        commit: CommitId,
        /// Where it was first listed.
        first_line: usize,
    },
    /// A parent is neither in the input nor stored.
    #[error("commit {commit} names parent {parent}, which is neither in the input nor stored")]
    UnknownParent {
        /// The commit of the line.
        commit: CommitId,
        /// The missing parent.
        parent: CommitId,
    },
    /// The commits of the input form a cycle.
    #[error("commit {commit} is its own ancestor: the input has a cycle")]
    Cycle {
        /// A commit on the cycle.
        commit: CommitId,
    },
    /// A branch points to a commit that is neither in the input nor stored.
    #[error("branch {branch:?} points to unknown commit {commit}")]
    UnknownTarget {
        /// The branch name.
        branch: String,
        /// The commit.
        commit: CommitId,
    },
    /// A branch name is not acceptable.
    #[error("invalid branch name {name:?}")]
    BadBranchName {
        /// The name.
        name: String,
    },
}

/// What went wrong in the commit graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The storage engine failed.
    #[error("commit graph storage failed: {0}")]
    Engine(#[from] engine::Error),
    /// A commit of a batch names a parent that is neither stored nor earlier in the batch. The
    /// batch changed nothing.
    #[error(
        "{repo}: commit #{index} of the batch ({commit}) names parent {parent}, which is neither \
         stored nor earlier in the batch; nothing was written"
    )]
    UnknownParent {
        /// The repository.
        repo: RepoId,
        /// The 0-based position of the commit in the batch.
        index: usize,
        /// The commit.
        commit: CommitId,
        /// The missing parent.
        parent: CommitId,
    },
    /// A commit of a batch is already known with other parents. The batch changed nothing.
    #[error(
        "{repo}: commit #{index} of the batch ({commit}) is already known with other parents; \
         nothing was written"
    )]
    ConflictingParents {
        /// The repository.
        repo: RepoId,
        /// The 0-based position of the commit in the batch.
        index: usize,
        /// The commit.
        commit: CommitId,
    },
    /// A commit id that the repository does not hold.
    #[error("{repo}: unknown commit {commit}")]
    UnknownCommit {
        /// The repository.
        repo: RepoId,
        /// The commit.
        commit: CommitId,
    },
    /// A branch name that the repository does not hold.
    #[error("{repo}: unknown branch {branch:?}")]
    UnknownBranch {
        /// The repository.
        repo: RepoId,
        /// The branch name.
        branch: String,
    },
    /// A branch name that cannot be stored (empty).
    #[error("{repo}: invalid branch name {branch:?}")]
    InvalidBranchName {
        /// The repository.
        repo: RepoId,
        /// The branch name.
        branch: String,
    },
    /// One line of an import input is wrong; nothing was imported.
    #[error("{input} line {line}: {error}; nothing was imported")]
    Import {
        /// Which input.
        input: ImportInput,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        #[source]
        error: LineError,
    },
    /// A commit of a batch has an id of another length than the repository's (SHA-1 and
    /// SHA-256 ids do not mix in one repository). The batch changed nothing.
    #[error(
        "{repo}: commit #{index} of the batch ({commit}) is not a {expected}-byte id like the \
         repository's; nothing was written"
    )]
    IdLength {
        /// The repository.
        repo: RepoId,
        /// The 0-based position of the commit in the batch.
        index: usize,
        /// The commit.
        commit: CommitId,
        /// The byte length of the repository's ids.
        expected: usize,
    },
    /// The repository's commits are stored in a format this build does not read (format 1
    /// kept one key per commit; there is no migration: import the repository again).
    #[error(
        "{repo}: commits stored in format {found}, this build reads format {expected} only; \
         re-import the repository (there is no migration)"
    )]
    UnsupportedFormat {
        /// The repository.
        repo: RepoId,
        /// The format found.
        found: u8,
        /// The format this build reads.
        expected: u8,
    },
    /// The repository would hold more than `u32::MAX - 1` commits.
    #[error("{repo}: more than {max} commits", max = u32::MAX - 1)]
    TooManyCommits {
        /// The repository.
        repo: RepoId,
    },
    /// A stored record cannot be decoded or contradicts the records before it.
    #[error("{repo}: corrupt commit-graph record at key {key:02x?}: {reason}")]
    Corrupt {
        /// The repository.
        repo: RepoId,
        /// The key of the record.
        key: Vec<u8>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The change feed refused a read (a pruned or future revision) or its engine failed.
    #[error("commit-graph history: {0}")]
    Feed(#[from] engine::FeedError),
    /// An event of the change feed under a repository's history index is not a repository
    /// event.
    #[error("{repo}: event {revision} in the change feed is not a repository event: {reason}")]
    CorruptEvent {
        /// The repository whose history was read.
        repo: RepoId,
        /// The event's revision.
        revision: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An event of the change feed under an actor's history index is not a repository event.
    #[error("event {revision} in the change feed, indexed under actor {actor:?}, is not a repository event: {reason}")]
    CorruptActorEvent {
        /// The actor whose history was read.
        actor: String,
        /// The event's revision.
        revision: u64,
        /// What is wrong with it.
        reason: String,
    },
}
