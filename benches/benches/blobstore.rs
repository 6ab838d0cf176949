//! Blob store benchmarks (figures and commands in `blobstore/DESIGN.md`).
//!
//! - `ingest_256mib`: one 256 MiB streaming upload (durable, on the disk and on tmpfs) beside
//!   single-thread in-memory BLAKE3 and SHA-256 of the same bytes with the same crates.
//! - `durable_4k`: 4 KiB durable uploads from 64 writer threads, with the change feed on
//!   (`store_64_writers`) and off (`store_64_writers_feed_off`), beside a naive write + fsync
//!   of one file per upload; each prints its CPU time per upload (user + system of the
//!   whole process), the figure issue 18 asks for beside the naive writer's.
//! - `inline_threshold`: one durable upload of 4, 16 and 64 KiB stored inline vs as a file.
//! - `large_store`: a store of `BLOBSTORE_BENCH_FILES` files (default 1,000,000): bucket
//!   statistics of a 10-file vs the large bucket, open time, metadata bytes per file.
//!
//! Everything "on the disk" goes under `BLOBSTORE_BENCH_DIR` (default: the project's cache,
//! `~/.cache/lpstore/bench`), never `$TMPDIR`: on a machine whose `/tmp` is tmpfs the durable
//! figures would measure memory. A directory on tmpfs is refused; the `_tmpfs` variants use
//! `/dev/shm` on purpose, labelled as such.

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]
// criterion_group! makes public functions that need no documentation.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::disk_dir;
use blobstore::{BucketName, Store, StoreBuilder, UploadRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::EngineConfig;
use sha2::Digest as _;

fn open(dir: &Path, inline_threshold: usize) -> Store {
    StoreBuilder::new(EngineConfig::rocksdb(dir.join("meta")), dir.join("data"))
        .inline_threshold(inline_threshold)
        .grace(Duration::ZERO)
        .open()
        .expect("open store")
}

fn bucket(name: &str) -> BucketName {
    BucketName::new(name).expect("bucket name")
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn ingest(c: &mut Criterion) {
    const SIZE: usize = 256 << 20;
    let data = pseudo_random(SIZE, 42);
    let mut group = c.benchmark_group("ingest_256mib");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("reference_blake3_one_thread", |b| {
        b.iter(|| black_box(blake3::hash(black_box(&data))))
    });
    group.bench_function("reference_sha256_one_thread", |b| {
        b.iter(|| black_box(sha2::Sha256::digest(black_box(&data))))
    });
    // The cost of writing the bytes at all: write(2) into a file (its copy into the page
    // cache) with an fsync, on the disk and on tmpfs (where the fsync is free).
    let plain_disk = disk_dir();
    let plain_shm = tempfile::tempdir_in("/dev/shm").ok();
    let mut plain = vec![("reference_write_fsync_disk", plain_disk.path())];
    if let Some(dir) = &plain_shm {
        plain.push(("reference_write_fsync_tmpfs", dir.path()));
    }
    for (label, dir) in plain {
        group.bench_function(label, |b| {
            b.iter(|| {
                let path = dir.join("plain");
                let mut file = std::fs::File::create(&path).unwrap();
                for chunk in data.chunks(1 << 20) {
                    file.write_all(chunk).unwrap();
                }
                file.sync_all().unwrap();
                drop(file);
                std::fs::remove_file(&path).unwrap();
            })
        });
    }
    let counter = AtomicU64::new(0);
    // On the disk (durable: the file's fsync waits for the disk), and with the blob
    // directory on tmpfs (fsync is free there: the rate of the hashing pipeline itself).
    let disk = disk_dir();
    let shm = Path::new("/dev/shm");
    let shm_dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).ok()
    } else {
        None
    };
    let mut targets = vec![("store_upload_durable_disk", disk.path())];
    if let Some(dir) = &shm_dir {
        targets.push(("store_upload_tmpfs", dir.path()));
    }
    for (label, dir) in targets {
        let store = open(dir, blobstore::DEFAULT_INLINE_THRESHOLD);
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut buf = data.clone();
                for _ in 0..iters {
                    // Distinct content each time, or dedup would skip the write.
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    buf[..8].copy_from_slice(&n.to_le_bytes());
                    let start = Instant::now();
                    let mut upload = store
                        .begin_upload(UploadRequest::new(bucket("ingest"), "big.bin"), "bench")
                        .unwrap();
                    for chunk in buf.chunks(1 << 20) {
                        upload.write_all(chunk).unwrap();
                    }
                    let file = upload.commit().unwrap().record;
                    total += start.elapsed();
                    store.delete_file(file.id, "bench").unwrap();
                    store.gc(100).unwrap();
                }
                total
            })
        });
    }
    group.finish();
}

