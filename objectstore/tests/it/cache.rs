//! The local read cache: least recently used eviction, restarts, outages.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use blobstore::{Blake3Hash, BlobBackend, LocalFsBackend, UploadRequest};
use engine::Backend;
use objectstore::{CacheConfig, CachedBackend, ObjectStoreBackend, ObjectStoreConfig};

use blobstore::testing::suite::Harness as _;

use crate::common::{bucket, content, read_all, Harness, Protocol};

fn put(backend: &dyn BlobBackend, bytes: &[u8]) -> Blake3Hash {
    let hash = Blake3Hash::of(bytes);
    let mut temp = backend.create_temp().unwrap();
    temp.write_all(bytes).unwrap();
    temp.persist(&hash).unwrap();
    hash
}

fn read(backend: &dyn BlobBackend, hash: &Blake3Hash, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    backend
        .open_range(hash, offset, len)
        .unwrap()
        .expect("stored")
        .read_to_end(&mut out)
        .unwrap();
    out
}

const K: usize = 100_000;

#[test]
fn least_recently_used_blobs_are_evicted_and_the_order_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(LocalFsBackend::open(dir.path().join("inner")).unwrap());
    let blobs: Vec<Vec<u8>> = (0..5).map(|i| content(i, K)).collect();
    let hashes: Vec<Blake3Hash> = blobs.iter().map(|b| put(inner.as_ref(), b)).collect();
    let config =
        CacheConfig::new(dir.path().join("cache"), 3 * K as u64).max_object_bytes(K as u64);
    let cache = CachedBackend::open(inner.clone(), &config).unwrap();
    let size = K as u64;

    for i in 0..3 {
        assert_eq!(read(&cache, &hashes[i], 0, size), blobs[i]);
    }
    assert_eq!(cache.stats().inserted, 3);
    assert_eq!(cache.stats().misses, 3);
    // A hit moves blob 0 to the newest end.
    assert_eq!(read(&cache, &hashes[0], 10, 20), blobs[0][10..30]);
    assert_eq!(cache.stats().hits, 1);
    // A partial read is not cached; a whole one evicts the least recently used (blob 1).
    assert_eq!(read(&cache, &hashes[3], 0, 10), blobs[3][..10]);
    assert!(!cache.contains(&hashes[3]).unwrap());
    assert_eq!(read(&cache, &hashes[3], 0, size), blobs[3]);
    assert!(cache.contains(&hashes[3]).unwrap());
    assert!(!cache.contains(&hashes[1]).unwrap());
    assert!(cache.contains(&hashes[0]).unwrap());
    assert!(cache.contains(&hashes[2]).unwrap());
    assert_eq!(cache.stats().evicted, 1);
    assert_eq!(cache.stats().bytes, 3 * size);
    drop(cache);

    // Reopened: the same content and order, without a scan.
    let cache = CachedBackend::open(inner.clone(), &config).unwrap();
    assert_eq!(cache.stats().bytes, 3 * size);
    // The inner copies of cached blobs can go: hits never ask the inner backend.
    inner.delete(&hashes[0]).unwrap();
    assert_eq!(read(&cache, &hashes[0], 0, size), blobs[0]);
    assert_eq!(cache.stats().hits, 1);
    // Order now: 2 (oldest), 3, 0. Caching blob 4 evicts blob 2.
    assert_eq!(read(&cache, &hashes[4], 0, size), blobs[4]);
    assert!(!cache.contains(&hashes[2]).unwrap());
    for i in [0, 3, 4] {
        assert!(cache.contains(&hashes[i]).unwrap(), "blob {i}");
    }
    // Deleting through the cache drops the cached copy.
    cache.delete(&hashes[3]).unwrap();
    assert!(!cache.contains(&hashes[3]).unwrap());
    assert!(cache.open_range(&hashes[3], 0, size).unwrap().is_none());
    assert_eq!(cache.stats().bytes, 2 * size);
}

#[test]
fn blobs_larger_than_the_object_limit_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(LocalFsBackend::open(dir.path().join("inner")).unwrap());
    let big = content(9, 3 * K);
    let hash = put(inner.as_ref(), &big);
    let config =
        CacheConfig::new(dir.path().join("cache"), 10 * K as u64).max_object_bytes(K as u64);
    let cache = CachedBackend::open(inner, &config).unwrap();
    assert_eq!(read(&cache, &hash, 0, big.len() as u64), big);
    assert!(!cache.contains(&hash).unwrap());
    assert_eq!(cache.stats().bytes, 0);
}

/// Cached blobs are served by a restarted server whose object store cannot be reached;
/// others fail with an "unavailable" error.
pub fn cached_blobs_are_served_while_the_object_store_is_unreachable(backend: Backend) {
    let h = Harness::new(backend);
    let cache_config = CacheConfig::new(h.dir.path().join("cache"), 10 << 20);
    let remote: Arc<dyn BlobBackend> = Arc::new(h.object_backend());
    let cached = Arc::new(CachedBackend::open(remote, &cache_config).unwrap());
    let store = h.open_with(cached.clone());
    let files: Vec<_> = (0..3)
        .map(|i| {
            let bytes = content(40 + i, 60_000 + i as usize);
            let file = store
                .upload_bytes(
                    UploadRequest::new(bucket("hot"), format!("f{i}")),
                    &bytes,
                    "tester",
                )
                .unwrap()
                .record;
            (file, bytes)
        })
        .collect();
    for (file, bytes) in &files[..2] {
        assert_eq!(&read_all(&store, file.id), bytes);
    }
    assert_eq!(cached.stats().inserted, 2);
    drop(store);
    drop(cached);

    let mut down = h.config.clone();
    down.protocol = match h.protocol {
        Protocol::Swift => ObjectStoreConfig::swift("http://127.0.0.1:9/auth/v1.0", "a:b", "c"),
        Protocol::S3 => ObjectStoreConfig::s3("http://127.0.0.1:9", "us-east-1", "a", "b"),
    }
    .protocol;
    down.retry = objectstore::RetryConfig::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
        Duration::from_millis(300),
    );
    let remote: Arc<dyn BlobBackend> =
        Arc::new(ObjectStoreBackend::open(&down, h.engine()).unwrap());
    let cached = Arc::new(CachedBackend::open(remote, &cache_config).unwrap());
    let store = h.open_with(cached.clone());
    for (file, bytes) in &files[..2] {
        assert_eq!(&read_all(&store, file.id), bytes);
    }
    assert_eq!(cached.stats().hits, 2);
    let error = store
        .read(files[2].0.id, blobstore::Access::Trusted, None)
        .unwrap_err();
    assert!(objectstore::is_unavailable(&error), "{error}");
}
