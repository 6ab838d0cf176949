use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Engine, EngineConfig, Fault, FaultyEngine, ReadView as _};

use super::*;

fn open_memory() -> (Arc<dyn crate::Engine>, Arc<ChangeLog>, Keyspace, Keyspace) {
    let engine = EngineConfig::memory()
        .open(&["data", "changes", "history"])
        .unwrap();
    let data = engine.keyspace("data").unwrap();
    let history = engine.keyspace("history").unwrap();
    let log = ChangeLog::open(
        Arc::new(GroupCommit::new(engine.clone())),
        engine.keyspace("changes").unwrap(),
    )
    .unwrap();
    (engine, log, data, history)
}

impl ChangeLog {
    fn append_on(
        &self,
        batch: WriteBatch,
        entries: Vec<LogEntry>,
        chain: &Arc<Chain>,
    ) -> crate::Result<Appended> {
        self.finish(self.enqueue(batch, entries, Some(chain)))
    }
}

#[test]
fn concurrent_writers_get_gapless_revisions_in_log_order() {
    let (engine, log, data, _) = open_memory();
    const THREADS: u64 = 8;
    const WRITES: u64 = 50;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let log = &log;
            scope.spawn(move || {
                for i in 0..WRITES {
                    let mut batch = WriteBatch::new();
                    let key = format!("{t}/{i}");
                    batch.put(data, key.as_bytes(), b"v");
                    let entries = vec![LogEntry::new(key.into_bytes())];
                    log.commit(batch, entries).unwrap();
                }
            });
        }
    });
    let events = log.read(0, usize::MAX).unwrap();
    assert_eq!(events.len() as u64, THREADS * WRITES);
    for (expected, (revision, payload)) in (1..).zip(&events) {
        assert_eq!(*revision, expected);
        // Each event's change is in the store.
        assert!(engine.get(data, payload).unwrap().is_some());
    }
    // Per writer, its events are in its own order.
    for t in 0..THREADS {
        let mine: Vec<String> = events
            .iter()
            .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
            .filter(|p| p.starts_with(&format!("{t}/")))
            .collect();
        let expected: Vec<String> = (0..WRITES).map(|i| format!("{t}/{i}")).collect();
        assert_eq!(mine, expected);
    }
}

/// A memory engine whose first write waits at a gate, and which records each write's
/// number of operations.
#[derive(Debug)]
struct GatedEngine {
    inner: crate::MemEngine,
    gate: Mutex<bool>,
    opened: Condvar,
    writes: Mutex<Vec<usize>>,
}

impl crate::ReadView for GatedEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        self.inner.get(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> crate::Result<crate::KvIter<'_>> {
        self.inner.scan(keyspace, range, direction)
    }
}

impl Engine for GatedEngine {
    fn backend(&self) -> crate::Backend {
        crate::Backend::Memory
    }

    fn keyspace(&self, name: &str) -> crate::Result<Keyspace> {
        self.inner.keyspace(name)
    }

    fn write(&self, batch: WriteBatch, durability: crate::Durability) -> crate::Result<()> {
        let mut open = lock(&self.gate);
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        lock(&self.writes).push(batch.len());
        self.inner.write(batch, durability)
    }

