//! The key layout of every keyspace (see `DESIGN.md`).

use engine::keys::{KeyBuilder, KeyReader};

use crate::types::{Blake3Hash, BucketName, Day, FileId, Timestamp};

/// `blake3` → blob metadata.
pub(crate) const BLOBS: &str = "bs.blobs";
/// `blake3` → the content of an inline blob.
pub(crate) const INLINE: &str = "bs.inline";
/// `blake3` → counter: the number of files linking to the blob.
pub(crate) const REFS: &str = "bs.refs";
/// `file id` → file record.
pub(crate) const FILES: &str = "bs.files";
/// `bucket (escaped) ‖ file id` → empty: a bucket's files in id order.
pub(crate) const BUCKET_FILES: &str = "bs.bucket_files";
/// `blake3 fingerprint ‖ bucket (escaped) ‖ file id` → one byte, the file's visibility: the
/// files linking to each blob, by bucket. It answers lookups by BLAKE3 and whether a bucket
/// already holds (or still holds) a blob, for its unique-bytes statistic.
pub(crate) const BLOB_FILES: &str = "bs.blob_files";
/// Store format 1 only (`store/format.rs` empties it): `bucket (escaped) ‖ blake3` → counter,
/// the bucket's files linking to the blob; `bs.blob_files` answers this now.
pub(crate) const BUCKET_BLOBS: &str = "bs.bucket_blobs";
/// Counters: `'g' ‖ field` store-wide, `'b' ‖ bucket (escaped) ‖ field` per bucket.
pub(crate) const STATS: &str = "bs.stats";
/// `bucket` → bucket settings (the quota).
pub(crate) const BUCKETS: &str = "bs.buckets";
/// `algorithm ‖ visibility ‖ digest fingerprint ‖ file id` → empty: files by SHA-256, SHA-1 or
/// MD5 (store format 1: the whole digest, and BLAKE3 too, which `bs.blob_files` answers now).
pub(crate) const DIGESTS: &str = "bs.digests";
/// `zero-ref time (ordered i64) ‖ blake3` → empty: blobs waiting for GC.
pub(crate) const ZERO_REFS: &str = "bs.zero_refs";
/// `expiry time (ordered i64) ‖ file id` → empty: files waiting to expire.
pub(crate) const EXPIRY: &str = "bs.expiry";
/// `file id ‖ day (u32)` → counter: downloads per file per day.
pub(crate) const DOWNLOADS: &str = "bs.downloads";
/// Store-level values: the file-id high-water mark, the scrub's state and findings.
pub(crate) const META: &str = "bs.meta";
/// `revision` (u64) → an event of the change feed (`engine::ChangeLog`).
pub(crate) const CHANGES: &str = "bs.changes";
/// `'f' ‖ file id ‖ revision`, `'b' ‖ bucket (escaped) ‖ revision`, `'a' ‖ actor (escaped) ‖
/// revision` → empty: the history indexes of the change feed.
pub(crate) const HISTORY: &str = "bs.history";
/// `consumer id` → a durable subscription of the change feed (`engine::Consumers`).
pub(crate) const CONSUMERS: &str = "bs.consumers";

/// `'u' ‖ upload id` → a resumable upload's record; `'d' ‖ deadline (ordered i64) ‖ upload
/// id` → empty: resumable uploads by deadline, for GC.
pub(crate) const UPLOADS: &str = "bs.uploads";

/// Every keyspace the store uses: open the engine with these when passing it to
/// [`crate::StoreBuilder::with_engine`].
pub const KEYSPACES: &[&str] = &[
    BLOBS,
    INLINE,
    REFS,
    FILES,
    BUCKET_FILES,
    BLOB_FILES,
    BUCKET_BLOBS,
    STATS,
    BUCKETS,
    DIGESTS,
    ZERO_REFS,
    EXPIRY,
    DOWNLOADS,
    META,
    CHANGES,
    HISTORY,
    CONSUMERS,
    UPLOADS,
];

