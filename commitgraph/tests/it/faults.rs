//! Injected engine faults at every operation: a small script of pushes, branch moves and
//! imports runs over a [`FaultyEngine`] that fails its Nth write or the sync of it; after a
//! simulated crash (only what was synced survives) every acknowledged step is there and the
//! failed one left no trace.

use std::sync::Arc;

use commitgraph::{BranchUpdate, CommitGraphs, CommitId, NewCommit, RepoId};

use crate::BY;
use engine::testing::every_fault;
use engine::{Engine, FaultyEngine};

fn commit_id(n: u8) -> CommitId {
    CommitId::from_bytes(&[n; 20]).unwrap()
}

fn new_commit(n: u8, parents: &[u8]) -> NewCommit {
    NewCommit {
        id: commit_id(n),
        parents: parents.iter().map(|&p| commit_id(p)).collect(),
    }
}

const REPO: RepoId = RepoId(7);
const COMMIT_STEPS: usize = 8;

fn commit_step(engine: &Arc<FaultyEngine>, step: usize) -> Result<(), String> {
    let graphs = CommitGraphs::open_standalone(Arc::clone(engine) as Arc<dyn Engine>)
        .map_err(|e| e.to_string())?;
    // The script counts the engine's operations: the history indexer's would come in between
    // (the histories read the unindexed events all the same).
    graphs.change_log().set_background_indexing(false);
    let result = match step {
        0 => graphs
            .append(REPO, &[new_commit(1, &[]), new_commit(2, &[1])], BY)
            .map(drop),
        1 => graphs.set_branch(REPO, "main", commit_id(2), BY).map(drop),
        2 => graphs
            .push(
                REPO,
                &[new_commit(3, &[1]), new_commit(4, &[3])],
                &[BranchUpdate::set("topic", commit_id(4))],
                BY,
            )
            .map(drop),
        3 => graphs
            .push(
                REPO,
                &[new_commit(5, &[2, 4])],
                &[BranchUpdate::set("main", commit_id(5))],
                BY,
            )
            .map(drop),
        4 => graphs.delete_branch(REPO, "topic", BY).map(drop),
        5 => graphs
            .import(RepoId(8), &format!("{}\n", commit_id(5)), "", BY)
            .map(drop),
        6 => graphs
            .import(
                REPO,
                &format!("{} {}\n", commit_id(6), commit_id(5)),
                &format!("refs/heads/release {}\n", commit_id(6)),
                BY,
            )
            .map(drop),
        7 => graphs.set_branch(REPO, "old", commit_id(1), BY).map(drop),
        _ => unreachable!(),
    };
    result.map_err(|e| e.to_string())
}

fn commit_fingerprint(engine: &Arc<FaultyEngine>) -> String {
    let graphs =
        CommitGraphs::open_standalone(Arc::clone(engine) as Arc<dyn Engine>).expect("reopen");
    let mut text = String::new();
    for repo in [REPO, RepoId(8)] {
        text += &format!("{repo:?} branches {:?}\n", graphs.branches(repo).unwrap());
        let known: Vec<u8> = (1..=6)
            .filter(|&n| graphs.contains(repo, &commit_id(n)).unwrap())
            .collect();
        text += &format!("commits {known:?}\n");
        for &a in &known {
            for &b in &known {
                if graphs
                    .is_ancestor(repo, &commit_id(a), &commit_id(b))
                    .unwrap()
                {
                    text += &format!("{a}<={b} ");
                }
            }
        }
        for (branch, _) in graphs.branches(repo).unwrap() {
            text += &format!(
                "\nmerged into {branch}: {:?}",
                graphs.merged_into(repo, &branch).unwrap()
            );
        }
        text += "\n";
    }
    // The feed: exactly one event per acknowledged write, none for a failed one.
    for (revision, payload) in graphs.change_log().read(0, 1000).unwrap() {
        let event = commitgraph::RepoEvent::decode(&payload).unwrap().unwrap();
        text += &format!("{revision} {} {}\n", event.change.kind(), event.repo_id);
    }
    text
}

#[test]
fn every_injected_fault_keeps_acknowledged_pushes_and_nothing_else() {
    let injected = every_fault(
        commitgraph::STANDALONE_KEYSPACES,
        COMMIT_STEPS,
        commit_step,
        commit_fingerprint,
    );
    eprintln!("commitgraph: {injected} faults injected");
    assert!(injected >= 2 * COMMIT_STEPS as u64);
}