const WRITERS: usize = 64;
const PER_WRITER: usize = 32;

/// User + system CPU time this process has used so far (every thread: RocksDB's flushes and
/// compactions included), from `/proc/self/stat`, in clock ticks of 10 ms.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    Duration::from_millis((tick(11) + tick(12)) * 10)
}

/// CPU time per upload over a benchmark's measured iterations, printed after it: the figure
/// issue 18 asks for beside the naive write + fsync of the same run.
struct CpuPerUpload {
    name: &'static str,
    cpu: Duration,
    uploads: u64,
}

impl CpuPerUpload {
    fn new(name: &'static str) -> Self {
        CpuPerUpload {
            name,
            cpu: Duration::ZERO,
            uploads: 0,
        }
    }

    fn measure(&mut self, iters: u64, run: impl FnOnce()) -> Duration {
        let cpu = process_cpu();
        let start = Instant::now();
        run();
        let elapsed = start.elapsed();
        self.cpu += process_cpu().saturating_sub(cpu);
        self.uploads += iters * (WRITERS * PER_WRITER) as u64;
        elapsed
    }
}

impl Drop for CpuPerUpload {
    fn drop(&mut self) {
        if self.uploads > 0 {
            println!(
                "durable_4k/{}: CPU (user + system, whole process) {:.1} us per upload over {} uploads",
                self.name,
                self.cpu.as_secs_f64() * 1e6 / self.uploads as f64,
                self.uploads
            );
        }
    }
}

fn durable_4k(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_4k");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements((WRITERS * PER_WRITER) as u64));
    let seq = AtomicU64::new(0);
    // The change feed on (the default) and off, in the same run: its cost is the difference.
    for (name, feed) in [
        ("store_64_writers", true),
        ("store_64_writers_feed_off", false),
    ] {
        let dir = disk_dir();
        let store = StoreBuilder::new(
            EngineConfig::rocksdb(dir.path().join("meta")),
            dir.path().join("data"),
        )
        .change_feed(feed)
        .open()
        .expect("open store");
        let mut cpu = CpuPerUpload::new(name);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                cpu.measure(iters, || {
                    for _ in 0..iters {
                        std::thread::scope(|scope| {
                            for _ in 0..WRITERS {
                                scope.spawn(|| {
                                    for _ in 0..PER_WRITER {
                                        let n = seq.fetch_add(1, Ordering::Relaxed);
                                        let data = pseudo_random(4096, n + 1);
                                        store
                                            .upload_bytes(
                                                UploadRequest::new(bucket("small"), "f"),
                                                &data,
                                                "bench",
                                            )
                                            .unwrap();
                                    }
                                });
                            }
                        });
                    }
                })
            })
        });
    }
    let naive_dir = disk_dir();
    let mut cpu = CpuPerUpload::new("naive_write_fsync_64_writers");
    group.bench_function("naive_write_fsync_64_writers", |b| {
        b.iter_custom(|iters| {
            cpu.measure(iters, || {
                for _ in 0..iters {
                    std::thread::scope(|scope| {
                        for _ in 0..WRITERS {
                            scope.spawn(|| {
                                for _ in 0..PER_WRITER {
                                    let n = seq.fetch_add(1, Ordering::Relaxed);
                                    let data = pseudo_random(4096, n + 1);
                                    let path = naive_dir.path().join(format!("{n}"));
                                    let mut file = std::fs::File::create(&path).unwrap();
                                    file.write_all(&data).unwrap();
                                    file.sync_all().unwrap();
                                }
                            });
                        }
                    });
                }
            })
        })
    });
    group.finish();
}

