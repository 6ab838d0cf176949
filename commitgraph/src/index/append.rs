//! Appending a batch of commits: planning (parents known, conflicts refused), labelling
//! (generation, chain, position, rank) and applying, all or nothing.

use super::*;

impl CommitIndex {
    /// Adds a batch of commits, parents before children, all or nothing: see
    /// [`crate::CommitGraphs::append`] for the rules.
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
}
