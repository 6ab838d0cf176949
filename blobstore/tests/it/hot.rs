//! The hot-file cache and the in-memory download counts, on RocksDB (the librarian's default)
//! and on the memory engine: whatever changes a file's record, a reader answering from memory
//! must see it; counts gathered in memory must reach the engine and not outlive their file.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use blobstore::{
    Access, BucketName, ContentState, Error, FileId, ManualClock, Store, StoreBuilder, Timestamp,
    UploadRequest,
};
use engine::EngineConfig;

const START: Timestamp = Timestamp(1_800_000_000_000);

struct Fixture {
    dir: tempfile::TempDir,
    rocksdb: bool,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new(rocksdb: bool) -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            rocksdb,
            clock: Arc::new(ManualClock::at_millis(START.as_unix_millis())),
        }
    }

    fn open(&self) -> Store {
        let engine = if self.rocksdb {
            EngineConfig::rocksdb(self.dir.path().join("meta"))
        } else {
            EngineConfig::memory()
        };
        StoreBuilder::new(engine, self.dir.path().join("data"))
            .clock(self.clock.clone())
            .open()
            .unwrap()
    }
}

fn upload(store: &Store, name: &str, content: &[u8], expires: Option<Timestamp>) -> FileId {
    let mut request = UploadRequest::new(BucketName::new("hot").unwrap(), name);
    request.expires = expires;
    store
        .upload_bytes(request, content, "tester")
        .unwrap()
        .record
        .id
}

/// Reads `id` the way the librarian does: from the cache, else through `small_file`, and
/// applies the same checks.
fn serve(store: &Store, id: FileId) -> Result<Vec<u8>, Error> {
    let file = match store.cached_file(id) {
        Some(file) => file,
        None => store.small_file(id)?.expect("an inline file"),
    };
    store.check_readable(file.record(), Access::Anonymous)?;
    Ok(file.content().to_vec())
}

fn each_backend(test: impl Fn(Fixture)) {
    test(Fixture::new(false));
    test(Fixture::new(true));
}

#[test]
fn a_small_file_is_cached_once_read() {
    each_backend(|fixture| {
        let store = fixture.open();
        let id = upload(&store, "a", b"hello", None);
        assert!(store.cached_file(id).is_none());
        assert_eq!(serve(&store, id).unwrap(), b"hello");
        let cached = store.cached_file(id).expect("cached after a read");
        assert_eq!(cached.content().as_ref(), b"hello");
        assert_eq!(cached.record().filename, "a");
        assert_eq!(store.cached_files(), 1);
        // Content above the inline threshold is never cached.
        let big = vec![7u8; store.inline_threshold() + 1];
        let big_id = upload(&store, "big", &big, None);
        assert!(store.small_file(big_id).unwrap().is_none());
        assert!(store.cached_file(big_id).is_none());
    });
}

#[test]
fn deleted_files_are_not_served_from_memory() {
    each_backend(|fixture| {
        let store = fixture.open();
        let gone = upload(&store, "gone", b"delete me", None);
        let cut = upload(&store, "cut", b"cut my content", None);
        serve(&store, gone).unwrap();
        serve(&store, cut).unwrap();
        assert!(store.cached_file(gone).is_some() && store.cached_file(cut).is_some());

        store.delete_file(gone, "tester").unwrap();
        assert!(store.cached_file(gone).is_none());
        assert!(matches!(
            serve(&store, gone),
            Err(Error::NotFound { id }) if id == gone
        ));

        store.delete_content(cut, "tester").unwrap();
        assert!(store.cached_file(cut).is_none());
        assert!(store.small_file(cut).unwrap().is_none());
        let record = store.file(cut).unwrap();
        assert_eq!(record.content, ContentState::Deleted);
        assert!(matches!(
            store.check_readable(&record, Access::Anonymous),
            Err(Error::ContentGone {
                reason: "deleted",
                ..
            })
        ));
    });
}

#[test]
fn expiry_is_checked_on_every_cached_answer_and_gc_invalidates() {
    each_backend(|fixture| {
        let store = fixture.open();
        let expires = START.plus(Duration::from_secs(60));
        let id = upload(&store, "soon", b"short-lived", Some(expires));
        assert_eq!(serve(&store, id).unwrap(), b"short-lived");
        assert!(store.cached_file(id).is_some());
        fixture.clock.advance(Duration::from_secs(60));
        // Still cached, but past its expiry: the check refuses it.
        assert!(matches!(
            serve(&store, id),
            Err(Error::ContentGone {
                reason: "expired",
                ..
            })
        ));
        // GC cuts the link after the expiry grace and drops the cached copy.
        fixture.clock.advance(blobstore::DEFAULT_EXPIRY_GRACE);
        assert_eq!(store.gc(100).unwrap().expired_files, 1);
        assert!(store.cached_file(id).is_none());
        assert!(store.small_file(id).unwrap().is_none());
    });
}

