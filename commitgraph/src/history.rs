//! Reading the change feed back: a branch's, a repository's or an actor's history, and
//! replaying an event.

use super::*;

impl CommitGraphs {
    /// The events of branch `branch` of `repo` (its moves and deletions, and the imports that
    /// set it), oldest first: up to `limit` with a revision above `after` (0 for the first
    /// page; the last revision of a page for the next). A page never reaches past the feed's
    /// durable head.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use commitgraph::{CommitGraphs, CommitId, NewCommit, RepoChange, RepoId, Writer, KEYSPACES};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut keyspaces = KEYSPACES.to_vec();
    /// # keyspaces.push("changes");
    /// # let engine = engine::EngineConfig::memory().open(&keyspaces)?;
    /// # let log = engine::ChangeLog::open(
    /// #     Arc::new(engine::GroupCommit::new(engine.clone())),
    /// #     engine.keyspace("changes")?,
    /// # )?;
    /// let graphs = CommitGraphs::open(engine, log)?;
    /// let (repo, by) = (RepoId(1), Writer::new("alice", "hello"));
    /// let id = |n: u8| CommitId::from_bytes(&[n; 20]).unwrap();
    /// graphs.append(repo, &[NewCommit { id: id(1), parents: vec![] }], by)?;
    /// graphs.set_branch(repo, "main", id(1), by)?;
    /// let moved = graphs.delete_branch(repo, "main", by)?;
    ///
    /// let page = graphs.branch_history(repo, "main", 0, 10)?;
    /// assert_eq!(page.len(), 2);
    /// assert_eq!(page[0].0, 2); // revision 1 is the commits.pushed event
    /// assert!(matches!(page[0].1.change, RepoChange::BranchSet { .. }));
    /// assert_eq!(page[1].0, moved.revision);
    /// assert_eq!(page[1].1.actor, "alice");
    /// assert!(graphs.branch_history(repo, "main", moved.revision, 10)?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`CommitError::Feed`] when the change feed cannot be read, [`CommitError::CorruptEvent`]
    /// for an indexed event that is not a repository event.
    pub fn branch_history(
        &self,
        repo: RepoId,
        branch: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RepoEvent)>, CommitError> {
        self.repo_page(
            repo,
            &codec::history_branch_prefix(repo, branch),
            after,
            limit,
        )
    }

    /// Every event of `repo` (pushes, branch moves and deletions, imports), oldest first,
    /// paged as [`CommitGraphs::branch_history`].
    ///
    /// # Errors
    /// As for [`CommitGraphs::branch_history`].
    pub fn repo_history(
        &self,
        repo: RepoId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RepoEvent)>, CommitError> {
        self.repo_page(repo, &codec::history_repo_prefix(repo), after, limit)
    }

    /// Every event that `actor` made ([`Writer::actor`]), in every repository, oldest first,
    /// paged as [`CommitGraphs::branch_history`]: a person's pushes, branch moves and imports.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use commitgraph::{CommitGraphs, CommitId, NewCommit, RepoId, Writer, STANDALONE_KEYSPACES};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = engine::EngineConfig::memory().open(STANDALONE_KEYSPACES)?;
    /// let graphs = CommitGraphs::open_standalone(engine)?;
    /// let id = |n: u8| CommitId::from_bytes(&[n; 20]).unwrap();
    /// let root = NewCommit { id: id(1), parents: vec![] };
    /// graphs.append(RepoId(1), &[root.clone()], Writer::new("alice", "one"))?;
    /// graphs.append(RepoId(2), &[root], Writer::new("bob", "two"))?;
    /// graphs.set_branch(RepoId(2), "main", id(1), Writer::new("alice", "two"))?;
    ///
    /// let alice = graphs.actor_history("alice", 0, 10)?;
    /// let revisions: Vec<u64> = alice.iter().map(|(revision, _)| *revision).collect();
    /// assert_eq!(revisions, [1, 3]);
    /// assert_eq!(alice[1].1.repo, "two");
    /// assert_eq!(graphs.actor_history_before("alice", u64::MAX, 1)?[0].0, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`CommitError::Feed`] when the change feed cannot be read,
    /// [`CommitError::CorruptActorEvent`] for an indexed event that is not a repository event.
    pub fn actor_history(
        &self,
        actor: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RepoEvent)>, CommitError> {
        self.actor_page(actor, after, limit, Direction::Forward)
    }

