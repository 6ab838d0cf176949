//! Tests of the history indexer: grouped keys, old keys, pruning, crashes.

use crate::{ChangeLog, Engine, FaultyEngine, LogEntry, ReadView};

use super::*;

struct Setup {
    engine: Arc<FaultyEngine>,
    data: Keyspace,
    changes: Keyspace,
    history: Keyspace,
}

fn setup() -> Setup {
    let engine = Arc::new(FaultyEngine::new(&["data", "changes", "history"]));
    Setup {
        data: engine.keyspace("data").unwrap(),
        changes: engine.keyspace("changes").unwrap(),
        history: engine.keyspace("history").unwrap(),
        engine,
    }
}

fn open(engine: Arc<dyn Engine>, changes: Keyspace, background: bool) -> Arc<ChangeLog> {
    let log = ChangeLog::open(Arc::new(GroupCommit::new(engine)), changes).unwrap();
    log.set_background_indexing(background);
    log
}

/// Commits one event per name, indexed under `all/` and under the name.
fn commit(log: &ChangeLog, s: &Setup, names: &[&str]) {
    for name in names {
        let mut batch = WriteBatch::new();
        batch.put(s.data, name.as_bytes(), b"v");
        let entry = LogEntry::new(name.as_bytes().to_vec())
            .index(s.history, b"all/".to_vec())
            .index(s.history, format!("{name}/").into_bytes());
        log.commit(batch, vec![entry]).unwrap();
    }
}

fn history(log: &ChangeLog, s: &Setup, prefix: &[u8], direction: Direction) -> Vec<u64> {
    let after = match direction {
        Direction::Forward => 0,
        Direction::Reverse => u64::MAX,
    };
    let events = log.read_index(s.history, prefix, after, 100, direction);
    events
        .unwrap()
        .into_iter()
        .map(|(revision, _)| revision)
        .collect()
}

fn history_keys(engine: &dyn Engine, s: &Setup) -> usize {
    engine
        .scan(s.history, ScanRange::all(), Direction::Forward)
        .unwrap()
        .count()
}

#[test]
fn a_write_carries_its_event_only_and_is_in_its_history_at_once() {
    let s = setup();
    let log = open(s.engine.clone(), s.changes, false);
    commit(&log, &s, &["a", "b", "a"]);
    // No history key yet: the reads match the unindexed events.
    assert_eq!(history_keys(&*s.engine, &s), 0);
    assert_eq!(log.indexed_through().unwrap(), 0);
    assert_eq!(history(&log, &s, b"a/", Direction::Forward), vec![1, 3]);
    assert_eq!(
        history(&log, &s, b"all/", Direction::Reverse),
        vec![3, 2, 1]
    );
    let page = log.read_index(s.history, b"all/", 3, 1, Direction::Reverse);
    assert_eq!(page.unwrap(), vec![(2, b"b".to_vec())]);

    // Indexing part of the history gives the same answers, from keys and tail together.
    assert_eq!(log.index_pending().unwrap(), 3);
    commit(&log, &s, &["a"]);
    // One key per prefix for the indexing batch: all/ {1, 2, 3}, a/ {1, 3}, b/ {2}.
    assert_eq!(history_keys(&*s.engine, &s), 3);
    assert_eq!(log.indexed_through().unwrap(), 3);
    assert_eq!(history(&log, &s, b"a/", Direction::Forward), vec![1, 3, 4]);
    assert_eq!(history(&log, &s, b"a/", Direction::Reverse), vec![4, 3, 1]);
    let page = log.read_index(s.history, b"all/", 2, 2, Direction::Forward);
    let revisions: Vec<u64> = page.unwrap().into_iter().map(|(r, _)| r).collect();
    assert_eq!(revisions, vec![3, 4]);
    assert_eq!(history(&log, &s, b"b/", Direction::Reverse), vec![2]);
}