fn inline_threshold(c: &mut Criterion) {
    let mut group = c.benchmark_group("inline_threshold");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let seq = AtomicU64::new(1 << 40);
    for (label, threshold) in [("inline", blobstore::CHUNK_SIZE), ("file", 0)] {
        let dir = disk_dir();
        let store = open(dir.path(), threshold);
        for size in [4096usize, 16384, 65536] {
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(label, size), &size, |b, &size| {
                b.iter(|| {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let data = pseudo_random(size, n);
                    store
                        .upload_bytes(UploadRequest::new(bucket("t"), "f"), &data, "bench")
                        .unwrap()
                        .record
                })
            });
        }
    }
    group.finish();
}

/// Whether the command line's filter (if any) can select `large_store`: populating the large
/// store takes minutes, so it is skipped when another group was asked for.
fn large_store_selected() -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| f.contains("large"))
}

fn large_store(c: &mut Criterion) {
    if !large_store_selected() {
        return;
    }
    let files: u64 = std::env::var("BLOBSTORE_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = disk_dir();
    let store = open(dir.path(), blobstore::DEFAULT_INLINE_THRESHOLD);
    let large = bucket("large");
    let small = bucket("small");
    for i in 0..10u64 {
        store
            .upload_bytes(
                UploadRequest::new(small.clone(), "f"),
                &i.to_le_bytes(),
                "bench",
            )
            .unwrap();
    }
    let start = Instant::now();
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..WRITERS {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= files {
                    break;
                }
                // 100-byte distinct files with realistic names.
                let mut data = pseudo_random(100, n + 7);
                data[..8].copy_from_slice(&n.to_le_bytes());
                let name = format!("package_{n}_1.0-1_amd64.deb");
                store
                    .upload_bytes(UploadRequest::new(large.clone(), name), &data, "bench")
                    .unwrap();
            });
        }
    });
    let populate = start.elapsed();
    store.flush().unwrap();
    eprintln!(
        "large_store: populated {files} files in {populate:?} ({:.0} uploads/s)",
        files as f64 / populate.as_secs_f64()
    );
    assert_eq!(store.bucket_stats(&large).unwrap().files, files);
    let mut group = c.benchmark_group("large_store");
    group.bench_function("bucket_stats_10_files", |b| {
        b.iter(|| store.bucket_stats(black_box(&small)).unwrap())
    });
    group.bench_function(format!("bucket_stats_{files}_files"), |b| {
        b.iter(|| store.bucket_stats(black_box(&large)).unwrap())
    });
    let start = Instant::now();
    drop(store);
    eprintln!("large_store: close (memtable flush) {:?}", start.elapsed());
    let start = Instant::now();
    let first = open(dir.path(), blobstore::DEFAULT_INLINE_THRESHOLD);
    eprintln!("large_store: first reopen {:?}", start.elapsed());
    drop(first);
    let (total, sst) = dir_size(&dir.path().join("meta"));
    eprintln!(
        "large_store: metadata on disk {total} bytes = {:.1} bytes per file; in SST files {sst} bytes = {:.1} bytes per file (each file: record, listing, 2 digest entries, blob record, 100 bytes of inline content, counters)",
        total as f64 / files as f64,
        sst as f64 / files as f64
    );
    group.sample_size(10);
    group.bench_function(format!("open_{files}_files"), |b| {
        b.iter(|| drop(open(dir.path(), blobstore::DEFAULT_INLINE_THRESHOLD)))
    });
    group.finish();
    let reopened = open(dir.path(), blobstore::DEFAULT_INLINE_THRESHOLD);
    assert_eq!(reopened.bucket_stats(&large).unwrap().files, files);
}

/// (all bytes, bytes in `*.sst` files) under `path`.
fn dir_size(path: &Path) -> (u64, u64) {
    let (mut total, mut sst) = (0, 0);
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (t, s) = dir_size(&entry.path());
            total += t;
            sst += s;
        } else {
            total += meta.len();
            if entry.path().extension().is_some_and(|e| e == "sst") {
                sst += meta.len();
            }
        }
    }
    (total, sst)
}

criterion_group!(benches, ingest, durable_4k, inline_threshold, large_store);
criterion_main!(benches);
