//! The commit graphs' answers against git's own on the same repositories.

use super::*;

/// Runs git in `dir` and returns its stdout; panics with stderr on failure.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("git prints UTF-8")
}

/// Builds a real repository from a generated graph with `git fast-import`, imports its
/// `rev-list` and `for-each-ref` output and compares answers with git's: `merged_into` with
/// `git for-each-ref --merged` for every branch (200 sampled ones above 200), `is_ancestor` with `git rev-list <B>` for
/// every commit against sampled `B`s, and with `git merge-base --is-ancestor` on sampled pairs.
///
/// `COMMITGRAPH_GIT_COMMITS` sets the size (default 6,000); for the 100,000-commit run:
/// `COMMITGRAPH_GIT_COMMITS=100000 cargo test -p commitgraph --release --test it agrees_with_git`.
fn agree_with_git(
    backend: Backend,
    commits: usize,
    object_format: &str,
    seed: u64,
    checkpoint_every: usize,
) {
    use std::io::Write as _;
    let dag = GeneratedDag::generate(&DagParams {
        commits,
        branches: (commits / 100).clamp(10, 1_000),
        seed,
        ..DagParams::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    git(
        path,
        &[
            "init",
            "--bare",
            "-q",
            &format!("--object-format={object_format}"),
        ],
    );
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(path)
        .args(["fast-import", "--quiet"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run git fast-import");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&dag.fast_import_stream())
        .unwrap();
    assert!(child.wait().unwrap().success(), "git fast-import failed");
    let rev_list = git(path, &["rev-list", "--all", "--parents"]);
    let refs = git(path, &["for-each-ref", "--format=%(refname) %(objectname)"]);

    // Import, then answer from a reopened store: what is compared with git is what the
    // backend kept, loaded back with its stored labels.
    let mut store = Store::new(backend);
    store.checkpoint_every = checkpoint_every;
    let repo = RepoId(1);
    let summary = store.open().import(repo, &rev_list, &refs, BY).unwrap();
    let graphs = store.open();
    // Commits left behind by branch resets are not reachable, so git does not list them.
    let mut reachable = vec![false; commits];
    let mut queue: Vec<u32> = dag.branches.iter().map(|(_, tip)| *tip).collect();
    while let Some(k) = queue.pop() {
        if !std::mem::replace(&mut reachable[k as usize], true) {
            queue.extend(&dag.parents[k as usize]);
        }
    }
    let reachable = reachable.iter().filter(|&&r| r).count();
    assert!(reachable > commits * 9 / 10);
    assert_eq!(summary.appended.added, reachable);
    assert_eq!(summary.branches, dag.branches.len());
    let all: Vec<CommitId> = rev_list
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();

    let mut answers = 0usize;
    // Every branch as a target up to 200 branches, then an even sample of 200.
    let step = dag.branches.len().div_ceil(200);
    for (target, _) in dag.branches.iter().step_by(step) {
        let merged = git(
            path,
            &[
                "for-each-ref",
                &format!("--merged=refs/heads/{target}"),
                "--format=%(refname:strip=2)",
                "refs/heads/",
            ],
        );
        let mut expected: Vec<String> = merged
            .lines()
            .filter(|name| name != target)
            .map(str::to_string)
            .collect();
        expected.sort();
        assert_eq!(
            graphs.merged_into(repo, target).unwrap(),
            expected,
            "merged into {target}"
        );
        answers += dag.branches.len();
    }

    let mut rng = SplitMix::new(seed);
    let mut pairs = Vec::new();
    for _ in 0..8 {
        let b = all[rng.below(all.len())];
        let ancestors: BTreeSet<CommitId> = git(path, &["rev-list", &b.to_string()])
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        for a in &all {
            assert_eq!(
                graphs.is_ancestor(repo, a, &b).unwrap(),
                ancestors.contains(a),
                "is_ancestor({a}, {b})"
            );
        }
        answers += all.len();
        let list: Vec<&CommitId> = ancestors.iter().collect();
        for i in 0..25 {
            let a = if i % 2 == 0 {
                *list[rng.below(list.len())]
            } else {
                all[rng.below(all.len())]
            };
            pairs.push((a, b));
        }
    }
    for (a, b) in pairs {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(path)
            .args([
                "merge-base",
                "--is-ancestor",
                &a.to_string(),
                &b.to_string(),
            ])
            .status()
            .unwrap();
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "git merge-base failed"
        );
        assert_eq!(
            graphs.is_ancestor(repo, &a, &b).unwrap(),
            status.code() == Some(0),
            "merge-base --is-ancestor {a} {b}"
        );
        answers += 1;
    }
    assert!(answers > 8 * reachable);
}

#[test]
fn agrees_with_git() {
    let commits = std::env::var("COMMITGRAPH_GIT_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
    agree_with_git(
        Backend::Memory,
        commits,
        "sha1",
        4242,
        commitgraph::CHECKPOINT_EVERY,
    );
}

#[test]
fn agrees_with_git_sha256() {
    agree_with_git(Backend::Memory, 1_500, "sha256", 77, 16);
}

#[cfg(feature = "rocksdb")]
#[test]
fn agrees_with_git_on_rocksdb() {
    agree_with_git(Backend::Rocksdb, 3_000, "sha1", 99, 16);
}

#[cfg(feature = "sled")]
#[test]
fn agrees_with_git_on_sled() {
    agree_with_git(Backend::Sled, 3_000, "sha256", 7, 16);
}