    /// As [`CommitGraphs::actor_history`], newest first: up to `limit` events with a revision
    /// below `before` (`u64::MAX` for the first page; the last revision of a page for the
    /// next), as the directory's person history pages.
    ///
    /// # Errors
    /// As for [`CommitGraphs::actor_history`].
    pub fn actor_history_before(
        &self,
        actor: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RepoEvent)>, CommitError> {
        self.actor_page(actor, before, limit, Direction::Reverse)
    }

    fn actor_page(
        &self,
        actor: &str,
        from: u64,
        limit: usize,
        direction: Direction,
    ) -> Result<Vec<(u64, RepoEvent)>, CommitError> {
        let prefix = codec::history_actor_prefix(actor);
        self.history_page(&prefix, from, limit, direction, |revision, reason| {
            CommitError::CorruptActorEvent {
                actor: actor.to_string(),
                revision,
                reason,
            }
        })
    }

    fn repo_page(
        &self,
        repo: RepoId,
        prefix: &[u8],
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RepoEvent)>, CommitError> {
        self.history_page(
            prefix,
            after,
            limit,
            Direction::Forward,
            |revision, reason| CommitError::CorruptEvent {
                repo,
                revision,
                reason,
            },
        )
    }

    fn history_page(
        &self,
        prefix: &[u8],
        from: u64,
        limit: usize,
        direction: Direction,
        corrupt: impl Fn(u64, String) -> CommitError,
    ) -> Result<Vec<(u64, RepoEvent)>, CommitError> {
        self.log
            .read_index(self.history, prefix, from, limit, direction)?
            .into_iter()
            .map(|(revision, payload)| match RepoEvent::decode(&payload) {
                Ok(Some(event)) => Ok((revision, event)),
                Ok(None) => Err(corrupt(revision, "another store's event".to_string())),
                Err(error) => Err(corrupt(revision, error.to_string())),
            })
            .collect()
    }

    /// A follower's step: `events` are the change log's stored events (`(revision,
    /// payload)`, this store's and the log's other writers') that another instance wrote
    /// after what this one has applied. Every repository they touch is unloaded, so its next
    /// query loads it from the engine as on first use (commits, branches, labels; its reach
    /// cache starts empty): memory is never re-derived from events, it is what the engine
    /// holds, and a repository loaded while the events were being read only moves forward.
    /// Returns how many loaded repositories were dropped.
    pub fn follow(&self, events: &[(u64, Vec<u8>)]) -> usize {
        let touched: BTreeSet<RepoId> = events
            .iter()
            .filter_map(|(_, payload)| RepoEvent::decode(payload).ok().flatten())
            .map(|event| event.repo_id())
            .collect();
        let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        touched
            .iter()
            .filter(|repo| repos.remove(repo).is_some())
            .count()
    }

    /// Applies one event of a change feed as the write it records, recorded as made by the
    /// event's actor: how a replica (or a rebuild from the log) follows the feed. Replaying a
    /// feed from revision 0 onto empty graphs, in revision order, reproduces the commits,
    /// branches and merged-status of the graphs that wrote it. Returns `None` for an
    /// `import.repo` event, which records counts only: a replica must import the same input
    /// itself (or be reloaded from a snapshot) before replaying the events after it.
    ///
    /// # Errors
    /// As for [`CommitGraphs::push`] (an event out of order names unknown commits).
    pub fn replay(&self, event: &RepoEvent) -> Result<Option<PushOutcome>, CommitError> {
        let by = Writer::new(&event.actor, &event.repo);
        let repo = event.repo_id();
        let outcome = match &event.change {
            RepoChange::CommitsPushed { commits, .. } => self.push(repo, commits, &[], by)?,
            RepoChange::BranchSet { branch, after, .. } => {
                self.set_branch(repo, branch, *after, by)?
            }
            RepoChange::BranchDeleted { branch, .. } => self.delete_branch(repo, branch, by)?,
            RepoChange::ImportRepo { .. } => return Ok(None),
        };
        Ok(Some(outcome))
    }
}
