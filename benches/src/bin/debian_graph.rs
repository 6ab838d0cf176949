//! Writes a Debian-shaped graph (`graphdb::generate::debian`) for the peer script
//! `benches/servers/graphs-pg.sh`: `debian_graph SCALE DIR` writes `DIR/graph.tsv` (the
//! directory's import format, `from\tto\tlabel`), `DIR/binaries.txt` (one binary package a
//! line, hubs first) and prints `edges=N binaries=N largest=section:libs`.
//!
//! `debian_graph SCALE DIR --embedded` then imports the graph into a graphdb store on RocksDB
//! under `DIR` and times `Graph::reachable` by names, one thread, on the two query mixes the
//! script asks PostgreSQL and the directory over HTTP, so the embedded-to-PostgreSQL ratio is
//! one run's: `hubs` (a random binary, a target among the first 64, mostly true), `uniform`
//! (two random binaries, mostly false, where a walk must exhaust the source's reach) and
//! `largest` (from the largest set, `section:libs`, to a random binary).

use std::io::Write;
use std::time::{Duration, Instant};

use benches::{percentiles, Lcg};
use engine::EngineConfig;
use graphdb::{GraphStore, NamespaceKind};

/// Queries per mix: enough for a stable p99, a second or so each.
const SAMPLES: usize = 200_000;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let scale: f64 = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "graph".into()));
    let embedded = args.next().as_deref() == Some("--embedded");
    std::fs::create_dir_all(&dir)?;
    let g =
        graphdb::generate::debian::debian(&graphdb::generate::debian::DebianShape::scaled(scale));
    let tsv = g.tsv();
    std::fs::write(dir.join("graph.tsv"), &tsv)?;
    let mut names = std::io::BufWriter::new(std::fs::File::create(dir.join("binaries.txt"))?);
    for name in &g.binaries {
        writeln!(names, "{name}")?;
    }
    names.flush()?;
    println!(
        "edges={} binaries={} largest={}",
        g.edges.len(),
        g.binaries.len(),
        g.sections[0]
    );
    if embedded {
        reachable_embedded(
            &dir.join("embedded"),
            tsv.as_bytes(),
            &g.binaries,
            &g.sections[0],
        )?;
    }
    Ok(())
}

/// Imports `tsv` and prints the p50/p99 of `reachable` by names for the three mixes.
fn reachable_embedded(
    dir: &std::path::Path,
    tsv: &[u8],
    binaries: &[String],
    largest: &str,
) -> anyhow::Result<()> {
    let engine = EngineConfig::rocksdb(dir).open(graphdb::KEYSPACES)?;
    let store = GraphStore::builder(engine).open()?;
    let graph = store.create_graph("debian", NamespaceKind::General)?;
    graph.import_tsv(tsv, None)?;
    let hubs = binaries.len().min(64);
    let mixes = [
        ("hubs", None, hubs),
        ("uniform", None, binaries.len()),
        ("largest", Some(largest), binaries.len()),
    ];
    for (mix, source, targets) in mixes {
        let mut rng = Lcg(42);
        let mut samples: Vec<Duration> = Vec::with_capacity(SAMPLES);
        let mut reachable = 0usize;
        for _ in 0..SAMPLES {
            let from = source.unwrap_or_else(|| &binaries[rng.below(binaries.len())]);
            let to = &binaries[rng.below(targets)];
            let started = Instant::now();
            let answer = graph.reachable(from, to, false)?;
            samples.push(started.elapsed());
            reachable += usize::from(answer.reachable);
        }
        println!(
            "embedded reachable, {mix} mix ({:.0}% true)",
            reachable as f64 * 100.0 / SAMPLES as f64
        );
        percentiles(&format!("embedded reachable, {mix} mix"), samples);
    }
    drop(graph);
    drop(store);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
