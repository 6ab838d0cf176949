//! Replaying another store's change feed: the property replicas rely on.

use std::io::Write;

use crate::changes::{self, Change, ChangeKind, Origin};
use crate::error::{Error, Result};
use crate::records::ContentState;
use crate::types::{Blake3Hash, FileId, Timestamp};

use super::upload::Replayed;
use super::{FileUpdate, Store, UploadRequest};

impl Store {
    /// Applies `change`, an event of another store's feed, to this store, as its own write
    /// by the same actor at the same time: a file keeps its id and creation time, a blob its
    /// zero-reference time. Applying a store's feed from revision 0, in order, onto an empty
    /// store reproduces its files, records, buckets, quotas and statistics exactly
    /// (`tests/it/replay.rs`). `content` returns the bytes of a blob by its BLAKE3 (from the
    /// source store, for example); it is asked only for `file.created`. Returns this store's
    /// revision of the applied change.
    ///
    /// ```
    /// # use blobstore::{Access, BucketName, StoreBuilder, UploadRequest};
    /// # use std::io::Read;
    /// # fn main() -> Result<(), blobstore::Error> {
    /// # let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    /// let source = StoreBuilder::new(engine::EngineConfig::memory(), dirs.0.path()).open()?;
    /// let replica = StoreBuilder::new(engine::EngineConfig::memory(), dirs.1.path()).open()?;
    /// let file = source
    ///     .upload_bytes(UploadRequest::new(BucketName::new("b")?, "f"), b"hello", "alice")?
    ///     .record;
    /// let fetch = |hash: &blobstore::Blake3Hash| {
    ///     let mut bytes = Vec::new();
    ///     let id = source.files_by_digest(&blobstore::Digest::Blake3(*hash), blobstore::Visibility::Public, 1).ok()?;
    ///     source.read(*id.first()?, Access::Trusted, None).ok()?.read_to_end(&mut bytes).ok()?;
    ///     Some(bytes)
    /// };
    /// for change in source.changes(0, 100)? {
    ///     replica.apply_change(&change, &fetch)?;
    /// }
    /// assert_eq!(replica.file(file.id)?, file);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Replay`] when the change does not fit this store's state (a file that exists
    /// already or is missing, a blob still in use, a malformed field),
    /// [`Error::ContentUnavailable`] when `content` has no bytes for a created file (or
    /// bytes of another hash), or the error of the write.
    pub fn apply_change(
        &self,
        change: &Change,
        content: &dyn Fn(&Blake3Hash) -> Option<Vec<u8>>,
    ) -> Result<u64> {
        let origin = Origin {
            actor: &change.actor,
            time: change.time(),
        };
        let refuse = |reason: &'static str| Error::Replay {
            revision: change.revision,
            reason,
        };
        let bucket = || {
            change
                .kind
                .bucket()
                .and_then(changes::parse_bucket)
                .ok_or_else(|| refuse("malformed bucket"))
        };
        let file = change.kind.file().unwrap_or(FileId(0));
        let cut = |state| self.cut(file, state, origin).map(|done| done.revision);
        let update = |update| {
            self.update_file_as(file, update, origin)
                .map(|done| done.revision)
        };
        match &change.kind {
            ChangeKind::FileCreated {
                filename,
                content_type,
                size,
                blake3,
                expires,
                restricted,
                ..
            } => {
                match self.file(file) {
                    Err(Error::NotFound { .. }) => {}
                    Ok(_) => return Err(refuse("the file exists already")),
                    Err(error) => return Err(error),
                }
                let hash = changes::parse_hash(blake3).ok_or_else(|| refuse("malformed blake3"))?;
                let bytes = content(&hash)
                    .filter(|bytes| bytes.len() as u64 == *size)
                    .ok_or(Error::ContentUnavailable { hash })?;
                let mut request = UploadRequest::new(bucket()?, filename.clone());
                request.content_type.clone_from(content_type);
                request.expires = expires.map(Timestamp::from_unix_millis);
                request.restricted = *restricted;
                request.expected_blake3 = Some(hash);
                let replayed = Replayed {
                    id: file,
                    time: origin.time,
                };
                let mut upload = self.start_upload(request, origin.actor, Some(replayed))?;
                upload
                    .write_all(&bytes)
                    .map_err(|error| Error::io("writing", "replayed upload", error))?;
                Ok(upload.commit()?.revision)
            }
            ChangeKind::ContentDeleted { .. } => cut(Some(ContentState::Deleted)),
            ChangeKind::FileCollected { .. } => cut(Some(ContentState::Expired)),
            ChangeKind::FileDeleted { .. } => cut(None),
            ChangeKind::ExpiryChanged { after, .. } => update(FileUpdate {
                expires: Some(after.map(Timestamp::from_unix_millis)),
                restricted: None,
            }),
            ChangeKind::RestrictedChanged { after, .. } => update(FileUpdate {
                expires: None,
                restricted: Some(*after),
            }),
            ChangeKind::QuotaSet { after, .. } => self.set_quota_as(&bucket()?, *after, origin),
            ChangeKind::BlobCollected { blake3, .. } => {
                let hash = changes::parse_hash(blake3).ok_or_else(|| refuse("malformed blake3"))?;
                self.collect_blob(&hash, None, origin)?
                    .ok_or_else(|| refuse("the blob is missing or still linked"))?;
                Ok(self.inner.log.head())
            }
            // The source's copy of the bytes was damaged or restored; this store's own scrub
            // checks its own copy.
            ChangeKind::BlobDamaged { .. } | ChangeKind::BlobRepaired { .. } => {
                Ok(self.inner.log.head())
            }
        }
    }
}
