//! A consistent copy of a running store: the engine's checkpoint and the blob files its
//! records name (`DESIGN.md`, "Backup and restore").

use std::io;
use std::path::Path;

use engine::{Direction, EngineConfig, ScanRange};

use super::{Store, StoreBuilder};
use crate::backend::{BlobBackend, LocalFsBackend};
use crate::error::{Error, Result};
use crate::records::BlobMeta;
use crate::types::Blake3Hash;

/// What [`Store::backup`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// The newest change-feed revision in the copy: every write acknowledged with a revision
    /// up to it is there, none after.
    pub revision: u64,
    /// File records in the copy.
    pub files: u64,
    /// Blobs in the copy (inline ones included).
    pub blobs: u64,
    /// Blob files copied (the blobs not stored inline).
    pub blob_files: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Stored bytes, as the copy's statistics say.
    pub stored_bytes: u64,
    /// Logical bytes, as the copy's statistics say.
    pub logical_bytes: u64,
    /// Resumable uploads in progress whose received bytes were copied.
    pub partial_uploads: u64,
    /// Those bytes.
    pub partial_bytes: u64,
}

impl Store {
    /// Writes a consistent copy of the store into `data_dir`, an empty directory, while
    /// writers go on: the engine's checkpoint at `engine.path` (under `data_dir`), then the
    /// blob file of every blob the checkpoint's records name, copied through this store's
    /// backend into `data_dir/blobs` (so a store on an object store is copied to local
    /// files), then the copy opened and every blob checked against its hash.
    ///
    /// Blob files are immutable and named by their hash, and one is made durable before the
    /// record that names it is written, so every record of the checkpoint has its blob on
    /// disk at the checkpoint's moment; the only way to lose one before it is copied is GC,
    /// whose removals of blob files wait from before the checkpoint until the copies are
    /// made. Uploads are never held up.
    ///
    /// # Errors
    /// [`engine::Error::Unsupported`] (inside [`Error::Engine`]) when the engine cannot
    /// checkpoint; [`Error::Corrupt`] when a blob is missing or does not match its hash;
    /// the engine's or the backend's error.
    pub fn backup(&self, data_dir: &Path, engine: EngineConfig) -> Result<BackupReport> {
        // Download counts gathered in memory reach the engine first, so the copy has them.
        self.flush_downloads()?;
        let mut report = BackupReport::default();
        let copy =
            {
                let _fence = self
                    .inner
                    .blob_deletions
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                self.inner.engine.checkpoint(&engine.path)?;
                let copy = StoreBuilder::new(engine, data_dir)
                    .hot_cache_bytes(0)
                    .open()?;
                let target = LocalFsBackend::open(data_dir)?;
                for kv in copy.inner.engine.scan(
                    copy.inner.ks.blobs,
                    ScanRange::all(),
                    Direction::Forward,
                )? {
                    let (key, value) = kv?;
                    let meta = BlobMeta::decode(&key, &value)?;
                    if meta.inline {
                        continue;
                    }
                    let hash = Blake3Hash(key.as_slice().try_into().map_err(|_| {
                        Error::CorruptRecord {
                            what: "blob",
                            key: key.clone(),
                        }
                    })?);
                    self.copy_blob(&target, &hash, meta.size)?;
                    report.blob_files += 1;
                    report.blob_bytes += meta.size;
                }
                copy
            };
        let (parts, part_bytes) = self.copy_partial_uploads(&copy)?;
        report.partial_uploads = parts;
        report.partial_bytes = part_bytes;
        let mut after = None;
        loop {
            let checked = copy.verify(after, 1000)?;
            if let Some(problem) = checked.problems.first() {
                return Err(Error::Corrupt {
                    hash: match problem {
                        super::BlobProblem::Missing { hash }
                        | super::BlobProblem::Corrupt { hash, .. } => *hash,
                    },
                    detail: format!("in the backup under {}: {problem:?}", data_dir.display()),
                });
            }
            match checked.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let summary = copy.summary()?;
        report.revision = copy.change_log().head();
        report.files = summary.files;
        report.blobs = summary.blobs;
        report.stored_bytes = summary.stored_bytes;
        report.logical_bytes = summary.logical_bytes;
        copy.flush()?;
        Ok(report)
    }

    /// Copies, for every unfinished resumable upload of `copy`, the bytes its record
    /// acknowledges (the first `offset` bytes of its partial file: appends only add past
    /// the recorded offset, and a failed one truncates back to it) into
    /// the copy's `uploads/`. An upload that finished or was terminated between the
    /// checkpoint and this copy has no partial file left: the copy keeps its record without
    /// bytes, and after a restore its next append fails, so the client starts it over.
    fn copy_partial_uploads(&self, copy: &Store) -> Result<(u64, u64)> {
        let (mut count, mut bytes) = (0, 0);
        let records = copy.inner.engine.scan(
            copy.inner.ks.uploads,
            ScanRange::prefix(b"u"),
            Direction::Forward,
        )?;
        for kv in records {
            let (key, value) = kv?;
            let upload = crate::ResumableUpload::decode(&key, &value)?;
            if upload.file.is_some() || upload.offset == 0 {
                continue;
            }
            let from = self.upload_path(&upload.id);
            let Ok(source) = std::fs::File::open(&from) else {
                continue;
            };
            let to = copy.upload_path(&upload.id);
            crate::backend::ensure_dir(&copy.inner.uploads_dir)?;
            let mut target =
                std::fs::File::create(&to).map_err(|e| Error::io("creating", &to, e))?;
            let copied = io::copy(&mut io::Read::take(source, upload.offset), &mut target)
                .map_err(|e| Error::io("copying", &from, e))?;
            target
                .sync_all()
                .map_err(|e| Error::io("syncing", &to, e))?;
            if copied == upload.offset {
                count += 1;
                bytes += copied;
            }
        }
        Ok((count, bytes))
    }

    fn copy_blob(&self, target: &LocalFsBackend, hash: &Blake3Hash, size: u64) -> Result<()> {
        let mut reader = self
            .inner
            .backend
            .open_range(hash, 0, size)?
            .ok_or_else(|| Error::Corrupt {
                hash: *hash,
                detail: "its file is missing from the live store during a backup".into(),
            })?;
        let mut temp = target.create_temp()?;
        let copied = io::copy(&mut reader, &mut temp).map_err(|e| Error::Io {
            operation: "copying a blob into a backup",
            path: hash.to_hex().into(),
            source: e,
        })?;
        if copied != size {
            return Err(Error::Corrupt {
                hash: *hash,
                detail: format!("{copied} bytes read for a backup, the record says {size}"),
            });
        }
        temp.persist(hash)
    }

    /// Removes the bytes of blob `hash` from the backend, after any backup in progress has
    /// copied what its checkpoint names.
    pub(super) fn delete_blob_bytes(&self, hash: &Blake3Hash) -> Result<()> {
        let _fence = self
            .inner
            .blob_deletions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.backend.delete(hash)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    use engine::{Backend, EngineConfig};

    use crate::backend::LocalFsBackend;
    use crate::{BucketName, ManualClock, StoreBuilder, UploadRequest};

    /// GC's removal of a blob file waits while a backup holds the fence: the collection's
    /// record is written, the file stays until the fence is released.
    #[test]
    fn gc_removes_no_blob_file_while_a_backup_copies() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at_millis(1_000_000));
        let store = StoreBuilder::new(
            EngineConfig::new(Backend::Rocksdb, dir.path().join("meta")),
            dir.path(),
        )
        .clock(clock.clone())
        .grace(Duration::from_secs(60))
        .open()
        .unwrap();
        let request = UploadRequest::new(BucketName::new("b".to_string()).unwrap(), "f");
        let mut upload = store.begin_upload(request, "t").unwrap();
        upload.write_all(&vec![7u8; 100_000]).unwrap();
        let uploaded = upload.commit().unwrap();
        let hash = uploaded.record.blake3;
        let path = LocalFsBackend::open(dir.path()).unwrap().blob_path(&hash);
        store.delete_file(uploaded.record.id, "t").unwrap();
        clock.advance(Duration::from_secs(3600));

        let fence = store.inner.blob_deletions.write().unwrap();
        let gc = {
            let store = store.clone();
            std::thread::spawn(move || store.gc(100).unwrap())
        };
        // Wait (bounded) for the collection's record: the blob's metadata goes first.
        let mut recorded = false;
        for _ in 0..1000 {
            if store.blob_meta(&hash).unwrap().is_none() {
                recorded = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(recorded, "GC did not collect the blob's record");
        std::thread::sleep(Duration::from_millis(50));
        assert!(path.exists(), "the blob file went while the fence was held");
        drop(fence);
        let report = gc.join().unwrap();
        assert_eq!(report.collected_blobs, 1);
        assert!(!path.exists());
    }
}
