//! Upload and download throughput through the blob store over Swift (or S3), for
//! `scripts/bench-objectstore.sh`, which runs the plain `swift` client on the same files.
//!
//! `bench FILES_DIR OUT_DIR [THREADS]`: uploads every file of FILES_DIR through the store
//! (streaming from disk, hashed, spooled, uploaded, verified, recorded), then downloads each
//! into OUT_DIR, THREADS at a time (default 10, as `swift upload`/`download` use). The Swift
//! comes from the environment of `scripts/swift-saio.sh`; `BENCH_PROTOCOL=s3` uses its S3 API.
//! Prints one line per phase: `store upload|download BYTES SECONDS MB/s`, and `store spooled
//! SECONDS TOTAL`: when the last upload had been read, hashed and spooled, of the upload's
//! total seconds. Between the phases it
//! runs `sync` and pauses a second, so that the download does not pay for the disk writeback
//! of the upload (the script does the same before the swift client's phases).

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use blobstore::{Access, BucketName, StoreBuilder, UploadRequest};
use engine::MemEngine;
use objectstore::{ObjectStoreBackend, ObjectStoreConfig};

fn env(name: &str) -> Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set (source DIR/env of swift-saio.sh)"))
}

fn parallel<T: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let queue = Mutex::new(items);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let next = queue.lock().expect("queue").pop();
                        match next {
                            Some(item) => f(item)?,
                            None => return Ok(()),
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("worker panicked"))
    })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let files_dir = PathBuf::from(
        args.next()
            .context("usage: bench FILES_DIR OUT_DIR [THREADS]")?,
    );
    let out_dir = PathBuf::from(
        args.next()
            .context("usage: bench FILES_DIR OUT_DIR [THREADS]")?,
    );
    let threads: usize = args.next().map_or(Ok(10), |t| t.parse())?;
    std::fs::create_dir_all(&out_dir)?;

    let config = if std::env::var("BENCH_PROTOCOL").as_deref() == Ok("s3") {
        ObjectStoreConfig::s3(
            env("S3_ENDPOINT")?,
            env("S3_REGION")?,
            env("S3_ACCESS_KEY")?,
            env("S3_SECRET_KEY")?,
        )
    } else {
        ObjectStoreConfig::swift(
            env("SWIFT_AUTH_URL")?,
            env("SWIFT_USER")?,
            env("SWIFT_KEY")?,
        )
    };
    let config = config
        .container_prefix(format!("bench{:08x}", rand::random::<u32>()))
        .spool_dir(out_dir.join("spool"));
    let keyspaces: Vec<&str> = blobstore::KEYSPACES
        .iter()
        .chain(objectstore::KEYSPACES)
        .copied()
        .collect();
    let engine: Arc<dyn engine::Engine> = Arc::new(MemEngine::new(&keyspaces));
    let backend = Arc::new(ObjectStoreBackend::open(&config, engine.clone())?);
    let store = StoreBuilder::with_engine(engine, out_dir.join("data"))
        .backend(backend)
        .open()?;
    let bucket = BucketName::new("bench")?;

    let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
    for entry in std::fs::read_dir(&files_dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((name, entry.path(), entry.metadata()?.len()));
        }
    }
    let total: u64 = files.iter().map(|f| f.2).sum();

    let ids = Mutex::new(Vec::new());
    let start = Instant::now();
    let spooled = Mutex::new(0f64);
    parallel(files.clone(), threads, |(name, path, _)| {
        let mut upload =
            store.begin_upload(UploadRequest::new(bucket.clone(), name.clone()), "bench")?;
        io::copy(&mut File::open(&path)?, &mut upload)?;
        {
            let mut last = spooled.lock().expect("spooled");
            *last = last.max(start.elapsed().as_secs_f64());
        }
        let record = upload.commit()?.record;
        ids.lock().expect("ids").push((name, record.id));
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "store upload {total} {secs:.3} {:.1}",
        total as f64 / secs / 1e6
    );
    // How much of the upload went to reading, hashing and spooling before the first bytes
    // could go to the object store (whose object name is the hash).
    println!(
        "store spooled {:.3} {secs:.3}",
        spooled.into_inner().expect("spooled")
    );

    // Settle: see the module comment.
    std::process::Command::new("sync").status()?;
    std::thread::sleep(std::time::Duration::from_secs(1));

    let downloads = out_dir.join("downloaded");
    std::fs::create_dir_all(&downloads)?;
    let start = Instant::now();
    parallel(ids.into_inner().expect("ids"), threads, |(name, id)| {
        let mut reader = store.read(id, Access::Trusted, None)?;
        let mut out = BufWriter::with_capacity(1 << 20, File::create(downloads.join(name))?);
        io::copy(&mut reader, &mut out)?;
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "store download {total} {secs:.3} {:.1}",
        total as f64 / secs / 1e6
    );
    Ok(())
}
