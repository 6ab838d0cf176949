//! The store: opening, uploads, lookups, reads, deletion, GC, verification and checks.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use engine::{keys as ekeys, Direction, Durability, Engine, EngineConfig, Keyspace, ReadView};
use engine::{GroupCommit, ScanRange, WriteBatch};

use crate::backend::{BlobBackend, LocalFsBackend, TempBlob};
use crate::clock::{Clock, SystemClock};
use crate::downloads::PendingDownloads;
use crate::error::{Error, Result};
use crate::hashing::{Digests, Hashing};
use crate::hot::{HotCache, SmallFile};
use crate::keys::{self, KEYSPACES};
use crate::locks::{SharedStripes, Stripes};
use crate::records::{BlobInfo, BlobMeta, ContentState, FileRecord};
use crate::token::{TokenError, TokenSigner, DEFAULT_TOKEN_LIFETIME};
use crate::types::{validate_filename, Blake3Hash, BucketName, Day, Digest, FileId, Timestamp};
use crate::writer::BackgroundWriter;

/// The size of the chunks an upload is hashed and written in, and the largest inline
/// threshold accepted.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// The default inline threshold (see `DESIGN.md` for the measurement behind it).
pub const DEFAULT_INLINE_THRESHOLD: usize = 16 * 1024;

/// The default size of the hot-file cache: 64 MiB (about 15,000 files of 4 KiB).
pub const DEFAULT_HOT_CACHE_BYTES: u64 = 64 << 20;

/// The default grace period of unreferenced blobs: 1 day.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

/// The default grace period after a file's expiry: 7 days.
pub const DEFAULT_EXPIRY_GRACE: Duration = Duration::from_secs(7 * 86_400);

const ID_BLOCK: u64 = 1024;
const LOCK_STRIPES: usize = 1024;

const ALG_BLAKE3: u8 = 0;
const ALG_SHA256: u8 = 1;
const ALG_SHA1: u8 = 2;
const ALG_MD5: u8 = 3;

enum EngineSource {
    Config(EngineConfig),
    Engine(Arc<dyn Engine>),
}

/// Configures and opens a [`Store`].
pub struct StoreBuilder {
    engine: EngineSource,
    data_dir: PathBuf,
    keep_sha1_md5: bool,
    grace: Duration,
    expiry_grace: Duration,
    inline_threshold: usize,
    clock: Arc<dyn Clock>,
    signer: Option<TokenSigner>,
    backend: Option<Arc<dyn BlobBackend>>,
    hot_cache_bytes: u64,
}

impl fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("data_dir", &self.data_dir)
            .field("keep_sha1_md5", &self.keep_sha1_md5)
            .field("grace", &self.grace)
            .field("expiry_grace", &self.expiry_grace)
            .field("inline_threshold", &self.inline_threshold)
            .field("hot_cache_bytes", &self.hot_cache_bytes)
            .finish_non_exhaustive()
    }
}

impl StoreBuilder {
    /// A store whose metadata engine is opened from `engine` and whose blob files live under
    /// `data_dir` (`data_dir/blobs`, `data_dir/tmp`).
    pub fn new(engine: EngineConfig, data_dir: impl Into<PathBuf>) -> Self {
        Self::from_source(EngineSource::Config(engine), data_dir.into())
    }

    /// A store over an engine that is already open with (at least) [`KEYSPACES`]. Tests use
    /// it to reopen a `MemEngine`.
    pub fn with_engine(engine: Arc<dyn Engine>, data_dir: impl Into<PathBuf>) -> Self {
        Self::from_source(EngineSource::Engine(engine), data_dir.into())
    }

    fn from_source(engine: EngineSource, data_dir: PathBuf) -> Self {
        StoreBuilder {
            engine,
            data_dir,
            keep_sha1_md5: false,
            grace: DEFAULT_GRACE,
            expiry_grace: DEFAULT_EXPIRY_GRACE,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            clock: Arc::new(SystemClock),
            signer: None,
            backend: None,
            hot_cache_bytes: DEFAULT_HOT_CACHE_BYTES,
        }
    }

    /// Whether to compute and index SHA-1 and MD5 too. Default: `false`.
    pub fn keep_sha1_md5(mut self, keep: bool) -> Self {
        self.keep_sha1_md5 = keep;
        self
    }

    /// How long an unreferenced blob, or an orphan file, is kept. Default: 1 day.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long after its expiry a file keeps its content link. Default: 7 days.
    pub fn expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// Blobs of at most this many bytes are stored inline in the engine. Default: 16 KiB;
    /// clamped to [`CHUNK_SIZE`].
    pub fn inline_threshold(mut self, bytes: usize) -> Self {
        self.inline_threshold = bytes.min(CHUNK_SIZE);
        self
    }

    /// The source of time. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The token secrets: tokens are signed with `current` and accepted under `current` or
    /// `previous`. Default: a random secret (tokens do not survive a restart).
    pub fn token_secrets(mut self, current: [u8; 32], previous: Option<[u8; 32]>) -> Self {
        self.signer = Some(TokenSigner::new(current, previous));
        self
    }

    /// The memory the hot-file cache may hold: records and content of inline files that were
    /// read, answered by [`Store::cached_file`] without touching the engine. Default:
    /// [`DEFAULT_HOT_CACHE_BYTES`]; 0 disables the cache.
    pub fn hot_cache_bytes(mut self, bytes: u64) -> Self {
        self.hot_cache_bytes = bytes;
        self
    }

