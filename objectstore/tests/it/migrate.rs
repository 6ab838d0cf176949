//! Moving a local store's blobs to the object store while it serves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blobstore::{LocalFsBackend, UploadRequest};
use engine::Backend;
use objectstore::{
    migrate, MigrateOptions, MigratingBackend, ObjectStoreBackend, ObjectStoreConfig,
};

use blobstore::testing::suite::Harness as _;

use crate::common::{assert_consistent, bucket, content, read_all, Harness, Protocol};

fn local_blob_files(root: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }
    walk(&root.join("blobs"))
}

pub fn local_blobs_move_to_the_object_store_while_reads_continue(backend: Backend) {
    let h = Harness::new(backend);
    let local = Arc::new(LocalFsBackend::open(h.data_dir()).unwrap());
    let store = h.open_with(local.clone());
    let threshold = blobstore::DEFAULT_INLINE_THRESHOLD;
    let mut sizes = vec![
        0,
        1,
        10,
        threshold - 1,
        threshold,
        threshold + 1,
        1 << 20,
        3 << 20,
    ];
    sizes.extend((0..20).map(|i| 20_000 + i * 3_000));
    let mut files = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let bytes = content(500 + i as u64, *size);
        let file = store
            .upload_bytes(
                UploadRequest::new(bucket("old"), format!("f{i}")),
                &bytes,
                "tester",
            )
            .unwrap()
            .record;
        files.push((file, bytes));
    }
    // A duplicate of a file blob.
    let dup = store
        .upload_bytes(
            UploadRequest::new(bucket("old"), "dup"),
            &files[7].1,
            "tester",
        )
        .unwrap()
        .record;
    files.push((dup, files[7].1.clone()));
    let file_blobs = sizes.iter().filter(|s| **s > threshold).count();
    assert_eq!(local_blob_files(&h.data_dir()), file_blobs);
    drop(store);

    // First against an object store that is down: nothing moves, nothing is lost.
    let mut down = h.config.clone();
    down.protocol = match h.protocol {
        Protocol::Swift => ObjectStoreConfig::swift("http://127.0.0.1:9/auth/v1.0", "a:b", "c"),
        Protocol::S3 => ObjectStoreConfig::s3("http://127.0.0.1:9", "us-east-1", "a", "b"),
    }
    .protocol;
    down.retry = objectstore::RetryConfig::new(
        Duration::from_millis(5),
        Duration::from_millis(20),
        Duration::from_millis(50),
    );
    let dead = ObjectStoreBackend::open(&down, h.engine()).unwrap();
    let report = migrate(&h.data_dir(), &local, &dead, MigrateOptions::default()).unwrap();
    assert_eq!(report.moved, 0);
    assert_eq!(report.failed.len(), file_blobs);
    assert_eq!(local_blob_files(&h.data_dir()), file_blobs);

    // Then for real, with readers running all along.
    let remote = Arc::new(h.object_backend());
    let store = Arc::new(h.open_with(Arc::new(MigratingBackend::new(
        remote.clone(),
        local.clone(),
    ))));
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let report = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    for (file, bytes) in &files {
                        assert_eq!(&read_all(&store, file.id), bytes, "file {}", file.id);
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let report = migrate(
            &h.data_dir(),
            &local,
            remote.as_ref(),
            MigrateOptions::default().parallelism(3),
        );
        done.store(true, Ordering::Relaxed);
        report
    })
    .unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.moved as usize, file_blobs);
    assert_eq!(local_blob_files(&h.data_dir()), 0);
    for (file, bytes) in &files {
        assert_eq!(&read_all(&store, file.id), bytes);
        if bytes.len() > threshold {
            assert!(remote.exists(&file.blake3).unwrap());
        }
    }
    assert_consistent(&store);

    // Resumable: a second run finds nothing left to move.
    let again = migrate(
        &h.data_dir(),
        &local,
        remote.as_ref(),
        MigrateOptions::default(),
    )
    .unwrap();
    assert_eq!((again.moved, again.failed.len()), (0, 0));
    // New uploads go to the object store.
    let new = store
        .upload_bytes(
            UploadRequest::new(bucket("new"), "n"),
            &content(999, 50_000),
            "tester",
        )
        .unwrap()
        .record;
    assert!(remote.exists(&new.blake3).unwrap());
    assert_eq!(local_blob_files(&h.data_dir()), 0);
}
