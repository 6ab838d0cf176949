//! The commit graph at one scale: import, index bytes (resident per part, stored per keyspace),
//! is-ancestor, is-merged; with `--git-graph 1`, git's own commit-graph file for the same graph
//! (`git fast-import`, `git commit-graph write --reachable`) in the same run; optionally a
//! `git fast-import` stream of the same graph and the pairs git answers.

use std::hint::black_box;
use std::io::{BufWriter, Write as _};
use std::time::Instant;

use anyhow::Result;
use commitgraph::gen::{DagParams, GeneratedDag};
use commitgraph::{CommitGraphs, RepoId, STANDALONE_KEYSPACES};
use engine::EngineConfig;

use crate::common::{dir_size, micros, rss, Flags, Lcg, Results};

/// The writer these writes are recorded as in the change feed.
const BY: commitgraph::Writer<'static> = commitgraph::Writer {
    actor: "bench",
    repo: "bench",
};

/// `capacity commits --commits N`.
pub fn run(flags: &Flags) -> Result<()> {
    // `COMMITS_SCALE` sets the default size (`COMMITS_SCALE=10000000` for the 10^7 run).
    let default = std::env::var("COMMITS_SCALE")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(10_000);
    let n = flags.number("commits", default)?;
    let tmp = tempfile::tempdir_in(flags.path("dir")?)?;
    let mut out = flags.results()?;
    let scale = n as u64;
    // `--branches B` and `--merge-percent M` change the shape (many short-lived branches give
    // many short first-parent chains, as topic branches do).
    let defaults = DagParams::default();
    let dag = GeneratedDag::generate(&DagParams {
        commits: n,
        branches: flags.number("branches", (n / 1_000).clamp(10, 1_000))?,
        merge_ratio: flags
            .get("merge-percent")
            .map_or(Ok(defaults.merge_ratio * 100.0), str::parse::<f64>)?
            / 100.0,
        seed: 2024,
        ..defaults
    });
    let ids = dag.synthetic_ids(3);
    let (rev_list, refs) = (dag.rev_list(&ids), dag.refs(&ids));

    let engine = EngineConfig::rocksdb(tmp.path().join("graph")).open(STANDALONE_KEYSPACES)?;
    let graphs = CommitGraphs::open_standalone(engine)?;
    let repo = RepoId(1);
    let started = Instant::now();
    graphs.import(repo, &rev_list, &refs, BY)?;
    out.row(
        "commits/import (rev-list text) + index build",
        scale,
        started.elapsed().as_secs_f64(),
        "s",
    )?;
    drop((rev_list, refs));
    let stats = graphs.stats(repo)?;
    out.row(
        "commits/index bytes per commit (in memory)",
        scale,
        stats.bytes as f64 / stats.commits as f64,
        "B",
    )?;
    memory_rows(&mut out, "after import", scale, &stats)?;
    out.row(
        "commits/first-parent chains per commit",
        scale,
        stats.chains as f64 / stats.commits as f64,
        "",
    )?;

    let mut rng = Lcg(11);
    let pairs: Vec<(usize, usize)> = (0..200_000).map(|_| (rng.below(n), rng.below(n))).collect();
    let mut samples = Vec::with_capacity(pairs.len());
    let mut yes = 0usize;
    let started = Instant::now();
    for &(a, b) in &pairs {
        let s = Instant::now();
        yes += usize::from(graphs.is_ancestor(repo, &ids[a], &ids[b])?);
        samples.push(s.elapsed());
    }
    out.row(
        "commits/is-ancestor, 1 thread",
        scale,
        pairs.len() as f64 / started.elapsed().as_secs_f64(),
        "queries/s",
    )?;
    out.latencies("commits/is-ancestor", scale, samples)?;
    println!("{yes} of {} pairs are ancestors", pairs.len());

    let names: Vec<&str> = dag.branches.iter().map(|(n, _)| n.as_str()).collect();
    let started = Instant::now();
    // At most 1,000 targets: a shape with 100,000 branches would take minutes here.
    let cold = names.len().min(1_000);
    for name in &names[..cold] {
        black_box(graphs.merged_into(repo, name)?);
    }
    out.row(
        "commits/merged-into cold, per target branch",
        scale,
        micros(started.elapsed()) / cold as f64,
        "µs",
    )?;
    let mut samples = Vec::new();
    for _ in 0..100_000 {
        let (x, y) = (names[rng.below(names.len())], names[rng.below(names.len())]);
        let s = Instant::now();
        black_box(graphs.is_merged(repo, x, y)?);
        samples.push(s.elapsed());
    }
    out.latencies("commits/is-merged warm", scale, samples)?;
    // The floor under it: a branch into itself needs no walk and no vector, so it times what
    // every question does besides (two name lookups, the labels, the cache's lock and count).
    let mut samples = Vec::new();
    for _ in 0..100_000 {
        let x = names[rng.below(names.len())];
        let s = Instant::now();
        black_box(graphs.is_merged(repo, x, x)?);
        samples.push(s.elapsed());
    }
    out.latencies(
        "commits/is-merged of a branch into itself (no walk)",
        scale,
        samples,
    )?;
    let stats = graphs.stats(repo)?;
    out.row(
        "commits/index bytes per commit with cached reach vectors",
        scale,
        stats.bytes as f64 / stats.commits as f64,
        "B",
    )?;
    let (_, peak) = rss();
    out.row(
        "commits/process peak RSS",
        scale,
        peak as f64 / 1048576.0,
        "MiB",
    )?;
    out.stored_bytes(
        "commits",
        "commit",
        graphs.engine().as_ref(),
        STANDALONE_KEYSPACES,
        scale,
        n,
    )?;
    drop(graphs);
    let bytes = dir_size(&tmp.path().join("graph"));
    out.row(
        "commits/engine bytes per commit",
        scale,
        bytes as f64 / n as f64,
        "B",
    )?;
    {
        // What a restart holds: the index loaded from the stored records.
        let engine = EngineConfig::rocksdb(tmp.path().join("graph")).open(STANDALONE_KEYSPACES)?;
        let graphs = CommitGraphs::open_standalone(engine)?;
        let started = Instant::now();
        let stats = graphs.stats(repo)?;
        out.row(
            "commits/open: load the index",
            scale,
            started.elapsed().as_secs_f64(),
            "s",
        )?;
        memory_rows(&mut out, "after reopen", scale, &stats)?;
    }
    if flags.get("git-graph").is_some() {
        git_graph_rows(&mut out, &dag, tmp.path(), scale, n)?;
    }

    if let Some(export) = flags.get("export") {
        // The same graph for git: commit k is mark k + 1; the pairs git is asked about, and
        // commitgraph's answer time on exactly those pairs.
        let export = std::path::Path::new(export);
        std::fs::create_dir_all(export)?;
        std::fs::write(export.join("stream.fi"), dag.fast_import_stream())?;
        let k = flags.number("pairs", 200)?;
        let mut file = BufWriter::new(std::fs::File::create(export.join("pairs.marks"))?);
        for &(a, b) in pairs.iter().take(k) {
            writeln!(file, ":{} :{}", a + 1, b + 1)?;
        }
        file.flush()?;
        let engine = EngineConfig::rocksdb(tmp.path().join("graph")).open(STANDALONE_KEYSPACES)?;
        let graphs = CommitGraphs::open_standalone(engine)?;
        graphs.stats(repo)?;
        let started = Instant::now();
        for &(a, b) in pairs.iter().take(k) {
            black_box(graphs.is_ancestor(repo, &ids[a], &ids[b])?);
        }
        out.row(
            "commits/is-ancestor on the git pairs mean",
            scale,
            micros(started.elapsed()) / k as f64,
            "µs",
        )?;
    }
    Ok(())
}