    /// Where blob bytes go. Default: [`LocalFsBackend`] under the data directory.
    pub fn backend(mut self, backend: Arc<dyn BlobBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Opens the store. Nothing is scanned: opening reads two keys.
    ///
    /// # Errors
    /// The engine's error, or [`Error::Io`] when the data directory cannot be prepared.
    pub fn open(self) -> Result<Store> {
        let engine = match self.engine {
            EngineSource::Config(config) => config.open(KEYSPACES)?,
            EngineSource::Engine(engine) => engine,
        };
        let backend: Arc<dyn BlobBackend> = match self.backend {
            Some(backend) => backend,
            None => Arc::new(LocalFsBackend::open(&self.data_dir)?),
        };
        let ks = Keyspaces::resolve(engine.as_ref())?;
        let high_water = match engine.get(ks.meta, keys::META_ID_HIGH_WATER)? {
            Some(value) => decode_u64(&value).ok_or_else(|| Error::CorruptRecord {
                what: "file id high-water mark",
                key: keys::META_ID_HIGH_WATER.to_vec(),
            })?,
            None => 0,
        };
        let max_id = match engine
            .scan(ks.files, ScanRange::all(), Direction::Reverse)?
            .next()
        {
            Some(kv) => decode_u64(&kv?.0).unwrap_or(0),
            None => 0,
        };
        let next = high_water.max(max_id + 1).max(1);
        let now = self.clock.now();
        Ok(Store {
            inner: Arc::new(Inner {
                committer: GroupCommit::new(engine.clone()),
                engine,
                ks,
                backend,
                blob_locks: Stripes::new(LOCK_STRIPES),
                pair_locks: Stripes::new(LOCK_STRIPES),
                bucket_locks: SharedStripes::new(LOCK_STRIPES),
                ids: Mutex::new(Ids {
                    next,
                    high_water: next,
                }),
                clock: self.clock,
                signer: self.signer.unwrap_or_else(TokenSigner::random),
                keep_sha1_md5: self.keep_sha1_md5,
                grace: self.grace,
                expiry_grace: self.expiry_grace,
                inline_threshold: self.inline_threshold,
                poison: Mutex::new(None),
                hot: (self.hot_cache_bytes > 0).then(|| HotCache::new(self.hot_cache_bytes)),
                downloads: PendingDownloads::new(now),
            }),
        })
    }
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[derive(Clone, Copy, Debug)]
struct Keyspaces {
    blobs: Keyspace,
    inline: Keyspace,
    refs: Keyspace,
    files: Keyspace,
    bucket_files: Keyspace,
    bucket_blobs: Keyspace,
    stats: Keyspace,
    buckets: Keyspace,
    digests: Keyspace,
    zero_refs: Keyspace,
    expiry: Keyspace,
    downloads: Keyspace,
    meta: Keyspace,
}

impl Keyspaces {
    fn resolve(engine: &dyn Engine) -> Result<Self> {
        Ok(Keyspaces {
            blobs: engine.keyspace(keys::BLOBS)?,
            inline: engine.keyspace(keys::INLINE)?,
            refs: engine.keyspace(keys::REFS)?,
            files: engine.keyspace(keys::FILES)?,
            bucket_files: engine.keyspace(keys::BUCKET_FILES)?,
            bucket_blobs: engine.keyspace(keys::BUCKET_BLOBS)?,
            stats: engine.keyspace(keys::STATS)?,
            buckets: engine.keyspace(keys::BUCKETS)?,
            digests: engine.keyspace(keys::DIGESTS)?,
            zero_refs: engine.keyspace(keys::ZERO_REFS)?,
            expiry: engine.keyspace(keys::EXPIRY)?,
            downloads: engine.keyspace(keys::DOWNLOADS)?,
            meta: engine.keyspace(keys::META)?,
        })
    }
}

#[derive(Debug)]
struct Ids {
    next: u64,
    high_water: u64,
}

struct Inner {
    engine: Arc<dyn Engine>,
    ks: Keyspaces,
    backend: Arc<dyn BlobBackend>,
    committer: GroupCommit,
    blob_locks: Stripes,
    /// Per (bucket, blob): the bucket's first and last link to a blob (unique bytes).
    pair_locks: Stripes,
    /// Per bucket: the quota (shared by uploads into a bucket without a quota; exclusive for
    /// uploads into a bucket with one, and for `set_quota`).
    bucket_locks: SharedStripes,
    ids: Mutex<Ids>,
    clock: Arc<dyn Clock>,
    signer: TokenSigner,
    keep_sha1_md5: bool,
    grace: Duration,
    expiry_grace: Duration,
    inline_threshold: usize,
    poison: Mutex<Option<String>>,
    /// Small files answered from memory; `None` when disabled.
    hot: Option<HotCache>,
    /// Download counts not written yet.
    downloads: PendingDownloads,
}

impl Inner {
    /// Writes the pending download counts as one buffered batch of counter adds, leaving
    /// out files deleted meanwhile (their counters went with them). Holds the flush lock,
    /// which `cut` holds too while it deletes a file's counters, so a count can never
    /// re-create the counter of a deleted file.
    fn flush_downloads(&self) -> Result<()> {
        let _flushing = self
            .downloads
            .flush_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let counts = self.downloads.take(self.clock.now());
        if counts.is_empty() {
            return Ok(());
        }
        let file_keys: Vec<[u8; 8]> = counts.iter().map(|((id, _), _)| keys::file(*id)).collect();
        let refs: Vec<&[u8]> = file_keys.iter().map(|k| k.as_slice()).collect();
        let exists = match self.engine.multi_get(self.ks.files, &refs) {
            Ok(values) => values,
            Err(error) => {
                self.downloads.restore(counts);
                return Err(error.into());
            }
        };
        let mut batch = WriteBatch::new();
        for (((id, day), n), record) in counts.iter().zip(exists) {
            if record.is_some() {
                batch.counter_add(self.ks.downloads, keys::download(*id, *day), as_i64(*n));
            }
        }
        if let Err(error) = self.engine.write(batch, Durability::Buffered) {
            // A failed write poisons the engine, so a retry will fail too; the counts stay
            // pending anyway, to be reported (and dropped) by the flush at close.
            self.downloads.restore(counts);
            return Err(error.into());
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(error) = self.flush_downloads() {
            tracing::warn!(%error, "download counts lost at close");
        }
    }
}

/// A content-addressed blob store with buckets, weak links, grace-period GC and restricted
/// access. Cheap to clone. Every method may block on the engine or the disk (call it from
/// `spawn_blocking` or a dedicated thread in async code), except the memory-only ones that
/// say so: [`Store::cached_file`], [`Store::check_readable`], [`Store::count_download`],
/// [`Store::now`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.inner.engine)
            .field("backend", &self.inner.backend)
            .field("inline_threshold", &self.inner.inline_threshold)
            .finish_non_exhaustive()
    }
}

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
        }
    }
}

/// Changes to a file's record for [`Store::update_file`]; `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileUpdate {
    /// The new expiry (`Some(None)`: never expires).
    pub expires: Option<Option<Timestamp>>,
    /// Whether reads need a token.
    pub restricted: Option<bool>,
}

/// The statistics of one bucket, read in constant time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// Its file records (with or without content).
    pub files: u64,
    /// The sum of the sizes of its files whose content is present.
    pub logical_bytes: u64,
    /// The sum of the sizes of the distinct blobs its files link to.
    pub unique_bytes: u64,
    /// Its quota on logical bytes, if any.
    pub quota: Option<u64>,
}

/// Store-wide statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StoreSummary {
    /// File records.
    pub files: u64,
    /// Blobs stored (including unreferenced ones waiting for GC).
    pub blobs: u64,
    /// The sum of the blobs' sizes.
    pub stored_bytes: u64,
    /// The sum of the sizes of files whose content is present.
    pub logical_bytes: u64,
    /// `logical_bytes / stored_bytes` (1.0 when nothing is stored).
    pub dedup_ratio: f64,
}

/// Which files a digest lookup returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Files readable by anyone.
    Public,
    /// Files readable only with a token.
    Restricted,
}

/// How a read is authorised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// An anonymous reader: restricted files are refused.
    Anonymous,
    /// A reader presenting a token (checked for restricted files, ignored for public ones).
    Token(&'a str),
    /// The server itself (admin tools, mirrors): no check.
    Trusted,
}

/// One page of a bucket listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The files, in id order.
    pub files: Vec<FileRecord>,
    /// The cursor of the next page (pass it as `after`), or `None` at the end.
    pub next: Option<FileId>,
}

/// What one [`Store::gc`] pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Files whose content link was cut because they expired.
    pub expired_files: u64,
    /// Blobs collected.
    pub collected_blobs: u64,
    /// The bytes of the collected blobs.
    pub freed_bytes: u64,
    /// Whether more work was left for another pass.
    pub more: bool,
}

/// What [`Store::sweep_orphans`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Blob files that no record points to.
    pub orphan_blobs: u64,
    /// Temporary files of uploads that never finished.
    pub temp_files: u64,
}

/// What is wrong with a blob, found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobProblem {
    /// Its bytes are not stored.
    Missing {
        /// The blob.
        hash: Blake3Hash,
    },
    /// Its bytes do not hash to its address (or have the wrong size).
    Corrupt {
        /// The blob.
        hash: Blake3Hash,
        /// The size found.
        size: u64,
        /// The hash of what was found.
        actual: Blake3Hash,
    },
}

/// The result of one [`Store::verify`] batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs checked in this batch.
    pub checked: u64,
    /// Problems found.
    pub problems: Vec<BlobProblem>,
    /// Where to resume (pass as `after`), or `None` when the scrub is complete.
    pub next: Option<Blake3Hash>,
}

/// A difference between the stored counters and indexes and what the file records imply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inconsistency {
    /// A counter does not equal the value recomputed from the file records.
    Counter {
        /// Which counter.
        name: String,
        /// The recomputed value.
        expected: i64,
        /// The stored value.
        found: i64,
    },
    /// Something the records imply is absent, or something present is implied by nothing.
    Record {
        /// What.
        detail: String,
    },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inconsistency::Counter {
                name,
                expected,
                found,
            } => write!(f, "counter {name}: expected {expected}, found {found}"),
            Inconsistency::Record { detail } => f.write_str(detail),
        }
    }
}

/// The result of [`Store::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// File records read.
    pub files: u64,
    /// Blob records read.
    pub blobs: u64,
    /// Everything that does not add up.
    pub problems: Vec<Inconsistency>,
}

impl CheckReport {
    /// Whether nothing drifted.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The bytes of an upload that reached commit.
enum Content {
    Inline(Vec<u8>),
    Temp(Box<dyn TempBlob>),
}

/// A streaming upload: write the bytes, then [`Upload::commit`]. Dropping it without
/// committing leaves nothing behind. When a write fails (`std::io::Error`), [`Upload::commit`]
/// returns the typed cause (for example [`Error::DiskFull`]).
pub struct Upload {
    store: Store,
    request: UploadRequest,
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

