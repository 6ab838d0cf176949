//! Failed engine writes and crashes: nothing half-applied, nothing acknowledged lost.

use super::*;

/// An engine whose writes fail while `fail` is set, over a shared `MemEngine`.
#[derive(Debug)]
struct FailingEngine {
    inner: MemEngine,
    fail: std::sync::atomic::AtomicBool,
}

impl engine::ReadView for FailingEngine {
    fn get(&self, keyspace: engine::Keyspace, key: &[u8]) -> engine::Result<Option<Vec<u8>>> {
        self.inner.get(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: engine::Keyspace,
        range: engine::ScanRange,
        direction: engine::Direction,
    ) -> engine::Result<engine::KvIter<'_>> {
        self.inner.scan(keyspace, range, direction)
    }
}

impl Engine for FailingEngine {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn keyspace(&self, name: &str) -> engine::Result<engine::Keyspace> {
        self.inner.keyspace(name)
    }

    fn write(
        &self,
        batch: engine::WriteBatch,
        durability: engine::Durability,
    ) -> engine::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(engine::Error::Config {
                reason: "injected write failure".into(),
            });
        }
        self.inner.write(batch, durability)
    }

    fn snapshot(&self) -> engine::Result<Box<dyn engine::ReadView + '_>> {
        self.inner.snapshot()
    }

    fn flush(&self) -> engine::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn failed_engine_write_leaves_index_and_store_unchanged() {
    let shared = MemEngine::new(STANDALONE_KEYSPACES);
    let failing = Arc::new(FailingEngine {
        inner: shared.reopen(STANDALONE_KEYSPACES),
        fail: std::sync::atomic::AtomicBool::new(false),
    });
    let graphs = CommitGraphs::open_standalone(failing.clone()).unwrap();
    let repo = RepoId(5);
    graphs
        .push(
            repo,
            &[commit(0, &[])],
            &[BranchUpdate::set("main", id(0))],
            BY,
        )
        .unwrap();
    failing
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = graphs
        .push(
            repo,
            &[commit(1, &[0]), commit(2, &[1, 0])],
            &[BranchUpdate::set("main", id(2))],
            BY,
        )
        .unwrap_err();
    assert!(matches!(err, CommitError::Engine(_)));
    assert!(!graphs.contains(repo, &id(1)).unwrap());
    assert_eq!(graphs.branch(repo, "main").unwrap(), Some(id(0)));
    // The same push succeeds once the engine does, with the same dense ids.
    failing
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    graphs
        .push(
            repo,
            &[commit(1, &[0]), commit(2, &[1, 0])],
            &[BranchUpdate::set("main", id(2))],
            BY,
        )
        .unwrap();
    let reopened =
        CommitGraphs::open_standalone(Arc::new(shared.reopen(STANDALONE_KEYSPACES))).unwrap();
    assert!(reopened.is_ancestor(repo, &id(0), &id(2)).unwrap());
    assert_eq!(reopened.stats(repo).unwrap().commits, 3);
}

/// The batch of the crash test: 50 commits continuing `main`, one of them a merge of a side
/// commit of the previous batch.
#[cfg(feature = "rocksdb")]
fn crash_batch(i: u32) -> Vec<NewCommit> {
    let base = i * 50;
    (0..50)
        .map(|k| {
            let n = base + k;
            let mut parents = if n == 0 { vec![] } else { vec![n - 1] };
            if k == 25 && i > 0 {
                parents.push(base - 30);
            }
            commit(n, &parents)
        })
        .collect()
}

