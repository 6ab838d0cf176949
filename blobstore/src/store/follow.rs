//! Following another instance's writes: several instances of the librarian on one database.

use super::builder::next_file_id;
use super::feed::decode;
use super::Store;
use crate::error::Result;

impl Store {
    /// A follower's step: `events` are the change log's stored events (`(revision,
    /// payload)`) that another instance wrote after what this one has applied. What this
    /// store holds in memory about the files they touch is dropped: the hot-file cache's
    /// entry (record, content and the headers formatted for it), refilled from the engine by
    /// the next read, and the file's pending download counts when it was deleted. Nothing
    /// else of a store lives in memory (records, buckets and statistics are read from the
    /// engine). Returns how many events named a file.
    ///
    /// # Errors
    /// [`crate::Error::Feed`] for an event that cannot be decoded.
    pub fn follow(&self, events: &[(u64, Vec<u8>)]) -> Result<usize> {
        let mut files = 0;
        for (revision, payload) in events {
            let change = decode(*revision, payload)?;
            if let Some(id) = change.kind.file() {
                self.invalidate_cached(id);
                files += 1;
            }
        }
        Ok(files)
    }

    /// Drops the whole hot-file cache: for a follower that missed events (pruned before it
    /// read them), which cannot tell which files changed.
    pub fn forget_cached(&self) {
        if let Some(hot) = &self.inner.hot {
            hot.clear();
        }
    }

    /// A new writer's first step, after it caught up with the log: file ids continue above
    /// every id another instance reserved or used (its blocks of ids are recorded as a
    /// high-water mark in the same database), so no id is handed out twice.
    ///
    /// # Errors
    /// The engine's error.
    pub fn take_over(&self) -> Result<()> {
        let next = next_file_id(self.inner.engine.as_ref(), &self.inner.ks)?;
        let mut ids = self.inner.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.next = ids.next.max(next);
        ids.high_water = ids.high_water.max(next);
        Ok(())
    }
}
