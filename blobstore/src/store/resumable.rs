//! Resumable uploads: creation, appends that are durable before they are acknowledged, the
//! status, termination, and their garbage collection.
//!
//! The bytes of an unfinished upload live in `data_dir/uploads/<id>.part`, its record in
//! `bs.uploads`. An append writes the bytes, fsyncs the file, then records the new offset
//! in a durable batch: the offset a client is told is always covered by fsynced bytes, and
//! bytes past the recorded offset (an append cut by a crash) are cut off by the next append.
//! The last append commits the file through the same path as a streamed upload
//! ([`Store::commit_upload`]), marking the record finished in the same batch.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use engine::{ScanRange, WriteBatch};

use crate::changes::Origin;
use crate::direct_io::DirectFile;
use crate::error::{Error, Result};
use crate::keys;
use crate::resumable::{Checksum, ChecksumHasher, PrefixHasher, ResumableUpload, UploadId};

use super::append::{append_body, Appended, Failure};
use super::upload::{validate_request, Content, Extras};
use super::{Store, UploadRequest, Uploaded};

/// At most this many prefix digests are kept in memory (about 2 KiB each); past it, the
/// oldest sessions are forgotten and rehash their prefix on their next append.
const MAX_SESSIONS: usize = 4096;

/// How long an append waits for another append to the same upload to end before it is
/// refused with [`Error::UploadBusy`].
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// The bytes a rehash reads at a time.
const REHASH_BUFFER: usize = 1 << 20;

/// What the store keeps in memory for an upload being appended to.
#[derive(Default)]
pub(super) struct Session {
    /// The digests of the first `.0` bytes.
    prefix: Option<(u64, PrefixHasher)>,
}

/// The sessions by upload: each one's mutex serialises the appends to its upload.
#[derive(Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<UploadId, Arc<Mutex<Session>>>>,
}

impl Sessions {
    fn get(&self, id: UploadId) -> Arc<Mutex<Session>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS && !map.contains_key(&id) {
            // Forget sessions no append holds; their next append rehashes.
            map.retain(|_, session| Arc::strong_count(session) > 1);
        }
        Arc::clone(map.entry(id).or_default())
    }

    fn forget(&self, id: UploadId) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Locks `session`, waiting up to [`BUSY_WAIT`] for an append that holds it.
fn lock_session(session: &Mutex<Session>, id: UploadId) -> Result<MutexGuard<'_, Session>> {
    let start = Instant::now();
    loop {
        match session.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if start.elapsed() < BUSY_WAIT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return Err(Error::UploadBusy { id }),
        }
    }
}

/// What an append (or a creation) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patched {
    /// The upload after it: its offset is durable.
    pub upload: ResumableUpload,
    /// The file it became, when this append finished it.
    pub finished: Option<Uploaded>,
    /// Whether the body ended early (a client gone): what arrived before was kept.
    pub interrupted: bool,
    /// Whether the digests of the prefix were recomputed from the partial file (after a
    /// restart, or once the session was forgotten).
    pub rehashed: bool,
}

