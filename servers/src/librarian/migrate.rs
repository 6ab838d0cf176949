//! `librarian migrate-blobs`: moving the blob files of the data directory to the configured
//! object store, with a progress report.
//!
//! The work is [`objectstore::migrate`]'s: per blob, upload, read the remote copy back and
//! check its size and BLAKE3 hash, and only then remove the local file. Inline blobs live in
//! the engine and stay there. What is moved is no longer local, so running it again resumes
//! (and retries what failed). It needs the engine to itself: stop the server first. A server
//! configured with `[object_store]` reads the blobs not moved yet from the data directory, so
//! the server can be switched to the object store before, and the move run later.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use blobstore::{Blake3Hash, BlobBackend, LocalFsBackend, StoredBlob, TempBlob, Timestamp};
use objectstore::{MigrateOptions, ObjectStoreBackend};

use super::config::{LibrarianConfig, OpenError};
use crate::common::config::ConfigError;

/// Blob files and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobCount {
    /// Blob files.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Where a migration stands, as handed to the progress callback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The blob files in the data directory when the run started.
    pub pending: BlobCount,
    /// Blobs uploaded so far (each is then read back, checked and removed locally).
    pub uploaded: BlobCount,
}

/// What a run of [`migrate_blobs`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationSummary {
    /// The blob files in the data directory when the run started.
    pub pending: BlobCount,
    /// Blobs uploaded, verified and removed locally.
    pub moved: BlobCount,
    /// Blobs that could not be moved, with why: their local files are untouched; run again
    /// to retry them.
    pub failed: Vec<(Blake3Hash, String)>,
    /// The blob files left in the data directory after the run.
    pub remaining: BlobCount,
}

/// How [`migrate_blobs`] runs.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct MigrationOptions {
    /// Blobs moved at once. Default 4.
    pub parallelism: usize,
    /// The time between two progress reports (one more comes at the end). Default 5 s.
    pub progress_every: Duration,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            parallelism: 4,
            progress_every: Duration::from_secs(5),
        }
    }
}

impl MigrationOptions {
    /// Blobs moved at once (at least one). Default 4.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// The time between two progress reports. Default 5 s.
    pub fn progress_every(mut self, every: Duration) -> Self {
        self.progress_every = every.max(Duration::from_millis(100));
        self
    }
}

/// Counts the blob files under `data_dir/blobs` (`ab/cd/<64 hex>`).
///
/// # Errors
/// An I/O error listing a directory.
pub fn local_blobs(data_dir: &Path) -> io::Result<BlobCount> {
    fn walk(dir: &Path, depth: u32, count: &mut BlobCount) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if depth < 2 {
                if entry.file_type()?.is_dir() {
                    walk(&entry.path(), depth + 1, count)?;
                }
            } else if entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.parse::<Blake3Hash>().is_ok())
            {
                count.blobs += 1;
                count.bytes += entry.metadata()?.len();
            }
        }
        Ok(())
    }
    let mut count = BlobCount::default();
    walk(&data_dir.join("blobs"), 0, &mut count)?;
    Ok(count)
}

/// Moves the blob files of `config.store.data_dir` to `config.object_store`, calling
/// `progress` every `options.progress_every` and once at the end. The read cache, if
/// configured, is bypassed: moved blobs are not read through it.
///
/// # Errors
/// [`ConfigError::Invalid`] without an `[object_store]` section; the engine's error (the
/// server is still running, say), the object store's set-up error, or an I/O error listing
/// the data directory. Failures of single blobs are in the summary.
pub fn migrate_blobs(
    config: &LibrarianConfig,
    options: MigrationOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<MigrationSummary, OpenError> {
    let Some(object_store) = &config.object_store else {
        return Err(ConfigError::Invalid {
            reason: "migrate-blobs moves blobs to the object store: configure [object_store]"
                .to_string(),
        }
        .into());
    };
    let data_dir = &config.store.data_dir;
    let io_error = |source| OpenError::Io {
        path: data_dir.join("blobs"),
        source,
    };
    let engine = config.store.open_engine_for_object_store()?;
    let remote = ObjectStoreBackend::open(object_store, engine)?;
    let local = LocalFsBackend::open(data_dir)?;
    let pending = local_blobs(data_dir).map_err(io_error)?;
    let counting = Counting {
        inner: remote,
        blobs: Arc::new(AtomicU64::new(0)),
        bytes: Arc::new(AtomicU64::new(0)),
    };
    let snapshot = |counting: &Counting| Progress {
        pending,
        uploaded: BlobCount {
            blobs: counting.blobs.load(Ordering::Relaxed),
            bytes: counting.bytes.load(Ordering::Relaxed),
        },
    };
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let report = std::thread::scope(|scope| {
        let counting = &counting;
        let snapshot = &snapshot;
        scope.spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                done_rx.recv_timeout(options.progress_every)
            {
                progress(&snapshot(counting));
            }
        });
        let report = objectstore::migrate(
            data_dir,
            &local,
            counting,
            MigrateOptions::default().parallelism(options.parallelism),
        );
        drop(done_tx);
        report
    })?;
    progress(&snapshot(&counting));
    Ok(MigrationSummary {
        pending,
        moved: BlobCount {
            blobs: report.moved,
            bytes: report.bytes,
        },
        failed: report.failed,
        remaining: local_blobs(data_dir).map_err(io_error)?,
    })
}

/// The remote, counting what is uploaded for the progress report.
#[derive(Debug)]
struct Counting {
    inner: ObjectStoreBackend,
    blobs: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingTemp {
    inner: Box<dyn TempBlob>,
    written: u64,
    blobs: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Write for CountingTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl TempBlob for CountingTemp {
    fn persist(self: Box<Self>, hash: &Blake3Hash) -> blobstore::Result<()> {
        let CountingTemp {
            inner,
            written,
            blobs,
            bytes,
        } = *self;
        inner.persist(hash)?;
        blobs.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }
}

impl BlobBackend for Counting {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn create_temp(&self) -> blobstore::Result<Box<dyn TempBlob>> {
        Ok(Box::new(CountingTemp {
            inner: self.inner.create_temp()?,
            written: 0,
            blobs: Arc::clone(&self.blobs),
            bytes: Arc::clone(&self.bytes),
        }))
    }

    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> blobstore::Result<Option<Box<dyn io::Read + Send>>> {
        self.inner.open_range(hash, offset, len)
    }

    fn delete(&self, hash: &Blake3Hash) -> blobstore::Result<()> {
        self.inner.delete(hash)
    }

    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> blobstore::Result<()>,
    ) -> blobstore::Result<u64> {
        self.inner.sweep(older_than, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(local_blobs(dir.path()).unwrap(), BlobCount::default());
        let hash = blake3::hash(b"x").to_hex().to_string();
        let shard = dir.path().join("blobs").join(&hash[0..2]).join(&hash[2..4]);
        fs::create_dir_all(&shard).unwrap();
        fs::write(shard.join(&hash), b"12345").unwrap();
        fs::write(shard.join("not-a-blob"), b"123").unwrap();
        assert_eq!(
            local_blobs(dir.path()).unwrap(),
            BlobCount { blobs: 1, bytes: 5 }
        );
    }

    #[test]
    fn needs_an_object_store() {
        let error = migrate_blobs(
            &LibrarianConfig::default(),
            MigrationOptions::default(),
            &|_| {},
        )
        .unwrap_err();
        assert!(error.to_string().contains("[object_store]"), "{error}");
    }
}
