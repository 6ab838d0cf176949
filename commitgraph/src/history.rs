//! Reading the change feed back: a branch's or a repository's history, and replaying an event.

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
        self.history_page(
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
        self.history_page(repo, &codec::history_repo_prefix(repo), after, limit)
    }

    fn history_page(
        &self,
        repo: RepoId,
        prefix: &[u8],
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RepoEvent)>, CommitError> {
        self.log
            .read_index(self.history, prefix, after, limit, Direction::Forward)?
            .into_iter()
            .map(|(revision, payload)| {
                let corrupt = |reason: String| CommitError::CorruptEvent {
                    repo,
                    revision,
                    reason,
                };
                match RepoEvent::decode(&payload) {
                    Ok(Some(event)) => Ok((revision, event)),
                    Ok(None) => Err(corrupt("another store's event".to_string())),
                    Err(error) => Err(corrupt(error.to_string())),
                }
            })
            .collect()
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
