//! `librarian upgrade-store` on a PostgreSQL store that several instances share: it runs as
//! the writer (the store's lease, fenced).

use std::sync::Arc;
use std::time::Duration;

use engine::testing::{skip, PgScratch};
use engine::Backend;
use servers::librarian;

/// A shared store of format 1 opens on no instance until `librarian upgrade-store` upgrades
/// it, which runs only as the writer: refused while an instance holds the lease, done once
/// it is free, and the lease given back.
#[test]
fn upgrade_store_on_postgres_runs_as_the_writer() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine::EngineConfig::postgres(scratch.settings())
        .open(blobstore::KEYSPACES)
        .unwrap();
    let builder = || blobstore::StoreBuilder::with_engine(Arc::clone(&engine), dir.path());
    let store = builder().open().unwrap();
    let bucket = blobstore::BucketName::new("b").unwrap();
    let put = store
        .upload_bytes(
            blobstore::UploadRequest::new(bucket, "a.txt"),
            b"older",
            "tester",
        )
        .unwrap();
    assert_eq!(store.write_store_format_1().unwrap(), 1);
    drop(store);
    assert!(matches!(
        builder().open(),
        Err(blobstore::Error::StoreFormat { found: 1, .. })
    ));

    let leadership = engine.leadership().unwrap();
    let serving = leadership
        .acquire(librarian::LEASE, "a server", Duration::from_secs(30))
        .unwrap()
        .unwrap();
    assert!(matches!(
        librarian::open_upgrading(&engine, builder()),
        Err(librarian::OpenError::NotWriter)
    ));
    leadership
        .release(librarian::LEASE, "a server", serving)
        .unwrap();
    let store = librarian::open_upgrading(&engine, builder()).unwrap();
    assert!(store.check().unwrap().problems.is_empty());
    let mut content = Vec::new();
    std::io::Read::read_to_end(
        &mut store
            .read(put.record.id, blobstore::Access::Trusted, None)
            .unwrap(),
        &mut content,
    )
    .unwrap();
    assert_eq!(content, b"older");
    drop(store);
    // Given back: the next writer is elected at once.
    assert!(leadership
        .acquire(librarian::LEASE, "the next server", Duration::from_secs(30))
        .unwrap()
        .is_some());
    assert!(builder().open().is_ok());
}
