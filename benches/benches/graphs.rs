//! General-graph benchmarks on a generated graph of Debian's shape (64,000 binaries, 34,000
//! sources, 275,000 `depends` edges, 55 cycles; `graphdb::generate::debian`), stored in
//! RocksDB. Run with `cargo bench -p benches --bench graphs`.
//!
//! It prints one-shot timings (TSV import with the index build, synced), the index's size,
//! and per-call percentiles measured with `Instant` around each call (timer overhead
//! included): `reachable` on random pairs, the descendants of the largest section, an edge
//! that merges two large parts of the graph into one component (and its removal, which splits
//! it again), synced; criterion's means follow. A plain BFS per query over the same edges
//! (petgraph-free: adjacency lists in `Vec`s) is printed as the floor the index must beat.
//!
//! `GRAPHS_BENCH_SCALE` (default 1) multiplies the graph (10 for ten times Debian);
//! `GRAPHS_BENCH_SAMPLES` (default 5) sets the number of merge/split samples and
//! `GRAPHS_BENCH_MERGE_TO` (default `ruby3.1`) the target of the merging edge from `libc6`;
//! `GRAPHS_BENCH_TSV=path` writes the TSV for the PostgreSQL peer (`benches/servers/graphs-pg.sh`);
//! `GRAPHS_BENCH_HUB_DEGREES=64,32,16` compares hub choices (rebuilds with each, after the rest).

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]
// criterion_group! makes public functions that need no documentation.
#![allow(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::{cpu_seconds, percentiles, Lcg};
use criterion::Criterion;
use engine::EngineConfig;
use graphdb::generate::debian::{debian, DebianShape};
use graphdb::{Direction, GraphStore, NamespaceKind, Traversal};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The floor: a BFS per query over adjacency lists.
struct Bfs {
    ids: HashMap<String, usize>,
    out: Vec<Vec<usize>>,
}

impl Bfs {
    fn new(edges: &[(String, String, &str)]) -> Bfs {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut out: Vec<Vec<usize>> = Vec::new();
        let mut id = |name: &str, out: &mut Vec<Vec<usize>>| {
            let next = ids.len();
            *ids.entry(name.to_owned()).or_insert_with(|| {
                out.push(Vec::new());
                next
            })
        };
        for (a, b, _) in edges {
            let a = id(a, &mut out);
            let b = id(b, &mut out);
            out[a].push(b);
        }
        Bfs { ids, out }
    }

    fn reaches(&self, from: &str, to: &str) -> bool {
        let (from, to) = (self.ids[from], self.ids[to]);
        let mut seen = vec![false; self.out.len()];
        let mut queue = VecDeque::from([from]);
        while let Some(x) = queue.pop_front() {
            for &y in &self.out[x] {
                if y == to {
                    return true;
                }
                if !seen[y] {
                    seen[y] = true;
                    queue.push_back(y);
                }
            }
        }
        false
    }
}

