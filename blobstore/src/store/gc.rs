//! Garbage collection: expiry cuts, unreferenced blobs and orphan files.

use engine::{Direction, Keyspace, ScanRange, WriteBatch};

use crate::changes::{ChangeKind, Origin, GC_ACTOR};
use crate::error::{Error, Result};
use crate::keys;
use crate::records::ContentState;
use crate::types::{Blake3Hash, Timestamp};

use super::{as_i64, Store};

/// What one [`Store::gc`] pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Files whose content link was cut because they expired.
    pub expired_files: u64,
    /// Blobs collected.
    pub collected_blobs: u64,
    /// The bytes of the collected blobs.
    pub freed_bytes: u64,
    /// Events of the change feed pruned because they were older than the retention.
    pub pruned_changes: u64,
    /// Resumable uploads removed (with their bytes) because their deadline passed.
    pub expired_uploads: u64,
    /// Idempotency keys removed because their window passed.
    pub expired_idempotency_keys: u64,
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
    /// Partial files of resumable uploads that no unfinished upload owns.
    pub upload_files: u64,
}

impl Store {
    /// One bounded pass of garbage collection: cuts the content link of up to `limit` files
    /// whose expiry plus the expiry grace has passed, then collects up to `limit` blobs that
    /// have had no reference for longer than the grace, then prunes up to `limit` events of
    /// the change feed older than the retention (the newest event is always kept), then
    /// removes up to `limit` resumable uploads past their deadline, with their bytes, and up
    /// to `limit` idempotency keys past their window. Safe to
    /// run while uploads run. Its changes are recorded under the actor [`GC_ACTOR`]
    /// (`file.collected`, `blob.collected`).
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
        let (pruned, more_changes) = self.prune_changes(limit)?;
        report.pruned_changes = pruned;
        let (uploads, more_uploads) = self.expire_uploads(limit)?;
        report.expired_uploads = uploads;
        let (keys, more_keys) = self.expire_idempotency_keys(limit)?;
        report.expired_idempotency_keys = keys;
        report.more = more_expired || more_blobs || more_changes || more_uploads || more_keys;
        Ok(report)
    }

    /// Up to `limit` entries of a time-keyed index (expiry, zero-ref) in `range`, oldest
    /// first, parsed by `parse`; and whether more are due past them.
    pub(super) fn due_entries<T>(
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
            read_once: false,
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
            let origin = Origin {
                actor: GC_ACTOR,
                time: self.now(),
            };
            let mut events = Vec::new();
            match self.file(id) {
                Ok(record)
                    if record.content == ContentState::Present && record.expires == Some(at) =>
                {
                    self.unlink(&mut batch, &record, origin.time)?;
                    events.push(origin.change(ChangeKind::FileCollected {
                        bucket: record.bucket.as_str().to_owned(),
                        file: id.0,
                        size: record.size,
                        blake3: record.blake3.to_hex(),
                    }));
                    let mut updated = record;
                    updated.content = ContentState::Expired;
                    batch.put(ks.files, keys::file(id), updated.encode());
                    expired += 1;
                }
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
            let appended = self.append(batch, &events);
            self.invalidate_cached(id);
            let appended = appended?;
            drop(pair_guard);
            drop(blob_guard);
            self.sync(appended)?;
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
            read_once: false,
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
            let origin = Origin {
                actor: GC_ACTOR,
                time: self.now(),
            };
            if let Some(size) = self.collect_blob(&hash, Some(since), origin)? {
                blobs += 1;
                bytes += size;
            }
        }
        Ok((blobs, bytes, more))
    }

    /// Collects blob `hash` when no file links to it and it has been waiting since `since`
    /// (or since any time, for a replayed `blob.collected`), recording `blob.collected`;
    /// returns its size, or `None` when it was revived meanwhile (a stale zero-ref entry is
    /// removed then). Holds the blob lock across the durable batch and the removal of the
    /// bytes, so an upload of the same content either revives the record or stores its bytes
    /// anew after they are gone.
    pub(super) fn collect_blob(
        &self,
        hash: &Blake3Hash,
        since: Option<Timestamp>,
        origin: Origin<'_>,
    ) -> Result<Option<u64>> {
        let ks = self.inner.ks;
        let _guard = self.inner.blob_locks.lock(&hash.0);
        let mut batch = WriteBatch::new();
        if let Some(since) = since {
            batch.delete(ks.zero_refs, keys::zero_ref(since, hash));
        }
        let meta = self.blob_meta(hash)?;
        let refs = match &meta {
            Some(meta) => self.refcount(hash, meta)?,
            None => 0,
        };
        let waiting = meta.as_ref().and_then(|meta| meta.zero_since);
        let collect = waiting.is_some() && since.is_none_or(|since| waiting == Some(since));
        let (Some(meta), Some(waiting), true) = (meta, waiting, collect && refs == 0) else {
            if since.is_some() {
                // Revived (or re-zeroed under a newer time): the entry is stale.
                self.inner.committer.commit(batch)?;
            }
            return Ok(None);
        };
        batch.delete(ks.zero_refs, keys::zero_ref(waiting, hash));
        batch.delete(ks.blobs, hash.0);
        if meta.refs.is_none() {
            // A record of version 1 kept its count in `bs.refs`.
            batch.delete(ks.refs, hash.0);
        }
        if meta.inline {
            batch.delete(ks.inline, hash.0);
        }
        // A damaged blob that is collected is no longer a finding of the scrub.
        self.forget_finding(&mut batch, hash);
        batch.counter_add(ks.stats, keys::global_stat(keys::STAT_BLOBS), -1);
        batch.counter_add(
            ks.stats,
            keys::global_stat(keys::STAT_STORED),
            -as_i64(meta.size),
        );
        let event = origin.change(ChangeKind::BlobCollected {
            blake3: hash.to_hex(),
            size: meta.size,
        });
        // The record goes first; a crash before the bytes are removed leaves an orphan file
        // that the sweep removes.
        let appended = self.append(batch, &[event])?;
        self.sync(appended)?;
        if !meta.inline {
            self.delete_blob_bytes(hash)?;
        }
        Ok(Some(meta.size))
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
                self.delete_blob_bytes(&stored.hash)?;
                orphans += 1;
            }
            Ok(())
        })?;
        let upload_files = self.sweep_upload_files()?;
        Ok(SweepReport {
            orphan_blobs: orphans,
            temp_files: temps,
            upload_files,
        })
    }
}