pub(crate) const META_ID_HIGH_WATER: &[u8] = b"next_file_id";
/// The store format (`store/format.rs`), a `u32`; absent in format 1.
pub(crate) const META_FORMAT: &[u8] = b"format";
/// The online scrub's position and passes (`store/scrub.rs`).
pub(crate) const META_SCRUB_STATE: &[u8] = b"scrub.state";
/// `META_SCRUB_FINDING ‖ blake3` → a blob the scrub found damaged.
pub(crate) const META_SCRUB_FINDING: &[u8] = b"scrub.finding/";

pub(crate) const STAT_FILES: u8 = 1;
pub(crate) const STAT_LOGICAL: u8 = 2;
pub(crate) const STAT_UNIQUE: u8 = 3;
pub(crate) const STAT_BLOBS: u8 = 4;
pub(crate) const STAT_STORED: u8 = 5;

pub(crate) fn file(id: FileId) -> [u8; 8] {
    id.0.to_be_bytes()
}

pub(crate) fn history_file(id: FileId) -> Vec<u8> {
    KeyBuilder::new().u8(b'f').u64(id.0).finish()
}

pub(crate) fn history_bucket(bucket: &str) -> Vec<u8> {
    KeyBuilder::new().u8(b'b').str(bucket).finish()
}

pub(crate) fn history_actor(actor: &str) -> Vec<u8> {
    KeyBuilder::new().u8(b'a').str(actor).finish()
}

pub(crate) fn bucket_prefix(bucket: &BucketName) -> Vec<u8> {
    KeyBuilder::new().str(bucket.as_str()).finish()
}

pub(crate) fn bucket_file(bucket: &BucketName, id: FileId) -> Vec<u8> {
    KeyBuilder::new().str(bucket.as_str()).u64(id.0).finish()
}

/// A store format 1 `bs.bucket_blobs` key, for the tests of the upgrade.
#[cfg(feature = "testing")]
pub(crate) fn bucket_blob(bucket: &str, hash: &Blake3Hash) -> Vec<u8> {
    KeyBuilder::new().str(bucket).raw(&hash.0).finish()
}

/// The `bs.blob_files` entry of file `id`, in `bucket`, linking to blob `hash`.
pub(crate) fn blob_file(hash: &Blake3Hash, bucket: &str, id: FileId) -> Vec<u8> {
    KeyBuilder::new()
        .raw(fingerprint(&hash.0))
        .str(bucket)
        .u64(id.0)
        .finish()
}

/// The prefix of the `bs.blob_files` entries of the files linking to blob `hash` (and to any
/// other blob with its fingerprint).
pub(crate) fn blob_files_of(hash: &Blake3Hash) -> &[u8] {
    fingerprint(&hash.0)
}

/// The same, in `bucket` only.
pub(crate) fn blob_files_in_bucket(hash: &Blake3Hash, bucket: &BucketName) -> Vec<u8> {
    KeyBuilder::new()
        .raw(fingerprint(&hash.0))
        .str(bucket.as_str())
        .finish()
}

/// The file id of a `bs.blob_files` key.
pub(crate) fn blob_file_id(key: &[u8]) -> Option<FileId> {
    let mut r = KeyReader::new(key);
    r.raw(FINGERPRINT)?;
    r.string()?;
    let id = FileId(r.u64()?);
    r.is_empty().then_some(id)
}

/// Splits a `bucket_files` key.
pub(crate) fn parse_bucket_file(key: &[u8]) -> Option<(String, FileId)> {
    let mut r = KeyReader::new(key);
    let bucket = r.string()?;
    let id = FileId(r.u64()?);
    r.is_empty().then_some((bucket, id))
}

pub(crate) fn global_stat(field: u8) -> [u8; 2] {
    [b'g', field]
}

pub(crate) fn bucket_stat(bucket: &BucketName, field: u8) -> Vec<u8> {
    KeyBuilder::new()
        .u8(b'b')
        .str(bucket.as_str())
        .u8(field)
        .finish()
}

/// Splits a per-bucket stats key into the bucket and the field.
pub(crate) fn parse_bucket_stat(key: &[u8]) -> Option<(String, u8)> {
    let mut r = KeyReader::new(key);
    if r.u8()? != b'b' {
        return None;
    }
    let bucket = r.string()?;
    let field = r.u8()?;
    r.is_empty().then_some((bucket, field))
}

