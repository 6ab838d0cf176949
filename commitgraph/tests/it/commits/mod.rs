// Test-only: the backend suite, the property tests and the shared graph builders; the
// comparison with git is in `git.rs`, failed writes and crashes in `failures.rs`.
//! Commit graphs: a suite stamped out for every engine backend, property tests against BFS on
//! random DAGs (merges, octopus merges, several roots, reopen), and agreement with real git.

mod failures;
mod git;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use commitgraph::gen::{DagParams, GeneratedDag, SplitMix};
use commitgraph::{
    BranchUpdate, CommitError, CommitGraphs, CommitId, ImportInput, LineError, MergedChange,
    NewCommit, RepoId, STANDALONE_KEYSPACES,
};
use engine::testing::TestStore;
use engine::{Backend, Engine, EngineConfig, MemEngine};
use proptest::prelude::*;

use crate::BY;

/// A store on one backend that can be closed and reopened as after a restart.
struct Store {
    /// A kept map, a directory, or a PostgreSQL schema.
    store: TestStore,
    /// Small, so that the tests' chains get checkpoints.
    checkpoint_every: usize,
}

impl Store {
    fn new(backend: Backend) -> Self {
        Store {
            store: TestStore::new(backend, STANDALONE_KEYSPACES),
            checkpoint_every: 3,
        }
    }

    fn engine(&self) -> Arc<dyn Engine> {
        self.store.open()
    }

    fn open(&self) -> CommitGraphs {
        crate::open_graphs(self.engine(), self.checkpoint_every)
    }

    /// Closes `graphs` (releasing the engine's lock) and opens the store again.
    fn reopen(&self, graphs: CommitGraphs) -> CommitGraphs {
        drop(graphs);
        self.open()
    }
}

pub(crate) fn id(n: u32) -> CommitId {
    let mut bytes = [0x5a; 20];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    CommitId::from_bytes(&bytes).unwrap()
}

pub(crate) fn commit(n: u32, parents: &[u32]) -> NewCommit {
    NewCommit {
        id: id(n),
        parents: parents.iter().map(|&p| id(p)).collect(),
    }
}

/// The ancestors (inclusive) of every commit, by BFS over parents.
fn ancestors(parents: &[Vec<u32>]) -> Vec<BTreeSet<u32>> {
    let mut out: Vec<BTreeSet<u32>> = Vec::with_capacity(parents.len());
    for (k, ps) in parents.iter().enumerate() {
        let mut seen = BTreeSet::from([k as u32]);
        let mut queue: Vec<u32> = ps.clone();
        while let Some(p) = queue.pop() {
            if seen.insert(p) {
                queue.extend(&parents[p as usize]);
            }
        }
        out.push(seen);
    }
    out
}

/// The expected merged-status changes between two branch maps.
fn expected_changes(
    anc: &[BTreeSet<u32>],
    before: &BTreeMap<String, u32>,
    after: &BTreeMap<String, u32>,
) -> Vec<MergedChange> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let merged = |m: &BTreeMap<String, u32>, s: &String, t: &String| match (m.get(s), m.get(t)) {
        (Some(&s), Some(&t)) => anc[t as usize].contains(&s),
        _ => false,
    };
    let mut out = Vec::new();
    for &s in &names {
        for &t in &names {
            let moved = before.get(s) != after.get(s) || before.get(t) != after.get(t);
            if s == t || !moved {
                continue;
            }
            let (was, is) = (merged(before, s, t), merged(after, s, t));
            if was != is {
                out.push(MergedChange {
                    branch: s.clone(),
                    target: t.clone(),
                    merged: is,
                });
            }
        }
    }
    out.sort();
    out
}

/// Checks every query of `graphs` against the BFS model.
fn check_all(
    graphs: &CommitGraphs,
    repo: RepoId,
    parents: &[Vec<u32>],
    branches: &BTreeMap<String, u32>,
) {
    let anc = ancestors(parents);
    let n = parents.len() as u32;
    for a in 0..n {
        for b in 0..n {
            assert_eq!(
                graphs.is_ancestor(repo, &id(a), &id(b)).unwrap(),
                anc[b as usize].contains(&a),
                "is_ancestor({a}, {b})"
            );
        }
    }
    for (target, &t) in branches {
        let expected: Vec<String> = branches
            .iter()
            .filter(|(name, &s)| *name != target && anc[t as usize].contains(&s))
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(
            graphs.merged_into(repo, target).unwrap(),
            expected,
            "merged_into({target})"
        );
        for (source, &s) in branches {
            assert_eq!(
                graphs.is_merged(repo, source, target).unwrap(),
                anc[t as usize].contains(&s),
                "is_merged({source}, {target})"
            );
        }
    }
    let stored: BTreeMap<String, CommitId> = graphs.branches(repo).unwrap().into_iter().collect();
    let model: BTreeMap<String, CommitId> =
        branches.iter().map(|(k, &v)| (k.clone(), id(v))).collect();
    assert_eq!(stored, model);
}

