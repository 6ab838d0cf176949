//! The store's behaviour, one function per property, generic over a [`Harness`]: run on every
//! engine backend by the blob store's tests and over Swift, S3 and SeaweedFS by the
//! object-store crate's. Whatever looks at the blob bytes themselves goes through the harness
//! ([`Harness::stored_blobs`], [`Harness::temporaries`], [`Harness::blob_backend`]), so that no
//! function here assumes where they live.
//!
//! A test crate stamps the suite out for its harness, then one `#[test]` per function and
//! backend with its own macro:
//!
//! ```text
//! mod suite {
//!     blobstore::every_suite_function!(blobstore::suite_for_harness!(crate::common::Harness;));
//! }
//! blobstore::every_suite_function!(common::backend_tests!(suite:));
//! ```

// Test code: a failed unwrap is a failed test. Each function's name says what it checks.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use std::sync::Arc;

use engine::Backend;

use super::support::{
    assert_consistent, bucket, content, corrupt_blob, plant_orphan, read_all, Settings,
};
use crate::{
    Access, Blake3Hash, BlobBackend, BlobProblem, BucketName, ContentState, Digest, Error, FileId,
    Store, TokenError, UploadRequest, Visibility,
};

/// What the suite needs of a test harness: a store that can be reopened over the same data, a
/// manual clock, and a view of where the blob bytes live.
pub trait Harness: Sized {
    /// A harness over `backend` (the metadata engine) with `settings`.
    fn with_settings(backend: Backend, settings: Settings) -> Self;

    /// A harness over `backend` with the default settings.
    fn new(backend: Backend) -> Self {
        Self::with_settings(backend, Settings::default())
    }

    /// The settings the next [`open`](Self::open) uses.
    fn settings_mut(&mut self) -> &mut Settings;

    /// Opens the store (drop the previous one first: RocksDB and sled lock their directory).
    fn open(&self) -> Store;

    /// The backend that holds the blob bytes, for planting or damaging blobs behind the
    /// store's back.
    fn blob_backend(&self) -> Arc<dyn BlobBackend>;

    /// How many blobs the backend holds.
    fn stored_blobs(&self) -> usize;

    /// How many temporaries of unfinished uploads are left.
    fn temporaries(&self) -> usize;

    /// Leaves a temporary as an upload that crashed midway does.
    fn plant_temporary(&self);

    /// Moves the store's clock.
    fn advance(&self, by: Duration);
}

/// Hands the name of every function of the suite to a harness's macro that stamps out one
/// `#[test]` per backend, so that a new function runs everywhere the suite runs:
/// `every_suite_function!(common::backend_tests!(suite:))`.
#[macro_export]
macro_rules! every_suite_function {
    ($($stamp:ident)::+ !($($head:tt)*)) => {
        $($stamp)::+!($($head)*
            boundary_sizes,
            dedup_and_stats,
            empty_file_exists_once,
            quota_is_enforced,
            weak_links,
            expiry_with_clock,
            gc_grace_and_revival,
            restricted_tokens,
            bad_input,
            digests_and_lookups,
            pagination_under_concurrent_inserts,
            verify_finds_corruption,
            scrub_records_damage_and_refuses_reads,
            downloads_are_counted,
            reopen_keeps_everything_and_ids_stay_unique,
            orphans_are_swept,
            concurrent_uploads_and_deletes_stay_exact,
            quota_holds_under_concurrent_uploads,
            a_quota_binds_every_upload_after_it_is_set,
            expiry_can_be_moved_or_cleared,
            an_over_quota_declared_length_is_refused_at_once,
        );
    };
}

/// Stamps out the suite for one harness: a non-generic `pub fn NAME(backend: Backend)` per
/// function, for the per-backend test macros. Called through [`every_suite_function!`]:
/// `every_suite_function!(blobstore::suite_for_harness!(crate::common::Harness;))`.
#[macro_export]
macro_rules! suite_for_harness {
    ($harness:ty; $($name:ident),* $(,)?) => {
        $(pub fn $name(backend: $crate::testing::Backend) {
            $crate::testing::suite::$name::<$harness>(backend)
        })*
    };
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn upload(store: &Store, bucket: &BucketName, name: &str, bytes: &[u8]) -> crate::FileRecord {
    store
        .upload_bytes(UploadRequest::new(bucket.clone(), name), bytes, "tester")
        .expect("upload")
        .record
}

pub fn boundary_sizes<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("sizes");
    let t = store.inline_threshold();
    let sizes = [0, 1, t - 1, t, t + 1, 1 << 20, 64 << 20];
    let mut ids = Vec::new();
    for (seed, &size) in sizes.iter().enumerate() {
        let data = content(seed as u64, size);
        let mut up = store
            .begin_upload(UploadRequest::new(b.clone(), format!("f{size}")), "tester")
            .unwrap();
        // Feed uneven chunks, as an HTTP body arrives.
        let mut rest = &data[..];
        let mut step = 1;
        while !rest.is_empty() {
            let n = step.min(rest.len());
            up.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            step = step * 3 + 7;
        }
        assert_eq!(up.size(), size as u64);
        let file = up.commit().unwrap().record;
        assert_eq!(file.size, size as u64);
        assert_eq!(file.blake3, Blake3Hash::of(&data));
        let info = store.blob_info(&file.blake3).unwrap().unwrap();
        assert_eq!(info.inline, size <= t, "size {size}");
        assert_eq!(info.refcount, 1);
        ids.push((file.id, data));
    }
    drop(store);
    let store = h.open();
    for (id, data) in &ids {
        let back = read_all(&store, *id);
        assert_eq!(back.len(), data.len());
        assert!(back == *data, "content of {id} differs");
        if data.len() > 10 {
            let mut part = Vec::new();
            let mut reader = store.read(*id, Access::Anonymous, Some(3..10)).unwrap();
            assert_eq!(reader.len(), 7);
            reader.read_to_end(&mut part).unwrap();
            assert_eq!(part, data[3..10]);
        }
    }
    let stats = store.bucket_stats(&b).unwrap();
    assert_eq!(stats.files, sizes.len() as u64);
    assert_eq!(stats.logical_bytes, sizes.iter().sum::<usize>() as u64);
    assert_consistent(&store);
}

