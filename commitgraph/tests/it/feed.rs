//! The change feed of commit graphs: the events and history of every write, and the replay
//! property (replaying the feed from revision 0 onto empty graphs rebuilds them).

use std::collections::BTreeMap;

use commitgraph::{
    BranchUpdate, CommitGraphs, MergedChange, NewCommit, RepoChange, RepoEvent, RepoId, Writer,
    STANDALONE_KEYSPACES,
};
use engine::EngineConfig;
use proptest::prelude::*;

use crate::commits::{commit, dag_case, id, DagCase};
use crate::BY;

fn fresh(every: usize) -> CommitGraphs {
    crate::open_graphs(
        EngineConfig::memory().open(STANDALONE_KEYSPACES).unwrap(),
        every,
    )
}

/// Every event of the feed, decoded.
fn events(graphs: &CommitGraphs) -> Vec<(u64, RepoEvent)> {
    graphs
        .change_log()
        .read(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(revision, payload)| (revision, RepoEvent::decode(&payload).unwrap().unwrap()))
        .collect()
}

#[test]
fn every_write_records_its_event_and_history() {
    let graphs = fresh(3);
    let repo = RepoId(3);
    let alice = Writer::new("alice", "hello");
    let bob = Writer::new("bob", "hello");
    let out = graphs
        .push(
            repo,
            &[commit(0, &[]), commit(1, &[0]), commit(2, &[0])],
            &[
                BranchUpdate::set("main", id(1)),
                BranchUpdate::set("topic", id(2)),
            ],
            alice,
        )
        .unwrap();
    assert_eq!(out.revision, 3);
    // A merge of topic into main, by bob.
    let out = graphs
        .push(
            repo,
            &[commit(3, &[1, 2])],
            &[BranchUpdate::set("main", id(3))],
            bob,
        )
        .unwrap();
    assert_eq!(out.revision, 5);
    let merged = MergedChange {
        branch: "topic".into(),
        target: "main".into(),
        merged: true,
    };
    assert_eq!(out.changes, vec![merged.clone()]);
    // A re-push of stored commits writes nothing and answers the head.
    let again = graphs.append(repo, &[commit(3, &[1, 2])], bob).unwrap();
    assert_eq!((again.appended.known, again.revision), (1, 5));
    let out = graphs.delete_branch(repo, "topic", alice).unwrap();
    assert_eq!(out.revision, 6);

    let all = events(&graphs);
    let kinds: Vec<(u64, &str, &str)> = all
        .iter()
        .map(|(r, e)| (*r, e.change.kind(), e.actor.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, "commits.pushed", "alice"),
            (2, "branch.set", "alice"),
            (3, "branch.set", "alice"),
            (4, "commits.pushed", "bob"),
            (5, "branch.set", "bob"),
            (6, "branch.deleted", "alice"),
        ]
    );
    assert!(all.iter().all(|(_, e)| e.repo == "hello" && e.repo_id == 3));
    assert!(all.iter().all(|(_, e)| e.time_us > 1_700_000_000_000_000));
    assert_eq!(
        all[3].1.change,
        RepoChange::CommitsPushed {
            count: 1,
            commits: vec![commit(3, &[1, 2])],
        }
    );
    assert_eq!(
        all[4].1.change,
        RepoChange::BranchSet {
            branch: "main".into(),
            before: Some(id(1)),
            after: id(3),
            changes: vec![merged],
        }
    );
    assert_eq!(
        all[5].1.change,
        RepoChange::BranchDeleted {
            branch: "topic".into(),
            before: id(2),
            changes: vec![MergedChange {
                branch: "topic".into(),
                target: "main".into(),
                merged: false,
            }],
        }
    );
    // The payload's top-level fields, as a feed shared with other stores filters them.
    let (_, payload) = &graphs.change_log().read(4, 1).unwrap()[0];
    let json: serde_json::Value = serde_json::from_slice(payload).unwrap();
    for (field, value) in [
        ("kind", "branch.set"),
        ("actor", "bob"),
        ("repo", "hello"),
        ("branch", "main"),
    ] {
        assert_eq!(json[field], value, "{json}");
    }

    // History: per branch and per repository, oldest first, paged by revision.
    let main: Vec<u64> = graphs
        .branch_history(repo, "main", 0, 10)
        .unwrap()
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(main, vec![2, 5]);
    let topic = graphs.branch_history(repo, "topic", 0, 1).unwrap();
    assert_eq!(topic.len(), 1);
    assert_eq!(topic[0].0, 3);
    let next = graphs.branch_history(repo, "topic", 3, 1).unwrap();
    assert_eq!(next[0].0, 6);
    assert!(graphs
        .branch_history(repo, "topic", 6, 1)
        .unwrap()
        .is_empty());
    // A branch whose name extends another's has its own history.
    assert!(graphs
        .branch_history(repo, "mai", 0, 10)
        .unwrap()
        .is_empty());
    let whole: Vec<u64> = graphs
        .repo_history(repo, 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(whole, vec![1, 2, 3, 4, 5, 6]);
    assert!(graphs.repo_history(RepoId(4), 0, 100).unwrap().is_empty());

    // Per actor, in every repository: oldest first after a revision, newest first before one.
    let revisions = |page: Vec<(u64, RepoEvent)>| page.iter().map(|e| e.0).collect::<Vec<_>>();
    let of = |actor: &str, after: u64, limit: usize| {
        revisions(graphs.actor_history(actor, after, limit).unwrap())
    };
    assert_eq!(of("alice", 0, 100), vec![1, 2, 3, 6]);
    assert_eq!(of("bob", 0, 100), vec![4, 5]);
    assert_eq!(of("alice", 2, 2), vec![3, 6]);
    assert!(
        of("ali", 0, 100).is_empty(),
        "an actor's prefix is not another's"
    );
    let newest = graphs.actor_history_before("alice", u64::MAX, 3).unwrap();
    assert_eq!(revisions(newest), vec![6, 3, 2]);
    let older = graphs.actor_history_before("alice", 2, 3).unwrap();
    assert_eq!(revisions(older), vec![1]);
    assert!(graphs.actor_history("bob", 0, 100).unwrap()[0].1.actor == "bob");
}

