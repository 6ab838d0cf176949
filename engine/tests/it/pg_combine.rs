//! Combined transactions on PostgreSQL (`engine/DESIGN.md`, "Combined transactions"):
//! batches that queue while a transaction runs go into one transaction. A transaction of
//! the engine is held up on a counter row locked by a transaction of the test's own, the
//! writers that arrive meanwhile queue, and the lock is let go: the queued batches each
//! apply whole, in fewer transactions than batches; a faulty one fails alone; after a
//! takeover of the lease, every queued batch is refused. Each test skips itself (and says
//! so) without `LPSTORE_TEST_POSTGRES`.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use engine::testing::{skip, HeldTransaction, PgScratch};
use engine::{Backend, Durability, Engine, Error, WriteBatch};

use crate::harness::KEYSPACES;
use crate::leases::{batch, count, present};

const LEASE: &str = "writer";

/// Locks the counter `batches` (which batch 0 created) in a transaction of the test's own:
/// every transaction of the engine that adds to it waits there until the guard goes.
fn lock_counter(scratch: &PgScratch) -> HeldTransaction {
    scratch.hold(&format!(
        "SELECT v FROM \"{}\".\"kv_beta\" WHERE k = convert_to('batches', 'UTF8') FOR UPDATE",
        scratch.schema()
    ))
}

fn spawn(engine: &Arc<dyn Engine>, written: WriteBatch) -> JoinHandle<engine::Result<()>> {
    let engine = Arc::clone(engine);
    thread::spawn(move || engine.write(written, Durability::Sync))
}

/// The transactions the engine committed (one token row each).
fn transactions(scratch: &PgScratch) -> usize {
    let rows = scratch.admin(&format!(
        "SELECT count(*) FROM \"{}\".lpstore_batches WHERE NOT fence",
        scratch.schema()
    ));
    rows[0][0].as_deref().unwrap().parse().unwrap()
}

/// Batch 1 leads a transaction held up on the counter's lock; `queued` batches are written
/// by threads of their own meanwhile, so that they queue behind it; then the lock goes.
/// Returns the leader's outcome and the queued ones'.
fn held_then_released(
    scratch: &PgScratch,
    engine: &Arc<dyn Engine>,
    queued: Vec<WriteBatch>,
    before_release: impl FnOnce(),
) -> (engine::Result<()>, Vec<engine::Result<()>>) {
    let held = lock_counter(scratch);
    let leader = spawn(engine, batch(&**engine, 1));
    // Long enough for the leader to reach the lock and the others to queue (if they came
    // later, they would only be combined less, which the assertions allow for).
    thread::sleep(Duration::from_millis(300));
    let writers: Vec<_> = queued.into_iter().map(|b| spawn(engine, b)).collect();
    thread::sleep(Duration::from_millis(500));
    before_release();
    drop(held);
    let leader = leader.join().unwrap();
    (
        leader,
        writers.into_iter().map(|w| w.join().unwrap()).collect(),
    )
}

#[test]
fn queued_batches_share_a_transaction_and_each_applies_whole() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let engine: Arc<dyn Engine> = scratch.config().open(KEYSPACES).unwrap();
    engine.write(batch(&*engine, 0), Durability::Sync).unwrap();
    let queued = (2..12).map(|n| batch(&*engine, n)).collect();
    let (leader, queued) = held_then_released(&scratch, &engine, queued, || {});
    leader.unwrap();
    for result in queued {
        result.unwrap();
    }
    assert_eq!(count(&*engine), 12);
    assert!((0..12).all(|n| present(&*engine, n)));
    let transactions = transactions(&scratch);
    assert!(
        transactions < 12,
        "12 batches in {transactions} transactions: none combined"
    );
}

#[test]
fn a_faulty_batch_fails_alone_and_its_companions_are_written() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let engine: Arc<dyn Engine> = scratch.config().open(KEYSPACES).unwrap();
    let beta = engine.keyspace("beta").unwrap();
    let mut first = batch(&*engine, 0);
    first.put(beta, b"not a counter", b"abc");
    engine.write(first, Durability::Sync).unwrap();
    let mut faulty = batch(&*engine, 100);
    faulty.counter_add(beta, b"not a counter", 1);
    let mut queued: Vec<WriteBatch> = (2..6).map(|n| batch(&*engine, n)).collect();
    queued.insert(2, faulty);
    let (leader, queued) = held_then_released(&scratch, &engine, queued, || {});
    leader.unwrap();
    for (i, result) in queued.into_iter().enumerate() {
        if i == 2 {
            let error = result.unwrap_err();
            assert!(
                matches!(error, Error::CorruptCounter { len: 3, .. }),
                "{error}"
            );
        } else {
            result.unwrap();
        }
    }
    assert!(!present(&*engine, 100));
    assert!((0..6).all(|n| present(&*engine, n)));
    assert_eq!(count(&*engine), 6);
    assert_eq!(
        engine.get(beta, b"not a counter").unwrap().as_deref(),
        Some(&b"abc"[..])
    );
}

#[test]
fn after_a_takeover_every_queued_batch_is_refused() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let old: Arc<dyn Engine> = scratch.config().open(KEYSPACES).unwrap();
    let new: Arc<dyn Engine> = scratch.config().open(KEYSPACES).unwrap();
    let long = Duration::from_secs(60);
    let leadership = old.leadership().unwrap();
    let epoch = leadership.acquire(LEASE, "old", long).unwrap().unwrap();
    leadership.fence(LEASE, epoch);
    old.write(batch(&*old, 0), Durability::Sync).unwrap();

    let queued = (2..8).map(|n| batch(&*old, n)).collect();
    let mut takeover = None;
    let (leader, queued) = held_then_released(&scratch, &old, queued, || {
        // The lease handed over while batch 1 is in flight and the others queue: the new
        // holder's epoch change commits at once, its drain waits for batch 1.
        leadership.release(LEASE, "old", epoch).unwrap();
        let new = Arc::clone(&new);
        takeover = Some(thread::spawn(move || {
            new.leadership().unwrap().acquire(LEASE, "new", long)
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = scratch.admin(&format!(
                "SELECT epoch FROM \"{}\".lpstore_leases WHERE name = '{LEASE}'",
                scratch.schema()
            ));
            let current: u64 = rows[0][0].as_deref().unwrap().parse().unwrap();
            if current > epoch.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the takeover never changed the epoch"
            );
            thread::sleep(Duration::from_millis(10));
        }
    });
    // Batch 1 locked the lease row before the epoch moved: it commits before the takeover
    // completes. The queued ones start after: each is refused, none applied.
    leader.unwrap();
    for result in queued {
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Fenced { .. }), "{error}");
    }
    let taken = takeover.unwrap().join().unwrap().unwrap().unwrap();
    assert!(taken.0 > epoch.0);
    assert_eq!(count(&*new), 2);
    assert!(present(&*new, 1));
    assert!((2..8).all(|n| !present(&*new, n)));
}
