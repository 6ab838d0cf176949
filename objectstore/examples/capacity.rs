//! Metadata bytes per file on RocksDB when blob bytes live elsewhere, for `docs/SCALING.md`.
//!
//! `capacity [FILES] [THREADS]` (defaults 300,000 and 64): uploads FILES files of distinct
//! 100-byte content into a store on RocksDB whose blob backend discards bytes (every blob is
//! "remote": inline threshold 0), as 64 writers, then flushes, and prints the files, the
//! upload rate, the RocksDB directory's size per file, and the time to reopen. The object
//! store's own location index (32-byte key, 13-byte value per blob) is reported apart.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use blobstore::{
    Blake3Hash, BlobBackend, BucketName, StoreBuilder, StoredBlob, TempBlob, Timestamp,
};
use engine::EngineConfig;

#[derive(Debug)]
struct NullBackend;

#[derive(Debug)]
struct NullTemp;

impl Write for NullTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TempBlob for NullTemp {
    fn persist(self: Box<Self>, _hash: &Blake3Hash) -> blobstore::Result<()> {
        Ok(())
    }
}

impl BlobBackend for NullBackend {
    fn name(&self) -> &'static str {
        "null"
    }
    fn create_temp(&self) -> blobstore::Result<Box<dyn TempBlob>> {
        Ok(Box::new(NullTemp))
    }
    fn open_range(
        &self,
        _: &Blake3Hash,
        _: u64,
        _: u64,
    ) -> blobstore::Result<Option<Box<dyn Read + Send>>> {
        Ok(None)
    }
    fn delete(&self, _: &Blake3Hash) -> blobstore::Result<()> {
        Ok(())
    }
    fn sweep(
        &self,
        _: Timestamp,
        _: &mut dyn FnMut(StoredBlob) -> blobstore::Result<()>,
    ) -> blobstore::Result<u64> {
        Ok(0)
    }
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes in write-ahead logs and in table files.
fn breakdown(path: &Path) -> (u64, u64) {
    let mut wal = 0;
    let mut sst = 0;
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let len = entry.metadata().map_or(0, |m| m.len());
        let path = entry.path();
        let extension = path.extension().and_then(|e| e.to_str());
        if extension == Some("log") {
            wal += len;
        } else if extension == Some("sst") {
            sst += len;
        }
    }
    (wal, sst)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let files: u64 = args.next().map_or(Ok(300_000), |a| a.parse())?;
    let threads: u64 = args.next().map_or(Ok(64), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let meta = dir.path().join("meta");
    let open = || {
        StoreBuilder::new(EngineConfig::rocksdb(&meta), dir.path().join("data"))
            .backend(Arc::new(NullBackend))
            .inline_threshold(0)
            .open()
    };
    let store = open()?;
    let buckets: Vec<BucketName> = (0..100)
        .map(|i| BucketName::new(format!("archive-{i}")))
        .collect::<Result<_, _>>()?;
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= files {
                    break;
                }
                let mut content = [0u8; 100];
                content[..8].copy_from_slice(&i.to_le_bytes());
                let request = blobstore::UploadRequest::new(
                    buckets[(i % 100) as usize].clone(),
                    format!("package-{i}_1.0-1_amd64.deb"),
                );
                store
                    .upload_bytes(request, &content, "bench")
                    .expect("upload");
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    store.flush()?;
    drop(store);
    let bytes = dir_size(&meta);
    let (wal, sst) = breakdown(&meta);
    let start = Instant::now();
    let store = open()?;
    let reopen = start.elapsed();
    let summary = store.summary()?;
    drop(store);
    // The first open replays the write-ahead log; the second is the steady state.
    let start = Instant::now();
    let store = open()?;
    let reopen2 = start.elapsed();
    drop(store);
    let bytes2 = dir_size(&meta);
    let (wal2, sst2) = breakdown(&meta);
    println!(
        "files {} in {secs:.1} s ({:.0}/s, {threads} writers)",
        summary.files,
        files as f64 / secs
    );
    println!(
        "after the run: RocksDB dir {bytes} bytes = {:.1} bytes/file (log {wal}, sst {sst}); first reopen {:.0} ms",
        bytes as f64 / files as f64,
        reopen.as_secs_f64() * 1e3
    );
    println!(
        "after reopening: RocksDB dir {bytes2} bytes = {:.1} bytes/file (log {wal2}, sst {sst2} = {:.1} bytes/file); second reopen {:.0} ms",
        bytes2 as f64 / files as f64,
        sst2 as f64 / files as f64,
        reopen2.as_secs_f64() * 1e3
    );
    println!("object-store location index: 45 raw bytes per blob (32-byte key, 13-byte value)");
    Ok(())
}
