//! Changes to one file: delete, cut its content, expiry and restriction.

use std::sync::MutexGuard;

use engine::{keys as ekeys, WriteBatch};

use crate::changes::{Change, ChangeKind, Origin};
use crate::error::{Error, Result};
use crate::keys;
use crate::records::{ContentState, FileRecord};
use crate::types::{Day, FileId, Timestamp};

use super::{as_i64, Store};

/// Changes to a file's record for [`Store::update_file`]; `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileUpdate {
    /// The new expiry (`Some(None)`: never expires).
    pub expires: Option<Option<Timestamp>>,
    /// Whether reads need a token.
    pub restricted: Option<bool>,
}

/// What a write returns: its result and the revision of the change feed it was recorded at
/// (the last of its events; when it changed nothing, the newest revision at the time).
/// A client that reads later may ask to be at least as fresh as `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revised<T> {
    /// The write's result (for a file, its record after the change).
    pub value: T,
    /// The revision the change was recorded at.
    pub revision: u64,
}

impl Store {
    /// Removes file `id` entirely: its record, its place in its bucket and its link to its
    /// blob (the blob is collected after the grace period if nothing else links to it).
    /// Records `file.deleted` by `actor`; returns the record as it was.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn delete_file(&self, id: FileId, actor: &str) -> Result<Revised<FileRecord>> {
        self.cut(id, None, self.origin(actor))
    }

    /// Cuts file `id`'s link to its content but keeps its record: reads then give
    /// [`Error::ContentGone`]. Records `file.content_deleted` by `actor` (nothing, when the
    /// content was already gone).
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn delete_content(&self, id: FileId, actor: &str) -> Result<Revised<FileRecord>> {
        self.cut(id, Some(ContentState::Deleted), self.origin(actor))
    }

    /// Sets (or, with `None`, clears) file `id`'s expiry and returns the updated record. Reads
    /// refuse the content from `expires` on; GC cuts it once the expiry grace has passed too.
    /// Moving the time later revives reads of a file that expired but was not cut yet; a file
    /// whose content is already gone keeps the new time on its record only. Records
    /// `file.expiry_changed` by `actor` when the time changed.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn set_expiry(
        &self,
        id: FileId,
        expires: Option<Timestamp>,
        actor: &str,
    ) -> Result<Revised<FileRecord>> {
        let update = FileUpdate {
            expires: Some(expires),
            restricted: None,
        };
        self.update_file(id, update, actor)
    }

    /// Makes file `id` restricted (readable only with a token) or public. Its digest index
    /// entries move to the matching visibility in the same batch. Records
    /// `file.restricted_changed` by `actor` when the flag changed.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn set_restricted(
        &self,
        id: FileId,
        restricted: bool,
        actor: &str,
    ) -> Result<Revised<FileRecord>> {
        let update = FileUpdate {
            expires: None,
            restricted: Some(restricted),
        };
        self.update_file(id, update, actor)
    }

    /// Applies `update` to file `id`'s record in one batch (all of it or nothing) and returns
    /// the updated record; see [`Store::set_expiry`] and [`Store::set_restricted`]. A copy in
    /// the hot-file cache is dropped before this returns, so no reader is served by the old
    /// record after.
    ///
    /// Records one event per field that changed, in the same batch (consecutive revisions):
    /// `file.expiry_changed`, then `file.restricted_changed`. A follower filtering on one kind
    /// sees exactly the changes of that field; the returned revision is the last one.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn update_file(
        &self,
        id: FileId,
        update: FileUpdate,
        actor: &str,
    ) -> Result<Revised<FileRecord>> {
        self.update_file_as(id, update, self.origin(actor))
    }

    pub(super) fn update_file_as(
        &self,
        id: FileId,
        update: FileUpdate,
        origin: Origin<'_>,
    ) -> Result<Revised<FileRecord>> {
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
            return Ok(Revised {
                value: record,
                revision: self.inner.log.head(),
            });
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
                for key in Self::digest_keys(&meta, record.restricted, id) {
                    batch.delete(ks.digests, key);
                }
                for key in Self::digest_keys(&meta, updated.restricted, id) {
                    batch.put(ks.digests, key, []);
                }
                self.put_blob_file(&mut batch, &hash, &record.bucket, id, updated.restricted);
            }
        }
        batch.put(ks.files, keys::file(id), updated.encode());
        let events = update_events(&record, &updated, origin);
        let appended = self.append(batch, &events);
        self.invalidate_cached(id);
        let appended = appended?;
        drop(pair_guard);
        drop(blob_guard);
        let revision = self.sync(appended)?;
        Ok(Revised {
            value: updated,
            revision,
        })
    }

    /// Removes the record (`new_state` = `None`) or marks its content gone (`Deleted` by its
    /// owner, `Expired` by the GC), recording the matching event.
    pub(super) fn cut(
        &self,
        id: FileId,
        new_state: Option<ContentState>,
        origin: Origin<'_>,
    ) -> Result<Revised<FileRecord>> {
        self.check_writable()?;
        let ks = self.inner.ks;
        let first = self.file(id)?;
        let (blob_guard, pair_guard) = self.lock_file(&first);
        // Re-read under the locks: a concurrent delete or expiry may have won.
        let record = self.file(id)?;
        let mut batch = WriteBatch::new();
        let present = record.content == ContentState::Present;
        if present {
            self.unlink(&mut batch, &record, origin.time)?;
        }
        if let Some(expires) = record.expires {
            batch.delete(ks.expiry, keys::expiry(expires, id));
        }
        let bucket = record.bucket.as_str().to_owned();
        let (size, blake3) = (record.size, record.blake3.to_hex());
        let (updated, event) = match new_state {
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
                let event = ChangeKind::FileDeleted {
                    bucket,
                    file: id.0,
                    size,
                    blake3,
                    had_content: present,
                };
                (record.clone(), Some(event))
            }
            Some(state) => {
                let mut updated = record.clone();
                let mut event = None;
                if present {
                    updated.content = state;
                    event = Some(if state == ContentState::Expired {
                        ChangeKind::FileCollected {
                            bucket,
                            file: id.0,
                            size,
                            blake3,
                        }
                    } else {
                        ChangeKind::ContentDeleted {
                            bucket,
                            file: id.0,
                            size,
                            blake3,
                        }
                    });
                }
                batch.put(ks.files, keys::file(id), updated.encode());
                (updated, event)
            }
        };
        let events: Vec<Change> = event.into_iter().map(|kind| origin.change(kind)).collect();
        let appended = if new_state.is_none() {
            // The file's counters go with it: no flush may write pending counts of it from
            // here on (the flush skips files whose record is gone).
            let _flushing = self
                .inner
                .downloads
                .flush_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.inner.downloads.forget(id);
            self.append(batch, &events)
        } else {
            self.append(batch, &events)
        };
        // Applied (or failed as a whole): no reader may be answered from memory any more.
        self.invalidate_cached(id);
        let appended = appended?;
        drop(pair_guard);
        drop(blob_guard);
        let revision = self.sync(appended)?;
        Ok(Revised {
            value: updated,
            revision,
        })
    }

    /// Who is writing now: `actor`, at the store clock's time.
    pub(super) fn origin<'a>(&self, actor: &'a str) -> Origin<'a> {
        Origin {
            actor,
            time: self.now(),
        }
    }

    /// Takes the locks that order changes to one file's record (a cut, an expiry, an update):
    /// its blob's, then its (bucket, blob) pair's. Callers re-read the record under them.
    pub(super) fn lock_file(
        &self,
        record: &FileRecord,
    ) -> (MutexGuard<'_, ()>, MutexGuard<'_, ()>) {
        let blob_guard = self.inner.blob_locks.lock(&record.blake3.0);
        let pair_guard = self
            .inner
            .pair_locks
            .lock(&(record.bucket.as_str(), &record.blake3.0));
        (blob_guard, pair_guard)
    }

    /// Adds to `batch` the removal of `record`'s link to its blob. The caller holds the locks
    /// of the blob and of the bucket.
    pub(super) fn unlink(
        &self,
        batch: &mut WriteBatch,
        record: &FileRecord,
        now: Timestamp,
    ) -> Result<()> {
        let ks = self.inner.ks;
        let hash = record.blake3;
        let meta = self.blob_meta(&hash)?.ok_or_else(|| Error::Corrupt {
            hash,
            detail: format!("file {} links to a blob that has no record", record.id),
        })?;
        let refs = self.refcount(&hash, &meta)?;
        let mut unlinked = meta.clone();
        if refs <= 1 {
            unlinked.zero_since = Some(now);
            batch.put(ks.zero_refs, keys::zero_ref(now, &hash), []);
        }
        self.put_blob(batch, &hash, &unlinked, refs.saturating_sub(1));
        if !self.bucket_links_blob(&hash, &record.bucket, Some(record.id))? {
            batch.counter_add(
                ks.stats,
                keys::bucket_stat(&record.bucket, keys::STAT_UNIQUE),
                -as_i64(record.size),
            );
        }
        batch.delete(
            ks.blob_files,
            keys::blob_file(&hash, record.bucket.as_str(), record.id),
        );
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
        for key in Self::digest_keys(&meta, record.restricted, record.id) {
            batch.delete(ks.digests, key);
        }
        Ok(())
    }
}

/// The events of an update: one per field changed, expiry first.
fn update_events(before: &FileRecord, after: &FileRecord, origin: Origin<'_>) -> Vec<Change> {
    let (bucket, file) = (before.bucket.as_str(), before.id.0);
    let mut events = Vec::new();
    if before.expires != after.expires {
        events.push(origin.change(ChangeKind::ExpiryChanged {
            bucket: bucket.to_owned(),
            file,
            before: before.expires.map(Timestamp::as_unix_millis),
            after: after.expires.map(Timestamp::as_unix_millis),
        }));
    }
    if before.restricted != after.restricted {
        events.push(origin.change(ChangeKind::RestrictedChanged {
            bucket: bucket.to_owned(),
            file,
            before: before.restricted,
            after: after.restricted,
        }));
    }
    events
}
