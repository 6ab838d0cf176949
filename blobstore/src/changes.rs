//! The store's change events: what the change feed, the history indexes and replication see.
//!
//! Every write of the store appends its [`Change`] to the store's [`engine::ChangeLog`] in the
//! same engine batch as the change itself (see `DESIGN.md`, "Change feed"). An event is stored
//! as the JSON of a [`Change`] without its revision (the log's key is the revision), so the
//! stored form and the form served over HTTP are the same text.

use serde::{Deserialize, Serialize};

use crate::keys;
use crate::records::FileRecord;
use crate::types::{Blake3Hash, BucketName, FileId, Timestamp};

/// The actor the garbage collector records its changes under.
pub const GC_ACTOR: &str = "gc";

/// One change of the store, as recorded in its change feed.
///
/// Serialised as one flat JSON object: `revision`, `time_us`, `actor`, `kind` and the kind's
/// fields, for example
/// `{"revision":7,"time_us":1700000000000000,"actor":"alice","kind":"file.deleted","bucket":"logs","file":3,"size":12,"blake3":"…"}`.
/// Times inside a kind (`expires`, `before`, `after` of an expiry) are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Its revision: strictly increasing per store, with no gap a reader can observe. Not part
    /// of the stored payload (the log's key holds it), hence skipped when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// When the change was made, in microseconds since the Unix epoch (the store's clock).
    pub time_us: i64,
    /// Who made it: the authenticated user, or [`GC_ACTOR`] for the garbage collector.
    pub actor: String,
    /// What changed.
    #[serde(flatten)]
    pub kind: ChangeKind,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// What a [`Change`] changed, tagged by `"kind"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A file was uploaded (a new blob, or a link to a stored one).
    #[serde(rename = "file.created")]
    FileCreated {
        /// Its bucket.
        bucket: String,
        /// Its id.
        file: u64,
        /// Its filename.
        filename: String,
        /// Its MIME type.
        content_type: String,
        /// Its size in bytes.
        size: u64,
        /// Its content's BLAKE3, hex.
        blake3: String,
        /// When it expires (Unix milliseconds), if ever.
        expires: Option<i64>,
        /// Whether reads need a token.
        restricted: bool,
        /// Whether the content was stored already (the upload only linked to it).
        deduplicated: bool,
    },
    /// A file's content link was cut by its owner; the record stays.
    #[serde(rename = "file.content_deleted")]
    ContentDeleted {
        /// Its bucket.
        bucket: String,
        /// Its id.
        file: u64,
        /// The size of the content it no longer links to.
        size: u64,
        /// That content's BLAKE3, hex.
        blake3: String,
    },
    /// A file was removed entirely.
    #[serde(rename = "file.deleted")]
    FileDeleted {
        /// Its bucket.
        bucket: String,
        /// Its id.
        file: u64,
        /// Its size.
        size: u64,
        /// Its content's BLAKE3, hex.
        blake3: String,
        /// Whether it still linked to its content before.
        had_content: bool,
    },
    /// A file's expiry was set, moved or cleared.
    #[serde(rename = "file.expiry_changed")]
    ExpiryChanged {
        /// Its bucket.
        bucket: String,
        /// Its id.
        file: u64,
        /// The expiry before (Unix milliseconds), if any.
        before: Option<i64>,
        /// The expiry after (Unix milliseconds), if any.
        after: Option<i64>,
    },
    /// A file became restricted or public.
    #[serde(rename = "file.restricted_changed")]
    RestrictedChanged {
        /// Its bucket.
        bucket: String,
        /// Its id.
        file: u64,
        /// The flag before.
        before: bool,
        /// The flag after.
        after: bool,
    },
    /// A bucket's quota was set or removed.
    #[serde(rename = "bucket.quota_set")]
    QuotaSet {
        /// The bucket.
        bucket: String,
        /// The quota before, in logical bytes, if any.
        before: Option<u64>,
        /// The quota after, if any.
        after: Option<u64>,
    },
    /// The garbage collector cut the content link of a file past its expiry and grace.
    #[serde(rename = "file.collected")]
    FileCollected {
        /// Its bucket.
        bucket: String,
        /// Its id.
        file: u64,
        /// The size of the content it no longer links to.
        size: u64,
        /// That content's BLAKE3, hex.
        blake3: String,
    },
    /// The garbage collector removed a blob that no file had linked to for the grace period.
    #[serde(rename = "blob.collected")]
    BlobCollected {
        /// The blob's BLAKE3, hex.
        blake3: String,
        /// Its size.
        size: u64,
    },
    /// The online scrub found a blob's bytes damaged: reads of its files answer
    /// [`crate::Error::Corrupt`] until it checks good again. A fact about this store's copy of
    /// the bytes, not a change of its records: replaying it changes nothing.
    #[serde(rename = "blob.damaged")]
    BlobDamaged {
        /// The blob's BLAKE3, hex.
        blake3: String,
        /// `corrupt` (the bytes do not hash to the address) or `missing`.
        problem: String,
        /// The size its record says it has.
        size: u64,
        /// The size found, for a corrupt blob.
        found_size: Option<u64>,
    },
    /// A blob the scrub had found damaged checked good again (its bytes were restored).
    #[serde(rename = "blob.repaired")]
    BlobRepaired {
        /// The blob's BLAKE3, hex.
        blake3: String,
    },
}

