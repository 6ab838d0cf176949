//! What is particular to an object store: segments, containers, orphans, deletion, outages.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use blobstore::{Access, Blake3Hash, BlobBackend, Store, UploadRequest};
use engine::{Backend, Durability, WriteBatch};
use objectstore::ObjectStoreConfig;

use blobstore::testing::suite::Harness as _;

use crate::common::{assert_consistent, bucket, content, read_all, Harness, Protocol, Settings};

fn read_range(store: &Store, id: blobstore::FileId, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .read(id, Access::Trusted, Some(range))
        .expect("open a range")
        .read_to_end(&mut out)
        .expect("read a range");
    out
}

fn upload_streaming(store: &Store, name: &str, bytes: &[u8]) -> blobstore::FileRecord {
    let mut upload = store
        .begin_upload(UploadRequest::new(bucket("objects"), name), "tester")
        .expect("begin");
    for piece in bytes.chunks(100_003) {
        upload.write_all(piece).expect("write");
    }
    upload.commit().expect("commit").record
}

pub fn large_objects_are_segmented_and_read_back_as_one(backend: Backend) {
    let mut h = Harness::new(backend);
    // Swift accepts segments of any size; S3 parts are at least 5 MiB.
    let (threshold, segment, size) = match h.protocol {
        Protocol::Swift => (2 << 20, 1 << 20, (3 << 20) + 4567_usize),
        Protocol::S3 => (6 << 20, 5 << 20, (12 << 20) + 4567),
    };
    h.config = h.config.clone().segments(threshold, segment);
    let remote = Arc::new(h.object_backend());
    let store = h.open_with(remote.clone());
    let bytes = content(1, size);
    let small = content(2, 100_000);
    let file = upload_streaming(&store, "large.bin", &bytes);
    let small_file = upload_streaming(&store, "small.bin", &small);

    assert_eq!(read_all(&store, file.id), bytes);
    let seg: u64 = segment;
    let size = size as u64;
    for range in [
        0..1,
        seg - 10..seg + 10,
        seg..2 * seg,
        size - 100..size,
        3..size - 3,
    ] {
        assert_eq!(
            read_range(&store, file.id, range.clone()),
            bytes[range.start as usize..range.end as usize],
            "range {range:?}"
        );
    }
    assert_eq!(read_all(&store, small_file.id), small);
    assert!(remote.exists(&file.blake3).unwrap());
    if h.protocol == Protocol::Swift {
        let segments = remote.segments(0).unwrap();
        let expected = size.div_ceil(seg) as usize;
        assert_eq!(segments.len(), expected, "{segments:?}");
        assert!(segments
            .iter()
            .all(|name| name.starts_with(&file.blake3.to_hex())));
    }
    assert_eq!(remote.objects(0).unwrap().len(), 2);
    assert_consistent(&store);

    // Deleting the large object removes its segments too.
    store.delete_file(file.id, "tester").unwrap();
    h.advance(blobstore::DEFAULT_GRACE + Duration::from_secs(1));
    let report = store.gc(100).unwrap();
    assert_eq!(report.collected_blobs, 1);
    assert!(!remote.exists(&file.blake3).unwrap());
    assert!(remote.segments(0).unwrap().is_empty());
    assert_eq!(remote.objects(0).unwrap().len(), 1);
}