impl Store {
    pub(super) fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.inner.uploads_dir.join(format!("{id}.part"))
    }

    fn upload_record(&self, id: UploadId) -> Result<Option<ResumableUpload>> {
        let key = keys::upload(&id);
        match self.inner.engine.get(self.inner.ks.uploads, &key)? {
            Some(bytes) => Ok(Some(ResumableUpload::decode(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Creates a resumable upload of `length` bytes into `request`'s bucket, by `actor`,
    /// expiring `lifetime` (default [`crate::DEFAULT_UPLOAD_LIFETIME`]) after its last
    /// append. The quota is checked here against `length`, and again when it finishes. A
    /// zero-length upload is finished at once. `metadata` is kept to be answered back.
    ///
    /// # Errors
    /// [`Error::InvalidFilename`], [`Error::QuotaExceeded`], [`Error::Poisoned`], the
    /// engine's error.
    pub fn create_upload(
        &self,
        request: UploadRequest,
        length: u64,
        metadata: String,
        lifetime: Option<Duration>,
        actor: &str,
    ) -> Result<Patched> {
        validate_request(&request)?;
        self.check_writable()?;
        self.check_quota(&request.bucket, length)?;
        let lifetime = lifetime.unwrap_or(crate::DEFAULT_UPLOAD_LIFETIME);
        let now = self.now();
        let record = ResumableUpload {
            id: UploadId::random(),
            bucket: request.bucket,
            filename: request.filename,
            content_type: request.content_type,
            file_expires: request.expires,
            restricted: request.restricted,
            length,
            offset: 0,
            created: now,
            deadline: now.plus(lifetime),
            lifetime_ms: i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX),
            metadata,
            actor: actor.to_owned(),
            file: None,
        };
        let ks = self.inner.ks;
        let mut batch = WriteBatch::new();
        batch.put(ks.uploads, keys::upload(&record.id), record.encode());
        batch.put(
            ks.uploads,
            keys::upload_deadline(record.deadline, &record.id),
            [],
        );
        self.inner.committer.commit(batch)?;
        if length == 0 {
            let uploaded =
                self.finish_upload(&record, PrefixHasher::new(self.inner.keep_sha1_md5))?;
            return Ok(Patched {
                upload: finished(record, &uploaded),
                finished: Some(uploaded),
                interrupted: false,
                rehashed: false,
            });
        }
        Ok(Patched {
            upload: record,
            finished: None,
            interrupted: false,
            rehashed: false,
        })
    }

    /// The resumable upload `id`: its offset is what the store holds durably.
    ///
    /// # Errors
    /// [`Error::UploadNotFound`], [`Error::UploadExpired`], the engine's error.
    pub fn upload_status(&self, id: UploadId) -> Result<ResumableUpload> {
        let record = self
            .upload_record(id)?
            .ok_or(Error::UploadNotFound { id })?;
        if record.expired_at(self.now()) {
            return Err(Error::UploadExpired { id });
        }
        Ok(record)
    }

    /// Appends the bytes of `body` to upload `id` at `offset`, which must be the upload's
    /// offset. The bytes are fsynced and the new offset recorded durably before this
    /// returns; when they complete the upload, its file is committed as any upload is (the
    /// quota, deduplication, statistics and a `file.created` event by the upload's creator)
    /// and [`Patched::finished`] holds it. A body that fails to read (a client gone) keeps
    /// what arrived before, unless a `checksum` was announced (then nothing is kept).
    ///
    /// # Errors
    /// [`Error::UploadNotFound`], [`Error::UploadExpired`], [`Error::OffsetMismatch`],
    /// [`Error::PastLength`] and [`Error::ChecksumMismatch`] (nothing appended),
    /// [`Error::UploadBusy`], [`Error::QuotaExceeded`] when the last append finds the bucket
    /// full (the bytes stay; an empty append at the end retries), I/O and engine errors.
    pub fn append_upload(
        &self,
        id: UploadId,
        offset: u64,
        body: &mut dyn Read,
        checksum: Option<Checksum>,
    ) -> Result<Patched> {
        self.check_writable()?;
        let session = self.inner.sessions.get(id);
        let mut guard = lock_session(&session, id)?;
        let record = self.upload_status(id)?;
        if offset != record.offset {
            return Err(Error::OffsetMismatch {
                id,
                offset: record.offset,
                requested: offset,
            });
        }
        let unchanged = |rehashed| Patched {
            upload: record.clone(),
            finished: None,
            interrupted: false,
            rehashed,
        };
        if record.file.is_some() {
            // Finished: only an empty append at the end, which changes nothing.
            let mut probe = [0u8; 1];
            if body.read(&mut probe).unwrap_or(0) > 0 {
                return Err(Error::PastLength {
                    id,
                    length: record.length,
                });
            }
            return Ok(unchanged(false));
        }

        let path = self.upload_path(&id);
        // The first append makes the file's directory entry durable (a file left by an
        // append that crashed before its batch may exist without a durable entry).
        let first = record.offset == 0;
        if first {
            let dir = &self.inner.uploads_dir;
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Error::io("creating directory", parent, e))?;
            }
            crate::backend::ensure_dir(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(record.offset == 0)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        let on_disk = file
            .metadata()
            .map_err(|e| Error::io("reading the size of", &path, e))?
            .len();
        if on_disk < record.offset {
            return Err(Error::Io {
                operation: "resuming",
                path,
                source: io::Error::other("the partial upload is shorter than its offset"),
            });
        }
        if on_disk > record.offset {
            // Bytes of an append that was never acknowledged.
            file.set_len(record.offset)
                .map_err(|e| Error::io("truncating", &path, e))?;
        }
        let (mut prefix, rehashed) = match guard.prefix.take() {
            Some((at, prefix)) if at == record.offset => (prefix, false),
            _ => (self.rehash(&mut file, &path, record.offset)?, true),
        };
        let before = prefix.clone();
        let rollback = |file: &File, guard: &mut Session, before: PrefixHasher| {
            let _ = file.set_len(record.offset);
            guard.prefix = Some((record.offset, before));
        };

        let mut check = checksum.as_ref().map(|c| ChecksumHasher::new(c.algorithm));
        let direct = !crate::backend::is_tmpfs(&self.inner.uploads_dir);
        let writer = match DirectFile::open_at(&path, record.offset, direct) {
            Ok(writer) => writer,
            Err(e) => {
                guard.prefix = Some((record.offset, before));
                return Err(Error::io("opening", &path, e));
            }
        };
        let appended = append_body(
            writer,
            record.length - record.offset,
            body,
            &mut prefix,
            check.as_mut(),
        );
        let Appended {
            received,
            interrupted,
            file: written,
        } = match appended {
            Ok(appended) => appended,
            Err(failure) => {
                rollback(&file, &mut guard, before);
                return Err(match failure {
                    Failure::PastLength => Error::PastLength {
                        id,
                        length: record.length,
                    },
                    Failure::Io(operation, e) => Error::io(operation, &path, e),
                });
            }
        };
        if let (Some(checksum), Some(check)) = (&checksum, check) {
            if interrupted {
                rollback(&file, &mut guard, before);
                return Ok(Patched {
                    interrupted: true,
                    ..unchanged(rehashed)
                });
            }
            if check.finish() != checksum.digest {
                rollback(&file, &mut guard, before);
                return Err(Error::ChecksumMismatch {
                    algorithm: checksum.algorithm.name(),
                });
            }
        }
        if let Some(written) = &written {
            if let Err(e) = written.sync_data() {
                let error = Error::io("fsyncing", &path, e);
                self.poison_on_sync_failure(&error);
                rollback(&file, &mut guard, before);
                return Err(error);
            }
            if first {
                if let Err(error) = crate::backend::sync_dir(&self.inner.uploads_dir) {
                    self.poison_on_sync_failure(&error);
                    rollback(&file, &mut guard, before);
                    return Err(error);
                }
            }
        }
        drop((file, written));
        let mut next = record.clone();
        next.offset = record.offset + received;
        if next.offset == next.length {
            // Complete: the file is committed; on failure the offset is recorded so that an
            // empty append at the end retries.
            match self.finish_upload(&next, prefix.clone()) {
                Ok(uploaded) => {
                    drop(guard);
                    self.inner.sessions.forget(id);
                    return Ok(Patched {
                        upload: finished(next, &uploaded),
                        finished: Some(uploaded),
                        interrupted,
                        rehashed,
                    });
                }
                Err(error) => {
                    if received > 0 {
                        self.record_offset(&record, &next)?;
                    }
                    guard.prefix = Some((next.offset, prefix));
                    return Err(error);
                }
            }
        }
        if received == 0 {
            guard.prefix = Some((record.offset, prefix));
            return Ok(Patched {
                interrupted,
                ..unchanged(rehashed)
            });
        }
        next.deadline = self.now().plus(Duration::from_millis(
            u64::try_from(next.lifetime_ms).unwrap_or(0),
        ));
        if let Err(error) = self.record_offset(&record, &next) {
            if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                rollback(&file, &mut guard, before);
            }
            return Err(error);
        }
        guard.prefix = Some((next.offset, prefix));
        Ok(Patched {
            upload: next,
            finished: None,
            interrupted,
            rehashed,
        })
    }

    /// Writes `next` in place of `previous` (its deadline index entry moved), durably.
    fn record_offset(&self, previous: &ResumableUpload, next: &ResumableUpload) -> Result<()> {
        let ks = self.inner.ks;
        let mut batch = WriteBatch::new();
        batch.put(ks.uploads, keys::upload(&next.id), next.encode());
        if next.deadline != previous.deadline {
            batch.delete(
                ks.uploads,
                keys::upload_deadline(previous.deadline, &previous.id),
            );
            batch.put(
                ks.uploads,
                keys::upload_deadline(next.deadline, &next.id),
                [],
            );
        }
        Ok(self.inner.committer.commit(batch)?)
    }

    /// The digests of the first `len` bytes of the partial file.
    fn rehash(&self, file: &mut File, path: &std::path::Path, len: u64) -> Result<PrefixHasher> {
        let started = Instant::now();
        let mut prefix = PrefixHasher::new(self.inner.keep_sha1_md5);
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seeking in", path, e))?;
        let mut reader = (&*file).take(len);
        let mut buffer = vec![0u8; REHASH_BUFFER];
        let mut done = 0u64;
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(|e| Error::io("reading", path, e))?;
            if n == 0 {
                break;
            }
            prefix.update(&buffer[..n]);
            done += n as u64;
        }
        if done != len {
            return Err(Error::Io {
                operation: "rehashing",
                path: path.to_owned(),
                source: io::Error::from(io::ErrorKind::UnexpectedEof),
            });
        }
        tracing::info!(
            bytes = len,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rehashed the prefix of a resumed upload"
        );
        Ok(prefix)
    }

    /// Commits the complete upload `record` as a file, through the path of every upload,
    /// and removes its partial file.
    fn finish_upload(&self, record: &ResumableUpload, prefix: PrefixHasher) -> Result<Uploaded> {
        let path = self.upload_path(&record.id);
        let content = if record.length <= self.inner.inline_threshold as u64 {
            let mut bytes = Vec::new();
            if record.length > 0 {
                File::open(&path)
                    .and_then(|file| file.take(record.length).read_to_end(&mut bytes))
                    .map_err(|e| Error::io("reading", &path, e))?;
            }
            Content::Inline(bytes)
        } else {
            Content::Temp(self.inner.backend.adopt(&path)?)
        };
        let request = UploadRequest {
            bucket: record.bucket.clone(),
            filename: record.filename.clone(),
            content_type: record.content_type.clone(),
            expires: record.file_expires,
            restricted: record.restricted,
            expected_blake3: None,
            expected_sha256: None,
            declared_length: None,
            idempotency_key: None,
        };
        let origin = Origin {
            actor: &record.actor,
            time: self.now(),
        };
        let uploaded = self.commit_upload(
            &request,
            origin,
            None,
            record.length,
            prefix.finish(),
            content,
            Extras {
                finishing: Some(record),
            },
        )?;
        // The record says finished: the partial file is garbage (the sweep removes it if
        // this does not).
        let _ = fs::remove_file(&path);
        Ok(uploaded)
    }

    /// Terminates upload `id` (tus termination): its record and bytes go. A finished
    /// upload's file stays (it is an ordinary file now); only the record of the upload goes.
    ///
    /// # Errors
    /// [`Error::UploadNotFound`], [`Error::UploadBusy`], the engine's error.
    pub fn terminate_upload(&self, id: UploadId) -> Result<()> {
        self.check_writable()?;
        let session = self.inner.sessions.get(id);
        let guard = lock_session(&session, id)?;
        let record = self
            .upload_record(id)?
            .ok_or(Error::UploadNotFound { id })?;
        self.remove_upload(&record)?;
        drop(guard);
        self.inner.sessions.forget(id);
        Ok(())
    }

    /// Removes `record`, its deadline entry and its partial file (the session is held).
    fn remove_upload(&self, record: &ResumableUpload) -> Result<()> {
        let ks = self.inner.ks;
        let mut batch = WriteBatch::new();
        batch.delete(ks.uploads, keys::upload(&record.id));
        batch.delete(
            ks.uploads,
            keys::upload_deadline(record.deadline, &record.id),
        );
        self.inner.committer.commit(batch)?;
        let path = self.upload_path(&record.id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }

    /// Removes up to `limit` resumable uploads whose deadline passed (with their bytes);
    /// returns how many, and whether more are due. An upload being appended to is left for
    /// a later pass (the append moves its deadline).
    pub(super) fn expire_uploads(&self, limit: usize) -> Result<(u64, bool)> {
        let ks = self.inner.ks;
        let range = ScanRange {
            start: vec![b'd'],
            end: Some(keys::upload_deadline_bound(self.now())),
            read_once: false,
        };
        let (due, more) = self.due_entries(
            ks.uploads,
            range,
            limit,
            "resumable upload deadline",
            keys::parse_upload_deadline,
        )?;
        let mut removed = 0;
        for (at, id) in due {
            let session = self.inner.sessions.get(id);
            let Ok(guard) = session.try_lock() else {
                continue;
            };
            match self.upload_record(id)? {
                Some(record) if record.deadline == at => {
                    self.remove_upload(&record)?;
                    removed += 1;
                }
                _ => {
                    let mut batch = WriteBatch::new();
                    batch.delete(ks.uploads, keys::upload_deadline(at, &id));
                    self.inner.committer.commit(batch)?;
                }
            }
            drop(guard);
            self.inner.sessions.forget(id);
        }
        Ok((removed, more))
    }

    /// Removes partial files that no unfinished upload owns (leftovers of a crash between
    /// a finishing batch and the removal of the file); returns how many.
    pub(super) fn sweep_upload_files(&self) -> Result<u64> {
        let dir = &self.inner.uploads_dir;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("listing", dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".part"))
                .and_then(|n| n.parse::<UploadId>().ok())
            else {
                continue;
            };
            let session = self.inner.sessions.get(id);
            let Ok(guard) = session.try_lock() else {
                continue;
            };
            let owned = self
                .upload_record(id)?
                .is_some_and(|record| record.file.is_none());
            if !owned {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("removing", entry.path(), e)),
                }
            }
            drop(guard);
            if !owned {
                self.inner.sessions.forget(id);
            }
        }
        Ok(removed)
    }
}

/// `record` as its finishing batch left it.
fn finished(mut record: ResumableUpload, uploaded: &Uploaded) -> ResumableUpload {
    record.offset = record.length;
    record.file = Some(uploaded.record.id);
    record
}
