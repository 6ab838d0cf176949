//! Uploads and reads: sizes at the chunk boundaries, deduplication, digests and lookups,
//! download counts, reopening.

use std::io::{Read, Write};

use engine::Backend;

use super::{upload, Harness, DAY};
use crate::testing::support::{assert_consistent, bucket, content, read_all, Settings};
use crate::{Access, Blake3Hash, Digest, Error, UploadRequest, Visibility};

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
