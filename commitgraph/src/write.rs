//! The write path of [`CommitGraphs`]: pushes, branch moves and imports, each checked, applied
//! under the repository's write lock, and written with its change-feed events as one engine
//! batch (see `commitgraph/DESIGN.md`, "Model and layout" and "Change feed").

use super::*;
use crate::event::PushedEncoder;

/// One branch update of a write: the tip before it and after it (`None`: absent, deleted).
#[derive(Clone, Copy, Debug)]
struct BranchMove<'a> {
    name: &'a str,
    before: Option<CommitId>,
    after: Option<CommitId>,
}

/// The id of `node`, stored or planned.
fn id_of(index: &CommitIndex, plan: &index::Plan, node: u32) -> CommitId {
    match node.checked_sub(plan.first) {
        Some(i) => plan.nodes[i as usize].id,
        None => index.commit_id(node),
    }
}

/// The `commits.pushed` payload of a plan's new commits, encoded from the plan and the index
/// (the same bytes as [`RepoEvent::encode`] gives for them).
fn pushed_event(
    time_us: u64,
    by: Writer<'_>,
    repo: RepoId,
    index: &CommitIndex,
    plan: &index::Plan,
) -> Vec<u8> {
    let parents = plan.nodes.iter().map(|node| node.parents.len()).sum();
    let mut encoder = PushedEncoder::new(time_us, by, repo, plan.nodes.len(), parents);
    for node in &plan.nodes {
        let raw_id = |&parent: &u32| match parent.checked_sub(plan.first) {
            Some(i) => plan.nodes[i as usize].id.as_bytes(),
            None => index.raw_id(parent),
        };
        encoder.commit(node.id.as_bytes(), node.parents.iter().map(raw_id));
    }
    encoder.finish()
}