    /// Finishes the upload: checks the announced digests, deduplicates, stores the blob and
    /// the file record durably. When this returns `Ok` the upload survives a crash.
    ///
    /// # Errors
    /// [`Error::DigestMismatch`], [`Error::QuotaExceeded`], [`Error::DiskFull`], [`Error::Io`],
    /// [`Error::Engine`]; in every case nothing of the upload is visible.
    pub fn commit(mut self) -> Result<FileRecord> {
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
        self.store
            .commit_upload(&request, self.size, digests, content)
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

/// A streaming read of a file's content (whole or a byte range).
pub struct ContentReader {
    record: FileRecord,
    range: Range<u64>,
    remaining: u64,
    inner: Box<dyn Read + Send>,
}

impl fmt::Debug for ContentReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentReader")
            .field("record", &self.record)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl ContentReader {
    /// The file being read.
    pub fn record(&self) -> &FileRecord {
        &self.record
    }

    /// The byte range being read.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The number of bytes this reader yields in total.
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Whether it yields no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "blob {} ended {} bytes early",
                    self.record.blake3, self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn visibility_code(restricted: bool) -> u8 {
    if restricted {
        keys::VIS_RESTRICTED
    } else {
        keys::VIS_PUBLIC
    }
}

fn as_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// The metadata engine (for capacity reports and tests).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// The current time of the store's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The inline threshold in bytes.
    pub fn inline_threshold(&self) -> usize {
        self.inner.inline_threshold
    }

    fn check_writable(&self) -> Result<()> {
        match &*self.inner.poison.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison_on_sync_failure(&self, error: &Error) {
        let fsync = match error {
            Error::Io { operation, .. } | Error::DiskFull { operation, .. } => {
                operation.starts_with("fsyncing")
            }
            _ => false,
        };
        if fsync {
            let mut slot = self.inner.poison.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(error.to_string());
            }
        }
    }

    /// Starts a streaming upload.
    ///
    /// # Errors
    /// [`Error::InvalidFilename`] (and an over-long content type as the same error), or
    /// [`Error::Poisoned`].
    pub fn begin_upload(&self, request: UploadRequest) -> Result<Upload> {
        validate_filename(&request.filename)?;
        if request.content_type.len() > 1024 || request.content_type.chars().any(char::is_control) {
            return Err(Error::InvalidFilename {
                filename: request.filename,
                reason: "content type longer than 1024 bytes or with control characters",
            });
        }
        self.check_writable()?;
        Ok(Upload {
            store: self.clone(),
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

    /// Uploads `bytes` in one call (a convenience over [`Store::begin_upload`]).
    ///
    /// # Errors
    /// As for [`Store::begin_upload`] and [`Upload::commit`].
    pub fn upload_bytes(&self, request: UploadRequest, bytes: &[u8]) -> Result<FileRecord> {
        let mut upload = self.begin_upload(request)?;
        if let Err(error) = upload.write_all(bytes) {
            // The typed cause (a full disk, say) was kept by the upload.
            return Err(upload
                .failed
                .take()
                .unwrap_or_else(|| Error::io("writing", "upload", error)));
        }
        upload.commit()
    }

    fn allocate_id(&self) -> Result<FileId> {
        let mut ids = self.inner.ids.lock().unwrap_or_else(|e| e.into_inner());
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

    fn blob_meta(&self, hash: &Blake3Hash) -> Result<Option<BlobMeta>> {
        match self.inner.engine.get(self.inner.ks.blobs, &hash.0)? {
            Some(bytes) => Ok(Some(BlobMeta::decode(&hash.0, &bytes)?)),
            None => Ok(None),
        }
    }

    fn counter(&self, keyspace: Keyspace, key: &[u8]) -> Result<i64> {
        Ok(self.inner.engine.counter(keyspace, key)?)
    }

    fn check_quota(&self, bucket: &BucketName, size: u64) -> Result<()> {
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

    fn digest_keys(
        meta: &BlobMeta,
        hash: &Blake3Hash,
        restricted: bool,
        id: FileId,
    ) -> Vec<Vec<u8>> {
        let vis = visibility_code(restricted);
        let mut out = vec![
            keys::digest_entry(ALG_BLAKE3, vis, &hash.0, id),
            keys::digest_entry(ALG_SHA256, vis, &meta.sha256, id),
        ];
        if let Some(d) = &meta.sha1 {
            out.push(keys::digest_entry(ALG_SHA1, vis, d, id));
        }
        if let Some(d) = &meta.md5 {
            out.push(keys::digest_entry(ALG_MD5, vis, d, id));
        }
        out
    }

    fn commit_upload(
        &self,
        request: &UploadRequest,
        size: u64,
        digests: Digests,
        content: Content,
    ) -> Result<FileRecord> {
        self.check_writable()?;
        let ks = self.inner.ks;
        let hash = digests.blake3;
        let bucket = &request.bucket;
        // Fail early without touching the disk; re-checked under the lock below.
        self.check_quota(bucket, size)?;

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
        let quota_guard = {
            let shared = self.inner.bucket_locks.shared(bucket.as_str());
            if self.quota(bucket)?.is_none() {
                shared
            } else {
                drop(shared);
                self.inner.bucket_locks.exclusive(bucket.as_str())
            }
        };
        if let Err(error) = self.check_quota(bucket, size) {
            if persisted_now {
                // No record points to the new file and the blob lock is held.
                self.inner.backend.delete(&hash)?;
            }
            return Err(error);
        }
        let now = self.now();
        let id = self.allocate_id()?;
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
        let meta = match existing {
            None => {
                let meta = BlobMeta {
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
                    batch.put(ks.inline, hash.0, bytes);
                }
                batch.counter_add(ks.stats, keys::global_stat(keys::STAT_BLOBS), 1);
                batch.counter_add(ks.stats, keys::global_stat(keys::STAT_STORED), as_i64(size));
                meta
            }
            Some(mut meta) => {
                let mut changed = false;
                if let Some(since) = meta.zero_since.take() {
                    // Revival: the blob leaves the zero-ref index, so GC will not take it.
                    batch.delete(ks.zero_refs, keys::zero_ref(since, &hash));
                    changed = true;
                }
                if meta.sha1.is_none() && digests.sha1.is_some() {
                    meta.sha1 = digests.sha1;
                    meta.md5 = digests.md5;
                    changed = true;
                }
                if changed {
                    batch.put(ks.blobs, hash.0, meta.encode());
                }
                meta
            }
        };
        batch.counter_add(ks.refs, hash.0, 1);
        batch.put(ks.files, keys::file(id), record.encode());
        batch.put(ks.bucket_files, keys::bucket_file(bucket, id), []);
        for key in Self::digest_keys(&meta, &hash, request.restricted, id) {
            batch.put(ks.digests, key, []);
        }
        if let Some(expires) = request.expires {
            batch.put(ks.expiry, keys::expiry(expires, id), []);
        }
        let bucket_blob = keys::bucket_blob(bucket, &hash);
        if self.counter(ks.bucket_blobs, &bucket_blob)? <= 0 {
            batch.counter_add(
                ks.stats,
                keys::bucket_stat(bucket, keys::STAT_UNIQUE),
                as_i64(size),
            );
        }
        batch.counter_add(ks.bucket_blobs, bucket_blob, 1);
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
        let written = self.inner.committer.write(batch)?;
        // The decisions are visible; the locks need not wait for the disk.
        drop(quota_guard);
        drop(pair_guard);
        drop(blob_guard);
        self.inner.committer.sync(written)?;
        Ok(record)
    }

    /// The file with this id.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn file(&self, id: FileId) -> Result<FileRecord> {
        let key = keys::file(id);
        match self.inner.engine.get(self.inner.ks.files, &key)? {
            Some(bytes) => FileRecord::decode(id, &key, &bytes),
            None => Err(Error::NotFound { id }),
        }
    }

    /// What the store knows about a blob, or `None` when it is not stored.
    ///
    /// # Errors
    /// The engine's error.
    pub fn blob_info(&self, hash: &Blake3Hash) -> Result<Option<BlobInfo>> {
        let Some(meta) = self.blob_meta(hash)? else {
            return Ok(None);
        };
        let refcount = as_u64(self.counter(self.inner.ks.refs, &hash.0)?);
        Ok(Some(BlobInfo {
            hash: *hash,
            size: meta.size,
            sha256: meta.sha256,
            sha1: meta.sha1,
            md5: meta.md5,
            created: meta.created,
            inline: meta.inline,
            refcount,
            zero_ref_since: meta.zero_since,
        }))
    }

    /// Up to `limit` files (in id order) whose present content has `digest`, among the public
    /// or the restricted files.
    ///
    /// # Errors
    /// The engine's error.
    pub fn files_by_digest(
        &self,
        digest: &Digest,
        visibility: Visibility,
        limit: usize,
    ) -> Result<Vec<FileId>> {
        let algorithm = match digest {
            Digest::Blake3(_) => ALG_BLAKE3,
            Digest::Sha256(_) => ALG_SHA256,
            Digest::Sha1(_) => ALG_SHA1,
            Digest::Md5(_) => ALG_MD5,
        };
        let vis = visibility_code(visibility == Visibility::Restricted);
        let prefix = keys::digest_prefix(algorithm, vis, digest.as_bytes());
        let mut out = Vec::new();
        for kv in self.inner.engine.scan(
            self.inner.ks.digests,
            ScanRange::prefix(&prefix),
            Direction::Forward,
        )? {
            if out.len() >= limit {
                break;
            }
            let (key, _) = kv?;
            let id = key
                .get(prefix.len()..)
                .and_then(decode_u64)
                .ok_or_else(|| Error::CorruptRecord {
                    what: "digest index",
                    key: key.clone(),
                })?;
            out.push(FileId(id));
        }
        Ok(out)
    }

    /// Up to `limit` files of `bucket` with ids greater than `after`, in id order. Passing the
    /// returned `next` as `after` continues the listing; files that existed throughout are
    /// listed exactly once, whatever is written meanwhile.
    ///
    /// # Errors
    /// The engine's error.
    pub fn list_bucket(
        &self,
        bucket: &BucketName,
        after: Option<FileId>,
        limit: usize,
    ) -> Result<Page> {
        let ks = self.inner.ks;
        let prefix = keys::bucket_prefix(bucket);
        let start = match after {
            Some(id) => match id.0.checked_add(1) {
                Some(next) => keys::bucket_file(bucket, FileId(next)),
                None => {
                    return Ok(Page {
                        files: Vec::new(),
                        next: None,
                    })
                }
            },
            None => prefix.clone(),
        };
        let range = ScanRange {
            start,
            end: ekeys::prefix_successor(&prefix),
        };
        let mut ids = Vec::new();
        let mut more = false;
        for kv in self
            .inner
            .engine
            .scan(ks.bucket_files, range, Direction::Forward)?
        {
            let (key, _) = kv?;
            if ids.len() == limit {
                more = true;
                break;
            }
            let (_, id) = keys::parse_bucket_file(&key).ok_or_else(|| Error::CorruptRecord {
                what: "bucket listing",
                key: key.clone(),
            })?;
            ids.push(id);
        }
        let file_keys: Vec<[u8; 8]> = ids.iter().map(|id| keys::file(*id)).collect();
        let refs: Vec<&[u8]> = file_keys.iter().map(|k| k.as_slice()).collect();
        let values = self.inner.engine.multi_get(ks.files, &refs)?;
        let mut files = Vec::with_capacity(ids.len());
        for ((id, key), value) in ids.iter().zip(&file_keys).zip(values) {
            // A file deleted since the scan is simply not listed.
            if let Some(bytes) = value {
                files.push(FileRecord::decode(*id, key, &bytes)?);
            }
        }
        let next = if more { ids.last().copied() } else { None };
        Ok(Page { files, next })
    }

    /// Sets or clears the quota of `bucket` on logical bytes.
    ///
    /// # Errors
    /// The engine's error.
    pub fn set_quota(&self, bucket: &BucketName, quota: Option<u64>) -> Result<()> {
        self.check_writable()?;
        let _guard = self.inner.bucket_locks.exclusive(bucket.as_str());
        let mut batch = WriteBatch::new();
        match quota {
            Some(q) => batch.put(self.inner.ks.buckets, bucket.as_str(), q.to_be_bytes()),
            None => batch.delete(self.inner.ks.buckets, bucket.as_str()),
        }
        self.inner.committer.commit(batch)?;
        Ok(())
    }

    /// The quota of `bucket`, if any.
    ///
    /// # Errors
    /// The engine's error.
    pub fn quota(&self, bucket: &BucketName) -> Result<Option<u64>> {
        match self
            .inner
            .engine
            .get(self.inner.ks.buckets, bucket.as_str().as_bytes())?
        {
            Some(bytes) => Ok(Some(decode_u64(&bytes).ok_or_else(|| {
                Error::CorruptRecord {
                    what: "bucket settings",
                    key: bucket.as_str().as_bytes().to_vec(),
                }
            })?)),
            None => Ok(None),
        }
    }

    /// The statistics of `bucket`, in constant time (four point reads).
    ///
    /// # Errors
    /// The engine's error.
    pub fn bucket_stats(&self, bucket: &BucketName) -> Result<BucketStats> {
        let ks = self.inner.ks;
        let stat_keys = [
            keys::bucket_stat(bucket, keys::STAT_FILES),
            keys::bucket_stat(bucket, keys::STAT_LOGICAL),
            keys::bucket_stat(bucket, keys::STAT_UNIQUE),
        ];
        let refs: Vec<&[u8]> = stat_keys.iter().map(Vec::as_slice).collect();
        let values = self.inner.engine.multi_get(ks.stats, &refs)?;
        let mut counters = [0u64; 3];
        for (slot, (value, key)) in counters.iter_mut().zip(values.iter().zip(&stat_keys)) {
            if let Some(bytes) = value {
                *slot =
                    as_u64(
                        engine::counter::decode(bytes).ok_or_else(|| Error::CorruptRecord {
                            what: "bucket statistics",
                            key: key.clone(),
                        })?,
                    );
            }
        }
        Ok(BucketStats {
            files: counters[0],
            logical_bytes: counters[1],
            unique_bytes: counters[2],
            quota: self.quota(bucket)?,
        })
    }

    /// Store-wide statistics, in constant time.
    ///
    /// # Errors
    /// The engine's error.
    pub fn summary(&self) -> Result<StoreSummary> {
        let stats = self.inner.ks.stats;
        let get =
            |field| -> Result<u64> { Ok(as_u64(self.counter(stats, &keys::global_stat(field))?)) };
        let stored_bytes = get(keys::STAT_STORED)?;
        let logical_bytes = get(keys::STAT_LOGICAL)?;
        Ok(StoreSummary {
            files: get(keys::STAT_FILES)?,
            blobs: get(keys::STAT_BLOBS)?,
            stored_bytes,
            logical_bytes,
            dedup_ratio: if stored_bytes == 0 {
                1.0
            } else {
                logical_bytes as f64 / stored_bytes as f64
            },
        })
    }

    /// A token for file `id` valid for `lifetime` (default 1 day).
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn issue_token(&self, id: FileId, lifetime: Option<Duration>) -> Result<String> {
        let record = self.file(id)?;
        let expires = self.now().plus(lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME));
        Ok(self
            .inner
            .signer
            .sign(id, &record.filename, expires)
            .to_string())
    }

    /// Checks that `access` may read `record`.
    ///
    /// # Errors
    /// [`Error::Forbidden`] with the reason.
    pub fn authorize(&self, record: &FileRecord, access: Access<'_>) -> Result<()> {
        if !record.restricted {
            return Ok(());
        }
        let outcome = match access {
            Access::Trusted => Ok(()),
            Access::Anonymous => Err(TokenError::Missing),
            Access::Token(token) => {
                self.inner
                    .signer
                    .verify(token, record.id, &record.filename, self.now())
            }
        };
        outcome.map_err(|reason| Error::Forbidden {
            id: record.id,
            reason,
        })
    }

    /// Checks that `access` may read the content of `record` now: the file's restriction
    /// (its token), its content state and its expiry. [`Store::read`] applies exactly these
    /// checks; a reader answering from [`Store::cached_file`] must apply them too. Touches
    /// neither the engine nor the disk.
    ///
    /// # Errors
    /// [`Error::Forbidden`], or [`Error::ContentGone`] (deleted, or past its expiry).
    pub fn check_readable(&self, record: &FileRecord, access: Access<'_>) -> Result<()> {
        self.authorize(record, access)?;
        let id = record.id;
        match record.content {
            ContentState::Present => {}
            ContentState::Deleted => {
                return Err(Error::ContentGone {
                    id,
                    reason: "deleted",
                })
            }
            ContentState::Expired => {
                return Err(Error::ContentGone {
                    id,
                    reason: "expired",
                })
            }
        }
        if record.expires.is_some_and(|expires| self.now() >= expires) {
            return Err(Error::ContentGone {
                id,
                reason: "expired",
            });
        }
        Ok(())
    }

    /// File `id` with its whole content if the hot-file cache holds it. Never touches the
    /// engine or the disk, so async code may call it on its own threads; the record has not
    /// been checked: apply [`Store::check_readable`] before serving it.
    pub fn cached_file(&self, id: FileId) -> Option<SmallFile> {
        self.inner.hot.as_ref()?.get(id)
    }

    /// File `id` with its whole content, when its content is present and inline (at most the
    /// inline threshold): from the hot-file cache, else with one read of the record and one
    /// of the content, checked against its BLAKE3 hash and then cached. `Ok(None)` when the
    /// content is not inline or not present: [`Store::read`] handles those. The record has
    /// not been checked: apply [`Store::check_readable`] before serving it. Counts nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`], or the engine's error.
    pub fn small_file(&self, id: FileId) -> Result<Option<SmallFile>> {
        if let Some(file) = self.cached_file(id) {
            return Ok(Some(file));
        }
        // Noted before the engine is read: an invalidation from here on voids the fill.
        let generation = self.inner.hot.as_ref().map(|hot| hot.generation(id));
        let record = self.file(id)?;
        if record.content != ContentState::Present
            || record.size > self.inner.inline_threshold as u64
        {
            return Ok(None);
        }
        let hash = record.blake3;
        let Some(bytes) = self.inner.engine.get(self.inner.ks.inline, &hash.0)? else {
            // Not inline: stored before a change of the threshold, or in a backend.
            return Ok(None);
        };
        if Blake3Hash::of(&bytes) != hash {
            return Err(Error::Corrupt {
                hash,
                detail: "inline content does not match its hash".to_string(),
            });
        }
        if bytes.len() as u64 != record.size {
            return Err(Error::Corrupt {
                hash,
                detail: format!(
                    "inline content is {} bytes, not the file's {}",
                    bytes.len(),
                    record.size
                ),
            });
        }
        let file = SmallFile::new(record, bytes::Bytes::from(bytes));
        if let (Some(hot), Some(generation)) = (&self.inner.hot, generation) {
            hot.fill(generation, file.clone());
        }
        Ok(Some(file))
    }

    /// The number of files in the hot-file cache.
    pub fn cached_files(&self) -> usize {
        self.inner.hot.as_ref().map_or(0, HotCache::len)
    }

    /// Counts one download of file `id` today, in memory: it reaches the engine with the
    /// next [`Store::flush_downloads`]. Never touches the engine (async code may call it).
    pub fn count_download(&self, id: FileId) {
        self.inner.downloads.add(id, self.now().day());
    }

    /// Writes the download counts gathered in memory to the engine, as one buffered batch.
    /// Call it every [`crate::DOWNLOADS_FLUSH_INTERVAL`] when downloads are counted with
    /// [`Store::count_download`] only; [`Store::read`] calls it when counts have waited [`crate::DOWNLOADS_FLUSH_INTERVAL`], and
    /// [`Store::flush`] and closing the store call it too.
    ///
    /// # Errors
    /// The engine's error (the counts stay pending).
    pub fn flush_downloads(&self) -> Result<()> {
        self.inner.flush_downloads()
    }

    /// Opens file `id` for reading, whole or the byte range `range` (`start..end`, end
    /// exclusive). Reading from byte 0 counts a download for today.
    ///
    /// Inline content is checked against its hash before anything is returned; file content
    /// is checked by [`Store::verify`] (and a short file gives an `UnexpectedEof` read error).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Forbidden`], [`Error::ContentGone`] (deleted, or past its
    /// expiry), [`Error::InvalidRange`], [`Error::Corrupt`], or an I/O or engine error.
    pub fn read(
        &self,
        id: FileId,
        access: Access<'_>,
        range: Option<Range<u64>>,
    ) -> Result<ContentReader> {
        let record = self.file(id)?;
        self.check_readable(&record, access)?;
        let range = range.unwrap_or(0..record.size);
        if range.start > range.end || range.end > record.size {
            return Err(Error::InvalidRange {
                id,
                start: range.start,
                end: range.end,
                size: record.size,
            });
        }
        let hash = record.blake3;
        let meta = self.blob_meta(&hash)?.ok_or_else(|| Error::Corrupt {
            hash,
            detail: format!("file {id} links to a blob that has no record"),
        })?;
        let len = range.end - range.start;
        let inner: Box<dyn Read + Send> = if meta.inline {
            let bytes = self
                .inner
                .engine
                .get(self.inner.ks.inline, &hash.0)?
                .ok_or_else(|| Error::Corrupt {
                    hash,
                    detail: "inline content missing".to_string(),
                })?;
            if Blake3Hash::of(&bytes) != hash {
                return Err(Error::Corrupt {
                    hash,
                    detail: "inline content does not match its hash".to_string(),
                });
            }
            let start = usize::try_from(range.start).unwrap_or(usize::MAX);
            let end = usize::try_from(range.end).unwrap_or(usize::MAX);
            let slice = bytes.get(start..end).ok_or_else(|| Error::Corrupt {
                hash,
                detail: format!(
                    "inline content is {} bytes, shorter than its size",
                    bytes.len()
                ),
            })?;
            Box::new(io::Cursor::new(slice.to_vec()))
        } else {
            self.inner
                .backend
                .open_range(&hash, range.start, len)?
                .ok_or_else(|| Error::Corrupt {
                    hash,
                    detail: "blob bytes are missing".to_string(),
                })?
        };
        if range.start == 0 {
            self.count_download(id);
            if self.inner.downloads.due(self.now()) {
                if let Err(error) = self.flush_downloads() {
                    // A lost download count must not fail the download.
                    tracing::warn!(%id, %error, "could not write download counts");
                }
            }
        }
        Ok(ContentReader {
            record,
            range,
            remaining: len,
            inner,
        })
    }

    /// The downloads of file `id` on `day`.
    ///
    /// # Errors
    /// The engine's error.
    pub fn downloads(&self, id: FileId, day: Day) -> Result<u64> {
        let written = as_u64(self.counter(self.inner.ks.downloads, &keys::download(id, day))?);
        Ok(written + self.inner.downloads.pending(id, day))
    }

    /// Removes file `id` entirely: its record, its place in its bucket and its link to its
    /// blob (the blob is collected after the grace period if nothing else links to it).
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn delete_file(&self, id: FileId) -> Result<FileRecord> {
        self.cut(id, None)
    }

    /// Cuts file `id`'s link to its content but keeps its record: reads then give
    /// [`Error::ContentGone`].
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn delete_content(&self, id: FileId) -> Result<FileRecord> {
        self.cut(id, Some(ContentState::Deleted))
    }

    /// Sets (or, with `None`, clears) file `id`'s expiry and returns the updated record. Reads
    /// refuse the content from `expires` on; GC cuts it once the expiry grace has passed too.
    /// Moving the time later revives reads of a file that expired but was not cut yet; a file
    /// whose content is already gone keeps the new time on its record only.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn set_expiry(&self, id: FileId, expires: Option<Timestamp>) -> Result<FileRecord> {
        self.update_file(
            id,
            FileUpdate {
                expires: Some(expires),
                restricted: None,
            },
        )
    }

    /// Makes file `id` restricted (readable only with a token) or public. Its digest index
    /// entries move to the matching visibility in the same batch.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn set_restricted(&self, id: FileId, restricted: bool) -> Result<FileRecord> {
        self.update_file(
            id,
            FileUpdate {
                expires: None,
                restricted: Some(restricted),
            },
        )
    }

    /// Applies `update` to file `id`'s record in one batch (all of it or nothing) and returns
    /// the updated record; see [`Store::set_expiry`] and [`Store::set_restricted`]. A copy in
    /// the hot-file cache is dropped before this returns, so no reader is served by the old
    /// record after.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn update_file(&self, id: FileId, update: FileUpdate) -> Result<FileRecord> {
        self.check_writable()?;
        let ks = self.inner.ks;
        let first = self.file(id)?;
        // The same locks as a cut or an expiry (which rewrite the record, its expiry entry
        // and its digest entries), so that neither can interleave with this.
        let (blob_guard, pair_guard) = self.lock_file(&first);
        let record = self.file(id)?;
        let mut updated = record.clone();
        if let Some(expires) = update.expires {
            updated.expires = expires;
        }
        if let Some(restricted) = update.restricted {
            updated.restricted = restricted;
        }
        if updated == record {
            return Ok(record);
        }
        let mut batch = WriteBatch::new();
        // Only a file whose content is present has expiry and digest index entries.
        if record.content == ContentState::Present {
            if updated.expires != record.expires {
                if let Some(old) = record.expires {
                    batch.delete(ks.expiry, keys::expiry(old, id));
                }
                if let Some(new) = updated.expires {
                    batch.put(ks.expiry, keys::expiry(new, id), []);
                }
            }
            if updated.restricted != record.restricted {
                let hash = record.blake3;
                let meta = self.blob_meta(&hash)?.ok_or_else(|| Error::Corrupt {
                    hash,
                    detail: format!("file {id} links to a blob that has no record"),
                })?;
                for key in Self::digest_keys(&meta, &hash, record.restricted, id) {
                    batch.delete(ks.digests, key);
                }
                for key in Self::digest_keys(&meta, &hash, updated.restricted, id) {
                    batch.put(ks.digests, key, []);
                }
            }
        }
        batch.put(ks.files, keys::file(id), updated.encode());
        let written = self.inner.committer.write(batch);
        self.invalidate_cached(id);
        let written = written?;
        drop(pair_guard);
        drop(blob_guard);
        self.inner.committer.sync(written)?;
        Ok(updated)
    }

    /// Removes the record (`new_state` = `None`) or marks its content gone.
    fn cut(&self, id: FileId, new_state: Option<ContentState>) -> Result<FileRecord> {
        self.check_writable()?;
        let ks = self.inner.ks;
        let first = self.file(id)?;
        let (blob_guard, pair_guard) = self.lock_file(&first);
        // Re-read under the locks: a concurrent delete or expiry may have won.
        let record = self.file(id)?;
        let mut batch = WriteBatch::new();
        if record.content == ContentState::Present {
            self.unlink(&mut batch, &record)?;
        }
        if let Some(expires) = record.expires {
            batch.delete(ks.expiry, keys::expiry(expires, id));
        }
        let updated = match new_state {
            None => {
                batch.delete(ks.files, keys::file(id));
                batch.delete(ks.bucket_files, keys::bucket_file(&record.bucket, id));
                let start = keys::download(id, Day(0));
                let end = ekeys::prefix_successor(&keys::file(id)).unwrap_or_default();
                batch.delete_range(ks.downloads, start, end);
                batch.counter_add(
                    ks.stats,
                    keys::bucket_stat(&record.bucket, keys::STAT_FILES),
                    -1,
                );
                batch.counter_add(ks.stats, keys::global_stat(keys::STAT_FILES), -1);
                record.clone()
            }
            Some(state) => {
                let mut updated = record.clone();
                if record.content == ContentState::Present {
                    updated.content = state;
                }
                batch.put(ks.files, keys::file(id), updated.encode());
                updated
            }
        };
        let written = if new_state.is_none() {
            // The file's counters go with it: no flush may write pending counts of it from
            // here on (the flush skips files whose record is gone).
            let _flushing = self
                .inner
                .downloads
                .flush_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.inner.downloads.forget(id);
            self.inner.committer.write(batch)
        } else {
            self.inner.committer.write(batch)
        };
        // Applied (or failed as a whole): no reader may be answered from memory any more.
        self.invalidate_cached(id);
        let written = written?;
        drop(pair_guard);
        drop(blob_guard);
        self.inner.committer.sync(written)?;
        Ok(updated)
    }

    /// Takes the locks that order changes to one file's record (a cut, an expiry, an update):
    /// its blob's, then its (bucket, blob) pair's. Callers re-read the record under them.
    fn lock_file(&self, record: &FileRecord) -> (MutexGuard<'_, ()>, MutexGuard<'_, ()>) {
        let blob_guard = self.inner.blob_locks.lock(&record.blake3.0);
        let pair_guard = self
            .inner
            .pair_locks
            .lock(&(record.bucket.as_str(), &record.blake3.0));
        (blob_guard, pair_guard)
    }

    /// Adds to `batch` the removal of `record`'s link to its blob. The caller holds the locks
    /// of the blob and of the bucket.
    fn unlink(&self, batch: &mut WriteBatch, record: &FileRecord) -> Result<()> {
        let ks = self.inner.ks;
        let hash = record.blake3;
        let meta = self.blob_meta(&hash)?.ok_or_else(|| Error::Corrupt {
            hash,
            detail: format!("file {} links to a blob that has no record", record.id),
        })?;
        let refs = self.counter(ks.refs, &hash.0)?;
        if refs <= 1 {
            let now = self.now();
            let mut zeroed = meta.clone();
            zeroed.zero_since = Some(now);
            batch.put(ks.blobs, hash.0, zeroed.encode());
            batch.put(ks.zero_refs, keys::zero_ref(now, &hash), []);
        }
        batch.counter_add(ks.refs, hash.0, -1);
        let bucket_blob = keys::bucket_blob(&record.bucket, &hash);
        if self.counter(ks.bucket_blobs, &bucket_blob)? <= 1 {
            batch.delete(ks.bucket_blobs, bucket_blob);
            batch.counter_add(
                ks.stats,
                keys::bucket_stat(&record.bucket, keys::STAT_UNIQUE),
                -as_i64(record.size),
            );
        } else {
            batch.counter_add(ks.bucket_blobs, bucket_blob, -1);
        }
        batch.counter_add(
            ks.stats,
            keys::bucket_stat(&record.bucket, keys::STAT_LOGICAL),
            -as_i64(record.size),
        );
        batch.counter_add(
            ks.stats,
            keys::global_stat(keys::STAT_LOGICAL),
            -as_i64(record.size),
        );
        for key in Self::digest_keys(&meta, &hash, record.restricted, record.id) {
            batch.delete(ks.digests, key);
        }
        Ok(())
    }

    /// One bounded pass of garbage collection: cuts the content link of up to `limit` files
    /// whose expiry plus the expiry grace has passed, then collects up to `limit` blobs that
    /// have had no reference for longer than the grace. Safe to run while uploads run.
    ///
    /// # Errors
    /// The engine's or the backend's error.
    pub fn gc(&self, limit: usize) -> Result<GcReport> {
        self.check_writable()?;
        let mut report = GcReport::default();
        let (expired, more_expired) = self.expire_files(limit)?;
        report.expired_files = expired;
        let (blobs, bytes, more_blobs) = self.collect_blobs(limit)?;
        report.collected_blobs = blobs;
        report.freed_bytes = bytes;
        report.more = more_expired || more_blobs;
        Ok(report)
    }

    /// Up to `limit` entries of a time-keyed index (expiry, zero-ref) in `range`, oldest
    /// first, parsed by `parse`; and whether more are due past them.
    fn due_entries<T>(
        &self,
        index: Keyspace,
        range: ScanRange,
        limit: usize,
        what: &'static str,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Result<(Vec<T>, bool)> {
        let mut due = Vec::new();
        for kv in self.inner.engine.scan(index, range, Direction::Forward)? {
            let (key, _) = kv?;
            if due.len() == limit {
                return Ok((due, true));
            }
            due.push(parse(&key).ok_or_else(|| Error::CorruptRecord {
                what,
                key: key.clone(),
            })?);
        }
        Ok((due, false))
    }

    fn expire_files(&self, limit: usize) -> Result<(u64, bool)> {
        let ks = self.inner.ks;
        let cutoff = self.now().minus(self.inner.expiry_grace);
        let range = ScanRange {
            start: Vec::new(),
            end: Some(keys::time_bound(Timestamp(cutoff.0.saturating_add(1)))),
        };
        let (due, more) =
            self.due_entries(ks.expiry, range, limit, "expiry index", keys::parse_expiry)?;
        let mut expired = 0;
        for (at, id) in due {
            let Ok(first) = self.file(id) else {
                let mut batch = WriteBatch::new();
                batch.delete(ks.expiry, keys::expiry(at, id));
                self.inner.committer.commit(batch)?;
                continue;
            };
            let (blob_guard, pair_guard) = self.lock_file(&first);
            let mut batch = WriteBatch::new();
            batch.delete(ks.expiry, keys::expiry(at, id));
            match self.file(id) {
                Ok(record)
                    if record.content == ContentState::Present && record.expires == Some(at) =>
                {
                    self.unlink(&mut batch, &record)?;
                    let mut updated = record;
                    updated.content = ContentState::Expired;
                    batch.put(ks.files, keys::file(id), updated.encode());
                    expired += 1;
                }
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
            let written = self.inner.committer.write(batch);
            self.invalidate_cached(id);
            let written = written?;
            drop(pair_guard);
            drop(blob_guard);
            self.inner.committer.sync(written)?;
        }
        Ok((expired, more))
    }

    fn collect_blobs(&self, limit: usize) -> Result<(u64, u64, bool)> {
        let ks = self.inner.ks;
        let cutoff = self.now().minus(self.inner.grace);
        // Entries strictly older than the cutoff.
        let range = ScanRange {
            start: Vec::new(),
            end: Some(keys::time_bound(cutoff)),
        };
        let (due, more) = self.due_entries(
            ks.zero_refs,
            range,
            limit,
            "zero-ref index",
            keys::parse_zero_ref,
        )?;
        let (mut blobs, mut bytes) = (0, 0);
        for (since, hash) in due {
            let _guard = self.inner.blob_locks.lock(&hash.0);
            let mut batch = WriteBatch::new();
            batch.delete(ks.zero_refs, keys::zero_ref(since, &hash));
            let meta = self.blob_meta(&hash)?;
            let refs = self.counter(ks.refs, &hash.0)?;
            let collect = match &meta {
                Some(meta) => meta.zero_since == Some(since) && refs <= 0,
                None => false,
            };
            if let (true, Some(meta)) = (collect, meta) {
                batch.delete(ks.blobs, hash.0);
                batch.delete(ks.refs, hash.0);
                if meta.inline {
                    batch.delete(ks.inline, hash.0);
                }
                batch.counter_add(ks.stats, keys::global_stat(keys::STAT_BLOBS), -1);
                batch.counter_add(
                    ks.stats,
                    keys::global_stat(keys::STAT_STORED),
                    -as_i64(meta.size),
                );
                // The record goes first; a crash before the bytes are removed leaves an
                // orphan file that the sweep removes.
                self.inner.committer.commit(batch)?;
                if !meta.inline {
                    self.inner.backend.delete(&hash)?;
                }
                blobs += 1;
                bytes += meta.size;
            } else {
                // Revived (or re-zeroed under a newer time): the entry is stale.
                self.inner.committer.commit(batch)?;
            }
        }
        Ok((blobs, bytes, more))
    }

    /// Removes blob files that no record points to and temporaries of unfinished uploads,
    /// when older than the grace period. Walks the blob directory (run it rarely).
    ///
    /// # Errors
    /// The engine's or the backend's error.
    pub fn sweep_orphans(&self) -> Result<SweepReport> {
        self.check_writable()?;
        let older_than = self.now().minus(self.inner.grace);
        let mut orphans = 0;
        let temps = self.inner.backend.sweep(older_than, &mut |stored| {
            let _guard = self.inner.blob_locks.lock(&stored.hash.0);
            let orphan = match self.blob_meta(&stored.hash)? {
                None => true,
                Some(meta) => meta.inline,
            };
            if orphan {
                self.inner.backend.delete(&stored.hash)?;
                orphans += 1;
            }
            Ok(())
        })?;
        Ok(SweepReport {
            orphan_blobs: orphans,
            temp_files: temps,
        })
    }

    /// Checks up to `limit` blobs after `after` (in hash order) against their hashes: the
    /// scrub. Resume with the returned `next` until it is `None`.
    ///
    /// # Errors
    /// The engine's error, or an I/O error other than a missing or short blob.
    pub fn verify(&self, after: Option<Blake3Hash>, limit: usize) -> Result<VerifyReport> {
        let ks = self.inner.ks;
        let start = match after {
            Some(hash) => ekeys::successor(&hash.0),
            None => Vec::new(),
        };
        let mut batch = Vec::new();
        let mut more = false;
        for kv in self
            .inner
            .engine
            .scan(ks.blobs, ScanRange::from(&start), Direction::Forward)?
        {
            let (key, value) = kv?;
            if batch.len() == limit {
                more = true;
                break;
            }
            let hash = Blake3Hash(
                key.as_slice()
                    .try_into()
                    .map_err(|_| Error::CorruptRecord {
                        what: "blob",
                        key: key.clone(),
                    })?,
            );
            batch.push((hash, BlobMeta::decode(&key, &value)?));
        }
        let mut report = VerifyReport::default();
        for (hash, meta) in &batch {
            report.checked += 1;
            let found = if meta.inline {
                self.inner
                    .engine
                    .get(ks.inline, &hash.0)?
                    .map(|bytes| (bytes.len() as u64, Blake3Hash::of(&bytes)))
            } else {
                match self.inner.backend.open_range(hash, 0, u64::MAX)? {
                    None => None,
                    Some(mut reader) => {
                        let mut hasher = blake3::Hasher::new();
                        let mut buf = vec![0u8; 256 * 1024];
                        let mut size = 0u64;
                        loop {
                            let n = reader
                                .read(&mut buf)
                                .map_err(|e| Error::io("reading blob", hash.to_hex(), e))?;
                            if n == 0 {
                                break;
                            }
                            hasher.update(&buf[..n]);
                            size += n as u64;
                        }
                        Some((size, Blake3Hash(*hasher.finalize().as_bytes())))
                    }
                }
            };
            match found {
                None => report.problems.push(BlobProblem::Missing { hash: *hash }),
                Some((size, actual)) if size != meta.size || actual != *hash => {
                    report.problems.push(BlobProblem::Corrupt {
                        hash: *hash,
                        size,
                        actual,
                    })
                }
                Some(_) => {}
            }
        }
        report.next = if more {
            batch.last().map(|(hash, _)| *hash)
        } else {
            None
        };
        Ok(report)
    }

    /// Recomputes every reference count, per-bucket blob count, bucket statistic and store
    /// statistic from the file records, checks the indexes, and reports every difference.
    /// Reads everything: for tests and repairs, not for serving.
    ///
    /// # Errors
    /// The engine's error.
    pub fn check(&self) -> Result<CheckReport> {
        let ks = self.inner.ks;
        let snap = self.inner.engine.snapshot()?;
        let view: &dyn ReadView = snap.as_ref();
        let mut report = CheckReport::default();
        let mut problem = |p: Inconsistency| report.problems.push(p);
        let mut refs: HashMap<Blake3Hash, i64> = HashMap::new();
        let mut bucket_blobs: HashMap<(String, Blake3Hash), i64> = HashMap::new();
        #[derive(Default)]
        struct Agg {
            files: i64,
            logical: i64,
            blobs: HashSet<Blake3Hash>,
        }
        let mut buckets: HashMap<String, Agg> = HashMap::new();
        let (mut files, mut logical) = (0i64, 0i64);
        let mut expiry_expected: HashSet<Vec<u8>> = HashSet::new();
        let mut digest_expected: Vec<(FileRecord, Vec<u8>)> = Vec::new();
        let mut file_count = 0u64;

        for kv in view.scan(ks.files, ScanRange::all(), Direction::Forward)? {
            let (key, value) = kv?;
            let id = FileId(decode_u64(&key).ok_or_else(|| Error::CorruptRecord {
                what: "file",
                key: key.clone(),
            })?);
            let record = FileRecord::decode(id, &key, &value)?;
            file_count += 1;
            files += 1;
            let agg = buckets
                .entry(record.bucket.as_str().to_string())
                .or_default();
            agg.files += 1;
            if view
                .get(ks.bucket_files, &keys::bucket_file(&record.bucket, id))?
                .is_none()
            {
                problem(Inconsistency::Record {
                    detail: format!("file {id} is missing from bucket {}", record.bucket),
                });
            }
            if record.content == ContentState::Present {
                agg.logical += as_i64(record.size);
                agg.blobs.insert(record.blake3);
                logical += as_i64(record.size);
                *refs.entry(record.blake3).or_default() += 1;
                *bucket_blobs
                    .entry((record.bucket.as_str().to_string(), record.blake3))
                    .or_default() += 1;
                if let Some(at) = record.expires {
                    expiry_expected.insert(keys::expiry(at, id));
                }
                let key = keys::digest_entry(
                    ALG_BLAKE3,
                    visibility_code(record.restricted),
                    &record.blake3.0,
                    id,
                );
                digest_expected.push((record, key));
            }
        }
        report.files = file_count;
        for (record, key) in &digest_expected {
            if view.get(ks.digests, key)?.is_none() {
                problem(Inconsistency::Record {
                    detail: format!("file {} is missing from the blake3 index", record.id),
                });
            }
        }

        let mut sizes: HashMap<Blake3Hash, u64> = HashMap::new();
        let mut zero_since: HashMap<Blake3Hash, Option<Timestamp>> = HashMap::new();
        let (mut blob_count, mut stored) = (0i64, 0i64);
        for kv in view.scan(ks.blobs, ScanRange::all(), Direction::Forward)? {
            let (key, value) = kv?;
            let meta = BlobMeta::decode(&key, &value)?;
            let hash = Blake3Hash(
                key.as_slice()
                    .try_into()
                    .map_err(|_| Error::CorruptRecord {
                        what: "blob",
                        key: key.clone(),
                    })?,
            );
            blob_count += 1;
            stored += as_i64(meta.size);
            sizes.insert(hash, meta.size);
            zero_since.insert(hash, meta.zero_since);
            let expected = refs.remove(&hash).unwrap_or(0);
            let found = view.counter(ks.refs, &hash.0)?;
            if found != expected {
                problem(Inconsistency::Counter {
                    name: format!("refcount of blob {hash}"),
                    expected,
                    found,
                });
            }
            match (expected, meta.zero_since) {
                (0, None) => problem(Inconsistency::Record {
                    detail: format!("blob {hash} has no reference but no zero-ref time"),
                }),
                (0, Some(since)) => {
                    if view
                        .get(ks.zero_refs, &keys::zero_ref(since, &hash))?
                        .is_none()
                    {
                        problem(Inconsistency::Record {
                            detail: format!("blob {hash} is missing from the zero-ref index"),
                        });
                    }
                }
                (_, Some(_)) => problem(Inconsistency::Record {
                    detail: format!("referenced blob {hash} has a zero-ref time"),
                }),
                (_, None) => {}
            }
            if meta.inline && view.get(ks.inline, &hash.0)?.is_none() {
                problem(Inconsistency::Record {
                    detail: format!("inline blob {hash} has no content"),
                });
            }
        }
        report.blobs = as_u64(blob_count);
        for (hash, count) in refs {
            problem(Inconsistency::Record {
                detail: format!("{count} file(s) link to blob {hash}, which has no record"),
            });
        }
        for kv in view.scan(ks.refs, ScanRange::all(), Direction::Forward)? {
            let (key, _) = kv?;
            let known = <[u8; 32]>::try_from(key.as_slice())
                .map(|h| sizes.contains_key(&Blake3Hash(h)))
                .unwrap_or(false);
            if !known {
                problem(Inconsistency::Record {
                    detail: format!("refcount without a blob at key {key:02x?}"),
                });
            }
        }
        for kv in view.scan(ks.zero_refs, ScanRange::all(), Direction::Forward)? {
            let (key, _) = kv?;
            let valid = keys::parse_zero_ref(&key)
                .is_some_and(|(since, hash)| zero_since.get(&hash) == Some(&Some(since)));
            if !valid {
                problem(Inconsistency::Record {
                    detail: format!(
                        "zero-ref entry that does not match its blob at key {key:02x?}"
                    ),
                });
            }
        }
        for kv in view.scan(ks.bucket_blobs, ScanRange::all(), Direction::Forward)? {
            let (key, value) = kv?;
            let found = engine::counter::decode(&value).unwrap_or(i64::MIN);
            match keys::parse_bucket_blob(&key) {
                Some(slot) => {
                    let expected = bucket_blobs.remove(&slot).unwrap_or(0);
                    if found != expected {
                        problem(Inconsistency::Counter {
                            name: format!("references of bucket {} to blob {}", slot.0, slot.1),
                            expected,
                            found,
                        });
                    }
                }
                None => problem(Inconsistency::Record {
                    detail: format!("malformed bucket-blob key {key:02x?}"),
                }),
            }
        }
        for ((bucket, hash), expected) in bucket_blobs {
            problem(Inconsistency::Counter {
                name: format!("references of bucket {bucket} to blob {hash}"),
                expected,
                found: 0,
            });
        }
        for kv in view.scan(ks.bucket_files, ScanRange::all(), Direction::Forward)? {
            let (key, _) = kv?;
            let valid = match keys::parse_bucket_file(&key) {
                Some((bucket, id)) => match view.get(ks.files, &keys::file(id))? {
                    Some(bytes) => FileRecord::decode(id, &key, &bytes)
                        .is_ok_and(|r| r.bucket.as_str() == bucket),
                    None => false,
                },
                None => false,
            };
            if !valid {
                problem(Inconsistency::Record {
                    detail: format!("bucket listing entry without its file at key {key:02x?}"),
                });
            }
        }
        for kv in view.scan(ks.expiry, ScanRange::all(), Direction::Forward)? {
            let (key, _) = kv?;
            if !expiry_expected.remove(&key) {
                problem(Inconsistency::Record {
                    detail: format!("stale expiry entry {key:02x?}"),
                });
            }
        }
        for key in expiry_expected {
            problem(Inconsistency::Record {
                detail: format!("missing expiry entry {key:02x?}"),
            });
        }
        // Bucket statistics: every bucket with records or with stored counters.
        let mut stat_buckets: HashSet<String> = buckets.keys().cloned().collect();
        for kv in view.scan(ks.stats, ScanRange::prefix(b"b"), Direction::Forward)? {
            let (key, _) = kv?;
            if let Some((bucket, _)) = keys::parse_bucket_stat(&key) {
                stat_buckets.insert(bucket);
            }
        }
        for bucket in stat_buckets {
            let agg = buckets.remove(&bucket).unwrap_or_default();
            let unique: i64 = agg
                .blobs
                .iter()
                .map(|h| as_i64(sizes.get(h).copied().unwrap_or(0)))
                .sum();
            let Ok(name) = BucketName::new(bucket.clone()) else {
                problem(Inconsistency::Record {
                    detail: format!("statistics for invalid bucket name {bucket:?}"),
                });
                continue;
            };
            for (field, label, expected) in [
                (keys::STAT_FILES, "files", agg.files),
                (keys::STAT_LOGICAL, "logical bytes", agg.logical),
                (keys::STAT_UNIQUE, "unique bytes", unique),
            ] {
                let found = view.counter(ks.stats, &keys::bucket_stat(&name, field))?;
                if found != expected {
                    problem(Inconsistency::Counter {
                        name: format!("{label} of bucket {bucket}"),
                        expected,
                        found,
                    });
                }
            }
        }
        for (field, label, expected) in [
            (keys::STAT_FILES, "files", files),
            (keys::STAT_LOGICAL, "logical bytes", logical),
            (keys::STAT_BLOBS, "blobs", blob_count),
            (keys::STAT_STORED, "stored bytes", stored),
        ] {
            let found = view.counter(ks.stats, &keys::global_stat(field))?;
            if found != expected {
                problem(Inconsistency::Counter {
                    name: format!("store {label}"),
                    expected,
                    found,
                });
            }
        }
        Ok(report)
    }

    /// Makes every acknowledged write durable, download counts gathered in memory included.
    ///
    /// # Errors
    /// The engine's error.
    pub fn flush(&self) -> Result<()> {
        self.flush_downloads()?;
        Ok(self.inner.engine.flush()?)
    }

    /// Forgets file `id` in the hot-file cache. Every change to a file record calls it after
    /// its batch is applied and before the change is acknowledged.
    fn invalidate_cached(&self, id: FileId) {
        if let Some(hot) = &self.inner.hot {
            hot.invalidate(id);
        }
    }
}