pub fn dedup_and_stats<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let (a, b) = (bucket("a"), bucket("b"));
    let small = content(1, 100);
    let large = content(2, 300_000);
    let f1 = upload(&store, &a, "one", &small);
    let f2 = upload(&store, &a, "two", &small);
    let f3 = upload(&store, &b, "three", &small);
    let f4 = upload(&store, &a, "big", &large);
    let f5 = upload(&store, &b, "big", &large);
    assert_eq!(f1.blake3, f2.blake3);
    let summary = store.summary().unwrap();
    assert_eq!(summary.blobs, 2);
    assert_eq!(summary.stored_bytes, 300_100);
    assert_eq!(summary.logical_bytes, 3 * 100 + 2 * 300_000);
    assert!((summary.dedup_ratio - 600_300.0 / 300_100.0).abs() < 1e-9);
    assert_eq!(store.blob_info(&f1.blake3).unwrap().unwrap().refcount, 3);
    let sa = store.bucket_stats(&a).unwrap();
    assert_eq!(
        (sa.files, sa.logical_bytes, sa.unique_bytes),
        (3, 300_200, 300_100)
    );
    store.delete_file(f1.id, "tester").unwrap();
    let sa = store.bucket_stats(&a).unwrap();
    assert_eq!(
        (sa.files, sa.logical_bytes, sa.unique_bytes),
        (2, 300_100, 300_100)
    );
    store.delete_file(f2.id, "tester").unwrap();
    let sa = store.bucket_stats(&a).unwrap();
    assert_eq!(
        (sa.files, sa.logical_bytes, sa.unique_bytes),
        (1, 300_000, 300_000)
    );
    assert_eq!(store.blob_info(&f1.blake3).unwrap().unwrap().refcount, 1);
    // The large blob is stored once.
    assert_eq!(h.stored_blobs(), 1);
    store.delete_file(f4.id, "tester").unwrap();
    store.delete_file(f5.id, "tester").unwrap();
    store.delete_file(f3.id, "tester").unwrap();
    let empty = store.bucket_stats(&b).unwrap();
    assert_eq!(
        (empty.files, empty.logical_bytes, empty.unique_bytes),
        (0, 0, 0)
    );
    assert!(matches!(store.file(f3.id), Err(Error::NotFound { .. })));
    assert_consistent(&store);
}

pub fn empty_file_exists_once<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("empty");
    let f1 = upload(&store, &b, "a", b"");
    let f2 = upload(&store, &bucket("other"), "b", b"");
    assert_eq!(f1.blake3, f2.blake3);
    assert_eq!(store.summary().unwrap().blobs, 1);
    assert!(read_all(&store, f1.id).is_empty());
    assert_consistent(&store);
}

/// `begin_upload` refuses a declared length over the quota before any byte, and `commit`
/// describes the blob exactly as `blob_info` would (so a caller need not read it again).
pub fn an_over_quota_declared_length_is_refused_at_once<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("declared");
    store.set_quota(&b, Some(1_000), "tester").unwrap();
    let mut request = UploadRequest::new(b.clone(), "big");
    request.declared_length = Some(1_001);
    match store.begin_upload(request, "tester") {
        Err(Error::QuotaExceeded {
            quota, requested, ..
        }) => assert_eq!((quota, requested), (1_000, 1_001)),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    let mut request = UploadRequest::new(b.clone(), "fits");
    request.declared_length = Some(600);
    let mut upload = store.begin_upload(request, "tester").unwrap();
    upload.write_all(&content(1, 600)).unwrap();
    let first = upload.commit().unwrap();
    let blob_info = store.blob_info(&first.record.blake3).unwrap();
    assert_eq!(Some(&first.blob), blob_info.as_ref());
    // A duplicate counts the earlier link, and a second declared 600 no longer fits.
    let again = store
        .upload_bytes(
            UploadRequest::new(bucket("other"), "dup"),
            &content(1, 600),
            "tester",
        )
        .unwrap();
    assert_eq!(again.blob.refcount, 2);
    assert_eq!(
        Some(again.blob),
        store.blob_info(&first.record.blake3).unwrap()
    );
    let mut request = UploadRequest::new(b.clone(), "second");
    request.declared_length = Some(600);
    assert!(matches!(
        store.begin_upload(request, "tester"),
        Err(Error::QuotaExceeded { .. })
    ));
    assert_eq!(store.bucket_stats(&b).unwrap().files, 1);
    assert_consistent(&store);
}

