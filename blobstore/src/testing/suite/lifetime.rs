//! How long blobs live: weak links, expiry, the garbage collector's grace period, orphans.

use engine::Backend;

use super::{upload, Harness, DAY, HOUR};
use crate::testing::support::{assert_consistent, bucket, content, plant_orphan, read_all};
use crate::{Access, ContentState, Digest, Error, FileId, UploadRequest, Visibility};

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
