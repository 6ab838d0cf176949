//! Engine micro-benchmarks, per backend: point put (synced and buffered), point get, a prefix
//! scan of 1,000 keys, and a counter add.

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]
// criterion_group! makes public functions that need no documentation.
#![allow(missing_docs)]

use std::hint::black_box;

use benches::open_engine;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::keys::KeyBuilder;
use engine::{Backend, Direction, Durability, ScanRange, WriteBatch};

const KEYSPACES: &[&str] = &["data", "counters"];
/// Keys preloaded for the read benchmarks: 100 prefixes of 1,000 keys each.
const PREFIXES: u64 = 100;
const KEYS_PER_PREFIX: u64 = 1_000;

fn key(prefix: u64, n: u64) -> Vec<u8> {
    KeyBuilder::new().u64(prefix).u64(n).finish()
}

fn bench_backend(c: &mut Criterion, backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(backend, dir.path(), KEYSPACES);
    let data = engine.keyspace("data").unwrap();
    let counters = engine.keyspace("counters").unwrap();
    let value = [0x5Au8; 100];

    for prefix in 0..PREFIXES {
        let mut batch = WriteBatch::new();
        for n in 0..KEYS_PER_PREFIX {
            batch.put(data, key(prefix, n), value);
        }
        engine.write(batch, Durability::Buffered).unwrap();
    }
    engine.flush().unwrap();

    let mut group = c.benchmark_group(format!("engine/{backend}"));
    let mut next = PREFIXES * KEYS_PER_PREFIX;
    for (name, durability) in [
        ("put_synced", Durability::Sync),
        ("put_buffered", Durability::Buffered),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    next += 1;
                    let mut batch = WriteBatch::new();
                    batch.put(data, key(u64::MAX, next), value);
                    batch
                },
                |batch| engine.write(batch, durability).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    let mut n = 0u64;
    group.bench_function("get", |b| {
        b.iter(|| {
            n = (n + 7919) % (PREFIXES * KEYS_PER_PREFIX);
            black_box(
                engine
                    .get(data, &key(n / KEYS_PER_PREFIX, n % KEYS_PER_PREFIX))
                    .unwrap(),
            )
        })
    });
    group.throughput(Throughput::Elements(KEYS_PER_PREFIX));
    let mut prefix = 0u64;
    group.bench_function("prefix_scan_1000", |b| {
        b.iter(|| {
            prefix = (prefix + 1) % PREFIXES;
            let range = ScanRange::prefix(&prefix.to_be_bytes());
            let count = engine
                .scan(data, range, Direction::Forward)
                .unwrap()
                .count();
            assert_eq!(count as u64, KEYS_PER_PREFIX);
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("counter_add", |b| {
        b.iter(|| {
            let mut batch = WriteBatch::new();
            batch.counter_add(counters, b"bytes", 4096);
            engine.write(batch, Durability::Buffered).unwrap()
        })
    });
    group.finish();
}

fn engines(c: &mut Criterion) {
    // PostgreSQL needs a running server and its settings: it is measured against RocksDB by
    // `engine-compare` (benches/src/bin/engine_compare.rs, docs/SCALING.md) instead.
    for backend in Backend::compiled()
        .into_iter()
        .filter(|b| *b != Backend::Postgres)
    {
        bench_backend(c, backend);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = engines
}
criterion_main!(benches);