#[test]
fn restricted_files_need_their_token_even_from_memory() {
    each_backend(|fixture| {
        let store = fixture.open();
        let mut request = UploadRequest::new(BucketName::new("hot").unwrap(), "secret");
        request.restricted = true;
        let id = store
            .upload_bytes(request, b"classified", "tester")
            .unwrap()
            .record
            .id;
        let token = store.issue_token(id, None).unwrap();
        let file = store.small_file(id).unwrap().unwrap();
        let cached = store
            .cached_file(id)
            .expect("restricted files are cached too");
        assert!(cached.record().restricted && file.record().restricted);
        assert!(matches!(
            store.check_readable(cached.record(), Access::Anonymous),
            Err(Error::Forbidden { .. })
        ));
        store
            .check_readable(cached.record(), Access::Token(&token))
            .unwrap();
        let other = upload(&store, "other", b"x", None);
        let wrong = store.issue_token(other, None).unwrap();
        assert!(matches!(
            store.check_readable(cached.record(), Access::Token(&wrong)),
            Err(Error::Forbidden { .. })
        ));
    });
}

#[test]
fn a_file_made_restricted_is_no_longer_served_without_a_token() {
    each_backend(|fixture| {
        let store = fixture.open();
        let id = upload(&store, "public", b"was public", None);
        assert_eq!(serve(&store, id).unwrap(), b"was public");
        assert!(store.cached_file(id).is_some());
        let record = store.set_restricted(id, true, "tester").unwrap().value;
        assert!(record.restricted);
        assert!(store.cached_file(id).is_none());
        assert!(matches!(serve(&store, id), Err(Error::Forbidden { .. })));
        // The digest index follows: the file is no longer found among public content.
        let hash = blobstore::Digest::Blake3(record.blake3);
        let public = store
            .files_by_digest(&hash, blobstore::Visibility::Public, 10)
            .unwrap();
        let restricted = store
            .files_by_digest(&hash, blobstore::Visibility::Restricted, 10)
            .unwrap();
        assert!(!public.contains(&id) && restricted.contains(&id));
        let token = store.issue_token(id, None).unwrap();
        let file = store.small_file(id).unwrap().unwrap();
        store
            .check_readable(file.record(), Access::Token(&token))
            .unwrap();
        // And back: public again, for anyone.
        store.set_restricted(id, false, "tester").unwrap();
        assert_eq!(serve(&store, id).unwrap(), b"was public");
        assert!(store.check().unwrap().is_ok());
    });
}

#[test]
fn a_file_given_an_earlier_expiry_is_not_served_from_memory_past_it() {
    each_backend(|fixture| {
        let store = fixture.open();
        let id = upload(&store, "log", b"kept for now", None);
        assert_eq!(serve(&store, id).unwrap(), b"kept for now");
        assert!(store.cached_file(id).is_some());
        let soon = START.plus(Duration::from_secs(60));
        assert_eq!(
            store
                .set_expiry(id, Some(soon), "tester")
                .unwrap()
                .value
                .expires,
            Some(soon)
        );
        assert!(store.cached_file(id).is_none());
        assert_eq!(serve(&store, id).unwrap(), b"kept for now");
        fixture.clock.advance(Duration::from_secs(61));
        assert!(matches!(
            serve(&store, id),
            Err(Error::ContentGone {
                reason: "expired",
                ..
            })
        ));
        // Cleared again: served, from memory once read.
        store.set_expiry(id, None, "tester").unwrap();
        assert_eq!(serve(&store, id).unwrap(), b"kept for now");
        assert_eq!(store.cached_file(id).unwrap().record().expires, None);
        assert!(store.check().unwrap().is_ok());
    });
}

#[test]
fn a_cache_disabled_store_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreBuilder::new(EngineConfig::memory(), dir.path())
        .hot_cache_bytes(0)
        .open()
        .unwrap();
    let id = upload(&store, "a", b"abc", None);
    assert_eq!(serve(&store, id).unwrap(), b"abc");
    assert!(store.cached_file(id).is_none());
    assert_eq!(store.cached_files(), 0);
}

