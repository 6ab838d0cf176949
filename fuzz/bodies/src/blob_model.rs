//! The blob store against a plain model: random uploads, deletes, content cuts, clock
//! advances, GC passes and crashes (a [`FaultyEngine`] keeping only what was synced; the blob
//! bytes, in memory here, staying as files would), checking after every step the bucket
//! statistics, reference counts, zero-reference times, every file's content, and the store's
//! own `check`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use blobstore::{
    Access, Blake3Hash, BucketName, Error, FileId, ManualClock, Store, StoreBuilder, Timestamp,
    UploadRequest,
};
use engine::FaultyEngine;

use crate::bytes::Bytes;
use crate::mem_backend::MemBackend;

const HOUR: Duration = Duration::from_secs(3600);
/// Around the inline threshold of 64 used here, so both inline and file blobs occur.
const SIZES: [usize; 6] = [0, 10, 63, 64, 65, 5000];
const BUCKETS: [&str; 3] = ["m0", "m1", "m2"];
const MAX_OPS: usize = 64;

fn data(content: usize) -> Vec<u8> {
    let mut state = (content as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..SIZES[content])
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn bucket(i: usize) -> BucketName {
    BucketName::new(BUCKETS[i]).expect("valid bucket")
}

#[derive(Clone, Debug)]
struct MFile {
    bucket: usize,
    content: usize,
    expires: Option<Timestamp>,
    present: bool,
}

#[derive(Default, Debug)]
struct Model {
    files: BTreeMap<FileId, MFile>,
    /// Stored blobs by content index, with their zero-reference time.
    blobs: HashMap<usize, Option<Timestamp>>,
}

impl Model {
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

    fn nth(&self, n: usize) -> Option<FileId> {
        if self.files.is_empty() {
            return None;
        }
        self.files.keys().nth(n % self.files.len()).copied()
    }
}

fn check_against(store: &Store, model: &Model) {
    let now = store.now();
    for (i, name) in BUCKETS.iter().enumerate() {
        let stats = store.bucket_stats(&bucket(i)).unwrap();
        let files: Vec<&MFile> = model.files.values().filter(|f| f.bucket == i).collect();
        let present = || files.iter().filter(|f| f.present);
        let logical: usize = present().map(|f| SIZES[f.content]).sum();
        let distinct: HashSet<usize> = present().map(|f| f.content).collect();
        let unique: usize = distinct.iter().map(|&c| SIZES[c]).sum();
        assert_eq!(stats.files, files.len() as u64, "files of {name}");
        assert_eq!(
            stats.logical_bytes, logical as u64,
            "logical bytes of {name}"
        );
        assert_eq!(stats.unique_bytes, unique as u64, "unique bytes of {name}");
    }
    for c in 0..SIZES.len() {
        let info = store.blob_info(&Blake3Hash::of(&data(c))).unwrap();
        match model.blobs.get(&c) {
            Some(zero_since) => {
                let info = info.unwrap_or_else(|| panic!("blob {c} was collected"));
                assert_eq!(info.refcount, model.refs(c) as u64, "refcount of {c}");
                assert_eq!(info.zero_ref_since, *zero_since, "zero-ref time of {c}");
            }
            None => assert!(info.is_none(), "blob {c} should be gone"),
        }
    }
    for (id, file) in &model.files {
        let result = store.read(*id, Access::Trusted, None);
        let live = file.present && file.expires.is_none_or(|e| now < e);
        if live {
            let mut out = Vec::new();
            result.unwrap().read_to_end(&mut out).unwrap();
            assert!(out == data(file.content), "content of {id}");
        } else {
            assert!(
                matches!(result, Err(Error::ContentGone { .. })),
                "{id}: {result:?}"
            );
        }
    }
    let summary = store.summary().unwrap();
    assert_eq!(summary.files, model.files.len() as u64);
    assert_eq!(summary.blobs, model.blobs.len() as u64);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
}

fn open(
    engine: &Arc<FaultyEngine>,
    dir: &std::path::Path,
    blobs: &MemBackend,
    clock: &Arc<ManualClock>,
) -> Store {
    StoreBuilder::with_engine(Arc::clone(engine) as Arc<dyn engine::Engine>, dir)
        .backend(Arc::new(blobs.clone()))
        .inline_threshold(64)
        .clock(Arc::clone(clock) as Arc<dyn blobstore::Clock>)
        .open()
        .expect("open store")
}

/// Ops: upload, delete a file, cut its content, advance the clock, GC, crash and reopen.
pub fn blob_model(input: &[u8]) {
    let mut bytes = Bytes::new(input);
    let dir = tempfile::tempdir().expect("temporary directory");
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(
        1_700_000_000_000,
    )));
    let mut engine = Arc::new(FaultyEngine::new(blobstore::KEYSPACES));
    let blobs = MemBackend::default();
    let mut store = open(&engine, dir.path(), &blobs, &clock);
    let mut model = Model::default();
    let mut ops = 0;
    while !bytes.is_empty() && ops < MAX_OPS {
        ops += 1;
        let now = store.now();
        match bytes.below(12) {
            0..=4 => {
                let (b, c) = (bytes.below(BUCKETS.len()), bytes.below(SIZES.len()));
                let expiry = bytes.u8();
                let mut request = UploadRequest::new(bucket(b), format!("c{c}"));
                request.expires = (expiry < 128).then(|| now.plus(HOUR * u32::from(expiry)));
                request.restricted = bytes.bool();
                let file = store.upload_bytes(request.clone(), &data(c)).unwrap();
                model.files.insert(
                    file.id,
                    MFile {
                        bucket: b,
                        content: c,
                        expires: request.expires,
                        present: true,
                    },
                );
                model.blobs.insert(c, None);
            }
            5 | 6 => {
                if let Some(id) = model.nth(bytes.below(256)) {
                    store.delete_file(id).unwrap();
                    let file = model.files.remove(&id).unwrap();
                    if file.present {
                        model.unlinked(file.content, now);
                    }
                }
            }
            7 => {
                if let Some(id) = model.nth(bytes.below(256)) {
                    store.delete_content(id).unwrap();
                    let file = model.files.get_mut(&id).unwrap();
                    if file.present {
                        file.present = false;
                        let c = file.content;
                        model.unlinked(c, now);
                    }
                }
            }
            8 => clock.advance(HOUR * u32::from(bytes.u8())),
            9 | 10 => {
                let report = store.gc(10_000).unwrap();
                let cutoff = now.minus(blobstore::DEFAULT_EXPIRY_GRACE);
                let due: Vec<FileId> = model
                    .files
                    .iter()
                    .filter(|(_, f)| f.present && f.expires.is_some_and(|e| e <= cutoff))
                    .map(|(id, _)| *id)
                    .collect();
                for id in &due {
                    let file = model.files.get_mut(id).unwrap();
                    file.present = false;
                    let c = file.content;
                    model.unlinked(c, now);
                }
                let grace_cutoff = now.minus(blobstore::DEFAULT_GRACE);
                let before = model.blobs.len();
                model
                    .blobs
                    .retain(|_, zero| !zero.is_some_and(|z| z < grace_cutoff));
                assert_eq!(report.expired_files, due.len() as u64);
                assert_eq!(report.collected_blobs, (before - model.blobs.len()) as u64);
            }
            _ => {
                // A crash: only what was synced survives; blob files stay on disk.
                let crashed = Arc::new(engine.crash());
                drop(store);
                engine = crashed;
                store = open(&engine, dir.path(), &blobs, &clock);
            }
        }
        check_against(&store, &model);
    }
    let mut after = None;
    loop {
        let report = store.verify(after, 100).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        match report.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
}