#[test]
fn an_import_is_one_event_with_counts() {
    let graphs = fresh(3);
    let repo = RepoId(9);
    graphs
        .push(
            repo,
            &[commit(0, &[])],
            &[BranchUpdate::set("old", id(0))],
            BY,
        )
        .unwrap();
    let rev_list = format!("{} {}\n{} {}\n{}\n", id(2), id(1), id(1), id(0), id(0));
    let refs = format!(
        "refs/heads/main {}\nrefs/heads/side {}\nrefs/tags/v1 {}\n",
        id(2),
        id(1),
        id(0)
    );
    let summary = graphs
        .import(repo, &rev_list, &refs, Writer::new("importer", "r9"))
        .unwrap();
    assert_eq!(summary.revision, 3);
    let all = events(&graphs);
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].1.actor, "importer");
    assert_eq!(
        all[2].1.change,
        RepoChange::ImportRepo {
            added: 2,
            known: 1,
            branches: 2,
            other_refs: 1,
        }
    );
    // The import is in the history of the branches it set.
    assert_eq!(graphs.branch_history(repo, "side", 0, 10).unwrap()[0].0, 3);
    assert_eq!(graphs.branch_history(repo, "main", 0, 10).unwrap().len(), 1);
    assert_eq!(graphs.branch_history(repo, "old", 0, 10).unwrap().len(), 1);
    let importer = graphs.actor_history("importer", 0, 10).unwrap();
    assert_eq!(importer.len(), 1);
    assert_eq!(importer[0].0, 3);
    // Replaying it applies nothing: imports need a reload.
    assert_eq!(fresh(3).replay(&all[2].1).unwrap(), None);
    // Rev-list text pushed (children first, as git prints it) is recorded parents first.
    let text = format!("{} {}\n{} {}\n", id(4), id(3), id(3), id(2));
    let out = graphs.push_rev_list(repo, &text, BY).unwrap();
    assert_eq!((out.appended.added, out.revision), (2, 4));
    assert_eq!(
        events(&graphs)[3].1.change,
        RepoChange::CommitsPushed {
            count: 2,
            commits: vec![commit(3, &[2]), commit(4, &[3])],
        }
    );
    let again = graphs.push_rev_list(repo, &text, BY).unwrap();
    assert_eq!((again.appended.known, again.revision), (2, 4));
}

#[test]
fn a_failed_write_records_no_event() {
    use engine::{Engine, Fault, FaultyEngine};
    use std::sync::Arc;
    // Operations: the log's opening flush (1), the first push's write (2) and sync (3), the
    // second push's write (4, failing).
    let engine = Arc::new(FaultyEngine::new(STANDALONE_KEYSPACES).fail_at(4, Fault::Write));
    let graphs = crate::open_graphs(Arc::clone(&engine) as Arc<dyn Engine>, 3);
    // Operation 4 is the second push's, not the history indexer's.
    graphs.change_log().set_background_indexing(false);
    let repo = RepoId(1);
    graphs
        .push(
            repo,
            &[commit(0, &[])],
            &[BranchUpdate::set("main", id(0))],
            BY,
        )
        .unwrap();
    graphs
        .push(
            repo,
            &[commit(1, &[0])],
            &[BranchUpdate::set("main", id(1))],
            BY,
        )
        .unwrap_err();
    assert_eq!(graphs.change_log().head(), 2);
    assert_eq!(graphs.branch(repo, "main").unwrap(), Some(id(0)));
    assert!(!graphs.contains(repo, &id(1)).unwrap());
    assert_eq!(graphs.repo_history(repo, 0, 10).unwrap().len(), 2);
}