/// Re-runs itself as a child process that pushes batches into RocksDB, SIGKILLs it after a
/// random number of acknowledged batches, and checks that every acknowledged batch is there,
/// each batch is all or nothing, and the stored labels load and answer correctly.
#[cfg(feature = "rocksdb")]
#[test]
fn crash_recovery_after_sigkill() {
    use std::io::{BufRead, Write as _};
    if let Some(dir) = std::env::var_os("COMMITGRAPH_CRASH_CHILD") {
        let engine = EngineConfig::rocksdb(dir)
            .open(STANDALONE_KEYSPACES)
            .unwrap();
        let graphs = CommitGraphs::open_standalone(engine).unwrap();
        let mut out = std::io::stdout();
        for i in 0.. {
            let batch = crash_batch(i);
            let tip = batch[49].id;
            graphs
                .push(RepoId(1), &batch, &[BranchUpdate::set("main", tip)], BY)
                .unwrap();
            writeln!(out, "acked {i}").unwrap();
            out.flush().unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kill_after = SplitMix::new(std::process::id().into()).below(8) as u32 + 2;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "commits::failures::crash_recovery_after_sigkill",
            "--nocapture",
        ])
        .env("COMMITGRAPH_CRASH_CHILD", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(i) = line.strip_prefix("acked ") {
            let i: u32 = i.trim().parse().unwrap();
            acked = Some(i);
            if i >= kill_after {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    let acked = acked.expect("the child acknowledged batches");
    let graphs = CommitGraphs::open_standalone(
        EngineConfig::rocksdb(dir.path())
            .open(STANDALONE_KEYSPACES)
            .unwrap(),
    )
    .unwrap();
    let repo = RepoId(1);
    let count = graphs.stats(repo).unwrap().commits as u32;
    assert_eq!(count % 50, 0, "a batch was torn: {count} commits");
    assert!(
        count >= (acked + 1) * 50,
        "acknowledged batch {acked} lost: {count} commits"
    );
    let tip = graphs.branch(repo, "main").unwrap().unwrap();
    assert_eq!(tip, id(count - 1));
    assert!(graphs.is_ancestor(repo, &id(0), &tip).unwrap());
    assert!(graphs.is_ancestor(repo, &id(20), &id(count - 1)).unwrap());
    assert!(!graphs.is_ancestor(repo, &id(count - 1), &id(20)).unwrap());
    // The store accepts the next batch after recovery.
    graphs
        .push(
            repo,
            &crash_batch(count / 50),
            &[BranchUpdate::set("main", id(count + 49))],
            BY,
        )
        .unwrap();
}

/// A push whose engine write fails after the index was applied (with its merged-status
/// changes computed, so walks ran over the new commits and filled checkpoints and reach
/// vectors) rolls the index back: every answer is the model's without the push, the same push
/// then succeeds, and a reopen agrees.
fn rollback_case(case: DagCase) {
    let parents = case.parents();
    let n = parents.len();
    let commits: Vec<NewCommit> = parents
        .iter()
        .enumerate()
        .map(|(k, ps)| commit(k as u32, ps))
        .collect();
    let cut = case.splits.first().map_or(n / 2, |s| s.index(n + 1));
    let shared = MemEngine::new(STANDALONE_KEYSPACES);
    let failing = Arc::new(FailingEngine {
        inner: shared.reopen(STANDALONE_KEYSPACES),
        fail: std::sync::atomic::AtomicBool::new(false),
    });
    let graphs = crate::open_graphs(failing.clone(), case.checkpoint_every);
    let repo = RepoId(11);
    let mut branches: BTreeMap<String, u32> = BTreeMap::new();
    let mut first = Vec::new();
    if cut > 0 {
        branches.insert("main".into(), cut as u32 - 1);
        first.push(BranchUpdate::set("main", id(cut as u32 - 1)));
    }
    graphs.push(repo, &commits[..cut], &first, BY).unwrap();
    // Warm the caches on the old tips.
    for name in branches.keys() {
        graphs.merged_into(repo, name).unwrap();
    }
    let mut after = branches.clone();
    let updates: Vec<BranchUpdate> = case
        .moves
        .iter()
        .map(|(branch, target)| {
            let tip = target.index(n) as u32;
            after.insert(format!("br{branch}"), tip);
            BranchUpdate::set(format!("br{branch}"), id(tip))
        })
        .collect();
    failing
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = graphs
        .push(repo, &commits[cut..], &updates, BY)
        .unwrap_err();
    assert!(matches!(err, CommitError::Engine(_)), "{err}");
    failing
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    check_all(&graphs, repo, &parents[..cut], &branches);
    for k in cut..n {
        assert!(!graphs.contains(repo, &id(k as u32)).unwrap());
    }
    assert_eq!(graphs.stats(repo).unwrap().commits, cut);
    graphs.push(repo, &commits[cut..], &updates, BY).unwrap();
    check_all(&graphs, repo, &parents, &after);
    let reopened = crate::open_graphs(
        Arc::new(shared.reopen(STANDALONE_KEYSPACES)),
        case.checkpoint_every,
    );
    check_all(&reopened, repo, &parents, &after);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn a_failed_push_rolls_the_index_back(case in dag_case()) {
        rollback_case(case);
    }
}