    fn snapshot(&self) -> crate::Result<Box<dyn crate::ReadView + '_>> {
        self.inner.snapshot()
    }

    fn flush(&self) -> crate::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn writers_queued_behind_a_write_are_written_as_one_batch_with_counters_folded() {
    let engine = Arc::new(GatedEngine {
        inner: crate::MemEngine::new(&["data", "changes", "history"]),
        gate: Mutex::new(true),
        opened: Condvar::new(),
        writes: Mutex::new(Vec::new()),
    });
    let data = engine.keyspace("data").unwrap();
    let history = engine.keyspace("history").unwrap();
    let shared: Arc<dyn Engine> = engine.clone();
    let log = ChangeLog::open(
        Arc::new(GroupCommit::new(shared)),
        engine.keyspace("changes").unwrap(),
    )
    .unwrap();
    // This test counts the engine's writes: the indexer's would come in between.
    log.set_background_indexing(false);
    *lock(&engine.gate) = false;
    let append = |name: &str| {
        let mut batch = WriteBatch::new();
        batch.put(data, name, b"v");
        batch.counter_add(data, b"files", 1);
        let entry = LogEntry::new(name.as_bytes().to_vec()).index(history, b"all/".to_vec());
        log.commit(batch, vec![entry]).unwrap()
    };
    std::thread::scope(|scope| {
        // The first writer holds the engine's write; three more queue behind it.
        let first = scope.spawn(|| append("a"));
        while !lock(&log.queue).writing {
            std::thread::yield_now();
        }
        let others: Vec<_> = ["b", "c", "d"]
            .into_iter()
            .map(|name| scope.spawn(move || append(name)))
            .collect();
        while lock(&log.queue).waiting.len() < 3 {
            std::thread::yield_now();
        }
        *lock(&engine.gate) = true;
        engine.opened.notify_all();
        assert_eq!(first.join().unwrap(), 1);
        let mut revisions: Vec<u64> = others.into_iter().map(|t| t.join().unwrap()).collect();
        revisions.sort_unstable();
        assert_eq!(revisions, vec![2, 3, 4]);
    });
    // Two engine writes: "a" alone (put, counter, the indexer's mark of a new log, event),
    // then the three others with their counter adds folded into one: 3 puts + 1 counter
    // + 3 events (their history keys are the indexer's).
    assert_eq!(*lock(&engine.writes), vec![4, 7]);
    assert_eq!(
        engine
            .get(data, b"files")
            .unwrap()
            .map(|v| crate::counter::decode(&v)),
        Some(Some(4))
    );
    let events = log.read(0, 10).unwrap();
    assert_eq!(events.len(), 4);
    for (revision, name) in &events {
        // Each event went with its own change, in revision order.
        assert!(engine.get(data, name).unwrap().is_some(), "{revision}");
    }
    assert_eq!(
        log.read_index(history, b"all/", 0, 10, Direction::Forward)
            .unwrap(),
        events
    );
}

/// A memory engine that refuses, unapplied and without poisoning itself (as a fenced
/// engine does), every batch that puts the key `bad`.
#[derive(Debug)]
struct RefusingEngine(crate::MemEngine);

impl crate::ReadView for RefusingEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        self.0.get(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> crate::Result<crate::KvIter<'_>> {
        self.0.scan(keyspace, range, direction)
    }
}

impl Engine for RefusingEngine {
    fn backend(&self) -> crate::Backend {
        crate::Backend::Memory
    }

    fn keyspace(&self, name: &str) -> crate::Result<Keyspace> {
        self.0.keyspace(name)
    }

    fn write(&self, batch: WriteBatch, durability: crate::Durability) -> crate::Result<()> {
        let bad = batch
            .ops()
            .any(|op| matches!(op, crate::BatchOp::Put { key, .. } if key == b"bad"));
        if bad {
            return Err(crate::Error::Fenced {
                name: "test".to_owned(),
                epoch: 1,
                current: Some(2),
            });
        }
        self.0.write(batch, durability)
    }

    fn snapshot(&self) -> crate::Result<Box<dyn crate::ReadView + '_>> {
        self.0.snapshot()
    }

    fn flush(&self) -> crate::Result<()> {
        self.0.flush()
    }
}