pub fn quota_is_enforced<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("quota");
    store.set_quota(&b, Some(100_000), "tester").unwrap();
    let f1 = upload(&store, &b, "one", &content(1, 60_000));
    let refused = store.upload_bytes(
        UploadRequest::new(b.clone(), "two"),
        &content(2, 50_000),
        "tester",
    );
    match refused {
        Err(Error::QuotaExceeded {
            quota,
            used,
            requested,
            ..
        }) => assert_eq!((quota, used, requested), (100_000, 60_000, 50_000)),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    let stats = store.bucket_stats(&b).unwrap();
    assert_eq!(
        (stats.files, stats.logical_bytes, stats.quota),
        (1, 60_000, Some(100_000))
    );
    assert_eq!(store.summary().unwrap().blobs, 1);
    upload(&store, &b, "three", &content(3, 40_000));
    store.delete_file(f1.id, "tester").unwrap();
    upload(&store, &b, "four", &content(4, 50_000));
    store.set_quota(&b, None, "tester").unwrap();
    upload(&store, &b, "five", &content(5, 500_000));
    // Nothing of the refused upload is stored: only blobs 3, 4, 5 and the zero-ref blob 1.
    assert_eq!(h.stored_blobs(), 4);
    assert_consistent(&store);
}

pub fn weak_links<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("weak");
    let data = content(9, 50_000);
    let f = upload(&store, &b, "x.deb", &data);
    let sha256 = store.blob_info(&f.blake3).unwrap().unwrap().sha256;
    assert_eq!(
        store
            .files_by_digest(&Digest::Sha256(sha256), Visibility::Public, 10)
            .unwrap(),
        vec![f.id]
    );
    let cut = store.delete_content(f.id, "tester").unwrap().value;
    assert_eq!(cut.content, ContentState::Deleted);
    let record = store.file(f.id).unwrap();
    assert_eq!(record.content, ContentState::Deleted);
    assert_eq!(record.filename, "x.deb");
    assert!(matches!(
        store.read(f.id, Access::Anonymous, None),
        Err(Error::ContentGone {
            reason: "deleted",
            ..
        })
    ));
    let stats = store.bucket_stats(&b).unwrap();
    assert_eq!(
        (stats.files, stats.logical_bytes, stats.unique_bytes),
        (1, 0, 0)
    );
    assert!(store
        .files_by_digest(&Digest::Sha256(sha256), Visibility::Public, 10)
        .unwrap()
        .is_empty());
    let info = store.blob_info(&f.blake3).unwrap().unwrap();
    assert_eq!(info.refcount, 0);
    assert!(info.zero_ref_since.is_some());
    // Cutting twice changes nothing.
    store.delete_content(f.id, "tester").unwrap();
    assert_consistent(&store);
    store.delete_file(f.id, "tester").unwrap();
    assert!(matches!(store.file(f.id), Err(Error::NotFound { .. })));
    assert!(matches!(
        store.read(f.id, Access::Anonymous, None),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_file(f.id, "tester"),
        Err(Error::NotFound { .. })
    ));
    assert_consistent(&store);
}

pub fn expiry_with_clock<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("expiring");
    let data = content(5, 40_000);
    let mut req = UploadRequest::new(b.clone(), "tmp.log");
    req.expires = Some(store.now().plus(HOUR));
    let f = store.upload_bytes(req, &data, "tester").unwrap().record;
    assert_eq!(read_all(&store, f.id), data);
    h.advance(2 * HOUR);
    assert!(matches!(
        store.read(f.id, Access::Anonymous, None),
        Err(Error::ContentGone {
            reason: "expired",
            ..
        })
    ));
    // Within the expiry grace the link stays.
    assert_eq!(store.gc(100).unwrap().expired_files, 0);
    assert_eq!(store.blob_info(&f.blake3).unwrap().unwrap().refcount, 1);
    h.advance(7 * DAY);
    let report = store.gc(100).unwrap();
    assert_eq!(report.expired_files, 1);
    assert_eq!(report.collected_blobs, 0);
    let record = store.file(f.id).unwrap();
    assert_eq!(record.content, ContentState::Expired);
    assert_eq!(store.bucket_stats(&b).unwrap().logical_bytes, 0);
    assert_consistent(&store);
    h.advance(DAY + HOUR);
    let report = store.gc(100).unwrap();
    assert_eq!((report.collected_blobs, report.freed_bytes), (1, 40_000));
    assert!(store.blob_info(&f.blake3).unwrap().is_none());
    assert_eq!(h.stored_blobs(), 0);
    assert!(matches!(
        store.read(f.id, Access::Anonymous, None),
        Err(Error::ContentGone { .. })
    ));
    assert_consistent(&store);
}