pub fn containers_roll_over_and_reads_find_every_object(backend: Backend) {
    let mut h = Harness::new(backend);
    h.config = h.config.clone().objects_per_container(3);
    let remote = Arc::new(h.object_backend());
    let store = h.open_with(remote.clone());
    let mut files = Vec::new();
    for i in 0..8u64 {
        let bytes = content(100 + i, 20_000 + i as usize);
        files.push((upload_streaming(&store, &format!("f{i}"), &bytes), bytes));
    }
    // A duplicate takes no room.
    upload_streaming(&store, "dup", &files[0].1);
    assert_eq!(remote.containers(), 3);
    let counts: Vec<usize> = (0..3).map(|i| remote.objects(i).unwrap().len()).collect();
    assert_eq!(counts, vec![3, 3, 2]);
    for (file, bytes) in &files {
        assert_eq!(&read_all(&store, file.id), bytes);
        assert!(remote.container_of(&file.blake3).unwrap().is_some());
    }
    drop(store);
    drop(remote);

    // After a restart the counter continues where it was.
    let remote = Arc::new(h.object_backend());
    let store = h.open_with(remote.clone());
    for i in 8..10u64 {
        let bytes = content(100 + i, 20_000 + i as usize);
        files.push((upload_streaming(&store, &format!("f{i}"), &bytes), bytes));
    }
    assert_eq!(remote.containers(), 4);
    let counts: Vec<usize> = (0..4).map(|i| remote.objects(i).unwrap().len()).collect();
    assert_eq!(counts, vec![3, 3, 3, 1]);
    assert_eq!(
        remote.container_of(&files[9].0.blake3).unwrap(),
        Some(remote.container_name(3))
    );
    for (file, bytes) in &files {
        assert_eq!(&read_all(&store, file.id), bytes);
    }
    assert_consistent(&store);
}

pub fn unrecorded_uploads_and_orphans_are_swept(backend: Backend) {
    let h = Harness::with_settings(
        backend,
        Settings {
            grace: Duration::from_secs(60),
            ..Settings::default()
        },
    );
    let remote = Arc::new(h.object_backend());
    let store = h.open_with(remote.clone());
    let kept = upload_streaming(&store, "kept", &content(7, 50_000));

    // An orphan: bytes persisted with no record (a crash after the upload, before the
    // store's batch).
    let orphan = content(8, 40_000);
    let orphan_hash = Blake3Hash::of(&orphan);
    let mut temp = remote.create_temp().unwrap();
    temp.write_all(&orphan).unwrap();
    temp.persist(&orphan_hash).unwrap();
    // An upload whose location was never recorded (a crash between the upload and the
    // location write).
    let unrecorded = content(9, 30_000);
    let unrecorded_hash = Blake3Hash::of(&unrecorded);
    let mut temp = remote.create_temp().unwrap();
    temp.write_all(&unrecorded).unwrap();
    temp.persist(&unrecorded_hash).unwrap();
    let engine = h.engine();
    let mut batch = WriteBatch::new();
    batch.delete(
        engine.keyspace(objectstore::KEYSPACES[0]).unwrap(),
        unrecorded_hash.0,
    );
    engine.write(batch, Durability::Sync).unwrap();
    // A spool file left by a crashed upload.
    std::fs::write(
        h.config.spool_dir.join("objectstore-spool-crashed"),
        b"partial",
    )
    .unwrap();
    assert_eq!(remote.objects(0).unwrap().len(), 3);

    // Nothing is young enough to be spared once the grace has passed.
    let young = store.sweep_orphans().unwrap();
    assert_eq!(young.orphan_blobs, 0);
    assert_eq!(remote.objects(0).unwrap().len(), 3);
    h.advance(Duration::from_secs(120));
    let report = store.sweep_orphans().unwrap();
    assert_eq!(report.orphan_blobs, 2, "{report:?}");
    assert!(report.temp_files >= 1, "{report:?}");
    assert_eq!(remote.objects(0).unwrap(), vec![kept.blake3.to_hex()]);
    assert!(!remote.exists(&orphan_hash).unwrap());
    assert!(!remote.exists(&unrecorded_hash).unwrap());
    assert!(!h
        .config
        .spool_dir
        .join("objectstore-spool-crashed")
        .exists());
    assert_eq!(read_all(&store, kept.id), content(7, 50_000));
    assert_consistent(&store);
}