/// Every `kind` a [`Change`] may have, for filters.
pub const CHANGE_KINDS: &[&str] = &[
    "file.created",
    "file.content_deleted",
    "file.deleted",
    "file.expiry_changed",
    "file.restricted_changed",
    "bucket.quota_set",
    "file.collected",
    "blob.collected",
    "blob.damaged",
    "blob.repaired",
];

impl ChangeKind {
    /// Its `kind` name, one of [`CHANGE_KINDS`].
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::FileCreated { .. } => "file.created",
            ChangeKind::ContentDeleted { .. } => "file.content_deleted",
            ChangeKind::FileDeleted { .. } => "file.deleted",
            ChangeKind::ExpiryChanged { .. } => "file.expiry_changed",
            ChangeKind::RestrictedChanged { .. } => "file.restricted_changed",
            ChangeKind::QuotaSet { .. } => "bucket.quota_set",
            ChangeKind::FileCollected { .. } => "file.collected",
            ChangeKind::BlobCollected { .. } => "blob.collected",
            ChangeKind::BlobDamaged { .. } => "blob.damaged",
            ChangeKind::BlobRepaired { .. } => "blob.repaired",
        }
    }

    /// The bucket it concerns, if any.
    pub fn bucket(&self) -> Option<&str> {
        match self {
            ChangeKind::FileCreated { bucket, .. }
            | ChangeKind::ContentDeleted { bucket, .. }
            | ChangeKind::FileDeleted { bucket, .. }
            | ChangeKind::ExpiryChanged { bucket, .. }
            | ChangeKind::RestrictedChanged { bucket, .. }
            | ChangeKind::QuotaSet { bucket, .. }
            | ChangeKind::FileCollected { bucket, .. } => Some(bucket),
            ChangeKind::BlobCollected { .. }
            | ChangeKind::BlobDamaged { .. }
            | ChangeKind::BlobRepaired { .. } => None,
        }
    }

    /// The file it concerns, if any.
    pub fn file(&self) -> Option<FileId> {
        match self {
            ChangeKind::FileCreated { file, .. }
            | ChangeKind::ContentDeleted { file, .. }
            | ChangeKind::FileDeleted { file, .. }
            | ChangeKind::ExpiryChanged { file, .. }
            | ChangeKind::RestrictedChanged { file, .. }
            | ChangeKind::FileCollected { file, .. } => Some(FileId(*file)),
            ChangeKind::QuotaSet { .. }
            | ChangeKind::BlobCollected { .. }
            | ChangeKind::BlobDamaged { .. }
            | ChangeKind::BlobRepaired { .. } => None,
        }
    }

    pub(crate) fn file_created(record: &FileRecord, deduplicated: bool) -> Self {
        ChangeKind::FileCreated {
            bucket: record.bucket.as_str().to_owned(),
            file: record.id.0,
            filename: record.filename.clone(),
            content_type: record.content_type.clone(),
            size: record.size,
            blake3: record.blake3.to_hex(),
            expires: record.expires.map(Timestamp::as_unix_millis),
            restricted: record.restricted,
            deduplicated,
        }
    }
}

/// Who made a change and when: the actor is recorded, and the time is both the event's and
/// the one the change itself uses (a file's creation time, a blob's zero-reference time), so
/// that replaying the event reproduces the change exactly.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin<'a> {
    pub actor: &'a str,
    pub time: Timestamp,
}

impl Origin<'_> {
    pub(crate) fn change(&self, kind: ChangeKind) -> Change {
        Change {
            revision: 0,
            time_us: self.time.as_unix_millis().saturating_mul(1000),
            actor: self.actor.to_owned(),
            kind,
        }
    }
}

impl Change {
    /// The time of the change on the store's clock (milliseconds).
    pub fn time(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.time_us.div_euclid(1000))
    }
}

/// The history-index prefix of a file's events.
pub(crate) fn file_history(id: FileId) -> Vec<u8> {
    keys::history_file(id)
}

/// The history-index prefix of a bucket's events.
pub(crate) fn bucket_history(bucket: &str) -> Vec<u8> {
    keys::history_bucket(bucket)
}

/// The history-index prefix of an actor's events.
pub(crate) fn actor_history(actor: &str) -> Vec<u8> {
    keys::history_actor(actor)
}

/// The content of a change's `blake3` field.
pub(crate) fn parse_hash(hex: &str) -> Option<Blake3Hash> {
    hex.parse().ok()
}

/// The bucket of a change's `bucket` field.
pub(crate) fn parse_bucket(name: &str) -> Option<BucketName> {
    BucketName::new(name).ok()
}