#[test]
fn a_crash_between_the_change_and_its_indexing_leaves_a_history_indexed_again() {
    let s = setup();
    let log = open(s.engine.clone(), s.changes, false);
    commit(&log, &s, &["a", "b"]);
    // The indexing batch is buffered: the crash loses it, keys and mark together.
    log.index_pending().unwrap();
    assert_eq!(history_keys(&*s.engine, &s), 3);
    drop(log);
    let restarted: Arc<dyn Engine> = Arc::new(s.engine.crash());
    assert_eq!(history_keys(&*restarted, &s), 0);

    let log = open(restarted.clone(), s.changes, true);
    assert_eq!(log.indexed_through().unwrap(), 0);
    assert_eq!(history(&log, &s, b"all/", Direction::Forward), vec![1, 2]);
    // The first durable write of the restarted writer wakes its indexer, which indexes
    // from the mark: the events of before the crash too.
    commit(&log, &s, &["c"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.indexed_through().unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "the indexer did not reach the head"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.indexing_error(), None);
    assert_eq!(history_keys(&*restarted, &s), 4);
    assert_eq!(
        history(&log, &s, b"all/", Direction::Reverse),
        vec![3, 2, 1]
    );
    // Indexing again writes the same keys: nothing changes.
    restarted
        .write(
            {
                let mut batch = WriteBatch::new();
                batch.put(s.changes, MARK_KEY, revision_key(0));
                batch
            },
            crate::Durability::Sync,
        )
        .unwrap();
    assert_eq!(log.index_pending().unwrap(), 3);
    assert_eq!(history_keys(&*restarted, &s), 4);
    assert_eq!(
        history(&log, &s, b"all/", Direction::Forward),
        vec![1, 2, 3]
    );
}

#[test]
fn pruning_deletes_the_history_keys_of_indexed_and_unindexed_events() {
    let s = setup();
    let log = open(s.engine.clone(), s.changes, false);
    commit(&log, &s, &["a", "b"]);
    log.index_pending().unwrap();
    commit(&log, &s, &["a", "c"]);
    assert_eq!(log.prune_through(3).unwrap(), 3);
    // Only the newest event is left, and indexing it leaves its keys only.
    assert_eq!(log.index_pending().unwrap(), 4);
    assert_eq!(history_keys(&*s.engine, &s), 2);
    assert_eq!(history(&log, &s, b"all/", Direction::Forward), vec![4]);
    assert_eq!(
        history(&log, &s, b"a/", Direction::Forward),
        Vec::<u64>::new()
    );
    assert_eq!(log.oldest().unwrap(), Some(4));
}

#[test]
fn a_log_of_an_earlier_build_is_read_whole_and_marked_by_the_first_write() {
    let s = setup();
    // Two events as builds before the indexer wrote them: history keys in their batch,
    // no mark.
    let mut batch = WriteBatch::new();
    for (revision, name) in [(1u64, "a"), (2, "b")] {
        let entry = LogEntry::new(name.as_bytes().to_vec()).index(s.history, b"all/".to_vec());
        let mut key = b"all/".to_vec();
        key.extend_from_slice(&revision_key(revision));
        batch.put(s.history, &key, b"");
        let value = crate::changelog::encode_value(&entry);
        batch.put(s.changes, revision_key(revision), value);
    }
    s.engine.write(batch, crate::Durability::Sync).unwrap();

    let log = open(s.engine.clone(), s.changes, false);
    assert_eq!(log.head(), 2);
    assert_eq!(log.oldest().unwrap(), Some(1));
    assert_eq!(log.indexed_through().unwrap(), 2);
    assert_eq!(history(&log, &s, b"all/", Direction::Forward), vec![1, 2]);
    commit(&log, &s, &["c"]);
    // The first write put the mark at the revision before it.
    assert_eq!(log.indexed_through().unwrap(), 2);
    assert_eq!(
        history(&log, &s, b"all/", Direction::Forward),
        vec![1, 2, 3]
    );
    assert_eq!(log.index_pending().unwrap(), 3);
    assert_eq!(history_keys(&*s.engine, &s), 4);
    assert_eq!(log.read(0, 10).unwrap().len(), 3);
}

/// The revisions under `prefix` by reading every event: what the history must answer.
fn expected(
    log: &ChangeLog,
    prefix: &[u8],
    after: u64,
    limit: usize,
    direction: Direction,
) -> Vec<u64> {
    let all = log.read_stored(0, log.head(), usize::MAX).unwrap();
    let mut revisions: Vec<u64> = all
        .into_iter()
        .filter(|(revision, payload)| {
            let name = std::str::from_utf8(payload).unwrap();
            (prefix == b"all/" || prefix == format!("{name}/").as_bytes())
                && match direction {
                    Direction::Forward => *revision > after,
                    Direction::Reverse => *revision < after,
                }
        })
        .map(|(revision, _)| revision)
        .collect();
    if direction == Direction::Reverse {
        revisions.reverse();
    }
    revisions.truncate(limit);
    revisions
}

fn page(
    log: &ChangeLog,
    s: &Setup,
    prefix: &[u8],
    after: u64,
    limit: usize,
    direction: Direction,
) -> Vec<u64> {
    let events = log.read_index(s.history, prefix, after, limit, direction);
    events.unwrap().into_iter().map(|(r, _)| r).collect()
}

#[test]
fn grouped_keys_page_both_ways_from_any_revision() {
    let s = setup();
    let log = open(s.engine.clone(), s.changes, false);
    let names = ["a", "b", "a", "a", "c", "b", "a", "c", "a", "b", "a", "a"];
    // Three indexing batches (1-4, 5-9, 10-12), the last one not run: groups, keys of
    // earlier groups and the tail together.
    commit(&log, &s, &names[..4]);
    log.index_pending().unwrap();
    commit(&log, &s, &names[4..9]);
    log.index_pending().unwrap();
    commit(&log, &s, &names[9..]);
    assert_eq!(log.indexed_through().unwrap(), 9);
    // all/ 2 groups, a/ 2, b/ 2, c/ 1.
    assert_eq!(history_keys(&*s.engine, &s), 7);
    // The group a/ {1, 3, 4}: its key's value holds the gaps 1 (4 - 3) and 2 (3 - 1).
    let (key, value) = group_entry(b"a/", &[1, 3, 4]);
    assert_eq!(value, vec![1, 2]);
    let stored = s.engine.get(s.history, &key).unwrap();
    assert_eq!(stored, Some(value.clone()));
    assert_eq!(decode_group(4, &value), Some(vec![1, 3, 4]));
    for prefix in [&b"all/"[..], b"a/", b"b/", b"c/", b"d/"] {
        for limit in [1, 2, 3, 100] {
            for after in 0..=13 {
                let direction = Direction::Forward;
                assert_eq!(
                    page(&log, &s, prefix, after, limit, direction),
                    expected(&log, prefix, after, limit, direction),
                    "{prefix:?} after {after} limit {limit} forward"
                );
            }
            for after in (1..=13).chain([u64::MAX]) {
                let direction = Direction::Reverse;
                assert_eq!(
                    page(&log, &s, prefix, after, limit, direction),
                    expected(&log, prefix, after, limit, direction),
                    "{prefix:?} before {after} limit {limit} reverse"
                );
            }
        }
    }
}

#[test]
fn group_values_round_trip_and_malformed_ones_are_refused() {
    for revisions in [
        vec![7],
        vec![1, 2, 3],
        vec![1, 200, 70_000, u64::MAX / 2, u64::MAX - 1],
    ] {
        let (key, value) = group_entry(b"p/", &revisions);
        assert_eq!(key.len(), 2 + 8);
        let high = decode_revision(&key[2..]).unwrap();
        assert_eq!(decode_group(high, &value), Some(revisions));
    }
    // A key of the builds that wrote one key per event: an empty value.
    assert_eq!(decode_group(5, b""), Some(vec![5]));
    // A truncated varint, a gap of 0, a gap past revision 1.
    assert_eq!(decode_group(5, &[0x81]), None);
    assert_eq!(decode_group(5, &[0]), None);
    assert_eq!(decode_group(5, &[5]), None);
}

#[test]
fn pruning_part_of_a_group_rewrites_it_with_the_kept_revisions() {
    let s = setup();
    let log = open(s.engine.clone(), s.changes, false);
    commit(&log, &s, &["a", "b", "a", "c"]);
    log.index_pending().unwrap();
    // all/ {1, 2, 3, 4}, a/ {1, 3}, b/ {2}, c/ {4}.
    assert_eq!(history_keys(&*s.engine, &s), 4);
    assert_eq!(log.prune_through(2).unwrap(), 2);
    // b/ went whole; all/ and a/ kept their revisions above 2.
    assert_eq!(history_keys(&*s.engine, &s), 3);
    let (key, _) = group_entry(b"a/", &[3]);
    assert_eq!(s.engine.get(s.history, &key).unwrap(), Some(Vec::new()));
    assert_eq!(history(&log, &s, b"all/", Direction::Forward), vec![3, 4]);
    assert_eq!(history(&log, &s, b"all/", Direction::Reverse), vec![4, 3]);
    assert_eq!(history(&log, &s, b"a/", Direction::Forward), vec![3]);
    assert_eq!(
        history(&log, &s, b"b/", Direction::Forward),
        Vec::<u64>::new()
    );

    // A group left whole by a pruning (a reader's view from before it, or a crash of
    // another build): its revisions without events below the oldest are skipped.
    let (key, value) = group_entry(b"c/", &[1, 2, 4]);
    let mut batch = WriteBatch::new();
    batch.put(s.history, &key, &value);
    s.engine.write(batch, crate::Durability::Sync).unwrap();
    assert_eq!(history(&log, &s, b"c/", Direction::Forward), vec![4]);
    assert_eq!(history(&log, &s, b"c/", Direction::Reverse), vec![4]);
}

#[test]
fn an_indexing_repeated_over_other_bounds_reads_each_revision_once() {
    let s = setup();
    let log = open(s.engine.clone(), s.changes, false);
    commit(&log, &s, &["a", "a"]);
    log.index_pending().unwrap();
    commit(&log, &s, &["a"]);
    log.index_pending().unwrap();
    // The mark moved back (never done by the log: a crash keeps keys and mark
    // together), then 1-3 indexed as one group next to the groups {1, 2} and {3}.
    let mut batch = WriteBatch::new();
    batch.put(s.changes, MARK_KEY, revision_key(0));
    s.engine.write(batch, crate::Durability::Sync).unwrap();
    assert_eq!(log.index_pending().unwrap(), 3);
    assert_eq!(history(&log, &s, b"a/", Direction::Forward), vec![1, 2, 3]);
    assert_eq!(history(&log, &s, b"a/", Direction::Reverse), vec![3, 2, 1]);
}