#[test]
fn a_failed_batch_refuses_the_later_batches_of_its_chain_only() {
    let engine = Arc::new(RefusingEngine(crate::MemEngine::new(&["data", "changes"])));
    let data = engine.keyspace("data").unwrap();
    let shared: Arc<dyn Engine> = engine.clone();
    let log = ChangeLog::open(
        Arc::new(GroupCommit::new(shared)),
        engine.keyspace("changes").unwrap(),
    )
    .unwrap();
    let batch = |key: &[u8]| {
        let mut batch = WriteBatch::new();
        batch.put(data, key, b"v");
        batch
    };
    let event = |name: &[u8]| vec![LogEntry::new(name.to_vec())];
    let chain = Arc::new(Chain::default());
    // Queued together, so first tried as one combined batch, which the engine refuses.
    let first = log.enqueue(batch(b"bad"), event(b"1"), Some(&chain));
    let second = log.enqueue(batch(b"after-bad"), event(b"2"), Some(&chain));
    let other = log.enqueue(batch(b"other"), event(b"3"), None);
    assert!(matches!(
        log.finish(first),
        Err(crate::Error::Fenced { .. })
    ));
    let refused = log.finish(second);
    assert!(
        matches!(
            refused,
            Err(crate::Error::EarlierWriteFailed {
                transient: true,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(log.sync(log.finish(other).unwrap()).unwrap(), 1);
    // Later batches of the broken chain are refused too; a new chain writes.
    let later = log.append_on(batch(b"later"), event(b"4"), &chain);
    assert!(later.is_err());
    let fresh = log.append_on(batch(b"fresh"), event(b"5"), &Arc::default());
    assert_eq!(log.sync(fresh.unwrap()).unwrap(), 2);
    for (key, stored) in [
        (&b"bad"[..], false),
        (b"after-bad", false),
        (b"other", true),
        (b"later", false),
        (b"fresh", true),
    ] {
        assert_eq!(engine.get(data, key).unwrap().is_some(), stored, "{key:?}");
    }
    assert_eq!(
        log.read(0, 10).unwrap(),
        vec![(1, b"3".to_vec()), (2, b"5".to_vec())]
    );
}

#[test]
fn a_batch_of_several_events_takes_consecutive_revisions() {
    let (_, log, data, _) = open_memory();
    let mut batch = WriteBatch::new();
    batch.put(data, b"a", b"1");
    let entries = (0..3).map(|i| LogEntry::new(vec![i])).collect();
    assert_eq!(log.commit(batch, entries).unwrap(), 3);
    assert_eq!(log.commit(WriteBatch::new(), Vec::new()).unwrap(), 3);
    let revisions: Vec<u64> = log.read(0, 10).unwrap().iter().map(|e| e.0).collect();
    assert_eq!(revisions, vec![1, 2, 3]);
    assert_eq!(log.read(1, 1).unwrap(), vec![(2, vec![1])]);
}

#[test]
fn readers_stop_at_the_durable_head() {
    let (_, log, data, _) = open_memory();
    let mut batch = WriteBatch::new();
    batch.put(data, b"a", b"1");
    let appended = log
        .append(batch, vec![LogEntry::new(b"e".to_vec())])
        .unwrap();
    assert_eq!(appended.last_revision(), Some(1));
    // Written, visible in the engine, but not yet synced: not in the feed.
    assert_eq!(log.head(), 0);
    assert!(log.read(0, 10).unwrap().is_empty());
    assert!(matches!(
        log.read(1, 10),
        Err(FeedError::BeyondHead { after: 1, head: 0 })
    ));
    assert_eq!(log.sync(appended).unwrap(), 1);
    assert_eq!(log.read(0, 10).unwrap().len(), 1);
}

#[test]
fn history_indexes_read_both_ways_and_are_pruned_with_their_events() {
    let (engine, log, data, history) = open_memory();
    for i in 0..5u8 {
        let mut batch = WriteBatch::new();
        batch.put(data, [i], b"v");
        let object = if i % 2 == 0 { b"even/" } else { b"odd_/" };
        let entry = LogEntry::new(vec![i]).index(history, object.to_vec());
        log.commit(batch, vec![entry]).unwrap();
    }
    let even = log
        .read_index(history, b"even/", 0, 10, Direction::Forward)
        .unwrap();
    assert_eq!(even, vec![(1, vec![0]), (3, vec![2]), (5, vec![4])]);
    let newest_first = log
        .read_index(history, b"even/", u64::MAX, 2, Direction::Reverse)
        .unwrap();
    assert_eq!(newest_first, vec![(5, vec![4]), (3, vec![2])]);
    let page_two = log
        .read_index(history, b"even/", 3, 2, Direction::Reverse)
        .unwrap();
    assert_eq!(page_two, vec![(1, vec![0])]);

    // Pruning everything keeps the newest event, and removes the index keys of the rest.
    log.index_pending().unwrap();
    assert_eq!(log.prune_through(u64::MAX).unwrap(), 4);
    assert_eq!(log.oldest().unwrap(), Some(5));
    let remaining: usize = engine
        .scan(history, ScanRange::all(), Direction::Forward)
        .unwrap()
        .count();
    assert_eq!(remaining, 1);
    assert!(matches!(
        log.read(3, 10),
        Err(FeedError::Compacted {
            after: 3,
            oldest: 5
        })
    ));
    assert_eq!(log.read(4, 10).unwrap(), vec![(5, vec![4])]);
}

#[test]
fn reopening_continues_after_the_newest_revision() {
    let engine = EngineConfig::memory().open(&["changes"]).unwrap();
    let keyspace = engine.keyspace("changes").unwrap();
    let committer = Arc::new(GroupCommit::new(engine.clone()));
    let log = ChangeLog::open(committer.clone(), keyspace).unwrap();
    for _ in 0..3 {
        log.commit(WriteBatch::new(), vec![LogEntry::new(Vec::new())])
            .unwrap();
    }
    log.prune_through(3).unwrap();
    drop(log);
    let log = ChangeLog::open(committer, keyspace).unwrap();
    assert_eq!(log.head(), 3);
    assert_eq!(
        log.commit(WriteBatch::new(), vec![LogEntry::new(Vec::new())])
            .unwrap(),
        4
    );
}

#[test]
fn watchers_wake_on_durable_events_only() {
    let (_, log, _, _) = open_memory();
    let heard = Arc::new(AtomicU64::new(0));
    let heard_by_listener = Arc::clone(&heard);
    log.subscribe(Box::new(move |head| {
        heard_by_listener.store(head, Ordering::SeqCst);
    }));
    assert_eq!(log.wait(0, Duration::from_millis(10)), 0);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| log.wait(0, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        log.commit(WriteBatch::new(), vec![LogEntry::new(Vec::new())])
            .unwrap();
        assert_eq!(waiter.join().unwrap(), 1);
    });
    assert_eq!(heard.load(Ordering::SeqCst), 1);
}

#[test]
fn a_follower_reads_another_writers_events_and_continues_after_them() {
    let (engine, writer, data, _) = open_memory();
    let changes = writer.keyspace();
    let follower = ChangeLog::open(Arc::new(GroupCommit::new(engine.clone())), changes).unwrap();
    for key in [b"a", b"b", b"c"] {
        let mut batch = WriteBatch::new();
        batch.put(data, key, b"v");
        writer
            .commit(batch, vec![LogEntry::new(key.to_vec())])
            .unwrap();
    }
    // The follower's head is what it applied; the database holds more.
    assert_eq!(follower.head(), 0);
    assert_eq!(follower.newest_stored().unwrap(), 3);
    assert!(follower.read(0, 10).unwrap().is_empty());
    let events = follower.read_stored(0, 2, 10).unwrap();
    assert_eq!(events, vec![(1, b"a".to_vec()), (2, b"b".to_vec())]);
    let heard = Arc::new(AtomicU64::new(0));
    let ear = Arc::clone(&heard);
    follower.subscribe(Box::new(move |head| ear.store(head, Ordering::SeqCst)));
    follower.follow_to(2);
    assert_eq!((follower.head(), heard.load(Ordering::SeqCst)), (2, 2));
    assert_eq!(follower.wait(1, Duration::ZERO), 2);
    follower.follow_to(1);
    assert_eq!(follower.head(), 2, "the head never goes back");
    follower.follow_to(3);
    // Promoted: its first revision follows the other writer's last, none reused.
    let mut batch = WriteBatch::new();
    batch.put(data, b"d", b"v");
    assert_eq!(
        follower
            .commit(batch, vec![LogEntry::new(b"d".to_vec())])
            .unwrap(),
        4
    );
    assert_eq!(follower.read(0, 10).unwrap().len(), 4);
}

#[test]
fn a_failed_sync_takes_no_head_and_a_crash_loses_change_and_event_together() {
    // Operations: the open's flush (1), the first commit's write (2) and flush (3), the
    // second commit's write (4) and its failing flush (5).
    let engine = Arc::new(FaultyEngine::new(&["data", "changes"]).fail_at(5, Fault::Sync));
    let data = engine.keyspace("data").unwrap();
    let keyspace = engine.keyspace("changes").unwrap();
    let shared: Arc<dyn crate::Engine> = engine.clone();
    let log = ChangeLog::open(Arc::new(GroupCommit::new(shared)), keyspace).unwrap();
    // The operations are counted: the indexer's write would come in between.
    log.set_background_indexing(false);
    for key in [b"a", b"b"] {
        let mut batch = WriteBatch::new();
        batch.put(data, key, b"v");
        let result = log.commit(batch, vec![LogEntry::new(key.to_vec())]);
        assert_eq!(result.is_ok(), key == b"a", "{result:?}");
    }
    assert_eq!(log.head(), 1);
    assert_eq!(log.read(0, 10).unwrap(), vec![(1, b"a".to_vec())]);

    let restarted: Arc<dyn crate::Engine> = Arc::new(engine.crash());
    assert_eq!(restarted.get(data, b"b").unwrap(), None);
    let log = ChangeLog::open(Arc::new(GroupCommit::new(restarted)), keyspace).unwrap();
    assert_eq!(log.head(), 1);
    assert_eq!(log.read(0, 10).unwrap(), vec![(1, b"a".to_vec())]);
}
