//! The blob store against a plain model: the operations, the model's idea of their effect,
//! and the check of a store against it after every step. After a step the check reads back
//! what the step changed (the statistics of the buckets, the blobs and the files it touched,
//! and the summary); after a restart and at the end of a run it reads everything: every
//! bucket, blob and file, and the store's own `check`, a scan of the whole store. Checking
//! everything after every step made a run quadratic in its length, for nothing a step could
//! have changed elsewhere that the next full check would not see.
//!
//! Two drivers share it: the property test in the blob store's `tests/it/model.rs` (random
//! operations, engine reopens) and the fuzz target `blob_model` in `fuzz/bodies`, which
//! restarts through a crash of a `FaultyEngine`.
//!
//! At the end of a run, the store's change feed is replayed from revision 0 onto an empty
//! store, which must then hold exactly the same files, records, buckets, blobs, statistics
//! and feed (the replay property replicas rely on).

// Test code: a failed unwrap is a failed check.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::time::Duration;

use crate::{
    Access, Blake3Hash, BucketName, Error, FileId, Store, StoreBuilder, Timestamp, UploadRequest,
};

const HOUR: Duration = Duration::from_secs(3600);
/// The buckets the operations spread files over.
pub const BUCKETS: [&str; 3] = ["m0", "m1", "m2"];

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Op {
    /// Uploads content number `content` (of the driver's sizes) to bucket number `bucket`.
    #[allow(missing_docs)] // The variant's documentation names its fields.
    Upload {
        bucket: usize,
        content: usize,
        expires_in_hours: Option<u64>,
        restricted: bool,
    },
    /// Deletes the file at this position (modulo the number of files), if there is one.
    DeleteFile(usize),
    /// Cuts the content of the file at this position, keeping its record.
    DeleteContent(usize),
    /// Sets (or clears) the expiry of the file at this position, hours from now.
    #[allow(missing_docs)]
    SetExpiry {
        file: usize,
        expires_in_hours: Option<u64>,
    },
    /// Makes the file at this position restricted or public.
    #[allow(missing_docs)]
    SetRestricted { file: usize, restricted: bool },
    /// Sets (or removes) the quota of bucket number `bucket`.
    #[allow(missing_docs)]
    SetQuota { bucket: usize, quota: Option<u64> },
    /// Moves the store's clock.
    #[allow(missing_docs)]
    Advance { hours: u64 },
    /// One GC pass.
    Gc,
    /// Closes and reopens the store (the driver says how: a clean reopen or a crash).
    Restart,
    /// Puts the blob record of content number `content` (modulo the contents), if stored,
    /// back in version 1 with its count in `bs.refs`, as a build before 2026-12-06 left it:
    /// the steps after it migrate it (`Store::write_blob_record_of_version_1`).
    WriteOlderBlobRecord(usize),
    /// Puts the whole store back in store format 1, as a build up to 2026-12-06 left it
    /// (`Store::write_store_format_1`), and restarts it: the open upgrades it.
    WriteStoreFormat1AndRestart,
}

/// What the model needs of the store under test.
pub trait Subject {
    /// The store under test.
    fn store(&self) -> &Store;
    /// Moves the store's clock.
    fn advance(&mut self, by: Duration);
    /// Closes and reopens the store (cleanly, or through a crash).
    fn restart(&mut self);
}

/// Content number `index` of a run whose contents have `sizes`: distinct bytes per index.
pub fn model_content(sizes: &[usize], index: usize) -> Vec<u8> {
    let mut state = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..sizes[index])
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn bucket(index: usize) -> BucketName {
    BucketName::new(BUCKETS[index]).expect("valid bucket name")
}

#[derive(Clone, Debug)]
struct ModelFile {
    bucket: usize,
    content: usize,
    expires: Option<Timestamp>,
    present: bool,
}

/// What a step changed, which the check after it reads back.
#[derive(Debug, Default)]
struct Touched {
    /// Files whose record, content or liveness changed (deleted ones included).
    files: BTreeSet<FileId>,
    /// Contents whose blob or reference count changed.
    contents: BTreeSet<usize>,
    /// Buckets whose statistics or quota changed.
    buckets: BTreeSet<usize>,
    /// Everything (a restart): every bucket, blob and file, and the store's `check`.
    everything: bool,
}

impl Touched {
    fn file(&mut self, id: FileId, file: &ModelFile) {
        self.files.insert(id);
        self.contents.insert(file.content);
        self.buckets.insert(file.bucket);
    }
}

