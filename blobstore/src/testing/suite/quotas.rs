//! Bucket quotas: refused at once, enforced, and exact under concurrent uploads and changes.

use std::io::Write;
use std::time::Duration;

use engine::Backend;

use super::{upload, Harness};
use crate::testing::support::{assert_consistent, bucket, content};
use crate::{Error, UploadRequest};

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