pub fn gc_grace_and_revival<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("gc");
    let big = content(11, 100_000);
    let small = content(12, 10);
    let f = upload(&store, &b, "big", &big);
    let s = upload(&store, &b, "small", &small);
    store.delete_file(f.id, "tester").unwrap();
    store.delete_file(s.id, "tester").unwrap();
    assert_eq!(store.gc(100).unwrap().collected_blobs, 0);
    h.advance(12 * HOUR);
    assert_eq!(store.gc(100).unwrap().collected_blobs, 0);
    // Revive the big one before the grace ends.
    let again = upload(&store, &b, "big-again", &big);
    let info = store.blob_info(&again.blake3).unwrap().unwrap();
    assert_eq!((info.refcount, info.zero_ref_since), (1, None));
    h.advance(13 * HOUR);
    let report = store.gc(100).unwrap();
    assert_eq!((report.collected_blobs, report.freed_bytes), (1, 10));
    assert!(store.blob_info(&s.blake3).unwrap().is_none());
    assert_eq!(read_all(&store, again.id), big);
    assert_consistent(&store);
    // Bounded batches.
    for i in 0..5 {
        let f = upload(&store, &b, "n", &content(100 + i, 20));
        store.delete_file(f.id, "tester").unwrap();
    }
    h.advance(DAY + HOUR);
    let first = store.gc(2).unwrap();
    assert_eq!((first.collected_blobs, first.more), (2, true));
    let second = store.gc(10).unwrap();
    assert_eq!((second.collected_blobs, second.more), (3, false));
    assert_consistent(&store);
}

pub fn restricted_tokens<H: Harness>(backend: Backend) {
    let mut h = H::new(backend);
    let store = h.open();
    let b = bucket("private");
    let mut req = UploadRequest::new(b.clone(), "secret.txt");
    req.restricted = true;
    let f = store
        .upload_bytes(req.clone(), b"top secret", "tester")
        .unwrap()
        .record;
    req.filename = "other.txt".into();
    let g = store
        .upload_bytes(req, b"also secret", "tester")
        .unwrap()
        .record;
    let public = upload(&store, &b, "public.txt", b"top secret");
    assert!(matches!(
        store.read(f.id, Access::Anonymous, None),
        Err(Error::Forbidden {
            reason: TokenError::Missing,
            ..
        })
    ));
    assert!(store.read(public.id, Access::Anonymous, None).is_ok());
    let token = store.issue_token(f.id, None).unwrap();
    let mut out = String::new();
    store
        .read(f.id, Access::Token(&token), None)
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "top secret");
    // A token for one file does not open another.
    assert!(matches!(
        store.read(g.id, Access::Token(&token), None),
        Err(Error::Forbidden {
            reason: TokenError::BadSignature,
            ..
        })
    ));
    assert!(matches!(
        store.read(f.id, Access::Token("garbage"), None),
        Err(Error::Forbidden {
            reason: TokenError::Malformed,
            ..
        })
    ));
    // Public and restricted files are looked up apart.
    let hash = Digest::Blake3(f.blake3);
    assert_eq!(
        store
            .files_by_digest(&hash, Visibility::Restricted, 10)
            .unwrap(),
        vec![f.id]
    );
    assert_eq!(
        store
            .files_by_digest(&hash, Visibility::Public, 10)
            .unwrap(),
        vec![public.id]
    );
    // Expiry: default lifetime one day.
    h.advance(DAY - HOUR);
    assert!(store.read(f.id, Access::Token(&token), None).is_ok());
    h.advance(2 * HOUR);
    assert!(matches!(
        store.read(f.id, Access::Token(&token), None),
        Err(Error::Forbidden {
            reason: TokenError::Expired,
            ..
        })
    ));
    // Rotation: a token of the old secret is accepted while it is the previous one.
    let old_token = store.issue_token(f.id, Some(HOUR)).unwrap();
    drop(store);
    let old_secret = h.settings_mut().secrets.0;
    h.settings_mut().secrets = ([8; 32], Some(old_secret));
    let store = h.open();
    assert!(store.read(f.id, Access::Token(&old_token), None).is_ok());
    let new_token = store.issue_token(f.id, Some(HOUR)).unwrap();
    drop(store);
    h.settings_mut().secrets = ([9; 32], Some([8; 32]));
    let store = h.open();
    assert!(matches!(
        store.read(f.id, Access::Token(&old_token), None),
        Err(Error::Forbidden {
            reason: TokenError::BadSignature,
            ..
        })
    ));
    assert!(store.read(f.id, Access::Token(&new_token), None).is_ok());
    assert!(store.read(f.id, Access::Trusted, None).is_ok());
}