/// The index's resident bytes per commit, per part.
fn memory_rows(
    out: &mut Results,
    when: &str,
    scale: u64,
    stats: &commitgraph::CommitIndexStats,
) -> Result<()> {
    let m = stats.memory;
    let per = |bytes: usize| bytes as f64 / stats.commits.max(1) as f64;
    for (part, bytes) in [
        ("ids", m.ids),
        ("id map", m.id_map),
        ("labels", m.labels),
        ("parents", m.parents),
        ("chains", m.chains),
        ("checkpoints", m.checkpoints),
        ("total", m.total()),
    ] {
        out.row(
            &format!("commits/resident bytes per commit {when}: {part}"),
            scale,
            per(bytes),
            "B",
        )?;
    }
    Ok(())
}

/// git's own commit-graph file for the same graph: `git fast-import` of the generated stream,
/// then `git commit-graph write --reachable`; the file's bytes per commit.
fn git_graph_rows(
    out: &mut Results,
    dag: &GeneratedDag,
    tmp: &std::path::Path,
    scale: u64,
    n: usize,
) -> Result<()> {
    use std::process::{Command, Stdio};
    let repo = tmp.join("git");
    let git = |args: &[&str]| -> Result<()> {
        let status = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "git {args:?}: {status}");
        Ok(())
    };
    std::fs::create_dir_all(&repo)?;
    git(&["init", "-q", "--bare"])?;
    let started = Instant::now();
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&dag.fast_import_stream())?;
    }
    anyhow::ensure!(child.wait()?.success(), "git fast-import failed");
    println!("git fast-import: {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    git(&["commit-graph", "write", "--reachable"])?;
    out.row(
        "commits/git commit-graph write",
        scale,
        started.elapsed().as_secs_f64(),
        "s",
    )?;
    let file = repo.join("objects/info/commit-graph");
    let bytes = std::fs::metadata(&file)?.len();
    out.row(
        "commits/git commit-graph bytes per commit",
        scale,
        bytes as f64 / n as f64,
        "B",
    )
}
