//! The fault-injecting engine itself: what it forgets on a crash and how it fails.

use engine::{Durability, Engine, Error, Fault, FaultyEngine, ReadView, WriteBatch};

const KEYSPACES: &[&str] = &["alpha"];

fn put(engine: &FaultyEngine, key: &[u8], durability: Durability) -> Result<(), Error> {
    let alpha = engine.keyspace("alpha").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(alpha, key, b"v");
    batch.counter_add(alpha, b"#count", 1);
    engine.write(batch, durability)
}

fn has(engine: &FaultyEngine, key: &[u8]) -> bool {
    engine
        .get(engine.keyspace("alpha").unwrap(), key)
        .unwrap()
        .is_some()
}

#[test]
fn crash_keeps_synced_and_drops_buffered_writes() {
    let engine = FaultyEngine::new(KEYSPACES);
    put(&engine, b"synced", Durability::Sync).unwrap();
    put(&engine, b"buffered", Durability::Buffered).unwrap();
    assert!(has(&engine, b"buffered"));
    let restarted = engine.crash();
    assert!(has(&restarted, b"synced"));
    assert!(!has(&restarted, b"buffered"));
    assert_eq!(
        restarted
            .counter(restarted.keyspace("alpha").unwrap(), b"#count")
            .unwrap(),
        1
    );
}

#[test]
fn a_later_sync_or_flush_makes_earlier_buffered_writes_durable() {
    let engine = FaultyEngine::new(KEYSPACES);
    put(&engine, b"first", Durability::Buffered).unwrap();
    put(&engine, b"second", Durability::Sync).unwrap();
    put(&engine, b"third", Durability::Buffered).unwrap();
    engine.flush().unwrap();
    let restarted = engine.crash();
    assert!(has(&restarted, b"first") && has(&restarted, b"second") && has(&restarted, b"third"));
}

#[test]
fn a_failed_write_applies_nothing_and_poisons() {
    let engine = FaultyEngine::new(KEYSPACES).fail_at(2, Fault::Write);
    put(&engine, b"one", Durability::Sync).unwrap();
    let error = put(&engine, b"two", Durability::Sync).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Backend {
                operation: "write",
                ..
            }
        ),
        "{error}"
    );
    assert!(!has(&engine, b"two"));
    assert!(matches!(
        put(&engine, b"three", Durability::Sync),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(engine.flush(), Err(Error::Poisoned { .. })));
    let restarted = engine.crash();
    assert!(has(&restarted, b"one") && !has(&restarted, b"two"));
    put(&restarted, b"four", Durability::Sync).unwrap();
}

#[test]
fn a_failed_sync_is_visible_until_the_crash_only() {
    let engine = FaultyEngine::new(KEYSPACES).fail_at(1, Fault::Sync);
    let error = put(&engine, b"unsynced", Durability::Sync).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Backend {
                operation: "sync",
                ..
            }
        ),
        "{error}"
    );
    assert!(has(&engine, b"unsynced"));
    assert!(!has(&engine.crash(), b"unsynced"));
}

#[test]
fn a_failed_flush_leaves_buffered_writes_undurable() {
    let engine = FaultyEngine::new(KEYSPACES).fail_at(2, Fault::Sync);
    put(&engine, b"buffered", Durability::Buffered).unwrap();
    assert!(engine.flush().is_err());
    assert_eq!(engine.operations(), 2);
    assert!(!has(&engine.crash(), b"buffered"));
}