pub fn bad_input<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("bad");
    let long = "x".repeat(256);
    for name in [
        "",
        "a/b",
        "nul\0",
        "tab\there",
        "bell\u{7}",
        ".",
        "..",
        long.as_str(),
    ] {
        let result = store.begin_upload(UploadRequest::new(b.clone(), name), "tester");
        assert!(
            matches!(result, Err(Error::InvalidFilename { .. })),
            "{name:?} accepted"
        );
    }
    assert!(store
        .begin_upload(UploadRequest::new(b.clone(), "x".repeat(255)), "tester")
        .is_ok());
    assert!(matches!(
        BucketName::new("no spaces"),
        Err(Error::InvalidBucketName { .. })
    ));
    assert!(matches!(
        store.file(FileId(987_654)),
        Err(Error::NotFound { .. })
    ));
    let f = upload(&store, &b, "ok", b"12345");
    assert!(matches!(
        store.read(f.id, Access::Anonymous, Some(2..6)),
        Err(Error::InvalidRange { size: 5, .. })
    ));
    // Announced digests that do not match leave nothing behind.
    let data = content(3, 400_000);
    let mut req = UploadRequest::new(b.clone(), "wrong");
    req.expected_blake3 = Some(Blake3Hash::of(b"something else"));
    let result = store.upload_bytes(req, &data, "tester");
    assert!(matches!(
        result,
        Err(Error::DigestMismatch {
            algorithm: "blake3",
            ..
        })
    ));
    let mut req = UploadRequest::new(b.clone(), "wrong");
    req.expected_sha256 = Some([0; 32]);
    let result = store.upload_bytes(req, &data, "tester");
    assert!(matches!(
        result,
        Err(Error::DigestMismatch {
            algorithm: "sha256",
            ..
        })
    ));
    let mut req = UploadRequest::new(b.clone(), "right");
    req.expected_blake3 = Some(Blake3Hash::of(&data));
    store.upload_bytes(req, &data, "tester").unwrap();
    assert_eq!(store.bucket_stats(&b).unwrap().files, 2);
    assert_eq!(h.temporaries(), 0);
    assert_eq!(h.stored_blobs(), 1);
    // An upload dropped without commit leaves nothing either.
    let mut up = store
        .begin_upload(UploadRequest::new(b.clone(), "dropped"), "tester")
        .unwrap();
    up.write_all(&content(4, 600_000)).unwrap();
    drop(up);
    assert_eq!(h.temporaries(), 0);
    assert_eq!(store.bucket_stats(&b).unwrap().files, 2);
    assert_consistent(&store);
}

pub fn digests_and_lookups<H: Harness>(backend: Backend) {
    let h = H::with_settings(
        backend,
        Settings {
            keep_sha1_md5: true,
            ..Settings::default()
        },
    );
    let store = h.open();
    let b = bucket("digests");
    let f = upload(&store, &b, "abc", b"abc");
    let info = store.blob_info(&f.blake3).unwrap().unwrap();
    assert_eq!(
        crate::to_hex(&info.sha256),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        crate::to_hex(&info.sha1.unwrap()),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        crate::to_hex(&info.md5.unwrap()),
        "900150983cd24fb0d6963f7d28e17f72"
    );
    let g = upload(&store, &bucket("elsewhere"), "abc2", b"abc");
    for digest in [
        Digest::Blake3(f.blake3),
        Digest::Sha256(info.sha256),
        Digest::Sha1(info.sha1.unwrap()),
        Digest::Md5(info.md5.unwrap()),
    ] {
        assert_eq!(
            store
                .files_by_digest(&digest, Visibility::Public, 10)
                .unwrap(),
            vec![f.id, g.id],
            "{digest}"
        );
        assert_eq!(
            store
                .files_by_digest(&digest, Visibility::Public, 1)
                .unwrap(),
            vec![f.id]
        );
        assert!(store
            .files_by_digest(&digest, Visibility::Restricted, 10)
            .unwrap()
            .is_empty());
    }
    let parsed = Digest::parse("md5", "900150983cd24fb0d6963f7d28e17f72").unwrap();
    assert_eq!(
        store
            .files_by_digest(&parsed, Visibility::Public, 10)
            .unwrap()
            .len(),
        2
    );
    assert_consistent(&store);
}

pub fn pagination_under_concurrent_inserts<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("paged");
    let mut existing = Vec::new();
    for i in 0..150 {
        existing.push(upload(&store, &b, &format!("f{i}"), &content(i, 30)).id);
    }
    // Noise in neighbouring buckets.
    upload(&store, &bucket("page"), "x", b"x");
    upload(&store, &bucket("pagedz"), "y", b"y");
    let writer = {
        let store = store.clone();
        let b = b.clone();
        std::thread::spawn(move || {
            for i in 0..150 {
                upload(&store, &b, &format!("new{i}"), &content(1000 + i, 30));
            }
        })
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_bucket(&b, after, 7).unwrap();
        assert!(page.files.len() <= 7);
        seen.extend(page.files.iter().map(|f| f.id));
        assert!(page.files.iter().all(|f| f.bucket == b));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    writer.join().unwrap();
    let unique: HashSet<FileId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a file was listed twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "not in id order");
    for id in &existing {
        assert!(
            unique.contains(id),
            "file {id} that existed throughout was skipped"
        );
    }
    let all = store.list_bucket(&b, None, 1000).unwrap();
    assert_eq!(all.files.len(), 300);
    assert_eq!(all.next, None);
}

