//! Property test: random sequences of upload, delete, cut, clock advance, GC and reopen
//! against a plain model, checking bucket statistics, reference counts, content, and that
//! no referenced blob is ever collected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::time::Duration;

use blobstore::{Access, Blake3Hash, Error, FileId, Store, Timestamp, UploadRequest};
use engine::Backend;
use proptest::prelude::*;

use crate::common::{bucket, content, Harness};

const HOUR: Duration = Duration::from_secs(3600);
const SIZES: [usize; 6] = [0, 10, 100, 16 * 1024, 16 * 1024 + 1, 70_000];
const BUCKETS: [&str; 3] = ["m0", "m1", "m2"];

#[derive(Clone, Debug)]
enum Op {
    Upload {
        bucket: usize,
        content: usize,
        expires_in_hours: Option<u64>,
        restricted: bool,
    },
    DeleteFile(usize),
    DeleteContent(usize),
    Advance(u64),
    Gc,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..BUCKETS.len(), 0..SIZES.len(), proptest::option::of(0u64..300), any::<bool>())
            .prop_map(|(bucket, content, expires_in_hours, restricted)| Op::Upload {
                bucket,
                content,
                expires_in_hours,
                restricted,
            }),
        2 => any::<usize>().prop_map(Op::DeleteFile),
        1 => any::<usize>().prop_map(Op::DeleteContent),
        2 => prop_oneof![0u64..30, 0u64..400].prop_map(Op::Advance),
        2 => Just(Op::Gc),
        1 => Just(Op::Reopen),
    ]
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
    /// Stored blobs by content index, with their zero-ref time.
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

fn data(content_index: usize) -> Vec<u8> {
    content(content_index as u64, SIZES[content_index])
}

fn check_against(store: &Store, model: &Model) {
    let now = store.now();
    for (i, name) in BUCKETS.iter().enumerate() {
        let stats = store.bucket_stats(&bucket(name)).unwrap();
        let files: Vec<&MFile> = model.files.values().filter(|f| f.bucket == i).collect();
        let logical: usize = files
            .iter()
            .filter(|f| f.present)
            .map(|f| SIZES[f.content])
            .sum();
        let distinct: HashSet<usize> = files
            .iter()
            .filter(|f| f.present)
            .map(|f| f.content)
            .collect();
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

fn run(backend: Backend, ops: Vec<Op>) {
    let h = Harness::new(backend);
    let mut store = h.open();
    let mut model = Model::default();
    for op in ops {
        let now = store.now();
        match op {
            Op::Upload {
                bucket: b,
                content: c,
                expires_in_hours,
                restricted,
            } => {
                let mut req = UploadRequest::new(bucket(BUCKETS[b]), format!("c{c}"));
                req.expires = expires_in_hours.map(|h| now.plus(HOUR * h as u32));
                req.restricted = restricted;
                let file = store.upload_bytes(req.clone(), &data(c)).unwrap();
                model.files.insert(
                    file.id,
                    MFile {
                        bucket: b,
                        content: c,
                        expires: req.expires,
                        present: true,
                    },
                );
                model.blobs.insert(c, None);
            }
            Op::DeleteFile(n) => {
                if let Some(id) = model.nth(n) {
                    store.delete_file(id).unwrap();
                    let file = model.files.remove(&id).unwrap();
                    if file.present {
                        model.unlinked(file.content, now);
                    }
                }
            }
            Op::DeleteContent(n) => {
                if let Some(id) = model.nth(n) {
                    store.delete_content(id).unwrap();
                    let file = model.files.get_mut(&id).unwrap();
                    if file.present {
                        file.present = false;
                        let c = file.content;
                        model.unlinked(c, now);
                    }
                }
            }
            Op::Advance(hours) => h.advance(HOUR * hours as u32),
            Op::Gc => {
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
            Op::Reopen => {
                drop(store);
                store = h.open();
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn model_memory(ops in proptest::collection::vec(op(), 1..40)) {
        run(Backend::Memory, ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn model_rocksdb(ops in proptest::collection::vec(op(), 1..30)) {
        run(Backend::Rocksdb, ops);
    }
}

#[cfg(feature = "sled")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn model_sled(ops in proptest::collection::vec(op(), 1..30)) {
        run(Backend::Sled, ops);
    }
}