/// The bytes of a digest that the indexes keep (`bs.digests`, `bs.blob_files`): a fingerprint
/// that finds the candidates, each then checked against the whole digest in its records
/// (DESIGN.md, "Digest fingerprints").
pub(crate) const FINGERPRINT: usize = 8;

fn fingerprint(digest: &[u8]) -> &[u8] {
    &digest[..FINGERPRINT.min(digest.len())]
}

pub(crate) const VIS_PUBLIC: u8 = 0;
pub(crate) const VIS_RESTRICTED: u8 = 1;

/// The prefix of the `bs.digests` entries of the files of `visibility` whose digest by
/// `algorithm` starts like `digest`.
pub(crate) fn digest_prefix(algorithm: u8, visibility: u8, digest: &[u8]) -> Vec<u8> {
    KeyBuilder::new()
        .u8(algorithm)
        .u8(visibility)
        .raw(fingerprint(digest))
        .finish()
}

/// A store format 1 `bs.digests` key (the whole digest), for the upgrade's tests.
#[cfg(feature = "testing")]
pub(crate) fn digest_entry_of_format_1(
    algorithm: u8,
    visibility: u8,
    digest: &[u8],
    id: FileId,
) -> Vec<u8> {
    KeyBuilder::new()
        .u8(algorithm)
        .u8(visibility)
        .raw(digest)
        .u64(id.0)
        .finish()
}

pub(crate) fn digest_entry(algorithm: u8, visibility: u8, digest: &[u8], id: FileId) -> Vec<u8> {
    let mut key = digest_prefix(algorithm, visibility, digest);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

pub(crate) fn zero_ref(since: Timestamp, hash: &Blake3Hash) -> Vec<u8> {
    KeyBuilder::new().i64(since.0).raw(&hash.0).finish()
}

pub(crate) fn parse_zero_ref(key: &[u8]) -> Option<(Timestamp, Blake3Hash)> {
    let mut r = KeyReader::new(key);
    let since = Timestamp(r.i64()?);
    let hash = Blake3Hash(r.raw(32)?.try_into().ok()?);
    r.is_empty().then_some((since, hash))
}

pub(crate) fn time_bound(t: Timestamp) -> Vec<u8> {
    KeyBuilder::new().i64(t.0).finish()
}

pub(crate) fn expiry(at: Timestamp, id: FileId) -> Vec<u8> {
    KeyBuilder::new().i64(at.0).u64(id.0).finish()
}

pub(crate) fn parse_expiry(key: &[u8]) -> Option<(Timestamp, FileId)> {
    let mut r = KeyReader::new(key);
    let at = Timestamp(r.i64()?);
    let id = FileId(r.u64()?);
    r.is_empty().then_some((at, id))
}

/// The day of a file's download counter that holds its total (no real day is this late).
pub(crate) const TOTAL_DAY: Day = Day(u32::MAX);

/// `'d' ‖ bucket ‖ day` in `bs.stats`: counter of the bucket's downloads that day.
pub(crate) fn bucket_downloads(bucket: &str, day: Day) -> Vec<u8> {
    KeyBuilder::new().u8(b'd').str(bucket).u32(day.0).finish()
}

pub(crate) fn download(id: FileId, day: Day) -> Vec<u8> {
    KeyBuilder::new().u64(id.0).u32(day.0).finish()
}

pub(crate) fn upload(id: &crate::UploadId) -> Vec<u8> {
    KeyBuilder::new().u8(b'u').raw(&id.0).finish()
}

pub(crate) fn upload_deadline(at: Timestamp, id: &crate::UploadId) -> Vec<u8> {
    KeyBuilder::new().u8(b'd').i64(at.0).raw(&id.0).finish()
}

pub(crate) fn upload_deadline_bound(at: Timestamp) -> Vec<u8> {
    KeyBuilder::new().u8(b'd').i64(at.0).finish()
}

pub(crate) fn parse_upload_deadline(key: &[u8]) -> Option<(Timestamp, crate::UploadId)> {
    let mut r = KeyReader::new(key);
    if r.u8()? != b'd' {
        return None;
    }
    let at = Timestamp(r.i64()?);
    let id = crate::UploadId(r.raw(16)?.try_into().ok()?);
    r.is_empty().then_some((at, id))
}