/// Several threads push synced batches at once (each to its own repository, and two of them
/// to a shared one), so the pushes share group syncs; every acknowledged push is visible at
/// once to its pusher and after a reopen.
fn concurrent_pushes_all_land(store: Store) {
    const PUSHERS: u32 = 6;
    const PUSHES: u32 = 8;
    const PER_PUSH: u32 = 5;
    // Pusher t's commit number k in its own repository (ids are per repository).
    let shared = RepoId(100);
    {
        let graphs = store.open();
        std::thread::scope(|scope| {
            for t in 0..PUSHERS {
                let graphs = &graphs;
                scope.spawn(move || {
                    let repo = RepoId(u64::from(t));
                    for p in 0..PUSHES {
                        let batch: Vec<NewCommit> = (0..PER_PUSH)
                            .map(|k| {
                                let n = p * PER_PUSH + k;
                                let parents: Vec<u32> = n.checked_sub(1).into_iter().collect();
                                commit(n, &parents)
                            })
                            .collect();
                        let tip = batch[batch.len() - 1].id;
                        graphs
                            .push(repo, &batch, &[BranchUpdate::set("main", tip)], BY)
                            .unwrap();
                        assert_eq!(graphs.branch(repo, "main").unwrap(), Some(tip));
                        // The shared repository: each pusher adds a root commit of its own and
                        // a branch to it, concurrently with the others.
                        let own = 10_000 + t * PUSHES + p;
                        graphs
                            .push(
                                shared,
                                &[commit(own, &[])],
                                &[BranchUpdate::set(format!("b{own}"), id(own))],
                                BY,
                            )
                            .unwrap();
                    }
                });
            }
        });
    }
    let graphs = store.open();
    for t in 0..PUSHERS {
        let repo = RepoId(u64::from(t));
        let last = PUSHES * PER_PUSH - 1;
        assert_eq!(graphs.stats(repo).unwrap().commits, (last + 1) as usize);
        assert_eq!(graphs.branch(repo, "main").unwrap(), Some(id(last)));
        assert!(graphs.is_ancestor(repo, &id(0), &id(last)).unwrap());
        for p in 0..PUSHES {
            let own = 10_000 + t * PUSHES + p;
            assert_eq!(
                graphs.branch(shared, &format!("b{own}")).unwrap(),
                Some(id(own))
            );
        }
    }
    assert_eq!(
        graphs.stats(shared).unwrap().commits,
        (PUSHERS * PUSHES) as usize
    );
}

macro_rules! backend_suite {
    ($($(#[$meta:meta])* $backend:ident => $value:expr),* $(,)?) => {
        $(
            $(#[$meta])*
            mod $backend {
                use super::*;

                fn store() -> Store {
                    Store::new($value)
                }

                #[test]
                fn model_and_persistence() {
                    if engine::testing::skip($value) {
                        return;
                    }
                    super::model_and_persistence(store());
                }

                #[test]
                fn rejected_batches_change_nothing() {
                    if engine::testing::skip($value) {
                        return;
                    }
                    super::rejected_batches_change_nothing(store());
                }

                #[test]
                fn branch_moves_report_changes() {
                    if engine::testing::skip($value) {
                        return;
                    }
                    super::branch_moves_report_changes(store());
                }

                #[test]
                fn import_generated_history() {
                    if engine::testing::skip($value) {
                        return;
                    }
                    super::import_generated_history(store());
                }

                #[test]
                fn fixed_octopus_and_roots() {
                    if engine::testing::skip($value) {
                        return;
                    }
                    super::fixed_octopus_and_roots(store());
                }

                #[test]
                fn concurrent_pushes_all_land() {
                    if engine::testing::skip($value) {
                        return;
                    }
                    super::concurrent_pushes_all_land(store());
                }

                #[test]
                fn blocks_across_pushes_and_formats() {
                    if engine::testing::skip($value) {
                        return;
                    }
                    super::blocks_across_pushes_and_formats(store());
                }

                proptest! {
                    #![proptest_config(ProptestConfig {
                        cases: if $value == Backend::Memory { 64 } else { 10 },
                        ..ProptestConfig::default()
                    })]
                    #[test]
                    fn random_dags_agree_with_bfs(case in dag_case()) {
                        if engine::testing::skip($value) {
                            return Ok(());
                        }
                        super::random_dag(store(), case);
                    }
                }
            }
        )*
    };
}

