//! Uploads: streaming the bytes, hashing them, and the one batch that commits a file.

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use engine::{Durability, WriteBatch};

use crate::backend::TempBlob;
use crate::changes::{ChangeKind, Origin};
use crate::error::{Error, Result};
use crate::hashing::{Digests, Hashing};
use crate::keys;
use crate::records::{BlobInfo, BlobMeta, ContentState, FileRecord};
use crate::resumable::ResumableUpload;
use crate::types::{validate_filename, Blake3Hash, BucketName, FileId, Timestamp};
use crate::writer::BackgroundWriter;

use super::{as_i64, as_u64, Store, CHUNK_SIZE, ID_BLOCK};

/// What to store, given before the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRequest {
    /// The bucket the file goes to.
    pub bucket: BucketName,
    /// Its filename (validated by [`validate_filename`]).
    pub filename: String,
    /// Its MIME type (at most 1,024 bytes).
    pub content_type: String,
    /// When it expires, if ever.
    pub expires: Option<Timestamp>,
    /// Whether it is read only with a token.
    pub restricted: bool,
    /// The BLAKE3 the client announced: the upload fails if the content differs.
    pub expected_blake3: Option<Blake3Hash>,
    /// The SHA-256 the client announced: the upload fails if the content differs.
    pub expected_sha256: Option<[u8; 32]>,
    /// The length the client announced (an HTTP `Content-Length`), if any: an upload that
    /// would take the bucket past its quota is refused by [`Store::begin_upload`], before a
    /// byte is read. The quota is checked again at commit against the real size.
    pub declared_length: Option<u64>,
    /// An idempotency key (1 to 255 bytes of visible ASCII), scoped to the actor: within
    /// [`crate::IDEMPOTENCY_WINDOW`] the same key with the same content answers the first
    /// upload's file ([`Uploaded::repeated`]), with other content
    /// [`Error::IdempotencyConflict`].
    pub idempotency_key: Option<String>,
}

impl UploadRequest {
    /// A public, non-expiring `application/octet-stream` file with no announced digest.
    pub fn new(bucket: BucketName, filename: impl Into<String>) -> Self {
        UploadRequest {
            bucket,
            filename: filename.into(),
            content_type: "application/octet-stream".to_string(),
            expires: None,
            restricted: false,
            expected_blake3: None,
            expected_sha256: None,
            declared_length: None,
            idempotency_key: None,
        }
    }
}

/// A committed upload: the file's record and what the store knows of its blob, so that a
/// caller can describe the file without reading it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The new file.
    pub record: FileRecord,
    /// Its blob as the upload left it (`refcount` counts the new file).
    pub blob: BlobInfo,
    /// The revision of its `file.created` event (of a repeated upload: the durable head).
    pub revision: u64,
    /// Whether this answers an earlier upload with the same idempotency key and content
    /// (nothing was stored).
    pub repeated: bool,
}

/// The id and time a replayed upload takes from its event instead of the store.
#[derive(Clone, Copy, Debug)]
pub(super) struct Replayed {
    pub id: FileId,
    pub time: Timestamp,
}

/// The bytes of an upload that reached commit.
pub(super) enum Content {
    Inline(Vec<u8>),
    Temp(Box<dyn TempBlob>),
}

/// A streaming upload: write the bytes, then [`Upload::commit`]. Dropping it without
/// committing leaves nothing behind. When a write fails (`std::io::Error`), [`Upload::commit`]
/// returns the typed cause (for example [`Error::DiskFull`]).
pub struct Upload {
    store: Store,
    request: UploadRequest,
    actor: String,
    replayed: Option<Replayed>,
    chunk: Vec<u8>,
    size: u64,
    hashing: Hashing,
    temp: Option<Box<dyn TempBlob>>,
    /// Owns the temporary blob while chunks are written in the background.
    writer: Option<BackgroundWriter>,
    failed: Option<Error>,
    /// Chunk buffers sent to the hashing threads, reused once they are done with them.
    spare: Vec<Arc<Vec<u8>>>,
}

