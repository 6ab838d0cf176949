//! A generator of commit graphs shaped like busy repositories (long-lived branches, regular
//! merges, a few octopus merges and orphan roots), for tests and benchmarks. It writes the
//! same graph as a `git fast-import` stream (to build a real repository whose answers can be
//! compared with git's) or, with synthetic ids, as `git rev-list --all --parents` and
//! `git for-each-ref` text or as [`NewCommit`]s.

use std::fmt::Write as _;

use super::id::CommitId;
use super::index::NewCommit;

/// The shape of a generated graph. The defaults give 10% merge commits.
#[derive(Clone, Debug, PartialEq)]
pub struct DagParams {
    /// Commits to generate. Default: 10,000.
    pub commits: usize,
    /// Branches (the first one is `main`). Default: 100.
    pub branches: usize,
    /// Probability that a commit is a merge. Default: 0.10.
    pub merge_ratio: f64,
    /// Probability that a merge has three or four parents. Default: 0.05.
    pub octopus_ratio: f64,
    /// Probability that a commit of a branch other than `main` is an orphan root. Default:
    /// 0.0005.
    pub root_ratio: f64,
    /// Probability that a commit of a branch other than `main` restarts the branch from
    /// `main`'s tip. Default: 0.01.
    pub reset_ratio: f64,
    /// Probability that a commit goes to `main`. Default: 0.3.
    pub main_ratio: f64,
    /// The random seed. Default: 1.
    pub seed: u64,
}

impl Default for DagParams {
    fn default() -> Self {
        DagParams {
            commits: 10_000,
            branches: 100,
            merge_ratio: 0.10,
            octopus_ratio: 0.05,
            root_ratio: 0.0005,
            reset_ratio: 0.01,
            main_ratio: 0.3,
            seed: 1,
        }
    }
}

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A generated graph: commits by number (parents before children) and branch tips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedDag {
    /// The parents of each commit, first parent first, as commit numbers.
    pub parents: Vec<Vec<u32>>,
    /// Branch names (`main`, `b1`, `b2`, ...) and their tips.
    pub branches: Vec<(String, u32)>,
    /// The branch each commit was made on (the ref a fast-import stream commits it to).
    pub made_on: Vec<u32>,
}

impl GeneratedDag {
    /// Generates a graph. At least one commit is made.
    pub fn generate(params: &DagParams) -> Self {
        let mut rng = SplitMix::new(params.seed);
        let branches = params.branches.max(1);
        let mut tips: Vec<Option<u32>> = vec![None; branches];
        let mut created: Vec<usize> = vec![0];
        let mut parents: Vec<Vec<u32>> = vec![Vec::new()];
        let mut made_on = vec![0u32];
        tips[0] = Some(0);
        for k in 1..params.commits.max(1) as u32 {
            let branch = if rng.chance(params.main_ratio) {
                0
            } else {
                rng.below(branches)
            };
            let main_tip = tips[0].unwrap_or(0);
            let first = match tips[branch] {
                None => {
                    created.push(branch);
                    // Fork from main or from another branch.
                    if rng.chance(0.7) {
                        main_tip
                    } else {
                        tips[created[rng.below(created.len())]].unwrap_or(main_tip)
                    }
                }
                Some(_) if branch != 0 && rng.chance(params.reset_ratio) => main_tip,
                Some(tip) => tip,
            };
            let mut ps = Vec::new();
            // Orphan roots start side histories (later merged), never `main`'s own.
            if branch == 0 || !rng.chance(params.root_ratio) {
                ps.push(first);
                if rng.chance(params.merge_ratio) {
                    let extra = if rng.chance(params.octopus_ratio) {
                        2 + rng.below(2)
                    } else {
                        1
                    };
                    for _ in 0..extra * 3 {
                        if ps.len() > extra {
                            break;
                        }
                        let other = created[rng.below(created.len())];
                        if let Some(tip) = tips[other] {
                            if !ps.contains(&tip) {
                                ps.push(tip);
                            }
                        }
                    }
                }
            }
            parents.push(ps);
            made_on.push(branch as u32);
            tips[branch] = Some(k);
        }
        let n = parents.len();
        let branches = tips
            .iter()
            .enumerate()
            .map(|(i, tip)| {
                let name = if i == 0 {
                    "main".to_string()
                } else {
                    format!("b{i}")
                };
                let tip = tip.unwrap_or_else(|| rng.below(n) as u32);
                (name, tip)
            })
            .collect();
        GeneratedDag {
            parents,
            branches,
            made_on,
        }
    }

