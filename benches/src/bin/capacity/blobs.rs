//! The blob store: tiny-file ingest, dedup, reads, metadata bytes, open time and GC at one
//! scale; ingest and read rates by size; the BLAKE3 ceiling.

use std::io::{Read, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use blobstore::{Access, BucketName, Store, StoreBuilder, UploadRequest};
use engine::EngineConfig;

use crate::common::{dir_size, micros, rss, Flags, Lcg};

/// Writers sharing the group fsync during the fill.
const FILL_THREADS: usize = 32;

fn open(dir: &std::path::Path) -> Result<Store> {
    Ok(
        StoreBuilder::new(EngineConfig::rocksdb(dir.join("meta")), dir.join("data"))
            .grace(Duration::ZERO)
            .open()?,
    )
}

/// A tiny file's content: distinct per `i`, stored inline.
fn tiny(i: usize) -> Vec<u8> {
    format!("tiny file number {i:>12} of the capacity run\n").into_bytes()
}

/// Uploads tiny files `0..n` named `f` into `bucket`, synced, from [`FILL_THREADS`] writers;
/// their ids in no particular order.
fn upload_tiny(store: &Store, bucket: &BucketName, n: usize) -> Result<Vec<blobstore::FileId>> {
    parallel(n, |i| {
        let request = UploadRequest::new(bucket.clone(), "f");
        Ok(store.upload_bytes(request, &tiny(i), "bench")?.record.id)
    })
}

/// Runs `job(0..n)` on [`FILL_THREADS`] threads; the results in no particular order.
fn parallel<T: Send>(n: usize, job: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..FILL_THREADS)
            .map(|_| {
                s.spawn(|| -> Result<Vec<T>> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(done);
                        }
                        done.push(job(i)?);
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for w in workers {
            all.extend(w.join().expect("worker")?);
        }
        Ok(all)
    })
}

/// `capacity fill --files N --dir DIR --paths FILE [--sample K]`: a librarian data directory
/// (the engine under `DIR/meta`, blob files under `DIR`, as `librarian --data-dir DIR` opens
/// it) holding N tiny files uploaded as [`scale`] does, for a server to be started on
/// (`benches/servers/memory-at-scale.sh`); writes to FILE the download paths of K files
/// (default 100,000) picked at random over the whole store.
pub fn fill(flags: &Flags) -> Result<()> {
    let n = flags.number("files", 10_000)?;
    let dir = flags.path("dir")?;
    let store = StoreBuilder::new(EngineConfig::rocksdb(dir.join("meta")), &dir).open()?;
    let bucket = BucketName::new("capacity")?;
    let started = Instant::now();
    let ids = upload_tiny(&store, &bucket, n)?;
    let took = started.elapsed().as_secs_f64();
    let mut rng = Lcg(11);
    let mut paths = std::io::BufWriter::new(std::fs::File::create(flags.path("paths")?)?);
    for _ in 0..flags.number("sample", 100_000)? {
        writeln!(paths, "/{}/f", ids[rng.below(n)])?;
    }
    paths.flush()?;
    println!(
        "  {n} files in {took:.0} s ({:.0} files/s)",
        n as f64 / took
    );
    Ok(())
}

