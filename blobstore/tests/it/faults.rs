//! Faults of the blob backend: a full disk and a failed fsync, through the testing kit's
//! [`FaultyBackend`] around the filesystem backend.

use std::io::Read;
use std::sync::Arc;

use blobstore::testing::{Fault, FaultyBackend};
use blobstore::{Error, LocalFsBackend, StoreBuilder, UploadRequest};
use engine::{Backend, EngineConfig, MemEngine};

use crate::common::{bucket, content};

pub fn disk_full_and_failed_fsync(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyBackend::new(LocalFsBackend::open(dir.path().join("data")).unwrap());
    let open = || {
        let faulty = Arc::new(faulty.clone());
        let builder = match backend {
            Backend::Memory => StoreBuilder::with_engine(
                Arc::new(MemEngine::new(blobstore::KEYSPACES)),
                dir.path().join("data"),
            ),
            other => StoreBuilder::new(
                EngineConfig::new(other, dir.path().join("meta")),
                dir.path().join("data"),
            ),
        };
        builder.backend(faulty).open()
    };
    // sled may hold its directory lock for a moment after the last handle is dropped.
    let open = || {
        for _ in 0..50 {
            match open() {
                Ok(store) => return store,
                Err(error) if backend == Backend::Sled => {
                    eprintln!("reopen failed: {error}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(error) => panic!("open store: {error}"),
            }
        }
        panic!("sled never released its lock");
    };
    let store = open();
    let b = bucket("faults");
    let kept = store
        .upload_bytes(
            UploadRequest::new(b.clone(), "kept"),
            &content(1, 400_000),
            "tester",
        )
        .unwrap()
        .record;

    faulty.set(Fault::DiskFull { after: 300_000 });
    let result = store.upload_bytes(
        UploadRequest::new(b.clone(), "big"),
        &content(2, 900_000),
        "tester",
    );
    assert!(matches!(result, Err(Error::DiskFull { .. })), "{result:?}");
    // Small uploads do not touch the blob backend and still work.
    store
        .upload_bytes(UploadRequest::new(b.clone(), "small"), b"fits", "tester")
        .unwrap();
    assert_eq!(store.bucket_stats(&b).unwrap().files, 2);
    assert!(store.check().unwrap().is_ok());
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/tmp"))
            .unwrap()
            .count(),
        0
    );

    faulty.set(Fault::FsyncFails);
    let result = store.upload_bytes(
        UploadRequest::new(b.clone(), "big"),
        &content(3, 900_000),
        "tester",
    );
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    // After a failed fsync the store refuses writes, even ones that would not fsync.
    faulty.set(Fault::Healthy);
    let refused = store.upload_bytes(UploadRequest::new(b.clone(), "after"), b"x", "tester");
    assert!(
        matches!(refused, Err(Error::Poisoned { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        store.delete_file(kept.id, "tester"),
        Err(Error::Poisoned { .. })
    ));
    // Reads still work.
    let mut back = Vec::new();
    store
        .read(kept.id, blobstore::Access::Anonymous, None)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, content(1, 400_000));
    assert_eq!(store.bucket_stats(&b).unwrap().files, 2);
    if backend != Backend::Memory {
        drop(store);
        let store = open();
        store
            .upload_bytes(UploadRequest::new(b.clone(), "after"), b"x", "tester")
            .unwrap();
        assert_eq!(store.bucket_stats(&b).unwrap().files, 3);
        assert!(store.check().unwrap().is_ok());
    }
}
