//! Writes a generated commit graph for the directory benchmark (`benches/servers/directory.sh`):
//! `rev-list` (`git rev-list --all --parents` text), `refs` (`git for-each-ref` text) and
//! `branches.txt` (the branch names).
//!
//!     cargo run --release -p servers --example commit_graph -- COMMITS BRANCHES OUT_DIR

use std::path::PathBuf;

use commitgraph::gen::{DagParams, GeneratedDag};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let commits: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let branches: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let out = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let dag = GeneratedDag::generate(&DagParams {
        commits,
        branches,
        ..DagParams::default()
    });
    let ids = dag.synthetic_ids(7);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("rev-list"), dag.rev_list(&ids))?;
    std::fs::write(out.join("refs"), dag.refs(&ids))?;
    let names: Vec<&str> = dag.branches.iter().map(|(name, _)| name.as_str()).collect();
    std::fs::write(out.join("branches.txt"), names.join("\n") + "\n")?;
    println!(
        "commits={} branches={}",
        dag.parents.len(),
        dag.branches.len()
    );
    Ok(())
}