pub fn verify_finds_corruption<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("scrub");
    let one = upload(&store, &b, "one", &content(1, 100_000));
    let two = upload(&store, &b, "two", &content(2, 100_000));
    let three = upload(&store, &b, "three", &content(3, 100_000));
    upload(&store, &b, "inline", b"small");
    // Behind the store's back: one blob damaged, another lost.
    let blobs = h.blob_backend();
    corrupt_blob(blobs.as_ref(), &one.blake3, 500);
    blobs.delete(&two.blake3).unwrap();
    // Resumable: one blob per batch.
    let mut problems = Vec::new();
    let mut after = None;
    let mut batches = 0;
    loop {
        let report = store.verify(after, 1).unwrap();
        batches += 1;
        problems.extend(report.problems);
        match report.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(batches >= 4);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.contains(&BlobProblem::Missing { hash: two.blake3 }));
    assert!(problems.iter().any(
        |p| matches!(p, BlobProblem::Corrupt { hash, size: 100_000, .. } if *hash == one.blake3)
    ));
    assert!(matches!(
        store.read(two.id, Access::Anonymous, None),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(read_all(&store, three.id), content(3, 100_000));
    // Inline content is checked on every read.
    let engine = store.engine().clone();
    let inline = engine.keyspace("bs.inline").unwrap();
    let small = Blake3Hash::of(b"small");
    let mut batch = engine::WriteBatch::new();
    batch.put(inline, small.0, b"smalL");
    engine.write(batch, engine::Durability::Sync).unwrap();
    let id = store
        .files_by_digest(&Digest::Blake3(small), Visibility::Public, 1)
        .unwrap()[0];
    assert!(matches!(
        store.read(id, Access::Anonymous, None),
        Err(Error::Corrupt { .. })
    ));
}

/// Runs scrub steps of `limit` blobs until a pass completes; returns the steps' findings and
/// repairs and the number of steps.
fn scrub_pass(store: &Store, limit: usize) -> (Vec<BlobProblem>, Vec<Blake3Hash>, usize, u64) {
    let (mut found, mut repaired, mut steps, mut paced) = (Vec::new(), Vec::new(), 0, 0u64);
    loop {
        let step = store.scrub_step(limit, &mut |n| paced += n).unwrap();
        steps += 1;
        found.extend(step.found);
        repaired.extend(step.repaired);
        if step.completed.is_some() {
            return (found, repaired, steps, paced);
        }
    }
}

pub fn scrub_records_damage_and_refuses_reads<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let b = bucket("scrub");
    let (one, two, three);
    {
        let store = h.open();
        one = upload(&store, &b, "one", &content(11, 100_000));
        two = upload(&store, &b, "two", &content(12, 100_000));
        three = upload(&store, &b, "three", &content(13, 100_000));
        upload(&store, &b, "inline", b"small");
        // A clean store: a complete pass, nothing found, every byte paced.
        let (found, repaired, steps, paced) = scrub_pass(&store, 1);
        assert_eq!((found.len(), repaired.len(), steps), (0, 0, 4));
        assert_eq!(paced, 300_005);
        let report = store.scrub_report(100, 10).unwrap();
        assert!(report.findings.is_empty());
        let first = report.state.last_complete.unwrap();
        assert_eq!((first.pass, first.blobs, first.bytes), (1, 4, 300_005));
        assert!(report.state.current.is_none());
        // Behind the store's back: one blob damaged, another lost.
        let blobs = h.blob_backend();
        corrupt_blob(blobs.as_ref(), &one.blake3, 500);
        blobs.delete(&two.blake3).unwrap();
        // Undetected yet, a damaged blob is served as it is: the scrub is what catches it.
        assert_ne!(read_all(&store, one.id), content(11, 100_000));
        // Two steps of the second pass, then a restart.
        for _ in 0..2 {
            assert!(store
                .scrub_step(1, &mut |_| {})
                .unwrap()
                .completed
                .is_none());
        }
        let current = store.scrub_state().unwrap().current.unwrap();
        assert_eq!((current.pass, current.blobs), (2, 2));
        assert!(current.position.is_some());
    }
    let store = h.open();
    let current = store.scrub_state().unwrap().current.unwrap();
    assert_eq!(
        (current.pass, current.blobs),
        (2, 2),
        "the position survives a reopen"
    );
    // The damage is found in this pass, before the restart or after it.
    let (_, _, steps, _) = scrub_pass(&store, 1);
    let report = store.scrub_report(100, 10).unwrap();
    let second = report.state.last_complete.unwrap();
    assert_eq!((second.pass, second.blobs), (2, 4));
    assert_eq!(steps, 2);
    assert_eq!(report.findings.len(), 2, "{:?}", report.findings);
    let damaged: HashSet<Blake3Hash> = report.findings.iter().map(|f| f.problem.hash()).collect();
    assert_eq!(damaged, HashSet::from([one.blake3, two.blake3]));
    for finding in &report.findings {
        let expected = if finding.problem.hash() == one.blake3 {
            assert!(matches!(
                finding.problem,
                BlobProblem::Corrupt { size: 100_000, .. }
            ));
            one.id
        } else {
            assert_eq!(finding.problem, BlobProblem::Missing { hash: two.blake3 });
            two.id
        };
        assert_eq!(finding.files, vec![expected]);
        assert_eq!(finding.size, 100_000);
    }
    // Never served as good again: whole reads and ranges of the corrupt blob are refused.
    for range in [None, Some(0..10), Some(99_000..100_000)] {
        assert!(matches!(
            store.read(one.id, Access::Trusted, range),
            Err(Error::Corrupt { hash, .. }) if hash == one.blake3
        ));
    }
    assert!(matches!(
        store.check_scrubbed(&one.blake3),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(read_all(&store, three.id), content(13, 100_000));
    store.check_scrubbed(&three.blake3).unwrap();
    // The change feed tells each finding once: a third pass finds nothing new.
    let (again, _, _, _) = scrub_pass(&store, 3);
    assert!(again.is_empty(), "{again:?}");
    let damaged_events: Vec<String> = store
        .changes(0, 1000)
        .unwrap()
        .into_iter()
        .filter_map(|c| match c.kind {
            crate::ChangeKind::BlobDamaged {
                blake3, problem, ..
            } => {
                assert_eq!(c.actor, crate::SCRUB_ACTOR);
                Some(format!("{problem} {blake3}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(damaged_events.len(), 2, "{damaged_events:?}");
    assert!(damaged_events.contains(&format!("corrupt {}", one.blake3.to_hex())));
    assert!(damaged_events.contains(&format!("missing {}", two.blake3.to_hex())));
    // Restored from a copy: the next pass clears the finding and reads work again.
    let blobs = h.blob_backend();
    blobs.delete(&one.blake3).unwrap();
    let mut temp = blobs.create_temp().unwrap();
    temp.write_all(&content(11, 100_000)).unwrap();
    temp.persist(&one.blake3).unwrap();
    let (found, repaired, _, _) = scrub_pass(&store, 10);
    assert!(found.is_empty());
    assert_eq!(repaired, vec![one.blake3]);
    assert_eq!(read_all(&store, one.id), content(11, 100_000));
    let report = store.scrub_report(100, 10).unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].problem.hash(), two.blake3);
    // A lost blob whose files are deleted is collected, and its finding goes with it.
    store.delete_file(two.id, "tester").unwrap();
    h.advance(DAY * 2);
    while store.gc(100).unwrap().more {}
    assert!(store.scrub_report(100, 10).unwrap().findings.is_empty());
}

pub fn downloads_are_counted<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let f = upload(&store, &bucket("dl"), "f", b"0123456789");
    let today = store.now().day();
    for _ in 0..3 {
        read_all(&store, f.id);
    }
    // A range read past the first byte is the continuation of a download.
    store.read(f.id, Access::Anonymous, Some(5..10)).unwrap();
    h.advance(DAY);
    read_all(&store, f.id);
    store.flush().unwrap();
    assert_eq!(store.downloads(f.id, today).unwrap(), 3);
    assert_eq!(store.downloads(f.id, store.now().day()).unwrap(), 1);
    store.delete_file(f.id, "tester").unwrap();
    assert_eq!(store.downloads(f.id, today).unwrap(), 0);
}

pub fn reopen_keeps_everything_and_ids_stay_unique<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("reopen");
    let f1 = upload(&store, &b, "a", &content(1, 5000));
    let f2 = upload(&store, &b, "b", &content(2, 500_000));
    store.delete_file(f2.id, "tester").unwrap();
    drop(store);
    let store = h.open();
    assert_eq!(read_all(&store, f1.id), content(1, 5000));
    let f3 = upload(&store, &b, "c", b"c");
    assert!(f3.id > f2.id, "id {} reused after {}", f3.id, f2.id);
    let stats = store.bucket_stats(&b).unwrap();
    assert_eq!((stats.files, stats.logical_bytes), (2, 5001));
    assert_consistent(&store);
}

pub fn orphans_are_swept<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("orphans");
    let kept = upload(&store, &b, "kept", &content(1, 100_000));
    // Bytes that no record points to, as a crash between the rename and the batch leaves.
    plant_orphan(h.blob_backend().as_ref(), &content(2, 70_000));
    h.plant_temporary();
    let young = store.sweep_orphans().unwrap();
    assert_eq!((young.orphan_blobs, young.temp_files), (0, 0));
    h.advance(DAY + HOUR);
    let report = store.sweep_orphans().unwrap();
    assert_eq!((report.orphan_blobs, report.temp_files), (1, 1));
    assert_eq!(h.stored_blobs(), 1);
    assert_eq!(h.temporaries(), 0);
    assert_eq!(read_all(&store, kept.id), content(1, 100_000));
    assert_consistent(&store);
}

pub fn concurrent_uploads_and_deletes_stay_exact<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let buckets = [bucket("c0"), bucket("c1"), bucket("c2")];
    std::thread::scope(|scope| {
        for t in 0..6u64 {
            let store = store.clone();
            let buckets = buckets.clone();
            scope.spawn(move || {
                let mut mine = Vec::new();
                for i in 0..40u64 {
                    let size = if i % 5 == 0 { 40_000 } else { 64 };
                    let data = content((t + i) % 7, size);
                    let b = &buckets[((t + i) % 3) as usize];
                    mine.push(upload(&store, b, "f", &data).id);
                    if i % 3 == 0 {
                        let victim = mine.swap_remove(((t * 7 + i) % mine.len() as u64) as usize);
                        if i % 2 == 0 {
                            store.delete_file(victim, "tester").unwrap();
                        } else {
                            store.delete_content(victim, "tester").unwrap();
                        }
                    }
                    if i % 10 == 0 {
                        store.gc(10).unwrap();
                    }
                }
            });
        }
    });
    assert_consistent(&store);
    let total: u64 = buckets
        .iter()
        .map(|b| store.bucket_stats(b).unwrap().files)
        .sum();
    assert_eq!(total, store.summary().unwrap().files);
    assert_eq!(total, 6 * 40 - 6 * 14 / 2);
}

pub fn quota_holds_under_concurrent_uploads<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("contended");
    store.set_quota(&b, Some(50 * 1000), "tester").unwrap();
    let accepted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let (store, b, accepted) = (&store, &b, &accepted);
            scope.spawn(move || {
                for i in 0..20u64 {
                    // Half the uploads repeat content, so dedup and the quota interact.
                    let seed = if i % 2 == 0 { i } else { t * 100 + i };
                    match store.upload_bytes(
                        UploadRequest::new(b.clone(), "q"),
                        &content(seed, 1000),
                        "tester",
                    ) {
                        Ok(_) => {
                            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(Error::QuotaExceeded { .. }) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
            });
        }
    });
    let stats = store.bucket_stats(&b).unwrap();
    assert_eq!(
        stats.files, 50,
        "exactly the quota's worth of 1000-byte files"
    );
    assert_eq!(accepted.into_inner(), 50);
    assert_eq!(stats.logical_bytes, 50 * 1000);
    assert_consistent(&store);
}