/// What a write records besides its commits and branch moves.
#[derive(Clone, Copy, Debug)]
enum WriteKind {
    /// A push: merged-status changes are computed; `commits.pushed` and branch events.
    Push,
    /// An import: one `import.repo` event with counts, no merged-status changes.
    Import { other_refs: usize },
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl CommitGraphs {
    /// Adds commits, parents before children (a parent must be stored or earlier in the
    /// batch). A commit already stored with the same parents is skipped. See
    /// [`CommitGraphs::push`].
    ///
    /// # Errors
    /// As for [`CommitGraphs::push`].
    pub fn append(
        &self,
        repo: RepoId,
        commits: &[NewCommit],
        by: Writer<'_>,
    ) -> Result<PushOutcome, CommitError> {
        self.push(repo, commits, &[], by)
    }

    /// Creates or moves a branch; the outcome lists the merged-status changes (see
    /// [`PushOutcome`]).
    ///
    /// # Errors
    /// As for [`CommitGraphs::push`].
    pub fn set_branch(
        &self,
        repo: RepoId,
        name: &str,
        tip: CommitId,
        by: Writer<'_>,
    ) -> Result<PushOutcome, CommitError> {
        self.push(repo, &[], &[BranchUpdate::set(name, tip)], by)
    }

    /// Deletes a branch; the outcome lists the merged-status changes (see [`PushOutcome`]).
    ///
    /// # Errors
    /// [`CommitError::UnknownBranch`] when there is no such branch; as for
    /// [`CommitGraphs::push`].
    pub fn delete_branch(
        &self,
        repo: RepoId,
        name: &str,
        by: Writer<'_>,
    ) -> Result<PushOutcome, CommitError> {
        self.push(repo, &[], &[BranchUpdate::delete(name)], by)
    }

    /// Applies a push atomically: adds `commits` (parents before children; a commit already
    /// stored with the same parents is skipped), then applies `updates` in order (a target may
    /// be one of `commits`). Everything is checked before anything is written, then written as
    /// one engine batch together with the push's events (`commits.pushed` when it added
    /// commits, then one `branch.set` or `branch.deleted` per update, recorded as made `by`),
    /// and acknowledged once a group sync made it durable. The outcome carries the revision of
    /// the last event.
    ///
    /// # Errors
    /// [`CommitError::UnknownParent`] (naming the commit's position in the batch),
    /// [`CommitError::ConflictingParents`], [`CommitError::UnknownCommit`] for a branch target
    /// that is neither stored nor in the batch, [`CommitError::UnknownBranch`] for deleting a
    /// branch that does not exist, [`CommitError::InvalidBranchName`] for an empty name,
    /// [`CommitError::TooManyCommits`]; nothing was written then. [`CommitError::Engine`] when
    /// the write or its sync fails; the in-memory index is unchanged then too.
    pub fn push(
        &self,
        repo: RepoId,
        commits: &[NewCommit],
        updates: &[BranchUpdate],
        by: Writer<'_>,
    ) -> Result<PushOutcome, CommitError> {
        self.write(repo, commits, updates, by, WriteKind::Push)
    }

    fn write(
        &self,
        repo: RepoId,
        commits: &[NewCommit],
        updates: &[BranchUpdate],
        by: Writer<'_>,
        kind: WriteKind,
    ) -> Result<PushOutcome, CommitError> {
        let handle = self.repo(repo)?;
        let mut state = handle.state.write().unwrap_or_else(|e| e.into_inner());
        // A branch created from (or a commit made on) the tip of a branch that this push does
        // not move must not take over that branch's first-parent chain; when the default branch
        // (`main` or `master`) moves, its old tip stays free for it.
        let moved: BTreeSet<&str> = updates.iter().map(|u| u.name.as_str()).collect();
        let default_tips: BTreeSet<u32> = ["main", "master"]
            .iter()
            .filter(|name| moved.contains(*name))
            .filter_map(|name| state.branches.get(*name).copied())
            .collect();
        let protected: std::collections::HashSet<u32> = state
            .branches
            .iter()
            .filter(|(name, tip)| !moved.contains(name.as_str()) && !default_tips.contains(tip))
            .map(|(_, &tip)| tip)
            .collect();
        let plan = state.index.plan(commits, &protected)?;
        let planned: HashMap<CommitId, u32> = plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, plan.first + i as u32))
            .collect();
        let mut after = state.branches.clone();
        let mut batch = WriteBatch::new();
        // Each update's tip before it and after it, in order.
        let mut moves: Vec<BranchMove<'_>> = Vec::new();
        for update in updates {
            if update.name.is_empty() {
                return Err(CommitError::InvalidBranchName {
                    repo,
                    branch: update.name.clone(),
                });
            }
            let key = codec::branch_key(repo, &update.name);
            let before = after
                .get(&update.name)
                .map(|&node| id_of(&state.index, &plan, node));
            match update.target {
                Some(target) => {
                    let node = state
                        .index
                        .node(&target)
                        .or_else(|| planned.get(&target).copied())
                        .ok_or(CommitError::UnknownCommit {
                            repo,
                            commit: target,
                        })?;
                    after.insert(update.name.clone(), node);
                    batch.put(self.branches, key, node.to_be_bytes());
                }
                None => {
                    if after.remove(&update.name).is_none() {
                        return Err(CommitError::UnknownBranch {
                            repo,
                            branch: update.name.clone(),
                        });
                    }
                    batch.delete(self.branches, key);
                }
            }
            moves.push(BranchMove {
                name: &update.name,
                before,
                after: update.target,
            });
        }
        let mut node_batch = self.node_records(repo, &state.index, &plan);
        node_batch.extend(batch);
        let appended = AppendSummary {
            added: plan.nodes.len(),
            known: plan.known,
        };
        if node_batch.is_empty() && matches!(kind, WriteKind::Push) {
            // Nothing new (a re-push of stored commits): nothing written, no event.
            return Ok(PushOutcome {
                appended,
                changes: Vec::new(),
                revision: self.log.head(),
            });
        }
        let record = self
            .record_changes
            .load(std::sync::atomic::Ordering::Relaxed);
        let time_us = now_us();
        // The event listing the pushed commits is the feed's work: none without it.
        let pushed = match kind {
            WriteKind::Push if record && !plan.nodes.is_empty() => {
                Some(pushed_event(time_us, by, repo, &state.index, &plan))
            }
            WriteKind::Push | WriteKind::Import { .. } => None,
        };
        // The index is applied before the write (the events carry the merged-status changes,
        // computed on it), under the repository's write lock, which is held until the batch is
        // durable: no reader sees a push that a crash could take back, and a failed write or
        // sync rolls the index back. Pushes to other repositories share the group sync.
        let mark = state.index.mark();
        state.index.apply(plan);
        let before = std::mem::replace(&mut state.branches, after);
        let changes = match kind {
            WriteKind::Push => handle.changes(&state, &before),
            WriteKind::Import { .. } => Vec::new(),
        };
        let entries = if record {
            self.entries(repo, by, kind, appended, time_us, pushed, &moves, &changes)
        } else {
            Vec::new()
        };
        let result = self
            .log
            .append(node_batch, entries)
            .and_then(|appended| self.log.sync(appended));
        match result {
            Ok(revision) => Ok(PushOutcome {
                appended,
                changes,
                revision,
            }),
            Err(error) => {
                state.index.rollback(mark);
                state.branches = before;
                handle
                    .reach
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain_below(mark.len);
                Err(error.into())
            }
        }
    }

    /// The records of `commits.nodes` that a plan changes: the format record with the first
    /// commits, and every block holding a new commit, the last partial block rewritten whole
    /// (its stored commits re-encoded from the index, which holds everything a record does).
    fn node_records(&self, repo: RepoId, index: &CommitIndex, plan: &index::Plan) -> WriteBatch {
        let mut batch = WriteBatch::new();
        let (Some(first_new), Some(last)) = (plan.nodes.first(), plan.nodes.len().checked_sub(1))
        else {
            return batch;
        };
        if plan.first == 0 {
            batch.put(
                self.nodes,
                codec::header_key(repo),
                codec::encode_header(first_new.id.as_bytes().len()),
            );
        }
        let end = plan.first + last as u32 + 1;
        let mut parents = Vec::new();
        for block in plan.first / codec::BLOCK..=(end - 1) / codec::BLOCK {
            let mut value = Vec::new();
            for node in block * codec::BLOCK..((block + 1) * codec::BLOCK).min(end) {
                match node.checked_sub(plan.first) {
                    Some(i) => {
                        let new = &plan.nodes[i as usize];
                        codec::encode_commit(
                            &mut value,
                            node,
                            new.id.as_bytes(),
                            &new.parents,
                            new.labels.position == 0,
                            new.labels.rank,
                        );
                    }
                    None => {
                        parents.clear();
                        parents.extend(index.parent_nodes(node));
                        codec::encode_commit(
                            &mut value,
                            node,
                            index.raw_id(node),
                            &parents,
                            index.labels[node as usize].position == 0,
                            index.rank_of(node),
                        );
                    }
                }
            }
            batch.put(self.nodes, codec::block_key(repo, block), value);
        }
        batch
    }

    /// The change-feed entries of a write, with their history indexes: the repository's and
    /// the actor's for every event, and each branch's for its own events (and for an import
    /// that set it).
    #[allow(clippy::too_many_arguments)]
    fn entries(
        &self,
        repo: RepoId,
        by: Writer<'_>,
        kind: WriteKind,
        appended: AppendSummary,
        time_us: u64,
        pushed: Option<Vec<u8>>,
        moves: &[BranchMove<'_>],
        changes: &[MergedChange],
    ) -> Vec<LogEntry> {
        let event = |change: RepoChange| {
            RepoEvent {
                time_us,
                actor: by.actor.to_string(),
                repo: by.repo.to_string(),
                repo_id: repo.0,
                change,
            }
            .encode()
        };
        let repo_prefix = codec::history_repo_prefix(repo);
        let actor_prefix = codec::history_actor_prefix(by.actor);
        let indexed = |payload: Vec<u8>| {
            LogEntry::new(payload)
                .index(self.history, repo_prefix.clone())
                .index(self.history, actor_prefix.clone())
        };
        if let WriteKind::Import { other_refs } = kind {
            let mut entry = indexed(event(RepoChange::ImportRepo {
                added: appended.added,
                known: appended.known,
                branches: moves.len(),
                other_refs,
            }));
            let names: BTreeSet<&str> = moves.iter().map(|m| m.name).collect();
            for name in names {
                entry = entry.index(self.history, codec::history_branch_prefix(repo, name));
            }
            return vec![entry];
        }
        let mut entries = Vec::new();
        if let Some(payload) = pushed {
            entries.push(indexed(payload));
        }
        for (i, m) in moves.iter().enumerate() {
            // The push's changed pairs involving this branch go with its last move.
            let last = !moves[i + 1..].iter().any(|later| later.name == m.name);
            let mine: Vec<MergedChange> = changes
                .iter()
                .filter(|c| last && (c.branch == m.name || c.target == m.name))
                .cloned()
                .collect();
            let change = match (m.after, m.before) {
                (Some(after), before) => RepoChange::BranchSet {
                    branch: m.name.to_string(),
                    before,
                    after,
                    changes: mine,
                },
                (None, Some(before)) => RepoChange::BranchDeleted {
                    branch: m.name.to_string(),
                    before,
                    changes: mine,
                },
                // Deleting a missing branch was refused before.
                (None, None) => continue,
            };
            entries.push(
                indexed(event(change))
                    .index(self.history, codec::history_branch_prefix(repo, m.name)),
            );
        }
        entries
    }

    /// Imports the output of `git rev-list --all --parents` and of
    /// `git for-each-ref --format='%(refname) %(objectname)'` in one atomic push: every commit
    /// (ordered parents first, whatever the input order), and every `refs/heads/*` ref as a
    /// branch (other refs are counted and ignored; stored branches that the input does not
    /// name are kept). Unlike [`CommitGraphs::push`], an import does not compute
    /// merged-status changes (an initial import would otherwise compare every pair of
    /// branches). It writes one `import.repo` event with the counts (not one per commit), so
    /// a replica following the feed must import the same input itself
    /// ([`CommitGraphs::replay`]). [`CommitGraphs::import_with_progress`] reports its steps.
    ///
    /// # Errors
    /// [`CommitError::Import`] naming the input and line of the first problem; as for
    /// [`CommitGraphs::push`]. Nothing is imported then.
    pub fn import(
        &self,
        repo: RepoId,
        rev_list: &str,
        refs: &str,
        by: Writer<'_>,
    ) -> Result<ImportSummary, CommitError> {
        self.import_with_progress(repo, rev_list, refs, by, &mut |_| {})
    }

    /// As [`CommitGraphs::import`], calling `progress` at the start of each step (on the
    /// caller's thread; the library draws nothing).
    ///
    /// # Errors
    /// As for [`CommitGraphs::import`].
    pub fn import_with_progress(
        &self,
        repo: RepoId,
        rev_list: &str,
        refs: &str,
        by: Writer<'_>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportSummary, CommitError> {
        progress(ImportProgress::ParsingRevList);
        let entries = import::parse_rev_list(rev_list)?;
        progress(ImportProgress::ParsingRefs {
            commits: entries.len(),
        });
        let ref_entries = import::parse_refs(refs)?;
        progress(ImportProgress::Ordering {
            commits: entries.len(),
        });
        let handle = self.repo(repo)?;
        let (commits, updates, other_refs) = {
            let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
            let known = |id: &CommitId| state.index.contains(id);
            let (updates, other_refs) = import::branch_updates(&ref_entries, &entries, known)?;
            let tips: Vec<CommitId> = updates.iter().filter_map(|u| u.target).collect();
            let commits = import::order_commits(&entries, known, &tips)?;
            (commits, updates, other_refs)
        };
        progress(ImportProgress::Writing {
            commits: commits.len(),
        });
        let outcome = self.write(
            repo,
            &commits,
            &updates,
            by,
            WriteKind::Import { other_refs },
        )?;
        progress(ImportProgress::Done);
        Ok(ImportSummary {
            appended: outcome.appended,
            branches: updates.len(),
            other_refs,
            revision: outcome.revision,
        })
    }

    /// Pushes the commits of `git rev-list --parents` output (in any order: they are ordered
    /// parents first), as [`CommitGraphs::push`] without branch updates: recorded as one
    /// `commits.pushed` event with the commits it added (none when all were stored), which a
    /// replica replays. [`CommitGraphs::import`] records a whole history as counts instead.
    ///
    /// # Errors
    /// [`CommitError::Import`] naming the line of the first problem (a malformed line, an
    /// unknown parent, a cycle); as for [`CommitGraphs::push`]. Nothing is written then.
    pub fn push_rev_list(
        &self,
        repo: RepoId,
        rev_list: &str,
        by: Writer<'_>,
    ) -> Result<PushOutcome, CommitError> {
        let entries = import::parse_rev_list(rev_list)?;
        let commits = {
            let handle = self.repo(repo)?;
            let state = handle.state.read().unwrap_or_else(|e| e.into_inner());
            import::order_commits(&entries, |id| state.index.contains(id), &[])?
        };
        self.push(repo, &commits, &[], by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_event_encoded_from_the_plan_is_the_events_own_encoding() {
        let id = |n: u8| CommitId::from_bytes(&[n; 20]).unwrap();
        let commit = |n: u8, parents: &[u8]| NewCommit {
            id: id(n),
            parents: parents.iter().map(|&p| id(p)).collect(),
        };
        let mut index = CommitIndex::new(RepoId(7));
        index.append(&[commit(1, &[]), commit(2, &[1])]).unwrap();
        // A stored parent, the previous commit, a merge of a planned and a stored commit, a
        // root, a planned parent that is not the previous commit, an octopus merge.
        let push = [
            commit(3, &[2]),
            commit(4, &[3]),
            commit(5, &[4, 1]),
            commit(6, &[]),
            commit(7, &[4]),
            commit(8, &[6, 7, 2]),
        ];
        let plan = index.plan(&push, &Default::default()).unwrap();
        let planned: Vec<NewCommit> = plan
            .nodes
            .iter()
            .map(|node| NewCommit {
                id: node.id,
                parents: node
                    .parents
                    .iter()
                    .map(|&p| id_of(&index, &plan, p))
                    .collect(),
            })
            .collect();
        let mut sorted = planned.clone();
        sorted.sort_by_key(|c| c.id);
        assert_eq!(sorted, push, "the plan holds the push's commits");
        let event = RepoEvent {
            time_us: 42,
            actor: "alice".into(),
            repo: "hello".into(),
            repo_id: 7,
            change: RepoChange::CommitsPushed {
                count: planned.len(),
                commits: planned,
            },
        };
        let payload = pushed_event(42, Writer::new("alice", "hello"), RepoId(7), &index, &plan);
        assert_eq!(payload, event.encode());
        assert_eq!(RepoEvent::decode(&payload).unwrap(), Some(event));
    }
}
