//! The figure behind "rehash the prefix on resume" (`blobstore/DESIGN.md`, "Resumable
//! uploads"): an 8 MiB append to a resumable upload with the prefix's digests in memory, and
//! the first append after the store is reopened, which rehashes the prefix (512 MiB and more)
//! from the partial file.
//!
//! `cargo bench -p benches --bench resumable`
//!
//! Files go under `BLOBSTORE_BENCH_DIR` (default `~/.cache/lpstore/bench`), which must not be
//! tmpfs; RocksDB.

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]
// criterion_group! makes public functions that need no documentation.
#![allow(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use benches::disk_dir;
use blobstore::{BucketName, Store, StoreBuilder, UploadId, UploadRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::EngineConfig;

const MIB: usize = 1 << 20;
/// The prefix received before the restart.
const PREFIX: usize = 512 * MIB;
/// The upload's announced length: room for the prefix and every measured append.
const LENGTH: u64 = 4 << 30;

fn open(dir: &Path) -> Store {
    StoreBuilder::new(
        EngineConfig::new(engine::Backend::Rocksdb, dir.join("meta")),
        dir.join("data"),
    )
    .open()
    .unwrap()
}

/// Deterministic bytes, distinct per seed.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A store holding one resumable upload with `PREFIX` bytes received.
fn upload_with_prefix(dir: &Path, piece: &[u8]) -> (Store, UploadId, u64) {
    let store = open(dir);
    let request = UploadRequest::new(BucketName::new("tus").unwrap(), "big.iso");
    let id = store
        .create_upload(request, LENGTH, String::new(), None, "bench")
        .unwrap()
        .upload
        .id;
    let mut offset = 0u64;
    while offset < PREFIX as u64 {
        store
            .append_upload(id, offset, &mut &piece[..], None)
            .unwrap();
        offset += piece.len() as u64;
    }
    (store, id, offset)
}

fn resume(c: &mut Criterion) {
    let piece = content(1, 8 * MIB);
    let mut group = c.benchmark_group("resumable");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    // Every iteration writes 8 MiB more: short, so that the disk holds the run.
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(piece.len() as u64));

    // Digests in memory: each append hashes only its own 8 MiB (and fsyncs it).
    let dir = disk_dir();
    let (store, id, mut offset) = upload_with_prefix(dir.path(), &piece);
    group.bench_function("append_8mib_warm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                store
                    .append_upload(id, offset, &mut &piece[..], None)
                    .unwrap();
                total += started.elapsed();
                offset += piece.len() as u64;
            }
            total
        })
    });
    drop(store);
    drop(dir);
    group.measurement_time(Duration::from_secs(15));

    // After a restart: the first append rehashes the whole prefix from the partial file
    // (512 MiB, growing by 8 MiB with each measured append).
    let dir = disk_dir();
    let (store, id, mut offset) = upload_with_prefix(dir.path(), &piece);
    let mut store = Some(store);
    group.bench_function("first_append_after_reopen_512mib_prefix", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                drop(store.take());
                let reopened = open(dir.path());
                let started = Instant::now();
                let patched = reopened
                    .append_upload(id, offset, &mut &piece[..], None)
                    .unwrap();
                total += started.elapsed();
                assert!(patched.rehashed, "the reopened store rehashed the prefix");
                offset += piece.len() as u64;
                store = Some(reopened);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, resume);
criterion_main!(benches);
