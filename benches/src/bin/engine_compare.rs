//! RocksDB against PostgreSQL per operation, in the same run on the same machine (issue 16,
//! "Performance"): raw engine batches of the stores' realistic sizes, synced, from 1 and 16
//! writer threads; the latency p50 and p99 and the rate of each. The lines marked "group
//! commit" write each batch buffered and wait for a shared flush (`engine::GroupCommit`), as
//! the directory and the commit graphs write theirs.
//!
//! ```text
//! scripts/with-postgres.sh cargo run --release -p benches --bin engine-compare -- --secs 5
//! ```
//!
//! PostgreSQL is the server of `LPSTORE_TEST_POSTGRES` (which `scripts/with-postgres.sh`
//! sets), in a schema of its own dropped at the end; without it only RocksDB is measured.
//! `postgres+fence` is PostgreSQL with the engine fenced by a lease (`engine::Leadership`),
//! as a service's writer runs: the fence's cost. Prints a Markdown table.

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::testing::PgScratch;
use engine::{Backend, Durability, Engine, GroupCommit, WriteBatch};

const KEYSPACES: &[&str] = &["data", "log", "counters"];

/// A batch shape: what one store operation writes.
#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    /// (count, value bytes) of puts into `data`.
    puts: &'static [(usize, usize)],
    /// One change-log event of this many bytes (0: none).
    event: usize,
    counters: usize,
    /// Writer counts to run it at.
    writers: &'static [usize],
    /// Buffered writes made durable by `GroupCommit::sync`, instead of synced writes.
    group_commit: bool,
}

const WORKLOADS: &[Workload] = &[
    // A membership change: edges both ways, node records, closure pairs; its event; a count.
    Workload {
        name: "membership write",
        puts: &[(6, 64)],
        event: 200,
        counters: 1,
        writers: &[1, 16],
        group_commit: false,
    },
    // The same, as the directory writes it: buffered, then a group sync shared with the
    // other writers (`ARCHITECTURE.md`, "A membership change in the directory").
    Workload {
        name: "membership write, group commit",
        puts: &[(6, 64)],
        event: 200,
        counters: 1,
        writers: &[1, 16],
        group_commit: true,
    },
    // A 4 KiB durable upload: the inline blob, the file record, bucket and hash indexes, the
    // bucket's counters, the event.
    Workload {
        name: "4 KiB upload",
        puts: &[(1, 4096), (7, 150)],
        event: 300,
        counters: 2,
        writers: &[1, 16],
        group_commit: false,
    },
    // A 1,000-commit push: a record and a parents entry per commit, the branch, the event.
    Workload {
        name: "1,000-commit push",
        puts: &[(2000, 80), (1, 64)],
        event: 400,
        counters: 1,
        writers: &[1],
        group_commit: false,
    },
];

fn batch(engine: &dyn Engine, workload: &Workload, n: u64) -> WriteBatch {
    let data = engine.keyspace("data").unwrap();
    let log = engine.keyspace("log").unwrap();
    let counters = engine.keyspace("counters").unwrap();
    let mut batch = WriteBatch::new();
    let mut part = 0u32;
    for (count, bytes) in workload.puts {
        let value = vec![0x5A; *bytes];
        for _ in 0..*count {
            let key = engine::keys::KeyBuilder::new().u64(n).u32(part).finish();
            batch.put(data, key, value.as_slice());
            part += 1;
        }
    }
    if workload.event > 0 {
        batch.put(log, n.to_be_bytes(), vec![0x11; workload.event]);
    }
    for c in 0..workload.counters {
        batch.counter_add(counters, [c as u8], 1);
    }
    batch
}

struct Figures {
    batches: usize,
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// `writers` threads write synced batches for `secs`; every latency is kept.
fn measure(engine: &Arc<dyn Engine>, workload: &Workload, writers: usize, secs: f64) -> Figures {
    let next = Arc::new(AtomicU64::new(rand_base()));
    let committer = Arc::new(GroupCommit::new(Arc::clone(engine)));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (engine, next, workload) = (Arc::clone(engine), Arc::clone(&next), *workload);
            let committer = Arc::clone(&committer);
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let batch = batch(&*engine, &workload, n);
                    let sent = Instant::now();
                    if workload.group_commit {
                        let written = committer.write(batch).unwrap();
                        committer.sync(written).unwrap();
                    } else {
                        engine.write(batch, Durability::Sync).unwrap();
                    }
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        batches: latencies.len(),
        rate: latencies.len() as f64 / elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Keys of different runs never meet.
fn rand_base() -> u64 {
    static RUN: AtomicU64 = AtomicU64::new(0);
    (RUN.fetch_add(1, Ordering::Relaxed) + 1) << 40
}

fn main() -> anyhow::Result<()> {
    let mut secs = 5.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => secs = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!("unknown argument {other:?} (expected --secs N)"),
        }
    }
    let dir = tempfile::tempdir()?;
    let mut engines: Vec<(String, Arc<dyn Engine>)> = vec![(
        "rocksdb".into(),
        benches::open_engine(Backend::Rocksdb, dir.path(), KEYSPACES),
    )];
    let scratch = std::env::var(engine::testing::POSTGRES_ENV)
        .ok()
        .map(PgScratch::on);
    if let Some(scratch) = &scratch {
        engines.push(("postgres".into(), scratch.config().open(KEYSPACES)?));
        let fenced = scratch.config().open(KEYSPACES)?;
        let leadership = fenced.leadership().unwrap();
        let epoch = leadership
            .acquire("bench", "engine-compare", Duration::from_secs(3600))?
            .unwrap();
        leadership.fence("bench", epoch);
        engines.push(("postgres+fence".into(), fenced));
    } else {
        eprintln!("{} unset: RocksDB only", engine::testing::POSTGRES_ENV);
    }
    println!("| operation | backend | writers | batches | batches/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for workload in WORKLOADS {
        for writers in workload.writers {
            for (name, engine) in &engines {
                let f = measure(engine, workload, *writers, secs);
                println!(
                    "| {} | {name} | {writers} | {} | {:.0} | {:.2} | {:.2} |",
                    workload.name,
                    f.batches,
                    f.rate,
                    f.p50.as_secs_f64() * 1e3,
                    f.p99.as_secs_f64() * 1e3
                );
            }
        }
    }
    // The engines close before the scratch schema is dropped.
    drop(engines);
    drop(scratch);
    Ok(())
}