/// The state replay must reproduce: branches, commits, every ancestry pair, every merged list.
fn state(graphs: &CommitGraphs, repo: RepoId, n: u32) -> String {
    let mut text = format!("branches {:?}\n", graphs.branches(repo).unwrap());
    for a in 0..n {
        if !graphs.contains(repo, &id(a)).unwrap() {
            text += &format!("missing {a}\n");
            continue;
        }
        text += &format!("{a} parents {:?}:", graphs.parents(repo, &id(a)).unwrap());
        for b in 0..n {
            if graphs.contains(repo, &id(b)).unwrap()
                && graphs.is_ancestor(repo, &id(a), &id(b)).unwrap()
            {
                text += &format!(" {b}");
            }
        }
        text += "\n";
    }
    for (branch, _) in graphs.branches(repo).unwrap() {
        text += &format!(
            "merged into {branch}: {:?}\n",
            graphs.merged_into(repo, &branch).unwrap()
        );
    }
    text
}

/// An event without its time and merged-status changes (which a replay recomputes per
/// event, where the original push reported them once for several moves).
fn essence(event: &RepoEvent) -> RepoEvent {
    let mut event = event.clone();
    event.time_us = 0;
    match &mut event.change {
        RepoChange::BranchSet { changes, .. } | RepoChange::BranchDeleted { changes, .. } => {
            changes.clear()
        }
        _ => {}
    }
    event
}

fn replay_case(case: DagCase, deletes: Vec<prop::sample::Index>) {
    let parents = case.parents();
    let n = parents.len();
    let commits: Vec<NewCommit> = parents
        .iter()
        .enumerate()
        .map(|(k, ps)| commit(k as u32, ps))
        .collect();
    let source = fresh(case.checkpoint_every);
    let (one, two) = (RepoId(1), RepoId(2));
    let by_one = Writer::new("alice", "one");
    let by_two = Writer::new("bob", "two");
    // Repository one: the batches, each pushed with one branch move among its commits, then
    // the remaining moves alone, then deletions.
    let mut cuts: Vec<usize> = case.splits.iter().map(|s| s.index(n + 1)).collect();
    cuts.extend([0, n]);
    cuts.sort_unstable();
    let mut moves = case.moves.iter();
    let mut branches: BTreeMap<String, u32> = BTreeMap::new();
    for pair in cuts.windows(2) {
        let mut updates = Vec::new();
        if pair[1] > 0 {
            if let Some((branch, target)) = moves.next() {
                let tip = target.index(pair[1]) as u32;
                branches.insert(format!("br{branch}"), tip);
                updates.push(BranchUpdate::set(format!("br{branch}"), id(tip)));
            }
        }
        source
            .push(one, &commits[pair[0]..pair[1]], &updates, by_one)
            .unwrap();
    }
    for (branch, target) in moves {
        let tip = target.index(n) as u32;
        branches.insert(format!("br{branch}"), tip);
        source
            .set_branch(one, &format!("br{branch}"), id(tip), by_one)
            .unwrap();
    }
    for delete in deletes {
        if branches.is_empty() {
            break;
        }
        let name = branches.keys().nth(delete.index(branches.len())).cloned();
        let name = name.unwrap();
        branches.remove(&name);
        source.delete_branch(one, &name, by_one).unwrap();
    }
    // Repository two: everything in one push, the moves (some of one branch twice) with it.
    let updates: Vec<BranchUpdate> = case
        .moves
        .iter()
        .map(|(branch, target)| {
            BranchUpdate::set(format!("br{branch}"), id(target.index(n) as u32))
        })
        .collect();
    source.push(two, &commits, &updates, by_two).unwrap();

    // Replay the whole feed onto empty graphs (another checkpoint interval: labels may
    // differ, answers may not).
    let replica = fresh(7);
    let original = events(&source);
    for (_, event) in &original {
        assert!(replica.replay(event).unwrap().is_some());
    }
    for repo in [one, two] {
        assert_eq!(
            state(&replica, repo, n as u32),
            state(&source, repo, n as u32)
        );
    }
    // The replica's own feed records the same writes.
    let replayed = events(&replica);
    assert_eq!(replayed.len(), original.len());
    for ((r1, e1), (r2, e2)) in original.iter().zip(&replayed) {
        assert_eq!(r1, r2);
        assert_eq!(essence(e1), essence(e2));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn replaying_the_feed_rebuilds_commits_branches_and_merged_status(
        case in dag_case(),
        deletes in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        replay_case(case, deletes);
    }
}
