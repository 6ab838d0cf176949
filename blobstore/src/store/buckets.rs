//! Buckets: listings, quotas and statistics.

use engine::{keys as ekeys, Direction, ScanRange, WriteBatch};

use crate::changes::{ChangeKind, Origin};
use crate::error::{Error, Result};
use crate::keys;
use crate::records::FileRecord;
use crate::types::{BucketName, FileId};

use super::{as_u64, decode_u64, Store};

/// The statistics of one bucket, read in constant time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// Its file records (with or without content).
    pub files: u64,
    /// The sum of the sizes of its files whose content is present.
    pub logical_bytes: u64,
    /// The sum of the sizes of the distinct blobs its files link to.
    pub unique_bytes: u64,
    /// Its quota on logical bytes, if any.
    pub quota: Option<u64>,
}

/// Store-wide statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StoreSummary {
    /// File records.
    pub files: u64,
    /// Blobs stored (including unreferenced ones waiting for GC).
    pub blobs: u64,
    /// The sum of the blobs' sizes.
    pub stored_bytes: u64,
    /// The sum of the sizes of files whose content is present.
    pub logical_bytes: u64,
    /// `logical_bytes / stored_bytes` (1.0 when nothing is stored).
    pub dedup_ratio: f64,
}

/// One page of a bucket listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The files, in id order.
    pub files: Vec<FileRecord>,
    /// The cursor of the next page (pass it as `after`), or `None` at the end.
    pub next: Option<FileId>,
}

impl Store {
    /// Up to `limit` files of `bucket` with ids greater than `after`, in id order. Passing the
    /// returned `next` as `after` continues the listing; files that existed throughout are
    /// listed exactly once, whatever is written meanwhile.
    ///
    /// # Errors
    /// The engine's error.
    pub fn list_bucket(
        &self,
        bucket: &BucketName,
        after: Option<FileId>,
        limit: usize,
    ) -> Result<Page> {
        let ks = self.inner.ks;
        let prefix = keys::bucket_prefix(bucket);
        let start = match after {
            Some(id) => match id.0.checked_add(1) {
                Some(next) => keys::bucket_file(bucket, FileId(next)),
                None => {
                    return Ok(Page {
                        files: Vec::new(),
                        next: None,
                    })
                }
            },
            None => prefix.clone(),
        };
        let range = ScanRange {
            start,
            end: ekeys::prefix_successor(&prefix),
            read_once: false,
        };
        let mut ids = Vec::new();
        let mut more = false;
        for kv in self
            .inner
            .engine
            .scan(ks.bucket_files, range, Direction::Forward)?
        {
            let (key, _) = kv?;
            if ids.len() == limit {
                more = true;
                break;
            }
            let (_, id) = keys::parse_bucket_file(&key).ok_or_else(|| Error::CorruptRecord {
                what: "bucket listing",
                key: key.clone(),
            })?;
            ids.push(id);
        }
        let file_keys: Vec<[u8; 8]> = ids.iter().map(|id| keys::file(*id)).collect();
        let refs: Vec<&[u8]> = file_keys.iter().map(|k| k.as_slice()).collect();
        let values = self.inner.engine.multi_get(ks.files, &refs)?;
        let mut files = Vec::with_capacity(ids.len());
        for ((id, key), value) in ids.iter().zip(&file_keys).zip(values) {
            // A file deleted since the scan is simply not listed.
            if let Some(bytes) = value {
                files.push(FileRecord::decode(*id, key, &bytes)?);
            }
        }
        let next = if more { ids.last().copied() } else { None };
        Ok(Page { files, next })
    }

    /// Sets or clears the quota of `bucket` on logical bytes, recording `bucket.quota_set` by
    /// `actor` (nothing when the quota stays the same), and returns the revision.
    ///
    /// # Errors
    /// The engine's error.
    pub fn set_quota(&self, bucket: &BucketName, quota: Option<u64>, actor: &str) -> Result<u64> {
        self.set_quota_as(bucket, quota, self.origin(actor))
    }

    pub(super) fn set_quota_as(
        &self,
        bucket: &BucketName,
        quota: Option<u64>,
        origin: Origin<'_>,
    ) -> Result<u64> {
        self.check_writable()?;
        let guard = self.inner.bucket_locks.exclusive(bucket.as_str());
        let before = self.quota(bucket)?;
        if before == quota {
            return Ok(self.inner.log.head());
        }
        let mut batch = WriteBatch::new();
        match quota {
            Some(q) => batch.put(self.inner.ks.buckets, bucket.as_str(), q.to_be_bytes()),
            None => batch.delete(self.inner.ks.buckets, bucket.as_str()),
        }
        let event = origin.change(ChangeKind::QuotaSet {
            bucket: bucket.as_str().to_owned(),
            before,
            after: quota,
        });
        let appended = self.append(batch, &[event])?;
        // Applied under the lock, so every upload after it sees the new quota.
        drop(guard);
        self.sync(appended)
    }

    /// The quota of `bucket`, if any.
    ///
    /// # Errors
    /// The engine's error.
    pub fn quota(&self, bucket: &BucketName) -> Result<Option<u64>> {
        match self
            .inner
            .engine
            .get(self.inner.ks.buckets, bucket.as_str().as_bytes())?
        {
            Some(bytes) => Ok(Some(decode_u64(&bytes).ok_or_else(|| {
                Error::CorruptRecord {
                    what: "bucket settings",
                    key: bucket.as_str().as_bytes().to_vec(),
                }
            })?)),
            None => Ok(None),
        }
    }

    /// The statistics of `bucket`, in constant time (four point reads).
    ///
    /// # Errors
    /// The engine's error.
    pub fn bucket_stats(&self, bucket: &BucketName) -> Result<BucketStats> {
        let ks = self.inner.ks;
        let stat_keys = [
            keys::bucket_stat(bucket, keys::STAT_FILES),
            keys::bucket_stat(bucket, keys::STAT_LOGICAL),
            keys::bucket_stat(bucket, keys::STAT_UNIQUE),
        ];
        let refs: Vec<&[u8]> = stat_keys.iter().map(Vec::as_slice).collect();
        let values = self.inner.engine.multi_get(ks.stats, &refs)?;
        let mut counters = [0u64; 3];
        for (slot, (value, key)) in counters.iter_mut().zip(values.iter().zip(&stat_keys)) {
            if let Some(bytes) = value {
                *slot =
                    as_u64(
                        engine::counter::decode(bytes).ok_or_else(|| Error::CorruptRecord {
                            what: "bucket statistics",
                            key: key.clone(),
                        })?,
                    );
            }
        }
        Ok(BucketStats {
            files: counters[0],
            logical_bytes: counters[1],
            unique_bytes: counters[2],
            quota: self.quota(bucket)?,
        })
    }

    /// Store-wide statistics, in constant time.
    ///
    /// # Errors
    /// The engine's error.
    pub fn summary(&self) -> Result<StoreSummary> {
        let stats = self.inner.ks.stats;
        let get =
            |field| -> Result<u64> { Ok(as_u64(self.counter(stats, &keys::global_stat(field))?)) };
        let stored_bytes = get(keys::STAT_STORED)?;
        let logical_bytes = get(keys::STAT_LOGICAL)?;
        Ok(StoreSummary {
            files: get(keys::STAT_FILES)?,
            blobs: get(keys::STAT_BLOBS)?,
            stored_bytes,
            logical_bytes,
            dedup_ratio: if stored_bytes == 0 {
                1.0
            } else {
                logical_bytes as f64 / stored_bytes as f64
            },
        })
    }
}