/// `capacity blobs --files N`: N tiny files with synced uploads from 32 writers.
pub fn scale(flags: &Flags) -> Result<()> {
    let n = flags.number("files", 10_000)?;
    let dir = tempfile::tempdir_in(flags.path("dir")?)?;
    let mut out = flags.results()?;
    let scale = n as u64;
    let store = open(dir.path())?;
    let bucket = BucketName::new("capacity")?;

    let started = Instant::now();
    let mut ids = upload_tiny(&store, &bucket, n)?;
    let took = started.elapsed();
    ids.sort_unstable();
    out.row(
        "blobs/ingest tiny files, 32 writers, synced",
        scale,
        n as f64 / took.as_secs_f64(),
        "files/s",
    )?;

    // Dedup hits: uploads of contents already stored.
    let dups = n.min(20_000);
    let before = store.summary()?.blobs;
    let started = Instant::now();
    let dup_ids = parallel(dups, |i| {
        let request = UploadRequest::new(bucket.clone(), "dup");
        Ok(store
            .upload_bytes(request, &tiny((i * 7919) % n), "bench")?
            .record
            .id)
    })?;
    let took = started.elapsed();
    let summary = store.summary()?;
    anyhow::ensure!(
        summary.blobs == before,
        "a duplicate upload stored a new blob"
    );
    out.row(
        "blobs/dedup hits, 32 writers, synced",
        scale,
        dups as f64 / took.as_secs_f64(),
        "files/s",
    )?;
    let mut rng = Lcg(7);

    // Reads of random files, one reader, warm.
    let files = summary.files as usize;
    let reads = n.min(100_000);
    let mut samples = Vec::with_capacity(reads);
    let mut buf = Vec::new();
    for _ in 0..reads {
        let id = ids[rng.below(n)];
        let t = Instant::now();
        buf.clear();
        store
            .read(id, Access::Anonymous, None)?
            .read_to_end(&mut buf)?;
        samples.push(t.elapsed());
    }
    let total: Duration = samples.iter().sum();
    out.row(
        "blobs/read tiny files, 1 reader",
        scale,
        reads as f64 / total.as_secs_f64(),
        "files/s",
    )?;
    out.latencies("blobs/read tiny file", scale, samples)?;

    // Bucket statistics: counters kept per bucket, so the same cost at every scale.
    let stats_samples = (0..1_000)
        .map(|_| {
            let t = Instant::now();
            store.bucket_stats(&bucket).map(|stats| {
                std::hint::black_box(stats);
                t.elapsed()
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.latencies("blobs/bucket statistics", scale, stats_samples)?;

    // Metadata bytes: the engine directory after a clean close.
    store.flush()?;
    drop(store);
    let meta = dir_size(&dir.path().join("meta"));
    out.row(
        "blobs/metadata bytes per file",
        scale,
        meta as f64 / files as f64,
        "B",
    )?;
    out.row(
        "blobs/metadata bytes per blob",
        scale,
        meta as f64 / summary.blobs as f64,
        "B",
    )?;
    out.row("blobs/metadata bytes total", scale, meta as f64, "B")?;

    {
        let config = EngineConfig::rocksdb(dir.path().join("meta"));
        let engine = engine::RocksEngine::open(&config, blobstore::KEYSPACES)?;
        out.stored_bytes("blobs", "file", &engine, blobstore::KEYSPACES, scale, files)?;
        let (keyspaces, tables) = (blobstore::KEYSPACES, "blobs/table bytes on disk");
        out.table_bytes(tables, "file", &engine, keyspaces, scale, files)?;
        // The same after compacting every keyspace fully: the size a store converges to,
        // which does not depend on the levels this fill happened to leave.
        for name in keyspaces {
            engine.compact_fully(engine::Engine::keyspace(&engine, name)?)?;
        }
        let compacted = "blobs/table bytes on disk after a full compaction";
        out.table_bytes(compacted, "file", &engine, keyspaces, scale, files)?;
    }

    let started = Instant::now();
    let store = open(dir.path())?;
    let summary = store.summary()?;
    out.row(
        "blobs/open time",
        scale,
        micros(started.elapsed()) / 1000.0,
        "ms",
    )?;

    // Deletes: the duplicates, then a slice of the originals, whose blobs GC then collects
    // (grace 0).
    let started = Instant::now();
    parallel(dup_ids.len(), |i| {
        Ok(store.delete_file(dup_ids[i], "bench")?)
    })?;
    out.row(
        "blobs/delete files, 32 writers, synced",
        scale,
        dup_ids.len() as f64 / started.elapsed().as_secs_f64(),
        "files/s",
    )?;
    let doomed = (n / 10).clamp(1, 2_000);
    parallel(doomed, |k| {
        Ok(store.delete_file(ids[(k * 10) % n], "bench")?)
    })?;
    std::thread::sleep(Duration::from_millis(1100));
    let started = Instant::now();
    let mut collected = 0;
    loop {
        let report = store.gc(10_000)?;
        collected += report.collected_blobs;
        if !report.more {
            break;
        }
    }
    let took = started.elapsed();
    anyhow::ensure!(
        collected as usize >= doomed,
        "GC collected {collected} of {doomed} blobs"
    );
    out.row(
        "blobs/gc collected blobs",
        scale,
        collected as f64 / took.as_secs_f64(),
        "blobs/s",
    )?;
    let (now, peak) = rss();
    out.row(
        "blobs/process peak RSS",
        scale,
        peak as f64 / 1048576.0,
        "MiB",
    )?;
    println!(
        "{} files, {} blobs left; RSS {} MiB",
        summary.files,
        store.summary()?.blobs,
        now >> 20
    );
    Ok(())
}

/// `capacity sizes`: single-writer ingest and single-reader read rate by file size, and the
/// BLAKE3 single-thread hash rate.
pub fn sizes(flags: &Flags) -> Result<()> {
    let dir = tempfile::tempdir_in(flags.path("dir")?)?;
    let mut out = flags.results()?;
    let store = open(dir.path())?;
    let bucket = BucketName::new("sizes")?;
    let mut rng = Lcg(3);
    let budget: usize = flags.number("bytes", 128 << 20)?;
    for size in [1usize << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20] {
        let count = (budget / size).clamp(1, 2_000);
        let mut content = vec![0u8; size];
        let mut ids = Vec::with_capacity(count);
        let started = Instant::now();
        for _ in 0..count {
            rng.fill(&mut content);
            let mut upload =
                store.begin_upload(UploadRequest::new(bucket.clone(), "s"), "bench")?;
            for piece in content.chunks(1 << 20) {
                upload.write_all(piece)?;
            }
            ids.push(upload.commit()?.record.id);
        }
        let took = started.elapsed().as_secs_f64();
        let kib = (size >> 10) as u64;
        out.row(
            "sizes/ingest MiB/s",
            kib,
            (count * size) as f64 / took / 1048576.0,
            "MiB/s",
        )?;
        out.row("sizes/ingest files/s", kib, count as f64 / took, "files/s")?;
        let mut buf = vec![0u8; 1 << 20];
        let started = Instant::now();
        for id in &ids {
            let mut reader = store.read(*id, Access::Anonymous, None)?;
            while reader.read(&mut buf)? > 0 {}
        }
        let took = started.elapsed().as_secs_f64();
        out.row(
            "sizes/read MiB/s",
            kib,
            (count * size) as f64 / took / 1048576.0,
            "MiB/s",
        )?;
    }
    drop(store);

    // The ceiling: BLAKE3 over the same bytes on one thread (the store hashes once per upload).
    let mut content = vec![0u8; 256 << 20];
    rng.fill(&mut content);
    let started = Instant::now();
    std::hint::black_box(blake3::hash(&content));
    let took = started.elapsed().as_secs_f64();
    out.row(
        "blake3/single-thread hash MiB/s",
        256 << 10,
        256.0 / took,
        "MiB/s",
    )?;
    let started = Instant::now();
    for piece in content.chunks(1 << 10).take(100_000) {
        std::hint::black_box(blake3::hash(piece));
    }
    let took = started.elapsed().as_secs_f64();
    out.row(
        "blake3/single-thread hash MiB/s",
        1,
        100_000.0 / 1024.0 / took,
        "MiB/s",
    )?;
    Ok(())
}