/// Puts the edge `libc6 -> meta` and removes it again, `n` times, synced: the time of each
/// merge of components and of each split.
fn merge_and_split(graph: &graphdb::Graph, meta: &str, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut merge, mut split) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        graph.put_edge("libc6", meta, Some("depends")).unwrap();
        merge.push(t.elapsed());
        let t = Instant::now();
        graph.remove_edge("libc6", meta).unwrap();
        split.push(t.elapsed());
    }
    (merge, split)
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let scale: f64 = env("GRAPHS_BENCH_SCALE", 1.0);
    let shape = DebianShape::scaled(scale);
    let started = Instant::now();
    let g = debian(&shape);
    let tsv = g.tsv();
    println!(
        "generated {} edges ({} depends) in {:?}",
        g.edges.len(),
        shape.depends,
        started.elapsed()
    );
    if let Ok(path) = std::env::var("GRAPHS_BENCH_TSV") {
        std::fs::write(&path, &tsv).unwrap();
        println!("wrote {path}");
    }

    let dir = tempfile::tempdir().unwrap();
    let engine = EngineConfig::rocksdb(dir.path())
        .open(graphdb::KEYSPACES)
        .unwrap();
    let store = GraphStore::builder(engine).open().unwrap();
    let graph = store
        .create_graph("debian", NamespaceKind::General)
        .unwrap();
    let started = Instant::now();
    let cpu = cpu_seconds();
    let (_, edges, _) = graph.import_tsv(tsv.as_bytes(), None).unwrap();
    println!(
        "import + index build of {edges} edges (synced): {:?} ({:.2} s of CPU in the process)",
        started.elapsed(),
        cpu_seconds() - cpu
    );
    let stats = graph.namespace().stats();
    let hubs = graph.namespace().hubs();
    println!(
        "index: {} nodes, {} edges, {} hubs, {} stored (cut) pairs, {} persisted closure bytes ({:.1} per node, {:.1} per edge)",
        stats.nodes,
        stats.membership_edges,
        hubs.len(),
        stats.pairs,
        stats.closure_bytes,
        stats.closure_bytes as f64 / stats.nodes as f64,
        stats.closure_bytes as f64 / stats.membership_edges as f64,
    );
    let memory = graph.namespace().memory();
    let index = memory.closure_up + memory.probe + memory.closure_down + memory.hubs;
    println!(
        "index in memory: {index} bytes ({:.1} per node, {:.1} per edge; hubs' full sets and via {} bytes); all of the namespace {} bytes",
        index as f64 / stats.nodes as f64,
        index as f64 / stats.membership_edges as f64,
        memory.hubs,
        memory.total(),
    );

    let names = &g.binaries;
    let mut rng = Lcg(7);
    let pairs: Vec<(&str, &str)> = (0..100_000)
        .map(|_| {
            let a = &names[rng.below(names.len())];
            let b = &names[rng.below(names.len().min(64))]; // towards the hubs: often true
            (a.as_str(), b.as_str())
        })
        .collect();
    let view = graph.view();
    let ids: Vec<(graphdb::NodeId, graphdb::NodeId)> = pairs
        .iter()
        .map(|(a, b)| (view.id(a).unwrap(), view.id(b).unwrap()))
        .collect();
    let mut samples = Vec::with_capacity(ids.len());
    let mut yes = 0;
    for &(a, b) in &ids {
        let t = Instant::now();
        let r = view.is_member_id(a, b);
        samples.push(t.elapsed());
        yes += usize::from(r);
    }
    drop(view);
    println!("reachable: {yes} of {} pairs reachable", ids.len());
    percentiles("reachable (by id, one view)", samples);
    let mut samples = Vec::new();
    for (a, b) in pairs.iter().take(20_000) {
        let t = Instant::now();
        black_box(graph.reachable(a, b, false).unwrap());
        samples.push(t.elapsed());
    }
    percentiles("reachable (by name, Graph::reachable)", samples);
    let bfs = Bfs::new(&g.edges);
    let mut samples = Vec::new();
    for (a, b) in pairs.iter().take(200) {
        let t = Instant::now();
        black_box(bfs.reaches(a, b));
        samples.push(t.elapsed());
    }
    percentiles("reachable by a plain BFS (the floor)", samples);

    let largest = &g.sections[0];
    let all = Traversal {
        limit: usize::MAX,
        ..Traversal::default()
    };
    let count = graph
        .traverse(largest, Direction::Descendants, &all)
        .unwrap()
        .items
        .len();
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        black_box(
            graph
                .traverse(largest, Direction::Descendants, &all)
                .unwrap(),
        );
        samples.push(t.elapsed());
    }
    percentiles(
        &format!("descendants of {largest} ({count} names, sorted)"),
        samples,
    );
    // Embedded without owning the names: the bitmap from the index, then the page borrowed
    // from the view in name order (the name rank; no string sorted or copied).
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let view = graph.view();
        let ids = view
            .reach_ids(largest, Direction::Descendants, None, None)
            .unwrap();
        let (names, more) = view.names_page(&ids, None, usize::MAX);
        black_box((names.len(), more));
        drop(view);
        samples.push(t.elapsed());
    }
    percentiles(
        &format!("descendants of {largest}, all, borrowed names in order (View::names_page)"),
        samples,
    );
    let page = Traversal {
        limit: 1000,
        ..Traversal::default()
    };
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        black_box(
            graph
                .traverse(largest, Direction::Descendants, &page)
                .unwrap(),
        );
        samples.push(t.elapsed());
    }
    percentiles(
        &format!("descendants of {largest}, first page of 1000"),
        samples,
    );
    // A page from the middle: the cursor seeks by one binary search over the name order.
    let middle = graph
        .traverse(largest, Direction::Descendants, &all)
        .unwrap()
        .items
        .swap_remove(count / 2);
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        black_box(
            graph
                .traverse(
                    largest,
                    Direction::Descendants,
                    &Traversal {
                        after: Some(&middle),
                        ..page.clone()
                    },
                )
                .unwrap(),
        );
        samples.push(t.elapsed());
    }
    percentiles(
        &format!("descendants of {largest}, a page of 1000 after {middle} (the middle)"),
        samples,
    );

    // libc6 -> ruby3.1 merges the two planted cycles (libc6 <-> libgcc-s1 and Ruby's 7) and
    // everything between them into one component; removing it splits that apart again.
    // `GRAPHS_BENCH_MERGE_TO=task-gnome-desktop` merges nearly the whole graph instead
    // (minutes and gigabytes at full scale: every node reaching libc6 then reaches all the
    // meta package pulls in).
    let samples_n: usize = env("GRAPHS_BENCH_SAMPLES", 5);
    let meta: String = env("GRAPHS_BENCH_MERGE_TO", "ruby3.1".to_owned());
    let meta = &meta;
    let cpu = cpu_seconds();
    let (merge, split) = merge_and_split(&graph, meta, samples_n);
    println!(
        "{samples_n} merges and splits: {:.2} s of CPU in the process",
        cpu_seconds() - cpu
    );
    let pairs_before = graph.namespace().stats().pairs;
    graph.put_edge("libc6", meta, Some("depends")).unwrap();
    let component = graph.node("libc6").unwrap().component.len();
    // What the merge writes: the stored (cut) pairs it adds. Every node that reaches libc6
    // now reaches all the target reaches, but through the hub libc6, not in its own set.
    let pairs_merged = graph.namespace().stats().pairs;
    graph.remove_edge("libc6", meta).unwrap();
    println!(
        "the merging edge adds {} stored pairs ({pairs_before} -> {pairs_merged}); {} nodes reach libc6",
        pairs_merged - pairs_before,
        graph
            .traverse("libc6", Direction::Ancestors, &all)
            .unwrap()
            .items
            .len()
    );
    percentiles(
        &format!("edge merging into a component of {component} (synced)"),
        merge,
    );
    percentiles("its removal, splitting it again (synced)", split);

    // Open time: the namespace loads its nodes, edges and cut closures, then derives the
    // transpose and the hubs' full sets.
    drop(graph);
    drop(store);
    let started = Instant::now();
    let engine = EngineConfig::rocksdb(dir.path())
        .open(graphdb::KEYSPACES)
        .unwrap();
    let store = GraphStore::builder(engine).open().unwrap();
    let graph = store.graph("debian").unwrap().unwrap();
    println!(
        "reopen (engine, store, graph loaded): {:?}",
        started.elapsed()
    );
    assert_eq!(graph.namespace().hubs(), hubs);

    // Tuning the hub choice: `GRAPHS_BENCH_HUB_DEGREES=64,32,16` rebuilds the index with the
    // nodes of at least that many incoming edges as hubs, one setting after another, and
    // measures what a setting changes: stored pairs, rebuild time, reachability, the merge.
    let degrees: String = env("GRAPHS_BENCH_HUB_DEGREES", String::new());
    let mut in_degree: HashMap<&str, usize> = HashMap::new();
    for (_, to, _) in &g.edges {
        *in_degree.entry(to.as_str()).or_default() += 1;
    }
    for degree in degrees
        .split(',')
        .filter_map(|d| d.trim().parse::<usize>().ok())
    {
        let chosen: Vec<&str> = in_degree
            .iter()
            .filter(|(_, &d)| d >= degree)
            .map(|(&n, _)| n)
            .collect();
        let (started, cpu) = (Instant::now(), cpu_seconds());
        graph.namespace().rebuild_with_hubs(&chosen).unwrap();
        let (wall, cpu) = (started.elapsed(), cpu_seconds() - cpu);
        println!(
            "hubs of in-degree >= {degree}: {} hubs, {} stored pairs, rebuild {wall:?} ({cpu:.2} s of CPU), memory {} bytes",
            chosen.len(),
            graph.namespace().stats().pairs,
            graph.namespace().memory().total(),
        );
        let view = graph.view();
        let mut samples = Vec::with_capacity(ids.len());
        for &(a, b) in &ids {
            let t = Instant::now();
            black_box(view.is_member_id(a, b));
            samples.push(t.elapsed());
        }
        drop(view);
        percentiles(&format!("  reachable by id (>= {degree})"), samples);
        let (merge, split) = merge_and_split(&graph, meta, samples_n);
        percentiles(&format!("  merge (>= {degree})"), merge);
        percentiles(&format!("  split (>= {degree})"), split);
    }

    let mut group = c.benchmark_group("graphs");
    let mut i = 0;
    group.bench_function("reachable by name", |b| {
        b.iter(|| {
            i = (i + 1) % pairs.len();
            graph.reachable(pairs[i].0, pairs[i].1, false).unwrap()
        })
    });
    group.bench_function("reachable with path", |b| {
        b.iter(|| {
            i = (i + 1) % pairs.len();
            graph.reachable(pairs[i].0, pairs[i].1, true).unwrap()
        })
    });
    group.bench_function("descendants of the largest section, first 1000", |b| {
        b.iter(|| {
            graph
                .traverse(largest, Direction::Descendants, &page)
                .unwrap()
        })
    });
    group.bench_function(
        "descendants of the largest section, all, borrowed names",
        |b| {
            b.iter(|| {
                let view = graph.view();
                let ids = view
                    .reach_ids(largest, Direction::Descendants, None, None)
                    .unwrap();
                view.names_page(&ids, None, usize::MAX).0.len()
            })
        },
    );
    group.bench_function("ancestors of libc6, a page of 1000 after the cursor", |b| {
        let query = Traversal {
            after: Some("libz"),
            limit: 1000,
            ..Traversal::default()
        };
        b.iter(|| {
            graph
                .traverse("libc6", Direction::Ancestors, &query)
                .unwrap()
        })
    });
    group.finish();
    c.final_summary();
}
