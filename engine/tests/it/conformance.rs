//! The contract of `engine::Engine`, checked on every backend.

use std::sync::Arc;
use std::time::Duration;

use engine::{Backend, Direction, Durability, Engine, Error, ScanRange, WriteBatch};

use crate::harness::{TestStore, KEYSPACES};

engine::backend_tests!(
    point_reads_and_writes,
    keyspaces_are_independent,
    unknown_keyspace_is_an_error,
    multi_get_keeps_order,
    scans_respect_bounds_and_direction,
    prefix_scan_at_the_top_of_the_byte_range,
    delete_range_removes_exactly_the_range,
    batch_applies_in_order,
    counters_add_signed_deltas,
    concurrent_counter_adds_are_exact,
    snapshot_is_isolated_from_later_writes,
    synced_writes_survive_reopen,
    buffered_writes_survive_flush_and_reopen,
    large_values_and_empty_keys,
    empty_batch_is_accepted,
);

fn put(engine: &dyn Engine, keyspace: &str, key: &[u8], value: &[u8]) {
    let ks = engine.keyspace(keyspace).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(ks, key, value);
    engine.write(batch, Durability::Sync).unwrap();
}

fn keys(
    engine: &dyn Engine,
    keyspace: &str,
    range: ScanRange,
    direction: Direction,
) -> Vec<Vec<u8>> {
    let ks = engine.keyspace(keyspace).unwrap();
    engine
        .scan(ks, range, direction)
        .unwrap()
        .map(|item| item.unwrap().0)
        .collect()
}

