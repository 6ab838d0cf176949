//! Usage statistics: per file per day, per bucket per day, a file's total and last day.

use std::io::Read;
use std::time::Duration;

use blobstore::{Access, Day, Error, UploadRequest};
use engine::Backend;

use blobstore::testing::suite::Harness as _;

use crate::common::{bucket, Harness};

pub fn usage_statistics(backend: Backend) {
    let h = Harness::new(backend);
    let store = h.open();
    let b = bucket("usage");
    let upload = |name: &str, bytes: &[u8]| {
        store
            .upload_bytes(UploadRequest::new(b.clone(), name), bytes, "alice")
            .unwrap()
            .record
            .id
    };
    let one = upload("one", b"first file");
    let two = upload("two", b"second file");
    let read = |id| {
        let mut sink = Vec::new();
        store
            .read(id, Access::Anonymous, None)
            .unwrap()
            .read_to_end(&mut sink)
            .unwrap();
    };
    let today = store.now().day();
    assert_eq!(store.download_summary(one).unwrap().last_day, None);
    read(one);
    read(one);
    read(two);
    h.advance(Duration::from_secs(2 * 86_400));
    read(one);
    // A range read from the middle is not a download.
    store.read(one, Access::Anonymous, Some(2..4)).unwrap();
    let later = store.now().day();
    let days = store.file_downloads(one, today, later).unwrap();
    assert_eq!(days, vec![(today, 2), (Day(today.0 + 1), 0), (later, 1)]);
    let summary = store.download_summary(one).unwrap();
    assert_eq!((summary.total, summary.last_day), (3, Some(later)));
    assert_eq!(
        store.bucket_downloads(&b, today, later).unwrap(),
        vec![(today, 3), (Day(today.0 + 1), 0), (later, 1)]
    );
    // A deleted file's downloads still count for its bucket.
    store.delete_file(two, "alice").unwrap();
    assert_eq!(
        store.bucket_downloads(&b, today, today).unwrap(),
        vec![(today, 3)]
    );
    assert!(matches!(
        store.file_downloads(two, today, today),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.file_downloads(one, later, today),
        Err(Error::InvalidDayRange { .. })
    ));
    assert!(matches!(
        store.bucket_downloads(&b, Day(0), Day(366)),
        Err(Error::InvalidDayRange { .. })
    ));
    assert_eq!(
        store.bucket_downloads(&b, Day(0), Day(365)).unwrap().len(),
        366
    );
    // Counts survive a reopen (written at close).
    drop(store);
    let store = h.open();
    assert_eq!(store.download_summary(one).unwrap().total, 3);
    let _ = store;
}
