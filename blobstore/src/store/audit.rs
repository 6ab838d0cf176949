//! Audits: the scrub of blob bytes and the check of every counter and index.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;

use engine::{keys as ekeys, Direction, Keyspace, ReadView, ScanRange};

use crate::error::{Error, Result};
use crate::keys;
use crate::records::{BlobMeta, ContentState, FileRecord};
use crate::types::{Blake3Hash, BucketName, FileId, Timestamp};

use super::{as_i64, as_u64, visibility_code, Store};

/// What is wrong with a blob, found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobProblem {
    /// Its bytes are not stored.
    Missing {
        /// The blob.
        hash: Blake3Hash,
    },
    /// Its bytes do not hash to its address (or have the wrong size).
    Corrupt {
        /// The blob.
        hash: Blake3Hash,
        /// The size found.
        size: u64,
        /// The hash of what was found.
        actual: Blake3Hash,
    },
}

/// The result of one [`Store::verify`] batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs checked in this batch.
    pub checked: u64,
    /// Problems found.
    pub problems: Vec<BlobProblem>,
    /// Where to resume (pass as `after`), or `None` when the scrub is complete.
    pub next: Option<Blake3Hash>,
}

/// A difference between the stored counters and indexes and what the file records imply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inconsistency {
    /// A counter does not equal the value recomputed from the file records.
    Counter {
        /// Which counter.
        name: String,
        /// The recomputed value.
        expected: i64,
        /// The stored value.
        found: i64,
    },
    /// Something the records imply is absent, or something present is implied by nothing.
    Record {
        /// What.
        detail: String,
    },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inconsistency::Counter {
                name,
                expected,
                found,
            } => write!(f, "counter {name}: expected {expected}, found {found}"),
            Inconsistency::Record { detail } => f.write_str(detail),
        }
    }
}

/// The result of [`Store::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// File records read.
    pub files: u64,
    /// Blob records read.
    pub blobs: u64,
    /// Everything that does not add up.
    pub problems: Vec<Inconsistency>,
}

impl CheckReport {
    /// Whether nothing drifted.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What is wrong with blob `hash` of `size` bytes, given what [`Store::hash_stored`] found.
pub(super) fn blob_problem(
    hash: &Blake3Hash,
    size: u64,
    found: Option<(u64, Blake3Hash)>,
) -> Option<BlobProblem> {
    match found {
        None => Some(BlobProblem::Missing { hash: *hash }),
        Some((found_size, actual)) if found_size != size || actual != *hash => {
            Some(BlobProblem::Corrupt {
                hash: *hash,
                size: found_size,
                actual,
            })
        }
        Some(_) => None,
    }
}

impl Store {
    /// Checks up to `limit` blobs after `after` (in hash order) against their hashes: the
    /// scrub. Resume with the returned `next` until it is `None`. Read-only: the online scrub,
    /// which records what it finds, is [`Store::scrub_step`].
    ///
    /// # Errors
    /// The engine's error, or an I/O error other than a missing or short blob.
    pub fn verify(&self, after: Option<Blake3Hash>, limit: usize) -> Result<VerifyReport> {
        self.verify_paced(after, limit, &mut |_| {})
            .map(|(report, _)| report)
    }

    /// [`Store::verify`], calling `pace` with the number of bytes read after every piece of
    /// a blob (so that a caller can hold a rate), and also returning the bytes read.
    pub(super) fn verify_paced(
        &self,
        after: Option<Blake3Hash>,
        limit: usize,
        pace: &mut dyn FnMut(u64),
    ) -> Result<(VerifyReport, u64)> {
        let ks = self.inner.ks;
        let start = match after {
            Some(hash) => ekeys::successor(&hash.0),
            None => Vec::new(),
        };
        let mut batch = Vec::new();
        let mut more = false;
        for kv in self
            .inner
            .engine
            .scan(ks.blobs, ScanRange::from(&start), Direction::Forward)?
        {
            let (key, value) = kv?;
            if batch.len() == limit {
                more = true;
                break;
            }
            let hash = Blake3Hash(
                key.as_slice()
                    .try_into()
                    .map_err(|_| Error::CorruptRecord {
                        what: "blob",
                        key: key.clone(),
                    })?,
            );
            batch.push((hash, BlobMeta::decode(&key, &value)?));
        }
        let mut report = VerifyReport::default();
        let mut bytes = 0u64;
        for (hash, meta) in &batch {
            report.checked += 1;
            let found = self.hash_stored(hash, meta, pace)?;
            if let Some((size, _)) = found {
                bytes += size;
            }
            if let Some(problem) = blob_problem(hash, meta.size, found) {
                report.problems.push(problem);
            }
        }
        report.next = if more {
            batch.last().map(|(hash, _)| *hash)
        } else {
            None
        };
        Ok((report, bytes))
    }