#[derive(Debug)]
struct Model<'a> {
    sizes: &'a [usize],
    /// Each content's bytes and hash, made once per run (not at every check).
    contents: Vec<Vec<u8>>,
    hashes: Vec<Blake3Hash>,
    files: BTreeMap<FileId, ModelFile>,
    /// Stored blobs by content index, with their zero-reference time.
    blobs: HashMap<usize, Option<Timestamp>>,
    /// The quota of each bucket that has one.
    quotas: HashMap<usize, u64>,
}

impl Model<'_> {
    fn refs(&self, content: usize) -> usize {
        self.files
            .values()
            .filter(|f| f.present && f.content == content)
            .count()
    }

    fn unlinked(&mut self, content: usize, now: Timestamp) {
        if self.refs(content) == 0 {
            self.blobs.insert(content, Some(now));
        }
    }

    /// The logical bytes of bucket `b`: the sizes of its files with content.
    fn logical(&self, b: usize) -> u64 {
        self.files
            .values()
            .filter(|f| f.bucket == b && f.present)
            .map(|f| self.sizes[f.content] as u64)
            .sum()
    }

    fn nth(&self, n: usize) -> Option<FileId> {
        if self.files.is_empty() {
            return None;
        }
        self.files.keys().nth(n % self.files.len()).copied()
    }

    /// Applies `op` to the store and to the model; says what it changed.
    fn apply(&mut self, subject: &mut impl Subject, op: Op) -> Touched {
        let now = subject.store().now();
        let mut touched = Touched::default();
        match op {
            Op::Upload {
                bucket: b,
                content: c,
                expires_in_hours,
                restricted,
            } => {
                let mut request = UploadRequest::new(bucket(b), format!("c{c}"));
                request.expires = expires_in_hours.map(|h| now.plus(HOUR * h as u32));
                request.restricted = restricted;
                let result =
                    subject
                        .store()
                        .upload_bytes(request.clone(), &self.contents[c], "tester");
                let over_quota = self
                    .quotas
                    .get(&b)
                    .is_some_and(|&q| self.logical(b) + self.sizes[c] as u64 > q);
                if over_quota {
                    assert!(
                        matches!(result, Err(Error::QuotaExceeded { .. })),
                        "{result:?}"
                    );
                    // Nothing changed: the bucket's statistics and the blob say so.
                    touched.buckets.insert(b);
                    touched.contents.insert(c);
                    return touched;
                }
                let file = result.unwrap().record;
                let model_file = ModelFile {
                    bucket: b,
                    content: c,
                    expires: request.expires,
                    present: true,
                };
                touched.file(file.id, &model_file);
                self.files.insert(file.id, model_file);
                self.blobs.insert(c, None);
            }
            Op::DeleteFile(n) => {
                if let Some(id) = self.nth(n) {
                    subject.store().delete_file(id, "tester").unwrap();
                    let file = self.files.remove(&id).unwrap();
                    touched.file(id, &file);
                    if file.present {
                        self.unlinked(file.content, now);
                    }
                }
            }
            Op::DeleteContent(n) => {
                if let Some(id) = self.nth(n) {
                    subject.store().delete_content(id, "tester").unwrap();
                    let file = self.files.get_mut(&id).unwrap();
                    touched.file(id, file);
                    if file.present {
                        file.present = false;
                        let c = file.content;
                        self.unlinked(c, now);
                    }
                }
            }
            Op::SetExpiry {
                file: n,
                expires_in_hours,
            } => {
                if let Some(id) = self.nth(n) {
                    let expires = expires_in_hours.map(|h| now.plus(HOUR * h as u32));
                    let record = subject
                        .store()
                        .set_expiry(id, expires, "tester")
                        .unwrap()
                        .value;
                    assert_eq!(record.expires, expires);
                    let file = self.files.get_mut(&id).unwrap();
                    touched.file(id, file);
                    file.expires = expires;
                }
            }
            Op::SetRestricted {
                file: n,
                restricted,
            } => {
                if let Some(id) = self.nth(n) {
                    let store = subject.store();
                    let record = store
                        .set_restricted(id, restricted, "tester")
                        .unwrap()
                        .value;
                    assert_eq!(record.restricted, restricted);
                    touched.file(id, &self.files[&id]);
                }
            }
            Op::SetQuota { bucket: b, quota } => {
                subject
                    .store()
                    .set_quota(&bucket(b), quota, "admin")
                    .unwrap();
                match quota {
                    Some(q) => self.quotas.insert(b, q),
                    None => self.quotas.remove(&b),
                };
                touched.buckets.insert(b);
            }
            Op::Advance { hours } => {
                subject.advance(HOUR * hours as u32);
                // Time makes files with an expiry unreadable: their content answers "gone".
                for (id, file) in &self.files {
                    if file.expires.is_some() {
                        touched.file(*id, file);
                    }
                }
            }
            Op::Gc => {
                let report = subject.store().gc(10_000).unwrap();
                let cutoff = now.minus(crate::DEFAULT_EXPIRY_GRACE);
                let due: Vec<FileId> = self
                    .files
                    .iter()
                    .filter(|(_, f)| f.present && f.expires.is_some_and(|e| e <= cutoff))
                    .map(|(id, _)| *id)
                    .collect();
                for id in &due {
                    let file = self.files.get_mut(id).unwrap();
                    touched.file(*id, file);
                    file.present = false;
                    let c = file.content;
                    self.unlinked(c, now);
                }
                let grace_cutoff = now.minus(crate::DEFAULT_GRACE);
                let before = self.blobs.len();
                self.blobs
                    .retain(|_, zero| !zero.is_some_and(|z| z < grace_cutoff));
                assert_eq!(report.expired_files, due.len() as u64);
                assert_eq!(report.collected_blobs, (before - self.blobs.len()) as u64);
                // Collected blobs: every content is read back (there are a handful).
                touched.contents.extend(0..self.sizes.len());
                // The history keys of the events so far, written here on the caller's thread
                // (a driver may run without the background indexer): a later crash then finds
                // the mark at this point, and the events after it still to index.
                subject.store().change_log().index_pending().unwrap();
            }
            Op::Restart => {
                subject.restart();
                touched.everything = true;
            }
            Op::WriteStoreFormat1AndRestart => {
                subject.store().write_store_format_1().unwrap();
                subject.restart();
                touched.everything = true;
            }
            Op::WriteOlderBlobRecord(content) => {
                let c = content % self.sizes.len();
                let moved = subject
                    .store()
                    .write_blob_record_of_version_1(&self.hashes[c])
                    .unwrap();
                assert_eq!(moved.is_some(), self.blobs.contains_key(&c), "content {c}");
                if let Some(refs) = moved {
                    assert_eq!(refs, self.refs(c) as u64, "refcount of content {c}");
                }
                touched.contents.insert(c);
            }
        }
        touched
    }

    /// Checks what `touched` names against the store; everything when it says so.
    fn check(&self, store: &Store, touched: &Touched) {
        let now = store.now();
        let all = touched.everything;
        for (i, name) in BUCKETS.iter().enumerate() {
            if !all && !touched.buckets.contains(&i) {
                continue;
            }
            let stats = store.bucket_stats(&bucket(i)).unwrap();
            let files: Vec<&ModelFile> = self.files.values().filter(|f| f.bucket == i).collect();
            let present = || files.iter().filter(|f| f.present);
            let logical: usize = present().map(|f| self.sizes[f.content]).sum();
            let distinct: HashSet<usize> = present().map(|f| f.content).collect();
            let unique: usize = distinct.iter().map(|&c| self.sizes[c]).sum();
            assert_eq!(stats.files, files.len() as u64, "files of {name}");
            assert_eq!(
                stats.logical_bytes, logical as u64,
                "logical bytes of {name}"
            );
            assert_eq!(stats.unique_bytes, unique as u64, "unique bytes of {name}");
        }
        for c in 0..self.sizes.len() {
            if !all && !touched.contents.contains(&c) {
                continue;
            }
            let info = store.blob_info(&self.hashes[c]).unwrap();
            match self.blobs.get(&c) {
                Some(zero_since) => {
                    let info = info.unwrap_or_else(|| panic!("blob {c} was collected"));
                    assert_eq!(info.refcount, self.refs(c) as u64, "refcount of {c}");
                    assert_eq!(info.zero_ref_since, *zero_since, "zero-ref time of {c}");
                }
                None => assert!(info.is_none(), "blob {c} should be gone"),
            }
        }
        let files: Vec<(&FileId, Option<&ModelFile>)> = if all {
            self.files.iter().map(|(id, f)| (id, Some(f))).collect()
        } else {
            touched
                .files
                .iter()
                .map(|id| (id, self.files.get(id)))
                .collect()
        };
        for (id, file) in files {
            let result = store.read(*id, Access::Trusted, None);
            let Some(file) = file else {
                assert!(
                    matches!(result, Err(Error::NotFound { .. })),
                    "deleted {id}: {result:?}"
                );
                continue;
            };
            let live = file.present && file.expires.is_none_or(|e| now < e);
            if live {
                let mut out = Vec::new();
                result.unwrap().read_to_end(&mut out).unwrap();
                assert!(out == self.contents[file.content], "content of {id}");
            } else {
                assert!(
                    matches!(result, Err(Error::ContentGone { .. })),
                    "{id}: {result:?}"
                );
            }
        }
        let summary = store.summary().unwrap();
        assert_eq!(summary.files, self.files.len() as u64);
        assert_eq!(summary.blobs, self.blobs.len() as u64);
        if all {
            let report = store.check().unwrap();
            assert!(report.is_ok(), "{:#?}", report.problems);
        }
    }
}

