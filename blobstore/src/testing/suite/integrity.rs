//! Damaged blobs: verification, scrubbing, and reads refused after damage.

use std::collections::HashSet;
use std::io::Write;

use engine::Backend;

use super::{upload, Harness, DAY};
use crate::testing::support::{bucket, content, corrupt_blob, read_all};
use crate::{Access, Blake3Hash, BlobProblem, Digest, Error, Store, Visibility};

pub fn verify_finds_corruption<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("scrub");
    let one = upload(&store, &b, "one", &content(1, 100_000));
    let two = upload(&store, &b, "two", &content(2, 100_000));
    let three = upload(&store, &b, "three", &content(3, 100_000));
    upload(&store, &b, "inline", b"small");
    // Behind the store's back: one blob damaged, another lost.
    let blobs = h.blob_backend();
    corrupt_blob(blobs.as_ref(), &one.blake3, 500);
    blobs.delete(&two.blake3).unwrap();
    // Resumable: one blob per batch.
    let mut problems = Vec::new();
    let mut after = None;
    let mut batches = 0;
    loop {
        let report = store.verify(after, 1).unwrap();
        batches += 1;
        problems.extend(report.problems);
        match report.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(batches >= 4);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.contains(&BlobProblem::Missing { hash: two.blake3 }));
    assert!(problems.iter().any(
        |p| matches!(p, BlobProblem::Corrupt { hash, size: 100_000, .. } if *hash == one.blake3)
    ));
    assert!(matches!(
        store.read(two.id, Access::Anonymous, None),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(read_all(&store, three.id), content(3, 100_000));
    // Inline content is checked on every read.
    let engine = store.engine().clone();
    let inline = engine.keyspace("bs.inline").unwrap();
    let small = Blake3Hash::of(b"small");
    let mut batch = engine::WriteBatch::new();
    batch.put(inline, small.0, b"smalL");
    engine.write(batch, engine::Durability::Sync).unwrap();
    let id = store
        .files_by_digest(&Digest::Blake3(small), Visibility::Public, 1)
        .unwrap()[0];
    assert!(matches!(
        store.read(id, Access::Anonymous, None),
        Err(Error::Corrupt { .. })
    ));
}

/// Runs scrub steps of `limit` blobs until a pass completes; returns the steps' findings and
/// repairs and the number of steps.
fn scrub_pass(store: &Store, limit: usize) -> (Vec<BlobProblem>, Vec<Blake3Hash>, usize, u64) {
    let (mut found, mut repaired, mut steps, mut paced) = (Vec::new(), Vec::new(), 0, 0u64);
    loop {
        let step = store.scrub_step(limit, &mut |n| paced += n).unwrap();
        steps += 1;
        found.extend(step.found);
        repaired.extend(step.repaired);
        if step.completed.is_some() {
            return (found, repaired, steps, paced);
        }
    }
}

pub fn scrub_records_damage_and_refuses_reads<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let b = bucket("scrub");
    let (one, two, three);
    {
        let store = h.open();
        one = upload(&store, &b, "one", &content(11, 100_000));
        two = upload(&store, &b, "two", &content(12, 100_000));
        three = upload(&store, &b, "three", &content(13, 100_000));
        upload(&store, &b, "inline", b"small");
        // A clean store: a complete pass, nothing found, every byte paced.
        let (found, repaired, steps, paced) = scrub_pass(&store, 1);
        assert_eq!((found.len(), repaired.len(), steps), (0, 0, 4));
        assert_eq!(paced, 300_005);
        let report = store.scrub_report(100, 10).unwrap();
        assert!(report.findings.is_empty());
        let first = report.state.last_complete.unwrap();
        assert_eq!((first.pass, first.blobs, first.bytes), (1, 4, 300_005));
        assert!(report.state.current.is_none());
        // Behind the store's back: one blob damaged, another lost.
        let blobs = h.blob_backend();
        corrupt_blob(blobs.as_ref(), &one.blake3, 500);
        blobs.delete(&two.blake3).unwrap();
        // Undetected yet, a damaged blob is served as it is: the scrub is what catches it.
        assert_ne!(read_all(&store, one.id), content(11, 100_000));
        // Two steps of the second pass, then a restart.
        for _ in 0..2 {
            assert!(store
                .scrub_step(1, &mut |_| {})
                .unwrap()
                .completed
                .is_none());
        }
        let current = store.scrub_state().unwrap().current.unwrap();
        assert_eq!((current.pass, current.blobs), (2, 2));
        assert!(current.position.is_some());
    }
    let store = h.open();
    let current = store.scrub_state().unwrap().current.unwrap();
    assert_eq!(
        (current.pass, current.blobs),
        (2, 2),
        "the position survives a reopen"
    );
    // The damage is found in this pass, before the restart or after it.
    let (_, _, steps, _) = scrub_pass(&store, 1);
    let report = store.scrub_report(100, 10).unwrap();
    let second = report.state.last_complete.unwrap();
    assert_eq!((second.pass, second.blobs), (2, 4));
    assert_eq!(steps, 2);
    assert_eq!(report.findings.len(), 2, "{:?}", report.findings);
    let damaged: HashSet<Blake3Hash> = report.findings.iter().map(|f| f.problem.hash()).collect();
    assert_eq!(damaged, HashSet::from([one.blake3, two.blake3]));
    for finding in &report.findings {
        let expected = if finding.problem.hash() == one.blake3 {
            assert!(matches!(
                finding.problem,
                BlobProblem::Corrupt { size: 100_000, .. }
            ));
            one.id
        } else {
            assert_eq!(finding.problem, BlobProblem::Missing { hash: two.blake3 });
            two.id
        };
        assert_eq!(finding.files, vec![expected]);
        assert_eq!(finding.size, 100_000);
    }
    // Never served as good again: whole reads and ranges of the corrupt blob are refused.
    for range in [None, Some(0..10), Some(99_000..100_000)] {
        assert!(matches!(
            store.read(one.id, Access::Trusted, range),
            Err(Error::Corrupt { hash, .. }) if hash == one.blake3
        ));
    }
    assert!(matches!(
        store.check_scrubbed(&one.blake3),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(read_all(&store, three.id), content(13, 100_000));
    store.check_scrubbed(&three.blake3).unwrap();
    // The change feed tells each finding once: a third pass finds nothing new.
    let (again, _, _, _) = scrub_pass(&store, 3);
    assert!(again.is_empty(), "{again:?}");
    let damaged_events: Vec<String> = store
        .changes(0, 1000)
        .unwrap()
        .into_iter()
        .filter_map(|c| match c.kind {
            crate::ChangeKind::BlobDamaged {
                blake3, problem, ..
            } => {
                assert_eq!(c.actor, crate::SCRUB_ACTOR);
                Some(format!("{problem} {blake3}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(damaged_events.len(), 2, "{damaged_events:?}");
    assert!(damaged_events.contains(&format!("corrupt {}", one.blake3.to_hex())));
    assert!(damaged_events.contains(&format!("missing {}", two.blake3.to_hex())));
    // Restored from a copy: the next pass clears the finding and reads work again.
    let blobs = h.blob_backend();
    blobs.delete(&one.blake3).unwrap();
    let mut temp = blobs.create_temp().unwrap();
    temp.write_all(&content(11, 100_000)).unwrap();
    temp.persist(&one.blake3).unwrap();
    let (found, repaired, _, _) = scrub_pass(&store, 10);
    assert!(found.is_empty());
    assert_eq!(repaired, vec![one.blake3]);
    assert_eq!(read_all(&store, one.id), content(11, 100_000));
    let report = store.scrub_report(100, 10).unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].problem.hash(), two.blake3);
    // A lost blob whose files are deleted is collected, and its finding goes with it.
    store.delete_file(two.id, "tester").unwrap();
    h.advance(DAY * 2);
    while store.gc(100).unwrap().more {}
    assert!(store.scrub_report(100, 10).unwrap().findings.is_empty());
}