/// Deletes race with readers that fill the cache: after each delete returns, no reader may
/// find the file, in memory or in the engine. Each reader notes, before every read, whether
/// the delete of that file had already returned; every such read must answer `NotFound`.
#[test]
fn concurrent_fills_never_resurrect_a_deleted_file() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    each_backend(|fixture| {
        let store = fixture.open();
        let ids: Vec<FileId> = (0..200)
            .map(|i| {
                upload(
                    &store,
                    &format!("f{i}"),
                    format!("content {i}").as_bytes(),
                    None,
                )
            })
            .collect();
        // Set once `delete_file` of that file returned.
        let gone: Vec<AtomicBool> = ids.iter().map(|_| AtomicBool::new(false)).collect();
        let all_deleted = AtomicBool::new(false);
        let reads_after_delete = AtomicU64::new(0);
        let resurrected = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..3 {
                let store = store.clone();
                let (ids, gone) = (&ids, &gone);
                let (reads_after_delete, resurrected) = (&reads_after_delete, &resurrected);
                let all_deleted = &all_deleted;
                scope.spawn(move || {
                    // Read until a whole pass began after the last delete returned, so reads
                    // after deletes happen however the threads are scheduled.
                    loop {
                        let last_pass = all_deleted.load(Ordering::SeqCst);
                        for (i, &id) in ids.iter().enumerate() {
                            let deleted_before = gone[i].load(Ordering::SeqCst);
                            let answer = store.small_file(id);
                            if deleted_before {
                                reads_after_delete.fetch_add(1, Ordering::Relaxed);
                                if !matches!(answer, Err(Error::NotFound { .. })) {
                                    resurrected
                                        .lock()
                                        .unwrap()
                                        .push(format!("file {id}: {answer:?}"));
                                }
                            }
                        }
                        if last_pass {
                            break;
                        }
                    }
                });
            }
            for (i, &id) in ids.iter().enumerate() {
                store.delete_file(id, "tester").unwrap();
                gone[i].store(true, Ordering::SeqCst);
                assert!(
                    store.cached_file(id).is_none(),
                    "file {id} served after delete"
                );
            }
            all_deleted.store(true, Ordering::SeqCst);
        });
        let resurrected = resurrected.into_inner().unwrap();
        assert!(
            resurrected.is_empty(),
            "reads that began after the delete returned found the file: {:?}",
            &resurrected[..resurrected.len().min(5)]
        );
        assert!(
            reads_after_delete.load(Ordering::Relaxed) > 0,
            "no reader read a file after its delete: the race was not exercised"
        );
        for &id in &ids {
            assert!(
                store.cached_file(id).is_none(),
                "file {id} cached after delete"
            );
            assert!(matches!(store.small_file(id), Err(Error::NotFound { .. })));
        }
    });
}

#[test]
fn counted_downloads_reach_the_engine_and_survive_a_reopen() {
    each_backend(|fixture| {
        let today = START.day();
        let (kept, deleted) = {
            let store = fixture.open();
            let kept = upload(&store, "kept", b"k", None);
            let deleted = upload(&store, "deleted", b"d", None);
            for _ in 0..5 {
                store.count_download(kept);
                store.count_download(deleted);
            }
            // Pending counts are part of the answer before they are written.
            assert_eq!(store.downloads(kept, today).unwrap(), 5);
            store.flush_downloads().unwrap();
            assert_eq!(store.downloads(kept, today).unwrap(), 5);
            store.count_download(kept);
            store.count_download(deleted);
            // A read through the store counts too.
            let mut content = Vec::new();
            store
                .read(kept, Access::Anonymous, None)
                .unwrap()
                .read_to_end(&mut content)
                .unwrap();
            assert_eq!(store.downloads(kept, today).unwrap(), 7);
            // Deleting a file drops its counters, written and pending; a count that races
            // the delete is not written back later.
            store.delete_file(deleted, "tester").unwrap();
            assert_eq!(store.downloads(deleted, today).unwrap(), 0);
            store.count_download(deleted);
            store.flush_downloads().unwrap();
            assert_eq!(store.downloads(deleted, today).unwrap(), 0);
            store.count_download(kept);
            (kept, deleted)
            // Dropped with one count pending: closing the store writes it.
        };
        if fixture.rocksdb {
            let store = fixture.open();
            assert_eq!(store.downloads(kept, today).unwrap(), 8);
            assert_eq!(store.downloads(deleted, today).unwrap(), 0);
        }
    });
}

#[test]
fn reads_write_pending_counts_once_they_are_due() {
    let fixture = Fixture::new(false);
    let store = fixture.open();
    let id = upload(&store, "a", b"abc", None);
    let today = START.day();
    store.count_download(id);
    fixture.clock.advance(blobstore::DOWNLOADS_FLUSH_INTERVAL);
    store.read(id, Access::Anonymous, None).unwrap();
    // The read found the counts due and wrote them: the engine's counter alone has both.
    let engine = store.engine();
    let ks = engine.keyspace("bs.downloads").unwrap();
    let mut key = id.0.to_be_bytes().to_vec();
    key.extend_from_slice(&today.0.to_be_bytes());
    assert_eq!(engine.counter(ks, &key).unwrap(), 2);
}
