//! The store: its shared state and the helpers every concern uses.
//!
//! Each concern has a file of its own, with its own `impl Store` block: opening
//! (`builder`), the on-disk format and its upgrade (`format`), uploads (`upload`), reads
//! (`read`), lookups by digest (`lookup`), changes to one file (`files`), buckets
//! (`buckets`), garbage collection (`gc`) and the scrub and consistency check (`audit`).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::WriteBatch;
use engine::{
    Appended, ChangeLog, Direction, Durability, Engine, GroupCommit, Keyspace, LogEntry, ScanRange,
};

use crate::backend::BlobBackend;
use crate::changes::{self, Change};
use crate::downloads::PendingDownloads;
use crate::error::{Error, Result};
use crate::hot::HotCache;
use crate::keys;
use crate::locks::{SharedStripes, Stripes};
use crate::records::{BlobMeta, ContentState, FileRecord};
use crate::token::TokenSigner;
use crate::types::{Blake3Hash, BucketName, FileId, Timestamp};
use engine::Clock;

mod append;
mod audit;
mod backup;
mod buckets;
mod builder;
mod feed;
mod files;
mod follow;
mod format;
mod gc;
mod idempotency;
mod lookup;
mod read;
mod replay;
mod resumable;
mod scrub;
mod upload;
mod usage;

pub use audit::{BlobProblem, CheckReport, Inconsistency, VerifyReport};
pub use backup::BackupReport;
pub use buckets::{BucketStats, Page, StoreSummary};
pub use builder::{StoreBuilder, DEFAULT_CHANGE_RETENTION};
pub use files::FileUpdate;
pub use files::Revised;
pub use format::STORE_FORMAT;
pub use gc::{GcReport, SweepReport};
pub use idempotency::{IDEMPOTENCY_WINDOW, MAX_IDEMPOTENCY_KEY};
pub use read::{Access, ContentReader, Visibility};
pub use resumable::Patched;
pub use scrub::{ScrubFinding, ScrubPass, ScrubReport, ScrubState, ScrubStep, SCRUB_ACTOR};
pub use upload::{Upload, UploadRequest, Uploaded};
pub use usage::{DownloadSummary, MAX_USAGE_DAYS};

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

/// Store format 1's key of BLAKE3 digests in `bs.digests` (`bs.blob_files` answers them now).
const ALG_BLAKE3: u8 = 0;
const ALG_SHA256: u8 = 1;
const ALG_SHA1: u8 = 2;
const ALG_MD5: u8 = 3;

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The file id of a `bs.blob_files` key.
fn blob_file_id(key: &[u8]) -> Result<FileId> {
    keys::blob_file_id(key).ok_or_else(|| Error::CorruptRecord {
        what: "blob-file index",
        key: key.to_vec(),
    })
}

#[derive(Clone, Copy, Debug)]
struct Keyspaces {
    blobs: Keyspace,
    inline: Keyspace,
    refs: Keyspace,
    files: Keyspace,
    bucket_files: Keyspace,
    blob_files: Keyspace,
    bucket_blobs: Keyspace,
    stats: Keyspace,
    buckets: Keyspace,
    digests: Keyspace,
    zero_refs: Keyspace,
    expiry: Keyspace,
    downloads: Keyspace,
    meta: Keyspace,
    history: Keyspace,
    consumers: Keyspace,
    uploads: Keyspace,
}