/// `set_quota` returns only when the uploads that decided "no quota" have landed, and every
/// upload after it is judged by the new quota: with a quota of zero set while uploads run, the
/// bucket never grows past what it held when `set_quota` returned.
pub fn a_quota_binds_every_upload_after_it_is_set<H: Harness>(backend: Backend) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let h = H::new(backend);
    let store = h.open();
    for round in 0..20u64 {
        let b = bucket(&format!("race{round}"));
        let stop = AtomicBool::new(false);
        let at_quota = std::thread::scope(|scope| {
            for t in 0..4u64 {
                let (store, b, stop) = (&store, &b, &stop);
                scope.spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let data = content(round << 40 | t << 32 | i, 100);
                        match store.upload_bytes(
                            UploadRequest::new(b.clone(), "f"),
                            &data,
                            "tester",
                        ) {
                            Ok(_) | Err(Error::QuotaExceeded { .. }) => {}
                            Err(other) => panic!("{other}"),
                        }
                        i += 1;
                    }
                });
            }
            // Close the bucket while the uploads run.
            while store.bucket_stats(&b).unwrap().files < 3 {
                std::thread::yield_now();
            }
            store.set_quota(&b, Some(0), "tester").unwrap();
            let at_quota = store.bucket_stats(&b).unwrap();
            // Uploads keep trying for a moment; every one of them must be refused.
            std::thread::sleep(Duration::from_millis(2));
            stop.store(true, Ordering::SeqCst);
            at_quota
        });
        let after = store.bucket_stats(&b).unwrap();
        assert!(at_quota.files >= 3);
        assert_eq!(
            (after.files, after.logical_bytes),
            (at_quota.files, at_quota.logical_bytes),
            "round {round}: uploads landed after set_quota returned"
        );
    }
    assert_consistent(&store);
}

