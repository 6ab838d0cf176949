//! The change feed: one event per write, with its actor and values before and after, the
//! revision each write returns, history per file, bucket and actor, and retention.

use std::time::Duration;

use blobstore::{Change, ChangeKind, Error, FileUpdate, UploadRequest, GC_ACTOR};
use engine::{Backend, FeedError};

use blobstore::testing::suite::Harness as _;

use crate::common::{bucket, content, Harness, Settings};

const DAY: Duration = Duration::from_secs(86_400);

fn kinds(changes: &[Change]) -> Vec<&'static str> {
    changes.iter().map(|c| c.kind.name()).collect()
}

#[test]
fn every_write_records_its_event_and_answers_its_revision() {
    let h = Harness::new(Backend::Memory);
    let store = h.open();
    let b = bucket("feed");
    let quota = store.set_quota(&b, Some(1 << 20), "admin").unwrap();
    let first = store
        .upload_bytes(UploadRequest::new(b.clone(), "a"), b"hello", "alice")
        .unwrap();
    let dup = store
        .upload_bytes(UploadRequest::new(b.clone(), "b"), b"hello", "bob")
        .unwrap();
    let id = first.record.id;
    let expires = store.now().plus(DAY);
    let update = FileUpdate {
        expires: Some(Some(expires)),
        restricted: Some(true),
    };
    let updated = store.update_file(id, update, "carol").unwrap();
    // Nothing changes: no event, and the answer is the newest revision.
    let same = store.update_file(id, update, "carol").unwrap();
    let cut = store.delete_content(dup.record.id, "bob").unwrap();
    let deleted = store.delete_file(id, "alice").unwrap();
    assert_eq!(
        [
            quota,
            first.revision,
            dup.revision,
            updated.revision,
            same.revision,
            cut.revision,
            deleted.revision
        ],
        [1, 2, 3, 5, 5, 6, 7]
    );

    let changes = store.changes(0, 100).unwrap();
    assert_eq!(
        kinds(&changes),
        [
            "bucket.quota_set",
            "file.created",
            "file.created",
            "file.expiry_changed",
            "file.restricted_changed",
            "file.content_deleted",
            "file.deleted",
        ]
    );
    let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, (1..=7).collect::<Vec<_>>());
    assert_eq!(
        changes[0].kind,
        ChangeKind::QuotaSet {
            bucket: "feed".into(),
            before: None,
            after: Some(1 << 20)
        }
    );
    assert!(matches!(
        &changes[1].kind,
        ChangeKind::FileCreated { deduplicated: false, size: 5, file, .. } if *file == id.0
    ));
    assert!(matches!(
        &changes[2].kind,
        ChangeKind::FileCreated {
            deduplicated: true,
            ..
        }
    ));
    assert_eq!(
        changes[3].kind,
        ChangeKind::ExpiryChanged {
            bucket: "feed".into(),
            file: id.0,
            before: None,
            after: Some(expires.as_unix_millis())
        }
    );
    assert_eq!(changes[4].actor, "carol");
    assert_eq!(
        changes[6].kind,
        ChangeKind::FileDeleted {
            bucket: "feed".into(),
            file: id.0,
            size: 5,
            blake3: first.record.blake3.to_hex(),
            had_content: true,
        }
    );
    assert_eq!(changes[1].time_us, store.now().as_unix_millis() * 1000);

    // The JSON a reader sees: flat, with the kind's tag and the revision.
    let json = serde_json::to_value(&changes[5]).unwrap();
    assert_eq!(json["kind"], "file.content_deleted");
    assert_eq!(json["revision"], 6);
    assert_eq!(json["actor"], "bob");
    assert_eq!(json["file"], dup.record.id.0);
    let back: Change = serde_json::from_value(json).unwrap();
    assert_eq!(back, changes[5]);

    // History, oldest first, paged by revision.
    assert_eq!(
        kinds(&store.file_history(id, 0, 10).unwrap()),
        [
            "file.created",
            "file.expiry_changed",
            "file.restricted_changed",
            "file.deleted"
        ]
    );
    assert_eq!(store.file_history(id, 4, 1).unwrap()[0].revision, 5);
    assert_eq!(store.bucket_history(&b, 0, 100).unwrap(), changes);
    let bob: Vec<u64> = store
        .actor_history("bob", 0, 10)
        .unwrap()
        .iter()
        .map(|c| c.revision)
        .collect();
    assert_eq!(bob, [3, 6]);
    assert!(store.actor_history("nobody", 0, 10).unwrap().is_empty());

    // The head, and reads beyond it.
    assert_eq!(store.change_log().head(), 7);
    assert!(store.changes(7, 10).unwrap().is_empty());
    assert!(matches!(
        store.changes(8, 10),
        Err(Error::Feed(FeedError::BeyondHead { after: 8, head: 7 }))
    ));
}

#[test]
fn gc_records_its_changes_and_prunes_events_past_the_retention() {
    let settings = Settings {
        change_retention: 30 * DAY,
        ..Settings::default()
    };
    let h = Harness::with_settings(Backend::Memory, settings);
    let store = h.open();
    let b = bucket("gc");
    let mut request = UploadRequest::new(b.clone(), "soon");
    request.expires = Some(store.now().plus(DAY));
    let file = store
        .upload_bytes(request, &content(1, 100), "alice")
        .unwrap()
        .record;
    h.advance(10 * DAY);
    let report = store.gc(100).unwrap();
    assert_eq!((report.expired_files, report.pruned_changes), (1, 0));
    h.advance(2 * DAY);
    let report = store.gc(100).unwrap();
    assert_eq!(report.collected_blobs, 1);
    let changes = store.changes(0, 10).unwrap();
    assert_eq!(
        kinds(&changes),
        ["file.created", "file.collected", "blob.collected"]
    );
    assert!(changes[1..].iter().all(|c| c.actor == GC_ACTOR));
    assert_eq!(
        changes[1].kind.file(),
        Some(file.id),
        "the collected file is named"
    );

    // 31 days after the upload: its event is older than the retention, the others are not.
    h.advance(19 * DAY);
    assert_eq!(store.gc(100).unwrap().pruned_changes, 1);
    assert!(matches!(
        store.changes(0, 10),
        Err(Error::Feed(FeedError::Compacted {
            after: 0,
            oldest: 2
        }))
    ));
    assert_eq!(store.changes(1, 10).unwrap().len(), 2);
    assert_eq!(
        kinds(&store.file_history(file.id, 0, 10).unwrap()),
        ["file.collected"]
    );
    // Long after everything: the newest event stays, so revisions never go back.
    h.advance(100 * DAY);
    assert_eq!(store.gc(100).unwrap().pruned_changes, 1);
    assert_eq!(store.change_log().oldest().unwrap(), Some(3));
    drop(store);
    let store = h.open();
    let again = store
        .upload_bytes(UploadRequest::new(b, "later"), b"x", "alice")
        .unwrap();
    assert_eq!(again.revision, 4);
}
