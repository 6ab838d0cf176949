//! The store's error type.

use std::path::PathBuf;

use crate::types::{Blake3Hash, BucketName, FileId};

/// The boxed cause of a blob backend error that is not an I/O error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in the blob store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No file has this id.
    #[error("file {id} does not exist")]
    NotFound {
        /// The id asked for.
        id: FileId,
    },
    /// The file exists but its content was deleted or expired (HTTP 410).
    #[error("the content of file {id} is gone ({reason})")]
    ContentGone {
        /// The file.
        id: FileId,
        /// Why: "deleted" or "expired".
        reason: &'static str,
    },
    /// The upload would take the bucket past its quota on logical bytes.
    #[error(
        "bucket {bucket} is over quota: {used} bytes used + {requested} requested > {quota} allowed"
    )]
    QuotaExceeded {
        /// The bucket.
        bucket: BucketName,
        /// The quota in logical bytes.
        quota: u64,
        /// The logical bytes already used.
        used: u64,
        /// The size of the upload.
        requested: u64,
    },
    /// The content does not have the digest the client announced; nothing was stored.
    #[error("{algorithm} digest mismatch: expected {expected}, content has {actual}")]
    DigestMismatch {
        /// "blake3" or "sha256".
        algorithm: &'static str,
        /// The announced digest, hex.
        expected: String,
        /// The content's digest, hex.
        actual: String,
    },
    /// A filename that the store does not accept.
    #[error("invalid filename {filename:?}: {reason}")]
    InvalidFilename {
        /// The filename (possibly truncated to 300 bytes for display).
        filename: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A bucket name that the store does not accept.
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName {
        /// The name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A hex digest or id that does not parse.
    #[error("cannot parse {what} from {input:?}")]
    Parse {
        /// What was parsed: "blake3 hash", "file id", ...
        what: &'static str,
        /// The input (truncated to 100 bytes).
        input: String,
    },
    /// A byte range outside the content.
    #[error("byte range {start}..{end} is not within the {size} bytes of file {id}")]
    InvalidRange {
        /// The file.
        id: FileId,
        /// First byte asked for.
        start: u64,
        /// End of the range asked for (exclusive).
        end: u64,
        /// The content's size.
        size: u64,
    },
    /// A restricted file was read without a valid token.
    #[error("file {id} is restricted: {reason}")]
    Forbidden {
        /// The file.
        id: FileId,
        /// Why the token was not accepted.
        reason: crate::token::TokenError,
    },
    /// Stored bytes do not match their hash, or are missing.
    #[error("blob {hash} is corrupt: {detail}")]
    Corrupt {
        /// The blob.
        hash: Blake3Hash,
        /// What is wrong.
        detail: String,
    },
    /// The disk is full; nothing half-written became visible.
    #[error("no space left on device while {operation} {path}")]
    DiskFull {
        /// What the store was doing.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
    },
    /// An I/O error on a file of the store.
    #[error("I/O error while {operation} {path}: {source}")]
    Io {
        /// What the store was doing ("writing", "fsyncing", "renaming", ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blob backend that is not a local filesystem failed.
    #[error("blob backend {backend} failed to {operation}: {source}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What it was doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A metadata record that cannot be decoded.
    #[error("corrupt {what} record at key {key:02x?}")]
    CorruptRecord {
        /// Which kind of record.
        what: &'static str,
        /// Its key.
        key: Vec<u8>,
    },
    /// An event of the change feed in an encoding this build does not know: written by a
    /// newer build (its first byte is the layout's version). Run that build, or a later one.
    #[error("change-feed event {revision} is in encoding version {version}, which this build cannot read (written by a newer build)")]
    UnknownEventEncoding {
        /// The event's revision.
        revision: u64,
        /// The version byte found.
        version: u8,
    },
    /// The store is in another on-disk format than this build writes (`store/format.rs`).
    #[error(
        "the store is in format {found}, this build writes format {}: {reason}",
        crate::store::STORE_FORMAT
    )]
    StoreFormat {
        /// The store's format.
        found: u32,
        /// What to do.
        reason: &'static str,
    },
    /// An earlier fsync of blob bytes failed, so the store refuses writes until reopened.
    #[error("the store refuses writes after an earlier failure: {cause}")]
    Poisoned {
        /// The failure that poisoned the store.
        cause: String,
    },
    /// A read of the change feed was refused: its events after the revision asked for were
    /// pruned ([`engine::FeedError::Compacted`], HTTP 410), or the revision is newer than the
    /// newest one ([`engine::FeedError::BeyondHead`]).
    #[error(transparent)]
    Feed(#[from] engine::FeedError),
    /// A replayed change does not fit the store's state ([`crate::Store::apply_change`]).
    #[error("change {revision} cannot be replayed: {reason}")]
    Replay {
        /// The change's revision in its source store.
        revision: u64,
        /// Why.
        reason: &'static str,
    },
    /// The bytes of a blob that a replayed change needs are not available.
    #[error("the content of blob {hash} is not available")]
    ContentUnavailable {
        /// The blob.
        hash: Blake3Hash,
    },
    /// No resumable upload has this id (never created, terminated, or removed by GC).
    #[error("resumable upload {id} does not exist")]
    UploadNotFound {
        /// The id asked for.
        id: crate::UploadId,
    },
    /// The resumable upload's deadline passed; GC will remove it (HTTP 410).
    #[error("resumable upload {id} expired")]
    UploadExpired {
        /// The upload.
        id: crate::UploadId,
    },
    /// An append did not start where the upload is (tus: 409).
    #[error("resumable upload {id} is at offset {offset}, not {requested}")]
    OffsetMismatch {
        /// The upload.
        id: crate::UploadId,
        /// Its offset.
        offset: u64,
        /// The offset the append gave.
        requested: u64,
    },
    /// An append would go past the upload's announced length (tus: 413); nothing appended.
    #[error("resumable upload {id} is {length} bytes long; the append goes past it")]
    PastLength {
        /// The upload.
        id: crate::UploadId,
        /// Its announced length.
        length: u64,
    },
    /// An append's bytes do not have the checksum the client announced (tus: 460); nothing
    /// appended.
    #[error("the {algorithm} checksum of the appended bytes does not match")]
    ChecksumMismatch {
        /// The algorithm.
        algorithm: &'static str,
    },
    /// Another append to the same resumable upload is running (tus: 423).
    #[error("resumable upload {id} is being appended to")]
    UploadBusy {
        /// The upload.
        id: crate::UploadId,
    },
    /// An idempotency key that the store does not accept (HTTP 400).
    #[error("invalid idempotency key: {reason}")]
    InvalidIdempotencyKey {
        /// Why.
        reason: &'static str,
    },
    /// The idempotency key was used within its window for other content (HTTP 422).
    #[error("idempotency key {key:?} was used for other content")]
    IdempotencyConflict {
        /// The key (truncated to 100 characters).
        key: String,
    },
    /// A range of days for usage statistics that is reversed or too long (HTTP 400).
    #[error("invalid range of days: {reason}")]
    InvalidDayRange {
        /// Why.
        reason: &'static str,
    },
    /// The metadata engine failed.
    #[error(transparent)]
    Engine(#[from] engine::Error),
}

impl Error {
    /// An I/O error with its path, turned into [`Error::DiskFull`] when the disk is full.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
            || source.kind() == std::io::ErrorKind::StorageFull
        {
            Error::DiskFull { operation, path }
        } else {
            Error::Io {
                operation,
                path,
                source,
            }
        }
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