/// At most this many chunk buffers are kept for reuse per upload (2 MiB).
const MAX_SPARE_CHUNKS: usize = 8;

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("request", &self.request)
            .field("actor", &self.actor)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// The bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes the buffered chunk to the temporary blob (created on first use) and hashes it.
    /// The last chunk of an upload that never filled one is hashed on this thread: a
    /// hashing thread would cost more than it saves.
    fn flush_chunk(&mut self, last: bool) -> Result<()> {
        if self.temp.is_none() && self.writer.is_none() {
            self.temp = Some(self.store.inner.backend.create_temp()?);
        }
        if !last && self.writer.is_none() {
            if let Some(temp) = self.temp.take() {
                match BackgroundWriter::start(temp) {
                    Ok(writer) => self.writer = Some(writer),
                    Err(temp) => self.temp = Some(temp),
                }
            }
        }
        let chunk = if last && !self.hashing.is_shared() {
            self.hashing.update_local(&self.chunk);
            Arc::new(std::mem::take(&mut self.chunk))
        } else {
            let next = self.spare_chunk();
            let chunk = Arc::new(std::mem::replace(&mut self.chunk, next));
            self.hashing.update_shared(chunk.clone());
            chunk
        };
        if let Some(writer) = &self.writer {
            if !writer.send(chunk.clone()) {
                // The writer stopped on an error: collect it.
                self.finish_writer()?;
            }
        } else if let Some(temp) = &mut self.temp {
            temp.write_all(&chunk)
                .map_err(|e| Error::io("writing", "temporary blob", e))?;
        }
        if self.spare.len() < MAX_SPARE_CHUNKS {
            self.spare.push(chunk);
        }
        Ok(())
    }

    /// Waits for the background writer and takes the temporary blob back.
    fn finish_writer(&mut self) -> Result<()> {
        if let Some(writer) = self.writer.take() {
            let (temp, result) = writer.finish();
            self.temp = temp;
            result.map_err(|e| Error::io("writing", "temporary blob", e))?;
        }
        Ok(())
    }

    /// An empty chunk buffer: one that every hashing thread is done with, or a new one.
    /// Reusing buffers spares a fresh 256 KiB allocation (and its page faults) per chunk.
    fn spare_chunk(&mut self) -> Vec<u8> {
        if let Some(pos) = self.spare.iter().position(|c| Arc::strong_count(c) == 1) {
            if let Ok(mut buffer) = Arc::try_unwrap(self.spare.swap_remove(pos)) {
                buffer.clear();
                return buffer;
            }
        }
        Vec::with_capacity(CHUNK_SIZE)
    }

    /// Finishes the upload: checks the announced digests and the quota, deduplicates, stores
    /// the blob and the file record durably, and returns the record with its blob's
    /// information. When this returns `Ok` the upload survives a crash.
    ///
    /// # Errors
    /// [`Error::DigestMismatch`], [`Error::QuotaExceeded`], [`Error::DiskFull`], [`Error::Io`],
    /// [`Error::Engine`]; in every case nothing of the upload is visible.
    pub fn commit(mut self) -> Result<Uploaded> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let inline = self.temp.is_none()
            && self.writer.is_none()
            && self.chunk.len() <= self.store.inner.inline_threshold;
        let content = if inline {
            self.hashing.update_local(&self.chunk);
            Content::Inline(std::mem::take(&mut self.chunk))
        } else {
            if !self.chunk.is_empty() {
                self.flush_chunk(true)?;
            }
            self.finish_writer()?;
            Content::Temp(self.temp.take().expect("flush_chunk created the temporary"))
        };
        let digests = std::mem::replace(&mut self.hashing, Hashing::new(false)).finish();
        if let Some(expected) = self.request.expected_blake3 {
            if expected != digests.blake3 {
                return Err(Error::DigestMismatch {
                    algorithm: "blake3",
                    expected: expected.to_hex(),
                    actual: digests.blake3.to_hex(),
                });
            }
        }
        if let Some(expected) = self.request.expected_sha256 {
            if expected != digests.sha256 {
                return Err(Error::DigestMismatch {
                    algorithm: "sha256",
                    expected: crate::types::to_hex(&expected),
                    actual: crate::types::to_hex(&digests.sha256),
                });
            }
        }
        let request = self.request.clone();
        let origin = Origin {
            actor: &self.actor,
            time: self.replayed.map_or_else(|| self.store.now(), |r| r.time),
        };
        let replayed = self.replayed.map(|r| r.id);
        self.store.commit_upload(
            &request,
            origin,
            replayed,
            self.size,
            digests,
            content,
            Extras::default(),
        )
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(error) = &self.failed {
            return Err(io::Error::other(error.to_string()));
        }
        let room = CHUNK_SIZE - self.chunk.len();
        let n = buf.len().min(room);
        self.chunk.extend_from_slice(&buf[..n]);
        self.size += n as u64;
        if self.chunk.len() == CHUNK_SIZE {
            if let Err(error) = self.flush_chunk(false) {
                let message = error.to_string();
                self.failed = Some(error);
                return Err(io::Error::other(message));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the filename and the content type of `request`.
pub(super) fn validate_request(request: &UploadRequest) -> Result<()> {
    validate_filename(&request.filename)?;
    if let Some(key) = &request.idempotency_key {
        super::idempotency::validate_key(key)?;
    }
    if request.content_type.len() > 1024 || request.content_type.chars().any(char::is_control) {
        return Err(Error::InvalidFilename {
            filename: request.filename.clone(),
            reason: "content type longer than 1024 bytes or with control characters",
        });
    }
    Ok(())
}

/// What else an upload's batch carries.
#[derive(Default)]
pub(super) struct Extras<'a> {
    /// The resumable upload this file finishes: its record is marked finished in the batch.
    pub finishing: Option<&'a ResumableUpload>,
}

impl Store {
    /// Starts a streaming upload by `actor` (recorded in its `file.created` event). With a [`UploadRequest::declared_length`], an upload that
    /// would exceed the bucket's quota is refused here, before any byte is sent.
    ///
    /// # Errors
    /// [`Error::InvalidFilename`] (and an over-long content type as the same error),
    /// [`Error::QuotaExceeded`], [`Error::Poisoned`], or the engine's error.
    pub fn begin_upload(&self, request: UploadRequest, actor: &str) -> Result<Upload> {
        self.start_upload(request, actor, None)
    }

    /// Starts an upload by `actor`; a replayed one takes its id and time from its event and
    /// is not held to the quota (the source store already was).
    pub(super) fn start_upload(
        &self,
        request: UploadRequest,
        actor: &str,
        replayed: Option<Replayed>,
    ) -> Result<Upload> {
        validate_request(&request)?;
        self.check_writable()?;
        if let (Some(length), None) = (request.declared_length, replayed) {
            self.check_quota(&request.bucket, length)?;
        }
        Ok(Upload {
            store: self.clone(),
            actor: actor.to_owned(),
            replayed,
            hashing: Hashing::new(self.inner.keep_sha1_md5),
            request,
            chunk: Vec::new(),
            size: 0,
            temp: None,
            writer: None,
            failed: None,
            spare: Vec::new(),
        })
    }

    /// Uploads `bytes` in one call by `actor` (a convenience over [`Store::begin_upload`]).
    ///
    /// # Errors
    /// As for [`Store::begin_upload`] and [`Upload::commit`].
    pub fn upload_bytes(
        &self,
        request: UploadRequest,
        bytes: &[u8],
        actor: &str,
    ) -> Result<Uploaded> {
        let mut upload = self.begin_upload(request, actor)?;
        if let Err(error) = upload.write_all(bytes) {
            // The typed cause (a full disk, say) was kept by the upload.
            return Err(upload
                .failed
                .take()
                .unwrap_or_else(|| Error::io("writing", "upload", error)));
        }
        upload.commit()
    }

    /// The next file id, or `replayed` (which later ids then stay above).
    fn allocate_id(&self, replayed: Option<FileId>) -> Result<FileId> {
        let mut ids = self.inner.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = replayed {
            ids.next = ids.next.max(id.0);
        }
        if ids.next >= ids.high_water {
            let high_water = ids.next + ID_BLOCK;
            let mut batch = WriteBatch::new();
            batch.put(
                self.inner.ks.meta,
                keys::META_ID_HIGH_WATER,
                high_water.to_be_bytes(),
            );
            // Buffered: the log is ordered, so the sync that makes the upload using this id
            // durable makes the new high-water mark durable first.
            self.inner.engine.write(batch, Durability::Buffered)?;
            ids.high_water = high_water;
        }
        let id = FileId(ids.next);
        ids.next += 1;
        Ok(id)
    }

    pub(super) fn check_quota(&self, bucket: &BucketName, size: u64) -> Result<()> {
        if let Some(quota) = self.quota(bucket)? {
            let used = as_u64(self.counter(
                self.inner.ks.stats,
                &keys::bucket_stat(bucket, keys::STAT_LOGICAL),
            )?);
            if used.saturating_add(size) > quota {
                return Err(Error::QuotaExceeded {
                    bucket: bucket.clone(),
                    quota,
                    used,
                    requested: size,
                });
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit_upload(
        &self,
        request: &UploadRequest,
        origin: Origin<'_>,
        replayed: Option<FileId>,
        size: u64,
        digests: Digests,
        content: Content,
        extras: Extras<'_>,
    ) -> Result<Uploaded> {
        self.check_writable()?;
        let ks = self.inner.ks;
        let hash = digests.blake3;
        let bucket = &request.bucket;
        // An idempotency key is checked and recorded under its lock, taken before the others:
        // two uploads with one key cannot both store a file.
        let idempotency = match (&request.idempotency_key, replayed) {
            (Some(key), None) => Some(key.as_str()),
            _ => None,
        };
        let _key_guard =
            idempotency.map(|key| self.inner.idempotency_locks.lock(&(origin.actor, key)));
        if let Some(key) = idempotency {
            if let Some(first) = self.idempotent_answer(origin.actor, key, &hash)? {
                return Ok(first);
            }
        }
        // A replayed upload was held to the quota by its source store.
        let quota_applies = replayed.is_none();
        if quota_applies && matches!(content, Content::Temp(_)) {
            // Fail early, before the blob file is persisted; re-checked under the lock below.
            // Inline content touches no disk before the batch: the check under the lock is
            // enough, and saves a small upload two engine reads.
            self.check_quota(bucket, size)?;
        }

        let blob_guard = self.inner.blob_locks.lock(&hash.0);
        let existing = self.blob_meta(&hash)?;
        let mut inline_bytes = None;
        let mut persisted_now = false;
        match content {
            Content::Inline(bytes) => inline_bytes = Some(bytes),
            Content::Temp(temp) => {
                if existing.is_none() {
                    if let Err(error) = temp.persist(&hash) {
                        self.poison_on_sync_failure(&error);
                        return Err(error);
                    }
                    persisted_now = true;
                }
                // Otherwise the temporary is dropped: the content is already stored.
            }
        }

        let pair_guard = self.inner.pair_locks.lock(&(bucket.as_str(), &hash.0));
        // The quota is a decision about the whole bucket. Uploads share the bucket's lock, so
        // that `set_quota` (exclusive) waits for those that decided "no quota" and the later
        // ones see it; uploads into a bucket with a quota hold it alone, since each decision
        // depends on the others'.
        let (quota_guard, has_quota) = {
            let shared = self.inner.bucket_locks.shared(bucket.as_str());
            if self.quota(bucket)?.is_none() {
                (shared, false)
            } else {
                drop(shared);
                (self.inner.bucket_locks.exclusive(bucket.as_str()), true)
            }
        };
        // A bucket found without a quota under the shared lock keeps none until the lock is
        // released (`set_quota` takes it exclusively): no need to read it again.
        let quota_check = if quota_applies && has_quota {
            self.check_quota(bucket, size)
        } else {
            Ok(())
        };
        if let Err(error) = quota_check {
            if persisted_now {
                // No record points to the new file and the blob lock is held.
                self.delete_blob_bytes(&hash)?;
            }
            return Err(error);
        }
        let now = origin.time;
        let id = self.allocate_id(replayed)?;
        let record = FileRecord {
            id,
            bucket: bucket.clone(),
            filename: request.filename.clone(),
            content_type: request.content_type.clone(),
            size,
            blake3: hash,
            created: now,
            expires: request.expires,
            restricted: request.restricted,
            content: ContentState::Present,
        };

        let mut batch = WriteBatch::new();
        let deduplicated = existing.is_some();
        // Counted under the blob lock, which every change of the count holds.
        let earlier_refs = match &existing {
            Some(meta) => self.refcount(&hash, meta)?,
            None => 0,
        };
        let meta = match existing {
            None => {
                let meta = BlobMeta {
                    refs: Some(1),
                    size,
                    sha256: digests.sha256,
                    sha1: digests.sha1,
                    md5: digests.md5,
                    created: now,
                    inline: inline_bytes.is_some(),
                    zero_since: None,
                };
                batch.put(ks.blobs, hash.0, meta.encode());
                if let Some(bytes) = &inline_bytes {
                    batch.put(ks.inline, hash.0, bytes.as_slice());
                }
                batch.counter_add(ks.stats, keys::global_stat(keys::STAT_BLOBS), 1);
                batch.counter_add(ks.stats, keys::global_stat(keys::STAT_STORED), as_i64(size));
                meta
            }
            Some(mut meta) => {
                if let Some(since) = meta.zero_since.take() {
                    // Revival: the blob leaves the zero-ref index, so GC will not take it.
                    batch.delete(ks.zero_refs, keys::zero_ref(since, &hash));
                }
                if meta.sha1.is_none() && digests.sha1.is_some() {
                    meta.sha1 = digests.sha1;
                    meta.md5 = digests.md5;
                }
                self.put_blob(&mut batch, &hash, &meta, earlier_refs + 1);
                meta
            }
        };
        batch.put(ks.files, keys::file(id), record.encode());
        batch.put(ks.bucket_files, keys::bucket_file(bucket, id), []);
        for key in Self::digest_keys(&meta, request.restricted, id) {
            batch.put(ks.digests, key, []);
        }
        if let Some(expires) = request.expires {
            batch.put(ks.expiry, keys::expiry(expires, id), []);
        }
        // A bucket holds no file of a blob the store does not have (GC removes a blob only
        // once no file refers to it), so a new blob needs no read to know it is new here.
        if !deduplicated || !self.bucket_links_blob(&hash, bucket, None)? {
            batch.counter_add(
                ks.stats,
                keys::bucket_stat(bucket, keys::STAT_UNIQUE),
                as_i64(size),
            );
        }
        self.put_blob_file(&mut batch, &hash, bucket, id, request.restricted);
        batch.counter_add(ks.stats, keys::bucket_stat(bucket, keys::STAT_FILES), 1);
        batch.counter_add(
            ks.stats,
            keys::bucket_stat(bucket, keys::STAT_LOGICAL),
            as_i64(size),
        );
        batch.counter_add(ks.stats, keys::global_stat(keys::STAT_FILES), 1);
        batch.counter_add(
            ks.stats,
            keys::global_stat(keys::STAT_LOGICAL),
            as_i64(size),
        );
        if let Some(upload) = extras.finishing {
            let mut finished = upload.clone();
            finished.offset = size;
            finished.file = Some(id);
            batch.put(ks.uploads, keys::upload(&upload.id), finished.encode());
        }
        if let Some(key) = idempotency {
            self.record_key(&mut batch, origin.actor, key, id, hash, now)?;
        }
        let event = origin.change(ChangeKind::file_created(&record, deduplicated));
        let appended = self.append(batch, &[event])?;
        // The decisions are visible; the locks need not wait for the disk.
        drop(quota_guard);
        drop(pair_guard);
        drop(blob_guard);
        let revision = self.sync(appended)?;
        let blob = BlobInfo {
            hash,
            size: meta.size,
            sha256: meta.sha256,
            sha1: meta.sha1,
            md5: meta.md5,
            created: meta.created,
            inline: meta.inline,
            refcount: earlier_refs + 1,
            zero_ref_since: None,
        };
        Ok(Uploaded {
            record,
            blob,
            revision,
            repeated: false,
        })
    }
}
