//! Stores written by earlier builds: blob records of version 1, store format 1.

use engine::Backend;

use super::{upload, Harness, DAY, HOUR};
use crate::testing::support::{assert_consistent, bucket, content, read_all};
use crate::{Digest, Error, Visibility};

/// Blob records written before 2026-12-06 (version 1) keep their reference count in `bs.refs`:
/// they read right, pass the check, and move the count into the record at its next change (an
/// upload, an unlink) or leave with the blob at collection, never leaving a stray counter.
pub fn blob_records_of_version_1_move_their_count_on_the_next_change<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("older");
    let shared = content(21, 30_000);
    let first = upload(&store, &b, "shared-1", &shared);
    upload(&store, &b, "shared-2", &shared);
    let alone = upload(&store, &b, "alone", &content(22, 70_000));
    let tiny = upload(&store, &b, "tiny", b"tiny and inline");
    let hashes = [first.blake3, alone.blake3, tiny.blake3];
    let moved: Vec<_> = hashes
        .iter()
        .map(|hash| store.write_blob_record_of_version_1(hash).unwrap())
        .collect();
    assert_eq!(moved, [Some(2), Some(1), Some(1)]);
    assert_consistent(&store);
    drop(store);
    let store = h.open();
    let refcount = |hash| store.blob_info(hash).unwrap().unwrap().refcount;
    assert_eq!(hashes.each_ref().map(refcount), [2, 1, 1]);

    // A deduplicated upload and an unlink each rewrite the record with the count.
    let third = upload(&store, &b, "shared-3", &shared);
    assert_eq!(refcount(&first.blake3), 3);
    store.delete_file(alone.id, "tester").unwrap();
    let info = store.blob_info(&alone.blake3).unwrap().unwrap();
    assert_eq!((info.refcount, info.zero_ref_since.is_some()), (0, true));
    assert_consistent(&store);
    store.delete_file(third.id, "tester").unwrap();
    assert_eq!(refcount(&first.blake3), 2);

    // Collected while still in version 1 (the unlinked blob put back in it): the counter goes
    // with the record.
    assert_eq!(
        store.write_blob_record_of_version_1(&alone.blake3).unwrap(),
        Some(0)
    );
    store.delete_file(tiny.id, "tester").unwrap();
    store.write_blob_record_of_version_1(&tiny.blake3).unwrap();
    assert_consistent(&store);
    h.advance(DAY + HOUR);
    assert_eq!(store.gc(100).unwrap().collected_blobs, 2);
    assert!(store.blob_info(&alone.blake3).unwrap().is_none());
    assert!(store.blob_info(&tiny.blake3).unwrap().is_none());
    assert_eq!(read_all(&store, first.id), shared);
    assert_consistent(&store);
}

/// A store of format 1 (whole digests in `bs.digests`, BLAKE3 among them; a counter per bucket
/// and blob) is
/// upgraded by an open on the embedded backends, and only by an open that is allowed to on
/// PostgreSQL; afterwards lookups, bucket statistics, unlinks and uploads are as before, and
/// the check finds no key of format 1 left.
pub fn stores_of_format_1_are_upgraded<H: Harness>(backend: Backend) {
    let mut h = H::new(backend);
    h.settings_mut().keep_sha1_md5 = true;
    let store = h.open();
    let (a, b) = (bucket("format-a"), bucket("format-b"));
    let shared = content(31, 30_000);
    let first = upload(&store, &a, "shared-1", &shared);
    let second = upload(&store, &a, "shared-2", &shared);
    let elsewhere = upload(&store, &b, "shared-3", &shared);
    let secret = upload(&store, &b, "secret", b"tiny, inline and restricted");
    store.set_restricted(secret.id, true, "tester").unwrap();
    let gone = upload(&store, &a, "gone", &content(32, 5_000));
    store.delete_file(gone.id, "tester").unwrap();
    let stats = |store: &crate::Store| [&a, &b].map(|bucket| store.bucket_stats(bucket).unwrap());
    let before = stats(&store);
    assert_eq!(store.write_store_format_1().unwrap(), 4);
    drop(store);

    h.settings_mut().upgrade_format = Some(false);
    match h.try_open() {
        Err(Error::StoreFormat { found: 1, .. }) => {}
        Err(other) => panic!("an older store refused with {other}"),
        Ok(_) => panic!("an older store opened without its upgrade"),
    }
    h.settings_mut().upgrade_format = None;
    let store = match (backend, h.try_open()) {
        (Backend::Postgres, Err(Error::StoreFormat { found: 1, .. })) => {
            h.settings_mut().upgrade_format = Some(true);
            h.open()
        }
        (Backend::Postgres, _) => panic!("PostgreSQL upgraded without being asked to"),
        (_, opened) => opened.unwrap(),
    };
    assert_consistent(&store);
    assert_eq!(stats(&store), before);
    let by_blake3 = |hash, visibility| {
        store
            .files_by_digest(&Digest::Blake3(hash), visibility, 10)
            .unwrap()
    };
    assert_eq!(
        by_blake3(first.blake3, Visibility::Public),
        [first.id, second.id, elsewhere.id]
    );
    assert_eq!(
        by_blake3(secret.blake3, Visibility::Restricted),
        [secret.id]
    );
    assert!(by_blake3(secret.blake3, Visibility::Public).is_empty());
    assert!(by_blake3(gone.blake3, Visibility::Public).is_empty());
    let info = store.blob_info(&first.blake3).unwrap().unwrap();
    let others = [
        Digest::Sha256(info.sha256),
        Digest::Sha1(info.sha1.unwrap()),
        Digest::Md5(info.md5.unwrap()),
    ];
    for digest in others {
        assert_eq!(
            store
                .files_by_digest(&digest, Visibility::Public, 10)
                .unwrap(),
            [first.id, second.id, elsewhere.id]
        );
    }

    // A bucket's unique bytes go when its last link to a blob goes, not before, and a new
    // link to a blob the bucket holds adds none.
    store.delete_file(first.id, "tester").unwrap();
    assert_eq!(stats(&store)[0].unique_bytes, before[0].unique_bytes);
    store.delete_file(second.id, "tester").unwrap();
    assert_eq!(
        stats(&store)[0].unique_bytes,
        before[0].unique_bytes - 30_000
    );
    upload(&store, &b, "shared-4", &shared);
    assert_eq!(stats(&store)[1].unique_bytes, before[1].unique_bytes);
    assert_consistent(&store);
    drop(store);
    h.settings_mut().upgrade_format = Some(false);
    let store = h.open();
    assert_eq!(read_all(&store, elsewhere.id), shared);
    assert_consistent(&store);
}