pub fn expiry_can_be_moved_or_cleared<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("moving");
    let data = content(21, 40_000);
    let mut req = UploadRequest::new(b.clone(), "build.log");
    req.expires = Some(store.now().plus(HOUR));
    let f = store.upload_bytes(req, &data, "tester").unwrap().record;

    // Cleared: the file outlives its first expiry and the grace.
    let cleared = store.set_expiry(f.id, None, "tester").unwrap().value;
    assert_eq!(cleared.expires, None);
    assert_eq!(store.file(f.id).unwrap().expires, None);
    h.advance(10 * DAY);
    assert_eq!(store.gc(100).unwrap().expired_files, 0);
    assert_eq!(read_all(&store, f.id), data);
    assert_consistent(&store);

    // Set again: reads stop at the new time, and moving it later revives them.
    let soon = store.now().plus(HOUR);
    assert_eq!(
        store
            .set_expiry(f.id, Some(soon), "tester")
            .unwrap()
            .value
            .expires,
        Some(soon)
    );
    h.advance(2 * HOUR);
    assert!(matches!(
        store.read(f.id, Access::Anonymous, None),
        Err(Error::ContentGone {
            reason: "expired",
            ..
        })
    ));
    store
        .set_expiry(f.id, Some(store.now().plus(DAY)), "tester")
        .unwrap();
    assert_eq!(read_all(&store, f.id), data);
    // The earlier time no longer counts: GC cuts only after the new one plus the grace.
    h.advance(3 * DAY);
    assert_eq!(store.gc(100).unwrap().expired_files, 0);
    h.advance(6 * DAY);
    assert_eq!(store.gc(100).unwrap().expired_files, 1);
    assert_eq!(store.file(f.id).unwrap().content, ContentState::Expired);
    assert_consistent(&store);

    // A file whose content is gone keeps the new time on its record only.
    let later = store.now().plus(DAY);
    let record = store.set_expiry(f.id, Some(later), "tester").unwrap().value;
    assert_eq!(
        (record.expires, record.content),
        (Some(later), ContentState::Expired)
    );
    assert!(matches!(
        store.read(f.id, Access::Anonymous, None),
        Err(Error::ContentGone { .. })
    ));
    assert_consistent(&store);
    assert!(matches!(
        store.set_expiry(FileId(987_654), None, "tester"),
        Err(Error::NotFound { .. })
    ));
    drop(store);
    let store = h.open();
    assert_eq!(store.file(f.id).unwrap().expires, Some(later));
}