/// Runs `ops` on `subject` and on the model (contents of `sizes`), checking the store against
/// the model after every step (what the step changed; everything after a restart) and
/// everything at the end, verifying every blob and replaying the change feed.
pub fn run_against_model(
    subject: &mut impl Subject,
    sizes: &[usize],
    ops: impl IntoIterator<Item = Op>,
) {
    let contents: Vec<Vec<u8>> = (0..sizes.len()).map(|c| model_content(sizes, c)).collect();
    let mut model = Model {
        sizes,
        hashes: contents.iter().map(|bytes| Blake3Hash::of(bytes)).collect(),
        contents,
        files: BTreeMap::new(),
        blobs: HashMap::new(),
        quotas: HashMap::new(),
    };
    for op in ops {
        let touched = model.apply(subject, op);
        model.check(subject.store(), &touched);
    }
    let everything = Touched {
        everything: true,
        ..Touched::default()
    };
    model.check(subject.store(), &everything);
    subject.store().change_log().index_pending().unwrap();
    let mut after = None;
    loop {
        let report = subject.store().verify(after, 100).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        match report.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    check_replay(subject.store(), &model.contents, &BUCKETS);
}

/// Replays `source`'s change feed from revision 0 onto an empty store (blob bytes come from
/// `contents`, every content ever uploaded) and checks that the copy equals the source: the
/// files and records of `buckets`, their statistics and quotas, every blob, the summary, and
/// the feed itself (the copy records each applied change as its own, by the same actor).
pub fn check_replay(source: &Store, contents: &[Vec<u8>], buckets: &[&str]) {
    // Blob bytes in memory: the filesystem backend would fsync every replayed blob and its
    // directories, which is most of a fuzz input's time on a busy disk. With them in memory
    // the data directory is never used (only resumable uploads write there), so none is made.
    let replica = StoreBuilder::new(engine::EngineConfig::memory(), super::UNUSED_DATA_DIR)
        .backend(std::sync::Arc::new(super::MemBackend::new()))
        .inline_threshold(source.inline_threshold())
        .open()
        .expect("open the replica");
    // No history-indexer thread for a copy nobody asks for history.
    replica.change_log().set_background_indexing(false);
    let contents: HashMap<Blake3Hash, Vec<u8>> = contents
        .iter()
        .map(|bytes| (Blake3Hash::of(bytes), bytes.clone()))
        .collect();
    let fetch = |hash: &Blake3Hash| contents.get(hash).cloned();
    let feed = source.changes(0, usize::MAX).unwrap();
    for change in &feed {
        let revision = replica
            .apply_change(change, &fetch)
            .unwrap_or_else(|error| panic!("replaying {change:?}: {error}"));
        assert_eq!(revision, change.revision, "{change:?}");
    }
    assert_eq!(replica.changes(0, usize::MAX).unwrap(), feed);
    for &name in buckets {
        let b = BucketName::new(name).expect("valid bucket name");
        assert_eq!(
            replica.bucket_stats(&b).unwrap(),
            source.bucket_stats(&b).unwrap(),
            "statistics of {name}"
        );
        assert_eq!(
            replica.list_bucket(&b, None, usize::MAX).unwrap(),
            source.list_bucket(&b, None, usize::MAX).unwrap(),
            "files of {name}"
        );
    }
    for hash in contents.keys() {
        assert_eq!(
            replica.blob_info(hash).unwrap(),
            source.blob_info(hash).unwrap(),
            "blob {hash}"
        );
    }
    assert_eq!(replica.summary().unwrap(), source.summary().unwrap());
    let report = replica.check().unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
}
