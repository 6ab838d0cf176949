//! A content-addressed blob store: the librarian's data layer.
//!
//! Content is stored once per BLAKE3 hash (deduplicated at upload), small blobs inline in the
//! metadata [`engine`], larger ones through a [`BlobBackend`] (the local filesystem by
//! default). Users address *files*: a stable [`FileId`], a bucket, a filename, a content type,
//! an optional expiry and a restricted flag, linked to a blob by a link that can be cut
//! (the record stays, reads say the content is gone). Buckets keep exact statistics updated
//! in the same atomic batch as each change, an optional quota, and a paginated listing.
//! Unreferenced blobs are collected after a grace period, in bounded batches, from an index
//! keyed by time. Restricted files are read with stateless tokens. `DESIGN.md` describes the
//! key layout, the invariants, the fsync order and the GC rules.
//!
//! ```
//! use std::io::{Read, Write};
//! use blobstore::{Access, BucketName, StoreBuilder, UploadRequest};
//! use engine::EngineConfig;
//!
//! # fn main() -> Result<(), blobstore::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = StoreBuilder::new(EngineConfig::memory(), dir.path()).open()?;
//! let bucket = BucketName::new("build-logs")?;
//!
//! let mut upload = store.begin_upload(UploadRequest::new(bucket.clone(), "log.txt"), "alice")?;
//! upload.write_all(b"hello, ").unwrap();
//! upload.write_all(b"world").unwrap();
//! let file = upload.commit()?.record;
//!
//! let mut content = String::new();
//! store.read(file.id, Access::Anonymous, None)?.read_to_string(&mut content).unwrap();
//! assert_eq!(content, "hello, world");
//! assert_eq!(store.bucket_stats(&bucket)?.logical_bytes, 12);
//! # Ok(())
//! # }
//! ```

mod backend;
mod changes;
mod direct_io;
mod downloads;
mod error;
mod event_codec;
mod hashing;
mod hot;
mod keys;
mod locks;
mod records;
mod resumable;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
mod types;
mod writer;

pub use backend::{is_tmpfs, BlobBackend, LocalFsBackend, StoredBlob, TempBlob};
pub use changes::{Change, ChangeKind, CHANGE_KINDS, GC_ACTOR};
pub use downloads::DOWNLOADS_FLUSH_INTERVAL;
pub use engine::{Clock, ManualClock, SystemClock};
pub use error::{BoxError, Error, Result};
pub use hot::SmallFile;
pub use keys::KEYSPACES;
pub use records::{BlobInfo, ContentState, FileRecord};
pub use resumable::{
    Checksum, ChecksumAlgorithm, ResumableUpload, UploadId, DEFAULT_UPLOAD_LIFETIME,
};
pub use store::{
    Access, BackupReport, BlobProblem, BucketStats, CheckReport, ContentReader, DownloadSummary,
    FileUpdate, GcReport, Inconsistency, Page, Patched, Revised, ScrubFinding, ScrubPass,
    ScrubReport, ScrubState, ScrubStep, Store, StoreBuilder, StoreSummary, SweepReport, Upload,
    UploadRequest, Uploaded, VerifyReport, Visibility, CHUNK_SIZE, DEFAULT_CHANGE_RETENTION,
    DEFAULT_EXPIRY_GRACE, DEFAULT_GRACE, DEFAULT_HOT_CACHE_BYTES, DEFAULT_INLINE_THRESHOLD,
    IDEMPOTENCY_WINDOW, MAX_IDEMPOTENCY_KEY, MAX_USAGE_DAYS, SCRUB_ACTOR, STORE_FORMAT,
};
pub use token::{Token, TokenError, TokenSigner, DEFAULT_TOKEN_LIFETIME};
pub use types::{
    to_hex, validate_filename, Blake3Hash, BucketName, Day, Digest, FileId, Timestamp,
    MAX_FILENAME_LEN,
};