impl Keyspaces {
    fn resolve(engine: &dyn Engine) -> Result<Self> {
        Ok(Keyspaces {
            blobs: engine.keyspace(keys::BLOBS)?,
            inline: engine.keyspace(keys::INLINE)?,
            refs: engine.keyspace(keys::REFS)?,
            files: engine.keyspace(keys::FILES)?,
            bucket_files: engine.keyspace(keys::BUCKET_FILES)?,
            blob_files: engine.keyspace(keys::BLOB_FILES)?,
            bucket_blobs: engine.keyspace(keys::BUCKET_BLOBS)?,
            stats: engine.keyspace(keys::STATS)?,
            buckets: engine.keyspace(keys::BUCKETS)?,
            digests: engine.keyspace(keys::DIGESTS)?,
            zero_refs: engine.keyspace(keys::ZERO_REFS)?,
            expiry: engine.keyspace(keys::EXPIRY)?,
            downloads: engine.keyspace(keys::DOWNLOADS)?,
            meta: engine.keyspace(keys::META)?,
            history: engine.keyspace(keys::HISTORY)?,
            consumers: engine.keyspace(keys::CONSUMERS)?,
            uploads: engine.keyspace(keys::UPLOADS)?,
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
    committer: Arc<GroupCommit>,
    /// The change feed: every write appends its events in its own batch.
    log: Arc<ChangeLog>,
    /// Whether writes record events (off only to measure what the feed costs).
    feed: bool,
    /// How long events are kept before the GC prunes them.
    change_retention: Duration,
    blob_locks: Stripes,
    /// Shared by every removal of blob bytes, exclusive for a backup from its checkpoint
    /// until it has copied the blob files the checkpoint names (`backup.rs`).
    blob_deletions: std::sync::RwLock<()>,
    /// Per (bucket, blob): the bucket's first and last link to a blob (unique bytes).
    pair_locks: Stripes,
    /// Per bucket: the quota (shared by uploads into a bucket without a quota; exclusive for
    /// uploads into a bucket with one, and for `set_quota`).
    bucket_locks: SharedStripes,
    /// Per (actor, idempotency key): an upload's check of its key and the batch recording
    /// it. Taken before the blob lock.
    idempotency_locks: Stripes,
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
    /// Where resumable uploads keep their bytes until finished (`data_dir/uploads`).
    uploads_dir: std::path::PathBuf,
    /// The resumable uploads being appended to, with the digests of their prefix.
    sessions: resumable::Sessions,
    /// Held by a scrub step: one at a time, so that the durable position only moves forward.
    scrub: Mutex<()>,
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
        let counts = self.downloads.take(Timestamp::from_clock(&*self.clock));
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
        for ((((id, day), n), record), key) in counts.iter().zip(exists).zip(&file_keys) {
            let Some(record) = record else { continue };
            let n = as_i64(*n);
            batch.counter_add(self.ks.downloads, keys::download(*id, *day), n);
            // The file's total, and the bucket's count of the day (usage statistics).
            batch.counter_add(self.ks.downloads, keys::download(*id, keys::TOTAL_DAY), n);
            if let Ok(record) = FileRecord::decode(*id, key, &record) {
                batch.counter_add(
                    self.ks.stats,
                    keys::bucket_downloads(record.bucket.as_str(), *day),
                    n,
                );
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
        Timestamp::from_clock(&*self.inner.clock)
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

    fn blob_meta(&self, hash: &Blake3Hash) -> Result<Option<BlobMeta>> {
        match self.inner.engine.get(self.inner.ks.blobs, &hash.0)? {
            Some(bytes) => Ok(Some(BlobMeta::decode(&hash.0, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The files linking to blob `hash`: the count in its record, or for a record of version 1
    /// the `bs.refs` counter (zero once the blob waits for the GC, as that version kept it).
    fn refcount(&self, hash: &Blake3Hash, meta: &BlobMeta) -> Result<u64> {
        match (meta.refs, meta.zero_since) {
            (Some(refs), _) => Ok(refs),
            (None, Some(_)) => Ok(0),
            (None, None) => Ok(as_u64(self.counter(self.inner.ks.refs, &hash.0)?)),
        }
    }

    /// Adds to `batch` blob `hash`'s record `meta` with `refs` links. A record read in version
    /// 1 is written in the current version and its `bs.refs` counter removed in the same
    /// batch: the lazy migration. The caller holds the blob lock.
    fn put_blob(&self, batch: &mut WriteBatch, hash: &Blake3Hash, meta: &BlobMeta, refs: u64) {
        let ks = self.inner.ks;
        if meta.refs.is_none() {
            batch.delete(ks.refs, hash.0);
        }
        let current = BlobMeta {
            refs: Some(refs),
            ..meta.clone()
        };
        batch.put(ks.blobs, hash.0, current.encode());
    }

    /// Rewrites blob `hash`'s record as a build before 2026-12-06 left it: version 1, its count
    /// in `bs.refs`. For the tests of the lazy migration.
    ///
    /// Returns the count moved to the counter, or `None` when the blob is not stored.
    ///
    /// # Errors
    /// The engine's error.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn write_blob_record_of_version_1(&self, hash: &Blake3Hash) -> Result<Option<u64>> {
        let ks = self.inner.ks;
        let _guard = self.inner.blob_locks.lock(&hash.0);
        let Some(meta) = self.blob_meta(hash)? else {
            return Ok(None);
        };
        let refs = self.refcount(hash, &meta)?;
        let mut batch = WriteBatch::new();
        batch.put(ks.blobs, hash.0, BlobMeta { refs: None, ..meta }.encode());
        batch.delete(ks.refs, hash.0);
        batch.counter_add(ks.refs, hash.0, as_i64(refs));
        self.inner.committer.commit(batch)?;
        Ok(Some(refs))
    }

    fn counter(&self, keyspace: Keyspace, key: &[u8]) -> Result<i64> {
        Ok(self.inner.engine.counter(keyspace, key)?)
    }

    /// Whether a file of `bucket` other than `except` links to blob `hash`: whether an upload
    /// is the bucket's first link to the blob, or an unlink its last. The caller holds the
    /// lock of the pair.
    fn bucket_links_blob(
        &self,
        hash: &Blake3Hash,
        bucket: &BucketName,
        except: Option<FileId>,
    ) -> Result<bool> {
        let prefix = keys::blob_files_in_bucket(hash, bucket);
        for kv in self.inner.engine.scan(
            self.inner.ks.blob_files,
            ScanRange::prefix(&prefix),
            Direction::Forward,
        )? {
            let (key, _) = kv?;
            let id = blob_file_id(&key)?;
            if Some(id) != except && self.links(id, hash)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether file `id` links to blob `hash`: a `bs.blob_files` entry names a blob by its
    /// fingerprint only.
    fn links(&self, id: FileId, hash: &Blake3Hash) -> Result<bool> {
        match self.file(id) {
            Ok(record) => Ok(record.blake3 == *hash && record.content == ContentState::Present),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Adds to `batch` file `id`'s entry among blob `hash`'s files.
    fn put_blob_file(
        &self,
        batch: &mut WriteBatch,
        hash: &Blake3Hash,
        bucket: &BucketName,
        id: FileId,
        restricted: bool,
    ) {
        let key = keys::blob_file(hash, bucket.as_str(), id);
        batch.put(self.inner.ks.blob_files, key, [visibility_code(restricted)]);
    }

    /// The `bs.digests` entries of file `id` (by BLAKE3 it is found in `bs.blob_files`).
    fn digest_keys(meta: &BlobMeta, restricted: bool, id: FileId) -> Vec<Vec<u8>> {
        let vis = visibility_code(restricted);
        let mut out = vec![keys::digest_entry(ALG_SHA256, vis, &meta.sha256, id)];
        if let Some(d) = &meta.sha1 {
            out.push(keys::digest_entry(ALG_SHA1, vis, d, id));
        }
        if let Some(d) = &meta.md5 {
            out.push(keys::digest_entry(ALG_MD5, vis, d, id));
        }
        out
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

    /// Adds `changes` to `batch` as events of the change feed and writes it buffered (under
    /// the caller's locks), all under the log's sequencer: revision order is log order. With
    /// the feed off, only the batch is written.
    fn append(&self, batch: WriteBatch, changes: &[Change]) -> Result<Appended> {
        let entries = if self.inner.feed {
            changes
                .iter()
                .map(|change| self.log_entry(change))
                .collect()
        } else {
            Vec::new()
        };
        Ok(self.inner.log.append(batch, entries)?)
    }

    /// Waits (after the caller released its locks) for a group sync covering `appended`, and
    /// returns the revision of its last event (or the head, when it had none).
    fn sync(&self, appended: Appended) -> Result<u64> {
        Ok(self.inner.log.sync(appended)?)
    }

    fn log_entry(&self, change: &Change) -> LogEntry {
        let history = self.inner.ks.history;
        let payload = crate::event_codec::encode(change);
        let mut entry =
            LogEntry::new(payload).index(history, changes::actor_history(&change.actor));
        if let Some(bucket) = change.kind.bucket() {
            entry = entry.index(history, changes::bucket_history(bucket));
        }
        if let Some(file) = change.kind.file() {
            entry = entry.index(history, changes::file_history(file));
        }
        entry
    }
}
