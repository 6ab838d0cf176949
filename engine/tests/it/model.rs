//! Property tests: random operation sequences, including close-and-reopen, applied to a backend
//! and to `MemEngine` (the model) must leave both with the same contents and give the same
//! answers to every read.

use std::sync::Arc;

use engine::{Backend, Direction, Durability, Engine, MemEngine, ReadView, ScanRange, WriteBatch};
use proptest::prelude::*;

use crate::harness::{TestStore, KEYSPACES};

#[derive(Clone, Debug)]
enum Write {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    DeleteRange(usize, Vec<u8>, Vec<u8>),
    CounterAdd(usize, Vec<u8>, i64),
}

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<Write>, bool),
    Reopen,
    Flush,
    Get(usize, Vec<u8>),
    Scan(usize, Vec<u8>, Option<Vec<u8>>, bool),
    SnapshotScan(usize, bool),
}

/// Value keys over a tiny alphabet, so that operations collide often.
fn value_key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(0xFF)],
        0..4,
    )
}

/// Counter keys start with '#', which no value key does, so a key is never both.
fn counter_key() -> impl Strategy<Value = Vec<u8>> {
    (0u8..4).prop_map(|n| vec![b'#', n])
}

fn any_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![value_key(), counter_key()]
}

fn keyspace() -> impl Strategy<Value = usize> {
    0..KEYSPACES.len()
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        4 => (keyspace(), value_key(), proptest::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(ks, k, v)| Write::Put(ks, k, v)),
        2 => (keyspace(), any_key()).prop_map(|(ks, k)| Write::Delete(ks, k)),
        1 => (keyspace(), any_key(), any_key()).prop_map(|(ks, a, b)| Write::DeleteRange(ks, a, b)),
        3 => (keyspace(), counter_key(), -1000i64..1000).prop_map(|(ks, k, d)| Write::CounterAdd(ks, k, d)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::collection::vec(write(), 1..6), any::<bool>()).prop_map(|(w, s)| Op::Write(w, s)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Flush),
        2 => (keyspace(), any_key()).prop_map(|(ks, k)| Op::Get(ks, k)),
        2 => (keyspace(), any_key(), proptest::option::of(any_key()), any::<bool>())
            .prop_map(|(ks, a, b, rev)| Op::Scan(ks, a, b, rev)),
        1 => (keyspace(), any::<bool>()).prop_map(|(ks, rev)| Op::SnapshotScan(ks, rev)),
    ]
}

fn batch_for(engine: &dyn Engine, writes: &[Write]) -> WriteBatch {
    let ks = |i: usize| engine.keyspace(KEYSPACES[i]).unwrap();
    let mut batch = WriteBatch::new();
    for write in writes {
        match write {
            Write::Put(i, k, v) => batch.put(ks(*i), k, v),
            Write::Delete(i, k) => batch.delete(ks(*i), k),
            Write::DeleteRange(i, a, b) => batch.delete_range(ks(*i), a, b),
            Write::CounterAdd(i, k, d) => batch.counter_add(ks(*i), k, *d),
        }
    }
    batch
}

fn scan_all(
    view: &dyn ReadView,
    engine: &dyn Engine,
    index: usize,
    range: ScanRange,
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let direction = if reverse {
        Direction::Reverse
    } else {
        Direction::Forward
    };
    view.scan(engine.keyspace(KEYSPACES[index]).unwrap(), range, direction)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn assert_same_contents(engine: &dyn Engine, model: &MemEngine) {
    for (index, name) in KEYSPACES.iter().enumerate() {
        assert_eq!(
            scan_all(engine, engine, index, ScanRange::all(), false),
            scan_all(model, model, index, ScanRange::all(), false),
            "keyspace {name} differs from the model"
        );
    }
}

fn run(backend: Backend, ops: &[Op]) {
    let store = TestStore::new(backend, KEYSPACES);
    let mut engine: Arc<dyn Engine> = store.open();
    let model = MemEngine::new(KEYSPACES);
    for op in ops {
        match op {
            Op::Write(writes, sync) => {
                let durability = if *sync {
                    Durability::Sync
                } else {
                    Durability::Buffered
                };
                engine
                    .write(batch_for(&*engine, writes), durability)
                    .unwrap();
                model.write(batch_for(&model, writes), durability).unwrap();
            }
            Op::Reopen => {
                // A clean close: what was buffered is flushed on the way down.
                engine.flush().unwrap();
                drop(engine);
                engine = store.open();
            }
            Op::Flush => engine.flush().unwrap(),
            Op::Get(index, key) => {
                let ks = |e: &dyn Engine| e.keyspace(KEYSPACES[*index]).unwrap();
                assert_eq!(
                    engine.get(ks(&*engine), key).unwrap(),
                    model.get(ks(&model), key).unwrap()
                );
            }
            Op::Scan(index, start, end, reverse) => {
                let range = ScanRange {
                    start: start.clone(),
                    end: end.clone(),
                    read_once: false,
                };
                assert_eq!(
                    scan_all(&*engine, &*engine, *index, range.clone(), *reverse),
                    scan_all(&model, &model, *index, range, *reverse),
                );
            }
            Op::SnapshotScan(index, reverse) => {
                let snapshot = engine.snapshot().unwrap();
                assert_eq!(
                    scan_all(&*snapshot, &*engine, *index, ScanRange::all(), *reverse),
                    scan_all(&model, &model, *index, ScanRange::all(), *reverse),
                );
            }
        }
        assert_same_contents(&*engine, &model);
    }
}

fn matches_the_model(backend: Backend) {
    let config = ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        run(backend, &ops);
    });
}

engine::backend_tests!(matches_the_model);
