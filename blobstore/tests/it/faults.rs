//! Faults of the blob backend: a full disk and a failed fsync, through a wrapper around the
//! filesystem backend.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use blobstore::{
    Blake3Hash, BlobBackend, Error, LocalFsBackend, StoreBuilder, StoredBlob, TempBlob, Timestamp,
    UploadRequest,
};
use engine::{Backend, EngineConfig, MemEngine};

use crate::common::{bucket, content};

const HEALTHY: u8 = 0;
const DISK_FULL: u8 = 1;
const FSYNC_FAILS: u8 = 2;

#[derive(Debug)]
struct Faulty {
    inner: LocalFsBackend,
    mode: Arc<AtomicU8>,
}

#[derive(Debug)]
struct FaultyTemp {
    inner: Box<dyn TempBlob>,
    mode: Arc<AtomicU8>,
    written: usize,
}

impl Write for FaultyTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.mode.load(Ordering::SeqCst) == DISK_FULL && self.written > 300_000 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl TempBlob for FaultyTemp {
    fn persist(self: Box<Self>, hash: &Blake3Hash) -> blobstore::Result<()> {
        if self.mode.load(Ordering::SeqCst) == FSYNC_FAILS {
            return Err(Error::io(
                "fsyncing",
                "faulty",
                io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        self.inner.persist(hash)
    }
}

impl BlobBackend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn create_temp(&self) -> blobstore::Result<Box<dyn TempBlob>> {
        Ok(Box::new(FaultyTemp {
            inner: self.inner.create_temp()?,
            mode: self.mode.clone(),
            written: 0,
        }))
    }

    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> blobstore::Result<Option<Box<dyn Read + Send>>> {
        self.inner.open_range(hash, offset, len)
    }

    fn delete(&self, hash: &Blake3Hash) -> blobstore::Result<()> {
        self.inner.delete(hash)
    }

    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> blobstore::Result<()>,
    ) -> blobstore::Result<u64> {
        self.inner.sweep(older_than, visit)
    }
}

pub fn disk_full_and_failed_fsync(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let open = || {
        let faulty = Arc::new(Faulty {
            inner: LocalFsBackend::open(dir.path().join("data")).unwrap(),
            mode: mode.clone(),
        });
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

    mode.store(DISK_FULL, Ordering::SeqCst);
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

    mode.store(FSYNC_FAILS, Ordering::SeqCst);
    let result = store.upload_bytes(
        UploadRequest::new(b.clone(), "big"),
        &content(3, 900_000),
        "tester",
    );
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    // After a failed fsync the store refuses writes, even ones that would not fsync.
    mode.store(HEALTHY, Ordering::SeqCst);
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