    /// Synthetic 20-byte commit ids, distinct for distinct commit numbers.
    pub fn synthetic_ids(&self, seed: u64) -> Vec<CommitId> {
        (0..self.parents.len() as u64)
            .map(|k| {
                let mut rng = SplitMix::new(seed ^ k.wrapping_mul(0x2545_F491_4F6C_DD1D));
                let mut bytes = [0u8; 20];
                bytes[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
                bytes[8..16].copy_from_slice(&rng.next_u64().to_be_bytes());
                // The commit number keeps ids distinct whatever the random bytes.
                bytes[16..].copy_from_slice(&(k as u32).to_be_bytes());
                CommitId::from_bytes(&bytes).expect("20 bytes")
            })
            .collect()
    }

    /// The commits as a batch for [`super::CommitGraphs::push`], parents first.
    pub fn new_commits(&self, ids: &[CommitId]) -> Vec<NewCommit> {
        self.parents
            .iter()
            .zip(ids)
            .map(|(ps, id)| NewCommit {
                id: *id,
                parents: ps.iter().map(|&p| ids[p as usize]).collect(),
            })
            .collect()
    }

    /// The graph as `git rev-list --all --parents` prints it (children first).
    pub fn rev_list(&self, ids: &[CommitId]) -> String {
        let mut out = String::with_capacity(self.parents.len() * 50);
        for (k, ps) in self.parents.iter().enumerate().rev() {
            let _ = write!(out, "{}", ids[k]);
            for &p in ps {
                let _ = write!(out, " {}", ids[p as usize]);
            }
            out.push('\n');
        }
        out
    }

    /// The branches as `git for-each-ref --format='%(refname) %(objectname)'` prints them.
    pub fn refs(&self, ids: &[CommitId]) -> String {
        let mut out = String::new();
        for (name, tip) in &self.branches {
            let _ = writeln!(out, "refs/heads/{name} {}", ids[*tip as usize]);
        }
        out
    }

    /// A `git fast-import` stream that builds this graph: commit `k` gets mark `k + 1`, an
    /// empty tree and the message `c<k>`, so all commits are distinct; every branch ends at
    /// its tip.
    pub fn fast_import_stream(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.parents.len() * 120);
        let name = |b: u32| {
            if b == 0 {
                "main".to_string()
            } else {
                format!("b{b}")
            }
        };
        for (k, ps) in self.parents.iter().enumerate() {
            let branch = name(self.made_on[k]);
            if ps.is_empty() {
                let _ = writeln!(out, "reset refs/heads/{branch}");
            }
            let message = format!("c{k}\n");
            let _ = write!(
                out,
                "commit refs/heads/{branch}\nmark :{}\ncommitter Gen <gen@example.com> {} +0000\ndata {}\n{message}",
                k + 1,
                1_600_000_000 + k,
                message.len()
            );
            for (i, &p) in ps.iter().enumerate() {
                let verb = if i == 0 { "from" } else { "merge" };
                let _ = writeln!(out, "{verb} :{}", p + 1);
            }
            out.push('\n');
        }
        for (branch, tip) in &self.branches {
            let _ = writeln!(out, "reset refs/heads/{branch}\nfrom :{}\n", tip + 1);
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_as_asked() {
        let dag = GeneratedDag::generate(&DagParams {
            commits: 20_000,
            ..DagParams::default()
        });
        assert_eq!(dag.parents.len(), 20_000);
        assert_eq!(dag.branches.len(), 100);
        let merges = dag.parents.iter().filter(|p| p.len() > 1).count();
        assert!((1_400..2_600).contains(&merges), "{merges} merges");
        assert!(dag.parents.iter().any(|p| p.len() > 2));
        assert!(dag.parents.iter().skip(1).any(Vec::is_empty));
        for (k, ps) in dag.parents.iter().enumerate() {
            assert!(ps.iter().all(|&p| (p as usize) < k));
        }
        let ids = dag.synthetic_ids(7);
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
