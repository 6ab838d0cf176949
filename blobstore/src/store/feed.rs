//! The change feed as readers see it: pages of events, history per file, bucket and actor,
//! the log to wait on, and retention.

use std::sync::Arc;

use engine::{ChangeLog, Direction, Keyspace};

use crate::changes::{self, Change};
use crate::error::{Error, Result};
use crate::types::{BucketName, FileId};

use super::Store;

/// An event as stored: the JSON of a [`Change`] whose revision is the log's key.
pub(super) fn decode(revision: u64, payload: &[u8]) -> Result<Change> {
    let mut change: Change = serde_json::from_slice(payload).map_err(|_| Error::CorruptRecord {
        what: "change",
        key: revision.to_be_bytes().to_vec(),
    })?;
    change.revision = revision;
    Ok(change)
}

fn decode_all(events: Vec<(u64, Vec<u8>)>) -> Result<Vec<Change>> {
    events
        .into_iter()
        .map(|(revision, payload)| decode(revision, &payload))
        .collect()
}

impl Store {
    /// Up to `limit` changes with a revision above `after`, oldest first, never past the
    /// durable head (a change is listed only once it is acknowledged). Start with `after = 0`
    /// and continue from the last revision returned.
    ///
    /// ```
    /// use blobstore::{BucketName, ChangeKind, StoreBuilder, UploadRequest};
    /// use engine::EngineConfig;
    ///
    /// # fn main() -> Result<(), blobstore::Error> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = StoreBuilder::new(EngineConfig::memory(), dir.path()).open()?;
    /// let bucket = BucketName::new("logs")?;
    /// let file = store.upload_bytes(UploadRequest::new(bucket.clone(), "a.txt"), b"hi", "alice")?;
    /// let deleted = store.delete_file(file.record.id, "bob")?;
    ///
    /// let changes = store.changes(0, 100)?;
    /// assert_eq!(changes.len(), 2);
    /// assert_eq!((changes[0].revision, changes[0].actor.as_str()), (file.revision, "alice"));
    /// assert!(matches!(changes[1].kind, ChangeKind::FileDeleted { .. }));
    /// assert_eq!(changes[1].revision, deleted.revision);
    /// assert!(store.changes(deleted.revision, 100)?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Feed`] with [`engine::FeedError::Compacted`] when changes after `after` were
    /// pruned (read a snapshot, then continue from there) or
    /// [`engine::FeedError::BeyondHead`] when `after` is newer than the head; or the engine's
    /// error.
    pub fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>> {
        decode_all(self.inner.log.read(after, limit)?)
    }

    /// Up to `limit` changes of file `id` with a revision above `after`, oldest first: its
    /// creation, expiry and restriction changes, content cuts and deletion.
    ///
    /// ```
    /// # use blobstore::{BucketName, StoreBuilder, UploadRequest};
    /// # fn main() -> Result<(), blobstore::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = StoreBuilder::new(engine::EngineConfig::memory(), dir.path()).open()?;
    /// let file = store
    ///     .upload_bytes(UploadRequest::new(BucketName::new("b")?, "f"), b"x", "alice")?
    ///     .record;
    /// store.set_restricted(file.id, true, "bob")?;
    /// let history = store.file_history(file.id, 0, 10)?;
    /// let kinds: Vec<&str> = history.iter().map(|c| c.kind.name()).collect();
    /// assert_eq!(kinds, ["file.created", "file.restricted_changed"]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The engine's error.
    pub fn file_history(&self, id: FileId, after: u64, limit: usize) -> Result<Vec<Change>> {
        self.history(&changes::file_history(id), after, limit)
    }

    /// Up to `limit` changes of `bucket` (its files' and its quota's) with a revision above
    /// `after`, oldest first. Same use as [`Store::file_history`].
    ///
    /// # Errors
    /// The engine's error.
    pub fn bucket_history(
        &self,
        bucket: &BucketName,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>> {
        self.history(&changes::bucket_history(bucket.as_str()), after, limit)
    }

    /// Up to `limit` changes made by `actor` with a revision above `after`, oldest first.
    /// Same use as [`Store::file_history`].
    ///
    /// # Errors
    /// The engine's error.
    pub fn actor_history(&self, actor: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        self.history(&changes::actor_history(actor), after, limit)
    }

    fn history(&self, prefix: &[u8], after: u64, limit: usize) -> Result<Vec<Change>> {
        let events = self.inner.log.read_index(
            self.inner.ks.history,
            prefix,
            after,
            limit,
            Direction::Forward,
        )?;
        decode_all(events)
    }

    /// The store's change log, to watch it: [`ChangeLog::head`] is the newest acknowledged
    /// revision, [`ChangeLog::wait`] blocks until a later one exists, and
    /// [`ChangeLog::subscribe`] calls back on every advance (an HTTP server feeds a
    /// `tokio::sync::watch` channel from it). Its [`ChangeLog::committer`] is the store's
    /// group commit, which [`engine::Consumers`] over [`Store::consumers_keyspace`] shares.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use blobstore::{BucketName, StoreBuilder, UploadRequest};
    /// # fn main() -> Result<(), blobstore::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = StoreBuilder::new(engine::EngineConfig::memory(), dir.path()).open()?;
    /// let log = store.change_log().clone();
    /// let watcher = std::thread::spawn(move || log.wait(0, Duration::from_secs(10)));
    /// let file = store.upload_bytes(UploadRequest::new(BucketName::new("b")?, "f"), b"x", "a")?;
    /// assert_eq!(watcher.join().unwrap(), file.revision);
    /// # Ok(())
    /// # }
    /// ```
    pub fn change_log(&self) -> &Arc<ChangeLog> {
        &self.inner.log
    }

    /// The keyspace kept for the durable consumers of the change feed (subscriptions):
    /// open them with `engine::Consumers::open(store.change_log().committer().clone(), ..)`.
    pub fn consumers_keyspace(&self) -> Keyspace {
        self.inner.ks.consumers
    }

    /// Prunes up to `limit` of the oldest events when they are older than the retention;
    /// returns how many, and whether more may be due.
    pub(super) fn prune_changes(&self, limit: usize) -> Result<(u64, bool)> {
        let log = &self.inner.log;
        let cutoff = self.now().minus(self.inner.change_retention);
        let cutoff_us = cutoff.as_unix_millis().saturating_mul(1000);
        let Some(oldest) = log.oldest()? else {
            return Ok((0, false));
        };
        let events = log.read(oldest.saturating_sub(1), limit)?;
        let mut through = None;
        for (revision, payload) in &events {
            if decode(*revision, payload)?.time_us >= cutoff_us {
                break;
            }
            through = Some(*revision);
        }
        let Some(through) = through else {
            return Ok((0, false));
        };
        let more = events.len() == limit && events.last().map(|e| e.0) == Some(through);
        Ok((log.prune_through(through)?, more))
    }
}
