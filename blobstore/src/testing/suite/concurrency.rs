//! Concurrent writers: pagination under inserts, uploads racing deletes.

use std::collections::HashSet;

use engine::Backend;

use super::{upload, Harness};
use crate::testing::support::{assert_consistent, bucket, content};
use crate::FileId;

pub fn pagination_under_concurrent_inserts<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("paged");
    let mut existing = Vec::new();
    for i in 0..150 {
        existing.push(upload(&store, &b, &format!("f{i}"), &content(i, 30)).id);
    }
    // Noise in neighbouring buckets.
    upload(&store, &bucket("page"), "x", b"x");
    upload(&store, &bucket("pagedz"), "y", b"y");
    let writer = {
        let store = store.clone();
        let b = b.clone();
        std::thread::spawn(move || {
            for i in 0..150 {
                upload(&store, &b, &format!("new{i}"), &content(1000 + i, 30));
            }
        })
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_bucket(&b, after, 7).unwrap();
        assert!(page.files.len() <= 7);
        seen.extend(page.files.iter().map(|f| f.id));
        assert!(page.files.iter().all(|f| f.bucket == b));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    writer.join().unwrap();
    let unique: HashSet<FileId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a file was listed twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "not in id order");
    for id in &existing {
        assert!(
            unique.contains(id),
            "file {id} that existed throughout was skipped"
        );
    }
    let all = store.list_bucket(&b, None, 1000).unwrap();
    assert_eq!(all.files.len(), 300);
    assert_eq!(all.next, None);
}

pub fn concurrent_uploads_and_deletes_stay_exact<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let buckets = [bucket("c0"), bucket("c1"), bucket("c2")];
    std::thread::scope(|scope| {
        for t in 0..6u64 {
            let store = store.clone();
            let buckets = buckets.clone();
            scope.spawn(move || {
                let mut mine = Vec::new();
                for i in 0..40u64 {
                    let size = if i % 5 == 0 { 40_000 } else { 64 };
                    let data = content((t + i) % 7, size);
                    let b = &buckets[((t + i) % 3) as usize];
                    mine.push(upload(&store, b, "f", &data).id);
                    if i % 3 == 0 {
                        let victim = mine.swap_remove(((t * 7 + i) % mine.len() as u64) as usize);
                        if i % 2 == 0 {
                            store.delete_file(victim, "tester").unwrap();
                        } else {
                            store.delete_content(victim, "tester").unwrap();
                        }
                    }
                    if i % 10 == 0 {
                        store.gc(10).unwrap();
                    }
                }
            });
        }
    });
    assert_consistent(&store);
    let total: u64 = buckets
        .iter()
        .map(|b| store.bucket_stats(b).unwrap().files)
        .sum();
    assert_eq!(total, store.summary().unwrap().files);
    assert_eq!(total, 6 * 40 - 6 * 14 / 2);
}