fn point_reads_and_writes(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    let alpha = engine.keyspace("alpha").unwrap();
    assert_eq!(engine.get(alpha, b"k").unwrap(), None);
    put(&*engine, "alpha", b"k", b"v1");
    assert_eq!(
        engine.get(alpha, b"k").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    put(&*engine, "alpha", b"k", b"v2");
    assert_eq!(
        engine.get(alpha, b"k").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    let mut batch = WriteBatch::new();
    batch.delete(alpha, b"k");
    batch.delete(alpha, b"never-there");
    engine.write(batch, Durability::Sync).unwrap();
    assert_eq!(engine.get(alpha, b"k").unwrap(), None);
    assert_eq!(engine.backend(), backend);
}

fn keyspaces_are_independent(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    put(&*engine, "alpha", b"same", b"in alpha");
    put(&*engine, "beta", b"same", b"in beta");
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    assert_eq!(
        engine.get(alpha, b"same").unwrap().as_deref(),
        Some(&b"in alpha"[..])
    );
    assert_eq!(
        engine.get(beta, b"same").unwrap().as_deref(),
        Some(&b"in beta"[..])
    );
    let mut batch = WriteBatch::new();
    batch.delete_range(alpha, b"", b"\xff\xff");
    engine.write(batch, Durability::Sync).unwrap();
    assert_eq!(engine.get(alpha, b"same").unwrap(), None);
    assert_eq!(
        engine.get(beta, b"same").unwrap().as_deref(),
        Some(&b"in beta"[..])
    );
}

fn unknown_keyspace_is_an_error(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    let error = engine.keyspace("gamma").unwrap_err();
    assert!(matches!(error, Error::UnknownKeyspace { ref name } if name == "gamma"));
    assert!(error.to_string().contains("gamma"), "{error}");
}

fn multi_get_keeps_order(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    put(&*engine, "alpha", b"a", b"1");
    put(&*engine, "alpha", b"c", b"3");
    let alpha = engine.keyspace("alpha").unwrap();
    let values = engine.multi_get(alpha, &[b"c", b"b", b"a", b"c"]).unwrap();
    assert_eq!(
        values,
        vec![
            Some(b"3".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"3".to_vec())
        ]
    );
}

fn scans_respect_bounds_and_direction(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    for key in [&b"a"[..], b"ab", b"abc", b"b", b"b\x00", b"c"] {
        put(&*engine, "alpha", key, b"x");
    }
    put(&*engine, "beta", b"abz", b"other keyspace");
    let all: Vec<Vec<u8>> = [&b"a"[..], b"ab", b"abc", b"b", b"b\x00", b"c"]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(
        keys(&*engine, "alpha", ScanRange::all(), Direction::Forward),
        all
    );
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(
        keys(&*engine, "alpha", ScanRange::all(), Direction::Reverse),
        reversed
    );
    assert_eq!(
        keys(
            &*engine,
            "alpha",
            ScanRange::prefix(b"ab"),
            Direction::Forward
        ),
        vec![b"ab".to_vec(), b"abc".to_vec()]
    );
    assert_eq!(
        keys(
            &*engine,
            "alpha",
            ScanRange::prefix(b"ab"),
            Direction::Reverse
        ),
        vec![b"abc".to_vec(), b"ab".to_vec()]
    );
    assert_eq!(
        keys(
            &*engine,
            "alpha",
            ScanRange::between(b"ab", b"b\x00"),
            Direction::Forward
        ),
        vec![b"ab".to_vec(), b"abc".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        keys(
            &*engine,
            "alpha",
            ScanRange::between(b"ab", b"b\x00"),
            Direction::Reverse
        ),
        vec![b"b".to_vec(), b"abc".to_vec(), b"ab".to_vec()]
    );
    assert_eq!(
        keys(&*engine, "alpha", ScanRange::from(b"b"), Direction::Reverse),
        vec![b"c".to_vec(), b"b\x00".to_vec(), b"b".to_vec()]
    );
    assert!(keys(
        &*engine,
        "alpha",
        ScanRange::between(b"c", b"a"),
        Direction::Forward
    )
    .is_empty());
    assert!(keys(
        &*engine,
        "alpha",
        ScanRange::between(b"c", b"a"),
        Direction::Reverse
    )
    .is_empty());
    assert!(keys(
        &*engine,
        "alpha",
        ScanRange::prefix(b"zz"),
        Direction::Reverse
    )
    .is_empty());
    let alpha = engine.keyspace("alpha").unwrap();
    let (key, value) = engine
        .scan(alpha, ScanRange::prefix(b"c"), Direction::Forward)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!((key, value), (b"c".to_vec(), b"x".to_vec()));
}

fn prefix_scan_at_the_top_of_the_byte_range(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    for key in [
        &b"\xfe\xff"[..],
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
        b"\xff\xff\x01",
    ] {
        put(&*engine, "alpha", key, b"x");
    }
    assert_eq!(
        keys(
            &*engine,
            "alpha",
            ScanRange::prefix(b"\xff\xff"),
            Direction::Forward
        ),
        vec![b"\xff\xff".to_vec(), b"\xff\xff\x01".to_vec()]
    );
    assert_eq!(
        keys(
            &*engine,
            "alpha",
            ScanRange::prefix(b"\xff"),
            Direction::Reverse
        ),
        vec![
            b"\xff\xff\x01".to_vec(),
            b"\xff\xff".to_vec(),
            b"\xff\x00".to_vec(),
            b"\xff".to_vec()
        ]
    );
}

fn delete_range_removes_exactly_the_range(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    for key in [&b"a"[..], b"b", b"ba", b"bz", b"c"] {
        put(&*engine, "alpha", key, b"x");
    }
    let alpha = engine.keyspace("alpha").unwrap();
    let mut batch = WriteBatch::new();
    batch.delete_range(alpha, b"b", b"bz");
    // Empty and inverted ranges delete nothing and are not errors.
    batch.delete_range(alpha, b"c", b"c");
    batch.delete_range(alpha, b"z", b"a");
    engine.write(batch, Durability::Sync).unwrap();
    assert_eq!(
        keys(&*engine, "alpha", ScanRange::all(), Direction::Forward),
        vec![b"a".to_vec(), b"bz".to_vec(), b"c".to_vec()]
    );
}

fn batch_applies_in_order(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    put(&*engine, "alpha", b"old", b"x");
    let mut batch = WriteBatch::new();
    batch.put(alpha, b"k1", b"first");
    batch.delete(alpha, b"k1");
    batch.delete(alpha, b"k2");
    batch.put(alpha, b"k2", b"second");
    batch.put(alpha, b"r1", b"inside the range, then deleted");
    batch.delete_range(alpha, b"old", b"s");
    batch.put(alpha, b"r2", b"written after the range delete");
    batch.counter_add(beta, b"n", 5);
    batch.put(beta, b"n", engine::counter::encode(100));
    batch.counter_add(beta, b"n", 1);
    engine.write(batch, Durability::Sync).unwrap();
    assert_eq!(engine.get(alpha, b"k1").unwrap(), None);
    assert_eq!(
        engine.get(alpha, b"k2").unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(engine.get(alpha, b"old").unwrap(), None);
    assert_eq!(engine.get(alpha, b"r1").unwrap(), None);
    assert!(engine.get(alpha, b"r2").unwrap().is_some());
    assert_eq!(engine.counter(beta, b"n").unwrap(), 101);
}

fn counters_add_signed_deltas(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    let beta = engine.keyspace("beta").unwrap();
    assert_eq!(engine.counter(beta, b"bytes").unwrap(), 0);
    for delta in [10, -3, 1 << 40, -(1 << 40)] {
        let mut batch = WriteBatch::new();
        batch.counter_add(beta, b"bytes", delta);
        engine.write(batch, Durability::Buffered).unwrap();
    }
    assert_eq!(engine.counter(beta, b"bytes").unwrap(), 7);
    let mut batch = WriteBatch::new();
    batch.counter_add(beta, b"neg", -9);
    batch.delete(beta, b"bytes");
    batch.counter_add(beta, b"bytes", 2);
    engine.write(batch, Durability::Sync).unwrap();
    assert_eq!(engine.counter(beta, b"neg").unwrap(), -9);
    assert_eq!(engine.counter(beta, b"bytes").unwrap(), 2);
    put(&*engine, "beta", b"text", b"not a counter");
    assert!(matches!(
        engine.counter(beta, b"text"),
        Err(Error::CorruptCounter { len: 13, .. })
    ));
}

fn concurrent_counter_adds_are_exact(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    let beta = engine.keyspace("beta").unwrap();
    const THREADS: i64 = 8;
    const ADDS: i64 = 250;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let engine = Arc::clone(&engine);
            scope.spawn(move || {
                for i in 0..ADDS {
                    let mut batch = WriteBatch::new();
                    batch.counter_add(beta, b"shared", 1);
                    batch.counter_add(beta, b"weighted", thread * 1000 + i);
                    engine.write(batch, Durability::Buffered).unwrap();
                }
            });
        }
    });
    assert_eq!(engine.counter(beta, b"shared").unwrap(), THREADS * ADDS);
    let expected: i64 = (0..THREADS)
        .map(|t| (0..ADDS).map(|i| t * 1000 + i).sum::<i64>())
        .sum();
    assert_eq!(engine.counter(beta, b"weighted").unwrap(), expected);
}

fn snapshot_is_isolated_from_later_writes(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    put(&*engine, "alpha", b"a", b"before");
    put(&*engine, "beta", b"b", b"before");
    let snapshot = engine.snapshot().unwrap();
    std::thread::scope(|scope| {
        // On sled this writer waits for the snapshot to go; elsewhere it lands at once.
        let writer = scope.spawn(|| {
            let mut batch = WriteBatch::new();
            batch.put(alpha, b"a", b"after");
            batch.put(alpha, b"new", b"after");
            batch.delete(beta, b"b");
            engine.write(batch, Durability::Sync).unwrap();
        });
        if backend != Backend::Sled {
            while !writer.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(
                engine.get(alpha, b"a").unwrap().as_deref(),
                Some(&b"after"[..])
            );
        }
        assert_eq!(
            snapshot.get(alpha, b"a").unwrap().as_deref(),
            Some(&b"before"[..])
        );
        assert_eq!(
            snapshot.get(beta, b"b").unwrap().as_deref(),
            Some(&b"before"[..])
        );
        let seen: Vec<Vec<u8>> = snapshot
            .scan(alpha, ScanRange::all(), Direction::Forward)
            .unwrap()
            .map(|kv| kv.unwrap().0)
            .collect();
        assert_eq!(seen, vec![b"a".to_vec()]);
        drop(snapshot);
        writer.join().unwrap();
    });
    assert_eq!(
        engine.get(alpha, b"a").unwrap().as_deref(),
        Some(&b"after"[..])
    );
    assert_eq!(engine.get(beta, b"b").unwrap(), None);
}

fn synced_writes_survive_reopen(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    {
        let engine = store.open();
        let alpha = engine.keyspace("alpha").unwrap();
        let beta = engine.keyspace("beta").unwrap();
        for i in 0u32..100 {
            let mut batch = WriteBatch::new();
            batch.put(alpha, i.to_be_bytes(), i.to_string());
            batch.counter_add(beta, b"count", 1);
            engine.write(batch, Durability::Sync).unwrap();
        }
    }
    let engine = store.open();
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    assert_eq!(engine.counter(beta, b"count").unwrap(), 100);
    let values: Vec<String> = engine
        .scan(alpha, ScanRange::all(), Direction::Forward)
        .unwrap()
        .map(|kv| String::from_utf8(kv.unwrap().1).unwrap())
        .collect();
    assert_eq!(values, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
}

fn buffered_writes_survive_flush_and_reopen(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    {
        let engine = store.open();
        let alpha = engine.keyspace("alpha").unwrap();
        let mut batch = WriteBatch::new();
        batch.put(alpha, b"buffered", b"yes");
        engine.write(batch, Durability::Buffered).unwrap();
        engine.flush().unwrap();
    }
    let engine = store.open();
    let alpha = engine.keyspace("alpha").unwrap();
    assert_eq!(
        engine.get(alpha, b"buffered").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
}

fn large_values_and_empty_keys(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    put(&*engine, "alpha", b"big", &big);
    put(&*engine, "alpha", b"", b"empty key");
    put(&*engine, "alpha", b"empty value", b"");
    let alpha = engine.keyspace("alpha").unwrap();
    assert_eq!(engine.get(alpha, b"big").unwrap(), Some(big));
    assert_eq!(
        engine.get(alpha, b"").unwrap().as_deref(),
        Some(&b"empty key"[..])
    );
    assert_eq!(
        engine.get(alpha, b"empty value").unwrap().as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        keys(&*engine, "alpha", ScanRange::all(), Direction::Forward).first(),
        Some(&Vec::new())
    );
}

fn empty_batch_is_accepted(backend: Backend) {
    let store = TestStore::new(backend, KEYSPACES);
    let engine = store.open();
    engine.write(WriteBatch::new(), Durability::Sync).unwrap();
    engine.flush().unwrap();
    let alpha = engine.keyspace("alpha").unwrap();
    assert_eq!(
        engine
            .scan(alpha, ScanRange::all(), Direction::Forward)
            .unwrap()
            .count(),
        0
    );
}
