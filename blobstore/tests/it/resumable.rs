//! Resumable uploads: appends in pieces, bad appends that change nothing, resuming after a
//! reopen (the prefix rehashed), expiry and termination.

use std::time::Duration;

use blobstore::{Checksum, ChecksumAlgorithm, Error, UploadRequest};
use engine::Backend;
use sha2::{Digest as _, Sha256};

use blobstore::testing::suite::Harness as _;
use blobstore::testing::{assert_consistent, read_all};

use crate::common::{bucket, content, Harness, Settings};

fn request(name: &str) -> UploadRequest {
    UploadRequest::new(bucket("tus"), name)
}

pub fn appends_make_an_ordinary_file(backend: Backend) {
    let h = Harness::with_settings(
        backend,
        Settings {
            keep_sha1_md5: true,
            ..Settings::default()
        },
    );
    let store = h.open();
    let data = content(7, 3 << 20);
    let created = store
        .create_upload(
            request("big.iso"),
            data.len() as u64,
            "m".into(),
            None,
            "alice",
        )
        .unwrap();
    let id = created.upload.id;
    assert_eq!(created.upload.offset, 0);
    let mut offset = 0usize;
    for piece in [1usize, 100_000, 1 << 20, 7] {
        let patched = store
            .append_upload(id, offset as u64, &mut &data[offset..offset + piece], None)
            .unwrap();
        offset += piece;
        assert_eq!(patched.upload.offset, offset as u64);
        assert!(patched.finished.is_none());
        assert_eq!(store.upload_status(id).unwrap().offset, offset as u64);
    }
    let head = store.changes(0, 1000).unwrap().len();
    let done = store
        .append_upload(id, offset as u64, &mut &data[offset..], None)
        .unwrap();
    let file = done.finished.expect("the last append finishes the upload");
    assert_eq!(done.upload.file, Some(file.record.id));
    assert_eq!(file.record.size, data.len() as u64);
    assert_eq!(file.blob.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(file.record.blake3, blobstore::Blake3Hash::of(&data));
    // Each digest is hashed on a thread of its own across the appends.
    assert_eq!(
        file.blob.sha1,
        Some(<[u8; 20]>::from(sha1::Sha1::digest(&data)))
    );
    assert_eq!(
        file.blob.md5,
        Some(<[u8; 16]>::from(md5::Md5::digest(&data)))
    );
    assert_eq!(read_all(&store, file.record.id), data);
    let events = store.changes(0, 1000).unwrap();
    assert_eq!(events.len(), head + 1, "exactly one event: file.created");
    assert_eq!(events.last().unwrap().kind.name(), "file.created");
    assert_eq!(store.bucket_stats(&bucket("tus")).unwrap().files, 1);
    // Finished: the status says so; an empty append at the end changes nothing.
    let status = store.upload_status(id).unwrap();
    assert_eq!(
        (status.offset, status.file),
        (data.len() as u64, Some(file.record.id))
    );
    let again = store
        .append_upload(id, data.len() as u64, &mut &b""[..], None)
        .unwrap();
    assert!(again.finished.is_none());
    // The same content again through a resumable upload deduplicates.
    let twin = store
        .create_upload(
            request("twin.iso"),
            data.len() as u64,
            String::new(),
            None,
            "bob",
        )
        .unwrap();
    let twin = store
        .append_upload(twin.upload.id, 0, &mut &data[..], None)
        .unwrap()
        .finished
        .unwrap();
    assert_eq!(twin.blob.refcount, 2);
    assert_eq!(h.stored_blobs(), 1);
    // Small and empty uploads go inline.
    let small = store
        .create_upload(request("small"), 5, String::new(), None, "bob")
        .unwrap();
    let small = store
        .append_upload(small.upload.id, 0, &mut &b"hello"[..], None)
        .unwrap()
        .finished
        .unwrap();
    assert!(small.blob.inline);
    let empty = store
        .create_upload(request("empty"), 0, String::new(), None, "bob")
        .unwrap();
    assert_eq!(empty.finished.unwrap().record.size, 0);
    assert_eq!(store.sweep_orphans().unwrap().upload_files, 0);
    assert_consistent(&store);
}

pub fn bad_appends_change_nothing(backend: Backend) {
    let h = Harness::new(backend);
    let store = h.open();
    let data = content(3, 100_000);
    let id = store
        .create_upload(
            request("f"),
            data.len() as u64,
            String::new(),
            None,
            "alice",
        )
        .unwrap()
        .upload
        .id;
    store.append_upload(id, 0, &mut &data[..10], None).unwrap();
    assert!(matches!(
        store.append_upload(id, 0, &mut &data[..10], None),
        Err(Error::OffsetMismatch {
            offset: 10,
            requested: 0,
            ..
        })
    ));
    assert!(matches!(
        store.append_upload(id, 10, &mut &content(4, 100_000)[..], None),
        Err(Error::PastLength { .. })
    ));
    let wrong = Checksum {
        algorithm: ChecksumAlgorithm::Sha256,
        digest: vec![0; 32],
    };
    assert!(matches!(
        store.append_upload(id, 10, &mut &data[10..20], Some(wrong)),
        Err(Error::ChecksumMismatch {
            algorithm: "sha256"
        })
    ));
    assert_eq!(store.upload_status(id).unwrap().offset, 10);
    let right = Checksum {
        algorithm: ChecksumAlgorithm::Sha1,
        digest: sha1::Sha1::digest(&data[10..20]).to_vec(),
    };
    store
        .append_upload(id, 10, &mut &data[10..20], Some(right))
        .unwrap();
    let file = store
        .append_upload(id, 20, &mut &data[20..], None)
        .unwrap()
        .finished
        .unwrap();
    assert_eq!(read_all(&store, file.record.id), data);
    let unknown = blobstore::UploadId::random();
    assert!(matches!(
        store.upload_status(unknown),
        Err(Error::UploadNotFound { .. })
    ));
    // The quota is checked at creation from the announced length.
    store
        .set_quota(&bucket("tus"), Some(200_000), "admin")
        .unwrap();
    assert!(matches!(
        store.create_upload(request("g"), 100_001, String::new(), None, "alice"),
        Err(Error::QuotaExceeded { .. })
    ));
    assert_consistent(&store);
}

pub fn resumes_after_reopen_with_the_right_digests(backend: Backend) {
    let h = Harness::new(backend);
    let data = content(11, 2 << 20);
    let id = {
        let store = h.open();
        let id = store
            .create_upload(
                request("r"),
                data.len() as u64,
                String::new(),
                None,
                "alice",
            )
            .unwrap()
            .upload
            .id;
        store
            .append_upload(id, 0, &mut &data[..700_000], None)
            .unwrap();
        id
    };
    // A crash in the middle of an append leaves unacknowledged bytes past the offset.
    let part = h.data_dir().join("uploads").join(format!("{id}.part"));
    let mut bytes = std::fs::read(&part).unwrap();
    bytes.extend_from_slice(b"garbage that was never acknowledged");
    std::fs::write(&part, bytes).unwrap();
    let store = h.open();
    assert_eq!(store.upload_status(id).unwrap().offset, 700_000);
    let patched = store
        .append_upload(id, 700_000, &mut &data[700_000..1_500_000], None)
        .unwrap();
    assert!(patched.rehashed, "a reopened store rehashes the prefix");
    let patched = store
        .append_upload(id, 1_500_000, &mut &data[1_500_000..], None)
        .unwrap();
    assert!(!patched.rehashed, "the running store keeps the digests");
    let file = patched.finished.unwrap();
    assert_eq!(file.record.blake3, blobstore::Blake3Hash::of(&data));
    assert_eq!(file.blob.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(read_all(&store, file.record.id), data);
    assert!(!part.exists());
    assert_consistent(&store);
}

pub fn expiry_and_termination(backend: Backend) {
    let h = Harness::new(backend);
    let store = h.open();
    let data = content(5, 50_000);
    let id = store
        .create_upload(
            request("e"),
            data.len() as u64,
            String::new(),
            None,
            "alice",
        )
        .unwrap()
        .upload
        .id;
    store
        .append_upload(id, 0, &mut &data[..1000], None)
        .unwrap();
    let part = h.data_dir().join("uploads").join(format!("{id}.part"));
    assert!(part.exists());
    // An append moves the deadline; a day without one expires the upload.
    h.advance(Duration::from_secs(80_000));
    store
        .append_upload(id, 1000, &mut &data[1000..2000], None)
        .unwrap();
    h.advance(Duration::from_secs(80_000));
    assert_eq!(store.upload_status(id).unwrap().offset, 2000);
    h.advance(Duration::from_secs(10_000));
    assert!(matches!(
        store.upload_status(id),
        Err(Error::UploadExpired { .. })
    ));
    assert!(matches!(
        store.append_upload(id, 2000, &mut &data[2000..], None),
        Err(Error::UploadExpired { .. })
    ));
    assert_eq!(store.gc(100).unwrap().expired_uploads, 1);
    assert!(matches!(
        store.upload_status(id),
        Err(Error::UploadNotFound { .. })
    ));
    assert!(!part.exists(), "GC removes the bytes");
    // Termination.
    let id = store
        .create_upload(
            request("t"),
            10,
            String::new(),
            Some(Duration::from_secs(60)),
            "alice",
        )
        .unwrap()
        .upload
        .id;
    store
        .append_upload(id, 0, &mut &b"12345"[..], None)
        .unwrap();
    store.terminate_upload(id).unwrap();
    assert!(matches!(
        store.append_upload(id, 5, &mut &b"67890"[..], None),
        Err(Error::UploadNotFound { .. })
    ));
    assert!(matches!(
        store.terminate_upload(id),
        Err(Error::UploadNotFound { .. })
    ));
    assert_eq!(
        std::fs::read_dir(h.data_dir().join("uploads"))
            .unwrap()
            .count(),
        0
    );
    assert_consistent(&store);
}

pub fn idempotent_uploads(backend: Backend) {
    let h = Harness::new(backend);
    let store = h.open();
    let keyed = |name: &str, key: &str| {
        let mut request = request(name);
        request.idempotency_key = Some(key.to_string());
        request
    };
    let a = content(1, 40_000);
    let first = store.upload_bytes(keyed("a", "K"), &a, "alice").unwrap();
    assert!(!first.repeated);
    let events = store.changes(0, 1000).unwrap().len();
    // The same key and content: the first upload's file, nothing stored.
    let again = store.upload_bytes(keyed("a2", "K"), &a, "alice").unwrap();
    assert!(again.repeated);
    assert_eq!(again.record, first.record);
    assert_eq!(store.changes(0, 1000).unwrap().len(), events);
    assert_eq!(store.bucket_stats(&bucket("tus")).unwrap().files, 1);
    // Other content: refused. Another actor's key of the same name is another key.
    let b = content(2, 100);
    assert!(matches!(
        store.upload_bytes(keyed("b", "K"), &b, "alice"),
        Err(Error::IdempotencyConflict { .. })
    ));
    assert!(
        !store
            .upload_bytes(keyed("b", "K"), &b, "bob")
            .unwrap()
            .repeated
    );
    for bad in [String::new(), "k".repeat(256), "tab\t".into()] {
        assert!(matches!(
            store.upload_bytes(keyed("c", &bad), &b, "alice"),
            Err(Error::InvalidIdempotencyKey { .. })
        ));
    }
    // Concurrent uploads with one key store one file.
    let c = content(3, 300_000);
    let ids: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| store.upload_bytes(keyed("c", "C"), &c, "carol").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.iter().filter(|u| !u.repeated).count(), 1);
    assert!(ids.iter().all(|u| u.record.id == ids[0].record.id));
    // Past the window the key is free again; GC removes the keys past it.
    h.advance(blobstore::IDEMPOTENCY_WINDOW + Duration::from_secs(1));
    let later = store.upload_bytes(keyed("b", "K"), &b, "alice").unwrap();
    assert!(!later.repeated);
    assert_eq!(store.gc(100).unwrap().expired_idempotency_keys, 2);
    h.advance(blobstore::IDEMPOTENCY_WINDOW + Duration::from_secs(1));
    assert_eq!(store.gc(100).unwrap().expired_idempotency_keys, 1);
    assert_consistent(&store);
}