backend_suite! {
    memory => Backend::Memory,
    #[cfg(feature = "rocksdb")]
    rocksdb => Backend::Rocksdb,
    #[cfg(feature = "sled")]
    sled => Backend::Sled,
    #[cfg(feature = "postgres")]
    postgres => Backend::Postgres,
}

/// Pushes of sizes that end inside, at and across the 256-commit blocks of the stored format,
/// each rewriting the last partial block: after reopens every commit has its parents and
/// sampled pairs agree with BFS. A batch with ids of another length, and a repository stored
/// in format 1 (one key per commit, no format record), are refused.
fn blocks_across_pushes_and_formats(store: Store) {
    let mut graphs = store.open();
    let repo = RepoId(3);
    let mut parents: Vec<Vec<u32>> = Vec::new();
    for (round, size) in [1, 254, 1, 3, 300, 1, 255, 256, 2].into_iter().enumerate() {
        let first = parents.len() as u32;
        let batch: Vec<NewCommit> = (first..first + size)
            .map(|k| {
                let ps = match k {
                    0 => vec![],
                    k if k % 50 == 0 => vec![],
                    k if k % 7 == 0 && k > 5 => vec![k - 1, k - 5, k / 2],
                    k => vec![k - 1],
                };
                parents.push(ps.clone());
                commit(k, &ps)
            })
            .collect();
        graphs.append(repo, &batch, BY).unwrap();
        if round % 3 == 2 {
            graphs = store.reopen(graphs);
        }
    }
    let graphs = store.reopen(graphs);
    let n = parents.len() as u32;
    for k in 0..n {
        let want: Vec<CommitId> = parents[k as usize].iter().map(|&p| id(p)).collect();
        assert_eq!(graphs.parents(repo, &id(k)).unwrap(), Some(want), "{k}");
    }
    let anc = ancestors(&parents);
    let mut rng = SplitMix::new(5);
    for _ in 0..3_000 {
        let (a, b) = (rng.below(n as usize) as u32, rng.below(n as usize) as u32);
        assert_eq!(
            graphs.is_ancestor(repo, &id(a), &id(b)).unwrap(),
            anc[b as usize].contains(&a),
            "is_ancestor({a}, {b})"
        );
    }
    let long = CommitId::from_bytes(&[9; 32]).unwrap();
    let err = graphs
        .append(
            repo,
            &[
                commit(n, &[n - 1]),
                NewCommit {
                    id: long,
                    parents: vec![],
                },
            ],
            BY,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommitError::IdLength {
                index: 1,
                expected: 20,
                ..
            }
        ),
        "{err}"
    );
    assert!(!graphs.contains(repo, &id(n)).unwrap());
    // A repository written by format 1: its first key is `repo ++ node 0`.
    let old = RepoId(4);
    let mut key = old.0.to_be_bytes().to_vec();
    key.extend_from_slice(&0u32.to_be_bytes());
    let mut batch = engine::WriteBatch::new();
    batch.put(
        graphs.engine().keyspace("commits.nodes").unwrap(),
        key,
        vec![20; 37],
    );
    graphs
        .engine()
        .write(batch, engine::Durability::Sync)
        .unwrap();
    let graphs = store.reopen(graphs);
    let err = graphs.branches(old).unwrap_err();
    assert!(
        matches!(
            err,
            CommitError::UnsupportedFormat {
                found: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("re-import"), "{err}");
    assert_eq!(graphs.parents(repo, &id(1)).unwrap(), Some(vec![id(0)]));
}

fn model_and_persistence(store: Store) {
    let graphs = store.open();
    let repo = RepoId(7);
    let other = RepoId(8);
    //   0 - 1 - 2 ------- 5 (merge 2, 4)
    //        \- 3 - 4 -/
    let parents = vec![vec![], vec![0], vec![1], vec![1], vec![3], vec![2, 4]];
    let commits: Vec<NewCommit> = parents
        .iter()
        .enumerate()
        .map(|(k, ps)| commit(k as u32, ps))
        .collect();
    let summary = graphs.append(repo, &commits[..4], BY).unwrap().appended;
    assert_eq!((summary.added, summary.known), (4, 0));
    // Duplicates are idempotent.
    let summary = graphs.append(repo, &commits, BY).unwrap().appended;
    assert_eq!((summary.added, summary.known), (2, 4));
    graphs
        .push(
            repo,
            &[],
            &[
                BranchUpdate::set("main", id(5)),
                BranchUpdate::set("topic", id(4)),
            ],
            BY,
        )
        .unwrap();
    let branches: BTreeMap<String, u32> =
        [("main".to_string(), 5), ("topic".to_string(), 4)].into();
    check_all(&graphs, repo, &parents, &branches);
    // Repositories are separate.
    assert!(!graphs.contains(other, &id(0)).unwrap());
    assert!(graphs.branches(other).unwrap().is_empty());
    assert!(matches!(
        graphs.is_ancestor(other, &id(0), &id(1)),
        Err(CommitError::UnknownCommit { .. })
    ));
    assert!(matches!(
        graphs.is_merged(repo, "nope", "main"),
        Err(CommitError::UnknownBranch { .. })
    ));
    let graphs = store.reopen(graphs);
    check_all(&graphs, repo, &parents, &branches);
    assert_eq!(
        graphs.parents(repo, &id(5)).unwrap(),
        Some(vec![id(2), id(4)])
    );
    assert_eq!(graphs.stats(repo).unwrap().commits, 6);
    // Appending after a reopen continues the labels.
    graphs
        .append(repo, &[commit(6, &[5]), commit(7, &[3])], BY)
        .unwrap();
    let mut parents = parents;
    parents.push(vec![5]);
    parents.push(vec![3]);
    check_all(&graphs, repo, &parents, &branches);
    let graphs = store.reopen(graphs);
    check_all(&graphs, repo, &parents, &branches);
    // SHA-256 ids.
    let long = CommitId::from_bytes(&[9; 32]).unwrap();
    graphs
        .push(
            other,
            &[NewCommit {
                id: long,
                parents: vec![],
            }],
            &[BranchUpdate::set("main", long)],
            BY,
        )
        .unwrap();
    let graphs = store.reopen(graphs);
    assert_eq!(graphs.branch(other, "main").unwrap(), Some(long));
}

fn rejected_batches_change_nothing(store: Store) {
    let graphs = store.open();
    let repo = RepoId(1);
    graphs.append(repo, &[commit(0, &[])], BY).unwrap();
    let err = graphs
        .push(
            repo,
            &[commit(1, &[0]), commit(2, &[1]), commit(3, &[99])],
            &[BranchUpdate::set("main", id(2))],
            BY,
        )
        .unwrap_err();
    match &err {
        CommitError::UnknownParent {
            index,
            commit,
            parent,
            ..
        } => {
            assert_eq!((*index, *commit, *parent), (2, id(3), id(99)));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains(&id(99).to_string()));
    // A child listed before its parent is rejected too.
    assert!(matches!(
        graphs.append(repo, &[commit(2, &[1]), commit(1, &[0])], BY),
        Err(CommitError::UnknownParent { index: 0, .. })
    ));
    // A good batch with a bad branch target is rejected whole.
    assert!(matches!(
        graphs.push(
            repo,
            &[commit(1, &[0])],
            &[BranchUpdate::set("x", id(42))],
            BY
        ),
        Err(CommitError::UnknownCommit { .. })
    ));
    assert!(matches!(
        graphs.push(
            repo,
            &[commit(1, &[0])],
            &[BranchUpdate::delete("absent")],
            BY
        ),
        Err(CommitError::UnknownBranch { .. })
    ));
    assert!(matches!(
        graphs.push(
            repo,
            &[commit(1, &[0])],
            &[BranchUpdate::set("", id(0))],
            BY
        ),
        Err(CommitError::InvalidBranchName { .. })
    ));
    // Conflicting parents for a stored commit.
    assert!(matches!(
        graphs.append(repo, &[commit(0, &[0])], BY),
        Err(CommitError::ConflictingParents { .. } | CommitError::UnknownParent { .. })
    ));
    let unchanged = |graphs: &CommitGraphs| {
        assert_eq!(graphs.stats(repo).unwrap().commits, 1);
        assert!(!graphs.contains(repo, &id(1)).unwrap());
        assert!(graphs.branches(repo).unwrap().is_empty());
    };
    unchanged(&graphs);
    unchanged(&store.reopen(graphs));
}

fn branch_moves_report_changes(store: Store) {
    let graphs = store.open();
    let repo = RepoId(3);
    let change = |branch: &str, target: &str, merged: bool| MergedChange {
        branch: branch.into(),
        target: target.into(),
        merged,
    };
    // main: 0 - 1;  topic: 1 - 2
    let out = graphs
        .push(
            repo,
            &[commit(0, &[]), commit(1, &[0]), commit(2, &[1])],
            &[
                BranchUpdate::set("main", id(1)),
                BranchUpdate::set("topic", id(2)),
            ],
            BY,
        )
        .unwrap();
    assert_eq!(out.changes, vec![change("main", "topic", true)]);
    // Fast-forward main to topic: each is merged into the other.
    let changes = graphs.set_branch(repo, "main", id(2), BY).unwrap().changes;
    assert_eq!(changes, vec![change("topic", "main", true)]);
    // Moving to the same tip changes nothing.
    assert!(graphs
        .set_branch(repo, "main", id(2), BY)
        .unwrap()
        .changes
        .is_empty());
    // topic moves on: main stays merged into topic, topic is no longer merged into main.
    let out = graphs
        .push(
            repo,
            &[commit(3, &[2])],
            &[BranchUpdate::set("topic", id(3))],
            BY,
        )
        .unwrap();
    assert_eq!(out.changes, vec![change("topic", "main", false)]);
    // Force-push main to an unrelated root: main is no longer merged into topic.
    let out = graphs
        .push(
            repo,
            &[commit(4, &[])],
            &[BranchUpdate::set("main", id(4))],
            BY,
        )
        .unwrap();
    assert_eq!(out.changes, vec![change("main", "topic", false)]);
    // Merge topic into main.
    let out = graphs
        .push(
            repo,
            &[commit(5, &[4, 3])],
            &[BranchUpdate::set("main", id(5))],
            BY,
        )
        .unwrap();
    assert_eq!(out.changes, vec![change("topic", "main", true)]);
    let graphs = store.reopen(graphs);
    assert_eq!(
        graphs.merged_into(repo, "main").unwrap(),
        vec!["topic".to_string()]
    );
    // Deleting topic ends its status.
    let changes = graphs.delete_branch(repo, "topic", BY).unwrap().changes;
    assert_eq!(changes, vec![change("topic", "main", false)]);
    assert!(graphs.merged_into(repo, "main").unwrap().is_empty());
}

fn fixed_octopus_and_roots(store: Store) {
    let graphs = store.open();
    let repo = RepoId(11);
    // Two roots (0, 3), an octopus (6) and a merge of the two histories (8).
    let parents: Vec<Vec<u32>> = vec![
        vec![],
        vec![0],
        vec![0],
        vec![],
        vec![3],
        vec![1],
        vec![5, 2, 4, 1],
        vec![2],
        vec![7, 6],
        vec![4],
    ];
    for (k, ps) in parents.iter().enumerate() {
        graphs.append(repo, &[commit(k as u32, ps)], BY).unwrap();
    }
    let branches: BTreeMap<String, u32> = [("a", 8), ("b", 6), ("c", 9), ("d", 3), ("e", 7)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let updates: Vec<BranchUpdate> = branches
        .iter()
        .map(|(k, &v)| BranchUpdate::set(k.clone(), id(v)))
        .collect();
    graphs.push(repo, &[], &updates, BY).unwrap();
    check_all(&graphs, repo, &parents, &branches);
    let graphs = store.reopen(graphs);
    check_all(&graphs, repo, &parents, &branches);
}

fn import_generated_history(mut store: Store) {
    store.checkpoint_every = 16;
    let dag = GeneratedDag::generate(&DagParams {
        commits: 1_500,
        branches: 20,
        seed: 99,
        ..DagParams::default()
    });
    let ids = dag.synthetic_ids(5);
    let rev_list = dag.rev_list(&ids);
    let refs = format!("{}refs/tags/v1 {}\n", dag.refs(&ids), ids[3]);
    let graphs = store.open();
    let repo = RepoId(2);
    // Import half first (the older half), then everything: the rest is incremental.
    let half = 750;
    let older: String = {
        let sub = GeneratedDag {
            parents: dag.parents[..half].to_vec(),
            branches: vec![("main".into(), half as u32 - 1)],
            made_on: dag.made_on[..half].to_vec(),
        };
        sub.rev_list(&ids)
    };
    let first = graphs
        .import(
            repo,
            &older,
            &format!("refs/heads/main {}\n", ids[half - 1]),
            BY,
        )
        .unwrap();
    assert_eq!((first.appended.added, first.branches), (half, 1));
    let summary = graphs.import(repo, &rev_list, &refs, BY).unwrap();
    assert_eq!(summary.appended.added, 1_500 - half);
    assert_eq!(summary.appended.known, half);
    assert_eq!((summary.branches, summary.other_refs), (20, 1));
    let anc = ancestors(&dag.parents);
    let check = |graphs: &CommitGraphs| {
        let mut rng = SplitMix::new(1);
        for _ in 0..5_000 {
            let a = rng.below(ids.len());
            let b = rng.below(ids.len());
            assert_eq!(
                graphs.is_ancestor(repo, &ids[a], &ids[b]).unwrap(),
                anc[b].contains(&(a as u32)),
                "is_ancestor({a}, {b})"
            );
        }
        for (target, t) in &dag.branches {
            let expected: Vec<String> = dag
                .branches
                .iter()
                .filter(|(name, s)| name != target && anc[*t as usize].contains(s))
                .map(|(name, _)| name.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            assert_eq!(graphs.merged_into(repo, target).unwrap(), expected);
        }
    };
    check(&graphs);
    let graphs = store.reopen(graphs);
    check(&graphs);
    // A malformed line names its number and imports nothing.
    let bad = format!("{}\n{} zz\n", ids[0], ids[1]);
    match graphs.import(RepoId(9), &bad, "", BY) {
        Err(CommitError::Import {
            input: ImportInput::RevList,
            line: 2,
            error: LineError::BadId { token: 2, .. },
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    let missing = format!("{} {}\n", ids[1], ids[0]);
    assert!(matches!(
        graphs.import(RepoId(9), &missing, "", BY),
        Err(CommitError::Import {
            line: 1,
            error: LineError::UnknownParent { .. },
            ..
        })
    ));
    assert!(matches!(
        graphs.import(
            RepoId(9),
            &format!("{}\n", ids[0]),
            &format!("refs/heads/x {}\n", ids[5]),
            BY
        ),
        Err(CommitError::Import {
            input: ImportInput::Refs,
            line: 1,
            error: LineError::UnknownTarget { .. },
        })
    ));
    assert_eq!(graphs.stats(RepoId(9)).unwrap().commits, 0);
}

/// A random DAG case: per commit a kind (root, 1 parent, merge, octopus) and parent picks;
/// batch split points; branch moves.
#[derive(Clone, Debug)]
pub(crate) struct DagCase {
    pub(crate) checkpoint_every: usize,
    commits: Vec<(u8, Vec<prop::sample::Index>)>,
    pub(crate) splits: Vec<prop::sample::Index>,
    pub(crate) moves: Vec<(u8, prop::sample::Index)>,
}

pub(crate) fn dag_case() -> impl Strategy<Value = DagCase> {
    (
        proptest::collection::vec(
            (
                0u8..20,
                proptest::collection::vec(any::<prop::sample::Index>(), 4),
            ),
            1..48,
        ),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        proptest::collection::vec((0u8..5, any::<prop::sample::Index>()), 1..12),
        2usize..8,
    )
        .prop_map(|(commits, splits, moves, checkpoint_every)| DagCase {
            checkpoint_every,
            commits,
            splits,
            moves,
        })
}

impl DagCase {
    pub(crate) fn parents(&self) -> Vec<Vec<u32>> {
        self.commits
            .iter()
            .enumerate()
            .map(|(k, (kind, picks))| {
                let count = match kind {
                    _ if k == 0 => 0,
                    0..=1 => 0,
                    2..=11 => 1,
                    12..=16 => 2,
                    _ => 3 + usize::from(*kind == 19),
                };
                let mut ps: Vec<u32> = Vec::new();
                for pick in picks.iter().take(count) {
                    let p = pick.index(k) as u32;
                    if !ps.contains(&p) {
                        ps.push(p);
                    }
                }
                ps
            })
            .collect()
    }
}

fn random_dag(mut store: Store, case: DagCase) {
    store.checkpoint_every = case.checkpoint_every;
    let parents = case.parents();
    let n = parents.len();
    let anc = ancestors(&parents);
    let commits: Vec<NewCommit> = parents
        .iter()
        .enumerate()
        .map(|(k, ps)| commit(k as u32, ps))
        .collect();
    let mut cuts: Vec<usize> = case.splits.iter().map(|s| s.index(n + 1)).collect();
    cuts.push(0);
    cuts.push(n);
    cuts.sort_unstable();
    let graphs = store.open();
    let repo = RepoId(4);
    for pair in cuts.windows(2) {
        graphs.append(repo, &commits[pair[0]..pair[1]], BY).unwrap();
    }
    let mut branches: BTreeMap<String, u32> = BTreeMap::new();
    for (branch, target) in &case.moves {
        // `main` names the default branch, whose checkpoints are the cached vectors' bases.
        let name = match branch {
            0 => "main".to_string(),
            _ => format!("br{branch}"),
        };
        let before = branches.clone();
        let tip = target.index(n) as u32;
        branches.insert(name.clone(), tip);
        let changes = graphs.set_branch(repo, &name, id(tip), BY).unwrap().changes;
        assert_eq!(changes, expected_changes(&anc, &before, &branches));
    }
    check_all(&graphs, repo, &parents, &branches);
    let graphs = store.reopen(graphs);
    check_all(&graphs, repo, &parents, &branches);
    // Moves after a reopen, against a warm and a cold cache, and one deletion.
    if let Some(name) = branches.keys().next().cloned() {
        let before = branches.clone();
        branches.remove(&name);
        let changes = graphs.delete_branch(repo, &name, BY).unwrap().changes;
        assert_eq!(changes, expected_changes(&anc, &before, &branches));
    }
}

proptest! {
    /// The import parsers never panic, on text made of what their inputs are made of.
    #[test]
    fn parsers_never_panic(text in "([0-9a-fA-Fg /\\r\\n\u{e9}]|refs/heads/x |[0-9a]{40}|[0-9a]{64}){0,40}") {
        let entries = commitgraph::import::parse_rev_list(&text);
        if let Ok(entries) = &entries {
            let ordered = commitgraph::import::order_commits(entries, |_| false, &[]);
            if let Ok(ordered) = ordered {
                prop_assert!(ordered.len() <= entries.len());
            }
        }
        let _ = commitgraph::import::parse_refs(&text);
    }

    /// Valid rev-list text in any line order imports to the same graph.
    #[test]
    fn rev_list_order_does_not_matter(case in dag_case(), seed in any::<u64>()) {
        let parents = case.parents();
        let mut lines: Vec<String> = parents
            .iter()
            .enumerate()
            .map(|(k, ps)| {
                let mut line = id(k as u32).to_string();
                for p in ps {
                    line.push(' ');
                    line.push_str(&id(*p).to_string());
                }
                line
            })
            .collect();
        let mut rng = SplitMix::new(seed);
        for i in (1..lines.len()).rev() {
            lines.swap(i, rng.below(i + 1));
        }
        let entries = commitgraph::import::parse_rev_list(&lines.join("\n")).unwrap();
        let ordered = commitgraph::import::order_commits(&entries, |_| false, &[]).unwrap();
        prop_assert_eq!(ordered.len(), parents.len());
        let mut index = commitgraph::CommitIndex::with_checkpoint_interval(RepoId(0), 2);
        index.append(&ordered).unwrap();
        let anc = ancestors(&parents);
        for a in 0..parents.len() as u32 {
            for b in 0..parents.len() as u32 {
                prop_assert_eq!(
                    index.is_ancestor(&id(a), &id(b)),
                    Some(anc[b as usize].contains(&a))
                );
            }
        }
    }
}

#[test]
fn push_moving_several_branches_reports_every_pair() {
    let graphs =
        CommitGraphs::open_standalone(EngineConfig::memory().open(STANDALONE_KEYSPACES).unwrap())
            .unwrap();
    let repo = RepoId(6);
    let parents: Vec<Vec<u32>> = vec![vec![], vec![0], vec![0], vec![1, 2], vec![2]];
    let commits: Vec<NewCommit> = parents
        .iter()
        .enumerate()
        .map(|(k, ps)| commit(k as u32, ps))
        .collect();
    let anc = ancestors(&parents);
    let mut branches: BTreeMap<String, u32> = [("a", 1), ("b", 2), ("c", 0)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    let updates: Vec<BranchUpdate> = branches
        .iter()
        .map(|(k, &v)| BranchUpdate::set(k.clone(), id(v)))
        .collect();
    let out = graphs.push(repo, &commits[..3], &updates, BY).unwrap();
    assert_eq!(
        out.changes,
        expected_changes(&anc, &BTreeMap::new(), &branches)
    );
    let before = branches.clone();
    branches.insert("a".into(), 3);
    branches.insert("b".into(), 4);
    branches.remove("c");
    let out = graphs
        .push(
            repo,
            &commits[3..],
            &[
                BranchUpdate::set("a", id(3)),
                BranchUpdate::set("b", id(4)),
                BranchUpdate::delete("c"),
            ],
            BY,
        )
        .unwrap();
    assert!(!out.changes.is_empty());
    assert_eq!(out.changes, expected_changes(&anc, &before, &branches));
}

/// The branches other than `target` (whose tip is `t`) that are ancestors of it, by name.
fn merged_by_ancestry(
    graphs: &CommitGraphs,
    repo: RepoId,
    tips: &[(String, CommitId)],
    target: &str,
    t: &CommitId,
) -> Vec<String> {
    tips.iter()
        .filter(|(name, s)| name != target && graphs.is_ancestor(repo, s, t).unwrap())
        .map(|(name, _)| name.clone())
        .collect()
}

/// `rounds` times over, `is_merged` of every branch into `target` answers as `is_ancestor`.
fn assert_is_merged_as_ancestry(
    graphs: &CommitGraphs,
    repo: RepoId,
    tips: &[(String, CommitId)],
    target: &str,
    t: &CommitId,
    rounds: usize,
) {
    for _ in 0..rounds {
        for (source, s) in tips {
            assert_eq!(
                graphs.is_merged(repo, source, target).unwrap(),
                graphs.is_ancestor(repo, s, t).unwrap(),
                "{source} into {target}"
            );
        }
    }
}

/// Many topic branches and a reach cache far smaller than their whole vectors: vectors are
/// cached as differences from `main`'s checkpoints (and evicted), and every `is_merged` (walked
/// at first, then from the cached vector) and `merged_into` answers as `is_ancestor` does.
#[test]
fn a_small_reach_cache_answers_as_the_walk() {
    let dag = GeneratedDag::generate(&DagParams {
        commits: 4_000,
        branches: 400,
        merge_ratio: 0.25,
        seed: 5,
        ..DagParams::default()
    });
    let ids = dag.synthetic_ids(5);
    let budget = 16 << 10;
    let engine = EngineConfig::memory().open(STANDALONE_KEYSPACES).unwrap();
    let graphs = crate::open_graphs(engine, 8).with_reach_cache_bytes(budget);
    let repo = RepoId(7);
    graphs
        .import(repo, &dag.rev_list(&ids), &dag.refs(&ids), BY)
        .unwrap();
    let tips = graphs.branches(repo).unwrap();
    assert!(tips.iter().any(|(name, _)| name == "main"));
    for (target, t) in tips.iter().step_by(7) {
        let expected = merged_by_ancestry(&graphs, repo, &tips, target, t);
        // Three rounds: walks until the target is admitted, then its cached vector.
        assert_is_merged_as_ancestry(&graphs, repo, &tips, target, t, 3);
        assert_eq!(
            graphs.merged_into(repo, target).unwrap(),
            expected,
            "{target}"
        );
        let stats = graphs.stats(repo).unwrap();
        assert!(stats.bytes - stats.memory.total() <= budget);
    }
}

/// Long first-parent chains (hundreds of commits on side branches, thousands on `main`) and
/// a cache where every branch's whole vector fits: vectors are cached in byte entries with
/// many long entries kept beside them in their lines, and every `is_merged` and
/// `merged_into` answers as `is_ancestor` does.
#[test]
fn long_chains_cached_in_bytes_answer_as_the_walk() {
    let dag = GeneratedDag::generate(&DagParams {
        commits: 40_000,
        branches: 60,
        merge_ratio: 0.1,
        reset_ratio: 0.0005,
        seed: 11,
        ..DagParams::default()
    });
    let ids = dag.synthetic_ids(11);
    // Besides the generated branches, branches at random commits: older ones are ancestors
    // of many others, so both answers are common.
    let mut refs = dag.refs(&ids);
    let mut rng = SplitMix::new(11);
    for k in 0..100 {
        let at = rng.next_u64() as usize % ids.len();
        refs.push_str(&format!("refs/heads/at-{k} {}\n", ids[at]));
    }
    let engine = EngineConfig::memory().open(STANDALONE_KEYSPACES).unwrap();
    let graphs = crate::open_graphs(engine, 64);
    let repo = RepoId(8);
    graphs.import(repo, &dag.rev_list(&ids), &refs, BY).unwrap();
    let tips = graphs.branches(repo).unwrap();
    let mut merged_pairs = 0;
    for (target, t) in &tips {
        let expected = merged_by_ancestry(&graphs, repo, &tips, target, t);
        merged_pairs += expected.len();
        // The first `merged_into` computes and caches the vector; the rounds after it read
        // the cached form, and the last `merged_into` spreads it out again.
        assert_eq!(
            graphs.merged_into(repo, target).unwrap(),
            expected,
            "{target}"
        );
        assert_is_merged_as_ancestry(&graphs, repo, &tips, target, t, 2);
        assert_eq!(
            graphs.merged_into(repo, target).unwrap(),
            expected,
            "{target}"
        );
    }
    // Both answers occur often enough to tell a wrong reading from a right one.
    let pairs = tips.len() * (tips.len() - 1);
    assert!(
        merged_pairs * 10 > pairs && merged_pairs * 10 < pairs * 9,
        "{merged_pairs} of {pairs} pairs merged"
    );
    let stats = graphs.stats(repo).unwrap();
    assert!(stats.bytes > stats.memory.total(), "nothing cached");
}