pub fn deleted_blobs_leave_the_object_store(backend: Backend) {
    let h = Harness::new(backend);
    let remote = Arc::new(h.object_backend());
    let store = h.open_with(remote.clone());
    remote.probe().unwrap();
    let bytes = content(11, 70_000);
    let one = upload_streaming(&store, "one", &bytes);
    let two = upload_streaming(&store, "two", &bytes);
    assert_eq!(one.blake3, two.blake3);
    assert_eq!(remote.objects(0).unwrap().len(), 1, "deduplicated");
    store.delete_file(one.id, "tester").unwrap();
    h.advance(blobstore::DEFAULT_GRACE * 2);
    assert_eq!(store.gc(100).unwrap().collected_blobs, 0);
    assert!(remote.exists(&one.blake3).unwrap());
    store.delete_file(two.id, "tester").unwrap();
    h.advance(blobstore::DEFAULT_GRACE * 2);
    assert_eq!(store.gc(100).unwrap().collected_blobs, 1);
    assert!(!remote.exists(&one.blake3).unwrap());
    assert!(remote.objects(0).unwrap().is_empty());
    assert!(remote.open_range(&one.blake3, 0, 10).unwrap().is_none());
    assert_consistent(&store);
}

/// An object store that cannot be reached: uploads fail within the retry budget with an error
/// that says so, and record nothing; inline uploads still work.
pub fn unreachable_store_fails_fast_and_records_nothing(protocol: Protocol) {
    crate::common::with_protocol(protocol, || {
        let mut h = Harness::new(Backend::Memory);
        let dead = match protocol {
            Protocol::Swift => ObjectStoreConfig::swift("http://127.0.0.1:9/auth/v1.0", "a:b", "c"),
            Protocol::S3 => ObjectStoreConfig::s3("http://127.0.0.1:9", "us-east-1", "a", "b"),
        };
        h.config.protocol = dead.protocol;
        // The retry budget: a refused connection costs nothing itself, the pauses between the
        // attempts (10 ms doubling up to 50 ms) use the budget up. The 2 s of slack past it
        // cover a loaded 2-core machine (stated, not measured).
        let budget = Duration::from_millis(300);
        h.config.retry = objectstore::RetryConfig::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
            budget,
        );
        let bound = budget + Duration::from_secs(2);
        let started = std::time::Instant::now();
        let probe = h.object_backend().probe().unwrap_err();
        assert!(probe.is_unavailable(), "{probe}");
        let elapsed = started.elapsed();
        assert!(
            elapsed < bound,
            "the probe took {elapsed:?}, past {bound:?}"
        );
        let store = h.open();
        let started = std::time::Instant::now();
        let error = store
            .upload_bytes(
                UploadRequest::new(bucket("down"), "big"),
                &content(1, 100_000),
                "tester",
            )
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed < bound,
            "the upload took {elapsed:?}, past {bound:?}"
        );
        assert!(objectstore::is_unavailable(&error), "{error}");
        assert!(matches!(error, blobstore::Error::Backend { .. }), "{error}");
        let summary = store.summary().unwrap();
        assert_eq!((summary.files, summary.blobs), (0, 0));
        assert_eq!(store.bucket_stats(&bucket("down")).unwrap().files, 0);
        // Small files live in the engine and do not need the object store.
        let small = store
            .upload_bytes(
                UploadRequest::new(bucket("down"), "small"),
                b"tiny",
                "tester",
            )
            .unwrap()
            .record;
        assert_eq!(read_all(&store, small.id), b"tiny");
        assert_eq!(
            std::fs::read_dir(&h.config.spool_dir).unwrap().count(),
            0,
            "the spool file of the failed upload is removed"
        );
    });
}

#[test]
fn unreachable_swift_fails_fast_and_records_nothing() {
    unreachable_store_fails_fast_and_records_nothing(Protocol::Swift);
}

#[test]
fn unreachable_s3_fails_fast_and_records_nothing() {
    unreachable_store_fails_fast_and_records_nothing(Protocol::S3);
}