    /// The size and BLAKE3 of the bytes stored for blob `hash`, or `None` when there are
    /// none. `pace` is called with the length of every piece read.
    pub(super) fn hash_stored(
        &self,
        hash: &Blake3Hash,
        meta: &BlobMeta,
        pace: &mut dyn FnMut(u64),
    ) -> Result<Option<(u64, Blake3Hash)>> {
        if meta.inline {
            let found = self
                .inner
                .engine
                .get(self.inner.ks.inline, &hash.0)?
                .map(|bytes| (bytes.len() as u64, Blake3Hash::of(&bytes)));
            if let Some((size, _)) = found {
                pace(size);
            }
            return Ok(found);
        }
        let Some(mut reader) = self.inner.backend.open_range(hash, 0, u64::MAX)? else {
            return Ok(None);
        };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| Error::io("reading blob", hash.to_hex(), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            pace(n as u64);
        }
        Ok(Some((size, Blake3Hash(*hasher.finalize().as_bytes()))))
    }

    /// Recomputes every reference count, blob-file entry, bucket statistic and store
    /// statistic from the file records, checks the indexes, and reports every difference.
    /// Reads everything: for tests and repairs, not for serving.
    ///
    /// # Errors
    /// The engine's error.
    pub fn check(&self) -> Result<CheckReport> {
        let ks = self.inner.ks;
        let snap = self.inner.engine.snapshot()?;
        let view: &dyn ReadView = snap.as_ref();
        let mut report = CheckReport::default();
        let mut problem = |p: Inconsistency| report.problems.push(p);
        let mut refs: HashMap<Blake3Hash, i64> = HashMap::new();
        // The `bs.blob_files` entry each file with present content needs: key → visibility.
        let mut blob_files: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        #[derive(Default)]
        struct Agg {
            files: i64,
            logical: i64,
            blobs: HashSet<Blake3Hash>,
        }
        let mut buckets: HashMap<String, Agg> = HashMap::new();
        let (mut files, mut logical) = (0i64, 0i64);
        let mut expiry_expected: HashSet<Vec<u8>> = HashSet::new();
        let mut file_count = 0u64;
        // Each file with present content: its id, blob and visibility.
        let mut present: Vec<(FileId, Blake3Hash, bool)> = Vec::new();

        for kv in view.scan(ks.files, ScanRange::all(), Direction::Forward)? {
            let (key, value) = kv?;
            let record = FileRecord::decode_entry(&key, &value)?;
            let id = record.id;
            file_count += 1;
            files += 1;
            let agg = buckets
                .entry(record.bucket.as_str().to_string())
                .or_default();
            agg.files += 1;
            if view
                .get(ks.bucket_files, &keys::bucket_file(&record.bucket, id))?
                .is_none()
            {
                problem(Inconsistency::Record {
                    detail: format!("file {id} is missing from bucket {}", record.bucket),
                });
            }
            if record.content == ContentState::Present {
                agg.logical += as_i64(record.size);
                agg.blobs.insert(record.blake3);
                logical += as_i64(record.size);
                *refs.entry(record.blake3).or_default() += 1;
                blob_files.insert(
                    keys::blob_file(&record.blake3, record.bucket.as_str(), id),
                    vec![visibility_code(record.restricted)],
                );
                present.push((id, record.blake3, record.restricted));
                if let Some(at) = record.expires {
                    expiry_expected.insert(keys::expiry(at, id));
                }
            }
        }
        report.files = file_count;
        for found in compare_index(view, ks.blob_files, "blob-file", blob_files)? {
            problem(found);
        }
        // Store format 1's counters, which the upgrade removed (`store/format.rs`; its digest
        // entries are found below, as entries no file needs).
        if view
            .scan(ks.bucket_blobs, ScanRange::all(), Direction::Forward)?
            .next()
            .is_some()
        {
            problem(Inconsistency::Record {
                detail: "bucket-blob counters of store format 1 are left".to_string(),
            });
        }

        let mut sizes: HashMap<Blake3Hash, u64> = HashMap::new();
        let mut metas: HashMap<Blake3Hash, BlobMeta> = HashMap::new();
        let mut zero_since: HashMap<Blake3Hash, Option<Timestamp>> = HashMap::new();
        // Blobs whose record (version 1) keeps its count in `bs.refs`.
        let mut counted_apart: HashSet<Blake3Hash> = HashSet::new();
        let (mut blob_count, mut stored) = (0i64, 0i64);
        for kv in view.scan(ks.blobs, ScanRange::all(), Direction::Forward)? {
            let (key, value) = kv?;
            let meta = BlobMeta::decode(&key, &value)?;
            let hash = Blake3Hash(
                key.as_slice()
                    .try_into()
                    .map_err(|_| Error::CorruptRecord {
                        what: "blob",
                        key: key.clone(),
                    })?,
            );
            blob_count += 1;
            stored += as_i64(meta.size);
            sizes.insert(hash, meta.size);
            metas.insert(hash, meta.clone());
            zero_since.insert(hash, meta.zero_since);
            let expected = refs.remove(&hash).unwrap_or(0);
            let found = match meta.refs {
                Some(refs) => as_i64(refs),
                None => {
                    counted_apart.insert(hash);
                    view.counter(ks.refs, &hash.0)?
                }
            };
            if found != expected {
                problem(Inconsistency::Counter {
                    name: format!("refcount of blob {hash}"),
                    expected,
                    found,
                });
            }
            match (expected, meta.zero_since) {
                (0, None) => problem(Inconsistency::Record {
                    detail: format!("blob {hash} has no reference but no zero-ref time"),
                }),
                (0, Some(since)) => {
                    if view
                        .get(ks.zero_refs, &keys::zero_ref(since, &hash))?
                        .is_none()
                    {
                        problem(Inconsistency::Record {
                            detail: format!("blob {hash} is missing from the zero-ref index"),
                        });
                    }
                }
                (_, Some(_)) => problem(Inconsistency::Record {
                    detail: format!("referenced blob {hash} has a zero-ref time"),
                }),
                (_, None) => {}
            }
            if meta.inline && view.get(ks.inline, &hash.0)?.is_none() {
                problem(Inconsistency::Record {
                    detail: format!("inline blob {hash} has no content"),
                });
            }
        }
        report.blobs = as_u64(blob_count);
        let mut digests: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for (id, hash, restricted) in present {
            if let Some(meta) = metas.get(&hash) {
                let keys = Self::digest_keys(meta, restricted, id);
                digests.extend(keys.into_iter().map(|key| (key, Vec::new())));
            }
        }
        drop(metas);
        for found in compare_index(view, ks.digests, "digest", digests)? {
            problem(found);
        }
        for (hash, count) in refs {
            problem(Inconsistency::Record {
                detail: format!("{count} file(s) link to blob {hash}, which has no record"),
            });
        }
        for kv in view.scan(ks.refs, ScanRange::all(), Direction::Forward)? {
            let (key, _) = kv?;
            let hash = <[u8; 32]>::try_from(key.as_slice()).map(Blake3Hash);
            match hash {
                Ok(hash) if counted_apart.contains(&hash) => {}
                Ok(hash) if sizes.contains_key(&hash) => problem(Inconsistency::Record {
                    detail: format!("blob {hash} has its count in its record and a counter"),
                }),
                _ => problem(Inconsistency::Record {
                    detail: format!("refcount without a blob at key {key:02x?}"),
                }),
            }
        }
        for kv in view.scan(ks.zero_refs, ScanRange::all(), Direction::Forward)? {
            let (key, _) = kv?;
            let valid = keys::parse_zero_ref(&key)
                .is_some_and(|(since, hash)| zero_since.get(&hash) == Some(&Some(since)));
            if !valid {
                problem(Inconsistency::Record {
                    detail: format!(
                        "zero-ref entry that does not match its blob at key {key:02x?}"
                    ),
                });
            }
        }
        for kv in view.scan(ks.bucket_files, ScanRange::all(), Direction::Forward)? {
            let (key, _) = kv?;
            let valid = match keys::parse_bucket_file(&key) {
                Some((bucket, id)) => match view.get(ks.files, &keys::file(id))? {
                    Some(bytes) => FileRecord::decode(id, &key, &bytes)
                        .is_ok_and(|r| r.bucket.as_str() == bucket),
                    None => false,
                },
                None => false,
            };
            if !valid {
                problem(Inconsistency::Record {
                    detail: format!("bucket listing entry without its file at key {key:02x?}"),
                });
            }
        }
        for kv in view.scan(ks.expiry, ScanRange::all(), Direction::Forward)? {
            let (key, _) = kv?;
            if !expiry_expected.remove(&key) {
                problem(Inconsistency::Record {
                    detail: format!("stale expiry entry {key:02x?}"),
                });
            }
        }
        for key in expiry_expected {
            problem(Inconsistency::Record {
                detail: format!("missing expiry entry {key:02x?}"),
            });
        }
        // Bucket statistics: every bucket with records or with stored counters.
        let mut stat_buckets: HashSet<String> = buckets.keys().cloned().collect();
        for kv in view.scan(ks.stats, ScanRange::prefix(b"b"), Direction::Forward)? {
            let (key, _) = kv?;
            if let Some((bucket, _)) = keys::parse_bucket_stat(&key) {
                stat_buckets.insert(bucket);
            }
        }
        for bucket in stat_buckets {
            let agg = buckets.remove(&bucket).unwrap_or_default();
            let unique: i64 = agg
                .blobs
                .iter()
                .map(|h| as_i64(sizes.get(h).copied().unwrap_or(0)))
                .sum();
            let Ok(name) = BucketName::new(bucket.clone()) else {
                problem(Inconsistency::Record {
                    detail: format!("statistics for invalid bucket name {bucket:?}"),
                });
                continue;
            };
            for (field, label, expected) in [
                (keys::STAT_FILES, "files", agg.files),
                (keys::STAT_LOGICAL, "logical bytes", agg.logical),
                (keys::STAT_UNIQUE, "unique bytes", unique),
            ] {
                let found = view.counter(ks.stats, &keys::bucket_stat(&name, field))?;
                if found != expected {
                    problem(Inconsistency::Counter {
                        name: format!("{label} of bucket {bucket}"),
                        expected,
                        found,
                    });
                }
            }
        }
        for (field, label, expected) in [
            (keys::STAT_FILES, "files", files),
            (keys::STAT_LOGICAL, "logical bytes", logical),
            (keys::STAT_BLOBS, "blobs", blob_count),
            (keys::STAT_STORED, "stored bytes", stored),
        ] {
            let found = view.counter(ks.stats, &keys::global_stat(field))?;
            if found != expected {
                problem(Inconsistency::Counter {
                    name: format!("store {label}"),
                    expected,
                    found,
                });
            }
        }
        Ok(report)
    }
}

/// The differences between index `keyspace` (`what`, for the messages) and the entries it
/// should hold, `expected` (key → value): entries no record needs, entries with another
/// value, entries missing.
fn compare_index(
    view: &dyn ReadView,
    keyspace: Keyspace,
    what: &str,
    mut expected: HashMap<Vec<u8>, Vec<u8>>,
) -> Result<Vec<Inconsistency>> {
    let mut found = Vec::new();
    let mut record = |detail| found.push(Inconsistency::Record { detail });
    for kv in view.scan(keyspace, ScanRange::all(), Direction::Forward)? {
        let (key, value) = kv?;
        match expected.remove(&key) {
            Some(wanted) if wanted == value => {}
            Some(wanted) => record(format!(
                "{what} entry {key:02x?} holds {value:02x?}, not {wanted:02x?}"
            )),
            None => record(format!(
                "{what} entry {key:02x?} has no file with present content"
            )),
        }
    }
    for key in expected.into_keys() {
        record(format!("{what} entry {key:02x?} is missing"));
    }
    Ok(found)
}
