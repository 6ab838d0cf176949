//! Opening a repository: its commits from the blocks of `commits.nodes` (format 2, see
//! `commitgraph/DESIGN.md`, "Model and layout"), each checked against those before it, and its
//! branches.

use super::*;

impl CommitGraphs {
    /// Reads a repository's commits (format record first, then the blocks in order, each
    /// commit checked against those before it) and branches.
    pub(crate) fn load(&self, repo: RepoId) -> Result<Repo, CommitError> {
        let prefix = codec::repo_prefix(repo);
        let mut index = CommitIndex::with_checkpoint_interval(repo, self.checkpoint_every);
        let snapshot = self.engine.snapshot()?;
        // Size the arrays once from the last block's number: growing them on the way would
        // rehash the id table a few dozen times.
        let last = snapshot
            .scan(self.nodes, ScanRange::prefix(&prefix), Direction::Reverse)?
            .next()
            .transpose()?;
        let stored = last
            .and_then(|(key, _)| codec::block_of_key(&key))
            .map_or(0, |block| (block as usize + 1) * codec::BLOCK as usize);
        let mut id_len = None;
        // Read once: every commit goes into the in-memory index, so caching the blocks would
        // only keep a second copy resident.
        let blocks = ScanRange::prefix(&prefix).read_once();
        for entry in snapshot.scan(self.nodes, blocks, Direction::Forward)? {
            let (key, value) = entry?;
            let corrupt = |reason| CommitError::Corrupt {
                repo,
                key: key.clone(),
                reason,
            };
            let Some(len) = id_len else {
                // The format record comes first; format 1 had none (one key per commit).
                let found = if key.len() == prefix.len() {
                    codec::decode_header(&value)
                } else {
                    Err(1)
                };
                match found {
                    Ok(len) => {
                        id_len = Some(len);
                        index.reserve(stored, len);
                    }
                    Err(found) => {
                        return Err(CommitError::UnsupportedFormat {
                            repo,
                            found,
                            expected: codec::FORMAT,
                        })
                    }
                }
                continue;
            };
            let first = index.len() as u32;
            if key.len() != 12
                || first % codec::BLOCK != 0
                || codec::block_of_key(&key) != Some(first / codec::BLOCK)
            {
                return Err(corrupt("blocks are not dense"));
            }
            codec::decode_block(&value, first, len, |c| {
                index.load_node(c.id, &c.parents, c.starts_chain, c.rank)
            })
            .map_err(corrupt)?;
            if index.len() as u32 - first > codec::BLOCK {
                return Err(corrupt("block holds too many commits"));
            }
        }
        let mut branches = Branches::default();
        for entry in snapshot.scan(
            self.branches,
            ScanRange::prefix(&prefix),
            Direction::Forward,
        )? {
            let (key, value) = entry?;
            let corrupt = |reason| CommitError::Corrupt {
                repo,
                key: key.clone(),
                reason,
            };
            let name = std::str::from_utf8(&key[prefix.len()..])
                .map_err(|_| corrupt("branch name is not UTF-8"))?;
            let node = <[u8; 4]>::try_from(value.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt("branch tip is not 4 bytes"))?;
            if node as usize >= index.len() {
                return Err(corrupt("branch tip is not a stored commit"));
            }
            branches.insert(name.to_string(), node);
        }
        Ok(Repo {
            id: repo,
            state: RwLock::new(RepoState { index, branches }),
            reach: Mutex::new(ReachCache::new(self.reach_cache_bytes)),
        })
    }
}
